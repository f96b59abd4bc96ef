"""Deliver spooled batches to a manager and turn its Acks into durable progress.

Theory of operation
-------------------
One connection at a time, to the first manager in the configured list that
answers. A session is the protocol shell around ``AgentConnection``: TCP
connect, handshake (both bounded by ``connect_timeout_s``), then two loops:

* sending: batches leave in sequence order from the spool (``Spool.get``:
  memory when keeping up, disk after a restart or an outage), at most
  ``max_in_flight`` unacknowledged, after ``Spool.sync_through`` made them
  durable and the optional rate limit allowed them. Encoding (msgpack, zstd,
  AES-GCM) runs on a worker thread: zstd releases the GIL, so the tailer
  keeps reading meanwhile. A Heartbeat goes out when nothing else did for
  ``heartbeat_interval_s``.
* receiving: each Ack settles every in-flight batch up to its sequence
  (``Progress.acknowledged``). No Ack for ``ack_timeout_s`` while batches are
  in flight means the manager is stuck: the session ends.

After the handshake the connection object is used only on the worker
thread, so the loop and the worker never touch it at once.

When a session ends, its in-flight batches are simply sent again on the next
one, under the same sequence numbers; the manager acknowledges a batch it
already handled without analysing it twice.

Reconnecting: a failed attempt moves to the next manager; after a whole round
of failures the sender sleeps a jittered exponential backoff
(``backoff_initial_ms`` doubling up to ``backoff_max_ms``). A session that
lived (an Ack, or ``STABLE_SESSION_S``) resets the backoff, and the next
attempt starts again from the first manager, so a recovered primary is used
again; a manager's Close(REBALANCE) sends the agent to the next one. Errors
carry their policy (``ProtocolError.retriable``, ``ErrorCode.retriable``): a
refused identity (unknown agent, wrong key) or no common protocol version
cannot heal by retrying soon, so the sender logs what to do and retries at
the longest backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Final, TypeVar

from trailwarden.agent.config import DeliveryConfig, ManagerAddress
from trailwarden.agent.identity import AgentIdentity, IdentityError
from trailwarden.agent.progress import Progress
from trailwarden.agent.spool import BatchSummary, SpooledBatch, SpoolError
from trailwarden.agent.status import Counters
from trailwarden.common.wire import (
    NEED_DATA,
    Ack,
    AgentConnection,
    Batch,
    BatchTooLarge,
    Close,
    CloseReason,
    ConnectionClosed,
    Error,
    Established,
    Heartbeat,
    ProtocolError,
)

log = logging.getLogger("trailwarden.agent")
_T = TypeVar("_T")

# Bytes per socket read: a few frames of acks, or one handshake message.
RECV_BYTES: Final = 64 * 1024
# A session that lasted this long counts as healthy even without an Ack.
STABLE_SESSION_S: Final = 30.0
# How long a Close we send may take to leave before the socket is dropped.
CLOSE_TIMEOUT_S: Final = 2.0
# Batches handed to the encoding thread and not encoded yet: two keep it busy
# (one encodes while the next waits); each holds a whole batch's records
# in memory, so more would only raise the agent's footprint.
MAX_QUEUED_ENCODES: Final = 2


class SessionEnded(Exception):
    """Why a session stopped; ``retriable`` is the reconnect policy."""

    def __init__(self, message: str, *, retriable: bool = True, next_manager: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.next_manager = next_manager


@dataclass(slots=True)
class ConnectionView:
    """What status.json shows of the connection."""

    state: str = "disconnected"  # connecting, connected, disconnected, stopped
    manager: str | None = None
    since: float | None = None
    last_ack: float | None = None
    last_error: str | None = None


class RateLimiter:
    """Token bucket: ``rate`` records per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._stamp = time.monotonic()

    async def acquire(self, n: int) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= n  # may go negative: a batch larger than a burst is paid for after
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


class Backoff:
    """Jittered exponential delays: between half and all of initial * 2**n, capped."""

    def __init__(self, initial_s: float, maximum_s: float) -> None:
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * 2 ** min(self.failures, 60))
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def give_up_soon(self) -> None:
        """Jump to the longest delay (errors that retrying soon cannot fix)."""
        while self.initial_s * 2 ** min(self.failures, 60) < self.maximum_s:
            self.failures += 1

    def reset(self) -> None:
        self.failures = 0


class Sender:
    """See the module docstring."""

    def __init__(
        self,
        managers: tuple[ManagerAddress, ...],
        identity: Callable[[], AgentIdentity],
        progress: Progress,
        delivery: DeliveryConfig,
        counters: Counters,
        *,
        encoder: Executor,
    ) -> None:
        if not managers:
            raise ValueError("at least one manager address is required")
        self._managers = managers
        self._identity = identity
        self._progress = progress
        self._spool = progress.spool
        self._config = delivery
        self._counters = counters
        self._encoder = encoder  # one thread: fsync, encode, and all connection calls
        self._closing = False
        self._stopped = asyncio.Event()  # cuts a backoff sleep short
        self._wake = asyncio.Event()
        self._all_acked = asyncio.Event()
        self._backoff = Backoff(delivery.backoff_initial_ms / 1000, delivery.backoff_max_ms / 1000)
        self._limiter = (
            RateLimiter(
                delivery.rate_limit_eps, max(delivery.rate_limit_eps, delivery.max_batch_records)
            )
            if delivery.rate_limit_eps
            else None
        )
        self.view = ConnectionView()
        self.in_flight = 0
        self._reported: set[str] = set()
        self._update_all_acked()

    # -- control --------------------------------------------------------------------

    def wake(self) -> None:
        """New batches are in the spool."""
        self._all_acked.clear()
        self._wake.set()

    async def drain(self, limit_s: float) -> bool:
        """Wait until every spooled batch is acknowledged; False after ``limit_s``."""
        self._update_all_acked()
        try:
            async with asyncio.timeout(limit_s):
                await self._all_acked.wait()
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """End the current session politely (Close) and stop reconnecting."""
        self._closing = True
        self._stopped.set()
        self._wake.set()

    def _update_all_acked(self) -> None:
        if self._spool.unacked_batches == 0:
            self._all_acked.set()
        else:
            self._all_acked.clear()

    # -- connecting -----------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until ``stop``."""
        managers = self._managers
        index = 0
        failures_in_round = 0
        while not self._closing:
            address = managers[index]
            outcome = await self._attempt(address)
            if self._closing:
                break
            if outcome.healthy:
                self._backoff.reset()
                failures_in_round = 0
                # Asked to go elsewhere: the next manager; else the first again.
                index = (index + 1) % len(managers) if outcome.next_manager else 0
                if not outcome.next_manager:
                    continue  # reconnect at once, primary first
            else:
                if not outcome.retriable:
                    self._backoff.give_up_soon()
                failures_in_round += 1
                index = (index + 1) % len(managers)
            if failures_in_round >= len(managers) or outcome.healthy:
                failures_in_round = 0
                delay = self._backoff.next_delay()
                log.info("Reconnecting in %.1f s.", delay)
                await self._sleep(delay)
        self.view.state = "stopped"

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopped.wait()

    async def _attempt(self, address: ManagerAddress) -> _Outcome:
        name = _address_text(address)
        view = self.view
        view.state, view.manager, view.since = "connecting", name, None
        try:
            identity = self._identity()
        except IdentityError as exc:
            self._report(str(exc))
            view.state = "disconnected"
            return _Outcome(healthy=False, retriable=False)
        session: _Session | None = None
        started = time.monotonic()
        try:
            session = await self._open(address, identity)
            view.state, view.since = "connected", time.time()
            self._counters.connections += 1
            self._reported.clear()
            log.info("Connected to manager %s as agent %s.", name, identity.agent_id)
            await session.run()
            return _Outcome(healthy=True)
        except SessionEnded as exc:
            healthy = session is not None and (
                session.acked or time.monotonic() - started >= STABLE_SESSION_S
            )
            if session is None:
                self._counters.connection_failures += 1
            self._report(f"{name}: {exc}")
            return _Outcome(healthy=healthy, retriable=exc.retriable, next_manager=exc.next_manager)
        finally:
            if session is not None:
                await session.close()
            self.in_flight = 0
            if view.state != "stopped":
                view.state = "disconnected"

    def _report(self, message: str) -> None:
        self.view.last_error = message
        if message not in self._reported:  # each distinct failure once per outage
            self._reported.add(message)
            log.warning("Manager connection: %s", message)

    async def _open(self, address: ManagerAddress, identity: AgentIdentity) -> _Session:
        timeout = self._config.connect_timeout_s
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(address.host, address.port)
        except TimeoutError:
            raise SessionEnded(f"no TCP connection within {timeout:g} s") from None
        except OSError as exc:
            raise SessionEnded(f"cannot connect: {exc.strerror or exc}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        session = _Session(self, reader, writer, AgentConnection(identity.agent_id, identity.key))
        try:
            async with asyncio.timeout(timeout):
                await session.handshake()
        except TimeoutError:
            await session.close()
            raise SessionEnded(f"no handshake within {timeout:g} s") from None
        except BaseException:
            await session.close()
            raise
        return session

    # -- what a session reports back ------------------------------------------------

    def acknowledged(self, seq: int, batches: list[BatchSummary]) -> None:
        done = self._progress.acknowledged(seq, batches)
        counters = self._counters
        counters.batches_acked += done.batches
        counters.records_acked += done.records
        self.view.last_ack = time.time()
        self._update_all_acked()


@dataclass(frozen=True, slots=True)
class _Outcome:
    healthy: bool
    retriable: bool = True
    next_manager: bool = False


class _Session:
    """One established connection (see the module docstring).

    After the handshake the ``AgentConnection`` is used only on the sender's
    worker thread (``_call``): batch encoding (zstd and AES-GCM release the
    GIL) overlaps with the tailer, and batches are submitted without waiting
    for the previous one, their frames written in order as they complete.
    """

    def __init__(
        self,
        sender: Sender,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: AgentConnection,
    ) -> None:
        self.sender = sender
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.in_flight: deque[BatchSummary] = deque()
        self.acked = False
        spool = sender._spool
        self.next_seq = spool.acked_seq + 1
        now = time.monotonic()
        self.last_sent = now
        self.waiting_since = now  # for the oldest unacknowledged batch
        self.ended: SessionEnded | None = None
        self.encoding = 0  # batches submitted to the worker, not yet written
        self._loop = asyncio.get_running_loop()

    # -- the worker thread ----------------------------------------------------------

    def _call(self, fn: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        return self._loop.run_in_executor(self.sender._encoder, fn, *args)

    def _encode(self, batch: SpooledBatch) -> bytes:
        """Worker thread: make the batch durable, then seal it."""
        spool = self.sender._spool
        if spool.needs_sync:
            spool.sync_through(batch.seq)
        return self.conn.send(Batch(batch.seq, batch.records))

    def _take_events(self, data: bytes) -> tuple[list[object], bytes, ProtocolError | None]:
        """Worker thread (or the loop before any worker call): feed bytes, collect events."""
        conn = self.conn
        conn.receive_data(data)
        events: list[object] = []
        try:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    break
        except ProtocolError as exc:
            return events, conn.data_to_send(), exc
        return events, conn.data_to_send(), None

    # -- handshake ------------------------------------------------------------------

    async def handshake(self) -> None:
        conn, writer = self.conn, self.writer
        writer.write(conn.data_to_send())
        while True:
            events, out, error = self._take_events(await self._read())
            if out:
                writer.write(out)
            if error is not None:
                raise SessionEnded(str(error), retriable=error.retriable)
            for event in events:
                if isinstance(event, Established):
                    return
                raise self._ended_by(event)

    async def _read(self) -> bytes:
        try:
            return await self.reader.read(RECV_BYTES)
        except OSError as exc:
            raise SessionEnded(f"connection lost: {exc.strerror or exc}") from None

    # -- running --------------------------------------------------------------------

    async def run(self) -> None:
        receiving = asyncio.ensure_future(self._receive_loop())
        sending = asyncio.ensure_future(self._send_loop())
        try:
            done, _ = await asyncio.wait((receiving, sending), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (receiving, sending):
                task.cancel()
            await asyncio.gather(receiving, sending, return_exceptions=True)
        if self.ended is not None:
            raise self.ended
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc

    def _end(self, ended: SessionEnded) -> None:
        if self.ended is None:
            self.ended = ended
        self.sender._wake.set()

    async def _receive_loop(self) -> None:
        sender = self.sender
        while self.ended is None:
            data = await self._read()
            events, out, error = await self._call(self._take_events, data)
            if out:
                self.writer.write(out)
            for event in events:
                if isinstance(event, Ack):
                    self._on_ack(event.seq)
                elif not isinstance(event, Heartbeat):
                    raise self._ended_by(event)
            if error is not None:
                raise SessionEnded(str(error), retriable=error.retriable)
            if sender._closing and not self.in_flight:
                return

    def _on_ack(self, seq: int) -> None:
        in_flight = self.in_flight
        settled: list[BatchSummary] = []
        while in_flight and in_flight[0].seq <= seq:
            settled.append(in_flight.popleft())
        self.acked = True
        self.waiting_since = time.monotonic()
        self.sender.in_flight = len(in_flight)
        self.sender.acknowledged(seq, settled)
        self.sender._wake.set()

    def _ended_by(self, event: object) -> SessionEnded:
        if isinstance(event, Close):
            reason = event.reason
            text = f"the manager closed the connection ({reason.name.lower()}"
            text += f": {event.message})" if event.message else ")"
            if reason is CloseReason.AGENT_REMOVED:
                return SessionEnded(
                    text + "; this agent was removed: enroll it again", retriable=False
                )
            return SessionEnded(text, next_manager=reason is CloseReason.REBALANCE)
        if isinstance(event, Error):
            hint = ""
            if not event.code.retriable:
                hint = (
                    "; enroll the agent again"
                    if event.code.name in ("UNKNOWN_AGENT", "AUTH_FAILED")
                    else "; upgrade one side"
                )
            return SessionEnded(
                f"manager error {event.code.name}: {event.message}{hint}",
                retriable=event.code.retriable,
            )
        if isinstance(event, ConnectionClosed):
            return SessionEnded("the manager closed the connection")
        return SessionEnded(f"unexpected {type(event).__name__} from the manager")

    async def _send_loop(self) -> None:
        sender = self.sender
        config = sender._config
        spool = sender._spool
        in_flight = self.in_flight
        window = config.max_in_flight
        heartbeat_s = config.heartbeat_interval_s
        while True:
            if self.ended is not None:
                return
            if sender._closing:
                await self._send_close(CloseReason.SHUTDOWN, "agent stopping")
                return
            if self.conn.should_rekey:
                await self._send_close(CloseReason.REKEY, "")
                raise SessionEnded("rekeying: reconnecting for fresh session keys")
            sender._wake.clear()
            while (
                len(in_flight) < window
                and self.encoding < MAX_QUEUED_ENCODES
                and self.next_seq <= spool.last_seq
            ):
                if sender._closing or self.ended is not None:
                    break
                try:
                    batch = spool.get(self.next_seq, take=True)
                except SpoolError as exc:
                    log.error("%s", exc)
                    raise SessionEnded(str(exc)) from None
                if sender._limiter is not None:
                    await sender._limiter.acquire(len(batch.records))
                self._submit(batch)
            await self._drain_writer()
            now = time.monotonic()
            if in_flight and now - self.waiting_since > config.ack_timeout_s:
                raise SessionEnded(
                    f"no acknowledgement for {config.ack_timeout_s:g} s with "
                    f"{len(in_flight)} batches in flight"
                )
            if now - self.last_sent >= heartbeat_s:
                await self._send(Heartbeat())
            deadline = self.last_sent + heartbeat_s
            if in_flight:
                deadline = min(deadline, self.waiting_since + config.ack_timeout_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await sender._wake.wait()

    def _submit(self, batch: SpooledBatch) -> None:
        """Encode ``batch`` on the worker; its frame is written when ready, in order."""
        if not self.in_flight:
            self.waiting_since = time.monotonic()
        self.in_flight.append(batch.summary())
        self.next_seq = batch.seq + 1
        self.last_sent = time.monotonic()
        self.sender.in_flight = len(self.in_flight)
        self.encoding += 1
        encoded = self._call(self._encode, batch)
        encoded.add_done_callback(functools.partial(self._write_batch, batch))

    def _write_batch(self, batch: SpooledBatch, encoded: asyncio.Future[bytes]) -> None:
        self.encoding -= 1
        self.sender._wake.set()  # room for the next submission
        if encoded.cancelled():
            return
        exc = encoded.exception()
        if isinstance(exc, BatchTooLarge):
            # The batcher keeps every batch below the frame limit, so this is
            # a bug. Skipping the batch would lose records silently; delivery
            # stops instead, retried at the longest backoff, and status.json
            # shows why.
            log.critical("Batch %d cannot be sent (bug): %s", batch.seq, exc)
            self._end(SessionEnded(f"batch {batch.seq} cannot be sent: {exc}", retriable=False))
            return
        if isinstance(exc, ProtocolError):
            self._end(SessionEnded(str(exc), retriable=exc.retriable))
            return
        if exc is not None:
            self._end(SessionEnded(f"cannot encode batch {batch.seq}: {exc!r}"))
            return
        if self.ended is not None or self.writer.is_closing():
            return
        data = encoded.result()
        self.writer.write(data)
        counters = self.sender._counters
        counters.batches_sent += 1
        counters.records_sent += len(batch.records)
        counters.bytes_sent += len(data)

    async def _send(self, event: Heartbeat | Close) -> None:
        try:
            data = await self._call(self.conn.send, event)
        except ProtocolError as exc:
            raise SessionEnded(str(exc), retriable=exc.retriable) from None
        self.writer.write(data)
        self.last_sent = time.monotonic()
        await self._drain_writer()

    async def _send_close(self, reason: CloseReason, message: str) -> None:
        with contextlib.suppress(SessionEnded, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._send(Close(reason, message))

    async def _drain_writer(self) -> None:
        try:
            await self.writer.drain()
        except OSError as exc:
            raise SessionEnded(f"connection lost: {exc.strerror or exc}") from None

    async def close(self) -> None:
        writer = self.writer
        if writer.is_closing():
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await writer.wait_closed()


def _address_text(address: ManagerAddress) -> str:
    host = address.host
    return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
