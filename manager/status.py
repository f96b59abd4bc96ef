"""The manager's counters: written to ``var/status.json``, read by ``trailwarden-manager status``.

The running manager rewrites the file every ``status_interval_s`` (atomically)
and once more when it stops. The document::

    {"version": 1, "pid": ..., "started": <epoch>, "updated": <epoch>,
     "interval_s": ..., "stopped": bool, "manager": "<name>", "listen": "addr:port",
     "summary": {"connections_open": ..., "agents_connected": ..., "events_per_second": ...,
                 ...},
     "errors": {"<reason>": count, ...},
     "components": {"remote": {...}, "pipeline": {...}, "flow": {...},
                    "alert_files": {...}, "indexer": {...}, ...}}

``summary`` holds what an operator looks at first (rates are over the last
interval, ``busiest_agents`` maps "id (name)" to events/s for the ten busiest
agents); ``components`` every counter of every part, flat, as their
``stats()`` return them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from trailwarden.manager.agent_state import write_atomically
from trailwarden.manager.outputs import Stats

log = logging.getLogger(__name__)

STATUS_FILE: Final = Path("var") / "status.json"
STATUS_VERSION: Final = 1
# A status older than this many intervals means the manager is not running.
STALE_INTERVALS: Final = 3
MAX_STATUS_BYTES: Final = 16 * 1024 * 1024

# Counters whose name says they count lost or refused work, shown under "drops".
_DROP_WORDS: Final = ("dropped", "refused", "rejected")


class StatusWriter:
    """Writes the status document periodically.

    Args:
        path: the status file.
        collect: returns every component's ``stats()`` by name.
        manager_name, listen: shown in the header.
        interval_s: how often ``run`` writes.
    """

    def __init__(
        self,
        path: Path,
        collect: Callable[[], Mapping[str, Stats]],
        *,
        manager_name: str,
        listen: str,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._collect = collect
        self._name = manager_name
        self._listen = listen
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._previous: tuple[float, int, int] | None = None
        self.write_errors = 0

    async def run(self) -> None:
        while True:
            await self.write()
            await asyncio.sleep(self._interval_s)

    async def write(self, *, stopped: bool = False) -> None:
        doc = self.document(stopped=stopped)
        try:
            await asyncio.to_thread(write_atomically, self._path, orjson.dumps(doc))
        except OSError as exc:
            self.write_errors += 1
            log.error("Cannot write %s: %s.", self._path, exc)

    def document(self, *, stopped: bool = False) -> dict[str, Any]:
        now = self._clock()
        components = {name: dict(stats) for name, stats in self._collect().items()}
        remote = components.get("remote", {})
        pipeline = components.get("pipeline", {})
        flow = components.get("flow", {})
        events = _int(pipeline.get("events_analysed", remote.get("events_received", 0)))
        alerts = _int(pipeline.get("alerts", 0))
        eps = aps = 0.0
        if self._previous is not None:
            then, events_then, alerts_then = self._previous
            if now > then:
                eps = (events - events_then) / (now - then)
                aps = (alerts - alerts_then) / (now - then)
        self._previous = (now, events, alerts)
        errors = {
            key.removeprefix("errors."): value
            for key, value in remote.items()
            if key.startswith("errors.")
        }
        drops = {
            f"{name}.{key}": value
            for name, stats in components.items()
            for key, value in stats.items()
            if any(word in key for word in _DROP_WORDS) and isinstance(value, int) and value
        }
        summary = {
            "connections_open": remote.get("connections_open", 0),
            "connections_accepted": remote.get("connections_accepted", 0),
            "handshakes_open": remote.get("handshakes_open", 0),
            "agents_connected": remote.get("agents_connected", 0),
            "agents_known": remote.get("agents_known", 0),
            "events_received": remote.get("events_received", 0),
            "events_analysed": events,
            "events_per_second": round(eps, 1),
            "duplicate_batches": pipeline.get("duplicate_batches", 0),
            "alerts_written": alerts,
            "alerts_per_second": round(aps, 2),
            "queued_events": flow.get("queued_events", 0),
            "paused": flow.get("paused", False),
            "pauses": flow.get("pauses", 0),
            "paused_s": flow.get("paused_s", 0.0),
            "drops": drops,
            "busiest_agents": components.get("busiest_agents", {}),
        }
        return {
            "version": STATUS_VERSION,
            "pid": os.getpid(),
            "started": self._started,
            "updated": now,
            "interval_s": self._interval_s,
            "stopped": stopped,
            "manager": self._name,
            "listen": self._listen,
            "summary": summary,
            "errors": errors,
            "components": components,
        }


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# -- reading and printing ----------------------------------------------------------------


class StatusFileError(Exception):
    """The status file is missing or unreadable (says which and why)."""


def read_status(data_dir: Path) -> dict[str, Any]:
    """Read ``<data_dir>/var/status.json``.

    Raises:
        StatusFileError: missing (the manager never ran here), unreadable or malformed.
    """
    path = data_dir / STATUS_FILE
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        raise StatusFileError(
            f"{path} does not exist: no manager has run with data directory {data_dir}"
        ) from None
    except OSError as exc:
        raise StatusFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StatusFileError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != STATUS_VERSION:
        raise StatusFileError(f"{path} is not a version {STATUS_VERSION} status file")
    return doc


def is_running(doc: Mapping[str, Any], now: float) -> bool:
    """Whether the manager that wrote ``doc`` still runs: fresh, not stopped, pid alive."""
    if doc.get("stopped"):
        return False
    updated, interval = doc.get("updated"), doc.get("interval_s")
    if not isinstance(updated, int | float) or not isinstance(interval, int | float):
        return False
    if now - updated > STALE_INTERVALS * max(interval, 1.0):
        return False
    pid = doc.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def format_status(doc: Mapping[str, Any], now: float) -> str:
    """The status as a few aligned lines for a terminal."""
    s = doc.get("summary", {})
    running = is_running(doc, now)
    age = now - float(doc.get("updated", now))
    state = (
        f"running (pid {doc.get('pid')}), up {_duration(now - float(doc.get('started', now)))}"
        if running
        else ("stopped" if doc.get("stopped") else "not running (stale status)")
    )
    lines = [
        f"Manager {doc.get('manager', '?')}: {state}; status written {_duration(age)} ago",
        f"Listening:    {doc.get('listen', '?')}",
        f"Connections:  {s.get('connections_open', 0):,} open "
        f"({s.get('handshakes_open', 0):,} authenticating), "
        f"{s.get('connections_accepted', 0):,} accepted",
        f"Agents:       {s.get('agents_connected', 0):,} connected of "
        f"{s.get('agents_known', 0):,} enrolled",
        f"Events:       {s.get('events_received', 0):,} received, "
        f"{s.get('events_analysed', 0):,} analysed, {s.get('events_per_second', 0):,.1f}/s; "
        f"{s.get('duplicate_batches', 0):,} duplicate batches",
        f"Alerts:       {s.get('alerts_written', 0):,} written, "
        f"{s.get('alerts_per_second', 0):,.2f}/s",
        f"Backpressure: {'PAUSED' if s.get('paused') else 'reading'} "
        f"({s.get('queued_events', 0):,} events queued); paused {s.get('pauses', 0):,} times, "
        f"{s.get('paused_s', 0):,.1f} s in all",
    ]
    busiest = s.get("busiest_agents") or {}
    if busiest:
        lines.append(
            "Busiest:      "
            + ", ".join(f"{agent} {rate:,.1f}/s" for agent, rate in busiest.items())
        )
    drops = s.get("drops") or {}
    lines.append(
        "Drops:        "
        + (", ".join(f"{k} {v:,}" for k, v in sorted(drops.items())) if drops else "none")
    )
    errors = doc.get("errors") or {}
    lines.append(
        "Errors:       "
        + (", ".join(f"{k} {v:,}" for k, v in sorted(errors.items())) if errors else "none")
    )
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days {hours % 24} h"


# -- the command ------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from trailwarden.common.config import ConfigError
    from trailwarden.manager.config import ManagerConfig, load_manager_config

    if args.data_dir is not None:
        data_dir = args.data_dir
    else:
        try:
            config = load_manager_config(args.config) if args.config else ManagerConfig()
        except ConfigError as exc:
            print(f"trailwarden-manager status: {exc}", file=sys.stderr)
            return 2
        data_dir = config.manager.data_dir
    try:
        doc = read_status(data_dir)
    except StatusFileError as exc:
        print(f"trailwarden-manager status: {exc}", file=sys.stderr)
        return 1
    now = time.time()
    if args.json:
        doc = dict(doc, running=is_running(doc, now))
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_status(doc, now))
    return 0 if is_running(doc, now) else 3


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "status",
        help="show a running manager's counters",
        description="Print the counters the running manager writes to <data_dir>/var/status.json"
        " every few seconds: connections, agents, events/s, alerts, drops and errors by"
        " reason. Exit status: 0 running, 3 not running (the file is stale or says"
        " stopped), 1 no status file, 2 bad configuration.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--config", type=Path, metavar="FILE", help="the manager's configuration (for data_dir)"
    )
    where.add_argument("--data-dir", type=Path, metavar="DIR", help="the manager's data directory")
    p.add_argument("--json", action="store_true", help="print the whole status document")
    p.set_defaults(func=cmd_status)
