"""Pure deployment logic: action-chunk scheduling, chunk smoothing, stale frames, latency."""

from ver_core.deploy.chunk import ActionChunk, uniform_offsets
from ver_core.deploy.ensemble import (
    ALIGN_MODES,
    GRIPPER_MODES,
    SMOOTHING_MODES,
    ChunkSmoother,
    SmoothingConfig,
)
from ver_core.deploy.freshness import DEFAULT_BUDGET, FreshnessGate, StalenessBudget
from ver_core.deploy.latency import LatencyStats

__all__ = [
    "ALIGN_MODES",
    "DEFAULT_BUDGET",
    "SMOOTHING_MODES",
    "ActionChunk",
    "ChunkSmoother",
    "FreshnessGate",
    "LatencyStats",
    "GRIPPER_MODES",
    "SmoothingConfig",
    "StalenessBudget",
    "uniform_offsets",
]
