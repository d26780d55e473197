"""MP4 video in and out with PyAV (FFmpeg): the camera streams of a LeRobot dataset.

:class:`VideoWriter` appends RGB frames to one MP4 file at a fixed frame rate (frame n is shown
at exactly n / fps, as a LeRobot dataset's timestamps require); :func:`read_video_frames` finds
the frames nearest to given times in a file; :func:`probe_video` says what a file holds.
The default codec is AV1 (``libsvtav1``, the one LeRobot writes), pixels in ``yuv420p``;
``libx264`` (H.264) and ``libx265`` (HEVC) are the alternatives. Lossy: a decoded frame differs
from the original by the codec's error (a level or two on average at the default quality).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SVT_PRESET = "10"  # SVT-AV1 speed preset (0 slowest .. 13 fastest): ~20 ms per 640x480 frame here
VIDEO_CODECS = ("libsvtav1", "libx264", "libx265")


class VideoError(ValueError):
    """A video that cannot be written or read as asked; ``str(e)`` says why."""


class VideoWriter:
    """Frames (H, W, 3) uint8 RGB -> one MP4 file; the size is set by the first frame.

    ``crf``: the codec's constant-rate quality (lower is better); ``gop``: frames between key
    frames (small: fast random access, as LeRobot's default of 2)."""

    def __init__(
        self, path: Path, fps: int, codec: str = "libsvtav1", crf: int = 30, gop: int = 2
    ) -> None:
        if codec not in VIDEO_CODECS:
            raise VideoError(f"unknown video codec {codec!r}: use one of {VIDEO_CODECS}")
        self.path, self.fps, self.codec, self.crf, self.gop = Path(path), int(fps), codec, crf, gop
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (height, width)
        self._out = None
        self._stream = None

    def add(self, image: np.ndarray) -> None:
        img = np.ascontiguousarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise VideoError(f"expected an (H, W, 3) uint8 frame, got {img.shape} {img.dtype}")
        if self._out is None:
            self._open(img.shape[0], img.shape[1])
        if img.shape[:2] != self.size:
            raise VideoError(
                f"{self.path}: frame of {img.shape[1]}x{img.shape[0]} in a video of "
                f"{self.size[1]}x{self.size[0]}"
            )
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.frames
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        self.frames += 1

    def _open(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise VideoError(f"{self.path}: yuv420p video needs even sizes, got {width}x{height}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("libav").setLevel(logging.ERROR)
        options = {"g": str(self.gop), "crf": str(self.crf)}
        if self.codec == "libsvtav1":
            options["preset"] = SVT_PRESET
        else:
            options["bf"] = "0"  # no B-frames: parts concatenate with monotonic timestamps
        self._out = av.open(str(self.path), "w", format="mp4")
        self._stream = self._out.add_stream(self.codec, rate=self.fps, options=options)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.time_base = Fraction(1, self.fps)
        self.size = (height, width)

    def close(self) -> None:
        if self._out is not None:
            for packet in self._stream.encode():
                self._out.mux(packet)
            self._out.close()
            self._out = None


def concat_videos(parts: list[Path], out: Path, fps: int) -> None:
    """Join MP4 files written by :class:`VideoWriter` with the same settings into one, without
    re-encoding (packets copied, their timestamps shifted past the frames before them)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w", format="mp4") as output:
        ostream, time_base, offset = None, None, 0
        for part in parts:
            with av.open(str(part)) as src:
                stream = src.streams.video[0]
                if ostream is None:
                    ostream = output.add_stream_from_template(stream, opaque=True)
                    ostream.time_base = time_base = stream.time_base
                if stream.time_base != time_base:
                    raise VideoError(
                        f"{part}: time base {stream.time_base} differs from {time_base}"
                    )
                frames = 0
                for packet in src.demux(stream):
                    if packet.dts is None:
                        continue  # the demuxer's flush packet
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = ostream
                    output.mux(packet)
                    frames += 1
                offset += round(frames / (fps * time_base))


def probe_video(path: Path) -> dict:
    """codec, pix_fmt, width, height, fps (int) and frame count of an MP4 file's video."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(f"{path} holds no video stream")
        s = container.streams.video[0]
        frames = s.frames or sum(1 for _ in container.demux(s) if _.size)
        return {
            "codec": s.codec_context.codec.canonical_name,
            "pix_fmt": s.codec_context.pix_fmt,
            "width": s.codec_context.width,
            "height": s.codec_context.height,
            "fps": int(round(float(s.average_rate or s.base_rate))),
            "frames": int(frames),
        }


def read_video_frames(
    path: Path, times: np.ndarray, tolerance_s: float = 1e-4
) -> Iterator[tuple[int, np.ndarray]]:
    """For each time (s, any order) the decoded frame nearest to it, as (position in ``times``,
    (H, W, 3) uint8 RGB), in the order of the video. Raises VideoError when no frame lies within
    ``tolerance_s`` of a time (the video does not hold it)."""
    times = np.asarray(times, dtype=np.float64)
    order = np.argsort(times, kind="stable")
    q = 0  # next query (in sorted order) to answer
    prev: tuple[float, object] | None = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            while q < len(order) and times[order[q]] <= t:
                target = times[order[q]]
                best = (t, frame)
                if prev is not None and abs(prev[0] - target) < abs(t - target):
                    best = prev
                if abs(best[0] - target) > tolerance_s:
                    raise VideoError(
                        f"{path}: no frame within {tolerance_s} s of t={target:.4f} s "
                        f"(nearest at {best[0]:.4f} s)"
                    )
                yield int(order[q]), best[1].to_ndarray(format="rgb24")
                q += 1
            prev = (t, frame)
    while q < len(order):  # times past the last frame
        target = times[order[q]]
        if prev is None or abs(prev[0] - target) > tolerance_s:
            last = "no frames" if prev is None else f"the last frame is at {prev[0]:.4f} s"
            raise VideoError(
                f"{path}: no frame within {tolerance_s} s of t={target:.4f} s ({last})"
            )
        yield int(order[q]), prev[1].to_ndarray(format="rgb24")
        q += 1
