"""Teacher feature shards: extracted once, read by the trainer (which never runs teachers).

Directory layout::

    manifest.json          format, image size, teachers (name, key, channels, grid), shard list
                           (file, count, bytes, sha256), source image names
    stats.safetensors      per teacher: "<key>.mean", "<key>.std" (C,) float32 over all tokens
                           (a teacher's ``channel_weights`` divide its std: the z-normalized
                           target, and the distillation's error on it, grows by the weight)
    shard_00000.safetensors  "images" uint8 (n, S, S, 3) at student resolution,
                             "feat.<key>" (n, h*w, C) bf16 / fp16 raw teacher tokens
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

MANIFEST = "manifest.json"
STATS = "stats.safetensors"
FORMAT = "ver-teacher-shards"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
MIN_STD = 1e-4


class ShardError(ValueError):
    """A shard directory is missing, corrupt or does not fit the model."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ShardWriter:
    """Accumulates images + teacher tokens, writes shards of ``shard_size`` images and the stats."""

    def __init__(
        self,
        out: Path,
        teachers: Sequence[dict],
        image_size: int,
        shard_size: int = 256,
        dtype: str = "bfloat16",
    ) -> None:
        if dtype not in ("bfloat16", "float16"):
            raise ValueError(f"feature dtype must be bfloat16 or float16, got {dtype!r}")
        self.out, self.teachers, self.image_size = Path(out), list(teachers), image_size
        self.shard_size, self.dtype = shard_size, dtype
        self.out.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []
        self.names: list[str] = []
        self._images: list[Tensor] = []
        self._feats: dict[str, list[Tensor]] = {t["key"]: [] for t in self.teachers}
        self._sum = {
            t["key"]: torch.zeros(t["channels"], dtype=torch.float64) for t in self.teachers
        }
        self._sq = {
            t["key"]: torch.zeros(t["channels"], dtype=torch.float64) for t in self.teachers
        }
        self._count = {t["key"]: 0 for t in self.teachers}

    def add(self, images: Tensor, feats: dict[str, Tensor], names: Sequence[str]) -> None:
        """images uint8 (n, S, S, 3); feats key -> float (n, h*w, C); names: source files."""
        for t in self.teachers:
            f = feats[t["key"]].double()
            self._sum[t["key"]] += f.sum(dim=(0, 1))
            self._sq[t["key"]] += (f * f).sum(dim=(0, 1))
            self._count[t["key"]] += f.shape[0] * f.shape[1]
            self._feats[t["key"]].append(feats[t["key"]].to(DTYPES[self.dtype]))
        self._images.append(images)
        self.names.extend(names)
        while sum(len(x) for x in self._images) >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, count: int | None = None) -> None:
        """Write the first ``count`` buffered items (all when None) as one shard."""
        if not self._images:
            return
        images = torch.cat(self._images)
        count = len(images) if count is None else count
        tensors = {"images": images[:count].contiguous()}
        self._images[:] = [images[count:]] if count < len(images) else []
        for key, parts in self._feats.items():
            feats = torch.cat(parts)
            tensors[f"feat.{key}"] = feats[:count].contiguous()
            parts[:] = [feats[count:]] if count < len(feats) else []
        path = self.out / f"shard_{len(self.shards):05d}.safetensors"
        save_file(tensors, str(path))
        self.shards.append(
            {
                "file": path.name,
                "count": int(tensors["images"].shape[0]),
                "bytes": path.stat().st_size,
                "sha256": _sha256(path),
            }
        )

    def close(self, extra: dict | None = None) -> dict:
        """Write the last shard, the statistics and the manifest; returns the manifest."""
        self._flush()
        if not self.shards:
            raise ShardError("no images were written")
        stats = {}
        for key, n in self._count.items():
            mean = self._sum[key] / n
            var = (self._sq[key] / n - mean * mean).clamp_min(0.0)
            stats[f"{key}.mean"] = mean.float()
            stats[f"{key}.std"] = var.sqrt().float()
        for t in self.teachers:  # weighted channels: the normalized target grows by the weight
            if t.get("channel_weights") is not None:
                w = torch.tensor(t["channel_weights"], dtype=torch.float32)
                stats[f"{t['key']}.std"] = stats[f"{t['key']}.std"] / w
        save_file(stats, str(self.out / STATS))
        manifest = {
            "format": FORMAT,
            "version": 1,
            "image_size": self.image_size,
            "feature_dtype": self.dtype,
            "teachers": self.teachers,
            "num_images": len(self.names),
            "shards": self.shards,
            "images": self.names,
            **(extra or {}),
        }
        (self.out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return manifest


def read_manifest(directory: str | Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise ShardError(f"shard directory {directory} does not exist")
    path = directory / MANIFEST
    if not path.is_file():
        raise ShardError(f"{directory} has no {MANIFEST}; write shards with ver-extract-teachers")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShardError(f"{path} is not valid JSON: {e}") from e
    if manifest.get("format") != FORMAT:
        raise ShardError(
            f"{path} is not a teacher shard manifest (format {manifest.get('format')!r})"
        )
    return manifest


def shards_hold(directory: str | Path, teachers: list[str]) -> bool:
    """Do the shards in ``directory`` hold exactly these teachers, in this order, with these
    arguments (``sim_segmentation:8:cube=8/distractor=8`` is not ``sim_segmentation``)? False
    when there are no shards yet; a manifest that cannot be read raises :class:`ShardError`."""
    if not (Path(directory) / MANIFEST).is_file():
        return False
    return [t["name"] for t in read_manifest(directory)["teachers"]] == list(teachers)


class ShardDataset:
    """Random access to shard items. ``batch(indices)`` -> (uint8 (B, S, S, 3), key -> (B, T, C))
    with teacher tokens z-normalized per channel by the dataset statistics."""

    def __init__(
        self, directory: str | Path, image_size: int | None = None, verify: bool = True
    ) -> None:
        self.dir = Path(directory)
        self.manifest = m = read_manifest(self.dir)
        self.teachers: list[dict] = m["teachers"]
        self.image_size = int(m["image_size"])
        if image_size is not None and image_size != self.image_size:
            raise ShardError(
                f"shards in {self.dir} hold {self.image_size}x{self.image_size} images but the model "
                f"takes {image_size}x{image_size}; extract again with --image-size {image_size}"
            )
        try:
            stats = load_file(str(self.dir / STATS))
        except Exception as e:
            raise ShardError(f"cannot read statistics {self.dir / STATS}: {e}") from e
        self.mean, self.std = {}, {}
        for t in self.teachers:
            k = t["key"]
            if f"{k}.mean" not in stats or f"{k}.std" not in stats:
                raise ShardError(f"{self.dir / STATS} has no statistics for teacher {k!r}")
            self.mean[k] = stats[f"{k}.mean"].float()
            self.std[k] = stats[f"{k}.std"].float().clamp_min(MIN_STD)
        self.handles, offsets = [], [0]
        for info in m["shards"]:
            self.handles.append(self._open(info, verify))
            offsets.append(offsets[-1] + int(info["count"]))
        self.offsets = np.asarray(offsets)
        if offsets[-1] != m["num_images"] or offsets[-1] == 0:
            raise ShardError(
                f"{self.dir}: shards hold {offsets[-1]} images, manifest says {m['num_images']}"
            )

    def _open(self, info: dict, verify: bool):
        path = self.dir / info["file"]
        if not path.is_file():
            raise ShardError(f"shard {path} listed in the manifest is missing")
        if path.stat().st_size != info["bytes"]:
            raise ShardError(
                f"shard {path} is corrupt: {path.stat().st_size} bytes, manifest says {info['bytes']}"
            )
        if verify and _sha256(path) != info["sha256"]:
            raise ShardError(f"shard {path} is corrupt: its sha256 does not match the manifest")
        try:
            handle = safe_open(str(path), framework="pt")
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        except Exception as e:
            raise ShardError(f"shard {path} is corrupt: {e}") from e
        n, s = int(info["count"]), self.image_size
        want = {"images": (n, s, s, 3)}
        for t in self.teachers:
            want[f"feat.{t['key']}"] = (n, t["grid"][0] * t["grid"][1], t["channels"])
        for key, shape in want.items():
            if shapes.get(key) != shape:
                raise ShardError(
                    f"shard {path}: tensor {key!r} has shape {shapes.get(key)}, expected {shape}"
                )
        return handle

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _item(self, key: str, index: int) -> Tensor:
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        local = index - int(self.offsets[shard])
        return self.handles[shard].get_slice(key)[local : local + 1]

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, dict[str, Tensor]]:
        images = torch.cat([self._item("images", i) for i in indices])  # (B, S, S, 3) uint8
        feats = {}
        for t in self.teachers:
            k = t["key"]
            raw = torch.cat([self._item(f"feat.{k}", i) for i in indices]).float()  # (B, T, C)
            feats[k] = (raw - self.mean[k]) / self.std[k]
        return images, feats
