"""Joint command parsing and time-based following of JointTrajectory action chunks (pure).

``parse_arm_points`` validates a trajectory (names, lengths, finite values) before anything is
applied; ``TrajectoryFollower`` turns accepted commands into a position target at any time:

- a trajectory's point i is due at ``t0 + time_from_start_i`` with ``t0`` = header stamp, or the
  receipt time when the stamp is zero; the follower interpolates linearly from the target it
  had at receipt time through the points, then holds the last one;
- points already in the past at receipt are dropped; if all are, the last one becomes the
  target at once (a single-point command with time_from_start 0);
- a new trajectory replaces the rest of the old one (as ROS' JointTrajectoryController does);
- ``set_now`` (forward position command) replaces everything by an immediate target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["TrajectoryFollower", "parse_arm_points", "validate_positions"]


def validate_positions(values: Sequence[float], n: int, what: str = "command") -> np.ndarray:
    """(n,) finite float64 array, or ValueError naming the problem."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size != n:
        raise ValueError(f"{what} has {arr.size} values, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains non-finite values {arr.tolist()}")
    return arr


def parse_arm_points(
    joint_names: Sequence[str],
    points: Sequence[tuple[float, Sequence[float]]],
    arm_joints: Sequence[str],
    extra_joints: Sequence[str] = ("gripper",),
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Validate a trajectory given as names + [(time_from_start_s, positions)].

    Returns times (P,), arm positions (P, 7) in ``arm_joints`` order, and a dict of optional
    extra columns (e.g. ``gripper`` (P,)). Raises ValueError for unknown / missing / duplicate
    joint names, wrong point lengths, non-finite values, no points or decreasing times.
    """
    names = list(joint_names)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate joint names {names}")
    unknown = [n for n in names if n not in arm_joints and n not in extra_joints]
    missing = [n for n in arm_joints if n not in names]
    if unknown or missing:
        raise ValueError(
            f"joint names {names}: unknown {unknown}, missing {missing} (expected {list(arm_joints)})"
        )
    if not points:
        raise ValueError("trajectory has no points")
    times = np.array([float(t) for t, _ in points])
    table = np.stack(
        [validate_positions(p, len(names), f"point {i}") for i, (_, p) in enumerate(points)]
    )  # (P, J)
    if not np.all(np.isfinite(times)) or np.any(times < 0) or np.any(np.diff(times) < 0):
        raise ValueError(
            f"time_from_start must be finite, >= 0 and non-decreasing, got {times.tolist()}"
        )
    order = [names.index(n) for n in arm_joints]
    extras = {n: table[:, names.index(n)] for n in extra_joints if n in names}
    return times, table[:, order], extras


class TrajectoryFollower:
    """Position target of ``dof`` joints as a function of time (seconds, any consistent clock)."""

    def __init__(self, initial: np.ndarray) -> None:
        self._knots_t = np.array([0.0])
        self._knots_q = np.asarray(initial, dtype=np.float64)[None, :].copy()  # (K, dof)

    @property
    def dof(self) -> int:
        return self._knots_q.shape[1]

    def target(self, t: float) -> np.ndarray:
        """(dof,) interpolated target at time t."""
        kt, kq = self._knots_t, self._knots_q
        if t <= kt[0]:
            return kq[0].copy()
        if t >= kt[-1]:
            return kq[-1].copy()
        i = int(np.searchsorted(kt, t, side="right")) - 1
        a = (t - kt[i]) / max(kt[i + 1] - kt[i], 1e-12)
        return (1 - a) * kq[i] + a * kq[i + 1]

    def set_now(self, q: np.ndarray, t: float) -> None:
        """Immediate target from time t on."""
        self._knots_t = np.array([t])
        self._knots_q = np.asarray(q, dtype=np.float64)[None, :].copy()

    def set_trajectory(
        self, t_receipt: float, t0: float, times: np.ndarray, positions: np.ndarray
    ) -> int:
        """Follow points (P, dof) due at t0 + times from now on. Returns how many points were kept."""
        due = t0 + np.asarray(times, dtype=np.float64)
        keep = due > t_receipt
        start = self.target(t_receipt)
        if not np.any(keep):
            self.set_now(positions[-1], t_receipt)
            return 0
        self._knots_t = np.concatenate([[t_receipt], due[keep]])
        self._knots_q = np.vstack([start[None, :], positions[keep]])
        return int(keep.sum())

    @property
    def end_time(self) -> float:
        return float(self._knots_t[-1])
