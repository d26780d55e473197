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
ACTION_MODES = ("delta", "absolute", "keypose")


def action_targets(actions, states, mode: str, arm_dims: int = 7, keyposes=None):
    """What the head learns to predict, in raw units, from action chunks (N, H, A) and states (N, S).

    ``absolute``: the chunks as they are. ``delta``: arm joint targets as offsets from the arm
    joints measured with the image. ``keypose`` (a keypose policy): arm joint targets as offsets
    from the keypose (N, arm_dims) the head acts on, so the head's output at the grasp is "zero
    offset" wherever the keypose lies, not an absolute pose interpolated between demonstrations.
    The gripper width stays absolute (open/close is a decision, not a motion). Works on numpy
    arrays and torch tensors alike.
    """
    if _check_mode(mode) == "absolute":
        return actions
    return actions - _arm_offset(actions, _anchor(states, mode, keyposes), arm_dims)


def actions_from_targets(targets, states, mode: str, arm_dims: int = 7, keyposes=None):
    """Inverse of ``action_targets``: predicted targets (N, H, A) + states (N, S) (+ keyposes
    (N, arm_dims) in ``keypose`` mode) -> raw chunks."""
    if _check_mode(mode) == "absolute":
        return targets
    return targets + _arm_offset(targets, _anchor(states, mode, keyposes), arm_dims)


def _anchor(states, mode: str, keyposes):
    if mode == "delta":
        return states
    if keyposes is None:
        raise ValueError("action mode keypose needs the keyposes the actions are relative to")
    return keyposes


def _check_mode(mode: str) -> str:
    if mode not in ACTION_MODES:
        raise ValueError(f"unknown action mode {mode!r}: use one of {ACTION_MODES}")
    return mode


def _arm_offset(like, states, arm_dims: int):
    """(N, H, A) zeros with the measured arm joints (N, 1, arm_dims) in the arm dims."""
    offset = torch.zeros_like(like) if isinstance(like, Tensor) else np.zeros_like(like)
    offset[..., :arm_dims] = states[:, None, :arm_dims]
    return offset


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

    @classmethod
    def for_task(
        cls,
        states: np.ndarray,
        actions: np.ndarray,
        action_mode: str,
        gripper_max_width: float,
        keyposes: np.ndarray | None = None,
    ) -> NormStats:
        """Statistics of what a task policy's head predicts (``action_targets``; ``keyposes``
        (N, 7) in keypose mode), gripper range widened to the hand's full opening."""
        targets = action_targets(actions, states, action_mode, keyposes=keyposes)
        return cls.from_data(states, targets, gripper_range=(0.0, gripper_max_width))

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


class ActionNormalization:
    """Mixin for policies holding ``config.action_mode`` and ``action_min``/``action_max`` tensors:
    raw action chunks <-> the head's [-1, 1] targets."""

    def normalize_actions(
        self, actions: Tensor, state: Tensor, keypose: Tensor | None = None
    ) -> Tensor:
        """Raw chunks (B, H, A) + raw state (B, S) (+ the keypose (B, 7) acted on, in keypose
        mode) -> head targets in [-1, 1] (``action_mode``)."""
        kp = None if keypose is None else keypose.to(actions.dtype)
        targets = action_targets(
            actions, state.to(actions.dtype), self.config.action_mode, keyposes=kp
        )
        return (targets - self.action_min) / (self.action_max - self.action_min) * 2 - 1

    def unnormalize_actions(
        self, normalized: Tensor, state: Tensor, keypose: Tensor | None = None
    ) -> Tensor:
        """Head output in [-1, 1] (B, H, A) + raw state (B, S) (+ keypose (B, 7) in keypose
        mode) -> raw chunks (rad, m)."""
        targets = (normalized + 1) / 2 * (self.action_max - self.action_min) + self.action_min
        kp = None if keypose is None else keypose.to(targets.dtype)
        return actions_from_targets(
            targets, state.to(targets.dtype), self.config.action_mode, keyposes=kp
        )
