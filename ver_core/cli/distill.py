"""ver-distill: train the VER model from teacher shards (single process or torchrun + DDP)."""

from __future__ import annotations

import argparse
import json
import sys

from ver_core.distill.trainer import DistillConfig, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ver-distill",
        description="Distill teacher features from shards (ver-extract-teachers) into a VER library "
        "checkpoint. Multi-process: torchrun --nproc_per_node=N $(which ver-distill) ...",
    )
    p.add_argument("--shards", required=True, help="shard directory from ver-extract-teachers")
    p.add_argument("--model", default="ver_tiny", help="ver_tiny | ver_small | ver_base")
    p.add_argument("--out", required=True, help="output library checkpoint directory")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (split over processes)")
    p.add_argument("--lr", type=float, default=None, help="default 2e-3 * batch / 512 (Theia)")
    p.add_argument("--warmup-frac", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--mi-weight", type=float, default=5e-4)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--no-router-noise", action="store_true", help="deterministic teacher routers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end)"
    )
    p.add_argument(
        "--model-override",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="VERConfig override, e.g. depth=4 (for quick runs; repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing --out")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad --model-override {item!r}: use KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = DistillConfig(
            shards=args.shards,
            out=args.out,
            model=args.model,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_frac=args.warmup_frac,
            weight_decay=args.weight_decay,
            mi_weight=args.mi_weight,
            top_k=args.top_k,
            router_noise=not args.no_router_noise,
            seed=args.seed,
            save_every=args.save_every,
            resume=args.resume,
            overwrite=args.overwrite,
            model_overrides=parse_overrides(args.model_override),
            progress=not args.no_progress,
        )
        summary = train(cfg)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ver-distill: error: {msg}", file=sys.stderr)
        return 2
    if summary.get("heatmap"):
        losses = summary["losses"]
        first = f"{losses[0]:.4f}" if losses else "-"
        last = f"{losses[-1]:.4f}" if losses else "-"
        print(
            f"distilled {summary['steps']} steps on {summary['world_size']} process(es): loss {first} -> {last}; "
            f"library in {summary['out']}, heatmap {summary['heatmap']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
