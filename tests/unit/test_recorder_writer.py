"""BackgroundBagWriter (the recorder's writer thread) and EpisodeBagWriter under storage failure:
counts that attribute every message, a bounded queue that drops visibly, bad messages skipped,
and a write that fails mid-episode (RLIMIT_FSIZE -> EFBIG) keeping the committed segments."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from mcap_ros2.reader import read_ros2_messages
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from ver_core.data.background_writer import BackgroundBagWriter
from ver_core.data.bag_writer import BagWriteError, EpisodeBagWriter
from ver_ros.conversions import image_to_msg

IMG = "/camera/camera/color/image_raw"
TS = get_typestore(Stores.ROS2_KILTED)
T0 = 1_700_000_000_000_000_000


def _image(i: int, size: int = 8) -> bytes:
    rgb = np.full((size, size, 3), i % 256, np.uint8)
    return serialize_message(image_to_msg(rgb, T0 + i, "cam"))


def _episode(tmp_path: Path, storage: str = "mcap", **kw) -> EpisodeBagWriter:
    ep = EpisodeBagWriter(tmp_path / "episode_000000", storage, **kw)
    ep.add_topic(IMG, "sensor_msgs/msg/Image")
    return ep


def _bag_counts(path: Path) -> dict[str, int]:
    with Reader(path) as reader:
        return {c.topic: c.msgcount for c in reader.connections}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_every_submitted_message_is_written_and_counted(tmp_path, storage):
    # sqlite3 connections only work in their creating thread: close must run in the writer's
    writer = BackgroundBagWriter(_episode(tmp_path, storage, segment_seconds=0.05), max_queue=500)
    assert all(writer.submit(IMG, T0 + i, _image(i)) for i in range(200))
    stats = writer.close(success=True)
    assert stats["received"] == stats["written"] == {IMG: 200}
    assert stats["dropped"] == stats["skipped"] == 0 and stats["error"] is None
    assert _bag_counts(writer.path) == {IMG: 200}
    assert json.loads((writer.path / "episode.json").read_text())["success"] is True


def test_full_queue_drops_visibly_instead_of_blocking(tmp_path):
    started, release = threading.Event(), threading.Event()

    def slow(data: bytes) -> bytes:
        started.set()
        release.wait(10)
        return data

    writer = BackgroundBagWriter(_episode(tmp_path), max_queue=2)
    assert writer.submit(IMG, T0, _image(0), slow)
    assert started.wait(10)  # the thread holds message 0; the queue has room for 2
    accepted = [writer.submit(IMG, T0 + i, _image(i)) for i in range(1, 5)]
    assert accepted == [True, True, False, False]
    release.set()
    stats = writer.close()
    assert stats["received"] == {IMG: 5} and stats["written"] == {IMG: 3}
    assert stats["dropped"] == 2 and stats["max_backlog"] == 2
    assert _bag_counts(writer.path) == {IMG: 3}


def test_bad_message_skipped_episode_goes_on(tmp_path):
    def broken_jpeg(data: bytes) -> bytes:
        raise ValueError("cannot encode")

    writer = BackgroundBagWriter(_episode(tmp_path))
    writer.submit(IMG, T0, b"\x00\x01\x00\x00garbage")  # not a CDR Image
    writer.submit(IMG, T0 + 1, _image(1), broken_jpeg)
    writer.submit(IMG, T0 + 2, _image(2))
    stats = writer.close()
    assert stats["skipped"] == 2 and "cannot encode" in writer.last_skip
    assert stats["written"] == {IMG: 1} and stats["error"] is None


def test_discard_removes_queued_episode(tmp_path):
    writer = BackgroundBagWriter(_episode(tmp_path))
    writer.submit(IMG, T0, _image(0))
    writer.discard()
    assert not writer.path.exists()


# Runs in a child process whose files may not grow past 1.5 MB (SIGXFSZ ignored -> EFBIG):
# small frames fill closed 0.2 s segments, then 200 KB frames overflow the open segment.
_FSIZE_CHILD = """
import json, resource, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))
import numpy as np
from rclpy.serialization import serialize_message
from ver_core.data.background_writer import BackgroundBagWriter
from ver_core.data.bag_writer import BagWriteError, EpisodeBagWriter
from ver_ros.conversions import image_to_msg
IMG, T0 = "/img", 1_700_000_000_000_000_000
def image(i, size):
    return serialize_message(image_to_msg(np.full((size, size, 3), i, np.uint8), T0 + i, "c"))
episode = EpisodeBagWriter(Path(sys.argv[1]) / "episode_000000", "mcap", 0.2)
episode.add_topic(IMG, "sensor_msgs/msg/Image")
errors = []
writer = BackgroundBagWriter(episode, 64, errors.append)
for i in range(20):
    writer.submit(IMG, T0 + i, image(i, 8))
    time.sleep(0.03)
# every small frame written before the pause (a loaded machine lags the writer thread), so that
# the first large frame, more than a segment later, closes the segment that holds them
deadline = time.monotonic() + 30
while writer.stats()["written"].get(IMG, 0) < 20 and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.25)
for i in range(20, 40):
    writer.submit(IMG, T0 + i, image(i, 256))
try:
    writer.close()
    print(json.dumps({"closed": True}))
except BagWriteError as e:
    print(json.dumps({"error": str(e), "callbacks": errors, "stats": writer.stats()}))
"""


def test_write_failure_mid_episode_keeps_committed_segments(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" in out, out
    assert "File too large" in out["error"], out["error"]
    assert out["callbacks"] == [out["error"]]  # reported once, from the writer thread
    assert out["stats"]["dropped"] >= 1  # everything after the failure is refused, and counted
    bag = tmp_path / "episode_000000"
    assert not (bag / ".partial").exists()
    assert json.loads((bag / "episode.json").read_text())["write_error"] == out["error"]
    # every small frame (all in segments closed before the failure) reads back, intact
    with Reader(bag) as reader:
        got = {t - T0: TS.deserialize_cdr(raw, c.msgtype) for c, t, raw in reader.messages()}
    small = sorted(i for i, m in got.items() if m.width == 8)
    assert small == list(range(20))
    assert all(int(got[i].data[0]) == i for i in small)
    files = sorted(bag.glob("*.mcap"))
    indep = [m.log_time_ns - T0 for f in files for m in read_ros2_messages(str(f))]
    assert sorted(indep) == sorted(got)


def test_write_after_failure_or_close_is_refused(tmp_path):
    episode = _episode(tmp_path)
    episode.close()
    with pytest.raises(BagWriteError, match="is closed"):
        episode.write(IMG, T0, _image(0))
