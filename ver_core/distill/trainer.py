"""Distillation trainer: shards -> VER library checkpoint. One process or torchrun + DDP.

The global batch is split across ranks; the sample order is a pure function of (seed, step), so
1 and N processes see the same global batches and ``--resume`` continues the exact sequence.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from ver_core.distill.heatmap import expert_utilization, plot_utilization
from ver_core.distill.losses import (
    COSINE_WEIGHT,
    MI_WEIGHT,
    SMOOTH_L1_WEIGHT,
    distillation_objective,
)
from ver_core.distill.shards import ShardDataset
from ver_core.distill.state import (
    load_rng,
    load_trainer_state,
    optimizer_from_files,
    save_rng,
    save_trainer_state,
)
from ver_core.distill.translators import build_translators
from ver_core.model import (
    RouterSpec,
    VisionExpertTransformer,
    build_model,
    load_library,
    save_library,
)
from ver_core.model.preprocess import preprocess_images

METRICS_FILE = "metrics.jsonl"
HEATMAP_FILE = "expert_utilization.png"


@dataclass
class DistillConfig:
    shards: str
    out: str
    model: str = "ver_tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 64  # global batch, split over ranks
    lr: float | None = None  # None: Theia's 2e-3 * batch / 512
    warmup_frac: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    mi_weight: float = MI_WEIGHT
    cosine_weight: float = COSINE_WEIGHT
    l1_weight: float = SMOOTH_L1_WEIGHT
    top_k: int | None = None
    router_noise: bool = True  # noisy top-k gating while training (False: deterministic routers)
    seed: int = 0
    save_every: int = 0  # 0: only at the end
    heatmap_images: int = 32
    resume: bool = False
    overwrite: bool = False  # allow a fresh run over an existing checkpoint in ``out``
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.save_every < 0:
            raise ValueError(f"save_every must be >= 0, got {self.save_every}")
        self.betas = tuple(self.betas)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-3 * self.batch_size / 512

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DistillStudent(nn.Module):
    """The VER model plus one noisy router set and one feature translator per teacher.

    forward(images (B,3,S,S), targets key -> (B,T,C)) -> loss dict. The BVT runs once; the expert
    library runs once per teacher with that teacher's router ``teacher:<key>``.
    """

    def __init__(
        self, model: VisionExpertTransformer, teachers: list[dict], top_k: int | None = None
    ) -> None:
        super().__init__()
        self.model, self.top_k = model, top_k
        self.keys = [t["key"] for t in teachers]
        for key in self.keys:
            if f"teacher:{key}" not in model.routers:
                model.add_router(f"teacher:{key}", RouterSpec(kind="noisy"))
        if "default" in model.routers:
            model.routers["default"].requires_grad_(False)  # filled from the first teacher at save
        self.translators = build_translators(
            model.config.embed_dim, model.config.grid_size, teachers
        )
        self.weights = dict(
            mi_weight=MI_WEIGHT, cosine_weight=COSINE_WEIGHT, l1_weight=SMOOTH_L1_WEIGHT
        )

    def forward(self, images: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = self.model.forward_bvt(images)  # (B, N, D)
        preds, layer_probs = {}, [[] for _ in range(self.model.config.moe_blocks)]
        for key in self.keys:
            out = self.model.forward_library(tokens, router=f"teacher:{key}", top_k=self.top_k)
            # patch tokens (B, P, D) -> teacher tokens (B, T, C)
            preds[key] = self.translators[key](out.tokens[:, 1:])
            for layer, info in enumerate(out.routing):
                layer_probs[layer].append(info.probs)  # (B, N, E)
        return distillation_objective(preds, targets, layer_probs, **self.weights)

    def sync_default_router(self) -> None:
        """Copy the first teacher's gates into the model's ``default`` router (noise-free)."""
        if "default" not in self.model.routers or self.model.routers["default"].spec.kind not in (
            "linear",
            "noisy",
        ):
            return
        src = self.model.routers[f"teacher:{self.keys[0]}"]
        with torch.no_grad():
            for dst_r, src_r in zip(self.model.routers["default"].layers, src.layers, strict=True):
                dst_r.gate.weight.copy_(src_r.gate.weight)


def batch_indices(step: int, n: int, batch: int, seed: int) -> list[int]:
    """The global batch of ``step``: consecutive slices of per-epoch permutations of range(n)."""
    out, cache = [], {}
    for pos in range(step * batch, (step + 1) * batch):
        epoch = pos // n
        if epoch not in cache:
            cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(cache[epoch][pos % n]))
    return out


def warmup_constant(step: int, total: int, warmup_frac: float) -> float:
    """LR factor: linear warm-up over ``warmup_frac`` of the steps, then constant 1."""
    warm = max(1, math.ceil(warmup_frac * total)) if warmup_frac > 0 else 0
    return min(1.0, (step + 1) / warm) if warm else 1.0


def _init_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _build_student(cfg: DistillConfig, data: ShardDataset) -> tuple[DistillStudent, int, dict]:
    """A fresh student, or (with resume) the one in ``cfg.out``; returns (student, start step, state)."""
    out = Path(cfg.out)
    if cfg.resume and (out / "trainer_state").exists():
        model = load_library(out)
        translators, opt_tensors, opt_meta, meta = load_trainer_state(out)
        if meta["teachers"] != [t["key"] for t in data.teachers]:
            raise ValueError(
                f"cannot resume: checkpoint teachers {meta['teachers']} differ from the shards'"
            )
        student = DistillStudent(model, data.teachers, cfg.top_k)
        student.translators.load_state_dict(translators)
        return student, int(meta["step"]), {"opt_tensors": opt_tensors, "opt_meta": opt_meta}
    if cfg.resume:
        raise FileNotFoundError(f"--resume: {out} holds no earlier run (no trainer_state/)")
    if (out / "config.json").exists() and not cfg.overwrite:
        raise FileExistsError(
            f"{out} already holds a checkpoint: pass --resume to continue it or --overwrite to replace it"
        )
    model = build_model(cfg.model, **cfg.model_overrides)
    return DistillStudent(model, data.teachers, cfg.top_k), 0, {}


def _save(
    cfg: DistillConfig, student: DistillStudent, opt, names, step: int, rank: int, world: int, data
) -> None:
    _barrier(world)
    if rank == 0:
        student.sync_default_router()
        extra = {
            "distill": {
                "teachers": data.teachers,
                "steps": step,
                "shards": str(Path(cfg.shards).resolve()),
                "default_router": f"copy of teacher:{student.keys[0]} (teacher routers kept as teacher:<key>)",
            }
        }
        save_library(cfg.out, student.model, extra=extra)
        meta = {
            "step": step,
            "world_size": world,
            "teachers": student.keys,
            "config": cfg.to_dict(),
        }
        save_trainer_state(Path(cfg.out), student.translators, opt, names, meta)
    _barrier(world)
    save_rng(Path(cfg.out), rank)
    _barrier(world)


def train(cfg: DistillConfig) -> dict[str, Any]:
    """Run distillation; returns a summary (steps, first/last loss, paths)."""
    rank, world, device = _init_distributed()
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {world} processes")
    out = Path(cfg.out)
    data = ShardDataset(cfg.shards, image_size=_student_image_size(cfg))
    torch.manual_seed(cfg.seed + 1000 * rank)
    student, start, resume_state = _build_student(cfg, data)
    student.weights = dict(
        mi_weight=cfg.mi_weight, cosine_weight=cfg.cosine_weight, l1_weight=cfg.l1_weight
    )
    if student.model.config.img_size != data.image_size:
        raise ValueError(
            f"model takes {student.model.config.img_size}px images, shards hold {data.image_size}px"
        )
    student.to(device).train()
    if not cfg.router_noise:
        for key in student.keys:  # eval mode: no noise; the unused noise scales stay frozen
            routers = student.model.routers[f"teacher:{key}"].eval()
            for r in routers.layers:
                r.noise.requires_grad_(False)
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    opt = torch.optim.AdamW(
        [p for _, p in named], lr=cfg.learning_rate, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    if resume_state:
        optimizer_from_files(opt, names, resume_state["opt_tensors"], resume_state["opt_meta"])
        load_rng(out, rank)
    wrapped = nn.parallel.DistributedDataParallel(student) if world > 1 else student
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "distill_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        _trim_metrics(out / METRICS_FILE, start)
    per_rank = cfg.batch_size // world
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc="distill",
        disable=rank != 0 or not cfg.progress,
    )
    history = []
    t0 = time.perf_counter()
    for step in bar:
        idx = batch_indices(step, len(data), cfg.batch_size, cfg.seed)[
            rank * per_rank : (rank + 1) * per_rank
        ]
        images, feats = data.batch(idx)
        x = preprocess_images(images, size=data.image_size).to(device)
        targets = {k: v.to(device) for k, v in feats.items()}
        for g in opt.param_groups:
            g["lr"] = cfg.learning_rate * warmup_constant(step, cfg.steps, cfg.warmup_frac)
        losses = wrapped(x, targets)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        keys = sorted(losses)
        values = torch.stack([losses[k].detach().float() for k in keys])
        if world > 1:
            dist.all_reduce(values)
            values /= world
        record = {
            "step": step + 1,
            "lr": opt.param_groups[0]["lr"],
            **dict(zip(keys, values.tolist(), strict=True)),
        }
        record["elapsed_s"] = time.perf_counter() - t0
        history.append(record["loss"])
        if rank == 0:
            with open(out / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            _save(cfg, student, opt, names, step + 1, rank, world, data)
    _save(cfg, student, opt, names, cfg.steps, rank, world, data)
    summary = {
        "steps": cfg.steps,
        "start_step": start,
        "world_size": world,
        "losses": history,
        "out": str(out),
        "elapsed_s": time.perf_counter() - t0,
    }
    if rank == 0 and student.model.config.moe_blocks:  # a dense student has no experts to map
        summary["heatmap"] = str(_write_heatmap(cfg, student, data, device))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _student_image_size(cfg: DistillConfig) -> int:
    from ver_core.model import model_config

    if cfg.resume and (Path(cfg.out) / "config.json").is_file():
        return int(json.loads((Path(cfg.out) / "config.json").read_text())["model"]["img_size"])
    return model_config(cfg.model, **cfg.model_overrides).img_size


def _trim_metrics(path: Path, start: int) -> None:
    """Drop metric lines past the step we resume from (they belong to the lost tail of a run)."""
    if not path.exists():
        return
    if start == 0:
        path.unlink()
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
    path.write_text("".join(ln + "\n" for ln in keep))


def _write_heatmap(cfg: DistillConfig, student: DistillStudent, data: ShardDataset, device) -> Path:
    n = min(cfg.heatmap_images, len(data))
    images, _ = data.batch(list(range(n)))
    x = preprocess_images(images, size=data.image_size).to(device)
    util = expert_utilization(student.model, x, student.keys, cfg.top_k)
    out = Path(cfg.out)
    (out / "expert_utilization.json").write_text(
        json.dumps(
            {
                "teachers": student.keys,
                "first_block": student.model.config.first_moe_block,
                "utilization": util.tolist(),
            },
            indent=2,
        )
    )
    return plot_utilization(
        util, student.keys, out / HEATMAP_FILE, student.model.config.first_moe_block
    )
