"""Open a rosbag2 episode for reading, and read what a crash left of a cut-off MCAP file.

:func:`open_bag` yields a :class:`BagFile`: the topics of the episode with their message types,
the messages of chosen topics as ``(topic, msgtype, receive time ns, raw CDR bytes)``, and a
``deserialize`` for the raw bytes. A complete bag is read with ``rosbags``. When ``rosbags``
cannot open an MCAP file (a recorder that crashed leaves no summary, footer or metadata and a
last chunk cut in the middle), the file is read record by record from its start instead and
every message before the cut is kept; ``BagFile.cut_off`` then says where the file ends.
Message types are named ``pkg/msg/Name`` whichever form the file uses.

The MCAP layout read here (magic, then opcode + length-prefixed records; chunks holding
schema, channel and message records, uncompressed or compressed with zstd or lz4) follows the
format specification; the record parsers come from the ``mcap`` package.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Channel, Message, Schema
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.idl import get_types_from_idl
from rosbags.typesys.msg import get_types_from_msg

DEFAULT_TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
MCAP_MAGIC = b"\x89MCAP0\r\n"


def normalize_type(msgtype: str) -> str:
    """``pkg/Name`` (as some MCAP writers name schemas) -> ``pkg/msg/Name``; others unchanged."""
    parts = msgtype.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else msgtype


class BagOpenError(Exception):
    """Neither rosbags nor the record-by-record reader can read the bag; ``str(e)`` says why."""


@dataclass
class BagFile:
    """An open episode. ``topics``: topic -> message type; ``cut_off``: None for a complete bag,
    else a sentence saying where the readable part of a cut-off file ends."""

    topics: dict[str, str]
    _reader: AnyReader | None = None
    _recovered: list[RecoveredMcap] = field(default_factory=list)
    cut_off: str | None = None

    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """``(topic, msgtype, receive time ns, raw)`` of the chosen topics: in receive-time order
        for a complete bag, in file (write) order for a recovered one. Each call reads anew, in
        the same order every time."""
        if self._reader is not None:
            conns = [c for c in self._reader.connections if c.topic in topics]
            for conn, t, raw in self._reader.messages(connections=conns):
                yield conn.topic, normalize_type(conn.msgtype), t, raw
            return
        for rec in self._recovered:
            yield from rec.messages(topics)

    def deserialize(self, raw: bytes, msgtype: str):
        if self._reader is not None:
            return self._reader.deserialize(raw, msgtype)
        return self._recovered[0].typestore.deserialize_cdr(raw, msgtype)


@contextmanager
def open_bag(path: Path) -> Iterator[BagFile]:
    """Open a rosbag2 directory or a bare ``.mcap`` file (see the module doc)."""
    reader = AnyReader([path], default_typestore=DEFAULT_TYPESTORE)
    try:
        reader.open()
    except Exception as e:  # rosbags raises many types for damaged files
        failure = f"{type(e).__name__}: {e}"
    else:
        try:
            yield BagFile(
                topics={c.topic: normalize_type(c.msgtype) for c in reader.connections},
                _reader=reader,
            )
        finally:
            reader.close()
        return
    yield _recover(path, failure)


def _recover(path: Path, failure: str) -> BagFile:
    files = [path] if path.is_file() else sorted(path.glob("*.mcap"))
    if not files:
        raise BagOpenError(f"cannot read bag ({failure})")
    try:
        recovered = [RecoveredMcap(f) for f in files]
    except BagOpenError as e:
        raise BagOpenError(f"cannot read bag: {e} (rosbags: {failure})") from e
    store = get_typestore(Stores.EMPTY)
    types = dict(DEFAULT_TYPESTORE.fielddefs)
    for rec in recovered:
        types.update(rec.types)
    store.register(types)
    for rec in recovered:
        rec.typestore = store
    cuts = [f"{r.path.name} {r.cut_off}" for r in recovered if r.cut_off]
    return BagFile(
        topics={t: m for r in recovered for t, m in r.topics.items()},
        _recovered=recovered,
        cut_off="; ".join(cuts) or f"rosbags cannot read it ({failure})",
    )


class RecoveredMcap:
    """One MCAP file read record by record from its start, up to the first record that is cut
    off or damaged (its CRC does not match). ``topics`` and ``types`` come from the schema and
    channel records before that point; ``cut_off`` says where reading stopped (None: the file
    is whole)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.channels: dict[int, tuple[str, str]] = {}  # id -> (topic, msgtype)
        self.types: dict = {}
        self.typestore = DEFAULT_TYPESTORE
        self.cut_off: str | None = None
        self.messages_read = 0
        for _ in self._records():  # one pass for channels, schemas and the cut
            pass

    @property
    def topics(self) -> dict[str, str]:
        return dict(self.channels.values())

    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        for rec in self._records():
            if isinstance(rec, Message):
                topic, msgtype = self.channels.get(rec.channel_id, ("", ""))
                if topic in topics:
                    yield topic, msgtype, rec.log_time, rec.data

    def _records(self) -> Iterator[object]:
        schemas: dict[int, Schema] = {}
        count = 0
        with self.path.open("rb") as f:
            if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
                raise BagOpenError(f"{self.path.name} is not an MCAP file (no MCAP magic)")
            while True:
                start = f.tell()
                head = f.read(9)
                if len(head) == 0:
                    self._stop(f"no footer after {count} messages (recording was cut off)")
                    return
                if len(head) < 9:
                    self._stop(f"cut off in a record header at byte {start}, {count} messages")
                    return
                opcode, length = head[0], struct.unpack("<Q", head[1:])[0]
                body = f.read(length)
                whole = len(body) == length
                if opcode == Opcode.FOOTER:
                    self.cut_off = None
                    return
                if opcode == Opcode.DATA_END or opcode == Opcode.SUMMARY_OFFSET:
                    continue
                if opcode == Opcode.CHUNK:
                    records, problem = _chunk_records(body, whole)
                elif not whole:
                    records, problem = [], "record cut off"
                else:
                    records, problem = _plain_record(opcode, body), None
                for rec in records:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec
                        self.types.update(_schema_types(rec))
                    elif isinstance(rec, Channel):
                        schema = schemas.get(rec.schema_id)
                        name = normalize_type(schema.name) if schema else ""
                        self.channels[rec.id] = (rec.topic, name)
                    elif isinstance(rec, Message):
                        count += 1
                    yield rec
                if problem:
                    self._stop(f"{problem} at byte {start}; {count} messages before it")
                    return

    def _stop(self, why: str) -> None:
        self.cut_off = why


def _plain_record(opcode: int, body: bytes) -> list:
    stream = ReadDataStream(io.BytesIO(body))
    if opcode == Opcode.SCHEMA:
        return [Schema.read(stream)]
    if opcode == Opcode.CHANNEL:
        return [Channel.read(stream)]
    if opcode == Opcode.MESSAGE:
        return [Message.read(stream, len(body))]
    return []  # header, indexes, statistics, attachments, metadata: not needed here


def _chunk_records(body: bytes, whole: bool) -> tuple[list, str | None]:
    """Records of a chunk record body (all of it, or the part before a cut)."""
    if len(body) < 8 + 8 + 8 + 4 + 4:
        return [], "chunk cut off in its header"
    uncompressed_size = struct.unpack_from("<Q", body, 16)[0]
    (name_len,) = struct.unpack_from("<I", body, 28)
    pos = 32 + name_len
    if len(body) < pos + 8:
        return [], "chunk cut off in its header"
    compression = body[32:pos].decode()
    data_len = struct.unpack_from("<Q", body, pos)[0]
    data = body[pos + 8 : pos + 8 + data_len]
    try:
        if compression == "zstd":
            import zstandard

            if whole:
                data = zstandard.ZstdDecompressor().decompress(data, uncompressed_size)
            else:  # the decompressible prefix of a cut frame
                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        elif compression == "lz4":
            import lz4.frame

            data = lz4.frame.LZ4FrameDecompressor().decompress(data)
        elif compression:
            return [], f"chunk compressed with unknown {compression!r}"
    except Exception as e:  # damaged compressed data
        return [], f"chunk does not decompress ({type(e).__name__}: {e})"
    records, problem = _record_stream(data)
    if not whole:
        problem = problem or "chunk cut off"
    return records, problem


def _record_stream(data: bytes) -> tuple[list, str | None]:
    """Schema, channel and message records of (a prefix of) a chunk's records."""
    out, pos = [], 0
    while pos < len(data):
        if pos + 9 > len(data):
            return out, "chunk cut off in a record header"
        opcode, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        body = data[pos + 9 : pos + 9 + length]
        if len(body) < length:
            return out, "chunk cut off in a record"
        try:
            out += _plain_record(opcode, body)
        except Exception as e:  # a garbled record
            return out, f"damaged record in chunk ({type(e).__name__})"
        pos += 9 + length
    return out, None


def _schema_types(schema: Schema) -> dict:
    """Message types defined by a schema record (ros2msg or ros2idl); {} if none."""
    text = schema.data.decode(errors="replace")
    if not text.strip():
        return {}
    try:
        if schema.encoding == "ros2idl":
            return get_types_from_idl(text)
        return get_types_from_msg(text, schema.name)
    except Exception:  # an unparsable definition: fall back to the default typestore
        return {}
