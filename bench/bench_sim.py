"""Sim render + step rates (ver_core.sim, no ROS) -> bench/results/sim.json.

.venv/bin/python bench/bench_sim.py
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

from ver_core.sim import HOME_Q, FrankaPickEnv, SimConfig  # noqa: E402


def rate(fn, n: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    out = Path(__file__).parent / "results" / "sim.json"
    result: dict = {
        "mujoco": mujoco.__version__,
        "MUJOCO_GL": os.environ["MUJOCO_GL"],
        "cpu_count": os.cpu_count(),
    }
    for w, h in ((224, 224), (640, 480)):
        env = FrankaPickEnv(SimConfig(width=w, height=h))
        env.reset(0)
        key = f"{w}x{h}"
        result[f"rgb_fps_{key}"] = round(rate(env.render, 40), 1)
        result[f"depth_fps_{key}"] = round(rate(env.render_depth, 20), 1)
        result[f"segmentation_fps_{key}"] = round(rate(env.render_segmentation, 20), 1)

        def step_and_render(env=env):
            env.step(HOME_Q, 0.08)
            env.render()

        result[f"step10hz_plus_rgb_per_s_{key}"] = round(rate(step_and_render, 30), 1)
        env.close()
    env = FrankaPickEnv(SimConfig(width=64, height=64))
    env.reset(0)
    n = 20000
    t = time.perf_counter()
    env.advance(n * env.model.opt.timestep)
    result["physics_steps_per_s"] = round(n / (time.perf_counter() - t))
    result["physics_realtime_factor"] = round(
        result["physics_steps_per_s"] * env.model.opt.timestep, 1
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
