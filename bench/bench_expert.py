"""Scripted-expert success over 100 seeds (ver_core.sim, no ROS) -> bench/results/expert.json.

.venv/bin/python bench/bench_expert.py [--seeds 100]

With DART noise on the executed arm (make demo's demos) and the settle phase against none, side by
side on the same seeds and noise draws -> bench/results/expert_settle.json:

.venv/bin/python bench/bench_expert.py --noise 0.03 --settle 0 1.0 --out bench/results/expert_settle.json

Per episode it records where the measured hand was, relative to the grasp, when the expert turned
to closing (the moment the gripper label closes in a demo).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from ver_core.sim import (  # noqa: E402
    ExecutionNoise,
    ExpertConfig,
    FrankaPickEnv,
    ScriptedExpert,
    SimConfig,
)
from ver_core.sim.expert import CLOSE  # noqa: E402
from ver_core.sim.scene import PANDA_LIMITS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument(
        "--max-steps", type=int, default=150, help="control steps (10 Hz) before failure"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "expert.json")
    p.add_argument("--noise", type=float, default=0.0, help="DART noise std (rad), seeded per seed")
    p.add_argument(
        "--settle", type=float, nargs="+", default=[0.0], help="ExpertConfig.settle_s values (s)"
    )
    args = p.parse_args()
    env = FrankaPickEnv(SimConfig(width=64, height=64))
    runs = [run(env, args.seeds, args.max_steps, args.noise, settle) for settle in args.settle]
    result = runs[0] if len(runs) == 1 else {"noise_std": args.noise, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def run(env: FrankaPickEnv, seeds: int, max_steps: int, noise_std: float, settle: float) -> dict:
    expert = ScriptedExpert(ExpertConfig(settle_s=settle), model=env.model)
    rows, t0 = [], time.perf_counter()
    for seed in range(seeds):
        obs = env.reset(seed)
        expert.reset(obs.arm_q)
        noise = ExecutionNoise(noise_std, seed=seed)
        noise.reset()
        prev, max_step, in_limits, success, steps = obs.arm_q, 0.0, True, False, 0
        at_close = None
        for steps in range(1, max_steps + 1):  # noqa: B007 - read after the loop
            phase = expert.phase
            q, w = expert.act(obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat)
            if expert.phase == CLOSE and phase != CLOSE and at_close is None:
                at_close = expert._fk(np.asarray(obs.arm_q))[0] - expert._grasp_pos
            max_step = max(max_step, float(np.abs(q - prev).max()))
            in_limits &= bool(np.all(q >= PANDA_LIMITS[:, 0]) and np.all(q <= PANDA_LIMITS[:, 1]))
            prev = q
            obs = env.step(noise(q, expert.phase), w)
            if env.success():
                success = True
                break
        rows.append({"seed": seed, "success": success, "steps": steps, "retries": expert.retries,
                     "max_joint_step_rad": round(max_step, 4), "within_limits": in_limits,
                     "hand_at_close_m": None if at_close is None else [round(float(v), 4) for v in at_close]})  # fmt: skip
    ok = [r for r in rows if r["success"]]
    off = np.array([r["hand_at_close_m"] for r in rows if r["hand_at_close_m"] is not None])
    dist = np.linalg.norm(off, axis=1) if len(off) else np.zeros(0)

    def stats(v: np.ndarray) -> dict | None:
        if not len(v):
            return None
        return {k: round(float(f(v)), 4) for k, f in
                (("median", np.median), ("p90", lambda x: np.percentile(x, 90)), ("max", np.max))}  # fmt: skip

    return {
        "seeds": seeds,
        "noise_std": noise_std,
        "settle_s": settle,
        "success_rate": len(ok) / len(rows),
        "control_hz": expert.config.control_hz,
        "mean_time_to_success_s": round(
            float(np.mean([r["steps"] for r in ok])) / expert.config.control_hz, 2
        )
        if ok
        else None,
        "max_joint_step_rad": max(r["max_joint_step_rad"] for r in rows),
        "all_within_panda_limits": all(r["within_limits"] for r in rows),
        "episodes_with_retry": sum(r["retries"] > 0 for r in rows),
        "failed_seeds": [r["seed"] for r in rows if not r["success"]],
        "hand_to_grasp_at_close_m": stats(dist),
        "hand_above_grasp_at_close_m": stats(off[:, 2]) if len(off) else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


if __name__ == "__main__":
    main()
