"""sim_node <-> scripted_expert <-> recorder_node as separate processes over real DDS."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mcap_ros2.reader import read_ros2_messages
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]
TS = get_typestore(Stores.ROS2_KILTED)
IMG = "/camera/camera/color/image_raw"
WRIST = "/wrist_camera/camera/color/image_raw"
SIM_ARGS = [
    "-p",
    "width:=96",
    "-p",
    "height:=96",
    "-p",
    "wrist_width:=80",  # another size than the scene camera's: training resizes per camera
    "-p",
    "wrist_height:=64",
    "-p",
    "realtime:=false",
    "-p",
    "seed:=5",
    "-p",
    "image_rate_hz:=15.0",
]


class Graph:
    """Node processes (logs in tmp) + an in-test rclpy node for services and topics."""

    def __init__(self, env: dict, logs: Path) -> None:
        import rclpy

        self.rclpy, self.env, self.logs, self.procs = rclpy, env, logs, {}
        rclpy.init()
        self.node = rclpy.create_node("test_client")

    def start(self, name: str, module: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115
        cmd = [
            sys.executable,
            "-m",
            f"ver_ros.{module}",
            "--ros-args",
            "-r",
            f"__node:={name}",
            *args,
        ]
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def call(
        self, service: str, timeout: float = 60.0, data: bool | None = None
    ) -> tuple[bool, str]:
        """Call a std_srvs/Trigger service, or a SetBool one with ``data``."""
        from std_srvs.srv import SetBool, Trigger

        srv = Trigger if data is None else SetBool
        client = self.node.create_client(srv, service)
        assert client.wait_for_service(timeout_sec=timeout), f"{service} not available"
        request = srv.Request()
        if data is not None:
            request.data = data
        fut = client.call_async(request)
        self.rclpy.spin_until_future_complete(self.node, fut, timeout_sec=timeout)
        assert fut.done(), f"{service} did not answer"
        self.node.destroy_client(client)
        return fut.result().success, fut.result().message

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)

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
        self.rclpy.shutdown()


@pytest.fixture
def graph(ros_env, tmp_path):
    g = Graph(ros_env, tmp_path)
    yield g
    g.close()


def _read(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, TS.deserialize_cdr(raw, conn.msgtype)))
    return out


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _arm_points(got: dict[str, list], topic: str) -> dict[int, np.ndarray]:
    """A recorded JointTrajectory topic's single points by header stamp."""
    return {_stamp(m): np.array(m.points[0].positions) for _, m in got[topic]}


def _start_demo_graph(graph, out: Path, expert: tuple = (), recorder: tuple = ()) -> None:
    """sim_node + scripted_expert (with ``expert`` parameters) + recorder_node writing to ``out``."""
    graph.start("sim_node", "sim_node", *SIM_ARGS)
    graph.start("scripted_expert", "scripted_expert", "-p", "use_sim_time:=true", *expert)
    rec = ("-p", "use_sim_time:=true", "-p", f"output_dir:={out}", *recorder)
    graph.start("recorder_node", "recorder_node", *rec)


def _until_lifted(graph, timeout: float = 120.0) -> bool:
    """Start the expert and wait (generously) until the sim reports the cube lifted."""
    assert graph.call("/scripted_expert/start")[0]
    deadline, success = time.monotonic() + timeout, False
    while not success and time.monotonic() < deadline:
        graph.spin(0.3)
        success = graph.call("/sim_node/success")[0]
    return success


def _recorded_expert_episode(graph, tmp_path: Path, *expert_params: str) -> dict[str, list]:
    """One recorded episode of a scripted_expert with ``expert_params`` ("name:=value"), run until
    the cube is lifted; -> its messages by topic."""
    expert = tuple(x for param in expert_params for x in ("-p", param))
    _start_demo_graph(graph, tmp_path / "demos", expert=expert)
    assert graph.call("/sim_node/reset")[0]
    graph.spin(0.5)
    ok, path = graph.call("/recorder_node/start")
    assert ok, path
    assert _until_lifted(graph), graph.log("scripted_expert")
    graph.spin(0.5)
    ok, summary = graph.call("/recorder_node/stop")
    assert ok, summary
    return _read(Path(json.loads(summary)["path"]))


def test_expert_episode_recorded_and_read_back(graph, tmp_path):
    out = tmp_path / "demos"
    _start_demo_graph(graph, out, recorder=("-p", "segment_seconds:=0.5"))
    assert graph.call("/sim_node/reset") == (True, "seed=5")
    graph.spin(0.5)
    ok, path = graph.call("/recorder_node/start")
    assert ok, path
    ok, msg = graph.call("/recorder_node/start")  # a second start is refused, recording unaffected
    assert not ok and "already recording" in msg
    assert _until_lifted(graph), "scripted expert did not lift the cube through ROS"
    graph.spin(0.5)
    ok, summary = graph.call("/recorder_node/stop")
    assert ok, summary
    summary = json.loads(summary)
    bag = Path(summary["path"])
    meta = json.loads((bag / "episode.json").read_text())
    assert meta["success"] is True and meta["seed"] == 5 and meta["task"] == "pick_cube"
    assert meta["success_source"] == "sim" and summary["success"] is True
    assert meta["joint_names"] == [f"fr3_joint{i}" for i in range(1, 8)]

    got = _read(bag)
    counts = {t: len(v) for t, v in got.items()}
    assert counts == summary["counts"]  # everything received was written
    assert counts[IMG] >= 20 and counts["/joint_states"] > counts[IMG]
    assert counts["/fr3_arm_controller/joint_trajectory"] >= 20 and counts["/gripper/command"] >= 20
    for topic, items in got.items():
        times = [t for t, _ in items]
        assert times == sorted(times), topic
        assert meta["start_time_ns"] <= times[0] and times[-1] <= meta["stop_time_ns"], topic
    img_stamps = [_stamp(m) for _, m in got[IMG]]
    assert all(b > a for a, b in zip(img_stamps, img_stamps[1:], strict=False))
    # recorded on the sim clock: receipt time >= header stamp, and not far behind it
    lags = np.array([t - _stamp(m) for t, m in got[IMG]]) / 1e9
    assert lags.min() >= 0 and np.median(lags) < 0.5
    # camera period in sim time ~ 1 / 15 Hz
    assert 0.05 < np.median(np.diff(img_stamps)) / 1e9 < 0.09
    first = got[IMG][0][1]
    assert (first.height, first.width, first.encoding) == (96, 96, "rgb8")

    # the wrist camera is recorded beside the scene camera, each frame pair of one instant
    assert counts[WRIST] >= 20
    wrist = got[WRIST][0][1]
    assert (wrist.height, wrist.width, wrist.encoding) == (64, 80, "rgb8")
    assert set(img_stamps) & {_stamp(m) for _, m in got[WRIST]}

    # independent MCAP reader agrees message by message
    indep: dict[str, list] = {}
    for f in sorted(bag.glob("*.mcap")):
        for m in read_ros2_messages(str(f)):
            indep.setdefault(m.channel.topic, []).append(m.log_time_ns)
    assert {t: len(v) for t, v in indep.items()} == counts
    assert sorted(indep[IMG]) == [t for t, _ in got[IMG]]

    # ~/finish writes the caller's verdict, not what /sim/episode last said (the cube is held)
    ok, path2 = graph.call("/recorder_node/start")
    assert ok, path2
    graph.spin(0.5)
    assert graph.call("/sim_node/success")[0]
    ok, summary2 = graph.call("/recorder_node/finish", data=False)
    assert ok, summary2
    meta2 = json.loads((Path(path2) / "episode.json").read_text())
    assert meta2["success"] is False and meta2["success_source"] == "caller"
    assert json.loads(summary2)["success"] is False

    # the two-camera episode trains: both views aligned and resized to the model's input
    from ver_core.data import TopicConfig, load_demos
    from ver_core.policy import TaskConfig, TaskPolicy
    from ver_core.router import RouterConfig
    from ver_core.train import RouterTrainer, TrainConfig

    data = load_demos(out, TopicConfig(images=[IMG, WRIST]), 4, 10.0, 32)
    assert data.images.shape[1:] == (2, 32, 32, 3) and len(data) >= 10
    assert data.cameras == ["camera", "wrist_camera"]
    cfg = TaskConfig(
        image_topics=[IMG, WRIST],
        model_overrides={"depth": 3, "moe_blocks": 2, "img_size": 32},
        neck_dim=16,
        hidden_dim=32,
        chunk_len=4,
        router=RouterConfig(anneal_steps=2),
    )
    train = TrainConfig(steps=3, batch_size=4, val_every=3, progress=False, plots=False)
    RouterTrainer(TaskPolicy.build(cfg), data, tmp_path / "policy", train).fit()
    assert TaskPolicy.from_pretrained(tmp_path / "policy").config.cameras == [
        "camera",
        "wrist_camera",
    ]


def test_bad_commands_refused_and_recorder_crash_safety(graph, tmp_path):
    from std_msgs.msg import Float64, Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from ver_ros.qos import COMMAND_QOS

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = tmp_path / "demos"
    graph.start("sim_node", "sim_node", *SIM_ARGS)
    graph.start("rec_bad", "recorder_node", "-p", f"output_dir:={blocker / 'demos'}")
    graph.start(
        "rec_kill",
        "recorder_node",
        "-p",
        f"output_dir:={out / 'kill'}",
        "-p",
        "segment_seconds:=0.3",
    )
    graph.start(
        "rec_int",
        "recorder_node",
        "-p",
        f"output_dir:={out / 'int'}",
        "-p",
        "segment_seconds:=30.0",
    )
    # unwritable output directory: clear refusal, node keeps serving
    ok, msg = graph.call("/rec_bad/start")
    assert not ok and "not writable" in msg
    assert graph.call("/rec_bad/stop") == (False, "not recording")
    assert graph.procs["rec_bad"].poll() is None

    # bad commands: logged, never applied
    fwd = graph.node.create_publisher(
        Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS
    )
    traj = graph.node.create_publisher(
        JointTrajectory, "/fr3_arm_controller/joint_trajectory", COMMAND_QOS
    )
    grip = graph.node.create_publisher(Float64, "/gripper/command", COMMAND_QOS)
    assert graph.call("/sim_node/reset")[0]
    graph.spin(1.0)
    bad_names = JointTrajectory(joint_names=[f"panda_joint{i}" for i in range(1, 8)])
    bad_names.points = [JointTrajectoryPoint(positions=[0.5] * 7)]
    short = JointTrajectory(joint_names=[f"fr3_joint{i}" for i in range(1, 8)])
    short.points = [JointTrajectoryPoint(positions=[0.5] * 6)]
    for _ in range(3):
        fwd.publish(Float64MultiArray(data=[0.5] * 6 + [float("nan")]))
        fwd.publish(Float64MultiArray(data=[0.5] * 6))
        traj.publish(bad_names)
        traj.publish(short)
        grip.publish(Float64(data=float("nan")))
        graph.spin(0.3)
    graph.spin(1.0)
    log = graph.log("sim_node")
    for needle in (
        "non-finite",
        "6 values, expected 7",
        "unknown ['panda_joint1'",
        "point 0 has 6 values",
        "non-finite width",
    ):
        assert needle in log, f"no error logged for: {needle}"

    # crash safety: SIGKILL and SIGINT mid-episode leave readable bags
    assert graph.call("/rec_kill/start")[0] and graph.call("/rec_int/start")[0]
    graph.spin(3.0)
    graph.procs["rec_kill"].send_signal(signal.SIGKILL)
    graph.procs["rec_int"].send_signal(signal.SIGINT)
    assert graph.procs["rec_kill"].wait(timeout=10) == -signal.SIGKILL
    graph.procs["rec_int"].wait(timeout=20)
    killed = _read(out / "kill" / "episode_000000")
    assert len(killed[IMG]) >= 5 and len(killed["/joint_states"]) >= 20
    interrupted_dir = out / "int" / "episode_000000"
    interrupted = _read(interrupted_dir)  # one 30 s segment: only a clean close makes it readable
    assert len(interrupted[IMG]) >= 10
    meta = json.loads((interrupted_dir / "episode.json").read_text())
    assert meta["interrupted"] is True and meta["stop_time_ns"] is not None
    assert "episode closed on shutdown" in graph.log("rec_int")


def test_detour_demo_over_dds(graph):
    """sim_node publishes the scene's distractors (latched); a scripted_expert with detour_prob 1
    flies the executed arm away from its own label (the intended trajectory) to hover over one of
    them, then picks the cube."""
    from geometry_msgs.msg import PoseArray
    from trajectory_msgs.msg import JointTrajectory

    from ver_ros.qos import COMMAND_QOS, LATCHED_QOS

    graph.start("sim_node", "sim_node", *SIM_ARGS, "-p", "min_distractors:=3")
    graph.start(
        "scripted_expert",
        "scripted_expert",
        "-p",
        "use_sim_time:=true",
        "-p",
        "detour_prob:=1.0",
        "-p",
        "detour_seed:=0",
    )
    seen: dict[str, list] = {"decoys": []}
    commands: dict[str, dict[int, np.ndarray]] = {"executed": {}, "label": {}}  # by stamp
    graph.node.create_subscription(
        PoseArray, "/sim/distractors", lambda m: seen["decoys"].append(m), LATCHED_QOS
    )
    for key, topic in (
        ("executed", "/fr3_arm_controller/joint_trajectory"),
        ("label", "/scripted_expert/intended_trajectory"),
    ):
        graph.node.create_subscription(
            JointTrajectory,
            topic,
            lambda m, key=key: commands[key].__setitem__(
                _stamp(m), np.array(m.points[0].positions)
            ),
            COMMAND_QOS,
        )
    assert graph.call("/sim_node/reset")[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        seen["decoys"] and len(seen["decoys"][-1].poses) == 3
    ):
        graph.spin(0.2)
    assert seen["decoys"] and len(seen["decoys"][-1].poses) == 3
    assert _until_lifted(graph), graph.log("scripted_expert")
    both = commands["executed"].keys() & commands["label"].keys()  # the same tick's pair
    assert len(both) > 20
    gap = max(np.max(np.abs(commands["executed"][t] - commands["label"][t])) for t in both)
    assert gap > 0.2, f"the executed arm never left the label (largest gap {gap:.3f} rad)"


def test_missed_grasp_demo_over_dds(graph, tmp_path):
    """A scripted_expert with miss_prob 1, recorded: the executed gripper closes and the hand
    reads empty (finger width < 2 cm) while the recorded gripper label is still open; the label
    closes only later, on the cube, and the episode ends with the cube lifted."""
    got = _recorded_expert_episode(graph, tmp_path, "miss_prob:=1.0", "miss_seed:=0")
    executed = [(t, m.data) for t, m in got["/gripper/command"]]
    label = [(t, m.data) for t, m in got["/scripted_expert/intended_gripper"]]
    first_close = min(t for t, w in executed if w < 0.01)
    label_close = min(t for t, w in label if w < 0.01)
    assert label_close > first_close + 1e9, "the label closed with the miss"
    fingers = [
        (t, sum(p for n, p in zip(m.name, m.position, strict=True) if "finger" in n))
        for t, m in got["/joint_states"]
    ]
    empty = [t for t, w in fingers if t < label_close and t > first_close and w < 0.02]
    assert empty, "the hand never read empty after the missed close"
    assert all(w > 0.07 for t, w in label if t < label_close)  # the label stays open throughout


def test_twisted_grasp_demo_over_dds(graph, tmp_path):
    """A scripted_expert with twist_prob 1, recorded: every executed arm command is the label
    with joint 7 turned by one angle of 15-40 degrees, the hand shuts on the cube wider than an
    aligned grasp (> 5.5 cm), and the episode still ends with the cube lifted."""
    got = _recorded_expert_episode(graph, tmp_path, "twist_prob:=1.0", "twist_seed:=3")
    executed = _arm_points(got, "/fr3_arm_controller/joint_trajectory")
    label = _arm_points(got, "/scripted_expert/intended_trajectory")
    both = sorted(executed.keys() & label.keys())  # one tick's pair shares its stamp
    assert len(both) > 20
    gaps = np.array([executed[t] - label[t] for t in both])
    assert np.abs(gaps[:, :6]).max() < 1e-9, "a joint other than joint 7 was turned"
    turn = np.degrees(gaps[:, 6])
    assert 15 - 1e-6 <= abs(turn[0]) <= 40 + 1e-6 and np.ptp(turn) < 1e-6, turn
    fingers = [
        sum(p for n, p in zip(m.name, m.position, strict=True) if "finger" in n)
        for _, m in got["/joint_states"]
    ]
    assert 0.055 < min(fingers[-5:]) < 0.075, fingers[-5:]  # held across the cube's corners


def test_settled_close_demo_over_dds(graph, tmp_path):
    """A scripted_expert with DART noise and settle_s 1, recorded: the gripper label closes only
    after the executed arm command has been the label itself (the settle phase runs without
    noise) for 2-12 control steps (settle_s 1 s at 10 Hz, plus the step into it), and the
    episode ends with the cube lifted. Without the settle the noise stays on until the close
    (tests/unit/test_sim.py measures what that does to the hand)."""
    got = _recorded_expert_episode(
        graph, tmp_path, "noise_std:=0.03", "noise_seed:=1", "settle_s:=1.0"
    )
    executed = _arm_points(got, "/fr3_arm_controller/joint_trajectory")
    label = _arm_points(got, "/scripted_expert/intended_trajectory")
    # one gripper label per arm label, published right after it in the same tick (Float64 has no
    # stamp: paired by order)
    arm_stamps = [_stamp(m) for _, m in got["/scripted_expert/intended_trajectory"]]
    widths = [m.data for _, m in got["/scripted_expert/intended_gripper"]]
    assert abs(len(arm_stamps) - len(widths)) <= 1
    gripper = dict(zip(arm_stamps, widths, strict=False))
    ticks = sorted(executed.keys() & label.keys() & gripper.keys())  # one tick's messages
    close = next(i for i, t in enumerate(ticks) if gripper[t] < 0.01)
    noisy = [i for i in range(close) if np.max(np.abs(executed[ticks[i]] - label[ticks[i]])) > 1e-9]
    assert noisy, "the DART noise never moved the executed arm"
    # control steps with the label open and no noise (counted, not timed: a loaded machine
    # stretches the steps' sim-time spacing, not their number)
    quiet = close - noisy[-1] - 1
    assert 2 <= quiet <= 12, quiet  # without the settle: 1 (the close step itself)


def test_hover_sweep_demo_flags_its_frames_perception_only(graph, tmp_path):
    """A scripted_expert with sweep_prob 1, recorded: the perception-only flag (one Bool per tick,
    right after that tick's labels) is True on exactly the ticks whose executed joint 7 is the
    label turned by the sweep (one run of steps + 1 ticks reaching more than 30 degrees), and the
    training reader marks those frames (tests/unit/test_sim.py: the expert holds the hover)."""
    from ver_core.data import TopicConfig, load_demos

    got = _recorded_expert_episode(graph, tmp_path, "sweep_prob:=1.0", "sweep_seed:=0")
    flag_topic = "/scripted_expert/perception_only"
    executed = _arm_points(got, "/fr3_arm_controller/joint_trajectory")
    label = _arm_points(got, "/scripted_expert/intended_trajectory")
    stamps = [_stamp(m) for _, m in got["/scripted_expert/intended_trajectory"]]
    flags = [m.data for _, m in got[flag_topic]]
    assert abs(len(stamps) - len(flags)) <= 1
    flagged = {t for t, f in zip(stamps, flags, strict=False) if f}
    ticks = sorted(executed.keys() & label.keys())
    on = [i for i, t in enumerate(ticks) if t in flagged]
    assert len(on) == 25 and on == list(range(on[0], on[0] + 25)), on  # Sweep(steps=24)
    turn = np.degrees([executed[t][6] - label[t][6] for t in ticks])
    assert np.abs(turn[on]).max() > 30
    assert np.abs(np.delete(turn, on)).max() < 1e-6  # no noise: off the sweep, the label runs
    root = tmp_path / "demos"
    data = load_demos(root, TopicConfig(images=[IMG], perception_only=flag_topic), 8, 10.0, 32)
    marked = int(data.perception_only.sum())
    assert 20 <= marked <= 28, marked  # 2.5 s of the 10 Hz grid
