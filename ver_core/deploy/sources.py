"""Camera frame sources for the camera node: RealSense, an image folder, or a video file.

Every source yields (H, W, 3) uint8 RGB frames from ``read()`` (None when a replay ends) and
raises ``CameraUnavailable`` with a message naming the problem when it cannot open, so the node
can log it once and retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "CameraUnavailable",
    "FrameSource",
    "ImageFolderSource",
    "RealSenseSource",
    "SourceConfig",
    "VideoFileSource",
    "open_source",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
SOURCE_KINDS = ("realsense", "images", "video")


class CameraUnavailable(RuntimeError):
    """The source cannot deliver frames (no device, missing file, missing decoder)."""


@dataclass
class SourceConfig:
    kind: str = "realsense"
    serial: str = ""  # RealSense serial number, empty = first device found
    width: int = 640
    height: int = 480
    fps: int = 30
    path: str = ""  # image folder or video file for replay
    loop: bool = True

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"camera source must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ValueError(
                f"camera width/height/fps must be > 0, got {self.width}x{self.height}@{self.fps}"
            )
        if self.kind != "realsense" and not self.path:
            raise ValueError(f"camera source {self.kind!r} needs a path")


class FrameSource:
    """Interface: ``open()``, ``read() -> (H, W, 3) uint8 | None``, ``close()``."""

    def open(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self) -> np.ndarray | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class RealSenseSource(FrameSource):
    """Color stream of an Intel RealSense through pyrealsense2 (rgb8 at width x height @ fps)."""

    def __init__(self, config: SourceConfig, rs_module=None, probe: bool = True) -> None:
        self.config = config
        self._rs = rs_module
        self._probe = probe  # query devices before pipeline.start (fast failure)
        self._pipeline = None

    def open(self) -> None:
        if self._rs is None:
            try:
                import pyrealsense2 as rs
            except ImportError as e:
                raise CameraUnavailable(
                    "pyrealsense2 is not installed (pip install pyrealsense2, x86_64 only; on "
                    "Jetson build librealsense or run realsense-ros instead)"
                ) from e
            self._rs = rs
        rs = self._rs
        c = self.config
        who = f"serial {c.serial}" if c.serial else "any serial"
        what = f"RealSense ({who}, {c.width}x{c.height}@{c.fps}) could not start"
        # query first: it answers in milliseconds, while pipeline.start() with no device
        # attached blocks for about 15 s before raising "No device connected"
        serials = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
        if self._probe and not serials:
            raise CameraUnavailable(f"{what}: No device connected")
        if self._probe and c.serial and c.serial not in serials:
            raise CameraUnavailable(f"{what}: not among the connected devices {serials}")
        rs_cfg = rs.config()
        if c.serial:
            rs_cfg.enable_device(c.serial)
        rs_cfg.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
        pipeline = rs.pipeline()
        try:
            pipeline.start(rs_cfg)
        except RuntimeError as e:
            raise CameraUnavailable(f"{what}: {e}") from e
        self._pipeline = pipeline

    def read(self) -> np.ndarray | None:
        if self._pipeline is None:
            raise CameraUnavailable("RealSense pipeline is not started")
        frames = self._pipeline.wait_for_frames(5000)
        color = frames.get_color_frame()
        if not color:
            return None
        return np.asanyarray(color.get_data()).copy()  # (H, W, 3) uint8 rgb8

    def close(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            finally:
                self._pipeline = None


class ImageFolderSource(FrameSource):
    """Replays the images of a folder in name order (optionally looping)."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self._files: list[Path] = []
        self._i = 0

    def open(self) -> None:
        folder = Path(self.config.path)
        if not folder.is_dir():
            raise CameraUnavailable(f"image folder {folder} does not exist")
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise CameraUnavailable(f"image folder {folder} holds no {IMAGE_SUFFIXES} files")
        self._i = 0

    def read(self) -> np.ndarray | None:
        from PIL import Image

        if self._i >= len(self._files):
            if not self.config.loop:
                return None
            self._i = 0
        path = self._files[self._i]
        self._i += 1
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)


class VideoFileSource(FrameSource):
    """Replays a video: multi-frame images (GIF, animated WebP/PNG) through Pillow, any other
    container through imageio (``pip install imageio[ffmpeg]``) when it is installed."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self._frames: Callable[[], object] | None = None
        self._it = None

    def open(self) -> None:
        path = Path(self.config.path)
        if not path.is_file():
            raise CameraUnavailable(f"video file {path} does not exist")
        if path.suffix.lower() in (".gif", ".webp", ".png", ".apng", ".tif", ".tiff"):
            self._frames = lambda: _pil_frames(path)
        else:
            try:
                import imageio.v3 as iio
            except ImportError as e:
                raise CameraUnavailable(
                    f"cannot decode {path.suffix} video: install imageio[ffmpeg], or replay an "
                    "image folder / GIF instead"
                ) from e
            self._frames = lambda: (np.asarray(f)[..., :3] for f in iio.imiter(path))
        self._it = iter(self._frames())

    def read(self) -> np.ndarray | None:
        if self._it is None or self._frames is None:
            raise CameraUnavailable("video source is not open")
        frame = next(self._it, None)
        if frame is None and self.config.loop:
            self._it = iter(self._frames())
            frame = next(self._it, None)
        return None if frame is None else np.ascontiguousarray(frame, dtype=np.uint8)


def _pil_frames(path: Path):
    from PIL import Image, ImageSequence

    with Image.open(path) as img:
        for frame in ImageSequence.Iterator(img):
            yield np.asarray(frame.convert("RGB"), dtype=np.uint8)


def open_source(config: SourceConfig) -> FrameSource:
    """A not-yet-opened source for ``config.kind``."""
    kinds: dict[str, Callable[[SourceConfig], FrameSource]] = {
        "realsense": RealSenseSource,
        "images": ImageFolderSource,
        "video": VideoFileSource,
    }
    return kinds[config.kind](config)
