"""The agent's bounded disk spool: batches with their sequence numbers, until acknowledged.

A batch gets its sequence number when it is appended here, and keeps it for
good: after a crash or a reconnect it is sent again under the same number, so
the manager recognises what it already handled. Reading runs ahead of the
manager while the spool has room; when it is full the tailer pauses (the
agent never drops a record).

Theory of operation
-------------------
Batches are appended to segment files ``spool/<first seq, 20 digits>.seg``;
a new segment starts once the current one reaches ``segment_bytes``. An entry
is a header and two blobs::

    header   "<4sQIIII": magic "TWB1", seq, record count, updates length,
             records length, CRC-32 of both blobs
    updates  JSON [[fingerprint, *FilePosition.to_list()], ...]: the file
             positions this batch completes (see positions.py)
    records  msgpack [[location, text], ...]

written with one ``writev``. Sequence numbers are contiguous, so the entry
after seq N is N+1 wherever it is.

Opening scans every segment's headers: entries at or below the positions'
acknowledged sequence are done (whole segments of them are deleted), the
others are the backlog and their position updates tell the tailer where
reading resumes. The last segment's entries are also checked against their
CRC; a torn or zero-filled tail, the trace of a crash mid-append, is cut off.
A bad entry anywhere else is damage the agent cannot repair by itself, and
opening fails naming the file and offset.

Durability: ``sync_through`` fsyncs everything appended so far (group commit)
and may run on another thread while the owner keeps appending; the sender
calls it before a batch leaves, so nothing the manager saw can vanish from
the spool in a power loss. Segments are deleted only by ``release_through``,
which the owner calls once the positions that acknowledge them are durable.

Recently appended batches stay in memory (``HOT_CACHE_BYTES``), so a sender
that keeps up never reads the disk; one that fell behind, or a restarted
agent, reads entries back in order through one cursor.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import starmap
from pathlib import Path
from typing import Final

import msgpack
import orjson

from trailwarden.agent.positions import FilePosition, PositionsError
from trailwarden.common.wire import Record

_HEADER: Final = struct.Struct("<4sQIIII")
MAGIC: Final = b"TWB1"
SEGMENT_SUFFIX: Final = ".seg"
# Batches kept in memory after they are written until the sender takes them,
# so that a sender which keeps up never reads them back: a few full batches
# (the default batch is 1 MiB). Beyond it the oldest are read from disk.
HOT_CACHE_BYTES: Final = 4 * 1024 * 1024
# The largest blob an entry may claim: far above any real batch (the protocol
# caps one at a few MiB), low enough that a corrupt length cannot make the
# agent allocate gigabytes.
MAX_BLOB_BYTES: Final = 64 * 1024 * 1024

Update = tuple[str, FilePosition]


class SpoolError(RuntimeError):
    """The spool on disk is damaged beyond what a crash leaves (the disk's fault)."""


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """One batch as the spool holds it."""

    seq: int
    records: tuple[Record, ...]
    updates: tuple[Update, ...]
    nbytes: int  # size of its entry on disk

    def summary(self) -> BatchSummary:
        return BatchSummary(self.seq, self.updates, len(self.records))


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """What an acknowledgement needs of a sent batch (not its records)."""

    seq: int
    updates: tuple[Update, ...]
    records: int


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    last_seq: int  # first_seq - 1 while empty
    size: int


def encode_updates(updates: Iterable[Update]) -> bytes:
    return orjson.dumps([[fp, *pos.to_list()] for fp, pos in updates])


def decode_updates(blob: bytes | memoryview, where: str) -> tuple[Update, ...]:
    try:
        items = orjson.loads(blob)
        if not isinstance(items, list):
            raise TypeError
        return tuple((fp, FilePosition.from_list(rest, where)) for fp, *rest in items)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise SpoolError(f"{where}: malformed position updates ({exc})") from None


class Spool:
    """See the module docstring. Owned by one thread; ``sync_through`` may run
    on another."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: bool,
        acked_seq: int,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._segments: list[_Segment] = []
        self._starts: list[int] = []  # first_seq of each segment, for bisect
        self._bytes = 0
        self._acked_seq = acked_seq
        self._last_seq = acked_seq
        self._unacked_records = 0
        self._recovered: list[tuple[int, tuple[Update, ...]]] = []
        self._cache: OrderedDict[int, SpooledBatch] = OrderedDict()
        # One packer for every append: its buffer (a batch's size) is reused
        # and written from directly, not copied into a fresh bytes each time.
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        self._cache_bytes = 0
        # The segment being appended to, and segments not fsync'ed yet.
        self._active_fd = -1
        self._lock = threading.Lock()
        self._unsynced: list[int] = []  # closed-for-writing fds awaiting fsync
        self._synced_seq = acked_seq
        # Read cursor: where the entry with seq _read_seq starts.
        self._read_fd = -1
        self._read_segment: _Segment | None = None
        self._read_offset = 0
        self._read_seq = 0

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: bool = True,
        acked_seq: int = 0,
    ) -> Spool:
        """Open (or create) the spool and recover what a crash left.

        Args:
            acked_seq: the highest sequence the manager acknowledged (from
                the position store): entries up to it are done.

        Raises:
            SpoolError: a segment is damaged other than at its tail.
        """
        directory.mkdir(parents=True, exist_ok=True)
        spool = cls(
            directory,
            max_bytes=max_bytes,
            segment_bytes=segment_bytes,
            fsync=fsync,
            acked_seq=acked_seq,
        )
        spool._recover()
        return spool

    def _recover(self) -> None:
        found: list[tuple[int, Path]] = []
        for path in self.directory.iterdir():
            stem = path.name.removesuffix(SEGMENT_SUFFIX)
            if path.name.endswith(SEGMENT_SUFFIX) and stem.isascii() and stem.isdigit():
                found.append((int(stem), path))
        found.sort()
        expected = 0
        for i, (first_seq, path) in enumerate(found):
            last = i == len(found) - 1
            segment = self._scan_segment(first_seq, path, check_crc=last)
            if segment.last_seq <= self._acked_seq:
                path.unlink()  # acknowledged and made durable before the crash
                continue
            if expected and first_seq != expected:
                raise SpoolError(
                    f"{path}: starts at batch {first_seq}, but the previous segment ends at "
                    f"{expected - 1}; the spool is incomplete (move it away to start afresh)"
                )
            expected = segment.last_seq + 1
            self._add_segment(segment)
        if self._segments:
            self._last_seq = max(self._acked_seq, self._segments[-1].last_seq)
            first_unacked = self._segments[0].first_seq
            if first_unacked > self._acked_seq + 1:
                raise SpoolError(
                    f"{self._segments[0].path}: batches {self._acked_seq + 1} to "
                    f"{first_unacked - 1} are missing from the spool"
                )
        self._synced_seq = self._last_seq

    def _scan_segment(self, first_seq: int, path: Path, *, check_crc: bool) -> _Segment:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            offset = 0
            seq = first_seq - 1
            while offset < size:
                problem = None
                header = os.pread(fd, _HEADER.size, offset)
                if len(header) < _HEADER.size:
                    problem = "truncated header"
                else:
                    magic, entry_seq, count, ulen, rlen, crc = _HEADER.unpack(header)
                    end = offset + _HEADER.size + ulen + rlen
                    if magic != MAGIC or entry_seq != seq + 1:
                        problem = f"no entry for batch {seq + 1} (magic {magic!r}, seq {entry_seq})"
                    elif ulen > MAX_BLOB_BYTES or rlen > MAX_BLOB_BYTES or end > size:
                        problem = "entry runs past the end of the file"
                    elif check_crc or entry_seq > self._acked_seq:
                        blobs = b""
                        if check_crc:
                            blobs = os.pread(fd, ulen + rlen, offset + _HEADER.size)
                            if zlib.crc32(blobs) != crc:
                                problem = "checksum mismatch"
                        if problem is None and entry_seq > self._acked_seq:
                            ublob = (
                                blobs[:ulen] if blobs else os.pread(fd, ulen, offset + _HEADER.size)
                            )
                            updates = decode_updates(ublob, f"{path}, byte {offset}")
                            self._recovered.append((entry_seq, updates))
                            self._unacked_records += count
                if problem is not None:
                    if not check_crc:
                        raise SpoolError(
                            f"{path}, byte {offset}: {problem}; the spool is damaged "
                            "(move it away to start afresh; its batches would be lost)"
                        )
                    os.ftruncate(fd, offset)  # the tail a crash tore off
                    os.fsync(fd)
                    size = offset
                    break
                seq += 1
                offset = end
            return _Segment(first_seq, path, seq, size)
        finally:
            os.close(fd)

    def _add_segment(self, segment: _Segment) -> None:
        self._segments.append(segment)
        self._starts.append(segment.first_seq)
        self._bytes += segment.size

    def recovered_updates(self) -> list[tuple[int, tuple[Update, ...]]]:
        """Position updates of the batches found unacknowledged at opening, in
        order: where reading resumes is the acknowledged positions plus these."""
        recovered, self._recovered = self._recovered, []
        return recovered

    def close(self) -> None:
        with self._lock:
            fds, self._unsynced = self._unsynced, []
        for fd in fds:
            os.close(fd)
        for attr in ("_active_fd", "_read_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
        self._read_segment = None

    # -- state ----------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence of the newest batch (or the acknowledged one if none since)."""
        return self._last_seq

    @property
    def acked_seq(self) -> int:
        return self._acked_seq

    @property
    def bytes(self) -> int:
        """Bytes on disk, acknowledged segments not yet released included."""
        return self._bytes

    @property
    def full(self) -> bool:
        return self._bytes >= self.max_bytes

    @property
    def unacked_batches(self) -> int:
        return self._last_seq - self._acked_seq

    @property
    def unacked_records(self) -> int:
        return self._unacked_records

    # -- writing --------------------------------------------------------------------

    def append(self, records: Sequence[Record], updates: Sequence[Update]) -> SpooledBatch:
        """Write a batch under the next sequence number and return it.

        Raises:
            OSError: the disk refused the write (nothing was assigned).
        """
        seq = self._last_seq + 1
        ublob = encode_updates(updates)
        packer = self._packer
        packer.reset()
        packer.pack(records)
        with packer.getbuffer() as rblob:
            crc = zlib.crc32(rblob, zlib.crc32(ublob))
            header = _HEADER.pack(MAGIC, seq, len(records), len(ublob), len(rblob), crc)
            size = _HEADER.size + len(ublob) + len(rblob)
            segment = self._segment_for_append(seq)
            fd = self._active_fd
            try:
                _write_all(fd, (header, ublob, rblob), size)
            except OSError:
                os.ftruncate(fd, segment.size)  # no half entry before the next one
                raise
        segment.size += size
        segment.last_seq = seq
        self._bytes += size
        with self._lock:
            self._last_seq = seq
        if not self.fsync:
            self._synced_seq = seq
        self._unacked_records += len(records)
        batch = SpooledBatch(seq, tuple(records), tuple(updates), size)
        self._cache[seq] = batch
        self._cache_bytes += size
        while self._cache_bytes > HOT_CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return batch

    def _segment_for_append(self, seq: int) -> _Segment:
        segments = self._segments
        if segments and self._active_fd >= 0 and segments[-1].size < self.segment_bytes:
            return segments[-1]
        if segments and self._active_fd < 0 and segments[-1].size < self.segment_bytes:
            # Reopened after a restart: go on appending to the last segment.
            self._active_fd = os.open(segments[-1].path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            return segments[-1]
        self._retire_active()
        segment = _Segment(seq, self.directory / f"{seq:020d}{SEGMENT_SUFFIX}", seq - 1, 0)
        self._active_fd = os.open(
            segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
        )
        self._add_segment(segment)
        return segment

    def _retire_active(self) -> None:
        fd, self._active_fd = self._active_fd, -1
        if fd < 0:
            return
        if self.fsync:
            with self._lock:
                self._unsynced.append(fd)  # sync_through closes it
        else:
            os.close(fd)

    def sync_through(self, seq: int) -> None:
        """Make every batch up to ``seq`` (and whatever was appended before
        this call) durable. Blocking; safe to run on another thread."""
        with self._lock:
            if self._synced_seq >= seq:
                return
            target = self._last_seq
            retired, self._unsynced = self._unsynced, []
            active = self._active_fd
        for fd in retired:
            os.fsync(fd)
            os.close(fd)
        if active >= 0:
            os.fsync(active)
        with self._lock:
            self._synced_seq = max(self._synced_seq, target)

    @property
    def needs_sync(self) -> bool:
        return self._synced_seq < self._last_seq

    # -- reading --------------------------------------------------------------------

    def get(self, seq: int, *, take: bool = False) -> SpooledBatch:
        """The unacknowledged batch ``seq``, from memory or from disk.

        ``take``: the caller keeps it from now on (the sender, which needs it
        only until it is encoded), so memory drops its copy.

        Raises:
            KeyError: ``seq`` is acknowledged or not written yet (caller bug).
            SpoolError: the entry is damaged on disk.
        """
        if not self._acked_seq < seq <= self._last_seq:
            raise KeyError(
                f"batch {seq} is not in the spool ({self._acked_seq + 1}..{self._last_seq})"
            )
        batch = self._cache.pop(seq, None) if take else self._cache.get(seq)
        if batch is not None:
            if take:
                self._cache_bytes -= batch.nbytes
            return batch
        if seq != self._read_seq or self._read_segment is None:
            self._seek(seq)
        return self._read_next()

    def _seek(self, seq: int) -> None:
        i = bisect.bisect_right(self._starts, seq) - 1
        segment = self._segments[i]
        if segment is not self._read_segment:
            if self._read_fd >= 0:
                os.close(self._read_fd)
            self._read_fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
            self._read_segment = segment
        offset, current = 0, segment.first_seq
        while current < seq:
            header = os.pread(self._read_fd, _HEADER.size, offset)
            _, _, _, ulen, rlen, _ = _HEADER.unpack(header)
            offset += _HEADER.size + ulen + rlen
            current += 1
        self._read_offset, self._read_seq = offset, seq

    def _read_next(self) -> SpooledBatch:
        segment = self._read_segment
        assert segment is not None
        if self._read_seq > segment.last_seq:
            self._seek(self._read_seq)
            segment = self._read_segment
            assert segment is not None
        fd, offset = self._read_fd, self._read_offset
        where = f"{segment.path}, byte {offset}"
        header = os.pread(fd, _HEADER.size, offset)
        magic, seq, count, ulen, rlen, crc = _HEADER.unpack(header)
        if magic != MAGIC or seq != self._read_seq:
            raise SpoolError(f"{where}: expected batch {self._read_seq}, found {magic!r} {seq}")
        blobs = os.pread(fd, ulen + rlen, offset + _HEADER.size)
        if len(blobs) != ulen + rlen or zlib.crc32(blobs) != crc:
            raise SpoolError(f"{where}: batch {seq} is damaged (checksum mismatch)")
        view = memoryview(blobs)
        try:
            updates = decode_updates(view[:ulen], where)
            pairs = msgpack.unpackb(view[ulen:], raw=False, use_list=False)
            records = tuple(starmap(Record, pairs))
        except (PositionsError, ValueError, TypeError, msgpack.UnpackException) as exc:
            raise SpoolError(f"{where}: batch {seq} cannot be decoded ({exc})") from None
        if len(records) != count:
            raise SpoolError(f"{where}: batch {seq} holds {len(records)} records, not {count}")
        size = _HEADER.size + ulen + rlen
        self._read_offset = offset + size
        self._read_seq = seq + 1
        return SpooledBatch(seq, records, updates, size)

    # -- acknowledgement ------------------------------------------------------------

    def acknowledge(self, seq: int, records: int) -> None:
        """The manager acknowledged every batch up to ``seq``, ``records`` of
        them newly; their space is reclaimed by ``release_through``."""
        if seq <= self._acked_seq:
            return
        self._acked_seq = min(seq, self._last_seq)
        self._unacked_records = max(0, self._unacked_records - records)
        cache = self._cache
        while cache:
            first = next(iter(cache))
            if first > seq:
                break
            self._cache_bytes -= cache.pop(first).nbytes

    def release_through(self, seq: int) -> int:
        """Delete segments holding only batches up to ``seq`` (durably
        acknowledged); returns the bytes freed."""
        freed = 0
        seq = min(seq, self._acked_seq)
        while self._segments and self._segments[0].last_seq <= seq:
            segment = self._segments[0]
            active = len(self._segments) == 1
            if active and segment.last_seq < segment.first_seq:
                break  # an empty active segment: nothing to free
            if active:
                self._retire_active()
            if segment is self._read_segment:
                os.close(self._read_fd)
                self._read_fd, self._read_segment = -1, None
            segment.path.unlink(missing_ok=True)
            del self._segments[0]
            del self._starts[0]
            self._bytes -= segment.size
            freed += segment.size
        return freed

    def iter_unacked(self) -> Iterator[SpooledBatch]:
        """Every unacknowledged batch in order (tests and tools)."""
        for seq in range(self._acked_seq + 1, self._last_seq + 1):
            yield self.get(seq)


def _write_all(fd: int, parts: tuple[bytes | memoryview, ...], size: int) -> None:
    written = os.writev(fd, parts)
    if written == size:
        return
    rest = memoryview(b"".join(parts))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]
