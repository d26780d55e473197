"""Retrain a checkpoint's grasp-point heads alone, with a training variant, and score the start.

The heads are ~90k parameters over the checkpoint's routed tokens (its router fixed, its feature
cache reused), so a variant trains in ~40 s here: its effect on the tracker's start in held-out
scenes (``bench/probe_start.py``'s counts, on frames it saved with ``--save-frames``) separates
what the heads could learn from what the tokens hold. Variants: token-grid shift and mirror
augmentation (labels moved along), Dropout2d in the head, weight decay, more steps, fewer demo
episodes (``--episodes``: the data-scaling curve), and heads trained only on (or with a share of)
frames whose TCP is farther than ``--far`` m from the grasp point (no hand cue in view).

    .venv/bin/python bench/probe_start.py --checkpoint runs/demo/policy --save-frames /tmp/home.npz
    .venv/bin/python bench/probe_detector_variants.py --checkpoint runs/demo/policy \\
        --frames /tmp/home.npz --variant shift2 --shift 2     # appends a row to --out
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _shift_grid(x, c, o, y, dx, dy, flip, g):
    """Patch tokens (D, g, g) and one view's labels (class, offset, yaw) moved by (dx, dy)
    patches (vacated patches zero), mirrored first when ``flip``; a label moved off the grid
    becomes "not in view"."""
    if flip:
        x = x.flip(-1)
    x = x.roll((dy, dx), (1, 2))
    if dy > 0:
        x[:, :dy] = 0
    if dy < 0:
        x[:, dy:] = 0
    if dx > 0:
        x[:, :, :dx] = 0
    if dx < 0:
        x[:, :, dx:] = 0
    if c < g * g:
        col, row = c % g, c // g
        o, y = o.copy(), y.copy()
        if flip:
            col, o[0], y[1] = g - 1 - col, 1 - o[0], -y[1]
        col, row = col + dx, row + dy
        c = row * g + col if (0 <= col < g and 0 <= row < g) else g * g
    return x, c, o, y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--frames", required=True, help="probe_start.py --save-frames output")
    p.add_argument("--variant", default="base")
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--shift", type=int, default=0)
    p.add_argument("--flip", type=float, default=0.0)
    p.add_argument("--wd", type=float, default=1e-4)
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--episodes", type=int, default=0, help="train on the first N episodes only")
    p.add_argument("--far", type=float, default=0.0, help="train only on frames this far (m)")
    p.add_argument("--far-share", type=float, default=0.0, help="share of each batch from them")
    p.add_argument("--checkpoint-heads", action="store_true", help="score the heads as saved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench/results/detector_variants.jsonl"))
    a = p.parse_args()

    import torch
    from probe_start import score_starts

    from ver_core.policy import TaskPolicy
    from ver_core.policy.grasp_point import GraspPointHead, grasp_point_labels, grasp_point_loss
    from ver_core.policy.keypose import keypose_labels
    from ver_core.train import TrainConfig, split_episodes

    torch.set_num_threads(a.threads)
    pol = TaskPolicy.from_pretrained(a.checkpoint).eval()
    cfg, g = pol.config, pol.model.config.grid_size
    P = g * g
    cache = Path(a.checkpoint) / "cache"
    bvt_path = sorted(cache.glob("bvt_*.npy"))[0]
    demos = np.load(cache / f"demos_{bvt_path.name.split('_')[1]}.npz", mmap_mode="r")
    states, actions, ep = demos["states"], demos["actions"], demos["episode"]
    kp, valid = keypose_labels(actions, ep, cfg.gripper_max_width)
    cls, off, yaw, pts = grasp_point_labels(
        pol.rig, kp, valid, states[:, :7], g, cfg.grasp_yaw_order, cfg.grasp_yaw_frame
    )
    train_eps, _ = split_episodes(int(ep.max()) + 1, TrainConfig().val_fraction)  # the trainer's
    train = np.flatnonzero((ep < (a.episodes or len(train_eps))) & valid)
    tcp = np.stack([pol.rig.kin.tcp(q.astype(np.float64)) for q in states[:, :7]])
    far_idx = train[np.linalg.norm(tcp - pts, axis=1)[train] > (a.far or 0.2)]
    if a.far:
        train = far_idx
    routed_path = cache / f"routed_{bvt_path.stem}.npy"  # the fixed router's tokens, once
    if not routed_path.exists():
        bank = np.load(bvt_path, mmap_mode="r")
        tmp = np.lib.format.open_memmap(str(routed_path) + ".tmp", "w+", np.float16, bank.shape)
        with torch.no_grad():
            for s in range(0, len(bank), 32):
                chunk = torch.from_numpy(bank[s : s + 32].astype(np.float32))
                tmp[s : s + 32] = pol.route(chunk).tokens.half().numpy()
        tmp.flush()
        del tmp
        os.replace(str(routed_path) + ".tmp", routed_path)
    routed = np.load(routed_path, mmap_mode="r")

    t0 = time.time()
    if not a.checkpoint_heads:
        torch.manual_seed(a.seed)
        heads = torch.nn.ModuleList(
            [GraspPointHead(pol.model.config.embed_dim, g) for _ in cfg.cameras]
        )
        if a.drop > 0:
            for h in heads:
                h.net.insert(2, torch.nn.Dropout2d(a.drop))
        opt = torch.optim.AdamW(heads.parameters(), lr=3e-4, weight_decay=a.wd)
        rng = np.random.default_rng(a.seed)
        for step in range(a.steps):
            for group in opt.param_groups:
                group["lr"] = 3e-4 * (0.1 + 0.45 * (1 + math.cos(math.pi * step / a.steps)))
            if a.far_share:
                nf = round(32 * a.far_share)
                idx = np.concatenate(
                    [
                        rng.choice(far_idx, nf, replace=False),
                        rng.choice(train, 32 - nf, replace=False),
                    ]
                )
            else:
                idx = rng.choice(train, 32, replace=False)
            idx = np.sort(idx)  # memory-mapped rows in order
            tok = torch.from_numpy(routed[idx].astype(np.float32))
            c, o, y = cls[idx].copy(), off[idx].copy(), yaw[idx].copy()  # (B, V[, 2])
            for v in range(len(heads)) if (a.shift or a.flip) else []:
                for b in np.flatnonzero(c[:, v] >= 0):  # augment the view, labels moved along
                    dx, dy = rng.integers(-a.shift, a.shift + 1, 2) if a.shift else (0, 0)
                    grid = tok[b, v, 1:].T.reshape(-1, g, g)
                    grid, c[b, v], o[b, v], y[b, v] = _shift_grid(
                        grid, c[b, v], o[b, v], y[b, v], int(dx), int(dy), rng.random() < a.flip, g
                    )
                    tok[b, v, 1:] = grid.reshape(-1, P).T
            labels = (torch.from_numpy(c), torch.from_numpy(o), torch.from_numpy(y))
            total = grasp_point_loss(heads, tok, *labels)  # the trainer's grasp loss
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(heads.parameters(), 1.0)
            opt.step()
        pol.grasp_heads = heads.eval()
    frames = dict(np.load(a.frames))
    row = {
        "variant": a.variant,
        "checkpoint": a.checkpoint,
        "train_frames": len(train),
        "train_s": round(time.time() - t0),
        **{k: v for k, v in vars(a).items() if k not in ("checkpoint", "frames", "out", "variant")},
        **score_starts(pol, frames),
        "load": list(os.getloadavg()),
    }
    print(json.dumps(row))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
