"""Time alignment on the grid (pure) and image decoding."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ver_core.data import (
    ImageDecodeError,
    chunk_actions,
    decode_image,
    frame_table,
    grid_times,
    sample_frames,
)
from ver_core.data.synthetic import image_message

MS = 1_000_000


def table(image_t, state_t, states, arm_t, arm, grip_t, grip, fps=10.0, tol_ms=50, views=None):
    return frame_table(
        [np.asarray(image_t), *(views or [])],
        np.asarray(state_t),
        np.asarray(states),
        np.asarray(arm_t),
        np.asarray(arm),
        np.asarray(grip_t),
        np.asarray(grip),
        fps,
        tol_ms * MS,
    )


def test_grid_starts_at_first_ready_frame_and_samples_latest_state_and_command():
    image_t = np.array([100, 133, 167, 200, 233, 267, 300]) * MS  # a 30 Hz camera
    state_t = np.array([50, 150, 250, 350]) * MS
    states = np.arange(4)[:, None] * np.ones((4, 8))
    arm_t = np.array([90, 190, 290]) * MS  # commands every 100 ms, stop at 290 ms
    arm = np.arange(3)[:, None] * np.ones((3, 7)) + 10
    out = table(image_t, state_t, states, arm_t, arm, [150 * MS], [0.04], fps=20.0)
    assert (out.times // MS).tolist() == [100, 150, 200, 250, 300]  # exact 50 ms steps
    assert out.view_index[:, 0].tolist() == [0, 1, 3, 4, 6]  # nearest camera frame
    assert out.states[:, 0].tolist() == [0, 1, 1, 2, 2]  # latest state at or before
    assert out.actions[:, 0].tolist() == [10, 10, 11, 11, 12]  # latest command at or before
    # gripper: before its first command the first one is used (backfill), then held
    assert np.allclose(out.actions[:, 7], 0.04)


def test_chunks_are_the_next_samples_actions_held_at_the_end():
    actions = np.arange(5)[:, None] * np.ones((5, 8))
    chunks = chunk_actions(actions, np.arange(5), 3)
    assert chunks.shape == (5, 3, 8)
    assert chunks[0, :, 0].tolist() == [0, 1, 2]
    assert chunks[4, :, 0].tolist() == [4, 4, 4]  # the last sample's action held
    # samples every 3rd frame of a 30 fps table: the same chunks as a 10 Hz table
    fine = np.repeat(actions, 3, axis=0)[:13]  # frames 0..12 of a 30 fps grid
    samples = sample_frames(13, 30, 10)
    assert samples.tolist() == [0, 3, 6, 9, 12]
    assert np.array_equal(chunk_actions(fine, samples, 3), chunks)


def test_action_is_commanded_not_measured():
    t = np.array([0, 100]) * MS
    states = np.zeros((2, 8))  # the arm never moved
    arm = np.ones((2, 7))  # but it was commanded to 1 rad
    out = table(t, t, states, t, arm, t, [0.0, 0.08])
    assert np.all(out.actions[:, :7] == 1.0)
    assert out.actions[:, 7].tolist() == pytest.approx([0.0, 0.08])


def test_frames_before_first_state_or_command_are_not_on_the_grid():
    image_t = np.array([10, 20, 30, 40]) * MS
    out = table(
        image_t, [15 * MS], np.zeros((1, 8)), [25 * MS], np.zeros((1, 7)), [0], [0.0], fps=100
    )
    assert (out.times // MS).tolist() == [30, 40]
    empty = table(image_t, [50 * MS], np.zeros((1, 8)), [0], np.zeros((1, 7)), [0], [0.0])
    assert len(empty) == 0


def test_other_views_match_within_tolerance():
    image_t = np.array([0, 100, 200, 300]) * MS
    wrist = np.array([10, 190, 330]) * MS  # no frame near 100 ms
    out = table(image_t, [0], np.zeros((1, 8)), [0], np.zeros((1, 7)), [0], [0.0], views=[wrist])
    assert out.view_index[:, 1].tolist() == [0, -1, 1, 2]


def test_grid_at_a_multiple_of_the_rate_contains_the_grid_at_the_rate():
    start = 1_700_000_000_123_456_789
    coarse = grid_times(start, start + 7 * 10**9, 7.5)
    fine = grid_times(start, start + 7 * 10**9, 30)
    assert np.array_equal(fine[::4], coarse)  # integer ns: exactly, not approximately
    assert np.all(np.abs(np.diff(fine) - 10**9 / 30) <= 1)


def test_align_rejects_unsorted_and_missing_streams():
    t = np.array([0, 1])
    with pytest.raises(ValueError, match="not sorted"):
        table(t[::-1], t, np.zeros((2, 8)), t, np.zeros((2, 7)), t, np.zeros(2))
    with pytest.raises(ValueError, match="no arm targets"):
        table(t, t, np.zeros((2, 8)), t[:0], np.zeros((0, 7)), t, np.zeros(2))


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
    px = decode_image(
        SimpleNamespace(encoding="16UC1", height=1, width=1, step=2, data=b"\xff\xff")
    )
    assert px.shape == (1, 1, 3) and px.max() == 255
    with pytest.raises(ImageDecodeError, match="does not fit"):
        decode_image(SimpleNamespace(encoding="rgb8", height=4, width=4, step=12, data=b"\0" * 10))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, format="PNG")
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        decode_image(SimpleNamespace(format="png", data=buf.getvalue()[:20]))


def test_source_resolution_is_one_choice_per_dataset():
    from ver_core.data.streams import resolve_sources

    both = resolve_sources("auto", "auto", [True, True], [True, True], ["a", "b"])
    assert (both.action, both.gripper) == ("command", "command")
    mixed = resolve_sources("auto", "auto", [True, False], [False, True], ["a", "b"])
    assert (mixed.action, mixed.gripper) == ("next-state", "finger-width")
    assert "1 of 2 episodes have no arm command: b" in mixed.note
    assert "no gripper command topic or gripper action goals: a" in mixed.note
    forced = resolve_sources("command", "finger-width", [False], [False], ["a"])
    assert (forced.action, forced.gripper, forced.note) == ("command", "finger-width", "")
    with pytest.raises(ValueError, match="unknown action source 'teleop'"):
        resolve_sources("teleop", "auto", [], [], [])


def test_gaps_and_clock_jumps_are_found_where_they_are():
    from ver_core.data.streams import find_clock_jump, find_gap

    t = np.arange(0, 20 * 10**9, 10**8)  # 10 Hz for 20 s
    assert find_gap(t) is None
    gapped = np.concatenate([t[t < 5 * 10**9], t[t >= 11 * 10**9]])
    assert find_gap(gapped) == (int(4.9e9), int(6.1e9))
    stamps = t - 3 * 10**9 + (t % 7)  # another clock, a few ns of jitter: no jump
    assert find_clock_jump(t, stamps) is None
    reset = np.where(t >= 8 * 10**9, t - 100 * 10**9, t)  # the publisher's clock went back
    assert find_clock_jump(t, reset) == (8 * 10**9, -100 * 10**9)
    unset = np.where(t >= 8 * 10**9, 0, t)  # zero stamps (not set) are no jump
    assert find_clock_jump(t, unset) is None
