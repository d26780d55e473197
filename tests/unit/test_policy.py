"""TaskPolicy: shapes, checkpoint round trip (identical actions), heads overfit, bad checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ver_core.policy import NormStats, TaskConfig, TaskPolicy

TINY = {"depth": 3, "moe_blocks": 2, "img_size": 64}


def tiny_config(**kw) -> TaskConfig:
    base = dict(model_overrides=TINY, neck_dim=64, hidden_dim=128, chunk_len=4)
    return TaskConfig(**{**base, **kw})


def fake_stats(rng: np.random.Generator, chunk_len: int = 4) -> NormStats:
    return NormStats.from_data(rng.normal(size=(50, 8)), rng.normal(size=(50, chunk_len, 8)))


@pytest.mark.parametrize("head", ["mlp", "diffusion"])
@pytest.mark.parametrize("neck", ["conv", "spatial", "attention"])
def test_encode_predict_shapes(head, neck):
    policy = TaskPolicy.build(tiny_config(head=head, neck=neck))
    feats = policy.encode(torch.randn(3, 3, 64, 64))
    assert feats.tokens.shape == (3, 1, 17, 192)
    assert len(feats.expert_index) == 2
    assert all(i.shape == (3, 1, 16, 2) for i in feats.expert_index)
    actions = policy.predict_chunk(feats.tokens, torch.zeros(3, 8))
    assert actions.shape == (3, 4, 8)
    assert torch.isfinite(actions).all()


@pytest.mark.parametrize("head", ["mlp", "diffusion"])
def test_checkpoint_round_trip_identical_actions(tmp_path, head):
    rng = np.random.default_rng(0)
    policy = TaskPolicy.build(tiny_config(head=head), fake_stats(rng))
    with torch.no_grad():  # make weights non-trivial
        for p in policy.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    images = torch.randn(2, 3, 64, 64)
    state = torch.tensor(rng.normal(size=(2, 8)), dtype=torch.float32)
    policy.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {
        "config.json",
        "model.safetensors",
        "stats.json",
    }
    loaded = TaskPolicy.from_pretrained(tmp_path / "ckpt")
    policy.eval()
    f1, f2 = policy.encode(images), loaded.encode(images)
    assert torch.equal(f1.tokens, f2.tokens)
    for a, b in zip(f1.expert_index, f2.expert_index, strict=True):
        assert torch.equal(a, b)
    a1 = policy.predict_chunk(f1.tokens, state, generator=torch.Generator().manual_seed(7))
    a2 = loaded.predict_chunk(f2.tokens, state, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a1, a2)
    assert loaded.config == policy.config
    assert loaded.stats == policy.stats


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        TaskPolicy.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "ver-library"}))
    with pytest.raises(ValueError, match="format"):
        TaskPolicy.from_pretrained(tmp_path)


def test_config_validation():
    with pytest.raises(ValueError, match="head"):
        TaskConfig(head="transformer")
    with pytest.raises(ValueError, match="joint_names"):
        TaskConfig(joint_names=["a", "b"])
    with pytest.raises(ValueError, match="routing"):
        TaskConfig(router={"routing": "random"})


def test_state_shape_checked():
    policy = TaskPolicy.build(tiny_config())
    tokens = policy.encode(torch.randn(1, 3, 64, 64)).tokens
    with pytest.raises(ValueError, match="state must be"):
        policy.predict_chunk(tokens, torch.zeros(1, 7))


@pytest.mark.parametrize("head", ["mlp", "diffusion"])
def test_heads_overfit_tiny_dataset(head):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    states = rng.normal(size=(8, 8)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(8, 4, 8)).astype(np.float32)
    policy = TaskPolicy.build(tiny_config(head=head), NormStats.from_data(states, actions))
    bvt = policy.model.forward_bvt(torch.randn(8, 3, 64, 64)).detach()
    s, a = torch.from_numpy(states), torch.from_numpy(actions)

    def fixed_loss() -> float:  # same noise and timesteps each call (diffusion), no grad
        torch.manual_seed(123)
        with torch.no_grad():
            return float(np.mean([policy.loss(bvt, s, a).item() for _ in range(4)]))

    def sample_error() -> float:
        pred = policy.predict_chunk(policy.route(bvt).tokens, s, torch.Generator().manual_seed(0))
        return (
            (policy.normalize_actions(pred, s) - policy.normalize_actions(a, s)).abs().mean().item()
        )

    before_loss, before_err = fixed_loss(), sample_error()
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=3e-3)
    torch.manual_seed(1)
    for _ in range(150 if head == "mlp" else 300):
        loss = policy.loss(bvt, s, a)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after_loss, after_err = fixed_loss(), sample_error()
    assert after_loss < 0.3 * before_loss, (before_loss, after_loss)
    # the sampled chunks (regressed, or DDIM-sampled for diffusion) approach the targets
    assert after_err < 0.2 * before_err, (before_err, after_err)


def test_build_from_library_checkpoint(tmp_path, caplog):
    from ver_core.model import build_model, save_library

    torch.manual_seed(3)
    library = build_model("ver_tiny", **TINY)
    save_library(tmp_path / "lib", library)
    policy = TaskPolicy.build(tiny_config(library=str(tmp_path / "lib")))
    assert "FRESHLY INITIALIZED" not in caplog.text
    for k, v in library.state_dict().items():
        assert torch.equal(policy.model.state_dict()[k], v), k
    policy.save_pretrained(tmp_path / "task")  # self-contained: loads with the library deleted
    import shutil

    shutil.rmtree(tmp_path / "lib")
    loaded = TaskPolicy.from_pretrained(tmp_path / "task")
    assert torch.equal(loaded.model.blocks[0].attn.qkv.weight, library.blocks[0].attn.qkv.weight)


def test_predictions_never_leave_the_demonstrated_action_range():
    """A head that extrapolates wildly is clipped to the action range seen in the data."""
    rng = np.random.default_rng(3)
    stats = fake_stats(rng)
    policy = TaskPolicy.build(tiny_config(head="mlp"), stats)
    with torch.no_grad():
        for p in policy.head.parameters():
            p.mul_(1000.0)  # outputs far outside [-1, 1]
        feats = policy.encode(torch.randn(2, 3, 64, 64))
        actions = policy.predict_chunk(feats.tokens, torch.zeros(2, 8))
    lo, hi = policy.action_min, policy.action_max
    assert torch.all(actions >= lo - 1e-5) and torch.all(actions <= hi + 1e-5)
    assert (
        torch.isclose(actions, lo.expand_as(actions)).any()
        or torch.isclose(actions, hi.expand_as(actions)).any()
    )


@pytest.mark.parametrize("mode", ["absolute", "delta", "keypose"])
def test_action_modes_round_trip_and_are_relative_to_their_anchor(mode):
    from ver_core.policy.normalization import action_targets, actions_from_targets

    rng = np.random.default_rng(0)
    states = rng.normal(size=(5, 8))
    actions = rng.normal(size=(5, 3, 8))
    kp = rng.normal(size=(5, 7))
    targets = action_targets(actions, states, mode, keyposes=kp)
    np.testing.assert_allclose(actions_from_targets(targets, states, mode, keyposes=kp), actions)
    t_torch = action_targets(
        torch.from_numpy(actions), torch.from_numpy(states), mode, keyposes=torch.from_numpy(kp)
    )
    np.testing.assert_allclose(t_torch.numpy(), targets)
    if mode == "delta":
        np.testing.assert_allclose(targets[..., :7], actions[..., :7] - states[:, None, :7])
    if mode == "keypose":
        np.testing.assert_allclose(targets[..., :7], actions[..., :7] - kp[:, None])
        with pytest.raises(ValueError, match="needs the keyposes"):
            action_targets(actions, states, mode)
    np.testing.assert_allclose(targets[..., 7], actions[..., 7])  # gripper stays absolute
    with pytest.raises(ValueError, match="unknown action mode"):
        action_targets(actions, states, "velocity")


def test_delta_policy_predicts_around_the_measured_joints():
    from ver_core.policy.normalization import action_targets

    rng = np.random.default_rng(1)
    states = rng.normal(size=(40, 8)).astype(np.float32)
    actions = rng.normal(size=(40, 4, 8)).astype(np.float32)
    cfg = tiny_config(action_mode="delta")
    stats = NormStats.from_data(states, action_targets(actions, states, "delta"))
    policy = TaskPolicy.build(cfg, stats)
    bvt = policy.model.forward_bvt(torch.randn(2, 3, 64, 64))
    s = torch.from_numpy(states[:2])
    chunk = policy.predict_chunk(policy.route(bvt).tokens, s)
    offsets = chunk[..., :7] - s[:, None, :7]
    lo, hi = policy.action_min[:7], policy.action_max[:7]
    assert torch.all(offsets >= lo - 1e-5) and torch.all(offsets <= hi + 1e-5)
    # the same head output lands elsewhere when the arm is elsewhere: offsets, not positions
    moved = s.clone()
    moved[:, :7] += 0.3
    with torch.no_grad():
        out = policy.head.sample(policy.condition(policy.route(bvt).tokens, s)).clamp(-1, 1)
    np.testing.assert_allclose(
        (policy.unnormalize_actions(out, moved) - policy.unnormalize_actions(out, s))[..., :7],
        np.full((2, 4, 7), 0.3, np.float32),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="action_mode"):
        tiny_config(action_mode="velocity")


def test_spatial_neck_keypoints_follow_a_moving_blob():
    from ver_core.policy.neck import SpatialSoftmaxNeck

    torch.manual_seed(0)
    neck = SpatialSoftmaxNeck(dim=8, grid=6, out_dim=16, keypoints=4)
    with torch.no_grad():  # one map that fires on feature channel 0
        neck.maps.weight.zero_()
        neck.maps.bias.zero_()
        neck.maps.weight[0, 0, 1, 1] = 1.0
        neck.log_temperature.fill_(-3.0)
        neck.norm.weight.fill_(1.0)
        neck.norm.bias.zero_()
    tokens = torch.zeros(2, 1 + 36, 8)
    tokens[0, 1 + 0 * 6 + 0, 0] = 5.0  # blob top left
    tokens[1, 1 + 5 * 6 + 5, 0] = 5.0  # blob bottom right
    kp = neck.keypoints(tokens)  # (2, 4, 2)
    assert kp[0, 0, 0] < -0.8 and kp[0, 0, 1] < -0.8
    assert kp[1, 0, 0] > 0.8 and kp[1, 0, 1] > 0.8
    assert neck(tokens).shape == (2, 16)


WRIST = "/wrist_camera/camera/color/image_raw"
SCENE = "/camera/camera/color/image_raw"


@pytest.mark.parametrize("per_camera", [False, True])
def test_two_camera_policy_routes_each_view_and_fuses_them(per_camera):
    torch.manual_seed(0)
    cfg = tiny_config(image_topics=[SCENE, WRIST], router_per_camera=per_camera)
    assert cfg.cameras == ["camera", "wrist_camera"] and cfg.num_views == 2
    policy = TaskPolicy.build(cfg)
    assert len(policy.necks) == 2 and len(policy.router.routers) == (2 if per_camera else 1)
    s = policy.parameter_summary()
    assert s["router_percent_of_model"] < 0.4
    images = torch.randn(3, 2, 3, 64, 64)
    feats = policy.encode(images)
    assert feats.tokens.shape == (3, 2, 17, 192)
    assert all(i.shape == (3, 2, 16, 2) for i in feats.expert_index)
    # each view is routed exactly as that view alone would be (shared weights or its own router)
    router = policy.router.router_for(1)
    alone = router(policy.model, policy.model.forward_bvt(images[:, 1]))
    torch.testing.assert_close(feats.tokens[:, 1], alone.tokens, atol=1e-5, rtol=1e-5)
    actions = policy.predict_chunk(feats.tokens, torch.zeros(3, 8))
    assert actions.shape == (3, 4, 8) and torch.isfinite(actions).all()
    # the head sees both views: changing only the wrist view changes the actions
    other = feats.tokens.clone()
    other[:, 1] += 1.0
    assert not torch.allclose(actions, policy.predict_chunk(other, torch.zeros(3, 8)))
    with pytest.raises(ValueError, match="2 camera views"):
        policy.predict_chunk(feats.tokens[:, :1], torch.zeros(3, 8))


def test_per_camera_routers_differ_by_view():
    torch.manual_seed(0)
    policy = TaskPolicy.build(tiny_config(image_topics=[SCENE, WRIST], router_per_camera=True))
    with torch.no_grad():
        for p in policy.router.routers[1].parameters():
            p.add_(torch.randn_like(p))
    same = torch.randn(1, 3, 64, 64)
    feats = policy.encode(torch.stack([same, same], dim=1))
    assert not torch.allclose(feats.tokens[:, 0], feats.tokens[:, 1])


def test_duplicate_camera_namespaces_are_refused():
    with pytest.raises(ValueError, match="duplicate camera names"):
        tiny_config(image_topics=[SCENE, "/camera/other/image_raw"])


def test_one_camera_checkpoint_of_version_1_loads_unchanged(tmp_path):
    """A checkpoint written before cameras were a list (image_topic, router.*, neck.*) loads and
    predicts exactly what it predicted."""
    import json

    from safetensors.torch import load_file, save_file

    rng = np.random.default_rng(0)
    policy = TaskPolicy.build(tiny_config(), fake_stats(rng))
    with torch.no_grad():
        for p in policy.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    policy.eval().save_pretrained(tmp_path / "v2")
    v1 = tmp_path / "v1"
    v1.mkdir()
    payload = json.loads((tmp_path / "v2" / "config.json").read_text())
    payload["version"] = 1
    task = payload["task"]
    task["image_topic"] = task.pop("image_topics")[0]
    task.pop("router_per_camera")
    (v1 / "config.json").write_text(json.dumps(payload))
    state = load_file(str(tmp_path / "v2" / "model.safetensors"))
    old = {
        k.replace("router.routers.0.", "router.").replace("necks.0.", "neck."): v
        for k, v in state.items()
    }
    save_file(old, str(v1 / "model.safetensors"))
    (v1 / "stats.json").write_text((tmp_path / "v2" / "stats.json").read_text())
    loaded = TaskPolicy.from_pretrained(v1)
    assert loaded.config.image_topics == [SCENE]
    images, state8 = torch.randn(2, 3, 64, 64), torch.zeros(2, 8)
    torch.testing.assert_close(
        loaded.predict_chunk(loaded.encode(images).tokens, state8),
        policy.predict_chunk(policy.encode(images).tokens, state8),
    )


def test_keypose_mode_policy_acts_relative_to_the_keypose_it_acts_on():
    """Action mode keypose: the head's arm output is an offset from the keypose it is given (the
    estimate when deployed), so the same output lands elsewhere when the keypose is elsewhere."""
    from ver_core.policy.normalization import action_targets

    rng = np.random.default_rng(2)
    states = rng.normal(size=(40, 8)).astype(np.float32)
    actions = rng.normal(size=(40, 4, 8)).astype(np.float32)
    kp = rng.normal(size=(40, 7)).astype(np.float32)
    with pytest.raises(ValueError, match="needs keypose"):
        tiny_config(action_mode="keypose")
    cfg = tiny_config(action_mode="keypose", keypose=True)
    stats = NormStats.from_data(states, action_targets(actions, states, "keypose", keyposes=kp))
    policy = TaskPolicy.build(cfg, stats)
    tokens = policy.route(policy.model.forward_bvt(torch.randn(2, 3, 64, 64))).tokens
    s = torch.from_numpy(states[:2])
    loss = policy.loss_from_tokens(
        tokens, s, torch.from_numpy(actions[:2]), torch.from_numpy(kp[:2])
    )
    assert torch.isfinite(loss)
    with torch.no_grad():
        estimate = policy.estimate_keypose(tokens, s)
        chunk = policy.predict_chunk(tokens, s)
        out = policy.head.sample(policy.condition(tokens, s, estimate)).clamp(-1, 1)
    torch.testing.assert_close(chunk, policy.unnormalize_actions(out, s, estimate))
    moved = estimate + 0.3
    np.testing.assert_allclose(
        (policy.unnormalize_actions(out, s, moved) - chunk)[..., :7],
        np.full((2, 4, 7), 0.3, np.float32),
        atol=1e-5,
    )


def test_policy_at_another_image_size_round_trips(tmp_path):
    """``image_size`` runs the library at that resolution (its grid's position embeddings
    resampled); the checkpoint records the size and reloads with identical actions."""
    from ver_core.model import build_model, save_library

    torch.manual_seed(4)
    save_library(tmp_path / "lib", build_model("ver_tiny", **TINY))  # 64 px, 4x4 patches
    rng = np.random.default_rng(1)
    policy = TaskPolicy.build(
        tiny_config(library=str(tmp_path / "lib"), image_size=96), fake_stats(rng)
    )
    assert policy.model.config.img_size == 96 and policy.model.config.grid_size == 6
    images, state = torch.randn(2, 3, 96, 96), torch.zeros(2, 8)
    with torch.no_grad():
        feats = policy.encode(images)
        assert feats.tokens.shape == (2, 1, 37, 192)
        want = policy.predict_chunk(feats.tokens, state)
    policy.save_pretrained(tmp_path / "task")
    loaded = TaskPolicy.from_pretrained(tmp_path / "task")
    assert loaded.config.image_size == 96 and loaded.model.config.img_size == 96
    with torch.no_grad():
        got = loaded.predict_chunk(loaded.encode(images).tokens, state)
    assert torch.equal(got, want)
