"""recorder_node as its own process over real DDS: disk full mid-episode, ~/discard, JPEG
CompressedImage episodes read back with the independent mcap reader."""

from __future__ import annotations

import json
import resource
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

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]
TS = get_typestore(Stores.ROS2_KILTED)
IMG, JS = "/camera/camera/color/image_raw", "/joint_states"
T0 = 1_700_000_000_000_000_000


class Recorder:
    """One recorder_node process plus an in-test publisher node (images + joint states)."""

    def __init__(self, env: dict, tmp: Path, *params: str, preexec=None) -> None:
        import rclpy
        from sensor_msgs.msg import Image, JointState

        from ver_ros.qos import SENSOR_QOS

        self.log_path = tmp / "recorder.log"
        cmd = [sys.executable, "-m", "ver_ros.recorder_node", "--ros-args", "-r", "__node:=rec"]
        for p in params:
            cmd += ["-p", p]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec
            )
        self.rclpy = rclpy
        rclpy.init()
        self.node = rclpy.create_node("test_recorder_client")
        self.img = self.node.create_publisher(Image, IMG, SENSOR_QOS)
        self.js = self.node.create_publisher(JointState, JS, SENSOR_QOS)
        self.clients: dict = {}

    def call(self, srv: str, timeout: float = 40.0) -> tuple[bool, str]:
        from std_srvs.srv import Trigger

        cli = self.clients.get(srv)
        if cli is None:
            # One client per service, kept: a fresh client's first request can be sent before the
            # server's side of the request/response topics has matched it (wait_for_service only
            # sees the server), and is then lost on a loaded machine. Let matching finish first.
            cli = self.clients[srv] = self.node.create_client(Trigger, f"/rec/{srv}")
            assert cli.wait_for_service(timeout_sec=timeout), f"/rec/{srv} not available"
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                self.rclpy.spin_once(self.node, timeout_sec=0.05)
        fut = cli.call_async(Trigger.Request())
        self.rclpy.spin_until_future_complete(self.node, fut, timeout_sec=timeout)
        assert fut.done(), f"/rec/{srv} did not answer"
        return fut.result().success, fut.result().message

    def wait_subscribed(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while self.img.get_subscription_count() == 0 or self.js.get_subscription_count() == 0:
            assert time.monotonic() < end, "recorder never subscribed"
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
        time.sleep(0.5)  # let the reader side finish matching

    def publish(self, frames: list[np.ndarray], first: int, hz: float) -> None:
        """Frame k gets header stamp T0 + (first + k) ns, with a joint state beside it."""
        from ver_ros.conversions import image_to_msg, joint_state_to_msg

        t0 = time.monotonic()
        for k, rgb in enumerate(frames):
            i = first + k
            self.img.publish(image_to_msg(rgb, T0 + i, "cam"))
            self.js.publish(joint_state_to_msg(["a"], [float(i)], T0 + i))
            while time.monotonic() < t0 + (k + 1) / hz:
                time.sleep(0.002)

    def log(self) -> str:
        return self.log_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.node.destroy_node()
        self.rclpy.shutdown()


def _read(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(TS.deserialize_cdr(raw, conn.msgtype))
    return out


def _index(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec - T0


def _gradient(i: int, w: int, h: int) -> np.ndarray:
    """A smooth image (JPEG-friendly) that differs per index: (H, W, 3) uint8."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, (i * 20) % 256)], axis=-1)
    return rgb.astype(np.uint8)


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.fixture(params=["rlimit_fsize", "tmpfs"])
def small_disk(request, tmp_path):
    """(output dir, preexec): a file-size limit of 1 MB, or a real 3 MB tmpfs (root only)."""
    if request.param == "rlimit_fsize":
        yield tmp_path / "demos", _limit_file_size(1_000_000), "File too large"
        return
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt / "demos", None, "No space left on device"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_mid_episode_reported_node_survives(ros_env, tmp_path, small_disk):
    out, preexec, errno_text = small_disk
    # a large-SHM Fast DDS profile would itself exceed the file-size limit: use the default
    env = {k: v for k, v in ros_env.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    rec = Recorder(
        env,
        tmp_path,
        f"output_dir:={out}",
        "segment_seconds:=0.5",
        "min_free_mb:=0.5",
        preexec=preexec,
    )
    try:
        ok, path = rec.call("start")
        assert ok, path
        rec.wait_subscribed()
        small = [_gradient(i, 32, 32) for i in range(30)]
        rec.publish(small, 0, hz=20.0)  # ~3 KB frames: closed 0.5 s segments of ~30 KB
        time.sleep(0.6)
        big = [_gradient(i, 320, 240) for i in range(30, 60)]
        rec.publish(big, 30, hz=20.0)  # 230 KB frames: 4.6 MB/s overflows the open segment
        time.sleep(1.0)
        ok, msg = rec.call("start")  # refused: the failed episode is still open
        assert not ok and "failed" in msg and errno_text in msg, msg
        ok, msg = rec.call("stop")
        assert not ok, msg
        summary = json.loads(msg)
        assert errno_text in summary["error"], summary
        assert summary["received"][IMG] > summary["written"][IMG]  # the rest was refused
        assert "recording stopped" in rec.log() and errno_text in rec.log()
        assert rec.proc.poll() is None, "recorder died on a full disk"

        bag = Path(path)
        meta = json.loads((bag / "episode.json").read_text())
        assert errno_text in meta["write_error"]
        got = _read(bag)  # what was committed before the failure reads back, intact
        early = sorted(_index(m) for m in got[IMG] if m.width == 32)
        assert len(early) >= 25, early  # best effort: a rare lost frame is the transport's
        for m in got[IMG]:
            i = _index(m)
            w, h = (32, 32) if i < 30 else (320, 240)
            assert np.array_equal(
                np.frombuffer(m.data, np.uint8).reshape(h, w, 3), _gradient(i, w, h)
            )
        assert len(got[JS]) >= 25
        indep = [m for f in sorted(bag.glob("*.mcap")) for m in read_ros2_messages(str(f))]
        assert len(indep) == sum(len(v) for v in got.values())
        assert not (bag / ".partial").exists()
        assert rec.call("stop") == (False, "not recording")
    finally:
        rec.close()


def test_discard_removes_episode_and_next_start_works(ros_env, tmp_path):
    out = tmp_path / "demos"
    rec = Recorder(ros_env, tmp_path, f"output_dir:={out}", "segment_seconds:=0.3")
    try:
        assert rec.call("discard") == (False, "not recording")
        ok, first = rec.call("start")
        assert ok, first
        rec.wait_subscribed()
        rec.publish([_gradient(i, 32, 32) for i in range(15)], 0, hz=20.0)
        ok, msg = rec.call("discard")
        assert ok and first in msg
        assert not Path(first).exists() and list(out.iterdir()) == []
        ok, second = rec.call("start")
        assert ok, second
        time.sleep(0.3)
        rec.publish([_gradient(i, 32, 32) for i in range(100, 110)], 100, hz=20.0)
        time.sleep(0.5)
        ok, msg = rec.call("stop")
        assert ok, msg
        got = _read(Path(second))
        assert json.loads(msg)["counts"] == {t: len(v) for t, v in got.items()}
        assert all(_index(m) >= 100 for m in got[IMG])  # nothing of the discarded episode
        assert len(got[IMG]) >= 8
    finally:
        rec.close()


def test_compressed_images_read_back_with_mcap_reader(ros_env, tmp_path):
    from ver_ros.conversions import msg_to_rgb

    out = tmp_path / "demos"
    rec = Recorder(ros_env, tmp_path, f"output_dir:={out}", "compressed:=true", "jpeg_quality:=90")
    try:
        ok, path = rec.call("start")
        assert ok, path
        rec.wait_subscribed()
        rec.publish([_gradient(i, 160, 120) for i in range(20)], 0, hz=20.0)
        time.sleep(0.5)
        ok, msg = rec.call("stop")
        assert ok, msg
        assert json.loads(msg)["counts"].get(IMG + "/compressed", 0) >= 16
        seen = []
        for f in sorted(Path(path).glob("*.mcap")):
            for m in read_ros2_messages(str(f)):
                if m.channel.topic != IMG + "/compressed":
                    continue
                assert m.schema.name == "sensor_msgs/msg/CompressedImage"
                ros = m.ros_msg
                assert "jpeg" in ros.format and bytes(ros.data[:2]) == b"\xff\xd8"
                i = _index(ros)
                rgb = msg_to_rgb(ros)
                assert rgb.shape == (120, 160, 3)
                err = np.abs(rgb.astype(int) - _gradient(i, 160, 120).astype(int)).mean()
                assert err < 3.0, (i, err)
                seen.append(i)
        assert len(seen) >= 16 and seen == sorted(seen)
        assert IMG not in _read(Path(path))  # the raw stream is not stored beside it
    finally:
        rec.close()


def test_first_index_block_and_seed_that_arrives_after_the_start(ros_env, tmp_path):
    """A parallel worker's recorder (``first_index``) fills the lowest free directories of its
    block whatever the other worker wrote after it, and an episode started before the sim's
    latched /sim/episode reached the recorder still gets its seed (from the info that arrives
    before the finish), not null: ver-record-demos --workers found a null seed this way."""
    from std_msgs.msg import String

    from ver_ros.qos import LATCHED_QOS

    out = tmp_path / "demos"
    for taken in (1, 6):  # the other worker's block, and a directory inside this one's
        (out / f"episode_{taken:06d}").mkdir(parents=True)
    rec = Recorder(ros_env, tmp_path, f"output_dir:={out}", "first_index:=5")
    info = rec.node.create_publisher(String, "/sim/episode", LATCHED_QOS)
    try:
        ok, first = rec.call("start")  # nothing on /sim/episode yet: no seed at the start
        assert ok, first
        assert json.loads((Path(first) / "episode.json").read_text())["seed"] is None

        def publish_and_wait(seed: int) -> None:
            """Publish the info and wait (generously) until the recorder logs that it has it."""
            info.publish(String(data=json.dumps({"seed": seed, "success": False})))
            end = time.monotonic() + 30.0
            while f"episode info: seed {seed}" not in rec.log():
                assert time.monotonic() < end, f"recorder never got seed {seed}:\n{rec.log()}"
                rec.rclpy.spin_once(rec.node, timeout_sec=0.05)

        publish_and_wait(42)  # latched: delivered once the recorder's subscription matches
        ok, msg = rec.call("stop")
        assert ok, msg
        assert json.loads((Path(first) / "episode.json").read_text())["seed"] == 42
        publish_and_wait(43)
        ok, second = rec.call("start")
        assert ok, second
        ok, msg = rec.call("stop")
        assert ok, msg
        assert json.loads((Path(second) / "episode.json").read_text())["seed"] == 43
        assert [Path(first).name, Path(second).name] == ["episode_000005", "episode_000007"]
    finally:
        rec.close()
