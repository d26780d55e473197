"""The grasp interlock: the arm waits while the fingers close (pure, no rclpy).

A grasp is two motions in order: the fingers close on the object, then the arm lifts it. The
demonstrations keep that order (the expert holds the arm for ``close_time`` after its close
command, and its fingers meet the cube within 0.2-0.3 s of it). A learned policy does not: its
chunks put the lift a fixed number of steps after the close, and on the robot the close arrives
later than in the demos (the gripper vote, the gate's gripper rate limit, the hand's own lag), so
the arm can rise while the fingers are still on their way. The fingers then meet the cube low on
their tips, or not at all: in-process on make demo's checkpoint, cubes lifted 15-16 cm hung
6.0-6.3 cm below the TCP, pinched by the fingertips (RESULTS.md session 27).

``GraspInterlock.update`` runs every gate tick with the width the chunk asks for (the target),
the width the gate sends (the target, rate limited) and the width the hand measures, and
answers whether the arm must stay where it is:

- the hand is *closing* while the target is more than ``margin_m`` below the measured width. A
  close starts the wait;
- the wait ends when the fingers have stopped against something: the measured width moved less
  than ``still_m`` over the last ``settle_s`` (at least ``settle_s`` after the close began) while
  the sent width is more than ``margin_m`` below it (fingers that merely follow the rate-limited
  command are still on their way). It also ends when the fingers reach the target (a close on
  nothing: the hand is no longer closing), and after ``max_s`` at most (a hand that never
  reports moving cannot hold the arm forever);
- after that the interlock stays released until the hand opens again (the target back within
  ``margin_m`` of the measured width, or above it): a hand that holds the cube keeps a target
  below its width for the whole lift, and a retry's new close waits again.

While the interlock holds, the gate sends its reference pose (the previous command, or on leaving
a hold the measured pose): inside the limits and without a jump by construction, so the gate's
guarantees are untouched. The gripper command is never held.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["GraspInterlock", "GraspInterlockConfig"]


@dataclass(frozen=True)
class GraspInterlockConfig:
    """``max_s`` 0 turns the interlock off. Times in s, widths in m."""

    max_s: float = 1.0
    settle_s: float = 0.15
    still_m: float = 0.001
    margin_m: float = 0.005

    def __post_init__(self) -> None:
        for name in ("max_s", "settle_s", "still_m", "margin_m"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"grasp interlock {name} must be finite and >= 0, got {value}")
        if self.max_s > 0 and not (self.settle_s > 0 and self.margin_m > 0):
            raise ValueError("grasp interlock settle_s and margin_m must be > 0 when it is on")


class GraspInterlock:
    """Whether the arm must wait for the fingers (see the module docstring)."""

    IDLE, WAITING, DONE = "idle", "waiting", "done"

    def __init__(self, config: GraspInterlockConfig | None = None) -> None:
        self.config = config or GraspInterlockConfig()
        self.reset()

    def reset(self) -> None:
        self.state = self.IDLE
        self._since = 0.0
        self._widths: deque[tuple[float, float]] = deque()

    def update(self, now: float, target: float, commanded: float, measured: float | None) -> bool:
        """True while the arm must hold: a close began and the fingers have not stopped yet.
        ``target``: the gripper width the chunk asks for; ``commanded``: the width the gate
        sends this tick; ``measured``: the latest measured width (None or non-finite: unknown,
        never a reason to hold)."""
        cfg = self.config
        values = (now, target, commanded, measured if measured is not None else np.nan)
        if cfg.max_s <= 0 or not np.all(np.isfinite(values)):
            self.reset()
            return False
        closing = target < measured - cfg.margin_m
        if not closing:
            self.reset()  # open, or the fingers are where they were told: a new close waits
            return False
        if self.state == self.DONE:
            return False
        if self.state == self.IDLE:
            self.state, self._since = self.WAITING, float(now)
            self._widths.clear()
        if self._widths and now < self._widths[-1][0]:
            self._widths.clear()  # the clock went back: judge the fingers from here on
        self._widths.append((float(now), float(measured)))
        while len(self._widths) > 1 and self._widths[1][0] <= now - cfg.settle_s:
            self._widths.popleft()  # keep one reading at or before the window's start
        elapsed = now - self._since
        window = [w for t, w in self._widths]
        settled = (
            elapsed >= cfg.settle_s
            and now - self._widths[0][0] >= cfg.settle_s
            and max(window) - min(window) < cfg.still_m
            and commanded < measured - cfg.margin_m
        )
        if settled or elapsed >= cfg.max_s or not elapsed >= 0:
            self.state = self.DONE
            return False
        return True
