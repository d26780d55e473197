"""numpy <-> ROS message conversion for images, camera info, joint states and time stamps.

No cv_bridge (the PyPI one is broken with numpy 2): everything is numpy + Pillow.

Readers are duck-typed: ``msg_to_rgb`` and ``joint_positions`` only read the standard field names,
so they work on rclpy messages and equally on messages deserialized by ``rosbags`` from a bag.

Image decoding (``msg_to_rgb`` -> (H, W, 3) uint8 RGB) is ``ver_core.data.images.decode_image``,
the same function training reads bags with (see its docstring for the encodings).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState

from ver_core.data.images import decode_image

__all__ = [
    "SUPPORTED_ENCODINGS",
    "camera_info_to_msg",
    "compressed_image_to_msg",
    "image_to_msg",
    "joint_positions",
    "joint_state_to_msg",
    "msg_to_rgb",
    "ns_to_stamp",
    "stamp_to_ns",
]

# encoding -> (channels, numpy dtype of one channel)
_LAYOUT: dict[str, tuple[int, str]] = {
    "rgb8": (3, "u1"),
    "bgr8": (3, "u1"),
    "rgba8": (4, "u1"),
    "bgra8": (4, "u1"),
    "mono8": (1, "u1"),
    "8UC1": (1, "u1"),
    "mono16": (1, "u2"),
    "16UC1": (1, "u2"),
}
SUPPORTED_ENCODINGS = tuple(_LAYOUT)


# --------------------------------------------------------------------------- time stamps
def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time."""
    ns = int(ns)
    if ns < 0:
        raise ValueError(f"negative time stamp {ns} ns")
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or anything with ``sec``/``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _as_stamp(stamp) -> Time:
    if isinstance(stamp, Time):
        return stamp
    if isinstance(stamp, (int, np.integer)):
        return ns_to_stamp(int(stamp))
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec))
    if hasattr(stamp, "to_msg"):  # rclpy.time.Time
        return stamp.to_msg()
    raise TypeError(
        f"stamp must be builtin_interfaces/Time, rclpy Time or int ns, got {type(stamp)}"
    )


# --------------------------------------------------------------------------- images
def image_to_msg(rgb: np.ndarray, stamp, frame_id: str, encoding: str = "rgb8") -> Image:
    """(H, W, 3) uint8 RGB array -> sensor_msgs/Image (``rgb8`` unless ``encoding`` says
    ``bgr8``, ``mono8``...). ``rgb`` for ``mono8``/``mono16`` is (H, W) of uint8/uint16."""
    if encoding not in _LAYOUT:
        raise ValueError(f"unsupported image encoding {encoding!r}; known: {SUPPORTED_ENCODINGS}")
    channels, dtype = _LAYOUT[encoding]
    arr = np.asarray(rgb)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    expect_ndim = 2 if channels == 1 else 3
    if arr.ndim != expect_ndim or (channels > 1 and arr.shape[2] != channels):
        raise ValueError(
            f"{encoding} image needs {'(H, W)' if channels == 1 else f'(H, W, {channels})'}, got {arr.shape}"
        )
    if arr.dtype != np.dtype(dtype):
        raise ValueError(f"{encoding} image needs dtype {np.dtype(dtype)}, got {arr.dtype}")
    arr = np.ascontiguousarray(arr)
    msg = Image()
    msg.header.stamp = _as_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * channels * arr.dtype.itemsize)
    msg.data = arr.tobytes()
    return msg


def compressed_image_to_msg(
    rgb: np.ndarray, stamp, frame_id: str, fmt: str = "jpeg", quality: int = 90
) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage (``jpeg`` or ``png``)."""
    from PIL import Image as PILImage

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"compressed image needs (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    fmt = fmt.lower()
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"compression format must be 'jpeg' or 'png', got {fmt!r}")
    buf = io.BytesIO()
    kwargs = {"quality": int(quality)} if fmt == "jpeg" else {"compress_level": 1}
    PILImage.fromarray(arr, "RGB").save(buf, format=fmt.upper(), **kwargs)
    msg = CompressedImage()
    msg.header.stamp = _as_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.format = f"rgb8; {fmt} compressed rgb8"
    msg.data = buf.getvalue()
    return msg


def msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> (H, W, 3) uint8 RGB: the decoder training uses
    (``ver_core.data.images.decode_image``). Raises ValueError naming the problem."""
    return decode_image(msg)


# --------------------------------------------------------------------------- camera info
def camera_info_to_msg(info: dict, stamp, frame_id: str) -> CameraInfo:
    """Dict with ``width``, ``height``, ``K`` (3x3), optional ``D``, ``distortion_model``
    (as returned by ``FrankaPickEnv.camera_info()``) -> sensor_msgs/CameraInfo."""
    k = np.asarray(info["K"], dtype=np.float64).reshape(3, 3)
    msg = CameraInfo()
    msg.header.stamp = _as_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(info["width"]), int(info["height"])
    msg.distortion_model = info.get("distortion_model", "plumb_bob")
    msg.d = [float(x) for x in info.get("D", [0.0] * 5)]
    msg.k = [float(x) for x in k.ravel()]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    p = np.zeros((3, 4))
    p[:, :3] = k
    msg.p = [float(x) for x in p.ravel()]
    return msg


# --------------------------------------------------------------------------- joint states
def joint_state_to_msg(names: Sequence[str], positions, stamp, velocities=None) -> JointState:
    """Names + (N,) positions (+ optional (N,) velocities) -> sensor_msgs/JointState."""
    pos = np.asarray(positions, dtype=np.float64).ravel()
    if len(names) != pos.size:
        raise ValueError(f"{len(names)} joint names but {pos.size} positions")
    msg = JointState()
    msg.header.stamp = _as_stamp(stamp)
    msg.name = list(names)
    msg.position = pos.tolist()
    if velocities is not None:
        vel = np.asarray(velocities, dtype=np.float64).ravel()
        if vel.size != pos.size:
            raise ValueError(f"{pos.size} positions but {vel.size} velocities")
        msg.velocity = vel.tolist()
    return msg


def joint_positions(msg, names: Sequence[str]) -> np.ndarray:
    """Positions of ``names`` (in that order) from a JointState -> (len(names),) float64.

    Raises ValueError naming the missing joints; the message may carry extra joints in any order.
    """
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"joint state lacks joints {missing} (has {list(msg.name)})")
    pos = np.asarray(msg.position, dtype=np.float64)
    if pos.size != len(msg.name):
        raise ValueError(f"joint state has {len(msg.name)} names but {pos.size} positions")
    return pos[[index[n] for n in names]]
