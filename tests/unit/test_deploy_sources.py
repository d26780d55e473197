"""Camera frame sources: RealSense with no device attached, image folder and GIF replay."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ver_core.deploy.sources import (
    CameraUnavailable,
    ImageFolderSource,
    RealSenseSource,
    SourceConfig,
    VideoFileSource,
    open_source,
)


def test_realsense_without_device_raises_clear_error():
    pytest.importorskip("pyrealsense2")
    import pyrealsense2 as rs

    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense is connected")
    src = RealSenseSource(SourceConfig(kind="realsense", serial="123456789"))
    with pytest.raises(CameraUnavailable, match="serial 123456789.*No device connected"):
        src.open()
    with pytest.raises(CameraUnavailable, match="not started"):
        src.read()


@pytest.mark.slow
def test_realsense_pipeline_start_error_is_wrapped():
    """The pipeline.start() path itself (about 15 s to fail with no device attached)."""
    pytest.importorskip("pyrealsense2")
    import pyrealsense2 as rs

    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense is connected")
    src = RealSenseSource(SourceConfig(kind="realsense"), probe=False)
    with pytest.raises(CameraUnavailable, match="could not start: No device connected"):
        src.open()


def _frames(n: int) -> list[np.ndarray]:
    return [np.full((8, 10, 3), 20 * i, dtype=np.uint8) for i in range(n)]


def test_image_folder_replays_in_order_and_loops(tmp_path):
    for i, f in enumerate(_frames(3)):
        Image.fromarray(f).save(tmp_path / f"frame_{i:03d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(SourceConfig(kind="images", path=str(tmp_path)))
    src.open()
    got = [src.read()[0, 0, 0] for _ in range(4)]
    assert got == [0, 20, 40, 0]
    once = ImageFolderSource(SourceConfig(kind="images", path=str(tmp_path), loop=False))
    once.open()
    assert [once.read() is None for _ in range(4)] == [False, False, False, True]


def test_gif_video_replay(tmp_path):
    frames = [Image.fromarray(f) for f in _frames(3)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=33)
    src = VideoFileSource(SourceConfig(kind="video", path=str(tmp_path / "clip.gif"), loop=False))
    src.open()
    out = [src.read() for _ in range(4)]
    assert [o.shape for o in out[:3]] == [(8, 10, 3)] * 3 and out[3] is None


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(CameraUnavailable, match="does not exist"):
        open_source(SourceConfig(kind="images", path=str(tmp_path / "nope"))).open()
    with pytest.raises(CameraUnavailable, match="holds no"):
        open_source(SourceConfig(kind="images", path=str(tmp_path))).open()
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    try:
        import imageio  # noqa: F401
    except ImportError:
        with pytest.raises(CameraUnavailable, match="imageio"):
            open_source(SourceConfig(kind="video", path=str(tmp_path / "clip.mp4"))).open()
    with pytest.raises(ValueError, match="needs a path"):
        SourceConfig(kind="video")
    with pytest.raises(ValueError, match="camera source"):
        SourceConfig(kind="webcam")
