"""ver-export: write the routed encoder of a task checkpoint for deployment.

    ver-export --checkpoint runs/task --backend onnx        # -> runs/task/export/encoder.onnx
    ver-export --checkpoint runs/task --backend tensorrt    # -> runs/task/export/encoder_trt.ep

ONNX output is checked against torch on a random batch (max abs token difference printed, and
the share of identical expert choices). TensorRT needs torch-tensorrt and an NVIDIA GPU; without
them the command fails with the reason (it does not silently write something else).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ver-export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="task checkpoint directory")
    p.add_argument("--backend", required=True, choices=["onnx", "tensorrt"])
    p.add_argument("--out", type=Path, default=None, help="output directory (default CKPT/export)")
    p.add_argument(
        "--precision", default="fp16", choices=["fp16", "fp32"], help="TensorRT precision"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with torch")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    encoder = RoutedEncoder(policy)
    size = policy.model.config.img_size
    report: dict = {"checkpoint": str(args.checkpoint), "backend": args.backend}
    if args.backend == "onnx":
        from ver_core.export.onnx_runtime import OnnxEncoder, export_onnx

        path = export_onnx(encoder, out_dir / ONNX_FILE, image_size=size, opset=args.opset)
        report["file"] = str(path)
        if not args.no_check:
            views = policy.config.num_views
            x = torch.randn(views, 3, size, size, generator=torch.Generator().manual_seed(0))
            ref_tokens, ref_experts = encoder(x)
            tokens, experts = OnnxEncoder(path, providers=["CPUExecutionProvider"])(x)
            report["max_abs_token_diff"] = float((tokens - ref_tokens).abs().max())
            report["expert_match"] = float((experts == ref_experts).float().mean())
    else:
        from ver_core.export.tensorrt import compile_tensorrt, save_tensorrt

        try:
            compiled = compile_tensorrt(encoder, image_size=size, precision=args.precision)
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
