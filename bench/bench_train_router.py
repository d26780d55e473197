"""Router-training cost on this machine (CPU by default): bag decoding, demo cache, BVT feature
extraction, and train-step time per head at the real ver_tiny shape (224 input, 12 blocks).

Writes bench/results/train_router.json. Synthetic rosbag2 episodes (ver_core.data.synthetic,
10 Hz commands, 15 Hz camera) stand in for sim demos; the total for 50 demos is extrapolated
from the measured per-frame and per-step times and labelled as such.

    .venv/bin/python bench/bench_train_router.py --episodes 10 --seconds 8 --steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ver_core.data import TopicConfig, load_demos
from ver_core.data.synthetic import write_synthetic_episode
from ver_core.policy import TaskConfig, TaskPolicy
from ver_core.train import compute_bvt_tokens

RESULTS = Path(__file__).resolve().parent / "results" / "train_router.json"


def step_times(policy: TaskPolicy, tokens, data, steps: int, batch: int, step_arg) -> list[float]:
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-4)
    n = len(data)
    out = []
    for i in range(steps + 2):
        idx = torch.randint(0, n, (batch,))
        t0 = time.perf_counter()
        loss = policy.loss(
            torch.from_numpy(tokens[idx.numpy()].astype("float32")),
            torch.from_numpy(data.states[idx.numpy()]),
            torch.from_numpy(data.actions[idx.numpy()]),
            step=step_arg,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:  # warm-up
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=40, help="timed train steps per setting")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--train-steps", type=int, default=1000, help="steps of the extrapolated full run"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res: dict = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": args.threads,
        "load_avg_at_start": os.getloadavg()[0],
        "episodes": args.episodes,
        "seconds_per_episode": args.seconds,
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demos"
        t0 = time.perf_counter()
        for i in range(args.episodes):
            write_synthetic_episode(
                root / f"episode_{i:03d}", seed=i, seconds=args.seconds, image_size=(640, 480)
            )
        res["write_bags_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        data = load_demos(root, TopicConfig(), 16, 10.0, 224, cache_dir=Path(tmp) / "cache")
        res["decode_align_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        load_demos(root, TopicConfig(), 16, 10.0, 224, cache_dir=Path(tmp) / "cache")
        res["cache_hit_load_s"] = round(time.perf_counter() - t0, 3)
        res["frames"] = len(data)
        policy = TaskPolicy.build(TaskConfig())
        t0 = time.perf_counter()
        tokens = compute_bvt_tokens(policy.model, data.images, batch_size=32, progress=False)
        res["bvt_features_s"] = round(time.perf_counter() - t0, 2)
        res["bvt_ms_per_frame"] = round(1000 * res["bvt_features_s"] / len(data), 1)
        res["router_percent_of_model"] = round(
            policy.parameter_summary()["router_percent_of_model"], 4
        )
        for head in ("mlp", "diffusion"):
            torch.manual_seed(0)
            pol = TaskPolicy.build(TaskConfig(head=head))
            for label, step_arg in (("k6", 0), ("k2", None)):
                ts = step_times(pol, tokens, data, args.steps, args.batch_size, step_arg)
                res[f"step_s_{head}_{label}"] = round(statistics.median(ts), 3)
    frames_50 = res["frames"] / args.episodes * 50
    mean_step = statistics.mean(res[f"step_s_mlp_{k}"] for k in ("k6", "k2"))
    res["extrapolated_50_demos"] = {
        "frames": int(frames_50),
        "bvt_features_min": round(frames_50 * res["bvt_ms_per_frame"] / 60000, 1),
        f"train_{args.train_steps}_steps_mlp_min": round(args.train_steps * mean_step / 60, 1),
        "note": "extrapolated from the per-frame / per-step medians measured above",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
