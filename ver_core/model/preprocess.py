"""Image preprocessing shared by training, the encoder node and export."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_images(images: np.ndarray | Tensor, size: int = 224) -> Tensor:
    """uint8 RGB (H, W, 3) or (B, H, W, 3) -> float (B, 3, size, size), ImageNet-normalized.

    Images of another size are resized with ``ver_core.data.images.resize_rgb``, the resize the
    training data went through (non-square frames are squashed: the full field of view is kept).
    """
    if isinstance(images, np.ndarray) and images.shape[-3:-1] != (size, size):
        from ver_core.data.images import resize_rgb

        batch = images[None] if images.ndim == 3 else images
        images = np.stack([resize_rgb(im, size) for im in batch])
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images (B, H, W, 3) or (H, W, 3), got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W) in [0, 1]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
