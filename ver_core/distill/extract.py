"""Run teachers once over an image folder and write feature shards (``ver-extract-teachers``)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ver_core.distill.shards import ShardWriter
from ver_core.distill.teachers import Teacher, build_teacher

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_IMAGE_SIDE = 16


class ImageError(ValueError):
    """An input image cannot be used."""


def list_images(directory: str | Path) -> list[Path]:
    """All png / jpg files under ``directory`` (recursive, sorted)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image directory {directory} does not exist")
    files = sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise ImageError(f"no .png / .jpg images found under {directory}")
    return files


def read_image(path: Path) -> np.ndarray:
    """A file -> uint8 RGB (H, W, 3); unreadable or tiny images raise an ImageError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"), dtype=np.uint8)  # writable copy
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from e
    if min(arr.shape[:2]) < MIN_IMAGE_SIDE:
        raise ImageError(
            f"image {path} is {arr.shape[1]}x{arr.shape[0]}: too small (need at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})"
        )
    return arr


def student_images(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """uint8 images of any sizes -> uint8 (B, size, size, 3), resized as preprocess_images does."""
    out = []
    for img in images:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(out)


def unique_keys(teachers: Sequence[Teacher]) -> None:
    """Make teacher keys unique in place (hf_vit, hf_vit_2, ...)."""
    seen: dict[str, int] = {}
    for t in teachers:
        base = t.key
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            t.key = f"{base}_{seen[base]}"


def extract_teachers(
    image_dir: str | Path,
    teacher_specs: Sequence[str],
    out: str | Path,
    image_size: int = 224,
    batch_size: int = 16,
    dtype: str = "bfloat16",
    shard_size: int = 256,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write shards for every image under ``image_dir``; returns the manifest.

    Output is assembled in ``<out>.partial`` and moved to ``out`` only when complete, so a failure
    (unreadable image, missing dense map) leaves no half-written shard set behind.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output {out} exists and is not empty (pass --overwrite to replace it)"
        )
    if len(set(teacher_specs)) != len(teacher_specs):
        raise ValueError(f"teacher list has duplicates: {list(teacher_specs)}")
    files = list_images(image_dir)
    teachers = [build_teacher(spec, device) for spec in teacher_specs]
    unique_keys(teachers)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    writer = ShardWriter(partial, [t.describe() for t in teachers], image_size, shard_size, dtype)
    root = Path(image_dir)
    try:
        bar = tqdm(
            range(0, len(files), batch_size), desc="teachers", unit="batch", disable=not progress
        )
        for start in bar:
            paths = files[start : start + batch_size]
            images = [read_image(p) for p in paths]
            feats = {t.key: t.extract(images, paths) for t in teachers}
            names = [str(p.relative_to(root)) for p in paths]
            writer.add(student_images(images, image_size), feats, names)
        manifest = writer.close({"source": str(root.resolve())})
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    partial.replace(out)
    return manifest
