"""Time alignment (pure) and image decoding."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ver_core.data import ImageDecodeError, align_episode, decode_image, select_frames
from ver_core.data.synthetic import image_message

MS = 1_000_000


def test_align_latest_state_and_commanded_chunk():
    image_t = np.array([100, 200, 300]) * MS
    state_t = np.array([50, 150, 250, 350]) * MS
    states = np.arange(4)[:, None] * np.ones((4, 8))
    arm_t = np.array([90, 190, 290]) * MS  # commands every 100 ms, stop at 290 ms
    arm = np.arange(3)[:, None] * np.ones((3, 7)) + 10
    grip_t = np.array([150]) * MS
    grip = np.array([0.04])
    out = align_episode(
        image_t, state_t, states, arm_t, arm, grip_t, grip, chunk_len=4, control_rate_hz=20
    )
    assert out.image_index.tolist() == [0, 1, 2]
    assert out.states[:, 0].tolist() == [0, 1, 2]  # latest state at or before each image
    assert out.actions.shape == (3, 4, 8)
    # image 0 at 100 ms: queries 100, 150, 200, 250 ms -> commands 0, 0, 1, 1
    assert out.actions[0, :, 0].tolist() == [10, 10, 11, 11]
    # image 2 at 300 ms: command stream ended at 290 ms -> held last
    assert out.actions[2, :, 0].tolist() == [12, 12, 12, 12]
    # gripper: before its first command the first one is used (backfill), then held
    assert np.allclose(out.actions[:, :, 7], 0.04)


def test_align_action_is_commanded_not_measured():
    t = np.array([0, 100]) * MS
    states = np.zeros((2, 8))  # the arm never moved
    arm = np.ones((2, 7))  # but it was commanded to 1 rad
    out = align_episode(t, t, states, t, arm, t, np.array([0.0, 0.08]), 2, 10.0)
    assert np.all(out.actions[:, :, :7] == 1.0)
    assert out.actions[0, :, 7].tolist() == pytest.approx([0.0, 0.08])


def test_align_drops_frames_before_first_state_or_command():
    image_t = np.array([10, 20, 30, 40]) * MS
    out = align_episode(
        image_t,
        np.array([15]) * MS,
        np.zeros((1, 8)),
        np.array([25]) * MS,
        np.zeros((1, 7)),
        np.array([0]),
        np.zeros(1),
        3,
        10.0,
    )
    assert out.image_index.tolist() == [2, 3]


def test_align_rejects_unsorted_and_missing_streams():
    t = np.array([0, 1])
    with pytest.raises(ValueError, match="not sorted"):
        align_episode(t[::-1], t, np.zeros((2, 8)), t, np.zeros((2, 7)), t, np.zeros(2), 2, 10.0)
    with pytest.raises(ValueError, match="no arm commands"):
        align_episode(t, t, np.zeros((2, 8)), t[:0], np.zeros((0, 7)), t, np.zeros(2), 2, 10.0)


def test_select_frames_min_interval():
    t = np.arange(0, 1000, 33) * MS
    keep = select_frames(t, 90 * MS)
    assert np.all(np.diff(t[keep]) >= 90 * MS)
    assert keep[0] == 0 and len(keep) == 11  # 0, 99, 198, ... 990 ms


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_decode_raw_encodings(encoding):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(image_message(img, 0, encoding)), img)


def test_decode_mono_and_padded_rows():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    padded = np.zeros((3, 6), np.uint8)
    padded[:, :4] = gray
    msg = SimpleNamespace(encoding="mono8", height=3, width=4, step=6, data=padded.reshape(-1))
    out = decode_image(msg)
    assert out.shape == (3, 4, 3) and np.array_equal(out[:, :, 1], gray)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_decode_compressed(fmt):
    img = np.zeros((16, 16, 3), np.uint8)
    img[4:12, 4:12] = (200, 50, 10)
    out = decode_image(image_message(img, 0, compressed=fmt))
    err = np.abs(out.astype(int) - img)
    assert out.shape == img.shape
    assert err.max() == 0 if fmt == "png" else err.mean() < 8  # jpeg is lossy


def test_decode_errors():
    with pytest.raises(ImageDecodeError, match="unsupported image encoding"):
        decode_image(SimpleNamespace(encoding="yuv422", height=1, width=1, step=2, data=b"\0\0"))
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(SimpleNamespace(encoding="rgb8", height=0, width=0, step=0, data=b""))
    px = decode_image(SimpleNamespace(encoding="16UC1", height=1, width=1, step=2, data=b"\xff\xff"))
    assert px.shape == (1, 1, 3) and px.max() == 255
    with pytest.raises(ImageDecodeError, match="does not fit"):
        decode_image(SimpleNamespace(encoding="rgb8", height=4, width=4, step=12, data=b"\0" * 10))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, format="PNG")
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        decode_image(SimpleNamespace(format="png", data=buf.getvalue()[:20]))
