"""ver-export-dataset: bags -> LeRobotDataset v3.0, checked against the format as LeRobot
documents it (read back here with pyarrow and PyAV directly, not with our reader)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from ver_core.cli.export_dataset import main as export_main
from ver_core.data import TopicConfig
from ver_core.data.synthetic import TS, image_message, write_synthetic_episode

SCENE = "/camera/camera/color/image_raw"
WRIST = "/wrist_camera/camera/color/image_raw"
TWO_CAMS = TopicConfig(images=[SCENE, WRIST])
DEFAULTS = {
    "timestamp": ("float32", [1]),
    "frame_index": ("int64", [1]),
    "episode_index": ("int64", [1]),
    "index": ("int64", [1]),
    "task_index": ("int64", [1]),
}
STATS = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


def bags(root: Path, n: int = 3, seconds: float = 1.5, **kw) -> Path:
    for i in range(n):
        write_synthetic_episode(
            root / f"episode_{i:03d}",
            seed=i,
            seconds=seconds,
            topics=TWO_CAMS,
            camera_hz=30.0,
            view_sizes=[(64, 48), (32, 32)],
            **kw,
        )
    return root


def export(bag_dir: Path, out: Path, *extra: str) -> int:
    args = ["--bag", str(bag_dir), "--out", str(out), "--image-topic", SCENE]
    return export_main([*args, "--image-topic", WRIST, *extra])


def check_v30(root: Path) -> dict:
    """The LeRobotDataset v3.0 layout and schema (features, shapes, dtypes, fps, indices)."""
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    fps = info["fps"]
    assert isinstance(fps, int) and fps > 0
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert (
        info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    )
    assert info["splits"] == {"train": f"0:{info['total_episodes']}"}
    feats = info["features"]
    for key, (dtype, shape) in DEFAULTS.items():
        assert feats[key]["dtype"] == dtype and feats[key]["shape"] == shape, key
    for key in ("observation.state", "action"):
        assert feats[key]["dtype"] == "float32" and feats[key]["shape"] == [8]
        assert len(feats[key]["names"]) == 8
    cams = [k for k in feats if k.startswith("observation.images.")]
    for key in cams:
        f = feats[key]
        assert f["dtype"] == "video" and f["names"] == ["height", "width", "channels"]
        assert f["shape"][2] == 3 and f["info"]["video.fps"] == fps
        assert (
            f["info"]["video.height"] == f["shape"][0] and f["info"]["video.width"] == f["shape"][1]
        )

    # frames: one Parquet table of every non-video feature, typed as the features say
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert set(table.column_names) == {k for k, f in feats.items() if f["dtype"] != "video"}
    for key in ("observation.state", "action"):
        t = table.schema.field(key).type
        assert pa.types.is_fixed_size_list(t) and t.list_size == 8 and t.value_type == pa.float32()
    for key, (dtype, _) in DEFAULTS.items():
        assert table.schema.field(key).type == getattr(pa, dtype)(), key
    cols = {k: table.column(k).to_numpy() for k in DEFAULTS}
    n = table.num_rows
    assert n == info["total_frames"] and np.array_equal(cols["index"], np.arange(n))
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in episodes] == list(range(info["total_episodes"]))
    assert sorted(set(cols["episode_index"].tolist())) == list(range(len(episodes)))
    ends = {key: 0.0 for key in cams}
    for ep in episodes:
        rows = slice(ep["dataset_from_index"], ep["dataset_to_index"])
        length = ep["length"]
        assert ep["dataset_to_index"] - ep["dataset_from_index"] == length > 0
        assert np.all(cols["episode_index"][rows] == ep["episode_index"])
        assert np.array_equal(cols["frame_index"][rows], np.arange(length))
        # a frame's timestamp is frame_index / fps: the dataset holds the fps it claims
        expected = (np.arange(length) / fps).astype(np.float32)
        assert np.array_equal(cols["timestamp"][rows], expected)
        assert (ep["data/chunk_index"], ep["data/file_index"]) == (0, 0)
        assert isinstance(ep["tasks"], list) and ep["tasks"]
        for key in cams:  # episodes follow each other in the camera's video file
            assert ep[f"videos/{key}/from_timestamp"] == pytest.approx(ends[key])
            ends[key] = ep[f"videos/{key}/to_timestamp"]
            assert ends[key] - ep[f"videos/{key}/from_timestamp"] == pytest.approx(length / fps)
    for key in cams:  # every frame of every episode, at k / fps exactly
        with av.open(str(root / f"videos/{key}/chunk-000/file-000.mp4")) as c:
            s = c.streams.video[0]
            assert (s.codec_context.width, s.codec_context.height) == tuple(
                feats[key]["shape"][1::-1]
            )
            times = [float(f.pts * s.time_base) for f in c.decode(s)]
        assert np.allclose(times, np.arange(n) / fps, atol=1e-6)
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column("task_index").to_pylist() == list(range(info["total_tasks"]))
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert set(cols["task_index"].tolist()) <= set(range(info["total_tasks"]))
    stats = json.loads((root / "meta/stats.json").read_text())
    for key, f in feats.items():
        assert set(stats[key]) == STATS, key
        shape = [3, 1, 1] if f["dtype"] == "video" else f["shape"]
        assert list(np.shape(stats[key]["mean"])) == shape, key
        if f["dtype"] == "video":  # image statistics sample frames of each episode
            assert 0 < stats[key]["count"][0] <= n
        else:
            assert stats[key]["count"] == [n], key
    state = np.asarray(table.column("observation.state").to_pylist())
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["max"], state.max(0), atol=1e-6)
    return info


def test_export_writes_a_v30_dataset_as_documented(tmp_path, capsys):
    assert export(bags(tmp_path / "bags"), tmp_path / "ds", "--fps", "30") == 0
    report = json.loads(capsys.readouterr().out)
    info = check_v30(tmp_path / "ds")
    assert info["total_episodes"] == report["episodes"] == 3 and info["fps"] == 30
    assert info["features"]["observation.images.camera"]["shape"] == [48, 64, 3]
    assert info["features"]["observation.images.wrist_camera"]["shape"] == [32, 32, 3]
    assert info["features"]["observation.images.camera"]["info"]["video.codec"] == "av1"
    assert info["total_tasks"] == 1 and report["action_source"] == "command"
    assert not list(tmp_path.glob("ds/.parts"))
    saved = yaml.safe_load((tmp_path / "ds" / "ver-export-dataset.yaml").read_text())
    assert saved["export"]["fps"] == 30 and saved["topics"]["images"] == [SCENE, WRIST]


def test_export_resamples_to_the_fps_it_claims(tmp_path):
    """A 15 Hz camera exported at 20 fps: one row per 1/20 s of the episode, a video frame each."""
    write_synthetic_episode(tmp_path / "bags" / "ep", seconds=2.0, camera_hz=15.0, topics=TWO_CAMS)
    assert export(tmp_path / "bags", tmp_path / "ds", "--fps", "20", "--vcodec", "libx264") == 0
    info = check_v30(tmp_path / "ds")
    # frames from the first camera frame (20 ms) to its last (1.953 s): 1.933 s at 20 fps
    assert info["fps"] == 20 and info["total_frames"] == 39
    assert info["features"]["observation.images.camera"]["info"]["video.codec"] == "h264"


def copy_bag(src: Path, dst: Path, change) -> None:
    """A copy of a bag with messages replaced (change(topic, t, raw) -> raw or None to drop)."""
    with (
        AnyReader([src], default_typestore=TS) as r,
        Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as w,
    ):
        conns = {c.topic: w.add_connection(c.topic, c.msgtype, typestore=TS) for c in r.connections}
        for conn, t, raw in r.messages():
            out = change(conn.topic, t, raw)
            if out is not None:
                w.write(conns[conn.topic], t, out)
    meta = src / "episode.json"
    if meta.is_file():
        (dst / "episode.json").write_text(meta.read_text())


def test_dropped_camera_frames_repeat_and_a_bad_episode_leaves_no_trace(tmp_path, capsys):
    src = bags(tmp_path / "src", n=2, seconds=2.0)
    t0 = 1_700_000_000 * 10**9
    out = tmp_path / "bags"
    out.mkdir()
    copy_bag(
        src / "episode_000",
        out / "a_gap",
        lambda topic, t, raw: None if topic == SCENE and t0 + 0.8e9 < t < t0 + 1.2e9 else raw,
    )
    small = TS.serialize_cdr(
        image_message(np.zeros((8, 8, 3), np.uint8), 0), "sensor_msgs/msg/Image"
    )
    copy_bag(
        src / "episode_001",
        out / "b_resized",
        lambda topic, t, raw: small if topic == WRIST and t > t0 + 1e9 else raw,
    )
    copy_bag(src / "episode_001", out / "c_good", lambda topic, t, raw: raw)
    assert export(out, tmp_path / "ds", "--fps", "30") == 0
    report = json.loads(capsys.readouterr().out)
    info = check_v30(tmp_path / "ds")  # the failed episode left no frame, row or video part
    assert info["total_episodes"] == 2 and report["episodes"] == 2
    # camera frames at 0.02 + k/30 s; those in (0.8, 1.2) s dropped: 0.787 s is followed by 1.22 s,
    # and the grid times 0.853 .. 1.153 s have no frame within 50 ms: 10 repeated frames
    assert report["repeated_frames"] == {"observation.images.camera": 10}
    ((name, reason),) = report["skipped"]
    assert name.endswith("b_resized") and "wrist_camera" in reason and "8x8" in reason


def test_export_refuses_to_overwrite_and_names_unusable_episodes(tmp_path, caplog):
    bags(tmp_path / "bags", n=1)
    write_synthetic_episode(tmp_path / "bags" / "no_wrist", seconds=1.0)  # one camera only
    assert export(tmp_path / "bags", tmp_path / "ds") == 0
    assert "no_wrist: no image topic /wrist_camera/camera/color/image_raw" in caplog.text
    assert export(tmp_path / "bags", tmp_path / "ds") == 2
    assert "already holds a dataset" in caplog.text
    assert export(tmp_path / "empty_dir_missing", tmp_path / "ds2") == 2
