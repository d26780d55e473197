"""Inference backends for the VER encoder and their fallback order.

``tensorrt`` (torch-tensorrt, NVIDIA GPU) -> ``onnxruntime`` -> ``torch``: a requested backend
that cannot run here falls back along this chain; ``select_backend`` returns the one chosen and a
single human-readable line saying why it differs from the request (None if it does not).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "backend_status",
    "normalize_backend",
    "select_backend",
]

BACKENDS = ("tensorrt", "onnxruntime", "torch")
_ALIASES = {
    "onnx": "onnxruntime",
    "ort": "onnxruntime",
    "trt": "tensorrt",
    "torch-tensorrt": "tensorrt",
}


class BackendUnavailable(RuntimeError):
    """The backend's runtime is missing or cannot run on this machine."""


def normalize_backend(name: str) -> str:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; use one of {BACKENDS} (or 'onnx')")
    return key


def _check_tensorrt() -> str | None:
    try:
        importlib.import_module("torch_tensorrt")
    except Exception as e:  # ImportError, or OSError when libnvinfer cannot load
        return f"torch_tensorrt cannot be imported ({type(e).__name__}: {e})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


def _check_onnxruntime() -> str | None:
    try:
        importlib.import_module("onnxruntime")
    except Exception as e:
        return f"onnxruntime cannot be imported ({type(e).__name__}: {e})"
    return None


_CHECKS: dict[str, Callable[[], str | None]] = {
    "tensorrt": _check_tensorrt,
    "onnxruntime": _check_onnxruntime,
    "torch": lambda: None,
}


def backend_status(name: str) -> str | None:
    """None if ``name`` can run here, else why not."""
    return _CHECKS[normalize_backend(name)]()


def select_backend(
    requested: str, status: Callable[[str], str | None] = backend_status
) -> tuple[str, str | None]:
    """(backend to use, one log line if it is not the requested one)."""
    req = normalize_backend(requested)
    chain = BACKENDS[BACKENDS.index(req) :]
    reasons = []
    for name in chain:
        why = status(name)
        if why is None:
            if name == req:
                return name, None
            return (
                name,
                f"backend {req!r} unavailable ({'; '.join(reasons)}): falling back to {name!r}",
            )
        reasons.append(f"{name}: {why}")
    raise BackendUnavailable("no backend can run: " + "; ".join(reasons))  # torch always can
