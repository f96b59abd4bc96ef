"""Alert output exactly as analysisd writes it: alerts.json, alerts.log, archives.

``build_alert`` follows ``Eventinfo_to_jsonstr`` (``format/to_json.c``) then
``W_ParseJSON`` (``format/json_extended.c``): the key order below is the order
cJSON inserts them, and ``alert_json_line`` prints like ``cJSON_PrintUnformatted``.

Theory of operation for ``data``
--------------------------------
analysisd adds the static fields, then every non-empty dynamic field through
``W_JSON_AddField``: the key is split on every ``.`` into nested objects, names
are compared without ASCII case, the first value wins (a field under a name that
holds a string is dropped), and a value that starts with ``[``, ends with ``]``
and parses as JSON becomes an array; everything else is a string.

For an event whose only fields come from one uncut JSON document the same object
falls out of a single walk over the document, provided no key holds a dot and no
two sibling keys differ only by case (these are what make splitting and case
folding matter); the walk checks both and otherwise the general path runs.

Numbers inside such arrays were parsed by cJSON into doubles and are printed by
``print_number``, so they are kept as ``CJsonNumber`` and printed that way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from trailwarden.rules.event import STATIC_OUTPUT_ORDER, Event, ascii_lower
from trailwarden.rules.json_decoder import (
    OS_MAXSTR,
    CObject,
    JsonFieldBlock,
    field_text,
    parse_cjson,
    print_json,
    print_number,
)
from trailwarden.rules.mitre import MitreTable
from trailwarden.rules.model import COMPLIANCE_PREFIXES, DecoderInfo, RuleInfo

__all__ = [
    "CJsonNumber",
    "alert_json_line",
    "build_alert",
    "build_archive",
    "build_data",
    "format_alerts_log",
    "format_archive_line",
]

# W_JSON_ParseGroups / ParseLocation copy into char[MAX_STRING]: 1023 bytes kept.
_MAX_STRING = 1024
# Nesting the one-walk ``data`` builder recurses through before deferring to the
# (iterative) general path.
_FAST_DATA_DEPTH = 64
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# W_JSON_ParseHostname: a syslog header at the start of full_log names the host.
_SYSLOG_HOST_RE = re.compile(r"[A-Z][a-z][a-z] [ 0123][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} ([^ ]+)")

Json = dict[str, Any]


class CJsonNumber(float):
    """A number cJSON parsed from a field value: printed the way cJSON prints it."""

    __slots__ = ()


# -- time -----------------------------------------------------------------------


@lru_cache(maxsize=8)
def _local_second(seconds: int) -> tuple[str, str, int, str, int, str]:
    """(``%FT%T``, ``%z``, year, month name, day, ``HH:MM:SS``) in local time."""
    moment = datetime.fromtimestamp(seconds, tz=UTC).astimezone()
    return (
        moment.strftime("%Y-%m-%dT%H:%M:%S"),
        moment.strftime("%z"),
        moment.year,
        _MONTHS[moment.month - 1],
        moment.day,
        moment.strftime("%H:%M:%S"),
    )


def _split_time(time_s: float) -> tuple[int, int]:
    # Round to the microsecond first: a float epoch is exact to ~0.2 us only.
    micros = round(time_s * 1_000_000)
    return micros // 1_000_000, (micros % 1_000_000) // 1000


def _timestamp(time_s: float) -> str:
    seconds, millis = _split_time(time_s)
    date, zone, *_ = _local_second(seconds)
    return f"{date}.{millis:03d}{zone}"


def _header_time(time_s: float) -> str:
    """``%d %s %02d %s``: year, month, day, hour of reception (log headers)."""
    _, _, year, month, day, hour = _local_second(_split_time(time_s)[0])
    return f"{year} {month} {day:02d} {hour}"


# -- data -------------------------------------------------------------------------


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _convert(node: object) -> object:
    """A parse_cjson value as alert data: numbers as CJsonNumber, objects as dict
    (or CObject when they repeat a key, which a dict cannot hold)."""

    def fresh(v: object) -> Any:
        if type(v) is list:
            return []
        keys = [k for k, _ in v]  # type: ignore[attr-defined]
        return {} if len(set(keys)) == len(keys) else CObject()

    def one(v: object, stack: list[tuple[Any, Any]]) -> object:
        t = type(v)
        if t is float:
            return CJsonNumber(v)  # type: ignore[arg-type]
        if t is list or t is CObject:
            made = fresh(v)
            stack.append((v, made))
            return made
        return v

    top: list[tuple[Any, Any]] = []
    result = one(node, top)
    stack = top
    while stack:
        source, target = stack.pop()
        if type(source) is list:
            for v in source:
                target.append(one(v, stack))
        elif type(target) is dict:
            for k, v in source:
                target[k] = one(v, stack)
        else:
            for k, v in source:
                target.append((k, one(v, stack)))
    return result


def _data_value(text: str) -> object:
    """W_JSON_AddField's leaf: a complete JSON array text becomes the array."""
    if text[:1] == "[" and text[-1] == "]" and _utf8_len(text) < OS_MAXSTR:
        ok, node = parse_cjson(text, require_end=True)
        if ok:
            return _convert(node)
    return text


def _add_field(data: Json, index: dict[int, dict[str, str]], key: str, value: str) -> None:
    """W_JSON_AddField, iteratively; ``index`` maps each object to lowered names."""
    node = data
    names = index[id(data)]
    while True:
        dot = key.find(".")
        if dot < 0:
            break
        part = key[:dot]
        key = key[dot + 1 :]
        lowered = ascii_lower(part)
        present = names.get(lowered)
        if present is not None:
            child = node[present]
            if type(child) is not dict:
                return  # a non-object holds the name: the field is dropped
        else:
            child = node[part] = {}
            names[lowered] = part
            index[id(child)] = {}
        node = child
        names = index[id(child)]
    lowered = ascii_lower(key)
    if lowered not in names:
        node[key] = _data_value(value)
        names[lowered] = key


def _document_data(
    node: dict[str, Any],
    taken: frozenset[str],
    consumed: frozenset[str],
    null_string: bool,
    csv: bool,
    depth: int,
) -> Json | None:
    """``data`` entries of a JSON document in one walk; None where the result
    might differ from W_JSON_AddField (see the module notes)."""
    out: Json = {}
    seen = set(taken)
    for key, value in node.items():
        if key in consumed:
            continue  # went to a static slot, never a dynamic field
        if "." in key:
            return None
        lowered = key.lower()  # full Unicode folding: may refuse more, never less
        if lowered in seen:
            return None
        seen.add(lowered)
        if type(value) is dict:
            if depth >= _FAST_DATA_DEPTH:
                return None
            child = _document_data(value, frozenset(), frozenset(), null_string, csv, depth + 1)
            if child is None:
                return None
            if child:
                out[key] = child
        else:
            text = field_text(value, null_string, csv)
            if text:
                out[key] = _data_value(text)
    return out


def build_data(event: Event, *, fast: bool = True) -> Json:
    """The alert's ``data`` object (empty when it is left out)."""
    data: Json = {}
    for name, attr in STATIC_OUTPUT_ORDER:
        value = getattr(event, attr)
        if value is not None:
            data[name] = value
    decoder = event.decoder
    if not isinstance(decoder, DecoderInfo) or decoder.name.startswith("syscheck_"):
        return data
    blocks = event._blocks
    if fast and len(blocks) == 1 and type(blocks[0]) is JsonFieldBlock:
        block = blocks[0]
        document = block.document()
        if document is not None:
            root, consumed = document
            taken = frozenset(k.lower() for k in data)
            entries = _document_data(root, taken, consumed, block.null_string, block.csv, 0)
            if entries is not None:
                data.update(entries)
                return data
    index = {id(data): {ascii_lower(k): k for k in data}}
    for key, value in event.fields():
        if value:
            _add_field(data, index, key, value)
    return data


# -- alerts.json ------------------------------------------------------------------


def _rule_groups(rule_obj: Json, group_string: str) -> None:
    """W_JSON_ParseGroups: ``groups`` then compliance arrays in first-seen order."""
    text = group_string.encode("utf-8", "surrogatepass")[: _MAX_STRING - 1]
    groups: list[str] = []
    rule_obj["groups"] = groups
    for token in text.decode("utf-8", "ignore").split(","):
        if not token:
            continue
        for prefix, key in COMPLIANCE_PREFIXES:
            if token.startswith(prefix):
                rule_obj.setdefault(key, []).append(token[len(prefix) :])
                break
        else:
            groups.append(token)


def _sca_groups(rule_obj: Json, data: Json) -> None:
    """add_SCA_groups: an SCA check's compliance lists join the rule's."""
    sca = _get_ci(data, "sca")
    check = _get_ci(sca, "check") if type(sca) is dict else None
    compliance = _get_ci(check, "compliance") if type(check) is dict else None
    if type(compliance) is not dict:
        return
    for name, value in compliance.items():
        if type(value) is not str:
            continue
        tokens = [t.strip() for t in value.split(",") if t.strip()]
        existing = _get_ci(rule_obj, name)
        if type(existing) is list:
            existing.extend(tokens)
        elif existing is None and tokens:
            rule_obj[name] = tokens


def _get_ci(obj: Json, name: str) -> Any:
    """cJSON_GetObjectItem: the first member whose name matches ignoring ASCII case."""
    if name in obj:
        return obj[name]
    lowered = ascii_lower(name)
    for key, value in obj.items():
        if ascii_lower(key) == lowered:
            return value
    return None


def _agent_hostname(event: Event, manager_name: str) -> str | None:
    # analysisd always has a hostname: the pre-decoded one, the agent's, or its own.
    if event.hostname is not None:
        return event.hostname
    return event.agent_name if event.location.startswith("(") else manager_name


def _agent_ip(event: Event) -> str | None:
    """W_JSON_ParseAgentIP: the ``_agent_ip`` label, else ``(name) ip->`` of the location."""
    for key, value in event.labels:
        if key == "_agent_ip":
            ip: str | None = value
            break
    else:
        ip = None
        location = event.location
        if location.startswith("("):
            close = location.find(")")
            if close >= 0:
                start = close + 2
                dash = location.find("-", start)
                ip = location[start:] if dash < 0 else location[start:dash]
    return ip if ip is not None and ip != "any" else None


def _visible_labels(event: Event) -> list[tuple[str, str]]:
    # System labels start with "_", hidden ones with "!" (show_hidden_labels is off).
    return [(k, v) for k, v in event.labels if not k.startswith(("_", "!"))]


def _finish(root: Json, agent: Json, event: Event, manager_name: str) -> None:
    """W_ParseJSON's event part: agent name/ip, predecoder hostname, location."""
    hostname = _agent_hostname(event, manager_name)
    location = event.location
    if event.full_log is not None and hostname is not None:
        if location.startswith("("):
            agent["name"] = hostname
        elif event.agent_id == "000":
            agent["name"] = root["manager"]["name"]
        match = _SYSLOG_HOST_RE.match(event.full_log)
        if match is not None:
            root.setdefault("predecoder", {})["hostname"] = match.group(1)
        ip = _agent_ip(event)
        if ip is not None:
            agent["ip"] = ip
    if location.startswith("("):
        head = location.encode("utf-8", "surrogatepass")[: _MAX_STRING - 1]
        bounded = head.decode("utf-8", "ignore")
        arrow = bounded.find(">")
        if arrow >= 0:
            root["location"] = bounded[arrow + 1 :]
        if event.agent_id == "000":
            _agentless(root, location)
    else:
        root["location"] = location
    # W_JSON_ParseLabels runs when any label is not a system one, hidden or not.
    if any(not key.startswith("_") for key, _ in event.labels):
        block: Json = {}
        agent["labels"] = block
        index: dict[int, dict[str, str]] = {id(block): {}}
        for key, value in _visible_labels(event):
            _add_field(block, index, key, value)


def _agentless(root: Json, location: str) -> None:
    """W_JSON_ParseAgentless: ``(script) user@host->location`` replaces ``agent``."""
    script_end = location.find(") ", 1)
    if script_end < 0:
        return
    user_start = script_end + 2
    at = location.find("@", user_start)
    if at < 0:
        return
    arrow = location.find("->", at + 1)
    if arrow < 0:
        return
    root["agentless"] = {
        "script": location[1:script_end],
        "user": location[user_start:at],
        "host": location[at + 1 : arrow],
    }
    del root["agent"]


def _event_part(
    root: Json, agent: Json, event: Event, manager_name: str, *, full_log: bool
) -> Json:
    """to_json.c from ``full_log`` on; returns ``data`` (already placed)."""
    data = build_data(event)
    if full_log and event.full_log is not None:
        root["full_log"] = event.full_log
    agent["id"] = event.agent_id
    if event.program_name is not None or event.predecoded_timestamp is not None:
        predecoder: Json = {}
        root["predecoder"] = predecoder
        if event.program_name is not None:
            predecoder["program_name"] = event.program_name
        if event.predecoded_timestamp is not None:
            predecoder["timestamp"] = event.predecoded_timestamp
    decoder_obj: Json = {}
    decoder = event.decoder
    if isinstance(decoder, DecoderInfo):
        if decoder.accumulate:
            decoder_obj["accumulate"] = 1
        if decoder.parent is not None:
            decoder_obj["parent"] = decoder.parent
        decoder_obj["name"] = decoder.name
        if decoder.ftscomment is not None:
            decoder_obj["ftscomment"] = decoder.ftscomment
    root["decoder"] = decoder_obj
    if data:
        root["data"] = data
    _finish(root, agent, event, manager_name)
    return data


def build_alert(
    event: Event,
    rule: RuleInfo,
    *,
    description: str,
    alert_id: str,
    manager_name: str,
    firedtimes: int | None,
    previous_output: str | None,
    mitre: MitreTable,
    warn: Callable[[str], None] | None = None,
) -> Json:
    """The alerts.json object of ``event`` alerting as ``rule``.

    Args:
        description: the rule description after ``$(field)`` substitution.
        alert_id: ``"<seconds>.<offset>"``; analysisd uses the alert's byte
            offset in today's alerts.log.
        firedtimes: the rule's counter after this firing; None leaves it out.
        previous_output: the earlier logs of a correlation, joined by newlines,
            when analysisd shows them (two or more); else None.
        warn: receives MITRE lookup warnings (default: this module's logger).
    """
    root: Json = {}
    if event.time_s:
        root["timestamp"] = _timestamp(event.time_s)
    rule_obj: Json = {}
    root["rule"] = rule_obj
    agent: Json = {}
    root["agent"] = agent
    root["manager"] = {"name": manager_name}
    if event.time_s:
        root["id"] = alert_id
    if rule.level:
        rule_obj["level"] = rule.level
    rule_obj["description"] = description
    if rule.id:
        rule_obj["id"] = str(rule.id)
    if rule.mitre:
        resolved = mitre.rule_mitre(rule.mitre, warn)
        if resolved is not None:
            rule_obj["mitre"] = resolved
    if rule.cve is not None:
        rule_obj["cve"] = rule.cve
    if rule.info:
        rule_obj["info"] = "".join(text for _, text in rule.info)
    if rule.context:
        rule_obj["frequency"] = rule.frequency if rule.frequency is not None else 2
    if firedtimes is not None and not rule.no_counter:
        rule_obj["firedtimes"] = firedtimes
    rule_obj["mail"] = rule.mail
    if previous_output is not None:
        root["previous_output"] = previous_output
    data = _event_part(root, agent, event, manager_name, full_log=not rule.no_full_log)
    _rule_groups(rule_obj, rule.group_string)
    if data:
        _sca_groups(rule_obj, data)
    return root


def build_archive(event: Event, *, manager_name: str, alert_id: str | None = None) -> Json:
    """The archives.json object analysisd writes for every event (no rule)."""
    root: Json = {}
    if event.time_s:
        root["timestamp"] = _timestamp(event.time_s)
    agent: Json = {}
    root["agent"] = agent
    root["manager"] = {"name": manager_name}
    if event.time_s and alert_id is not None:
        root["id"] = alert_id
    _event_part(root, agent, event, manager_name, full_log=True)
    return root


def _cjson_default(obj: object) -> orjson.Fragment:
    if type(obj) is CJsonNumber:
        return orjson.Fragment(print_number(obj))
    if type(obj) is CObject:
        return orjson.Fragment(print_json(obj, formatted=False))
    raise TypeError(f"alert_json_line: {type(obj).__name__} in an alert (bug in the builder)")


_DUMP_OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_APPEND_NEWLINE


def alert_json_line(alert: Json) -> bytes:
    """One alerts.json line: compact JSON as cJSON prints it, then a newline."""
    try:
        return orjson.dumps(alert, default=_cjson_default, option=_DUMP_OPTIONS)
    except orjson.JSONEncodeError:
        # Nesting beyond orjson's 254 levels, or text that is not UTF-8.
        text = print_json(alert, formatted=False) + "\n"
        return text.encode("utf-8", "surrogateescape")


# -- alerts.log and archives.log ----------------------------------------------------


def _location_header(event: Event, manager_name: str) -> str:
    location = event.location
    if location.startswith("("):
        return location
    hostname = _agent_hostname(event, manager_name)
    return f"{hostname if hostname is not None else '(null)'}->{location}"


def format_alerts_log(
    event: Event,
    rule: RuleInfo,
    *,
    description: str,
    alert_id: str,
    manager_name: str,
    previous_lines: Sequence[str] = (),
) -> str:
    """One ``** Alert`` block of alerts.log (``OS_Log``), blank line included."""
    labels = "".join(f"{k}: {v}\n" for k, v in _visible_labels(event))
    if _utf8_len(labels) >= OS_MAXSTR:
        labels = ""
    parts = [
        f"** Alert {alert_id}:{' mail ' if rule.mail else ''} - {rule.group_string}\n",
        f"{_header_time(event.time_s)} {_location_header(event, manager_name)}\n",
        f"{labels}Rule: {rule.id} (level {rule.level}) -> '{description}'",
    ]
    for label, value in (
        ("Src IP", event.srcip),
        ("Src Port", event.srcport),
        ("Dst IP", event.dstip),
        ("Dst Port", event.dstport),
        ("User", event.dstuser),
    ):
        if value is not None:
            parts.append(f"\n{label}: {value}")
    parts.append(f"\n{event.full_log}\n")
    parts.extend(f"{key}: {value}\n" for key, value in event.fields() if value)
    parts.extend(f"{line}\n" for line in previous_lines)
    parts.append("\n")
    return "".join(parts)


def format_archive_line(event: Event, *, manager_name: str) -> str | None:
    """One archives.log line (``OS_Store``); None for agent keepalives."""
    location = event.location
    if location == "ossec-keepalive" or "->ossec-keepalive" in location:
        return None
    return (
        f"{_header_time(event.time_s)} {_location_header(event, manager_name)} {event.full_log}\n"
    )
