"""Export and run the routed VER encoder: ONNX Runtime, torch-tensorrt, plain torch."""

from ver_core.export.backends import (
    BACKENDS,
    BackendUnavailable,
    backend_status,
    normalize_backend,
    select_backend,
)
from ver_core.export.encoder_module import RoutedEncoder, stack_experts
from ver_core.export.runner import EXPORT_DIR, ONNX_FILE, TRT_FILE, build_encoder

__all__ = [
    "BACKENDS",
    "EXPORT_DIR",
    "ONNX_FILE",
    "TRT_FILE",
    "BackendUnavailable",
    "RoutedEncoder",
    "backend_status",
    "build_encoder",
    "normalize_backend",
    "select_backend",
    "stack_experts",
]
