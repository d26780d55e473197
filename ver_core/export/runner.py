"""Build the encoder the nodes run, for a backend with fallback.

``build_encoder(policy, backend, checkpoint_dir)`` returns (callable, backend actually used, log
line or None). Exported artifacts are looked up in ``<checkpoint>/export/`` (written by
``ver-export``); when missing, the ONNX file is exported on the fly into a temporary directory
and the TensorRT module is compiled in memory.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ver_core.export.backends import BackendUnavailable, select_backend
from ver_core.export.encoder_module import RoutedEncoder

__all__ = ["EXPORT_DIR", "ONNX_FILE", "TRT_FILE", "EncoderFn", "build_encoder"]

log = logging.getLogger(__name__)

EXPORT_DIR, ONNX_FILE, TRT_FILE = "export", "encoder.onnx", "encoder_trt.ep"
EncoderFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _torch_encoder(encoder: RoutedEncoder, device: str) -> EncoderFn:
    encoder = encoder.to(device)

    @torch.no_grad()
    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, experts = encoder(images.to(device))
        return tokens.cpu(), experts.cpu()

    return run


def build_encoder(
    policy: nn.Module,
    backend: str,
    checkpoint_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int = 0,
    stats=None,
) -> tuple[EncoderFn, str, str | None]:
    """(encoder function, backend used, fallback message or None).

    The torch backend runs the sparse expert dispatch (``RoutedEncoder(static_graph=False)``),
    timing ``encode`` and ``route`` into ``stats``; exported backends run the static graph."""
    chosen, message = select_backend(backend)
    encoder = RoutedEncoder(policy)
    export_dir = Path(checkpoint_dir) / EXPORT_DIR if checkpoint_dir else None
    if chosen == "tensorrt":
        from ver_core.export.tensorrt import TensorRTEncoder, compile_tensorrt, load_tensorrt

        try:
            if export_dir is not None and (export_dir / TRT_FILE).is_file():
                return TensorRTEncoder(load_tensorrt(export_dir / TRT_FILE)), chosen, message
            return TensorRTEncoder(compile_tensorrt(encoder)), chosen, message
        except (BackendUnavailable, RuntimeError) as e:
            chosen, message = "onnxruntime", f"TensorRT failed ({e}): falling back to 'onnxruntime'"
    if chosen == "onnxruntime":
        from ver_core.export.onnx_runtime import OnnxEncoder, export_onnx

        path = export_dir / ONNX_FILE if export_dir is not None else None
        if path is None or not path.is_file():
            path = Path(tempfile.mkdtemp(prefix="ver_encoder_")) / ONNX_FILE
            log.info("no exported ONNX encoder in the checkpoint: exporting to %s", path)
            export_onnx(encoder, path)
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if device.startswith("cuda")
            else ["CPUExecutionProvider"]
        )
        return OnnxEncoder(path, providers=providers, threads=threads), chosen, message
    eager = RoutedEncoder(policy, static_graph=False)
    eager.stats = stats
    return _torch_encoder(eager, device), "torch", message
