"""Render domain-randomized simulator images with their dense maps, for the sim teachers.

For each image ``sim_00012.png`` it writes ``sim_00012.depth.npy`` (float32 meters) and
``sim_00012.seg.npy`` (int32 class ids, ``ver_core.sim.SEG_CLASSES``): the layout read by the
``sim_depth`` / ``sim_segmentation`` teachers. Run: ``python -m ver_core.distill.sim_dataset``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm


def render_sim_dataset(
    out: str | Path,
    count: int,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    arm_spread: float = 0.35,
    progress: bool = True,
    min_distractors: int = 0,
) -> list[Path]:
    """Render ``count`` views: a randomized scene per seed, the arm moved to a random pose near home."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from PIL import Image

    from ver_core.sim import HOME_Q, MAX_GRIPPER_WIDTH, FrankaPickEnv, SimConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = FrankaPickEnv(
        SimConfig(width=width, height=height, randomize=True, min_distractors=min_distractors)
    )
    paths = []
    try:
        for i in tqdm(range(count), desc="render", disable=not progress):
            rng = np.random.default_rng([seed, i])
            env.reset(seed=seed * 1_000_003 + i)
            target = HOME_Q + rng.uniform(-arm_spread, arm_spread, 7)
            env.set_command(target, float(rng.uniform(0.0, MAX_GRIPPER_WIDTH)))
            env.advance(float(rng.uniform(0.2, 0.8)))  # the arm partway or fully at the target
            path = out / f"sim_{i:05d}.png"
            Image.fromarray(env.render()).save(path)
            np.save(out / f"sim_{i:05d}.depth.npy", env.render_depth().astype(np.float32))
            np.save(out / f"sim_{i:05d}.seg.npy", env.render_segmentation().astype(np.int32))
            paths.append(path)
    finally:
        env.close()
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render simulator images + depth / segmentation maps")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument(
        "--min-distractors",
        type=int,
        default=0,
        help="fewest distractors per scene (0-3; 3 shows every image the cube among others)",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.count < 1:
        print("sim_dataset: error: --count must be >= 1", file=sys.stderr)
        return 2
    if not 0 <= args.min_distractors <= 3:
        print("sim_dataset: error: --min-distractors must be in 0..3", file=sys.stderr)
        return 2
    paths = render_sim_dataset(
        args.out,
        args.count,
        args.seed,
        args.width,
        args.height,
        progress=not args.no_progress,
        min_distractors=args.min_distractors,
    )
    print(f"rendered {len(paths)} images with depth and segmentation maps to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
