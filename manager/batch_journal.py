"""The batch journal: which agent batches are done, made durable together with their alerts.

The manager acknowledges a batch only once its alerts are durable, and must
recognise the batch when the agent sends it again after a reconnect, even if
the manager was killed in between. This module keeps, per agent, the highest
batch sequence whose alerts are in the alert files, and guarantees that this
number and those alerts never disagree after a crash.

Theory of operation
-------------------
The pipeline handles batches in *groups* (group commit). For each group::

    1. BEGIN g: the group's batches (agent, key id, seq) and, for every alert
       file it will append to, (path, start offset, end offset, digest of the
       bytes). Appended to the journal; fsynced under the ``batch`` policy.
    2. the alert files are appended (``AlertFiles.commit``) and flushed;
    3. COMMIT g: appended to the journal (no fsync of its own);
    4. the agents are acknowledged.

Recovery (``open``), before the alert files are opened: every BEGIN with its
COMMIT is done. A BEGIN without COMMIT (the crash came between 1 and 3) is
*verified*: if every range's bytes are in the file with the recorded digest,
the alerts made it and the group is done (its COMMIT was merely lost); the
agent's resend will be acknowledged as a duplicate. Otherwise the files are cut
back to the group's start offsets, and so are those of every later group, and
the agent's resend is analysed as new. Either way each batch is analysed once.

Why this order holds across a ``kill -9``: every step is an ``os.write``, which
is in the kernel when it returns and survives the process; BEGIN is written
before the alerts, so no alert byte exists without its BEGIN. Across a power
loss under the ``batch`` policy: BEGIN is fsynced before the alerts are
written, and the alerts are fsynced before the acknowledgement, so an
acknowledged group always verifies (the digest tells a complete range from one
the disk lost part of). The COMMIT needs no fsync because verification can
stand in for it; the next BEGIN's fsync makes it durable anyway.

Files, under ``<data_dir>/var/journal/``:

* ``batches.wal``: records ``<u32 length><u32 crc32><msgpack body>``. A torn
  last record (short, or failing its CRC) is a crash mid-append; it is dropped.
* ``committed.json``: a snapshot ``{"version": 1, "group": G, "agents": {id:
  {"key": key id, "seq": S}}}``, replaced atomically. At start-up, and when the
  WAL outgrows ``COMPACT_AFTER_BYTES`` between groups, the state is written
  here and the WAL emptied; WAL records of groups <= G are ignored, so a crash
  between the two steps is harmless.
* ``.lock``: an exclusive ``flock``; one manager per data directory.

The key id (a digest of the agent's key) is stored with the sequence: an id
purged from client.keys and given to a new agent, or an agent enrolled again
with a new key, starts from zero instead of having its batches taken for
duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
import orjson

log = logging.getLogger(__name__)

JOURNAL_DIR: Final = Path("var") / "journal"
WAL_NAME: Final = "batches.wal"
SNAPSHOT_NAME: Final = "committed.json"
LOCK_NAME: Final = ".lock"
SNAPSHOT_VERSION: Final = 1

_HEADER: Final = struct.Struct("<II")
# A BEGIN lists every batch of its group (~40 bytes each) and at most three
# ranges; the pipeline caps a group far below this. Anything larger is garbage.
MAX_RECORD_BYTES: Final = 4 * 1024 * 1024
# The WAL is emptied into the snapshot once it is this large: bounds both the
# disk it takes and the work of the next start-up's replay.
COMPACT_AFTER_BYTES: Final = 16 * 1024 * 1024
# Snapshot files hold one entry per agent ever acknowledged; 200k agents at
# ~80 bytes each is 16 MiB.
MAX_SNAPSHOT_BYTES: Final = 64 * 1024 * 1024
DIGEST_BYTES: Final = 16
# Read size when verifying a range: bounds memory whatever the range size.
_VERIFY_CHUNK_BYTES: Final = 1 << 20
FILE_MODE: Final = 0o640
DIR_MODE: Final = 0o750

_BEGIN: Final = "B"
_COMMIT: Final = "C"


class JournalError(Exception):
    """The journal cannot be used: disk, permissions, another manager, or a corrupt snapshot."""


def key_id(agent_key: bytes) -> str:
    """A short, non-secret name for an agent key (16 hex characters)."""
    return hashlib.sha256(b"trailwarden/key-id\x00" + agent_key).hexdigest()[:16]


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


@dataclass(frozen=True, slots=True)
class BatchRef:
    """One agent batch in a group."""

    agent_id: str
    key_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class JournalRange:
    """Bytes ``[start, end)`` of the file at ``path`` hold a group's output, with this digest."""

    path: str
    start: int
    end: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class GroupBegin:
    group: int
    batches: tuple[BatchRef, ...]
    ranges: tuple[JournalRange, ...]


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What ``open`` found and did; ``describe()`` says it in one line."""

    groups_replayed: int = 0
    groups_verified: int = 0  # BEGIN without COMMIT whose alerts were all there
    groups_rolled_back: int = 0
    batches_rolled_back: int = 0
    bytes_cut: int = 0
    torn_journal_bytes: int = 0

    def describe(self) -> str:
        return (
            f"{self.groups_replayed} groups replayed, {self.groups_verified} completed by "
            f"verification, {self.groups_rolled_back} rolled back ({self.batches_rolled_back} "
            f"batches, {self.bytes_cut} alert bytes cut), {self.torn_journal_bytes} torn "
            "journal bytes dropped"
        )


class BatchJournal:
    """The journal of one data directory. ``open()`` first (it recovers), then per group
    ``await begin(...)`` and ``commit(group)``; ``close()`` at the end.

    Args:
        data_dir: the manager data directory.
        sync_each_group: fsync every BEGIN (the ``batch`` fsync policy). Otherwise
            only ``sync()``, compaction and ``close()`` fsync.
    """

    def __init__(self, data_dir: Path, *, sync_each_group: bool) -> None:
        self._dir = data_dir / JOURNAL_DIR
        self._sync_each_group = sync_each_group
        self._lock_fd = -1
        self._wal_fd = -1
        self._wal_bytes = 0
        self._group = 0  # last group number used
        self._committed: dict[str, tuple[str, int]] = {}
        self._open_groups: dict[int, GroupBegin] = {}
        self._failed: BaseException | None = None
        self._n: dict[str, int] = dict.fromkeys(
            ("groups_begun", "groups_committed", "fsyncs", "compactions"), 0
        )

    # -- lifecycle -----------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Lock, recover (see the module docstring), compact, and open for appending.

        Blocking file I/O: call it at start-up, before the alert files are opened.

        Raises:
            JournalError: locked by another manager, unreadable, or a corrupt snapshot.
        """
        if self._lock_fd >= 0:
            raise RuntimeError("BatchJournal.open() called twice")
        try:
            created = not self._dir.is_dir()
            self._dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            if created:
                _fsync_dir(self._dir.parent)
            self._lock()
            snapshot_group, committed = self._read_snapshot()
            records, torn = self._read_wal()
            report = self._replay(snapshot_group, committed, records, torn)
            self._committed = committed
            self._write_snapshot()
            self._wal_fd = os.open(
                self._dir / WAL_NAME,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                FILE_MODE,
            )
            os.ftruncate(self._wal_fd, 0)
            os.fsync(self._wal_fd)
            self._wal_bytes = 0
        except OSError as exc:
            self.close()
            raise JournalError(f"batch journal {self._dir}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        return report

    def close(self) -> None:
        """fsync and close the WAL (best effort), release the lock."""
        if self._wal_fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._wal_fd)
            os.close(self._wal_fd)
            self._wal_fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- what is done ----------------------------------------------------------

    def committed_seq(self, agent_id: str, agent_key_id: str) -> int:
        """The highest sequence of this agent (under this key) whose batch is done; 0 if none."""
        entry = self._committed.get(agent_id)
        if entry is None or entry[0] != agent_key_id:
            return 0
        return entry[1]

    @property
    def agents(self) -> int:
        return len(self._committed)

    def next_group(self) -> int:
        self._group += 1
        return self._group

    # -- one group ---------------------------------------------------------------

    async def begin(self, group: GroupBegin) -> None:
        """Append BEGIN; with ``sync_each_group``, return only once it is on disk.

        Raises:
            JournalError: the write or fsync failed; the journal is unusable.
        """
        self._check_usable()
        body = _encode_record(
            {
                "t": _BEGIN,
                "g": group.group,
                "b": [[b.agent_id, b.key_id, b.seq] for b in group.batches],
                "r": [[r.path, r.start, r.end, r.digest] for r in group.ranges],
            }
        )
        fd, sync = self._wal_fd, self._sync_each_group
        try:
            if sync:
                await asyncio.to_thread(_append_and_sync, fd, body)
                self._n["fsyncs"] += 1
            else:
                _append(fd, body)
        except OSError as exc:
            self._fail(exc)
            raise JournalError(f"batch journal: cannot append to {WAL_NAME}: {exc}") from exc
        self._wal_bytes += len(body)
        self._open_groups[group.group] = group
        self._n["groups_begun"] += 1

    def commit(self, group: int) -> None:
        """Append COMMIT and count the group's batches as done.

        Raises:
            JournalError: the write failed; the journal is unusable (the group
                stays recoverable by verification).
        """
        self._check_usable()
        begun = self._open_groups.pop(group)
        body = _encode_record({"t": _COMMIT, "g": group})
        try:
            _append(self._wal_fd, body)
        except OSError as exc:
            self._fail(exc)
            raise JournalError(f"batch journal: cannot append to {WAL_NAME}: {exc}") from exc
        self._wal_bytes += len(body)
        _apply(self._committed, begun.batches)
        self._n["groups_committed"] += 1

    async def sync(self) -> None:
        """fsync the WAL (for the ``interval`` policy and shutdown)."""
        self._check_usable()
        try:
            await asyncio.to_thread(os.fsync, self._wal_fd)
        except OSError as exc:
            self._fail(exc)
            raise JournalError(f"batch journal: fsync failed: {exc}") from exc
        self._n["fsyncs"] += 1

    async def compact_if_needed(self) -> bool:
        """Between groups: fold a large WAL into the snapshot. Returns True if it did."""
        if self._wal_bytes < COMPACT_AFTER_BYTES or self._open_groups:
            return False
        self._check_usable()
        try:
            await asyncio.to_thread(self._compact)
        except OSError as exc:
            self._fail(exc)
            raise JournalError(f"batch journal: compaction failed: {exc}") from exc
        self._n["compactions"] += 1
        return True

    def stats(self) -> dict[str, int | bool]:
        out: dict[str, int | bool] = dict(self._n)
        out["wal_bytes"] = self._wal_bytes
        out["agents"] = len(self._committed)
        out["failed"] = self._failed is not None
        return out

    # -- internals -----------------------------------------------------------------

    def _compact(self) -> None:
        self._write_snapshot()
        os.ftruncate(self._wal_fd, 0)
        os.fsync(self._wal_fd)
        self._wal_bytes = 0

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise JournalError(f"batch journal unusable after an earlier error: {self._failed}")
        if self._wal_fd < 0:
            raise RuntimeError("batch journal used before open() or after close()")

    def _fail(self, exc: BaseException) -> None:
        self._failed = exc
        log.critical("Batch journal: %s; no batch can be acknowledged any more.", exc)

    def _lock(self) -> None:
        path = self._dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalError(
                f"batch journal {path} is locked: another manager uses this data directory"
            ) from None
        self._lock_fd = fd

    def _read_snapshot(self) -> tuple[int, dict[str, tuple[str, int]]]:
        path = self._dir / SNAPSHOT_NAME
        try:
            with open(path, "rb") as handle:
                raw = handle.read(MAX_SNAPSHOT_BYTES + 1)
        except FileNotFoundError:
            return 0, {}
        where = str(path)
        if len(raw) > MAX_SNAPSHOT_BYTES:
            raise JournalError(f"{where}: larger than {MAX_SNAPSHOT_BYTES} bytes")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise JournalError(f"{where}: not JSON ({exc}); restore it or remove it") from None
        if not isinstance(doc, dict) or doc.get("version") != SNAPSHOT_VERSION:
            raise JournalError(f"{where}: not a version {SNAPSHOT_VERSION} journal snapshot")
        group = doc.get("group")
        agents = doc.get("agents")
        if type(group) is not int or group < 0 or not isinstance(agents, dict):
            raise JournalError(f"{where}: 'group' must be a count and 'agents' an object")
        committed: dict[str, tuple[str, int]] = {}
        for agent_id, entry in agents.items():
            if (
                not isinstance(entry, dict)
                or type(entry.get("seq")) is not int
                or not isinstance(entry.get("key"), str)
            ):
                raise JournalError(f"{where}: agents.{agent_id} must be {{'key': str, 'seq': int}}")
            committed[agent_id] = (entry["key"], entry["seq"])
        return group, committed

    def _write_snapshot(self) -> None:
        doc = {
            "version": SNAPSHOT_VERSION,
            "group": self._group,
            "agents": {a: {"key": k, "seq": s} for a, (k, s) in self._committed.items()},
        }
        target = self._dir / SNAPSHOT_NAME
        tmp = self._dir / f".{SNAPSHOT_NAME}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            _append(fd, orjson.dumps(doc))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        tmp.replace(target)
        _fsync_dir(self._dir)

    def _read_wal(self) -> tuple[list[dict[str, Any]], int]:
        """The WAL's valid records, and how many bytes of torn tail follow them."""
        path = self._dir / WAL_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], 0
        records: list[dict[str, Any]] = []
        pos = 0
        size = len(data)
        while pos + _HEADER.size <= size:
            length, crc = _HEADER.unpack_from(data, pos)
            body_end = pos + _HEADER.size + length
            if length > MAX_RECORD_BYTES or body_end > size:
                break
            body = data[pos + _HEADER.size : body_end]
            if zlib.crc32(body) != crc:
                break
            try:
                record = msgpack.unpackb(body, raw=False, strict_map_key=True)
            except (ValueError, msgpack.UnpackException):
                break
            if not isinstance(record, dict):
                break
            records.append(record)
            pos = body_end
        return records, size - pos

    def _replay(
        self,
        snapshot_group: int,
        committed: dict[str, tuple[str, int]],
        records: list[dict[str, Any]],
        torn: int,
    ) -> RecoveryReport:
        """Apply the WAL to ``committed``; verify or roll back unfinished groups.

        Groups are taken in order. The first one that has no COMMIT and does
        not verify is rolled back together with every group after it (their
        output follows it in the files), whatever their own state.
        """
        begun: dict[int, GroupBegin] = {}
        done: set[int] = set()
        last_group = snapshot_group
        for record in records:
            parsed = _parse_record(record)
            if parsed is None:
                continue
            number = parsed if isinstance(parsed, int) else parsed.group
            last_group = max(last_group, number)
            if number <= snapshot_group:
                continue  # already in the snapshot (crash between snapshot and WAL reset)
            if isinstance(parsed, GroupBegin):
                begun[number] = parsed
            else:
                done.add(number)
        self._group = last_group
        if torn:
            log.warning(
                "Batch journal: dropped a torn record (%d bytes) at the end of %s.", torn, WAL_NAME
            )
        replayed = verified = 0
        ordered = [begun[g] for g in sorted(begun)]
        for index, group in enumerate(ordered):
            if group.group in done:
                replayed += 1
            elif all(_range_is_complete(r) for r in group.ranges):
                verified += 1
            else:
                return self._roll_back(ordered[index:], replayed, verified, torn)
            _apply(committed, group.batches)
        return RecoveryReport(replayed, verified, 0, 0, 0, torn)

    def _roll_back(
        self,
        groups: Sequence[GroupBegin],
        replayed: int,
        verified: int,
        torn: int,
    ) -> RecoveryReport:
        cut_to: dict[str, int] = {}
        for group in groups:
            for r in group.ranges:
                cut_to[r.path] = min(r.start, cut_to.get(r.path, r.start))
        bytes_cut = 0
        for path, start in cut_to.items():
            bytes_cut += _truncate(path, start)
        batches = sum(len(g.batches) for g in groups)
        log.warning(
            "Batch journal: %d unfinished group(s) rolled back (%d batches, %d alert bytes "
            "cut); their agents will send them again.",
            len(groups),
            batches,
            bytes_cut,
        )
        return RecoveryReport(replayed, verified, len(groups), batches, bytes_cut, torn)


# -- records -----------------------------------------------------------------------


def _encode_record(obj: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    if len(body) > MAX_RECORD_BYTES:
        raise ValueError(f"journal record of {len(body)} bytes (bug: groups are capped)")
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def _parse_record(record: dict[str, Any]) -> GroupBegin | int | None:
    """A BEGIN, a COMMIT's group number, or None for a record this version ignores."""
    kind, group = record.get("t"), record.get("g")
    if type(group) is not int:
        return None
    if kind == _COMMIT:
        return group
    if kind != _BEGIN:
        return None
    try:
        batches = tuple(BatchRef(str(a), str(k), int(s)) for a, k, s in record["b"])
        ranges = tuple(
            JournalRange(str(p), int(start), int(end), bytes(d)) for p, start, end, d in record["r"]
        )
    except (KeyError, TypeError, ValueError):
        return None
    return GroupBegin(group, batches, ranges)


def _apply(committed: dict[str, tuple[str, int]], batches: Iterable[BatchRef]) -> None:
    for batch in batches:
        entry = committed.get(batch.agent_id)
        if entry is None or entry[0] != batch.key_id or entry[1] < batch.seq:
            committed[batch.agent_id] = (batch.key_id, batch.seq)


# -- files ---------------------------------------------------------------------------


def _append(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _append_and_sync(fd: int, data: bytes) -> None:
    _append(fd, data)
    os.fsync(fd)


def _range_is_complete(r: JournalRange) -> bool:
    """Whether ``r``'s bytes are all in its file with the recorded digest."""
    if r.end <= r.start:
        return True
    try:
        fd = os.open(r.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        # A day file is compressed only after its day ended, long after its
        # groups were committed: the .gz stands for a complete range.
        return Path(r.path + ".gz").exists()
    try:
        if os.fstat(fd).st_size < r.end:
            return False
        hasher = hashlib.blake2b(digest_size=DIGEST_BYTES)
        pos = r.start
        while pos < r.end:
            chunk = os.pread(fd, min(_VERIFY_CHUNK_BYTES, r.end - pos), pos)
            if not chunk:
                return False
            hasher.update(chunk)
            pos += len(chunk)
        return hasher.digest() == r.digest
    finally:
        os.close(fd)


def _truncate(path: str, size: int) -> int:
    """Cut ``path`` to ``size`` bytes (never extend it); returns the bytes cut."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        current = os.fstat(fd).st_size
        if current <= size:
            return 0
        os.ftruncate(fd, size)
        os.fsync(fd)
        return current - size
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
