"""Decode sensor_msgs/Image (common encodings) and sensor_msgs/CompressedImage to RGB uint8, and
resize to the model's input size: the one image path of training, evaluation and the nodes.

Works on any message object with the ROS field names (rosbags, mcap_ros2 or rclpy messages).
Raw encodings: rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 / 8UC1 (replicated to 3
channels), 8UC3, mono16 / 16UC1 (scaled by 255/65535 like cv_bridge, big-endian honoured).
Compressed: jpeg / png (``format`` as image_transport writes it). Row padding is handled; an
empty image, a short buffer or an unknown encoding raises :class:`ImageDecodeError` naming it.
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
    "mono16": (1, [0, 0, 0]),
    "16uc1": (1, [0, 0, 0]),
}
_SIXTEEN_BIT = ("mono16", "16uc1")
SUPPORTED_ENCODINGS = tuple(_RAW_ENCODINGS)
MAX_SIDE = 8192  # larger frames are a corrupt header, not a camera


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
    size = 2 if enc in _SIXTEEN_BIT else 1
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(
        bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data, np.uint8
    )
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise ImageDecodeError(f"image size {w}x{h} is empty or implausible")
    row = w * ch * size
    if step < row or data.size < step * (h - 1) + row:
        raise ImageDecodeError(
            f"image {w}x{h} {enc} with step {step} does not fit {data.size} bytes"
        )
    if data.size < h * step:  # the last row may lack its padding
        data = np.concatenate([data, np.zeros(h * step - data.size, np.uint8)])
    rows = np.ascontiguousarray(data[: h * step].reshape(h, step)[:, :row])  # drop row padding
    if size == 2:
        px = rows.view(">u2" if getattr(msg, "is_bigendian", 0) else "<u2").reshape(h, w, ch)
        px = (px.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    else:
        px = rows.reshape(h, w, ch)
    return np.ascontiguousarray(px[:, :, order])


def decode_compressed_image(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    data = msg.data if isinstance(msg.data, bytes) else bytes(np.asarray(msg.data, np.uint8))
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError(f"compressedDepth images are not supported as RGB ({msg.format!r})")
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ImageDecodeError(
            f"unknown CompressedImage format {msg.format!r}; expected jpeg or png"
        )
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            out = np.asarray(img.convert("RGB"))
    except Exception as e:  # PIL raises several types for corrupt data
        raise ImageDecodeError(
            f"cannot decode compressed image (format {msg.format!r}): {e}"
        ) from e
    if out.size == 0:
        raise ImageDecodeError("compressed image decodes to an empty frame")
    return out


def decode_image(msg) -> np.ndarray:
    """Either message type -> (H, W, 3) uint8 RGB."""
    if hasattr(msg, "encoding"):
        return decode_raw_image(msg)
    if hasattr(msg, "format"):
        return decode_compressed_image(msg)
    raise ImageDecodeError(f"{type(msg).__name__} is neither sensor_msgs/Image nor CompressedImage")


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 (bilinear with antialiasing, PIL): the one resize
    of training, evaluation and deployment (non-square frames are squashed: the camera's whole
    field of view is kept)."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
        raise ImageDecodeError(
            f"expected a non-empty (H, W, 3) uint8 image, got {img.shape} {img.dtype}"
        )
    if img.shape[:2] == (size, size):
        return img
    return np.asarray(PILImage.fromarray(img).resize((size, size), PILImage.BILINEAR))
