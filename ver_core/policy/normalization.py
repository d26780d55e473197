"""Normalization statistics of states and actions, computed from the demos (saved as stats.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MIN_STD = 0.02  # rad / m: dims that never moved in the demos must not blow up at run time
MIN_RANGE = 0.02  # rad / m: a joint seen still in the demos may still move a little at run time


@dataclass
class NormStats:
    """State: mean/std per dim (S,). Action: min/max per dim (A,), mapped to [-1, 1]."""

    state_mean: list[float]
    state_std: list[float]
    action_min: list[float]
    action_max: list[float]

    def __post_init__(self) -> None:
        if len(self.state_mean) != len(self.state_std):
            raise ValueError("state_mean and state_std differ in length")
        if len(self.action_min) != len(self.action_max):
            raise ValueError("action_min and action_max differ in length")
        vals = [*self.state_mean, *self.state_std, *self.action_min, *self.action_max]
        if not np.all(np.isfinite(vals)):
            raise ValueError("normalization statistics contain NaN or inf")

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> NormStats:
        return cls([0.0] * state_dim, [1.0] * state_dim, [-1.0] * action_dim, [1.0] * action_dim)

    @classmethod
    def from_data(
        cls,
        states: np.ndarray,
        actions: np.ndarray,
        gripper_range: tuple[float, float] | None = None,
    ) -> NormStats:
        """states (N, S), actions (N, H, A) or (N, A) in raw units.

        ``gripper_range`` (m) widens the last action dim (gripper width) to the hand's full
        opening, so demos that never open or close fully still normalize run-time commands sanely.
        """
        states = np.asarray(states, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])
        if len(states) == 0 or len(actions) == 0:
            raise ValueError("cannot compute normalization statistics from no samples")
        std = np.maximum(states.std(axis=0), MIN_STD)
        lo, hi = actions.min(axis=0), actions.max(axis=0)
        if gripper_range is not None:
            lo[-1], hi[-1] = min(lo[-1], gripper_range[0]), max(hi[-1], gripper_range[1])
        mid, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, MIN_RANGE / 2)
        return cls(
            states.mean(axis=0).tolist(), std.tolist(), (mid - half).tolist(), (mid + half).tolist()
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"normalization statistics {path} are missing")
        return cls(**json.loads(path.read_text()))

    def tensors(self) -> dict[str, Tensor]:
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in self.__dict__.items()}
