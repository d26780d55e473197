"""Build the encoder the nodes run, for a backend and a precision, with fallback.

``build_encoder(policy, backend, checkpoint_dir, precision=...)`` returns a ``BuiltEncoder``:
(callable, backend actually used, log line or None, precision actually used). Exported artifacts
are looked up in ``<checkpoint>/export/`` (written by ``ver-export``); when missing, the ONNX
file is exported on the fly into a temporary directory and the TensorRT module is compiled in
memory (a TensorRT file from ``ver-export`` keeps the precision it was compiled with).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ver_core.export.backends import BackendUnavailable, select_backend
from ver_core.export.encoder_module import RoutedEncoder
from ver_core.export.precision import select_precision

__all__ = ["EXPORT_DIR", "ONNX_FILE", "TRT_FILE", "BuiltEncoder", "EncoderFn", "build_encoder"]

log = logging.getLogger(__name__)

EXPORT_DIR, ONNX_FILE, TRT_FILE = "export", "encoder.onnx", "encoder_trt.ep"
EncoderFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class BuiltEncoder(NamedTuple):
    """The encoder function, the backend and precision it runs, and why they differ from the
    request (one log line, or None)."""

    fn: EncoderFn
    backend: str
    message: str | None
    precision: str


def _join(*messages: str | None) -> str | None:
    return "; ".join(m for m in messages if m) or None


def _torch_encoder(encoder: RoutedEncoder, device: str) -> EncoderFn:
    encoder = encoder.to(device)

    @torch.no_grad()
    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, experts = encoder(images.to(device))
        return tokens.cpu(), experts.cpu()

    return run


def torch_dispatch(device: str) -> str:
    """The torch backend's expert dispatch: ``sparse`` on a CPU (only the chosen experts run:
    fewest FLOPs, and a CPU is FLOP-bound at batch 1); ``dense`` on a GPU, where batch 1 is
    launch-bound and every expert in one wide GEMM beats gathering patches per expert (H200:
    3.3 vs 5.7 ms fp32 for the routed VER-T, dense ViT-T 2.6 ms; bench/gpu_encoder.py,
    bench/results/encoder_gpu.json)."""
    return "dense" if str(device).startswith("cuda") else "sparse"


def build_encoder(
    policy: nn.Module,
    backend: str,
    checkpoint_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int = 0,
    stats=None,
    precision: str = "fp32",
) -> BuiltEncoder:
    """The encoder for ``backend`` / ``precision`` (each falls back with one log line).

    The torch backend runs the dispatch ``torch_dispatch`` picks for the device, timing
    ``encode`` and ``route`` into ``stats``; exported backends run the grouped static graph
    (``RoutedEncoder`` default)."""
    chosen, message = select_backend(backend)
    if chosen == "tensorrt":
        from ver_core.export.tensorrt import TensorRTEncoder, compile_tensorrt, load_tensorrt

        prec, prec_msg = select_precision(precision, "cuda", chosen)
        export_dir = Path(checkpoint_dir) / EXPORT_DIR if checkpoint_dir else None
        try:
            if export_dir is not None and (export_dir / TRT_FILE).is_file():
                module = load_tensorrt(export_dir / TRT_FILE)
            else:
                module = compile_tensorrt(RoutedEncoder(policy, dispatch="dense"), precision=prec)
            return BuiltEncoder(TensorRTEncoder(module), chosen, _join(message, prec_msg), prec)
        except (BackendUnavailable, RuntimeError) as e:
            chosen, message = "onnxruntime", f"TensorRT failed ({e}): falling back to 'onnxruntime'"
    prec, prec_msg = select_precision(precision, device, chosen)
    if chosen == "onnxruntime":
        from ver_core.export.onnx_runtime import OnnxEncoder, export_onnx

        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if device.startswith("cuda")
            else ["CPUExecutionProvider"]
        )
        path = Path(checkpoint_dir) / EXPORT_DIR / ONNX_FILE if checkpoint_dir else None
        if path is not None and path.is_file():
            fn = OnnxEncoder(path, providers=providers, threads=threads)
        else:
            # The session holds the whole graph once built, so the export is scratch: a
            # node restarted without `ver-export` must not leave 30 MB behind each time.
            with tempfile.TemporaryDirectory(prefix="ver_encoder_") as tmp:
                path = Path(tmp) / ONNX_FILE
                log.info("no exported ONNX encoder in the checkpoint: exporting a scratch copy")
                export_onnx(RoutedEncoder(policy), path)
                fn = OnnxEncoder(path, providers=providers, threads=threads)
        return BuiltEncoder(fn, chosen, _join(message, prec_msg), prec)
    eager = RoutedEncoder(policy, precision=prec, dispatch=torch_dispatch(device))
    eager.stats = stats
    return BuiltEncoder(_torch_encoder(eager, device), "torch", _join(message, prec_msg), prec)
