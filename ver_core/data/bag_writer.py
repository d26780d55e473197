"""Crash-safe rosbag2 episode writer on top of ``rosbags`` (MCAP by default, sqlite3 optional).

No rclpy here: the caller hands in already-serialized CDR bytes (from
``rclpy.serialization.serialize_message`` or a ``raw=True`` subscription) and they are stored as is.

Crash safety by segments. An episode directory is a *split* rosbag2 bag: messages go to a
segment written by a ``rosbags`` Writer in ``<episode>/.partial/``; every ``segment_seconds``
(wall clock) the segment is closed (complete MCAP with summary, or a committed sqlite3 file), moved
into the episode directory as ``<episode>_<i>.mcap``, and the episode's ``metadata.yaml`` is
rewritten atomically (write tmp + rename) to list every completed segment. So at any instant
the directory is a readable bag (``rosbags`` Reader, ``ros2 bag``, any MCAP reader per file)
holding everything up to the last closed segment; a SIGKILL loses at most the open segment.
``close()`` (also called on SIGINT by the recorder) closes the open segment too: nothing lost.

``episode.json`` beside the bag files (docs/INTERFACES.md) is written on open (with
``"stop_time_ns": null``) and rewritten on close.

Storage failure (disk full, EFBIG): the open segment is given up, the closed ones stay readable,
``error`` / ``episode.json["write_error"]`` say why. ``BackgroundBagWriter``
(``ver_core.data.background_writer``) runs an episode in a writer thread behind a bounded queue,
so a ROS callback only enqueues (see recorder_node).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

__all__ = [
    "BagWriteError",
    "EpisodeBagWriter",
    "check_writable",
    "trim_cdr",
]

_STORAGE = {"mcap": (StoragePlugin.MCAP, ".mcap"), "sqlite3": (StoragePlugin.SQLITE3, ".db3")}
_TYPESTORE = get_typestore(Stores.ROS2_KILTED)
PARTIAL_DIR = ".partial"


class BagWriteError(RuntimeError):
    """The episode cannot be written (unwritable directory, disk full, bad topic...)."""


def trim_cdr(data: bytes, msgtype: str) -> bytes:
    """Cut buffer padding after the end of a CDR message.

    rclpy's (Fast CDR) serializer may hand back up to 8 bytes past the message end; ``rosbags``
    refuses more than 3 trailing bytes. The message bytes themselves are kept unchanged.
    Raises BagWriteError when the bytes do not decode as ``msgtype``.
    """
    if len(data) < 4 or bytes(data[:2]) not in (b"\x00\x00", b"\x00\x01"):
        raise BagWriteError(f"not a CDR-encapsulated {msgtype} message")
    msgdef = _TYPESTORE.get_msgdef(msgtype)
    func = msgdef.deserialize_cdr_le if data[1] else msgdef.deserialize_cdr_be
    try:
        _, pos = func(memoryview(data)[4:], 0, msgdef.cls, _TYPESTORE)
    except Exception as e:  # noqa: BLE001 - any decode failure means corrupt input
        raise BagWriteError(f"bytes do not decode as {msgtype}: {e}") from e
    end = 4 + pos
    return data if end >= len(data) else data[:end]


def check_writable(directory: Path, min_free_mb: float) -> None:
    """Raise BagWriteError unless ``directory`` can be created, written and has free space."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_probe_{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as e:
        raise BagWriteError(f"output directory {directory} is not writable: {e}") from e
    free_mb = shutil.disk_usage(directory).free / 1e6
    if free_mb < min_free_mb:
        raise BagWriteError(
            f"only {free_mb:.0f} MB free under {directory}, need at least {min_free_mb:.0f} MB"
        )


def _abort(writer: Writer | None) -> None:
    """Close a rosbags writer without finishing its file (after a failure; frees the disk space
    of an unlinked file)."""
    if writer is None:
        return
    try:
        writer.abort()
    except Exception:  # noqa: BLE001 - the file is being given up; a failed flush changes nothing
        pass


class EpisodeBagWriter:
    """One episode = one rosbag2 directory. ``add_topic`` then ``write`` then ``close``.

    path: the episode directory (must not exist yet). storage: ``mcap`` or ``sqlite3``.
    segment_seconds: wall-clock length of a crash-safe segment. metadata: episode.json content.
    """

    def __init__(
        self,
        path: Path,
        storage: str = "mcap",
        segment_seconds: float = 1.0,
        metadata: dict | None = None,
    ) -> None:
        if storage not in _STORAGE:
            raise ValueError(f"storage must be one of {sorted(_STORAGE)}, got {storage!r}")
        if segment_seconds <= 0:
            raise ValueError(f"segment_seconds must be > 0, got {segment_seconds}")
        self.path = Path(path)
        if self.path.exists():
            raise BagWriteError(f"episode directory {self.path} exists already; not overwriting")
        self.storage = storage
        self.segment_seconds = float(segment_seconds)
        self.metadata = dict(metadata or {})
        self._topics: dict[str, str] = {}  # topic -> msgtype
        self._writer: Writer | None = None
        self._conns: dict = {}
        self._seg_index = 0
        self._seg_started = 0.0
        self._seg_count = 0
        self._files: list[dict] = []  # completed segments, rosbag2 "files" entries
        self._topic_meta: dict[str, dict] = {}
        self._topic_counts: dict[str, int] = {}
        self.message_count = 0
        self.bytes_written = 0
        self.closed = False
        self.error: str | None = None  # first storage failure; writing stopped there
        try:
            (self.path / PARTIAL_DIR).mkdir(parents=True)
        except OSError as e:
            raise BagWriteError(f"cannot create episode directory {self.path}: {e}") from e
        self._write_episode_json()

    # ------------------------------------------------------------------ public API
    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register a topic with its ROS type name, e.g. ``sensor_msgs/msg/Image``."""
        if msgtype not in _TYPESTORE.fielddefs:
            raise BagWriteError(f"unknown message type {msgtype!r} for topic {topic}")
        if self._topics.get(topic, msgtype) != msgtype:
            raise BagWriteError(f"topic {topic} registered as {self._topics[topic]}, not {msgtype}")
        self._topics[topic] = msgtype
        if self._writer is not None and topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=_TYPESTORE)

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        """Append one serialized (CDR) message received at ``timestamp_ns``.

        A storage failure (disk full, EFBIG...) abandons the open segment (its file may end in a
        torn record) and marks the episode failed: later writes raise, ``close()`` keeps the
        segments committed before the failure. Bytes that do not decode raise without failing it.
        """
        if self.closed:
            raise BagWriteError(f"episode {self.path.name} is closed")
        if self.error is not None:
            raise BagWriteError(f"episode {self.path.name} stopped after: {self.error}")
        if topic not in self._topics:
            raise BagWriteError(f"topic {topic} was not registered with add_topic")
        data = trim_cdr(bytes(data), self._topics[topic])
        try:
            if (
                self._writer is not None
                and time.monotonic() - self._seg_started >= self.segment_seconds
            ):
                self._finish_segment()
            if self._writer is None:
                self._open_segment()
            try:
                self._writer.write(self._conns[topic], int(timestamp_ns), data)
            except (OSError, WriterError) as e:
                raise BagWriteError(f"writing {topic} to {self.path}: {e}") from e
        except BagWriteError as e:
            self.error = str(e)
            _abort(self._writer)  # abandon the open segment, release its file
            self._writer = None
            shutil.rmtree(self.path / PARTIAL_DIR, ignore_errors=True)  # give its space back
            raise
        self._seg_count += 1
        self.message_count += 1
        self.bytes_written += len(data)

    def close(self, **metadata_updates) -> Path:
        """Close the open segment, finalize metadata.yaml and episode.json. Idempotent."""
        if self.closed:
            return self.path
        self.metadata.update(metadata_updates)
        if self.error is not None:
            self.metadata["write_error"] = self.error
        error: BagWriteError | None = None
        try:
            if self._writer is not None or not self._files:
                if self._writer is None:
                    self._open_segment()  # an empty episode is still a valid, readable bag
                self._finish_segment()
        except BagWriteError as e:  # e.g. disk full: the committed segments stay readable
            error, self._writer = e, None
            self.metadata["write_error"] = self.error = self.error or str(e)
        shutil.rmtree(self.path / PARTIAL_DIR, ignore_errors=True)  # frees space first
        self.closed = True
        self._write_episode_json()
        if error is not None:
            raise error
        return self.path

    def discard(self) -> None:
        """Drop the episode directory entirely."""
        _abort(self._writer)
        self._writer = None
        self.closed = True
        shutil.rmtree(self.path, ignore_errors=True)

    # ------------------------------------------------------------------ segments
    def _seg_name(self) -> str:
        return f"{self.path.name}_{self._seg_index}"

    def _open_segment(self) -> None:
        plugin, _ = _STORAGE[self.storage]
        seg_dir = self.path / PARTIAL_DIR / self._seg_name()
        try:
            writer = Writer(seg_dir, version=9, storage_plugin=plugin)
            writer.open()
        except Exception as e:
            raise BagWriteError(f"cannot open bag segment {seg_dir}: {e}") from e
        self._writer = writer
        self._conns = {
            t: writer.add_connection(t, mt, typestore=_TYPESTORE) for t, mt in self._topics.items()
        }
        self._seg_started = time.monotonic()
        self._seg_count = 0

    def _finish_segment(self) -> None:
        """Close the open segment, move its file into the bag and commit metadata.yaml."""
        writer, self._writer = self._writer, None
        seg_dir = self.path / PARTIAL_DIR / self._seg_name()
        try:
            writer.set_custom_data("episode", json.dumps(self.metadata, default=str))
            writer.close()
            seg_meta = yaml.safe_load((seg_dir / "metadata.yaml").read_text())[
                "rosbag2_bagfile_information"
            ]
            src = seg_dir / seg_meta["relative_file_paths"][0]
            dst = self.path / src.name
            os.replace(src, dst)
        except (OSError, WriterError) as e:
            _abort(writer)
            raise BagWriteError(f"closing bag segment {seg_dir}: {e}") from e
        shutil.rmtree(seg_dir, ignore_errors=True)
        self._seg_index += 1
        self._files.extend(seg_meta["files"])
        for entry in seg_meta["topics_with_message_count"]:
            name = entry["topic_metadata"]["name"]
            self._topic_meta.setdefault(name, entry["topic_metadata"])
            self._topic_counts[name] = self._topic_counts.get(name, 0) + entry["message_count"]
        self._commit_metadata(seg_meta)

    def _commit_metadata(self, template: dict) -> None:
        files = [f for f in self._files if f["message_count"] > 0] or self._files[:1]
        starts = [f["starting_time"]["nanoseconds_since_epoch"] for f in files]
        ends = [s + f["duration"]["nanoseconds"] for s, f in zip(starts, files, strict=True)]
        info = dict(template)
        info.update(
            relative_file_paths=[f["path"] for f in self._files],
            files=self._files,
            message_count=sum(self._topic_counts.values()),
            starting_time={"nanoseconds_since_epoch": min(starts)},
            duration={"nanoseconds": max(ends) - min(starts)},
            topics_with_message_count=[
                {"topic_metadata": self._topic_meta[t], "message_count": c}
                for t, c in self._topic_counts.items()
            ],
            custom_data={"episode": json.dumps(self.metadata, default=str)},
        )
        text = yaml.safe_dump(
            {"rosbag2_bagfile_information": info}, default_flow_style=False, sort_keys=False
        )
        tmp = self.path / "metadata.yaml.tmp"
        try:
            tmp.write_text(text)
            os.replace(tmp, self.path / "metadata.yaml")
        except OSError as e:  # the previous metadata.yaml (older segments) stays valid
            raise BagWriteError(f"writing {self.path / 'metadata.yaml'}: {e}") from e

    def _write_episode_json(self) -> None:
        meta = {"stop_time_ns": None, **self.metadata}
        tmp = self.path / "episode.json.tmp"
        try:
            tmp.write_text(json.dumps(meta, indent=2, default=str))
            os.replace(tmp, self.path / "episode.json")
        except OSError as e:
            raise BagWriteError(f"writing {self.path / 'episode.json'}: {e}") from e
