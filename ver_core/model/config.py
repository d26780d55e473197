"""Typed configuration of the Vision Expert Transformer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RouterSpec:
    """How one named set of per-layer routers is built.

    kind:
      - ``linear``: one Linear(dim -> experts) per MoE layer, logits per token (patchwise).
      - ``noisy``: as linear plus a learned noise scale (training-time noisy top-k gating, used
        by the distillation routers).
      - ``frame``: logits from the mean token of the image, shared by all tokens (frame-level).
      - ``fixed``: a constant, untrainable choice: ``fixed_expert`` >= 0 routes every token to one
        expert; ``fixed_expert`` = -1 averages all experts with equal weight (static averaging).
    """

    kind: str = "linear"
    fixed_expert: int = -1

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "noisy", "frame", "fixed"):
            raise ValueError(
                f"unknown router kind {self.kind!r}: use linear, noisy, frame or fixed"
            )


@dataclass
class VERConfig:
    """Shapes of a VER model. Blocks ``depth - moe_blocks .. depth-1`` hold the expert library."""

    name: str = "ver_tiny"
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    num_experts: int = 6
    top_k: int = 2
    moe_blocks: int = 3
    expert_mlp_ratio: float = 2.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    routers: dict[str, RouterSpec] = field(default_factory=lambda: {"default": RouterSpec()})

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if not 0 <= self.moe_blocks <= self.depth:
            raise ValueError(
                f"moe_blocks must be in [0, depth={self.depth}], got {self.moe_blocks}"
            )
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(
                f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}"
            )
        self.routers = {
            k: (v if isinstance(v, RouterSpec) else RouterSpec(**v))
            for k, v in self.routers.items()
        }

    @property
    def grid_size(self) -> int:
        """Patches per side (14 for 224/16)."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_tokens(self) -> int:
        """Patch tokens plus the CLS token."""
        return self.num_patches + 1

    @property
    def first_moe_block(self) -> int:
        """Index of the first block holding an expert library layer (9 for 12 blocks, 3 MoE)."""
        return self.depth - self.moe_blocks

    @property
    def expert_hidden(self) -> int:
        return int(round(self.embed_dim * self.expert_mlp_ratio))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VERConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown VERConfig fields: {sorted(unknown)}")
        return cls(**data)
