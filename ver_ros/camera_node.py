"""camera_node: RealSense (pyrealsense2), an image folder or a video file -> sensor_msgs/Image.

Publishes rgb8 frames stamped at capture on ``image_topic`` (+ CameraInfo) with sensor QoS.
When the source cannot open (no RealSense connected, missing file) it logs the reason once per
change and retries every ``retry_period_s``; it never exits for a missing camera. Users with
realsense-ros can run that driver instead: the encoder only needs the topic.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from ver_core.deploy.sources import CameraUnavailable, SourceConfig, open_source
from ver_ros.conversions import camera_info_to_msg, image_to_msg
from ver_ros.params import declare_config, param
from ver_ros.qos import SENSOR_QOS

__all__ = ["CameraNode", "CameraParams", "main"]


@dataclass
class CameraParams:
    source: str = param("realsense", "realsense, images (a folder) or video (a file)")
    serial: str = param("", "RealSense serial number; empty = first device")
    width: int = param(640, "color stream width (px)")
    height: int = param(480, "color stream height (px)")
    fps: int = param(30, "frame rate (Hz); also the replay rate")
    path: str = param("", "image folder or video file for replay")
    loop: bool = param(True, "restart a replay at its end")
    frame_id: str = param("camera_color_optical_frame", "header frame_id")
    image_topic: str = param("/camera/camera/color/image_raw", "published image topic")
    camera_info_topic: str = param("/camera/camera/color/camera_info", "published camera info")
    fov_deg: float = param(60.0, "replay sources: horizontal field of view for CameraInfo (deg)")
    retry_period_s: float = param(2.0, "retry opening an unavailable source every (s)")

    def __post_init__(self) -> None:
        if self.retry_period_s <= 0:
            raise ValueError(f"retry_period_s must be > 0, got {self.retry_period_s}")

    def source_config(self) -> SourceConfig:
        return SourceConfig(
            self.source, self.serial, self.width, self.height, self.fps, self.path, self.loop
        )


class CameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera_node", **kwargs)
        self.params = p = declare_config(self, CameraParams)
        self.source = open_source(p.source_config())
        self.image_pub = self.create_publisher(Image, p.image_topic, SENSOR_QOS)
        self.info_pub = self.create_publisher(CameraInfo, p.camera_info_topic, SENSOR_QOS)
        self._open = False
        self._last_error: str | None = None
        self._next_try = 0.0
        self.frames = 0
        self.create_timer(1.0 / p.fps, self._tick)
        self._try_open()

    def _try_open(self) -> bool:
        now = self.get_clock().now().nanoseconds * 1e-9
        if now < self._next_try:
            return False
        try:
            self.source.open()
        except CameraUnavailable as e:
            self._next_try = now + self.params.retry_period_s
            if str(e) != self._last_error:
                self.get_logger().error(
                    f"camera unavailable: {e}; retrying every {self.params.retry_period_s:g} s"
                )
                self._last_error = str(e)
            return False
        self._open, self._last_error = True, None
        self.get_logger().info(f"camera source {self.params.source!r} open")
        return True

    def _tick(self) -> None:
        if not self._open and not self._try_open():
            return
        try:
            rgb = self.source.read()
        except (CameraUnavailable, RuntimeError) as e:
            self.get_logger().error(f"camera read failed: {e}; reopening")
            self.source.close()
            self._open = False
            return
        if rgb is None:
            return
        stamp = self.get_clock().now().to_msg()
        self.image_pub.publish(image_to_msg(rgb, stamp, self.params.frame_id))
        self.info_pub.publish(
            camera_info_to_msg(self._info(rgb.shape), stamp, self.params.frame_id)
        )
        self.frames += 1

    def _info(self, shape: tuple[int, ...]) -> dict:
        import math

        h, w = int(shape[0]), int(shape[1])
        f = 0.5 * w / math.tan(math.radians(self.params.fov_deg) / 2)
        return {"width": w, "height": h, "K": [[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]]}

    def destroy_node(self) -> None:
        self.source.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    from ver_ros.bringup import spin_node

    spin_node(CameraNode, args if args is not None else sys.argv)


if __name__ == "__main__":
    main()
