"""Evaluation logic without the simulator: Wilson interval, rollouts, chunks, media, reports."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ver_core.eval import (
    ChunkController,
    HoldController,
    approach_ratio,
    build_report,
    format_summary,
    run_episode,
    success_summary,
    wilson_interval,
    write_report,
)
from ver_core.eval.media import pick_frames, save_gif, save_strip
from ver_core.eval.stats import fisher_exact_greater


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (45, 50, 0.7864, 0.9565),
    ],
)
def test_wilson_interval_matches_known_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_rejects_bad_counts():
    with pytest.raises(ValueError, match="more successes"):
        wilson_interval(3, 2)
    with pytest.raises(ValueError, match=">= 0"):
        wilson_interval(-1, 2)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_fisher_exact_greater_known_values():
    # Fisher's tea tasting: 3 of 4 right against 1 of 4, one-sided p = 17/70
    assert fisher_exact_greater(3, 4, 1, 4) == pytest.approx(17 / 70)
    # all of arm 1 against none of arm 2: the single most extreme table, 1 / C(10, 5)
    assert fisher_exact_greater(5, 5, 0, 5) == pytest.approx(1 / 252)
    assert fisher_exact_greater(0, 5, 5, 5) == 1.0
    assert fisher_exact_greater(0, 0, 0, 0) == 1.0
    with pytest.raises(ValueError, match="successes <= trials"):
        fisher_exact_greater(6, 5, 0, 5)


@given(
    n1=st.integers(1, 60),
    n2=st.integers(1, 60),
    data=st.data(),
)
def test_fisher_exact_greater_is_a_tail_probability(n1, n2, data):
    """p is in (0, 1], falls by the observed table's probability as arm 1 does better, and the two one-sided tails overlap in
    exactly the observed table's probability (so they sum to 1 + P(observed))."""
    s1 = data.draw(st.integers(0, n1))
    s2 = data.draw(st.integers(0, n2))
    p = fisher_exact_greater(s1, n1, s2, n2)
    assert 0.0 < p <= 1.0
    total = s1 + s2
    point = math.comb(n1, s1) * math.comb(n2, s2) / math.comb(n1 + n2, total)
    if s1 < n1 and s2 > 0:  # one success moved from arm 2 to arm 1 keeps the margins: the
        # tail loses exactly the observed table
        assert p - fisher_exact_greater(s1 + 1, n1, s2 - 1, n2) == pytest.approx(point, abs=1e-12)
    other = fisher_exact_greater(s2, n2, s1, n1)
    assert p + other == pytest.approx(1.0 + point, rel=1e-9)


def test_success_summary_counts():
    s = success_summary([True, False, True, True])
    assert (s["episodes"], s["successes"], s["success_rate"]) == (4, 3, 0.75)
    assert s["ci95_low"] < 0.75 < s["ci95_high"]


class PointEnv:
    """A stand-in world: 'tcp' = first 3 joints, cube at a seed-dependent spot; success when the
    tcp is within 1 cm for the first time."""

    config = SimpleNamespace(control_hz=10.0)

    def reset(self, seed):
        rng = np.random.default_rng(seed)
        self.q = np.zeros(7)
        self.width = 0.08
        self.cube = rng.uniform(0.2, 0.4, 3)
        return self.observation()

    def observation(self):
        return SimpleNamespace(
            arm_q=self.q.copy(),
            gripper_width=self.width,
            tcp_pos=self.q[:3].copy(),
            cube_pos=self.cube.copy(),
        )

    def render(self):
        img = np.zeros((32, 48, 3), np.uint8)
        img[..., 0] = int(255 * min(1.0, np.linalg.norm(self.q[:3] - self.cube)))
        return img

    def step(self, arm_q, width):
        self.q = np.asarray(arm_q, float).copy()
        self.width = width
        return self.observation()

    def success(self):
        return bool(np.linalg.norm(self.q[:3] - self.cube) < 0.01)


class Toward:
    """Chunk predictor that knows the cube (through the env) and moves 0.05 per step."""

    def __init__(self, env, horizon=4):
        self.env, self.horizon, self.calls = env, horizon, 0

    def __call__(self, image, state, latency):
        self.calls += 1
        with latency.time("head"):
            chunk = np.tile(state, (self.horizon, 1))
            pos = state[:3].copy()
            for i in range(self.horizon):
                d = self.env.cube - pos
                pos = pos + d * min(1.0, 0.05 / max(np.linalg.norm(d), 1e-9))
                chunk[i, :3] = pos
        return chunk


def test_run_episode_success_and_distances():
    env = PointEnv()
    pred = Toward(env)
    ctl = ChunkController(pred, execute_steps=2)
    ep = run_episode(env, ctl, seed=3, max_steps=100, capture_frames=True)
    assert ep.success
    assert ep.steps < 100
    assert ep.distances[0] > 0.3 and ep.min_distance < 0.01
    assert len(ep.distances) == ep.steps + 1
    assert len(ep.frames) == ep.steps + 1  # one per step + the final state
    assert pred.calls == -(-ep.steps // 2)  # a new chunk every 2 executed actions
    assert set(ctl.latency.stages()) >= {"render", "sim_step", "head", "policy_total"}


def test_hold_controller_fails_and_never_approaches():
    env = PointEnv()
    ep = run_episode(env, HoldController(), seed=3, max_steps=20)
    assert not ep.success and ep.steps == 20
    assert approach_ratio([ep]) == pytest.approx(1.0)


def test_chunk_controller_rejects_bad_predictions():
    ctl = ChunkController(lambda image, state, lat: np.zeros((4, 5)), execute_steps=2)
    with pytest.raises(ValueError, match="shape"):
        ctl.act(np.zeros((8, 8, 3), np.uint8), np.zeros(8))
    with pytest.raises(ValueError, match="execute_steps"):
        ChunkController(lambda *a: None, execute_steps=0)


def test_chunk_controller_observation_delay_sees_old_frames_and_skips_past_actions():
    """delay d: predict from the observation d steps old, drop the chunk's first d actions."""
    seen = []

    def predictor(image, state, lat):  # chunk[i] = the time the action is meant for
        seen.append(int(state[0]))
        return state[None, :] + np.arange(10)[:, None]

    ctl = ChunkController(predictor, execute_steps=3, obs_delay_steps=2)
    acts = [int(ctl.act(np.zeros((8, 8, 3), np.uint8), np.full(8, float(t)))[0]) for t in range(9)]
    assert seen == [0, 1, 4]  # t=0 (no history yet), t=3 sees t=1, t=6 sees t=4
    assert acts == list(range(9))  # every executed action is the one for its own step
    ctl.reset(0)
    ctl.act(np.zeros((8, 8, 3), np.uint8), np.full(8, 50.0))
    assert seen[-1] == 50  # history cleared between episodes
    with pytest.raises(ValueError, match="obs_delay_steps"):
        ChunkController(predictor, obs_delay_steps=-1)
    short = ChunkController(lambda i, s, lat: np.zeros((2, 8)), execute_steps=1, obs_delay_steps=2)
    with pytest.raises(ValueError, match="chunk length"):
        for _ in range(3):
            short.act(np.zeros((8, 8, 3), np.uint8), np.zeros(8))


def test_run_episode_rejects_non_finite_actions():
    env = PointEnv()
    ctl = ChunkController(lambda image, state, lat: np.full((3, 8), np.nan), execute_steps=2)
    with pytest.raises(ValueError, match="invalid action"):
        run_episode(env, ctl, seed=0, max_steps=5)


def test_media_strip_and_gif(tmp_path):
    frames = [np.full((30, 40, 3), i * 20, np.uint8) for i in range(12)]
    assert pick_frames(12, 4) == [0, 4, 7, 11]
    strip = save_strip(
        frames, tmp_path / "s.png", count=4, height=30, labels=[str(i) for i in range(12)]
    )
    img = Image.open(strip)
    assert img.size == (4 * 40 + 3 * 2, 30)
    gif = save_gif(frames, tmp_path / "r.gif", fps=5)
    assert Image.open(gif).n_frames == 12
    with pytest.raises(ValueError, match="uint8"):
        save_strip([np.zeros((4, 4, 3), np.float32)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no frames"):
        save_gif([], tmp_path / "x.gif")


def test_report_round_trip(tmp_path):
    env = PointEnv()
    eps = [run_episode(env, ChunkController(Toward(env)), seed=s, max_steps=50) for s in range(3)]
    eps.append(run_episode(env, HoldController(), seed=9, max_steps=5))
    report = build_report(
        eps,
        {"encode": {"n": 3, "p50_ms": 1.0, "p99_ms": 2.0, "mean_ms": 1.2, "max_ms": 2.0}},
        {"mode": "test"},
    )
    assert report["successes"] == 3 and report["episodes"] == 4
    assert len(report["per_episode"]) == 4
    path = write_report(tmp_path, report)
    assert json.loads(path.read_text())["success_rate"] == 0.75
    text = format_summary(report)
    assert "3/4 = 75.0%" in text and "encode" in text
    with pytest.raises(ValueError, match="no episodes"):
        build_report([], {}, {})


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    from ver_core.cli.eval import main

    assert main(["--episodes", "1"]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "missing"), "--episodes", "1"]) == 2
    assert "not a task checkpoint" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert main(["--checkpoint", str(tmp_path), "--episodes", "0"]) == 2
    assert "episodes must be >= 1" in capsys.readouterr().err
    assert main(["--controller", "hold", "--through-ros", "--episodes", "1"]) == 2
    assert "--through-ros evaluates a --checkpoint policy" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path), "--through-ros", "--obs-delay-steps", "1"]) == 2
    assert "--obs-delay-steps models latency in-process" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path), "--obs-delay-steps", "-1"]) == 2
    assert "obs_delay_steps must be >= 0" in capsys.readouterr().err


def test_every_evaluation_renders_both_cameras_at_the_demos_size():
    """ver-eval's loops and the bench probes share one simulator builder: the wrist camera at the
    render size the demos were recorded at (session 12's probe rendered it at 640x480)."""
    from ver_core.eval.evaluate import EvalConfig, eval_env

    config = EvalConfig(width=64, height=48)
    env = eval_env(config)
    assert env.config.size_of("camera") == env.config.size_of("wrist_camera") == (64, 48)
    assert eval_env(config, (32, 32)).config.size_of("wrist_camera") == (32, 32)
