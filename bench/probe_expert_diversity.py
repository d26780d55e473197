"""How much can routing change the library's tokens? A probe for the ablation's ties.

The ablation rows differ only in how the last blocks' experts are mixed (patchwise top-K, frame
level, one fixed expert, the plain average). If the experts compute nearly the same function, or
their update is small beside the residual stream it is added to, no routing can change what the
policy sees, and the rows must tie. This probe measures both on simulator frames (held-out seeds,
both cameras), over all patches and over the cube's patches alone (the ones the grasp detector
reads):

- per expert block: pairwise cosine similarity of the experts' outputs on the same tokens, the
  spread of the experts around their mean (relative norm), and the size of the mean expert update
  relative to the residual stream;
- the final tokens (after the last block and norm) with each single expert in every block, against
  the average of the library: relative distance and cosine.

A randomly initialized library of the same shape is measured beside it as the reference for
"different functions".

    .venv/bin/python bench/probe_expert_diversity.py [--library assets/ver_tiny_sim_library]
        -> bench/results/expert_diversity.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


def frames(seeds: range, cameras: tuple[str, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB frames (B, size, size, 3) and a per-pixel cube mask (B, size, size) at the reset pose."""
    from ver_core.sim import SEG_CLASSES, SimConfig
    from ver_core.sim.env import FrankaPickEnv

    env = FrankaPickEnv(SimConfig(width=size, height=size, wrist_width=size, wrist_height=size))
    images, masks = [], []
    for seed in seeds:
        env.reset(seed)
        for cam in cameras:
            images.append(env.render(cam))
            masks.append(env.render_segmentation(cam) == SEG_CLASSES["cube"])
    return np.stack(images), np.stack(masks)


def patch_mask(masks: np.ndarray, patch: int) -> torch.Tensor:
    """(B, S, S) pixel mask -> (B, 1 + P) token mask: patches at least a quarter cube (CLS off)."""
    m = torch.as_tensor(masks, dtype=torch.float32)[:, None]
    frac = F.avg_pool2d(m, patch).flatten(1)
    return torch.cat([torch.zeros(len(frac), 1), frac], dim=1) >= 0.25


@torch.no_grad()
def probe(model, x: torch.Tensor, cube: torch.Tensor) -> dict:
    """Per expert block: expert agreement and update size; final tokens per single expert."""
    tokens = model.forward_bvt(x)
    blocks, e_count = [], model.config.num_experts
    single = [tokens.clone() for _ in range(e_count)]
    avg = tokens
    for block in model.moe_blocks:
        a = avg + block.attn(block.norm1(avg))
        h = block.norm2(a).flatten(0, 1)  # (T, D)
        outs = torch.stack([block.mlp.expert(e, h) for e in range(e_count)])  # (E, T, D)
        mean = outs.mean(0)
        unit = F.normalize(outs, dim=-1)
        cos = torch.einsum("itd,jtd->ijt", unit, unit)  # (E, E, T)
        off = ~torch.eye(e_count, dtype=torch.bool)
        spread = (outs - mean).norm(dim=-1).mean(0) / mean.norm(dim=-1).clamp_min(1e-8)  # (T,)
        update = mean.norm(dim=-1) / a.flatten(0, 1).norm(dim=-1)  # (T,)
        flat_cube = cube.flatten()

        def stats(sel: torch.Tensor, cos=cos, off=off, spread=spread, update=update) -> dict:
            return {
                "pairwise_cosine": round(float(cos[off][:, sel].mean()), 4),
                "spread_over_mean": round(float(spread[sel].mean()), 4),
                "update_over_residual": round(float(update[sel].mean()), 4),
            }

        blocks.append(
            {"all_patches": stats(torch.ones_like(flat_cube)), "cube_patches": stats(flat_cube)}
        )
        avg = a + mean.view_as(a)
        for e in range(e_count):
            s = single[e]
            s_a = s + block.attn(block.norm1(s))
            single[e] = s_a + block.mlp.expert(e, block.norm2(s_a))
    final_avg = model.norm(avg)
    per_expert = []
    for e in range(e_count):
        t = model.norm(single[e])
        dist = (t - final_avg).norm(dim=-1) / final_avg.norm(dim=-1)
        cosine = F.cosine_similarity(t, final_avg, dim=-1)
        per_expert.append(
            {
                "expert": e,
                "relative_distance_all": round(float(dist.mean()), 4),
                "relative_distance_cube": round(float(dist[cube].mean()), 4),
                "cosine_all": round(float(cosine.mean()), 4),
                "cosine_cube": round(float(cosine[cube].mean()), 4),
            }
        )
    return {"expert_blocks": blocks, "final_tokens_single_vs_average": per_expert}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--library", type=Path, default=ROOT / "assets" / "ver_tiny_sim_library")
    p.add_argument("--scenes", type=int, default=16, help="held-out seeds from 100000")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "expert_diversity.json")
    args = p.parse_args(argv)

    from ver_core.model.io import load_library
    from ver_core.model.preprocess import preprocess_images
    from ver_core.model.vit import VisionExpertTransformer

    torch.manual_seed(0)
    model = load_library(args.library).eval()
    size, patch = model.config.img_size, model.config.patch_size
    t0 = time.perf_counter()
    images, masks = frames(range(100_000, 100_000 + args.scenes), ("camera", "wrist_camera"), size)
    x, cube = preprocess_images(images, size), patch_mask(masks, patch)
    random = VisionExpertTransformer(model.config).eval()
    result = {
        "benchmark": "expert_diversity",
        "library": str(args.library),
        "frames": int(len(images)),
        "cube_patches": int(cube.sum()),
        "shipped_library": probe(model, x, cube),
        "random_library_same_shape": probe(random, x, cube),
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "command": "python bench/probe_expert_diversity.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for name in ("shipped_library", "random_library_same_shape"):
        r = result[name]
        print(f"== {name}")
        for i, b in enumerate(r["expert_blocks"]):
            print(f"  expert block {i}: all {b['all_patches']}  cube {b['cube_patches']}")
        for e in r["final_tokens_single_vs_average"]:
            print(f"  final tokens, expert {e['expert']} alone vs average: {e}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
