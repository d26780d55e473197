"""Time-stamped action chunks and their sampling at an arbitrary time.

A chunk is what the policy predicts from one observation: H actions (joint targets + gripper),
point i meant to be reached ``offsets[i]`` seconds after the observation time ``stamp``.
Scheduling against the observation time (not the time the chunk arrives) is what keeps a
slow policy from replaying actions that are already in the past.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ActionChunk", "uniform_offsets"]


def uniform_offsets(horizon: int, rate_hz: float) -> np.ndarray:
    """(H,) offsets i / rate_hz, the INTERFACES.md time grid of an action chunk."""
    if horizon < 1:
        raise ValueError(f"chunk horizon must be >= 1, got {horizon}")
    if rate_hz <= 0:
        raise ValueError(f"control rate must be > 0, got {rate_hz}")
    return np.arange(horizon, dtype=np.float64) / float(rate_hz)


@dataclass(frozen=True)
class ActionChunk:
    """H actions scheduled against an observation time.

    stamp: observation (image) time in seconds (the clock of the ROS graph).
    offsets: (H,) seconds after ``stamp``, strictly increasing, >= 0.
    actions: (H, A) float64 (A = 7 joints + 1 gripper for the Franka policy).
    """

    stamp: float
    offsets: np.ndarray
    actions: np.ndarray

    def __post_init__(self) -> None:
        off = np.asarray(self.offsets, dtype=np.float64).reshape(-1)
        act = np.asarray(self.actions, dtype=np.float64)
        if act.ndim != 2:
            raise ValueError(f"chunk actions must be (H, A), got shape {act.shape}")
        if act.shape[0] != off.shape[0] or off.shape[0] == 0:
            raise ValueError(f"chunk has {act.shape[0]} actions but {off.shape[0]} time offsets")
        if not np.all(np.isfinite(off)) or np.any(off < 0) or np.any(np.diff(off) <= 0):
            raise ValueError("chunk time offsets must be finite, >= 0 and strictly increasing")
        object.__setattr__(self, "offsets", off)
        object.__setattr__(self, "actions", act)
        object.__setattr__(self, "stamp", float(self.stamp))

    @property
    def horizon(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def start_time(self) -> float:
        return self.stamp + float(self.offsets[0])

    @property
    def end_time(self) -> float:
        return self.stamp + float(self.offsets[-1])

    @property
    def times(self) -> np.ndarray:
        """(H,) absolute times of the points."""
        return self.stamp + self.offsets

    def is_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.actions)))

    def covers(self, t: float) -> bool:
        return self.start_time <= t <= self.end_time

    def sample(self, t: float | np.ndarray) -> np.ndarray:
        """Linear interpolation at absolute time(s) t, held at the ends.

        t scalar -> (A,); t (T,) -> (T, A).
        """
        times = self.times
        t_arr = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if self.horizon == 1:
            out = np.repeat(self.actions, t_arr.shape[0], axis=0)
        else:
            # per action dimension: np.interp holds the end values outside [start, end]
            out = np.stack(
                [np.interp(t_arr, times, self.actions[:, j]) for j in range(self.actions.shape[1])],
                axis=1,
            )  # (T, A)
        return out[0] if np.ndim(t) == 0 else out
