"""Where does the grasp-point tracker start? Held-out scenes at the home pose, no closed loop.

The start decides an episode: once the hand heads for a distractor, every later frame shows the
hand over it, and the detector (trained on demos in which the hand always ends at the grasp)
confirms it. Closed-loop evaluation spends ~7 s per episode to see that; this probe renders each
held-out scene at the home pose (both cameras at the demos' size), runs the checkpoint's encoder,
router and grasp heads once, and asks a fresh ``GraspPointTracker`` for its first estimate, the
way the deployed policy does. Per checkpoint and start rule (how the views' patch maps are fused:
``product``, the default since session 14, each view's factor raised to its ``PatchMap.weight``
(``ARM_VIEW_WEIGHT``, 1); ``wrist2`` / ``wrist4``, the wrist's factor squared / to the fourth,
measured in session 16; or ``sum``, session 13's) it counts the scenes whose
start lies within 3 cm of the cube and those whose start lies nearer a distractor than the cube.
On session 13-14 checkpoints the distractor starts of seeds 100000-100049 were exactly the
identity failures of the same checkpoint's 50 episodes through ROS.

    .venv/bin/python bench/probe_start.py --checkpoint runs/demo/policy --seeds 100000 100300 \
        --out bench/results/probe_start.json

``--save-frames F.npz`` keeps the rendered scenes' BVT tokens (for bench/probe_detector_variants.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

OK_M = 0.03  # m: a start this close to the cube centre is "on the cube"


def _sum_rule(point, maps) -> float:
    return sum(m.mass_near(point) for m in maps)


def _weighted_product(arm_power: float):
    """The product rule with the arm camera's (the wrist's, last in the policy's camera order)
    ``PatchMap.weight`` set to ``arm_power`` (the default ``product`` uses ``ARM_VIEW_WEIGHT``,
    1). Binds ``fused_mass`` now: ``score_starts`` swaps the module's for the rule it scores."""
    from ver_core.policy.grasp_point import fused_mass

    def rule(point, maps) -> float:
        last = len(maps) - 1
        return fused_mass(
            point, [replace(m, weight=arm_power) if i == last else m for i, m in enumerate(maps)]
        )

    return rule


RULES = {"sum": _sum_rule, "wrist2": _weighted_product(2.0), "wrist4": _weighted_product(4.0)}


def home_frames(policy, seeds) -> dict[str, np.ndarray]:
    """Per seed at the home pose: BVT tokens (V, N, D) fp16, arm joints, cube pos, distractors."""
    import torch

    from ver_core.eval.evaluate import EvalConfig, eval_env
    from ver_core.model import preprocess_images

    cfg = policy.config
    env = eval_env(EvalConfig())
    rows: dict[str, list] = {"bvt": [], "q": [], "cube": [], "distractors": [], "seed": []}
    for seed in seeds:
        obs = env.reset(seed)
        views = env.render_views(cfg.cameras)
        x = preprocess_images(
            np.stack([views[c] for c in cfg.cameras]), size=policy.model.config.img_size
        )
        with torch.no_grad():
            rows["bvt"].append(policy.model.forward_bvt(x).half().numpy())
        d = env.distractor_positions()[:, :2]
        rows["distractors"].append(np.concatenate([d, np.full((3 - len(d), 2), np.inf)]))
        rows["q"].append(obs.arm_q.copy())
        rows["cube"].append(obs.cube_pos[:2].copy())
        rows["seed"].append(seed)
    env.close()
    return {k: np.array(v) for k, v in rows.items()}


def score_starts(policy, frames: dict[str, np.ndarray], rule: str = "product") -> dict:
    """The tracker's first estimate per frame under ``rule``; counts and the distractor seeds."""
    import torch

    from ver_core.policy import grasp_point as gp

    default = gp.fused_mass
    gp.fused_mass = default if rule == "product" else RULES[rule]
    try:
        ok, wrong, errors = [], [], []
        n_state = len(policy.config.joint_names) + 1
        for i, seed in enumerate(frames["seed"]):
            bvt = torch.from_numpy(frames["bvt"][i].astype(np.float32))[None]
            with torch.no_grad():
                tokens = policy.route(bvt).tokens
            state = torch.zeros(1, n_state, dtype=torch.float64)
            state[0, :7] = torch.from_numpy(frames["q"][i])
            point, _, view = policy.grasp_point(tokens, state, gp.GraspPointTracker())
            if view[0] < 0:
                err, near_d = np.inf, np.inf
            else:
                err = float(np.linalg.norm(point[0, :2] - frames["cube"][i]))
                near_d = float(
                    np.min(np.linalg.norm(frames["distractors"][i] - point[0, :2], axis=1))
                )
            errors.append(err)
            if err < OK_M:
                ok.append(int(seed))
            elif near_d < err:
                wrong.append(int(seed))
    finally:
        gp.fused_mass = default
    finite = [e for e in errors if np.isfinite(e)]
    return {
        "scenes": len(errors),
        "start_within_3cm": len(ok),
        "start_at_a_distractor": len(wrong),
        "distractor_seeds": wrong,
        "median_start_error_cm": round(100 * float(np.median(finite)), 2) if finite else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs=2, default=(100000, 100300), metavar=("FROM", "TO"))
    p.add_argument("--rules", nargs="+", default=["sum", "product"], choices=("product", *RULES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench/results/probe_start.json"))
    p.add_argument("--save-frames", type=Path, default=None)
    args = p.parse_args()

    import torch

    from ver_core.policy import TaskPolicy

    torch.set_num_threads(args.threads)
    seeds = range(*args.seeds)
    result = {
        "benchmark": "probe_start",
        "seeds": list(args.seeds),
        "ok_m": OK_M,
        "machine": {"cpu": platform.machine(), "load": list(os.getloadavg())},
        "rows": [],
    }
    frames, library = None, None
    for ck in args.checkpoint:
        policy = TaskPolicy.from_pretrained(ck).eval()
        if frames is None or policy.config.library != library:  # BVT tokens: the library's
            t0, library = time.time(), policy.config.library
            frames = home_frames(policy, seeds)
            print(f"[probe_start] {len(seeds)} home frames in {time.time() - t0:.0f} s")
            if args.save_frames:
                np.savez(args.save_frames, **frames)
        for rule in args.rules:
            row = {"checkpoint": ck, "rule": rule, **score_starts(policy, frames, rule)}
            print(f"[probe_start] {ck} {rule}: {row}")
            result["rows"].append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"[probe_start] wrote {args.out}")


if __name__ == "__main__":
    main()
