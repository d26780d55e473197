"""Does perception starve the safety gate? Its tick intervals under full perception load.

Runs the deployment graph with ``ver-bringup`` over a random task checkpoint, in process mode,
in composed mode (the safety node in a process of its own) and in composed mode with the safety
node in the same process (``--compose-safety``: its own executor thread), while the encoder is
kept busy: this process plays a 640x480 rgb8 camera
at 30 Hz (more than the encoder can take on this CPU: it always has a frame waiting) and an
ideal robot on /joint_states (``--source camera``, the default; wall clock), or the graph runs
the MuJoCo simulator (``--source sim``, ``ver-bringup --sim``; the gate then ticks on sim time,
so its rate is also given per simulated second, with the gaps between /clock messages: the
simulator advances its clock in steps from the loop that also renders, so a timer on sim time
skips or bunches ticks around each render). The safety node publishes one arm command per
tick (also while it holds), so the intervals between the commands arriving here are its tick
intervals plus this subscriber's own jitter (an upper bound on the gate's).

Writes bench/results/gate.json: per mode the tick intervals (p50 / p99 / max ms), ticks per
second and their fraction of the configured 50 Hz (goal: >= 95%), the encoder's rate (feature
sets per second) and the 1-minute load average.

    .venv/bin/python bench/bench_gate.py [--seconds 30] [--modes processes composed ...]
                                         [--source camera|sim]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE_HZ = 50.0
MODES = {  # mode -> ver-bringup flags
    "processes": [],
    "composed": ["--composed"],  # the safety node in a process of its own (the default)
    "composed_one_process": ["--composed", "--compose-safety"],  # its own executor thread
}


class Probe:
    """Camera + robot (``--source camera``) and the recorder of commands, features and /clock."""

    def __init__(self, camera: bool) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from trajectory_msgs.msg import JointTrajectory

        from ver_ros.conversions import image_to_msg, stamp_to_ns
        from ver_ros.qos import COMMAND_QOS, SENSOR_QOS

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = n = Node("bench_gate_probe", context=self.ctx)
        self.commands: list[float] = []
        self.features: list[float] = []
        self.sim_clock: list[tuple[float, float]] = []  # (wall, sim) seconds
        self.q = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]

        def on_cmd(msg: JointTrajectory) -> None:
            self.commands.append(time.monotonic())
            self.q = list(msg.points[0].positions)

        n.create_subscription(
            JointTrajectory, "/fr3_arm_controller/joint_trajectory", on_cmd, COMMAND_QOS
        )
        n.create_subscription(
            Image, "/ver/features/camera", lambda m: self.features.append(time.monotonic()),
            SENSOR_QOS,
        )  # fmt: skip
        n.create_subscription(
            Clock, "/clock",
            lambda m: self.sim_clock.append((time.monotonic(), stamp_to_ns(m.clock) * 1e-9)), 10,
        )  # fmt: skip
        if camera:
            rng = np.random.default_rng(0)
            frames = [
                image_to_msg(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), 0, "camera")
                for _ in range(4)
            ]
            img_pub = n.create_publisher(Image, "/camera/camera/color/image_raw", SENSOR_QOS)
            js_pub = n.create_publisher(JointState, "/joint_states", SENSOR_QOS)
            count = [0]

            def publish_frame() -> None:
                msg = frames[count[0] % len(frames)]
                msg.header.stamp = n.get_clock().now().to_msg()
                img_pub.publish(msg)
                count[0] += 1

            def publish_state() -> None:
                js = JointState()
                js.header.stamp = n.get_clock().now().to_msg()
                js.name = [*(f"fr3_joint{i}" for i in range(1, 8)),
                           "fr3_finger_joint1", "fr3_finger_joint2"]  # fmt: skip
                js.position = [*self.q, 0.02, 0.02]
                js_pub.publish(js)

            n.create_timer(1 / 30, publish_frame)
            n.create_timer(0.01, publish_state)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(n)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self.stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self.stop.set()
        self.thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def _window(series: list, t0: float, t1: float) -> np.ndarray:
    return np.array([t for t in series if t0 <= t <= t1])


def run_mode(mode: str, args, ckpt: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"ver_gate_{mode}_"))
    source = ["--sim"] if args.source == "sim" else ["--use-realsense-ros"]
    cmd = [sys.executable, "-m", "ver_ros.bringup", "--checkpoint", ckpt, *source]
    cmd += MODES[mode]
    log = open(work / "bringup.log", "w")  # noqa: SIM115
    graph = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    probe = Probe(camera=args.source == "camera")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (len(probe.features) < 10 or len(probe.commands) < 10):
        time.sleep(0.2)
    up = len(probe.features) >= 10 and len(probe.commands) >= 10
    print(f"[{mode}] graph {'up' if up else 'NOT up'}; measuring {args.seconds:g} s", flush=True)
    time.sleep(2.0)  # past the start-up transients
    load0, t0 = os.getloadavg()[0], time.monotonic()
    time.sleep(args.seconds)
    t1, load1 = time.monotonic(), os.getloadavg()[0]
    graph.send_signal(signal.SIGINT)
    try:
        graph.wait(timeout=30)
    except subprocess.TimeoutExpired:
        graph.kill()
    probe.close()
    ticks = _window(probe.commands, t0, t1)
    dt = np.diff(ticks) * 1e3 if ticks.size > 1 else np.zeros(1)
    wall = t1 - t0
    row = {
        "mode": mode,
        "source": args.source,
        "seconds": round(wall, 2),
        "ticks": int(ticks.size),
        "ticks_per_s": round(ticks.size / wall, 2),
        "fraction_of_50hz": round(ticks.size / wall / RATE_HZ, 4),
        "interval_p50_ms": round(float(np.percentile(dt, 50)), 2),
        "interval_p99_ms": round(float(np.percentile(dt, 99)), 2),
        "interval_max_ms": round(float(dt.max()), 2),
        "encoder_sets_per_s": round(_window(probe.features, t0, t1).size / wall, 2),
        "loadavg_1min_before_after": [round(load0, 2), round(load1, 2)],
        "log": str(work / "bringup.log"),
    }
    clock = [(w, s) for w, s in probe.sim_clock if t0 <= w <= t1]
    if len(clock) > 1:  # the gate ticks on sim time: its rate per simulated second
        sim_s = clock[-1][1] - clock[0][1]
        row["sim_realtime_factor"] = round(sim_s / (clock[-1][0] - clock[0][0]), 3)
        inside = _window(probe.commands, clock[0][0], clock[-1][0]).size
        row["fraction_of_50hz_sim_time"] = round(inside / sim_s / RATE_HZ, 4)
        gaps = np.diff([w for w, _ in clock]) * 1e3  # /clock arrivals here: the gate's time base
        row["clock_gap_p99_ms"] = round(float(np.percentile(gaps, 99)), 2)
        row["clock_gap_max_ms"] = round(float(gaps.max()), 2)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="measured time per mode")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--source", choices=["camera", "sim"], default="camera")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gate.json")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for --source sim
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    from ver_ros.transport import profile_env

    os.environ.update(profile_env())  # this camera publishes like the graph's nodes
    import torch

    from ver_core.policy import TaskConfig, TaskPolicy

    torch.manual_seed(0)
    ckpt = tempfile.mkdtemp(prefix="ver_gate_task_")
    TaskPolicy.build(TaskConfig(chunk_len=16, control_rate_hz=10.0)).save_pretrained(ckpt)
    rows = []
    for mode in args.modes:
        rows.append(run_mode(mode, args, ckpt))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "what": "safety node tick intervals under full perception load (arm command arrivals)",
        "configured_rate_hz": RATE_HZ,
        "goal": ">= 95% of the configured rate in both modes",
        "model": "ver_tiny K=2, MLP head, untrained (random) task checkpoint",
        "cpu_count": os.cpu_count(),
        "note": "shared 2-core development VM; the load average is beside each mode",
        "modes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0 if all(r["ticks"] > 0 and r["encoder_sets_per_s"] > 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
