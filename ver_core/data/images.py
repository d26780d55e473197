"""Decode sensor_msgs/Image (common encodings) and sensor_msgs/CompressedImage to RGB uint8.

Works on any message object with the ROS field names (rosbags, mcap_ros2 or rclpy messages).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

# encoding -> (channels, channel order to get RGB)
_RAW_ENCODINGS = {
    "rgb8": (3, [0, 1, 2]),
    "bgr8": (3, [2, 1, 0]),
    "rgba8": (4, [0, 1, 2]),
    "bgra8": (4, [2, 1, 0]),
    "mono8": (1, [0, 0, 0]),
    "8uc1": (1, [0, 0, 0]),
    "8uc3": (3, [0, 1, 2]),
}


class ImageDecodeError(ValueError):
    """The message does not hold an image we can decode."""


def decode_raw_image(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB."""
    enc = str(msg.encoding).lower()
    if enc not in _RAW_ENCODINGS:
        raise ImageDecodeError(
            f"unsupported image encoding {msg.encoding!r}; use one of {sorted(_RAW_ENCODINGS)}"
        )
    ch, order = _RAW_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(
        bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, np.uint8
    )
    if h <= 0 or w <= 0 or step < w * ch or data.size < h * step:
        raise ImageDecodeError(
            f"image {w}x{h} {enc} with step {step} does not fit {data.size} bytes"
        )
    rows = data[: h * step].reshape(h, step)[:, : w * ch]  # drop row padding
    return np.ascontiguousarray(rows.reshape(h, w, ch)[:, :, order])


def decode_compressed_image(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    data = msg.data if isinstance(msg.data, bytes) else bytes(np.asarray(msg.data, np.uint8))
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as e:  # PIL raises several types for corrupt data
        raise ImageDecodeError(
            f"cannot decode compressed image (format {msg.format!r}): {e}"
        ) from e


def decode_image(msg) -> np.ndarray:
    """Either message type -> (H, W, 3) uint8 RGB."""
    if hasattr(msg, "encoding"):
        return decode_raw_image(msg)
    if hasattr(msg, "format"):
        return decode_compressed_image(msg)
    raise ImageDecodeError(f"{type(msg).__name__} is neither sensor_msgs/Image nor CompressedImage")
