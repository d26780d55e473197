"""ver-export: write the routed encoder of a task checkpoint for deployment.

    ver-export --checkpoint runs/task --backend onnx        # -> runs/task/export/encoder.onnx
    ver-export --checkpoint runs/task --backend tensorrt    # -> runs/task/export/encoder_trt.ep

ONNX output is checked against torch on a random batch (max abs token difference printed, and
the share of identical expert choices). TensorRT needs torch-tensorrt and an NVIDIA GPU; without
them the command fails with the reason (it does not silently write something else).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ver_core.cli import options

__all__ = ["ExportCommand", "main"]
PROG = "ver-export"


@dataclass
class ExportCommand:
    """Write the routed encoder of a task checkpoint for deployment."""

    checkpoint: Path | None = None  # task checkpoint directory (required)
    backend: Literal["onnx", "tensorrt"] | None = None  # (required)
    out: Path | None = None  # output directory (None: CHECKPOINT/export)
    precision: Literal["fp16", "bf16", "fp32"] = "fp16"  # TensorRT precision
    opset: int = 17  # ONNX opset
    check: bool = True  # compare the export with torch on a random batch
    config: Path | None = None  # YAML file of these options (OUT/ver-export.yaml); flags win


def main(argv: list[str] | None = None) -> int:
    try:
        args, _ = options.parse(ExportCommand, argv, PROG, __doc__.split("\n\n")[0])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    for name in ("checkpoint", "backend"):
        if getattr(args, name) is None:
            print(f"ver-export: --{name} is required", file=sys.stderr)
            return 2
    import torch

    from ver_core.export import EXPORT_DIR, ONNX_FILE, TRT_FILE, BackendUnavailable, RoutedEncoder
    from ver_core.export.encoder_module import exportable
    from ver_core.policy import TaskPolicy

    try:
        policy = TaskPolicy.from_pretrained(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"ver-export: {e}", file=sys.stderr)
        return 2
    if not exportable(policy):
        print(
            "ver-export: this checkpoint has new trainable experts beside the library; their "
            "routing has no static graph yet, so it runs with the torch backend only",
            file=sys.stderr,
        )
        return 2
    out_dir = args.out or args.checkpoint / EXPORT_DIR
    options.save(args, out_dir, PROG)
    encoder = RoutedEncoder(policy)
    size = policy.model.config.img_size
    report: dict = {"checkpoint": str(args.checkpoint), "backend": args.backend}
    if args.backend == "onnx":
        from ver_core.export.onnx_runtime import OnnxEncoder, export_onnx

        path = export_onnx(encoder, out_dir / ONNX_FILE, image_size=size, opset=args.opset)
        report["file"] = str(path)
        if args.check:
            views = policy.config.num_views
            x = torch.randn(views, 3, size, size, generator=torch.Generator().manual_seed(0))
            ref_tokens, ref_experts = encoder(x)
            tokens, experts = OnnxEncoder(path, providers=["CPUExecutionProvider"])(x)
            report["max_abs_token_diff"] = float((tokens - ref_tokens).abs().max())
            report["expert_match"] = float((experts == ref_experts).float().mean())
    else:
        from ver_core.export.tensorrt import compile_tensorrt, save_tensorrt

        try:
            static = RoutedEncoder(policy, dispatch="dense")  # one TensorRT engine, see tensorrt.py
            compiled = compile_tensorrt(static, image_size=size, precision=args.precision)
        except BackendUnavailable as e:
            print(f"ver-export: {e}", file=sys.stderr)
            return 3
        path = save_tensorrt(
            compiled, out_dir / TRT_FILE, image_size=size, batch=policy.config.num_views
        )
        report["file"], report["precision"] = str(path), args.precision
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
