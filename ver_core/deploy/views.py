"""Sets of camera views: which frames of several cameras belong to one observation.

``ViewSet`` keeps the newest message of every camera (an image, or its routed tokens) and hands
out a *set* once the primary camera (the first) has a frame that was not used yet and every
other camera has one within ``tolerance_s`` of it: the same rule training applies to bags
(``ver_core.data.dataset``, ``VIEW_TOLERANCE_S``). A set's stamp is its oldest frame's stamp, so
the staleness budget counts from the oldest view.

``status(now)`` names what keeps a set from forming: ``missing_view:<camera>`` (nothing received
yet) or ``stale_view:<camera>`` (newest frame older than the budget). The policy node publishes
it, and the safety gate holds with that reason rather than acting on fewer views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["VIEW_TOLERANCE_S", "ViewSet", "Views"]

VIEW_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class Views:
    """One observation: ``stamp`` (oldest view, s), ``stamps`` and ``items`` per camera in order."""

    stamp: float
    stamps: tuple[float, ...]
    items: tuple[Any, ...]


class ViewSet:
    def __init__(
        self, cameras: Sequence[str], budget_s: float, tolerance_s: float = VIEW_TOLERANCE_S
    ) -> None:
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be distinct names, got {list(cameras)}")
        if tolerance_s < 0 or budget_s <= 0:
            raise ValueError(
                f"need tolerance_s >= 0 and budget_s > 0, got {tolerance_s}, {budget_s}"
            )
        self.cameras = list(cameras)
        self.budget_s = float(budget_s)
        self.tolerance_s = float(tolerance_s)
        self._latest: dict[str, tuple[float, Any]] = {}
        self._used: float | None = None  # stamp of the primary frame of the last set handed out

    def reset(self) -> None:
        self._latest.clear()
        self._used = None

    def add(self, camera: str, stamp: float, item: Any) -> Views | None:
        """Store ``camera``'s newest message (older or equal stamps are ignored); return a new
        complete set if this message completes one."""
        if camera not in self.cameras:
            raise ValueError(f"unknown camera {camera!r}; this set has {self.cameras}")
        old = self._latest.get(camera)
        if old is None or stamp > old[0]:
            self._latest[camera] = (float(stamp), item)
        return self.take()

    def take(self) -> Views | None:
        """The next complete set not handed out yet, or None."""
        primary = self._latest.get(self.cameras[0])
        if primary is None or (self._used is not None and primary[0] <= self._used):
            return None
        picked = []
        for cam in self.cameras:
            entry = self._latest.get(cam)
            if entry is None or abs(entry[0] - primary[0]) > self.tolerance_s:
                return None
            picked.append(entry)
        self._used = primary[0]
        stamps = tuple(s for s, _ in picked)
        return Views(min(stamps), stamps, tuple(item for _, item in picked))

    def status(self, now: float) -> str | None:
        """None while every camera is fresh, else the first problem (see module docstring)."""
        for cam in self.cameras:
            entry = self._latest.get(cam)
            if entry is None:
                return f"missing_view:{cam}"
            if now - entry[0] > self.budget_s:
                return f"stale_view:{cam}"
        return None
