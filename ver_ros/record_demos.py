"""ver-record-demos: collect scripted demonstrations through the real ROS graph, headless.

Starts ``sim_node``, ``scripted_expert`` and ``recorder_node`` as separate processes (talking over
DDS, all with ``use_sim_time``) and orchestrates them through their services:
reset sim -> start recorder -> start expert -> poll ``success`` -> hold -> check ``success`` again
-> finish the recorder with that verdict (``/recorder_node/finish``, so episode.json says what the
sim says at the end, not what the last ``/sim/episode`` message said). An episode succeeds when the
cube is still lifted and held after the hold; one dropped during the hold is a failure. Failed
episodes (timeout, dropped) are kept with ``"success": false`` in episode.json, or dropped with
``--discard-failed``. A summary goes to ``<out>/record_summary.json``.

By default the graph runs in a random, localhost-only ROS domain so it never talks to a real
robot graph on the network; ``--domain-id`` picks one. ``--workers N`` runs N such graphs at once
(N processes of this command, domains d..d+N-1), each recording a contiguous block of the seeds into
its block of episode directories, so the output reads as one serial run (``worker_blocks``).

Fast DDS's default shared-memory segment (512 KB) cannot hold one 640x480 RGB frame: the fragments
of a best-effort frame are overwritten before the reader gets them and most frames never arrive.
The node processes therefore get a Fast DDS profile (``ver_ros.transport.write_fastdds_profile``:
shared memory with a segment for several frames, plus UDPv4) unless ``FASTDDS_DEFAULT_PROFILES_FILE``
is set already.

    ver-record-demos --episodes 10 --out demos/ --seed 0 [--storage sqlite3] [--compressed]
                     [--cameras camera,wrist_camera]

Both cameras are recorded by default: the scene camera (/camera/camera/color/image_raw) and the
camera on the hand (/wrist_camera/camera/color/image_raw); the sim-only cube pose
(/sim/object_pose) is recorded too, for diagnostics (bench/privileged_policy.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from ver_ros.transport import shm_segment_bytes, write_fastdds_profile

__all__ = ["DemoGraph", "main"]


class DemoGraph:
    """The three node processes plus an rclpy client node for their services."""

    def __init__(
        self,
        env: dict[str, str],
        sim_args: list[str],
        rec_args: list[str],
        log_dir: Path,
        expert_args: list[str] | None = None,
    ) -> None:
        import rclpy
        from std_srvs.srv import SetBool, Trigger

        self._rclpy = rclpy
        self.procs: dict[str, subprocess.Popen] = {}
        log_dir.mkdir(parents=True, exist_ok=True)
        common = ["-p", "use_sim_time:=true"]
        for name, extra in (
            ("sim_node", sim_args),
            ("scripted_expert", common + (expert_args or [])),
            ("recorder_node", common + rec_args),
        ):
            log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            cmd = [sys.executable, "-m", f"ver_ros.{name}", "--ros-args", *extra]
            self.procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        rclpy.init()
        self.node = rclpy.create_node("ver_record_demos")
        self.clients = {
            key: self.node.create_client(SetBool if key == "rec_finish" else Trigger, srv)
            for key, srv in {
                "reset": "/sim_node/reset",
                "success": "/sim_node/success",
                "expert_start": "/scripted_expert/start",
                "expert_stop": "/scripted_expert/stop",
                "rec_start": "/recorder_node/start",
                "rec_stop": "/recorder_node/stop",
                "rec_finish": "/recorder_node/finish",
                "rec_discard": "/recorder_node/discard",
            }.items()
        }

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for client in self.clients.values():
            while not client.wait_for_service(timeout_sec=0.5):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"service {client.srv_name} did not come up in {timeout:.0f} s"
                    )

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with code {p.returncode}; see its log")

    def call(self, key: str, timeout: float = 15.0, data: bool | None = None) -> tuple[bool, str]:
        """Call a Trigger service (or, with ``data``, a SetBool one); -> (success, message)."""
        client = self.clients[key]
        request = client.srv_type.Request()
        if data is not None:
            request.data = data
        future = client.call_async(request)
        self._rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        if not future.done():
            self.check_alive()
            raise TimeoutError(
                f"service {self.clients[key].srv_name} did not answer in {timeout:.0f} s"
            )
        res = future.result()
        return bool(res.success), res.message

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._rclpy.spin_once(
                self.node, timeout_sec=min(0.05, max(0.0, end - time.monotonic()))
            )

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.node.destroy_node()
        if self._rclpy.ok():
            self._rclpy.shutdown()


def record_episode(graph: DemoGraph, timeout: float, hold: float, discard_failed: bool) -> dict:
    ok, msg = graph.call("reset")
    seed = msg.split("=", 1)[1] if ok and "=" in msg else None
    graph.sleep(0.3)  # let the post-reset state reach the expert and recorder
    ok, path = graph.call("rec_start")
    if not ok:
        raise RuntimeError(f"recorder refused to start: {path}")
    graph.call("expert_start")
    deadline, reached, success = time.monotonic() + timeout, False, False
    while time.monotonic() < deadline:
        graph.sleep(0.2)
        reached, _ = graph.call("success")
        if reached:
            graph.sleep(hold)
            success, _ = graph.call("success")  # still lifted and held after the hold?
            break
    graph.call("expert_stop")
    extra = {"dropped_in_hold": True} if reached and not success else {}
    if not success and discard_failed:
        graph.call("rec_discard")
        return {"seed": seed, "success": False, "path": None, **extra}
    ok, summary = graph.call("rec_finish", data=success)
    try:  # a failed stop (e.g. disk full) still answers the JSON summary, with "error"
        info = json.loads(summary)
    except json.JSONDecodeError:
        info = {"error": summary}
    if not ok:
        print(
            f"ver-record-demos: episode incomplete: {info.get('error', summary)}", file=sys.stderr
        )
    return {**info, "seed": seed, "success": success, **extra}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ver-record-demos", description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, required=True, help="number of episodes to record")
    p.add_argument(
        "--out", type=Path, required=True, help="output directory (episode_NNNNNN/ per episode)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (+1 per episode)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument(
        "--compressed", action="store_true", help="record JPEG CompressedImage instead of raw"
    )
    p.add_argument("--image-size", type=int, nargs=2, default=(224, 224), metavar=("W", "H"))
    p.add_argument(
        "--cameras",
        default="camera,wrist_camera",
        help="comma-separated sim cameras to record: camera (scene), wrist_camera (on the hand)",
    )
    p.add_argument(
        "--wrist-image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help="wrist camera render size (default: --image-size)",
    )
    p.add_argument("--image-rate", type=float, default=15.0, help="camera rate in sim time (Hz)")
    p.add_argument(
        "--realtime", action="store_true", help="pace the sim to the wall clock (default: fast)"
    )
    p.add_argument("--no-randomize", action="store_true", help="turn domain randomization off")
    p.add_argument(
        "--min-distractors",
        type=int,
        default=0,
        help="fewest distractors per scene (0-3; each scene draws min .. 3): more objects that "
        "are not the cube for the grasp-point detector to learn from",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=40.0,
        help="wall seconds before an episode counts as failed",
    )
    p.add_argument("--hold", type=float, default=0.5, help="wall seconds recorded after success")
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="DART noise injection: std (rad) of a smooth offset on the executed arm command; the "
        "expert's clean command is recorded on /scripted_expert/intended_trajectory (train with "
        "--action-topic /scripted_expert/intended_trajectory)",
    )
    p.add_argument(
        "--yaw-noise",
        type=float,
        default=0.0,
        help="DART noise std (rad) on joint 7 alone, the hand's yaw about the fingers' axis, while "
        "the expert approaches (0: --noise like the other joints): the camera on the hand sees the "
        "cube at many yaws in every scene (ver_core.sim.ExecutionNoise; 0.35 did not teach its "
        "grasp head the yaw, RESULTS.md session 25)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="the expert keeps the gripper open up to this long (s) after its command reaches the "
        "grasp, until the measured hand is there too (or has stopped): with --noise the hand is "
        "otherwise up to 6 cm above the grasp when the close label starts (0 = no wait)",
    )
    p.add_argument(
        "--detour",
        type=float,
        default=0.0,
        help="fraction of episodes whose arm first hovers over a distractor while the recorded "
        "label goes to the cube (ver_core.sim.Detour): demos of the hand over the wrong object",
    )
    p.add_argument(
        "--miss",
        type=float,
        default=0.0,
        help="fraction of episodes whose hand first closes 4.5-6 cm beside the cube and lifts empty "
        "while the recorded label (arm and gripper) reopens and goes to the cube (ver_core.sim.Miss): "
        "demos of recovering from a missed grasp (train with --gripper-topic "
        "/scripted_expert/intended_gripper)",
    )
    p.add_argument(
        "--twist",
        type=float,
        default=0.0,
        help="fraction of episodes whose executed hand is turned 15-40 degrees about its axis for "
        "the whole episode while the recorded label keeps the aligned yaw (ver_core.sim.Twist): "
        "demos of grasps across the cube's corners, held at widths up to 7.1 cm, then lifted",
    )
    p.add_argument(
        "--sweep",
        type=float,
        default=0.0,
        help="fraction of episodes whose hand, once above the cube, turns about its axis through "
        "+-40 degrees (2.4 s) while the recorded label holds the aligned hover (ver_core.sim.Sweep): "
        "the wrist camera sees the cube at many yaws from where it grasps",
    )
    p.add_argument(
        "--discard-failed", action="store_true", help="drop failed episodes instead of marking them"
    )
    p.add_argument(
        "--domain-id",
        type=int,
        default=None,
        help="ROS_DOMAIN_ID (default: random, localhost only); with --workers N, worker k uses +k",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="graphs recording in parallel, each in its own ROS domain with a contiguous block of "
        "seeds (0 = one per core, at most 8). The simulator renders on one core: on 2 cores two "
        "graphs record 1.44x as many episodes per minute as one (docs/RESULTS.md session 18)",
    )
    p.add_argument(
        "--first-index",
        type=int,
        default=-1,
        help="index of the first episode directory (-1: after the highest one in --out)",
    )
    p.add_argument("--log-dir", type=Path, default=None, help="node logs (default: <out>/logs)")
    p.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="summary JSON (default: <out>/record_summary.json)",
    )
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be >= 1")
    if args.workers < 0 or args.first_index < -1:
        p.error("--workers must be >= 0 and --first-index >= -1")
    if args.workers == 0:
        args.workers = min(os.cpu_count() or 1, MAX_AUTO_WORKERS)
    args.workers = min(args.workers, args.episodes)
    from ver_core.sim.config import CAMERAS, MAX_DISTRACTORS

    if not 0 <= args.min_distractors <= MAX_DISTRACTORS:
        p.error(f"--min-distractors must be in [0, {MAX_DISTRACTORS}], got {args.min_distractors}")
    if not 0.0 <= args.detour <= 1.0:
        p.error(f"--detour must be in [0, 1], got {args.detour}")
    if not 0.0 <= args.miss <= 1.0:
        p.error(f"--miss must be in [0, 1], got {args.miss}")
    if not 0.0 <= args.yaw_noise <= 0.7:
        p.error(f"--yaw-noise must be in [0, 0.7] rad, got {args.yaw_noise}")
    if not 0.0 <= args.sweep <= 1.0:
        p.error(f"--sweep must be in [0, 1], got {args.sweep}")
    if not 0.0 <= args.twist <= 1.0:
        p.error(f"--twist must be in [0, 1], got {args.twist}")
    if not 0.0 <= args.settle <= 5.0:
        p.error(f"--settle must be in [0, 5] s, got {args.settle}")

    args.cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    bad = [c for c in args.cameras if c not in CAMERAS]
    if bad or not args.cameras or len(set(args.cameras)) != len(args.cameras):
        p.error(f"--cameras must name distinct cameras out of {CAMERAS}, got {args.cameras}")
    return args


MAX_AUTO_WORKERS = 8


def worker_blocks(episodes: int, workers: int) -> list[tuple[int, int]]:
    """(first episode, count) per worker: contiguous blocks covering ``episodes``, the first
    ``episodes % workers`` one longer. Worker k records seeds seed+first .. seed+first+count-1
    into episode directories first_index+first ..: the merged directory reads as one serial run."""
    if episodes < 1 or workers < 1:
        raise ValueError(f"need episodes >= 1 and workers >= 1, got {episodes}, {workers}")
    workers = min(workers, episodes)
    base, extra = divmod(episodes, workers)
    blocks, first = [], 0
    for k in range(workers):
        count = base + (k < extra)
        blocks.append((first, count))
        first += count
    return blocks


def _finished_episodes(out: Path) -> int:
    """Episode directories whose recording was closed (episode.json has its stop time)."""
    done = 0
    for ep in out.glob("episode_*"):
        try:
            done += "stop_time_ns" in json.loads((ep / "episode.json").read_text())
        except (OSError, json.JSONDecodeError):
            pass
    return done


def run_workers(args: argparse.Namespace, argv: list[str]) -> int:
    """``--workers N``: N ver-record-demos processes, each its own graph in its own ROS domain
    with a block of seeds and episode indices (``worker_blocks``), writing into ``--out``; their
    summaries are merged into one in seed order."""
    from tqdm import tqdm

    from ver_ros.recorder_node import episode_indices

    out = args.out.resolve()
    logs = (args.log_dir or out / "logs").resolve()
    logs.mkdir(parents=True, exist_ok=True)
    blocks = worker_blocks(args.episodes, args.workers)
    base_index = (
        args.first_index if args.first_index >= 0 else max(episode_indices(out), default=-1) + 1
    )
    domain = args.domain_id if args.domain_id is not None else random.randint(1, 200)
    already = _finished_episodes(out)
    procs: list[tuple[subprocess.Popen, Path]] = []
    t0 = time.monotonic()
    for k, (first, count) in enumerate(blocks):
        wdir = logs / f"worker_{k}"
        wdir.mkdir(parents=True, exist_ok=True)
        # the user's options, then this worker's: argparse keeps the last of a repeated option
        child = [*argv, "--episodes", str(count), "--seed", str(args.seed + first),
                 "--first-index", str(base_index + first), "--domain-id", str(domain + k),
                 "--log-dir", str(wdir), "--summary", str(wdir / "record_summary.json"),
                 "--workers", "1"]  # fmt: skip
        log = open(wdir / "record_demos.log", "w")  # noqa: SIM115 - closed with the process
        cmd = [sys.executable, "-m", "ver_ros.record_demos", *child]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), wdir))
        log.close()
    print(
        f"ver-record-demos: {len(blocks)} graphs in parallel (ROS domains {domain}.."
        f"{domain + len(blocks) - 1}), logs in {logs}/worker_*"
    )
    interrupted = False
    bar = tqdm(total=args.episodes, desc="demos", unit="ep")
    try:
        while any(p.poll() is None for p, _ in procs):
            time.sleep(1.0)
            bar.update(max(0, _finished_episodes(out) - already - bar.n))
    except KeyboardInterrupt:
        interrupted = True
        print("ver-record-demos: interrupted; finished episodes are kept", file=sys.stderr)
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p, _ in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    bar.close()
    results: list[dict] = []
    failed = []
    for k, (p, wdir) in enumerate(procs):
        try:
            results += json.loads((wdir / "record_summary.json").read_text())["results"]
        except (OSError, json.JSONDecodeError, KeyError):
            pass  # the worker died before writing it: its closed episodes are on disk all the same
        if p.returncode != 0 and not interrupted:
            failed.append(f"worker {k} (exit {p.returncode}, see {wdir / 'record_demos.log'})")
    summary = {
        "episodes": len(results),
        "successes": sum(r["success"] for r in results),
        "wall_s": round(time.monotonic() - t0, 2),
        "workers": len(blocks),
        "results": results,
    }
    (args.summary or out / "record_summary.json").write_text(json.dumps(summary, indent=2))
    if failed:
        print(f"ver-record-demos: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(
        f"ver-record-demos: {summary['successes']}/{summary['episodes']} successful episodes in {out}"
    )
    return 0


CAMERA_TOPICS = {
    "camera": "/camera/camera/color/image_raw",
    "wrist_camera": "/wrist_camera/camera/color/image_raw",
}


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = args.out.resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"ver-record-demos: cannot create output directory {out}: {e}", file=sys.stderr)
        return 2
    if args.workers > 1:
        return run_workers(args, argv)
    logs = (args.log_dir or out / "logs").resolve()
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["ROS_DOMAIN_ID"] = str(
        args.domain_id if args.domain_id is not None else random.randint(1, 200)
    )
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    w, h = args.image_size
    ww, wh = args.wrist_image_size or args.image_size
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env:  # node processes only; see module docstring
        frames = 4 * len(args.cameras)
        segment = shm_segment_bytes(max(w, ww), max(h, wh), frames=frames)
        profile = write_fastdds_profile(logs / "fastdds.xml", segment)
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    cams = "[" + ",".join(args.cameras) + "]"
    topics = "[" + ",".join(CAMERA_TOPICS[c] for c in args.cameras) + "]"
    sim_args = [
        "-p", f"cameras:={cams}", "-p", f"wrist_width:={ww}", "-p", f"wrist_height:={wh}",
        "-p", f"width:={w}", "-p", f"height:={h}", "-p", f"image_rate_hz:={args.image_rate}",
        "-p", f"realtime:={str(args.realtime).lower()}", "-p", f"seed:={args.seed}",
        "-p", f"randomize:={str(not args.no_randomize).lower()}",
        "-p", f"min_distractors:={args.min_distractors}",
    ]  # fmt: skip
    rec_args = [
        "-p",
        f"image_topics:={topics}",
        "-p",
        f"output_dir:={out}",
        "-p",
        f"first_index:={args.first_index}",
        "-p",
        f"storage:={args.storage}",
        "-p",
        f"compressed:={str(args.compressed).lower()}",
    ]
    expert_args = ["-p", f"noise_std:={args.noise}", "-p", f"noise_seed:={args.seed}"]
    expert_args += ["-p", f"yaw_noise_std:={args.yaw_noise}"]
    expert_args += ["-p", f"settle_s:={args.settle}"]
    expert_args += ["-p", f"detour_prob:={args.detour}", "-p", f"detour_seed:={args.seed}"]
    expert_args += ["-p", f"miss_prob:={args.miss}", "-p", f"miss_seed:={args.seed}"]
    expert_args += ["-p", f"twist_prob:={args.twist}", "-p", f"twist_seed:={args.seed}"]
    expert_args += ["-p", f"sweep_prob:={args.sweep}", "-p", f"sweep_seed:={args.seed}"]
    graph = DemoGraph(env, sim_args, rec_args, logs, expert_args)
    results: list[dict] = []
    t0 = time.monotonic()
    try:
        graph.wait_ready()
        bar = tqdm(range(args.episodes), desc="demos", unit="ep")
        for _ in bar:
            results.append(record_episode(graph, args.timeout, args.hold, args.discard_failed))
            bar.set_postfix(success=f"{sum(r['success'] for r in results)}/{len(results)}")
    except KeyboardInterrupt:
        print("ver-record-demos: interrupted; finished episodes are kept", file=sys.stderr)
    except (RuntimeError, TimeoutError) as e:
        print(f"ver-record-demos: {e} (logs in {logs})", file=sys.stderr)
        return 1
    finally:
        graph.close()
        summary = {
            "episodes": len(results),
            "successes": sum(r["success"] for r in results),
            "wall_s": round(time.monotonic() - t0, 2),
            "results": results,
        }
        (args.summary or out / "record_summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"ver-record-demos: {summary['successes']}/{summary['episodes']} successful episodes in {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
