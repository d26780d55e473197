"""What the deployment ROS tests share: an in-test rclpy node in its own context and thread that
records the gated arm commands and the safety status, and a random task checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from ver_ros.qos import COMMAND_QOS, LATCHED_QOS

JOINTS = [f"fr3_joint{i}" for i in range(1, 8)]
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


class TestNode:
    """Subclasses add their publishers and subscriptions in ``__init__``, then call ``start()``.

    ``commands``: (receipt monotonic time, (7,) targets) of every command on the arm topic;
    ``status``: every safety status string, in order.
    """

    __test__ = False  # not a pytest test class
    poll_s = 0.05

    def __init__(self, name: str) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = Node(name, context=self.ctx)
        self.lock = threading.Lock()
        self.commands: list[tuple[float, np.ndarray]] = []
        self.status: list[str] = []
        self.node.create_subscription(
            JointTrajectory, "/fr3_arm_controller/joint_trajectory", self._on_cmd, COMMAND_QOS
        )
        self.node.create_subscription(
            String, "/ver/safety_status", lambda m: self.status.append(m.data), LATCHED_QOS
        )
        self.executor = SingleThreadedExecutor(context=self.ctx)

    def start(self) -> None:
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_cmd(self, msg: JointTrajectory) -> None:
        q = np.array(msg.points[0].positions)
        with self.lock:
            self.commands.append((time.monotonic(), q))
        self.on_command(q)

    def on_command(self, q: np.ndarray) -> None:
        """Hook: a robot played by the test follows the command here."""

    def since(self, series: list, t: float) -> np.ndarray:
        with self.lock:
            return np.array([v for (tr, v) in series if tr >= t])

    def cmds_since(self, t: float) -> np.ndarray:
        return self.since(self.commands, t)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(self.poll_s)
        raise AssertionError(f"timed out waiting for {what}; status history {self.status[-5:]}")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def random_task_checkpoint(path, dense: bool = False, image_topics: list[str] | None = None):
    """An untrained (random) task checkpoint: the graph's plumbing, not its skill, is tested.
    ``dense``: over a dense student (moe_blocks=0, routing 'dense'), the ablation's backbone.
    ``image_topics``: its cameras (default: the scene camera)."""
    import torch

    from ver_core.policy import TaskConfig, TaskPolicy
    from ver_core.router import RouterConfig

    torch.manual_seed(0)
    extra = {}
    if dense:
        extra = {"model_overrides": {"moe_blocks": 0}, "router": RouterConfig(routing="dense")}
    if image_topics:
        extra["image_topics"] = list(image_topics)
    TaskPolicy.build(TaskConfig(chunk_len=16, control_rate_hz=10.0, **extra)).save_pretrained(path)
    return path


def start_process(cmd: list[str], env: dict) -> subprocess.Popen:
    """A node or ``ver-bringup`` process with its output captured (text), in a process group of
    its own, so that ``stop_processes`` can reach the children it starts."""
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop_processes(
    procs: list[subprocess.Popen], timeout: float = 20.0, sig: int = signal.SIGINT
) -> list[str]:
    """Ctrl-C each process (``sig``), wait up to ``timeout`` s for it to exit, then SIGKILL its
    whole process group, and return each one's output.

    The group kill matters: a process killed alone leaves its children (ver-bringup's node
    processes) running with the output pipe open, and reading the output would then wait for
    them forever (a fresh-clone run hit pytest's 900 s timeout that way)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    outs = []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(
                f"[test] pid {p.pid} did not exit {timeout:g} s after signal {sig}: killing its group"
            )
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, _ = p.communicate(timeout=30)
        print((out or "")[-3000:])
        outs.append(out or "")
    return outs
