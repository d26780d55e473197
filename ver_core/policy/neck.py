"""Necks: routed tokens (B, 1+P, D) -> one feature vector (B, F) per image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvNeck(nn.Module):
    """Theia-style: the g x g patch grid through two stride-2 convs, flattened, projected to F."""

    def __init__(self, dim: int, grid: int, out_dim: int, channels: int = 128) -> None:
        super().__init__()
        self.grid = grid
        self.conv = nn.Sequential(
            nn.Conv2d(dim, channels, 3, stride=2, padding=1),
            nn.GroupNorm(8, channels),
            nn.GELU(),
            nn.Conv2d(channels, channels // 2, 3, stride=2, padding=1),
            nn.GroupNorm(8, channels // 2),
            nn.GELU(),
        )
        side = math.ceil(math.ceil(grid / 2) / 2)
        self.proj = nn.Linear(channels // 2 * side * side, out_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        b, n, d = tokens.shape
        patches = tokens[:, 1:]  # (B, P, D), drop CLS
        grid = patches.transpose(1, 2).reshape(b, d, self.grid, self.grid)  # (B, D, g, g)
        return self.proj(self.conv(grid).flatten(1))  # (B, C/2, g/4, g/4) -> (B, F)


class AttentionPoolNeck(nn.Module):
    """Q learned queries cross-attend to all tokens; the Q outputs are concatenated, projected to F."""

    def __init__(self, dim: int, out_dim: int, queries: int = 4, heads: int = 4) -> None:
        super().__init__()
        heads = math.gcd(dim, heads)
        self.queries = nn.Parameter(torch.randn(1, queries, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.proj = nn.Linear(queries * dim, out_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        kv = self.norm(tokens)
        q = self.queries.expand(tokens.shape[0], -1, -1)  # (B, Q, D)
        pooled, _ = self.attn(q, kv, kv, need_weights=False)  # (B, Q, D)
        return self.proj(F.gelu(pooled.flatten(1)))  # (B, F)


def build_neck(kind: str, dim: int, grid: int, out_dim: int) -> nn.Module:
    if kind == "conv":
        return ConvNeck(dim, grid, out_dim)
    if kind == "attention":
        return AttentionPoolNeck(dim, out_dim)
    raise ValueError(f"unknown neck {kind!r}")
