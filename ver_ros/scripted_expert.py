"""scripted_expert (sim only): drives the sim through ROS topics with ver_core's ScriptedExpert.

Reads ``/joint_states`` and the privileged sim-only ``/sim/object_pose`` (PoseStamped) and, while
active, publishes every control period one JointTrajectory point on
``/fr3_arm_controller/joint_trajectory`` (stamped now, due one period later: the sim interpolates
toward it) and the gripper width on ``/gripper/command``. With ``noise_std`` > 0 (DART noise
injection, ``ver_core.sim.ExecutionNoise``) the arm executes the command plus a smooth random
offset, and the expert's clean command goes to ``intended_topic`` (the label to train on). With
``detour_prob`` > 0 (``ver_core.sim.Detour``) that share of episodes first flies the arm over a
distractor (from the sim-only ``/sim/distractors`` PoseArray) while the label heads for the cube.
With ``miss_prob`` > 0 (``ver_core.sim.Miss``) that share of episodes first closes the gripper a
few centimetres beside the cube and lifts the empty hand, while the label reopens and heads for the
cube. With ``twist_prob`` > 0 (``ver_core.sim.Twist``) that share of episodes executes the whole
episode with the hand turned 15-40 degrees about its axis, so the grasp shuts across the cube's
corners, while the label keeps the aligned yaw. With ``sweep_prob`` > 0 (``ver_core.sim.Sweep``)
that share of episodes turns the hand +-40 degrees above the cube while the expert holds the hover;
``perception_only_topic`` (std_msgs/Bool, every period) says when: those frames teach the
cameras' yaw reading, and the trainer leaves them out of the action losses. The expert's own gripper command (the label) goes to ``intended_gripper_topic``; the executed
one to ``/gripper/command``. Services: ``~/start`` (reset the expert from the latest state and
start acting), ``~/stop`` (stop publishing; the sim holds position).
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
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ver_core.sim import (
    Detour,
    ExecutionNoise,
    ExpertConfig,
    Miss,
    ScriptedExpert,
    Sweep,
    Twist,
)
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
    yaw_noise_std: float = param(
        0.0,
        "DART noise on joint 7, the hand's yaw (rad); 0 = noise_std like the other joints "
        "(ver_core.sim.ExecutionNoise.yaw_std)",
    )
    noise_corr_s: float = param(0.5, "correlation time of the DART noise (s)")
    noise_seed: int = param(-1, "seed of the DART noise (-1 = random)")
    settle_s: float = param(
        0.0,
        "longest wait (s) with the gripper open for the measured hand to reach the grasp once the "
        "command has (ver_core.sim.ExpertConfig.settle_s); 0 = close on the command's arrival",
    )
    detour_prob: float = param(
        0.0, "fraction of episodes whose arm first hovers over a distractor (ver_core.sim.Detour)"
    )
    detour_seed: int = param(-1, "seed of the detour draws (-1 = random)")
    miss_prob: float = param(
        0.0, "fraction of episodes that first close beside the cube (ver_core.sim.Miss)"
    )
    miss_seed: int = param(-1, "seed of the missed-grasp draws (-1 = random)")
    twist_prob: float = param(
        0.0,
        "fraction of episodes whose hand grasps turned off the cube's face (ver_core.sim.Twist)",
    )
    twist_seed: int = param(-1, "seed of the twist draws (-1 = random)")
    sweep_prob: float = param(
        0.0,
        "fraction of episodes whose hand turns about its axis above the cube before the descent "
        "(ver_core.sim.Sweep)",
    )
    sweep_seed: int = param(-1, "seed of the sweep draws (-1 = random)")
    intended_topic: str = param(
        "/scripted_expert/intended_trajectory", "the expert's clean command (the label)"
    )
    intended_gripper_topic: str = param(
        "/scripted_expert/intended_gripper", "the expert's gripper command (the gripper label)"
    )
    perception_only_topic: str = param(
        "/scripted_expert/perception_only",
        "std_msgs/Bool every period: True while the hand sweeps for the cameras (frames for the "
        "perception heads only)",
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
        if not 0.0 <= self.yaw_noise_std <= 0.7:
            raise ValueError(f"yaw_noise_std must be in [0, 0.7] rad, got {self.yaw_noise_std}")
        if not 0.0 <= self.settle_s <= 5.0:
            raise ValueError(f"settle_s must be in [0, 5] s, got {self.settle_s}")
        if not 0.0 <= self.detour_prob <= 1.0:
            raise ValueError(f"detour_prob must be in [0, 1], got {self.detour_prob}")
        if not 0.0 <= self.miss_prob <= 1.0:
            raise ValueError(f"miss_prob must be in [0, 1], got {self.miss_prob}")
        if not 0.0 <= self.twist_prob <= 1.0:
            raise ValueError(f"twist_prob must be in [0, 1], got {self.twist_prob}")
        if not 0.0 <= self.sweep_prob <= 1.0:
            raise ValueError(f"sweep_prob must be in [0, 1], got {self.sweep_prob}")


class ScriptedExpertNode(Node):
    def __init__(self) -> None:
        super().__init__("scripted_expert")
        self.cfg = declare_config(self, ExpertNodeConfig)
        self.expert = ScriptedExpert(
            ExpertConfig(control_hz=self.cfg.control_hz, settle_s=self.cfg.settle_s)
        )
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
        self.pub_intended_grip = self.create_publisher(
            Float64, self.cfg.intended_gripper_topic, COMMAND_QOS
        )
        self.pub_perception_only = self.create_publisher(
            Bool, self.cfg.perception_only_topic, COMMAND_QOS
        )
        c = self.cfg
        self.noise = ExecutionNoise(
            c.noise_std,
            c.noise_corr_s,
            c.control_hz,
            None if c.noise_seed < 0 else c.noise_seed,
            yaw_std=c.yaw_noise_std,
        )
        self.create_subscription(JointState, "/joint_states", self._on_state, sensor_qos(5))
        self.detour = Detour(
            c.detour_prob,
            None if c.detour_seed < 0 else c.detour_seed,
            config=self.expert.config,
            model=self.expert.model,
        )
        self.miss = Miss(
            c.miss_prob,
            None if c.miss_seed < 0 else c.miss_seed,
            config=self.expert.config,
            model=self.expert.model,
        )
        self.twist = Twist(c.twist_prob, None if c.twist_seed < 0 else c.twist_seed)
        self.sweep = Sweep(c.sweep_prob, None if c.sweep_seed < 0 else c.sweep_seed)
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
        cube_pos, cube_quat = np.array([p.x, p.y, p.z]), np.array([o.w, o.x, o.y, o.z])
        if self._needs_reset:
            self.twist.reset()
        q = self.twist.plan_q(q)  # the plan's view of the arm: as if it followed the plan
        if self._needs_reset:
            self.expert.reset(q)
            self.noise.reset()
            self.detour.reset(q, self.decoys)
            self.miss.reset(q, cube_pos, cube_quat)
            self.sweep.reset()
            if self.detour.active:  # one excursion per episode: a detour wins
                self.miss.cancel()
            self._needs_reset = False
        away = self.detour.active or self.miss.active
        if not away:
            self.sweep.check(self.expert, cube_pos)
        sweeping = self.sweep.active  # this period's command is a sweep's (the label holds)
        target, grip = self.expert.act(q, width, cube_pos, cube_quat, detouring=away or sweeping)
        stamp = self.get_clock().now().to_msg()
        planned = self.sweep(self.miss(self.detour(target, q), q, width))
        executed = self.noise(self.twist(planned), self.expert.phase)
        executed_grip = grip if self.miss.width is None else self.miss.width
        self.pub_traj.publish(self._point(executed, stamp))
        self.pub_grip.publish(Float64(data=executed_grip))
        self.pub_intended.publish(self._point(target, stamp))
        self.pub_intended_grip.publish(Float64(data=grip))
        self.pub_perception_only.publish(Bool(data=sweeping))

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
