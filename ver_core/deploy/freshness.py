"""Staleness, in one place: the budget every stage applies, and the newest-frame-only filter.

``StalenessBudget`` is the one rule of the command path: nothing acts on a camera frame older than
``observation_s`` or a joint state older than ``joint_state_s``. The encoder and policy drop
older inputs (``FreshnessGate``), the safety gate holds when the chunk's observation or the last
joint state exceeds it, so the arm stops at most ``observation_s`` after the last camera frame
whatever stage the frame got stuck in. The ROS nodes read it from the parameters
``observation_budget_s`` / ``joint_state_budget_s``, set once for all nodes (``/**``) in
config/franka_pick.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_BUDGET", "FreshnessGate", "StalenessBudget"]


@dataclass(frozen=True)
class StalenessBudget:
    """observation_s: camera frame age (s) beyond which nothing may act on it;
    joint_state_s: the same for the measured joint state."""

    observation_s: float = 0.25
    joint_state_s: float = 0.25

    def __post_init__(self) -> None:
        for name in ("observation_s", "joint_state_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 10.0):
                raise ValueError(f"staleness budget {name} must be in (0, 10] s, got {value}")


DEFAULT_BUDGET = StalenessBudget()


@dataclass
class FreshnessGate:
    """Accepts a frame only if it is recent and newer than the last accepted one.

    max_age_s: frames older than this (now - stamp) are dropped; <= 0 disables the age check.
    future_tolerance_s: stamps further than this in the future are dropped (clock mismatch).
    """

    max_age_s: float = 0.2
    future_tolerance_s: float = 0.5

    def __post_init__(self) -> None:
        if self.future_tolerance_s < 0:
            raise ValueError(f"future_tolerance_s must be >= 0, got {self.future_tolerance_s}")
        self._last: float | None = None
        self.accepted = 0
        self.dropped: dict[str, int] = {"too_old": 0, "out_of_order": 0, "future": 0}

    def check(self, stamp: float, now: float) -> str | None:
        """None if the frame should be processed, else the reason it is dropped."""
        if self.max_age_s > 0 and now - stamp > self.max_age_s:
            reason = "too_old"
        elif stamp - now > self.future_tolerance_s:
            reason = "future"
        elif self._last is not None and stamp <= self._last:
            reason = "out_of_order"
        else:
            self._last = stamp
            self.accepted += 1
            return None
        self.dropped[reason] += 1
        return reason
