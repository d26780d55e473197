"""Dense-map teachers: per-image maps rendered by the simulator, stored beside each image.

For an image ``scene_0001.png`` the maps are ``scene_0001.depth.npy`` (float32 (H, W) depth in
meters; 0, negative, NaN or inf = no depth) and ``scene_0001.seg.npy`` (integer (H, W) class ids,
0 = background). The maps may have any resolution; they are pooled to a 16x16 grid:

- ``sim_depth``: 4 channels per cell: mean log-depth, horizontal and vertical log-depth gradient,
  and the fraction of valid pixels (the geometry expert of the simulated world).
- ``sim_segmentation[:C][:CLASS=W/...]``: C channels (default 8), the fraction of the cell's pixels
  of each class; ids >= C-1 share the last channel, negative ids count as background (class 0).
  ``CLASS=W`` (a name of ``ver_core.sim.SEG_CLASSES`` or an id) weighs that class's channel W times
  in the distillation loss: the teacher's ``channel_weights``, which the shards apply after the
  per-channel z-normalization (the stored std is divided by W), so the normalized target, and
  the error on it, is W times larger. Scaling the fractions themselves would change nothing: the
  z-normalization undoes any per-channel scale. E.g. ``sim_segmentation:8:cube=4/distractor=4``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ver_core.distill.teachers import Teacher, TeacherError, register_teacher

DENSE_GRID = 16
DEFAULT_SEG_CLASSES = 8  # the simulator uses ids 0..5 (ver_core.sim.SEG_CLASSES)
MIN_DEPTH_M, MAX_DEPTH_M = 0.01, 100.0


def dense_map_path(image_path: Path, suffix: str) -> Path:
    """``dir/stem.png`` + ``depth`` -> ``dir/stem.depth.npy``."""
    return image_path.with_name(f"{image_path.stem}.{suffix}.npy")


def load_dense_map(image_path: Path, suffix: str) -> np.ndarray:
    path = dense_map_path(Path(image_path), suffix)
    if not path.is_file():
        raise FileNotFoundError(f"dense map {path} for image {image_path} is missing")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise TeacherError(f"cannot read dense map {path}: {e}") from e
    if arr.ndim != 2:
        raise TeacherError(f"dense map {path} must be (H, W), got shape {arr.shape}")
    return arr


def depth_features(depth: np.ndarray, grid: int = DENSE_GRID) -> Tensor:
    """float (H, W) meters -> (4, grid, grid): log-depth, d/dx, d/dy, valid fraction."""
    d = torch.from_numpy(np.asarray(depth, dtype=np.float32))
    valid = torch.isfinite(d) & (d > 0)
    logd = torch.log(d.clamp(MIN_DEPTH_M, MAX_DEPTH_M)).masked_fill(~valid, 0.0)  # (H, W)
    v = valid.float()
    stack = torch.stack([logd * v, v])[None]  # (1, 2, H, W)
    pooled = F.adaptive_avg_pool2d(stack, (grid, grid))[0]  # (2, g, g)
    frac = pooled[1]
    mean_log = pooled[0] / frac.clamp_min(1e-6)  # mean over valid pixels only
    gx = torch.zeros_like(mean_log)
    gy = torch.zeros_like(mean_log)
    gx[:, 1:-1] = (mean_log[:, 2:] - mean_log[:, :-2]) / 2
    gy[1:-1, :] = (mean_log[2:, :] - mean_log[:-2, :]) / 2
    return torch.stack([mean_log, gx, gy, frac])  # (4, g, g)


def segmentation_features(seg: np.ndarray, num_classes: int, grid: int = DENSE_GRID) -> Tensor:
    """int (H, W) class ids -> (num_classes, grid, grid) per-class pixel fraction per cell."""
    if not np.issubdtype(np.asarray(seg).dtype, np.integer):
        raise TeacherError(
            f"segmentation map must hold integer class ids, got {np.asarray(seg).dtype}"
        )
    ids = torch.from_numpy(np.asarray(seg, dtype=np.int64)).clamp(0, num_classes - 1)  # (H, W)
    onehot = F.one_hot(ids, num_classes).permute(2, 0, 1).float()[None]  # (1, C, H, W)
    return F.adaptive_avg_pool2d(onehot, (grid, grid))[0]  # (C, g, g)


def parse_class_weights(spec: str, num_classes: int) -> list[float]:
    """``"cube=4/distractor=4"`` -> one weight per class (1 where not named). A class is a name of
    ``ver_core.sim.SEG_CLASSES`` or an integer id below ``num_classes``; weights are finite, > 0.
    ``/`` separates the pairs because commas separate the teachers of ``--teachers``."""
    from ver_core.sim.config import SEG_CLASSES

    weights = [1.0] * num_classes
    for item in spec.split("/"):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise TeacherError(f"class weight {item!r} is not CLASS=WEIGHT (e.g. cube=8)")
        if name in SEG_CLASSES:
            cls = SEG_CLASSES[name]
        else:
            try:
                cls = int(name)
            except ValueError:
                raise TeacherError(
                    f"unknown segmentation class {name!r}; names: {', '.join(SEG_CLASSES)}"
                ) from None
        if not 0 <= cls < num_classes:
            raise TeacherError(f"class {name!r} (id {cls}) is outside 0..{num_classes - 1}")
        try:
            w = float(value)
        except ValueError:
            raise TeacherError(f"class weight {item!r} needs a number after '='") from None
        if not np.isfinite(w) or w <= 0:
            raise TeacherError(f"class weight {item!r} must be finite and > 0")
        weights[cls] = w
    return weights


class SimDepthTeacher(Teacher):
    def __init__(self, arg: str = "", device: str = "cpu") -> None:
        if arg:
            raise TeacherError(f"teacher 'sim_depth' takes no argument, got {arg!r}")
        self.name = self.key = "sim_depth"
        self.channels, self.grid = 4, (DENSE_GRID, DENSE_GRID)

    def extract(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> Tensor:
        maps = [depth_features(load_dense_map(p, "depth"), DENSE_GRID) for p in paths]
        return torch.stack(maps).flatten(2).transpose(1, 2).contiguous()  # (B, g*g, 4)


class SimSegmentationTeacher(Teacher):
    def __init__(self, arg: str = "", device: str = "cpu") -> None:
        classes, _, weights = arg.partition(":")
        try:
            self.num_classes = int(classes) if classes else DEFAULT_SEG_CLASSES
        except ValueError:
            raise TeacherError(
                f"sim_segmentation:<classes>[:<class>=<weight>/...] needs an integer, got {arg!r}"
            ) from None
        if self.num_classes < 2:
            raise TeacherError(f"sim_segmentation needs at least 2 classes, got {self.num_classes}")
        self.channel_weights = parse_class_weights(weights, self.num_classes) if weights else None
        self.name = "sim_segmentation" + (f":{arg}" if arg else "")
        self.key = "sim_segmentation"
        self.channels, self.grid = self.num_classes, (DENSE_GRID, DENSE_GRID)

    def extract(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> Tensor:
        maps = [segmentation_features(load_dense_map(p, "seg"), self.num_classes) for p in paths]
        return torch.stack(maps).flatten(2).transpose(1, 2).contiguous()  # (B, g*g, C)


register_teacher("sim_depth", SimDepthTeacher)
register_teacher("sim_segmentation", SimSegmentationTeacher)
