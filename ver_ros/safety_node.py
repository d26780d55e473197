"""safety_node: the only node that commands the robot (thin adapter over ver_core.safety).

Subscribes: /ver/action_chunk (JointTrajectory, reliable), /joint_states (sensor QoS),
/ver/e_stop (std_msgs/Bool, latched), /ver/policy_status (std_msgs/String, latched: ``ok`` or
``hold: <reason>`` from the policy, e.g. a missing camera view). Publishes at ``control_rate_hz``: the arm command
(JointTrajectory to a JointTrajectoryController, or Float64MultiArray to a forward position
controller, by ``controller_type``), the gripper width on /gripper/command, and the reason it
holds on /ver/safety_status (latched, on change only; also logged once per change).
Every input is validated (``ver_core.robot.read_joint_state``, ``msg_to_chunk``); a bad message is
dropped with a rate-limited warning and never stops the node.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ver_core.deploy import DEFAULT_BUDGET, LatencyStats
from ver_core.robot import JointStateError, read_joint_state
from ver_core.safety import SafetyConfig, SafetyGate, limits_for
from ver_ros.params import declare_config, param
from ver_ros.policy_node import msg_to_chunk
from ver_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

__all__ = ["CONTROLLER_TOPICS", "SafetyNode", "SafetyParams", "main"]

FR3_JOINTS = [f"fr3_joint{i}" for i in range(1, 8)]
CONTROLLER_TOPICS = {
    "trajectory": "/fr3_arm_controller/joint_trajectory",
    "forward": "/forward_position_controller/commands",
}


@dataclass
class SafetyParams:
    robot_type: str = param("fr3", "joint limit table: fr3 or panda (fer)")
    joint_names: list[str] = param(FR3_JOINTS, "the 7 arm joints, in command order")
    finger_joints: list[str] = param(
        ["fr3_finger_joint1", "fr3_finger_joint2"],
        "finger joints in /joint_states; measured gripper width = their sum (m)",
    )
    controller_type: str = param(
        "trajectory", "trajectory (JointTrajectory) or forward (Float64MultiArray)"
    )
    command_topic: str = param("", "arm command topic; empty = the default for controller_type")
    gripper_topic: str = param("/gripper/command", "gripper width command (std_msgs/Float64, m)")
    chunk_topic: str = param("/ver/action_chunk", "action chunks from the policy")
    joint_states_topic: str = param("/joint_states", "measured joint states")
    estop_topic: str = param("/ver/e_stop", "latched std_msgs/Bool, true = stop")
    status_topic: str = param("/ver/safety_status", "why the gate holds, or ok / ramping")
    policy_status_topic: str = param(
        "/ver/policy_status", "latched ok / 'hold: reason' from the policy (a missing view)"
    )
    control_rate_hz: float = param(50.0, "command streaming rate (Hz)")
    position_margin: float = param(0.05, "distance kept from the joint position limits (rad)")
    velocity_scale: float = param(0.5, "fraction of the joint velocity limit allowed")
    max_step: float = param(0.02, "largest change of a joint target per control tick (rad)")
    observation_budget_s: float = param(
        DEFAULT_BUDGET.observation_s,
        "staleness budget: hold once the current chunk's camera frame is older than this (s)",
    )
    joint_state_budget_s: float = param(
        DEFAULT_BUDGET.joint_state_s, "staleness budget: hold once the joint state is older (s)"
    )
    ramp_time_s: float = param(1.0, "time to ramp back to full speed after a hold (s)")
    gripper_min: float = param(0.0, "smallest gripper width command (m)")
    gripper_max: float = param(0.08, "largest gripper width command (m)")
    gripper_max_speed: float = param(0.1, "gripper width rate limit (m/s)")
    grasp_wait_s: float = param(
        1.0, "the arm holds while a closing hand's fingers move, at most this long (s; 0: never)"
    )
    lower_limits: list[float] = param([], "override of the lower position limits (7 values, rad)")
    upper_limits: list[float] = param([], "override of the upper position limits (7 values, rad)")
    velocity_limits: list[float] = param([], "override of the velocity limits (7 values, rad/s)")
    publish_while_holding: bool = param(True, "keep streaming the held pose while holding")
    latency_warmup: int = param(20, "latency stats: samples per stage ignored at start")
    latency_log: str = param("", "write latency stats (JSON) here on shutdown")

    def __post_init__(self) -> None:
        if self.controller_type not in CONTROLLER_TOPICS:
            raise ValueError(
                f"controller_type must be one of {sorted(CONTROLLER_TOPICS)}, got "
                f"{self.controller_type!r}"
            )
        if len(self.joint_names) != 7:
            raise ValueError(f"joint_names needs the 7 arm joints, got {self.joint_names}")
        limits_for(self.robot_type)  # raises on an unknown robot

    def gate_config(self) -> SafetyConfig:
        keys = SafetyConfig.__dataclass_fields__
        return SafetyConfig(**{k: getattr(self, k) for k in keys})


class SafetyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("safety_node", **kwargs)
        self.params = p = declare_config(self, SafetyParams)
        limits = limits_for(p.robot_type).with_overrides(
            p.lower_limits, p.upper_limits, p.velocity_limits
        )
        self.gate = SafetyGate(p.gate_config(), limits)
        topic = p.command_topic or CONTROLLER_TOPICS[p.controller_type]
        msg_type = JointTrajectory if p.controller_type == "trajectory" else Float64MultiArray
        self.arm_pub = self.create_publisher(msg_type, topic, COMMAND_QOS)
        self.gripper_pub = self.create_publisher(Float64, p.gripper_topic, COMMAND_QOS)
        self.status_pub = self.create_publisher(String, p.status_topic, LATCHED_QOS)
        self.create_subscription(JointTrajectory, p.chunk_topic, self._on_chunk, COMMAND_QOS)
        self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, SENSOR_QOS)
        self.create_subscription(Bool, p.estop_topic, self._on_estop, LATCHED_QOS)
        self.create_subscription(String, p.policy_status_topic, self._on_policy_status, LATCHED_QOS)
        self.stats = LatencyStats(warmup=p.latency_warmup)
        self._fresh_chunk: tuple[float, float] | None = None  # (observation stamp, receipt time)
        self._last_status: str | None = None
        self._last_reject: str | None = None
        self._last_reject_time = -np.inf
        self.create_timer(1.0 / p.control_rate_hz, self._tick)
        self.get_logger().info(
            f"safety gate for {p.robot_type} -> {topic} ({p.controller_type}) at "
            f"{p.control_rate_hz:g} Hz, margin {p.position_margin} rad, step cap "
            f"{np.round(self.gate.step_cap, 4).tolist()} rad/tick"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            reading = read_joint_state(
                msg.name, msg.position, self.params.joint_names, self.params.finger_joints
            )
        except JointStateError as e:
            self._log_reject(f"dropping joint state: {e}")
            return
        self.gate.on_joint_state(reading.q, self._now(), gripper=reading.gripper)

    def _on_policy_status(self, msg: String) -> None:
        text = msg.data.strip()
        self.gate.set_upstream_hold(
            text[len("hold:") :].strip() if text.startswith("hold") else None
        )

    def _on_chunk(self, msg: JointTrajectory) -> None:
        try:
            chunk = msg_to_chunk(msg, self.params.joint_names)
        except ValueError as e:
            self._log_reject(f"malformed action chunk: {e}")
            self.gate.reject()
            return
        now = self._now()
        reason = self.gate.on_chunk(chunk, now)
        if reason is None:
            self._fresh_chunk = (chunk.stamp, now)
        else:
            self._log_reject(f"rejected action chunk: {reason.value}")

    def _log_reject(self, text: str) -> None:
        """A warning per kind of problem, repeated at most every 5 s while it persists."""
        now = time.monotonic()
        if text != self._last_reject or now - self._last_reject_time > 5.0:
            self.get_logger().warning(text)
            self._last_reject, self._last_reject_time = text, now

    def _on_estop(self, msg: Bool) -> None:
        self.gate.set_estop(msg.data)
        self._tick()  # act on an e-stop now, not at the next timer tick

    def _tick(self) -> None:
        with self.stats.time("safety"):
            out = self.gate.step(self._now())
        if self.gate.status != self._last_status:
            self._last_status = self.gate.status
            self.status_pub.publish(String(data=self.gate.status))
            # rclpy forbids changing the severity of one call site: two call sites
            if self.gate.status.startswith("hold"):
                self.get_logger().warning(f"safety status: {self.gate.status}")
            else:
                self.get_logger().info(f"safety status: {self.gate.status}")
        if out is None or (out.holding and not self.params.publish_while_holding):
            return
        self._publish(out.arm, out.gripper)
        if self._fresh_chunk is not None and not out.holding:
            # first command built from a new chunk: camera stamp -> command publish
            stamp, received = self._fresh_chunk
            now = self._now()
            self.stats.add("end_to_end", now - stamp)
            self.stats.add("chunk_wait", now - received)
            self._fresh_chunk = None

    def _publish(self, arm: np.ndarray, gripper: float) -> None:
        if self.params.controller_type == "trajectory":
            msg = JointTrajectory()
            msg.joint_names = list(self.params.joint_names)
            period_ns = int(1e9 / self.params.control_rate_hz)
            msg.points = [
                JointTrajectoryPoint(
                    positions=arm.tolist(),
                    time_from_start=Duration(
                        sec=period_ns // 1_000_000_000, nanosec=period_ns % 1_000_000_000
                    ),
                )
            ]
            self.arm_pub.publish(msg)
        else:
            self.arm_pub.publish(Float64MultiArray(data=arm.tolist()))
        self.gripper_pub.publish(Float64(data=float(gripper)))


def main(args: list[str] | None = None) -> None:
    from ver_ros.bringup import spin_node

    spin_node(SafetyNode, args if args is not None else sys.argv)


if __name__ == "__main__":
    main()
