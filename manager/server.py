"""The agent listener: accepts connections, keeps the sessions, enforces deadlines and keys.

Theory of operation
-------------------
``asyncio.start_server`` runs one task per connection (``Session.run``). The
server holds what sessions share: the key table, the pipeline, the flow
control, the agent-state book, counters, and the map agent id -> session (a
newer connection of an agent replaces the older one: the old session gets
``Close(SUPERSEDED)``; an agent whose TCP connection silently died comes
back at once instead of waiting for the idle deadline).

Admission, before any byte is read: at most ``max_connections`` sessions and
at most ``max_handshakes`` of them not yet authenticated; a connection over
either limit gets a plain ``Error(OVERLOADED)`` and is closed. Together with
the handshake deadline this bounds what a handshake flood can hold.

No per-read timers: one *sweeper* task looks at every session a few times per
deadline and cuts those that missed one:

* not authenticated ``handshake_timeout_s`` after the connection;
* no complete frame for ``idle_timeout_s`` (a dead agent, or a slowloris
  trickling bytes that never complete a frame), not counting time during
  which backpressure kept sessions from reading;
* more than ``max_unsent_bytes`` of ours left unread (a peer that does not read);
* still flushing its last bytes ``CLOSE_GRACE_S`` after being closed.

Twice per heartbeat interval the key table is re-read if client.keys changed
(``AgentKeyTable``) and sessions of agents no longer allowed are ended with
``Close(AGENT_REMOVED)``; the agent-state file is rewritten then too, and
within ``STATE_WRITE_DELAY_S`` of any connect or disconnect.

Every refused or cut peer is counted by reason (``errors.<reason>`` in the
stats) and logged once per peer address and reason per ``peer_log_interval_s``
(``LogThrottle`` remembers the 256 most recent pairs, which bounds its memory;
a flood from more addresses than that is logged more often, never unbounded).

Shutdown is driven by ``run.py`` in order: ``stop_accepting``,
``stop_batches`` (batches arriving from now on are left unacknowledged, for
the agent to resend), the pipeline drains, ``close_sessions`` (Close(SHUTDOWN)
to all), ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path
from typing import Final

from trailwarden.common.keys import ClientKeys
from trailwarden.common.wire import CloseReason, Error, ErrorCode, ManagerConnection
from trailwarden.manager.agent_keys import KEYS_FILE, AgentKeyTable
from trailwarden.manager.agent_state import AgentActivity, AgentStateBook
from trailwarden.manager.config import RemoteConfig
from trailwarden.manager.flow_control import FlowControl
from trailwarden.manager.log_throttle import LogThrottle
from trailwarden.manager.outputs import Stats
from trailwarden.manager.pipeline import BatchPipeline
from trailwarden.manager.session import RECV_BYTES, Session

log = logging.getLogger(__name__)

# Deadlines are checked this often at most (and at least four times per deadline).
MAX_SWEEP_INTERVAL_S: Final = 1.0
# A closed connection whose last bytes (our Close) are still unsent after this
# long belongs to a peer that stopped reading: it is aborted, freeing its socket.
CLOSE_GRACE_S: Final = 10.0
# A connect or disconnect reaches agent-state.json within this delay; changes
# in between share one write.
STATE_WRITE_DELAY_S: Final = 1.0
# Pending connections the kernel queues for accept(); capped by net.core.somaxconn.
LISTEN_BACKLOG: Final = 4096
# Kernel send buffer per agent socket. The manager sends only Acks, Heartbeats
# and Close (tens of bytes each), so this is ample, and it bounds the kernel
# memory a peer that never reads can pin (autotuning would let it grow to MiBs).
SEND_BUFFER_BYTES: Final = 64 * 1024


class RemoteServer:
    """The listener and its sessions.

    Args:
        config: the ``[remote]`` section.
        data_dir: where etc/client.keys and var/agent-state.json are.
        pipeline: where batches go (``AnalysisPipeline``, or a stub for benches).
        flow: the backpressure object the pipeline counts into.
    """

    def __init__(
        self,
        config: RemoteConfig,
        data_dir: Path,
        pipeline: BatchPipeline,
        flow: FlowControl,
        *,
        keys: AgentKeyTable | None = None,
        book: AgentStateBook | None = None,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.flow = flow
        self.keys = keys if keys is not None else AgentKeyTable(data_dir / KEYS_FILE)
        self.book = (
            book
            if book is not None
            else AgentStateBook(data_dir, heartbeat_interval_s=config.heartbeat_interval_s)
        )
        self.accepting_batches = True
        self._server: asyncio.Server | None = None
        self._sessions: set[Session] = set()
        self._by_agent: dict[str, Session] = {}
        self._handshaking: set[Session] = set()  # accepted, not yet authenticated
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._throttle = LogThrottle(log, config.peer_log_interval_s)
        self._state_written_at = 0.0
        self._rate_base: dict[str, int] = {}  # agent id -> events_received at _rate_at
        self._rate_at = time.monotonic()
        self._errors: dict[str, int] = {}
        self._n: dict[str, int] = dict.fromkeys(
            (
                "connections_accepted",
                "handshakes_completed",
                "batches_received",
                "events_received",
                "batches_refused_at_shutdown",
                "events_refused_at_shutdown",
                "superseded",
                "agents_removed",
            ),
            0,
        )
        self._overloaded_frame = _plain_error("the manager is at its connection limit; retry later")
        self._flood_frame = _plain_error("too many connections are authenticating; retry later")

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the keys and the agent state, listen, start the background tasks.

        Raises:
            OSError: the address cannot be bound.
        """
        await self.keys.load()
        self.book.load()
        cfg = self.config
        self._server = await asyncio.start_server(
            self._on_connect,
            host=cfg.listen_address or None,
            port=cfg.port,
            limit=RECV_BYTES,
            backlog=LISTEN_BACKLOG,
            reuse_address=True,
        )
        for name, body in (("sweeper", self._sweep_loop), ("heartbeat", self._heartbeat_loop)):
            task = asyncio.create_task(body(), name=f"remote-{name}")
            task.add_done_callback(_report_crash)
            self._tasks.append(task)
        log.info(
            "Listening for agents on %s:%d (%d agents in %s).",
            cfg.listen_address,
            self.port,
            len(self.keys.keys),
            self.keys.path,
        )

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the agent listener is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def stop_accepting(self) -> None:
        """Close the listening socket; established sessions go on."""
        self._stopping = True
        if self._server is not None:
            self._server.close()

    def stop_batches(self) -> None:
        """From now on batches are not taken (nor acknowledged): agents resend them later."""
        self.accepting_batches = False

    async def close_sessions(self, timeout_s: float) -> None:
        """Close(SHUTDOWN) to every session; wait for their tasks, then cancel the rest."""
        for session in list(self._sessions):
            if session.agent is not None:
                session.close(CloseReason.SHUTDOWN, "manager stopping")
            else:
                session.abort()
        tasks = {s.task for s in self._sessions if s.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    async def close(self, timeout_s: float) -> None:
        """Stop the background tasks and write the final agent state."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout_s)
            self._server = None
        self.book.disconnect_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.book.write(), timeout_s)

    def stats(self) -> Stats:
        out: Stats = dict(self._n)
        out["connections_open"] = len(self._sessions)
        out["handshakes_open"] = len(self._handshaking)
        out["agents_connected"] = len(self._by_agent)
        out["agents_known"] = len(self.keys.keys)
        out["keys_reload_errors"] = self.keys.reload_errors
        out["agent_state_writes"] = self.book.writes
        out["agent_state_write_errors"] = self.book.write_errors
        for kind, count in sorted(self._errors.items()):
            out[f"errors.{kind}"] = count
        return out

    @property
    def errors(self) -> dict[str, int]:
        return dict(self._errors)

    def busiest_agents(self, count: int) -> Stats:
        """Events/s of the ``count`` busiest agents since the previous call ("id (name)" -> rate).

        Per-agent accounting: the counters live in the agent-state book; this
        turns their growth into rates (one pass over the agents per call).
        """
        now = time.monotonic()
        elapsed = now - self._rate_at
        base = self._rate_base
        current: dict[str, int] = {}
        rates: list[tuple[float, str]] = []
        for agent_id, activity in self.book:
            events = activity.events_received
            current[agent_id] = events
            grown = events - base.get(agent_id, events)
            if grown > 0 and elapsed > 0:
                rates.append((grown / elapsed, agent_id))
        self._rate_base, self._rate_at = current, now
        rates.sort(reverse=True)
        out: Stats = {}
        for rate, agent_id in rates[:count]:
            entry = self.keys.keys.by_id(agent_id)
            name = entry.name if entry is not None else "?"
            out[f"{agent_id} ({name})"] = round(rate, 1)
        return out

    # -- keys ------------------------------------------------------------------------------

    def keys_changed(self, keys: ClientKeys) -> None:
        """The enrollment listener wrote a new client.keys table."""
        self.keys.replace(keys)
        self._enforce_keys()

    def _enforce_keys(self) -> None:
        """End the sessions of agents that may no longer connect (removed, or a new key)."""
        for agent_id, session in list(self._by_agent.items()):
            entry = self.keys.lookup(agent_id, session.peer_ip)
            if entry is not None and entry == session.key_entry:
                continue
            self._n["agents_removed"] += 1
            self.peer_problem(
                session,
                "agent_removed",
                f"agent {agent_id} was removed from client.keys (or got a new key) while connected",
            )
            session.close(CloseReason.AGENT_REMOVED, "this agent was removed from the manager")

    # -- called by sessions ------------------------------------------------------------------

    def established(self, session: Session) -> AgentActivity | None:
        """A session authenticated; register it (replacing an older one of the agent).

        Returns None (and ends the session) if the agent was removed meanwhile.
        """
        self._handshaking.discard(session)
        agent = session.agent
        assert agent is not None
        entry = self.keys.lookup(agent.agent_id, session.peer_ip)
        if entry is None or entry != session.key_entry:
            self._n["agents_removed"] += 1
            self.peer_problem(
                session, "agent_removed", f"agent {agent.agent_id} was removed during its handshake"
            )
            session.close(CloseReason.AGENT_REMOVED, "this agent was removed from the manager")
            return None
        self._n["handshakes_completed"] += 1
        old = self._by_agent.get(agent.agent_id)
        if old is not None and old is not session:
            self._n["superseded"] += 1
            log.info(
                "Agent %s (%s) connected again from %s; closing its previous connection from %s.",
                agent.agent_id,
                agent.name,
                session.peer,
                old.peer,
            )
            old.close(CloseReason.SUPERSEDED, "a newer connection of this agent replaced this one")
        else:
            log.info("Agent %s (%s) connected from %s.", agent.agent_id, agent.name, session.peer)
        self._by_agent[agent.agent_id] = session
        return self.book.connected(agent.agent_id, session.peer)

    def batch_received(self, events: int) -> None:
        n = self._n
        n["batches_received"] += 1
        n["events_received"] += events

    def batch_refused(self, events: int) -> None:
        self._n["batches_refused_at_shutdown"] += 1
        self._n["events_refused_at_shutdown"] += events

    def peer_problem(self, session: Session, kind: str, message: str) -> None:
        """Count a refused or cut peer and log it (once per address and reason per interval)."""
        self._errors[kind] = self._errors.get(kind, 0) + 1
        who = session.peer
        if session.agent is not None:
            who = f"agent {session.agent.agent_id} ({session.agent.name}) at {session.peer}"
        level = logging.INFO if kind == "connection_lost" else logging.WARNING
        self._throttle.log(
            level,
            f"{session.peer_ip}\0{kind}",
            "Connection from %s ended [%s]: %s.",
            who,
            kind,
            message.rstrip("."),
        )

    def peer_gone(self, session: Session, message: str) -> None:
        """An agent ended its connection properly (Close or Error): logged, not an error."""
        agent = session.agent
        log.info("Agent %s at %s: %s.", agent.agent_id if agent else "?", session.peer, message)

    # -- connections -------------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.transport.abort()
            return
        cfg = self.config
        self._n["connections_accepted"] += 1
        if len(self._sessions) >= cfg.max_connections:
            self._refuse(
                writer,
                "over_capacity",
                self._overloaded_frame,
                f"{len(self._sessions)} connections open (max_connections)",
            )
            return
        if len(self._handshaking) >= cfg.max_handshakes:
            self._refuse(
                writer,
                "handshake_limit",
                self._flood_frame,
                f"{len(self._handshaking)} connections authenticating (max_handshakes)",
            )
            return
        _tune_socket(writer)
        session = Session(self, reader, writer)
        self._sessions.add(session)
        self._handshaking.add(session)
        try:
            await session.run()
        except asyncio.CancelledError:
            # Only close_sessions cancels a session (a straggler at shutdown). Ending
            # normally spares asyncio's server callback (3.11) a spurious error log.
            pass
        finally:
            self._session_ended(session)

    def _session_ended(self, session: Session) -> None:
        self._sessions.discard(session)
        self._handshaking.discard(session)
        agent = session.agent
        if agent is None or session.activity is None:
            return
        if self._by_agent.get(agent.agent_id) is session:
            del self._by_agent[agent.agent_id]
            self.book.disconnected(agent.agent_id)
            log.info("Agent %s (%s) disconnected.", agent.agent_id, agent.name)

    def _refuse(self, writer: asyncio.StreamWriter, kind: str, frame: bytes, why: str) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self._throttle.log(
            logging.WARNING,
            f"{address}\0{kind}",
            "Refused a connection from %s [%s]: %s.",
            address,
            kind,
            why,
        )
        writer.write(frame)
        writer.close()

    # -- background ------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        cfg = self.config
        interval = min(MAX_SWEEP_INTERVAL_S, cfg.handshake_timeout_s / 4, cfg.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            self._sweep(time.monotonic())
            if self.book.dirty and time.monotonic() - self._state_written_at >= STATE_WRITE_DELAY_S:
                await self._write_state()

    def _sweep(self, now: float) -> None:
        cfg = self.config
        flow = self.flow
        handshake_deadline = now - cfg.handshake_timeout_s
        # While reading is paused no session can complete a frame; count idleness
        # only from when reading last resumed.
        check_idle = not flow.paused
        idle_deadline = now - cfg.idle_timeout_s
        resumed_at = flow.resumed_at
        max_unsent = cfg.max_unsent_bytes
        for session in list(self._sessions):
            if session.closing:
                if session.closing_since and now - session.closing_since > CLOSE_GRACE_S:
                    session.abort()
                continue
            if session.agent is None:
                if session.started < handshake_deadline:
                    self.peer_problem(
                        session,
                        "handshake_timeout",
                        f"no complete handshake within {cfg.handshake_timeout_s:g} s",
                    )
                    session.abort()
                continue
            if session.transport.get_write_buffer_size() > max_unsent:
                self.peer_problem(
                    session, "slow_reader", f"more than {max_unsent} bytes of ours left unread"
                )
                session.abort()
            elif check_idle and max(session.last_frame, resumed_at) < idle_deadline:
                self.peer_problem(
                    session, "idle_timeout", f"no complete frame for {cfg.idle_timeout_s:g} s"
                )
                session.close(CloseReason.IDLE_TIMEOUT, "nothing received for too long")

    async def _heartbeat_loop(self) -> None:
        # Twice per heartbeat interval: an agent seen at its last heartbeat is
        # then at most 1.5 intervals old in the file, inside the two intervals
        # that readers allow before calling it disconnected.
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s / 2)
            if await self.keys.load():
                self._enforce_keys()
            await self._write_state()

    async def _write_state(self) -> None:
        self._state_written_at = time.monotonic()
        await self.book.write()


def _plain_error(message: str) -> bytes:
    """The unauthenticated Error(OVERLOADED) frame sent to a connection refused at accept."""
    return ManagerConnection(_no_keys).send(Error(ErrorCode.OVERLOADED, message))


def _no_keys(agent_id: str) -> bytes | None:
    return None


def _tune_socket(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        # Notice peers that vanished without a FIN even between heartbeats.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("Task %s stopped by a bug.", task.get_name(), exc_info=task.exception())
