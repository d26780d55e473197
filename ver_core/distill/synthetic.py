"""Small synthetic distillation inputs for tests and benchmarks (no downloads).

``make_synthetic_images`` draws scenes of colored boxes on a gradient floor with matching depth
(``<stem>.depth.npy``) and segmentation (``<stem>.seg.npy``) maps, the same layout the simulator
writes. ``save_tiny_hf_teachers`` saves randomly initialized tiny transformers vision models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def make_synthetic_images(
    directory: str | Path,
    count: int,
    seed: int = 0,
    sizes: Sequence[tuple[int, int]] = ((96, 96), (80, 120)),
    dense_maps: bool = True,
) -> list[Path]:
    """Write ``count`` PNG scenes (sizes cycled, (H, W)); returns their paths."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        floor = rng.uniform(60, 200, size=3)
        img = floor[None, None, :] * (0.6 + 0.4 * yy[..., None] / h)  # (H, W, 3) lit floor
        depth = 2.0 - 1.2 * yy / h  # far at the top, near at the bottom
        seg = np.zeros((h, w), dtype=np.int32)
        for obj in range(int(rng.integers(1, 4))):
            bh, bw = int(rng.integers(h // 6, h // 2)), int(rng.integers(w // 6, w // 2))
            y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            img[y0 : y0 + bh, x0 : x0 + bw] = rng.uniform(0, 255, size=3)
            depth[y0 : y0 + bh, x0 : x0 + bw] = rng.uniform(0.4, 1.2)
            seg[y0 : y0 + bh, x0 : x0 + bw] = obj + 1
        img = np.clip(img + rng.normal(0, 4, size=img.shape), 0, 255).astype(np.uint8)
        path = directory / f"scene_{i:04d}.png"
        Image.fromarray(img).save(path)
        if dense_maps:
            np.save(path.with_name(f"{path.stem}.depth.npy"), depth.astype(np.float32))
            np.save(path.with_name(f"{path.stem}.seg.npy"), seg)
        paths.append(path)
    return paths


def save_tiny_hf_teachers(
    directory: str | Path, kinds: Sequence[str] = ("dinov2", "vit")
) -> list[Path]:
    """Save tiny random transformers vision models (``save_pretrained``); returns their dirs."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPVisionConfig,
        CLIPVisionModel,
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        SiglipVisionConfig,
        SiglipVisionModel,
        ViTConfig,
        ViTModel,
    )

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    makers = {
        "dinov2": lambda: Dinov2Model(Dinov2Config(image_size=56, patch_size=14, **small)),
        "dinov2_registers": lambda: Dinov2WithRegistersModel(  # CLS + 4 register tokens
            Dinov2WithRegistersConfig(image_size=56, patch_size=14, num_register_tokens=4, **small)
        ),
        "siglip": lambda: SiglipVisionModel(  # no CLS token at all
            SiglipVisionConfig(image_size=64, patch_size=8, **small)
        ),
        "vit": lambda: ViTModel(
            ViTConfig(image_size=64, patch_size=8, **small), add_pooling_layer=False
        ),
        "clip": lambda: CLIPVisionModel(CLIPVisionConfig(image_size=64, patch_size=8, **small)),
        "clip_full": lambda: CLIPModel(
            CLIPConfig(  # text + vision: the teacher uses the vision tower
                vision_config=dict(image_size=64, patch_size=8, **small),
                text_config=dict(vocab_size=100, max_position_embeddings=16, **small),
                projection_dim=16,
            )
        ),
    }
    out = []
    for i, kind in enumerate(kinds):
        if kind not in makers:
            raise KeyError(f"unknown tiny teacher kind {kind!r}; have {sorted(makers)}")
        torch.manual_seed(i)
        path = Path(directory) / f"tiny_{kind}"
        makers[kind]().save_pretrained(path)
        out.append(path)
    return out
