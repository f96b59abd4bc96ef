"""A small agent for the server tests: a real ``AgentConnection`` over a real loopback socket.

It does what the real agent's sender does on the wire, and nothing else: the
handshake, batches, heartbeats, Close, and reading the manager's events with
a deadline, so a test can assert on each Ack, Close or Error it gets back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence

from trailwarden.common.wire import (
    NEED_DATA,
    Ack,
    AgentConnection,
    Batch,
    Close,
    CloseReason,
    ConnectionClosed,
    Established,
    Heartbeat,
    ProtocolError,
    Record,
)
from trailwarden.common.wire.events import ReceivedEvent

READ_TIMEOUT_S = 10.0


class TestAgent:
    __test__ = False  # not a pytest class

    def __init__(self, agent_id: str, key: str, port: int, host: str = "127.0.0.1") -> None:
        self.agent_id = agent_id
        self.key = key.encode()
        self.port = port
        self.host = host
        self.conn = AgentConnection(agent_id, self.key)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.acked = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.conn.data_to_send())

    async def connect(self) -> Established:
        """Open the socket and complete the handshake."""
        event = await self.handshake()
        assert isinstance(event, Established), event
        return event

    async def handshake(self) -> ReceivedEvent:
        """Open the socket and return how the handshake ended (Established or Error)."""
        await self.open()
        return await self.next_event()

    async def next_event(self, timeout_s: float = READ_TIMEOUT_S) -> ReceivedEvent:
        """The next event from the manager (raises ProtocolError as the connection does)."""
        assert self.reader is not None and self.writer is not None
        async with asyncio.timeout(timeout_s):
            while True:
                event = self.conn.next_event()
                pending = self.conn.data_to_send()
                if pending and not self.writer.is_closing():
                    with contextlib.suppress(ConnectionError):
                        self.writer.write(pending)
                if event is NEED_DATA:
                    try:
                        data = await self.reader.read(65536)
                    except ConnectionError:  # reset, or our own write failed
                        data = b""
                    self.conn.receive_data(data)
                    continue
                if isinstance(event, Ack):
                    self.acked = event.seq
                return event

    async def send_batch(self, seq: int, records: Sequence[Record]) -> None:
        assert self.writer is not None
        self.writer.write(self.conn.send(Batch(seq, tuple(records))))
        await self.writer.drain()

    async def heartbeat(self) -> None:
        assert self.writer is not None
        self.writer.write(self.conn.send(Heartbeat()))
        await self.writer.drain()

    async def wait_ack(self, seq: int, timeout_s: float = READ_TIMEOUT_S) -> None:
        """Read events until an Ack covers ``seq``; anything but Ack/Heartbeat fails."""
        async with asyncio.timeout(timeout_s):
            while self.acked < seq:
                event = await self.next_event()
                assert isinstance(event, Ack | Heartbeat), f"expected an Ack, got {event!r}"

    async def close(self, reason: CloseReason = CloseReason.SHUTDOWN) -> list[ReceivedEvent]:
        """Say Close, read until the manager's Close (or the end); return what came."""
        assert self.writer is not None
        self.writer.write(self.conn.send(Close(reason, "test agent closing")))
        seen: list[ReceivedEvent] = []
        with contextlib.suppress(ProtocolError):
            while True:
                event = await self.next_event()
                seen.append(event)
                if isinstance(event, Close | ConnectionClosed):
                    break
        self.abort()
        return seen

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


def records(count: int, tag: str, size: int = 600, *, random: bool = False) -> list[Record]:
    """``count`` distinct CloudTrail-like records whose eventID is ``<tag>-<n>``.

    ``random`` pads with random hex, which zlib cannot shrink (frames of full size).
    """
    out = []
    for n in range(count):
        pad_len = max(0, size - 300)
        pad = os.urandom(pad_len // 2).hex() if random else "x" * pad_len
        text = (
            '{"integration":"aws","aws":{"log_info":{"s3bucket":"b","log_file":"f.json.gz"},'
            '"eventVersion":"1.08","eventSource":"ec2.amazonaws.com","eventName":"RunInstances",'
            f'"awsRegion":"us-east-1","eventID":"{tag}-{n}","note":"{pad}",'
            '"source":"cloudtrail","aws_account_id":"123456789012"}}'
        )
        out.append(Record("AWSLogs/123456789012/CloudTrail/us-east-1/f.json.gz", text))
    return out
