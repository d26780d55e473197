"""rosbag2 episodes -> a LeRobotDataset v3.0 directory (``ver-export-dataset``).

Every usable episode is laid on the grid at the dataset's fps by the same code that training
reads bags with (``ver_core.data.episodes``): frame k of an episode is the moment k / fps after
its start, with ``observation.state`` (7 joints + gripper width), ``action`` (arm + gripper
targets at that moment: commanded, or derived as ``--action-source`` / ``--gripper-source``
say) and one ``observation.images.<camera>`` video frame per camera (its frame nearest to the
moment; a camera that dropped frames repeats its nearest one, counted in the report). Layout
and metadata: ``ver_core.data.lerobot_format``.

An episode is encoded into its own video part first and joined to the camera's file only when
all of it decoded, so an episode that fails half way leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ver_core.data import lerobot_format as fmt
from ver_core.data.align import match_views
from ver_core.data.bag_reader import EpisodeSkip, TopicConfig, iter_frames
from ver_core.data.episodes import PreparedEpisode, prepare_episodes
from ver_core.data.video import (
    VIDEO_CODECS,
    VideoError,
    VideoWriter,
    concat_videos,
    probe_video,
)

log = logging.getLogger(__name__)
STATS_FRAMES = 100  # frames per episode and camera sampled for the image statistics


@dataclass
class ExportConfig:
    """How bags become a LeRobot dataset."""

    fps: int = 30  # frames per second of the dataset: every episode is resampled to it
    vcodec: str = "libsvtav1"  # libsvtav1 (AV1, LeRobot's default), libx264 or libx265
    crf: int = 30  # video quality (lower: better, larger)
    gop: int = 2  # frames between video key frames
    task: str = "demonstration"  # task text of episodes whose episode.json names none
    robot_type: str = "franka"

    def __post_init__(self) -> None:
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1, got {self.fps}")
        if self.vcodec not in VIDEO_CODECS:
            raise ValueError(f"unknown vcodec {self.vcodec!r}: use one of {VIDEO_CODECS}")


@dataclass
class _VideoFile:
    """The file a camera's episodes are being gathered into."""

    chunk: int = 0
    file: int = 0
    parts: list[Path] = field(default_factory=list)
    frames: int = 0
    bytes: int = 0


def export_lerobot(
    bag_root: str | Path,
    out: str | Path,
    topics: TopicConfig,
    config: ExportConfig,
    control_rate_hz: float = 10.0,
    include_failed: bool = False,
    action_source: str = "auto",
    gripper_source: str = "auto",
) -> dict:
    """Write the dataset; return a report (episodes, frames, skipped with reasons, sources)."""
    out = Path(out)
    if (out / fmt.INFO_PATH).exists():
        raise FileExistsError(
            f"{out} already holds a dataset ({fmt.INFO_PATH}): pick another --out"
        )
    prepared, skipped, choice = prepare_episodes(
        bag_root, topics, config.fps, control_rate_hz, include_failed, action_source, gripper_source
    )
    writer = _DatasetWriter(out, topics, config)
    try:
        for p in prepared:
            try:
                writer.add_episode(p)
            except (EpisodeSkip, VideoError) as e:
                log.warning("skipping episode %s: %s", p.name, e)
                skipped.append((p.name, str(e)))
        if not writer.episodes:
            detail = "; ".join(f"{n}: {r}" for n, r in skipped)
            raise ValueError(
                f"no usable episode under {bag_root} ({len(skipped)} skipped: {detail})"
            )
        writer.finish()
    finally:
        writer.cleanup()
    report = {
        "dataset": str(out),
        "episodes": len(writer.episodes),
        "frames": writer.index,
        "fps": config.fps,
        "cameras": topics.cameras,
        "action_source": choice.action,
        "gripper_source": choice.gripper,
        "repeated_frames": writer.repeated,
        "skipped": skipped,
    }
    log.info(
        "wrote %s: %d episodes, %d frames at %d fps",
        out,
        report["episodes"],
        writer.index,
        config.fps,
    )
    return report


class _DatasetWriter:
    def __init__(self, out: Path, topics: TopicConfig, config: ExportConfig) -> None:
        self.out, self.topics, self.cfg = out, topics, config
        self.keys = [fmt.IMAGE_PREFIX + c for c in topics.cameras]
        self.names = [*topics.joint_names, "gripper"]
        self.tmp = out / ".parts"
        self.videos = {k: _VideoFile() for k in self.keys}
        self.sizes: dict[str, tuple[int, int]] = {}
        self.episodes: list[dict] = []
        self.stats: list[dict] = []
        self.tasks: dict[str, int] = {}
        self.index = 0  # frames written over the dataset
        self.repeated: dict[str, int] = {}
        self.data_file = (0, 0)
        self._pq: pq.ParquetWriter | None = None

    # ---------------------------------------------------------------- episodes
    def add_episode(self, p: PreparedEpisode) -> None:
        e = len(self.episodes)
        table = p.table
        length = len(table)
        parts, image_stats = self._encode_videos(p, e)
        task = str(p.source.meta.get("task") or self.cfg.task)
        task_index = self.tasks.setdefault(task, len(self.tasks))
        frame_index = np.arange(length, dtype=np.int64)
        columns = {
            fmt.STATE_KEY: table.states.astype(np.float32),
            fmt.ACTION_KEY: table.actions.astype(np.float32),
            "timestamp": (frame_index / self.cfg.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(length, e, np.int64),
            "index": np.arange(self.index, self.index + length, dtype=np.int64),
            "task_index": np.full(length, task_index, np.int64),
        }
        row = {
            "episode_index": e,
            "tasks": [task],
            "length": length,
            "data/chunk_index": self.data_file[0],
            "data/file_index": self.data_file[1],
            "dataset_from_index": self.index,
            "dataset_to_index": self.index + length,
        }
        self._write_rows(columns)
        for key, part in parts.items():
            video = self.videos[key]
            row[f"videos/{key}/chunk_index"] = video.chunk
            row[f"videos/{key}/file_index"] = video.file
            row[f"videos/{key}/from_timestamp"] = video.frames / self.cfg.fps
            row[f"videos/{key}/to_timestamp"] = (video.frames + length) / self.cfg.fps
            video.parts.append(part)
            video.frames += length
            video.bytes += part.stat().st_size
            if video.bytes >= fmt.VIDEO_FILE_MB * 2**20:
                self._close_video(key)
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
        stats = {k: fmt.feature_stats(v) for k, v in columns.items()}
        stats.update(image_stats)
        for feature, values in stats.items():
            for name, value in values.items():
                row[f"stats/{feature}/{name}"] = np.asarray(value).tolist()
        self.episodes.append(row)
        self.stats.append(stats)
        self.index += length

    def _encode_videos(self, p: PreparedEpisode, e: int) -> tuple[dict[str, Path], dict]:
        """Each camera's frames of the episode -> a video part; and their image statistics."""
        index = p.table.view_index.copy()  # (K, V)
        for v, key in enumerate(self.keys):
            missing = index[:, v] < 0
            if np.any(missing):  # a dropped frame: repeat the camera's nearest one
                index[missing, v] = match_views(
                    p.table.times[missing], p.streams.image_times[v], 2**62
                )
                self.repeated[key] = self.repeated.get(key, 0) + int(missing.sum())
        length = len(index)
        sampled = set(np.linspace(0, length - 1, min(STATS_FRAMES, length)).astype(int).tolist())
        writers = {
            key: VideoWriter(
                self.tmp / key / f"episode_{e:06d}.mp4",
                self.cfg.fps,
                self.cfg.vcodec,
                self.cfg.crf,
                self.cfg.gop,
            )
            for key in self.keys
        }
        done = [0] * len(self.keys)  # frames of each camera encoded
        pending: list[dict[int, np.ndarray]] = [{} for _ in self.keys]
        samples: list[list[np.ndarray]] = [[] for _ in self.keys]
        wanted = [np.unique(index[:, v]) for v in range(len(self.keys))]
        try:
            for v, i, img in iter_frames(p.source, p.streams, wanted):
                key = self.keys[v]
                if key in self.sizes and img.shape[:2] != self.sizes[key]:
                    h, w = self.sizes[key]
                    raise VideoError(
                        f"{p.streams.image_topics[v]}: frames of {img.shape[1]}x{img.shape[0]} "
                        f"in a dataset whose {key} is {w}x{h}"
                    )
                pending[v][i] = img
                while done[v] < length and index[done[v], v] in pending[v]:
                    frame = pending[v][index[done[v], v]]
                    writers[key].add(frame)
                    if done[v] in sampled:
                        samples[v].append(fmt.thin(frame))
                    done[v] += 1
                    if done[v] < length:  # frames no later frame of the grid uses
                        for old in [j for j in pending[v] if j < index[done[v], v]]:
                            del pending[v][old]
        finally:
            for w in writers.values():
                w.close()
        for v, key in enumerate(self.keys):
            if done[v] < length:
                raise EpisodeSkip(f"{p.streams.image_topics[v]}: frames missing from the bag")
            self.sizes.setdefault(key, writers[key].size)
        image_stats = {key: fmt.image_stats(samples[v]) for v, key in enumerate(self.keys)}
        return {key: w.path for key, w in writers.items()}, image_stats

    # ---------------------------------------------------------------- files
    def _write_rows(self, columns: dict[str, np.ndarray]) -> None:
        arrays = {}
        for name, values in columns.items():
            if values.ndim == 2:
                flat = pa.array(values.reshape(-1))
                arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
            else:
                arrays[name] = pa.array(values)
        table = pa.table(arrays)
        path = self.out / fmt.DATA_PATH.format(
            chunk_index=self.data_file[0], file_index=self.data_file[1]
        )
        if self._pq is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._pq = pq.ParquetWriter(path, table.schema, compression="snappy")
        self._pq.write_table(table)
        if path.stat().st_size >= fmt.DATA_FILE_MB * 2**20:
            self._pq.close()
            self._pq = None
            self.data_file = fmt.next_file(*self.data_file)

    def _close_video(self, key: str) -> None:
        video = self.videos[key]
        if video.parts:
            path = self.out / fmt.VIDEO_PATH.format(
                video_key=key, chunk_index=video.chunk, file_index=video.file
            )
            concat_videos(video.parts, path, self.cfg.fps)
            for part in video.parts:
                part.unlink()
        chunk, file = fmt.next_file(video.chunk, video.file)
        self.videos[key] = _VideoFile(chunk, file)

    def finish(self) -> None:
        if self._pq is not None:
            self._pq.close()
            self._pq = None
        first_files = {
            key: self.out / fmt.VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
            for key in self.keys
        }
        for key in self.keys:
            self._close_video(key)
        features = {
            fmt.STATE_KEY: fmt.vector_feature(self.names),
            fmt.ACTION_KEY: fmt.vector_feature(self.names),
        }
        for key in self.keys:
            probe = probe_video(first_files[key])
            features[key] = fmt.video_feature(
                probe["height"], probe["width"], self.cfg.fps, probe["codec"]
            )
        features.update(fmt.DEFAULT_FEATURES)
        episodes = pa.Table.from_pylist(self.episodes)
        path = self.out / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(episodes, path)
        _write_tasks(self.out / fmt.TASKS_PATH, self.tasks)
        stats = {k: fmt.merge_stats([s[k] for s in self.stats]) for k in self.stats[0]}
        (self.out / fmt.STATS_PATH).write_text(json.dumps(fmt.to_json(stats), indent=2))
        info = fmt.info_json(
            self.cfg.fps,
            features,
            len(self.episodes),
            self.index,
            len(self.tasks),
            self.cfg.robot_type,
            has_video=True,
        )
        (self.out / fmt.INFO_PATH).write_text(json.dumps(info, indent=4))

    def cleanup(self) -> None:
        if self._pq is not None:
            self._pq.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _write_tasks(path: Path, tasks: dict[str, int]) -> None:
    """meta/tasks.parquet as pandas writes a DataFrame indexed by the task text (so that
    ``pandas.read_parquet`` gives back the index LeRobot looks tasks up in)."""
    names = sorted(tasks, key=tasks.get)
    table = pa.table(
        {"task_index": pa.array([tasks[n] for n in names], pa.int64()), "task": pa.array(names)}
    )
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
