"""End-to-end latency of the deployment graph: camera time stamp -> arm command publish.

Runs the real graph with ``ver-bringup --use-realsense-ros`` (process mode by default: encoder,
policy and safety nodes each in their own process, with the Fast DDS profile ver-bringup sets),
while this process plays the camera (640x480 rgb8 at 30 Hz, stamped at publish, on the
realsense-ros topic) and an ideal robot on /joint_states that follows the commands. Every node
records per-stage timings (written on shutdown); this process adds the stamp -> arrival age of
the features and of the chunks. Writes bench/results/latency.json:

  camera_to_encoder (stamp -> encoder callback: DDS hop + waiting while the encoder finishes the
  previous frame), decode (message -> RGB), preprocess (resize + normalize), encode (BVT blocks),
  route (routed expert library; with an exported backend encode+route is one stage),
  camera_to_features (stamp -> features arriving here: the encoder's whole share + one hop),
  policy (head), smooth (chunk ensembling), camera_to_chunk (stamp -> chunk arriving here),
  chunk_wait (chunk arrival at the gate -> its next control tick), safety (gate step),
  end_to_end (camera stamp -> first command from that frame's chunk).

``--variant`` runs the graph under named settings in turn (one after the other, the load
average beside each): ``deployed`` (the shipped defaults: torch backend, transport profile,
threads 0 = every core but one, fp32), ``bf16`` (deployed + precision bf16), ``onnxruntime``
(deployed with the ONNX Runtime backend, fp32), ``bf16_host_encoder`` (bf16 with the encoder
inside the policy process: one hop less), ``before`` (no transport profile, torch threads =
all cores, fp32: the settings before issue 14), and on a GPU machine ``cuda`` / ``cuda_bf16``
(deployed with encoder and policy on the GPU).

    .venv/bin/python bench/bench_latency.py [--seconds 30] [--variant deployed bf16 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROCESSING = ("decode", "preprocess", "encode", "route", "encode+route", "policy", "smooth")
_DEPLOYED = {"backend": "torch", "profile": True, "threads": 0, "precision": "fp32", "host": False}
VARIANTS = {
    "deployed": _DEPLOYED,
    "bf16": {**_DEPLOYED, "precision": "bf16"},
    "onnxruntime": {**_DEPLOYED, "backend": "onnxruntime"},
    "bf16_host_encoder": {**_DEPLOYED, "precision": "bf16", "host": True},
    "before": {**_DEPLOYED, "profile": False, "threads": os.cpu_count() or 1},
    "cuda": {**_DEPLOYED, "device": "cuda"},
    "cuda_bf16": {**_DEPLOYED, "device": "cuda", "precision": "bf16"},
}
NODES = ("encoder_node", "policy_node", "safety_node")
BUILTIN_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <participant profile_name="builtin_transports" is_default_profile="true"><rtps/></participant>
  </profiles>
</dds>
"""


def _camera_and_robot(stop: threading.Event, rate_hz: float, ages: dict, counters: dict) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from ver_ros.conversions import image_to_msg, stamp_to_ns
    from ver_ros.qos import COMMAND_QOS, SENSOR_QOS

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Node("bench_camera_robot", context=ctx)
    img_pub = node.create_publisher(Image, "/camera/camera/color/image_raw", SENSOR_QOS)
    js_pub = node.create_publisher(JointState, "/joint_states", SENSOR_QOS)
    q = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
    rng = np.random.default_rng(0)
    frames = [
        image_to_msg(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), 0, "camera")
        for _ in range(8)
    ]

    def age(msg) -> float:
        return (node.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)) * 1e-9

    def on_chunk(msg: JointTrajectory) -> None:
        counters["chunks"] += 1
        ages["camera_to_chunk"].append(age(msg))

    def on_cmd(msg: JointTrajectory) -> None:
        q[:] = list(msg.points[0].positions)
        counters["commands"] += 1

    def camera() -> None:
        msg = frames[counters["frames"] % len(frames)]  # a driver's buffer: only the stamp is new
        msg.header.stamp = node.get_clock().now().to_msg()
        img_pub.publish(msg)
        counters["frames"] += 1

    def state() -> None:
        js = JointState()
        js.header.stamp = node.get_clock().now().to_msg()
        js.name = [
            *(f"fr3_joint{i}" for i in range(1, 8)),
            "fr3_finger_joint1",
            "fr3_finger_joint2",
        ]
        js.position = [*q, 0.02, 0.02]
        js_pub.publish(js)

    node.create_subscription(
        Image, "/ver/features/camera", lambda m: ages["camera_to_features"].append(age(m)),
        SENSOR_QOS,
    )  # fmt: skip
    node.create_subscription(
        JointTrajectory, "/fr3_arm_controller/joint_trajectory", on_cmd, COMMAND_QOS
    )
    node.create_subscription(JointTrajectory, "/ver/action_chunk", on_chunk, COMMAND_QOS)
    node.create_timer(1.0 / rate_hz, camera)
    node.create_timer(0.01, state)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    while not stop.is_set():
        ex.spin_once(timeout_sec=0.05)
    ex.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _config(work: Path, settings: dict, warmup: int) -> tuple[Path, dict[str, Path]]:
    """The shipped parameter file plus this run's overrides (latency logs, threads, precision)."""
    from ver_ros.graph import default_config_path

    config = yaml.safe_load(default_config_path().read_text())
    logs = {n: work / f"{n}.json" for n in NODES}
    for name in NODES:
        params = config.setdefault(name, {}).setdefault("ros__parameters", {})
        params.update(latency_log=str(logs[name]), latency_warmup=warmup)
    for name in ("encoder_node", "policy_node"):
        params = config[name]["ros__parameters"]
        params.update(threads=settings["threads"], precision=settings["precision"])
        params.update(device=settings.get("device", "cpu"))
    if not settings["host"]:
        config["policy_node"]["ros__parameters"]["threads"] = 1  # a head beside the encoder
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, logs


def _summary(values: list[float], warmup: int) -> dict:
    ms = np.asarray(values[warmup:]) * 1e3
    if not ms.size:
        return {"n": 0}
    return {
        "n": int(ms.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }


def run_variant(name: str, args, ckpt: str) -> dict:
    settings = VARIANTS[name]
    work = Path(tempfile.mkdtemp(prefix=f"ver_bench_{name}_"))
    config, logs = _config(work, settings, warmup=30)
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(random.randint(1, 200)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
    )
    if settings["profile"]:
        from ver_ros.transport import default_profile_path

        profile = default_profile_path()
    else:  # a profile of Fast DDS's defaults: ver-bringup keeps the user's choice
        profile = work / "builtin_transports.xml"
        profile.write_text(BUILTIN_PROFILE)
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)  # the graph and this camera process
    os.environ.update(env)
    cmd = [
        sys.executable, "-m", "ver_ros.bringup", "--checkpoint", ckpt, "--use-realsense-ros",
        "--backend", settings["backend"], "--config", str(config),
        *(["--host-encoder"] if settings["host"] else []),
    ]  # fmt: skip
    log = open(work / "bringup.log", "w")  # noqa: SIM115
    graph = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    stop = threading.Event()
    counters = {"frames": 0, "commands": 0, "chunks": 0}
    ages: dict[str, list[float]] = {"camera_to_features": [], "camera_to_chunk": []}
    io = threading.Thread(
        target=_camera_and_robot, args=(stop, args.rate, ages, counters), daemon=True
    )
    io.start()
    deadline = time.monotonic() + 180
    while counters["chunks"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    up = counters["chunks"] > 0
    print(f"[{name}] graph {'up' if up else 'NOT up'}; measuring {args.seconds:g} s", flush=True)
    f0, load_before = counters["frames"], os.getloadavg()[0]
    time.sleep(args.seconds + 3.0)  # + the stats warm-up samples
    frames = counters["frames"] - f0
    load_after = os.getloadavg()[0]
    graph.send_signal(signal.SIGINT)
    try:
        graph.wait(timeout=30)
    except subprocess.TimeoutExpired:
        graph.kill()
    stop.set()
    io.join(timeout=5)
    stages: dict[str, dict] = {}
    for node, path in logs.items():
        if path.is_file():
            for stage, row in json.loads(path.read_text()).items():
                stages[stage] = {**row, "node": node}
    for stage, values in ages.items():
        stages[stage] = {**_summary(values, warmup=30), "node": "bench (camera)"}
    return {
        "variant": name,
        "settings": settings,
        "frames_published": frames,
        "encoder_sets": stages.get("preprocess", {}).get("n"),
        "loadavg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "logs": str(work),
        "stages": stages,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="measured time per variant")
    ap.add_argument("--variant", nargs="+", default=["deployed"], choices=sorted(VARIANTS))
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate (Hz)")
    ap.add_argument("--checkpoint", default="", help="task checkpoint (default: untrained)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency.json")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    ckpt = args.checkpoint
    if not ckpt:
        import torch

        from ver_core.policy import TaskConfig, TaskPolicy

        torch.manual_seed(0)
        work = Path(tempfile.mkdtemp(prefix="ver_bench_task_"))
        ckpt = str(TaskPolicy.build(TaskConfig()).save_pretrained(work / "task"))
    if args.one:  # a child run: Fast DDS reads its profile once per process
        Path(args.one).write_text(json.dumps(run_variant(args.variant[0], args, ckpt)))
        return 0
    runs = []
    for name in args.variant:
        child = Path(tempfile.mkdtemp(prefix="ver_bench_run_")) / "run.json"
        cmd = [sys.executable, __file__, "--one", str(child), "--variant", name,
               "--seconds", str(args.seconds), "--rate", str(args.rate),
               "--checkpoint", ckpt]  # fmt: skip
        subprocess.run(cmd, check=False)
        if child.is_file():
            runs.append(json.loads(child.read_text()))
    result = {
        "what": "camera stamp -> arm command publish through ver-bringup (process mode), per "
        "stage, ms",
        "camera": f"640x480 rgb8 at {args.rate:g} Hz",
        "model": "ver_tiny, K=2, MLP head (untrained weights; latency does not depend on them)",
        "control_rate_hz": 50.0,
        "seconds": args.seconds,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "gpu": _gpu_name(),
            "note": "load average beside each run (the 2-core development VM is shared: other "
            "jobs ran beside; a lent GPU machine is idle)",
        },
        "processing_stages": list(PROCESSING),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for run in runs:
        print(f"== {run['variant']} (load {run['loadavg_1min_before_after']})")
        for stage, row in run["stages"].items():
            if row.get("n"):
                print(f"  {stage:20s} p50 {row['p50_ms']:8.2f}  p99 {row['p99_ms']:8.2f} ms")
    print(f"wrote {args.out}")
    ok = len(runs) == len(args.variant)
    return 0 if ok and all(r["stages"].get("end_to_end", {}).get("n") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
