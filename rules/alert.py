"""Alert output exactly as analysisd writes it: alerts.json, alerts.log, archives.

``build_alert`` follows ``Eventinfo_to_jsonstr`` (``format/to_json.c``) then
``W_ParseJSON`` (``format/json_extended.c``): the key order below is the order
cJSON inserts them, and ``alert_json_line`` prints like ``cJSON_PrintUnformatted``.

Theory of operation for ``data`` and the field lines
----------------------------------------------------
analysisd adds the static fields, then every non-empty dynamic field through
``W_JSON_AddField``: the key is split on every ``.`` into nested objects, names
are compared without ASCII case, the first value wins (a field under a name that
holds a string is dropped), and a value that starts with ``[``, ends with ``]``
and parses as JSON becomes an array; everything else is a string. alerts.log
lists the same non-empty fields as ``key: value`` lines.

For an event whose only fields come from one JSON document (a
``JsonFieldBlock``), one walk over the document yields both: the lines, and the
``data`` object, which falls out of the document's own shape provided no key
holds a dot, no two sibling keys differ only by ASCII case (``key_index``
answers both per object) and the cap cut no field (these are what make
splitting, case folding and dropping matter). Otherwise ``data`` is built by
the general path. The walk is kept on the block, so the JSON line and the log
block of one alert share it.

An array field's text is cJSON's formatted print of the array, which
``W_JSON_AddField`` parses back: the walk converts the array directly into
what that parse gives (numbers through their printed text, as
``CJsonNumber`` so they print as cJSON prints them), unless the text is too
long to be parsed back (``OS_MAXSTR``), when it stays a string.

Per-rule parts of ``rule`` (id, MITRE names, groups and compliance lists) are
worked out once per rule object and copied into each alert.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any

import orjson
from mypy_extensions import mypyc_attr

from trailwarden.rules.cjson import INT_MAX, INT_MIN, CObject, parse_cjson, print_json, print_number
from trailwarden.rules.event import STATIC_OUTPUT_ORDER, Event, ascii_lower
from trailwarden.rules.json_decoder import OS_MAXSTR, JsonFieldBlock, key_index, plain_field_text
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
# Nesting the one-walk builder recurses through before deferring to the
# (iterative) general path.
_FAST_DATA_DEPTH = 64
# Key tuples of objects known to have a key index (the one-walk builder's
# check that an object's shape is data's), bounded against hostile documents.
_SHAPED_KEYS_MAX = 4096
_SHAPED_KEYS_CHARS = 1024  # longest key tuple kept, in characters of keys
# Rules whose alert parts are kept (a ruleset has a few thousand).
_RULE_PARTS_MAX = 8192
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# W_JSON_ParseHostname: a syslog header at the start of full_log names the host.
_SYSLOG_HOST_RE = re.compile(r"[A-Z][a-z][a-z] [ 0123][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} ([^ ]+)")
_MITRE_LOG = logging.getLogger("trailwarden.rules.mitre")  # MitreTable's module

Json = dict[str, Any]

_STATICS_OF = attrgetter(*(attr for _, attr in STATIC_OUTPUT_ORDER))
_NO_STATICS = (None,) * len(STATIC_OUTPUT_ORDER)


_SHAPED_KEYS: set[tuple[str, ...]] = set()


def _keep_shaped(keys: tuple[str, ...]) -> None:
    if sum(map(len, keys)) <= _SHAPED_KEYS_CHARS:
        if len(_SHAPED_KEYS) >= _SHAPED_KEYS_MAX:
            _SHAPED_KEYS.clear()
        _SHAPED_KEYS.add(keys)


@mypyc_attr(native_class=False)  # subclasses float: stays a Python class
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


def _timestamp_of(event: Event) -> str:
    """The alert's ``timestamp``; events of one batch share their reception time."""
    time_s = event.time_s
    last = _LAST_TIMESTAMP
    if last[0] != time_s:
        last[0] = time_s
        last[1] = _timestamp(time_s)
    return last[1]  # type: ignore[return-value]


_LAST_TIMESTAMP: list[object] = [None, ""]  # (time_s, its timestamp)


def _header_time(time_s: float) -> str:
    """``%d %s %02d %s``: year, month, day, hour of reception (log headers)."""
    last = _LAST_HEADER_TIME
    if last[0] != time_s:
        _, _, year, month, day, hour = _local_second(_split_time(time_s)[0])
        last[0] = time_s
        last[1] = f"{year} {month} {day:02d} {hour}"
    return last[1]  # type: ignore[return-value]


_LAST_HEADER_TIME: list[object] = [None, ""]  # (time_s, its header time)


# -- data values ------------------------------------------------------------------


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


def _reparsed(v: object, depth: int) -> object:
    """What cJSON parses back from its print of ``v`` (a value of an orjson
    tree): the same tree, numbers as the double their printed text reads as."""
    t = type(v)
    if t is str or t is bool or v is None:
        return v
    if t is int:
        i: int = v  # type: ignore[assignment]
        if INT_MIN < i < INT_MAX:
            return CJsonNumber(i)
        v = float(i)
    if t is int or t is float:
        text = print_number(v)  # type: ignore[arg-type]
        return None if text == "null" else CJsonNumber(float(text))
    if depth > _FAST_DATA_DEPTH:
        return _data_value(print_json(v, formatted=True))
    inner = depth + 1
    if t is list:
        return [x if type(x) is str else _reparsed(x, inner) for x in v]  # type: ignore[attr-defined]
    return {
        k: x if type(x) is str else _reparsed(x, inner)
        for k, x in v.items()  # type: ignore[attr-defined]
    }


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


# -- the one walk over a JSON document ----------------------------------------------


class _Unfit(Exception):
    """The document nests too deep for the recursive walk (not an input error)."""


class _DocumentFields:
    """What the alert writer derived from one JsonFieldBlock (its ``alert_memo``)."""

    __slots__ = ("entries", "lines", "taken")

    def __init__(self, entries: Json | None, lines: str) -> None:
        self.entries = entries  # data's dynamic part; None: data takes the general path
        self.lines = lines  # alerts.log "key: value" lines of the non-empty fields
        self.taken = False  # entries went into an alert (which owns them now)


def _walk_document(block: JsonFieldBlock) -> _DocumentFields:
    """The alerts.log lines and, when the document's shape is data's, the data
    entries of a JSON document, in one walk."""
    root = block.root
    consumed = block.consumed
    if consumed:  # top-level keys that went to static slots make no field
        root = {k: v for k, v in root.items() if k not in consumed}
        shaped = key_index(root) is not None
    else:
        shaped = key_index(root) is not None
    lines: list[str] = []
    try:
        if block.capped() or block.may_hold_bracket_strings():
            entries: Json = {}
            checked = _CheckedWalk(block, lines)
            complete = checked.visit(root, "", entries, 0)
            nested_shaped = checked.shaped
        else:
            complete = True
            plain = _PlainWalk(block, lines)
            entries = plain.visit(root, "", 0)
            nested_shaped = not plain.unshaped
    except _Unfit:
        text = "".join(f"{k}: {v}\n" for k, v in block.pairs() if v)
        return _DocumentFields(None, text)
    shaped = shaped and nested_shaped
    return _DocumentFields(entries if complete and shaped else None, "".join(lines))


class _PlainWalk:
    """The walk for documents the cap does not cut and whose strings never start
    with ``[`` (so are data as they are).

    Each object's entries start as a copy of it (one C-level copy), so the
    string fields, most of them, only add their line; the others are replaced
    or deleted in place, which keeps the document's key order. A class rather
    than a recursive closure: a closure that calls itself is a reference cycle
    left for the collector on every alert.
    """

    __slots__ = ("csv", "line", "null_string", "unshaped")

    def __init__(self, block: JsonFieldBlock, lines: list[str]) -> None:
        self.null_string = block.null_string
        self.csv = block.csv
        self.line = lines.append
        # The first object found without a key index, if any.
        self.unshaped: list[tuple[str, ...]] = []

    def visit(self, node: dict[str, Any], prefix: str, depth: int) -> Json:
        line = self.line
        null_string = self.null_string
        csv = self.csv
        out = node.copy()
        for key, value in node.items():
            if type(value) is str:
                if value:
                    line(f"{prefix}{key}: {value}\n")
                else:
                    del out[key]
            elif type(value) is dict:
                if depth >= _FAST_DATA_DEPTH:
                    raise _Unfit
                keys = tuple(value)
                if keys not in _SHAPED_KEYS and not self.unshaped:
                    if key_index(value) is None:
                        self.unshaped.append(keys)
                    else:
                        _keep_shaped(keys)
                child = self.visit(value, f"{prefix}{key}.", depth + 1)
                if child:
                    out[key] = child
                else:
                    del out[key]
            elif value is True:
                line(f"{prefix}{key}: true\n")
                out[key] = "true"
            elif value is False:
                line(f"{prefix}{key}: false\n")
                out[key] = "false"
            else:
                text = plain_field_text(value, null_string, csv)
                if text:
                    item: object = text
                    if type(value) is list:
                        if csv:
                            item = _data_value(text)
                        elif _utf8_len(text) < OS_MAXSTR:
                            item = _reparsed(value, depth)
                    line(f"{prefix}{key}: {text}\n")
                    out[key] = item
                else:
                    del out[key]
        return out


class _CheckedWalk:
    """The walk with the cap counted and every string looked at."""

    __slots__ = ("csv", "left", "line", "null_string", "shaped")

    def __init__(self, block: JsonFieldBlock, lines: list[str]) -> None:
        self.null_string = block.null_string
        self.csv = block.csv
        self.line = lines.append
        self.left = block.room  # fields the cap still lets in
        self.shaped = True  # every object so far has a key index

    def visit(self, node: dict[str, Any], prefix: str, out: Json, depth: int) -> bool:
        """Fields of ``node`` in document order; False once the cap cut one."""
        for key, value in node.items():
            t = type(value)
            if t is str:
                text: str | None = value
                item: object = value
                if value and value[0] == "[":
                    item = _data_value(value)
            elif t is dict:
                if depth >= _FAST_DATA_DEPTH:
                    raise _Unfit
                if self.shaped and key_index(value) is None:
                    self.shaped = False
                child: Json = {}
                if not self.visit(value, f"{prefix}{key}.", child, depth + 1):
                    return False
                if child:
                    out[key] = child
                continue
            else:
                text = plain_field_text(value, self.null_string, self.csv)
                if text is None:
                    continue
                item = text
                if t is list:
                    if self.csv:
                        item = _data_value(text)
                    elif _utf8_len(text) < OS_MAXSTR:
                        item = _reparsed(value, depth)
            if not self.left:
                return False
            self.left -= 1
            if text:
                self.line(f"{prefix}{key}: {text}\n")
                out[key] = item
        return True


def _document_fields(block: JsonFieldBlock) -> _DocumentFields:
    memo = block.alert_memo
    if type(memo) is _DocumentFields:
        return memo
    fields = _walk_document(block)
    block.alert_memo = fields
    return fields


def _only_document(event: Event) -> JsonFieldBlock | None:
    """The event's JSON document when it is where all its fields come from."""
    blocks = event._blocks
    if len(blocks) == 1:
        block = blocks[0]
        if type(block) is JsonFieldBlock:
            return block
    return None


def build_data(event: Event, *, fast: bool = True) -> Json:
    """The alert's ``data`` object (empty when it is left out)."""
    data: Json = {}
    statics = _STATICS_OF(event)
    if statics != _NO_STATICS:
        for (name, _), value in zip(STATIC_OUTPUT_ORDER, statics, strict=True):
            if value is not None:
                data[name] = value
    decoder = event.decoder
    if not isinstance(decoder, DecoderInfo) or decoder.name.startswith("syscheck_"):
        return data
    block = _only_document(event) if fast else None
    if block is not None:
        fields = _document_fields(block)
        if fields.taken:  # built for an earlier alert of this event
            fields = block.alert_memo = _walk_document(block)
        entries = fields.entries
        if entries is not None and not (
            data and not data.keys().isdisjoint(ascii_lower(k) for k in entries)
        ):  # (a static name holds a dynamic one: the general path drops it)
            fields.taken = True
            if not data:
                return entries  # the alert owns them now: no copy needed
            data.update(entries)
            return data
    index = {id(data): {ascii_lower(k): k for k in data}}
    for key, value in event.fields():
        if value:
            _add_field(data, index, key, value)
    return data


# -- alerts.json ------------------------------------------------------------------


@lru_cache(maxsize=_RULE_PARTS_MAX)
def _group_lists(group_string: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """W_JSON_ParseGroups: ``groups`` then compliance arrays in first-seen order."""
    text = group_string.encode("utf-8", "surrogatepass")[: _MAX_STRING - 1]
    lists: dict[str, list[str]] = {"groups": []}
    for token in text.decode("utf-8", "ignore").split(","):
        if not token:
            continue
        for prefix, key in COMPLIANCE_PREFIXES:
            if token.startswith(prefix):
                lists.setdefault(key, []).append(token[len(prefix) :])
                break
        else:
            lists["groups"].append(token)
    return tuple((key, tuple(values)) for key, values in lists.items())


@dataclass(frozen=True, slots=True)
class _RuleParts:
    """The parts of ``rule`` in an alert that do not depend on the event."""

    rule: RuleInfo
    mitre: MitreTable
    rule_id: str | None
    mitre_lists: tuple[tuple[str, tuple[str, ...]], ...] | None  # rule.mitre, resolved
    middle: tuple[tuple[str, object], ...]  # cve, info, frequency (immutable values)
    groups: tuple[tuple[str, tuple[str, ...]], ...]


_RULE_PARTS: dict[int, _RuleParts] = {}


def _rule_parts(
    rule: RuleInfo, mitre: MitreTable, warn: Callable[[str], None] | None
) -> _RuleParts:
    parts = _RULE_PARTS.get(id(rule))
    if parts is not None and parts.rule is rule and parts.mitre is mitre:
        return parts
    warnings: list[str] = []
    resolved = mitre.rule_mitre(rule.mitre, warnings.append) if rule.mitre else None
    for message in warnings:
        (warn or _MITRE_LOG.warning)(message)
    middle: list[tuple[str, object]] = []
    if rule.cve is not None:
        middle.append(("cve", rule.cve))
    if rule.info:
        middle.append(("info", "".join(text for _, text in rule.info)))
    if rule.context:
        middle.append(("frequency", rule.frequency if rule.frequency is not None else 2))
    parts = _RuleParts(
        rule,
        mitre,
        str(rule.id) if rule.id else None,
        None if resolved is None else tuple((k, tuple(v)) for k, v in resolved.items()),
        tuple(middle),
        _group_lists(rule.group_string),
    )
    if not warnings:  # a rule that warns warns on every alert, as analysisd does
        if len(_RULE_PARTS) >= _RULE_PARTS_MAX:
            _RULE_PARTS.clear()
        _RULE_PARTS[id(rule)] = parts  # the entry holds the rule, so its id stays its own
    return parts


def _sca_groups(rule_obj: Json, data: Json) -> None:
    """add_SCA_groups: an SCA check's compliance lists join the rule's."""
    sca = _get_ci(data, "sca", "sca")
    check = _get_ci(sca, "check", "check") if type(sca) is dict else None
    compliance = _get_ci(check, "compliance", "compliance") if type(check) is dict else None
    if type(compliance) is not dict:
        return
    for name, value in compliance.items():
        if type(value) is not str:
            continue
        tokens = [t.strip() for t in value.split(",") if t.strip()]
        existing = _get_ci(rule_obj, name, ascii_lower(name))
        if type(existing) is list:
            existing.extend(tokens)
        elif existing is None and tokens:
            rule_obj[name] = tokens


def _get_ci(obj: Json, name: str, lowered: str) -> Any:
    """cJSON_GetObjectItem: the first member whose name matches ignoring ASCII
    case; ``lowered`` is ``ascii_lower(name)``."""
    if name in obj:
        return obj[name]
    size = len(lowered)
    for key, value in obj.items():
        if len(key) == size and ascii_lower(key) == lowered:
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
    location = event.location
    from_agent = location.startswith("(")
    full_log = event.full_log
    hostname = _agent_hostname(event, manager_name)
    if full_log is not None and hostname is not None:
        if from_agent:
            agent["name"] = hostname
        elif event.agent_id == "000":
            agent["name"] = root["manager"]["name"]
        if full_log[:1].isupper():
            match = _SYSLOG_HOST_RE.match(full_log)
            if match is not None:
                root.setdefault("predecoder", {})["hostname"] = match.group(1)
        if event.labels or from_agent:  # else _agent_ip has nothing to read
            ip = _agent_ip(event)
            if ip is not None:
                agent["ip"] = ip
    if not from_agent:
        root["location"] = location
    else:
        head = location.encode("utf-8", "surrogatepass")[: _MAX_STRING - 1]
        bounded = head.decode("utf-8", "ignore")
        arrow = bounded.find(">")
        if arrow >= 0:
            root["location"] = bounded[arrow + 1 :]
        if event.agent_id == "000":
            _agentless(root, location)
    # W_JSON_ParseLabels runs when any label is not a system one, hidden or not.
    if event.labels and any(not key.startswith("_") for key, _ in event.labels):
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


_DECODER_ITEMS: dict[int, tuple[DecoderInfo, tuple[tuple[str, object], ...]]] = {}
# Decoders whose alert members are kept (a ruleset has a few thousand).
_DECODER_ITEMS_MAX = 8192


def _decoder_items(decoder: DecoderInfo) -> tuple[tuple[str, object], ...]:
    """The members of the alert's ``decoder`` object, worked out once per decoder."""
    entry = _DECODER_ITEMS.get(id(decoder))
    if entry is not None and entry[0] is decoder:
        return entry[1]
    items: list[tuple[str, object]] = []
    if decoder.accumulate:
        items.append(("accumulate", 1))
    if decoder.parent is not None:
        items.append(("parent", decoder.parent))
    items.append(("name", decoder.name))
    if decoder.ftscomment is not None:
        items.append(("ftscomment", decoder.ftscomment))
    if len(_DECODER_ITEMS) >= _DECODER_ITEMS_MAX:
        _DECODER_ITEMS.clear()
    _DECODER_ITEMS[id(decoder)] = (decoder, tuple(items))  # holds the decoder: its id stays its own
    return tuple(items)


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
    decoder = event.decoder
    root["decoder"] = dict(_decoder_items(decoder)) if isinstance(decoder, DecoderInfo) else {}
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
        warn: receives MITRE lookup warnings (default: the mitre module's logger).
    """
    parts = _rule_parts(rule, mitre, warn)
    root: Json = {}
    if event.time_s:
        root["timestamp"] = _timestamp_of(event)
    rule_obj: Json = (
        {"level": rule.level, "description": description}
        if rule.level
        else {"description": description}
    )
    root["rule"] = rule_obj
    agent: Json = {}
    root["agent"] = agent
    root["manager"] = {"name": manager_name}
    if event.time_s:
        root["id"] = alert_id
    if parts.rule_id is not None:
        rule_obj["id"] = parts.rule_id
    if parts.mitre_lists is not None:
        mitre_obj: Json = {}
        for key, values in parts.mitre_lists:
            mitre_obj[key] = [*values]
        rule_obj["mitre"] = mitre_obj
    for key, value in parts.middle:
        rule_obj[key] = value
    if firedtimes is not None and not rule.no_counter:
        rule_obj["firedtimes"] = firedtimes
    rule_obj["mail"] = rule.mail
    for key, values in parts.groups:
        rule_obj[key] = [*values]
    if previous_output is not None:
        root["previous_output"] = previous_output
    data = _event_part(root, agent, event, manager_name, full_log=not rule.no_full_log)
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


_LOG_STATICS = (
    ("Src IP", "srcip"),
    ("Src Port", "srcport"),
    ("Dst IP", "dstip"),
    ("Dst Port", "dstport"),
    ("User", "dstuser"),
)
_LOG_STATIC_LABELS = tuple(label for label, _ in _LOG_STATICS)
_LOG_STATICS_OF = attrgetter(*(attr for _, attr in _LOG_STATICS))
_NO_LOG_STATICS = (None,) * len(_LOG_STATICS)


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
    labels = ""
    if event.labels:
        labels = "".join(f"{k}: {v}\n" for k, v in _visible_labels(event))
        if _utf8_len(labels) >= OS_MAXSTR:
            labels = ""
    groups_head, rule_head = _log_heads(rule)
    statics = _LOG_STATICS_OF(event)
    static_lines = (
        ""
        if statics == _NO_LOG_STATICS
        else "".join(
            f"\n{label}: {value}"
            for label, value in zip(_LOG_STATIC_LABELS, statics, strict=True)
            if value is not None
        )
    )
    block = _only_document(event)
    if block is not None:
        fields = _document_fields(block).lines
    else:
        fields = "".join(f"{key}: {value}\n" for key, value in event.fields() if value)
    previous = "".join(f"{line}\n" for line in previous_lines) if previous_lines else ""
    return (
        f"** Alert {alert_id}:{groups_head}"
        f"{_header_time(event.time_s)} {_location_header(event, manager_name)}\n"
        f"{labels}{rule_head}{description}'{static_lines}\n{event.full_log}\n"
        f"{fields}{previous}\n"
    )


_LOG_HEADS: dict[int, tuple[RuleInfo, str, str]] = {}


def _log_heads(rule: RuleInfo) -> tuple[str, str]:
    """The rule's parts of an alerts.log block: after ``** Alert <id>:``, and
    ``Rule: ... -> '`` (worked out once per rule object)."""
    entry = _LOG_HEADS.get(id(rule))
    if entry is not None and entry[0] is rule:
        return entry[1], entry[2]
    groups_head = f"{' mail ' if rule.mail else ''} - {rule.group_string}\n"
    rule_head = f"Rule: {rule.id} (level {rule.level}) -> '"
    if len(_LOG_HEADS) >= _RULE_PARTS_MAX:
        _LOG_HEADS.clear()
    _LOG_HEADS[id(rule)] = (rule, groups_head, rule_head)  # holds the rule: its id stays its own
    return groups_head, rule_head


def format_archive_line(event: Event, *, manager_name: str) -> str | None:
    """One archives.log line (``OS_Store``); None for agent keepalives."""
    location = event.location
    if location == "ossec-keepalive" or "->ossec-keepalive" in location:
        return None
    return (
        f"{_header_time(event.time_s)} {_location_header(event, manager_name)} {event.full_log}\n"
    )
