"""TaskPolicy ensembles (TaskConfig.members): members over one router, their votes, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ver_core.policy import NormStats, TaskConfig, TaskPolicy
from ver_core.policy.grasp_point import GraspPointHead, MeanGraspHead, sim_calibration

TINY = {"depth": 3, "moe_blocks": 2, "img_size": 64}


def config(**kw) -> TaskConfig:
    base = dict(model_overrides=TINY, neck_dim=32, hidden_dim=64, chunk_len=4)
    return TaskConfig(**{**base, **kw})


def keypose_config(**kw) -> TaskConfig:
    return config(keypose=True, action_mode="keypose", **kw)


def stats(rng: np.random.Generator, chunk_len: int = 4) -> NormStats:
    return NormStats.from_data(rng.normal(size=(50, 8)), rng.normal(size=(50, chunk_len, 8)))


def build(cfg: TaskConfig, seed: int = 0) -> TaskPolicy:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    st = stats(rng, cfg.chunk_len)
    if cfg.keypose:
        st = NormStats.for_task(
            rng.normal(size=(50, 8)),
            rng.normal(size=(50, cfg.chunk_len, 8)),
            cfg.action_mode,
            cfg.gripper_max_width,
            rng.normal(size=(50, 7)),
        )
    policy = TaskPolicy.build(cfg, st)
    with torch.no_grad():  # non-trivial weights, different in every member
        for p in policy.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return policy.eval()


def inputs(policy: TaskPolicy, n: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, policy.config.num_views, 3, 64, 64, generator=g)
    state = torch.randn(n, 8, generator=g) * 0.3
    state[:, 7] = 0.04
    return policy.encode(images).tokens, state


def test_one_member_keeps_its_keys_and_more_members_add_their_own():
    one = build(config()).state_dict()
    three = build(config(members=3)).state_dict()
    assert not any(k.startswith("ensemble.") for k in one)
    assert set(one) <= set(three)
    extra = {k.split(".", 2)[1] for k in set(three) - set(one)}
    assert extra == {"0", "1"}  # two members beyond the first
    for k in ("ensemble.0.necks.0", "ensemble.1.head"):
        assert any(key.startswith(k) for key in three)


def test_members_are_validated():
    with pytest.raises(ValueError, match="members"):
        config(members=0)
    with pytest.raises(ValueError, match="members"):
        config(members=9)
    policy = build(config(members=2))
    for bad in ([], [2], [-1]):
        with pytest.raises(ValueError, match="members"):
            policy.use_members(bad)
    assert len(policy.use_members([1]).members()) == 1
    assert len(policy.use_members(None).members()) == 2


def test_every_member_trains_and_starts_from_its_own_weights():
    policy = build(keypose_config(members=3))
    params = {id(p) for p in policy.trainable_parameters()}
    for member in policy.all_members():
        assert {id(p) for p in member.head.parameters()} <= params
        assert {id(p) for p in member.necks.parameters()} <= params
        assert {id(p) for p in member.keypose_head.parameters()} <= params
    heads = [m.head.state_dict() for m in policy.all_members()]
    for other in heads[1:]:
        assert any(not torch.equal(heads[0][k], other[k]) for k in heads[0])
    tokens, state = inputs(policy)
    policy.train()
    loss = policy.loss_from_tokens(tokens, state, torch.randn(2, 4, 8), torch.zeros(2, 7))
    loss.backward()
    for member in policy.all_members():
        for module in (member.head, member.necks, member.keypose_head):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_the_ensemble_keypose_is_the_mean_of_its_members_and_identical_members_act_as_one():
    policy = build(keypose_config(members=3))
    tokens, state = inputs(policy)
    each = [policy.use_members([i]).estimate_keypose(tokens, state) for i in range(3)]
    together = policy.use_members(None).estimate_keypose(tokens, state)
    torch.testing.assert_close(together, torch.stack(each).mean(0))
    assert not torch.allclose(each[0], each[1])
    # members made equal: the ensemble predicts exactly what one of them does
    first = _first_member_state(policy)
    for member in policy.ensemble:
        member.load_state_dict(first)
    chunk = policy.predict_chunk(tokens, state)
    torch.testing.assert_close(chunk, policy.use_members([0]).predict_chunk(tokens, state))
    torch.testing.assert_close(chunk, policy.use_members([2]).predict_chunk(tokens, state))


def _first_member_state(policy: TaskPolicy) -> dict[str, torch.Tensor]:
    """The first member's modules (the policy's own attributes) as a PolicyMember state dict."""
    names = ("necks.", "head.", "keypose_head.", "grasp_heads.")
    return {k: v for k, v in policy.state_dict().items() if k.startswith(names)}


def test_a_features_policy_ensemble_predicts_the_mean_of_its_members_chunks():
    policy = build(config(members=3, action_mode="absolute"))
    tokens, state = inputs(policy)
    each = [policy.use_members([i]).predict_chunk(tokens, state) for i in range(3)]
    together = policy.use_members(None).predict_chunk(tokens, state)
    # each member's head acts on its own necks' features; the mean of the normalized chunks is
    # clipped to the demonstrated range, then unnormalized
    votes = [m.head.sample(policy.condition(tokens, state, member=m)) for m in policy.members()]
    mean = torch.stack(votes).mean(0).clamp(-1, 1)
    torch.testing.assert_close(together, policy.unnormalize_actions(mean, state))
    assert not torch.allclose(each[0], each[1]) and not torch.allclose(together, each[0])


def test_mean_grasp_head_averages_the_members_probabilities_offsets_and_yaws():
    torch.manual_seed(0)
    heads = [GraspPointHead(192, 4) for _ in range(3)]
    tokens = torch.randn(2, 17, 192)
    logits, offs, yaws = MeanGraspHead(heads)(tokens)
    outs = [h(tokens) for h in heads]
    torch.testing.assert_close(
        logits.softmax(1), torch.stack([o[0].softmax(1) for o in outs]).mean(0)
    )
    torch.testing.assert_close(offs, torch.stack([o[1] for o in outs]).mean(0))
    torch.testing.assert_close(yaws, torch.stack([o[2] for o in outs]).mean(0))
    alone, _, _ = MeanGraspHead(heads[:1])(tokens)
    torch.testing.assert_close(alone.softmax(1), outs[0][0].softmax(1))
    with pytest.raises(ValueError, match="one grid"):
        MeanGraspHead([heads[0], GraspPointHead(192, 2)])
    with pytest.raises(ValueError, match="one or more"):
        MeanGraspHead([])


def test_a_grasp_point_ensemble_detects_with_its_members_heads_averaged():
    cfg = keypose_config(
        members=2, grasp_point=True, camera_calibration=sim_calibration(["camera"])
    )
    cfg.grasp_height = 0.045
    policy = build(cfg)
    tokens, state = inputs(policy, n=1)
    heads = policy.detector_heads
    assert len(heads) == 1 and isinstance(heads[0], MeanGraspHead)
    assert heads[0].heads == [policy.grasp_heads[0], policy.ensemble[0].grasp_heads[0]]
    assert list(policy.use_members([1]).detector_heads) == [policy.ensemble[0].grasp_heads[0]]
    policy.use_members(None)
    for member in policy.all_members():  # every member sure the point is in view
        torch.nn.init.constant_(member.grasp_heads[0].absent.bias, -30.0)
    points, _, view = policy.grasp_point(tokens, state)
    assert view[0] == 0 and points[0, 2] == pytest.approx(0.045)
    tracker = policy.grasp_tracker()
    chunk = policy.predict_chunk(tokens, state, tracker=tracker)
    assert chunk.shape == (1, 4, 8) and torch.isfinite(chunk).all()
    assert tracker.point is not None


def test_an_ensemble_checkpoint_round_trips(tmp_path):
    policy = build(keypose_config(members=3))
    tokens, state = inputs(policy)
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = TaskPolicy.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.members == 3 and len(loaded.ensemble) == 2
    torch.testing.assert_close(
        policy.predict_chunk(tokens, state), loaded.predict_chunk(tokens, state)
    )
    summary = loaded.parameter_summary()
    one = build(keypose_config()).parameter_summary()
    assert summary["members"] == 3 and summary["head"] == 3 * one["head"]
    assert summary["neck"] == 3 * one["neck"] and summary["robot_router"] == one["robot_router"]
