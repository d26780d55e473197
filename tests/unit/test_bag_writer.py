"""EpisodeBagWriter: rosbag2 episodes read back by rosbags and by the independent mcap reader,
crash safety under SIGKILL, clear errors for unwritable targets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap_ros2.reader import read_ros2_messages
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from ver_core.data.bag_writer import BagWriteError, EpisodeBagWriter, check_writable, trim_cdr
from ver_ros.conversions import image_to_msg, joint_state_to_msg, msg_to_rgb

TS = get_typestore(Stores.ROS2_KILTED)
IMG, JS = "/camera/camera/color/image_raw", "/joint_states"


def _fill(writer: EpisodeBagWriter, n: int, sleep: float = 0.0) -> list[np.ndarray]:
    writer.add_topic(IMG, "sensor_msgs/msg/Image")
    writer.add_topic(JS, "sensor_msgs/msg/JointState")
    frames = []
    for i in range(n):
        t = 1_700_000_000_000_000_000 + i * 50_000_000
        rgb = np.full((8, 8, 3), i, np.uint8)
        frames.append(rgb)
        writer.write(IMG, t, serialize_message(image_to_msg(rgb, t, "cam")))
        writer.write(JS, t, serialize_message(joint_state_to_msg(["a", "b"], [i, -i], t)))
        time.sleep(sleep)
    return frames


def _read_rosbags(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, TS.deserialize_cdr(raw, conn.msgtype)))
    return out


def _read_mcap(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in sorted(path.glob("*.mcap")):
        for m in read_ros2_messages(str(f)):
            out.setdefault(m.channel.topic, []).append((m.log_time_ns, m.ros_msg))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_segmented_episode(tmp_path, storage):
    path = tmp_path / "episode_000000"
    w = EpisodeBagWriter(
        path, storage, segment_seconds=0.02, metadata={"task": "pick_cube", "seed": 4}
    )
    frames = _fill(w, 12, sleep=0.005)
    w.close(success=True, stop_time_ns=5)
    assert len(list(path.glob("*.mcap" if storage == "mcap" else "*.db3"))) > 1  # several segments
    got = _read_rosbags(path)
    assert len(got[IMG]) == 12 and len(got[JS]) == 12
    for (t, msg), rgb in zip(got[IMG], frames, strict=True):
        np.testing.assert_array_equal(msg_to_rgb(msg), rgb)
        assert t == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
    times = [t for t, _ in got[JS]]
    assert times == sorted(times)
    meta = json.loads((path / "episode.json").read_text())
    assert meta == {"stop_time_ns": 5, "task": "pick_cube", "seed": 4, "success": True}
    if storage == "mcap":
        indep = _read_mcap(path)
        assert [t for t, _ in indep[JS]] == times
        assert [list(m.position) for _, m in indep[JS]] == [[i, -i] for i in range(12)]
        assert list(indep[IMG][3][1].data[:3]) == [3, 3, 3]
    with Reader(path) as reader:
        assert reader.message_count == 24
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert json.loads(info["custom_data"]["episode"])["success"] is True


def test_empty_episode_is_readable_and_discard(tmp_path):
    w = EpisodeBagWriter(tmp_path / "e0")
    w.add_topic(JS, "sensor_msgs/msg/JointState")
    w.close()
    with Reader(tmp_path / "e0") as reader:
        assert reader.message_count == 0
    w2 = EpisodeBagWriter(tmp_path / "e1")
    _fill(w2, 2)
    w2.discard()
    assert not (tmp_path / "e1").exists()


def test_errors_are_clear(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(BagWriteError, match="exists already"):
        EpisodeBagWriter(tmp_path / "taken")
    with pytest.raises(ValueError, match="storage"):
        EpisodeBagWriter(tmp_path / "x", storage="parquet")
    w = EpisodeBagWriter(tmp_path / "y")
    with pytest.raises(BagWriteError, match="not registered"):
        w.write(JS, 0, b"\x00\x01\x00\x00")
    with pytest.raises(BagWriteError, match="unknown message type"):
        w.add_topic("/x", "my_msgs/msg/Nope")
    w.add_topic(JS, "sensor_msgs/msg/JointState")
    with pytest.raises(BagWriteError, match="decode"):
        w.write(JS, 0, b"\x00\x01\x00\x00\x05")
    with pytest.raises(BagWriteError, match="free"):
        check_writable(tmp_path, min_free_mb=1e12)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(BagWriteError, match="not writable"):
        check_writable(blocker / "demos", min_free_mb=0)
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # permissions bind (not root)
            with pytest.raises(BagWriteError, match="not writable"):
                check_writable(locked / "demos", min_free_mb=0)
    finally:
        locked.chmod(0o700)


def test_trim_cdr_keeps_message_bytes():
    raw = serialize_message(joint_state_to_msg(["a", "b"], [1.0, 2.0], 1))
    trimmed = trim_cdr(raw, "sensor_msgs/msg/JointState")
    assert raw.startswith(trimmed) and len(raw) - len(trimmed) < 16
    assert list(TS.deserialize_cdr(trimmed, "sensor_msgs/msg/JointState").position) == [1.0, 2.0]


_WRITER_SCRIPT = """
import sys, time
from pathlib import Path
from rclpy.serialization import serialize_message
from ver_core.data.bag_writer import EpisodeBagWriter
from ver_ros.conversions import joint_state_to_msg
w = EpisodeBagWriter(Path(sys.argv[1]), segment_seconds=0.1, metadata={"task": "t"})
w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
i = 0
while True:
    w.write("/joint_states", 10**18 + i, serialize_message(joint_state_to_msg(["a"], [i], 10**18 + i)))
    print(i, flush=True)
    i += 1
    time.sleep(0.005)
"""


def test_sigkill_leaves_a_readable_bag(tmp_path):
    path = tmp_path / "episode_000000"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True
    )
    written = 0
    while written < 120:
        written = int(proc.stdout.readline()) + 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    got = _read_rosbags(path)[JS]
    indep = _read_mcap(path)[JS]
    # everything up to the last closed segment, in order, no gaps; at most ~0.1 s lost
    assert 0 < len(got) <= written and len(indep) == len(got)
    assert [int(m.position[0]) for _, m in got] == list(range(len(got)))
    assert json.loads((path / "episode.json").read_text())["stop_time_ns"] is None
