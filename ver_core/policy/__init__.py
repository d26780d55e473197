"""Task policies: routed VER features + proprioception -> action chunks; task checkpoints."""

from ver_core.policy.config import DEFAULT_FINGERS, DEFAULT_JOINTS, TaskConfig
from ver_core.policy.normalization import NormStats
from ver_core.policy.task_policy import RoutedFeatures, TaskPolicy

__all__ = [
    "DEFAULT_FINGERS",
    "DEFAULT_JOINTS",
    "NormStats",
    "RoutedFeatures",
    "TaskConfig",
    "TaskPolicy",
]
