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


class SpatialSoftmaxNeck(nn.Module):
    """Keypoints: C learned heat maps over the patch grid, each reduced to its expected (x, y).

    A 3x3 conv turns the g x g patch grid into C maps; a softmax over the grid (learned
    temperature) gives C probability maps whose expected image coordinates in [-1, 1] are the
    keypoints (B, 2C). Coordinates vary smoothly with where a thing is, an inductive bias for
    object positions not seen in the demos that a flattened conv grid lacks (Levine et al. 2016;
    robomimic's image encoder). The CLS token and the mean patch token ride along for what is not
    a position (gripper open or closed, lighting). On our 50-demo pick task it did not beat the
    conv neck (docs/RESULTS.md): the library's tokens localize the 1-patch cube poorly.
    """

    def __init__(self, dim: int, grid: int, out_dim: int, keypoints: int = 32) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(dim)
        self.maps = nn.Conv2d(dim, keypoints, 3, padding=1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        lin = torch.linspace(-1.0, 1.0, grid)
        ys, xs = torch.meshgrid(lin, lin, indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys], -1).reshape(-1, 2), persistent=False)
        self.summary = nn.Linear(2 * dim, 64)
        self.proj = nn.Sequential(nn.Linear(2 * keypoints + 64, out_dim), nn.GELU())

    def keypoints(self, tokens: Tensor) -> Tensor:
        """Tokens (B, 1+P, D) -> expected (x, y) in [-1, 1] of each heat map (B, C, 2)."""
        b, _, d = tokens.shape
        patches = self.norm(tokens)[:, 1:]  # (B, P, D)
        grid = patches.transpose(1, 2).reshape(b, d, self.grid, self.grid)  # (B, D, g, g)
        logits = self.maps(grid).flatten(2) / self.log_temperature.exp()  # (B, C, P)
        return logits.softmax(dim=-1) @ self.coords  # (B, C, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        keypoints = self.keypoints(tokens).flatten(1)  # (B, 2C)
        x = self.norm(tokens)
        summary = self.summary(torch.cat([x[:, 0], x[:, 1:].mean(dim=1)], dim=-1))  # (B, 64)
        return self.proj(torch.cat([keypoints, summary], dim=-1))  # (B, F)


def build_neck(kind: str, dim: int, grid: int, out_dim: int) -> nn.Module:
    if kind == "spatial":
        return SpatialSoftmaxNeck(dim, grid, out_dim)
    if kind == "conv":
        return ConvNeck(dim, grid, out_dim)
    if kind == "attention":
        return AttentionPoolNeck(dim, out_dim)
    raise ValueError(f"unknown neck {kind!r}")
