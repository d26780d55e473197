"""Model sizes registered by name (DeiT-T/S/B shapes, patch 16, 224 input)."""

from __future__ import annotations

from typing import Any

from ver_core.model.config import VERConfig
from ver_core.model.vit import VisionExpertTransformer

MODEL_SIZES: dict[str, dict[str, Any]] = {
    "ver_tiny": {"embed_dim": 192, "num_heads": 3},
    "ver_small": {"embed_dim": 384, "num_heads": 6},
    "ver_base": {"embed_dim": 768, "num_heads": 12},
}


def model_config(name: str, **overrides: Any) -> VERConfig:
    """The VERConfig of a registered size, with field overrides (e.g. num_experts=4)."""
    if name not in MODEL_SIZES:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(MODEL_SIZES)}")
    return VERConfig(name=name, **{**MODEL_SIZES[name], **overrides})


def build_model(name: str, **overrides: Any) -> VisionExpertTransformer:
    """A freshly initialized VER model of a registered size."""
    return VisionExpertTransformer(model_config(name, **overrides))
