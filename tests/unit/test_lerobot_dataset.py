"""Training from LeRobotDataset v3.0 directories: our bags -> dataset -> the same samples; a
dataset written here by hand (pyarrow + PyAV, not our exporter) trains; bad datasets are named."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ver_core.cli.train_router import main as train_main
from ver_core.data import TopicConfig, load_demos
from ver_core.data.lerobot_export import ExportConfig, export_lerobot
from ver_core.data.lerobot_read import DatasetFormatError, load_lerobot
from ver_core.data.synthetic import render_scene, write_synthetic_episode
from ver_core.policy import TaskPolicy

SCENE = "/camera/camera/color/image_raw"
WRIST = "/wrist_camera/camera/color/image_raw"
TOPICS = TopicConfig(images=[SCENE, WRIST])
JOINTS = [f"fr3_joint{i}" for i in range(1, 8)]
TINY = {"depth": 3, "moe_blocks": 2, "img_size": 32}


def demo_bags(root: Path, **kw) -> Path:
    for i in range(3):
        write_synthetic_episode(
            root / f"episode_{i:03d}", seed=i, seconds=2.0, topics=TOPICS, camera_hz=30.0, **kw
        )
    return root


@pytest.mark.parametrize("fps", [10, 30])
def test_bags_and_their_dataset_give_the_same_samples(tmp_path, fps):
    bags = demo_bags(tmp_path / "bags")
    export_lerobot(bags, tmp_path / "ds", TOPICS, ExportConfig(fps=fps))
    from_bags = load_demos(bags, TOPICS, chunk_len=4, control_rate_hz=10.0, image_size=32)
    from_ds = load_lerobot(tmp_path / "ds", chunk_len=4, control_rate_hz=10.0, image_size=32)
    assert from_ds.cameras == from_bags.cameras == ["camera", "wrist_camera"]
    assert len(from_ds) == len(from_bags) > 50
    np.testing.assert_array_equal(from_ds.episode, from_bags.episode)
    np.testing.assert_array_equal(from_ds.states, from_bags.states)
    np.testing.assert_array_equal(from_ds.actions, from_bags.actions)
    err = np.abs(from_ds.images.astype(int) - from_bags.images.astype(int))
    assert err.mean() < 3 and np.percentile(err, 99) < 25  # AV1's loss, after the resize


def test_next_state_bags_round_trip_too(tmp_path):
    bags = demo_bags(tmp_path / "bags", skip_topics=("/fr3_arm_controller/joint_trajectory",))
    report = export_lerobot(bags, tmp_path / "ds", TOPICS, ExportConfig(fps=30))
    assert report["action_source"] == "next-state"
    from_bags = load_demos(bags, TOPICS, chunk_len=4, control_rate_hz=10.0, image_size=32)
    from_ds = load_lerobot(tmp_path / "ds", chunk_len=4, control_rate_hz=10.0, image_size=32)
    assert from_bags.action_source == "next-state"
    np.testing.assert_array_equal(from_ds.actions, from_bags.actions)


def test_training_from_the_dataset_sees_the_bag_samples(tmp_path):
    """ver-train-router --dataset: the checkpoint's normalization statistics (computed from the
    training samples) are those of the bags the dataset came from."""
    from ver_core.policy import NormStats
    from ver_core.train import split_episodes

    bags = demo_bags(tmp_path / "bags")
    export_lerobot(bags, tmp_path / "ds", TOPICS, ExportConfig(fps=30))
    out = tmp_path / "task"
    args = ["--dataset", str(tmp_path / "ds"), "--out", str(out), "--steps", "2", "--head-steps", "1",
            "--batch-size", "8", "--chunk-len", "4", "--val-every", "2", "--no-progress", "--no-plots",
            *(f"--model-override={k}={v}" for k, v in TINY.items())]  # fmt: skip
    assert train_main(args) == 0
    policy = TaskPolicy.from_pretrained(out)
    assert policy.config.image_topics == [SCENE, WRIST]  # the dataset's cameras
    bag_data = load_demos(bags, TOPICS, chunk_len=4, control_rate_hz=10.0, image_size=32)
    train, _ = split_episodes(3, 0.1)
    idx = np.isin(bag_data.episode, train)
    ref = NormStats.for_task(bag_data.states[idx], bag_data.actions[idx], "absolute", 0.08)
    for name in ("state_mean", "state_std", "action_min", "action_max"):
        np.testing.assert_array_equal(getattr(policy.stats, name), getattr(ref, name), name)


# ----------------------------------------------------------- a dataset written by hand here
def write_dataset(root: Path, fps: int = 15, lengths=(23, 17), **override) -> dict:
    """A LeRobotDataset v3.0 as LeRobot's docs describe it, written with pyarrow and PyAV: a
    video camera 'front' (both episodes in one H.264 file), an image camera 'wrist' (PNG bytes
    in the rows), state names in another order than ours, one data file per episode."""
    rng = np.random.default_rng(0)
    names = ["gripper_width", *reversed(JOINTS)]  # a gripper entry first, joints reversed
    episodes, frames, index = [], [], 0
    video = root / "videos/observation.images.front/chunk-000/file-000.mp4"
    video.parent.mkdir(parents=True)
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "18", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        shown = 0
        for e, length in enumerate(lengths):
            q = rng.uniform(-1, 1, (length, 7)).cumsum(0) * 0.05
            grip = np.where(np.arange(length) % 10 < 5, 0.08, 0.0)
            state = np.concatenate([grip[:, None], q[:, ::-1]], axis=1).astype(np.float32)
            action = np.roll(state, -1, axis=0)
            rows = {
                "observation.state": state,
                "action": action,
                "observation.images.wrist": [
                    {"bytes": png(render_scene(-q[k, 0], grip[k], (32, 32))), "path": None}
                    for k in range(length)
                ],
                "timestamp": (np.arange(length) / fps).astype(np.float32),
                "frame_index": np.arange(length),
                "episode_index": np.full(length, e),
                "index": np.arange(index, index + length),
                "task_index": np.zeros(length, np.int64),
            }
            rows.update(override.get("rows", {}))
            frames.append((state, action, q, grip))
            for k in range(length):
                frame = av.VideoFrame.from_ndarray(render_scene(q[k, 0], grip[k]), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            table = pa.table(
                {
                    k: (
                        pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), 8)
                        if isinstance(v, np.ndarray) and v.ndim == 2
                        else v
                    )
                    for k, v in rows.items()
                }
            )
            path = root / f"data/chunk-000/file-{e:03d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            episodes.append(
                {
                    "episode_index": e,
                    "tasks": ["stack the blocks"],
                    "length": length,
                    "data/chunk_index": 0,
                    "data/file_index": e,
                    "dataset_from_index": index,
                    "dataset_to_index": index + length,
                    "videos/observation.images.front/chunk_index": 0,
                    "videos/observation.images.front/file_index": 0,
                    "videos/observation.images.front/from_timestamp": shown / fps,
                    "videos/observation.images.front/to_timestamp": (shown + length) / fps,
                    "meta/episodes/chunk_index": 0,
                    "meta/episodes/file_index": 0,
                }
            )
            index += length
            shown += length
        for packet in stream.encode():
            out.mux(packet)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(episodes), root / "meta/episodes/chunk-000/file-000.parquet"
    )
    pq.write_table(
        pa.table({"task_index": [0], "task": ["stack the blocks"]}), root / "meta/tasks.parquet"
    )
    vec = {"dtype": "float32", "shape": [8], "names": names}
    info = {
        "codebase_version": "v3.0",
        "robot_type": "franka",
        "total_episodes": len(lengths),
        "total_frames": index,
        "total_tasks": 1,
        "chunks_size": 1000,
        "fps": fps,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "observation.state": vec,
            "action": vec,
            "observation.images.front": {
                "dtype": "video",
                "shape": [48, 64, 3],
                "names": ["height", "width", "channels"],
            },
            "observation.images.wrist": {
                "dtype": "image",
                "shape": [32, 32, 3],
                "names": ["height", "width", "channels"],
            },
            **{
                k: {"dtype": "int64", "shape": [1], "names": None}
                for k in ("frame_index", "episode_index", "index", "task_index")
            },
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        },
        **override.get("info", {}),
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    return {"frames": frames}


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_a_dataset_written_by_hand_reads_and_trains(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    written = write_dataset(tmp_path / "ds")
    data = load_lerobot(tmp_path / "ds", chunk_len=3, control_rate_hz=5.0, image_size=32)
    assert data.cameras == ["front", "wrist"] and data.images.shape[1:] == (2, 32, 32, 3)
    state, action, q, grip = written["frames"][0]
    n0 = int(np.sum(data.episode == 0))
    assert n0 == 8  # 23 frames at 15 fps, every 3rd: frames 0, 3, ..., 21
    np.testing.assert_allclose(data.states[:n0, :7], q[0:23:3], atol=1e-6)  # names matched
    np.testing.assert_allclose(data.states[:n0, 7], grip[0:23:3], atol=1e-6)
    np.testing.assert_allclose(data.actions[0, :, :7], action[[0, 3, 6]][:, :0:-1], atol=1e-6)
    np.testing.assert_allclose(data.actions[n0 - 1, :, 7], [action[21, 0]] * 3, atol=1e-6)  # held
    wrist = render_scene(-q[21, 0], grip[21], (32, 32))
    assert np.array_equal(data.images[n0 - 1, 1], wrist)  # PNG: lossless
    out = tmp_path / "task"
    args = ["--dataset", str(tmp_path / "ds"), "--out", str(out), "--steps", "2", "--head-steps", "1",
            "--batch-size", "4", "--chunk-len", "3", "--control-rate", "5", "--val-every", "2",
            "--no-progress", "--no-plots", *(f"--model-override={k}={v}" for k, v in TINY.items())]  # fmt: skip
    assert train_main(args) == 0
    config = TaskPolicy.from_pretrained(out).config
    assert config.cameras == ["front", "wrist"] and config.action_source == "command"


@pytest.mark.parametrize(
    "override, match",
    [
        (
            {"info": {"codebase_version": "v2.1"}},
            "codebase_version 'v2.1'.*convert_dataset_v21_to_v30",
        ),
        (
            {"rows": {"timestamp": (np.arange(23) / 30).astype(np.float32)}},
            "episode_000000: frame 1 has timestamp 0.0333 s.*15 fps",
        ),
        (
            {"info": {"features": {"observation.state": {"dtype": "float32", "shape": [14]}}}},
            "observation.state has shape \\[14\\]",
        ),
        (
            {"info": {"video_path": "videos/{video_key}/elsewhere.mp4"}},
            "episode_000000: video file .*elsewhere.mp4 is missing",
        ),
    ],
)
def test_bad_datasets_are_named(tmp_path, override, match):
    if "features" in override.get("info", {}):  # replace one feature, keep the others
        root = tmp_path / "ds"
        write_dataset(root)
        info = json.loads((root / "meta/info.json").read_text())
        info["features"].update(override["info"]["features"])
        (root / "meta/info.json").write_text(json.dumps(info))
    else:
        write_dataset(tmp_path / "ds", lengths=(23,), **override)
    with pytest.raises(DatasetFormatError, match=match):
        load_lerobot(tmp_path / "ds", chunk_len=3, control_rate_hz=5.0, image_size=32)


def test_asking_for_a_camera_the_dataset_lacks_is_named(tmp_path, caplog):
    write_dataset(tmp_path / "ds", lengths=(20,))
    with pytest.raises(
        DatasetFormatError, match=r"no camera feature \['observation.images.camera'\]"
    ):
        load_lerobot(tmp_path / "ds", 3, 5.0, 32, cameras=["camera"])
    args = ["--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "o"), "--image-topic", SCENE,
            "--steps", "1", *(f"--model-override={k}={v}" for k, v in TINY.items())]  # fmt: skip
    assert train_main(args) == 2 and "no camera feature" in caplog.text
