"""Expert-choice overlay: which expert each patch went to, drawn over the camera image."""

from __future__ import annotations

import numpy as np

__all__ = ["EXPERT_COLORS", "routing_overlay"]

# one distinct color per expert id (cycled beyond 10)
EXPERT_COLORS = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190],
    ],
    dtype=np.float32,
)  # fmt: skip


def routing_overlay(rgb: np.ndarray, expert_index: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """rgb (S, S, 3) uint8 (the 224x224 model input) + expert_index (P, K) or (P,) int
    (P = g*g patches, column 0 = top-1 expert) -> (S, S, 3) uint8 with each patch tinted by its
    top-1 expert."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"overlay needs an (S, S, 3) image, got {rgb.shape}")
    idx = np.asarray(expert_index)
    top1 = idx[:, 0] if idx.ndim == 2 else idx  # (P,)
    grid = int(round(np.sqrt(top1.shape[0])))
    if grid * grid != top1.shape[0]:
        raise ValueError(f"{top1.shape[0]} patches do not form a square grid")
    s = rgb.shape[0]
    if s % grid:
        raise ValueError(f"image size {s} is not a multiple of the patch grid {grid}")
    colors = EXPERT_COLORS[top1 % len(EXPERT_COLORS)].reshape(grid, grid, 3)  # (g, g, 3)
    cell = s // grid
    tint = np.repeat(np.repeat(colors, cell, axis=0), cell, axis=1)  # (S, S, 3)
    out = (1 - alpha) * rgb[:, : grid * cell].astype(np.float32) + alpha * tint
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
