"""Router training: every ablation mode trains, periodic checkpoints, crash + resume, the CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from ver_core.cli.train_router import main
from ver_core.data import TopicConfig, load_demos
from ver_core.data.synthetic import write_synthetic_episode
from ver_core.model import build_model, save_library
from ver_core.policy import TaskConfig, TaskPolicy
from ver_core.router import ROUTING_MODES, RouterConfig
from ver_core.train import RouterTrainer, TrainConfig, split_episodes

TINY = {"depth": 3, "moe_blocks": 2, "img_size": 32}


@pytest.fixture(scope="module")
def bag_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    for i in range(3):
        write_synthetic_episode(root / f"episode_{i:03d}", seed=i, seconds=1.5)
    return root


@pytest.fixture(scope="module")
def demos(bag_dir):
    return load_demos(bag_dir, TopicConfig(), chunk_len=4, control_rate_hz=10.0, image_size=32)


def tiny_config(router: RouterConfig, **kw) -> TaskConfig:
    return TaskConfig(
        model_overrides=TINY, neck_dim=32, hidden_dim=64, chunk_len=4, router=router, **kw
    )


def make_policy(**router) -> TaskPolicy:
    torch.manual_seed(0)
    return TaskPolicy.build(tiny_config(RouterConfig(anneal_steps=10, **router)))


def fast(**kw) -> TrainConfig:
    base = dict(
        steps=12,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        val_every=4,
        checkpoint_every=4,
        progress=False,
        plots=False,
    )
    return TrainConfig(**{**base, **kw})


def test_split_episodes():
    assert split_episodes(1, 0.1) == ([0], [])
    assert split_episodes(10, 0.2) == (list(range(8)), [8, 9])


@pytest.mark.parametrize("mode", ROUTING_MODES)
def test_each_ablation_mode_trains(tmp_path, demos, mode):
    policy = make_policy(routing=mode)
    trainer = RouterTrainer(policy, demos, tmp_path, fast(steps=20))
    first = trainer.validate()
    metrics = trainer.fit()
    assert metrics["steps"] == 20 and np.isfinite(metrics["final_train_loss"])
    assert metrics["final_val_loss"] < first  # it learned something on held-out episodes
    loaded = TaskPolicy.from_pretrained(tmp_path)
    assert loaded.config.router.routing == mode


def test_no_anneal_trains_at_k_min(tmp_path, demos):
    trainer = RouterTrainer(make_policy(anneal=False), demos, tmp_path, fast(steps=4))
    trainer.fit()
    assert {k for _, k in trainer.history["top_k"]} == {2}
    trainer2 = RouterTrainer(make_policy(), demos, tmp_path / "b", fast(steps=12))
    trainer2.fit()
    assert [k for _, k in trainer2.history["top_k"]][:1] == [6]
    assert trainer2.history["top_k"][-1][1] == 2


def test_crash_then_resume_matches_uninterrupted_run(tmp_path, demos):
    ref = RouterTrainer(make_policy(), demos, tmp_path / "ref", fast())
    ref.fit()

    crashing = RouterTrainer(make_policy(), demos, tmp_path / "run", fast())
    real_loss = crashing.policy.loss

    def loss_that_crashes(*a, step=None, **k):
        if step == 9:
            raise RuntimeError("simulated crash")
        return real_loss(*a, step=step, **k)

    crashing.policy.loss = loss_that_crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["step"] == 8  # the periodic checkpoint at step 8 survived the crash
    # which scenes were held out, by name (the small e2e loop checks only the shown ones)
    assert [Path(e).name for e in state["episodes"]] == [f"episode_00{i}" for i in range(3)]
    assert state["val_episodes"] == state["episodes"][-1:]

    resumed = RouterTrainer(
        TaskPolicy.from_pretrained(tmp_path / "run"), demos, tmp_path / "run", fast()
    )
    assert resumed.resume() and resumed.step == 8
    resumed.fit()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val_episodes"] == state["episodes"][-1:]
    for (k, a), b in zip(
        ref.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), k


def test_cli_end_to_end_with_plots_and_resume(tmp_path, bag_dir, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "task"
    args = [
        "--bag",
        str(bag_dir),
        "--out",
        str(out),
        "--steps",
        "6",
        "--head-steps",
        "0",
        "--batch-size",
        "8",
        "--chunk-len",
        "4",
        "--checkpoint-every",
        "3",
        "--val-every",
        "3",
        "--no-progress",
        "--head",
        "diffusion",
        "--new-experts",
        "1",
        "--neck",
        "attention",
        *(f"--model-override={k}={v}" for k, v in TINY.items()),
    ]
    assert main(args) == 0
    assert "FRESHLY INITIALIZED" in caplog.text and "% of the model" in caplog.text
    for name in (
        "config.json",
        "model.safetensors",
        "stats.json",
        "metrics.json",
        "train_state.json",
        "plots/loss.png",
        "plots/expert_utilization.png",
        "plots/routing_maps.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["expert_utilization"]) == 2 and len(metrics["expert_utilization"][0]) == 7
    policy = TaskPolicy.from_pretrained(out)
    assert policy.config.head == "diffusion" and policy.config.router.new_experts == 1
    stats = json.loads((out / "stats.json").read_text())
    assert stats["action_max"][7] == pytest.approx(0.08, abs=1e-3)  # gripper width from the data
    feats = policy.encode(torch.randn(1, 3, 32, 32))
    assert policy.predict_chunk(feats.tokens, torch.zeros(1, 8)).shape == (1, 4, 8)
    # resume to more steps: continues from step 6 (the cache makes it skip decoding)
    assert main([*args, "--resume", "--steps", "9"]) == 0
    assert json.loads((out / "train_state.json").read_text())["step"] == 9
    assert "demo cache hit" in caplog.text


def test_cli_bad_input_exit_code(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "--bag",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "o"),
                "--steps",
                "1",
                *(f"--model-override={k}={v}" for k, v in TINY.items()),
            ]
        )
        == 2
    )
    assert "no rosbag2 episodes" in caplog.text


def test_ctrl_c_saves_the_current_step(tmp_path, demos):
    trainer = RouterTrainer(make_policy(), demos, tmp_path, fast(checkpoint_every=100))
    real_loss = trainer.policy.loss

    def interrupted(*a, step=None, **k):
        if step == 5:
            raise KeyboardInterrupt
        return real_loss(*a, step=step, **k)

    trainer.policy.loss = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 5
    assert TaskPolicy.from_pretrained(tmp_path).config.chunk_len == 4


def test_head_phase_trains_neck_and_head_on_fixed_routed_tokens(tmp_path, demos):
    trainer = RouterTrainer(make_policy(), demos, tmp_path, fast(steps=8, head_steps=12))
    trainer.fit()
    router_after_joint = {
        k: v.clone() for k, v in TaskPolicy.from_pretrained(tmp_path).router.state_dict().items()
    }
    assert trainer.step == 20 and trainer.history["train"][-1][0] == 19
    # the cached tokens are exactly the deployed routing of every frame
    idx = np.arange(4)
    policy = TaskPolicy.from_pretrained(tmp_path)
    with torch.no_grad():
        routed = policy.route(trainer._batch(idx)[0]).tokens.numpy()
    np.testing.assert_allclose(trainer.routed_tokens()[idx], routed, atol=1e-5)
    # router weights after the head phase are those the joint phase left
    for k, v in policy.router.state_dict().items():
        assert torch.equal(v, router_after_joint[k]), k
    # and the head phase moved the head
    joint_only = RouterTrainer(make_policy(), demos, tmp_path / "b", fast(steps=8))
    joint_only.fit()
    head_a = TaskPolicy.from_pretrained(tmp_path / "b").head.state_dict()
    assert any(not torch.equal(head_a[k], v) for k, v in policy.head.state_dict().items())
    assert trainer.history["val"][-1][1] < trainer.history["val"][0][1]


def crash_and_resume(tmp_path, make, demos, cfg: TrainConfig, crash_at: int) -> tuple:
    """Train ``make()`` uninterrupted and again with a crash at step ``crash_at``, resume the
    crashed run from its last checkpoint, check both end with the same weights; where the run
    resumed: (step, head_phase, action_head_phase)."""
    ref = RouterTrainer(make(), demos, tmp_path / "ref", cfg)
    ref.fit()
    crashing = RouterTrainer(make(), demos, tmp_path / "run", cfg)
    real_loss = crashing._loss

    def loss_that_crashes(idx, step):
        if step == crash_at:
            raise RuntimeError("simulated crash")
        return real_loss(idx, step)

    crashing._loss = loss_that_crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.fit()
    resumed = RouterTrainer(
        TaskPolicy.from_pretrained(tmp_path / "run"), demos, tmp_path / "run", cfg
    )
    assert resumed.resume()
    where = (resumed.step, resumed.head_phase, resumed.action_head_phase)
    resumed.fit()
    for (k, a), b in zip(
        ref.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5), k
    return where


def test_head_phase_resumes_past_the_phase_boundary(tmp_path, demos):
    cfg = fast(steps=8, head_steps=8)  # checkpoint at step 12, inside the head phase
    assert crash_and_resume(tmp_path, make_policy, demos, cfg, 13) == (12, True, False)


def test_dense_student_trains_with_dense_routing_only(tmp_path, bag_dir, caplog):
    """A dense distilled student (moe_blocks=0) is the Theia-style ablation: routing 'dense' trains
    on its features; a routing mode that needs experts is refused with a clear message."""
    caplog.set_level(logging.INFO)
    torch.manual_seed(0)
    lib = tmp_path / "dense_lib"
    save_library(lib, build_model("ver_tiny", **{**TINY, "moe_blocks": 0}))
    args = ["--bag", str(bag_dir), "--library", str(lib), "--steps", "4", "--head-steps", "4",
            "--batch-size", "8", "--chunk-len", "4", "--val-every", "2", "--no-progress"]  # fmt: skip
    out = tmp_path / "dense"
    assert main([*args, "--out", str(out), "--routing", "dense"]) == 0
    policy = TaskPolicy.from_pretrained(out)
    assert policy.model.config.moe_blocks == 0 and policy.config.router.routing == "dense"
    assert (out / "plots" / "loss.png").is_file()
    assert not (out / "plots" / "routing_maps.png").exists()  # nothing routed
    assert json.loads((out / "metrics.json").read_text())["expert_utilization"] == []
    assert main([*args, "--out", str(tmp_path / "ver"), "--routing", "patchwise"]) == 2
    assert "needs expert library blocks" in caplog.text


def test_episode_positions_count_within_each_episode():
    from ver_core.train.trainer import episode_positions

    assert episode_positions(np.array([0, 0, 0, 1, 1, 2, 0])).tolist() == [0, 1, 2, 0, 1, 0, 3]


@pytest.mark.parametrize("augment_views", [0, 1])
def test_frame_stride_trains_on_every_nth_sample_and_computes_only_their_tokens(
    tmp_path, demos, augment_views
):
    """frame_stride 2: training and validation draw only the even positions of each episode; the
    BVT and routed-token caches hold those samples' tokens (equal to the full run's) and nothing
    for the others; the run trains through both phases."""
    from ver_core.train.trainer import episode_positions

    kw = dict(steps=4, head_steps=4, augment_views=augment_views)
    full = RouterTrainer(make_policy(), demos, tmp_path / "full", fast(**kw))
    half = RouterTrainer(make_policy(), demos, tmp_path / "half", fast(frame_stride=2, **kw))
    even = episode_positions(demos.episode) % 2 == 0
    assert even[half.train_idx].all() and even[half.val_idx].all()
    assert set(half.train_idx) == set(full.train_idx[even[full.train_idx]])
    assert set(half.val_idx) == set(full.val_idx[even[full.val_idx]])
    n = len(demos)
    rows_used = np.concatenate([half.used + k * n for k in range(augment_views + 1)])
    rows_left = np.setdiff1d(np.arange(len(half.bank)), rows_used)
    assert len(rows_left) > 0 and not half.bank[rows_left].any()
    np.testing.assert_allclose(  # the same frames, batched differently
        half.bank[rows_used].astype(np.float32), full.bank[rows_used], rtol=1e-3, atol=1e-3
    )
    half.fit()
    assert half.step == 8 and np.isfinite(half.history["val"][-1][1])
    assert not half.routed_tokens()[rows_left].any() and half.routed_tokens()[rows_used].any()
    with pytest.raises(ValueError, match="frame_stride must be >= 1"):
        fast(frame_stride=0)


# ------------------------------------------------------------------ the action-head phase
@pytest.fixture(scope="module")
def keypose_demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("keypose_demos")
    for i in range(3):  # long enough for the scripted hand to close: keyposes to learn
        write_synthetic_episode(root / f"episode_{i:03d}", seed=i, seconds=4.5)
    return load_demos(root, TopicConfig(), chunk_len=4, control_rate_hz=10.0, image_size=32)


def make_keypose_policy(members: int = 1) -> TaskPolicy:
    torch.manual_seed(0)
    cfg = tiny_config(
        RouterConfig(anneal_steps=4), keypose=True, action_mode="keypose", members=members
    )
    return TaskPolicy.build(cfg)


def test_action_head_phase_trains_every_members_action_head_and_nothing_else(
    tmp_path, keypose_demos
):
    phases = dict(steps=4, head_steps=4, checkpoint_every=100)
    full = RouterTrainer(
        make_keypose_policy(members=2),
        keypose_demos,
        tmp_path / "full",
        fast(**phases, action_head_steps=40),
    )
    full.fit()
    assert full.step == 48 and len(full.history["train"]) == 48
    before = RouterTrainer(
        make_keypose_policy(members=2), keypose_demos, tmp_path / "before", fast(**phases)
    )
    before.fit()  # the same run, stopped where the action-head phase starts
    after, start = full.policy.state_dict(), before.policy.state_dict()
    heads = ("head.", "ensemble.0.head.")
    for k, v in start.items():
        if k.startswith(heads):
            continue
        assert torch.equal(after[k], v), k  # router, necks, keypose estimators: untouched
    for prefix in heads:  # each member's action head moved
        assert any(not torch.equal(after[k], start[k]) for k in start if k.startswith(prefix))
    losses = [v for _, v in full.history["train"][8:]]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_action_head_phase_resumes_with_its_own_optimizer(tmp_path, keypose_demos):
    cfg = fast(steps=4, head_steps=4, action_head_steps=12)  # checkpoint at 12: the third phase
    where = crash_and_resume(tmp_path, make_keypose_policy, keypose_demos, cfg, 14)
    assert where == (12, True, True)


def test_action_head_steps_need_a_keypose_policy(tmp_path, demos):
    with pytest.raises(ValueError, match="action_head_steps"):
        TrainConfig(action_head_steps=-1)
    trainer = RouterTrainer(make_policy(), demos, tmp_path, fast(steps=2, action_head_steps=4))
    with pytest.raises(ValueError, match="keypose"):
        trainer.fit()
