"""The grasp yaw net: a window reader whose map form is the same numbers, fitted on its own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ver_core.data import TopicConfig, load_demos
from ver_core.data.synthetic import write_synthetic_episode
from ver_core.policy import TaskConfig, TaskPolicy
from ver_core.policy.grasp_point import (
    YAW_NET_RADIUS,
    GraspYawNet,
    fit_yaw_nets,
    head_outputs,
    patch_windows,
)
from ver_core.router import RouterConfig
from ver_core.train import RouterTrainer, TrainConfig


@settings(max_examples=25, deadline=None)
@given(grid=st.integers(1, 7), batch=st.integers(1, 3), data=st.data())
def test_the_map_form_reads_each_patch_s_clamped_window(grid, batch, data):
    """forward_map at every patch == forward on that patch's window (patch_windows), border
    patches included: one network, two ways to run it."""
    torch.manual_seed(grid * 10 + batch)
    net = GraspYawNet(dim=8, channels=6).eval()
    tokens = torch.randn(batch, 1 + grid * grid, 8)
    cells = torch.tensor(
        data.draw(st.lists(st.integers(0, grid * grid - 1), min_size=batch, max_size=batch))
    )
    with torch.no_grad():
        mapped = net.forward_map(tokens)  # (B, P, 2)
        windows = patch_windows(tokens, cells, grid)
        direct = net(windows)
    assert mapped.shape == (batch, grid * grid, 2)
    side = 2 * YAW_NET_RADIUS + 1
    assert windows.shape == (batch, side, side, 8)
    torch.testing.assert_close(mapped[torch.arange(batch), cells], direct, atol=1e-5, rtol=1e-4)
    # the window's centre is the patch itself; a corner patch's window repeats the border
    torch.testing.assert_close(
        windows[:, YAW_NET_RADIUS, YAW_NET_RADIUS], tokens[torch.arange(batch), 1 + cells]
    )
    corner = patch_windows(tokens[:1], torch.tensor([0]), grid)
    assert torch.equal(corner[0, 0, 0], tokens[0, 1]) and torch.equal(corner[0, 0, 1], tokens[0, 1])


def _yaw_tokens(n: int, grid: int, dim: int, seed: int):
    """Tokens where the yaw is written only in the patch to the right of the labelled one (a
    reader of the labelled patch alone cannot get it; one of its window can)."""
    rng = np.random.default_rng(seed)
    tokens = rng.normal(0, 1, (n, 1, 1 + grid * grid, dim)).astype(np.float32)
    cls = rng.integers(0, grid * grid, (n, 1))
    cls[cls % grid == grid - 1] -= 1  # a right-hand neighbour exists
    psi = rng.uniform(-np.pi / 4, np.pi / 4, n)
    yaw = np.stack([np.cos(4 * psi), np.sin(4 * psi)], -1)[:, None].astype(np.float32)
    tokens[np.arange(n), 0, 2 + cls[:, 0], :2] = 3 * yaw[:, 0]
    return tokens, cls, yaw


def test_fit_yaw_nets_learns_a_yaw_written_beside_the_point_and_reports_it():
    torch.manual_seed(0)
    tokens, cls, yaw = _yaw_tokens(600, grid=6, dim=16, seed=0)
    cls[:50] = 36  # not in view: left out of the fit
    nets = torch.nn.ModuleList([GraspYawNet(16, channels=32)])
    report = fit_yaw_nets(nets, tokens, cls, yaw, np.arange(500), np.arange(500, 600), steps=300)
    r = report["view0"]
    assert r["train_frames"] == 450 and r["val_frames"] == 100
    assert r["val_constant_deg"] > 15  # uniform yaws in +-45 degrees: a constant is ~22 off
    assert r["val_mean_abs_deg"] < 0.3 * r["val_constant_deg"]
    untrained = torch.nn.ModuleList([GraspYawNet(16, channels=32)])
    zero = fit_yaw_nets(untrained, tokens, cls, yaw, np.arange(500), np.arange(500, 600), steps=0)
    assert "val_mean_abs_deg" not in zero["view0"]  # nothing fitted, nothing claimed


def test_a_policy_with_yaw_nets_fits_them_after_the_heads_saves_and_reads_its_yaws_from_them(
    tmp_path,
):
    for i in range(2):
        write_synthetic_episode(tmp_path / "bags" / f"episode_{i:03d}", seed=i, seconds=3.0)
    demos = load_demos(
        tmp_path / "bags", TopicConfig(), chunk_len=4, control_rate_hz=10.0, image_size=32
    )
    torch.manual_seed(0)
    cfg = TaskConfig(
        model_overrides={"depth": 3, "moe_blocks": 2, "img_size": 32},
        neck_dim=32, hidden_dim=64, chunk_len=4, keypose=True, grasp_point=True,
        grasp_yaw_net=True, action_mode="keypose", router=RouterConfig(anneal_steps=4),
    )  # fmt: skip
    policy = TaskPolicy.build(cfg)
    nets = {id(p) for p in policy.grasp_yaw_nets.parameters()}
    assert not nets & {id(p) for p in policy.trainable_parameters()}  # not in the joint fit
    before = [p.detach().clone() for p in policy.grasp_yaw_nets.parameters()]
    train = TrainConfig(
        steps=4, head_steps=4, batch_size=8, warmup_steps=1, val_every=4, checkpoint_every=100,
        progress=False, plots=False, yaw_net_steps=20,
    )  # fmt: skip
    trainer = RouterTrainer(policy, demos, tmp_path / "out", train)
    trainer.fit()
    moved = [
        not torch.equal(a, b)
        for a, b in zip(before, policy.grasp_yaw_nets.parameters(), strict=True)
    ]
    assert all(moved)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["grasp_yaw_nets"]["view0"]["train_frames"] > 0
    reloaded = TaskPolicy.from_pretrained(tmp_path / "out")
    assert reloaded.config.grasp_yaw_net
    tokens = policy.eval().encode(torch.rand(1, 3, 32, 32)).tokens
    for a, b in zip(
        policy.grasp_outputs(tokens[0]), reloaded.grasp_outputs(tokens[0]), strict=True
    ):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y)
    logits, offs, yaws = policy.grasp_outputs(tokens[0])[0]
    head_logits, head_offs, head_yaws = head_outputs(policy.grasp_heads, tokens[0])[0]
    torch.testing.assert_close(logits, head_logits)  # where: the head's
    torch.testing.assert_close(yaws, policy.grasp_yaw_nets[0].forward_map(tokens[0, :1].float()))
    assert not torch.allclose(yaws, head_yaws)  # the yaw: the net's


def test_yaw_nets_need_a_grasp_point_and_old_configs_have_none():
    with pytest.raises(ValueError, match="grasp_yaw_net needs grasp_point"):
        TaskConfig(grasp_yaw_net=True)
    old = TaskConfig(keypose=True, grasp_point=True).to_dict()
    old.pop("grasp_yaw_net")  # a checkpoint written before session 26
    assert TaskConfig.from_dict(old).grasp_yaw_net is False
    with pytest.raises(ValueError, match="yaw_net_steps"):
        TrainConfig(yaw_net_steps=-1)


# ------------------------------------------------------------------ perception-only frames
FLAG = "/scripted_expert/perception_only"


def test_perception_only_frames_are_read_from_the_flag_topic_and_cached(tmp_path):
    """A sweep window's frames are flagged, an episode without the topic has none, and the cache
    gives back the same flags."""
    write_synthetic_episode(
        tmp_path / "bags" / "episode_000", seed=0, seconds=4.0, perception_only=(1.0, 2.0)
    )
    write_synthetic_episode(tmp_path / "bags" / "episode_001", seed=1, seconds=4.0)
    topics = TopicConfig(perception_only=FLAG)
    data = load_demos(
        tmp_path / "bags", topics, 4, 10.0, image_size=32, cache_dir=tmp_path / "cache"
    )
    flags = data.perception_only
    assert flags is not None and flags.dtype == bool
    first = flags[data.episode == 0]
    on = np.flatnonzero(first)
    assert 8 <= len(on) <= 11 and np.all(np.diff(on) == 1)  # one second at 10 Hz, in one run
    assert on[0] >= 8 and on[-1] <= 22  # inside the episode, around 1-2 s
    assert not flags[data.episode == 1].any()
    again = load_demos(
        tmp_path / "bags", topics, 4, 10.0, image_size=32, cache_dir=tmp_path / "cache"
    )
    np.testing.assert_array_equal(again.perception_only, flags)
    np.testing.assert_array_equal(data.subset([0]).perception_only, first)
    unread = load_demos(tmp_path / "bags", TopicConfig(), 4, 10.0, image_size=32)
    assert unread.perception_only is None  # not asked for: nothing flagged


def test_the_trainer_leaves_perception_only_frames_to_the_yaw_nets(tmp_path):
    write_synthetic_episode(
        tmp_path / "bags" / "episode_000", seed=0, seconds=4.0, perception_only=(1.0, 2.5)
    )
    write_synthetic_episode(tmp_path / "bags" / "episode_001", seed=1, seconds=3.0)
    data = load_demos(tmp_path / "bags", TopicConfig(perception_only=FLAG), 4, 10.0, image_size=32)
    torch.manual_seed(0)
    cfg = TaskConfig(
        model_overrides={"depth": 3, "moe_blocks": 2, "img_size": 32}, neck_dim=32, hidden_dim=64,
        chunk_len=4, keypose=True, grasp_point=True, grasp_yaw_net=True, action_mode="keypose",
        router=RouterConfig(anneal_steps=4),
    )  # fmt: skip
    train = TrainConfig(
        steps=2, batch_size=4, warmup_steps=1, val_fraction=0.0, val_every=2,
        checkpoint_every=100, progress=False, plots=False, yaw_net_steps=2,
    )  # fmt: skip
    trainer = RouterTrainer(TaskPolicy.build(cfg), data, tmp_path / "out", train)
    flagged = np.flatnonzero(data.perception_only)
    assert len(flagged) >= 10
    assert not np.isin(trainer.train_idx, flagged).any()  # no action loss on them
    assert np.isin(flagged, trainer.yaw_train_idx).all()  # the yaw nets read them
    assert len(trainer.yaw_train_idx) == len(trainer.train_idx) + len(flagged)
    trainer.fit()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["grasp_yaw_nets"]["view0"]["train_frames"] >= len(flagged)
