"""Recorder throughput over real DDS -> bench/results/recorder.json.

Starts ``recorder_node`` as its own process in an isolated domain, publishes camera images
(best effort, like the camera) plus joint states at a fixed rate from this process, records one
episode per case and reads the bag back. Each lost frame is attributed: ``late_sends`` (the
publisher missed its 1/30 s slot), ``lost_in_transport`` = sent - received by the recorder's
callback, ``lost_in_recorder`` = received - written (writer queue full), and the bag is counted
with the rosbags reader. Every case runs under two Fast DDS transports, each in its own worker
process (the profile is read at ``rclpy.init``): ``default`` (built-in UDPv4 + 512 KB shared
memory segment) and ``large_shm`` (``ver_ros.transport.write_fastdds_profile``).

    .venv/bin/python bench/bench_recorder.py [--seconds 8] [--transports default large_shm]
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
        n, late = int(args.seconds * hz), 0
        t0 = time.monotonic()
        for i in range(n):
            late += time.monotonic() > t0 + (i + 1) / hz
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
    received = summary["received"].get(img_topic, 0)
    return {
        "transport": args.transport, "image": f"{w}x{h}", "rate_hz": hz, "compressed": compressed,
        "storage": storage, "published_frames": n, "late_sends": late,
        "received_frames": received, "recorded_frames": got.get(img_topic, 0),
        "dropped_frames": n - got.get(img_topic, 0), "lost_in_transport": n - received,
        "lost_in_recorder": received - got.get(img_topic, 0),
        "writer_max_backlog": summary["max_backlog"],
        "dropped_joint_states": n - got.get("/joint_states", 0),
        "frames_per_s": round(got.get(img_topic, 0) / pub_s, 1), "bag_MB": round(size / 1e6, 2),
        "MB_per_s": round(size / 1e6 / pub_s, 2),
    }  # fmt: skip


def worker(args) -> list[dict]:
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    out = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    if args.transport == "large_shm":
        from ver_ros.transport import shm_segment_bytes, write_fastdds_profile

        profile = write_fastdds_profile(out / "fastdds.xml", shm_segment_bytes(640, 480))
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    else:
        os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    import rclpy

    rclpy.init()
    node = rclpy.create_node("bench_recorder_pub")
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
            print(json.dumps(rows[-1]), flush=True)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        shutil.rmtree(out, ignore_errors=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--transports", nargs="+", default=["default", "large_shm"])
    p.add_argument("--transport", help=argparse.SUPPRESS)  # worker mode
    args = p.parse_args()
    if args.transport:
        print("ROWS " + json.dumps(worker(args)), flush=True)
        return
    rows = []
    for transport in args.transports:
        cmd = [sys.executable, __file__, "--seconds", str(args.seconds), "--transport", transport]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        print(done.stdout[-4000:], done.stderr[-2000:] if done.returncode else "", flush=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("ROWS ")]
        if done.returncode or not lines:
            raise SystemExit(f"worker for {transport} failed (rc {done.returncode})")
        rows += json.loads(lines[-1][5:])
    load = os.getloadavg()
    result = {
        "cpu_count": os.cpu_count(),
        "load_avg_1_5_15_at_end": [round(x, 2) for x in load],
        "seconds_per_case": args.seconds,
        "cases": rows,
    }
    path = Path(__file__).parent / "results" / "recorder.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
