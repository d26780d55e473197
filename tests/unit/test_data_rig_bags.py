"""Bags as real Franka rigs record them, written by the mcap project's writers (not ours).

franka_ros2 drives the hand through action servers (no gripper command topic; the width is in
the finger joints), kinesthetic / leader-arm demos have no arm command topic, JointState names
come in any order with extra joints and the hand in its own messages, cameras mix raw and
compressed streams, clocks jump, recorders crash mid-write.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.writer import Writer as McapWriter
from mcap_ros2.writer import Writer as Ros2Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.msg import get_types_from_msg

from ver_core.cli.train_router import main as train_main
from ver_core.data import TopicConfig, find_episodes, load_demos, read_episode
from ver_core.data.synthetic import episode_trajectory, render_scene
from ver_core.policy import TaskPolicy

TS = get_typestore(Stores.ROS2_HUMBLE)
JOINTS = [f"fr3_joint{i}" for i in range(1, 8)]
FINGERS = ["fr3_finger_joint1", "fr3_finger_joint2"]
ARM = "/fr3_arm_controller/joint_trajectory"
SCENE = "/camera/camera/color/image_raw"
WRIST = "/wrist_camera/camera/color/image_raw"
TINY = {"depth": 3, "moe_blocks": 2, "img_size": 32}


def load(root, topics=None, **kw):
    return load_demos(
        root, topics or TopicConfig(), chunk_len=4, control_rate_hz=10.0, image_size=32, **kw
    )


class Ros2Bag:
    """An MCAP bag written by mcap-ros2-support (messages as dicts, zstd chunks of 16 KiB so a
    cut lands mid-file as it does for a recorder that crashed)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("wb")
        self.writer = Ros2Writer(self.file, chunk_size=16 * 1024)
        self.schemas: dict = {}

    def write(self, topic: str, msgtype: str, fields: dict, t: int) -> None:
        if msgtype not in self.schemas:
            text = TS.generate_msgdef(msgtype, ros_version=2)[0]
            self.schemas[msgtype] = self.writer.register_msgdef(msgtype.replace("/msg/", "/"), text)
        self.writer.write_message(topic, self.schemas[msgtype], fields, t, t)

    def close(self) -> None:
        self.writer.finish()
        self.file.close()


def header(ns: int) -> dict:
    return {"stamp": {"sec": ns // 10**9, "nanosec": ns % 10**9}, "frame_id": "fr3_link0"}


def jpeg(img: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def franka_episode(
    path: Path,
    seed: int = 0,
    seconds: float = 2.0,
    t0: int = 1_700_000_000 * 10**9,
    arm_commands: bool = True,
    gripper_topic: bool = True,
    shuffled: bool = False,
    split_hand: bool = False,
    cameras: tuple[tuple[str, str, float], ...] = ((SCENE, "raw", 30.0),),
    stamp_jump_at: float | None = None,
    gap_at: float | None = None,
    bag: Ros2Bag | None = None,
) -> Path:
    """One episode as an MCAP file: commands at 10 Hz, joint states at 50 Hz lagging them by
    50 ms, each camera (topic, raw|jpeg, Hz). ``shuffled``: JointState names in another order
    with extra joints; ``split_hand``: the fingers in their own JointState messages (as the
    franka_gripper node publishes them). ``stamp_jump_at`` (s): from then on the publisher's
    header stamps are 1000 s behind (its clock was reset); ``gap_at`` (s): nothing is recorded
    for 6 s from then on."""
    own = bag is None
    bag = bag or Ros2Bag(path)
    sec = np.arange(0, seconds, 0.1)
    q, grip = episode_trajectory(seed, sec)
    events = []  # (t, topic, msgtype, fields)
    for i, s in enumerate(sec):
        t = t0 + int(s * 1e9)
        if arm_commands:
            point = {
                "positions": q[i].tolist(),
                "velocities": [],
                "accelerations": [],
                "effort": [],
                "time_from_start": {"sec": 0, "nanosec": 0},
            }
            traj = {"header": header(t), "joint_names": JOINTS, "points": [point]}
            events.append((t, ARM, "trajectory_msgs/msg/JointTrajectory", traj))
        if gripper_topic:
            events.append(
                (t + 1000, "/gripper/command", "std_msgs/msg/Float64", {"data": float(grip[i])})
            )
    for s in np.arange(0, seconds, 0.02):
        t = t0 + int(s * 1e9)
        k = max(0, np.searchsorted(sec, s - 0.05) - 1)
        stamp = t - (1000 * 10**9 if stamp_jump_at is not None and s >= stamp_jump_at else 0)
        arm = dict(zip(JOINTS, q[k].tolist(), strict=True))
        hand = {f: float(grip[k] / 2) for f in FINGERS}
        if shuffled:
            arm = {
                "fr3_joint7": arm["fr3_joint7"],
                "base_yaw": 0.3,
                **dict(reversed(list(arm.items()))),
            }
        groups = [arm, hand] if split_hand else [{**hand, **arm} if shuffled else {**arm, **hand}]
        for n, group in enumerate(groups):
            js = {
                "header": header(stamp),
                "name": list(group),
                "position": list(group.values()),
                "velocity": [],
                "effort": [],
            }
            events.append((t + n, "/joint_states", "sensor_msgs/msg/JointState", js))
    for v, (topic, kind, hz) in enumerate(cameras):
        for s in np.arange(0.01, seconds, 1 / hz):
            t = t0 + int(s * 1e9)
            k = max(0, np.searchsorted(sec, s) - 1)
            img = render_scene(q[k, 0] + 0.3 * v, grip[k])
            if kind == "raw":
                msg = {
                    "header": header(t),
                    "height": 48,
                    "width": 64,
                    "encoding": "rgb8",
                    "is_bigendian": 0,
                    "step": 64 * 3,
                    "data": img.tobytes(),
                }
                events.append((t, topic, "sensor_msgs/msg/Image", msg))
            else:
                msg = {
                    "header": header(t),
                    "format": "rgb8; jpeg compressed bgr8",
                    "data": jpeg(img),
                }
                events.append((t, f"{topic}/compressed", "sensor_msgs/msg/CompressedImage", msg))
    for t, topic, msgtype, fields in sorted(events, key=lambda e: e[0]):
        if gap_at is not None and t0 + gap_at * 1e9 <= t < t0 + (gap_at + 6) * 1e9:
            continue
        bag.write(topic, msgtype, fields, t)
    if own:
        bag.close()
    return path


def test_joint_states_in_any_order_with_extra_joints_and_the_hand_apart(tmp_path):
    franka_episode(tmp_path / "plain" / "ep.mcap")
    franka_episode(tmp_path / "shuffled" / "ep.mcap", shuffled=True, split_hand=True)
    plain, shuffled = load(tmp_path / "plain"), load(tmp_path / "shuffled")
    assert len(plain) == len(shuffled) > 10
    np.testing.assert_allclose(shuffled.states, plain.states, atol=1e-6)
    np.testing.assert_allclose(shuffled.actions, plain.actions, atol=1e-6)
    _, grip = episode_trajectory(0, np.arange(0, 2.0, 0.1))
    widths = plain.states[:, 7].astype(np.float64)[:, None]
    assert np.all(np.min(np.abs(widths - grip[None, :]), axis=1) < 1e-6)  # width = both fingers


def test_no_gripper_topic_uses_the_finger_width_and_says_so_once(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    for i in range(2):
        franka_episode(tmp_path / f"ep{i}.mcap", seed=i, gripper_topic=False)
    data = load(tmp_path)
    assert data.gripper_source == "finger-width" and data.action_source == "command"
    assert caplog.text.count("gripper source: finger-width") == 1
    # the gripper target at t is the width measured at t + 0.1 s: the next sample's state
    ep0 = data.episode == 0
    np.testing.assert_allclose(data.actions[ep0][:-1, 0, 7], data.states[ep0][1:, 7], atol=1e-6)
    assert (
        np.isclose(data.actions[:, :, 7], 0.0).any()
        and np.isclose(data.actions[:, :, 7], 0.08).any()
    )


def test_no_arm_command_topic_uses_the_next_measured_joints(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    franka_episode(tmp_path / "teach.mcap", arm_commands=False)
    data = load(tmp_path)
    assert data.action_source == "next-state"
    assert "action source: next-state (auto: 1 of 1 episodes have no arm command" in caplog.text
    # chunk step i of a sample is the state measured (i + 1) control periods later
    np.testing.assert_allclose(data.actions[:-4, 0, :7], data.states[1:-3, :7], atol=1e-6)
    np.testing.assert_allclose(data.actions[:-4, 2, :7], data.states[3:-1, :7], atol=1e-6)
    with pytest.raises(ValueError, match=f"no arm command messages on {ARM}.*next-state"):
        load(tmp_path, action_source="command")


GOAL_DEFS = {  # action -> (action type, goal definition, extra message definitions)
    "move": ("franka_msgs/action/Move", "float64 width\nfloat64 speed", {}),
    "grasp": (
        "franka_msgs/action/Grasp",
        "float64 width\nfranka_msgs/GraspEpsilon epsilon\nfloat64 speed\nfloat64 force",
        {"franka_msgs/GraspEpsilon": "float64 inner\nfloat64 outer"},
    ),
    "homing": ("franka_msgs/action/Homing", "uint8 structure_needs_at_least_one_member", {}),
    "gripper_action": (
        "control_msgs/action/GripperCommand",
        "control_msgs/GripperCommand command",
        {"control_msgs/GripperCommand": "float64 position\nfloat64 max_effort"},
    ),
}
SEP = "=" * 80 + "\n"


def goal_event_msgdef(action: str) -> tuple[str, str]:
    """(type name, ros2msg text) of an action's send_goal service event, as rosbag2 stores it."""
    name, goal, extra = GOAL_DEFS[action]
    defs = {
        f"{name}_SendGoal_Request": f"unique_identifier_msgs/UUID goal_id\n{name}_Goal goal",
        f"{name}_SendGoal_Response": "bool accepted\nbuiltin_interfaces/Time stamp",
        f"{name}_Goal": goal,
        "service_msgs/ServiceEventInfo": "uint8 REQUEST_SENT = 0\nuint8 REQUEST_RECEIVED = 1\n"
        "uint8 RESPONSE_SENT = 2\nuint8 RESPONSE_RECEIVED = 3\nuint8 event_type\n"
        "builtin_interfaces/Time stamp\nchar[16] client_gid\nint64 sequence_number",
        "builtin_interfaces/Time": "int32 sec\nuint32 nanosec",
        "unique_identifier_msgs/UUID": "uint8[16] uuid",
        **extra,
    }
    top = (
        f"service_msgs/ServiceEventInfo info\n{name}_SendGoal_Request[<=1] request\n"
        f"{name}_SendGoal_Response[<=1] response"
    )
    text = top + "\n" + "".join(f"{SEP}MSG: {k}\n{v}\n" for k, v in defs.items())
    return f"{name}_SendGoal_Event", text


def goal_bag(path: Path, goals: list[tuple[float, str, dict, bool]], t0: int) -> None:
    """An episode without a gripper topic whose hand is driven by action goals: (s, action, goal
    fields, accepted). Each goal is recorded as the client's REQUEST_SENT and the server's
    REQUEST_RECEIVED (the same goal twice), then the server's RESPONSE_SENT. mcap-ros2-support
    cannot encode type names with '_' (Move_SendGoal_Event), so this bag's messages are CDR
    from rosbags and the file is written by the mcap package's own Writer."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    texts = {}
    for action in GOAL_DEFS:
        name, text = goal_event_msgdef(action)
        store.register(get_types_from_msg(text, name))
        texts[name] = text
    T = store.types
    rig = _Collect()
    franka_episode(path, gripper_topic=False, t0=t0, bag=rig)  # arm, joints and camera as dicts
    events = [(t, topic, mt, _to_msg(store, mt, fields)) for t, topic, mt, fields in rig.events]
    time = T["builtin_interfaces/msg/Time"]
    for n, (s, action, fields, accepted) in enumerate(goals):
        name, _ = goal_event_msgdef(action)
        base = name[: -len("_SendGoal_Event")]
        goal_cls = T[f"{base}_Goal"]
        if action == "grasp":
            fields = {
                **fields,
                "epsilon": T["franka_msgs/msg/GraspEpsilon"](inner=0.005, outer=0.005),
            }
        if action == "gripper_action":
            fields = {"command": T["control_msgs/msg/GripperCommand"](**fields)}
        if action == "homing":
            fields = {"structure_needs_at_least_one_member": 0}
        request = T[f"{base}_SendGoal_Request"](
            goal_id=T["unique_identifier_msgs/msg/UUID"](uuid=np.full(16, n, np.uint8)),
            goal=goal_cls(**fields),
        )
        response = T[f"{base}_SendGoal_Response"](accepted=accepted, stamp=time(sec=0, nanosec=0))
        topic = f"/fr3_gripper/{action}/_action/send_goal/_service_event"
        t = t0 + int(s * 1e9)
        for dt, kind, req, resp in (
            (0, 0, [request], []),
            (300_000, 1, [request], []),
            (600_000, 2, [], [response]),
        ):
            info = T["service_msgs/msg/ServiceEventInfo"](
                event_type=kind,
                stamp=time(sec=t // 10**9, nanosec=t % 10**9),
                client_gid=np.full(16, 7, np.uint8),
                sequence_number=n,
            )
            events.append((t + dt, topic, name, T[name](info=info, request=req, response=resp)))
    with path.open("wb") as f:
        w = McapWriter(f)
        w.start(profile="ros2", library="test")
        channels: dict[str, int] = {}
        for t, topic, msgtype, msg in sorted(events, key=lambda e: e[0]):
            if topic not in channels:
                text = texts.get(msgtype) or TS.generate_msgdef(msgtype, ros_version=2)[0]
                schema = w.register_schema(msgtype, "ros2msg", text.encode())
                channels[topic] = w.register_channel(topic, "cdr", schema)
            data = bytes(store.serialize_cdr(msg, msgtype))
            w.add_message(channels[topic], log_time=t, publish_time=t, data=data)
        w.finish()


class _Collect:
    """Stands in for a bag: keeps what franka_episode writes."""

    def __init__(self) -> None:
        self.events: list = []

    def write(self, topic, msgtype, fields, t) -> None:
        self.events.append((t, topic, msgtype, fields))


def _to_msg(store, msgtype: str, fields: dict):
    """A message dict (as mcap-ros2-support takes it) -> a rosbags message."""
    T = store.types
    if msgtype == "sensor_msgs/msg/JointState":
        return T[msgtype](
            header=_header(store, fields["header"]),
            name=list(fields["name"]),
            position=np.asarray(fields["position"], np.float64),
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
    if msgtype == "sensor_msgs/msg/Image":
        return T[msgtype](
            header=_header(store, fields["header"]),
            **{k: fields[k] for k in ("height", "width", "encoding", "is_bigendian", "step")},
            data=np.frombuffer(fields["data"], np.uint8),
        )
    point = fields["points"][0]
    return T[msgtype](
        header=_header(store, fields["header"]),
        joint_names=list(fields["joint_names"]),
        points=[
            T["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=np.asarray(point["positions"]),
                velocities=np.zeros(0),
                accelerations=np.zeros(0),
                effort=np.zeros(0),
                time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0),
            )
        ],
    )


def _header(store, h: dict):
    T = store.types
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](**h["stamp"]), frame_id=h["frame_id"]
    )


def test_gripper_action_goals_are_the_gripper_commands(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    t0 = 1_700_000_000 * 10**9
    goal_bag(
        tmp_path / "goals.mcap",
        [
            (0.2, "homing", {}, True),
            (0.6, "grasp", {"width": 0.01, "speed": 0.1, "force": 20.0}, True),
            (1.0, "move", {"width": 0.05, "speed": 0.1}, False),  # rejected by the server
            (1.2, "move", {"width": 0.06, "speed": 0.1}, True),
            (1.6, "gripper_action", {"position": 0.02, "max_effort": 10.0}, True),
        ],
        t0,
    )
    (src,) = find_episodes(tmp_path)
    s = read_episode(src, TopicConfig())
    assert s.gripper_from == "action goals"
    # each goal once (client + server events), from its first event; the rejected one ignored
    assert (s.gripper_times - t0).tolist() == [int(x * 1e9) for x in (0.2, 0.6, 1.2, 1.6)]
    np.testing.assert_allclose(s.gripper_targets, [0.08, 0.01, 0.06, 0.04])  # homing: open
    data = load(tmp_path)
    assert data.gripper_source == "command" and "gripper source: command" in caplog.text
    sample_t = np.arange(len(data)) * 0.1 + 0.01  # the grid starts at the first camera frame
    expected = np.select(
        [sample_t >= 1.6, sample_t >= 1.2, sample_t >= 0.6], [0.04, 0.06, 0.01], default=0.08
    )
    np.testing.assert_allclose(data.actions[:, 0, 7], expected, atol=1e-6)


def test_several_cameras_raw_and_compressed_mixed(tmp_path):
    cams = ((SCENE, "raw", 30.0), (WRIST, "jpeg", 15.0))
    franka_episode(tmp_path / "ep.mcap", cameras=cams)
    topics = TopicConfig(images=[SCENE, WRIST])  # the wrist camera is found at .../compressed
    data = load(tmp_path, topics)
    assert data.cameras == ["camera", "wrist_camera"] and data.images.shape[1:] == (2, 32, 32, 3)
    s = read_episode(find_episodes(tmp_path)[0], topics)
    assert s.image_topics == [SCENE, WRIST + "/compressed"]
    q, grip = episode_trajectory(0, np.arange(0, 2.0, 0.1))
    for v, frames in enumerate(s.images):  # decoded frames are the rendered scenes
        t = (s.image_times[v] - s.image_times[v][0]) / 1e9 + 0.01
        k = np.maximum(np.searchsorted(np.arange(0, 2.0, 0.1), t) - 1, 0)
        err = [
            np.abs(f.astype(int) - render_scene(q[i, 0] + 0.3 * v, grip[i])).mean()
            for f, i in zip(frames, k, strict=True)
        ]
        assert max(err) < (0.01 if v == 0 else 4.0)  # raw exact, jpeg lossy


def test_bag_cut_off_mid_write_trains_from_what_was_written(tmp_path, caplog):
    franka_episode(tmp_path / "whole" / "ep.mcap", seconds=3.0)
    raw = (tmp_path / "whole" / "ep.mcap").read_bytes()
    cut = tmp_path / "crashed" / "ep.mcap"
    cut.parent.mkdir()
    cut.write_bytes(raw[: int(len(raw) * 0.6)])  # no summary, no footer, a chunk cut in two
    whole, crashed = load(tmp_path / "whole"), load(tmp_path / "crashed")
    assert "the bag is cut off" in caplog.text and "ep.mcap" in caplog.text
    assert 0.3 * len(whole) < len(crashed) < len(whole)
    n = len(crashed) - 4  # samples whose chunks end before the cut are the whole bag's
    assert np.array_equal(crashed.images[:n], whole.images[:n])
    np.testing.assert_array_equal(crashed.actions[:n], whole.actions[:n])


def test_episodes_on_different_clocks_train_and_a_jump_inside_one_is_named(tmp_path):
    franka_episode(tmp_path / "sim_time.mcap", t0=5 * 10**9)  # a simulator's clock from 0
    franka_episode(tmp_path / "wall_time.mcap", seed=1)  # wall clock, 2023
    franka_episode(tmp_path / "reset.mcap", stamp_jump_at=1.0)  # the robot's clock reset
    franka_episode(tmp_path / "gap.mcap", seconds=9.0, gap_at=1.0)  # recorder paused 6 s
    data = load(tmp_path)
    assert [Path(n).name for n in data.episode_names] == ["sim_time.mcap", "wall_time.mcap"]
    assert np.bincount(data.episode).tolist() == [20, 20]  # 2 s at 10 Hz each
    reasons = {Path(n).name: r for n, r in data.skipped}
    assert "/joint_states: header stamps jump by -1000.0 s" in reasons["reset.mcap"]
    assert "/joint_states has no messages for 6.0 s" in reasons["gap.mcap"]


def test_a_topic_of_the_wrong_type_is_named(tmp_path):
    bag = Ros2Bag(tmp_path / "ep.mcap")
    bag.write("/gripper/command", "std_msgs/msg/String", {"data": "close"}, 10)
    franka_episode(tmp_path / "ep.mcap", gripper_topic=False, bag=bag)
    bag.close()
    with pytest.raises(ValueError, match=r"/gripper/command has type std_msgs/msg/String"):
        load(tmp_path)


def test_cli_trains_a_kinesthetic_demo_without_gripper_topic(tmp_path, caplog):
    """No arm command and no gripper topic (a teach-in with the hand driven by its action
    server): ver-train-router trains and the checkpoint records both choices."""
    caplog.set_level(logging.INFO)
    for i in range(2):
        franka_episode(
            tmp_path / "bags" / f"take{i}.mcap",
            seed=i,
            arm_commands=False,
            gripper_topic=False,
            split_hand=True,
        )
    out = tmp_path / "task"
    args = ["--bag", str(tmp_path / "bags"), "--out", str(out), "--steps", "3", "--head-steps", "2",
            "--batch-size", "8", "--chunk-len", "4", "--val-every", "3", "--no-progress", "--no-plots",
            *(f"--model-override={k}={v}" for k, v in TINY.items())]  # fmt: skip
    assert train_main(args) == 0
    config = json.loads((out / "config.json").read_text())["task"]
    assert config["action_source"] == "next-state" and config["gripper_source"] == "finger-width"
    assert TaskPolicy.from_pretrained(out).config.action_source == "next-state"
    saved = yaml.safe_load((out / "ver-train-router.yaml").read_text())  # the options it ran with
    assert saved["task"]["action_source"] == "next-state" and saved["train"]["steps"] == 3
    assert saved["task"]["model_overrides"] == TINY and saved["task"]["router"]["anneal_steps"] == 1
    assert caplog.text.count("action source: next-state (auto") == 1
    assert train_main([*args, "--action-source", "command", "--out", str(tmp_path / "t2")]) == 2
    assert "no arm command messages on /fr3_arm_controller/joint_trajectory" in caplog.text
