"""ver-model-info: parameter counts of the registered VER sizes (or of a checkpoint)."""

from __future__ import annotations

import argparse
import json
import sys

from ver_core.model import MODEL_SIZES, build_model, load_library, parameter_report

# Active parameters reported in the VER paper for VER-T (K = 1/2/3).
PAPER_VER_T_ACTIVE = {1: 4.8e6, 2: 5.2e6, 3: 5.7e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", action="append", help="registered size (repeatable); default: all")
    p.add_argument("--checkpoint", help="a library or task checkpoint directory instead")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)

    if args.checkpoint:
        models = {args.checkpoint: load_library(args.checkpoint)}
    else:
        models = {n: build_model(n) for n in (args.model or sorted(MODEL_SIZES, key=_size_order))}
    reports = {n: parameter_report(m) for n, m in models.items()}
    if args.json:
        print(json.dumps({n: r.as_dict() for n, r in reports.items()}, indent=2))
        return 0
    print(
        f"{'model':<12} {'total':>8} {'backbone':>9} {'experts':>8} {'router':>8} "
        f"{'active K=1':>10} {'K=2':>7} {'K=3':>7}"
    )
    for n, r in reports.items():
        print(
            f"{n:<12} {r.total / 1e6:7.2f}M {r.backbone / 1e6:8.2f}M {r.experts / 1e6:7.2f}M "
            f"{r.router / 1e3:7.1f}k {r.active[1] / 1e6:9.2f}M {r.active[2] / 1e6:6.2f}M "
            f"{r.active[3] / 1e6:6.2f}M   router share {100 * r.router / r.total:.3f}%"
        )
    print(
        "paper, VER-T active: "
        + " / ".join(f"K={k} {v / 1e6:.1f}M" for k, v in PAPER_VER_T_ACTIVE.items())
    )
    return 0


def _size_order(name: str) -> int:
    return MODEL_SIZES[name]["embed_dim"]


if __name__ == "__main__":
    sys.exit(main())
