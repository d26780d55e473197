"""Stale-frame policy: process the newest frame or nothing, never a queue of old ones."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FreshnessGate"]


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
