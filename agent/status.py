"""The agent's counters, and ``<data_dir>/status.json`` that exposes them.

The running agent rewrites status.json every ``agent.status_interval_s``
(atomically, without fsync: it is a view, cheap to lose) and once more when
it stops; ``trailwarden-agent status`` only reads it. The file says which
process wrote it and when, so a reader can tell a running agent from the
trace of a stopped or killed one.

Layout (``version`` 1)::

    {"version": 1, "pid": int, "state": "running" | "stopped", "started": epoch,
     "updated": epoch, "status_interval_s": float,
     "agent": {"id": str, "name": str},
     "connection": {"state": "connected" | "connecting" | "disconnected" | "stopped",
                    "manager": "host:port" | null, "since": epoch | null,
                    "last_ack": epoch | null, "last_error": str | null},
     "backlog": {"spooled_batches": int, "spooled_records": int, "in_flight": int,
                 "spool_bytes": int, "spool_max_bytes": int, "reading_paused": bool,
                 "acked_seq": int, "last_seq": int, "queued_files": int},
     "positions": {"tracked": int, "done": int, "quarantined": int, "reading": int},
     "files": [{"path", "fingerprint", "kind", "position"}...],   # being read now
     "counters": {name: int, ...}}
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

import orjson

from trailwarden.agent.atomic_file import replace_file

STATUS_NAME: Final = "status.json"
STATUS_VERSION: Final = 1
# status.json older than this many write intervals means the writer is gone.
STALE_AFTER_INTERVALS: Final = 3
# A status file is a few KB; anything far larger is not ours.
MAX_STATUS_BYTES: Final = 16 * 1024 * 1024
# Files listed in status.json (the ones being read right now).
MAX_LISTED_FILES: Final = 100


@dataclass(slots=True)
class Counters:
    """Monotonic event counts since the agent started (cheap attribute increments)."""

    files_seen: int = 0
    files_done: int = 0
    files_quarantined: int = 0
    files_already_read: int = 0  # a renamed or copied file found finished
    digests_skipped: int = 0
    records_read: int = 0
    records_oversized: int = 0
    records_invalid: int = 0
    batches_spooled: int = 0
    records_spooled: int = 0
    batches_sent: int = 0  # re-sends after a reconnect included
    records_sent: int = 0
    bytes_sent: int = 0  # on the wire, compressed and sealed
    batches_acked: int = 0
    records_acked: int = 0
    connections: int = 0
    connection_failures: int = 0
    truncations: int = 0
    rotations: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def status_path(data_dir: Path) -> Path:
    return data_dir / STATUS_NAME


def write_status(data_dir: Path, status: dict[str, Any]) -> None:
    replace_file(
        status_path(data_dir), orjson.dumps(status, option=orjson.OPT_INDENT_2), durable=False
    )


class StatusError(ValueError):
    """status.json is missing or unreadable (the message says what to do)."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    status: dict[str, Any]
    running: bool  # a live process wrote it recently
    age_s: float


def read_status(data_dir: Path, *, now: float | None = None) -> StatusReport:
    """Read status.json and judge whether its writer is still running.

    Raises:
        StatusError: no status file, or not one of ours.
    """
    path = status_path(data_dir)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        raise StatusError(
            f"{path}: no status file; the agent has not run with this data directory"
        ) from None
    except OSError as exc:
        raise StatusError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        status = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StatusError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(status, dict) or status.get("version") != STATUS_VERSION:
        raise StatusError(f"{path}: not a trailwarden-agent status file (version 1)")
    now = time.time() if now is None else now
    updated = status.get("updated")
    age = now - updated if isinstance(updated, int | float) else float("inf")
    interval = status.get("status_interval_s")
    interval = interval if isinstance(interval, int | float) and interval > 0 else 5.0
    pid = status.get("pid")
    running = (
        status.get("state") == "running"
        and age <= STALE_AFTER_INTERVALS * interval + 1
        and isinstance(pid, int)
        and _alive(pid)
    )
    return StatusReport(status, running, age)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def format_status(report: StatusReport) -> str:
    """The human-readable view printed by ``trailwarden-agent status``."""
    s = report.status
    agent = s.get("agent") or {}
    conn = s.get("connection") or {}
    backlog = s.get("backlog") or {}
    positions = s.get("positions") or {}
    counters = s.get("counters") or {}
    lines = []
    if report.running:
        uptime = _span(_num(s.get("updated")) - _num(s.get("started")))
        state = f"running (pid {s.get('pid')}, up {uptime})"
    else:
        state = f"NOT RUNNING (last status {_span(report.age_s)} ago, state {s.get('state')!r})"
    lines.append(f"Agent:       {agent.get('id', '?')} {agent.get('name', '')}  {state}")
    manager = conn.get("manager") or "-"
    since = conn.get("since")
    since_text = ""
    if isinstance(since, int | float):
        since_text = f" for {_span(_num(s.get('updated')) - since)}"
    lines.append(f"Connection:  {conn.get('state', '?')} {manager}{since_text}")
    if conn.get("last_error"):
        lines.append(f"Last error:  {conn['last_error']}")
    lines.append(
        f"Backlog:     {backlog.get('spooled_batches', 0)} batches / "
        f"{backlog.get('spooled_records', 0)} records unacknowledged, "
        f"{backlog.get('in_flight', 0)} in flight; spool {_size(backlog.get('spool_bytes', 0))} "
        f"of {_size(backlog.get('spool_max_bytes', 0))}"
        + ("  [READING PAUSED: spool full]" if backlog.get("reading_paused") else "")
    )
    lines.append(
        f"Sequences:   acknowledged {backlog.get('acked_seq', 0)}, last spooled "
        f"{backlog.get('last_seq', 0)}"
    )
    lines.append(
        f"Positions:   {positions.get('tracked', 0)} files tracked "
        f"({positions.get('done', 0)} done, {positions.get('quarantined', 0)} quarantined, "
        f"{positions.get('reading', 0)} in progress)"
    )
    files = s.get("files") or []
    if files:
        lines.append("Reading:")
        for f in files:
            lines.append(f"  {f.get('path')}  [{f.get('kind')}] at {f.get('position')}")
    if counters:
        lines.append("Counters:")
        for name, value in counters.items():
            lines.append(f"  {name:<22} {value}")
    return "\n".join(lines) + "\n"


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172_800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def _size(value: object) -> str:
    n = float(value) if isinstance(value, int | float) else 0.0
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
