"""Does each camera's grasp head read the cube's yaw, or the hand's? A static probe.

The grasp-point heads regress the grasp's yaw per patch as its view sees it (``grasp_yaw_frame``
"camera": the world yaw less the camera's heading). A camera on the hand turns with the hand, and
in demos where the hand turns to the cube's faces early, the close-up views almost always show
the cube square to the image: a head can then score well by answering "square to me" whatever it
sees, and its world yaw is the hand's own. Fed back through the tracker, that yaw confirms
whatever the hand does (an integrator with no pull toward the cube: RESULTS.md session 25).

Per held-out scene this probe puts the hand (IK, the arm model) above the cube at ``--heights``
(m above the grasp plane), pointing down with its yaw ``--deltas`` (degrees) off the cube's
nearest face, renders every camera, runs the checkpoint's encoder, router and grasp heads once,
and reads each view's likeliest sighting within 3 cm of the cube: its world yaw's error to the
cube's faces (4-fold, degrees in [-45, 45)). Per view and height it fits ``error = slope * delta
+ offset``: slope 0 is a head that reads the cube, slope 1 a head that reports the hand's yaw.

    .venv/bin/python bench/probe_wrist_yaw.py --checkpoint runs/demo/policy \
        --out bench/results/probe_wrist_yaw.json
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

NEAR_M = 0.03  # a sighting this close to the cube's centre is the cube's


def wrap4(deg: float) -> float:
    """An angle (degrees) modulo the cube's 90 degree symmetry, in [-45, 45)."""
    return float((deg + 45.0) % 90.0 - 45.0)


def fit(rows: list[dict], view: str, height: float) -> dict:
    """``error = slope * delta + offset`` by least squares over the rows of one view and height,
    with the mean absolute error and the count. Rows without that view's sighting are skipped."""
    pts = [(r["delta_deg"], r[view]) for r in rows if r["height_m"] == height and view in r]
    if len(pts) < 2 or len({d for d, _ in pts}) < 2:
        return {"n": len(pts), "slope": None, "offset_deg": None, "mean_abs_error_deg": None}
    d, e = np.array(pts, np.float64).T
    slope, offset = np.polyfit(d, e, 1)
    return {
        "n": len(pts),
        "slope": round(float(slope), 3),
        "offset_deg": round(float(offset), 2),
        "mean_abs_error_deg": round(float(np.abs(e).mean()), 2),
    }


def hover_rows(policy, seeds, heights, deltas) -> list[dict]:
    """Per seed, height and yaw offset: each view's yaw error (key ``view{v}``, degrees)."""
    import mujoco
    import torch
    from probe_tracker import _cube_yaw

    from ver_core.eval.evaluate import EvalConfig, eval_env
    from ver_core.model import preprocess_images
    from ver_core.policy import grasp_point as gp
    from ver_core.sim.scene import JOINT_OFFSET

    cfg, rig = policy.config, policy.rig
    on_arm = [body != 0 for body, *_ in rig.views]
    env = eval_env(EvalConfig())
    rows = []
    try:
        for seed in seeds:
            obs = env.reset(seed)
            cube_yaw = _cube_yaw(obs.cube_quat)
            for h in heights:
                for delta in deltas:
                    target = np.array([*obs.cube_pos[:2], cfg.grasp_height + h])
                    rot = gp.top_down(cube_yaw + np.radians(delta))
                    q = rig.reach(obs.arm_q, target, 200, np.inf, rot)
                    env.data.qpos[env._arm_qadr] = q - JOINT_OFFSET
                    mujoco.mj_forward(env.model, env.data)
                    views = env.render_views(cfg.cameras)
                    x = preprocess_images(
                        np.stack([views[c] for c in cfg.cameras]), size=policy.model.config.img_size
                    )
                    with torch.no_grad():
                        tokens = policy.route(policy.model.forward_bvt(x)[None]).tokens[0]
                    headings = [gp.heading(r) for _, r in rig.poses(q)]
                    row = {"seed": int(seed), "height_m": h, "delta_deg": delta}
                    outputs = policy.grasp_outputs(tokens)  # the yaw nets' yaws, if it has them
                    for s in gp.sightings(policy.grasp_heads, tokens, on_arm, outputs=outputs):
                        key = f"view{s.view}"
                        point = rig.ray_to_plane(s.view, s.uv, q, cfg.grasp_height)
                        if key in row or not np.all(np.isfinite(point)):
                            continue
                        if np.linalg.norm(point[:2] - obs.cube_pos[:2]) > NEAR_M:
                            continue
                        vec = gp.world_yaw_vec(
                            s.yaw_vec, headings[s.view], cfg.grasp_yaw_order, cfg.grasp_yaw_frame
                        )
                        world = np.degrees(np.arctan2(vec[1], vec[0]) / cfg.grasp_yaw_order)
                        row[key] = round(wrap4(world - np.degrees(cube_yaw)), 2)
                    rows.append(row)
    finally:
        env.close()
    return rows


def main() -> None:
    import torch

    from ver_core.policy.task_policy import TaskPolicy

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs=2, default=(100000, 100030), metavar=("FROM", "TO"))
    p.add_argument("--heights", type=float, nargs="+", default=[0.08, 0.2, 0.33])
    p.add_argument("--deltas", type=float, nargs="+", default=[-30, -15, 0, 15, 30])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench/results/probe_wrist_yaw.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = []
    for ckpt in args.checkpoint:
        policy = TaskPolicy.from_pretrained(ckpt).eval()
        rows = hover_rows(policy, range(*args.seeds), args.heights, args.deltas)
        views = sorted({k for r in rows for k in r if k.startswith("view")})
        fits = {v: {str(h): fit(rows, v, h) for h in args.heights} for v in views}
        for v, per_h in fits.items():
            for h, f in per_h.items():
                print(f"[probe_wrist_yaw] {ckpt} {v} {h} m: {f}", flush=True)
        out.append({"checkpoint": str(ckpt), "fits": fits, "rows": rows})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "probe_wrist_yaw: each view's yaw error against the hand's yaw offset",
                "seeds": list(args.seeds),
                "heights_m": args.heights,
                "deltas_deg": args.deltas,
                "machine": {
                    "cpu": platform.processor() or platform.machine(),
                    "load": os.getloadavg(),
                },
                "wall_s": round(time.time() - t0, 1),
                "checkpoints": out,
            },
            indent=1,
        )
    )
    print(f"[probe_wrist_yaw] wrote {args.out}")


if __name__ == "__main__":
    main()
