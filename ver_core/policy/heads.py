"""Action heads: (image feature (B, F), normalized state (B, S)) -> normalized chunk (B, H, A).

Both heads expose ``loss(cond, actions)`` for training and ``sample(cond, generator)`` for
inference; ``cond`` is the concatenation of the neck feature and the normalized state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor, nn


def _mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 3) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.GELU()]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


class MLPHead(nn.Module):
    """Regresses the whole chunk at once (L1 loss on normalized actions)."""

    def __init__(self, cond_dim: int, hidden: int, chunk_len: int, action_dim: int) -> None:
        super().__init__()
        self.chunk_len, self.action_dim = chunk_len, action_dim
        self.net = _mlp(cond_dim, hidden, chunk_len * action_dim)

    def forward(self, cond: Tensor) -> Tensor:
        return self.net(cond).view(-1, self.chunk_len, self.action_dim)  # (B, H, A)

    def loss(self, cond: Tensor, actions: Tensor) -> Tensor:
        return F.l1_loss(self(cond), actions)

    def sample(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self(cond)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of diffusion timesteps t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([args.sin(), args.cos()], dim=-1)


class DiffusionHead(nn.Module):
    """An MLP denoiser; DDPM noise schedule for training, DDIM with few steps for sampling.

    ``prediction`` is the denoiser's target: ``sample`` (the clean chunk; the default: a small MLP
    denoiser fits it in a few hundred CPU steps) or ``epsilon`` (the noise, as Diffusion Policy).
    """

    def __init__(
        self,
        cond_dim: int,
        hidden: int,
        chunk_len: int,
        action_dim: int,
        train_steps: int = 100,
        infer_steps: int = 10,
        prediction: str = "sample",
    ) -> None:
        super().__init__()
        self.chunk_len, self.action_dim, self.infer_steps = chunk_len, action_dim, infer_steps
        self.t_dim = 64
        flat = chunk_len * action_dim
        self.net = _mlp(flat + cond_dim + self.t_dim, hidden, flat, layers=4)
        kw = dict(
            num_train_timesteps=train_steps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type=prediction,
            clip_sample=True,
            clip_sample_range=1.0,
        )
        self.train_scheduler = DDPMScheduler(**kw)
        self.infer_scheduler = DDIMScheduler(**kw)

    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """noisy (B, H, A), t (B,), cond (B, C) -> denoiser output (B, H, A): noise or clean chunk."""
        x = torch.cat([noisy.flatten(1), cond, timestep_embedding(t, self.t_dim)], dim=-1)
        return self.net(x).view_as(noisy)

    def loss(self, cond: Tensor, actions: Tensor) -> Tensor:
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (len(actions),))
        noisy = self.train_scheduler.add_noise(actions, noise, t.to(actions.device))
        target = actions if self.train_scheduler.config.prediction_type == "sample" else noise
        return F.mse_loss(self.predict_noise(noisy, t.to(actions.device), cond), target)

    def sample(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """DDIM (eta 0) from Gaussian noise; a seeded generator makes it deterministic."""
        shape = (cond.shape[0], self.chunk_len, self.action_dim)
        x = torch.randn(shape, generator=generator, device=cond.device, dtype=cond.dtype)
        sched = self.infer_scheduler
        sched.set_timesteps(self.infer_steps, device=cond.device)
        for t in sched.timesteps:
            eps = self.predict_noise(x, t.expand(shape[0]), cond)
            x = sched.step(eps, t, x).prev_sample
        return x


def build_head(
    kind: str, cond_dim: int, hidden: int, chunk_len: int, action_dim: int, **diffusion
) -> nn.Module:
    if kind == "mlp":
        return MLPHead(cond_dim, hidden, chunk_len, action_dim)
    if kind == "diffusion":
        return DiffusionHead(cond_dim, hidden, chunk_len, action_dim, **diffusion)
    raise ValueError(f"unknown head {kind!r}")
