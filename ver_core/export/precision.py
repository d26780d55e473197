"""Inference precision of the encoder and the policy head: ``fp32`` or ``bf16``.

bf16 runs under ``torch.autocast``: matrix products (linear, attention, convolution) in bf16,
norms, softmax and the residual stream in fp32; outputs come back as fp32. It is offered where
the hardware has bf16 arithmetic (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX);
elsewhere bf16 would be emulated and slower than fp32, so the request falls back to fp32 with one
log line, as a backend does. The ONNX backend runs fp32: ONNX Runtime's CPU provider has no bf16
kernels, and a bf16 export is not a valid opset-17 graph (Conv takes bf16 from opset 22 only);
torch and torch.export (the torch-tensorrt route) run bf16.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISIONS", "autocast", "bf16_status", "select_precision"]

PRECISIONS = ("fp32", "bf16")


def _cpu_has_bf16() -> bool:
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def bf16_status(device: str = "cpu") -> str | None:
    """None if ``device`` computes bf16 natively, else why not."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 arithmetic"
    if _cpu_has_bf16():
        return None
    return "this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated, slower than fp32)"


def select_precision(
    requested: str, device: str = "cpu", backend: str = "torch", status=bf16_status
) -> tuple[str, str | None]:
    """(precision to use, one log line if it is not the requested one)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "fp32":
        return "fp32", None
    if backend == "onnxruntime":
        why = "the ONNX export is fp32: ONNX Runtime's CPU provider has no bf16 kernels"
    else:
        why = status(device)
    if why is None:
        return "bf16", None
    return "fp32", f"precision 'bf16' unavailable ({why}): running 'fp32'"


def autocast(precision: str, device_type: str = "cpu"):
    """The context a forward pass of ``precision`` runs in (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return contextlib.nullcontext()
