"""Export and run the routed VER encoder: ONNX Runtime, torch-tensorrt, plain torch."""

from ver_core.export.backends import (
    BACKENDS,
    BackendUnavailable,
    backend_status,
    normalize_backend,
    select_backend,
)
from ver_core.export.encoder_module import RoutedEncoder, stack_experts
from ver_core.export.precision import PRECISIONS, bf16_status, select_precision
from ver_core.export.runner import EXPORT_DIR, ONNX_FILE, TRT_FILE, BuiltEncoder, build_encoder

__all__ = [
    "BACKENDS",
    "EXPORT_DIR",
    "ONNX_FILE",
    "PRECISIONS",
    "TRT_FILE",
    "BackendUnavailable",
    "BuiltEncoder",
    "RoutedEncoder",
    "backend_status",
    "bf16_status",
    "build_encoder",
    "normalize_backend",
    "select_backend",
    "select_precision",
    "stack_experts",
]
