"""Where an episode's action comes from, and whether its clock can be trusted (pure numpy).

Action sources (``--action-source``):
  - ``command``: the recorded arm commands (what the robot was told), as the recorder writes them.
  - ``next-state``: the measured joint positions one control period later. Demonstrations by
    kinesthetic teaching or a leader arm have no arm command topic; the follower's next measured
    position is then the target (the LeRobot convention for teleoperated data).
  - ``auto``: ``command`` when every episode has arm commands, else ``next-state`` for all (one
    definition of the action across a dataset), logged with the episodes that lack commands.
Gripper sources (``--gripper-source``):
  - ``command``: the gripper command topic or, where an episode has none, the franka_gripper
    action goals it recorded.
  - ``finger-width``: the measured width (sum of the finger joints) one control period later.
    franka_ros2 drives the hand through action servers, so many bags have neither.
  - ``auto``: ``command`` when every episode has one of them, else ``finger-width`` for all.

A derived target is a stream like a command stream: the measured value at s is the target from
s - lead on, so "the latest target at or before t" is the measurement at or before t + lead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ACTION_SOURCES = ("auto", "command", "next-state")
GRIPPER_SOURCES = ("auto", "command", "finger-width")
# A camera or joint-state stream silent this long is a recording gap or a jump of the recorder's
# clock; header stamps moving this far against the receive times are a publisher's clock reset.
# Generous, so that a recorder stalled for a second or two on a loaded machine (late messages
# delivered in a burst) does not count.
MAX_GAP_S = 5.0
MAX_CLOCK_JUMP_S = 5.0


@dataclass(frozen=True)
class SourceChoice:
    """The resolved sources (never ``auto``) and, for the log, why."""

    action: str
    gripper: str
    note: str = ""


def resolve_sources(
    action: str,
    gripper: str,
    has_arm: Sequence[bool],
    has_gripper: Sequence[bool],
    names: Sequence[str],
) -> SourceChoice:
    """Resolve ``auto`` over a dataset's episodes (``has_arm[i]``: episode ``names[i]`` has arm
    commands; ``has_gripper[i]``: gripper commands or action goals)."""
    if action not in ACTION_SOURCES:
        raise ValueError(f"unknown action source {action!r}: use one of {ACTION_SOURCES}")
    if gripper not in GRIPPER_SOURCES:
        raise ValueError(f"unknown gripper source {gripper!r}: use one of {GRIPPER_SOURCES}")
    notes = []
    if action == "auto":
        lacking = [n for n, h in zip(names, has_arm, strict=True) if not h]
        action = "next-state" if lacking else "command"
        notes.append(
            f"action source: next-state (auto: {len(lacking)} of {len(names)} episodes have no "
            f"arm command: {_few(lacking)})"
            if lacking
            else "action source: command (auto: every episode has arm commands)"
        )
    if gripper == "auto":
        lacking = [n for n, h in zip(names, has_gripper, strict=True) if not h]
        gripper = "finger-width" if lacking else "command"
        notes.append(
            f"gripper source: finger-width, the measured finger width one control period later "
            f"(auto: {len(lacking)} of {len(names)} episodes have no gripper command topic or "
            f"gripper action goals: {_few(lacking)})"
            if lacking
            else "gripper source: command (auto: every episode has gripper commands)"
        )
    return SourceChoice(action, gripper, "; ".join(notes))


def _few(names: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def derived_targets(
    state_times: np.ndarray, values: np.ndarray, lead_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Measured values (Ns, ...) at state_times -> a target stream: (times - lead, values)."""
    return np.asarray(state_times, np.int64) - int(lead_ns), np.asarray(values)


def find_gap(times: np.ndarray, max_gap_s: float = MAX_GAP_S) -> tuple[int, int] | None:
    """(start ns, length ns) of the first silence longer than ``max_gap_s`` in sorted times."""
    t = np.asarray(times, np.int64)
    if len(t) < 2:
        return None
    gaps = np.diff(t)
    i = int(np.argmax(gaps > max_gap_s * 1e9)) if np.any(gaps > max_gap_s * 1e9) else -1
    return None if i < 0 else (int(t[i]), int(gaps[i]))


def find_clock_jump(
    receive_times: np.ndarray, stamps: np.ndarray, max_jump_s: float = MAX_CLOCK_JUMP_S
) -> tuple[int, int] | None:
    """(receive time ns, jump ns of the stamps against the receive clock; negative: back) where
    header stamps move against receive times by more than
    ``max_jump_s`` (a publisher or recorder clock that was reset or stepped); zero stamps (not
    set) are ignored. Arrays in receive order."""
    t = np.asarray(receive_times, np.int64)
    s = np.asarray(stamps, np.int64)
    keep = s != 0
    t, s = t[keep], s[keep]
    if len(t) < 2:
        return None
    offset = t - s  # transport delay + the difference of the two clocks: constant in a clean bag
    jumps = np.abs(np.diff(offset))
    bad = np.flatnonzero(jumps > max_jump_s * 1e9)
    return None if len(bad) == 0 else (int(t[bad[0] + 1]), -int(np.diff(offset)[bad[0]]))
