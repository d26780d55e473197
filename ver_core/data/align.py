"""Time alignment of an episode's streams on a fixed-rate grid (pure numpy, no bag access).

All times are int64 nanoseconds on one clock (the bag's receive time). An episode becomes
frames at a fixed rate, as a LeRobot dataset holds them:

  - the grid starts at the first frame of the primary camera that has a joint state and an arm
    target at or before it, and steps by exactly 1/fps (``grid_times``: integer nanoseconds,
    so the grid at a multiple of a rate contains the grid at that rate) up to the primary
    camera's last frame;
  - at each grid time t: every camera's frame nearest to t (within a tolerance, else none),
    the latest joint state at or before t, and the action = the latest arm target and the latest
    gripper target at or before t (before the first gripper target, the first one);
  - samples for training are grid frames at the control rate, and a sample's action chunk
    (H, 8) is the action of the sample and of the next H - 1 samples, the last one held past
    the episode's last sample (``chunk_actions``).

Training from bags (the grid at the control rate) and from a LeRobot dataset exported from
them (the grid at a multiple of it) therefore give the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

NS = 1_000_000_000


def latest_at_or_before(times: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of the latest ``times`` entry <= each query (-1 where none). times must be sorted."""
    return np.searchsorted(times, query, side="right") - 1


def match_views(primary_times: np.ndarray, view_times: np.ndarray, tolerance_ns: int) -> np.ndarray:
    """For each time (M,), the index of the ``view_times`` frame nearest to it, or -1 where none
    lies within ``tolerance_ns``: a set of views is the frames of one moment, as the policy node
    assembles them (``ver_core.deploy.views.ViewSet``). view_times must be sorted."""
    view_times = np.asarray(view_times, dtype=np.int64)
    t = np.asarray(primary_times, dtype=np.int64)
    if len(view_times) == 0:
        return np.full(len(t), -1, np.int64)
    right = np.clip(np.searchsorted(view_times, t, side="left"), 0, len(view_times) - 1)
    left = np.clip(right - 1, 0, len(view_times) - 1)
    pick = np.where(
        np.abs(view_times[left] - t) <= np.abs(view_times[right] - t), left, right
    )  # (M,)
    return np.where(np.abs(view_times[pick] - t) <= tolerance_ns, pick, -1)


def rate_fraction(rate: float | int | Fraction) -> Fraction:
    """A rate in Hz as an exact fraction (10.0 -> 10, 7.5 -> 15/2)."""
    frac = Fraction(str(rate)) if isinstance(rate, float) else Fraction(rate)
    if frac <= 0:
        raise ValueError(f"rate must be > 0 Hz, got {rate}")
    return frac.limit_denominator(1000)


def grid_times(start_ns: int, end_ns: int, fps: float | Fraction) -> np.ndarray:
    """start + round(k * 1e9 / fps) ns for k = 0, 1, ... while <= end (exact integer math)."""
    f = rate_fraction(fps)
    if end_ns < start_ns:
        return np.zeros(0, np.int64)
    count = (int(end_ns) - int(start_ns)) * f.numerator // (f.denominator * NS) + 1
    num, den = f.numerator, f.denominator
    return np.asarray(
        [int(start_ns) + (2 * k * NS * den + num) // (2 * num) for k in range(count)], np.int64
    )


@dataclass
class FrameTable:
    """An episode on a grid. times (K,) ns; view_index (K, V): frame of each camera nearest to
    the time (-1: none within the tolerance); states (K, 8); actions (K, 8) = arm + gripper
    targets at the time."""

    times: np.ndarray
    view_index: np.ndarray
    states: np.ndarray
    actions: np.ndarray

    def __len__(self) -> int:
        return len(self.times)


def frame_table(
    view_times: list[np.ndarray],
    state_times: np.ndarray,
    states: np.ndarray,
    arm_times: np.ndarray,
    arm_targets: np.ndarray,
    gripper_times: np.ndarray,
    gripper_targets: np.ndarray,
    fps: float | Fraction,
    tolerance_ns: int,
) -> FrameTable:
    """Streams (each sorted by time) -> the episode's frames at ``fps`` (see the module doc).
    An episode with no usable start gives an empty table."""
    for name, t in [("state", state_times), ("arm", arm_times), ("gripper", gripper_times)] + [
        (f"camera {v} image", t) for v, t in enumerate(view_times)
    ]:
        if np.any(np.diff(np.asarray(t)) < 0):
            raise ValueError(f"{name} times are not sorted")
    if len(arm_times) == 0:
        raise ValueError("no arm targets to align")
    if len(gripper_times) == 0:
        raise ValueError("no gripper targets to align")
    primary = np.asarray(view_times[0], np.int64)
    ready = (latest_at_or_before(np.asarray(state_times), primary) >= 0) & (
        latest_at_or_before(np.asarray(arm_times), primary) >= 0
    )
    n_views = len(view_times)
    if not np.any(ready):
        return FrameTable(
            np.zeros(0, np.int64),
            np.zeros((0, n_views), np.int64),
            np.zeros((0, 8)),
            np.zeros((0, 8)),
        )
    t = grid_times(int(primary[np.argmax(ready)]), int(primary[-1]), fps)  # (K,)
    s_idx = latest_at_or_before(np.asarray(state_times), t)
    a_idx = latest_at_or_before(np.asarray(arm_times), t)
    g_idx = np.maximum(latest_at_or_before(np.asarray(gripper_times), t), 0)
    arm = np.asarray(arm_targets, dtype=np.float32)[a_idx]  # (K, 7)
    grip = np.asarray(gripper_targets, dtype=np.float32)[g_idx][:, None]  # (K, 1)
    views = np.stack([match_views(t, vt, tolerance_ns) for vt in view_times], axis=1)  # (K, V)
    return FrameTable(
        times=t,
        view_index=views,
        states=np.asarray(states, dtype=np.float32)[s_idx],
        actions=np.concatenate([arm, grip], axis=1),
    )


def sample_frames(num_frames: int, fps: float | Fraction, rate: float | Fraction) -> np.ndarray:
    """Indices of the frames (at ``fps``) that are samples at the control ``rate``: the frame
    nearest to j / rate for j = 0, 1, ... (every (fps/rate)-th frame when that is an integer)."""
    f, r = rate_fraction(fps), rate_fraction(rate)
    if num_frames <= 0:
        return np.zeros(0, np.int64)
    last = (num_frames - 1) * r.numerator * f.denominator // (r.denominator * f.numerator)
    ratio = f / r
    return np.asarray(
        [
            (2 * j * ratio.numerator + ratio.denominator) // (2 * ratio.denominator)
            for j in range(last + 1)
        ],
        np.int64,
    )


def chunk_actions(frame_actions: np.ndarray, samples: np.ndarray, chunk_len: int) -> np.ndarray:
    """(K, A) frame actions, (M,) sample frames -> (M, H, A): sample j's chunk holds the actions
    of samples j .. j + H - 1, the last sample's action held past the end."""
    m = len(samples)
    idx = np.minimum(np.arange(m)[:, None] + np.arange(chunk_len)[None, :], m - 1)  # (M, H)
    return np.asarray(frame_actions)[np.asarray(samples)[idx]]
