"""The encoder and heads on a CUDA GPU: routed VER-T vs dense ViT-T, eager and torch.compile.

The GPU counterpart of bench/bench_encoder.py (same models: routed VER-T with K=2 of 6 experts
in blocks 10-12 vs the dense ViT-T of the same 12 blocks; untrained weights; batch 1 per view,
224x224). Contenders alternate call by call in one loop; every call ends with
``torch.cuda.synchronize()``, so the figures are wall-clock latency of a control tick, not kernel
throughput. Sections (each one's failure is recorded in the results instead of stopping the
rest, since a CUDA-only failure is what this run is for):

- ``encoders``: ``RoutedEncoder`` of both in fp32 and bf16 autocast; the routed one in its eager
  ``sparse`` dispatch, its static ``grouped`` one (the torch.export / TensorRT graph) and its
  static ``dense`` dispatch.
- ``compiled``: the static encoders under ``torch.compile``, default mode and reduce-overhead
  (CUDA graphs); the routed one in grouped dispatch and in dense dispatch (every expert runs,
  the gates mix: one wide GEMM instead of gathers).
- ``heads``: encoder + MLP head, the diffusion head's DDIM chunk from tokens, encoder +
  diffusion head (issue 14's goals: < 25 ms and < 30 ms).
- ``views``: one view vs two views in one batch.

Needs a CUDA device (it says so and exits 2 without one). CI has none; run it where a GPU is:

    python bench/gpu_encoder.py --out bench/results/encoder_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(contenders: dict, iters: int, warmup: int = 10) -> dict:
    """Median / p90 / p99 ms of each callable (CUDA-synchronized), called in turn."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
            sync()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(iters):
        for name, fn in contenders.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t)
    return {
        name: {
            "p50_ms": round(float(np.median(ts)) * 1e3, 3),
            "p90_ms": round(float(np.percentile(ts, 90)) * 1e3, 3),
            "p99_ms": round(float(np.percentile(ts, 99)) * 1e3, 3),
        }
        for name, ts in times.items()
    }


def ratio(row: dict, a: str, b: str) -> float:
    return round(row[a]["p50_ms"] / row[b]["p50_ms"], 3)


def policies(device: str):
    from ver_core.model import build_model
    from ver_core.policy import TaskConfig, TaskPolicy
    from ver_core.router import RouterConfig

    torch.manual_seed(0)
    routed = TaskPolicy.build(TaskConfig()).eval().to(device)
    dense_cfg = TaskConfig(router=RouterConfig(routing="dense"))
    dense = TaskPolicy(dense_cfg, build_model("ver_tiny", moe_blocks=0)).eval().to(device)
    diffusion = TaskPolicy.build(TaskConfig(head="diffusion")).eval().to(device)
    cameras = ["/camera/camera/color/image_raw", "/wrist_camera/camera/color/image_raw"]
    pair = TaskPolicy(TaskConfig(image_topics=cameras), routed.model).eval().to(device)
    return routed, dense, diffusion, pair


def encoders(routed, dense, x, iters: int) -> dict:
    from ver_core.export import RoutedEncoder

    out = {}
    for precision in ("fp32", "bf16"):
        contenders = {
            "routed_sparse": RoutedEncoder(routed, static_graph=False, precision=precision),
            "routed_grouped": RoutedEncoder(routed, precision=precision),
            "routed_dense_dispatch": RoutedEncoder(routed, precision=precision, dispatch="dense"),
            "dense": RoutedEncoder(dense, precision=precision),
        }
        with torch.no_grad():
            row = timed({k: (lambda m=m: m(x)) for k, m in contenders.items()}, iters)
        for name in ("routed_sparse", "routed_grouped", "routed_dense_dispatch"):
            row[f"ratio_{name}_over_dense"] = ratio(row, name, "dense")
        out[precision] = row
    return out


def compiled(routed, dense, x, iters: int) -> dict:
    from ver_core.export import RoutedEncoder

    out = {}
    for precision in ("fp32", "bf16"):
        for mode in ("default", "reduce-overhead"):  # reduce-overhead: CUDA graphs
            t0 = time.perf_counter()
            contenders = {
                name: torch.compile(
                    RoutedEncoder(policy, precision=precision, dispatch=d), mode=mode
                )
                for name, policy, d in (
                    ("routed_grouped", routed, "grouped"),
                    ("routed_dense_dispatch", routed, "dense"),
                    ("dense", dense, None),
                )
            }
            with torch.no_grad():
                for m in contenders.values():
                    for _ in range(3):
                        m(x)
                compile_s = time.perf_counter() - t0
                row = timed({k: (lambda m=m: m(x)) for k, m in contenders.items()}, iters)
            for name in ("routed_grouped", "routed_dense_dispatch"):
                row[f"ratio_{name}_over_dense"] = ratio(row, name, "dense")
            row["compile_s"] = round(compile_s, 1)
            out[f"{precision}_{mode}"] = row
    return out


def _head_row(routed, diffusion, x, precision: str, iters: int) -> dict:
    from ver_core.export import RoutedEncoder
    from ver_core.export.precision import autocast

    state = torch.zeros(1, 8, device=x.device)
    enc_mlp = RoutedEncoder(routed, static_graph=False, precision=precision)
    enc_diff = RoutedEncoder(diffusion, static_graph=False, precision=precision)

    def chunk(policy, tokens):
        with autocast(precision, x.device.type):
            return policy.predict_chunk(tokens, state)

    with torch.no_grad():
        tokens = enc_diff(x)[0][None]
        return timed(
            {
                "encoder_plus_mlp_head": lambda: chunk(routed, enc_mlp(x)[0][None]),
                "diffusion_head_ddim_chunk": lambda: chunk(diffusion, tokens),
                "encoder_plus_diffusion_head": lambda: chunk(diffusion, enc_diff(x)[0][None]),
            },
            iters,
        )


def heads(routed, diffusion, x, iters: int) -> dict:
    out = {p: _head_row(routed, diffusion, x, p, iters) for p in ("fp32", "bf16")}
    out["ddim_steps"] = diffusion.config.diffusion_infer_steps
    return out


def views(routed, pair, iters: int) -> dict:
    from ver_core.export import RoutedEncoder

    g = torch.Generator().manual_seed(1)
    two = torch.randn(2, 3, 224, 224, generator=g).to(next(routed.parameters()).device)
    enc, enc2 = RoutedEncoder(routed, static_graph=False), RoutedEncoder(pair, static_graph=False)
    with torch.no_grad():
        row = timed(
            {"one_view": lambda: enc(two[:1]), "two_views_one_pass": lambda: enc2(two)}, iters
        )
    row["ratio_two_views_over_one"] = ratio(row, "two_views_one_pass", "one_view")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "encoder_gpu.json")
    ap.add_argument("--skip", nargs="*", default=[], help="sections to leave out")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the script itself")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_encoder: no CUDA device here (this benchmark needs a GPU)", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    routed, dense, diffusion, pair = policies(args.device)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(args.device)
    result: dict = {
        "what": "batch-1 224x224, wall ms per call with torch.cuda.synchronize (p50/p90/p99 of "
        "interleaved calls); untrained weights",
        "models": "routed VER-T (ver_tiny, K=2 of 6 experts in blocks 10-12) vs dense ViT-T "
        "(ver_tiny, moe_blocks=0)",
        "iters": args.iters,
        "machine": {
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "loadavg_1min": round(os.getloadavg()[0], 2),
        },
    }
    sections = {
        "encoders": lambda: encoders(routed, dense, x, args.iters),
        "heads": lambda: heads(routed, diffusion, x, args.iters),
        "views": lambda: views(routed, pair, args.iters),
        "compiled": lambda: compiled(routed, dense, x, args.iters),
    }
    for name, run in sections.items():
        if name in args.skip:
            continue
        t0 = time.perf_counter()
        try:
            result[name] = run()
        except Exception as e:  # record it: a CUDA-only failure is a finding
            result[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        print(f"[gpu_encoder] {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
