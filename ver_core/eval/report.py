"""Evaluation results: the JSON written next to the plots, and the summary printed to the user."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ver_core.eval.rollout import EpisodeResult
from ver_core.eval.stats import describe, success_summary

__all__ = ["build_report", "format_summary", "write_report", "approach_ratio"]

RESULTS_FILE = "results.json"


def approach_ratio(episodes: Sequence[EpisodeResult]) -> float:
    """Mean over episodes of (closest gripper-to-cube distance) / (distance at reset).

    1.0: the gripper never got closer than where it started; about 0: it reached the cube.
    """
    if not episodes:
        raise ValueError("no episodes")
    return float(
        sum(e.min_distance / max(e.start_distance, 1e-6) for e in episodes) / len(episodes)
    )


def build_report(
    episodes: Sequence[EpisodeResult],
    latency: dict[str, dict[str, float]],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Success (Wilson 95 % CI), episode lengths, distances, latency per stage, per-episode rows."""
    if not episodes:
        raise ValueError("cannot report an evaluation with no episodes")
    succ = [e for e in episodes if e.success]
    return {
        **meta,
        **success_summary([e.success for e in episodes]),
        "episode_steps": describe([e.steps for e in episodes]),
        "success_episode_steps": describe([e.steps for e in succ]),
        "start_distance_m": describe([e.start_distance for e in episodes]),
        "min_distance_m": describe([e.min_distance for e in episodes]),
        "final_distance_m": describe([e.final_distance for e in episodes]),
        "approach_ratio": approach_ratio(episodes),
        "latency_ms": latency,
        "per_episode": [e.to_dict() for e in episodes],
    }


def write_report(out_dir: str | Path, report: dict[str, Any]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
    return path


def format_summary(report: dict[str, Any]) -> str:
    """A few human-readable lines: success with CI, lengths, latency per stage, files."""
    lines = [
        f"success: {report['successes']}/{report['episodes']} = {100 * report['success_rate']:.1f}% "
        f"(95% CI {100 * report['ci95_low']:.1f}-{100 * report['ci95_high']:.1f}%)",
    ]
    steps = report["episode_steps"]
    if steps.get("n"):
        lines.append(
            f"episode length: mean {steps['mean']:.1f} steps (min {steps['min']:.0f}, max {steps['max']:.0f})"
        )
    if "min_distance_m" in report and report["min_distance_m"].get("n"):
        lines.append(
            f"gripper-cube distance: start {report['start_distance_m']['mean']:.3f} m, "
            f"closest {report['min_distance_m']['mean']:.3f} m, final {report['final_distance_m']['mean']:.3f} m"
        )
    for stage, s in report.get("latency_ms", {}).items():
        lines.append(
            f"latency {stage:>14}: p50 {s['p50_ms']:7.2f} ms  p99 {s['p99_ms']:7.2f} ms  (n={s['n']})"
        )
    for key in ("results_path", "strip_path", "gif_path", "plot_path"):
        if report.get(key):
            lines.append(f"{key.replace('_path', '')}: {report[key]}")
    return "\n".join(lines)
