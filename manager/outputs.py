"""The one lifecycle every alert output shares, so the manager wires them alike.

Three outputs exist: the Wazuh alert files (``alert_files.AlertFiles``), the
indexer ``_bulk`` shipper (``indexer.IndexerOutput``) and the MQTT fan-out
(``mqtt.MqttOutput``). Each is driven the same way::

    await out.start()          # open files / start the background sender
    ...                        # feed it (see below), from the event loop thread
    await out.flush(timeout_s) # True once what was fed so far is delivered
    await out.close(timeout_s) # flush what it can in time, then stop for good
    out.stats()                # flat counters for `status`

How an output is fed differs by what it needs, and is the only difference:

* ``AlertFiles.write(items)`` takes *pending* alerts, because an alert's ``id``
  is the byte offset at which it lands in today's alerts.log; the writer
  assigns it and returns it (see ``alert_files``).
* Network outputs (``AlertSink``) take the finished alert, ``RenderedAlert``,
  through ``submit()``. ``submit`` never awaits and never blocks: a sink that
  cannot keep up drops and counts, so a slow indexer or broker can never stall
  analysis or the alert files.

Delivery promises differ and are stated by each output: the alert files are the
record of truth (the manager acks agents only after ``AlertFiles.flush``); the
network sinks are best effort with bounded queues, retried, never blocking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

StatValue = int | float | str | bool
# Flat "name" -> value, with dotted names for per-kind breakdowns
# ("item_errors.mapper_parsing_exception"), so `status` can print it as is.
Stats = dict[str, StatValue]


@dataclass(frozen=True, slots=True)
class RenderedAlert:
    """One alert as written to alerts.json: what the network outputs ship.

    ``line`` is the exact alerts.json line (one JSON object and ``\\n``) and
    ``fields`` the same alert decoded (the engine's dict, ``id`` included), so
    sinks neither re-serialise nor re-parse. ``dedup_key`` optionally names the
    *event* the alert came from in a way that survives a re-analysis after a
    crash (e.g. agent id, file fingerprint, record index); the indexer uses it
    for the document ``_id`` when given (see ``indexer.document_id``).
    """

    line: bytes
    fields: Mapping[str, Any]
    dedup_key: bytes | None = None

    @classmethod
    def from_line(cls, line: bytes, dedup_key: bytes | None = None) -> RenderedAlert:
        """Build from an alerts.json line (e.g. when replaying a file).

        Raises:
            ValueError: the line is not one JSON object (the input's fault).
        """
        try:
            fields = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"alerts.json line is not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise ValueError(f"alerts.json line is a JSON {type(fields).__name__}, not an object")
        return cls(line if line.endswith(b"\n") else line + b"\n", fields, dedup_key)


class Output(Protocol):
    """Lifecycle shared by all outputs. All methods run on the event loop thread."""

    @property
    def name(self) -> str:
        """Short name for logs and `status` ("alert_files", "indexer", "mqtt")."""
        ...

    async def start(self) -> None:
        """Open resources and start background work. Call once, before feeding."""
        ...

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything fed before this call is delivered.

        "Delivered" is defined by each output. Returns False if ``timeout_s``
        passed first (nothing is lost by that: delivery goes on).
        """
        ...

    async def close(self, timeout_s: float) -> None:
        """Stop accepting, deliver what fits in ``timeout_s``, release everything.

        What is still queued afterwards is counted as dropped in ``stats()``.
        """
        ...

    def stats(self) -> Stats:
        """Counters and state, cheap to call."""
        ...


class AlertSink(Output, Protocol):
    """An output fed one finished alert at a time (indexer, MQTT)."""

    def submit(self, alert: RenderedAlert) -> bool:
        """Queue ``alert`` for delivery without blocking.

        Returns False when the alert is not queued (queue full, closed, filtered
        or invalid); each reason has its own counter in ``stats()``.
        """
        ...
