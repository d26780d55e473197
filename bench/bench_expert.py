"""Scripted-expert success over 100 seeds (ver_core.sim, no ROS) -> bench/results/expert.json.

.venv/bin/python bench/bench_expert.py [--seeds 100] [--randomize]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from ver_core.sim import FrankaPickEnv, ScriptedExpert, SimConfig  # noqa: E402
from ver_core.sim.scene import PANDA_LIMITS  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument(
        "--max-steps", type=int, default=150, help="control steps (10 Hz) before failure"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "expert.json")
    args = p.parse_args()
    env = FrankaPickEnv(SimConfig(width=64, height=64))
    expert = ScriptedExpert(model=env.model)
    rows, t0 = [], time.perf_counter()
    for seed in range(args.seeds):
        obs = env.reset(seed)
        expert.reset(obs.arm_q)
        prev, max_step, in_limits, success, steps = obs.arm_q, 0.0, True, False, 0
        for steps in range(1, args.max_steps + 1):  # noqa: B007 - read after the loop
            q, w = expert.act(obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat)
            max_step = max(max_step, float(np.abs(q - prev).max()))
            in_limits &= bool(np.all(q >= PANDA_LIMITS[:, 0]) and np.all(q <= PANDA_LIMITS[:, 1]))
            prev = q
            obs = env.step(q, w)
            if env.success():
                success = True
                break
        rows.append({"seed": seed, "success": success, "steps": steps, "retries": expert.retries,
                     "max_joint_step_rad": round(max_step, 4), "within_limits": in_limits})  # fmt: skip
    ok = [r for r in rows if r["success"]]
    result = {
        "seeds": args.seeds,
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
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
