"""Keypose labels and the keypose policy (vision -> next grasp pose; head on keypose + state)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ver_core.data import TopicConfig, load_demos
from ver_core.data.synthetic import write_synthetic_episode
from ver_core.policy import TaskConfig, TaskPolicy
from ver_core.policy.keypose import keypose_labels
from ver_core.router import RouterConfig
from ver_core.train import RouterTrainer, TrainConfig

TINY = {"depth": 3, "moe_blocks": 2, "img_size": 32}


def chunks(widths, joints):
    """(N, H=2, 8) chunks whose first action is joints[i] with width widths[i]."""
    a = np.zeros((len(widths), 2, 8), np.float32)
    a[:, :, :7] = np.asarray(joints, np.float32)[:, None, None]
    a[:, :, 7] = np.asarray(widths, np.float32)[:, None]
    return a


def test_labels_are_the_pose_at_the_next_gripper_event():
    # episode 0: open, open, close (event at 2), closed, open again (event at 4)
    # episode 1: never closes -> no keypose
    widths = [0.08, 0.08, 0.0, 0.0, 0.08, 0.08, 0.08]
    joints = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    episode = np.array([0, 0, 0, 0, 0, 1, 1])
    kp, valid = keypose_labels(chunks(widths, joints), episode)
    assert kp.shape == (7, 7) and kp.dtype == np.float32
    np.testing.assert_allclose(kp[:5, 0], [0.2, 0.2, 0.2, 0.4, 0.4])
    np.testing.assert_array_equal(valid, [True] * 5 + [False] * 2)
    with pytest.raises(ValueError, match="need actions"):
        keypose_labels(np.zeros((3, 8)), episode[:3])


@pytest.mark.parametrize("tcp_offset", [False, True])
def test_keypose_policy_trains_saves_and_reloads(tmp_path, tcp_offset):
    for i in range(3):  # 4.5 s: more than one period of the synthetic gripper
        write_synthetic_episode(tmp_path / "bags" / f"episode_{i:03d}", seed=i, seconds=4.5)
    demos = load_demos(
        tmp_path / "bags", TopicConfig(), chunk_len=4, control_rate_hz=10.0, image_size=32
    )
    _, valid = keypose_labels(demos.actions, demos.episode)
    assert valid.all()
    torch.manual_seed(0)
    cfg = TaskConfig(
        model_overrides=TINY,
        neck_dim=32,
        hidden_dim=64,
        chunk_len=4,
        keypose=True,
        head_tcp_offset=tcp_offset,
        router=RouterConfig(anneal_steps=4),
    )
    policy = TaskPolicy.build(cfg)
    names = {n for n, _ in policy.named_parameters() if n.startswith("keypose_head")}
    assert names and all(
        any(p is q for q in policy.trainable_parameters())
        for n, p in policy.named_parameters()
        if n in names
    )
    train = TrainConfig(
        steps=6,
        head_steps=30,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        val_every=6,
        checkpoint_every=100,
        progress=False,
        plots=False,
    )
    trainer = RouterTrainer(policy, demos, tmp_path / "out", train)
    trainer.fit()
    first, last = trainer.history["train"][0][1], trainer.history["train"][-1][1]
    assert np.isfinite(last) and last < first
    with pytest.raises(ValueError, match="keypose labels"):
        tokens = torch.zeros(1, 1, 1 + 4, policy.model.config.embed_dim)
        policy.loss_from_tokens(tokens, torch.zeros(1, cfg.state_dim), torch.zeros(1, 4, 8))
    reloaded = TaskPolicy.from_pretrained(tmp_path / "out")
    assert reloaded.config.keypose and reloaded.config.head_tcp_offset == tcp_offset
    images = torch.rand(2, 3, 32, 32)
    state = torch.as_tensor(demos.states[:2])
    policy.eval()
    tokens = policy.encode(images).tokens
    torch.testing.assert_close(
        policy.predict_chunk(tokens, state), reloaded.predict_chunk(tokens, state)
    )
    # the head acts on the estimated keypose: the estimate is 7 joints, finite
    assert torch.isfinite(policy.estimate_keypose(tokens, state)).all()
    assert policy.estimate_keypose(tokens, state).shape == (2, 7)


def test_the_head_sees_the_hands_tcp_relative_to_the_keypose_in_metres():
    from ver_core.eval.kinematics import TcpKinematics
    from ver_core.policy.task_policy import TCP_OFFSET_SCALE
    from ver_core.sim import HOME_Q

    cfg = TaskConfig(model_overrides=TINY, neck_dim=32, hidden_dim=64, chunk_len=4, keypose=True)
    assert cfg.head_tcp_offset  # the default for new keypose policies
    old = cfg.to_dict()
    del old["head_tcp_offset"]  # a checkpoint from before the offset: its head took none
    assert not TaskConfig.from_dict(old).head_tcp_offset
    plain = TaskPolicy.build(dataclasses.replace(cfg, head_tcp_offset=False))
    policy = TaskPolicy.build(cfg)
    kin = TcpKinematics()
    rng = np.random.default_rng(0)
    keypose = torch.as_tensor(HOME_Q + rng.normal(0, 0.2, (3, 7)))
    state = torch.zeros(3, 8, dtype=torch.float64)
    state[:, :7] = torch.as_tensor(HOME_Q + rng.normal(0, 0.2, (3, 7)))
    state[0, :7] = keypose[0]  # the hand at the keypose: no offset
    offset = policy.tcp_offset_n(keypose, state).double().numpy()
    want = [
        (kin.tcp(s[:7]) - kin.tcp(k)) / TCP_OFFSET_SCALE
        for s, k in zip(state.numpy(), keypose.numpy(), strict=True)
    ]
    np.testing.assert_allclose(offset, np.array(want), atol=1e-5)
    np.testing.assert_allclose(offset[0], 0.0, atol=1e-6)
    assert np.abs(offset[1:]).max() > 0.05  # 2 cm and more apart
    tokens = policy.encode(torch.rand(3, 3, 32, 32)).tokens
    for p, width in ((plain, 7 + 8), (policy, 7 + 3 + 8)):
        assert p.condition(tokens, state.float(), keypose.float()).shape == (3, width)
        assert p.condition(tokens, state.float()).shape == (3, width)  # the estimated keypose
    given = policy.condition(tokens, state.float(), keypose.float())
    np.testing.assert_allclose(given[:, 7:10].numpy(), offset, atol=1e-5)


def test_close_labels_wait_until_the_measured_hand_arrives():
    from ver_core.policy.keypose import delay_close_until_arrival

    n, h = 10, 4
    states = np.zeros((n, 8))
    states[:, 0] = [0.10, 0.08, 0.06, 0.04, 0.02, 0.01, 0, 0, 0, 0]  # the hand's height lags
    label = np.array([0.08] * 3 + [0.0] * 7)  # the command closes at step 3 (hand 4 cm up)
    actions = np.zeros((n, h, 8))
    for t in range(n):
        actions[t, :, 7] = label[np.minimum(t + np.arange(h), n - 1)]
    actions[:, :, 1:7] = 0.5  # arm targets (the command at height 0): untouched

    def tcp(q):
        return np.array([0.0, 0.0, q[0]])  # toy kinematics: joint 1 is the height

    out, delayed = delay_close_until_arrival(actions, states, np.zeros(n, int), tcp, 0.015)
    assert delayed == 1
    np.testing.assert_array_equal(out[:, 0, 7], [0.08] * 5 + [0.0] * 5)  # closes at step 5
    for t in range(n):  # every chunk entry reads the new label at its own step
        want = np.where(t + np.arange(h) < 5, 0.08, 0.0)
        want[t + np.arange(h) >= n] = 0.0
        np.testing.assert_array_equal(out[t, :, 7], want)
    np.testing.assert_array_equal(out[:, :, :7], actions[:, :, :7])
    again, none = delay_close_until_arrival(out, states, np.zeros(n, int), tcp, 0.015)
    assert none == 0 and np.array_equal(again, out)  # arrived closes stay where they are
    late, _ = delay_close_until_arrival(actions, states, np.zeros(n, int), tcp, 0.015, max_delay=1)
    np.testing.assert_array_equal(late[:, 0, 7], [0.08] * 4 + [0.0] * 6)  # capped
    with pytest.raises(ValueError, match="close_on_arrival"):
        TrainConfig(close_on_arrival=0.5)
