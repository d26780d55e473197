"""encoder_node: camera images -> routed VER patch tokens per camera (+ routing overlays).

Thin adapter over ``ver_core.deploy.controller.EncoderStage``: it subscribes to every camera of
the checkpoint (best effort, depth 1: always the newest frame, never a queue), waits for a set
of views of one moment (``ViewSet``), encodes all views in one batched forward pass and
publishes each camera's tokens on ``<features_topic>/<camera>`` (sensor_msgs/Image ``32FC1``,
rows = tokens, cols = channels, header of that camera's frame; docs/INTERFACES.md) and its
expert-choice overlay on ``<routing_topic>/<camera>``.

No message can stop it: an image it cannot decode (unknown encoding, empty or truncated frame)
is dropped with a rate-limited warning, as is anything that goes wrong encoding one set.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ver_core.deploy import DEFAULT_BUDGET, LatencyStats, StalenessBudget
from ver_core.deploy.views import VIEW_TOLERANCE_S
from ver_ros.conversions import image_to_msg, msg_to_rgb, ns_to_stamp, stamp_to_ns
from ver_ros.params import check_checkpoint_and_transport, check_precision, declare_config, param
from ver_ros.qos import SENSOR_QOS

__all__ = [
    "EncoderNode",
    "EncoderParams",
    "RateLimitedLog",
    "features_to_msg",
    "main",
    "msg_to_features",
    "view_topic",
]


def view_topic(prefix: str, camera: str) -> str:
    """Per-camera topic under ``prefix``: ``/ver/features`` + ``wrist_camera`` ->
    ``/ver/features/wrist_camera``."""
    return f"{prefix.rstrip('/')}/{camera}"


def features_to_msg(tokens: np.ndarray, header) -> Image:
    """tokens (N, D) float32 -> sensor_msgs/Image 32FC1 (height N, width D), header copied."""
    arr = np.ascontiguousarray(tokens, dtype="<f4")
    if arr.ndim != 2:
        raise ValueError(f"features must be (tokens, channels), got shape {arr.shape}")
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = "32FC1", 0, int(arr.shape[1] * 4)
    msg.data = arr.tobytes()
    return msg


def msg_to_features(msg: Image) -> np.ndarray:
    """sensor_msgs/Image 32FC1 -> (height, width) float32 (a copy); ValueError if malformed."""
    if msg.encoding != "32FC1":
        raise ValueError(f"features must be 32FC1, got encoding {msg.encoding!r}")
    h, w = int(msg.height), int(msg.width)
    if h <= 0 or w <= 0:
        raise ValueError(f"features message is empty ({h}x{w})")
    if int(msg.step) < w * 4 or len(msg.data) < h * int(msg.step):
        raise ValueError(f"features message too short: {len(msg.data)} bytes for {h}x{w}")
    dt = np.dtype(">f4" if msg.is_bigendian else "<f4")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(h, int(msg.step))[:, : w * 4]
    out = rows.copy().view(dt).reshape(h, w).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise ValueError("features message holds NaN or inf")
    return out


class RateLimitedLog:
    """A warning per kind of problem, repeated at most every ``period_s`` while it persists."""

    def __init__(self, logger, period_s: float = 5.0) -> None:
        self.logger, self.period_s = logger, period_s
        self._last: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def warn(self, kind: str, text: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -np.inf) >= self.period_s:
            n = self.counts[kind]
            self.logger.warning(f"{text} ({n} so far)" if n > 1 else text)
            self._last[kind] = now


@dataclass
class EncoderParams:
    checkpoint: str = param("", "task checkpoint directory (config.json + model.safetensors)")
    backend: str = param("torch", "tensorrt, onnxruntime or torch; unavailable ones fall back")
    device: str = param("cpu", "torch / onnxruntime device: cpu or cuda")
    threads: int = param(0, "CPU threads for inference (0 = every core but one, at most 4)")
    precision: str = param(
        "fp32", "fp32 or bf16 (where the CPU/GPU computes bf16; else fp32 with one log line)"
    )
    image_topics: list[str] = param(
        [], "camera image topics, one per camera in the checkpoint's order; empty = checkpoint's"
    )
    image_transport: str = param(
        "raw", "raw (sensor_msgs/Image) or compressed (<topic>/compressed)"
    )
    features_topic: str = param("/ver/features", "prefix of the per-camera token topics")
    routing_topic: str = param("/ver/routing_image", "prefix of the per-camera overlays")
    publish_routing: bool = param(True, "publish the expert-choice overlays")
    observation_budget_s: float = param(
        DEFAULT_BUDGET.observation_s, "staleness budget: drop frames older than this (s)"
    )
    view_tolerance_s: float = param(
        VIEW_TOLERANCE_S, "frames of different cameras this close in time form one observation"
    )
    log_stats_every: int = param(0, "log per-stage latency every N sets (0 = never)")
    latency_warmup: int = param(20, "latency stats: samples per stage ignored at start")
    latency_log: str = param("", "write per-stage latency stats (JSON) here on shutdown")

    def __post_init__(self) -> None:
        check_checkpoint_and_transport(self.checkpoint, self.image_transport)
        check_precision(self.precision)
        StalenessBudget(observation_s=self.observation_budget_s)


def subscribe_cameras(node: Node, topics, transport: str, callback) -> list[str]:
    """One best-effort subscription per camera topic; ``callback(index, msg)``."""
    names = []
    for i, topic in enumerate(topics):
        if transport == "compressed":
            topic = topic.rstrip("/") + "/compressed"
            node.create_subscription(
                CompressedImage, topic, lambda m, i=i: callback(i, m), SENSOR_QOS
            )
        else:
            node.create_subscription(Image, topic, lambda m, i=i: callback(i, m), SENSOR_QOS)
        names.append(topic)
    return names


class EncoderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("encoder_node", **kwargs)
        self.params = p = declare_config(self, EncoderParams)
        from ver_core.deploy.controller import EncoderStage
        from ver_core.deploy.pipeline import Perception, inference_threads, load_policy

        self.stats = LatencyStats(warmup=p.latency_warmup)
        threads = inference_threads(p.threads)
        policy = load_policy(p.checkpoint, p.device, threads)
        cfg = policy.config
        topics = p.image_topics or list(cfg.image_topics)
        if len(topics) != cfg.num_views:
            raise ValueError(
                f"image_topics needs {cfg.num_views} topics for cameras {cfg.cameras}, got {topics}"
            )
        self.perception = Perception(
            policy, p.backend, p.checkpoint, p.device, threads, self.stats, p.precision
        )
        if self.perception.fallback_message:
            self.get_logger().warning(self.perception.fallback_message)
        budget = StalenessBudget(observation_s=p.observation_budget_s)
        self.stage = EncoderStage(self.perception, budget, p.view_tolerance_s)
        self.cameras = list(cfg.cameras)
        self.features_pubs = [
            self.create_publisher(Image, view_topic(p.features_topic, c), SENSOR_QOS)
            for c in self.cameras
        ]
        self.routing_pubs = [
            self.create_publisher(Image, view_topic(p.routing_topic, c), SENSOR_QOS)
            for c in self.cameras
        ]
        self.log = RateLimitedLog(self.get_logger())
        self._headers: list[Header | None] = [None] * len(self.cameras)  # newest per camera
        subscribed = subscribe_cameras(self, topics, p.image_transport, self._on_image)
        self._sets = 0
        self.get_logger().info(
            f"encoder ready: backend {self.perception.backend} ({self.perception.precision}, "
            f"{threads} threads), cameras {self.cameras} from "
            f"{subscribed} -> {view_topic(p.features_topic, '<camera>')}"
        )

    def _on_image(self, index: int, msg) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        stamp = stamp_to_ns(msg.header.stamp) * 1e-9
        try:
            with self.stats.time("decode"):
                rgb = msg_to_rgb(msg)
        except ValueError as e:
            self.log.warn(f"decode{index}", f"dropping a {self.cameras[index]} frame: {e}")
            return
        self._headers[index] = msg.header
        self.stats.add("camera_to_encoder", now - stamp)
        try:
            encoded = self.stage.on_image(self.cameras[index], rgb, stamp, now)
        except Exception as e:  # noqa: BLE001 - one bad set must not stop the encoder
            self.log.warn("encode", f"encoding failed, set dropped: {type(e).__name__}: {e}")
            return
        if encoded is None:
            return
        for v, (pub, tokens, view_stamp) in enumerate(
            zip(self.features_pubs, encoded.tokens, encoded.stamps, strict=True)
        ):
            header = self._headers[v]  # the set holds each camera's newest frame: its header
            if header is None or stamp_to_ns(header.stamp) * 1e-9 != view_stamp:
                header = Header(stamp=ns_to_stamp(int(round(view_stamp * 1e9))))
            pub.publish(features_to_msg(tokens, header))
            self._publish_overlay(v, encoded, header)
        self._sets += 1
        every = self.params.log_stats_every
        if every > 0 and self._sets % every == 0:
            text = ", ".join(f"{k} {v['p50_ms']:.1f}" for k, v in self.stats.summary().items())
            self.get_logger().info(f"p50 ms: {text}; dropped {self.stage.dropped}")

    def _publish_overlay(self, v: int, encoded, header) -> None:
        pub = self.routing_pubs[v]
        if not self.params.publish_routing or pub.get_subscription_count() == 0:
            return
        overlay = self.perception.overlay(encoded.frames[v], encoded.experts[v])
        if overlay is not None:  # a dense student routes nothing
            pub.publish(image_to_msg(overlay, header.stamp, header.frame_id))


def main(args: list[str] | None = None) -> None:
    from ver_ros.bringup import spin_node

    spin_node(EncoderNode, args if args is not None else sys.argv)


if __name__ == "__main__":
    main()
