"""One agent connection: bytes from the socket through ``ManagerConnection`` to the pipeline.

Theory of operation
-------------------
A session is the I/O shell around the sans-I/O ``ManagerConnection``. Its
task reads up to ``RECV_BYTES`` at a time, feeds them to the connection and
handles every event the bytes completed:

* the handshake frames are answered by the connection itself (written from
  ``data_to_send``); the key lookup it calls refuses an agent that is not in
  client.keys or connects from an address its entry does not allow;
* ``Established``: the server registers the agent (a newer connection of the
  same agent replaces an older one);
* ``Batch``: counted for the agent, handed to the pipeline, acknowledged later
  through ``acknowledge`` (cumulative: one Ack covers every earlier batch);
* ``Heartbeat``: nothing but liveness;
* ``Close`` from the agent: the acknowledgements still due are sent (bounded
  wait), then our Close, then the socket is closed;
* a protocol error: the connection's courtesy ``Error`` is written, the server
  counts and logs the reason, the socket is closed.

Before each read the session asks the server's ``FlowControl`` whether it may
read (backpressure). It keeps no timers: the server's sweeper compares
``started``/``last_frame`` with the handshake and idle deadlines and cuts
sessions that miss them, and cuts a peer that leaves too many of our bytes
unread. Cutting closes the transport; the pending read returns and the task
ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final

from trailwarden.common.keys import AgentKey
from trailwarden.common.wire import (
    NEED_DATA,
    Ack,
    AuthenticationFailed,
    Batch,
    Close,
    CloseReason,
    ConnectionClosed,
    ConnectionLost,
    Error,
    Established,
    Heartbeat,
    IntegrityError,
    LocalProtocolError,
    ManagerConnection,
    RemoteProtocolError,
    State,
    UnknownAgent,
    UnsupportedVersion,
)
from trailwarden.manager.agent_state import AgentActivity
from trailwarden.manager.batch_journal import key_id
from trailwarden.manager.pipeline import AgentIdentity

if TYPE_CHECKING:
    from trailwarden.manager.server import RemoteServer

log = logging.getLogger(__name__)

# Bytes per socket read: several typical batch frames (~100-400 KiB each), so a
# busy agent costs few reads, while an idle one holds no buffer at all.
RECV_BYTES: Final = 256 * 1024
# After the agent's Close: how long its outstanding batches may take to be
# acknowledged before our Close goes out anyway.
AGENT_CLOSE_ACK_TIMEOUT_S: Final = 10.0
# States in which an Ack or our Close may still be sent.
_SENDABLE: Final = frozenset({State.OPEN, State.AGENT_CLOSED})


def problem_kind(exc: RemoteProtocolError) -> str:
    """The status counter a peer's protocol violation is counted under."""
    if isinstance(exc, UnknownAgent):
        return "unknown_agent"
    if isinstance(exc, AuthenticationFailed):
        return "auth_failed"
    if isinstance(exc, UnsupportedVersion):
        return "unsupported_version"
    if isinstance(exc, IntegrityError):
        return "integrity"
    if isinstance(exc, ConnectionLost):
        return "connection_lost"
    # framing.py words a length over the stage's limit this way.
    if str(exc).startswith("frame length "):
        return "oversized_frame"
    return "protocol_error"


class Session:
    """One accepted connection; ``run()`` is its task."""

    __slots__ = (
        "_server",
        "_reader",
        "_writer",
        "transport",
        "peer",
        "peer_ip",
        "conn",
        "agent",
        "_key_entry",
        "activity",
        "started",
        "last_frame",
        "last_ack",
        "last_submitted",
        "closing",
        "closing_since",
        "_acks_done",
        "_handling",
        "_ack_due",
        "task",
    )

    def __init__(
        self, server: RemoteServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self.transport = writer.transport
        self.peer_ip, self.peer = _peer_names(writer.get_extra_info("peername"))
        self.conn = ManagerConnection(self._lookup)
        self.agent: AgentIdentity | None = None
        self._key_entry: AgentKey | None = None
        self.activity: AgentActivity | None = None
        self.started = self.last_frame = time.monotonic()
        self.last_ack = 0
        self.last_submitted = 0
        self.closing = False
        self.closing_since = 0.0  # when close() began (the sweeper aborts laggards)
        self._acks_done: asyncio.Event | None = None
        # While one read's events are handled, Acks are held back and the
        # highest goes out once at the end: one frame and one socket write
        # instead of one per batch (an Ack is cumulative).
        self._handling = False
        self._ack_due = 0
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        who = self.agent.agent_id if self.agent is not None else "?"
        return f"<Session agent={who} peer={self.peer} state={self.conn.state.name}>"

    @property
    def key_entry(self) -> AgentKey | None:
        """The client.keys entry the agent authenticated with."""
        return self._key_entry

    # -- the task ------------------------------------------------------------------

    async def run(self) -> None:
        self.task = asyncio.current_task()
        try:
            close = await self._read_loop()
            if close is not None:
                await self._after_agent_close(close)
        except OSError as exc:
            self._server.peer_problem(self, "connection_lost", f"connection lost: {exc}")
        finally:
            self.closing = True
            if not self.transport.is_closing():
                self.transport.abort()

    async def _read_loop(self) -> Close | None:
        """Read and handle until the connection ends; the agent's Close if it sent one."""
        conn = self.conn
        read = self._reader.read
        flow = self._server.flow
        while not self.closing:
            if flow.paused:
                await flow.resumed()
                if self.closing:
                    return None
            data = await read(RECV_BYTES)
            if self.closing:
                return None
            activity = self.activity
            if activity is not None:
                activity.bytes_received += len(data)
                activity.last_seen = time.time()
            conn.receive_data(data)
            self._handling = True
            try:
                outcome = self._handle_events()
            finally:
                self._handling = False
                if self._ack_due > self.last_ack:
                    self.acknowledge(self._ack_due)
            if outcome is not True:
                return outcome if isinstance(outcome, Close) else None
        return None

    def _handle_events(self) -> bool | Close:
        """Handle every complete event; True to keep reading, else why to stop."""
        conn = self.conn
        server = self._server
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._write(conn.data_to_send())  # the courtesy Error, if still legal
                server.peer_problem(self, problem_kind(exc), str(exc))
                self._close_transport()
                return False
            except LocalProtocolError as exc:  # pragma: no cover - a bug in this shell
                log.error("Session %s: %s (bug).", self, exc)
                self._close_transport()
                return False
            if event is NEED_DATA:
                pending = conn.data_to_send()
                if pending:
                    self._writer.write(pending)
                return True
            self.last_frame = time.monotonic()
            kind = type(event)
            if kind is Batch:
                assert isinstance(event, Batch)
                self._on_batch(event)
            elif kind is Heartbeat:
                continue
            elif kind is Established:
                self._write(conn.data_to_send())
                assert isinstance(event, Established)
                if not self._on_established(event):
                    return False
            elif kind is Close:
                assert isinstance(event, Close)
                return event
            elif kind is Error:
                assert isinstance(event, Error)
                server.peer_gone(
                    self, f"the agent reported an error: {event.code.name}: {event.message}"
                )
                self._close_transport()
                return False
            elif kind is ConnectionClosed:
                return False

    def _on_established(self, event: Established) -> bool:
        entry = self._key_entry
        assert entry is not None  # the lookup ran when the hello arrived
        self.agent = AgentIdentity(entry.agent_id, entry.name, entry.ip, key_id(entry.wire_key()))
        activity = self._server.established(self)
        if activity is None:
            return False
        self.activity = activity
        return True

    def _on_batch(self, batch: Batch) -> None:
        server = self._server
        if not server.accepting_batches:
            server.batch_refused(len(batch.records))  # not acknowledged: the agent resends
            return
        activity = self.activity
        assert activity is not None and self.agent is not None
        count = len(batch.records)
        activity.batches_received += 1
        activity.events_received += count
        activity.last_batch_seq = batch.seq
        self.last_submitted = batch.seq
        server.batch_received(count)
        server.pipeline.submit(self, self.agent, batch)

    async def _after_agent_close(self, close: Close) -> None:
        """The agent said Close: send the Acks still due, then our Close."""
        if self.last_ack < self.last_submitted and self._server.accepting_batches:
            self._acks_done = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acks_done.wait(), AGENT_CLOSE_ACK_TIMEOUT_S)
        if self.closing:  # closed meanwhile (shutdown, replaced, removed)
            return
        self._server.peer_gone(self, f"the agent closed the connection ({close.reason.name})")
        self.close(close.reason, "")

    # -- called by the pipeline and the server ---------------------------------------

    def acknowledge(self, seq: int) -> None:
        """Send Ack(seq) if it moves forward and the connection can still carry it."""
        conn = self.conn
        if self._acks_done is not None and seq >= self.last_submitted:
            self._acks_done.set()  # nothing more is due, sent or not
        if seq <= self.last_ack or conn.state not in _SENDABLE or self.transport.is_closing():
            return
        if self._handling:
            self._ack_due = max(self._ack_due, seq)
            return
        data = conn.send(Ack(seq))
        self.last_ack = seq
        self._writer.write(data)

    def close(self, reason: CloseReason, message: str) -> None:
        """End the connection politely: our Close, then the socket (after its buffer drains)."""
        if self.closing:
            return
        self.closing = True
        if self._acks_done is not None:
            self._acks_done.set()  # nothing more will be sent: stop waiting for it
        if self.conn.state in _SENDABLE and not self.transport.is_closing():
            with contextlib.suppress(LocalProtocolError):
                self._writer.write(self.conn.send(Close(reason, message)))
        self._close_transport()

    def abort(self) -> None:
        """Drop the connection at once, without a word (handshake deadline, unread bytes)."""
        self.closing = True
        self.transport.abort()

    # -- internals ---------------------------------------------------------------------

    def _lookup(self, agent_id: str) -> bytes | None:
        entry = self._server.keys.lookup(agent_id, self.peer_ip)
        self._key_entry = entry
        return None if entry is None else entry.wire_key()

    def _write(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            self._writer.write(data)

    def _close_transport(self) -> None:
        """Close after our last bytes are sent (the sweeper aborts if that never happens)."""
        if not self.closing_since:
            self.closing_since = time.monotonic()
        self.closing = True
        if not self.transport.is_closing():
            self._writer.close()


def _peer_names(peername: object) -> tuple[str, str]:
    """(address, "address:port") of the peer; IPv6 as "[address]:port"."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = str(peername[0]), peername[1]
        if ":" in host:
            return host, f"[{host}]:{port}"
        return host, f"{host}:{port}"
    return "unknown", "unknown"
