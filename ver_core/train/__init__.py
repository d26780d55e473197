"""Router training loop, frozen-feature cache and plots."""

from ver_core.train.features import backbone_fingerprint, cached_bvt_tokens, compute_bvt_tokens
from ver_core.train.trainer import RouterTrainer, TrainConfig, split_episodes

__all__ = [
    "RouterTrainer",
    "TrainConfig",
    "backbone_fingerprint",
    "cached_bvt_tokens",
    "compute_bvt_tokens",
    "split_episodes",
]
