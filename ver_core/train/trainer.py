"""Router training: Robot Router (+ new experts) + neck + head over a frozen VER library.

The output directory is a task checkpoint (config.json, model.safetensors, stats.json, see
``ver_core.policy``) plus ``train_state.json`` / ``optimizer.safetensors`` (resume),
``metrics.json`` and ``plots/``. The checkpoint is rewritten every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ver_core.data import DemoData
from ver_core.policy import NormStats, TaskPolicy
from ver_core.policy.grasp_point import fit_yaw_nets, grasp_point_labels, sim_calibration
from ver_core.policy.keypose import delay_close_until_arrival, keypose_labels
from ver_core.train.augment import AugmentConfig, augmented_views, widen_held_width
from ver_core.train.features import cached_bvt_tokens

log = logging.getLogger(__name__)
STATE_FILE, OPT_FILE, METRICS_FILE = "train_state.json", "optimizer.safetensors", "metrics.json"


@dataclass
class TrainConfig:
    """steps: joint steps (router + neck + head through the library); head_steps: then neck + head
    alone on the routed tokens of the trained (now fixed) router, cached once: ~10x cheaper each;
    action_head_steps: then (keypose policies) the action head alone, on the demonstrated
    keypose and the state, no image: ~100x cheaper each again."""

    steps: int = 2000
    head_steps: int = 0
    action_head_steps: int = 0
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    val_fraction: float = 0.1
    val_every: int = 100
    checkpoint_every: int = 250
    seed: int = 0
    feature_batch: int = 32
    progress: bool = True
    plots: bool = True
    augment_views: int = 0  # cached augmented copies per frame (see ver_core.train.augment)
    augment_shift: int = 4
    augment_color: float = 0.2
    state_noise: float = 0.0  # std (rad) of noise on the joint angles fed to the policy
    # share of the samples holding something whose measured width the head sees widened up to a
    # corner grasp's (ver_core.train.augment.widen_held_width)
    held_width_aug: float = 0.0
    # m: the close labels wait until the measured TCP is at most this far above the commanded
    # one (ver_core.policy.keypose.delay_close_until_arrival; 0: as recorded)
    close_on_arrival: float = 0.0
    # train and validate on every n-th sample of each episode (1: all). The frozen-feature caches
    # (BVT tokens, then the routed tokens) are computed for those samples only, so n = 2 halves
    # their cost; labels (keyposes, grasp points) still come from the full episodes
    frame_stride: int = 1
    # steps of the grasp yaw nets' own fit after the heads (policies with grasp_yaw_net;
    # ver_core.policy.grasp_point.fit_yaw_nets, batch 64)
    yaw_net_steps: int = 2000

    @property
    def action_head_start(self) -> int:
        """The step the action-head phase starts at (after the joint and head phases)."""
        return self.steps + self.head_steps

    @property
    def augment(self) -> AugmentConfig:
        return AugmentConfig(self.augment_views, self.augment_shift, self.augment_color, self.seed)

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "val_every",
            "checkpoint_every",
            "feature_batch",
            "frame_stride",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("head_steps", "action_head_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.yaw_net_steps < 0:
            raise ValueError(f"yaw_net_steps must be >= 0, got {self.yaw_net_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.state_noise <= 0.5:
            raise ValueError(f"state_noise must be in [0, 0.5] rad, got {self.state_noise}")
        if not 0 <= self.close_on_arrival <= 0.1:
            raise ValueError(f"close_on_arrival must be in [0, 0.1] m, got {self.close_on_arrival}")
        if not 0 <= self.held_width_aug <= 1:
            raise ValueError(f"held_width_aug must be in [0, 1], got {self.held_width_aug}")
        _ = self.augment  # AugmentConfig validates the augmentation settings


def episode_positions(episode: np.ndarray) -> np.ndarray:
    """Each sample's index inside its episode (samples of an episode in time order)."""
    episode = np.asarray(episode)
    out = np.zeros(len(episode), np.int64)
    for e in np.unique(episode):
        idx = np.flatnonzero(episode == e)
        out[idx] = np.arange(len(idx))
    return out


def split_episodes(num_episodes: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Hold out the last episodes for validation (none when there is only one episode)."""
    n_val = (
        0 if num_episodes < 2 or val_fraction <= 0 else max(1, round(num_episodes * val_fraction))
    )
    ids = list(range(num_episodes))
    return ids[: num_episodes - n_val], ids[num_episodes - n_val :]


def _cosine(progress: float) -> float:
    """A phase's learning-rate factor: cosine from 1 down to 0.1 over progress 0 -> 1."""
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    start = cfg.action_head_start
    if step >= start and cfg.action_head_steps:  # action-head phase: its own cosine too
        return _cosine((step - start) / cfg.action_head_steps)
    if step >= cfg.steps:  # head phase: its own cosine from the full rate
        return _cosine((step - cfg.steps) / max(1, cfg.head_steps))
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return _cosine((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))


def _save_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, s in sd["state"].items() for k, v in s.items()}
    save_file(
        tensors or {"_empty": torch.zeros(1)},
        str(path) + ".tmp",
        metadata={"groups": json.dumps(sd["param_groups"])},
    )
    Path(str(path) + ".tmp").replace(path)


def _load_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        groups = json.loads(f.metadata()["groups"])
    state: dict[int, dict] = {}
    for key, value in load_file(str(path)).items():
        if key == "_empty":
            continue
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


class RouterTrainer:
    """Trains ``policy`` on ``data``; writes everything under ``out_dir``."""

    def __init__(
        self,
        policy: TaskPolicy,
        data: DemoData,
        out_dir: str | Path,
        config: TrainConfig,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.policy, self.data, self.cfg = policy, data, config
        if config.close_on_arrival > 0:
            from ver_core.eval.kinematics import TcpKinematics

            kin = TcpKinematics()
            actions, delayed = delay_close_until_arrival(
                data.actions, data.states, data.episode, kin.tcp, config.close_on_arrival
            )
            log.info("close labels delayed until the hand arrived: %d closes", delayed)
            self.data = data = dataclasses.replace(data, actions=actions)
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        train_eps, val_eps = split_episodes(len(data.episode_names), config.val_fraction)
        # by name, in train_state.json and metrics.json: which scenes the policy was shown
        self.val_episodes = [data.episode_names[i] for i in val_eps]
        kept = episode_positions(data.episode) % config.frame_stride == 0
        self.train_idx = np.flatnonzero(np.isin(data.episode, train_eps) & kept)
        self.val_idx = np.flatnonzero(np.isin(data.episode, val_eps) & kept)
        # the grasp yaw nets read every frame; the rest of the policy not the perception-only
        # ones (a hover sweep: the expert's command holds while the hand turns for the cameras,
        # and a policy taught by those frames hovers whenever its yaw is off: RESULTS.md
        # session 26)
        self.yaw_train_idx, self.yaw_val_idx = self.train_idx, self.val_idx
        look = data.perception_only
        if look is not None and look.any():
            self.train_idx = self.train_idx[~look[self.train_idx]]
            self.val_idx = self.val_idx[~look[self.val_idx]]
            log.info(
                "perception-only frames (%s): %d of %d training samples, for the grasp yaw "
                "nets only",
                policy.config.perception_only_topic,
                len(self.yaw_train_idx) - len(self.train_idx),
                len(self.yaw_train_idx),
            )
        if len(self.train_idx) == 0:
            raise ValueError("no training samples after holding out validation episodes")
        self.used = np.flatnonzero(kept)  # samples whose tokens are computed
        self.tokens = self._bvt_tokens(data.images, data.key or "nokey", cache_dir)
        # (N, C, 1+P, D) fp16, C camera views; zeros in the samples a frame stride leaves out
        self.bank = self._token_bank(cache_dir)  # ((1+A)N, C, 1+P, D): originals, then each
        # augmented copy
        tr = self.train_idx  # resume() replaces these with the saved statistics
        cfg = policy.config
        self.keyposes: np.ndarray | None = None  # (N, 7) demonstrated keyposes (keypose policy)
        self.grasp: tuple[np.ndarray, ...] | None = None  # grasp-point labels (class, offset, yaw)
        if cfg.keypose:
            keyposes, valid = keypose_labels(data.actions, data.episode, cfg.gripper_max_width)
            if not valid[self.train_idx].any():
                raise ValueError("a keypose policy needs demos that open or close the hand")
            # an episode that never opens or closes the hand has no keypose: its samples are
            # anchored at their own joints (action mode keypose), as if the keypose were reached
            keyposes[~valid] = data.states[~valid, : keyposes.shape[1]]
            self.keyposes = keyposes
            if cfg.grasp_point:
                self.grasp = self._grasp_labels(keyposes, valid)
        policy.set_stats(
            NormStats.for_task(
                data.states[tr],
                data.actions[tr],
                cfg.action_mode,
                cfg.gripper_max_width,
                None if self.keyposes is None else self.keyposes[tr],
            )
        )
        self.opt = torch.optim.AdamW(
            policy.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.step = 0
        self.history: dict[str, list] = {"train": [], "val": [], "top_k": []}
        self._routed: np.ndarray | None = None  # ((1+A)N, C, 1+P, D), the fixed router
        self.yaw_net_report: dict | None = None  # fit_yaw_nets' report (policies with yaw nets)

    def _grasp_labels(
        self, keyposes: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grasp-point labels (patch class (N, V), offset (N, V, 2), yaw (N, V, 2)) from the
        keyposes, the measured joints and the cameras' calibration (the simulator's where none is
        given); sets the policy's ``grasp_height`` (unless given) to the training grasps' median
        height."""
        cfg, model = self.policy.config, self.policy.model.config
        if not cfg.camera_calibration:
            cfg.camera_calibration = sim_calibration(cfg.cameras)
            log.info("grasp point: no camera_calibration given, using the simulator's cameras")
        n_joints = len(cfg.joint_names)
        cls, offset, yaw, points = grasp_point_labels(
            self.policy.rig,
            keyposes,
            valid,
            self.data.states[:, :n_joints],
            model.grid_size,
            cfg.grasp_yaw_order,
            cfg.grasp_yaw_frame,
        )
        labelled = self.train_idx[valid[self.train_idx]]
        if cfg.grasp_height is None:  # the plane detections are intersected with
            cfg.grasp_height = float(np.median(points[labelled, 2]))
        seen = (cls[labelled] >= 0) & (cls[labelled] < model.grid_size**2)
        log.info(
            "grasp point: plane z = %.3f m; the point is in view in %s of training frames",
            cfg.grasp_height,
            ", ".join(f"{c} {m:.0%}" for c, m in zip(cfg.cameras, seen.mean(0), strict=True)),
        )
        return cls, offset, yaw

    def _bvt_tokens(self, images: np.ndarray, key: str, cache_dir: str | Path | None) -> np.ndarray:
        """BVT tokens of the samples in ``self.used`` (all of them without a frame stride)."""
        stride = self.cfg.frame_stride
        if stride > 1:
            images, key = images[self.used], f"{key}_stride{stride}"
        part = cached_bvt_tokens(
            self.policy.model, images, key, cache_dir, self.cfg.feature_batch, self.cfg.progress
        )
        if stride == 1:
            return part
        tokens = np.zeros((len(self.data), *part.shape[1:]), part.dtype)  # untouched pages: free
        tokens[self.used] = part
        return tokens

    def _token_bank(self, cache_dir: str | Path | None) -> np.ndarray:
        aug, data = self.cfg.augment, self.data
        if aug.views == 0:
            return self.tokens
        banks = [self.tokens]
        for v in range(1, aug.views + 1):
            log.info("augmented view %d/%d (%s)", v, aug.views, aug.cache_tag(v))
            banks.append(
                self._bvt_tokens(
                    augmented_views(data.images, aug, v),
                    f"{data.key or 'nokey'}_{aug.cache_tag(v)}",
                    cache_dir,
                )
            )
        bank = np.concatenate(banks)
        self.tokens = bank[: len(data)]  # a view: the originals are not held twice
        return bank

    # ------------------------------------------------------------------ state
    def resume(self) -> bool:
        """Continue from ``out_dir``'s last checkpoint (weights, stats, optimizer, step)."""
        state_path = self.out / STATE_FILE
        if not state_path.is_file():
            return False
        saved = TaskPolicy.from_pretrained(self.out)
        self.policy.load_state_dict(saved.state_dict())
        self.policy.set_stats(saved.stats)
        state = json.loads(state_path.read_text())
        self.step, self.history = state["step"], state["history"]
        if self.step > self.cfg.action_head_start and self.cfg.action_head_steps:
            self.opt = self._action_head_optimizer()  # what the saved state belongs to
        _load_optimizer(self.out / OPT_FILE, self.opt)
        log.info("resumed from %s at step %d", self.out, self.step)
        return True

    def save(self) -> None:
        self.policy.save_pretrained(self.out)
        _save_optimizer(self.out / OPT_FILE, self.opt)
        state = {
            "step": self.step,
            "history": self.history,
            "train_config": asdict(self.cfg),
            "episodes": self.data.episode_names,
            "val_episodes": self.val_episodes,
            "skipped": self.data.skipped,
        }
        tmp = self.out / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.out / STATE_FILE)

    # ------------------------------------------------------------------ loop
    def _batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(self.tokens[idx].astype(np.float32)),
            torch.from_numpy(self.data.states[idx]),
            torch.from_numpy(self.data.actions[idx]),
        )

    def _rows(self, idx: np.ndarray, step: int | None) -> np.ndarray:
        """Rows of the token bank for samples ``idx``: a random view each in training steps."""
        views = self.cfg.augment_views
        if step is None or views == 0:
            return idx
        rng = np.random.default_rng([self.cfg.seed, step, 7])  # resumable, like the batch order
        return idx + len(self.data) * rng.integers(0, views + 1, len(idx))

    def _state(self, idx: np.ndarray, step: int | None) -> torch.Tensor:
        """States of ``idx``; in training steps with Gaussian noise on the 7 joint angles and
        holds shown wider (``held_width_aug``)."""
        states = self.data.states[idx]
        if step is not None and self.cfg.held_width_aug > 0:
            rng = np.random.default_rng([self.cfg.seed, step, 13])
            states = widen_held_width(
                states,
                self.data.actions[idx],
                rng,
                self.cfg.held_width_aug,
                self.policy.config.gripper_max_width,
            )
        state = torch.from_numpy(states)
        if step is None or self.cfg.state_noise == 0:
            return state
        rng = np.random.default_rng([self.cfg.seed, step, 11])
        noise = np.zeros(state.shape, np.float32)
        noise[:, :7] = rng.normal(0.0, self.cfg.state_noise, (len(idx), 7))
        return state + torch.from_numpy(noise)

    @property
    def head_phase(self) -> bool:
        return self.step >= self.cfg.steps

    def _action_head_optimizer(self) -> torch.optim.Optimizer:
        """The action-head phase's own AdamW, over every member's action head only (fused: one
        pass over its ~1M parameters per member, where the per-tensor loop took half a step)."""
        params = [p for m in self.policy.all_members() for p in m.head.parameters()]
        return torch.optim.AdamW(
            params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=True
        )

    @property
    def action_head_phase(self) -> bool:
        return self.step >= self.cfg.action_head_start and self.cfg.action_head_steps > 0

    @property
    def total_steps(self) -> int:
        return self.cfg.action_head_start + self.cfg.action_head_steps

    @torch.no_grad()
    def routed_tokens(self) -> np.ndarray:
        """Every used frame (all but those a frame stride leaves out) through the trained router
        as deployed (eval mode, K = k_min), once."""
        if self._routed is None:
            self.policy.eval()
            n, b = len(self.data), self.cfg.feature_batch
            views = len(self.bank) // n  # the originals, then each augmented copy
            rows = np.concatenate([self.used + k * n for k in range(views)])
            self._routed = np.zeros(self.bank.shape, np.float32)  # routing keeps (C, 1+P, D)
            for start in range(0, len(rows), b):
                idx = rows[start : start + b]
                bvt = torch.from_numpy(self.bank[idx].astype(np.float32))
                self._routed[idx] = self.policy.route(bvt).tokens.numpy()
            self.policy.train()
        return self._routed

    def _loss(self, idx: np.ndarray, step: int | None) -> torch.Tensor:
        """Training loss of samples ``idx``: through the router, or from routed tokens (head phase)."""
        rows, state = self._rows(idx, step), self._state(idx, step)
        actions = torch.from_numpy(self.data.actions[idx])
        keypose = None if self.keyposes is None else torch.from_numpy(self.keyposes[idx])
        if step is not None and self.action_head_phase:  # the heads alone; validation as before
            members = self.policy.all_members()
            losses = [self.policy.head_loss(state, actions, keypose, m) for m in members]
            return torch.stack(losses).mean()
        grasp = None
        if self.grasp is not None:
            grasp = tuple(torch.from_numpy(labels[idx]) for labels in self.grasp)
        if not self.head_phase:
            bvt = torch.from_numpy(self.bank[rows].astype(np.float32))
            return self.policy.loss(bvt, state, actions, step=step, keypose=keypose, grasp=grasp)
        routed = torch.from_numpy(self.routed_tokens()[rows])
        return self.policy.loss_from_tokens(routed, state, actions, keypose, grasp)

    @torch.no_grad()
    def validate(self) -> float | None:
        if len(self.val_idx) == 0:
            return None
        self.policy.eval()
        torch.manual_seed(1234)  # same diffusion noise each time: comparable values
        losses = []
        for start in range(0, len(self.val_idx), self.cfg.batch_size):
            idx = self.val_idx[start : start + self.cfg.batch_size]
            losses.append(self._loss(idx, None).item() * len(idx))
        self.policy.train()
        return float(sum(losses) / len(self.val_idx))

    def fit(self) -> dict:
        cfg, policy = self.cfg, self.policy
        policy.train()
        policy.model.eval()
        start_time = time.time()
        if cfg.action_head_steps and not policy.config.keypose:
            raise ValueError("action_head_steps train a keypose policy's head alone: add --keypose")
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train router",
            disable=not cfg.progress,
        )
        try:
            self._loop(bar)
        except KeyboardInterrupt:
            log.warning(
                "interrupted at step %d: saving a checkpoint (resume with --resume)", self.step
            )
            self.save()
            raise
        finally:
            bar.close()
        self.yaw_net_report = self.fit_yaw_nets()
        return self.finish(time.time() - start_time)

    def fit_yaw_nets(self) -> dict | None:
        """Fit the policy's grasp yaw nets (if it has them) on the routed tokens of the training
        frames, after the heads, and save the checkpoint with them (None: no yaw nets)."""
        nets = self.policy.yaw_nets if self.policy.config.grasp_point else None
        if nets is None or self.grasp is None:
            return None
        cls, _, yaw = self.grasp
        n = len(self.data)
        report = fit_yaw_nets(
            nets,
            self.routed_tokens()[:n],  # the originals (augmented copies follow them)
            cls,
            yaw,
            self.yaw_train_idx,
            self.yaw_val_idx,
            self.cfg.yaw_net_steps,
            seed=self.cfg.seed,
            progress=self.cfg.progress,
            order=self.policy.config.grasp_yaw_order,
        )
        for view, r in report.items():
            log.info("grasp yaw net %s: %s", view, r)
        self.save()
        return report

    def _loop(self, bar: tqdm) -> None:
        cfg, policy = self.cfg, self.policy
        total = self.total_steps
        while self.step < total:
            if self.step == cfg.steps and cfg.head_steps:
                bar.set_description("train head (router fixed)")
            if self.step == cfg.action_head_start and cfg.action_head_steps:
                bar.set_description("train action head (no images)")
                self.opt.zero_grad(set_to_none=True)  # no stale gradient in the clipped norm
                self.opt = self._action_head_optimizer()
            rng = np.random.default_rng(cfg.seed * 1_000_003 + self.step)  # resumable sampling
            idx = rng.choice(
                self.train_idx, size=min(cfg.batch_size, len(self.train_idx)), replace=False
            )
            torch.manual_seed(cfg.seed * 1_000_003 + self.step)
            for g in self.opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(self.step, cfg)
            loss = self._loss(idx, self.step)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), 1.0)
            self.opt.step()
            self.history["train"].append([self.step, loss.item()])
            self.history["top_k"].append([self.step, policy.router.top_k(self.step)])
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", k=policy.router.top_k(self.step - 1))
            boundary = self.step in (cfg.steps, cfg.action_head_start, total)
            # the action-head phase validates at its end only: a validation costs ~100 of its steps
            periodic = self.step % cfg.val_every == 0 and not self.action_head_phase
            if periodic or boundary:
                val = self.validate()
                if val is not None:
                    self.history["val"].append([self.step, val])
            if self.step % cfg.checkpoint_every == 0 or boundary:
                self.save()

    def finish(self, seconds: float) -> dict:
        from ver_core.train.plots import write_plots

        util = self.expert_utilization()
        metrics = {
            "steps": self.step,
            "train_seconds_this_run": round(seconds, 2),
            "final_train_loss": float(np.mean([v for _, v in self.history["train"][-20:]])),
            "final_val_loss": self.history["val"][-1][1] if self.history["val"] else None,
            "samples": {"train": int(len(self.train_idx)), "val": int(len(self.val_idx))},
            "episodes": len(self.data.episode_names),
            "val_episodes": self.val_episodes,
            "skipped": self.data.skipped,
            "parameters": self.policy.parameter_summary(),
            "expert_utilization": util,
            "grasp_yaw_nets": self.yaw_net_report,
        }
        (self.out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        if self.cfg.plots:
            write_plots(
                self.out / "plots",
                self.policy,
                self.history,
                util,
                self.data.images,
                self.tokens,
                self.val_idx if len(self.val_idx) else self.train_idx,
            )
        return metrics

    @torch.no_grad()
    def expert_utilization(self, max_frames: int = 256) -> list[list[float]]:
        """Fraction of patch-token assignments per expert, per MoE layer (deployed K).

        Empty for a dense student (no MoE layers)."""
        if not self.policy.model.config.moe_blocks:
            return []
        pool = self.val_idx if len(self.val_idx) else self.train_idx
        idx = pool[np.linspace(0, len(pool) - 1, min(max_frames, len(pool))).astype(int)]
        counts = None
        self.policy.eval()
        for start in range(0, len(idx), self.cfg.batch_size):
            out = self.policy.route(self._batch(idx[start : start + self.cfg.batch_size])[0])
            c = torch.stack(
                [
                    torch.bincount(
                        i[:, :, 1:].reshape(-1), minlength=self.policy.router.num_experts
                    )
                    for i in out.expert_index
                ]
            ).double()  # (layers, E), over every view
            counts = c if counts is None else counts + c
        return (counts / counts.sum(dim=1, keepdim=True)).tolist()
