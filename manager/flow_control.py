"""Backpressure: the one object that decides whether sessions may read from their agents.

Theory of operation
-------------------
Every batch a session hands to the analysis pipeline is counted here (events
and record bytes) until the pipeline has finished it (analysed, written,
acknowledged). Above either high-water mark the flow is *paused*: each session
checks ``paused`` before its next read and, if set, waits for ``resumed``. A
session that does not read lets its socket buffers fill, and TCP's own flow
control then stops the agent, which keeps the batch in its durable spool:
nothing is dropped, the manager's memory stays bounded, and the agents slow
down to what analysis sustains.

Hysteresis: reading resumes only once both counts are below half their
high-water marks, so a manager at its limit does not flip between paused and
resumed on every batch.

What a paused flow still admits is bounded: a session finishes the frames it
already has (at most one read buffer) before it checks again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class FlowControl:
    """Counts work queued for analysis; pauses reading above the high-water marks.

    Args:
        high_water_events: events queued at which reading pauses.
        high_water_bytes: record bytes queued at which reading pauses.
    """

    __slots__ = (
        "_high_events",
        "_high_bytes",
        "_low_events",
        "_low_bytes",
        "events",
        "bytes",
        "_resumed",
        "_paused",
        "_paused_since",
        "_clock",
        "resumed_at",
        "pauses",
        "paused_s",
    )

    def __init__(
        self,
        high_water_events: int,
        high_water_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if high_water_events <= 0 or high_water_bytes <= 0:
            raise ValueError("flow control: high-water marks must be > 0")
        self._high_events = high_water_events
        self._high_bytes = high_water_bytes
        self._low_events = high_water_events // 2
        self._low_bytes = high_water_bytes // 2
        self.events = 0
        self.bytes = 0
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._paused = False
        self._paused_since = 0.0
        self._clock = clock
        # When reading last resumed: a session that waited meanwhile was not idle.
        self.resumed_at = clock()
        self.pauses = 0
        self.paused_s = 0.0

    @property
    def paused(self) -> bool:
        return self._paused

    async def resumed(self) -> None:
        """Return once reading may go on (at once when not paused)."""
        if self._paused:
            await self._resumed.wait()

    def add(self, events: int, nbytes: int) -> None:
        """A batch entered the pipeline."""
        self.events += events
        self.bytes += nbytes
        if not self._paused and (
            self.events >= self._high_events or self.bytes >= self._high_bytes
        ):
            self._paused = True
            self._paused_since = self._clock()
            self.pauses += 1
            self._resumed.clear()

    def remove(self, events: int, nbytes: int) -> None:
        """A batch left the pipeline (finished, or dropped at shutdown)."""
        self.events -= events
        self.bytes -= nbytes
        if self._paused and self.events < self._low_events and self.bytes < self._low_bytes:
            self._paused = False
            now = self._clock()
            self.paused_s += now - self._paused_since
            self.resumed_at = now
            self._resumed.set()

    def stats(self) -> dict[str, int | float | bool]:
        paused_s = self.paused_s
        if self._paused:
            paused_s += self._clock() - self._paused_since
        return {
            "queued_events": self.events,
            "queued_bytes": self.bytes,
            "paused": self._paused,
            "pauses": self.pauses,
            "paused_s": round(paused_s, 3),
        }
