"""Time alignment of image, joint-state and command streams (pure numpy, no bag access).

All times are int64 nanoseconds on one clock (the bag's receive time). For each image time t:
  - state  = the latest joint state at or before t (frames before the first state are dropped);
  - action = for i < H, the commanded targets at t + i / control_rate: the latest arm command and
    the latest gripper command at or before that time, so the last command is held once the
    command stream ends. Actions are what was commanded, never what was measured. Frames before
    the first arm command are dropped; before the first gripper command the first one is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AlignedSamples:
    """image_index (M,) into the episode's images; states (M, S); actions (M, H, A)."""

    image_index: np.ndarray
    states: np.ndarray
    actions: np.ndarray

    def __len__(self) -> int:
        return len(self.image_index)


def latest_at_or_before(times: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of the latest ``times`` entry <= each query (-1 where none). times must be sorted."""
    return np.searchsorted(times, query, side="right") - 1


def match_views(primary_times: np.ndarray, view_times: np.ndarray, tolerance_ns: int) -> np.ndarray:
    """For each primary frame time (M,), the index of the ``view_times`` frame nearest to it, or
    -1 where none lies within ``tolerance_ns``: a set of views is the frames of one moment, as the
    policy node assembles them (``ver_core.deploy.views.ViewSet``). view_times must be sorted."""
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


def select_frames(image_times: np.ndarray, min_interval_ns: int) -> np.ndarray:
    """Indices of frames at least ``min_interval_ns`` apart (greedy from the first frame)."""
    keep, last = [], None
    for i, t in enumerate(image_times):
        if last is None or t - last >= min_interval_ns:
            keep.append(i)
            last = t
    return np.asarray(keep, dtype=np.int64)


def align_episode(
    image_times: np.ndarray,
    state_times: np.ndarray,
    states: np.ndarray,
    arm_times: np.ndarray,
    arm_targets: np.ndarray,
    gripper_times: np.ndarray,
    gripper_targets: np.ndarray,
    chunk_len: int,
    control_rate_hz: float,
    min_interval_ns: int = 0,
) -> AlignedSamples:
    """Streams (sorted by time) -> aligned samples.

    Args:
        image_times (M,), state_times (Ns,) with states (Ns, S), arm_times (Na,) with arm_targets
        (Na, J), gripper_times (Ng,) with gripper_targets (Ng,).
    Returns:
        AlignedSamples with actions (M', H, J + 1) = arm targets + gripper width.
    """
    for name, t in (
        ("image", image_times),
        ("state", state_times),
        ("arm", arm_times),
        ("gripper", gripper_times),
    ):
        if np.any(np.diff(t) < 0):
            raise ValueError(f"{name} times are not sorted")
    if len(arm_times) == 0:
        raise ValueError("no arm commands to align")
    if len(gripper_times) == 0:
        raise ValueError("no gripper commands to align")
    frames = (
        select_frames(np.asarray(image_times), min_interval_ns)
        if min_interval_ns > 0
        else np.arange(len(image_times))
    )
    t = np.asarray(image_times, dtype=np.int64)[frames]  # (M,)
    s_idx = latest_at_or_before(np.asarray(state_times), t)
    a_first = latest_at_or_before(np.asarray(arm_times), t)
    ok = (s_idx >= 0) & (a_first >= 0)
    frames, t, s_idx = frames[ok], t[ok], s_idx[ok]
    offsets = np.round(np.arange(chunk_len) * 1e9 / control_rate_hz).astype(np.int64)  # (H,)
    query = t[:, None] + offsets[None, :]  # (M, H)
    a_idx = latest_at_or_before(np.asarray(arm_times), query)  # (M, H), all >= 0 here
    g_idx = np.maximum(latest_at_or_before(np.asarray(gripper_times), query), 0)
    arm = np.asarray(arm_targets, dtype=np.float32)[a_idx]  # (M, H, J)
    grip = np.asarray(gripper_targets, dtype=np.float32)[g_idx][..., None]  # (M, H, 1)
    return AlignedSamples(
        image_index=frames,
        states=np.asarray(states, dtype=np.float32)[s_idx],
        actions=np.concatenate([arm, grip], axis=-1),
    )
