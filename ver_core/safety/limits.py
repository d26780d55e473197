"""Joint limit tables for the Franka arms (Panda / FER and FR3), from the manufacturer data.

All arrays are (7,) in joint order 1..7: position limits in rad, velocity limits in rad/s.
Tables are built in; every value can be overridden (e.g. from a ROS parameter) with
``JointLimits.with_overrides``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FR3_LIMITS", "PANDA_LIMITS", "ROBOT_LIMITS", "JointLimits", "limits_for"]


@dataclass(frozen=True)
class JointLimits:
    """Position and velocity limits of one arm.

    lower, upper: (N,) rad; velocity: (N,) rad/s, all finite, lower < upper, velocity > 0.
    """

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray

    def __post_init__(self) -> None:
        lo = np.asarray(self.lower, dtype=np.float64).reshape(-1)
        hi = np.asarray(self.upper, dtype=np.float64).reshape(-1)
        vel = np.asarray(self.velocity, dtype=np.float64).reshape(-1)
        if not (lo.shape == hi.shape == vel.shape):
            raise ValueError(
                f"joint limit arrays differ in length: lower {lo.shape}, upper {hi.shape}, "
                f"velocity {vel.shape}"
            )
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(np.isfinite(vel))):
            raise ValueError("joint limits must be finite")
        if np.any(lo >= hi):
            bad = np.nonzero(lo >= hi)[0].tolist()
            raise ValueError(f"joint limits: lower >= upper for joint index {bad}")
        if np.any(vel <= 0):
            raise ValueError(f"joint velocity limits must be > 0, got {vel.tolist()}")
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)
        object.__setattr__(self, "velocity", vel)

    @property
    def num_joints(self) -> int:
        return int(self.lower.shape[0])

    def with_overrides(
        self,
        lower: Sequence[float] | None = None,
        upper: Sequence[float] | None = None,
        velocity: Sequence[float] | None = None,
    ) -> JointLimits:
        """A copy with any non-empty override replacing the table (each must have N values)."""

        def pick(name: str, table: np.ndarray, value: Sequence[float] | None) -> np.ndarray:
            if value is None or len(value) == 0:
                return table
            if len(value) != self.num_joints:
                raise ValueError(
                    f"override of {name} limits needs {self.num_joints} values, got {len(value)}"
                )
            return np.asarray(value, dtype=np.float64)

        return JointLimits(
            pick("lower", self.lower, lower),
            pick("upper", self.upper, upper),
            pick("velocity", self.velocity, velocity),
        )

    def shrunk(self, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """Position bounds (lower + margin, upper - margin); margin must leave a non-empty range."""
        if margin < 0:
            raise ValueError(f"joint limit margin must be >= 0, got {margin}")
        lo, hi = self.lower + margin, self.upper - margin
        if np.any(lo >= hi):
            raise ValueError(f"joint limit margin {margin} rad leaves an empty range")
        return lo, hi


PANDA_LIMITS = JointLimits(
    lower=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
    upper=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
    velocity=np.array([2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100]),
)

FR3_LIMITS = JointLimits(
    lower=np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]),
    upper=np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]),
    velocity=np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]),
)

ROBOT_LIMITS: dict[str, JointLimits] = {
    "panda": PANDA_LIMITS,
    "fer": PANDA_LIMITS,
    "fr3": FR3_LIMITS,
}


def limits_for(robot: str) -> JointLimits:
    """The built-in table for ``robot`` (``fr3``, ``panda`` or its new name ``fer``)."""
    try:
        return ROBOT_LIMITS[robot.lower()]
    except KeyError:
        raise ValueError(f"unknown robot type {robot!r}; known: {sorted(ROBOT_LIMITS)}") from None
