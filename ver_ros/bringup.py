"""ver-bringup: the franka_pick graph without the ros2 CLI (same graph and config as the launch
file, see ver_ros/graph.py).

    ver-bringup --checkpoint runs/task --sim               # each node its own process
    ver-bringup --checkpoint runs/task --sim --composed    # one process (+ the safety node's)
    ver-bringup --checkpoint runs/task --dry-run           # print the commands only

Each-process mode starts ``python -m ver_ros.<node> --ros-args ...`` per node. A node that dies
is restarted after ``RESPAWN["delay_s"]`` (at most ``RESPAWN["max_retries"]`` times in a row, as
a launch file's respawn does) while the others, the safety node holding the arm among them, keep
running; a node that cannot be kept alive, or Ctrl-C, stops the graph (SIGINT, then SIGKILL
after a grace period). Composed mode runs the nodes in one process on a MultiThreadedExecutor,
except the safety node: it runs in a process of its own (supervised as above). Sharing one
interpreter with perception, its 50 Hz timer came up to 0.7 s late on a busy machine, even on an
executor thread of its own (bench/bench_gate.py: 81% of its rate, against 100% in a process of
its own). ``--compose-safety`` puts it in the composed process anyway, on its own thread.
Nodes of other packages (realsense-ros) cannot be started here: run them yourself.

Both modes point ``FASTDDS_DEFAULT_PROFILES_FILE`` at the shipped transport profile
(``config/fastdds_large_frames.xml``, ``ver_ros.transport``: shared memory sized for 1920x1080
rgb8 frames) unless it is set already; without it Fast DDS loses most raw frames above 512 KB.
Nodes you start yourself (realsense-ros) need the same variable.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from ver_ros.graph import (
    LAUNCH_ARGUMENTS,
    RESPAWN,
    GraphOptions,
    NodeSpec,
    build_graph,
    ros_args,
)

__all__ = ["main", "node_command", "spin_node"]

SAFETY_MODULE = "ver_ros.safety_node"


SUPERVISOR_ENV = "VER_BRINGUP_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_supervisor() -> None:
    """In a node process started by ver-bringup: get SIGINT (a clean Ctrl-C shutdown) when
    ver-bringup dies, even by SIGKILL, instead of running on as an orphan; exit at once if it is
    already gone. A no-op outside ver-bringup or where prctl is missing (not Linux)."""
    parent = os.environ.get(SUPERVISOR_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # a supervisor started in the background (`cmd &` in a script, nohup) hands its children an
    # ignored SIGINT, which would make the death signal a no-op: take the default Ctrl-C back
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.getppid() != int(parent):  # died before prctl took effect
        print("[ver-bringup] supervisor gone before this node started; exiting", file=sys.stderr)
        sys.exit(1)


def _spawn(spec: NodeSpec) -> subprocess.Popen:
    return subprocess.Popen(
        node_command(spec), env={**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    )


def spin_node(cls, args: list[str]) -> None:
    """Entry point of one node process: init, build (clear exit on bad parameters), spin."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    stop_with_supervisor()
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
    p.add_argument(
        "--composed",
        action="store_true",
        help="the nodes in one process, the safety node in its own (see --compose-safety)",
    )
    p.add_argument(
        "--compose-safety",
        action="store_true",
        help="with --composed, the safety node in that process too (its own executor thread; "
        "perception's load can delay its ticks: bench/bench_gate.py)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    return p


class _Supervisor:
    """Node processes with a launch file's respawn: a node that dies is restarted after
    ``respawn["delay_s"]``, at most ``respawn["max_retries"]`` times in a row; ``poll()`` returns
    an exit code once the graph must stop (a node that cannot be kept alive), else None."""

    def __init__(self, specs: list[NodeSpec], respawn: dict | None = None) -> None:
        self.specs, self.respawn = list(specs), respawn or RESPAWN
        self.procs: list[subprocess.Popen] = []
        self.restarts: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.rc: int | None = None

    def start(self) -> None:
        for spec in self.specs:
            self.procs.append(_spawn(spec))
            self.started[spec.name] = time.monotonic()
            print(f"[ver-bringup] started {spec.name} (pid {self.procs[-1].pid})", flush=True)

    def poll(self) -> int | None:
        respawn = self.respawn
        for i, (spec, proc) in enumerate(zip(self.specs, self.procs, strict=True)):
            if proc.poll() is None:
                if time.monotonic() - self.started[spec.name] > 30.0:
                    self.restarts[spec.name] = 0  # alive for a while: a later death counts afresh
                continue
            tries = self.restarts.get(spec.name, 0)
            if not spec.respawn or tries >= respawn["max_retries"] or proc.returncode == 2:
                why = "bad parameters" if proc.returncode == 2 else "not respawned"
                print(
                    f"[ver-bringup] {spec.name} exited with {proc.returncode} ({why}, "
                    f"{tries} restarts): stopping the graph",
                    flush=True,
                )
                return proc.returncode or 1
            print(
                f"[ver-bringup] {spec.name} exited with {proc.returncode}: restarting it in "
                f"{respawn['delay_s']:g} s ({tries + 1}/{respawn['max_retries']}); the rest of "
                "the graph keeps running",
                flush=True,
            )
            time.sleep(respawn["delay_s"])
            self.restarts[spec.name] = tries + 1
            self.started[spec.name] = time.monotonic()
            self.procs[i] = _spawn(spec)
            print(f"[ver-bringup] restarted {spec.name} (pid {self.procs[i].pid})", flush=True)
        return None

    def stop(self) -> None:
        for proc in reversed(self.procs):  # safety node first, sources last
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 5.0
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run_processes(specs: list[NodeSpec], respawn: dict | None = None) -> int:
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    supervisor = _Supervisor(specs, respawn)
    supervisor.start()
    rc = None
    while not stopping and rc is None:
        rc = supervisor.poll()
        time.sleep(0.1)
    supervisor.stop()
    return rc or 0


def _overrides_file(specs: list[NodeSpec]) -> str:
    """Per-node overrides as one parameter file (works for node classes without kwargs)."""
    import tempfile

    import yaml

    data = {s.name: {"ros__parameters": dict(s.parameters)} for s in specs if s.parameters}
    fd, path = tempfile.mkstemp(prefix="ver_bringup_", suffix=".yaml")
    with open(fd, "w") as f:
        yaml.safe_dump(data, f)
    return path


def _run_composed(specs: list[NodeSpec], compose_safety: bool = False) -> int:
    """The nodes in this process; the safety node (unless ``compose_safety``) in a process of
    its own, supervised and respawned as in process mode."""
    import threading

    apart = [] if compose_safety else [s for s in specs if s.module == SAFETY_MODULE]
    specs = [s for s in specs if s not in apart]
    supervisor = _Supervisor(apart)
    supervisor.start()

    import rclpy
    from rclpy.executors import (
        ExternalShutdownException,
        MultiThreadedExecutor,
        SingleThreadedExecutor,
    )
    from rclpy.signals import SignalHandlerOptions

    overrides = _overrides_file(specs)
    files = sorted({f for s in specs for f in s.param_files}) + [overrides]
    init_args = ["ver-bringup", "--ros-args"] + [a for f in files for a in ("--params-file", f)]
    # our own Ctrl-C handling: stop the node loops before the context goes away
    rclpy.init(args=init_args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    nodes, loops = [], []
    stop = threading.Event()
    executor = safety_executor = None
    try:
        for spec in specs:
            cls = getattr(importlib.import_module(spec.module), spec.node_class)
            nodes.append((spec, cls()))
            print(f"[ver-bringup] composed {spec.name}", flush=True)
        executor = MultiThreadedExecutor(num_threads=2 * len(specs) + 2)
        if compose_safety:  # the safety node ticks on an executor thread of its own
            safety_executor = SingleThreadedExecutor()
            loops.append(
                threading.Thread(target=_spin_until, args=(safety_executor, stop), daemon=True)
            )
        for spec, n in nodes:
            (safety_executor if spec.module == SAFETY_MODULE else executor).add_node(n)
            if callable(getattr(n, "run", None)):  # nodes that drive their own loop (sim_node)
                loops.append(threading.Thread(target=n.run, args=(stop,), daemon=True))
        loops.append(threading.Thread(target=_watch, args=(supervisor, stop), daemon=True))
        for t in loops:
            t.start()
        # From here Ctrl-C and SIGTERM only set the stop flag: a KeyboardInterrupt raised at an
        # arbitrary point inside rclpy's executor could be lost or leave its state half-changed
        # (a CI run saw the composed graph ignore Ctrl-C for 30 s)
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        _spin_until(executor, stop)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.set()
        for t in loops:
            t.join(timeout=2.0)
        # what must happen first: the safety node (the process that commands the arm) stopped,
        # the scratch parameter file removed, the latency logs written
        supervisor.stop()
        Path(overrides).unlink(missing_ok=True)
        for _, n in nodes:
            write_latency_log(n)
        # then the middleware teardown, which can block (DDS entity deletion): bounded
        _exit_after(TEARDOWN_S, "tearing down the composed nodes", rc=supervisor.rc or 0)
        for ex in (executor, safety_executor):
            if isinstance(ex, MultiThreadedExecutor):  # never wait on a stuck callback's thread
                ex.shutdown(timeout_sec=2.0, wait_for_threads=False)
            elif ex is not None:
                ex.shutdown(timeout_sec=2.0)
        for _, n in nodes:
            n.destroy_node()
        rclpy.try_shutdown()
    return supervisor.rc or 0


def _watch(supervisor: _Supervisor, stop) -> None:
    """Composed mode: keep the separate node processes alive; stop the graph if one cannot be."""
    while not stop.is_set():
        supervisor.rc = supervisor.poll()
        if supervisor.rc is not None:
            stop.set()
        time.sleep(0.1)


TEARDOWN_S = 10.0  # composed mode: the most the node teardown may take after Ctrl-C


def _leave(rc: int, line: str) -> None:
    """Leave at once (no atexit joins of stuck threads), after one line saying why."""
    print(f"[ver-bringup] {line}", flush=True)
    sys.stderr.flush()
    os._exit(rc)


def _exit_after(seconds: float, what: str, rc: int = 0) -> None:
    """Leave the process ``seconds`` from now unless it has ended: a daemon thread, so a normal
    exit is never delayed by it. One line says what was still running."""
    import threading

    def fire() -> None:
        time.sleep(seconds)
        _leave(rc, f"still {what} {seconds:g} s after stop: exiting")

    threading.Thread(target=fire, name="ver-bringup-exit", daemon=True).start()


def _spin_until(executor, stop) -> None:
    """Spin until ``stop``; an exception escaping a callback is reported and spinning goes on
    (bounded), as a respawn would: one bad message never takes the graph down."""
    from rclpy.executors import ExternalShutdownException

    failures = 0
    while not stop.is_set():
        try:
            executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            stop.set()
        except Exception as e:  # noqa: BLE001
            failures += 1
            print(f"[ver-bringup] callback failed ({type(e).__name__}: {e})", flush=True)
            if failures > 100:
                stop.set()
                raise


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
    transport = _transport_env()
    if args.dry_run:
        for name, value in transport.items():
            print(f"export {name}={shlex.quote(value)}")
        for s in specs:
            print(shlex.join(node_command(s)))
        return 0
    os.environ.update(transport)  # before rclpy.init here, inherited by the node processes
    if args.composed:
        return _exit_bounded(_run_composed(specs, compose_safety=args.compose_safety))
    return _run_processes(specs)


def _exit_bounded(rc: int, grace_s: float = 3.0) -> int:
    """Composed mode after Ctrl-C: the node processes are stopped; an executor worker still in a
    callback (a slow inference on a loaded machine) must not keep the process alive, as Python's
    exit would join it without limit. Wait ``grace_s``, then leave at once."""
    import threading

    deadline = time.monotonic() + grace_s
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for t in others:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in others):
        _leave(rc, f"a callback still running {grace_s:g} s after stop: exiting")
    return rc


def _transport_env() -> dict[str, str]:
    """The shipped Fast DDS profile, unless the environment names one (then one line says so)."""
    from ver_ros.transport import PROFILE_ENV, profile_env

    env = profile_env()
    if env:
        print(f"[ver-bringup] Fast DDS profile {env[PROFILE_ENV]} ({PROFILE_ENV})", flush=True)
    else:
        print(f"[ver-bringup] keeping {PROFILE_ENV}={os.environ[PROFILE_ENV]}", flush=True)
    return env


if __name__ == "__main__":
    sys.exit(main())
