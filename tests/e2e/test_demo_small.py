"""A small `make demo`: record demos through ROS, train the router, evaluate through the graph.

Every stage must leave its artifact, and the trained policy must bring the gripper to the cube in
the scenes it was shown (its training demos' seeds) where an untrained one does not. The reach
check: the closest gripper-to-cube distance is under REACH_M (the scripted expert
gets 0.026 m; grasping needs about that). Moving "toward the workspace" is not enough: an
untrained policy of the same architecture (same library, same normalization statistics) already
drives the arm from its 0.35 m start to about 0.09 m of the cube by going to the middle of the
demonstrated actions, so "distance decreased" would not tell a trained policy from an untrained
one. The untrained policy must fail the check (asserted). On held-out seeds the check is a known
shortfall from 4 training demos (xfail; issue 6 and docs/RESULTS.md).

The small loop trains make demo's recipe minus the keypose policy and its grasp-point detector
(`--no-keypose --no-grasp-point --action-mode absolute`): from 4 demos
the keypose estimator does not reach the demonstrated scenes reliably (a fresh-clone run: 1 of 4
within REACH_M), while the image-feature policy memorizes the scenes it trains on, which is what
this check is for.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EPISODES, STEPS, HEAD_STEPS, EVAL_EPISODES = 5, 120, 600, 2  # 4 shown + 1 validation demo
CHECK_SEEDS, CHECK_EPISODES, CHECK_MAX_STEPS = 100_000, 2, 50
REACH_M = 0.05  # an episode's closest gripper-to-cube distance (m) that counts as reached

# a few minutes on a quiet 2-core machine; beside another torch job it took over 14 (session 13): the
# limits are generous so that a loaded machine is slow, not red
DEMO_TIMEOUT_S = 1700
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.ros,
    pytest.mark.slow,
    pytest.mark.timeout(DEMO_TIMEOUT_S + 100),
]


def closest_approach(
    policy, seed: int = CHECK_SEEDS, episodes: int = CHECK_EPISODES
) -> list[float]:
    """Closest gripper-to-cube distance (m) per episode on seeds seed.., in-process."""
    from ver_core.eval import (
        ChunkController,
        EvalConfig,
        evaluate,
        policy_predictor,
    )

    config = EvalConfig(episodes=episodes, seed=seed, max_steps=CHECK_MAX_STEPS, media=False)
    controller = ChunkController(policy_predictor(policy), config.execute_steps)
    report = evaluate(controller, config, progress=None)
    return [round(e["min_distance_m"], 3) for e in report["per_episode"]]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    env = dict(os.environ)
    env.update(
        {
            "VER_DEMO_EPISODES": str(EPISODES),
            "VER_DEMO_STEPS": str(STEPS),
            "VER_DEMO_HEAD_STEPS": str(HEAD_STEPS),
            "VER_DEMO_EVAL_EPISODES": str(EVAL_EPISODES),
            "VER_DEMO_OUT": str(out),
            "VER_DEMO_RTF": env.get("VER_DEMO_RTF", "0.5"),
            # every sample of the 5 demos (make demo trains on every other one of its 100): the
            # reach check below was sized for this many samples
            "VER_DEMO_FRAME_STRIDE": "1",
            # see the module docstring; without a keypose the head's targets are absolute
            "VER_DEMO_TRAIN_ARGS": "--val-every 60 --no-keypose --no-grasp-point --action-mode absolute",
            "VER_DEMO_YAW_NET": "0",  # the yaw nets read the grasp point's yaw: none here
            # one member, no action-head phase (it trains a keypose policy's head: none here)
            "VER_DEMO_MEMBERS": "1",
            "VER_DEMO_ACTION_STEPS": "0",
            "MUJOCO_GL": env.get("MUJOCO_GL", "egl"),
        }
    )
    proc = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )
    (out / "demo_stdout.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"demo.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out


def test_every_stage_left_its_artifact(demo_run):
    episodes = sorted((demo_run / "demos").glob("episode_*"))
    assert len(episodes) == EPISODES
    successes, seeds = 0, []
    for ep in episodes:
        assert (ep / "metadata.yaml").is_file() and list(ep.glob("*.mcap"))
        meta = json.loads((ep / "episode.json").read_text())
        successes += meta["success"] is True
        seeds.append(meta["seed"])
    # make demo records with one graph per core (2 here, each a block of seeds): the directories
    # still read as one serial run, episode_00000k holding seed k
    assert seeds == list(range(EPISODES)), seeds
    summary = json.loads((demo_run / "demos" / "record_summary.json").read_text())
    assert summary["episodes"] == EPISODES and summary["workers"] == min(EPISODES, os.cpu_count())
    # the demos carry DART noise: the expert recovers from it in ~49 of 50 episodes (training
    # skips a failed one), so one failure in a small run is the noise, not a broken expert
    assert successes >= EPISODES - 1
    for name in ("config.json", "model.safetensors", "stats.json"):
        assert (demo_run / "policy" / name).is_file()
    import yaml

    options = yaml.safe_load((demo_run / "policy" / "ver-train-router.yaml").read_text())
    assert options["train"]["frame_stride"] == 1  # make demo's VER_DEMO_FRAME_STRIDE got there
    report = json.loads((demo_run / "eval" / "results.json").read_text())
    assert report["mode"] == "through-ros"
    assert report["episodes"] == EVAL_EPISODES == len(report["per_episode"])
    assert report["chunks_received"] > 0  # the policy node really drove the graph
    # the backend the encoder node ran (make demo: torch, as deployed), which times encode and
    # route apart (ONNX Runtime's exported graph is timed as one stage, encode+route)
    assert report["encoder_backend"] == "torch"
    stages = {"encoder/encode", "encoder/route", "policy/policy", "safety/end_to_end"}
    assert stages <= set(report["latency_ms"]), sorted(report["latency_ms"])
    for name in ("rollout_strip.png", "rollout.gif", "distance.png"):
        assert (demo_run / "eval" / name).stat().st_size > 1000
    stdout = (demo_run / "demo_stdout.txt").read_text()
    assert "success:" in stdout and "95% CI" in stdout


def test_untrained_policy_fails_the_reach_check(demo_run):
    import torch

    from ver_core.policy import TaskPolicy

    trained = TaskPolicy.from_pretrained(demo_run / "policy")
    torch.manual_seed(0)
    untrained = TaskPolicy.build(trained.config, trained.stats)  # same library and statistics
    closest = closest_approach(untrained)
    print(f"untrained closest approach {closest} m")
    assert sum(closest) / len(closest) > REACH_M, f"check too weak: untrained passes it ({closest})"


def test_trained_policy_reaches_the_cube_in_the_demonstrated_scenes(demo_run):
    """The loop learns: closed loop in the scenes it was trained on (its training demos' seeds;
    the trainer holds the last demo out for validation and records which), the trained policy
    brings the gripper within REACH_M of the cube in at least half of them, and the untrained one
    of the same make does not. Per scene, not on average: one scene gone wrong must not hide the
    others reached. (Until session 17 this counted the validation demo's scene as shown: with 4
    demos the check was 2 of 3 shown scenes plus one it never saw, which failed every time at
    ~0.20 m: measured 0.026, 0.026, 0.031, 0.204 and, in a red fresh-clone run, 0.032, 0.075,
    0.050, 0.202.)"""
    import torch

    from ver_core.policy import TaskPolicy

    state = json.loads((demo_run / "policy" / "train_state.json").read_text())
    # the trainer skips a failed demo (at most one here) and holds the last one out
    assert len(state["val_episodes"]) == 1 and len(state["episodes"]) >= EPISODES - 1
    shown = [name for name in state["episodes"] if name not in state["val_episodes"]]
    seeds = [json.loads((Path(name) / "episode.json").read_text())["seed"] for name in shown]
    trained = TaskPolicy.from_pretrained(demo_run / "policy")
    torch.manual_seed(0)
    untrained = TaskPolicy.build(trained.config, trained.stats)
    closest = [closest_approach(trained, seed, 1)[0] for seed in seeds]
    baseline = [closest_approach(untrained, seed, 1)[0] for seed in seeds]
    print(f"shown scenes {seeds}: trained closest {closest} m, untrained {baseline} m")
    reached = sum(c < REACH_M for c in closest)
    assert sum(c < REACH_M for c in baseline) < len(shown) / 2, f"check too weak: {baseline}"
    assert reached >= len(shown) / 2, f"trained policy reached {reached}/{len(shown)}: {closest}"


@pytest.mark.xfail(
    strict=False,
    reason="known shortfall, measured 2026-11-22: from 4 training demos the policy does not generalize to "
    "held-out cube positions (from 50 demos the full make demo reaches 15-30% in-process: the "
    "shipped library localizes the one-patch cube poorly); issue 6 and docs/RESULTS.md track it. "
    "XPASS here means the gap closed.",
)
def test_trained_policy_reaches_the_cube(demo_run):
    from ver_core.policy import TaskPolicy

    closest = closest_approach(TaskPolicy.from_pretrained(demo_run / "policy"))
    print(f"trained closest approach {closest} m")
    assert sum(closest) / len(closest) < REACH_M, (
        f"trained policy did not reach the cube: {closest}"
    )
