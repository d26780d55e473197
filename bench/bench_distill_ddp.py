"""Distillation throughput: ver-distill on 1 process vs torchrun --nproc_per_node=2 (DDP, gloo on
CPU / nccl on GPU), same global batch. Writes bench/results/distill_ddp.json.

    python bench/bench_distill_ddp.py                 # real ver_tiny, 3 teachers, batch 8
    python bench/bench_distill_ddp.py --small --steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "distill_ddp.json"
SMALL = ["depth=4", "moe_blocks=2", "embed_dim=64", "num_heads=2"]
TEACHERS = "efficientnet_lite0,sim_depth,sim_segmentation"


def run(
    shards: Path, out: Path, procs: int, args: argparse.Namespace, threads: int | None = None
) -> dict:
    cli = [
        "--shards",
        str(shards),
        "--out",
        str(out),
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--no-progress",
    ]
    for o in SMALL if args.small else []:
        cli += ["--model-override", o]
    bin_dir = Path(sys.executable).parent
    if procs == 1:
        cmd = [sys.executable, "-m", "ver_core.cli.distill", *cli]
    else:
        cmd = [
            str(bin_dir / "torchrun"),
            "--standalone",
            f"--nproc_per_node={procs}",
            "-m",
            "ver_core.cli.distill",
            *cli,
        ]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"{procs}-process run failed:\n{res.stderr[-3000:]}")
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    # steady state: from the end of the first step (warm-up, allocator) to the last step
    span = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
    steps_per_s = (len(rows) - 1) / span
    return {
        "processes": procs,
        "omp_threads_per_process": threads or (1 if procs > 1 else os.cpu_count()),
        "steps_per_s": steps_per_s,
        "images_per_s": steps_per_s * args.batch_size,
        "wall_s_incl_startup": wall,
        "load_avg_1min_before": load_before,
        "first_loss": rows[0]["loss"],
        "last_loss": rows[-1]["loss"],
        "losses": [r["loss"] for r in rows],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="interleaved runs per setting (median)")
    p.add_argument(
        "--small", action="store_true", help="tiny student (depth 4, dim 64) instead of ver_tiny"
    )
    args = p.parse_args()
    import torch

    from ver_core.distill.extract import extract_teachers
    from ver_core.distill.synthetic import make_synthetic_images

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_synthetic_images(tmp / "images", args.images)
        extract_teachers(tmp / "images", TEACHERS.split(","), tmp / "shards", progress=False)
        # (processes, threads per process): torchrun gives each process 1 thread, so the 1-process
        # run is measured with the default threads and with 1 thread
        settings = [(1, None), (1, 1), (2, None)]
        runs: dict[tuple, list] = {s: [] for s in settings}
        for rep in range(args.repeats):  # interleaved, so all settings see similar machine load
            for n, t in settings:
                runs[(n, t)].append(run(tmp / "shards", tmp / f"out{n}_{t}_{rep}", n, args, t))
    results = []
    for rs in runs.values():
        best = sorted(rs, key=lambda r: r["steps_per_s"])[len(rs) // 2]  # the median run
        results.append({**best, "steps_per_s_all_runs": [r["steps_per_s"] for r in rs]})
    report = {
        "bench": "distill_ddp",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "load_avg_1min": os.getloadavg()[0],
        },
        "model": "ver_tiny"
        + (" (small overrides: " + ", ".join(SMALL) + ")" if args.small else ""),
        "teachers": TEACHERS,
        "global_batch": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "results": results,
        "speedup_2_vs_1": results[2]["steps_per_s"] / results[0]["steps_per_s"],
        "speedup_2_vs_1_same_threads": results[2]["steps_per_s"] / results[1]["steps_per_s"],
        "note": "steps/s from the end of step 1 to the last step (startup and warm-up excluded), median of "
        "interleaved repeats; one process uses all cores' threads, torchrun sets OMP_NUM_THREADS=1 per "
        "process; on a loaded shared CPU a multi-threaded single process can be far slower than "
        "single-threaded ones (OpenMP threads wait for each other), which is why both are reported. "
        "On a 2-core CPU the two processes share the cores the single process had; the figure that "
        "matters for scaling comes from multi-GPU machines (nccl).",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    for r in results:
        print(
            f"{r['processes']} process(es) x {r['omp_threads_per_process']} thread(s): "
            f"{r['steps_per_s']:.3f} steps/s, {r['images_per_s']:.2f} images/s, "
            f"loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}"
        )
    print(
        f"speed-up 2 vs 1: {report['speedup_2_vs_1']:.2f}x "
        f"(vs 1 process x 1 thread: {report['speedup_2_vs_1_same_threads']:.2f}x) -> {RESULTS}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
