"""Small synthetic demo episodes written with the ``rosbags`` writer (for tests and benchmarks).

The scene is a dark image with a bright square whose position follows the commanded joint 1 and
whose size follows the gripper command, so a policy can learn actions from pixels.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ver_core.data.bag_reader import TopicConfig

TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types
_STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def episode_trajectory(seed: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Commanded arm targets (len(t), 7) and gripper widths (len(t),) of a synthetic episode."""
    rng = np.random.default_rng(seed)
    phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.8)
    q = np.zeros((len(t), 7))
    q[:, 0] = amp * np.sin(1.5 * t + phase)
    q[:, 1] = 0.3 * np.cos(1.5 * t + phase)
    q[:, 3] = -2.0 + 0.2 * np.sin(t)
    grip = np.where(np.sin(1.5 * t + phase) > 0, 0.08, 0.0)
    return q, grip


def render_scene(q1: float, grip: float, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """(H, W, 3) uint8 RGB with a square at x ~ q1, size ~ gripper width."""
    w, h = size
    img = np.full((h, w, 3), 20, np.uint8)
    cx = int((q1 + 1) / 2 * (w - 1))
    r = 3 + int(grip / 0.08 * 6)
    img[max(0, h // 2 - r) : h // 2 + r, max(0, cx - r) : cx + r] = (230, 200, 40)
    return img


def _stamp(ns: int):
    return T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ns: int):
    return T["std_msgs/msg/Header"](stamp=_stamp(ns), frame_id="camera")


def image_message(img: np.ndarray, ns: int, encoding: str = "rgb8", compressed: str | None = None):
    """RGB (H, W, 3) -> sensor_msgs/Image in ``encoding`` or CompressedImage (jpeg|png)."""
    if compressed:
        buf = io.BytesIO()
        PILImage.fromarray(img).save(buf, format="JPEG" if compressed == "jpeg" else "PNG")
        data = np.frombuffer(buf.getvalue(), np.uint8)
        return T["sensor_msgs/msg/CompressedImage"](
            header=_header(ns), format=compressed, data=data
        )
    if encoding.startswith("bgr"):
        img = img[:, :, ::-1]
    if encoding.endswith("a8"):
        img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    if encoding == "mono8":
        img = img.mean(axis=-1, keepdims=True).astype(np.uint8)
    h, w = img.shape[:2]
    return T["sensor_msgs/msg/Image"](
        header=_header(ns),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * _CHANNELS[encoding],
        data=np.ascontiguousarray(img).reshape(-1),
    )


def write_synthetic_episode(
    path: str | Path,
    seed: int = 0,
    seconds: float = 3.0,
    storage: str = "mcap",
    encoding: str = "rgb8",
    compressed: str | None = None,
    arm_command: str = "trajectory",
    topics: TopicConfig | None = None,
    image_size: tuple[int, int] = (64, 48),
    success: bool | None = True,
    camera_hz: float = 15.0,
    skip_topics: tuple[str, ...] = (),
    joint_names: list[str] | None = None,
    view_sizes: list[tuple[int, int]] | None = None,
    view_offset_ns: int = 0,
    perception_only: tuple[float, float] | None = None,
) -> Path:
    """Write one episode bag directory (+ episode.json unless ``success`` is None).

    One image stream per topic of ``topics.images`` (each view shifted a little so views
    differ; ``view_sizes`` gives each its own (W, H); ``view_offset_ns`` staggers their stamps
    as unsynchronized cameras do). ``perception_only`` (start s, end s): a std_msgs/Bool on
    ``topics.perception_only`` every command period, True inside that window (the scripted
    expert's hover sweep)."""
    topics = topics or TopicConfig()
    names = joint_names or topics.joint_names
    path = Path(path)
    t0 = 1_700_000_000 * 1_000_000_000
    sec = np.arange(0, seconds, 0.1)  # 10 Hz commands
    q, grip = episode_trajectory(seed, sec)
    events = []  # (ns, topic, msgtype, msg)
    for i, s in enumerate(sec):
        ns = t0 + int(s * 1e9)
        if arm_command == "trajectory":
            pt = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=q[i],
                velocities=np.zeros(0),
                accelerations=np.zeros(0),
                effort=np.zeros(0),
                time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0),
            )
            msg = T["trajectory_msgs/msg/JointTrajectory"](
                header=_header(ns), joint_names=list(names), points=[pt]
            )
            events.append((ns, topics.action, "trajectory_msgs/msg/JointTrajectory", msg))
        else:
            layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
            msg = T["std_msgs/msg/Float64MultiArray"](layout=layout, data=q[i])
            events.append((ns, topics.action, "std_msgs/msg/Float64MultiArray", msg))
        if perception_only is not None:
            flag = bool(perception_only[0] <= s < perception_only[1])
            topic = topics.perception_only or "/scripted_expert/perception_only"
            events.append((ns + 500, topic, "std_msgs/msg/Bool", T["std_msgs/msg/Bool"](data=flag)))
        events.append(
            (
                ns + 1000,
                topics.gripper,
                "std_msgs/msg/Float64",
                T["std_msgs/msg/Float64"](data=grip[i]),
            )
        )
    for s in np.arange(0, seconds, 1 / 30):  # joint states lag the commands by 50 ms
        ns = t0 + int(s * 1e9)
        k = max(0, np.searchsorted(sec, s - 0.05) - 1)
        msg = T["sensor_msgs/msg/JointState"](
            header=_header(ns),
            name=[*names, *topics.finger_joint_names],
            position=np.array([*q[k], grip[k] / 2, grip[k] / 2]),
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
        events.append((ns, topics.state, "sensor_msgs/msg/JointState", msg))
    img_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    for view, topic in enumerate(topics.images):
        size = view_sizes[view] if view_sizes else image_size
        for s in np.arange(0.02, seconds, 1 / camera_hz):
            ns = t0 + int(s * 1e9) + view * view_offset_ns
            k = max(0, np.searchsorted(sec, s) - 1)
            img = render_scene(q[k, 0] + 0.3 * view, grip[k], size)
            events.append((ns, topic, img_type, image_message(img, ns, encoding, compressed)))
    events.sort(key=lambda e: e[0])
    with Writer(path, version=9, storage_plugin=_STORAGE[storage]) as writer:
        conns = {}
        for ns, topic, msgtype, msg in events:
            if topic in skip_topics:
                continue
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(conns[topic], ns, TS.serialize_cdr(msg, msgtype))
    if success is not None:
        meta = {
            "task": "synthetic",
            "success": success,
            "seed": seed,
            "start_time_ns": t0,
            "stop_time_ns": t0 + int(seconds * 1e9),
            "joint_names": list(names),
        }
        (path / "episode.json").write_text(json.dumps(meta))
    return path
