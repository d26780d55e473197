"""camera image -> encoder_node -> policy_node -> safety_node -> command, as real processes.

The test publishes camera frames (raw rgb8) and plays an ideal robot on /joint_states. Checks:
features keep the image stamp, chunks are stamped with the observation time, commands come out
gated; killing the encoder makes the safety node hold with a frozen command.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from harness import (
    HOME,
    JOINTS,
    TestNode,
    random_task_checkpoint,
    start_process,
    stop_processes,
)
from rcl_interfaces.msg import Log
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory

from ver_core.safety import FR3_LIMITS
from ver_ros.conversions import compressed_image_to_msg, image_to_msg, msg_to_rgb, stamp_to_ns
from ver_ros.encoder_node import msg_to_features
from ver_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

pytestmark = pytest.mark.ros

ROSOUT_QOS = QoSProfile(
    depth=100,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_task_checkpoint(tmp_path_factory.mktemp("task"))


class CameraAndRobot(TestNode):
    """Plays camera (random frames) and an ideal robot that follows the gated commands."""

    def __init__(self, compressed: bool = False) -> None:
        super().__init__("pipeline_test")
        n = self.node
        self.compressed = compressed
        self.q = HOME.copy()
        self.features: list[tuple[int, tuple[int, int]]] = []
        self.chunks: list[int] = []
        self.image_stamps: set[int] = set()
        self.rng = np.random.default_rng(0)
        self.overlays: list[tuple[int, int, int]] = []
        if compressed:
            topic, kind = "/camera/camera/color/image_raw/compressed", CompressedImage
        else:
            topic, kind = "/camera/camera/color/image_raw", Image
        self.img_pub = n.create_publisher(kind, topic, SENSOR_QOS)
        n.create_subscription(
            Image,
            "/ver/routing_image/camera",
            lambda m: self.overlays.append(msg_to_rgb(m).shape),
            SENSOR_QOS,
        )
        self.js_pub = n.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        n.create_subscription(Image, "/ver/features/camera", self._on_features, SENSOR_QOS)
        n.create_subscription(
            JointTrajectory,
            "/ver/action_chunk",
            lambda m: self.chunks.append(stamp_to_ns(m.header.stamp)),
            COMMAND_QOS,
        )
        n.create_timer(1 / 15, self._publish_image)
        n.create_timer(0.01, self._publish_state)
        self.start()

    def _publish_image(self) -> None:
        rgb = self.rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        stamp = self.node.get_clock().now()
        self.image_stamps.add(stamp.nanoseconds)
        if self.compressed:
            self.img_pub.publish(compressed_image_to_msg(rgb, stamp.to_msg(), "camera", fmt="jpeg"))
        else:
            self.img_pub.publish(image_to_msg(rgb, stamp.to_msg(), "camera"))

    def _publish_state(self) -> None:
        msg = JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.name = [*JOINTS, "fr3_finger_joint1", "fr3_finger_joint2"]
        with self.lock:
            msg.position = [*self.q.tolist(), 0.02, 0.02]
        self.js_pub.publish(msg)

    def on_command(self, q: np.ndarray) -> None:
        with self.lock:
            self.q = q

    def _on_features(self, msg: Image) -> None:
        self.features.append((stamp_to_ns(msg.header.stamp), msg_to_features(msg).shape))


def _start(module: str, env: dict, *params: str) -> subprocess.Popen:
    args = [sys.executable, "-m", module, "--ros-args"]
    for p in params:
        args += ["-p", p]
    return start_process(args, env)


def _stop(procs: list[subprocess.Popen]) -> list[str]:
    return stop_processes(procs, timeout=10)


@pytest.mark.parametrize("host_encoder", [False, True], ids=["encoder_node", "host_encoder_jpeg"])
def test_image_to_command_then_dead_perception_holds(ros_env, checkpoint, host_encoder):
    """Separate encoder on raw images, or the encoder hosted in the policy on JPEG images.
    Then the perception process (encoder, or policy hosting it) is killed: the gate must hold."""
    ck = f"checkpoint:={checkpoint}"
    policy_params = [ck, "threads:=1", "observation_budget_s:=1.5"]
    if host_encoder:
        policy_params += ["host_encoder:=true", "image_transport:=compressed", "backend:=tensorrt"]
        procs = [_start("ver_ros.policy_node", ros_env, *policy_params)]
    else:
        encoder = _start(
            "ver_ros.encoder_node",
            ros_env,
            ck,
            "backend:=onnxruntime",
            "threads:=1",
            "observation_budget_s:=1.5",
        )
        procs = [encoder, _start("ver_ros.policy_node", ros_env, *policy_params)]
    safety = _start(
        "ver_ros.safety_node",
        ros_env,
        "ramp_time_s:=0.3",
        "observation_budget_s:=1.5",
    )
    procs.append(safety)
    io = CameraAndRobot(compressed=host_encoder)
    logs: list[str] = []  # the policy node's log, subscribed long before the e-stop below
    io.node.create_subscription(
        Log,
        "/rosout",
        lambda m: logs.append(m.msg) if m.name == "policy_node" else None,
        ROSOUT_QOS,
    )
    try:
        io.wait_for(lambda: len(io.chunks) >= 5, 120.0, "action chunks from the policy")
        assert set(io.chunks) <= io.image_stamps  # chunks stamped with the observation time
        if not host_encoder:
            # features keep the source image stamp; 1 CLS + 196 patches x 192 channels (ver_tiny)
            stamp, shape = io.features[-1]
            assert stamp in io.image_stamps and shape == (197, 192)
            io.wait_for(lambda: len(io.overlays) > 0, 10.0, "routing overlay")
            assert io.overlays[-1] == (224, 224, 3)
        io.wait_for(
            lambda: any(s in ("ok", "ramping") for s in io.status), 30.0, "gate passing commands"
        )
        t0 = time.monotonic()  # a count is waited for, never taken after a fixed sleep
        io.wait_for(lambda: len(io.cmds_since(t0)) > 20, 30.0, "20 commands through the gate")
        cmds = io.cmds_since(t0)
        assert np.all(np.isfinite(cmds))
        lo, hi = FR3_LIMITS.lower + 0.05, FR3_LIMITS.upper - 0.05
        assert np.all(cmds >= lo - 1e-9) and np.all(cmds <= hi + 1e-9)

        seen = len(io.status)
        procs[0].send_signal(signal.SIGKILL)  # the perception process dies mid-run
        # the gate's own stale_observation and the policy's stale_view (an upstream hold, which
        # drops the chunk and so replaces stale_observation) come within a tick of each other
        io.wait_for(
            lambda: (
                io.status[-1].startswith("hold")
                and any("stale_observation" in s or "stale_view" in s for s in io.status[seen:])
            ),
            10.0,
            "safety hold after perception died",
        )
        t_hold = time.monotonic()
        io.wait_for(lambda: len(io.cmds_since(t_hold)) > 10, 30.0, "10 held commands")
        held = io.cmds_since(t_hold)
        assert np.ptp(held, axis=0).max() == 0.0
        if not host_encoder:
            # an e-stop engaged and released ends the policy's episode (chunk history, tracked
            # grasp point): the policy node hears the latched topic the gate hears
            estop = io.node.create_publisher(Bool, "/ver/e_stop", LATCHED_QOS)
            n = len(io.status)
            estop.publish(Bool(data=True))
            io.wait_for(lambda: "e_stop" in " ".join(io.status[n:]), 30.0, "the gate's e-stop")
            # release only once the policy node has heard the press (a latched topic keeps only
            # the newest value: a release that overtakes the press on a loaded machine hides it)
            io.wait_for(lambda: "e-stop on" in " ".join(logs), 30.0, "the policy's e-stop")
            estop.publish(Bool(data=False))
            io.wait_for(
                lambda: sum("grasp point forgotten" in x for x in logs) >= 2,
                30.0,
                "the policy forgetting its episode at the e-stop and at its release",
            )
            assert "e-stop on" in " ".join(logs) and "e-stop off" in " ".join(logs)
    finally:
        io.close()
        outs = _stop(procs)
    if host_encoder:
        from ver_core.export import backend_status

        if backend_status("tensorrt") is not None:  # no TensorRT here: exactly one fallback line
            assert outs[0].count("falling back to 'onnxruntime'") == 1


def test_bringup_stops_the_graph_when_a_node_fails(ros_env, tmp_path):
    """A node that cannot start (no checkpoint there) brings the whole graph down, loudly."""
    cmd = [sys.executable, "-m", "ver_ros.bringup", "--checkpoint", str(tmp_path / "missing")]
    proc = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "cannot start" in out and "config.json is missing" in out
    assert "stopping the graph" in out
