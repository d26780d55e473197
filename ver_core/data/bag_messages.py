"""Messages of a real rig's bag -> numbers: arm commands, joint states, gripper action goals.

- Arm commands: ``trajectory_msgs/JointTrajectory`` (joints by name, points at their offsets) or
  ``std_msgs/Float64MultiArray`` (the config's joint order).
- Joint states: read by the project's one joint-state rule (``ver_core.robot.read_joint_state``:
  joints by name in any order, extra joints ignored, gripper width = sum of the finger joints).
  Rigs often publish the arm and the hand as separate ``JointState`` messages (the franka_ros2
  gripper node publishes its finger joints on its own), so each message updates the latest known
  position of the joints it names, and a state is read from those once every arm joint and a
  finger have been seen.
- Gripper action goals: franka_ros2 drives the hand through the franka_gripper action servers
  (``move``, ``grasp``, ``homing``; ``gripper_action`` for MoveIt). rosbag2 records an action's
  goals on ``<action>/_action/send_goal/_service_event`` (service introspection with contents).
  An accepted goal is a gripper width command from the time it was first seen: ``move`` and
  ``grasp`` their ``width``, ``homing`` the open width, ``gripper_action`` twice its
  ``command.position`` (the franka_gripper server commands that width).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ver_core.robot import JointStateError, read_joint_state

ARM_TYPES = ("trajectory_msgs/msg/JointTrajectory", "std_msgs/msg/Float64MultiArray")
GOAL_EVENT_TYPES = {
    "franka_msgs/action/Move_SendGoal_Event": "move",
    "franka_msgs/action/Grasp_SendGoal_Event": "grasp",
    "franka_msgs/action/Homing_SendGoal_Event": "homing",
    "control_msgs/action/GripperCommand_SendGoal_Event": "gripper_action",
}
_REQUEST_EVENTS = (0, 1)  # service_msgs/ServiceEventInfo REQUEST_SENT, REQUEST_RECEIVED


class MessageError(ValueError):
    """A message that cannot be used; ``str(e)`` says why."""


def arm_points(msg, msgtype: str, t: int, joints: Sequence[str]) -> list[tuple[int, np.ndarray]]:
    """One arm command received at t -> [(time ns, targets (7,))]. A trajectory is commanded when
    it arrives: its first point is the target from t on (its time_from_start is how long the
    controller takes to get there); later points follow at their offsets from the first."""
    if msgtype == "std_msgs/msg/Float64MultiArray":
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(joints),):
            raise MessageError(
                f"arm command has {data.size} values, config has {len(joints)} joints"
            )
        return [(t, data)]
    names = list(msg.joint_names)
    missing = [j for j in joints if j not in names]
    if missing:
        raise MessageError(
            f"arm command joint names {names} lack {missing} (config joint_names {list(joints)})"
        )
    order = [names.index(j) for j in joints]
    tfs = [
        int(p.time_from_start.sec) * 1_000_000_000 + int(p.time_from_start.nanosec)
        for p in msg.points
    ]
    out = []
    for p, dt in zip(msg.points, tfs, strict=True):
        pos = np.asarray(p.positions, dtype=np.float64)
        if pos.shape != (len(names),):
            raise MessageError(f"trajectory point has {pos.size} positions for {len(names)} joints")
        out.append((t + dt - tfs[0], pos[order]))
    return out


def settle_arm_commands(received: list[tuple[int, list]]) -> tuple[np.ndarray, np.ndarray]:
    """Arm commands in receive order [(t, points)] -> times (Na,), targets (Na, 7). A new command
    replaces the points of earlier ones still pending at its arrival."""
    arm: list[tuple[int, np.ndarray]] = []
    for t, points in sorted(received, key=lambda r: r[0]):
        while arm and arm[-1][0] >= t:
            arm.pop()
        arm += points
    if not arm:
        return np.zeros(0, np.int64), np.zeros((0, 7))
    return np.asarray([a[0] for a in arm], np.int64), np.stack([a[1] for a in arm])


class JointStateMerger:
    """Latest position of every joint named so far; a state (8,) once the arm is complete."""

    def __init__(self, joints: Sequence[str], fingers: Sequence[str]) -> None:
        self.joints, self.fingers = list(joints), list(fingers)
        self.latest: dict[str, float] = {}
        self.names_seen: set[str] = set()

    def update(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray | None:
        """Take one JointState; return the state (7 joints + gripper width) it completes, or None
        while an arm joint or every finger is still unknown. Raises JointStateError for a
        malformed message (length mismatch, a name twice, a non-finite arm value)."""
        read_joint_state(names, positions, (), ())  # the shared checks on this message alone
        self.names_seen.update(names)
        self.latest.update(
            zip(names, np.asarray(positions, dtype=np.float64).tolist(), strict=True)
        )
        if any(j not in self.latest for j in self.joints):
            return None
        reading = read_joint_state(
            list(self.latest), list(self.latest.values()), self.joints, self.fingers
        )
        if reading.gripper is None:
            return None
        return np.append(reading.q, reading.gripper)

    def why_no_state(self) -> str:
        missing = [j for j in self.joints if j not in self.names_seen]
        if missing:
            return f"joint states never name arm joints {missing} (names seen: {sorted(self.names_seen)})"
        return (
            f"joint states never name a finger joint of {self.fingers} (names seen: "
            f"{sorted(self.names_seen)}): no gripper width"
        )


class GripperGoals:
    """Accepted gripper action goals -> gripper width commands."""

    def __init__(self, open_width: float) -> None:
        self.open_width = open_width
        self.first_seen: dict[bytes, tuple[int, float, str]] = {}  # goal id -> (t, width, topic)
        self.request_of: dict[tuple[bytes, int], bytes] = {}  # (client, seq) -> goal id
        self.rejected: set[bytes] = set()
        self.events = 0

    def add(self, topic: str, msgtype: str, t: int, msg) -> None:
        kind = GOAL_EVENT_TYPES[msgtype]
        self.events += 1
        key = (bytes(np.asarray(msg.info.client_gid, np.uint8)), int(msg.info.sequence_number))
        if int(msg.info.event_type) in _REQUEST_EVENTS:
            for req in msg.request:
                goal_id = bytes(np.asarray(req.goal_id.uuid, np.uint8))
                self.request_of[key] = goal_id
                if goal_id not in self.first_seen or t < self.first_seen[goal_id][0]:
                    self.first_seen[goal_id] = (t, self._width(kind, req.goal), topic)
        else:
            for resp in msg.response:
                if not resp.accepted and key in self.request_of:
                    self.rejected.add(self.request_of[key])

    def _width(self, kind: str, goal) -> float:
        if kind == "homing":
            return self.open_width
        if kind == "gripper_action":
            return 2.0 * float(goal.command.position)
        return float(goal.width)

    def commands(self) -> tuple[np.ndarray, np.ndarray]:
        """(times (Ng,), widths (Ng,)) of the accepted goals, sorted by time."""
        kept = sorted(v[:2] for k, v in self.first_seen.items() if k not in self.rejected)
        return np.asarray([k[0] for k in kept], np.int64), np.asarray([k[1] for k in kept])

    def why_none(self, topics: list[str]) -> str:
        if self.events and not self.first_seen:
            return (
                f"gripper action goal events on {topics} carry no goal contents (the bag was "
                "recorded with metadata-only service introspection)"
            )
        return f"every gripper action goal on {topics} was rejected"


def is_goal_topic(topic: str, msgtype: str) -> bool:
    return msgtype in GOAL_EVENT_TYPES and topic.endswith("/_action/send_goal/_service_event")


__all__ = [
    "ARM_TYPES",
    "GOAL_EVENT_TYPES",
    "GripperGoals",
    "JointStateError",
    "JointStateMerger",
    "MessageError",
    "arm_points",
    "is_goal_topic",
    "settle_arm_commands",
]
