"""ONNX export of the routed encoder and an ONNX Runtime runner with the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxEncoder", "export_onnx"]

INPUT_NAME = "images"
OUTPUT_NAMES = ("tokens", "experts")


def export_onnx(
    encoder: nn.Module,
    path: str | Path,
    image_size: int | None = None,
    opset: int = 17,
    views: int | None = None,
) -> Path:
    """Write ``encoder`` (views (V,3,S,S) -> tokens, experts) to ``path``; every shape static
    (V = the policy's camera count unless ``views`` says otherwise, S = its model's image size
    unless ``image_size`` does: until session 18 S defaulted to 224, and the onnxruntime backend
    could not export a model of another size)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if views is None:
        views = encoder.policy.config.num_views
    if image_size is None:
        image_size = encoder.policy.model.config.img_size
    example = torch.zeros(views, 3, image_size, image_size)
    tmp = path.with_suffix(".onnx.tmp")
    torch.onnx.export(
        encoder.eval(),
        (example,),
        str(tmp),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        opset_version=opset,
        dynamo=False,
    )
    tmp.replace(path)  # a half-written file never carries the final name
    return path


class OnnxEncoder:
    """Runs an exported encoder: ``__call__(views float32 (V,3,S,S))`` -> (tokens, experts)."""

    def __init__(
        self, path: str | Path, providers: list[str] | None = None, threads: int = 0
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX encoder {path} does not exist (run ver-export)")
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
        available = ort.get_available_providers()
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), opts, providers=self.providers)

    def __call__(self, images: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        tokens, experts = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.astype(np.float32)})
        return torch.from_numpy(tokens), torch.from_numpy(experts)
