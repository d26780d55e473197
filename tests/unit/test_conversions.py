"""numpy <-> sensor_msgs conversions (ver_ros.conversions)."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from ver_ros.conversions import (
    camera_info_to_msg,
    compressed_image_to_msg,
    image_to_msg,
    joint_positions,
    joint_state_to_msg,
    msg_to_rgb,
    ns_to_stamp,
    stamp_to_ns,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def test_rgb8_round_trip_through_serialization():
    msg = image_to_msg(RGB, 1_500_000_000_123, "cam")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 5, 15, "rgb8")
    back = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(msg_to_rgb(back), RGB)
    assert stamp_to_ns(back.header.stamp) == 1_500_000_000_123


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8"])
def test_color_encodings(encoding):
    order = {"bgr8": [2, 1, 0], "rgba8": [0, 1, 2], "bgra8": [2, 1, 0]}[encoding]
    px = RGB[:, :, order]
    if encoding.endswith("a8"):
        px = np.concatenate([px, np.full((6, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(msg_to_rgb(image_to_msg(px, 0, "c", encoding)), RGB)


def test_mono8_and_mono16_and_16uc1():
    gray = RGB[:, :, 0]
    np.testing.assert_array_equal(
        msg_to_rgb(image_to_msg(gray, 0, "c", "mono8")), np.repeat(gray[:, :, None], 3, 2)
    )
    deep = np.array([[0, 65535], [32768, 257]], np.uint16)
    for enc in ("mono16", "16UC1"):
        out = msg_to_rgb(image_to_msg(deep, 0, "c", enc))
        assert out.shape == (2, 2, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[:, :, 0], [[0, 255], [128, 1]])


def test_big_endian_and_row_padding():
    deep = np.array([[1000, 2000, 65535]], np.uint16)
    msg = Image(height=1, width=3, encoding="16UC1", is_bigendian=1, step=8)
    msg.data = deep.astype(">u2").tobytes() + b"\x00\x00"
    np.testing.assert_array_equal(
        msg_to_rgb(msg)[0, :, 0], np.round(deep[0].astype(float) * 255 / 65535).astype(np.uint8)
    )
    padded = Image(height=6, width=5, encoding="rgb8", step=16)
    padded.data = np.concatenate([RGB.reshape(6, 15), np.zeros((6, 1), np.uint8)], axis=1).tobytes()
    np.testing.assert_array_equal(msg_to_rgb(padded), RGB)


def test_compressed_png_exact_and_jpeg_close():
    png = compressed_image_to_msg(RGB, 5, "c", "png")
    back = deserialize_message(serialize_message(png), CompressedImage)
    np.testing.assert_array_equal(msg_to_rgb(back), RGB)
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    jpg = compressed_image_to_msg(smooth, 5, "c", "jpeg", quality=95)
    assert "jpeg" in jpg.format
    assert np.abs(msg_to_rgb(jpg).astype(int) - smooth).mean() < 3


def test_unknown_encodings_raise_clear_errors():
    msg = image_to_msg(RGB, 0, "c")
    msg.encoding = "yuv422"
    with pytest.raises(ValueError, match="yuv422"):
        msg_to_rgb(msg)
    with pytest.raises(ValueError, match="compressedDepth"):
        msg_to_rgb(CompressedImage(format="16UC1; compressedDepth", data=b"\x00"))
    with pytest.raises(ValueError, match="tiff"):
        msg_to_rgb(CompressedImage(format="tiff", data=b"\x00"))
    short = image_to_msg(RGB, 0, "c")
    short.data = bytes(10)
    with pytest.raises(ValueError, match="does not fit"):
        msg_to_rgb(short)
    empty = image_to_msg(RGB, 0, "c")  # issue 14 finding 3: a 0x0 frame crashed the encoder
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, b""
    with pytest.raises(ValueError, match="empty"):
        msg_to_rgb(empty)
    with pytest.raises(ValueError, match="shape|needs"):
        image_to_msg(RGB[:, :, 0], 0, "c")


def test_joint_state_helpers():
    msg = joint_state_to_msg(["b", "a", "c"], [2.0, 1.0, 3.0], ns_to_stamp(7))
    np.testing.assert_array_equal(joint_positions(msg, ["a", "b"]), [1.0, 2.0])
    with pytest.raises(ValueError, match="lacks joints"):
        joint_positions(msg, ["a", "z"])
    with pytest.raises(ValueError, match="3 joint names but 2"):
        joint_state_to_msg(["a", "b", "c"], [1.0, 2.0], 0)


def test_camera_info():
    info = {"width": 640, "height": 480, "K": [[615, 0, 320], [0, 615, 240], [0, 0, 1]]}
    msg = camera_info_to_msg(info, 0, "cam")
    assert msg.k[0] == 615 and msg.k[2] == 320 and msg.p[5] == 615 and len(msg.d) == 5
