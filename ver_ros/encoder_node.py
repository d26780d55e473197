"""encoder_node: camera image -> routed VER patch tokens on /ver/features (+ routing overlay).

Thin adapter over ``ver_core.deploy.Perception``. Subscribes best-effort with depth 1 and drops
frames older than ``max_age_s`` (or out of order), so it always works on the newest frame instead
of a queue. /ver/features is a sensor_msgs/Image ``32FC1`` (rows = tokens, cols = channels) with
the source image's header (docs/INTERFACES.md).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from ver_core.deploy import FreshnessGate, LatencyStats
from ver_ros.conversions import image_to_msg, msg_to_rgb, stamp_to_ns
from ver_ros.params import check_checkpoint_and_transport, declare_config, param
from ver_ros.qos import SENSOR_QOS

__all__ = ["EncoderNode", "EncoderParams", "features_to_msg", "main", "msg_to_features"]


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
    """sensor_msgs/Image 32FC1 -> (height, width) float32 (a copy)."""
    if msg.encoding != "32FC1":
        raise ValueError(f"features must be 32FC1, got encoding {msg.encoding!r}")
    h, w = int(msg.height), int(msg.width)
    if int(msg.step) < w * 4 or len(msg.data) < h * int(msg.step):
        raise ValueError(f"features message too short: {len(msg.data)} bytes for {h}x{w}")
    dt = np.dtype(">f4" if msg.is_bigendian else "<f4")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(h, int(msg.step))[:, : w * 4]
    return rows.copy().view(dt).reshape(h, w).astype(np.float32)


@dataclass
class EncoderParams:
    checkpoint: str = param("", "task checkpoint directory (config.json + model.safetensors)")
    backend: str = param("torch", "tensorrt, onnxruntime or torch; unavailable ones fall back")
    device: str = param("cpu", "torch / onnxruntime device: cpu or cuda")
    threads: int = param(0, "CPU threads for inference (0 = library default)")
    image_topic: str = param("/camera/camera/color/image_raw", "camera image topic")
    image_transport: str = param(
        "raw", "raw (sensor_msgs/Image) or compressed (<topic>/compressed)"
    )
    features_topic: str = param("/ver/features", "routed patch tokens (Image 32FC1)")
    routing_topic: str = param("/ver/routing_image", "expert-choice overlay (Image rgb8)")
    publish_routing: bool = param(True, "publish the expert-choice overlay")
    max_age_s: float = param(0.2, "drop frames older than this (s); <= 0 disables")
    log_stats_every: int = param(0, "log per-stage latency every N frames (0 = never)")
    latency_warmup: int = param(20, "latency stats: samples per stage ignored at start")
    latency_log: str = param("", "write per-stage latency stats (JSON) here on shutdown")

    def __post_init__(self) -> None:
        check_checkpoint_and_transport(self.checkpoint, self.image_transport)


class EncoderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("encoder_node", **kwargs)
        self.params = p = declare_config(self, EncoderParams)
        from ver_core.deploy.pipeline import Perception, load_policy

        self.stats = LatencyStats(warmup=p.latency_warmup)
        policy = load_policy(p.checkpoint, p.device, p.threads)
        self.perception = Perception(
            policy, p.backend, p.checkpoint, p.device, p.threads, self.stats
        )
        if self.perception.fallback_message:
            self.get_logger().warning(self.perception.fallback_message)
        self.freshness = FreshnessGate(max_age_s=p.max_age_s)
        self.features_pub = self.create_publisher(Image, p.features_topic, SENSOR_QOS)
        self.routing_pub = self.create_publisher(Image, p.routing_topic, SENSOR_QOS)
        if p.image_transport == "compressed":
            topic = p.image_topic.rstrip("/") + "/compressed"
            self.create_subscription(CompressedImage, topic, self._on_image, SENSOR_QOS)
        else:
            topic = p.image_topic
            self.create_subscription(Image, topic, self._on_image, SENSOR_QOS)
        self._frames = 0
        self._last_drop: str | None = None
        self.get_logger().info(
            f"encoder ready: backend {self.perception.backend}, {topic} -> {p.features_topic}"
        )

    def _on_image(self, msg) -> None:
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = stamp_to_ns(msg.header.stamp)
        reason = self.freshness.check(stamp_ns * 1e-9, now_ns * 1e-9)
        if reason is not None:
            if reason != self._last_drop:
                self.get_logger().warning(
                    f"dropping {reason} frame (age {(now_ns - stamp_ns) * 1e-6:.0f} ms); "
                    f"further drops for this reason are counted silently"
                )
                self._last_drop = reason
            return
        self.stats.add("camera_to_encoder", (now_ns - stamp_ns) * 1e-9)
        try:
            with self.stats.time("decode"):
                rgb = msg_to_rgb(msg)
        except ValueError as e:
            self.get_logger().error(f"cannot decode image: {e}", throttle_duration_sec=5.0)
            return
        tokens, experts = self.perception(rgb)
        self.features_pub.publish(features_to_msg(tokens, msg.header))
        if self.params.publish_routing and self.routing_pub.get_subscription_count() > 0:
            overlay = self.perception.overlay(rgb, experts)
            if overlay is not None:  # a dense student routes nothing
                self.routing_pub.publish(
                    image_to_msg(overlay, msg.header.stamp, msg.header.frame_id)
                )
        self._frames += 1
        every = self.params.log_stats_every
        if every > 0 and self._frames % every == 0:
            text = ", ".join(f"{k} {v['p50_ms']:.1f}" for k, v in self.stats.summary().items())
            self.get_logger().info(f"p50 ms: {text}; dropped {self.freshness.dropped}")


def main(args: list[str] | None = None) -> None:
    from ver_ros.bringup import spin_node

    spin_node(EncoderNode, args if args is not None else sys.argv)


if __name__ == "__main__":
    main()
