"""policy_node: routed tokens of every camera + joint state -> time-stamped action chunks.

Thin adapter over ``ver_core.deploy.controller.PolicyStage``: it subscribes to each camera's
tokens (``<features_topic>/<camera>``), acts only on a set of views whose stamps lie within
``view_tolerance_s`` of each other and within the staleness budget, and publishes chunks on
/ver/action_chunk (JointTrajectory; header stamp = the observation time, point i at
``time_from_start = i / control_rate_hz``, so the safety node plays it against the time the
images were taken). Chunk boundaries are smoothed (``smoothing``: ensemble, blend or latest).

It publishes why it cannot act on /ver/policy_status (latched std_msgs/String, on change:
``ok`` or ``hold: missing_view:<camera>`` / ``stale_view:<camera>`` / ``stale_joint_state`` ...);
the safety gate holds with that reason instead of acting on fewer views.

With ``host_encoder:=true`` the encoder runs in this process (subscribing to the cameras
directly), saving one serialization and one DDS hop. Bad messages are dropped with a
rate-limited warning; none stops the node.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ver_core.deploy import (
    ALIGN_MODES,
    DEFAULT_BUDGET,
    GRIPPER_MODES,
    SMOOTHING_MODES,
    ActionChunk,
    LatencyStats,
    SmoothingConfig,
    StalenessBudget,
)
from ver_core.deploy.views import VIEW_TOLERANCE_S
from ver_core.robot import JointStateError
from ver_ros.conversions import msg_to_rgb, ns_to_stamp, stamp_to_ns
from ver_ros.encoder_node import RateLimitedLog, msg_to_features, subscribe_cameras, view_topic
from ver_ros.params import check_checkpoint_and_transport, check_precision, declare_config, param
from ver_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

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
    if len(index) != len(msg.joint_names):
        raise ValueError(f"chunk names a joint twice: {list(msg.joint_names)}")
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
    threads: int = param(0, "CPU threads for inference (0 = every core but one, at most 4)")
    precision: str = param(
        "fp32", "head (and host encoder) in fp32 or bf16 (bf16 where the hardware has it)"
    )
    features_topic: str = param("/ver/features", "prefix of the per-camera token topics")
    joint_states_topic: str = param("/joint_states", "measured joint states")
    chunk_topic: str = param("/ver/action_chunk", "published action chunks")
    status_topic: str = param("/ver/policy_status", "latched ok / 'hold: reason' (on change)")
    estop_topic: str = param(
        "/ver/e_stop", "latched std_msgs/Bool; on every change the policy forgets its episode"
    )
    joint_names: list[str] = param([], "7 arm joints; empty = the checkpoint's joint_names")
    finger_joints: list[str] = param(
        [], "finger joints summed into the gripper width; empty = checkpoint's"
    )
    # the smoother's defaults are SmoothingConfig's: the in-process controller builds the same
    smoothing: str = param(
        SmoothingConfig.mode, "chunk boundary smoothing: ensemble, blend or latest"
    )
    ensemble_decay: float = param(
        SmoothingConfig.decay, "temporal ensembling: weight decay with chunk age (1/s)"
    )
    blend_time_s: float = param(SmoothingConfig.blend_time_s, "blend smoothing: cross-fade (s)")
    gripper: str = param(
        SmoothingConfig.gripper,
        "gripper width: vote (open/closed by the majority of the chunks covering each time), "
        "binary (the newest chunk's, open/closed), latest (newest chunk) or smooth",
    )
    chunk_align: str = param(
        SmoothingConfig.align,
        "when a chunk's first action is due: image (the frames' time) or state (the time of the "
        "joint state the head conditions on)",
    )
    observation_budget_s: float = param(
        DEFAULT_BUDGET.observation_s, "staleness budget: never act on views older than this (s)"
    )
    joint_state_budget_s: float = param(
        DEFAULT_BUDGET.joint_state_s, "staleness budget: never act on an older joint state (s)"
    )
    view_tolerance_s: float = param(
        VIEW_TOLERANCE_S, "views of different cameras this close in time form one observation"
    )
    status_rate_hz: float = param(20.0, "how often the policy status is checked (Hz)")
    host_encoder: bool = param(False, "run the encoder in this process, subscribing to the cameras")
    backend: str = param("torch", "host_encoder: tensorrt, onnxruntime or torch")
    image_topics: list[str] = param([], "host_encoder: camera topics; empty = the checkpoint's")
    image_transport: str = param("raw", "host_encoder: raw or compressed")
    latency_warmup: int = param(20, "latency stats: samples per stage ignored at start")
    latency_log: str = param("", "write per-stage latency stats (JSON) here on shutdown")

    def __post_init__(self) -> None:
        if self.smoothing not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {SMOOTHING_MODES}, got {self.smoothing!r}")
        if self.gripper not in GRIPPER_MODES:
            raise ValueError(f"gripper must be one of {GRIPPER_MODES}, got {self.gripper!r}")
        if self.chunk_align not in ALIGN_MODES:
            raise ValueError(f"chunk_align must be one of {ALIGN_MODES}, got {self.chunk_align!r}")
        if not self.status_rate_hz > 0:
            raise ValueError(f"status_rate_hz must be > 0, got {self.status_rate_hz}")
        check_checkpoint_and_transport(self.checkpoint, self.image_transport)
        check_precision(self.precision)
        self.budget()

    def budget(self) -> StalenessBudget:
        return StalenessBudget(self.observation_budget_s, self.joint_state_budget_s)


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy_node", **kwargs)
        self.params = p = declare_config(self, PolicyParams)
        from ver_core.deploy.controller import EncoderStage, PolicyStage
        from ver_core.deploy.pipeline import (
            ChunkPredictor,
            Perception,
            inference_threads,
            load_policy,
        )

        self.stats = LatencyStats(warmup=p.latency_warmup)
        threads = inference_threads(p.threads)
        policy = load_policy(p.checkpoint, p.device, threads)
        cfg = policy.config
        self.joint_names = p.joint_names or list(cfg.joint_names)
        finger_joints = p.finger_joints or list(cfg.finger_joint_names)
        if len(self.joint_names) != len(cfg.joint_names):
            raise ValueError(
                f"joint_names needs {len(cfg.joint_names)} names, got {self.joint_names}"
            )
        smoothing = SmoothingConfig(
            mode=p.smoothing,
            decay=p.ensemble_decay,
            blend_time_s=p.blend_time_s,
            gripper=p.gripper,
            align=p.chunk_align,
        )
        self.cameras = list(cfg.cameras)
        predictor = ChunkPredictor(policy, smoothing, self.stats, p.precision)
        if predictor.fallback_message:
            self.get_logger().warning(predictor.fallback_message)
        self.stage = PolicyStage(
            predictor,
            self.cameras,
            self.joint_names,
            finger_joints,
            p.budget(),
            p.view_tolerance_s,
        )
        self.log = RateLimitedLog(self.get_logger())
        self._stamps: dict[float, object] = {}  # view stamp (s) -> its exact header stamp
        self.chunk_pub = self.create_publisher(JointTrajectory, p.chunk_topic, COMMAND_QOS)
        self.status_pub = self.create_publisher(String, p.status_topic, LATCHED_QOS)
        self._status: str | None = None
        self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, SENSOR_QOS)
        self._estop: bool | None = None
        self.create_subscription(Bool, p.estop_topic, self._on_estop, LATCHED_QOS)
        self.encoder = None
        if p.host_encoder:
            topics = p.image_topics or list(cfg.image_topics)
            if len(topics) != cfg.num_views:
                raise ValueError(
                    f"image_topics needs {cfg.num_views} topics for {self.cameras}, got {topics}"
                )
            perception = Perception(
                policy, p.backend, p.checkpoint, p.device, threads, self.stats, p.precision
            )
            if perception.fallback_message:
                self.get_logger().warning(perception.fallback_message)
            self.encoder = EncoderStage(perception, p.budget(), p.view_tolerance_s)
            inputs = subscribe_cameras(self, topics, p.image_transport, self._on_image)
        else:
            inputs = [view_topic(p.features_topic, c) for c in self.cameras]
            for i, topic in enumerate(inputs):
                self.create_subscription(
                    Image, topic, lambda m, i=i: self._on_features(i, m), SENSOR_QOS
                )
        self.create_timer(1.0 / p.status_rate_hz, self._publish_status)
        self.get_logger().info(
            f"policy ready: {cfg.head} head, chunk {cfg.chunk_len} @ {cfg.control_rate_hz:g} Hz, "
            f"smoothing {p.smoothing}, cameras {self.cameras}, inputs {inputs}"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _publish_status(self) -> None:
        status = self.stage.status(self._now())
        if status != self._status:
            self._status = status
            self.status_pub.publish(String(data=status))
            if status != "ok":
                self.get_logger().warning(f"policy holds: {status}")

    def _on_estop(self, msg: Bool) -> None:
        """An e-stop engaged or released ends an episode: the scene may have changed (a reset,
        a person moving the object), so the chunk history and the tracked grasp point go."""
        if msg.data or (self._estop is not None and not msg.data and self._estop):
            self.stage.predictor.reset()
            self.get_logger().info(
                f"e-stop {'on' if msg.data else 'off'}: chunk history and grasp point forgotten"
            )
        self._estop = bool(msg.data)

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            stamp = stamp_to_ns(msg.header.stamp) * 1e-9  # 0: unstamped, taken as received
            self.stage.on_joint_state(msg.name, msg.position, self._now(), stamp)
        except JointStateError as e:
            self.log.warn("joint_state", f"dropping joint state: {e}")

    def _on_features(self, index: int, msg: Image) -> None:
        try:
            tokens = msg_to_features(msg)
        except ValueError as e:
            self.log.warn(f"features{index}", f"dropping {self.cameras[index]} features: {e}")
            return
        self._act(index, tokens, self._remember(msg.header.stamp))

    def _on_image(self, index: int, msg) -> None:
        now = self._now()
        stamp = self._remember(msg.header.stamp)
        try:
            with self.stats.time("decode"):
                rgb = msg_to_rgb(msg)
        except ValueError as e:
            self.log.warn(f"decode{index}", f"dropping a {self.cameras[index]} frame: {e}")
            return
        self.stats.add("camera_to_encoder", now - stamp)
        try:
            encoded = self.encoder.on_image(self.cameras[index], rgb, stamp, now)
        except Exception as e:  # noqa: BLE001 - one bad set must not stop the policy
            self.log.warn("encode", f"encoding failed, set dropped: {type(e).__name__}: {e}")
            return
        if encoded is not None:
            for v, (tokens, view_stamp) in enumerate(
                zip(encoded.tokens, encoded.stamps, strict=True)
            ):
                self._act(v, tokens, view_stamp)

    def _remember(self, header_stamp) -> float:
        """A view's stamp in s, remembered with its exact header stamp (seconds lose ns)."""
        stamp = stamp_to_ns(header_stamp) * 1e-9
        self._stamps[stamp] = header_stamp
        while len(self._stamps) > 8 * len(self.cameras):
            self._stamps.pop(next(iter(self._stamps)))
        return stamp

    def _act(self, index: int, tokens: np.ndarray, stamp: float) -> None:
        try:
            chunk = self.stage.on_features(self.cameras[index], tokens, stamp, self._now())
        except (ValueError, RuntimeError) as e:
            self.log.warn("predict", f"prediction failed, no chunk: {e}")
            return
        if chunk is not None:
            msg = chunk_to_msg(chunk, self.joint_names)
            if chunk.stamp in self._stamps:  # the exact stamp of the set's oldest view
                msg.header.stamp = self._stamps[chunk.stamp]
            self.chunk_pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    from ver_ros.bringup import spin_node

    spin_node(PolicyNode, args if args is not None else sys.argv)


if __name__ == "__main__":
    main()
