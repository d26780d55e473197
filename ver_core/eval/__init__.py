"""Closed-loop evaluation in the simulator: success rate (Wilson 95 % CI), lengths, latency, media."""

from ver_core.eval.evaluate import DEFAULT_EVAL_SEED, EvalConfig, evaluate, policy_predictor
from ver_core.eval.report import approach_ratio, build_report, format_summary, write_report
from ver_core.eval.rollout import (
    ChunkController,
    EpisodeResult,
    ExpertController,
    HoldController,
    RandomController,
    run_episode,
    state_of,
)
from ver_core.eval.stats import describe, success_summary, wilson_interval

__all__ = [
    "DEFAULT_EVAL_SEED",
    "ChunkController",
    "EpisodeResult",
    "EvalConfig",
    "ExpertController",
    "HoldController",
    "RandomController",
    "approach_ratio",
    "build_report",
    "describe",
    "evaluate",
    "format_summary",
    "policy_predictor",
    "run_episode",
    "state_of",
    "success_summary",
    "wilson_interval",
    "write_report",
]
