"""Ablation benchmark: VER (patchwise routing + CTA) against routing ablations and baselines.

Every row trains a policy with make demo's recipe on make demo's demonstrations: ``ver-train-router
--config RECIPE`` (the ``ver-train-router.yaml`` that ``make demo`` writes beside its checkpoint:
both cameras, keypose + grasp point, keypose-relative actions, its steps and batch, its feature
cache), with only the row's routing flags (and head) changed. Every row is then evaluated by
``ver-eval --in-process``: the controller the ROS nodes run (encoder -> policy -> chunk smoothing ->
safety gate), on the same held-out seeds, with make demo's staleness budget and a fixed compute
time per perception call (``--latency-s``), so rows evaluated side by side in parallel processes
do not skew each other. The table gives each row's one-sided Fisher exact p-value that VER (the
same head's ``ver`` row) succeeds more often.

    make demo                                                       # demos + the recipe
    python bench/bench_ablation.py --checkpoint ver_mlp=runs/demo/policy --only ver_mlp
    python bench/bench_ablation.py --only single_mlp average_mlp
    python bench/bench_ablation.py --table

``--checkpoint ROW=DIR`` evaluates an existing checkpoint as the row (make demo's own policy is the
VER row of its recipe) instead of training one. Rows run separately and their results accumulate
in ``--results``.

The ``dense`` row is a separately distilled dense student (Theia-style: the same VER-T body with
plain MLPs where the library's expert blocks sit, ``moe_blocks=0``), distilled by the same recipe
as the library (same images, teachers, steps, batch); make it with
``OVERRIDES=moe_blocks=0 OUT=runs/distill_dense/lib STATE=runs/distill_dense/trainer_state
make distill-sim`` (docs/DISTILL.md) and point ``--dense-library`` at it. The EfficientNet-Lite0
row (``ver_core.eval.baselines``) has no keypose or grasp-point heads and reads one camera: it
trains by its own recipe (``--steps + --head-steps`` steps on the demos) and is evaluated by the
open-loop chunk controller; the table marks it.
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
BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results" / "ablation_keypose.json"
DEFAULT_RECIPE = ROOT / "runs" / "demo" / "policy" / "ver-train-router.yaml"
DEFAULT_DENSE_LIBRARY = ROOT / "runs" / "distill_dense" / "lib"

# row -> (label, routing flags); the head is the row's suffix (_mlp / _diffusion)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "ver": ("VER: patchwise routing + CTA", ["--routing", "patchwise"]),
    "noanneal": ("patchwise routing, no annealing", ["--routing", "patchwise", "--no-anneal"]),
    "frame": ("frame-level routing + CTA", ["--routing", "frame"]),
    "single": ("fixed single expert", ["--routing", "single"]),
    "average": ("static average of the library", ["--routing", "average"]),
    "dense": ("dense distilled backbone (Theia-style)", ["--routing", "dense"]),
    "effnet": ("EfficientNet-Lite0 frozen features (own recipe, open loop)", []),
}
HEADS = ("mlp", "diffusion")
ROWS = [f"{v}_{h}" for h in HEADS for v in VARIANTS]


def _row_checkpoint(item: str) -> tuple[str, Path]:
    row, sep, path = item.partition("=")
    if not sep or row not in ROWS:
        raise argparse.ArgumentTypeError(f"expected ROW=DIR with ROW one of {', '.join(ROWS)}")
    return row, Path(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--recipe",
        type=Path,
        default=DEFAULT_RECIPE,
        help="ver-train-router config every row trains with (default: make demo's, "
        "runs/demo/policy/ver-train-router.yaml)",
    )
    p.add_argument("--demos", type=Path, help="demo episodes (default: the recipe's bag)")
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
    p.add_argument(
        "--checkpoint",
        type=_row_checkpoint,
        action="append",
        default=[],
        metavar="ROW=DIR",
        help="evaluate this existing checkpoint as ROW instead of training one (repeatable)",
    )
    p.add_argument("--steps", type=int, help="joint training steps per row (default: the recipe's)")
    p.add_argument("--head-steps", type=int, help="then neck + head steps (default: the recipe's)")
    p.add_argument("--episodes", type=int, default=50, help="held-out evaluation episodes per row")
    p.add_argument("--seed", type=int, default=100_000, help="first held-out seed")
    p.add_argument("--max-steps", type=int, default=100, help="control steps per episode")
    p.add_argument(
        "--observation-budget-s", type=float, default=0.4, help="staleness budget (make demo's)"
    )
    p.add_argument(
        "--latency-s",
        type=float,
        default=0.08,
        help="fixed compute seconds per perception call in the evaluation (rows comparable "
        "whatever else runs)",
    )
    p.add_argument(
        "--work", type=Path, default=ROOT / "runs" / "ablation_keypose", help="checkpoints go here"
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="JSON the rows accumulate in")
    p.add_argument(
        "--retrain", action="store_true", help="train even when the row's checkpoint exists"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: default)")
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


def read_recipe(path: Path) -> dict:
    """The recipe's options (a ver-train-router.yaml)."""
    import yaml

    if not path.is_file():
        raise SystemExit(
            f"bench_ablation: no recipe at {path}: run `make demo` first (it writes "
            "runs/demo/policy/ver-train-router.yaml) or pass --recipe"
        )
    return yaml.safe_load(path.read_text())


def recipe_paths(recipe_path: Path, recipe: dict) -> tuple[Path, Path]:
    """The recipe's demos and feature cache as absolute paths.

    A recipe's relative paths are relative to where its ``ver-train-router`` ran (the repository
    root for make demo's), which need not be this checkout (a fresh clone's make demo): that
    directory is found from the recipe's own location, which is its ``out``. The cache is the
    recipe's ``cache_dir``, else ``ver-train-router``'s default ``<out>/cache``, so every row reads
    make demo's cached frozen features instead of extracting its own.
    """
    recipe_path = recipe_path.resolve()
    base = ROOT
    out = Path(recipe.get("out") or recipe_path.parent)
    if not out.is_absolute():
        here = recipe_path.parent
        if here.parts[-len(out.parts) :] == out.parts:
            base = Path(*here.parts[: -len(out.parts)])
    out = out if out.is_absolute() else base / out

    def absolute(p: str | Path) -> Path:
        return Path(p) if Path(p).is_absolute() else base / p

    return absolute(recipe["bag"]), absolute(recipe.get("cache_dir") or out / "cache")


def train_command(row: str, args: argparse.Namespace, recipe: dict, ckpt: Path) -> list[str]:
    """The command that trains the row's policy into ``ckpt``."""
    variant, head = row.rsplit("_", 1)
    train = recipe.get("train", {})
    steps = args.steps if args.steps is not None else train.get("steps", 100)
    head_steps = args.head_steps if args.head_steps is not None else train.get("head_steps", 0)
    recipe_demos, recipe_cache = recipe_paths(args.recipe, recipe)
    demos = args.demos or recipe_demos
    if variant == "effnet":
        return [sys.executable, "-m", "ver_core.eval.baselines", "--bag", str(demos), "--out", str(ckpt),
                "--head", head, "--steps", str(steps + head_steps),
                "--batch-size", str(train.get("batch_size", 32))]  # fmt: skip
    cmd = [str(BIN / "ver-train-router"), "--config", str(args.recipe), "--out", str(ckpt),
           "--head", head, "--no-progress", "--bag", str(demos), *VARIANTS[variant][1]]  # fmt: skip
    if variant != "dense":  # make demo's cached frozen features (same demos, same library)
        cmd += ["--cache-dir", str(recipe_cache)]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    if args.head_steps is not None:
        cmd += ["--head-steps", str(args.head_steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if variant == "dense":
        if not (args.dense_library / "config.json").is_file():
            raise SystemExit(
                f"bench_ablation: the dense row needs a dense distilled student at "
                f"{args.dense_library} (see this file's docstring for the command)"
            )
        # its tokens differ from the library's: a cache of its own
        cmd += ["--library", str(args.dense_library), "--cache-dir", str(args.work / "cache_dense")]
    return cmd


def train_row(cmd: list[str]) -> float:
    print(f"[bench] {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def existing_training(ckpt: Path) -> tuple[list[str], float | None, dict]:
    """How an existing checkpoint was trained: its saved options and training seconds."""
    import yaml

    saved = ckpt / "ver-train-router.yaml"
    options = yaml.safe_load(saved.read_text()) if saved.is_file() else {}
    metrics = ckpt / "metrics.json"
    seconds = (
        json.loads(metrics.read_text()).get("train_seconds_this_run") if metrics.is_file() else None
    )
    return [f"(existing checkpoint {ckpt}; its options: {saved})"], seconds, options


def row_library(row: str, args: argparse.Namespace, options: dict) -> str | None:
    """The feature extractor a row's policy trains over (None: the EfficientNet baseline)."""
    variant = row.rsplit("_", 1)[0]
    if variant == "effnet":
        return None
    if variant == "dense":
        return str(args.dense_library)
    return options.get("task", {}).get("library")


def evaluate_row(row: str, ckpt: Path, args: argparse.Namespace) -> dict:
    """The row's checkpoint on the held-out seeds; returns ver-eval's report."""
    out = ckpt / "eval"
    if row.startswith("effnet"):
        return _evaluate_open_loop(ckpt, args)
    cmd = [str(BIN / "ver-eval"), "--checkpoint", str(ckpt), "--in-process", "--no-media",
           "--episodes", str(args.episodes), "--seed", str(args.seed),
           "--max-steps", str(args.max_steps), "--observation-budget-s", str(args.observation_budget_s),
           "--latency-s", str(args.latency_s), "--out", str(out), "--quiet"]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"[bench] {shlex.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    report = json.loads((out / "results.json").read_text())
    report["eval_command"] = cmd
    return report


def _evaluate_open_loop(ckpt: Path, args: argparse.Namespace) -> dict:
    from ver_core.eval import ChunkController, EvalConfig, evaluate, policy_predictor
    from ver_core.eval.baselines import FrozenFeaturePolicy

    policy = FrozenFeaturePolicy.from_pretrained(ckpt)
    config = EvalConfig(
        episodes=args.episodes, seed=args.seed, max_steps=args.max_steps, media=False,
        loop="open-loop",
    )  # fmt: skip
    controller = ChunkController(policy_predictor(policy), config.execute_steps)
    report = evaluate(controller, config, out_dir=ckpt / "eval", meta={"row": "effnet"})
    report["eval_command"] = ["(in-process open loop, bench_ablation)"]
    return report


def summarize(report: dict) -> dict:
    keys = ("episodes", "successes", "success_rate", "ci95_low", "ci95_high", "approach_ratio")
    out = {k: report[k] for k in keys}
    out["mean_steps"] = report["episode_steps"].get("mean")
    out["mean_min_distance_m"] = report["min_distance_m"].get("mean")
    lat = report.get("latency_ms", {})
    out["encode_p50_ms"] = lat.get("encode", {}).get("p50_ms")
    out["per_episode_success"] = [bool(e["success"]) for e in report.get("per_episode", [])]
    if "expert_usage" in report:
        out["expert_usage"] = report["expert_usage"]
    return out


def p_vs_ver(results: dict, row: str) -> float | None:
    """One-sided Fisher exact p that the same head's VER row succeeds more often than ``row``."""
    from ver_core.eval.stats import fisher_exact_greater

    head = row.rsplit("_", 1)[1]
    ver = results["rows"].get(f"ver_{head}")
    if ver is None or row == f"ver_{head}":
        return None
    v, r = ver["eval"], results["rows"][row]["eval"]
    return fisher_exact_greater(v["successes"], v["episodes"], r["successes"], r["episodes"])


def steps_cell(r: dict) -> str:
    """A row's training budget: joint + head (+ action-head) steps x batch (, N members)."""
    cell = f"{r['train_steps']} + {r.get('head_steps', 0)}"
    if r.get("action_head_steps"):
        cell += f" + {r['action_head_steps']}"
    cell += f" x {r.get('batch_size', 32)}"
    members = r.get("members") or 1
    return cell + (f", {members} members" if members > 1 else "")


def table(results: dict) -> str:
    lines = [
        "| row | head | success (95% CI) | p (VER better) | closest gripper-cube (m) | joint + head (+ action-head) steps x batch | train time |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        r = results["rows"].get(row)
        if r is None:
            continue
        variant, head = row.rsplit("_", 1)
        e = r["eval"]
        p = p_vs_ver(results, row)
        train_s = r.get("train_wall_s")
        lines.append(
            f"| {VARIANTS[variant][0]} | {head} | {e['successes']}/{e['episodes']} = {100 * e['success_rate']:.0f}% "
            f"({100 * e['ci95_low']:.0f}-{100 * e['ci95_high']:.0f}%) | {'-' if p is None else f'{p:.3f}'} | "
            f"{e['mean_min_distance_m']:.3f} | {steps_cell(r)} | "
            f"{'?' if train_s is None else f'{train_s / 60:.1f} min'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = load_results(args.results)
    if args.table:
        print(table(results))
        return 0
    recipe = read_recipe(args.recipe)
    given = dict(args.checkpoint)
    for row in args.only or ROWS:
        ckpt = given.get(row, args.work / row)
        if row not in given and (args.retrain or not (ckpt / "config.json").is_file()):
            cmd = train_command(row, args, recipe, ckpt)
            train_s = train_row(cmd)
            options = (
                read_recipe(ckpt / "ver-train-router.yaml") if not row.startswith("effnet") else {}
            )
        else:
            cmd, train_s, options = existing_training(ckpt)
            print(f"[bench] {row}: evaluating the existing {ckpt}", flush=True)
        train = options.get("train", recipe.get("train", {}))
        report = evaluate_row(row, ckpt, args)
        entry = {
            "label": VARIANTS[row.rsplit("_", 1)[0]][0],
            "train_command": cmd,
            "train_steps": train.get("steps"),
            "head_steps": train.get("head_steps"),
            # the EfficientNet baseline trains by its own recipe: no action-head phase, one head
            "action_head_steps": 0 if row.startswith("effnet") else train.get("action_head_steps", 0),
            "members": options.get("task", {}).get("members", 1),
            "batch_size": train.get("batch_size"),
            "train_wall_s": None if train_s is None else round(train_s, 1),
            "recipe": str(args.recipe),
            "demos": str(args.demos or options.get("bag") or recipe.get("bag")),
            "checkpoint": str(ckpt),
            "library": row_library(row, args, options),
            "eval_command": report.get("eval_command"),
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
        p = p_vs_ver(results, row)
        print(
            f"[bench] {row}: success {e['successes']}/{e['episodes']}"
            f"{'' if p is None else f', p(VER better) = {p:.3f}'} -> {args.results}",
            flush=True,
        )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
