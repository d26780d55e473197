"""Feature translators: student patch tokens -> one teacher's feature map (Theia's design)."""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from torch import Tensor, nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FeatureTranslator(nn.Module):
    """(B, g*g, D) student patch tokens -> (B, h*w, C) teacher tokens.

    g x g grid -> transposed conv (3x3, stride 1: g -> g+2, 14 -> 16) -> LN -> 3x3 conv -> ReLU ->
    LN -> 3x3 conv -> ReLU -> [adaptive average pooling to the teacher's (h, w) when it is not
    16x16] -> LN -> per-token Linear to the teacher width C.
    """

    def __init__(
        self, dim: int, in_grid: int, out_channels: int, out_grid: tuple[int, int]
    ) -> None:
        super().__init__()
        self.in_grid, self.out_grid = in_grid, tuple(out_grid)
        self.up = nn.ConvTranspose2d(dim, dim, kernel_size=3, stride=1)  # g -> g + 2
        self.norm0 = ChannelLayerNorm(dim)
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.norm1 = ChannelLayerNorm(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_channels)

    def forward(self, tokens: Tensor) -> Tensor:
        b, p, d = tokens.shape
        if p != self.in_grid**2:
            raise ValueError(f"expected {self.in_grid**2} patch tokens, got {p}")
        x = tokens.transpose(1, 2).reshape(b, d, self.in_grid, self.in_grid)  # (B, D, g, g)
        x = self.norm0(self.up(x))  # (B, D, g+2, g+2)
        x = self.norm1(F.relu(self.conv1(x)))
        x = F.relu(self.conv2(x))
        if tuple(x.shape[-2:]) != self.out_grid:
            x = F.adaptive_avg_pool2d(x, self.out_grid)  # (B, D, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, D)
        return self.head(self.norm2(x))  # (B, h*w, C)


def build_translators(dim: int, in_grid: int, teachers: Iterable[dict]) -> nn.ModuleDict:
    """One translator per teacher, keyed by the teacher key (dicts with key, channels, grid)."""
    return nn.ModuleDict(
        {
            t["key"]: FeatureTranslator(dim, in_grid, int(t["channels"]), tuple(t["grid"]))
            for t in teachers
        }
    )
