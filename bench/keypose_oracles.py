"""Which part of a grasp-point policy's corrected keypose costs the success rate? (issue 13)

Closed loop with the deployed controller (in-process, fixed latency) on held-out seeds, with
parts of the keypose the head acts on replaced by the scripted expert's (its commanded joints
when it starts closing the hand in that scene):

- ``expert``: the expert's keypose itself (the head alone: what perfect perception gives);
- ``point_yaw``: the expert's TCP position and yaw, through the policy's own IK (the IK's choice
  among the arm's redundant postures);
- ``point``: the expert's TCP position, the detected yaw;
- ``yaw``: the detected (tracked) position, the expert's yaw;
- ``none``: the policy as deployed.

    python bench/keypose_oracles.py --checkpoint runs/demo/policy --modes expert point yaw none
    -> bench/results/keypose_oracles.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keypose_estimator import expert_scene_episodes  # noqa: E402

from ver_core.eval.stats import wilson_interval  # noqa: E402
from ver_core.policy import TaskPolicy  # noqa: E402

MODES = ("expert", "point_yaw", "point", "yaw", "none")


def run_mode(policy: TaskPolicy, mode: str, episodes: int, seed0: int) -> dict:
    truth: dict = {}
    grasp_point, corrected = policy.grasp_point, policy.corrected_keypose

    def oracle_point(tokens, state, tracker=None):
        points, yaws, view = grasp_point(tokens, state, tracker)
        if mode in ("point_yaw", "point"):
            points = truth["point"][None].copy()
        if mode in ("point_yaw", "yaw"):
            yaws = np.array([truth["yaw"]])
        return points, yaws, np.maximum(view, 0)

    def on_scene(kp):
        truth["keypose"] = torch.as_tensor(kp, dtype=torch.float32)[None]
        truth["point"], truth["yaw"] = policy.rig.kin.tcp(kp).copy(), policy.rig.tcp_yaw(kp)

    if mode == "expert":
        policy.corrected_keypose = lambda tokens, state, tracker=None: truth["keypose"].expand(
            len(state), -1
        )
    elif mode != "none":
        policy.grasp_point = oracle_point
    try:
        ok = expert_scene_episodes(policy, episodes, seed0, 100, on_scene, mode)
    finally:
        policy.grasp_point, policy.corrected_keypose = grasp_point, corrected
    lo, hi = wilson_interval(sum(ok), len(ok))
    return {"mode": mode, "successes": sum(ok), "episodes": len(ok), "ci95": [lo, hi]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a grasp-point keypose checkpoint")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--out", type=Path, default=Path("bench/results/keypose_oracles.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    policy = TaskPolicy.from_pretrained(a.checkpoint).eval()
    if not policy.config.grasp_point:
        raise SystemExit(f"{a.checkpoint} has no grasp-point detector (--grasp-point)")
    rows = [run_mode(policy, m, a.episodes, a.seed) for m in a.modes]
    out = {
        "what": "closed loop (in-process deployed controller, 0.08 s per view, budget 0.4 s) "
        "with parts of the corrected keypose replaced by the scripted expert's",
        "checkpoint": a.checkpoint,
        "machine": platform.processor() or platform.machine(),
        "load_1min": round(os.getloadavg()[0], 2),
        "rows": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
