"""What the grasp-point tracker saw, frame by frame, in chosen held-out scenes.

Runs the deployed controller in-process (``ver-eval --in-process``'s loop: encoder -> policy with
its tracker -> smoothing -> safety gate, fixed compute seconds per view) on the given seeds and
records every ``GraspPointTracker.update``: the sightings (view, on the arm or not, probability,
world point) and the estimate it returned. Each sighting is labelled with the object it lies
nearest to in the simulator's ground truth (the cube or a distractor, within ``--near``). Per
seed it reports where the estimate started and ended, and how much probability the cube and the
distractors gathered per view, so a failure reads as "the detector never saw the cube", "the
tracker locked onto a distractor it saw first", or "the grasp point was right and the grasp was
not".

    .venv/bin/python bench/probe_tracker.py --checkpoint runs/demo/policy \
        --seeds 100009 100012 100025 100044 --out bench/results/probe_tracker.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")


def ground_truth(env) -> tuple[np.ndarray, list[np.ndarray]]:
    """The cube's xy and the visible distractors' xy (hidden ones wait below the table)."""
    cube = env.observation().cube_pos[:2].copy()
    pos = [env.data.mocap_pos[m] for m in env._distractor_mocap]
    return cube, [p[:2].copy() for p in pos if p[2] > 0]


def label(point: np.ndarray, cube: np.ndarray, distractors: list[np.ndarray], near: float) -> str:
    """'cube', 'distractor<k>' or 'elsewhere': what a world point lies nearest to."""
    best, name = near, "elsewhere"
    for key, xy in [("cube", cube)] + [(f"distractor{k}", d) for k, d in enumerate(distractors)]:
        dist = float(np.linalg.norm(point[:2] - xy))
        if dist <= best:
            best, name = dist, key
    return name


def summarize(frames: list[dict], cube: np.ndarray, distractors: list[np.ndarray], near: float):
    """Per-seed reading of the recorded tracker updates. ``cube``: its xy at the start; a frame
    with ``cube_xy`` (where it was at that update: pushed or lifted) is read against that."""
    views = sorted({s["view"] for f in frames for s in f["sightings"]})
    mass: dict[str, dict[str, float]] = {}
    first_seen: dict[str, int] = {}
    for i, f in enumerate(frames):
        at = np.array(f.get("cube_xy", cube))
        for s in f["sightings"]:
            what = label(np.array(s["point"]), at, distractors, near)
            kind = "cube" if what == "cube" else ("distractor" if what != "elsewhere" else what)
            per = mass.setdefault(f"view{s['view']}", {})
            per[kind] = per.get(kind, 0.0) + s["prob"]
            first_seen.setdefault(kind, i)
    estimates = [
        (f["estimate"], np.array(f.get("cube_xy", cube)))
        for f in frames
        if f["estimate"] is not None
    ]
    start = estimates[0] if estimates else None
    end = estimates[-1] if estimates else None

    def where(e):
        return None if e is None else label(np.array(e[0]), e[1], distractors, near)

    return {
        "views": views,
        "updates": len(frames),
        "probability_mass": mass,
        "first_update_with": first_seen,
        "estimate_start": where(start),
        "estimate_end": where(end),
        "estimate_end_error_m": None
        if end is None
        else round(float(np.linalg.norm(np.array(end[0][:2]) - end[1])), 4),
        "switches": sum(
            1 for a, b in zip(estimates[:-1], estimates[1:], strict=True) if where(a) != where(b)
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--latency-s", type=float, default=0.08, help="fixed compute s per view")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--near", type=float, default=0.04, help="m: a sighting this close is 'on' it")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/results/probe_tracker.json"))
    p.add_argument("--frames", action="store_true", help="keep every update in the output")
    args = p.parse_args(argv)

    import torch

    from ver_core.deploy.controller import build_controller
    from ver_core.deploy.settings import DeploySettings
    from ver_core.eval.closed_loop import LoopTiming, run_controller_episode
    from ver_core.eval.evaluate import EvalConfig
    from ver_core.policy import TaskPolicy
    from ver_core.sim import FrankaPickEnv, SimConfig
    from ver_core.sim.stepper import SimStepper
    from ver_ros.graph import default_config_path

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = TaskPolicy.from_pretrained(args.checkpoint)
    settings = DeploySettings.from_yaml(default_config_path())
    controller = build_controller(policy, settings, checkpoint_dir=args.checkpoint)
    tracker = controller.policy.predictor.tracker
    if tracker is None:
        raise SystemExit(f"{args.checkpoint} detects no grasp point: nothing to probe")
    frames: list[dict] = []
    update = tracker.update

    def recording_update(seen):
        est = update(seen)
        frames.append(
            {
                "sightings": [
                    {
                        "view": s.view,
                        "on_arm": bool(s.on_arm),
                        "prob": round(float(s.prob), 4),
                        "point": [round(float(x), 4) for x in s.point],
                        "range_m": round(float(s.range_m), 3),
                    }
                    for s in seen
                    if s.point is not None
                ],
                "estimate": None if est is None else [round(float(x), 4) for x in est[0]],
                "cube_xy": [round(float(x), 4) for x in env.observation().cube_pos[:2]],
            }
        )
        return est

    tracker.update = recording_update
    cfg = policy.config
    size = EvalConfig()  # the render size the demos were recorded at, as ver-eval
    env = FrankaPickEnv(SimConfig(width=size.width, height=size.height))
    timing = LoopTiming(control_hz=cfg.control_rate_hz, encoder_s=args.latency_s)
    stepper = SimStepper(env, timing.image_rate_hz, timing.state_rate_hz)
    rows = []
    for seed in args.seeds:
        frames.clear()
        t0 = time.perf_counter()
        # ground truth after the episode's reset: run_controller_episode resets from the seed
        env.reset(seed)
        cube, distractors = ground_truth(env)
        result, _ = run_controller_episode(stepper, controller, seed, args.max_steps, timing)
        row = {
            "seed": seed,
            "success": bool(result.success),
            "closest_m": round(float(result.min_distance), 4),
            "cube_xy": [round(float(x), 3) for x in cube],
            "distractors_xy": [[round(float(x), 3) for x in d] for d in distractors],
            **summarize(frames, cube, distractors, args.near),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        if args.frames:
            row["frames"] = [dict(f) for f in frames]
        rows.append(row)
        print(
            f"[probe] seed {seed}: {'success' if row['success'] else 'fail'}, estimate "
            f"{row['estimate_start']} -> {row['estimate_end']} ({row['switches']} switches), "
            f"mass {row['probability_mass']}",
            flush=True,
        )
    env.close()
    out = {
        "benchmark": "probe_tracker",
        "checkpoint": str(args.checkpoint),
        "latency_s": args.latency_s,
        "near_m": args.near,
        "machine": {"cpu": platform.processor() or platform.machine(), "load": os.getloadavg()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"[probe] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
