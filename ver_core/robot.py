"""One description of the robot, and the one rule that turns a joint state into policy state.

Training (bag reader), the policy and safety nodes, the scripted expert and evaluation all read
``sensor_msgs/JointState`` through :func:`read_joint_state`, so a joint state means the same thing
on every path (the parity test in ``tests/unit/test_parity.py`` pins this):

- the 7 arm joints are looked up by name (any order, extra joints ignored);
- the gripper width is the sum of the finger joints (each finger moves half the opening); if
  only some fingers are reported, their mean times the finger count (the hand is symmetric); if
  none is reported, the width is unknown (``None``);
- a missing arm joint, names and positions of different lengths, a duplicate name, or a
  non-finite arm value raise :class:`JointStateError` naming the problem.

Policy state (8,) = 7 arm joint positions (rad) + gripper width (m).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ver_core.safety.limits import JointLimits, limits_for

__all__ = [
    "DEFAULT_FINGERS",
    "DEFAULT_JOINTS",
    "JointReading",
    "JointStateError",
    "RobotDescription",
    "camera_name",
    "camera_names",
    "policy_state",
    "read_joint_state",
]

DEFAULT_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
DEFAULT_FINGERS = ("fr3_finger_joint1", "fr3_finger_joint2")


def camera_name(topic: str) -> str:
    """The camera a topic belongs to, by realsense-ros naming: its first namespace
    (``/camera/camera/color/image_raw`` -> ``camera``, ``/wrist_camera/camera/color/image_raw``
    -> ``wrist_camera``; a bare ``/rgb`` -> ``rgb``)."""
    parts = [p for p in str(topic).split("/") if p]
    if not parts:
        raise ValueError(f"image topic {topic!r} names no camera")
    return parts[0]


def camera_names(topics: Sequence[str]) -> list[str]:
    """Camera names of several image topics; raises ValueError if two share a name."""
    names = [camera_name(t) for t in topics]
    if len(set(names)) != len(names):
        raise ValueError(
            f"image topics {list(topics)} give duplicate camera names {names}: put each camera in "
            "its own namespace (/<camera>/camera/color/image_raw)"
        )
    return names


class JointStateError(ValueError):
    """A joint state that cannot be read; ``str(e)`` says why."""


@dataclass(frozen=True)
class JointReading:
    """q: (7,) arm joint positions (rad), finite; gripper: width (m) or None when unknown."""

    q: np.ndarray
    gripper: float | None


def read_joint_state(
    names: Sequence[str],
    positions: Sequence[float],
    joint_names: Sequence[str] = DEFAULT_JOINTS,
    finger_names: Sequence[str] = DEFAULT_FINGERS,
) -> JointReading:
    """The arm joints (in ``joint_names`` order) and gripper width of one joint state."""
    names = list(names)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1)
    if pos.size != len(names):
        raise JointStateError(f"joint state has {len(names)} names but {pos.size} positions")
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in index:
            raise JointStateError(f"joint state names {n!r} twice")
        index[n] = i
    missing = [j for j in joint_names if j not in index]
    if missing:
        raise JointStateError(f"joint state lacks joints {missing} (has {names})")
    q = pos[[index[j] for j in joint_names]]
    if not np.all(np.isfinite(q)):
        raise JointStateError(f"joint state has non-finite arm positions {q.tolist()}")
    fingers = [pos[index[f]] for f in finger_names if f in index]
    fingers = [f for f in fingers if math.isfinite(f)]
    width = float(np.mean(fingers) * len(finger_names)) if fingers else None
    return JointReading(q, width)


def policy_state(reading: JointReading) -> np.ndarray:
    """(8,) float64 policy state; raises JointStateError when the gripper width is unknown."""
    if reading.gripper is None:
        raise JointStateError("joint state carries no finger joint: gripper width unknown")
    return np.append(reading.q, reading.gripper)


@dataclass(frozen=True)
class RobotDescription:
    """What every room needs to know about the arm: joint and finger names, gripper range and
    the joint limit table (``fr3`` or ``panda``/``fer``)."""

    robot_type: str = "fr3"
    joint_names: tuple[str, ...] = DEFAULT_JOINTS
    finger_names: tuple[str, ...] = DEFAULT_FINGERS
    gripper_max_width: float = 0.08
    limits: JointLimits = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        object.__setattr__(self, "finger_names", tuple(self.finger_names))
        if len(self.joint_names) != 7 or len(set(self.joint_names)) != 7:
            raise ValueError(f"joint_names must be 7 distinct arm joints, got {self.joint_names}")
        if not self.finger_names:
            raise ValueError("finger_names needs at least one finger joint")
        if not 0 < self.gripper_max_width <= 0.2:
            raise ValueError(
                f"gripper_max_width must be in (0, 0.2] m, got {self.gripper_max_width}"
            )
        object.__setattr__(self, "limits", limits_for(self.robot_type))

    def read(self, names: Sequence[str], positions: Sequence[float]) -> JointReading:
        return read_joint_state(names, positions, self.joint_names, self.finger_names)
