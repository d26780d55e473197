"""Training-time augmentation that survives the frozen-feature cache.

Router training caches the BVT tokens of every frame (``features.py``), so images cannot be
re-augmented per step. Instead each frame gets ``views`` augmented copies, drawn once from a seeded
RNG and cached like the originals; every training sample then picks one of the ``1 + views``
versions at random. Validation always uses the original frames.

Two perturbations, both what a fixed robot camera sees between sessions:
- color: brightness, contrast and saturation factors drawn from ``[1 - color, 1 + color]``
  (lighting and white balance drift; breaks "this table color = this episode" shortcuts);
- shift: an integer translation in ``[-shift, shift]`` pixels per axis, edges replicated
  (camera mount play; DrQ-style random shift).

``state_noise`` is the proprioceptive counterpart, applied per step in the trainer: Gaussian noise
(rad) on the seven joint angles fed to the policy, so the start pose cannot identify an episode.

``held_width_aug`` widens what "holding" looks like to the head (:func:`widen_held_width`). The
scripted demos grasp the cube by two faces, so every demonstrated hold reads ~5.1 cm; a grasp whose
yaw is 30-45 degrees off the faces holds the cube by its corners at up to 7.1 cm, a width the head
has only seen while the hand was open or still closing, and it stops lifting (RESULTS.md session
21). Per step, a share of the samples that hold something (measured width inside ``HELD_BAND``
while the label keeps the hand closed) show the head a width drawn between their own and
``HELD_AUG_MAX``; the label is unchanged, so the head learns to lift whatever the hold's width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

# m: measured widths that mean "the closed hand holds something" in the demos (a 5 cm cube by its
# faces reads ~5.1 cm; an empty close reads ~0), and the widest hold the augmentation shows: a
# 5 cm cube across its diagonal reads 7.1 cm, the open hand 8.0 cm
HELD_BAND = (0.03, 0.065)
HELD_AUG_MAX = 0.075


@dataclass(frozen=True)
class AugmentConfig:
    views: int = 0
    shift: int = 4
    color: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.views < 0:
            raise ValueError(f"augment views must be >= 0, got {self.views}")
        if not 0 <= self.shift <= 32:
            raise ValueError(f"augment shift must be in [0, 32] px, got {self.shift}")
        if not 0 <= self.color < 1:
            raise ValueError(f"augment color must be in [0, 1), got {self.color}")

    def cache_tag(self, view: int) -> str:
        """Part of the feature-cache key: the same tag means the same augmented pixels."""
        return f"aug{view}-s{self.shift}-c{self.color:g}-r{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)


def augment_images(images: np.ndarray, rng: np.random.Generator, shift: int, color: float):
    """uint8 (N, H, W, 3) -> augmented uint8 copy (per-image color factors and shift from ``rng``)."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    for i in range(n):
        x = images[i].astype(np.float32)
        if color > 0:
            b, c, s = rng.uniform(1 - color, 1 + color, 3)
            x = x * b
            gray = x @ _LUMA  # (H, W)
            x = gray[..., None] + (x - gray[..., None]) * s  # saturation around the pixel's gray
            x = x.mean() + (x - x.mean()) * c  # contrast around the image mean
        if shift > 0:
            dy, dx = rng.integers(-shift, shift + 1, 2)
            padded = np.pad(x, ((shift, shift), (shift, shift), (0, 0)), mode="edge")
            x = padded[shift + dy : shift + dy + h, shift + dx : shift + dx + w]
        out[i] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def augmented_views(images: np.ndarray, config: AugmentConfig, view: int) -> np.ndarray:
    """The ``view``-th (1-based) augmented copy of every frame; a pure function of the config.

    images: (N, H, W, 3), or (N, C, H, W, 3) with C camera views (each augmented on its own)."""
    if not 1 <= view <= config.views:
        raise ValueError(f"view must be in [1, {config.views}], got {view}")
    rng = np.random.default_rng([config.seed, view])
    if images.ndim == 5:
        flat = augment_images(
            images.reshape(-1, *images.shape[2:]), rng, config.shift, config.color
        )
        return flat.reshape(images.shape)
    return augment_images(images, rng, config.shift, config.color)


def widen_held_width(
    states: np.ndarray,
    actions: np.ndarray,
    rng: np.random.Generator,
    share: float,
    gripper_max_width: float = 0.08,
) -> np.ndarray:
    """A copy of ``states`` (N, S) whose holding samples show a wider hold.

    A sample holds something when its measured width (``states[:, -1]``, m) lies in ``HELD_BAND``
    and its label's first gripper target (``actions[:, 0, -1]``) is closed (below half of
    ``gripper_max_width``). Each such sample, with probability ``share``, gets a width drawn
    uniformly between its own and ``HELD_AUG_MAX``; every other entry is returned unchanged."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"held-width share must be in [0, 1], got {share}")
    out = np.array(states, copy=True)
    width = out[:, -1]
    closed = np.asarray(actions)[:, 0, -1] < 0.5 * gripper_max_width
    holding = (width >= HELD_BAND[0]) & (width <= HELD_BAND[1]) & closed
    chosen = holding & (rng.random(len(out)) < share)
    draw = rng.uniform(0.0, 1.0, len(out))
    out[chosen, -1] = width[chosen] + draw[chosen] * (HELD_AUG_MAX - width[chosen])
    return out
