"""Demo dataset: every usable episode under a directory -> aligned samples, cached on disk.

The cache (``demos_<key>.npz``) is keyed by a hash of every bag file's path, size and mtime plus
the topics and alignment settings, so a second run with the same bags does not decode them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ver_core.data.align import chunk_actions, latest_at_or_before
from ver_core.data.bag_reader import (
    EpisodeSkip,
    EpisodeSource,
    TopicConfig,
    find_episodes,
    iter_frames,
)
from ver_core.data.episodes import VIEW_TOLERANCE_S, PreparedEpisode, prepare_episodes

log = logging.getLogger(__name__)
CACHE_VERSION = 4  # bump whenever reading or alignment changes what is cached


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
    action_source: str = "command"  # where the arm targets came from (ver_core.data.streams)
    gripper_source: str = "command"  # where the gripper targets came from
    # (N,) bool: frames whose arm motion was for the cameras only (topics.perception_only): the
    # trainer leaves them out of the action losses; None: no such frames
    perception_only: np.ndarray | None = None

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
            self.action_source,
            self.gripper_source,
            None if self.perception_only is None else self.perception_only[mask],
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
    action_source: str = "auto",
    gripper_source: str = "auto",
) -> DemoData:
    """Read, align and cache every episode. Unusable episodes are skipped with a logged reason
    naming the episode and the problem (a camera topic it lacks, say).

    Samples are the episode's frames on the grid at the control rate (``ver_core.data.align``):
    the primary camera's (``topics.images[0]``) frame nearest to each grid time and, for every
    other camera, its frame nearest to it within ``VIEW_TOLERANCE_S`` (samples without are
    dropped). ``action_source`` / ``gripper_source``: see ``ver_core.data.streams``.
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
        "action_source": action_source,
        "gripper_source": gripper_source,
    }
    key = cache_key(sources, settings)
    cache = Path(cache_dir) / f"demos_{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        log.info("demo cache hit: %s", cache)
        return read_cache(cache, key)
    prepared, skipped, choice = prepare_episodes(
        root,
        topics,
        control_rate_hz,
        control_rate_hz,
        include_failed,
        action_source,
        gripper_source,
        sources,
    )
    parts, names, objects, flags = [], [], [], []
    for p in prepared:
        samples = np.arange(len(p.table))
        actions = chunk_actions(p.table.actions, samples, chunk_len)  # (K, H, 8)
        keep = np.all(p.table.view_index >= 0, axis=1)  # every camera has a frame
        if not np.any(keep):
            reason = (
                f"no frame of {p.streams.image_topics[0]} has frames of every other camera "
                f"within {VIEW_TOLERANCE_S * 1e3:.0f} ms"
            )
            log.warning("skipping episode %s: %s", p.name, reason)
            skipped.append((p.name, reason))
            continue
        index = p.table.view_index[keep]  # (M, V)
        try:
            frames = _decode(p, index, image_size)
        except EpisodeSkip as e:
            log.warning("skipping episode %s: %s", p.name, e)
            skipped.append((p.name, str(e)))
            continue
        ep = len(names)
        names.append(p.name)
        imgs = np.stack(
            [np.stack([frames[v][i] for v, i in enumerate(row)]) for row in index]
        )  # (M, V, s, s, 3)
        parts.append((imgs, p.table.states[keep], actions[keep], np.full(len(index), ep, np.int32)))
        if topics.object_pose:
            k = np.maximum(latest_at_or_before(p.streams.object_times, p.table.times[keep]), 0)
            objects.append(p.streams.object_poses[k].astype(np.float32))
        flags.append(_perception_only(p.streams, p.table.times[keep]))
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
        action_source=choice.action,
        gripper_source=choice.gripper,
        perception_only=np.concatenate(flags) if any(f.any() for f in flags) else None,
    )
    if cache is not None:
        write_cache(cache, data)
        _alias(cache, sources, settings, data)
    return data


def _perception_only(streams, times: np.ndarray) -> np.ndarray:
    """Per frame time: the episode's last perception-only flag at or before it (False before
    the first one, and in an episode that has none)."""
    if streams.flag_times is None:
        return np.zeros(len(times), bool)
    k = latest_at_or_before(streams.flag_times, times)
    return np.where(k >= 0, streams.flags[np.maximum(k, 0)], False)


def _decode(p: PreparedEpisode, index: np.ndarray, image_size: int) -> list[dict]:
    """The frames of each camera that ``index`` (M, V) uses: [{frame index: image}] per view."""
    wanted = [np.unique(index[:, v]) for v in range(index.shape[1])]
    frames: list[dict] = [{} for _ in wanted]
    for v, i, img in iter_frames(p.source, p.streams, wanted, image_size):
        frames[v][i] = img
    return frames


def write_cache(path: Path, data: DemoData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        images=data.images,
        states=data.states,
        actions=data.actions,
        episode=data.episode,
        **({} if data.object_pose is None else {"object_pose": data.object_pose}),
        **({} if data.perception_only is None else {"perception_only": data.perception_only}),
        meta=np.array(
            json.dumps(
                {
                    "names": data.episode_names,
                    "skipped": data.skipped,
                    "cameras": data.cameras,
                    "action_source": data.action_source,
                    "gripper_source": data.gripper_source,
                    "key": data.key,
                }
            )
        ),
    )
    tmp.replace(path)
    log.info("wrote demo cache %s", path)


def _alias(cache: Path, sources: list[EpisodeSource], settings: dict, data: DemoData) -> None:
    """Also file the cache under the resolved sources (``auto`` -> what it chose): loading with
    them explicitly, as a resumed run does from its checkpoint, gives the same samples."""
    resolved = {
        **settings,
        "action_source": data.action_source,
        "gripper_source": data.gripper_source,
    }
    other = cache.with_name(f"demos_{cache_key(sources, resolved)}.npz")
    if other != cache and not other.exists():
        try:
            os.link(cache, other)
        except OSError:
            shutil.copyfile(cache, other)


def read_cache(path: Path, key: str) -> DemoData:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return DemoData(
            z["images"],
            z["states"],
            z["actions"],
            z["episode"],
            meta["names"],
            [tuple(s) for s in meta["skipped"]],
            meta.get("key", key),  # the key it was made under (a resolved-sources alias: the same)
            meta.get("cameras"),
            z["object_pose"] if "object_pose" in z.files else None,
            meta.get("action_source", "command"),
            meta.get("gripper_source", "command"),
            z["perception_only"] if "perception_only" in z.files else None,
        )
