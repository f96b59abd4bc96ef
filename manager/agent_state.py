"""What the server knows about each agent's connection, kept in ``var/agent-state.json``.

The server updates one ``AgentActivity`` per agent as it connects, sends and
leaves; the running counters live in memory (a session updates its agent's
entry directly, per frame) and reach the file when the server writes it:
once per heartbeat interval, and shortly after an agent connects or
disconnects. ``trailwarden-manager agents list`` and the enrollment ``<force>``
rules read the file (``agents_view.py``). Format, version 1::

    {"version": 1, "updated": <epoch s>, "heartbeat_interval_s": <s>, "agents": {"<id>": {
        "connected": bool, "connected_since": <epoch>|null, "last_seen": <epoch>|null,
        "last_peer": "ip:port"|null, "events_received": int, "bytes_received": int,
        "batches_received": int, "last_batch_seq": int|null}}}

``heartbeat_interval_s`` is the writing server's ``[remote].heartbeat_interval_s``
(optional: absent in files of older servers), so a reader judges "active"
by the interval that server really expects.

Writes are atomic (temporary file, fsync, rename, directory fsync) and run in
a worker thread. Counters carry over a restart: the previous file is read at
start-up, with every agent marked disconnected (a manager that was killed
could not say so).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import orjson

log = logging.getLogger(__name__)

STATE_FILE: Final = Path("var") / "agent-state.json"
STATE_VERSION: Final = 1
FILE_MODE: Final = 0o640
# A state file larger than this is not ours (200k agents take ~60 MiB).
MAX_STATE_FILE_BYTES: Final = 128 * 1024 * 1024


class AgentActivity:
    """One agent's connection facts; mutable, updated on the hot path."""

    __slots__ = (
        "connected",
        "connected_since",
        "last_seen",
        "last_peer",
        "events_received",
        "bytes_received",
        "batches_received",
        "last_batch_seq",
    )

    def __init__(self) -> None:
        self.connected = False
        self.connected_since: float | None = None
        self.last_seen: float | None = None
        self.last_peer: str | None = None
        self.events_received = 0
        self.bytes_received = 0
        self.batches_received = 0
        self.last_batch_seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "connected_since": self.connected_since,
            "last_seen": self.last_seen,
            "last_peer": self.last_peer,
            "events_received": self.events_received,
            "bytes_received": self.bytes_received,
            "batches_received": self.batches_received,
            "last_batch_seq": self.last_batch_seq,
        }


class AgentStateBook:
    """Every agent's ``AgentActivity``, and writing them to the state file."""

    __slots__ = (
        "_path",
        "_clock",
        "_heartbeat_interval_s",
        "_agents",
        "_dirty",
        "_write_lock",
        "writes",
        "write_errors",
    )

    def __init__(
        self,
        data_dir: Path,
        *,
        heartbeat_interval_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = data_dir / STATE_FILE
        self._clock = clock
        self._heartbeat_interval_s = heartbeat_interval_s
        self._agents: dict[str, AgentActivity] = {}
        self._dirty = False
        self._write_lock = asyncio.Lock()
        self.writes = 0
        self.write_errors = 0

    @property
    def path(self) -> Path:
        return self._path

    @property
    def dirty(self) -> bool:
        """A connection status changed since the last write."""
        return self._dirty

    def __iter__(self) -> Iterator[tuple[str, AgentActivity]]:
        return iter(self._agents.items())

    def get(self, agent_id: str) -> AgentActivity | None:
        return self._agents.get(agent_id)

    def load(self) -> None:
        """Take the counters of the previous run's file (all agents disconnected).

        A missing file is a first start; an unreadable one is reported and
        replaced at the next write.
        """
        try:
            with open(self._path, "rb") as handle:
                raw = handle.read(MAX_STATE_FILE_BYTES + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("Cannot read %s (starting with empty agent state): %s.", self._path, exc)
            return
        try:
            doc = orjson.loads(raw)
            agents = doc["agents"] if doc.get("version") == STATE_VERSION else {}
            for agent_id, entry in agents.items():
                activity = AgentActivity()
                activity.last_seen = _number(entry.get("last_seen"))
                activity.last_peer = (
                    entry.get("last_peer") if isinstance(entry.get("last_peer"), str) else None
                )
                activity.events_received = _count(entry.get("events_received"))
                activity.bytes_received = _count(entry.get("bytes_received"))
                activity.batches_received = _count(entry.get("batches_received"))
                seq = entry.get("last_batch_seq")
                activity.last_batch_seq = seq if type(seq) is int else None
                self._agents[str(agent_id)] = activity
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            log.warning("Ignoring malformed %s (it will be rewritten): %s.", self._path, exc)
            self._agents.clear()
        self._dirty = True  # their "connected" flags are now false

    def connected(self, agent_id: str, peer: str) -> AgentActivity:
        """An agent proved its key; returns its entry for the session to update."""
        activity = self._agents.get(agent_id)
        if activity is None:
            activity = self._agents[agent_id] = AgentActivity()
        now = self._clock()
        activity.connected = True
        activity.connected_since = now
        activity.last_seen = now
        activity.last_peer = peer
        self._dirty = True
        return activity

    def disconnected(self, agent_id: str) -> None:
        activity = self._agents.get(agent_id)
        if activity is not None and activity.connected:
            activity.connected = False
            activity.connected_since = None
            self._dirty = True

    def disconnect_all(self) -> None:
        for agent_id in list(self._agents):
            self.disconnected(agent_id)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": STATE_VERSION, "updated": self._clock()}
        if self._heartbeat_interval_s is not None:
            doc["heartbeat_interval_s"] = self._heartbeat_interval_s
        doc["agents"] = {agent_id: a.as_dict() for agent_id, a in self._agents.items()}
        return doc

    async def write(self) -> bool:
        """Write the file now (serialised here, written in a worker thread).

        Returns False if the write failed (logged and counted; the next write
        tries again).
        """
        async with self._write_lock:
            self._dirty = False
            data = orjson.dumps(self.document())
            try:
                await asyncio.to_thread(write_atomically, self._path, data)
            except OSError as exc:
                self._dirty = True
                self.write_errors += 1
                log.error("Cannot write %s: %s.", self._path, exc)
                return False
            self.writes += 1
            return True


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, directory fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _count(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0
