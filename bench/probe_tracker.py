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
import dataclasses
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
    return cube, [p[:2].copy() for p in env.distractor_positions()]


CLOSE_M = 0.035  # m, TCP to cube centre: the fingers straddle the cube (a successful grasp ~0.026)


def _yaw4(yaw_vec: np.ndarray) -> float:
    """(cos 4 psi, sin 4 psi) -> psi in degrees, in [-45, 45)."""
    return float(np.degrees(np.arctan2(yaw_vec[1], yaw_vec[0]) / 4))


def _cube_yaw(quat: np.ndarray) -> float:
    """The cube's yaw about the vertical (rad) from its (w, x, y, z) quaternion."""
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _cube_yaw4(quat: np.ndarray) -> float:
    """The cube's yaw about the vertical (w, x, y, z quaternion), modulo 90 degrees, in [-45, 45)."""
    return float((np.degrees(_cube_yaw(quat)) + 45) % 90 - 45)


def off_face_yaw(cube_quat: np.ndarray, error_deg: float, near: float) -> float:
    """A grasp yaw (rad) ``error_deg`` off the cube's faces (w, x, y, z quaternion): of its four
    equivalents (a face every 90 degrees) the one nearest ``near``, as the policy picks one."""
    from ver_core.policy.grasp_point import grasp_yaw

    off = _cube_yaw(cube_quat) + np.radians(error_deg)
    return grasp_yaw(np.array([np.cos(4 * off), np.sin(4 * off)]), 4, near)


CLOSING_M = 0.075  # m: the hand's opening below this (open is 0.08) marks the close


def yaw_error_at_close(frames: list[dict]) -> float | None:
    """The tracked grasp yaw's error (degrees, in [-45, 45): off the cube's nearest face) at the
    first update whose hand opening is below ``CLOSING_M``; None if the hand never closed or the
    tracker had no estimate then. Above ~30 degrees the fingers take the cube by its corners."""
    for f in frames:
        if f["width"] < CLOSING_M:
            if f["yaw4_deg"] is None:
                return None
            return round(float((f["yaw4_deg"] - f["cube_yaw4_deg"] + 45) % 90 - 45), 1)
    return None


def yaw_summary(rows: list[dict]) -> dict:
    """Over the episodes whose hand closed with an estimate: the median absolute yaw error at the
    close, and successes / episodes at most and above 30 degrees off the faces."""
    read = [r for r in rows if r.get("yaw_error_at_close_deg") is not None]
    err = np.abs([r["yaw_error_at_close_deg"] for r in read])
    above = [r for r, e in zip(read, err, strict=True) if e > 30]
    within = [r for r, e in zip(read, err, strict=True) if e <= 30]
    return {
        "episodes": len(read),
        "median_abs_deg": round(float(np.median(err)), 1) if len(read) else None,
        "above_15": int(np.sum(err > 15)),
        "success_at_most_30": [sum(r["success"] for r in within), len(within)],
        "success_above_30": [sum(r["success"] for r in above), len(above)],
    }


def failure_kind(row: dict) -> str:
    """What a failed episode's row reads as: "identity" (the tracker's estimate ended on
    something that is not the cube), "near_miss" (on the cube, but the TCP never came within
    ``CLOSE_M`` of the cube's centre) or "at_cube" (it did, and the cube was not lifted)."""
    if not row["estimate_end"].startswith("cube"):
        return "identity"
    return "near_miss" if row["closest_m"] > CLOSE_M else "at_cube"


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
    p.add_argument("--observation-budget-s", type=float, default=0.4)
    p.add_argument(
        "--media", type=Path, default=None, help="write the last frames of each failure here"
    )
    p.add_argument(
        "--policy-s",
        type=float,
        default=None,
        help="fixed policy compute s per chunk (default: measured, as ver-eval); fixed, back-to-back "
        "reruns at one thread count repeat each episode (runs hours apart differed by a few cm in "
        "some seeds), so two trackers or checkpoints run side by side compare seed by seed",
    )
    p.add_argument(
        "--grasp-wait-s",
        type=float,
        default=None,
        help="the gate's grasp interlock: the arm waits at most this long for closing fingers "
        "(0: off; default: config/franka_pick.yaml's)",
    )
    p.add_argument(
        "--align",
        choices=("image", "state"),
        default=None,
        help="when a chunk's first action is scheduled: at the image's time or at the joint "
        "state's the head conditions on (default: config/franka_pick.yaml's)",
    )
    p.add_argument(
        "--hand-yaw",
        action="store_true",
        help="the grasp keeps the hand's current yaw (the tracked point kept): no turn toward "
        "the detected yaw, to ask what the detected yaw is worth",
    )
    p.add_argument(
        "--peak-start",
        action="store_true",
        help="the tracker without the views' probability maps: it starts on a camera on the arm's "
        "sharpest peak (the rule before session 13), to compare against the fused start",
    )
    p.add_argument(
        "--members",
        type=int,
        nargs="+",
        default=None,
        help="an ensemble checkpoint predicts with these members only (default: all of them), to "
        "compare the ensemble with its members seed by seed",
    )
    p.add_argument("--near", type=float, default=0.04, help="m: a sighting this close is 'on' it")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/results/probe_tracker.json"))
    p.add_argument("--frames", action="store_true", help="keep every update in the output")
    p.add_argument(
        "--hold",
        action="store_true",
        help="the tracker holds its estimate while the hand is closed (hold_margin HOLD_MARGIN; "
        "off in the product: docs/RESULTS.md session 21)",
    )
    p.add_argument(
        "--reject",
        nargs="?",
        type=float,
        const=-1.0,
        default=None,
        metavar="M",
        help="the tracker rules out the place of an empty close within M metres (no value: "
        "REJECT_M, the product's default since session 27; 0: off)",
    )
    p.add_argument(
        "--commit",
        action="store_true",
        help="the tracker ignores sightings while the TCP is within COMMIT_DZ of the grasp "
        "plane (off in the product: docs/RESULTS.md session 22)",
    )
    p.add_argument(
        "--yaw-error",
        type=float,
        default=None,
        help="degrees: force the grasp yaw this far off the cube's faces (the tracked point kept), "
        "to ask whether the policy lifts a cube held across its corners (45: the diagonal)",
    )
    args = p.parse_args(argv)

    import torch

    from ver_core.deploy.controller import build_controller
    from ver_core.deploy.settings import DeploySettings
    from ver_core.eval.closed_loop import LoopTiming, run_controller_episode
    from ver_core.eval.evaluate import EvalConfig, eval_env
    from ver_core.policy import TaskPolicy
    from ver_core.sim.stepper import SimStepper
    from ver_ros.graph import default_config_path

    if args.threads:
        torch.set_num_threads(args.threads)
    policy = TaskPolicy.from_pretrained(args.checkpoint).use_members(args.members)
    # the staleness budget make demo evaluates with (scripts/demo.sh): with the robot's 0.25 s
    # two views at --latency-s each keep the gate holding
    settings = DeploySettings.from_yaml(default_config_path()).with_observation_budget(
        args.observation_budget_s
    )
    if args.grasp_wait_s is not None:
        settings = dataclasses.replace(
            settings, safety=dataclasses.replace(settings.safety, grasp_wait_s=args.grasp_wait_s)
        )
    if args.align is not None:
        settings = dataclasses.replace(
            settings, smoothing=dataclasses.replace(settings.smoothing, align=args.align)
        )
    controller = build_controller(policy, settings, checkpoint_dir=args.checkpoint)
    tracker = controller.policy.predictor.tracker
    if tracker is None:
        raise SystemExit(f"{args.checkpoint} detects no grasp point: nothing to probe")
    if args.hold:
        from ver_core.policy.grasp_point import HOLD_MARGIN

        tracker.hold_margin = HOLD_MARGIN
    if args.reject is not None:
        from ver_core.policy.grasp_point import REJECT_M

        tracker.reject_m = REJECT_M if args.reject < 0 else (args.reject or None)
    if args.commit:
        from ver_core.policy.grasp_point import COMMIT_DZ

        tracker.commit_dz = COMMIT_DZ
    frames: list[dict] = []
    update = tracker.update

    def recording_update(seen, maps=None, gripper_width=None, hand=None):
        est = update(seen, None if args.peak_start else maps, gripper_width, hand)
        frames.append(
            {
                "sightings": [
                    {
                        "view": s.view,
                        "on_arm": bool(s.on_arm),
                        "prob": round(float(s.prob), 4),
                        "point": [round(float(x), 4) for x in s.point],
                        "range_m": round(float(s.range_m), 3),
                        "yaw4_deg": round(_yaw4(s.yaw_vec), 1),  # this sighting's, world frame
                    }
                    for s in seen
                    if s.point is not None
                ],
                "estimate": None if est is None else [round(float(x), 4) for x in est[0]],
                "cube_xy": [round(float(x), 4) for x in env.observation().cube_pos[:2]],
                "cube_z": round(float(env.observation().cube_pos[2]), 4),
                # the hand: TCP (m) and finger width (m)
                "tcp": [round(float(x), 4) for x in env.observation().tcp_pos],
                "width": round(float(env.observation().gripper_width), 4),
                "rejected": len(tracker.rejected),  # places of empty closes ruled out
                "committed": bool(tracker.committed),  # the hand low: sightings ignored
                "holding": bool(tracker.holding),  # the tracker kept its estimate: hand closed
                # the grasp yaw, 4-fold (a cube's faces every 90 degrees), in degrees: the
                # estimate's and the cube's about the vertical, and the hand's
                "yaw4_deg": None if est is None else round(_yaw4(est[1]), 1),
                "cube_yaw4_deg": round(_cube_yaw4(env.observation().cube_quat), 1),
            }
        )
        return est

    tracker.update = recording_update
    corrected, predict = policy.corrected_keypose, policy.predict_chunk

    def recording_keypose(tokens, state, tracker_=None):
        keypose = corrected(tokens, state, tracker_)
        if frames:  # this tick's update came first: where the head is sent, as a TCP (m)
            tcp = policy.rig.kin.tcp(keypose[0].double().cpu().numpy())
            frames[-1]["keypose_tcp"] = [round(float(x), 4) for x in tcp]
        return keypose

    def recording_predict(*a, **kw):
        chunk = predict(*a, **kw)
        if frames:  # the chunk's targets as TCPs (m; the first, the 5th, the last) and its
            # first gripper command (m)
            acts = chunk[0].double().cpu().numpy()
            frames[-1]["target_tcp"] = [
                [round(float(x), 4) for x in policy.rig.kin.tcp(acts[i, :7])] for i in (0, 4, -1)
            ]
            frames[-1]["gripper_cmd"] = round(float(acts[0, 7]), 4)
        return chunk

    policy.corrected_keypose, policy.predict_chunk = recording_keypose, recording_predict
    cfg = policy.config
    env = eval_env(EvalConfig())  # both cameras at the demos' render size, as ver-eval
    if args.hand_yaw or args.yaw_error is not None:
        tracked = policy._tracked_grasp_point

        def yaw_for(q: np.ndarray) -> float:
            """The forced grasp yaw at joints q: off the cube's faces by --yaw-error (that flag
            wins), else the hand's own."""
            near = policy.rig.tcp_yaw(q)
            if args.yaw_error is None:
                return near
            return off_face_yaw(env.observation().cube_quat, args.yaw_error, near)

        def forced_yaw(tokens, q, tracker_, width):
            point, yaw, view = tracked(tokens, q, tracker_, width)
            if view[0] >= 0:
                yaw = np.array([yaw_for(q[0])])
            return point, yaw, view

        policy._tracked_grasp_point = forced_yaw
    timing = LoopTiming(
        control_hz=cfg.control_rate_hz, encoder_s=args.latency_s, policy_s=args.policy_s
    )
    stepper = SimStepper(env, timing.image_rate_hz, timing.state_rate_hz)
    rows = []
    for seed in args.seeds:
        frames.clear()
        t0 = time.perf_counter()
        # ground truth after the episode's reset: run_controller_episode resets from the seed
        env.reset(seed)
        cube, distractors = ground_truth(env)
        result, _ = run_controller_episode(
            stepper, controller, seed, args.max_steps, timing, capture_frames=args.media is not None
        )
        if args.media is not None and not result.success and result.frames:
            from ver_core.eval.media import save_strip

            save_strip(result.frames[-40:], args.media / f"fail_{seed}.png", count=8, height=200)
        row = {
            "seed": seed,
            "success": bool(result.success),
            "closest_m": round(float(result.min_distance), 4),
            "max_lift_m": round(float(max(result.lift)) if result.lift else 0.0, 4),
            "held_width_m": round(
                float(np.median([f["width"] for f in frames if f["holding"]] or [np.nan])), 4
            ),
            "cube_xy": [round(float(x), 3) for x in cube],
            "distractors_xy": [[round(float(x), 3) for x in d] for d in distractors],
            "yaw_error_at_close_deg": yaw_error_at_close(frames),
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
        "policy_s": args.policy_s,
        "tracker_start": "peak" if args.peak_start else "fused",
        "observation_budget_s": args.observation_budget_s,
        "near_m": args.near,
        "yaw_error_deg": args.yaw_error,
        "hand_yaw": args.hand_yaw,
        "members": args.members or list(range(policy.config.members)),
        "hold": args.hold,
        "reject_m": tracker.reject_m,
        "grasp_wait_s": controller.gate.config.grasp_wait_s,
        "align": controller.policy.predictor.smoother.config.align,
        "commit_dz": tracker.commit_dz,
        "machine": {"cpu": platform.processor() or platform.machine(), "load": os.getloadavg()},
        "successes": sum(r["success"] for r in rows),
        "episodes": len(rows),
        "failures": {
            kind: [r["seed"] for r in rows if not r["success"] and failure_kind(r) == kind]
            for kind in ("identity", "near_miss", "at_cube")
        },
        "yaw_at_close": yaw_summary(rows),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"[probe] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
