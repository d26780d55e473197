"""torch-tensorrt compile path for the routed encoder (NVIDIA GPUs only).

Not exercised on the development machines: TensorRT cannot be installed there and they have no
GPU. The code follows torch-tensorrt's documented dynamo flow: ``torch_tensorrt.compile(module,
ir="dynamo", inputs=[torch_tensorrt.Input(...)], enabled_precisions=...)``, then
``torch_tensorrt.save(..., output_format="exported_program")`` to a ``.ep`` file that
``torch.export.load`` reads back (with torch_tensorrt imported, which registers its runtime ops).

The module compiled is ``RoutedEncoder(dispatch="dense")``: every intermediate shape static, so
TensorRT builds one engine (the grouped dispatch's data-dependent row counts would split the
graph between TensorRT and torch); on a GPU the masked experts' extra work is small.
``torch.export.export`` of that module (and of the grouped one) is tested on the CPU here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ver_core.export.backends import BackendUnavailable, backend_status

__all__ = ["PRECISIONS", "TensorRTEncoder", "compile_tensorrt", "load_tensorrt", "save_tensorrt"]

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _import_trt():
    why = backend_status("tensorrt")
    if why is not None:
        raise BackendUnavailable(f"TensorRT backend unavailable: {why}")
    import torch_tensorrt

    return torch_tensorrt


def compile_tensorrt(
    encoder: nn.Module,
    image_size: int | None = None,
    precision: str = "fp16",
    batch: int | None = None,
):
    """Compile ``encoder`` (``RoutedEncoder(policy, dispatch="dense")``) for a (V, 3, S, S) CUDA
    input (V = the policy's cameras and S its model's resolution unless ``batch`` / ``image_size``
    say otherwise); returns the compiled module. ``precision``: the lowest precision TensorRT may
    use (fp32, fp16 or bf16)."""
    if batch is None:
        batch = encoder.policy.config.num_views
    if image_size is None:  # a policy trained at --image-size 160 takes 160 px, not 224
        image_size = encoder.policy.model.config.img_size
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    trt = _import_trt()
    module = encoder.eval().cuda()
    inputs = [trt.Input((batch, 3, image_size, image_size), dtype=torch.float32)]
    return trt.compile(
        module,
        ir="dynamo",
        inputs=inputs,
        enabled_precisions={torch.float32, PRECISIONS[precision]},
        truncate_double=True,
    )


def save_tensorrt(
    compiled: nn.Module, path: str | Path, image_size: int = 224, batch: int = 1
) -> Path:
    """Save a compiled encoder as an exported program for (batch, 3, S, S) inputs."""
    trt = _import_trt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(batch, 3, image_size, image_size, device="cuda")
    trt.save(compiled, str(path), output_format="exported_program", inputs=[example])
    return path


def load_tensorrt(path: str | Path) -> nn.Module:
    _import_trt()  # registers the TensorRT runtime ops torch.export.load needs
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"TensorRT encoder {path} does not exist (run ver-export --backend tensorrt)"
        )
    return torch.export.load(str(path)).module()


class TensorRTEncoder:
    """``__call__(views (V,3,S,S))`` -> (tokens, experts) on the GPU, returned on the CPU."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, experts = self.module(images.cuda(non_blocking=True))
        return tokens.float().cpu(), experts.cpu()
