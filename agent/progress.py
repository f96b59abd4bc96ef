"""The agent's progress ledger: from read, to spooled under a sequence, to acknowledged.

Three kinds of position exist for a file, and this object keeps them apart:

* acknowledged: in the ``PositionStore``; moves only on the manager's Ack;
* spooled: carried by batches in the ``Spool`` that are not acknowledged yet;
* read ahead: records handed to the batcher but not sealed into a batch.

Reading resumes at the newest of the three (``position``). After a crash the
read-ahead ones are gone and the spooled ones are rebuilt from the spool, so
a record is never read into two batches: the batch that holds it is re-sent
under its own sequence, and the manager drops it if it already handled it.

Sealed batches with records go to the spool; position-only batches (a file
finished or quarantined with no record after the last batch) have nothing to
send, so they wait here until every batch before them is acknowledged, then
go straight to the store. Lost in a crash, they are re-derived by reading the
file's end again, which yields no record twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from trailwarden.agent.batcher import SealedBatch
from trailwarden.agent.positions import FilePosition, PendingCheckpoint, PositionStore
from trailwarden.agent.spool import BatchSummary, Spool, SpooledBatch, Update


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """What one Ack settled."""

    seq: int
    batches: int
    records: int


class Progress:
    """See the module docstring. Owned by the agent's event loop thread."""

    def __init__(self, store: PositionStore, spool: Spool) -> None:
        if spool.acked_seq != store.acked_seq:
            raise ValueError(
                f"spool opened at batch {spool.acked_seq}, positions acknowledge "
                f"{store.acked_seq} (caller bug: open the spool with the store's acked_seq)"
            )
        self.store = store
        self.spool = spool
        self._ahead: dict[str, FilePosition] = {}
        self._marks: deque[tuple[int, tuple[Update, ...]]] = deque()
        self._checkpoint: PendingCheckpoint | None = None
        for _seq, updates in spool.recovered_updates():
            self._ahead.update(updates)

    # -- the tailer's side ------------------------------------------------------------

    def position(self, fingerprint: str) -> FilePosition | None:
        """Where reading of this file resumes (None: from its start)."""
        ahead = self._ahead.get(fingerprint)
        return ahead if ahead is not None else self.store.get(fingerprint)

    def read(self, fingerprint: str, position: FilePosition) -> None:
        """The tailer consumed the file up to ``position`` (not acknowledged yet)."""
        if self.store.get(fingerprint) == position:
            self._ahead.pop(fingerprint, None)  # already acknowledged
        else:
            self._ahead[fingerprint] = position

    def seal(self, batch: SealedBatch) -> SpooledBatch | None:
        """Spool a sealed batch under the next sequence number.

        Returns the spooled batch, or None for a position-only batch.

        Raises:
            OSError: the spool could not be written; nothing changed, retry later.
        """
        if batch.records:
            return self.spool.append(batch.records, batch.updates)
        if self.spool.last_seq <= self.store.acked_seq:
            self._apply(batch.updates)
        else:
            self._marks.append((self.spool.last_seq, batch.updates))
        return None

    def forget(self, fingerprints: Iterable[str]) -> int:
        """Forget the acknowledged positions of these files, except those with
        batches still on their way; returns how many were forgotten."""
        return self.store.forget(fp for fp in fingerprints if fp not in self._ahead)

    @property
    def read_ahead_files(self) -> int:
        return len(self._ahead)

    # -- the sender's side ------------------------------------------------------------

    def acknowledged(self, seq: int, batches: Iterable[BatchSummary]) -> Acknowledged:
        """The manager acknowledged every batch up to ``seq``; ``batches`` are
        the ones this Ack newly covers, oldest first."""
        count = records = 0
        store, settle = self.store, self._settle
        for batch in batches:
            store.apply(batch.updates)
            settle(batch.updates)
            count += 1
            records += batch.records
        store.apply((), acked_seq=seq)
        self.spool.acknowledge(seq, records)
        marks = self._marks
        while marks and marks[0][0] <= seq:
            self._apply(marks.popleft()[1])
        return Acknowledged(seq, count, records)

    def _apply(self, updates: tuple[Update, ...]) -> None:
        self.store.apply(updates)
        self._settle(updates)

    def _settle(self, updates: tuple[Update, ...]) -> None:
        ahead = self._ahead
        for fingerprint, position in updates:
            if ahead.get(fingerprint) == position:
                del ahead[fingerprint]  # the store caught up with the reader

    # -- durability -------------------------------------------------------------------

    def begin_checkpoint(self) -> PendingCheckpoint | None:
        """Bytes to make acknowledged positions durable (write them with
        ``PendingCheckpoint.write``, on any thread, then ``end_checkpoint``)."""
        self._checkpoint = self.store.begin_checkpoint()
        return self._checkpoint

    def end_checkpoint(self, *, written: bool) -> int:
        """Account for the checkpoint and free spool segments it made
        redundant; returns the bytes freed."""
        pending, self._checkpoint = self._checkpoint, None
        if pending is not None:
            self.store.end_checkpoint(pending, written=written)
        return self.spool.release_through(self.store.durable_seq)

    def checkpoint(self) -> int:
        """Both halves, here and now (blocking)."""
        pending = self.begin_checkpoint()
        written = False
        try:
            if pending is not None:
                pending.write()
            written = True
        finally:
            freed = self.end_checkpoint(written=written)
        return freed
