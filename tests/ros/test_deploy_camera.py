"""camera_node as a process: no RealSense -> clear error and retries; image folder replay."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
from PIL import Image as PILImage
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from ver_ros.conversions import msg_to_rgb
from ver_ros.qos import SENSOR_QOS

pytestmark = pytest.mark.ros


def _run(env, *params, seconds: float):
    args = [sys.executable, "-m", "ver_ros.camera_node", "--ros-args"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_realsense_missing_is_reported_and_retried(ros_env):
    pytest.importorskip("pyrealsense2")
    proc = _run(ros_env, "source:=realsense", "retry_period_s:=0.5", seconds=4)
    time.sleep(4.0)
    alive = proc.poll() is None
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    assert alive, f"camera_node exited without a camera:\n{out}"
    assert "camera unavailable" in out and "No device connected" in out
    assert out.count("camera unavailable") == 1  # logged once, retried silently


def test_image_folder_replay_publishes(ros_env, tmp_path):
    for i in range(3):
        PILImage.fromarray(np.full((48, 64, 3), 50 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    proc = _run(ros_env, "source:=images", f"path:={tmp_path}", "fps:=20", seconds=0)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Node("camera_test", context=ctx)
    images, infos = [], []
    node.create_subscription(Image, "/camera/camera/color/image_raw", images.append, SENSOR_QOS)
    node.create_subscription(
        CameraInfo, "/camera/camera/color/camera_info", infos.append, SENSOR_QOS
    )
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    try:
        deadline = time.monotonic() + 30
        while len(images) < 10 and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.1)
        assert len(images) >= 10 and infos
        rgb = msg_to_rgb(images[-1])
        assert rgb.shape == (48, 64, 3) and rgb[0, 0, 0] in (0, 50, 100)
        assert infos[-1].width == 64 and infos[-1].k[0] > 0
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        proc.terminate()
        proc.communicate(timeout=10)
