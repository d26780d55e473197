"""The recorder's writer thread: an ``EpisodeBagWriter`` fed through a bounded queue.

A ROS subscription callback only enqueues; the thread does the transforms (JPEG re-encoding),
disk writes and segment rotation, and counts what it could not write (docs/SIM.md).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from ver_core.data.bag_writer import BagWriteError, EpisodeBagWriter

__all__ = ["BackgroundBagWriter"]

_STOP = object()


class BackgroundBagWriter:
    """An ``EpisodeBagWriter`` fed from a thread, so a subscription callback only enqueues.

    ``submit`` never blocks and never raises: it returns False when the bounded queue is full
    (counted in ``dropped``) or writing has stopped after a storage failure. ``transform``, given
    per message, runs in the writer thread (e.g. JPEG re-encoding) and maps bytes to bytes; a
    ValueError / BagWriteError from it or from undecodable bytes skips that one message
    (``skipped``, ``last_skip``). The first storage failure (disk full...) stops the episode:
    ``error`` holds it, ``on_error`` is called once from the writer thread, the segments
    committed before stay readable, and ``close`` reports it.
    """

    def __init__(
        self,
        writer: EpisodeBagWriter,
        max_queue: int = 256,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.writer = writer
        self.on_error = on_error
        self._queue: queue.Queue = queue.Queue(max_queue)
        self.received: dict[str, int] = {}  # topic -> messages handed to submit
        self.written: dict[str, int] = {}
        self.dropped = 0  # queue full or after a failure: never written
        self.skipped = 0  # bad message / failed transform
        self.last_skip = ""
        self.max_backlog = 0
        self._final_error: BagWriteError | None = None
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.writer.path

    @property
    def error(self) -> str | None:
        return self.writer.error

    def submit(
        self,
        topic: str,
        timestamp_ns: int,
        data: bytes,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> bool:
        self.received[topic] = self.received.get(topic, 0) + 1
        if self.writer.error is None:
            try:
                self._queue.put_nowait((topic, timestamp_ns, data, transform))
                self.max_backlog = max(self.max_backlog, self._queue.qsize())
                return True
            except queue.Full:
                pass
        self.dropped += 1
        return False

    def _run(self) -> None:
        # The episode is only touched from this thread (sqlite3 connections are per thread).
        while (item := self._queue.get())[0] is not _STOP:
            topic, stamp, data, transform = item
            if self.writer.error is not None:
                self.dropped += 1
                continue
            try:
                self.writer.write(topic, stamp, transform(data) if transform else data)
                self.written[topic] = self.written.get(topic, 0) + 1
            except (BagWriteError, ValueError) as e:
                if self.writer.error is None:  # a bad message, not a storage failure
                    self.skipped += 1
                    self.last_skip = f"{topic}: {e}"
                    continue
                self.dropped += 1
                if self.on_error is not None:
                    self.on_error(self.writer.error)
        _, action, kwargs = item
        try:
            action(**kwargs)
        except BagWriteError as e:
            self._final_error = e

    def stats(self) -> dict:
        """JSON-able counters: received/written per topic, dropped, skipped, error."""
        return {
            "path": str(self.writer.path),
            "received": dict(self.received),
            "written": dict(self.written),
            "dropped": self.dropped,
            "skipped": self.skipped,
            "max_backlog": self.max_backlog,
            "error": self.writer.error,
        }

    def _finish(self, action: Callable, **kwargs) -> None:
        """Run ``action`` in the writer thread after everything queued; wait for it."""
        if not self._thread.is_alive():
            raise BagWriteError(f"episode {self.writer.path.name} was closed already")
        self._queue.put((_STOP, action, kwargs))  # blocks only while the queue is full
        self._thread.join()
        if self._final_error is not None:
            raise self._final_error

    def close(self, **metadata_updates) -> dict:
        """Write everything queued, close the episode; return ``stats()``.

        Raises BagWriteError (after closing what can be closed) if the episode failed.
        """
        self._finish(self.writer.close, **metadata_updates)
        if self.writer.error is not None:
            raise BagWriteError(self.writer.error)
        return self.stats()

    def discard(self) -> None:
        self._finish(self.writer.discard)
