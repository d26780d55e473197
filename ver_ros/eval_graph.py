"""Closed-loop evaluation through the deployment graph (used by ``ver-eval --through-ros``).

Starts ``ver-bringup --sim`` (sim_node -> encoder_node -> policy_node -> safety_node -> sim_node,
each its own process, all on the simulator's clock) in a random localhost-only ROS domain, then
supervises episodes from an rclpy client node:

    e-stop on -> /sim_node/reset (seed = --seed + k) -> settle -> e-stop off -> poll
    /sim_node/success until success or the time limit (simulated seconds).

The gripper-to-cube distance is computed from /joint_states (forward kinematics) and
/sim/object_pose; the first episode's camera frames become the strip and GIF. Per-stage latency
comes from the nodes' own latency logs (written when the graph shuts down) plus the action-chunk
age seen here (clock at arrival - observation stamp).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ver_core.deploy.latency import LatencyStats
from ver_core.eval.closed_loop import SETTLE_S  # under e-stop after a reset, as in-process
from ver_core.eval.evaluate import EvalConfig, write_outputs
from ver_core.eval.kinematics import TcpKinematics
from ver_core.eval.report import build_report
from ver_core.eval.rollout import EpisodeResult

__all__ = ["evaluate_through_ros", "graph_parameters"]

NODES_WITH_LATENCY = ("encoder_node", "policy_node", "safety_node")


def graph_parameters(
    base_yaml: Path, config: EvalConfig, log_dir: Path, rtf: float = 1.0, threads: int = 1
) -> dict[str, Any]:
    """The deployment parameter file with the evaluation's overrides (sim seeds and image size,
    sim speed ``rtf`` x real time, latency logs, no streaming of held poses so a reset pose is
    not pulled back). ``threads``: torch threads of the encoder and policy nodes (1 by default:
    on a few shared cores, two processes with several threads each slow each other down).
    The encoder's backend is a launch option of the graph, not a parameter here (``--backend``
    of ver-bringup wins over the file)."""
    if not 0.05 <= rtf <= 1.0:
        raise ValueError(f"real-time factor must be in [0.05, 1], got {rtf}")
    params = yaml.safe_load(Path(base_yaml).read_text()) or {}
    sim = params.setdefault("sim_node", {}).setdefault("ros__parameters", {})
    sim.update(
        {
            "seed": config.seed,
            "width": config.width,
            "height": config.height,
            "wrist_width": config.width,
            "wrist_height": config.height,
            "realtime": rtf == 1.0,
            "max_rtf": 0.0 if rtf == 1.0 else rtf,
        }
    )
    for name in NODES_WITH_LATENCY:
        p = params.setdefault(name, {}).setdefault("ros__parameters", {})
        p["latency_log"] = str(log_dir / f"latency_{name}.json")
        if name != "safety_node" and threads > 0:
            p["threads"] = threads
    params["safety_node"]["ros__parameters"]["publish_while_holding"] = False
    if config.observation_budget_s is not None:  # the one budget of every node (the /** section)
        common = params.setdefault("/**", {}).setdefault("ros__parameters", {})
        common["observation_budget_s"] = config.observation_budget_s
    return params


class _Supervisor:
    def __init__(self, env: dict[str, str], image_topics: list[str]) -> None:
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from ver_ros.conversions import msg_to_rgb, stamp_to_ns
        from ver_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

        self.rclpy, self.Trigger, self.Bool = rclpy, Trigger, Bool
        self._msg_to_rgb, self._stamp_ns = msg_to_rgb, stamp_to_ns
        rclpy.init()
        self.node = rclpy.create_node("ver_eval_supervisor")
        n = self.node
        self.clients = {k: n.create_client(Trigger, f"/sim_node/{k}") for k in ("reset", "success")}
        self.estop_pub = n.create_publisher(Bool, "/ver/e_stop", LATCHED_QOS)
        self.clock_ns = 0
        self.arm_q: np.ndarray | None = None
        self.cube: np.ndarray | None = None
        self.capture = False
        self.frames: list[np.ndarray] = []
        self._views: dict[int, tuple[int, np.ndarray]] = {}  # camera -> (stamp ns, frame)
        self.chunks = 0
        self.chunk_age = LatencyStats()
        self.status = ""
        self.joint_names = [f"fr3_joint{i}" for i in range(1, 8)]
        n.create_subscription(Clock, "/clock", self._on_clock, 10)
        n.create_subscription(JointState, "/joint_states", self._on_joints, SENSOR_QOS)
        n.create_subscription(PoseStamped, "/sim/object_pose", self._on_pose, SENSOR_QOS)
        self.n_views = len(image_topics)
        for i, topic in enumerate(image_topics):
            n.create_subscription(Image, topic, lambda m, i=i: self._on_image(i, m), SENSOR_QOS)
        n.create_subscription(JointTrajectory, "/ver/action_chunk", self._on_chunk, COMMAND_QOS)
        n.create_subscription(String, "/ver/safety_status", self._on_status, LATCHED_QOS)

    # ---- callbacks
    def _on_clock(self, msg) -> None:
        self.clock_ns = self._stamp_ns(msg.clock)

    def _on_joints(self, msg) -> None:
        idx = {name: i for i, name in enumerate(msg.name)}
        if all(j in idx for j in self.joint_names):
            self.arm_q = np.array([msg.position[idx[j]] for j in self.joint_names])

    def _on_pose(self, msg) -> None:
        p = msg.pose.position
        self.cube = np.array([p.x, p.y, p.z])

    def _on_image(self, index: int, msg) -> None:
        """Frames of every camera with the same stamp go side by side into one strip frame."""
        if not self.capture:
            return
        stamp = self._stamp_ns(msg.header.stamp)
        self._views[index] = (stamp, self._msg_to_rgb(msg))
        if len(self._views) == self.n_views and len({s for s, _ in self._views.values()}) == 1:
            views = [self._views[i][1] for i in range(self.n_views)]
            if len({v.shape for v in views}) == 1:
                self.frames.append(np.concatenate(views, axis=1))
            self._views.clear()

    def _on_chunk(self, msg) -> None:
        self.chunks += 1
        if self.clock_ns:
            self.chunk_age.add(
                "chunk_age", (self.clock_ns - self._stamp_ns(msg.header.stamp)) * 1e-9
            )

    def _on_status(self, msg) -> None:
        self.status = msg.data

    # ---- helpers
    @property
    def sim_s(self) -> float:
        return self.clock_ns * 1e-9

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=min(0.02, max(0.0, end - time.monotonic())))

    def wait_sim(
        self, seconds: float, alive: Callable[[], None], wall_limit: float = 120.0
    ) -> None:
        start, deadline = self.sim_s, time.monotonic() + wall_limit
        while self.sim_s - start < seconds:
            self.spin(0.05)
            alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the simulator clock did not advance {seconds} s in {wall_limit} s"
                )

    def call(self, key: str, timeout: float = 20.0) -> tuple[bool, str]:
        future = self.clients[key].call_async(self.Trigger.Request())
        self.rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        if not future.done():
            raise TimeoutError(f"/sim_node/{key} did not answer in {timeout:.0f} s")
        res = future.result()
        return bool(res.success), res.message

    def estop(self, active: bool) -> None:
        self.estop_pub.publish(self.Bool(data=active))

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


IMAGE_RATE_HZ = 15.0  # the simulated cameras' rate (sim_node's image_rate_hz default)
# The chain's p99 in the graph over its idle median on 2 cores. Session 10 measured 2.0; session
# 20 measured at most 1.68 (rtf 0.3) and 1.76 (rtf 0.4): the sum of the encode, route and policy
# stages' p99s over the idle median, an upper bound of the chain's own p99. The two-chain worst
# case in chain_sim_s is a bound as well: at 1.6 (rtf 0.4 for the make demo policy) the chunk
# age at the gate had p99 240 ms of the 400 ms budget and the same 44/50 as at rtf 0.3
# (docs/RESULTS.md session 20).
CONTENTION = 1.6


def chain_sim_s(budget_s: float, image_rate_hz: float = IMAGE_RATE_HZ) -> float:
    """Simulated seconds one observation's encoder + policy chain may take (--rtf auto), from the
    graph's staleness budget. The observation behind the command the gate executes is, at worst,
    one frame interval old when the encoder takes it, one chain older when its chunk lands, and
    one chain older again when the next chunk replaces it; the chain in the graph runs up to
    CONTENTION x its idle time (the simulator renders on the same cores). Keeping that inside the
    budget: (budget - 1 / image rate) / (2 x CONTENTION)."""
    if budget_s <= 1.0 / image_rate_hz:
        raise ValueError(
            f"a staleness budget of {budget_s} s is shorter than one frame interval "
            f"({1.0 / image_rate_hz:.3f} s at {image_rate_hz} Hz)"
        )
    return (budget_s - 1.0 / image_rate_hz) / (2.0 * CONTENTION)


def auto_rtf(
    checkpoint: str | Path,
    threads: int = 1,
    calls: int = 5,
    budget_s: float | None = None,
    image_rate_hz: float = IMAGE_RATE_HZ,
    backend: str | None = None,
) -> tuple[float, float]:
    """A real-time factor at which this machine keeps up with the simulated robot: the chain the
    graph runs per observation (the encoder node's model on the checkpoint's views, then the
    policy's chunk prediction with its grasp-point tracker; the encoder on ``backend``, None: the
    deployment config's, as the graph will run it; ``threads``) is timed here, and
    the simulator is slowed so that it takes at most ``chain_sim_s(budget_s)`` simulated seconds
    (between 0.2 and 1 x real time, in steps of 0.05; ``budget_s`` None: the deployment default).
    Until session 10 the encoder alone was allowed 0.1 s: in the graph the tail then crossed the
    0.4 s budget and the gate held the arm mid-approach (docs/RESULTS.md). A robot's GPU runs the
    chain in ~7 ms (bench/results/encoder_gpu.json): 1 x real time there. Returns (rtf, seconds
    per observation)."""
    import torch

    from ver_core.deploy import DEFAULT_BUDGET
    from ver_core.export.runner import build_encoder
    from ver_core.policy import TaskPolicy

    policy = TaskPolicy.from_pretrained(checkpoint).eval()
    encoder = build_encoder(
        policy, backend or deployed_backend(), checkpoint, "cpu", max(threads, 1)
    ).fn
    size = policy.model.config.img_size
    x = torch.rand(policy.config.num_views, 3, size, size)
    state = torch.zeros(1, policy.config.state_dim)
    tracker = policy.grasp_tracker()  # None: the policy detects no grasp point

    @torch.no_grad()
    def chain() -> None:
        tokens, _ = encoder(x)
        policy.predict_chunk(tokens.float()[None], state, tracker=tracker)

    previous = torch.get_num_threads()
    torch.set_num_threads(max(threads, 1))
    try:
        chain()
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            chain()
            times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(previous)
    seconds = float(sorted(times)[len(times) // 2])
    budget = DEFAULT_BUDGET.observation_s if budget_s is None else budget_s
    return rtf_for(seconds, chain_sim_s(budget, image_rate_hz)), seconds


def deployed_backend() -> str:
    """The encoder backend the graph runs when none is named: the ``backend`` launch option's
    default (ver-bringup / franka_pick.launch.py; it overrides the parameter file's)."""
    from ver_ros.graph import LAUNCH_ARGUMENTS

    return LAUNCH_ARGUMENTS["backend"][0]


def bringup_command(checkpoint: str | Path, param_file: Path, backend: str | None) -> list[str]:
    """The graph the evaluation starts: ver-bringup's simulator graph on ``param_file``, the
    encoder on ``backend`` (None: ``deployed_backend``)."""
    return [sys.executable, "-m", "ver_ros.bringup", "--checkpoint", str(Path(checkpoint).resolve()),
            "--sim", "--config", str(param_file),
            "--backend", backend or deployed_backend()]  # fmt: skip


def encoder_backend_from_log(log: Path) -> str | None:
    """The backend the encoder node reports it runs ("encoder ready: backend X"), None if absent:
    a requested backend falls back when it cannot run, so the report says what ran."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"encoder ready: backend (\w+)", text)
    return found[-1] if found else None


def rtf_for(seconds: float, sim_s: float) -> float:
    """The real-time factor at which a chain of ``seconds`` per observation takes at most
    ``sim_s`` simulated seconds (auto_rtf): in steps of 0.05 (rounded down), within [0.2, 1]."""
    steps = math.floor(round(sim_s / seconds / 0.05, 6))
    return round(min(1.0, max(0.2, steps * 0.05)), 2)


def evaluate_through_ros(
    checkpoint: str | Path,
    config: EvalConfig,
    out_dir: str | Path,
    control_hz: float = 10.0,
    progress: Callable[[str], None] | None = print,
    ready_timeout_s: float = 180.0,
    rtf: float = 1.0,
    threads: int = 1,
    backend: str | None = None,
) -> dict[str, Any]:
    """Run ``config.episodes`` episodes through the ROS graph; write and return the report.

    rtf < 1 runs the simulator slower than real time (every node runs on its clock), for machines
    too slow or too busy to keep up; wall-clock latencies are reported unchanged.
    An episode fails when ``config.max_steps / control_hz`` simulated seconds pass without
    success. Episode length is reported in control steps (simulated time x ``control_hz``).
    """
    from ver_ros.graph import checkpoint_cameras, default_config_path

    out = Path(out_dir).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name in NODES_WITH_LATENCY:
        (logs / f"latency_{name}.json").unlink(missing_ok=True)
    param_file = out / "eval_params.yaml"
    param_file.write_text(
        yaml.safe_dump(graph_parameters(default_config_path(), config, logs, rtf, threads))
    )
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["ROS_DOMAIN_ID"] = env.get("VER_EVAL_DOMAIN_ID") or str(random.randint(1, 200))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    cmd = bringup_command(checkpoint, param_file, backend)
    log = open(logs / "bringup.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the ROS graph exited with code {proc.returncode}; see {logs / 'bringup.log'}"
            )

    sup = _Supervisor(env, [t for _, t in checkpoint_cameras(str(checkpoint))])
    kin = TcpKinematics()
    episodes: list[EpisodeResult] = []
    t_start = time.perf_counter()
    limit_s = config.max_steps / control_hz
    try:
        _wait_ready(sup, alive, ready_timeout_s, progress)
        for i in range(config.episodes):
            episodes.append(_episode(sup, kin, alive, i, config, limit_s, control_hz))
            ep = episodes[-1]
            if progress:
                ok = sum(e.success for e in episodes)
                progress(
                    f"[eval/ros] episode {i + 1}/{config.episodes} seed {ep.seed}: "
                    f"{'success' if ep.success else 'fail'} after {ep.steps / control_hz:.1f} sim-s, "
                    f"closest {ep.min_distance:.3f} m ({ok}/{i + 1} so far, "
                    f"{time.perf_counter() - t_start:.0f} s)"
                )
    finally:
        sup.estop(True)
        sup.spin(0.2)
        sup.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    latency = _collect_latency(logs)
    latency.update(sup.chunk_age.summary())
    meta = {
        "mode": "through-ros",
        "checkpoint": str(checkpoint),
        "config": asdict(config),
        "time_limit_sim_s": limit_s,
        "real_time_factor": rtf,
        "encoder_backend": encoder_backend_from_log(logs / "bringup.log"),
        "chunks_received": sup.chunks,
    }
    report = build_report(episodes, latency, meta)
    report["wall_s"] = time.perf_counter() - t_start
    write_outputs(out, report, episodes, 1.0 / control_hz, media=config.media)
    return report


def _wait_ready(sup: _Supervisor, alive, timeout: float, progress) -> None:
    deadline = time.monotonic() + timeout
    if progress:
        progress("[eval/ros] starting the graph (sim, encoder, policy, safety) ...")
    for client in sup.clients.values():
        while not client.wait_for_service(timeout_sec=0.5):
            alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client.srv_name} did not come up in {timeout:.0f} s")
    while sup.chunks == 0 or sup.arm_q is None or sup.cube is None:  # policy is producing chunks
        sup.spin(0.1)
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no action chunk on /ver/action_chunk within {timeout:.0f} s (see the logs)"
            )
    if progress:
        progress(f"[eval/ros] graph ready: first action chunk after {sup.chunks} chunk(s)")


def _episode(sup, kin, alive, i: int, config: EvalConfig, limit_s: float, control_hz: float):
    sup.estop(True)
    sup.spin(0.3)
    ok, msg = sup.call("reset")
    if not ok:
        raise RuntimeError(f"/sim_node/reset failed: {msg}")
    seed = int(msg.split("=", 1)[1]) if "=" in msg else config.seed + i
    sup.wait_sim(SETTLE_S, alive)
    sup.frames = []
    sup.capture = config.media and i == 0
    sup.estop(False)
    t0 = sup.sim_s
    cube_z0 = float(sup.cube[2])
    distances = [float(np.linalg.norm(kin.tcp(sup.arm_q) - sup.cube))]
    lift: list[float] = []
    success, next_sample, next_poll = False, t0 + 1.0 / control_hz, time.monotonic()
    wall0 = time.perf_counter()
    while sup.sim_s - t0 < limit_s:
        sup.spin(0.02)
        alive()
        if sup.sim_s >= next_sample:
            distances.append(float(np.linalg.norm(kin.tcp(sup.arm_q) - sup.cube)))
            lift.append(float(sup.cube[2]) - cube_z0)
            next_sample += 1.0 / control_hz
        if time.monotonic() >= next_poll:
            success, _ = sup.call("success")
            next_poll = time.monotonic() + 0.2
            if success:
                break
    sup.capture = False
    steps = max(1, round((sup.sim_s - t0) * control_hz))
    return EpisodeResult(
        seed=seed,
        success=success,
        steps=steps,
        distances=distances,
        lift=lift,
        frames=list(sup.frames),
        wall_s=time.perf_counter() - wall0,
    )


def _collect_latency(logs: Path) -> dict[str, dict[str, float]]:
    """Per-stage stats from the nodes' latency logs, keyed ``node/stage``."""
    out: dict[str, dict[str, float]] = {}
    for name in NODES_WITH_LATENCY:
        path = logs / f"latency_{name}.json"
        if path.is_file():
            for stage, stats in json.loads(path.read_text()).items():
                out[f"{name.removesuffix('_node')}/{stage}"] = stats
    return out
