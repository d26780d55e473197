"""Pictures of a rollout: a PNG strip of evenly spaced frames and an animated GIF (Pillow only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["pick_frames", "save_strip", "save_gif"]


def _check(frames: Sequence[np.ndarray]) -> None:
    if len(frames) == 0:
        raise ValueError("no frames to save")
    for f in frames:
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frames must be uint8 (H, W, 3), got {f.dtype} {f.shape}")


def pick_frames(n_frames: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``n_frames`` (first and last included)."""
    if n_frames < 1 or count < 1:
        raise ValueError(f"need n_frames >= 1 and count >= 1, got {n_frames}, {count}")
    count = min(count, n_frames)
    return sorted({round(i * (n_frames - 1) / max(1, count - 1)) for i in range(count)})


def save_strip(
    frames: Sequence[np.ndarray],
    path: str | Path,
    count: int = 8,
    height: int = 160,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write ``count`` evenly spaced frames side by side (each scaled to ``height`` px) as PNG.

    labels: one caption per input frame (e.g. the step number), drawn on the picked frames.
    """
    _check(frames)
    if labels is not None and len(labels) != len(frames):
        raise ValueError(f"{len(labels)} labels for {len(frames)} frames")
    idx = pick_frames(len(frames), count)
    tiles = []
    for i in idx:
        img = Image.fromarray(frames[i])
        w = max(1, round(img.width * height / img.height))
        img = img.resize((w, height), Image.BILINEAR)
        if labels is not None:
            ImageDraw.Draw(img).text((4, 4), str(labels[i]), fill=(255, 255, 0))
        tiles.append(img)
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), height), "white")
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width + 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path


def save_gif(
    frames: Sequence[np.ndarray], path: str | Path, fps: float = 10.0, max_side: int = 240
) -> Path:
    """Animated GIF of all frames at ``fps`` (scaled so the longer side is <= ``max_side``)."""
    _check(frames)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    images = []
    for f in frames:
        img = Image.fromarray(f)
        scale = min(1.0, max_side / max(img.size))
        if scale < 1.0:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        images.append(img.convert("P", palette=Image.ADAPTIVE, colors=128))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
    )
    return path


def save_distance_plot(
    traces: Sequence[Sequence[float]], successes: Sequence[bool], path: str | Path, dt: float
) -> Path:
    """Gripper-to-cube distance over time, one line per episode (green: success, red: failure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(traces) != len(successes):
        raise ValueError(f"{len(traces)} traces but {len(successes)} success flags")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for trace, ok in zip(traces, successes, strict=True):
        t = np.arange(len(trace)) * dt
        ax.plot(t, trace, color="tab:green" if ok else "tab:red", alpha=0.6, lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("gripper-cube distance (m)")
    ax.set_title(f"{sum(map(bool, successes))}/{len(successes)} successful (green)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
