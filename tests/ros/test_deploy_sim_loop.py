"""Closed loop in the simulator through ver-bringup: sim camera -> encoder -> policy -> safety ->
sim arm. Checks the arm moves under gated commands that stay inside the limits, and that the
e-stop freezes the arm command while the simulated robot keeps publishing."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import yaml
from harness import JOINTS, TestNode, random_task_checkpoint, start_process, stop_processes
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from ver_core.safety import FR3_LIMITS
from ver_ros.graph import default_config_path
from ver_ros.qos import LATCHED_QOS, SENSOR_QOS

pytestmark = [pytest.mark.ros, pytest.mark.e2e]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {
        "library": random_task_checkpoint(tmp_path_factory.mktemp("task")),
        "dense": random_task_checkpoint(tmp_path_factory.mktemp("dense"), dense=True),
        "two_cameras": random_task_checkpoint(
            tmp_path_factory.mktemp("two"),
            image_topics=[
                "/camera/camera/color/image_raw",
                "/wrist_camera/camera/color/image_raw",
            ],
        ),
    }


@pytest.fixture
def small_config(tmp_path):
    """The shipped config plus a small, slower sim camera (2 shared CPU cores here)."""
    data = yaml.safe_load(default_config_path().read_text())
    data["sim_node"] = {
        "ros__parameters": {
            "width": 160,
            "height": 120,
            "wrist_width": 160,
            "wrist_height": 120,
            "image_rate_hz": 10.0,
            "seed": 3,
        }
    }
    data["/**"]["ros__parameters"].update(observation_budget_s=1.5)
    data["encoder_node"]["ros__parameters"].update(threads=1)
    data["policy_node"]["ros__parameters"].update(threads=1)
    data["safety_node"]["ros__parameters"].update(ramp_time_s=0.3)
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Watcher(TestNode):
    """Watches the simulated robot's joints and the gated commands; holds the e-stop."""

    def __init__(self) -> None:
        super().__init__("sim_loop_test")
        self.q: list[tuple[float, np.ndarray]] = []
        self.node.create_subscription(JointState, "/joint_states", self._on_js, SENSOR_QOS)
        self.estop = self.node.create_publisher(Bool, "/ver/e_stop", LATCHED_QOS)
        self.start()

    def _on_js(self, msg: JointState) -> None:
        idx = {name: i for i, name in enumerate(msg.name)}
        with self.lock:
            self.q.append((time.monotonic(), np.array([msg.position[idx[j]] for j in JOINTS])))


@pytest.mark.parametrize(
    ("composed", "model"),
    [(False, "library"), (True, "library"), (False, "dense"), (False, "two_cameras")],
    ids=["processes", "composed", "dense_student", "two_cameras"],
)
def test_sim_closed_loop_through_bringup(
    ros_env, checkpoints, small_config, composed, model, tmp_path
):
    """The graph leaves no scratch files of its own behind in its TMPDIR after the stop.
    ``dense_student``: the ablation's backbone (no MoE layers) deploys through the same graph.
    ``two_cameras``: the simulator renders scene and wrist camera, the encoder encodes both in one
    pass and publishes each on its own topic, and the policy acts only on complete view sets (the
    gate says ``ok`` only when the policy has acted: a missing view is a named hold)."""
    checkpoint = checkpoints[model]
    cmd = [sys.executable, "-m", "ver_ros.bringup", "--checkpoint", str(checkpoint), "--sim",
           "--backend", "onnxruntime", "--config", str(small_config)]  # fmt: skip
    if composed:
        cmd.append("--composed")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = start_process(cmd, {**ros_env, "TMPDIR": str(scratch)})
    w = Watcher()
    features: dict[str, int] = {"camera": 0, "wrist_camera": 0}
    if model == "two_cameras":
        from sensor_msgs.msg import Image

        def count(cam):
            def cb(_msg):
                with w.lock:
                    features[cam] += 1

            return cb

        for cam in features:
            w.node.create_subscription(Image, f"/ver/features/{cam}", count(cam), SENSOR_QOS)
    try:
        w.wait_for(lambda: len(w.q) > 0, 90.0, "sim joint states")
        q_start = w.since(w.q, 0.0)[0]
        w.wait_for(lambda: "ok" in w.status, 150.0, "the gate passing policy commands")
        if model == "two_cameras":
            w.wait_for(lambda: min(features.values()) > 0, 60.0, "features of both cameras")
        t0 = time.monotonic()
        # a condition, not a count after a fixed sleep: a loaded machine ticks slower
        w.wait_for(lambda: len(w.since(w.commands, t0)) >= 20, 60.0, "20 gated commands")
        cmds = w.since(w.commands, t0)
        assert np.all(np.isfinite(cmds))
        lo, hi = FR3_LIMITS.lower + 0.05, FR3_LIMITS.upper - 0.05
        assert np.all(cmds >= lo - 1e-9) and np.all(cmds <= hi + 1e-9)
        q_now = w.since(w.q, 0.0)[-1]
        assert np.abs(q_now - q_start).max() > 0.05, "the simulated arm did not move"

        w.estop.publish(Bool(data=True))
        w.wait_for(lambda: "e_stop" in w.status[-1], 10.0, "e_stop hold")
        t_stop = time.monotonic()
        w.wait_for(lambda: len(w.since(w.commands, t_stop)) >= 10, 60.0, "10 held commands")
        frozen = w.since(w.commands, t_stop)
        assert np.ptp(frozen, axis=0).max() == 0.0
    finally:
        w.close()
        stop_processes([proc], timeout=30)
    assert proc.returncode == 0, "ver-bringup did not leave cleanly after Ctrl-C"
    # ours all start with ver_ (ONNX Runtime keeps a 51-byte `.ses` id file there)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("ver_")] == []
