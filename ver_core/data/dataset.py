"""Demo dataset: every usable episode under a directory -> aligned arrays, cached on disk.

The cache (``demos_<key>.npz``) is keyed by a hash of every bag file's path, size and mtime plus
the topics and alignment settings, so a second run with the same bags does not decode them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ver_core.data.align import (
    AlignedSamples,
    align_episode,
    latest_at_or_before,
    match_views,
)
from ver_core.data.bag_reader import (
    EpisodeSkip,
    EpisodeSource,
    TopicConfig,
    find_episodes,
    read_episode,
)

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # bump whenever reading or alignment changes what is cached
VIEW_TOLERANCE_S = 0.05  # views whose frames lie further apart do not form a sample


@dataclass
class DemoData:
    """images (N, V, s, s, 3) uint8, one view per camera (order of ``cameras``); states (N, 8);
    actions (N, H, 8); episode (N,) index into names."""

    images: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    episode: np.ndarray
    episode_names: list[str]
    skipped: list[tuple[str, str]]  # (episode, reason)
    key: str = ""  # cache key of the bags + settings this came from
    cameras: list[str] | None = None  # camera names of the views (None: one unnamed view)
    object_pose: np.ndarray | None = None  # (N, 7) sim-only object pose (topics.object_pose)

    def __post_init__(self) -> None:
        if self.images.ndim != 5:
            raise ValueError(f"DemoData.images must be (N, V, s, s, 3), got {self.images.shape}")
        if self.cameras is not None and len(self.cameras) != self.images.shape[1]:
            raise ValueError(f"{len(self.cameras)} camera names for {self.images.shape[1]} views")

    @property
    def num_views(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.states)

    def subset(self, episodes: list[int]) -> DemoData:
        mask = np.isin(self.episode, episodes)
        return DemoData(
            self.images[mask],
            self.states[mask],
            self.actions[mask],
            self.episode[mask],
            self.episode_names,
            self.skipped,
            f"{self.key}-{hashlib.sha256(str(episodes).encode()).hexdigest()[:8]}",
            self.cameras,
            None if self.object_pose is None else self.object_pose[mask],
        )


def _bag_files(source: EpisodeSource) -> list[Path]:
    if source.path.is_file():
        return [source.path]
    return sorted(p for p in source.path.iterdir() if p.is_file())


def cache_key(sources: list[EpisodeSource], settings: dict) -> str:
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True).encode())
    for src in sources:
        for f in _bag_files(src):
            st = f.stat()
            h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def load_demos(
    root: str | Path,
    topics: TopicConfig,
    chunk_len: int,
    control_rate_hz: float,
    image_size: int = 224,
    include_failed: bool = False,
    cache_dir: str | Path | None = None,
) -> DemoData:
    """Read, align and cache every episode. Unusable episodes are skipped with a logged reason
    naming the episode and the problem (a camera topic it lacks, say).

    Each sample is a frame of the primary camera (``topics.images[0]``) with, for every other
    camera, its frame nearest in time (within ``VIEW_TOLERANCE_S``; samples without are dropped).
    Raises FileNotFoundError when there are no episodes, ValueError when none is usable.
    """
    sources = find_episodes(root)
    settings = {
        "topics": asdict(topics),
        "chunk_len": chunk_len,
        "rate": control_rate_hz,
        "image_size": image_size,
        "include_failed": include_failed,
        "view_tolerance_s": VIEW_TOLERANCE_S,
    }
    key = cache_key(sources, settings)
    cache = Path(cache_dir) / f"demos_{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        log.info("demo cache hit: %s", cache)
        return _read_cache(cache, key)
    min_interval = int(0.9e9 / control_rate_hz)  # one frame per control step (camera jitter slack)
    parts, names, skipped, objects = [], [], [], []
    for src in sources:
        reason = None
        if src.meta.get("_meta_error"):
            reason = src.meta["_meta_error"]
        elif src.meta.get("success") is False and not include_failed:
            reason = "episode.json says success: false (pass --include-failed to use it)"
        if reason is None:
            try:
                s = read_episode(src, topics, min_interval_ns=min_interval, image_size=image_size)
                aligned = align_episode(
                    s.image_times[0],
                    s.state_times,
                    s.states,
                    s.arm_times,
                    s.arm_targets,
                    s.gripper_times,
                    s.gripper_targets,
                    chunk_len,
                    control_rate_hz,
                )
                if len(aligned) == 0:
                    reason = "no image frame has both a joint state and an arm command before it"
                else:
                    views, aligned = _match_other_views(s, aligned, topics)
                    if len(aligned) == 0:
                        reason = (
                            f"no frame of {topics.images[0]} has frames of every other camera "
                            f"within {VIEW_TOLERANCE_S * 1e3:.0f} ms"
                        )
            except EpisodeSkip as e:
                reason = str(e)
        if reason is not None:
            log.warning("skipping episode %s: %s", src.path, reason)
            skipped.append((str(src.path), reason))
            continue
        ep = len(names)
        names.append(str(src.path))
        imgs = np.stack(
            [np.stack([s.images[v][i] for v, i in enumerate(row)]) for row in views]
        )  # (M, V, s, s, 3)
        parts.append((imgs, aligned.states, aligned.actions, np.full(len(aligned), ep, np.int32)))
        if topics.object_pose:
            t = s.image_times[0][aligned.image_index]
            k = np.maximum(latest_at_or_before(s.object_times, t), 0)
            objects.append(s.object_poses[k].astype(np.float32))
    if not parts:
        detail = "; ".join(f"{n}: {r}" for n, r in skipped)
        raise ValueError(f"no usable episode under {root} ({len(skipped)} skipped: {detail})")
    data = DemoData(
        *(np.concatenate([p[i] for p in parts]) for i in range(4)),
        episode_names=names,
        skipped=skipped,
        key=key,
        cameras=topics.cameras,
        object_pose=np.concatenate(objects) if objects else None,
    )
    if cache is not None:
        _write_cache(cache, data)
    return data


def _match_other_views(s, aligned, topics: TopicConfig):
    """Per sample, the frame index of every camera (M, V), and the samples that have them all."""
    primary_t = s.image_times[0][aligned.image_index]  # (M,)
    cols = [aligned.image_index]
    for v in range(1, len(topics.images)):
        cols.append(match_views(primary_t, s.image_times[v], int(VIEW_TOLERANCE_S * 1e9)))
    index = np.stack(cols, axis=1)  # (M, V)
    keep = np.all(index >= 0, axis=1)
    kept = AlignedSamples(aligned.image_index[keep], aligned.states[keep], aligned.actions[keep])
    return index[keep], kept


def _write_cache(path: Path, data: DemoData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        images=data.images,
        states=data.states,
        actions=data.actions,
        episode=data.episode,
        **({} if data.object_pose is None else {"object_pose": data.object_pose}),
        meta=np.array(
            json.dumps(
                {"names": data.episode_names, "skipped": data.skipped, "cameras": data.cameras}
            )
        ),
    )
    tmp.replace(path)
    log.info("wrote demo cache %s", path)


def _read_cache(path: Path, key: str) -> DemoData:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return DemoData(
            z["images"],
            z["states"],
            z["actions"],
            z["episode"],
            meta["names"],
            [tuple(s) for s in meta["skipped"]],
            key,
            meta.get("cameras"),
            z["object_pose"] if "object_pose" in z.files else None,
        )
