"""Find rosbag2 episodes under a directory and read their streams (MCAP or sqlite3, via rosbags).

An episode is a rosbag2 directory (``metadata.yaml`` + ``.mcap``/``.db3`` files) or a bare
``.mcap`` file. Metadata comes from ``episode.json`` beside the bag files (optional).
Problems with one episode raise :class:`EpisodeSkip` with the reason; the caller skips it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from ver_core.data.images import ImageDecodeError, decode_image, resize_rgb
from ver_core.robot import JointStateError, camera_names, read_joint_state

_TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ARM_TYPES = ("trajectory_msgs/msg/JointTrajectory", "std_msgs/msg/Float64MultiArray")


class EpisodeSkip(Exception):
    """This episode cannot be used; ``str(e)`` says why."""


@dataclass
class TopicConfig:
    """Topics of an episode. ``images``: one topic per camera, the first one is the primary view
    (its frames set the samples; every other view is matched to each of them by stamp)."""

    images: list[str] = field(default_factory=lambda: ["/camera/camera/color/image_raw"])
    state: str = "/joint_states"
    action: str = "/fr3_arm_controller/joint_trajectory"
    gripper: str = "/gripper/command"
    joint_names: list[str] = field(default_factory=lambda: [f"fr3_joint{i}" for i in range(1, 8)])
    finger_joint_names: list[str] = field(
        default_factory=lambda: ["fr3_finger_joint1", "fr3_finger_joint2"]
    )
    object_pose: str = ""  # sim-only PoseStamped of the object (diagnostics); "" = not read

    def __post_init__(self) -> None:
        if isinstance(self.images, str):
            self.images = [self.images]
        self.images = list(self.images)
        if not self.images:
            raise ValueError("TopicConfig.images needs at least one image topic")
        for name, topic in [("image", t) for t in self.images] + [
            (n, getattr(self, n)) for n in ("state", "action", "gripper")
        ]:
            if not topic.startswith("/"):
                raise ValueError(f"{name} topic must be absolute (start with /), got {topic!r}")
        camera_names(self.images)  # one namespace per camera

    @property
    def cameras(self) -> list[str]:
        return camera_names(self.images)


@dataclass
class EpisodeSource:
    path: Path  # bag directory or bare .mcap file
    meta: dict

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name


@dataclass
class EpisodeStreams:
    """Raw streams of one episode, times in ns (bag receive time), each sorted.

    ``image_times[v]`` / ``images[v]``: frames of camera v (order of ``TopicConfig.images``)."""

    image_times: list[np.ndarray]  # V x (M_v,)
    images: list[list[np.ndarray]]  # V x M_v x (H, W, 3) uint8 RGB
    state_times: np.ndarray  # (Ns,)
    states: np.ndarray  # (Ns, 8): 7 joints (rad) + gripper width (m)
    arm_times: np.ndarray  # (Na,)
    arm_targets: np.ndarray  # (Na, 7)
    gripper_times: np.ndarray  # (Ng,)
    gripper_targets: np.ndarray  # (Ng,)
    object_times: np.ndarray | None = None  # (No,) with topics.object_pose
    object_poses: np.ndarray | None = None  # (No, 7): x, y, z, qw, qx, qy, qz


def _walk_files(root: Path) -> list[Path]:
    """Files under ``root``, following symlinked directories (episodes gathered from several
    recording sessions by links), each real directory once (no loops on cyclic links)."""
    seen: set[str] = set()
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        files += [Path(dirpath) / f for f in filenames]
    return files


def find_episodes(root: str | Path) -> list[EpisodeSource]:
    """Every episode under ``root`` (recursive, through symlinks), sorted by path. Raises if
    there is none."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--bag {root} is not a directory")
    files = [f for f in _walk_files(root) if ".partial" not in f.parts]
    bag_dirs = sorted(f.parent for f in files if f.name == "metadata.yaml")
    found = [EpisodeSource(d, _read_meta(d)) for d in bag_dirs]
    for f in sorted(f for f in files if f.suffix == ".mcap"):
        if any(d == f.parent or d in f.parents for d in bag_dirs):
            continue
        found.append(EpisodeSource(f, _read_meta(f.parent, f.stem)))
    if not found:
        raise FileNotFoundError(
            f"no rosbag2 episodes under {root}: expected directories with metadata.yaml or .mcap files"
        )
    return sorted(found, key=lambda e: str(e.path))


def _read_meta(directory: Path, stem: str | None = None) -> dict:
    for candidate in ([directory / f"{stem}.json"] if stem else []) + [directory / "episode.json"]:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError:
                return {"_meta_error": f"{candidate} is not valid JSON"}
    return {}


def _arm_from_msg(msg, msgtype: str, t: int, joints: list[str]) -> list[tuple[int, np.ndarray]]:
    """One arm command received at t -> [(time ns, targets (7,))]; trajectories -> their points."""
    if msgtype == "std_msgs/msg/Float64MultiArray":
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(joints),):
            raise EpisodeSkip(
                f"arm command has {data.size} values, config has {len(joints)} joints"
            )
        return [(t, data)]
    names = list(msg.joint_names)
    missing = [j for j in joints if j not in names]
    if missing:
        raise EpisodeSkip(
            f"arm command joint names {names} lack {missing} (config joint_names {joints})"
        )
    order = [names.index(j) for j in joints]
    # A trajectory is commanded when it arrives: its first point is the target from t on (its
    # time_from_start is how long the controller takes to get there); later points follow at
    # their offsets relative to the first one.
    tfs = [
        int(p.time_from_start.sec) * 1_000_000_000 + int(p.time_from_start.nanosec)
        for p in msg.points
    ]
    out = []
    for p, dt in zip(msg.points, tfs, strict=True):
        pos = np.asarray(p.positions, dtype=np.float64)
        if pos.shape != (len(names),):
            raise EpisodeSkip(f"trajectory point has {pos.size} positions for {len(names)} joints")
        out.append((t + dt - tfs[0], pos[order]))
    return out


def _state_from_msg(msg, joints: list[str], fingers: list[str]) -> np.ndarray:
    """(8,) policy state of one JointState, by the rule every path shares (ver_core.robot)."""
    try:
        reading = read_joint_state(msg.name, msg.position, joints, fingers)
    except JointStateError as e:
        raise EpisodeSkip(f"bad joint state on the state topic: {e}") from e
    if reading.gripper is None:
        raise EpisodeSkip(f"joint states lack the finger joints {fingers}: no gripper width")
    return np.append(reading.q, reading.gripper)


def _resolve_image_topic(topic: str, present: dict[str, str]) -> str:
    if topic not in present and f"{topic}/compressed" in present:
        return f"{topic}/compressed"  # image_transport's compressed stream
    if topic not in present:
        raise EpisodeSkip(f"no image topic {topic} (topics: {sorted(present)})")
    return topic


def read_episode(
    source: EpisodeSource,
    topics: TopicConfig,
    min_interval_ns: int = 0,
    image_size: int | None = None,
) -> EpisodeStreams:
    """All streams of one episode. Raises EpisodeSkip (with the reason) for unusable episodes.

    Frames of the primary (first) camera are kept at most every ``min_interval_ns`` (greedy, as
    ``align.select_frames``); every frame of the other cameras is kept (they are matched to the
    primary ones later). All are resized to ``image_size`` squared as they are read, so an
    episode never sits in memory at full camera resolution.
    """
    n_views = len(topics.images)
    images: list[list[np.ndarray]] = [[] for _ in range(n_views)]
    image_t: list[list[int]] = [[] for _ in range(n_views)]
    shapes: list[tuple | None] = [None] * n_views
    state_t, states, arm, grip, objects = [], [], [], [], []
    try:
        with AnyReader([source.path], default_typestore=_TYPESTORE) as reader:
            present = {c.topic: c.msgtype for c in reader.connections}
            view_of = {_resolve_image_topic(t, present): v for v, t in enumerate(topics.images)}
            for topic in [*view_of, topics.action]:
                types = IMAGE_TYPES if topic in view_of else ARM_TYPES
                if topic in present and present[topic] not in types:
                    raise EpisodeSkip(f"{topic} has type {present[topic]}, expected one of {types}")
            wanted = {*view_of, topics.state, topics.action, topics.gripper}
            if topics.object_pose:
                if topics.object_pose not in present:
                    raise EpisodeSkip(f"no object pose topic {topics.object_pose}")
                wanted.add(topics.object_pose)
            conns = [c for c in reader.connections if c.topic in wanted]
            for conn, t, raw in reader.messages(connections=conns):
                v = view_of.get(conn.topic)
                if v == 0 and image_t[0] and t - image_t[0][-1] < min_interval_ns:
                    continue  # frame not needed: not even deserialized
                msg = reader.deserialize(raw, conn.msgtype)
                if v is not None:
                    img = decode_image(msg)
                    shapes[v] = shapes[v] or img.shape
                    if img.shape != shapes[v]:
                        raise EpisodeSkip(
                            f"{conn.topic}: image size changed from {shapes[v][1]}x{shapes[v][0]} "
                            f"to {img.shape[1]}x{img.shape[0]} at t={t} ns"
                        )
                    images[v].append(resize_rgb(img, image_size) if image_size else img)
                    image_t[v].append(t)
                elif conn.topic == topics.state:
                    states.append(
                        _state_from_msg(msg, topics.joint_names, topics.finger_joint_names)
                    )
                    state_t.append(t)
                elif conn.topic == topics.action:
                    while arm and arm[-1][0] >= t:  # a new command replaces pending points
                        arm.pop()
                    arm += _arm_from_msg(msg, conn.msgtype, t, topics.joint_names)
                elif conn.topic == topics.object_pose:
                    p, o = msg.pose.position, msg.pose.orientation
                    objects.append((t, [p.x, p.y, p.z, o.w, o.x, o.y, o.z]))
                else:
                    grip.append((t, float(msg.data)))
    except EpisodeSkip:
        raise
    except ImageDecodeError as e:
        raise EpisodeSkip(f"bad image: {e}") from e
    except Exception as e:  # truncated/corrupt files: rosbags and mcap raise many types
        raise EpisodeSkip(f"cannot read bag ({type(e).__name__}: {e})") from e
    for v, topic in enumerate(topics.images):
        if not image_t[v]:
            raise EpisodeSkip(f"no image messages on {topic}")
    for what, stream, topic in (
        ("joint state", state_t, topics.state),
        ("arm command", arm, topics.action),
        ("gripper command", grip, topics.gripper),
    ):
        if not stream:
            raise EpisodeSkip(f"no {what} messages on {topic}")
    arm.sort(key=lambda a: a[0])
    grip.sort(key=lambda g: g[0])
    orders = [np.argsort(t, kind="stable") for t in image_t]
    s_order = np.argsort(state_t, kind="stable")
    return EpisodeStreams(
        image_times=[np.asarray(t, np.int64)[o] for t, o in zip(image_t, orders, strict=True)],
        images=[[imgs[i] for i in o] for imgs, o in zip(images, orders, strict=True)],
        state_times=np.asarray(state_t, np.int64)[s_order],
        states=np.asarray(states)[s_order],
        arm_times=np.asarray([a[0] for a in arm], np.int64),
        arm_targets=np.stack([a[1] for a in arm]),
        gripper_times=np.asarray([g[0] for g in grip], np.int64),
        gripper_targets=np.asarray([g[1] for g in grip]),
        object_times=np.asarray([o[0] for o in objects], np.int64) if objects else None,
        object_poses=np.asarray([o[1] for o in objects]) if objects else None,
    )
