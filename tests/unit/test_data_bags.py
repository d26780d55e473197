"""Reading real rosbag2 files: storages, encodings, a foreign MCAP writer, bad input, the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ver_core.data.dataset as dataset_mod
from ver_core.data import TopicConfig, find_episodes, load_demos, read_episode
from ver_core.data.bag_reader import EpisodeSkip
from ver_core.data.synthetic import episode_trajectory, render_scene, write_synthetic_episode

TOPICS = TopicConfig()


def load(root, **kw):
    return load_demos(root, TOPICS, chunk_len=4, control_rate_hz=10.0, image_size=32, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"storage": "mcap"},
        {"storage": "sqlite3", "arm_command": "forward", "encoding": "bgr8"},
        {"compressed": "jpeg"},
        {"compressed": "png", "encoding": "mono8"},
        {"encoding": "rgba8"},
    ],
)
def test_read_episode_variants(tmp_path, kw):
    write_synthetic_episode(tmp_path / "ep", seed=3, seconds=1.0, **kw)
    (src,) = find_episodes(tmp_path)
    s = read_episode(src, TOPICS)
    assert len(s.images) == 1 and len(s.images[0]) == 15 and s.images[0][0].shape == (48, 64, 3)
    assert s.states.shape == (30, 8) and s.arm_targets.shape == (10, 7)
    q, grip = episode_trajectory(3, np.arange(0, 1.0, 0.1))
    assert np.allclose(s.arm_targets, q) and np.allclose(s.gripper_targets, grip)
    assert np.allclose(s.states[:, 7], s.states[:, 7].clip(0, 0.08))  # width = sum of fingers


def test_find_episodes_recursive_dirs_and_bare_mcap(tmp_path):
    write_synthetic_episode(tmp_path / "a" / "episode_000", seconds=0.5)
    write_synthetic_episode(tmp_path / "b" / "deep" / "episode_001", seconds=0.5, storage="sqlite3")
    bare_src = write_synthetic_episode(tmp_path / "tmpbag", seconds=0.5)
    (tmp_path / "loose").mkdir()
    (bare_src / "tmpbag.mcap").rename(tmp_path / "loose" / "take1.mcap")
    names = [e.name for e in find_episodes(tmp_path)]
    assert sorted(names) == ["episode_000", "episode_001", "take1", "tmpbag"]
    data = load(tmp_path / "loose")  # a bare .mcap without metadata.yaml reads too
    assert len(data) > 0


def test_find_episodes_follows_symlinked_sessions_once(tmp_path):
    """Episodes of two recording sessions gathered into one --bag directory by links."""
    write_synthetic_episode(tmp_path / "monday" / "episode_000", seconds=0.5)
    write_synthetic_episode(tmp_path / "tuesday" / "episode_000", seconds=0.5)
    both = tmp_path / "both"
    both.mkdir()
    (both / "mon_ep0").symlink_to(tmp_path / "monday" / "episode_000", target_is_directory=True)
    (both / "tuesday").symlink_to(tmp_path / "tuesday", target_is_directory=True)
    (both / "tuesday_again").symlink_to(tmp_path / "tuesday", target_is_directory=True)
    (tmp_path / "tuesday" / "loop").symlink_to(both, target_is_directory=True)  # a cycle
    found = find_episodes(both)
    assert len(found) == 2  # each real episode once, the cycle ends
    assert {e.path.name for e in found} == {"mon_ep0", "episode_000"}
    assert len(load(both).episode_names) == 2


def test_foreign_mcap_writer_trains_without_conversion(tmp_path):
    """A bag written by the mcap + mcap-ros2-support packages (not rosbags) reads as is."""
    from mcap_ros2.writer import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    schemas = {}
    out = tmp_path / "foreign" / "demo.mcap"
    out.parent.mkdir()
    t0 = 1_000_000_000
    with out.open("wb") as f:
        w = Writer(f)
        for name in (
            "sensor_msgs/msg/Image",
            "sensor_msgs/msg/JointState",
            "std_msgs/msg/Float64MultiArray",
            "std_msgs/msg/Float64",
        ):
            schemas[name] = w.register_msgdef(name, ts.generate_msgdef(name, ros_version=2)[0])
        q, grip = episode_trajectory(1, np.arange(0, 2.0, 0.1))
        for i in range(20):
            ns = t0 + i * 100_000_000
            stamp = {"sec": ns // 10**9, "nanosec": ns % 10**9}
            header = {"stamp": stamp, "frame_id": "cam"}
            w.write_message(
                "/fr3_arm_controller/joint_trajectory",
                schemas["std_msgs/msg/Float64MultiArray"],
                {"layout": {"dim": [], "data_offset": 0}, "data": q[i].tolist()},
                ns,
                ns,
            )
            w.write_message(
                "/gripper/command",
                schemas["std_msgs/msg/Float64"],
                {"data": float(grip[i])},
                ns,
                ns,
            )
            w.write_message(
                "/joint_states",
                schemas["sensor_msgs/msg/JointState"],
                {
                    "header": header,
                    "name": [*TOPICS.joint_names, *TOPICS.finger_joint_names],
                    "position": [*q[i].tolist(), grip[i] / 2, grip[i] / 2],
                    "velocity": [],
                    "effort": [],
                },
                ns + 1,
                ns + 1,
            )
            img = render_scene(q[i, 0], grip[i])
            w.write_message(
                "/camera/camera/color/image_raw",
                schemas["sensor_msgs/msg/Image"],
                {
                    "header": header,
                    "height": 48,
                    "width": 64,
                    "encoding": "rgb8",
                    "is_bigendian": 0,
                    "step": 64 * 3,
                    "data": img.tobytes(),
                },
                ns + 2,
                ns + 2,
            )
        w.finish()
    data = load(tmp_path)
    assert len(data) == 20 and data.actions.shape == (20, 4, 8)
    assert np.allclose(data.actions[0, 0, :7], q[0], atol=1e-6)
    assert data.images.shape == (20, 1, 32, 32, 3) and data.cameras == ["camera"]


def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no rosbag2 episodes"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load(tmp_path / "missing")


def _skips(tmp_path) -> dict[str, str]:
    """Load with one good episode beside the bad ones; return {episode name: skip reason}."""
    write_synthetic_episode(tmp_path / "good", seconds=1.0)
    data = load(tmp_path)
    assert [n.rsplit("/", 1)[-1] for n in data.episode_names] == ["good"]
    return {n.rsplit("/", 1)[-1]: r for n, r in data.skipped}


def test_bad_episodes_are_skipped_with_reasons(tmp_path):
    write_synthetic_episode(tmp_path / "no_image", seconds=1.0, skip_topics=(TOPICS.images[0],))
    write_synthetic_episode(tmp_path / "no_states", seconds=1.0, skip_topics=(TOPICS.state,))
    write_synthetic_episode(
        tmp_path / "other_joints", seconds=1.0, joint_names=[f"panda_joint{i}" for i in range(1, 8)]
    )
    write_synthetic_episode(tmp_path / "failed", seconds=1.0, success=False)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "take.mcap").write_bytes(b"not an mcap file at all")
    reasons = _skips(tmp_path)
    assert "no image topic /camera/camera/color/image_raw" in reasons["no_image"]
    assert "no joint state topic /joint_states" in reasons["no_states"]
    assert (
        "lack ['fr3_joint1'" in reasons["other_joints"]
        and "config joint_names" in reasons["other_joints"]
        and "/fr3_arm_controller/joint_trajectory" in reasons["other_joints"]
    )
    assert "success: false" in reasons["failed"] and "--include-failed" in reasons["failed"]
    assert "cannot read bag" in reasons["take.mcap"] and "not an MCAP file" in reasons["take.mcap"]


def test_truncated_bag_trains_from_the_part_before_the_cut(tmp_path, caplog):
    whole = load_demos(
        write_synthetic_episode(tmp_path / "whole" / "ep", seconds=2.0).parent, TOPICS, 4, 10.0, 32
    )
    trunc = write_synthetic_episode(tmp_path / "cut" / "ep", seconds=2.0)
    mcap = trunc / "ep.mcap"
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    data = load(tmp_path / "cut")
    assert "the bag is cut off" in caplog.text and "ep.mcap" in caplog.text
    assert 0 < len(data) < len(whole)
    n = len(data)  # the samples before the cut are those of the whole bag (their chunks end sooner)
    assert np.array_equal(data.images, whole.images[:n])
    assert np.array_equal(data.states, whole.states[:n])
    assert np.array_equal(data.actions[:, 0], whole.actions[:n, 0])


def test_missing_gripper_commands_use_the_finger_width_or_skip_when_asked(tmp_path, caplog):
    write_synthetic_episode(tmp_path / "a", seconds=1.0)
    write_synthetic_episode(tmp_path / "b", seconds=1.0, skip_topics=(TOPICS.gripper,))
    caplog.set_level("INFO")
    data = load(tmp_path)
    assert len(data.episode_names) == 2 and data.gripper_source == "finger-width"
    assert "gripper source: finger-width" in caplog.text and "1 of 2 episodes" in caplog.text
    # the target is the width measured one control period (0.1 s) later
    scan = read_episode(find_episodes(tmp_path)[0], TOPICS)
    t = scan.image_times[0][0] + 10**8
    width = scan.states[np.searchsorted(scan.state_times, t, side="right") - 1, 7]
    assert data.actions[0, 0, 7] == pytest.approx(width)
    strict = load(tmp_path, gripper_source="command")
    assert [n.rsplit("/", 1)[-1] for n in strict.episode_names] == ["a"]
    assert "no gripper command messages on /gripper/command" in strict.skipped[0][1]
    assert strict.gripper_source == "command"


def test_include_failed(tmp_path):
    write_synthetic_episode(tmp_path / "failed", seconds=1.0, success=False)
    with pytest.raises(ValueError, match="no usable episode.*success: false"):
        load(tmp_path)
    assert len(load(tmp_path, include_failed=True).episode_names) == 1


def test_mismatched_image_sizes_skip(tmp_path):
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ver_core.data.synthetic import TS, image_message

    ep = write_synthetic_episode(tmp_path / "states", seconds=0.5, skip_topics=(TOPICS.images[0],))
    with Writer(tmp_path / "mixed", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        s = w.add_connection(TOPICS.state, "sensor_msgs/msg/JointState", typestore=TS)
        with AnyReader([ep], default_typestore=TS) as r:  # the joint states of a good episode
            for _, t, raw in r.messages([c for c in r.connections if c.topic == TOPICS.state]):
                w.write(s, t - 1_700_000_000 * 10**9, raw)
        c = w.add_connection(TOPICS.images[0], "sensor_msgs/msg/Image", typestore=TS)
        for i, shape in enumerate([(8, 8, 3), (8, 8, 3), (16, 8, 3)]):
            msg = image_message(np.zeros(shape, np.uint8), i * 10**8)
            w.write(c, i * 10**8, TS.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    src = find_episodes(tmp_path / "mixed")[0]
    with pytest.raises(EpisodeSkip, match=r"image_raw: image size changed from 8x8 to 8x16"):
        read_episode(src, TOPICS)


def test_wrong_topic_override_then_right_one(tmp_path):
    custom = TopicConfig(images=["/cam/rgb"], action="/forward_position_controller/commands")
    write_synthetic_episode(tmp_path / "ep", seconds=1.0, topics=custom, arm_command="forward")
    with pytest.raises(ValueError, match="no image topic /camera/camera/color/image_raw"):
        load(tmp_path)
    data = load_demos(tmp_path, custom, 4, 10.0, 32)
    assert len(data) > 0


def test_compressed_image_topic_fallback(tmp_path):
    topics = TopicConfig(images=[TOPICS.images[0] + "/compressed"])
    write_synthetic_episode(tmp_path / "ep", seconds=1.0, compressed="jpeg", topics=topics)
    assert len(load(tmp_path)) > 0  # the default raw topic falls back to <topic>/compressed


def test_cache_second_run_does_not_decode(tmp_path, monkeypatch):
    write_synthetic_episode(tmp_path / "bags" / "ep", seconds=1.0)
    first = load(tmp_path / "bags", cache_dir=tmp_path / "cache")
    calls = []
    monkeypatch.setattr(dataset_mod, "prepare_episodes", lambda *a, **k: calls.append(a) or 1 / 0)
    second = load(tmp_path / "bags", cache_dir=tmp_path / "cache")
    assert calls == []
    assert np.array_equal(first.images, second.images) and np.array_equal(
        first.actions, second.actions
    )
    assert second.episode_names == first.episode_names and second.key == first.key
    # touching a bag (new mtime/size) invalidates the cache
    meta = tmp_path / "bags" / "ep" / "episode.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "note": "x"}))
    with pytest.raises(ZeroDivisionError):
        load(tmp_path / "bags", cache_dir=tmp_path / "cache")


def test_trajectory_commands_take_effect_on_arrival(tmp_path):
    """A trajectory's first point is the command from its receive time on (time_from_start is the
    controller's time to reach it); later points follow; a new message replaces pending points."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ver_core.data.synthetic import TS, T, image_message

    def traj(targets, tfs_ms):
        pts = [
            T["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=np.full(7, float(v)),
                velocities=np.zeros(0),
                accelerations=np.zeros(0),
                effort=np.zeros(0),
                time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=ms * 10**6),
            )
            for v, ms in zip(targets, tfs_ms, strict=True)
        ]
        hdr = T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""
        )
        return T["trajectory_msgs/msg/JointTrajectory"](
            header=hdr, joint_names=TOPICS.joint_names, points=pts
        )

    ms = 10**6
    msgs = [
        (
            0,
            TOPICS.images[0],
            "sensor_msgs/msg/Image",
            image_message(np.zeros((4, 4, 3), np.uint8), 0),
        ),
        (0, TOPICS.gripper, "std_msgs/msg/Float64", T["std_msgs/msg/Float64"](data=0.08)),
        (
            0,
            TOPICS.state,
            "sensor_msgs/msg/JointState",
            T["sensor_msgs/msg/JointState"](
                header=T["std_msgs/msg/Header"](
                    stamp=T["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""
                ),
                name=[*TOPICS.joint_names, *TOPICS.finger_joint_names],
                position=np.zeros(9),
                velocity=np.zeros(0),
                effort=np.zeros(0),
            ),
        ),
        (
            10 * ms,
            TOPICS.action,
            "trajectory_msgs/msg/JointTrajectory",
            traj([1, 2, 3], [100, 200, 300]),
        ),
        (160 * ms, TOPICS.action, "trajectory_msgs/msg/JointTrajectory", traj([9], [100])),
    ]
    with Writer(tmp_path / "ep", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for t, topic, typ, msg in msgs:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, typ, typestore=TS)
            w.write(conns[topic], t, TS.serialize_cdr(msg, typ))
    (src,) = find_episodes(tmp_path)
    s = read_episode(src, TOPICS)
    assert (s.arm_times // ms).tolist() == [10, 110, 160]  # point 3 (at 210 ms) was replaced
    assert s.arm_targets[:, 0].tolist() == [1, 2, 9]
