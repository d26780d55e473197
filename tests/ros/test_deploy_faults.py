"""Faults of the deployment graph, as real processes (issue 14): a bad frame does not kill the
encoder, a camera that stops freezes the arm within the staleness budget, and ver-bringup
restarts a killed encoder while the safety node holds.

The test plays the camera (small rgb8 frames) and an ideal robot on /joint_states. Every check
waits for a condition with a generous timeout (a loaded 2-core machine runs the graph slowly);
none counts messages after a fixed sleep.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from harness import (
    HOME,
    JOINTS,
    TestNode,
    random_task_checkpoint,
    start_process,
    stop_processes,
)
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from ver_core.deploy import DEFAULT_BUDGET
from ver_ros.conversions import image_to_msg, stamp_to_ns
from ver_ros.graph import default_config_path
from ver_ros.qos import LATCHED_QOS, SENSOR_QOS

pytestmark = pytest.mark.ros

CAMERA = "/camera/camera/color/image_raw"
TICK_S = 1 / 50.0  # the safety node's default control period
SLACK_S = 0.15  # DDS hop + this test's own executor, on a loaded machine


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_task_checkpoint(tmp_path_factory.mktemp("task"))


def bad_frames() -> list[Image]:
    """Frames no decoder can take: 0x0, a short buffer, an unknown encoding, a huge header."""
    empty = Image(height=0, width=0, encoding="rgb8", step=0)
    short = Image(height=120, width=160, encoding="rgb8", step=480, data=bytes(100))
    odd = Image(height=2, width=2, encoding="yuv9000", step=6, data=bytes(12))
    huge = Image(height=100_000, width=100_000, encoding="rgb8", step=300_000, data=bytes(12))
    return [empty, short, odd, huge]


class CameraAndRobot(TestNode):
    """Publishes 160x120 rgb8 frames at 15 Hz while ``camera_on`` (and ``extra`` messages queued
    by the test), plays an ideal robot that follows the commands, records features by stamp."""

    def __init__(self) -> None:
        super().__init__("faults_test")
        n = self.node
        self.q = HOME.copy()
        self.camera_on = True
        self.extra: list[Image] = []
        self.last_frame: tuple[float, int] | None = None  # (monotonic, stamp ns) of the newest
        self.sent: list[int] = []  # stamps (ns) of the good frames
        self.features: list[int] = []  # stamps (ns) of the features received
        self.status_times: list[tuple[float, str]] = []  # (receipt monotonic, safety status)
        self.rng = np.random.default_rng(0)
        self.img_pub = n.create_publisher(Image, CAMERA, SENSOR_QOS)
        self.js_pub = n.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        n.create_subscription(
            Image, "/ver/features/camera",
            lambda m: self.features.append(stamp_to_ns(m.header.stamp)), SENSOR_QOS,
        )  # fmt: skip
        n.create_subscription(
            String, "/ver/safety_status",
            lambda m: self.status_times.append((time.monotonic(), m.data)), LATCHED_QOS,
        )  # fmt: skip
        n.create_timer(1 / 15, self._publish_image)
        n.create_timer(0.01, self._publish_state)
        self.start()

    def _publish_image(self) -> None:
        if self.extra:
            self.img_pub.publish(self.extra.pop(0))
            return
        if not self.camera_on:
            return
        rgb = self.rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        now = self.node.get_clock().now()
        self.img_pub.publish(image_to_msg(rgb, now.to_msg(), "camera"))
        with self.lock:
            self.last_frame = (time.monotonic(), now.nanoseconds)
            self.sent.append(now.nanoseconds)

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

    def features_after(self, stamp_ns: int) -> int:
        return sum(s > stamp_ns for s in self.features)

    def last_change(self, since: float) -> float | None:
        """Receipt time of the last command (after ``since``) that differs from the one before."""
        with self.lock:
            cmds = [(t, q) for t, q in self.commands if t >= since]
        changes = [t for (_, a), (t, b) in zip(cmds, cmds[1:], strict=False) if np.any(a != b)]
        return changes[-1] if changes else None

    def changing(self, since: float) -> bool:
        return self.last_change(since) is not None

    def hold_span(self, after: float) -> tuple[float, float] | None:
        """(start, end) receipt times of the first hold after ``after`` (end: the next status
        that is not a hold, or now)."""
        times = list(self.status_times)
        start = next((t for t, s in times if t >= after and s.startswith("hold")), None)
        if start is None:
            return None
        end = next((t for t, s in times if t > start and not s.startswith("hold")), None)
        return start, time.monotonic() if end is None else end


def _node(module: str, env: dict, *params: str) -> subprocess.Popen:
    args = [sys.executable, "-m", module, "--ros-args"]
    for p in params:
        args += ["-p", p]
    return start_process(args, env)


def _stop(procs: list[subprocess.Popen]) -> list[str]:
    return stop_processes(procs, timeout=20)


def test_bad_frames_do_not_kill_the_encoder(ros_env, checkpoint):
    """A 0x0 rgb8 frame (and a short, an unknown and an implausibly large one) is dropped with a
    warning; the encoder keeps running and encodes the good frames that follow."""
    encoder = _node("ver_ros.encoder_node", ros_env, f"checkpoint:={checkpoint}", "threads:=1")
    io = CameraAndRobot()
    try:
        io.wait_for(lambda: len(io.features) >= 3, 120.0, "features from good frames")
        io.camera_on = False
        # the encoder idle first: its camera queue keeps one frame, so a bad frame arriving while
        # it encodes a good one is replaced by the next bad one unseen (a slow CPU saw the 0x0
        # frame never reach the callback)
        io.wait_for(lambda: io.sent[-1] in io.features, 60.0, "the last good frame encoded")
        io.extra = bad_frames()
        io.wait_for(lambda: not io.extra, 10.0, "the bad frames sent")
        after_bad = io.node.get_clock().now().nanoseconds
        io.camera_on = True
        io.wait_for(lambda: io.features_after(after_bad) >= 3, 60.0, "features after bad frames")
        assert encoder.poll() is None, "the encoder died"
        assert set(io.features) <= set(io.sent)  # only good frames became features
    finally:
        io.close()
        out = _stop([encoder])[0]
    assert "dropping a camera frame" in out and "0x0" in out


def test_arm_freezes_within_the_budget_after_the_camera_stops(ros_env, checkpoint):
    """The camera stops: the last command that still changes comes at most one staleness budget
    + one control tick + transport slack after the last frame's stamp; then the gate holds a
    frozen command. The budget is the one every node is given here: the default 0.25 s where the
    encoder keeps up with it, more where one frame takes longer to encode (a fresh-clone run on a
    2-core AMD VM never passed commands at 0.25 s: 0.26 s per frame there)."""
    ck = f"checkpoint:={checkpoint}"
    from ver_ros.eval_graph import auto_rtf

    seconds_per_frame = auto_rtf(checkpoint, threads=1)[1]  # the encoder node's model, timed here
    budget = max(DEFAULT_BUDGET.observation_s, 4 * seconds_per_frame)
    b = f"observation_budget_s:={budget}"
    procs = [
        _node("ver_ros.encoder_node", ros_env, ck, "threads:=1", b),
        _node("ver_ros.policy_node", ros_env, ck, "threads:=1", b),
        _node("ver_ros.safety_node", ros_env, "ramp_time_s:=0.3", b),
    ]
    io = CameraAndRobot()
    try:
        io.wait_for(lambda: "ok" in io.status, 180.0, "the gate passing commands")
        start = time.monotonic()
        io.wait_for(lambda: io.changing(start), 30.0, "commands changing with the camera on")
        io.camera_on = False
        t_last, _ = io.last_frame
        io.wait_for(
            lambda: io.status[-1].startswith("hold") and time.monotonic() > t_last + 2.0,
            30.0,
            "a hold after the camera stopped",
        )
        t_change = io.last_change(t_last - 1.0)
        assert t_change is not None
        late = t_change - t_last
        print(f"last change {late:.3f} s after the last frame")
        assert late <= budget + TICK_S + SLACK_S, f"commands changed {late:.3f} s after the frame"
        held = io.cmds_since(t_last + budget + TICK_S + SLACK_S)
        assert len(held) > 10 and np.ptp(held, axis=0).max() == 0.0
    finally:
        io.close()
        _stop(procs)


def test_bringup_restarts_a_killed_encoder_while_the_gate_holds(ros_env, checkpoint, tmp_path):
    """ver-bringup (process mode): the encoder is killed; the safety node holds (a frozen
    command, a named hold), ver-bringup restarts the encoder, and commands resume."""
    config = yaml.safe_load(default_config_path().read_text())
    config["/**"]["ros__parameters"]["observation_budget_s"] = 1.0  # a loaded machine is slow
    config.setdefault("safety_node", {}).setdefault("ros__parameters", {})["ramp_time_s"] = 0.3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "ver_ros.bringup", "--checkpoint", str(checkpoint),
           "--use-realsense-ros", "--config", str(tmp_path / "config.yaml")]  # fmt: skip
    bringup = start_process(cmd, ros_env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(bringup.stdout.readline, "")))
    reader.start()
    io = CameraAndRobot()

    def pid_of(word: str) -> int | None:
        found = [re.search(rf"{word} encoder_node \(pid (\d+)\)", x) for x in list(lines)]
        found = [m for m in found if m]
        return int(found[-1].group(1)) if found else None

    try:
        io.wait_for(lambda: "ok" in io.status, 180.0, "the gate passing commands")
        start = time.monotonic()
        io.wait_for(lambda: io.changing(start), 30.0, "commands changing")
        pid = pid_of("started")
        assert pid is not None, lines
        killed = time.monotonic()
        subprocess.run(["kill", "-KILL", str(pid)], check=True)
        io.wait_for(lambda: io.hold_span(killed) is not None, 30.0, "a hold after the kill")
        assert "stale" in io.status[-1], io.status[-1]
        io.wait_for(lambda: pid_of("restarted") is not None, 60.0, "ver-bringup restarting it")
        assert pid_of("restarted") != pid
        restarted = io.node.get_clock().now().nanoseconds
        io.wait_for(lambda: io.features_after(restarted) >= 3, 180.0, "features again")
        io.wait_for(lambda: io.status[-1] in ("ok", "ramping"), 60.0, "the gate passing again")
        resumed = time.monotonic()
        io.wait_for(lambda: io.changing(resumed), 30.0, "commands changing again")
        assert bringup.poll() is None, "ver-bringup stopped the graph"
        # while the gate held, the command never moved; the span is trimmed by SLACK_S at both
        # ends: status and commands are separate topics, so the first ramping command can be
        # received before the status that ends the hold (a fresh-clone run saw 1.3 mrad there)
        start, end = io.hold_span(killed)
        with io.lock:
            held = np.array([q for t, q in io.commands if start + SLACK_S <= t <= end - SLACK_S])
        assert len(held) > 10 and np.ptp(held, axis=0).max() == 0.0
    finally:
        io.close()
        _stop([bringup])
        reader.join(timeout=10)
    assert any("encoder_node exited with" in x and "restarting it" in x for x in lines), lines
