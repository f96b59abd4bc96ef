"""What the manager knows about each agent's connection, read from ``var/agent-state.json``.

The manager server rewrites ``<data_dir>/var/agent-state.json`` atomically as
agents connect, send and leave (format below). This module only reads it, for
``trailwarden-manager agents list/show`` and for the enrollment ``<force>``
rules, and classifies an agent the way Wazuh's ``agent_control`` does:

* ``never connected``: listed in client.keys, absent from the state file (or
  never seen);
* ``active``: connected and seen within two heartbeat intervals (the
  interval the writing server recorded in the file, else the caller's);
* ``disconnected``: everything else; since ``last_seen``.

A file that says "connected" but has not been refreshed for a long time (the
manager stopped) therefore reads as disconnected, which is the truth.

Format, version 1::

    {"version": 1, "updated": <epoch s>, "heartbeat_interval_s": <s>, "agents": {"<id>": {
        "connected": bool, "connected_since": <epoch>|null, "last_seen": <epoch>|null,
        "last_peer": "ip:port"|null, "events_received": int, "bytes_received": int,
        "batches_received": int, "last_batch_seq": int|null}}}

``heartbeat_interval_s`` is the writing server's ``[remote].heartbeat_interval_s``
(optional: absent in files of older servers), so a reader judges "active"
by the interval that server really expects.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

STATE_FILE: Final = Path("var") / "agent-state.json"
STATE_VERSION: Final = 1
# The agent's default heartbeat (agent/config.py delivery.heartbeat_interval_s).
DEFAULT_HEARTBEAT_INTERVAL_S: Final = 10.0
# Seen within this many heartbeat intervals: still active (one may be late).
ACTIVE_HEARTBEATS: Final = 2
# 200k agents at ~300 bytes each is 60 MiB; anything larger is not this file.
MAX_STATE_FILE_BYTES: Final = 128 * 1024 * 1024


class AgentStateError(ValueError):
    """agent-state.json is unreadable or malformed (the file's fault; names path and field)."""


class ConnectionStatus(enum.Enum):
    ACTIVE = "active"
    DISCONNECTED = "disconnected"
    NEVER_CONNECTED = "never connected"


@dataclass(frozen=True, slots=True)
class AgentActivity:
    """One agent's entry in agent-state.json."""

    connected: bool = False
    connected_since: float | None = None
    last_seen: float | None = None
    last_peer: str | None = None
    events_received: int = 0
    bytes_received: int = 0
    batches_received: int = 0
    last_batch_seq: int | None = None


@dataclass(frozen=True, slots=True)
class AgentState:
    """The whole file: when the server last wrote it and every agent it has seen."""

    updated: float | None = None
    agents: Mapping[str, AgentActivity] = field(default_factory=dict)
    # The writing server's [remote].heartbeat_interval_s; None in older files.
    heartbeat_interval_s: float | None = None

    def activity(self, agent_id: str) -> AgentActivity | None:
        return self.agents.get(agent_id)

    def heartbeat_or(self, fallback_s: float) -> float:
        """The interval "active" is judged by: the server's own, else ``fallback_s``."""
        return fallback_s if self.heartbeat_interval_s is None else self.heartbeat_interval_s


EMPTY_STATE: Final = AgentState(None, {})


def connection_status(
    activity: AgentActivity | None,
    now: float,
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
) -> ConnectionStatus:
    """Classify an agent from its entry (None: not in the file)."""
    if activity is None or activity.last_seen is None:
        return ConnectionStatus.NEVER_CONNECTED
    if activity.connected and now - activity.last_seen <= ACTIVE_HEARTBEATS * heartbeat_interval_s:
        return ConnectionStatus.ACTIVE
    return ConnectionStatus.DISCONNECTED


def read_agent_state(data_dir: Path) -> AgentState:
    """Read ``<data_dir>/var/agent-state.json``; a missing file is an empty state.

    Raises:
        AgentStateError: the file cannot be read or does not match the format.
    """
    path = data_dir / STATE_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_STATE_FILE_BYTES + 1)
    except FileNotFoundError:
        return EMPTY_STATE
    except OSError as exc:
        raise AgentStateError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_STATE_FILE_BYTES:
        raise AgentStateError(f"{path}: larger than {MAX_STATE_FILE_BYTES} bytes")
    return parse_agent_state(raw, str(path))


def parse_agent_state(raw: bytes, source: str) -> AgentState:
    """Parse the file's bytes (``source`` names it in errors)."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgentStateError(f"{source}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise AgentStateError(f"{source}: expected a JSON object at the top level")
    if doc.get("version") != STATE_VERSION:
        raise AgentStateError(
            f"{source}: version = {doc.get('version')!r}; this manager reads version "
            f"{STATE_VERSION}"
        )
    updated = _number_or_none(doc.get("updated"), source, "updated")
    heartbeat = _number_or_none(doc.get("heartbeat_interval_s"), source, "heartbeat_interval_s")
    if heartbeat is not None and heartbeat <= 0:
        raise AgentStateError(f"{source}: heartbeat_interval_s = {heartbeat!r} is not positive")
    agents_doc = doc.get("agents", {})
    if not isinstance(agents_doc, dict):
        raise AgentStateError(f"{source}: agents is not an object")
    agents = {
        str(agent_id): _activity(entry, source, f"agents.{agent_id}")
        for agent_id, entry in agents_doc.items()
    }
    return AgentState(updated, agents, heartbeat)


def _activity(entry: Any, source: str, where: str) -> AgentActivity:
    if not isinstance(entry, dict):
        raise AgentStateError(f"{source}: {where} is not an object")
    connected = entry.get("connected", False)
    if not isinstance(connected, bool):
        raise AgentStateError(f"{source}: {where}.connected = {connected!r} is not a boolean")
    peer = entry.get("last_peer")
    if peer is not None and not isinstance(peer, str):
        raise AgentStateError(f"{source}: {where}.last_peer = {peer!r} is not a string")
    return AgentActivity(
        connected=connected,
        connected_since=_number_or_none(
            entry.get("connected_since"), source, f"{where}.connected_since"
        ),
        last_seen=_number_or_none(entry.get("last_seen"), source, f"{where}.last_seen"),
        last_peer=peer,
        events_received=_count(entry.get("events_received", 0), source, f"{where}.events_received"),
        bytes_received=_count(entry.get("bytes_received", 0), source, f"{where}.bytes_received"),
        batches_received=_count(
            entry.get("batches_received", 0), source, f"{where}.batches_received"
        ),
        last_batch_seq=_int_or_none(entry.get("last_batch_seq"), source, f"{where}.last_batch_seq"),
    )


def _number_or_none(value: Any, source: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AgentStateError(f"{source}: {where} = {value!r} is not a number of seconds")
    return float(value)


def _int_or_none(value: Any, source: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentStateError(f"{source}: {where} = {value!r} is not an integer")
    return value


def _count(value: Any, source: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AgentStateError(f"{source}: {where} = {value!r} is not a count")
    return value
