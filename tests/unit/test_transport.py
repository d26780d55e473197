"""The Fast DDS transport profiles (ver_ros.transport): the one ver-record-demos writes for its
cameras and the one the deployment graph ships (config/fastdds_large_frames.xml): sizes, that
Fast DDS really parses them and gives the participant a shared-memory segment of that size, and
that ver-bringup hands the shipped one to its nodes unless the user named one (docs/SIM.md and
docs/DEPLOY.md say why)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from ver_ros.transport import (
    DEPLOY_FRAME,
    PROFILE_ENV,
    default_profile_path,
    profile_env,
    shipped_profile,
    shm_segment_bytes,
    write_fastdds_profile,
)

NS = {"d": "http://www.eprosima.com"}


def test_segment_holds_four_frames_and_has_a_floor():
    assert shm_segment_bytes(224, 224) == 4 << 20  # 4 x 150 KB: the 4 MiB floor
    big = shm_segment_bytes(640, 480)
    assert big >= 4 * 640 * 480 * 3 and big % (1 << 20) == 0
    assert shm_segment_bytes(1280, 720) >= 4 * 1280 * 720 * 3
    with pytest.raises(ValueError, match="positive image size"):
        shm_segment_bytes(0, 480)


def test_profile_names_shm_and_udp_as_default_participant(tmp_path):
    path = write_fastdds_profile(tmp_path / "sub" / "fastdds.xml", 9 << 20)
    root = ET.parse(path).getroot()
    kinds = {
        d.find("d:transport_id", NS).text: d.find("d:type", NS).text
        for d in root.iterfind(".//d:transport_descriptor", NS)
    }
    assert sorted(kinds.values()) == ["SHM", "UDPv4"]
    assert root.find(".//d:segment_size", NS).text == str(9 << 20)
    participant = root.find(".//d:participant", NS)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind(".//d:userTransports/d:transport_id", NS)]
    assert sorted(used) == sorted(kinds)
    with pytest.raises(ValueError, match="at least 1 MiB"):
        write_fastdds_profile(tmp_path / "small.xml", 1000)


_CHILD = """
import json, os, time, rclpy
before = set(os.listdir("/dev/shm"))
rclpy.init()
node = rclpy.create_node("profile_probe")
time.sleep(0.3)
new = {f: os.path.getsize("/dev/shm/" + f) for f in set(os.listdir("/dev/shm")) - before}
print(json.dumps(new))
node.destroy_node()
rclpy.shutdown()
"""


def _segments_created(profile, ros_env) -> dict[str, int]:
    """The /dev/shm files (name -> size) a fresh rclpy participant creates under ``profile``."""
    env = {**ros_env, PROFILE_ENV: str(profile)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "XMLPARSER" not in done.stderr and "Error" not in done.stderr, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_fastdds_loads_the_profile(tmp_path, ros_env):
    segment = 12 << 20
    new_files = _segments_created(write_fastdds_profile(tmp_path / "fastdds.xml", segment), ros_env)
    assert any(size >= segment for size in new_files.values()), new_files


def test_shipped_profile_is_generated_and_holds_full_hd_frames():
    """config/fastdds_large_frames.xml is what ``python -m ver_ros.transport`` prints, and its
    segment holds four 1920x1080 rgb8 frames."""
    path = default_profile_path()
    assert path.name == "fastdds_large_frames.xml" and path.parent.name == "config"
    assert path.read_text() == shipped_profile()
    segment = int(ET.parse(path).getroot().find(".//d:segment_size", NS).text)
    w, h = DEPLOY_FRAME
    assert (w, h) == (1920, 1080) and segment >= 4 * w * h * 3


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_fastdds_loads_the_shipped_profile(ros_env):
    segment = int(ET.parse(default_profile_path()).getroot().find(".//d:segment_size", NS).text)
    new_files = _segments_created(default_profile_path(), ros_env)
    assert any(size >= segment for size in new_files.values()), new_files


def test_the_users_profile_wins():
    assert profile_env({}) == {PROFILE_ENV: str(default_profile_path())}
    assert profile_env({PROFILE_ENV: ""}) == {PROFILE_ENV: str(default_profile_path())}
    assert profile_env({PROFILE_ENV: "/etc/mine.xml"}) == {}


def test_bringup_hands_its_nodes_the_shipped_profile(monkeypatch, capsys):
    """ver-bringup sets the variable for both modes (before rclpy.init / for its children)."""
    from ver_ros import bringup

    ran = {}
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.setattr(bringup, "_run_processes", lambda specs: ran.setdefault("p", specs) and 0)
    monkeypatch.setattr(
        bringup, "_run_composed", lambda specs, **kw: ran.setdefault("c", specs) and 0
    )
    for flags in ([], ["--composed"]):
        monkeypatch.delenv(PROFILE_ENV, raising=False)
        assert bringup.main(["--checkpoint", "/c", "--use-realsense-ros", *flags]) == 0
        assert os.environ[PROFILE_ENV] == str(default_profile_path())
    assert set(ran) == {"p", "c"}
    monkeypatch.setenv(PROFILE_ENV, "/etc/mine.xml")
    assert bringup.main(["--checkpoint", "/c", "--use-realsense-ros", "--dry-run"]) == 0
    assert os.environ[PROFILE_ENV] == "/etc/mine.xml"
    assert f"keeping {PROFILE_ENV}=/etc/mine.xml" in capsys.readouterr().out
    monkeypatch.delenv(PROFILE_ENV)
    assert bringup.main(["--checkpoint", "/c", "--use-realsense-ros", "--dry-run"]) == 0
    assert f"export {PROFILE_ENV}={default_profile_path()}" in capsys.readouterr().out
    assert PROFILE_ENV not in os.environ  # a dry run prints, it sets nothing
