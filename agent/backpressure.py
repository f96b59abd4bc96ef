"""Backpressure, in one place: reading waits while the spool is full.

The agent never drops a record. When the manager is down or slower than the
files grow, batches accumulate in the disk spool up to ``spool.max_bytes``;
at that point the tailer stops at its next pause point and waits here until
acknowledgements free whole spool segments (``room_freed``, called after each
checkpoint). Everything upstream of the spool is bounded by one open batch.
"""

from __future__ import annotations

import asyncio
import logging
import time

from trailwarden.agent.spool import Spool

log = logging.getLogger("trailwarden.agent")


class SpoolBackpressure:
    def __init__(self, spool: Spool, stopping: asyncio.Event) -> None:
        self._spool = spool
        self._stopping = stopping
        self._room = asyncio.Event()
        self._paused_since: float | None = None
        self.pauses = 0
        self.paused_seconds = 0.0

    @property
    def paused(self) -> bool:
        return self._paused_since is not None

    async def wait_for_room(self) -> None:
        """Return at once if the spool has room, else when it has (or on stop)."""
        spool = self._spool
        if not spool.full:
            return
        self._paused_since = time.monotonic()
        self.pauses += 1
        log.warning(
            "Spool full (%d of %d bytes, %d batches unacknowledged): reading paused until "
            "the manager acknowledges.",
            spool.bytes,
            spool.max_bytes,
            spool.unacked_batches,
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while spool.full and not self._stopping.is_set():
                self._room.clear()
                room = asyncio.ensure_future(self._room.wait())
                try:
                    await asyncio.wait((room, stop), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    room.cancel()
        finally:
            stop.cancel()
            paused = time.monotonic() - self._paused_since
            self.paused_seconds += paused
            self._paused_since = None
        if not spool.full:
            log.info("Spool has room again after %.1f s: reading resumed.", paused)

    def room_freed(self) -> None:
        """Space was released in the spool: wake a waiting reader."""
        self._room.set()
