"""The inference log's disk spool: a write-ahead log of records (key, headers, value) waiting
for Kafka's ack, so that an outage or a restart (SIGTERM or SIGKILL) loses none.

Layout, after vector's disk buffer: records get consecutive ids and are appended to capped
segment files named by their first id (`00000000000000000001.seg`); each record is a frame

    magic u32 | body length u32 | crc32(body) u32 |
    body: id u64 | timestamp_ms u64 | key length u32 | key | header count u16 |
          (name length u16 | name | value length u32 | value)* | value

The acknowledged position (every id up to it is in Kafka) is on disk twice (see spool_ledger):
a small ledger, replaced on an interval when acknowledged segments are deleted (a segment goes
once all its records are acknowledged), and a 32-byte position file, written each time Kafka's
acks move, so that a SIGKILL sends again only the records Kafka had not acknowledged; a new
process starts from the higher of the two. Neither is fsynced per write: a killed process
leaves its writes in the page cache, and a position older than the records after power loss
costs duplicates, never a record (what power loss can take of the records is the fsync
interval's). Reading skips corrupt frames (bad magic, length or crc), counts them, and finds
the next good frame by its magic. A new process writes to a new segment, so a torn tail left by
a kill is never appended to.

One process writes a spool: `open` takes an exclusive lock (flock) on `spool.lock` and holds it
until `close` (the kernel drops it when the process dies, SIGKILL included). A second process
on the same directory (two pods on one claim) gets `SpoolInUseError` naming the holder, never a
share of the segments and the ledger. On NFS the lock is a POSIX lock on the server (Linux's
client maps flock to it), so it holds across nodes too.

What waits for the disk never runs on the event loop; what only hands bytes to the kernel's
page cache does, as Redis writes its append-only file (`appendfsync everysec`). Appends (one
write(2) per batch: every record waiting, a group commit) and position writes (a pwrite of 16
bytes) run on the loop: a SIGKILL loses nothing written, and a thread hop per batch cost the
request path more than the write itself. `sync` (fsync of the segments written since the last
one, and of the directory once a segment was made) runs in the `SpoolSyncer` thread once per
fsync interval (see spool_syncer), so an answer never waits behind an fsync; reads (replays)
and the ledger go to worker threads; a lock guards the list of segments and the files to sync.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from modelserving_sidecar.log.spool.ledger import PositionFile, read_ledger, write_ledger

MAGIC = 0x4D534C31  # "MSL1"
_FRAME = struct.Struct("<III")  # magic, body length, crc32 of the body
_BODY = struct.Struct("<QQI")  # id, timestamp_ms, key length
_HEADER_COUNT = struct.Struct("<H")
_HEADER_NAME = struct.Struct("<H")
_HEADER_VALUE = struct.Struct("<I")
_MAGIC_BYTES = struct.pack("<I", MAGIC)
# A frame longer than this is corruption, not a record (Kafka's default message limit is 1 MiB).
MAX_FRAME_BYTES = 64 * 1024 * 1024
SEGMENT_SUFFIX = ".seg"
LOCK_FILE = "spool.lock"
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """What Kafka gets for one log record: key, headers and the Avro value."""

    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    value: bytes
    timestamp_ms: int  # the Kafka record's timestamp (when the request arrived)


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """A record read back from the spool, with the id it was given there."""

    id: int
    record: SpoolRecord


class SpoolCorruptError(ValueError):
    """A frame's bytes do not make a record."""


class SpoolInUseError(RuntimeError):
    """Another process holds the spool's lock: it is that process's to write."""


_NAME_CHUNKS: dict[str, bytes] = {}  # header name -> its length and UTF-8 bytes (a few names)


def _name_chunk(name: str) -> bytes:
    chunk = _NAME_CHUNKS.get(name)
    if chunk is None:
        name_bytes = name.encode()
        chunk = _HEADER_NAME.pack(len(name_bytes)) + name_bytes
        if len(_NAME_CHUNKS) < 256:
            _NAME_CHUNKS[name] = chunk
    return chunk


_HEADER_CHUNKS: dict[tuple[str, bytes], bytes] = {}  # shared headers, encoded once


def share_header(header: tuple[str, bytes]) -> tuple[str, bytes]:
    """Mark a header that many records carry: its frame bytes are made once (bounded)."""
    if header not in _HEADER_CHUNKS:
        if len(_HEADER_CHUNKS) >= 4096:
            _HEADER_CHUNKS.clear()
        name, value = header
        _HEADER_CHUNKS[header] = _name_chunk(name) + _HEADER_VALUE.pack(len(value)) + value
    return header


def encode_frame(record_id: int, record: SpoolRecord) -> bytes:
    """The frame of one record, ready to append to a segment."""
    key = record.key or b""
    headers = record.headers
    parts = [_BODY.pack(record_id, record.timestamp_ms, len(key)), key]
    parts.append(_HEADER_COUNT.pack(len(headers)))
    pack_value, cached = _HEADER_VALUE.pack, _HEADER_CHUNKS.get
    for header in headers:
        chunk = cached(header)
        if chunk is not None:  # a header that many records share (pod, version, caller)
            parts.append(chunk)
        else:
            name, value = header
            parts += (_name_chunk(name), pack_value(len(value)), value)
    parts.append(record.value)
    body = b"".join(parts)
    return _FRAME.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _decode_body(body: memoryview) -> SpooledRecord:
    try:
        record_id, timestamp_ms, key_len = _BODY.unpack_from(body, 0)
        pos = _BODY.size
        key = bytes(body[pos : pos + key_len]) if key_len else None
        pos += key_len
        (count,) = _HEADER_COUNT.unpack_from(body, pos)
        pos += _HEADER_COUNT.size
        headers = []
        for _ in range(count):
            (name_len,) = _HEADER_NAME.unpack_from(body, pos)
            pos += _HEADER_NAME.size
            name = str(body[pos : pos + name_len], "utf-8")
            pos += name_len
            (value_len,) = _HEADER_VALUE.unpack_from(body, pos)
            pos += _HEADER_VALUE.size
            headers.append((name, bytes(body[pos : pos + value_len])))
            pos += value_len
        if pos > len(body):
            raise SpoolCorruptError("fields run past the frame")
    except (struct.error, UnicodeDecodeError) as exc:
        raise SpoolCorruptError(str(exc)) from None
    return SpooledRecord(
        record_id, SpoolRecord(key, tuple(headers), bytes(body[pos:]), timestamp_ms)
    )


def decode_frames(data: bytes | memoryview, final: bool) -> tuple[list[SpooledRecord], int, int]:
    """Records in `data`, the bytes consumed, and the count of corrupt stretches skipped.

    An incomplete frame at the end is left unconsumed unless `final` (the end of a closed
    segment), where it counts as corrupt.
    """
    view = memoryview(data)
    records: list[SpooledRecord] = []
    corrupt = 0
    pos = 0
    end = len(view)
    in_corruption = False
    while pos < end:
        if end - pos < _FRAME.size:
            break
        magic, length, crc = _FRAME.unpack_from(view, pos)
        bad = magic != MAGIC or length > MAX_FRAME_BYTES
        if not bad and pos + _FRAME.size + length > end:
            if not final:
                break
            bad = True
        if not bad:
            body = view[pos + _FRAME.size : pos + _FRAME.size + length]
            if zlib.crc32(body) == crc:
                try:
                    records.append(_decode_body(body))
                except SpoolCorruptError:
                    bad = True
                else:
                    pos += _FRAME.size + length
                    in_corruption = False
                    continue
            else:
                bad = True
        if not in_corruption:
            corrupt += 1
            in_corruption = True
        nxt = bytes(view[pos + 1 :]).find(_MAGIC_BYTES)
        pos = end if nxt < 0 else pos + 1 + nxt
    if final and pos < end and not in_corruption:
        corrupt += 1
        pos = end
    return records, min(pos, end), corrupt


@dataclass(slots=True)
class _Segment:
    first_id: int
    path: Path
    size: int


@dataclass(slots=True)
class _ReadPosition:
    segment_first_id: int
    offset: int
    buffer: bytes = b""
    skip_below: int = 0  # ids under this were sent already (a seek)


@dataclass(slots=True)
class ReadResult:
    records: list[SpooledRecord]
    corrupt: int  # corrupt stretches skipped
    missing_ids: int  # ids that should have come but were lost to corruption
    bytes_read: int = 0


class Spool:
    """Segments of framed records on disk, and the ledger of what Kafka acknowledged."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        segment_bytes: int,
        fsync_interval: float,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # A segment can only go when all its records are acked: small segments keep the
        # share of a full spool taken by acknowledged bytes small.
        self.segment_bytes = max(4096, min(segment_bytes, max_bytes // 8))
        self.fsync_interval = fsync_interval
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # the active segment's, written by appends
        self._lock_fd: int | None = None
        # Written since the last sync: records (the active segment's, and all of those of the
        # segments it replaced, kept open until synced) and new directory entries.
        self._dirty = False
        self._replaced_fds: list[int] = []
        self._new_entries = False
        self._position = PositionFile(self.directory)
        self.fsyncs = 0  # of segment files: records forced to disk (read by the metrics)
        self.acked_id = 0  # every id <= this is acknowledged
        self.next_id = 1
        self.recovered_ids = 0  # records found unacked at open: replayed
        self._read = _ReadPosition(0, 0)
        self._expected_id = 1

    # ----------------------------------------------------------------- opening and closing

    def open(self) -> None:
        """Load the acknowledged position and the segments left by a previous process; start a
        new segment."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self.acked_id = max(read_ledger(self.directory), self._position.open())
        for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            with contextlib.suppress(ValueError):
                first_id = int(path.name.removesuffix(SEGMENT_SUFFIX))
                self._segments.append(_Segment(first_id, path, path.stat().st_size))
        if self._segments:
            # Segments go only once fully acked; a ledger older than that (a kill between the
            # two) must not make their ids look lost.
            self.acked_id = max(self.acked_id, self._segments[0].first_id - 1)
        next_id = self.acked_id + 1
        if self._segments:
            last = self._segments[-1]
            records, _, _ = decode_frames(last.path.read_bytes(), final=True)
            next_id = max(next_id, last.first_id, *(r.id + 1 for r in records))
        self.next_id = next_id
        self.recovered_ids = max(0, next_id - 1 - self.acked_id)
        self._delete_acked_segments()
        start = self.acked_id + 1
        self._expected_id = start
        self._read = _ReadPosition(self._segment_for(start), 0, skip_below=start)
        self._new_segment()
        self._sync_directory()
        self._new_entries = False

    def close(self) -> None:
        """Sync and close the segments and write the ledger (once the syncer has stopped)."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
        self.write_ledger(sync=True)
        self._position.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # and with it the lock
            self._lock_fd = None

    def _take_lock(self) -> None:
        """Hold the spool's lock, or raise SpoolInUseError naming who holds it."""
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SpoolInUseError(
                f"the spool {self.directory} is in use by {holder}: one sidecar writes a spool "
                "at a time (a claimed spool serves one pod: spec.server.replicas 1); this one can "
                "start once that one has exited"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock_fd = fd

    def _new_segment(self) -> None:
        """Append to a new segment from next_id on. The one it replaces stays open until the
        next sync has forced it to disk, and so does the new directory entry (a new file
        survives a power loss only once its directory is synced): neither waits here."""
        path = self.directory / f"{self.next_id:020d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        with self._lock:
            if self._fd is not None:
                self._replaced_fds.append(self._fd)
            self._fd = fd
            self._segments.append(_Segment(self.next_id, path, os.fstat(fd).st_size))
            self._new_entries = self._dirty = True

    def _sync_directory(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # ----------------------------------------------------------------- writing

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def has_room(self, nbytes: int) -> bool:
        return self.size_bytes + nbytes <= self.max_bytes

    def append(self, records: list[SpoolRecord]) -> tuple[int, int]:
        """Append the longest prefix of records that fits; return (first id given, count)."""
        room = self.max_bytes - self.size_bytes
        frames: list[bytes] = []
        nbytes = 0
        for i, record in enumerate(records):
            frame = encode_frame(self.next_id + i, record)
            if nbytes + len(frame) > room:
                break
            frames.append(frame)
            nbytes += len(frame)
        first_id = self.next_id
        if not frames:
            return first_id, 0
        # Frames go to the active segment until it reaches its cap, then to a new one.
        start = 0
        while start < len(frames):
            active = self._segments[-1]
            if active.size >= self.segment_bytes:
                self._new_segment()
                active = self._segments[-1]
            end, size = start, active.size
            while end < len(frames) and (end == start or size < self.segment_bytes):
                size += len(frames[end])
                end += 1
            self._write(b"".join(frames[start:end]))
            with self._lock:
                active.size = size
                self.next_id += end - start
            start = end
        self._dirty = True
        return first_id, len(frames)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    @property
    def unsynced(self) -> bool:
        """Something was written since the last sync (what a power loss could take)."""
        return self._dirty

    def sync(self) -> None:
        """Force what was written to disk: the segments replaced since the last sync (then
        closed), the active one, and the directory when it has new entries. Blocks for the
        disk: from the syncer thread, or a worker thread, never the event loop. A disk that
        fails raises OSError, and what was not forced waits for the next sync."""
        with self._lock:
            # Cleared before the fsyncs: what is written meanwhile waits for the next sync.
            replaced, self._replaced_fds = self._replaced_fds, []
            fd, new_entries = self._fd, self._new_entries
            self._dirty = self._new_entries = False
        synced, failed = 0, list[int]()
        error: OSError | None = None
        for old in replaced:
            try:
                os.fsync(old)
            except OSError as exc:
                failed.append(old)
                error = error or exc
            else:
                os.close(old)
                synced += 1
        try:
            if fd is not None:
                os.fsync(fd)
                synced += 1
            if new_entries:
                self._sync_directory()
                new_entries = False
        except OSError as exc:
            error = error or exc
        with self._lock:
            self.fsyncs += synced
            if error is not None:
                self._replaced_fds[:0] = failed
                self._dirty = True
                self._new_entries = self._new_entries or new_entries
        if error is not None:
            raise error

    # ----------------------------------------------------------------- acknowledging

    def acknowledge(self, acked_id: int) -> None:
        """Every id <= acked_id is in Kafka: delete the segments that hold only those."""
        if acked_id > self.acked_id:
            self.acked_id = acked_id
            self._delete_acked_segments()

    def write_position(self, acked_id: int) -> None:
        """Every id <= acked_id is in Kafka: say so in the position file (a pwrite of 16 bytes
        to the page cache, on the event loop like the appends) for a process started after a
        kill."""
        self._position.write(acked_id)

    def write_ledger(self, sync: bool = False) -> None:
        write_ledger(self.directory, self.acked_id, sync)

    def _delete_acked_segments(self) -> None:
        with self._lock:
            keep: list[_Segment] = []
            for i, seg in enumerate(self._segments):
                is_active = self._fd is not None and i == len(self._segments) - 1
                last_id = (
                    self._segments[i + 1].first_id - 1
                    if i + 1 < len(self._segments)
                    else self.next_id - 1
                )
                if not is_active and last_id <= self.acked_id and not keep:
                    seg.path.unlink(missing_ok=True)
                else:
                    keep.append(seg)
            self._segments = keep

    # ----------------------------------------------------------------- reading

    def _segment_for(self, record_id: int) -> int:
        first = self._segments[0].first_id if self._segments else record_id
        for seg in self._segments:
            if seg.first_id <= record_id:
                first = seg.first_id
        return first

    @property
    def read_next_id(self) -> int:
        """The id the next read returns first (when it is there)."""
        return self._expected_id

    def seek(self, record_id: int) -> None:
        """Read again from record_id (after a failed send): earlier ids are skipped."""
        with self._lock:
            self._read = _ReadPosition(self._segment_for(record_id), 0, skip_below=record_id)
        self._expected_id = record_id

    def read(self, max_records: int) -> ReadResult:
        """The next records in id order, up to what appends have completed."""
        result = ReadResult([], 0, 0)
        pos = self._read
        while len(result.records) < max_records:
            with self._lock:
                segs = [s for s in self._segments if s.first_id >= pos.segment_first_id]
                if not segs:
                    break
                seg = segs[0]
                if seg.first_id != pos.segment_first_id:
                    pos.segment_first_id, pos.offset, pos.buffer = seg.first_id, 0, b""
                limit = seg.size
                closed = len(segs) > 1
            if pos.offset + len(pos.buffer) < limit:
                try:
                    with open(seg.path, "rb") as f:
                        f.seek(pos.offset + len(pos.buffer))
                        chunk = f.read(min(_READ_CHUNK, limit - pos.offset - len(pos.buffer)))
                except FileNotFoundError:
                    chunk = b""
                pos.buffer += chunk
                result.bytes_read += len(chunk)
            at_end = pos.offset + len(pos.buffer) >= limit
            # Appends publish a segment's size only after whole frames are written, so the
            # bytes up to it are complete frames: a short frame there is corruption.
            records, used, corrupt = decode_frames(pos.buffer, final=at_end)
            pos.buffer = pos.buffer[used:]
            pos.offset += used
            result.corrupt += corrupt
            for rec in records:
                if rec.id < pos.skip_below or rec.id < self._expected_id:
                    continue
                if rec.id > self._expected_id:
                    result.missing_ids += rec.id - self._expected_id
                result.records.append(rec)
                self._expected_id = rec.id + 1
            if at_end:
                if not closed:
                    break
                pos.segment_first_id, pos.offset, pos.buffer = seg.first_id + 1, 0, b""
        return result
