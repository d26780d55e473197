"""sim_node: the MuJoCo Franka pick world behind the same topics as the real robot + camera.

Publishes (sim time stamps, see below), for every camera in ``cameras``: the scene camera on
``/camera/camera/color/image_raw`` (rgb8) + ``/camera/camera/color/camera_info``, the hand camera
on ``/wrist_camera/camera/color/image_raw`` + its camera_info (topics are parameters; both
cameras render the same instant and carry the same stamp); ``/joint_states`` (7 arm joints + 2 fingers, each finger
= half the opening), ``/clock``; sim-only privileged topics ``/sim/object_pose``
(geometry_msgs/PoseStamped, cube pose in the robot base frame ``world``), ``/sim/distractors``
(geometry_msgs/PoseArray, the scene's distractor positions, latched, per reset) and ``/sim/episode``
(std_msgs/String JSON ``{"seed", "task", "success", "sim_time"}``, latched).
Accepts arm commands on ``/fr3_arm_controller/joint_trajectory`` (JointTrajectory, followed over
time; an extra ``gripper`` column is honoured) and ``/forward_position_controller/commands``
(Float64MultiArray, 7 values), gripper width on ``/gripper/command`` (Float64, m).
Bad commands (wrong names or lengths, NaN/inf) are logged and never applied.
Services ``~/reset`` (message carries ``seed=N``) and ``~/success`` (std_srvs/Trigger).

Time: the sim clock is the wall time at node start plus the accumulated simulated time; it is
published on ``/clock`` so other nodes run with ``use_sim_time:=true``. With ``realtime:=false``
physics runs as fast as rendering allows (bounded by ``max_rtf``); stamps stay consistent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from geometry_msgs.msg import Pose, PoseArray, PoseStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from ver_core.sim import FrankaPickEnv, SimConfig
from ver_core.sim.config import CAMERA_POS, CAMERA_TARGET, CAMERAS
from ver_core.sim.stepper import SimStepper
from ver_core.sim.trajectory import parse_arm_points, validate_positions
from ver_ros.conversions import (
    camera_info_to_msg,
    image_to_msg,
    joint_state_to_msg,
    ns_to_stamp,
    stamp_to_ns,
)
from ver_ros.params import declare_config, param
from ver_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS


@dataclass
class SimNodeConfig:
    cameras: list[str] = param(list(CAMERAS), "cameras to render and publish: camera, wrist_camera")
    width: int = param(640, "scene camera image width (px)")
    height: int = param(480, "scene camera image height (px)")
    image_topic: str = param("/camera/camera/color/image_raw", "scene camera image topic")
    camera_info_topic: str = param("/camera/camera/color/camera_info", "scene camera info")
    wrist_width: int = param(640, "wrist camera image width (px)")
    wrist_height: int = param(480, "wrist camera image height (px)")
    wrist_image_topic: str = param(
        "/wrist_camera/camera/color/image_raw", "wrist camera image topic"
    )
    wrist_camera_info_topic: str = param(
        "/wrist_camera/camera/color/camera_info", "wrist camera info topic"
    )
    wrist_frame_id: str = param("wrist_camera_color_optical_frame", "frame_id of wrist images")
    image_rate_hz: float = param(15.0, "camera publish rate in sim time (Hz)")
    state_rate_hz: float = param(50.0, "joint state / object pose publish rate in sim time (Hz)")
    realtime: bool = param(True, "pace physics to the wall clock; false = as fast as possible")
    max_rtf: float = param(0.0, "with realtime false: cap on sim/wall speed (0 = no cap)")
    seed: int = param(-1, "seed of the first reset (then +1 per reset); -1 = random seeds")
    randomize: bool = param(True, "domain randomization of colors, lights and distractors")
    min_distractors: int = param(0, "fewest distractors a randomized scene places (0-3)")
    joint_names: list[str] = param(
        [f"fr3_joint{i}" for i in range(1, 8)], "arm joint names (Franka order)"
    )
    finger_joint_names: list[str] = param(
        ["fr3_finger_joint1", "fr3_finger_joint2"], "finger joint names"
    )
    camera_frame_id: str = param("camera_color_optical_frame", "frame_id of the camera images")
    camera_pos: list[float] = param(
        list(CAMERA_POS), "camera position (m, robot base frame): match your real camera"
    )
    camera_target: list[float] = param(list(CAMERA_TARGET), "point the camera looks at (m)")
    task: str = param("pick_cube", "task name reported on /sim/episode")

    def __post_init__(self) -> None:
        if len(self.joint_names) != 7 or len(self.finger_joint_names) != 2:
            raise ValueError("joint_names needs 7 names and finger_joint_names 2")
        if not (0 < self.image_rate_hz <= 100 and 0 < self.state_rate_hz <= 500):
            raise ValueError(
                f"rates out of range: image {self.image_rate_hz}, state {self.state_rate_hz}"
            )
        if self.max_rtf < 0:
            raise ValueError(f"max_rtf must be >= 0, got {self.max_rtf}")
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown or not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be distinct names out of {CAMERAS}, got {self.cameras}")
        self.sim_config()  # checks sizes and the camera pose

    def sim_config(self) -> SimConfig:
        return SimConfig(
            width=self.width,
            height=self.height,
            wrist_width=self.wrist_width,
            wrist_height=self.wrist_height,
            randomize=self.randomize,
            min_distractors=self.min_distractors,
            camera_pos=self.camera_pos,
            camera_target=self.camera_target,
        )

    def camera_topics(self) -> dict[str, tuple[str, str, str]]:
        """camera -> (image topic, camera info topic, frame id), for the published cameras."""
        table = {
            "camera": (self.image_topic, self.camera_info_topic, self.camera_frame_id),
            "wrist_camera": (
                self.wrist_image_topic,
                self.wrist_camera_info_topic,
                self.wrist_frame_id,
            ),
        }
        return {c: table[c] for c in self.cameras}


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_node")
        self.cfg = declare_config(self, SimNodeConfig)
        c = self.cfg
        self.env = FrankaPickEnv(c.sim_config())
        self.stepper = SimStepper(self.env, c.image_rate_hz, c.state_rate_hz)
        self.lock = threading.Lock()
        self.clock_base_ns = time.time_ns()
        self.resets = 0
        self.current_seed = -1
        self.rejected = 0
        self.camera_pubs = {
            cam: (
                self.create_publisher(Image, image, SENSOR_QOS),
                self.create_publisher(CameraInfo, info, SENSOR_QOS),
                frame,
            )
            for cam, (image, info, frame) in c.camera_topics().items()
        }
        self.pub_joints = self.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        self.pub_pose = self.create_publisher(PoseStamped, "/sim/object_pose", SENSOR_QOS)
        self.pub_episode = self.create_publisher(String, "/sim/episode", LATCHED_QOS)
        self.pub_distractors = self.create_publisher(PoseArray, "/sim/distractors", LATCHED_QOS)
        self.pub_clock = self.create_publisher(Clock, "/clock", 10)
        self.create_subscription(
            JointTrajectory, "/fr3_arm_controller/joint_trajectory", self.on_trajectory, COMMAND_QOS
        )
        self.create_subscription(
            Float64MultiArray, "/forward_position_controller/commands", self.on_forward, COMMAND_QOS
        )
        self.create_subscription(Float64, "/gripper/command", self.on_gripper, COMMAND_QOS)
        self.create_service(Trigger, "~/reset", self.on_reset)
        self.create_service(Trigger, "~/success", self.on_success)
        self._reset_env(count=False)

    # ------------------------------------------------------------------ time
    @property
    def sim_elapsed(self) -> float:
        """s of simulated time since node start (monotonic over resets)."""
        return self.stepper.time

    def now_s(self) -> float:
        return self.stepper.time

    def now_ns(self) -> int:
        return self.clock_base_ns + int(round(self.stepper.time * 1e9))

    def _to_s(self, stamp_ns: int) -> float:
        return (stamp_ns - self.clock_base_ns) / 1e9

    # ------------------------------------------------------------------ commands
    def _reject(self, what: str, err: Exception) -> None:
        self.rejected += 1
        self.get_logger().error(f"rejected {what}: {err}")

    def on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            points = [
                (p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, p.positions)
                for p in msg.points
            ]
            times, arm, extras = parse_arm_points(msg.joint_names, points, self.cfg.joint_names)
            if "gripper" in extras:
                validate_positions(extras["gripper"], len(times), "gripper column")
        except ValueError as e:
            self._reject("arm trajectory", e)
            return
        with self.lock:
            stamp_ns = stamp_to_ns(msg.header.stamp)
            t0 = self.now_s() if stamp_ns == 0 else self._to_s(stamp_ns)
            grip = float(extras["gripper"][-1]) if "gripper" in extras else None
            self.stepper.command_trajectory(t0, times, arm, grip)

    def on_forward(self, msg: Float64MultiArray) -> None:
        try:
            q = validate_positions(msg.data, 7, "forward position command")
        except ValueError as e:
            self._reject("forward command", e)
            return
        with self.lock:
            self.stepper.command_now(q)

    def on_gripper(self, msg: Float64) -> None:
        if not np.isfinite(msg.data):
            self._reject("gripper command", ValueError(f"non-finite width {msg.data}"))
            return
        with self.lock:
            self.stepper.command_gripper(float(msg.data))

    # ------------------------------------------------------------------ services
    def _reset_env(self, count: bool = True) -> None:
        """Reset the world; service reset k (k = 0, 1, ...) uses seed + k (the start-up reset
        uses ``seed`` too without counting)."""
        if self.cfg.seed >= 0:
            self.current_seed = self.cfg.seed + self.resets
        else:
            self.current_seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        self.resets += int(count)
        self.stepper.reset(self.current_seed)
        self._publish_episode()
        self._publish_distractors()

    def on_reset(self, request, response):
        with self.lock:
            self._reset_env()
        response.success = True
        response.message = f"seed={self.current_seed}"
        return response

    def on_success(self, request, response):
        with self.lock:
            response.success = self.env.success()
            z = float(self.env.observation().cube_pos[2])
        response.message = f"cube_z={z:.3f}"
        return response

    # ------------------------------------------------------------------ publishing
    def _publish_episode(self) -> None:
        info = {
            "seed": self.current_seed,
            "task": self.cfg.task,
            "success": self.env.success(),
            "sim_time": self.now_s(),
        }
        self.pub_episode.publish(String(data=json.dumps(info)))

    def _publish_distractors(self) -> None:
        """The scene's distractor positions (sim-only, latched; ``ver_core.sim.Detour``'s decoys)."""
        msg = PoseArray()
        msg.header.stamp, msg.header.frame_id = ns_to_stamp(self.now_ns()), "world"
        for x, y, z in self.env.distractor_positions():
            pose = Pose()
            pose.position.x, pose.position.y, pose.position.z = float(x), float(y), float(z)
            pose.orientation.w = 1.0
            msg.poses.append(pose)
        self.pub_distractors.publish(msg)

    def _publish_state(self, stamp) -> None:
        obs = self.env.observation()
        fingers = self.env.finger_positions()
        names = list(self.cfg.joint_names) + list(self.cfg.finger_joint_names)
        vel = np.concatenate([obs.arm_dq, [0.0, 0.0]])
        self.pub_joints.publish(
            joint_state_to_msg(names, np.concatenate([obs.arm_q, fingers]), stamp, vel)
        )
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, "world"
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (
            float(v) for v in obs.cube_pos
        )
        o = pose.pose.orientation
        o.w, o.x, o.y, o.z = (float(v) for v in obs.cube_quat)
        self.pub_pose.publish(pose)

    def _publish_images(self, stamp) -> None:
        """Every camera renders the same instant and carries the same stamp."""
        for cam, (pub_image, pub_info, frame) in self.camera_pubs.items():
            rgb = self.env.render(cam)  # (H, W, 3) uint8
            pub_image.publish(image_to_msg(rgb, stamp, frame))
            pub_info.publish(camera_info_to_msg(self.env.camera_info(cam), stamp, frame))

    def run(self, stop: threading.Event) -> None:
        """Physics loop (main thread); ROS callbacks run in the executor thread."""
        c = self.cfg
        next_episode = 0.0
        wall0, sim0 = time.monotonic(), self.sim_elapsed
        while not stop.is_set() and rclpy.ok():
            with self.lock:
                events = self.stepper.step()
                t = events.time
                stamp = ns_to_stamp(self.now_ns())
                self.pub_clock.publish(Clock(clock=stamp))
                if events.state_due:
                    self._publish_state(stamp)
                if events.image_due:
                    self._publish_images(stamp)
                if t >= next_episode:
                    self._publish_episode()
                    next_episode = t + 0.2
            rtf = 1.0 if c.realtime else c.max_rtf
            if rtf > 0:
                ahead = (self.sim_elapsed - sim0) / rtf - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
            else:
                time.sleep(0)  # yield the GIL to the executor thread


def main(args=None) -> None:
    from ver_ros.bringup import stop_with_supervisor

    stop_with_supervisor()
    rclpy.init(args=args)
    node = SimNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    spin = threading.Thread(target=spin, daemon=True)
    spin.start()
    stop = threading.Event()
    try:
        node.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        executor.shutdown(timeout_sec=1.0)
        node.env.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
