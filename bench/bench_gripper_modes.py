"""The smoother's gripper modes against the replanning rate, on one checkpoint.

Each row runs ``ver-eval --in-process``'s loop (the deployed controller: encoder -> policy ->
chunk smoothing -> safety gate, fixed compute seconds per view) on the same held-out seeds with
one gripper mode (``vote``, ``binary``, ...) and one compute time per view: the smaller the time,
the more often the policy replans. Through-ROS evaluations of the same checkpoint (``ver-eval
--through-ros`` results.json files) can be added as rows with ``--ros LABEL=PATH``.

    .venv/bin/python bench/bench_gripper_modes.py --checkpoint runs/demo/policy \
        --modes vote binary --latencies 0.03 0.08 --episodes 50 \
        --ros "binary, auto rtf=runs/demo/eval/results.json" --out bench/results/gripper_vote.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

SUMMARY = ("episodes", "successes", "success_rate", "ci95_low", "ci95_high")


def summary(report: dict) -> dict:
    """The numbers a row keeps from a ver-eval report, with the failing seeds."""
    row = {k: report[k] for k in SUMMARY}
    row["failed_seeds"] = [e["seed"] for e in report["per_episode"] if not e["success"]]
    return row


def run_row(checkpoint: Path, mode: str, latency_s: float, episodes: int, seed: int) -> dict:
    from ver_core.deploy.controller import build_controller
    from ver_core.deploy.settings import DeploySettings
    from ver_core.eval.closed_loop import LoopTiming
    from ver_core.eval.evaluate import EvalConfig, evaluate_controller
    from ver_core.policy import TaskPolicy
    from ver_ros.graph import default_config_path

    policy = TaskPolicy.from_pretrained(checkpoint)
    settings = DeploySettings.from_yaml(default_config_path()).with_observation_budget(0.4)
    smoothing = dataclasses.replace(settings.smoothing, gripper=mode)
    controller = build_controller(
        policy, dataclasses.replace(settings, smoothing=smoothing), checkpoint_dir=checkpoint
    )
    config = EvalConfig(episodes=episodes, seed=seed, max_steps=100, media=False)
    timing = LoopTiming(control_hz=policy.config.control_rate_hz, encoder_s=latency_s)
    start = time.perf_counter()
    report = evaluate_controller(controller, config, None, timing, {}, progress=None)
    return {
        "mode": mode,
        "loop": "in-process",
        "latency_s_per_view": latency_s,
        **summary(report),
        "wall_s": round(time.perf_counter() - start, 1),
        "load_after": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--modes", nargs="+", default=["vote", "binary"])
    p.add_argument("--latencies", type=float, nargs="+", default=[0.03, 0.08])
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--ros", action="append", default=[], help="LABEL=results.json of ver-eval")
    p.add_argument("--out", type=Path, default=Path("bench/results/gripper_vote.json"))
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    for spec in args.ros:
        label, _, path = spec.partition("=")
        report = json.loads(Path(path).read_text())
        rows.append(
            {
                "mode": label,
                "loop": "through ROS",
                "real_time_factor": report.get("real_time_factor"),
                **summary(report),
                "source": path,
            }
        )
    for latency in args.latencies:
        for mode in args.modes:
            row = run_row(args.checkpoint, mode, latency, args.episodes, args.seed)
            print(
                f"[bench] {mode} at {latency} s per view: {row['successes']}/{row['episodes']}",
                flush=True,
            )
            rows.append(row)
    out = {
        "benchmark": "gripper_modes",
        "checkpoint": str(args.checkpoint),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
