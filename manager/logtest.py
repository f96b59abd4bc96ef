"""``trailwarden-manager logtest``: wazuh-logtest for the Trailwarden engine.

Events are read from a stream, one per line; correlation state is kept across
the lines of one run, as in one wazuh-logtest session. For each line the text
mode prints the three phases (pre-decoding, decoding, rule matching) the way
wazuh-logtest does, and ``--json`` prints one JSON object per line with
``rule_id``, ``level``, ``decoder``, ``alert`` (would it be written to
alerts.json) and ``output`` (the alerts.json object, or null when no rule
matched).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TextIO

import orjson

from trailwarden.rules.engine import Engine, Verdict

# logtest's own alert id: there is no alerts.log offset in a test session.
_LOGTEST_ALERT_OFFSET = "0"


def _quote(value: object) -> str:
    return f"'{value}'"


def text_report(engine: Engine, verdict: Verdict, manager_name: str) -> str:
    event = verdict.event
    lines = ["", "**Phase 1: Completed pre-decoding.", f"\tfull event: {_quote(event.full_log)}"]
    if event.predecoded_timestamp is not None:
        lines.append(f"\ttimestamp: {_quote(event.predecoded_timestamp)}")
    if event.hostname is not None and event.hostname != manager_name:
        lines.append(f"\thostname: {_quote(event.hostname)}")
    if event.program_name is not None:
        lines.append(f"\tprogram_name: {_quote(event.program_name)}")
    lines += ["", "**Phase 2: Completed decoding."]
    decoder = event.decoder
    if decoder is None:
        lines.append("\tNo decoder matched.")
    else:
        lines.append(f"\tname: {_quote(decoder.name)}")
        if decoder.parent is not None:
            lines.append(f"\tparent: {_quote(decoder.parent)}")
        for attr, label in (
            ("srcip", "srcip"),
            ("srcport", "srcport"),
            ("srcuser", "srcuser"),
            ("dstip", "dstip"),
            ("dstport", "dstport"),
            ("dstuser", "dstuser"),
            ("protocol", "protocol"),
            ("action", "action"),
            ("id", "id"),
            ("url", "url"),
            ("data", "data"),
            ("extra_data", "extra_data"),
            ("status", "status"),
            ("systemname", "system_name"),
        ):
            value = getattr(event, attr)
            if value is not None:
                lines.append(f"\t{label}: {_quote(value)}")
        for key, value in event.fields():
            lines.append(f"\t{key}: {_quote(value)}")
    rule = verdict.rule
    if rule is not None:
        info = rule.describe()
        lines += [
            "",
            "**Phase 3: Completed filtering (rules).",
            f"\tid: {_quote(rule.id)}",
            f"\tlevel: {_quote(rule.level)}",
            f"\tdescription: {_quote(engine.describe(verdict))}",
            f"\tgroups: {_quote(info.groups)}",
            f"\tfiredtimes: {_quote(verdict.firedtimes)}",
            f"\tmail: {_quote(info.mail)}",
        ]
        if verdict.alert:
            lines.append("**Alert to be generated.")
    lines.append("")
    return "\n".join(lines)


def json_report(engine: Engine, verdict: Verdict, manager_name: str) -> bytes:
    output = None
    if verdict.rule is not None:
        alert_id = f"{int(verdict.event.time_s)}.{_LOGTEST_ALERT_OFFSET}"
        output = engine.render(verdict, alert_id=alert_id, manager_name=manager_name).alert
    decoder = verdict.event.decoder
    report = {
        "rule_id": None if verdict.rule is None else str(verdict.rule.id),
        "level": None if verdict.rule is None else verdict.rule.level,
        "decoder": None if decoder is None else decoder.name,
        "alert": verdict.alert,
        "output": output,
    }
    return orjson.dumps(report, default=str)


def run(
    engine: Engine,
    lines: Iterable[str],
    out: TextIO,
    *,
    location: str,
    json: bool,
    manager_name: str,
) -> int:
    """Analyse each line; returns how many lines produced an alert."""
    state = engine.new_state()
    alerts = 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            continue
        verdict = engine.process(line, location, time.time(), state, manager_name=manager_name)
        alerts += verdict.alert
        if json:
            out.write(json_report(engine, verdict, manager_name).decode() + "\n")
        else:
            out.write(text_report(engine, verdict, manager_name) + "\n")
        out.flush()
    return alerts
