"""Ablation benchmark: VER (patchwise routing + CTA) against routing ablations and baselines.

Every row trains a policy on the same demonstrations (``ver-train-router`` with the row's flags,
or the EfficientNet-Lite0 frozen-feature baseline) and evaluates it in-process on the same
held-out seeds. Rows run separately (``--only ver_mlp``) and their results accumulate in
bench/results/ablation.json; ``--table`` prints the markdown table of docs/RESULTS.md.

    python bench/bench_ablation.py --demos runs/demo/demos --only ver_mlp --episodes 20
    python bench/bench_ablation.py --table

The ``dense`` row is a separately distilled dense student (Theia-style: the same VER-T body with
plain MLPs where the library's expert blocks sit, ``moe_blocks=0``), distilled by the same recipe
as the library (same images, teachers, steps, batch); make it with
``OVERRIDES=moe_blocks=0 OUT=runs/distill_dense/lib STATE=runs/distill_dense/trainer_state
make distill-sim`` (docs/DISTILL.md) and point ``--dense-library`` at it.

Every row gets the same updates: ``--steps`` joint steps through the library (router + neck +
head; for fixed routings neck + head through the same blocks) then ``--head-steps`` of neck + head
on cached routed tokens; the EfficientNet baseline, whose features are frozen, trains
``--steps + --head-steps`` steps. Rows may run in parallel processes: each result is merged into
the results file as it lands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless the user chose

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "ablation.json"
DEFAULT_LIBRARY = ROOT / "assets" / "ver_tiny_sim_library"
DEFAULT_DENSE_LIBRARY = ROOT / "runs" / "distill_dense" / "lib"

# row -> (label, routing flags); the head is the row's suffix (_mlp / _diffusion)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "ver": ("VER: patchwise routing + CTA", ["--routing", "patchwise"]),
    "noanneal": ("patchwise routing, no annealing", ["--routing", "patchwise", "--no-anneal"]),
    "frame": ("frame-level routing + CTA", ["--routing", "frame"]),
    "single": ("fixed single expert", ["--routing", "single"]),
    "average": ("static average of the library", ["--routing", "average"]),
    "dense": ("dense distilled backbone (Theia-style)", ["--routing", "dense"]),
    "effnet": ("EfficientNet-Lite0 frozen features", []),
}
HEADS = ("mlp", "diffusion")
ROWS = [f"{v}_{h}" for h in HEADS for v in VARIANTS]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--demos",
        type=Path,
        default=ROOT / "runs" / "demo" / "demos",
        help="rosbag2 demo episodes (default: runs/demo/demos, recorded by make demo)",
    )
    p.add_argument("--library", type=Path, default=DEFAULT_LIBRARY, help="VER library checkpoint")
    p.add_argument(
        "--dense-library",
        type=Path,
        default=DEFAULT_DENSE_LIBRARY,
        help="dense distilled student (moe_blocks=0) for the dense rows",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=ROWS,
        metavar="ROW",
        help=f"rows to run (default all): {', '.join(ROWS)}",
    )
    p.add_argument("--steps", type=int, default=300, help="joint training steps per row")
    p.add_argument(
        "--head-steps", type=int, default=3000, help="then neck + head steps on routed tokens"
    )
    p.add_argument("--batch-size", type=int, default=32, help="training batch size per row")
    p.add_argument("--episodes", type=int, default=20, help="held-out evaluation episodes per row")
    p.add_argument("--seed", type=int, default=100_000, help="first held-out seed")
    p.add_argument("--max-steps", type=int, default=80, help="control steps per evaluation episode")
    p.add_argument(
        "--work", type=Path, default=ROOT / "runs" / "ablation", help="checkpoints go here"
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="JSON the rows accumulate in")
    p.add_argument(
        "--retrain", action="store_true", help="train even when the row's checkpoint exists"
    )
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads for the evaluation (0: default)"
    )
    p.add_argument(
        "--table", action="store_true", help="print the markdown table of the results and exit"
    )
    return p.parse_args(argv)


def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"benchmark": "ablation", "rows": {}}


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(path)


def train_row(row: str, args: argparse.Namespace, ckpt: Path) -> tuple[list[str], float]:
    """Train the row's policy into ``ckpt``; returns the command and its wall time."""
    variant, head = row.rsplit("_", 1)
    if variant == "effnet":
        cmd = [sys.executable, "-m", "ver_core.eval.baselines", "--bag", str(args.demos), "--out", str(ckpt),
               "--head", head, "--steps", str(args.steps + args.head_steps),
               "--batch-size", str(args.batch_size)]  # fmt: skip
    else:
        cmd = [str(ROOT / ".venv" / "bin" / "ver-train-router"), "--bag", str(args.demos), "--out", str(ckpt),
               "--head", head, "--steps", str(args.steps), "--head-steps", str(args.head_steps),
               "--batch-size", str(args.batch_size), "--cache-dir", str(args.work / "cache"),
               "--no-progress", *VARIANTS[variant][1]]  # fmt: skip
        if variant == "dense":
            if not (args.dense_library / "config.json").is_file():
                raise SystemExit(
                    f"bench_ablation: the dense row needs a dense distilled student at "
                    f"{args.dense_library} (see this file's docstring for the command)"
                )
            cmd += ["--library", str(args.dense_library)]
        elif (args.library / "config.json").is_file():
            cmd += ["--library", str(args.library)]
        else:
            print(
                f"[bench] WARNING: no library at {args.library}: training over a fresh one",
                flush=True,
            )
    print(f"[bench] {row}: {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return cmd, time.perf_counter() - t0


def row_library(row: str, args: argparse.Namespace) -> str | None:
    """The feature extractor a row's policy trains over (None: the EfficientNet baseline)."""
    variant = row.rsplit("_", 1)[0]
    if variant == "effnet":
        return None
    path = Path(args.dense_library if variant == "dense" else args.library).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def evaluate_row(row: str, ckpt: Path, args: argparse.Namespace) -> dict:
    from ver_core.eval import ChunkController, EvalConfig, evaluate, policy_predictor

    variant = row.rsplit("_", 1)[0]
    if variant == "effnet":
        from ver_core.eval.baselines import FrozenFeaturePolicy

        policy = FrozenFeaturePolicy.from_pretrained(ckpt)
    else:
        from ver_core.policy import TaskPolicy

        policy = TaskPolicy.from_pretrained(ckpt)
    config = EvalConfig(
        episodes=args.episodes, seed=args.seed, max_steps=args.max_steps, media=False
    )
    controller = ChunkController(policy_predictor(policy), config.execute_steps)
    return evaluate(controller, config, out_dir=ckpt / "eval", meta={"row": row})


def summarize(report: dict) -> dict:
    keys = ("episodes", "successes", "success_rate", "ci95_low", "ci95_high", "approach_ratio")
    out = {k: report[k] for k in keys}
    out["mean_steps"] = report["episode_steps"].get("mean")
    out["mean_min_distance_m"] = report["min_distance_m"].get("mean")
    lat = report.get("latency_ms", {})
    out["encode_p50_ms"] = lat.get("encode", {}).get("p50_ms")
    out["head_p50_ms"] = lat.get("head", {}).get("p50_ms")
    if "expert_usage" in report:
        out["expert_usage"] = report["expert_usage"]
    return out


def table(results: dict) -> str:
    lines = [
        "| row | head | success (95% CI) | closest gripper-cube (m) | encode p50 (ms) | joint + head steps x batch | train time |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        r = results["rows"].get(row)
        if r is None:
            continue
        variant, head = row.rsplit("_", 1)
        e = r["eval"]
        lines.append(
            f"| {VARIANTS[variant][0]} | {head} | {e['successes']}/{e['episodes']} = {100 * e['success_rate']:.0f}% "
            f"({100 * e['ci95_low']:.0f}-{100 * e['ci95_high']:.0f}%) | {e['mean_min_distance_m']:.3f} | "
            f"{e['encode_p50_ms'] or 0:.0f} | {r['train_steps']} + {r.get('head_steps', 0)} x "
            f"{r.get('batch_size', 32)} | "
            f"{r['train_wall_s'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = load_results(args.results)
    if args.table:
        print(table(results))
        return 0
    if args.demos is None or not args.demos.is_dir():
        print(
            f"bench_ablation: --demos must be a directory of demo episodes, got {args.demos}",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    n_demos = sum(1 for _ in args.demos.glob("episode_*"))
    for row in args.only or ROWS:
        ckpt = args.work / row
        if args.retrain or not (ckpt / "config.json").is_file():
            cmd, train_s = train_row(row, args, ckpt)
        else:
            prev = results["rows"].get(row, {})
            cmd, train_s = (
                prev.get("train_command", ["(existing checkpoint)"]),
                prev.get("train_wall_s", 0.0),
            )
            print(f"[bench] {row}: reusing {ckpt}", flush=True)
        report = evaluate_row(row, ckpt, args)
        entry = {
            "label": VARIANTS[row.rsplit("_", 1)[0]][0],
            "train_command": cmd,
            "train_steps": args.steps,
            "head_steps": args.head_steps,
            "batch_size": args.batch_size,
            "train_wall_s": round(train_s, 1),
            "demos": str(args.demos),
            "num_demos": n_demos,
            "checkpoint": str(ckpt),
            "library": row_library(row, args),
            "eval_wall_s": round(report["wall_s"], 1),
            "eval": summarize(report),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "load_avg_1m": round(os.getloadavg()[0], 2),  # the machine is shared: context for times
        }
        results = load_results(args.results)  # rows finished meanwhile by parallel runs stay
        results["rows"][row] = entry
        save_results(args.results, results)
        e = entry["eval"]
        print(
            f"[bench] {row}: success {e['successes']}/{e['episodes']} -> {args.results}", flush=True
        )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
