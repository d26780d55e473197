"""Do missed-grasp demos really close on nothing? (``ver_core.sim.Miss``)

Runs ``Miss`` at probability 1 with the scripted expert in the simulator (in-process, no ROS) on
seeds 0..N-1 and records, per scene, the smallest finger width while the miss ran its own grasp:
>= 2 cm means a finger pinched the cube instead of shutting on empty table (the demo would then
label "open" over a held cube). Also checks that every episode still ends with the expert's pick.

    MUJOCO_GL=egl .venv/bin/python bench/probe_miss_geometry.py --offset 0.045 0.06
    MUJOCO_GL=egl .venv/bin/python bench/probe_miss_geometry.py --offset 0.03 0.05 --any-direction
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "miss_geometry.json"


def run(offset: tuple[float, float], any_direction: bool, scenes: int) -> dict:
    from ver_core.sim import FrankaPickEnv, Miss, ScriptedExpert, SimConfig

    env = FrankaPickEnv(SimConfig(width=64, height=64))
    expert = ScriptedExpert(model=env.model)
    widths, picked = [], 0
    try:
        for seed in range(scenes):
            miss = Miss(1.0, seed=seed, offset=offset, config=expert.config, model=env.model)
            obs = env.reset(seed)
            expert.reset(obs.arm_q)
            miss.reset(obs.arm_q, obs.cube_pos, obs.cube_quat)
            if any_direction:  # the first version's geometry: any direction around the cube
                rng = np.random.default_rng([seed, 7])
                angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(*offset)
                miss.decoy = obs.cube_pos + radius * np.array([math.cos(angle), math.sin(angle), 0])
            narrowest = math.inf
            for _ in range(200):
                active = miss.active
                label, width = expert.act(
                    obs.arm_q, obs.gripper_width, obs.cube_pos, obs.cube_quat, detouring=active
                )
                q = miss(label, obs.arm_q, obs.gripper_width)
                obs = env.step(q, width if miss.width is None else miss.width)
                if active:
                    narrowest = min(narrowest, obs.gripper_width)
                if env.success():
                    picked += 1
                    break
            widths.append(round(float(narrowest), 4))
    finally:
        env.close()
    w = np.array(widths)
    return {
        "offset_m": list(offset),
        "direction": "any" if any_direction else "across the fingers' closing direction",
        "scenes": scenes,
        "pinched_ge_2cm": int((w >= 0.02).sum()),
        "brushed_ge_1cm": int((w >= 0.01).sum()),
        "picked": picked,
        "narrowest_width_m": widths,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--offset", type=float, nargs=2, default=(0.045, 0.06), metavar=("LO", "HI"))
    p.add_argument("--any-direction", action="store_true")
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    row = run(tuple(args.offset), args.any_direction, args.scenes)
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    rows = [
        r for r in rows if (r["offset_m"], r["direction"]) != (row["offset_m"], row["direction"])
    ]
    args.out.write_text(json.dumps([*rows, row], indent=1))
    print(
        f"{row['direction']}, {args.offset[0]}-{args.offset[1]} m: pinched the cube in "
        f"{row['pinched_ge_2cm']}/{row['scenes']} (>= 2 cm), brushed it in {row['brushed_ge_1cm']}, "
        f"picked {row['picked']}/{row['scenes']} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
