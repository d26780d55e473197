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
from PIL import Image as PILImage
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from ver_core.data.images import ImageDecodeError, decode_image

_TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ARM_TYPES = ("trajectory_msgs/msg/JointTrajectory", "std_msgs/msg/Float64MultiArray")


class EpisodeSkip(Exception):
    """This episode cannot be used; ``str(e)`` says why."""


@dataclass
class TopicConfig:
    image: str = "/camera/camera/color/image_raw"
    state: str = "/joint_states"
    action: str = "/fr3_arm_controller/joint_trajectory"
    gripper: str = "/gripper/command"
    joint_names: list[str] = field(default_factory=lambda: [f"fr3_joint{i}" for i in range(1, 8)])
    finger_joint_names: list[str] = field(
        default_factory=lambda: ["fr3_finger_joint1", "fr3_finger_joint2"]
    )

    def __post_init__(self) -> None:
        for name in ("image", "state", "action", "gripper"):
            if not getattr(self, name).startswith("/"):
                raise ValueError(
                    f"{name} topic must be absolute (start with /), got {getattr(self, name)!r}"
                )


@dataclass
class EpisodeSource:
    path: Path  # bag directory or bare .mcap file
    meta: dict

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name


@dataclass
class EpisodeStreams:
    """Raw streams of one episode, times in ns (bag receive time), each sorted."""

    image_times: np.ndarray  # (M,)
    images: list[np.ndarray]  # M x (H, W, 3) uint8 RGB
    state_times: np.ndarray  # (Ns,)
    states: np.ndarray  # (Ns, 8): 7 joints (rad) + gripper width (m)
    arm_times: np.ndarray  # (Na,)
    arm_targets: np.ndarray  # (Na, 7)
    gripper_times: np.ndarray  # (Ng,)
    gripper_targets: np.ndarray  # (Ng,)


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
    pos = dict(zip(list(msg.name), np.asarray(msg.position, dtype=np.float64), strict=False))
    missing = [j for j in joints if j not in pos]
    if missing:
        raise EpisodeSkip(
            f"joint states {sorted(pos)} lack {missing} (config joint_names {joints})"
        )
    have = [f for f in fingers if f in pos]
    if not have:
        raise EpisodeSkip(f"joint states lack the finger joints {fingers}: no gripper width")
    width = sum(pos[f] for f in have) * len(fingers) / len(have)  # width = sum of finger joints
    return np.array([*(pos[j] for j in joints), width])


def _resize(img: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or img.shape[:2] == (size, size):
        return img
    return np.asarray(PILImage.fromarray(img).resize((size, size), PILImage.BILINEAR))


def read_episode(
    source: EpisodeSource,
    topics: TopicConfig,
    min_interval_ns: int = 0,
    image_size: int | None = None,
) -> EpisodeStreams:
    """All streams of one episode. Raises EpisodeSkip (with the reason) for unusable episodes.

    Images are kept at most every ``min_interval_ns`` (greedy, as ``align.select_frames``) and
    resized to ``image_size`` squared as they are read, so an episode never sits in memory at
    full camera resolution.
    """
    images: list[np.ndarray] = []
    image_t: list[int] = []
    first_shape: tuple | None = None
    state_t, states, arm, grip = [], [], [], []
    try:
        with AnyReader([source.path], default_typestore=_TYPESTORE) as reader:
            present = {c.topic: c.msgtype for c in reader.connections}
            image_topic = topics.image
            if image_topic not in present and f"{image_topic}/compressed" in present:
                image_topic = f"{image_topic}/compressed"  # image_transport's compressed stream
            if image_topic not in present:
                raise EpisodeSkip(f"no image topic {topics.image} (topics: {sorted(present)})")
            for topic, types in ((image_topic, IMAGE_TYPES), (topics.action, ARM_TYPES)):
                if topic in present and present[topic] not in types:
                    raise EpisodeSkip(f"{topic} has type {present[topic]}, expected one of {types}")
            wanted = {image_topic, topics.state, topics.action, topics.gripper}
            conns = [c for c in reader.connections if c.topic in wanted]
            for conn, t, raw in reader.messages(connections=conns):
                if conn.topic == image_topic and image_t and t - image_t[-1] < min_interval_ns:
                    continue  # frame not needed: not even deserialized
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.topic == image_topic:
                    img = decode_image(msg)
                    first_shape = first_shape or img.shape
                    if img.shape != first_shape:
                        raise EpisodeSkip(
                            f"image size changed from {first_shape[1]}x{first_shape[0]} to "
                            f"{img.shape[1]}x{img.shape[0]} at t={t} ns"
                        )
                    images.append(_resize(img, image_size))
                    image_t.append(t)
                elif conn.topic == topics.state:
                    states.append(
                        _state_from_msg(msg, topics.joint_names, topics.finger_joint_names)
                    )
                    state_t.append(t)
                elif conn.topic == topics.action:
                    while arm and arm[-1][0] >= t:  # a new command replaces pending points
                        arm.pop()
                    arm += _arm_from_msg(msg, conn.msgtype, t, topics.joint_names)
                else:
                    grip.append((t, float(msg.data)))
    except EpisodeSkip:
        raise
    except ImageDecodeError as e:
        raise EpisodeSkip(f"bad image: {e}") from e
    except Exception as e:  # truncated/corrupt files: rosbags and mcap raise many types
        raise EpisodeSkip(f"cannot read bag ({type(e).__name__}: {e})") from e
    for what, stream in (
        ("image", image_t),
        ("joint state", state_t),
        ("arm command", arm),
        ("gripper command", grip),
    ):
        if not stream:
            topic = {
                "image": topics.image,
                "joint state": topics.state,
                "arm command": topics.action,
            }.get(what, topics.gripper)
            raise EpisodeSkip(f"no {what} messages on {topic}")
    arm.sort(key=lambda a: a[0])
    grip.sort(key=lambda g: g[0])
    order = np.argsort(image_t, kind="stable")
    s_order = np.argsort(state_t, kind="stable")
    return EpisodeStreams(
        image_times=np.asarray(image_t, np.int64)[order],
        images=[images[i] for i in order],
        state_times=np.asarray(state_t, np.int64)[s_order],
        states=np.asarray(states)[s_order],
        arm_times=np.asarray([a[0] for a in arm], np.int64),
        arm_targets=np.stack([a[1] for a in arm]),
        gripper_times=np.asarray([g[0] for g in grip], np.int64),
        gripper_targets=np.asarray([g[1] for g in grip]),
    )
