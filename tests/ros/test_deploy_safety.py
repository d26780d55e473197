"""safety_node as a real process: the test plays robot (joint states) and policy (chunks).

Checks on the command topic: out-of-limit targets clamped, NaN and stale chunks never reach it,
e-stop freezes it within one control period until release and ramp, a dead policy makes it hold;
and the findings of issue 14 reproduced: a measured pose outside the limits (joint 4 at +1.0 rad)
is a named hold and never commanded, leaving an e-stop after the arm was moved 30 mrad starts at
the measured pose. Every check waits for a condition (a loaded machine ticks slower); none counts
messages after a fixed sleep.
"""

from __future__ import annotations

import signal
import sys
import time

import numpy as np
import pytest
from harness import HOME, JOINTS, TestNode, start_process, stop_processes
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory

from ver_core.deploy import ActionChunk, uniform_offsets
from ver_core.safety import FR3_LIMITS
from ver_ros.policy_node import chunk_to_msg
from ver_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

pytestmark = pytest.mark.ros

RATE = 50.0
MARGIN = 0.05


class FakeRobotAndPolicy(TestNode):
    """In-test rclpy node: ideal robot that follows commands + a chunk feeder."""

    poll_s = 0.02

    def __init__(self) -> None:
        super().__init__("deploy_test")
        self.q = HOME.copy()
        self.target: np.ndarray | None = None  # chunk target fed at 10 Hz when set
        self.stamp_offset = 0.0  # s added to chunk stamps (negative = stale)
        self.feed_joint_states = True
        self.follow = True  # the ideal robot tracks every command; False: it stays where it is
        n = self.node
        self.js_pub = n.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        self.chunk_pub = n.create_publisher(JointTrajectory, "/ver/action_chunk", COMMAND_QOS)
        self.estop_pub = n.create_publisher(Bool, "/ver/e_stop", LATCHED_QOS)
        n.create_timer(0.01, self._publish_state)
        n.create_timer(0.1, self._feed)
        self.start()

    def on_command(self, q: np.ndarray) -> None:
        with self.lock:
            if self.follow and np.all(np.isfinite(q)):
                self.q = q  # ideal tracking

    def frozen_after(self, t: float, n: int = 10, timeout: float = 20.0) -> np.ndarray:
        """The first ``n`` commands received after ``t`` (waiting for them)."""
        self.wait_for(lambda: len(self.cmds_since(t)) >= n, timeout, f"{n} commands")
        return self.cmds_since(t)[:n]

    def _publish_state(self) -> None:
        if not self.feed_joint_states:
            return
        msg = JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.name = [*JOINTS, "fr3_finger_joint1", "fr3_finger_joint2"]
        with self.lock:
            msg.position = [*self.q.tolist(), 0.02, 0.02]
        self.js_pub.publish(msg)

    def _feed(self) -> None:
        if self.target is None:
            return
        now = self.node.get_clock().now().nanoseconds * 1e-9 + self.stamp_offset
        self.send_chunk(self.target, now)

    def send_chunk(self, target: np.ndarray, stamp: float) -> None:
        actions = np.tile(np.append(target, 0.04), (10, 1))  # (H, 8)
        self.chunk_pub.publish(
            chunk_to_msg(ActionChunk(stamp, uniform_offsets(10, 10.0), actions), JOINTS)
        )


@pytest.fixture
def safety_proc(ros_env):
    cmd = [
        sys.executable, "-m", "ver_ros.safety_node", "--ros-args",
        "-p", f"control_rate_hz:={RATE}", "-p", "ramp_time_s:=0.3", "-p", f"position_margin:={MARGIN}",
        "-p", "observation_budget_s:=0.6",
    ]  # fmt: skip
    proc = start_process(cmd, ros_env)
    yield proc
    stop_processes([proc], timeout=10, sig=signal.SIGTERM)


def test_safety_node_gates_every_command(safety_proc):
    io = FakeRobotAndPolicy()
    lo, hi = FR3_LIMITS.lower + MARGIN, FR3_LIMITS.upper - MARGIN
    period = 1.0 / RATE
    try:
        io.wait_for(lambda: len(io.commands) > 5, 30.0, "commands while holding")
        assert any("no_chunk" in s for s in io.status)
        held = io.cmds_since(0.0)
        np.testing.assert_allclose(held[-1], HOME, atol=1e-9)  # holds exactly where the robot is

        # 1. out-of-limit target: clamped to limits minus margin, never beyond
        target = HOME.copy()
        target[0], target[5] = 10.0, -10.0
        io.target = target
        io.wait_for(lambda: abs(io.q[0] - hi[0]) < 1e-6, 15.0, "joint 1 reaching its clamped limit")
        cmds = io.cmds_since(0.0)
        assert np.all(cmds >= lo - 1e-9) and np.all(cmds <= hi + 1e-9)
        assert np.all(np.abs(np.diff(cmds, axis=0)) <= 0.02 + 1e-9)  # per-step cap

        # 2. NaN chunk: nothing from it reaches the robot, the gate holds
        io.target = None
        bad = HOME.copy()
        bad[2] = np.nan
        t_nan = time.monotonic()
        io.send_chunk(bad, io.node.get_clock().now().nanoseconds * 1e-9)
        io.wait_for(lambda: any("nan_action" in s for s in io.status), 5.0, "nan_action hold")
        t_held = time.monotonic()
        held = io.frozen_after(t_held)
        after = io.cmds_since(t_nan)
        assert (
            np.all(np.isfinite(after)) and np.all(after >= lo - 1e-9) and np.all(after <= hi + 1e-9)
        )
        assert np.ptp(held, axis=0).max() == 0.0

        # 3. stale observation (image 2 s old): rejected, still holding
        t_stale = time.monotonic()
        io.send_chunk(HOME, io.node.get_clock().now().nanoseconds * 1e-9 - 2.0)
        io.wait_for(lambda: any("stale_observation" in s for s in io.status), 5.0, "stale hold")
        assert np.ptp(io.frozen_after(t_stale), axis=0).max() == 0.0

        # 4. e-stop while moving: frozen within one control period (+ DDS slack), until release
        moving_target = io.q + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5])
        io.target = moving_target
        io.wait_for(lambda: io.status[-1] == "ok", 10.0, "moving again")
        t_stop = time.monotonic()
        io.estop_pub.publish(Bool(data=True))
        io.wait_for(lambda: any("e_stop" in s for s in io.status), 5.0, "e_stop status")
        frozen = io.frozen_after(t_stop + period + 0.05, n=20)
        assert np.ptp(frozen, axis=0).max() == 0.0, "command moved during e-stop"
        t_release = time.monotonic()
        io.estop_pub.publish(Bool(data=False))
        io.wait_for(lambda: io.status[-1] == "ok", 10.0, "ramp completed after release")
        assert "ramping" in io.status[-3:]
        ramp = io.cmds_since(t_release)
        steps = np.abs(np.diff(np.vstack([frozen[-1], ramp]), axis=0))[:, 6]
        assert steps[0] <= 0.02 * (period / 0.3) * 1.5 + 1e-9  # first step ~ 1/15 of the cap
        assert steps.max() <= 0.02 + 1e-9

        # 5. dead policy (no more chunks): heartbeat hold, frozen command
        io.target = None
        io.wait_for(lambda: "stale_observation" in io.status[-1], 5.0, "heartbeat hold")
        assert np.ptp(io.frozen_after(time.monotonic()), axis=0).max() == 0.0
    finally:
        io.close()


def test_measured_pose_outside_the_limits_is_held_and_never_commanded(safety_proc):
    """Issue 14 finding 1: /joint_states reported joint 4 at +1.0 rad (FR3 upper limit -0.1518);
    the gate restarted from it after a chunk-timeout hold and commanded +0.9996 rad for 1.6 s."""
    io = FakeRobotAndPolicy()
    lo, hi = FR3_LIMITS.lower + MARGIN, FR3_LIMITS.upper - MARGIN
    try:
        io.target = HOME.copy()
        io.wait_for(lambda: io.status and io.status[-1] == "ok", 20.0, "gate passing commands")
        t_bad = time.monotonic()
        with io.lock:
            io.follow = False
            io.q = HOME.copy()
            io.q[3] = 1.0  # outside the FR3 range
        io.wait_for(
            lambda: "joint_state_out_of_limits" in io.status[-1], 5.0, "a hold naming the state"
        )
        io.target = None  # the policy stops: an ordinary stale-observation hold on top
        io.wait_for(lambda: "stale_observation" in io.status[-1], 5.0, "stale observation hold")
        io.target = HOME.copy()  # chunks again; the measured pose is still out of range
        t_again = time.monotonic()
        held = io.frozen_after(t_again, n=40)
        assert "joint_state_out_of_limits" in io.status[-1]
        cmds = io.cmds_since(t_bad)
        assert np.all(cmds >= lo - 1e-9) and np.all(cmds <= hi + 1e-9), "commanded out of limits"
        assert np.ptp(held, axis=0).max() == 0.0
        # the arm back in range (two readings that agree): commands resume from it
        with io.lock:
            io.q = HOME.copy()
            io.follow = True
        io.wait_for(lambda: io.status[-1] in ("ok", "ramping"), 10.0, "gate passing again")
        assert np.all(io.cmds_since(t_bad) <= hi + 1e-9)
    finally:
        io.close()


def test_leaving_an_estop_starts_from_where_the_arm_was_moved(safety_proc):
    """Issue 14 finding 2: moved 30 mrad under e-stop, the first command after release was the old
    held pose (a 1.5 rad/s jump in one 20 ms tick)."""
    io = FakeRobotAndPolicy()
    try:
        io.target = HOME.copy()
        io.wait_for(lambda: io.status and io.status[-1] == "ok", 20.0, "gate passing commands")
        io.estop_pub.publish(Bool(data=True))
        io.wait_for(lambda: "e_stop" in io.status[-1], 5.0, "e_stop hold")
        held = io.frozen_after(time.monotonic(), n=5)[-1]
        with io.lock:
            io.follow = False
            io.q = held + 0.03  # moved by hand while stopped
        moved = held + 0.03
        io.target = moved.copy()
        time.sleep(0.3)  # only lets the moved pose reach the node; nothing is counted
        t_release = time.monotonic()
        io.estop_pub.publish(Bool(data=False))
        # Commands the gate sent before the release reached it are still the held pose (a loaded
        # machine can deliver several after t_release); the first one that is not is the gate's
        # first command after leaving the hold. With the bug it ramps from the held pose, 30 mrad
        # from where the arm is; fixed, it starts from the measured pose.
        io.wait_for(
            lambda: any(np.any(c != held) for c in io.cmds_since(t_release)), 20.0,
            "a command other than the held pose after release",
        )  # fmt: skip
        after = io.cmds_since(t_release)
        first = next(c for c in after if np.any(c != held))
        assert np.all(np.abs(first - moved) <= 0.02 + 1e-9), f"jump on release: {first - moved}"
    finally:
        io.close()


def test_forward_controller_mode_with_panda_limits(ros_env):
    """controller_type forward: Float64MultiArray commands, Panda table, clamped target."""
    from std_msgs.msg import Float64, Float64MultiArray

    from ver_core.safety import PANDA_LIMITS

    cmd = [
        sys.executable, "-m", "ver_ros.safety_node", "--ros-args", "-p", "controller_type:=forward",
        "-p", "robot_type:=panda", "-p", "ramp_time_s:=0.0", "-p", "observation_budget_s:=5.0",
    ]  # fmt: skip
    proc = start_process(cmd, ros_env)
    io = FakeRobotAndPolicy()
    forward: list[np.ndarray] = []
    gripper: list[float] = []
    io.node.create_subscription(
        Float64MultiArray,
        "/forward_position_controller/commands",
        lambda m: forward.append(np.array(m.data)),
        COMMAND_QOS,
    )
    io.node.create_subscription(
        Float64, "/gripper/command", lambda m: gripper.append(m.data), COMMAND_QOS
    )
    try:
        io.wait_for(lambda: len(forward) > 3, 30.0, "forward commands")
        start = forward[-1]
        target = start.copy()
        target[3] = 5.0  # joint 4 of the Panda tops out at -0.0698
        io.send_chunk(target, io.node.get_clock().now().nanoseconds * 1e-9)
        io.wait_for(lambda: forward[-1][3] > start[3] + 0.1, 10.0, "joint 4 moving")
        arr = np.stack(forward)
        assert arr.shape[1] == 7
        assert np.all(arr[:, 3] <= PANDA_LIMITS.upper[3] - MARGIN + 1e-9)
        assert gripper and 0.0 <= min(gripper) and max(gripper) <= 0.08
        assert not io.commands  # nothing on the trajectory topic in forward mode
    finally:
        io.close()
        stop_processes([proc], timeout=10, sig=signal.SIGTERM)
