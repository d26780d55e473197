"""Encoder and head speed, side by side: routed VER-T vs a dense ViT-T, per backend and precision.

Batch 1 (one camera view), 224x224, untrained weights (speed does not depend on them). Each
comparison alternates its contenders call by call in one loop, so a load change on the shared
machine hits both alike; the 1-minute load average is recorded beside every figure.

- ``encoders``: ``RoutedEncoder`` of the routed VER-T (K=2) and of a dense ViT-T (ver_tiny with
  ``moe_blocks=0``: the same 12 blocks with a dense MLP) in torch eager fp32 and bf16 and in ONNX
  Runtime (both exported by ``ver_core.export.onnx_runtime.export_onnx``; the routed one in its
  default ``grouped`` dispatch and, for reference, its all-static ``dense`` dispatch). The goal:
  routed within 1.15x of dense in the same backend.
- ``views``: one camera view vs two per control tick (batch 2 in one forward pass, as the encoder
  node runs a two-camera checkpoint; and two batch-1 passes) in torch fp32 and ONNX Runtime.
- ``heads``: encoder + MLP head (``RoutedEncoder`` then ``predict_chunk``), the diffusion head's
  DDIM chunk alone (``predict_chunk`` from tokens; 10 DDIM steps, the checkpoint default) and
  encoder + diffusion head, in fp32 and bf16.

    .venv/bin/python bench/bench_encoder.py [--threads 1] [--iters 60] [--only views ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _policies():
    from ver_core.model import build_model
    from ver_core.policy import TaskConfig, TaskPolicy
    from ver_core.router import RouterConfig

    torch.manual_seed(0)
    routed = TaskPolicy.build(TaskConfig()).eval()
    dense_cfg = TaskConfig(router=RouterConfig(routing="dense"))
    dense = TaskPolicy(dense_cfg, build_model("ver_tiny", moe_blocks=0)).eval()
    diffusion = TaskPolicy.build(TaskConfig(head="diffusion")).eval()
    return routed, dense, diffusion


def interleaved(contenders: dict, iters: int, warmup: int = 5) -> dict:
    """Median / p90 ms of each callable, called in turn ``iters`` times (after a warm-up)."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    load = os.getloadavg()[0]
    for _ in range(iters):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    load = [round(load, 2), round(os.getloadavg()[0], 2)]
    return {
        name: {
            "p50_ms": round(float(np.median(ts)) * 1e3, 2),
            "p90_ms": round(float(np.percentile(ts, 90)) * 1e3, 2),
            "loadavg_1min_before_after": load,
        }
        for name, ts in times.items()
    }


def encoders(routed, dense, iters: int, threads: int) -> dict:
    from ver_core.export import RoutedEncoder
    from ver_core.export.onnx_runtime import OnnxEncoder, export_onnx

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    out: dict = {}
    for precision in ("fp32", "bf16"):
        r = RoutedEncoder(routed, static_graph=False, precision=precision)  # the torch backend
        d = RoutedEncoder(dense, precision=precision)
        row = interleaved({"routed": lambda r=r: r(x), "dense": lambda d=d: d(x)}, iters)
        row["ratio_routed_over_dense"] = round(row["routed"]["p50_ms"] / row["dense"]["p50_ms"], 3)
        out[f"torch_{precision}"] = row
    work = Path(tempfile.mkdtemp(prefix="ver_bench_onnx_"))
    files = {
        "routed": export_onnx(RoutedEncoder(routed), work / "routed.onnx", views=1),
        "routed_dense_dispatch": export_onnx(
            RoutedEncoder(routed, dispatch="dense"), work / "routed_dense.onnx", views=1
        ),
        "dense": export_onnx(RoutedEncoder(dense), work / "dense.onnx", views=1),
    }
    sessions = {
        k: OnnxEncoder(f, ["CPUExecutionProvider"], threads=threads) for k, f in files.items()
    }
    row = interleaved({k: (lambda s=s: s(x)) for k, s in sessions.items()}, iters)
    row["ratio_routed_over_dense"] = round(row["routed"]["p50_ms"] / row["dense"]["p50_ms"], 3)
    row["ratio_routed_dense_dispatch_over_dense"] = round(
        row["routed_dense_dispatch"]["p50_ms"] / row["dense"]["p50_ms"], 3
    )
    out["onnxruntime_fp32"] = row
    return out


def _head_row(routed, diffusion, precision: str, iters: int) -> dict:
    from ver_core.export import RoutedEncoder
    from ver_core.export.precision import autocast

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    state = torch.zeros(1, 8)
    enc_mlp = RoutedEncoder(routed, static_graph=False, precision=precision)
    enc_diff = RoutedEncoder(diffusion, static_graph=False, precision=precision)
    tokens = enc_diff(x)[0][None]  # (1, V, N, D)

    def chunk(policy, tokens):
        with autocast(precision):
            return policy.predict_chunk(tokens, state)

    return interleaved(
        {
            "encoder_plus_mlp_head": lambda: chunk(routed, enc_mlp(x)[0][None]),
            "diffusion_head_ddim_chunk": lambda: chunk(diffusion, tokens),
            "encoder_plus_diffusion_head": lambda: chunk(diffusion, enc_diff(x)[0][None]),
        },
        iters,
    )


def camera_views(routed, iters: int, threads: int) -> dict:
    """One vs two camera views per control tick: batch 1, batch 2 in one forward pass (what the
    encoder node does with a two-camera checkpoint), and two batch-1 passes one after the other."""
    from ver_core.export import RoutedEncoder
    from ver_core.export.onnx_runtime import OnnxEncoder, export_onnx
    from ver_core.policy import TaskConfig, TaskPolicy

    cameras = ["/camera/camera/color/image_raw", "/wrist_camera/camera/color/image_raw"]
    pair = TaskPolicy(TaskConfig(image_topics=cameras), routed.model).eval()  # same library
    g = torch.Generator().manual_seed(0)
    one, two = torch.randn(1, 3, 224, 224, generator=g), torch.randn(2, 3, 224, 224, generator=g)
    out: dict = {}
    enc, enc2 = RoutedEncoder(routed, static_graph=False), RoutedEncoder(pair, static_graph=False)
    row = interleaved(
        {
            "one_view": lambda: enc(one),
            "two_views_one_pass": lambda: enc2(two),
            "two_views_two_passes": lambda: (enc(two[:1]), enc(two[1:])),
        },
        iters,
    )
    row["ratio_two_views_over_one"] = round(
        row["two_views_one_pass"]["p50_ms"] / row["one_view"]["p50_ms"], 3
    )
    out["torch_fp32"] = row
    work = Path(tempfile.mkdtemp(prefix="ver_bench_views_"))
    s1 = OnnxEncoder(
        export_onnx(RoutedEncoder(routed), work / "v1.onnx", views=1),
        ["CPUExecutionProvider"],
        threads=threads,
    )
    s2 = OnnxEncoder(
        export_onnx(RoutedEncoder(pair), work / "v2.onnx", views=2),
        ["CPUExecutionProvider"],
        threads=threads,
    )
    row = interleaved({"one_view": lambda: s1(one), "two_views_one_pass": lambda: s2(two)}, iters)
    row["ratio_two_views_over_one"] = round(
        row["two_views_one_pass"]["p50_ms"] / row["one_view"]["p50_ms"], 3
    )
    out["onnxruntime_fp32"] = row
    return out


def image_sizes(iters: int, sizes=(224, 192, 160)) -> dict:
    """The input resolution (``TaskConfig.image_size``): the deployed two-view encoder + MLP head
    per control tick (torch fp32, batch 2 in one pass) and the training cache's BVT forward of 32
    images (16 frames x 2 views; ``ver_core.train.features``), each size interleaved call by call.
    Ratios are against 224 px. The success each size buys is measured in closed loop, not here."""
    from ver_core.export import RoutedEncoder
    from ver_core.policy import TaskConfig, TaskPolicy

    cameras = ["/camera/camera/color/image_raw", "/wrist_camera/camera/color/image_raw"]
    g = torch.Generator().manual_seed(0)
    tick, cache = {}, {}
    for size in sizes:
        torch.manual_seed(0)
        policy = TaskPolicy.build(TaskConfig(image_topics=cameras, image_size=size)).eval()
        enc = RoutedEncoder(policy, static_graph=False)
        two, batch = torch.randn(2, 3, size, size, generator=g), torch.randn(32, 3, size, size)
        state = torch.zeros(1, 8)

        def control_tick(enc=enc, policy=policy, two=two, state=state):
            with torch.no_grad():
                return policy.predict_chunk(enc(two)[0][None], state)

        def bvt_batch(model=policy.model, batch=batch):
            with torch.no_grad():
                return model.forward_bvt(batch)

        tick[f"{size}px"], cache[f"{size}px"] = control_tick, bvt_batch
    out = {
        "control_tick_two_views_plus_mlp_head": interleaved(tick, iters),
        "bvt_cache_batch_of_32_images": interleaved(cache, max(3, iters // 10), warmup=1),
    }
    for row in out.values():
        base = row[f"{sizes[0]}px"]["p50_ms"]
        row["speedup_over_224px"] = {k: round(base / v["p50_ms"], 3) for k, v in list(row.items())}
    out["patches"] = {f"{s}px": (s // 16) ** 2 for s in sizes}
    return out


def heads(routed, diffusion, iters: int) -> dict:
    out = {p: _head_row(routed, diffusion, p, iters) for p in ("fp32", "bf16")}
    out["ddim_steps"] = diffusion.config.diffusion_infer_steps
    out["chunk_len"] = diffusion.config.chunk_len
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    ap.add_argument("--iters", type=int, default=60, help="timed calls per contender")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "encoder.json")
    ap.add_argument(
        "--only",
        choices=("encoders", "heads", "views", "image_size"),
        nargs="+",
        default=("encoders", "heads", "views", "image_size"),
        help="sections to run; the others keep their figures from --out when it exists",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ver_core.export import bf16_status

    routed, dense, diffusion = _policies()
    result = {
        "what": "batch-1 224x224 forward, ms (median and p90 of interleaved calls)",
        "models": "routed VER-T (ver_tiny, K=2 of 6 experts in blocks 10-12) vs dense ViT-T "
        "(ver_tiny, moe_blocks=0); untrained weights",
        "threads": args.threads,
        "iters": args.iters,
        "bf16": bf16_status() or "native",
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "note": "shared 2-core development VM, no GPU",
        },
    }
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    sections = {
        "encoders": lambda: encoders(routed, dense, args.iters, args.threads),
        "heads": lambda: heads(routed, diffusion, args.iters),
        "views": lambda: camera_views(routed, args.iters, args.threads),
        "image_size": lambda: image_sizes(args.iters),
    }
    for name, run in sections.items():
        if name in args.only:
            result[name] = run()
        elif name in old:
            result[name] = old[name]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
