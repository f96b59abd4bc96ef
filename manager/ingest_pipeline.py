"""Wazuh's Filebeat ingest pipeline, done in Python before indexing directly.

Wazuh 4.x ships alerts.json through Filebeat into the indexer, whose ingest
pipeline (``wazuh-module/alerts/ingest/pipeline.json``; the archives one is the
same) shapes each document. Indexing directly, we apply the same steps
ourselves, since the indexer may have no such pipeline (and osmem, which the
tests use, has no ingest API at all):

1. ``json`` on ``message`` with ``add_to_root``: we start from the alert dict.
2. ``set data.aws.region = {{data.aws.awsRegion}}`` and ``set data.aws.accountId
   = {{data.aws.aws_account_id}}``, ``override: false`` (kept when present and
   not null) and ``ignore_empty_value`` (skipped when the source renders empty).
3. ``geoip`` into ``GeoLocation`` from ``data.srcip``, ``data.aws.sourceIPAddress``
   and others: **not done** (no GeoIP database here); dashboards' map panels
   stay empty.
4. ``date``: ``timestamp`` (ISO 8601) to ``@timestamp``, in UTC; a timestamp
   that does not parse fails the pipeline.
5. ``date_index_name`` on ``timestamp``, rounding ``d``, format ``yyyy.MM.dd``,
   in the processor's default zone, UTC: an alert stamped
   ``2026-11-29T00:30:00.000+0100`` goes to ``...-2026.11.28``.
6. ``remove`` of Filebeat's own top-level fields (``REMOVED_FIELDS``).
7. ``on_failure: drop``: a failing document is dropped; here ``PipelineDrop``
   tells the caller, who counts it.

Filebeat's own fields that survive the pipeline (``input.type: log``) are not
added: nothing here is Filebeat.

The input dict is never modified: objects on the path of a change are copied
shallowly, the rest is shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

ALERTS_INDEX_PREFIX = "wazuh-alerts-4.x-"
ARCHIVES_INDEX_PREFIX = "wazuh-archives-4.x-"
# pipeline.json's remove processors: fields Filebeat adds, gone before indexing.
REMOVED_FIELDS = frozenset(
    (
        "message",
        "ecs",
        "beat",
        "input_type",
        "tags",
        "count",
        "@version",
        "log",
        "offset",
        "type",
        "host",
        "fields",
        "event",
        "fileset",
        "service",
    )
)
# (target key, source key) inside data.aws, in pipeline order.
_AWS_SETS = (("region", "awsRegion"), ("accountId", "aws_account_id"))


class PipelineDrop(ValueError):
    """The pipeline would drop this alert (its ``on_failure: drop``)."""


def index_document(
    alert: Mapping[str, Any], index_prefix: str = ALERTS_INDEX_PREFIX
) -> tuple[str, dict[str, Any]]:
    """Return ``(index name, document)`` for ``alert`` as Wazuh's pipeline would.

    Raises:
        PipelineDrop: ``timestamp`` is missing or not an ISO 8601 date-time.
    """
    ts = alert.get("timestamp")
    if not isinstance(ts, str):
        raise PipelineDrop(f"timestamp is {type(ts).__name__}, not a string")
    try:
        when = datetime.fromisoformat(ts)
    except ValueError:
        raise PipelineDrop(f"timestamp {ts[:40]!r} is not ISO 8601") from None
    if len(ts) == 28 and ts.endswith("+0000"):
        # analysisd's own form, already UTC: "2026-11-28T10:00:00.123+0000".
        at = f"{ts[:23]}Z"
    else:
        # ES's date processors default to UTC for values without an offset.
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        at = (
            f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:"
            f"{when.minute:02d}:{when.second:02d}.{when.microsecond // 1000:03d}Z"
        )

    doc = dict(alert)
    if not REMOVED_FIELDS.isdisjoint(doc):
        for key in REMOVED_FIELDS.intersection(doc):
            del doc[key]
    data = doc.get("data")
    if isinstance(data, dict):
        aws = data.get("aws")
        if isinstance(aws, dict):
            new_aws = _aws_sets(aws)
            if new_aws is not aws:
                doc["data"] = {**data, "aws": new_aws}
    doc["@timestamp"] = at
    return f"{index_prefix}{when.year:04d}.{when.month:02d}.{when.day:02d}", doc


def _aws_sets(aws: dict[str, Any]) -> dict[str, Any]:
    """Steps 2: the two ``set`` processors; returns ``aws`` itself if unchanged."""
    out = aws
    for target, source in _AWS_SETS:
        if out.get(target) is not None:
            continue  # override: false
        value = _mustache(aws.get(source))
        if not value:
            continue  # ignore_empty_value
        if out is aws:
            out = dict(aws)
        out[target] = value
    return out


def _mustache(value: Any) -> str:
    """What ``{{field}}`` renders to for the scalar values alerts carry."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
