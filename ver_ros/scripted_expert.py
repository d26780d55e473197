"""scripted_expert (sim only): drives the sim through ROS topics with ver_core's ScriptedExpert.

Reads ``/joint_states`` and the privileged sim-only ``/sim/object_pose`` (PoseStamped) and, while
active, publishes every control period one JointTrajectory point on
``/fr3_arm_controller/joint_trajectory`` (stamped now, due one period later: the sim interpolates
toward it) and the gripper width on ``/gripper/command``. With ``noise_std`` > 0 (DART noise
injection, ``ver_core.sim.ExecutionNoise``) the arm executes the command plus a smooth random
offset, and the expert's clean command goes to ``intended_topic`` (the label to train on). With
``detour_prob`` > 0 (``ver_core.sim.Detour``) that share of episodes first flies the arm over a
distractor (from the sim-only ``/sim/distractors`` PoseArray) while the label heads for the cube. Services: ``~/start`` (reset the expert
from the latest state and start acting), ``~/stop`` (stop publishing; the sim holds position).
Run with ``use_sim_time:=true`` next to sim_node so the control timer follows sim time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ver_core.sim import Detour, ExecutionNoise, ExpertConfig, ScriptedExpert
from ver_ros.conversions import joint_positions
from ver_ros.params import declare_config, param
from ver_ros.qos import COMMAND_QOS, LATCHED_QOS, sensor_qos


@dataclass
class ExpertNodeConfig:
    control_hz: float = param(10.0, "control rate (Hz, node clock: sim time with use_sim_time)")
    joint_names: list[str] = param(
        [f"fr3_joint{i}" for i in range(1, 8)], "arm joint names (Franka order)"
    )
    finger_joint_names: list[str] = param(
        ["fr3_finger_joint1", "fr3_finger_joint2"], "finger joint names"
    )
    autostart: bool = param(False, "act from the first state on, without a ~/start call")
    noise_std: float = param(0.0, "DART noise on the executed arm command (rad); 0 = none")
    noise_corr_s: float = param(0.5, "correlation time of the DART noise (s)")
    noise_seed: int = param(-1, "seed of the DART noise (-1 = random)")
    detour_prob: float = param(
        0.0, "fraction of episodes whose arm first hovers over a distractor (ver_core.sim.Detour)"
    )
    detour_seed: int = param(-1, "seed of the detour draws (-1 = random)")
    intended_topic: str = param(
        "/scripted_expert/intended_trajectory", "the expert's clean command (the label)"
    )

    def __post_init__(self) -> None:
        if not 1.0 <= self.control_hz <= 100.0:
            raise ValueError(f"control_hz must be in [1, 100], got {self.control_hz}")
        if len(self.joint_names) != 7 or len(self.finger_joint_names) != 2:
            raise ValueError("joint_names needs 7 names and finger_joint_names 2")
        if self.noise_std < 0 or self.noise_std > 0.2 or self.noise_corr_s <= 0:
            raise ValueError(
                f"noise_std must be in [0, 0.2] rad and noise_corr_s > 0, got "
                f"{self.noise_std}, {self.noise_corr_s}"
            )
        if not 0.0 <= self.detour_prob <= 1.0:
            raise ValueError(f"detour_prob must be in [0, 1], got {self.detour_prob}")


class ScriptedExpertNode(Node):
    def __init__(self) -> None:
        super().__init__("scripted_expert")
        self.cfg = declare_config(self, ExpertNodeConfig)
        self.expert = ScriptedExpert(ExpertConfig(control_hz=self.cfg.control_hz))
        self.state: JointState | None = None
        self.pose: PoseStamped | None = None
        self.active = self.cfg.autostart
        self._needs_reset = True
        self.pub_traj = self.create_publisher(
            JointTrajectory, "/fr3_arm_controller/joint_trajectory", COMMAND_QOS
        )
        self.pub_grip = self.create_publisher(Float64, "/gripper/command", COMMAND_QOS)
        self.pub_intended = self.create_publisher(
            JointTrajectory, self.cfg.intended_topic, COMMAND_QOS
        )
        c = self.cfg
        self.noise = ExecutionNoise(
            c.noise_std, c.noise_corr_s, c.control_hz, None if c.noise_seed < 0 else c.noise_seed
        )
        self.create_subscription(JointState, "/joint_states", self._on_state, sensor_qos(5))
        self.detour = Detour(
            c.detour_prob,
            None if c.detour_seed < 0 else c.detour_seed,
            config=self.expert.config,
            model=self.expert.model,
        )
        self.decoys = np.zeros((0, 3))
        self.create_subscription(PoseStamped, "/sim/object_pose", self._on_pose, sensor_qos(5))
        self.create_subscription(PoseArray, "/sim/distractors", self._on_decoys, LATCHED_QOS)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_timer(1.0 / self.cfg.control_hz, self._tick)

    def _on_state(self, msg: JointState) -> None:
        self.state = msg

    def _on_pose(self, msg: PoseStamped) -> None:
        self.pose = msg

    def _on_decoys(self, msg: PoseArray) -> None:
        self.decoys = np.array(
            [[p.position.x, p.position.y, p.position.z] for p in msg.poses], dtype=np.float64
        ).reshape(-1, 3)

    def _on_start(self, request, response):
        self.active, self._needs_reset = True, True
        response.success, response.message = True, "expert active"
        return response

    def _on_stop(self, request, response):
        self.active = False
        response.success, response.message = (
            True,
            f"expert stopped in phase {self.expert.phase_name}",
        )
        return response

    def _tick(self) -> None:
        if not self.active or self.state is None or self.pose is None:
            return
        c = self.cfg
        try:
            q = joint_positions(self.state, c.joint_names)
            width = float(joint_positions(self.state, c.finger_joint_names).sum())
        except ValueError as e:
            self.get_logger().error(f"cannot act: {e}")
            return
        p, o = self.pose.pose.position, self.pose.pose.orientation
        if self._needs_reset:
            self.expert.reset(q)
            self.noise.reset()
            self.detour.reset(q, self.decoys)
            self._needs_reset = False
        target, grip = self.expert.act(
            q,
            width,
            np.array([p.x, p.y, p.z]),
            np.array([o.w, o.x, o.y, o.z]),
            detouring=self.detour.active,
        )
        stamp = self.get_clock().now().to_msg()
        executed = self.noise(self.detour(target, q), self.expert.phase)
        self.pub_traj.publish(self._point(executed, stamp))
        self.pub_grip.publish(Float64(data=grip))
        if c.noise_std > 0 or c.detour_prob > 0:
            self.pub_intended.publish(self._point(target, stamp))

    def _point(self, q: np.ndarray, stamp) -> JointTrajectory:
        """One point due one control period after ``stamp``."""
        traj = JointTrajectory()
        traj.header.stamp = stamp
        traj.joint_names = list(self.cfg.joint_names)
        period_ns = int(1e9 / self.cfg.control_hz)
        traj.points = [
            JointTrajectoryPoint(
                positions=[float(v) for v in q],
                time_from_start=Duration(
                    sec=period_ns // 1_000_000_000, nanosec=period_ns % 1_000_000_000
                ),
            )
        ]
        return traj


def main(args=None) -> None:
    rclpy.init(args=args)
    node = ScriptedExpertNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
