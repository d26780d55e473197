"""The LeRobotDataset v3.0 layout, as LeRobot's loader reads it (facts from its documentation).

    meta/info.json                       codebase_version "v3.0", fps, features, totals, path templates
    meta/stats.json                      per feature: min, max, mean, std, count, q01 q10 q50 q90 q99
    meta/tasks.parquet                   one row per task: index "task" (the text), task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: episode_index, tasks, length,
                                         data/chunk_index, data/file_index, dataset_from_index,
                                         dataset_to_index, videos/<key>/{chunk_index, file_index,
                                         from_timestamp, to_timestamp}, meta/episodes/..., stats/...
    data/chunk-000/file-000.parquet      one row per frame, many episodes per file
    videos/<key>/chunk-000/file-000.mp4  one video per camera, many episodes per file

A frame's ``timestamp`` is its ``frame_index`` / fps; ``index`` counts frames over the dataset;
an episode's frames in a video file start at ``from_timestamp``. Every frame row carries the
default features ``timestamp`` (float32), ``frame_index``, ``episode_index``, ``index``,
``task_index`` (int64). Camera features are ``observation.images.<camera>`` with dtype ``video``
(or ``image``: PNG bytes in the Parquet rows), shape (height, width, channels).
"""

from __future__ import annotations

import numpy as np

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_FILE_MB = 100  # a data file grows to about this size before the next one starts
VIDEO_FILE_MB = 200
STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def next_file(chunk_index: int, file_index: int) -> tuple[int, int]:
    """The (chunk, file) after this one: a chunk directory holds CHUNKS_SIZE files."""
    file_index += 1
    if file_index == CHUNKS_SIZE:
        return chunk_index + 1, 0
    return chunk_index, file_index


def vector_feature(names: list[str]) -> dict:
    return {"dtype": "float32", "shape": [len(names)], "names": list(names)}


def video_feature(height: int, width: int, fps: int, codec: str) -> dict:
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height,
            "video.width": width,
            "video.codec": codec,
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }


def info_json(
    fps: int,
    features: dict,
    episodes: int,
    frames: int,
    tasks: int,
    robot_type: str | None,
    has_video: bool,
) -> dict:
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": episodes,
        "total_frames": frames,
        "total_tasks": tasks,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_MB,
        "video_files_size_in_mb": VIDEO_FILE_MB,
        "fps": fps,
        "splits": {"train": f"0:{episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if has_video else None,
        "features": features,
    }


def feature_stats(values: np.ndarray, axis: int | tuple[int, ...] = 0) -> dict[str, np.ndarray]:
    """min, max, mean, std, count and quantiles over ``axis`` (vectors (N, D): over frames, (D,);
    scalars (N,): (1,); images (N, 3, H, W) in [0, 1]: over frames and pixels, per channel,
    (3, 1, 1))."""
    v = np.asarray(values, dtype=np.float64)
    image = axis != 0
    keep = image or v.ndim == 1
    out = {
        "min": v.min(axis=axis, keepdims=keep),
        "max": v.max(axis=axis, keepdims=keep),
        "mean": v.mean(axis=axis, keepdims=keep),
        "std": v.std(axis=axis, keepdims=keep),
        "count": np.array([v.shape[0]]),
    }
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.quantile(v, q, axis=axis, keepdims=keep)
    if image:
        out = {
            k: (x[0] if k != "count" else x) for k, x in out.items()
        }  # (1, 3, 1, 1) -> (3, 1, 1)
    return out


def merge_stats(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Episode statistics -> dataset statistics: exact min, max, mean, std (pooled variance) and
    count; quantiles as the count-weighted mean of the episodes' quantiles (an estimate)."""
    w = np.asarray([float(p["count"][0]) for p in parts])
    shape = (-1,) + (1,) * np.asarray(parts[0]["mean"]).ndim
    weights = (w / w.sum()).reshape(shape)
    means = np.stack([p["mean"] for p in parts])
    mean = (weights * means).sum(axis=0)
    var = (weights * (np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)).sum(axis=0)
    out = {
        "min": np.min(np.stack([p["min"] for p in parts]), axis=0),
        "max": np.max(np.stack([p["max"] for p in parts]), axis=0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([int(w.sum())]),
    }
    for key in parts[0]:
        if key.startswith("q"):
            out[key] = (weights * np.stack([p[key] for p in parts])).sum(axis=0)
    return out


def thin(frame: np.ndarray, max_side: int = 150) -> np.ndarray:
    """(H, W, 3) uint8 -> a copy thinned by a stride so its longer side is at most ``max_side``
    (image statistics need the colours, not the detail)."""
    stride = max(1, -(-max(frame.shape[:2]) // max_side))
    return np.ascontiguousarray(frame[::stride, ::stride])


def image_stats(frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel statistics (3, 1, 1) of (thinned) frames (H, W, 3) uint8, scaled to [0, 1]."""
    return feature_stats(np.stack([f.transpose(2, 0, 1) for f in frames]) / 255.0, axis=(0, 2, 3))


def to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
