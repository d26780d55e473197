"""The Fast DDS profile ver-record-demos hands its nodes: sizes, and that Fast DDS really parses it
and gives the participant a shared-memory segment of that size (see docs/SIM.md for why)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from ver_ros.record_demos import shm_segment_bytes, write_fastdds_profile

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


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_fastdds_loads_the_profile(tmp_path, ros_env):
    segment = 12 << 20
    env = {**ros_env, "FASTDDS_DEFAULT_PROFILES_FILE": str(
        write_fastdds_profile(tmp_path / "fastdds.xml", segment)
    )}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "XMLPARSER" not in done.stderr and "Error" not in done.stderr, done.stderr[-2000:]
    new_files = json.loads(done.stdout.strip().splitlines()[-1])
    assert any(size >= segment for size in new_files.values()), new_files
