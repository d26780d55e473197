"""Frozen-backbone feature cache: BVT tokens (N, V, 1+P, D) fp16 of every view of every demo frame.

The BVT (blocks before the expert library) is frozen during router training, so its tokens are
computed once; training then runs only the expert-library blocks. The trade-off: images cannot be
augmented (crops, color jitter) because the cached tokens stand for fixed pixels.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ver_core.model import VisionExpertTransformer, preprocess_images

log = logging.getLogger(__name__)


def backbone_fingerprint(model: VisionExpertTransformer) -> str:
    """Hash of the model config and the BVT weights (what the cached tokens depend on)."""
    h = hashlib.sha256(repr(sorted(model.config.to_dict().items())).encode())
    bvt_prefixes = ("patch_embed.", "cls_token", "pos_embed") + tuple(
        f"blocks.{i}." for i in range(model.config.first_moe_block)
    )
    for name, t in sorted(model.state_dict().items()):
        if name.startswith(bvt_prefixes):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_bvt_tokens(
    model: VisionExpertTransformer, images: np.ndarray, batch_size: int = 32, progress: bool = True
) -> np.ndarray:
    """uint8 images (N, V, s, s, 3) -> BVT tokens (N, V, 1+P, D) float16 (all views of a batch of
    frames run as one batch)."""
    if images.ndim != 5:
        raise ValueError(f"expected images (N, V, s, s, 3), got {images.shape}")
    model.eval()
    size = model.config.img_size
    n, v = images.shape[:2]
    c = model.config
    out = np.empty((n, v, c.num_tokens, c.embed_dim), np.float16)
    step = max(1, batch_size // v)
    for start in tqdm(range(0, n, step), desc="BVT features", disable=not progress):
        chunk = images[start : start + step]  # (b, V, s, s, 3)
        x = preprocess_images(chunk.reshape(-1, *chunk.shape[2:]), size=size)  # (b*V, 3, S, S)
        tokens = model.forward_bvt(x).to(torch.float16).numpy()  # (b*V, N, D)
        out[start : start + len(chunk)] = tokens.reshape(len(chunk), v, *tokens.shape[1:])
    return out


def cached_bvt_tokens(
    model: VisionExpertTransformer,
    images: np.ndarray,
    data_key: str,
    cache_dir: str | Path | None,
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """BVT tokens from ``cache_dir`` when computed before for the same data and backbone."""
    if cache_dir is None:
        return compute_bvt_tokens(model, images, batch_size, progress)
    path = Path(cache_dir) / f"bvt_{data_key}_{backbone_fingerprint(model)}.npy"
    if path.is_file():
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
        if tokens.shape[:2] == images.shape[:2]:
            log.info("BVT feature cache hit: %s", path)
            return np.asarray(tokens)
    tokens = compute_bvt_tokens(model, images, batch_size, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, tokens)
    tmp.replace(path)
    return tokens
