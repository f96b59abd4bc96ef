"""Group records into batches by count, bytes and linger time (pure: no I/O, no clock).

Each batch also carries the file positions it completes: after the manager
acknowledges it, reading those files may resume after its last records.
The tailer names the file a record comes from with a ``FileCursor`` and
passes a resume token per record (a record index, or a line offset); the
batcher turns the last token of each file into a ``FilePosition`` only when
the batch is sealed, so the per-record cost is two attribute stores.

A record that would push a non-empty batch over ``max_bytes`` seals the batch
first and starts the next one; a record larger than ``max_bytes`` travels
alone. Position-only changes (a file finished without a further record, a
file quarantined) join the open batch as ``mark``s; a batch sealed with marks
and no records is returned like any other and the caller decides how to
apply it (there is nothing to send).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trailwarden.agent.positions import FilePosition
from trailwarden.common.wire import Record

# Bytes a record costs in a batch besides its text and location: the msgpack
# array and string headers (at most 1 + 5 + 5).
RECORD_OVERHEAD_BYTES = 11


class FileCursor:
    """The file a run of records comes from, and how a resume token becomes
    its position. Owned by the tailer; identity matters, not equality."""

    __slots__ = ("fingerprint", "make_position")

    def __init__(self, fingerprint: str, make_position: Callable[[object], FilePosition]) -> None:
        self.fingerprint = fingerprint
        self.make_position = make_position


@dataclass(frozen=True, slots=True)
class SealedBatch:
    records: tuple[Record, ...]
    updates: tuple[tuple[str, FilePosition], ...]
    nbytes: int  # records' bytes as the batcher counted them


class Batcher:
    """Accumulates one open batch at a time (see the module docstring)."""

    __slots__ = (
        "max_records",
        "max_bytes",
        "linger_s",
        "_records",
        "_bytes",
        "_updates",
        "_cursor",
        "_token",
        "_deadline",
    )

    def __init__(self, *, max_records: int, max_bytes: int, linger_s: float) -> None:
        if max_records < 1 or max_bytes < 1 or linger_s < 0:
            raise ValueError(
                f"max_records and max_bytes must be positive and linger_s >= 0, got "
                f"{max_records}, {max_bytes}, {linger_s}"
            )
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        self._records: list[Record] = []
        self._bytes = 0
        self._updates: dict[str, FilePosition] = {}
        self._cursor: FileCursor | None = None
        self._token: object = None
        self._deadline: float | None = None

    @property
    def deadline(self) -> float | None:
        """When the open batch must be sealed (its linger ends), or None if empty."""
        return self._deadline

    @property
    def pending_records(self) -> int:
        return len(self._records)

    @property
    def empty(self) -> bool:
        return not self._records and not self._updates and self._cursor is None

    def add(
        self, record: Record, nbytes: int, cursor: FileCursor, token: object, now: float
    ) -> SealedBatch | None:
        """Add one record of ``nbytes`` (text + location) read from ``cursor``'s
        file, after which reading would resume at ``token``.

        Returns the batch this record filled, or the batch sealed to make room
        for it; the record itself is then in the next batch.
        """
        sealed = None
        records = self._records
        size = nbytes + RECORD_OVERHEAD_BYTES
        if records and self._bytes + size > self.max_bytes:
            sealed = self._seal()
            records = self._records
        if cursor is not self._cursor:
            self._close_cursor()
            self._cursor = cursor
        if not records and self._deadline is None:
            self._deadline = now + self.linger_s
        records.append(record)
        self._bytes += size
        self._token = token
        # One batch per call: a record that both sealed the previous batch and
        # fills this one stays open until the next add() or its linger.
        if sealed is None and (len(records) >= self.max_records or self._bytes >= self.max_bytes):
            sealed = self._seal()
        return sealed

    def mark(self, fingerprint: str, position: FilePosition, now: float) -> None:
        """A position change with no record attached (it rides with the open batch)."""
        cursor = self._cursor
        if cursor is not None and cursor.fingerprint == fingerprint:
            self._cursor = None  # the mark supersedes the cursor's last token
        self._updates[fingerprint] = position
        if self._deadline is None:
            self._deadline = now + self.linger_s

    def due(self, now: float) -> SealedBatch | None:
        """The open batch, if its linger time is over."""
        if self._deadline is not None and now >= self._deadline:
            return self._seal()
        return None

    def flush(self) -> SealedBatch | None:
        """The open batch now, whatever its size (None if there is nothing)."""
        if self.empty:
            return None
        return self._seal()

    def _close_cursor(self) -> None:
        cursor = self._cursor
        if cursor is not None:
            self._updates[cursor.fingerprint] = cursor.make_position(self._token)
            self._cursor = None

    def _seal(self) -> SealedBatch:
        self._close_cursor()
        batch = SealedBatch(tuple(self._records), tuple(self._updates.items()), self._bytes)
        self._records = []
        self._bytes = 0
        self._updates = {}
        self._deadline = None
        return batch
