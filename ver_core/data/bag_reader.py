"""Find rosbag2 episodes under a directory and read their streams (MCAP or sqlite3, via rosbags).

An episode is a rosbag2 directory (``metadata.yaml`` + ``.mcap``/``.db3`` files) or a bare
``.mcap`` file (also what a recorder that crashed leaves: read up to the cut, see ``bag_io``).
Metadata comes from ``episode.json`` beside the bag files (optional).

Reading takes two passes over a bag: :func:`scan_episode` reads everything but the pixels
(image receive times, joint states, arm and gripper commands, gripper action goals), then
:func:`iter_frames` decodes only the frames a caller picked. Problems with one episode raise
:class:`EpisodeSkip` naming the topic and what is wrong; the caller names the episode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ver_core.data.bag_io import BagOpenError, open_bag
from ver_core.data.bag_messages import (
    ARM_TYPES,
    GripperGoals,
    JointStateError,
    JointStateMerger,
    MessageError,
    arm_points,
    is_goal_topic,
    settle_arm_commands,
)
from ver_core.data.images import ImageDecodeError, decode_image, resize_rgb
from ver_core.data.streams import find_clock_jump, find_gap
from ver_core.robot import camera_names

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STATE_TYPE = "sensor_msgs/msg/JointState"


class EpisodeSkip(Exception):
    """This episode cannot be used; ``str(e)`` says why."""


@dataclass
class TopicConfig:
    """Topics of an episode. ``images``: one topic per camera, the first one is the primary view
    (its frames start and end the episode's grid). ``gripper_state``: an extra JointState topic
    holding the finger joints when ``state`` lacks them ("" = none). ``gripper_open_width``: the
    width a franka_gripper ``homing`` goal opens to (m)."""

    images: list[str] = field(default_factory=lambda: ["/camera/camera/color/image_raw"])
    state: str = "/joint_states"
    action: str = "/fr3_arm_controller/joint_trajectory"
    gripper: str = "/gripper/command"
    joint_names: list[str] = field(default_factory=lambda: [f"fr3_joint{i}" for i in range(1, 8)])
    finger_joint_names: list[str] = field(
        default_factory=lambda: ["fr3_finger_joint1", "fr3_finger_joint2"]
    )
    object_pose: str = ""  # sim-only PoseStamped of the object (diagnostics); "" = not read
    # std_msgs/Bool, True while the arm moves for the cameras only (a scripted expert's hover
    # sweep): those frames teach perception, not actions. Read when an episode has it (absent:
    # every frame False); "" = not read
    perception_only: str = ""
    gripper_state: str = ""
    gripper_open_width: float = 0.08

    @classmethod
    def of_task(cls, task, gripper_state: str = "") -> TopicConfig:
        """The topics a task policy trains on (a ``ver_core.policy.TaskConfig``: its cameras,
        state, action and gripper topics, joint and finger names, the hand's opening)."""
        return cls(
            images=task.image_topics,
            state=task.state_topic,
            action=task.action_topic,
            gripper=task.gripper_topic,
            joint_names=task.joint_names,
            finger_joint_names=task.finger_joint_names,
            gripper_state=gripper_state or "",
            gripper_open_width=task.gripper_max_width,
            perception_only=task.perception_only_topic,
        )

    def __post_init__(self) -> None:
        if isinstance(self.images, str):
            self.images = [self.images]
        self.images = list(self.images)
        if not self.images:
            raise ValueError("TopicConfig.images needs at least one image topic")
        named = [("image", t) for t in self.images] + [
            (n, getattr(self, n)) for n in ("state", "action", "gripper")
        ]
        if self.gripper_state:
            named.append(("gripper_state", self.gripper_state))
        for name, topic in named:
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
    """Streams of one episode, times in ns (bag receive time), each sorted.

    ``image_times[v]``: frames of camera v (order of ``TopicConfig.images``), read from
    ``image_topics[v]`` (the raw topic or its ``/compressed`` stream); ``image_order[v][i]`` is
    the position of sorted frame i among that topic's messages as the bag yields them.
    ``images[v]`` holds decoded frames only after :func:`read_episode`. Arm and gripper streams
    are empty when the bag has no such commands (``gripper_from`` says where gripper commands
    came from: ``topic``, ``action goals`` or ``""``)."""

    image_times: list[np.ndarray]  # V x (M_v,)
    state_times: np.ndarray  # (Ns,)
    states: np.ndarray  # (Ns, 8): 7 joints (rad) + gripper width (m)
    arm_times: np.ndarray  # (Na,)
    arm_targets: np.ndarray  # (Na, 7)
    gripper_times: np.ndarray  # (Ng,)
    gripper_targets: np.ndarray  # (Ng,)
    image_topics: list[str] = field(default_factory=list)
    image_order: list[np.ndarray] = field(default_factory=list)
    gripper_from: str = ""
    cut_off: str | None = None  # where a cut-off bag's readable part ends
    images: list[list[np.ndarray]] = field(default_factory=list)  # V x M_v x (H, W, 3) uint8
    object_times: np.ndarray | None = None  # (No,) with topics.object_pose
    object_poses: np.ndarray | None = None  # (No, 7): x, y, z, qw, qx, qy, qz
    flag_times: np.ndarray | None = None  # (Nf,) with topics.perception_only, when recorded
    flags: np.ndarray | None = None  # (Nf,) bool: perception-only from then on

    @property
    def has_arm(self) -> bool:
        return len(self.arm_times) > 0

    @property
    def has_gripper(self) -> bool:
        return len(self.gripper_times) > 0


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


def _resolve_image_topic(topic: str, present: dict[str, str]) -> str:
    if topic not in present and f"{topic}/compressed" in present:
        return f"{topic}/compressed"  # image_transport's compressed stream
    if topic not in present:
        raise EpisodeSkip(f"no image topic {topic} (topics: {sorted(present)})")
    return topic


def _check_types(present: dict[str, str], expected: dict[str, tuple[str, ...]]) -> None:
    for topic, types in expected.items():
        if topic in present and present[topic] not in types:
            raise EpisodeSkip(f"{topic} has type {present[topic]}, expected one of {types}")


def scan_episode(source: EpisodeSource, topics: TopicConfig) -> EpisodeStreams:
    """Every stream of one episode except the pixels. Raises EpisodeSkip for unusable ones."""
    try:
        with open_bag(source.path) as bag:
            return _scan(bag, topics)
    except EpisodeSkip:
        raise
    except BagOpenError as e:
        raise EpisodeSkip(str(e)) from e
    except Exception as e:  # corrupt files: rosbags and mcap raise many types
        raise EpisodeSkip(f"cannot read bag ({type(e).__name__}: {e})") from e


def _scan(bag, topics: TopicConfig) -> EpisodeStreams:
    present = bag.topics
    image_topics = [_resolve_image_topic(t, present) for t in topics.images]
    view_of = {t: v for v, t in enumerate(image_topics)}
    state_topics = [t for t in (topics.state, topics.gripper_state) if t]
    _check_types(
        present,
        {
            **dict.fromkeys(image_topics, IMAGE_TYPES),
            **dict.fromkeys(state_topics, (STATE_TYPE,)),
            topics.action: ARM_TYPES,
            topics.gripper: ("std_msgs/msg/Float64",),
        },
    )
    if topics.state not in present:
        raise EpisodeSkip(f"no joint state topic {topics.state} (topics: {sorted(present)})")
    goal_topics = sorted(t for t, m in present.items() if is_goal_topic(t, m))
    wanted = {*view_of, *state_topics, topics.action, topics.gripper, *goal_topics}
    if topics.object_pose:
        if topics.object_pose not in present:
            raise EpisodeSkip(f"no object pose topic {topics.object_pose}")
        wanted.add(topics.object_pose)
    if topics.perception_only and topics.perception_only in present:
        if present[topics.perception_only] != "std_msgs/msg/Bool":
            raise EpisodeSkip(
                f"{topics.perception_only} has type {present[topics.perception_only]}, "
                "expected std_msgs/msg/Bool"
            )
        wanted.add(topics.perception_only)
    image_t: list[list[int]] = [[] for _ in image_topics]
    merger = JointStateMerger(topics.joint_names, topics.finger_joint_names)
    goals = GripperGoals(topics.gripper_open_width)
    state_t, states, recv, stamps, arm, grip, objects = [], [], [], [], [], [], []
    flags: list[tuple[int, bool]] = []
    for topic, msgtype, t, raw in bag.messages(wanted):
        v = view_of.get(topic)
        if v is not None:
            image_t[v].append(t)  # pixels are decoded later, only for the frames used
            continue
        msg = bag.deserialize(raw, msgtype)
        try:
            if topic in state_topics:
                if topic == topics.state:
                    recv.append(t)
                    stamps.append(int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec))
                state = merger.update(list(msg.name), np.asarray(msg.position, np.float64))
                if state is not None:
                    state_t.append(t)
                    states.append(state)
            elif topic == topics.action:
                arm.append((t, arm_points(msg, msgtype, t, topics.joint_names)))
            elif topic == topics.gripper:
                grip.append((t, float(msg.data)))
            elif topic == topics.object_pose:
                p, o = msg.pose.position, msg.pose.orientation
                objects.append((t, [p.x, p.y, p.z, o.w, o.x, o.y, o.z]))
            elif topic == topics.perception_only:
                flags.append((t, bool(msg.data)))
            else:
                goals.add(topic, msgtype, t, msg)
        except (JointStateError, MessageError) as e:
            raise EpisodeSkip(f"{topic} at t={t} ns: {e}") from e
    for v, topic in enumerate(image_topics):
        if not image_t[v]:
            raise EpisodeSkip(f"no image messages on {topic}")
    if not recv:
        raise EpisodeSkip(f"no joint state messages on {topics.state}")
    if not state_t:
        raise EpisodeSkip(f"{topics.state}: {merger.why_no_state()}")
    _check_clock(topics.state, np.asarray(recv), np.asarray(stamps))
    orders = [np.argsort(t, kind="stable") for t in image_t]
    image_times = [np.asarray(t, np.int64)[o] for t, o in zip(image_t, orders, strict=True)]
    for topic, t in [(topics.state, np.sort(np.asarray(state_t)))] + list(
        zip(image_topics, image_times, strict=True)
    ):
        gap = find_gap(t)
        if gap:
            raise EpisodeSkip(
                f"{topic} has no messages for {gap[1] / 1e9:.1f} s from t={gap[0]} ns (a "
                "recording gap or a clock jump): split the bag there or drop the episode"
            )
    arm_times, arm_targets = settle_arm_commands(arm)
    gripper_from = ""
    if grip:
        grip.sort(key=lambda g: g[0])
        grip_times, grip_targets = (
            np.asarray([g[0] for g in grip], np.int64),
            np.asarray([g[1] for g in grip]),
        )
        gripper_from = "topic"
    else:
        grip_times, grip_targets = goals.commands()
        if len(grip_times):
            gripper_from = "action goals"
        elif goals.events:
            raise EpisodeSkip(goals.why_none(goal_topics))
    s_order = np.argsort(state_t, kind="stable")
    objects.sort(key=lambda o: o[0])
    flags.sort(key=lambda f: f[0])
    return EpisodeStreams(
        image_times=image_times,
        state_times=np.asarray(state_t, np.int64)[s_order],
        states=np.asarray(states)[s_order],
        arm_times=arm_times,
        arm_targets=arm_targets,
        gripper_times=grip_times,
        gripper_targets=grip_targets,
        image_topics=image_topics,
        image_order=orders,
        gripper_from=gripper_from,
        cut_off=bag.cut_off,
        object_times=np.asarray([o[0] for o in objects], np.int64) if objects else None,
        object_poses=np.asarray([o[1] for o in objects]) if objects else None,
        flag_times=np.asarray([f[0] for f in flags], np.int64) if flags else None,
        flags=np.asarray([f[1] for f in flags], bool) if flags else None,
    )


def _check_clock(topic: str, receive: np.ndarray, stamps: np.ndarray) -> None:
    jump = find_clock_jump(receive, stamps)
    if jump:
        raise EpisodeSkip(
            f"{topic}: header stamps jump by {jump[1] / 1e9:+.1f} s against the recording clock "
            f"at t={jump[0]} ns (a clock reset or step inside the episode): split the bag there "
            "or drop the episode"
        )


def iter_frames(
    source: EpisodeSource,
    streams: EpisodeStreams,
    wanted: list[np.ndarray],
    image_size: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Decode the frames ``wanted[v]`` (indices into ``streams.image_times[v]``) of each camera:
    yields (view, frame index, (H, W, 3) uint8 RGB, resized to ``image_size`` squared if given)
    in the bag's order. Raises EpisodeSkip for an image that does not decode or changes size."""
    view_of = {t: v for v, t in enumerate(streams.image_topics)}
    pick = [
        {int(streams.image_order[v][i]): int(i) for i in np.asarray(w)}
        for v, w in enumerate(wanted)
    ]
    count = [0] * len(view_of)
    shapes: list[tuple | None] = [None] * len(view_of)
    try:
        with open_bag(source.path) as bag:
            for topic, msgtype, t, raw in bag.messages(set(view_of)):
                v = view_of[topic]
                i = pick[v].get(count[v])
                count[v] += 1
                if i is None:
                    continue  # not needed: not even deserialized
                if streams.image_times[v][i] != t:
                    raise EpisodeSkip(f"{topic}: the bag changed between two reads")
                try:
                    img = decode_image(bag.deserialize(raw, msgtype))
                except ImageDecodeError as e:
                    raise EpisodeSkip(f"{topic}: bad image at t={t} ns: {e}") from e
                shapes[v] = shapes[v] or img.shape
                if img.shape != shapes[v]:
                    raise EpisodeSkip(
                        f"{topic}: image size changed from {shapes[v][1]}x{shapes[v][0]} "
                        f"to {img.shape[1]}x{img.shape[0]} at t={t} ns"
                    )
                yield v, i, resize_rgb(img, image_size) if image_size else img
    except EpisodeSkip:
        raise
    except Exception as e:  # corrupt files: rosbags and mcap raise many types
        raise EpisodeSkip(f"cannot read bag ({type(e).__name__}: {e})") from e


def read_episode(
    source: EpisodeSource, topics: TopicConfig, image_size: int | None = None
) -> EpisodeStreams:
    """All streams of one episode with every frame decoded (``streams.images``)."""
    streams = scan_episode(source, topics)
    streams.images = [[None] * len(t) for t in streams.image_times]
    for v, i, img in iter_frames(
        source, streams, [np.arange(len(t)) for t in streams.image_times], image_size
    ):
        streams.images[v][i] = img
    return streams
