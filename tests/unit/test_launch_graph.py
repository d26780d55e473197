"""The launch file and ver-bringup are built from the same graph description.

launch / launch_ros cannot be installed here, so the launch file is imported against a minimal
STRUCTURAL STAND-IN for those two packages (classes that only record their arguments). This
checks what the launch file declares and which nodes with which parameters it would start; it
does not run ROS launch.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

from ver_ros.graph import LAUNCH_ARGUMENTS, GraphOptions, build_graph, ros_args

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "franka_pick.launch.py"


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


class _EnvironmentVariable:
    """launch.substitutions.EnvironmentVariable(name, default_value=...): the variable's value
    in the launch context's environment, else the default."""

    def __init__(self, name, *, default_value=""):
        self.name, self.default_value = name, default_value

    def perform(self, context):
        return context.environment.get(self.name, self.default_value)


def _standin_modules() -> dict[str, types.ModuleType]:
    """Structural stand-ins for launch and launch_ros (NOT the real packages)."""
    launch = types.ModuleType("launch")
    launch.LaunchDescription = type("LaunchDescription", (_Recorder,), {})
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Recorder,), {})
    actions.SetEnvironmentVariable = type("SetEnvironmentVariable", (_Recorder,), {})
    subs = types.ModuleType("launch.substitutions")
    subs.LaunchConfiguration = _LaunchConfiguration
    subs.EnvironmentVariable = _EnvironmentVariable
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Recorder,), {})
    return {
        "launch": launch,
        "launch.actions": actions,
        "launch.substitutions": subs,
        "launch_ros": launch_ros,
        "launch_ros.actions": ros_actions,
    }


@pytest.fixture
def launch_module(monkeypatch):
    for name, module in _standin_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("franka_pick_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch_nodes(module, **overrides):
    desc = module.generate_launch_description()
    entities = desc.args[0]
    declared = {
        e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"
    }
    values = {name: kw["default_value"] for name, kw in declared.items()}
    values.update(overrides)
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    context = types.SimpleNamespace(launch_configurations=values)
    return declared, opaque[0].kwargs["function"](context)


@pytest.mark.parametrize(
    "overrides",
    [
        {"sim": "true"},
        {"use_realsense_ros": "true", "robot_type": "panda", "controller_type": "forward"},
        {"host_encoder": "true", "backend": "onnxruntime", "record": "true"},
        {},
    ],
)
def test_launch_file_starts_the_graph_description(launch_module, overrides):
    declared, nodes = _launch_nodes(launch_module, checkpoint="/ckpt", **overrides)
    assert set(declared) == set(LAUNCH_ARGUMENTS)
    assert all(kw["description"] for kw in declared.values())
    values = {name: d for name, (d, _) in LAUNCH_ARGUMENTS.items()}
    values.update(checkpoint="/ckpt", **overrides)
    expected = build_graph(GraphOptions.from_strings(values))
    got = [
        (n.kwargs["package"], n.kwargs["executable"], n.kwargs["name"], n.kwargs["parameters"])
        for n in nodes
    ]
    want = [(s.package, s.executable, s.name, [*s.param_files, s.parameters]) for s in expected]
    assert got == want


def test_launch_file_sets_the_transport_profile_unless_the_user_did(launch_module):
    """Before any node starts, FASTDDS_DEFAULT_PROFILES_FILE becomes the user's value if set,
    else the shipped profile (what ver-bringup does)."""
    from ver_ros.transport import PROFILE_ENV, default_profile_path

    entities = launch_module.generate_launch_description().args[0]
    kinds = [type(e).__name__ for e in entities]
    setters = [e for e in entities if type(e).__name__ == "SetEnvironmentVariable"]
    assert len(setters) == 1 and kinds.index("SetEnvironmentVariable") < kinds.index(
        "OpaqueFunction"
    )
    name, value = setters[0].args
    assert name == PROFILE_ENV
    unset = types.SimpleNamespace(environment={})
    assert value.perform(unset) == str(default_profile_path())
    mine = types.SimpleNamespace(environment={PROFILE_ENV: "/etc/mine.xml"})
    assert value.perform(mine) == "/etc/mine.xml"


def test_graph_contents():
    sim = build_graph(GraphOptions(checkpoint="/c", sim=True))
    assert [s.name for s in sim] == ["sim_node", "encoder_node", "policy_node", "safety_node"]
    assert all(s.parameters.get("use_sim_time") is True for s in sim[1:])
    real = build_graph(
        GraphOptions(checkpoint="/c", host_encoder="true", record="true", robot_type="panda")
    )
    assert [s.name for s in real] == ["camera_node", "policy_node", "safety_node", "recorder_node"]
    safety = next(s for s in real if s.name == "safety_node")
    assert safety.parameters["robot_type"] == "panda"
    rs = build_graph(GraphOptions(checkpoint="/c", use_realsense_ros=True))
    assert rs[0].package == "realsense2_camera" and rs[0].module is None
    for s in sim:
        assert Path(s.param_files[0]).is_file()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "checkpoint"),
        ({"checkpoint": "/c", "robot_type": "ur5"}, "robot_type"),
        ({"checkpoint": "/c", "sim": "maybe"}, "not a boolean"),
        ({"checkpoint": "/c", "sim": True, "use_realsense_ros": True}, "do not combine"),
        ({"checkpoint": "/c", "backend": "cuda"}, "backend"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GraphOptions(**kwargs)


def test_ros_args_quote_values():
    spec = build_graph(GraphOptions(checkpoint="/tmp/ck 1", sim=True))[1]
    args = ros_args(spec)
    assert args[:3] == ["--ros-args", "-r", "__node:=encoder_node"]
    assert "encoder_node:checkpoint:=/tmp/ck 1" in args
    assert "encoder_node:use_sim_time:=true" in args


_PROBE = """
import sys, rclpy
from rclpy.node import Node
rclpy.init(args=sys.argv)
node = Node("probe")
for name, default in (("robot_type", ""), ("controller_type", ""), ("observation_budget_s", 0.0)):
    node.declare_parameter(name, default)
print([node.get_parameter(n).value for n in ("robot_type", "controller_type",
                                                "observation_budget_s")])
"""


def test_launch_arguments_beat_the_parameter_file(ros_env):
    """rcl, as ver-bringup runs a node: the flags (--robot-type panda) override the shipped
    config's node section (robot_type: fr3), which also has a /** section."""
    import subprocess

    specs = build_graph(
        GraphOptions(checkpoint="/c", robot_type="panda", controller_type="forward")
    )
    safety = next(s for s in specs if s.name == "safety_node")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *ros_args(safety)],
        env=ros_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['panda', 'forward', 0.25]"


def test_bringup_dry_run(capsys):
    from ver_ros.bringup import main

    assert main(["--checkpoint", "/c", "--use-realsense-ros", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "not starting realsense2_camera" in out
    assert "-m ver_ros.encoder_node" in out and "-m ver_ros.safety_node" in out
    assert main(["--checkpoint", "/c", "--robot-type", "kuka", "--dry-run"]) == 2


_ORPHAN = """
import os, subprocess, sys, time
# the "supervisor": starts a node-like child that calls stop_with_supervisor(), prints its pid
child = subprocess.Popen([sys.executable, "-c", (
    "import time; from ver_ros.bringup import stop_with_supervisor; stop_with_supervisor();"
    "print('ready', flush=True); time.sleep(120)")],
    env={**os.environ, "VER_BRINGUP_PID": str(os.getpid())}, stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_node_processes_stop_when_bringup_is_killed():
    """ver-bringup killed with SIGKILL (no chance to stop its nodes) must not leave node
    processes running as orphans: each gets SIGINT from the kernel and exits."""
    import os
    import signal
    import subprocess
    import time

    sup = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE, text=True)
    try:
        child = int(sup.stdout.readline())
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)  # still there (or a zombie not yet reaped by init)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the node process outlived a SIGKILLed ver-bringup by 30 s")
    finally:
        if sup.poll() is None:
            sup.kill()


def test_stop_with_supervisor_is_a_no_op_outside_bringup_and_exits_when_too_late():
    """In a subprocess (prctl would change this test process): without VER_BRINGUP_PID it
    returns; with the pid of a process that is not its parent (the supervisor died before the
    node started), it exits."""
    import subprocess

    code = "from ver_ros.bringup import stop_with_supervisor; stop_with_supervisor(); print('ran')"
    env = {k: v for k, v in os.environ.items() if k != "VER_BRINGUP_PID"}
    alone = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert alone.returncode == 0 and "ran" in alone.stdout
    if sys.platform.startswith("linux"):
        late = subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "VER_BRINGUP_PID": "1"},  # not our parent (the test is)
            capture_output=True,
            text=True,
        )
        assert late.returncode == 1 and "ran" not in late.stdout, late
        assert "supervisor gone" in late.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_stop_with_supervisor_takes_back_an_ignored_sigint():
    """A supervisor started in the background (`cmd &` in a script) hands its children an
    ignored SIGINT; the death signal would then do nothing. The node takes the default back."""
    import signal
    import subprocess

    code = (
        "import signal; from ver_ros.bringup import stop_with_supervisor; "
        "assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN; stop_with_supervisor(); "
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    )
    env = {**os.environ, "VER_BRINGUP_PID": str(os.getpid())}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_exit_after_ends_a_stuck_teardown_and_never_delays_a_clean_exit():
    """Composed mode bounds its middleware teardown: a process stuck after `_exit_after` leaves
    with one line saying what was still running; a process that finishes first is not held."""
    import subprocess

    stuck = (
        "import threading; from ver_ros.bringup import _exit_after; "
        "_exit_after(0.5, 'waiting on nothing', rc=3); threading.Event().wait()"
    )
    done = subprocess.run([sys.executable, "-c", stuck], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "still waiting on nothing 0.5 s after stop: exiting" in done.stdout
    clean = "from ver_ros.bringup import _exit_after; _exit_after(300, 'x'); print('left')"
    # the daemon's 300 s would trip the 60 s timeout if it held the exit
    done = subprocess.run([sys.executable, "-c", clean], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "left"
