"""policy_node: routed tokens + joint state -> time-stamped action chunks on /ver/action_chunk.

Thin adapter over ``ver_core.deploy.ChunkPredictor`` (MLP or diffusion head from the task
checkpoint). A chunk's header stamp is the observation (image) time and point i is at
``time_from_start = i / control_rate_hz``, so the safety node plays it against the time the image
was taken. Chunk boundaries are smoothed (``smoothing``: ensemble, blend or latest).
With ``host_encoder:=true`` the encoder runs in this process (subscribing to the camera
directly), saving one serialization and one DDS hop.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ver_core.deploy import (
    SMOOTHING_MODES,
    ActionChunk,
    FreshnessGate,
    LatencyStats,
    SmoothingConfig,
)
from ver_ros.conversions import msg_to_rgb, ns_to_stamp, stamp_to_ns
from ver_ros.encoder_node import msg_to_features
from ver_ros.params import check_checkpoint_and_transport, declare_config, param
from ver_ros.qos import COMMAND_QOS, SENSOR_QOS

__all__ = ["GRIPPER_NAME", "PolicyNode", "PolicyParams", "chunk_to_msg", "main", "msg_to_chunk"]

GRIPPER_NAME = "gripper"


def chunk_to_msg(chunk: ActionChunk, joint_names: Sequence[str]) -> JointTrajectory:
    """ActionChunk (H, 7 + 1) -> JointTrajectory: names = joints + ``gripper``, stamp = obs time."""
    names = [*joint_names, GRIPPER_NAME][: chunk.actions.shape[1]]
    if len(names) != chunk.actions.shape[1]:
        raise ValueError(f"{chunk.actions.shape[1]} action values but {len(names)} names")
    msg = JointTrajectory()
    msg.header.stamp = ns_to_stamp(int(round(chunk.stamp * 1e9)))
    msg.joint_names = list(names)
    for off, row in zip(chunk.offsets, chunk.actions, strict=True):
        ns = int(round(off * 1e9))
        msg.points.append(
            JointTrajectoryPoint(
                positions=[float(v) for v in row],
                time_from_start=Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000),
            )
        )
    return msg


def msg_to_chunk(msg: JointTrajectory, joint_names: Sequence[str]) -> ActionChunk:
    """JointTrajectory -> ActionChunk (H, 7 [+ 1 gripper]) in ``joint_names`` order.

    Raises ValueError for a missing joint, a point with the wrong number of values or bad times.
    Non-finite values are kept (the safety gate rejects them with the reason ``nan_action``).
    """
    index = {n: i for i, n in enumerate(msg.joint_names)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise ValueError(f"chunk lacks joints {missing} (has {list(msg.joint_names)})")
    if not msg.points:
        raise ValueError("chunk has no points")
    cols = [index[n] for n in joint_names] + (
        [index[GRIPPER_NAME]] if GRIPPER_NAME in index else []
    )
    rows, offsets = [], []
    for i, pt in enumerate(msg.points):
        if len(pt.positions) != len(msg.joint_names):
            raise ValueError(
                f"point {i} has {len(pt.positions)} values for {len(msg.joint_names)} joints"
            )
        rows.append([pt.positions[c] for c in cols])
        offsets.append(pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9)
    return ActionChunk(stamp_to_ns(msg.header.stamp) * 1e-9, np.array(offsets), np.array(rows))


@dataclass
class PolicyParams:
    checkpoint: str = param("", "task checkpoint directory (same one as the encoder's)")
    device: str = param("cpu", "torch device for the policy head: cpu or cuda")
    threads: int = param(0, "CPU threads for inference (0 = library default)")
    features_topic: str = param("/ver/features", "routed patch tokens from the encoder")
    joint_states_topic: str = param("/joint_states", "measured joint states")
    chunk_topic: str = param("/ver/action_chunk", "published action chunks")
    joint_names: list[str] = param([], "7 arm joints; empty = the checkpoint's joint_names")
    finger_joints: list[str] = param(
        [], "finger joints summed into the gripper width; empty = checkpoint's"
    )
    smoothing: str = param("ensemble", "chunk boundary smoothing: ensemble, blend or latest")
    ensemble_decay: float = param(5.0, "temporal ensembling: weight decay with chunk age (1/s)")
    blend_time_s: float = param(0.2, "blend smoothing: cross-fade duration (s)")
    max_age_s: float = param(0.3, "drop observations older than this (s); <= 0 disables")
    joint_state_timeout_s: float = param(0.25, "skip inference when the joint state is older (s)")
    host_encoder: bool = param(False, "run the encoder in this process, subscribing to the camera")
    backend: str = param("torch", "host_encoder: tensorrt, onnxruntime or torch")
    image_topic: str = param("/camera/camera/color/image_raw", "host_encoder: camera image topic")
    image_transport: str = param("raw", "host_encoder: raw or compressed")
    latency_warmup: int = param(20, "latency stats: samples per stage ignored at start")
    latency_log: str = param("", "write per-stage latency stats (JSON) here on shutdown")

    def __post_init__(self) -> None:
        if self.smoothing not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {SMOOTHING_MODES}, got {self.smoothing!r}")
        check_checkpoint_and_transport(self.checkpoint, self.image_transport)


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy_node", **kwargs)
        self.params = p = declare_config(self, PolicyParams)
        from ver_core.deploy.pipeline import ChunkPredictor, Perception, load_policy

        self.stats = LatencyStats(warmup=p.latency_warmup)
        policy = load_policy(p.checkpoint, p.device, p.threads)
        cfg = policy.config
        self.joint_names = p.joint_names or list(cfg.joint_names)
        self.finger_joints = p.finger_joints or list(cfg.finger_joint_names)
        if len(self.joint_names) != len(cfg.joint_names):
            raise ValueError(
                f"joint_names needs {len(cfg.joint_names)} names, got {self.joint_names}"
            )
        smoothing = SmoothingConfig(
            mode=p.smoothing, decay=p.ensemble_decay, blend_time_s=p.blend_time_s
        )
        self.predictor = ChunkPredictor(policy, smoothing, self.stats)
        self.freshness = FreshnessGate(max_age_s=p.max_age_s)
        self._state: np.ndarray | None = None
        self._state_time = -np.inf
        self._last_warn: str | None = None
        self.chunk_pub = self.create_publisher(JointTrajectory, p.chunk_topic, COMMAND_QOS)
        self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, SENSOR_QOS)
        self.perception = None
        if p.host_encoder:
            self.perception = Perception(
                policy, p.backend, p.checkpoint, p.device, p.threads, self.stats
            )
            if self.perception.fallback_message:
                self.get_logger().warning(self.perception.fallback_message)
            if p.image_transport == "compressed":
                topic = p.image_topic.rstrip("/") + "/compressed"
                self.create_subscription(CompressedImage, topic, self._on_image, SENSOR_QOS)
            else:
                topic = p.image_topic
                self.create_subscription(Image, topic, self._on_image, SENSOR_QOS)
        else:
            topic = p.features_topic
            self.create_subscription(Image, topic, self._on_features, SENSOR_QOS)
        self.get_logger().info(
            f"policy ready: {cfg.head} head, chunk {cfg.chunk_len} @ {cfg.control_rate_hz:g} Hz, "
            f"smoothing {p.smoothing}, input {topic}"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _warn_once(self, text: str) -> None:
        if text != self._last_warn:
            self.get_logger().warning(text)
            self._last_warn = text

    def _on_joint_state(self, msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        needed = [*self.joint_names, *self.finger_joints]
        if any(n not in index for n in needed) or len(msg.position) != len(msg.name):
            self._warn_once(f"joint state lacks some of {needed}")
            return
        q = [msg.position[index[n]] for n in self.joint_names]
        width = sum(msg.position[index[n]] for n in self.finger_joints)
        self._state = np.array([*q, width], dtype=np.float64)  # (8,) = 7 joints + gripper width
        self._state_time = self._now()

    def _ready(self, header) -> bool:
        now = self._now()
        reason = self.freshness.check(stamp_to_ns(header.stamp) * 1e-9, now)
        if reason is not None:
            self._warn_once(f"dropping {reason} observation")
            return False
        if self._state is None or now - self._state_time > self.params.joint_state_timeout_s:
            self._warn_once("no recent joint state: not predicting")
            return False
        return True

    def _on_features(self, msg: Image) -> None:
        if not self._ready(msg.header):
            return
        try:
            tokens = msg_to_features(msg)
        except ValueError as e:
            self._warn_once(f"bad features message: {e}")
            return
        self._predict(tokens, msg.header)

    def _on_image(self, msg) -> None:
        if not self._ready(msg.header):
            return
        self.stats.add("camera_to_encoder", self._now() - stamp_to_ns(msg.header.stamp) * 1e-9)
        try:
            with self.stats.time("decode"):
                rgb = msg_to_rgb(msg)
        except ValueError as e:
            self._warn_once(f"cannot decode image: {e}")
            return
        tokens, _ = self.perception(rgb)
        self._predict(tokens, msg.header)

    def _predict(self, tokens: np.ndarray, header) -> None:
        stamp = stamp_to_ns(header.stamp) * 1e-9
        chunk = self.predictor(tokens, self._state, stamp, now=self._now())
        msg = chunk_to_msg(chunk, self.joint_names)
        msg.header = header  # the exact observation stamp (the float seconds above round)
        self.chunk_pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    from ver_ros.bringup import spin_node

    spin_node(PolicyNode, args if args is not None else sys.argv)


if __name__ == "__main__":
    main()
