"""How far each file has been delivered, keyed by content fingerprint, on disk.

A position says where reading resumes in one file: the next record index of a
CloudTrail object, or the byte offset of the next line of a JSON-lines file
(plus how many records of that line were already taken, when a line holds a
whole ``{"Records": [...]}`` document). Positions here move only when the
manager acknowledges the batch that carried them; ``acked_seq`` is the
highest acknowledged batch sequence, saved with them so both move together.

Theory of operation
-------------------
Two files in the agent's data directory:

``positions.json``
    A snapshot ``{"version": 1, "generation": G, "acked_seq": A, "files":
    {fingerprint: entry}}``, replaced atomically (temporary file, fsync,
    rename).
``positions.journal``
    One JSON line per checkpoint since that snapshot: ``{"g": G, "a": A,
    "f": {fingerprint: entry | null}}`` with only the entries that changed
    (``null``: forgotten), appended and fsync'ed.

A checkpoint costs one small append however many files are tracked (a mirror
of a busy bucket holds ~100k finished files). When the journal outgrows the
snapshot, the next checkpoint writes a snapshot of generation G+1 and empties
the journal. Loading reads the snapshot and replays the journal lines of the
same generation in order; a line of an older generation is the leftover of a
compaction interrupted after its rename, and a torn last line is the leftover
of a crash mid-append; both are skipped (the torn tail is cut off).

Entries are compact JSON arrays ``[kind, offset, index, state, path, size,
note, updated]`` (``FilePosition.to_list``); the spool stores the same shape.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeGuard

import orjson

from trailwarden.agent.atomic_file import remove_stale_temporaries, replace_file

SNAPSHOT_NAME: Final = "positions.json"
JOURNAL_NAME: Final = "positions.journal"
FORMAT_VERSION: Final = 1
# The journal is folded into a new snapshot once it is larger than the
# snapshot and at least this large: below it, replaying is instant anyway.
COMPACT_MIN_BYTES: Final = 1024 * 1024
# A positions file is small; a larger one is not ours (or is corrupt).
MAX_POSITIONS_BYTES: Final = 512 * 1024 * 1024
# File paths are kept for messages and status only; longer ones are cut.
MAX_PATH_CHARS: Final = 4096


class PositionsError(ValueError):
    """The positions files are unreadable or malformed (the files' fault)."""


class FileKind(enum.Enum):
    OBJECT = "o"  # a CloudTrail object: position is a record index
    LINES = "l"  # an append-only JSON-lines file: position is a byte offset


class FileState(enum.Enum):
    READING = "r"  # more may follow
    DONE = "d"  # an object read to its end (JSON-lines files are never done)
    QUARANTINED = "q"  # an object that could not be read; ``note`` says why


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where reading resumes in one file (see the module docstring)."""

    kind: FileKind
    index: int = 0
    offset: int = 0
    state: FileState = FileState.READING
    path: str = ""
    size: int = 0
    note: str = ""
    # Epoch seconds of the read that produced it; not part of the position.
    updated: int = field(default=0, compare=False)

    @property
    def finished(self) -> bool:
        return self.state is not FileState.READING

    def to_list(self) -> list[Any]:
        return [
            self.kind.value,
            self.offset,
            self.index,
            self.state.value,
            self.path,
            self.size,
            self.note,
            self.updated,
        ]

    @classmethod
    def from_list(cls, item: Any, where: str) -> FilePosition:
        """Parse ``to_list`` output.

        Raises:
            PositionsError: ``item`` is not a position (``where`` names it).
        """
        try:
            kind, offset, index, state, path, size, note, updated = item
            position = cls(
                FileKind(kind),
                index,
                offset,
                FileState(state),
                path,
                size,
                note,
                updated,
            )
        except (TypeError, ValueError):
            raise PositionsError(f"{where}: not a file position: {item!r:.200}") from None
        ints = (offset, index, size, updated)
        if not all(type(v) is int and v >= 0 for v in ints) or not (
            type(path) is str and type(note) is str
        ):
            raise PositionsError(f"{where}: not a file position: {item!r:.200}")
        return position


def clip_path(path: str) -> str:
    return path if len(path) <= MAX_PATH_CHARS else "..." + path[-MAX_PATH_CHARS:]


@dataclass(slots=True)
class PendingCheckpoint:
    """One checkpoint's bytes, made on the event loop and written by ``write``
    on any thread (the store is not touched while it runs)."""

    journal_fd: int
    snapshot_path: Path
    line: bytes | None  # a journal line, or None when compacting
    snapshot: bytes | None
    acked_seq: int
    generation: int

    def write(self) -> None:
        if self.snapshot is not None:
            replace_file(self.snapshot_path, self.snapshot)
            os.ftruncate(self.journal_fd, 0)
            os.fsync(self.journal_fd)
        else:
            assert self.line is not None
            view = memoryview(self.line)
            while view:
                view = view[os.write(self.journal_fd, view) :]
            os.fsync(self.journal_fd)


class PositionStore:
    """The durable positions of one agent (see the module docstring).

    Not thread-safe: one owner mutates it; only ``PendingCheckpoint.write``
    may run elsewhere.
    """

    def __init__(
        self,
        directory: Path,
        entries: dict[str, FilePosition],
        acked_seq: int,
        generation: int,
        journal_fd: int,
        journal_bytes: int,
        snapshot_bytes: int,
    ) -> None:
        self.directory = directory
        self._entries = entries
        self._acked_seq = acked_seq
        self._durable_seq = acked_seq
        self._generation = generation
        self._journal_fd = journal_fd
        self._journal_bytes = journal_bytes
        self._snapshot_bytes = snapshot_bytes
        self._changed: set[str] = set()
        self._seq_changed = False
        self._checkpointing = False
        # After a failed write the next checkpoint is a full snapshot: it holds
        # everything, whatever part of the failed one reached the disk.
        self._force_compact = False

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path) -> PositionStore:
        """Load (or start) the store in ``directory``.

        Raises:
            PositionsError: a positions file is malformed.
            OSError: the directory cannot be used.
        """
        directory.mkdir(parents=True, exist_ok=True)
        snapshot_path = directory / SNAPSHOT_NAME
        remove_stale_temporaries(snapshot_path)
        entries: dict[str, FilePosition] = {}
        acked_seq = generation = snapshot_bytes = 0
        if snapshot_path.exists():
            raw = _read_bounded(snapshot_path)
            snapshot_bytes = len(raw)
            generation, acked_seq = _parse_snapshot(raw, str(snapshot_path), entries)
        journal_path = directory / JOURNAL_NAME
        fd = os.open(journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            journal = os.pread(fd, MAX_POSITIONS_BYTES + 1, 0)
            if len(journal) > MAX_POSITIONS_BYTES:
                raise PositionsError(f"{journal_path}: larger than {MAX_POSITIONS_BYTES} bytes")
            good, acked_seq = _replay_journal(
                journal, str(journal_path), generation, acked_seq, entries
            )
            if good < len(journal):
                os.ftruncate(fd, good)  # a torn last line, or an older generation
        except BaseException:
            os.close(fd)
            raise
        return cls(directory, entries, acked_seq, generation, fd, good, snapshot_bytes)

    def close(self) -> None:
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1

    # -- reading ------------------------------------------------------------------

    @property
    def acked_seq(self) -> int:
        """Highest acknowledged batch sequence (in memory; may be ahead of disk)."""
        return self._acked_seq

    @property
    def durable_seq(self) -> int:
        """Highest acknowledged batch sequence that a checkpoint made durable."""
        return self._durable_seq

    @property
    def dirty(self) -> bool:
        return bool(self._changed) or self._seq_changed or self._force_compact

    def get(self, fingerprint: str) -> FilePosition | None:
        return self._entries.get(fingerprint)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._entries

    def items(self) -> Iterator[tuple[str, FilePosition]]:
        return iter(self._entries.items())

    # -- changing -----------------------------------------------------------------

    def apply(
        self, updates: Iterable[tuple[str, FilePosition]], acked_seq: int | None = None
    ) -> None:
        """Record acknowledged positions (and the batch sequence that carried them)."""
        entries, changed = self._entries, self._changed
        for fingerprint, position in updates:
            entries[fingerprint] = position
            changed.add(fingerprint)
        if acked_seq is not None and acked_seq > self._acked_seq:
            self._acked_seq = acked_seq
            self._seq_changed = True

    def forget(self, fingerprints: Iterable[str]) -> int:
        """Drop these files' positions (the caller decided they are gone);
        returns how many were there."""
        count = 0
        for fp in fingerprints:
            if self._entries.pop(fp, None) is not None:
                self._changed.add(fp)
                count += 1
        return count

    # -- making it durable --------------------------------------------------------

    def begin_checkpoint(self) -> PendingCheckpoint | None:
        """The bytes for a checkpoint of every change so far, or None if clean.

        Call ``end_checkpoint`` after writing it, before the next one.
        """
        if not self.dirty:
            return None
        if self._checkpointing:
            raise RuntimeError("a checkpoint is already being written (caller bug)")
        compact = self._force_compact or self._journal_bytes > max(
            COMPACT_MIN_BYTES, self._snapshot_bytes
        )
        generation = self._generation + 1 if compact else self._generation
        line = snapshot = None
        if compact:
            snapshot = orjson.dumps(
                {
                    "version": FORMAT_VERSION,
                    "generation": generation,
                    "acked_seq": self._acked_seq,
                    "files": {fp: pos.to_list() for fp, pos in self._entries.items()},
                }
            )
        else:
            entries = self._entries
            changes: dict[str, Any] = {}
            for fp in self._changed:
                pos = entries.get(fp)
                changes[fp] = pos.to_list() if pos is not None else None
            line = orjson.dumps({"g": generation, "a": self._acked_seq, "f": changes}) + b"\n"
        self._changed = set()
        self._seq_changed = False
        self._checkpointing = True
        return PendingCheckpoint(
            self._journal_fd,
            self.directory / SNAPSHOT_NAME,
            line,
            snapshot,
            self._acked_seq,
            generation,
        )

    def end_checkpoint(self, pending: PendingCheckpoint, *, written: bool) -> None:
        """Account for a checkpoint; if writing failed, its changes stay pending."""
        self._checkpointing = False
        if not written:
            self._force_compact = True
            self._seq_changed = True
            return
        self._force_compact = False
        if pending.snapshot is not None:
            self._generation = pending.generation
            self._snapshot_bytes = len(pending.snapshot)
            self._journal_bytes = 0
        else:
            assert pending.line is not None
            self._journal_bytes += len(pending.line)
        self._durable_seq = max(self._durable_seq, pending.acked_seq)

    def checkpoint(self) -> None:
        """Write every change durably, here and now."""
        pending = self.begin_checkpoint()
        if pending is None:
            return
        try:
            pending.write()
        except BaseException:
            self.end_checkpoint(pending, written=False)
            raise
        self.end_checkpoint(pending, written=True)


def _read_bounded(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read(MAX_POSITIONS_BYTES + 1)
    if len(raw) > MAX_POSITIONS_BYTES:
        raise PositionsError(f"{path}: larger than {MAX_POSITIONS_BYTES} bytes")
    return raw


def _parse_snapshot(raw: bytes, where: str, entries: dict[str, FilePosition]) -> tuple[int, int]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PositionsError(
            f"{where}: not valid JSON ({exc}); restore it or remove the "
            "agent's data directory and enroll again"
        ) from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise PositionsError(f"{where}: unsupported positions format (version {version!r})")
    generation, acked_seq, files = doc.get("generation"), doc.get("acked_seq"), doc.get("files")
    if not (_is_count(generation) and _is_count(acked_seq) and isinstance(files, dict)):
        raise PositionsError(f"{where}: generation, acked_seq and files are required")
    for fp, item in files.items():
        entries[fp] = FilePosition.from_list(item, f"{where}: files[{fp!r}]")
    return generation, acked_seq


def _replay_journal(
    journal: bytes, where: str, generation: int, acked_seq: int, entries: dict[str, FilePosition]
) -> tuple[int, int]:
    """Apply the journal's lines of ``generation``; returns (bytes of good
    lines to keep, acked_seq)."""
    good = 0
    pos = 0
    while True:
        end = journal.find(b"\n", pos)
        if end < 0:
            break  # a torn last line: cut off
        try:
            line = orjson.loads(journal[pos:end])
        except orjson.JSONDecodeError:
            break
        if not isinstance(line, dict) or line.get("g") != generation:
            break  # written before the snapshot that replaced them
        seq, changes = line.get("a"), line.get("f")
        if not _is_count(seq) or not isinstance(changes, dict):
            raise PositionsError(f"{where}, byte {pos}: journal line without 'a' and 'f'")
        for fp, item in changes.items():
            if item is None:
                entries.pop(fp, None)
            else:
                entries[fp] = FilePosition.from_list(item, f"{where}, byte {pos}: {fp!r}")
        acked_seq = max(acked_seq, seq)
        pos = good = end + 1
    return good, acked_seq


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0
