"""A small manager for the agent's tests: real loopback TCP, the real protocol.

It speaks ``common.wire.ManagerConnection`` and does what the real manager's
duplicate check does: per agent, the highest batch sequence handled so far;
a batch at or below it is acknowledged again without being "analysed". It
also checks what the agent must guarantee: a sequence number is never reused
for different records.

``hold_acks`` makes it analyse batches but not acknowledge them (a manager
that crashes between handling a batch and acking it); ``kill`` drops every
connection without a word, like a SIGKILL; ``start`` again on the same port
keeps its memory (the durable part of a real manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field

from trailwarden.common.wire import (
    NEED_DATA,
    Ack,
    Batch,
    Close,
    CloseReason,
    ConnectionClosed,
    Error,
    Heartbeat,
    ManagerConnection,
    ProtocolError,
    Record,
)

AGENT_ID = "001"
AGENT_KEY = "a3f1c2d4e5b6a7980123456789abcdef0123456789abcdef0123456789abcdef"


@dataclass
class Received:
    analysed: list[Record] = field(default_factory=list)
    batches: dict[int, tuple[Record, ...]] = field(default_factory=dict)
    duplicates: int = 0
    reused: list[int] = field(default_factory=list)  # seqs resent with other records
    last_seq: int = 0


class MiniManager:
    def __init__(self, keys: dict[str, str] | None = None, *, port: int = 0) -> None:
        self.keys = keys if keys is not None else {AGENT_ID: AGENT_KEY}
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.agents: dict[str, Received] = {}
        self.hold_acks = False
        self.ack_delay_s = 0.0
        self.close_after_batches: int | None = None  # send Close(REBALANCE) after N batches
        self.connections = 0
        self.heartbeats = 0
        self.errors: list[str] = []
        self.changed = asyncio.Event()
        self._held: dict[asyncio.StreamWriter, tuple[ManagerConnection, int]] = {}

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def kill(self) -> None:
        """Stop listening and drop every connection at once (no Close)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        await asyncio.sleep(0)

    async def stop(self) -> None:
        await self.kill()

    def release_acks(self) -> None:
        """Stop holding acks and acknowledge everything analysed so far."""
        self.hold_acks = False
        for writer, (conn, seq) in list(self._held.items()):
            if seq and not writer.is_closing():
                with contextlib.suppress(ProtocolError):
                    writer.write(conn.send(Ack(seq)))
        self._held.clear()

    # -- views ----------------------------------------------------------------------

    def received(self, agent_id: str = AGENT_ID) -> Received:
        return self.agents.setdefault(agent_id, Received())

    def event_ids(self, agent_id: str = AGENT_ID) -> Counter[str]:
        """How many times each CloudTrail eventID was analysed."""
        ids: Counter[str] = Counter()
        for record in self.received(agent_id).analysed:
            ids[json.loads(record.text)["aws"]["eventID"]] += 1
        return ids

    async def wait_for(self, predicate, limit_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        async def poll() -> None:
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.05)

        await asyncio.wait_for(poll(), limit_s)

    # -- one connection -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        conn = ManagerConnection(lambda agent_id: self._key(agent_id))
        handled = 0
        try:
            while True:
                data = await reader.read(65536)
                conn.receive_data(data)
                while True:
                    try:
                        event = conn.next_event()
                    except ProtocolError as exc:
                        self.errors.append(str(exc))
                        writer.write(conn.data_to_send())
                        return
                    out = conn.data_to_send()
                    if out:
                        writer.write(out)
                    if event is NEED_DATA:
                        break
                    if isinstance(event, Batch):
                        await self._batch(conn, writer, event)
                        handled += 1
                        if (
                            self.close_after_batches is not None
                            and handled >= self.close_after_batches
                        ):
                            writer.write(conn.send(Close(CloseReason.REBALANCE, "test")))
                            await writer.drain()
                            return
                    elif isinstance(event, Heartbeat):
                        self.heartbeats += 1
                    elif isinstance(event, (Close, ConnectionClosed, Error)):
                        return
                self.changed.set()
                if not data:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self.writers.discard(writer)
            self._held.pop(writer, None)
            writer.close()
            self.changed.set()

    def _key(self, agent_id: str) -> bytes | None:
        key = self.keys.get(agent_id)
        return key.encode() if key is not None else None

    async def _batch(
        self, conn: ManagerConnection, writer: asyncio.StreamWriter, batch: Batch
    ) -> None:
        assert conn.agent_id is not None
        state = self.received(conn.agent_id)
        if batch.seq <= state.last_seq:
            state.duplicates += 1
            if state.batches.get(batch.seq) != batch.records:
                state.reused.append(batch.seq)
        else:
            state.batches[batch.seq] = batch.records
            state.analysed.extend(batch.records)
            state.last_seq = batch.seq
        self.changed.set()
        if self.ack_delay_s:
            await asyncio.sleep(self.ack_delay_s)
        if self.hold_acks:
            self._held[writer] = (conn, batch.seq)
            return
        writer.write(conn.send(Ack(batch.seq)))
