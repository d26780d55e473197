"""A LeRobotDataset v3.0 directory -> the training samples (``ver-train-router --dataset``).

The same samples as from bags (``ver_core.data.align``): in each episode, the frames at the
control rate (every fps/rate-th frame when that is a whole number, else the frame nearest to
each control step), their ``observation.state`` (S = 8: 7 arm joints + gripper width) and
camera frames resized to the model's input, and action chunks made of the ``action`` of the
next H samples (the last one held past the episode's end). With ``action_source="next-state"``
the action is instead the ``observation.state`` one control period later.

State and action entries are matched to the config's joints by the feature's ``names`` when
they name them (any order); 8 unnamed entries are taken as 7 joints + gripper width, in order.
Cameras: ``observation.images.<camera>`` features (``video`` or ``image``), in the order asked.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image as PILImage

from ver_core.data import lerobot_format as fmt
from ver_core.data.align import chunk_actions, rate_fraction, sample_frames
from ver_core.data.dataset import DemoData, read_cache, write_cache
from ver_core.data.images import resize_rgb
from ver_core.data.video import VideoError, read_video_frames

log = logging.getLogger(__name__)
READ_VERSION = 1  # bump whenever reading changes what is cached


class DatasetFormatError(ValueError):
    """The directory is not a LeRobotDataset v3.0 we can train from; ``str(e)`` says why."""


def dataset_cameras(root: str | Path) -> list[str]:
    """Camera names of a dataset (``observation.images.<camera>`` features), in info.json order."""
    info = _info(Path(root))
    return [k[len(fmt.IMAGE_PREFIX) :] for k, f in info["features"].items() if _is_camera(k, f)]


def load_lerobot(
    root: str | Path,
    chunk_len: int,
    control_rate_hz: float,
    image_size: int = 224,
    cameras: Sequence[str] | None = None,
    joint_names: Sequence[str] = tuple(f"fr3_joint{i}" for i in range(1, 8)),
    action_source: str = "auto",
    cache_dir: str | Path | None = None,
) -> DemoData:
    """Training samples of every episode of a LeRobotDataset v3.0 directory (cached on disk like
    bags). Raises DatasetFormatError naming the file, episode or feature that is wrong."""
    root = Path(root)
    if action_source not in ("auto", "command", "next-state"):
        raise ValueError(
            f"--action-source {action_source!r} for a dataset: use auto, command or next-state"
        )
    info = _info(root)
    fps = info.get("fps")
    if not isinstance(fps, int) or fps < 1:
        raise DatasetFormatError(
            f"{root / fmt.INFO_PATH}: fps must be a positive integer, got {fps!r}"
        )
    all_cams = dataset_cameras(root)
    cameras = list(cameras) if cameras else all_cams
    missing = [c for c in cameras if c not in all_cams]
    if missing:
        raise DatasetFormatError(
            f"{root}: no camera feature {[fmt.IMAGE_PREFIX + c for c in missing]} (cameras: {all_cams})"
        )
    settings = {
        "version": READ_VERSION,
        "chunk_len": chunk_len,
        "rate": control_rate_hz,
        "image_size": image_size,
        "cameras": cameras,
        "joints": list(joint_names),
        "action_source": action_source,
    }
    key = _cache_key(root, settings)
    cache = Path(cache_dir) / f"lerobot_{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        log.info("dataset cache hit: %s", cache)
        return read_cache(cache, key)
    state_order = _vector_order(info, fmt.STATE_KEY, joint_names)
    action_order = _vector_order(info, fmt.ACTION_KEY, joint_names)
    episodes = _episodes(root)
    frames = _frames(root, info)
    by_episode = np.lexsort((frames["frame_index"], frames["episode_index"]))  # rows, sorted
    frames = {k: v[by_episode] for k, v in frames.items()}
    bounds = np.searchsorted(frames["episode_index"], [int(r["episode_index"]) for r in episodes])
    names, parts = [], []
    for row, lo in zip(episodes, bounds, strict=True):
        e, length = int(row["episode_index"]), int(row["length"])
        name = f"{root}/episode_{e:06d}"
        rows = slice(int(lo), int(lo) + length)
        ep = {k: v[rows] for k, v in frames.items()}
        if not (
            np.all(ep["episode_index"] == e)
            and np.array_equal(ep["frame_index"], np.arange(length))
        ):
            raise DatasetFormatError(
                f"{name}: its data rows must have frame_index 0..{length - 1} (the length in "
                "meta/episodes)"
            )
        bad = np.flatnonzero(np.abs(ep["timestamp"] - np.arange(length) / fps) > 1e-3)
        if len(bad):
            raise DatasetFormatError(
                f"{name}: frame {bad[0]} has timestamp {ep['timestamp'][bad[0]]:.4f} s, not "
                f"frame_index / fps = {bad[0] / fps:.4f} s (a {fps} fps dataset must hold {fps} fps)"
            )
        states = ep[fmt.STATE_KEY][:, state_order]  # (K, 8)
        if action_source == "next-state":  # the state one control period later, held at the end
            lead = min(int(round(fps / control_rate_hz)), length)
            actions = np.concatenate([states[lead:], np.repeat(states[-1:], lead, axis=0)])
        else:
            actions = ep[fmt.ACTION_KEY][:, action_order]
        samples = sample_frames(length, Fraction(fps), rate_fraction(control_rate_hz))
        images = _images(root, info, row, ep, samples, cameras, fps, image_size, name)
        names.append(name)
        parts.append(
            (
                images,
                states[samples].astype(np.float32),
                chunk_actions(actions.astype(np.float32), samples, chunk_len),
                np.full(len(samples), len(names) - 1, np.int32),
            )
        )
    if not parts:
        raise DatasetFormatError(f"{root}: the dataset has no episodes")
    data = DemoData(
        *(np.concatenate([p[i] for p in parts]) for i in range(4)),
        episode_names=names,
        skipped=[],
        key=key,
        cameras=list(cameras),
        action_source="next-state" if action_source == "next-state" else "command",
        gripper_source="finger-width" if action_source == "next-state" else "command",
    )
    if cache is not None:
        write_cache(cache, data)
    return data


def _info(root: Path) -> dict:
    path = root / fmt.INFO_PATH
    if not path.is_file():
        raise DatasetFormatError(f"{root} is not a LeRobot dataset: no {fmt.INFO_PATH}")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path} is not valid JSON ({e})") from e
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise DatasetFormatError(
            f"{path}: codebase_version {version!r}; this reads LeRobotDataset v3.0 (convert older "
            "datasets with LeRobot's convert_dataset_v21_to_v30)"
        )
    if not isinstance(info.get("features"), dict):
        raise DatasetFormatError(f"{path} has no features")
    return info


def _is_camera(key: str, feature: dict) -> bool:
    return key.startswith(fmt.IMAGE_PREFIX) and feature.get("dtype") in ("video", "image")


def _vector_order(info: dict, key: str, joint_names: Sequence[str]) -> np.ndarray:
    """Column of each of the 7 joints + the gripper in the feature ``key``."""
    feature = info["features"].get(key)
    if feature is None:
        raise DatasetFormatError(
            f"the dataset has no {key!r} feature (features: {sorted(info['features'])})"
        )
    shape = list(feature.get("shape", []))
    names = feature.get("names")
    if isinstance(names, dict):  # older datasets: {"motors": [...]}
        names = next(iter(names.values()), None)
    if names and len(names) == shape[0] and all(j in names for j in joint_names):
        rest = [i for i, n in enumerate(names) if n not in joint_names]
        if len(rest) != 1:
            raise DatasetFormatError(
                f"{key} names {names}: expected the 7 arm joints {list(joint_names)} and one "
                "gripper entry"
            )
        return np.asarray([names.index(j) for j in joint_names] + rest)
    if shape != [len(joint_names) + 1]:
        raise DatasetFormatError(
            f"{key} has shape {shape} (names {names}): VER's policy needs 7 arm joint positions "
            f"+ the gripper width (8 values; names naming {list(joint_names)} are matched in any order)"
        )
    if names:
        log.warning(
            "%s names %s do not name the joints %s: taking the 8 values in order",
            key,
            names,
            list(joint_names),
        )
    return np.arange(shape[0])


def _episodes(root: Path) -> list[dict]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetFormatError(f"{root}: no meta/episodes/chunk-*/file-*.parquet")
    rows = []
    for f in files:
        table = pq.read_table(f)
        cols = [c for c in table.column_names if not c.startswith("stats/")]
        rows += table.select(cols).to_pylist()
    rows.sort(key=lambda r: r["episode_index"])
    for need in ("episode_index", "length"):
        if any(need not in r for r in rows):
            raise DatasetFormatError(f"{root}: meta/episodes rows lack {need!r}")
    return rows


def _frames(root: Path, info: dict) -> dict[str, np.ndarray]:
    files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetFormatError(f"{root}: no data/chunk-*/file-*.parquet")
    want = [fmt.STATE_KEY, fmt.ACTION_KEY, "timestamp", "frame_index", "episode_index"]
    image_cols = [
        k for k, f in info["features"].items() if _is_camera(k, f) and f["dtype"] == "image"
    ]
    cols: dict[str, list] = {k: [] for k in want + image_cols}
    for f in files:
        table = pq.read_table(f)
        for k in cols:
            if k not in table.column_names:
                raise DatasetFormatError(f"{f} has no column {k!r}")
            column = table.column(k)
            if k in (fmt.STATE_KEY, fmt.ACTION_KEY):
                cols[k].append(_vectors(column, f, k))
            elif k in image_cols:
                cols[k] += column.to_pylist()
            else:
                cols[k].append(column.to_numpy())
    out = {
        k: (np.concatenate(v) if k not in image_cols else np.asarray(v, dtype=object))
        for k, v in cols.items()
    }
    return out


def _vectors(column: pa.ChunkedArray, path: Path, key: str) -> np.ndarray:
    """A column of equal-length lists of numbers -> (rows, width) float64."""
    arr = column.combine_chunks()
    if not (
        pa.types.is_list(arr.type)
        or pa.types.is_fixed_size_list(arr.type)
        or pa.types.is_large_list(arr.type)
    ):
        raise DatasetFormatError(f"{path}: column {key!r} is {arr.type}, not a list of numbers")
    if not pa.types.is_fixed_size_list(arr.type) and len(set(np.diff(arr.offsets).tolist())) > 1:
        raise DatasetFormatError(f"{path}: the rows of column {key!r} differ in length")
    flat = np.asarray(arr.flatten(), dtype=np.float64)
    return flat.reshape(len(arr), -1) if len(arr) else flat.reshape(0, 0)


def _images(root, info, row, ep, samples, cameras, fps, size, name) -> np.ndarray:
    """(M, V, size, size, 3) frames of the episode's samples."""
    out = np.zeros((len(samples), len(cameras), size, size, 3), np.uint8)
    for v, cam in enumerate(cameras):
        key = fmt.IMAGE_PREFIX + cam
        if info["features"][key]["dtype"] == "image":
            cells = ep[key][samples]
            for m, cell in enumerate(cells):
                data = cell.get("bytes") if isinstance(cell, dict) else None
                if not data:
                    raise DatasetFormatError(
                        f"{name}: {key} frame {samples[m]} has no embedded image bytes"
                    )
                with PILImage.open(io.BytesIO(data)) as img:
                    out[m, v] = resize_rgb(np.asarray(img.convert("RGB")), size)
            continue
        try:
            chunk, file = (
                int(row[f"videos/{key}/chunk_index"]),
                int(row[f"videos/{key}/file_index"]),
            )
            start = float(row[f"videos/{key}/from_timestamp"])
        except (KeyError, TypeError) as e:
            raise DatasetFormatError(f"{name}: meta/episodes lacks videos/{key}/... ({e})") from e
        path = root / info.get("video_path", fmt.VIDEO_PATH).format(
            video_key=key, chunk_index=chunk, file_index=file
        )
        if not path.is_file():
            raise DatasetFormatError(f"{name}: video file {path} is missing")
        times = start + np.asarray(samples) / fps
        try:
            for m, img in read_video_frames(path, times):
                out[m, v] = resize_rgb(img, size)
        except VideoError as e:
            raise DatasetFormatError(f"{name}, {key}: {e}") from e
    return out


def _cache_key(root: Path, settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for f in sorted(p for p in root.rglob("*") if p.is_file() and ".parts" not in p.parts):
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]
