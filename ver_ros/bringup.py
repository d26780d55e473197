"""ver-bringup: the franka_pick graph without the ros2 CLI (same graph and config as the launch
file, see ver_ros/graph.py).

    ver-bringup --checkpoint runs/task --sim               # each node its own process
    ver-bringup --checkpoint runs/task --sim --composed    # all nodes in one process
    ver-bringup --checkpoint runs/task --dry-run           # print the commands only

Each-process mode starts ``python -m ver_ros.<node> --ros-args ...`` per node and stops all of
them (SIGINT, then SIGKILL after a grace period) when one exits or on Ctrl-C. Composed mode runs
every node in one MultiThreadedExecutor. Nodes of other packages (realsense-ros) cannot be started
here: run them yourself.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from ver_ros.graph import LAUNCH_ARGUMENTS, GraphOptions, NodeSpec, build_graph, ros_args

__all__ = ["main", "node_command", "spin_node"]


def spin_node(cls, args: list[str]) -> None:
    """Entry point of one node process: init, build (clear exit on bad parameters), spin."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    try:
        node = cls()
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"[{cls.__name__}] cannot start: {e}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        sys.exit(2)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        write_latency_log(node)
        node.destroy_node()
        rclpy.try_shutdown()


def write_latency_log(node) -> None:
    path = getattr(getattr(node, "params", None), "latency_log", "")
    stats = getattr(node, "stats", None)
    if path and stats is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(stats.summary(), indent=2))


def node_command(spec: NodeSpec, python: str = sys.executable) -> list[str]:
    if spec.module is None:
        raise ValueError(
            f"{spec.package}/{spec.executable} is not a ver_ros node: start it with its own "
            "launch file (e.g. ros2 launch realsense2_camera rs_launch.py)"
        )
    return [python, "-m", spec.module, *ros_args(spec)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ver-bringup", description=__doc__.split("\n\n")[0])
    for name, (default, help_text) in LAUNCH_ARGUMENTS.items():
        flag = "--" + name.replace("_", "-")
        if default in ("true", "false"):
            p.add_argument(flag, action="store_true", default=default == "true", help=help_text)
        else:
            p.add_argument(flag, default=default, help=help_text, required=name == "checkpoint")
    p.add_argument("--composed", action="store_true", help="all nodes in one process")
    p.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    return p


def _run_processes(specs: list[NodeSpec]) -> int:
    procs: list[tuple[NodeSpec, subprocess.Popen]] = []
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for spec in specs:
        procs.append((spec, subprocess.Popen(node_command(spec))))
        print(f"[ver-bringup] started {spec.name} (pid {procs[-1][1].pid})", flush=True)
    rc = 0
    while not stopping:
        for spec, proc in procs:
            if proc.poll() is not None:
                print(
                    f"[ver-bringup] {spec.name} exited with {proc.returncode}: stopping the graph",
                    flush=True,
                )
                rc = proc.returncode or 1
                stopping = True
                break
        time.sleep(0.1)
    for _, proc in reversed(procs):  # safety node first, sources last
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 5.0
    for _, proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return rc


def _overrides_file(specs: list[NodeSpec]) -> str:
    """Per-node overrides as one parameter file (works for node classes without kwargs)."""
    import tempfile

    import yaml

    data = {s.name: {"ros__parameters": dict(s.parameters)} for s in specs if s.parameters}
    fd, path = tempfile.mkstemp(prefix="ver_bringup_", suffix=".yaml")
    with open(fd, "w") as f:
        yaml.safe_dump(data, f)
    return path


def _run_composed(specs: list[NodeSpec]) -> int:
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    files = sorted({f for s in specs for f in s.param_files}) + [_overrides_file(specs)]
    init_args = ["ver-bringup", "--ros-args"] + [a for f in files for a in ("--params-file", f)]
    # our own Ctrl-C handling: stop the node loops before the context goes away
    rclpy.init(args=init_args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    nodes, loops = [], []
    stop = threading.Event()
    executor = None
    try:
        for spec in specs:
            cls = getattr(importlib.import_module(spec.module), spec.node_class)
            nodes.append(cls())
            print(f"[ver-bringup] composed {spec.name}", flush=True)
        # enough threads that a busy encoder or policy never starves the safety node's timer
        executor = MultiThreadedExecutor(num_threads=2 * len(specs) + 2)
        for n in nodes:
            executor.add_node(n)
            if callable(getattr(n, "run", None)):  # nodes that drive their own loop (sim_node)
                loops.append(threading.Thread(target=n.run, args=(stop,), daemon=True))
        for t in loops:
            t.start()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.set()
        for t in loops:
            t.join(timeout=2.0)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        for n in nodes:
            write_latency_log(n)
            n.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    values = {name: getattr(args, name) for name in LAUNCH_ARGUMENTS}
    try:
        options = GraphOptions(**values)
        specs = build_graph(options)
    except (ValueError, FileNotFoundError) as e:
        print(f"ver-bringup: {e}", file=sys.stderr)
        return 2
    external = [s for s in specs if s.module is None]
    for s in external:
        print(f"[ver-bringup] not starting {s.package}/{s.executable}: run it yourself", flush=True)
    specs = [s for s in specs if s.module is not None]
    if args.dry_run:
        for s in specs:
            print(shlex.join(node_command(s)))
        return 0
    return _run_composed(specs) if args.composed else _run_processes(specs)


if __name__ == "__main__":
    sys.exit(main())
