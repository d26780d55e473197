"""Recorder throughput over real DDS -> bench/results/recorder.json.

Starts ``recorder_node`` as its own process in an isolated domain, publishes camera images
(best effort, like the camera) plus joint states at a fixed rate from this process, records one
episode per case and reads the bag back: frames/s and MB/s written, dropped = published - recorded.

    .venv/bin/python bench/bench_recorder.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run_case(
    node, rclpy, args, out: Path, w: int, h: int, hz: float, compressed: bool, storage: str
) -> dict:
    from sensor_msgs.msg import Image, JointState
    from std_srvs.srv import Trigger

    from ver_ros.conversions import image_to_msg, joint_state_to_msg
    from ver_ros.qos import SENSOR_QOS

    name = f"rec_{w}x{h}_{'jpeg' if compressed else 'raw'}_{storage}"
    cmd = [sys.executable, "-m", "ver_ros.recorder_node", "--ros-args", "-r", f"__node:={name}",
           "-p", f"output_dir:={out / name}", "-p", f"compressed:={str(compressed).lower()}", "-p", f"storage:={storage}"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    img_pub = node.create_publisher(Image, "/camera/camera/color/image_raw", SENSOR_QOS)
    js_pub = node.create_publisher(JointState, "/joint_states", SENSOR_QOS)

    def call(srv: str) -> tuple[bool, str]:
        cli = node.create_client(Trigger, f"/{name}/{srv}")
        assert cli.wait_for_service(timeout_sec=60), f"{name} did not come up"
        fut = cli.call_async(Trigger.Request())
        rclpy.spin_until_future_complete(node, fut, timeout_sec=60)
        node.destroy_client(cli)
        return fut.result().success, fut.result().message

    try:
        ok, msg = call("start")
        assert ok, msg
        t_sub = time.monotonic() + 2.0  # discovery of the recorder's subscriptions
        while time.monotonic() < t_sub and img_pub.get_subscription_count() == 0:
            rclpy.spin_once(node, timeout_sec=0.05)
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
        n = int(args.seconds * hz)
        t0 = time.monotonic()
        for i in range(n):
            stamp = time.time_ns()
            img_pub.publish(image_to_msg(frames[i % 4], stamp, "cam"))
            js_pub.publish(
                joint_state_to_msg([f"fr3_joint{k}" for k in range(1, 8)], np.zeros(7), stamp)
            )
            rclpy.spin_once(node, timeout_sec=max(0.0, t0 + (i + 1) / hz - time.monotonic()))
            while time.monotonic() < t0 + (i + 1) / hz:
                time.sleep(0.001)
        pub_s = time.monotonic() - t0
        rclpy.spin_once(node, timeout_sec=1.0)
        time.sleep(1.0)
        ok, summary = call("stop")
        assert ok, summary
        summary = json.loads(summary)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        node.destroy_publisher(img_pub)
        node.destroy_publisher(js_pub)
    from rosbags.rosbag2 import Reader

    with Reader(summary["path"]) as reader:
        got = {c.topic: c.msgcount for c in reader.connections}
    img_topic = "/camera/camera/color/image_raw" + ("/compressed" if compressed else "")
    size = sum(f.stat().st_size for f in Path(summary["path"]).iterdir())
    return {
        "image": f"{w}x{h}", "rate_hz": hz, "compressed": compressed, "storage": storage,
        "published_frames": n, "recorded_frames": got.get(img_topic, 0), "dropped_frames": n - got.get(img_topic, 0),
        "dropped_joint_states": n - got.get("/joint_states", 0),
        "frames_per_s": round(got.get(img_topic, 0) / pub_s, 1), "bag_MB": round(size / 1e6, 2),
        "MB_per_s": round(size / 1e6 / pub_s, 2),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args()
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import rclpy

    rclpy.init()
    node = rclpy.create_node("bench_recorder_pub")
    out = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    cases = [
        (224, 224, 30.0, False, "mcap"),
        (640, 480, 30.0, False, "mcap"),
        (640, 480, 30.0, True, "mcap"),
        (224, 224, 30.0, False, "sqlite3"),
    ]
    rows = []
    try:
        for case in cases:
            rows.append(run_case(node, rclpy, args, out, *case))
            print(json.dumps(rows[-1]))
    finally:
        node.destroy_node()
        rclpy.shutdown()
        shutil.rmtree(out, ignore_errors=True)
    result = {"cpu_count": os.cpu_count(), "seconds_per_case": args.seconds, "cases": rows}
    path = Path(__file__).parent / "results" / "recorder.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
