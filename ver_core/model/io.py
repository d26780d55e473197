"""Library checkpoints: a directory with config.json + model.safetensors. Never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ver_core.model.config import VERConfig
from ver_core.model.vit import VisionExpertTransformer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_library(
    directory: str | Path, model: VisionExpertTransformer, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``config.json`` (model config + ``extra`` metadata) and ``model.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "ver-library",
        "version": 1,
        "model": model.config.to_dict(),
        **(extra or {}),
    }
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / (WEIGHTS_FILE + ".tmp")))
    (directory / (WEIGHTS_FILE + ".tmp")).replace(directory / WEIGHTS_FILE)
    tmp.replace(directory / CONFIG_FILE)
    return directory


def read_library_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise FileNotFoundError(f"library checkpoint directory {directory} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a VER checkpoint: {CONFIG_FILE} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def load_library(
    directory: str | Path, map_location: str | torch.device = "cpu", strict: bool = True
) -> VisionExpertTransformer:
    """Rebuild a VER model from a checkpoint directory written by :func:`save_library`."""
    directory = Path(directory)
    payload = read_library_config(directory)
    if "model" not in payload:
        raise ValueError(f"{directory / CONFIG_FILE} has no 'model' section")
    model = VisionExpertTransformer(VERConfig.from_dict(payload["model"]))
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"cannot read {weights}: {e}") from e
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise ValueError(
            f"{weights} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model
