"""Training augmentation: cached augmented views of the demo frames, noise on the joint angles,
holds shown wider."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ver_core.data import TopicConfig, load_demos
from ver_core.data.synthetic import write_synthetic_episode
from ver_core.policy import TaskConfig, TaskPolicy
from ver_core.router import RouterConfig
from ver_core.train import RouterTrainer, TrainConfig
from ver_core.train.augment import (
    HELD_AUG_MAX,
    HELD_BAND,
    AugmentConfig,
    augment_images,
    augmented_views,
    widen_held_width,
)


def _scene(n: int = 3, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_no_shift_no_color_is_identity():
    images = _scene()
    out = augment_images(images, np.random.default_rng(1), shift=0, color=0.0)
    np.testing.assert_array_equal(out, images)
    assert out is not images


def test_shift_moves_the_content_by_at_most_shift_pixels():
    images = np.zeros((20, 32, 32, 3), np.uint8)
    images[:, 16, 16] = (255, 128, 0)
    out = augment_images(images, np.random.default_rng(2), shift=3, color=0.0)
    moves = set()
    for img in out:
        ys, xs = np.nonzero(img[..., 0] == 255)
        assert len(ys) == 1  # moved, not blurred or recolored
        assert tuple(img[ys[0], xs[0]]) == (255, 128, 0)
        dy, dx = ys[0] - 16, xs[0] - 16
        assert max(abs(dy), abs(dx)) <= 3
        moves.add((dy, dx))
    assert len(moves) > 3  # per-image shifts, not one for the batch


def test_color_jitter_changes_colors_within_the_factor_range():
    gray = np.full((50, 8, 8, 3), 100, np.uint8)
    out = augment_images(gray, np.random.default_rng(3), shift=0, color=0.2)
    values = out.reshape(50, -1)
    assert (values.min(axis=1) == values.max(axis=1)).all()  # a flat image stays flat
    assert 80 <= values.min() < 95 and 105 < values.max() <= 120  # brightness x [0.8, 1.2]


def test_views_are_deterministic_and_distinct():
    images = _scene()
    cfg = AugmentConfig(views=2, shift=2, color=0.3, seed=5)
    a1, a2 = augmented_views(images, cfg, 1), augmented_views(images, cfg, 2)
    np.testing.assert_array_equal(a1, augmented_views(images, cfg, 1))
    assert not np.array_equal(a1, a2) and not np.array_equal(a1, images)
    assert cfg.cache_tag(1) != cfg.cache_tag(2)
    assert cfg.cache_tag(1) != AugmentConfig(views=2, shift=2, color=0.3, seed=6).cache_tag(1)
    with pytest.raises(ValueError, match="view must be"):
        augmented_views(images, cfg, 3)


@pytest.mark.parametrize(
    "kw, match",
    [({"views": -1}, "views"), ({"shift": 40}, "shift"), ({"color": 1.0}, "color")],
)
def test_bad_settings_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kw)
    key = {"views": "augment_views", "shift": "augment_shift", "color": "augment_color"}
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{key[k]: v for k, v in kw.items()})
    with pytest.raises(ValueError, match="state_noise"):
        TrainConfig(state_noise=-0.1)
    with pytest.raises(ValueError, match="held_width_aug"):
        TrainConfig(held_width_aug=1.5)


def test_augment_images_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        augment_images(np.zeros((2, 8, 8, 3), np.float32), np.random.default_rng(0), 1, 0.1)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    for i in range(3):
        write_synthetic_episode(root / f"episode_{i:03d}", seed=i, seconds=1.5)
    return load_demos(root, TopicConfig(), chunk_len=4, control_rate_hz=10.0, image_size=32)


def _trainer(tmp_path, demos, **kw) -> RouterTrainer:
    torch.manual_seed(0)
    policy = TaskPolicy.build(
        TaskConfig(
            model_overrides={"depth": 3, "moe_blocks": 2, "img_size": 32},
            neck_dim=32,
            hidden_dim=64,
            chunk_len=4,
            router=RouterConfig(anneal_steps=4),
        )
    )
    cfg = TrainConfig(
        steps=6, head_steps=6, batch_size=8, lr=3e-3, warmup_steps=2, val_every=3,
        checkpoint_every=6, progress=False, plots=False, **kw,
    )  # fmt: skip
    return RouterTrainer(policy, demos, tmp_path, cfg, cache_dir=tmp_path / "cache")


def test_trainer_samples_augmented_views_and_validates_on_originals(tmp_path, demos):
    trainer = _trainer(tmp_path, demos, augment_views=2)
    n = len(demos)
    assert trainer.bank.shape == (3 * n, *trainer.tokens.shape[1:])
    np.testing.assert_array_equal(trainer.bank[:n], trainer.tokens)
    assert not np.array_equal(trainer.bank[n : 2 * n], trainer.tokens)  # other pixels
    assert len(list((tmp_path / "cache").glob("bvt_*aug*.npy"))) == 2  # cached for the next run
    idx = np.arange(min(8, n))
    np.testing.assert_array_equal(trainer._rows(idx, None), idx)  # validation: originals
    rows = np.concatenate([trainer._rows(idx, s) for s in range(20)])
    np.testing.assert_array_equal(rows % n, np.tile(idx, 20))
    assert set(rows // n) == {0, 1, 2}
    np.testing.assert_array_equal(trainer._rows(idx, 5), trainer._rows(idx, 5))  # resumable
    metrics = trainer.fit()
    assert trainer.routed_tokens().shape == trainer.bank.shape  # the head phase sees every view
    assert np.isfinite(metrics["final_val_loss"])
    # a second trainer finds the cached views instead of recomputing them
    again = _trainer(tmp_path / "b", demos, augment_views=2)
    again_cache = again.bank
    np.testing.assert_array_equal(again_cache, trainer.bank)


def test_state_noise_perturbs_only_the_joints_in_training_steps(tmp_path, demos):
    trainer = _trainer(tmp_path, demos, state_noise=0.05)
    idx = np.arange(len(demos))
    clean = torch.from_numpy(demos.states[idx])
    assert torch.equal(trainer._state(idx, None), clean)  # validation sees the true state
    noisy = trainer._state(idx, 3)
    diff = (noisy - clean).numpy()
    assert np.all(diff[:, 7:] == 0)  # the gripper width is untouched
    assert 0.035 < diff[:, :7].std() < 0.065
    assert torch.equal(noisy, trainer._state(idx, 3)) and not torch.equal(
        noisy, trainer._state(idx, 4)
    )
    assert np.isfinite(trainer.fit()["final_val_loss"])


def test_defaults_train_exactly_as_before(tmp_path, demos):
    """No views and no noise: the bank is the token cache itself and states are untouched."""
    trainer = _trainer(tmp_path, demos)
    assert trainer.bank is trainer.tokens
    idx = np.arange(4)
    np.testing.assert_array_equal(trainer._rows(idx, 3), idx)
    assert torch.equal(trainer._state(idx, 3), torch.from_numpy(demos.states[idx]))


_widths = st.floats(0.0, 0.08, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    widths=st.lists(_widths, min_size=1, max_size=40),
    closed=st.lists(st.booleans(), min_size=40, max_size=40),
    share=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_widen_held_width_touches_only_holds_and_only_widens_them(widths, closed, share, seed):
    """Invariant: only the width of a sample that holds something (width in the band, label
    closed) changes, and only upward, to at most HELD_AUG_MAX; joints and labels are untouched."""
    n = len(widths)
    rng = np.random.default_rng(seed)
    states = np.concatenate([rng.normal(0, 1, (n, 7)), np.array(widths)[:, None]], 1)
    states = states.astype(np.float32)
    actions = np.zeros((n, 4, 8), np.float32)
    actions[:, :, 7] = np.where(np.array(closed[:n])[:, None], 0.0, 0.08)
    before = actions.copy()
    out = widen_held_width(states, actions, np.random.default_rng(seed), share)
    np.testing.assert_array_equal(out[:, :7], states[:, :7])
    np.testing.assert_array_equal(actions, before)
    holding = (states[:, 7] >= HELD_BAND[0]) & (states[:, 7] <= HELD_BAND[1]) & closed[:n]
    np.testing.assert_array_equal(out[~holding, 7], states[~holding, 7])
    assert np.all(out[holding, 7] >= states[holding, 7])
    assert np.all(out[:, 7] <= max(HELD_AUG_MAX, float(states[:, 7].max())) + 1e-7)


def test_widen_held_width_spreads_holds_up_to_a_corner_grasp():
    n = 4000
    states = np.zeros((n, 8), np.float32)
    states[:, 7] = 0.051  # the demos' face grasp
    actions = np.zeros((n, 2, 8), np.float32)  # closed label
    out = widen_held_width(states, actions, np.random.default_rng(0), 0.5)
    widened = out[:, 7] > 0.051
    assert 0.45 < widened.mean() < 0.55
    assert out[widened, 7].max() > 0.07  # corner grasps (7.0-7.1 cm) are shown
    assert out[:, 7].max() <= HELD_AUG_MAX + 1e-7
    open_label = actions.copy()
    open_label[:, :, 7] = 0.08  # the hand opening (a retry): not a hold
    np.testing.assert_array_equal(
        widen_held_width(states, open_label, np.random.default_rng(0), 1.0), states
    )
    with pytest.raises(ValueError, match="share"):
        widen_held_width(states, actions, np.random.default_rng(0), 1.5)


def test_held_width_aug_changes_only_training_steps(tmp_path, demos):
    held = copy.copy(demos)  # every other sample holds the cube by its faces, hand closed
    held.states, held.actions = demos.states.copy(), demos.actions.copy()
    held.states[::2, 7], held.actions[::2, :, 7] = 0.051, 0.0
    held.actions[1::2, :, 7] = 0.08
    trainer = _trainer(tmp_path, held, held_width_aug=1.0)
    idx = np.arange(len(held))
    clean = torch.from_numpy(held.states[idx])
    assert torch.equal(trainer._state(idx, None), clean)  # validation sees the true width
    seen = trainer._state(idx, 3)
    assert torch.equal(seen[:, :7], clean[:, :7])
    assert torch.all(seen[::2, 7] > clean[::2, 7])  # every hold widened (share 1)
    assert torch.equal(seen[1::2], clean[1::2])  # an open label is not a hold
    assert torch.equal(seen, trainer._state(idx, 3))  # resumable: a pure function of the step
    assert np.isfinite(trainer.fit()["final_val_loss"])
