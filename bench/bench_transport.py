"""Camera frames between processes: delivered / sent per frame size, with and without the profile.

A camera process publishes raw rgb8 frames (640x480, 1280x720, 1920x1080) at 30 Hz, best
effort (``SENSOR_QOS``, as camera drivers do); a subscriber process takes them as the encoder
node does (best effort, depth 1) and counts them, with each frame's age on arrival (stamp ->
callback). Each case runs in a fresh pair of processes in a random localhost-only ROS domain:

- ``default``: no ``FASTDDS_DEFAULT_PROFILES_FILE`` (Fast DDS built-in transports, 512 KB SHM);
- ``shipped_profile``: the deployment graph's ``config/fastdds_large_frames.xml``
  (``ver_ros.transport``), as ``ver-bringup`` and the launch file set it.

Writes bench/results/transport.json (the 1-minute load average beside every case).

    .venv/bin/python bench/bench_transport.py [--seconds 10] [--rate 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((640, 480), (1280, 720), (1920, 1080))
TOPIC = "/camera/camera/color/image_raw"


def publish(width: int, height: int, frames: int, rate: float) -> dict:
    """Camera role: wait for the subscriber, publish ``frames`` frames at ``rate``."""
    import array

    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    from ver_ros.conversions import image_to_msg
    from ver_ros.qos import SENSOR_QOS

    rclpy.init()
    node = rclpy.create_node("bench_camera")
    pub = node.create_publisher(Image, TOPIC, SENSOR_QOS)
    rng = np.random.default_rng(0)
    msgs = [
        image_to_msg(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), 0, "camera")
        for _ in range(4)
    ]
    for m in msgs:  # rclpy keeps array.array data as is: no per-publish conversion
        assert isinstance(m.data, array.array)
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let discovery settle on both sides
    period, late = 1.0 / rate, 0
    start = time.perf_counter()
    for i in range(frames):
        due = start + i * period
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif wait < -period:
            late += 1
        msg = msgs[i % len(msgs)]
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = str(i)
        pub.publish(msg)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.shutdown()
    return {"sent": frames, "late_sends": late}


def subscribe(idle_s: float) -> dict:
    """Encoder role: best effort depth 1; count frames until ``idle_s`` without one."""
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from ver_ros.conversions import stamp_to_ns
    from ver_ros.qos import SENSOR_QOS

    rclpy.init()
    node = rclpy.create_node("bench_encoder_side")
    got: dict[int, float] = {}
    last = [time.monotonic() + 60.0]  # generous: discovery and the publisher's start

    def on_image(msg: Image) -> None:
        age = node.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)
        if len(msg.data) == msg.height * msg.step:
            got[int(msg.header.frame_id)] = age * 1e-6
        last[0] = time.monotonic()

    node.create_subscription(Image, TOPIC, on_image, SENSOR_QOS)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    while time.monotonic() - last[0] < idle_s:
        ex.spin_once(timeout_sec=0.05)
    ages = np.array(list(got.values())) if got else np.zeros(1)
    node.destroy_node()
    rclpy.shutdown()
    return {
        "delivered": len(got),
        "age_p50_ms": round(float(np.percentile(ages, 50)), 2),
        "age_p99_ms": round(float(np.percentile(ages, 99)), 2),
        "age_max_ms": round(float(ages.max()), 2),
    }


def run_case(width: int, height: int, profile: str | None, seconds: float, rate: float) -> dict:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(random.randint(1, 200))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    me = [sys.executable, str(Path(__file__).resolve())]
    frames = int(seconds * rate)
    load = os.getloadavg()[0]
    sub = subprocess.Popen([*me, "--role", "sub"], env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    pub = subprocess.run(
        [*me, "--role", "pub", "--size", f"{width}x{height}", "--frames", str(frames),
         "--rate", str(rate)],
        env=env, capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    out, _ = sub.communicate(timeout=120)
    sent = json.loads(pub.stdout.strip().splitlines()[-1])
    got = json.loads(out.strip().splitlines()[-1])
    return {
        "image": f"{width}x{height} rgb8",
        "frame_MB": round(width * height * 3 / 1e6, 2),
        **sent,
        **got,
        "delivered_over_sent": round(got["delivered"] / sent["sent"], 4),
        "loadavg_1min_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=["pub", "sub"], help=argparse.SUPPRESS)
    ap.add_argument("--size", default="640x480", help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=10.0, help="publishing time per case")
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate (Hz)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "transport.json")
    args = ap.parse_args()
    if args.role == "pub":
        w, h = (int(v) for v in args.size.split("x"))
        print(json.dumps(publish(w, h, args.frames, args.rate)), flush=True)
        return 0
    if args.role == "sub":
        print(json.dumps(subscribe(idle_s=3.0)), flush=True)
        return 0
    from ver_ros.transport import default_profile_path

    shipped = str(default_profile_path())
    cases = []
    for name, profile in (("default", None), ("shipped_profile", shipped)):
        for w, h in SIZES:
            row = {"transport": name, **run_case(w, h, profile, args.seconds, args.rate)}
            print(json.dumps(row), flush=True)
            cases.append(row)
    result = {
        "what": "raw rgb8 frames, camera process -> subscriber process (best effort, depth 1), "
        "delivered / sent",
        "rate_hz": args.rate,
        "seconds_per_case": args.seconds,
        "profile": shipped,
        "cpu_count": os.cpu_count(),
        "note": "shared 2-core development VM; the load average is beside each case",
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
