"""The JSON_Decoder plugin: one JSON log becomes static and dynamic fields.

analysisd (``plugins/json_decoder.c``) parses the log with cJSON and ``readJSON``
flattens it eagerly: every member whose value is not an object becomes a field
named by its dotted path, in depth-first document order, valued as a C string
(see ``field_text``). Top-level members named like a static slot fill that slot
instead (``fillData``). At most ``MAX_DYNAMIC_FIELDS`` fields exist per event.

Theory of operation
-------------------
* Parsing. orjson accepts a subset of what cJSON accepts and on that subset
  builds the same tree, except for duplicate keys (orjson keeps one), ``\\u0000``
  (cJSON's C strings end there) and nesting deeper than cJSON's limit. Each is
  caught cheaply: a dropped duplicate takes at least one ``:`` with it, so the
  document re-serialised by orjson has fewer colons than the text, and what
  orjson can re-serialise (254 levels) is within cJSON's 1000. Those
  documents, and the ones only cJSON accepts (control characters in strings,
  ``01``, ``1e400``...), go through ``parse_cjson``, a port of cJSON's parser,
  and are flattened eagerly into a ``FlatJsonBlock``.
* Counting. ``count`` must be exact when the block is added, so a walk over the
  objects counts leaves; nothing is stringified or named.
* Finding. ``JsonFieldBlock.find`` walks only the path asked for. For each
  object on the way, one string of its lowered keys tells with a C-level count
  whether the next name is absent, unique (then a dict lookup finds it) or
  ambiguous; objects with dotted, non-ASCII or case-variant keys are scanned in
  document order instead, so the first match is the one eager flattening gives.
  When the document has more fields than the event has room for, the cap
  decides: the walk gives way to the flattened list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from trailwarden.rules.event import Event, ascii_lower

__all__ = [
    "CJSON_NESTING_LIMIT",
    "OS_MAXSTR",
    "CObject",
    "FlatJsonBlock",
    "JsonFieldBlock",
    "decode_json",
    "field_text",
    "number_text",
    "parse_cjson",
    "print_json",
    "print_number",
    "quote",
]

# cJSON's CJSON_NESTING_LIMIT: a document nested deeper fails to parse.
CJSON_NESTING_LIMIT = 1000
# analysisd's OS_MAXSTR: csv array values and '['-values this long are dropped.
OS_MAXSTR = 65536
# readJSON prints numbers into char value_char[64]: longer "%f" text is cut.
_NUMBER_TEXT_MAX = 63
# cJSON keeps an int copy of every number, saturated to the C int range.
INT_MAX = 2**31 - 1
INT_MIN = -(2**31)
_DBL_EPSILON = 2.220446049250313e-16

# fillData: full dotted keys stored in static slots (strcmp, case-sensitive).
# Not "system_name" (decoder <order> only) and "user" only while dstuser is unset.
_STATIC_SLOTS: dict[str, str] = {
    "srcip": "srcip",
    "dstip": "dstip",
    "dstport": "dstport",
    "srcport": "srcport",
    "protocol": "protocol",
    "action": "action",
    "srcuser": "srcuser",
    "dstuser": "dstuser",
    "id": "id",
    "status": "status",
    "url": "url",
    "data": "data",
    "extra_data": "extra_data",
    "systemname": "systemname",
}
_STATIC_NAMES = frozenset((*_STATIC_SLOTS, "user"))

# <json_null_field> and <json_array_structure>; "empty" is deprecated for "string".
_NULL_MODES = {"string": True, "empty": True, "discard": False}
_ARRAY_MODES = {"array": False, "csv": True}


class CObject(list[tuple[str, Any]]):
    """A cJSON object from ``parse_cjson``: members in order, duplicate keys kept."""

    __slots__ = ()


# -- value text ---------------------------------------------------------------


def number_text(d: float) -> str:
    """readJSON: ``"%i"`` of the saturated int when it equals the double, else ``"%f"``."""
    vi = INT_MAX if d >= INT_MAX else INT_MIN if d <= INT_MIN else int(d)
    if vi == d:
        return str(vi)
    text = f"{d:f}"
    return text if len(text) <= _NUMBER_TEXT_MAX else text[:_NUMBER_TEXT_MAX]


def print_number(d: float) -> str:
    """cJSON print_number: integers as ``%d``, else ``%1.15g`` unless it does not
    read back (within DBL_EPSILON), then ``%1.17g``; NaN and infinities as null."""
    if d != d or d in (float("inf"), float("-inf")):
        return "null"
    if INT_MIN < d < INT_MAX and int(d) == d:
        return str(int(d))
    text = f"{d:1.15g}"
    back = float(text)
    if abs(back - d) <= max(abs(back), abs(d)) * _DBL_EPSILON:
        return text
    return f"{d:1.17g}"


_QUOTE_TABLE = {c: f"\\u{c:04x}" for c in range(32)}
_QUOTE_TABLE.update({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r", 34: '\\"', 92: "\\\\"})


def quote(s: str) -> str:
    """cJSON print_string_ptr: escape ``"``, ``\\`` and controls; all else raw."""
    return '"' + s.translate(_QUOTE_TABLE) + '"'


def print_json(node: object, *, formatted: bool) -> str:
    """cJSON_Print (formatted) or cJSON_PrintUnformatted of a parsed value.

    Iterative, because cJSON documents nest up to 1000 deep. Objects may be
    ``dict`` (orjson) or ``CObject``; any other int/float prints as a number.
    """
    out: list[str] = []
    emit = out.append
    sep = ", " if formatted else ","
    work: list[tuple[bool, object, int]] = [(False, node, 0)]
    pop = work.pop
    push = work.append
    while work:
        raw, v, depth = pop()
        if raw:
            emit(v)  # type: ignore[arg-type]
            continue
        t = type(v)
        if t is str:
            emit(quote(v))  # type: ignore[arg-type]
        elif v is True:
            emit("true")
        elif v is False:
            emit("false")
        elif v is None:
            emit("null")
        elif t is list:
            seq: list[object] = v  # type: ignore[assignment]
            if not seq:
                emit("[]")
                continue
            emit("[")
            push((True, "]", 0))
            for i in range(len(seq) - 1, -1, -1):
                push((False, seq[i], depth + 1))
                if i:
                    push((True, sep, 0))
        elif t is dict or t is CObject:
            members: list[tuple[str, object]] = (
                list(v.items()) if t is dict else v  # type: ignore[attr-defined,assignment]
            )
            last = len(members) - 1
            inner = depth + 1
            if formatted:
                emit("{\n")
                push((True, "\t" * depth + "}", 0))
                indent = "\t" * inner
                for i in range(last, -1, -1):
                    key, value = members[i]
                    push((True, ",\n" if i < last else "\n", 0))
                    push((False, value, inner))
                    push((True, indent + quote(key) + ":\t", 0))
            else:
                emit("{")
                push((True, "}", 0))
                for i in range(last, -1, -1):
                    key, value = members[i]
                    if i < last:
                        push((True, ",", 0))
                    push((False, value, inner))
                    push((True, quote(key) + ":", 0))
        elif isinstance(v, int | float):
            emit(print_number(float(v)))
        else:
            raise TypeError(f"print_json: {t.__name__} is not a JSON value (bug in caller)")
    return "".join(out)


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _csv_text(items: list[Any]) -> str:
    """readJSON's csv mode: scalars joined by ',', objects and arrays skipped
    (the comma before them stays); "" when the text would reach OS_MAXSTR."""
    parts: list[str] = []
    n = 0
    last = len(items) - 1
    for i, v in enumerate(items):
        t = type(v)
        if t is str:
            piece = v
        elif v is True:
            piece = "true"
        elif v is False:
            piece = "false"
        elif v is None:
            piece = "null"
        elif t is int or t is float:
            piece = number_text(float(v))
        else:
            continue
        n += _utf8_len(piece)
        if n >= OS_MAXSTR:
            return ""
        parts.append(piece)
        if n + 1 >= OS_MAXSTR:
            return ""
        if i < last:
            parts.append(",")
            n += 1
    return "".join(parts)


def field_text(v: object, null_string: bool, csv: bool) -> str | None:
    """The C string readJSON hands to fillData for a member value, or None when
    the member makes no field (objects, discarded nulls, empty csv arrays)."""
    t = type(v)
    if t is str:
        return v  # type: ignore[return-value]
    if t is int:
        i: int = v  # type: ignore[assignment]
        return str(i) if INT_MIN <= i <= INT_MAX else number_text(float(i))
    if t is float:
        return number_text(v)  # type: ignore[arg-type]
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null" if null_string else None
    if t is list:
        if csv:
            return _csv_text(v) or None  # type: ignore[arg-type]
        return print_json(v, formatted=True)
    return None


# -- cJSON parser port (the exact path) -----------------------------------------

_WS_RE = re.compile(r"[\x00- ]*")
# A string body: runs of plain characters and backslash pairs, up to the quote.
_STRING_RE = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL)
_NUMBER_CHARS_RE = re.compile(r"[0-9+\-eE.]{1,63}")  # cJSON copies at most 63
_STRTOD_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX4_RE = re.compile(r"[0-9A-Fa-f]{4}")
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_SIMPLE_ESCAPES.update({'"': '"', "\\": "\\", "/": "/"})


def _hex4(s: str) -> int:
    # parse_hex4 answers 0 for anything that is not four hex digits.
    return int(s, 16) if _HEX4_RE.fullmatch(s) else 0


def _unescape(body: str) -> str | None:
    """cJSON parse_string's escape handling; None where cJSON fails."""
    out: list[str] = []
    n = len(body)
    i = 0
    while True:
        j = body.find("\\", i)
        if j < 0:
            out.append(body[i:])
            break
        out.append(body[i:j])
        c = body[j + 1]
        simple = _SIMPLE_ESCAPES.get(c)
        if simple is not None:
            out.append(simple)
            i = j + 2
            continue
        if c != "u" or n - j < 6:
            return None
        first = _hex4(body[j + 2 : j + 6])
        if 0xDC00 <= first <= 0xDFFF:
            return None
        if 0xD800 <= first <= 0xDBFF:
            if n - (j + 6) < 6 or body[j + 6 : j + 8] != "\\u":
                return None
            second = _hex4(body[j + 8 : j + 12])
            if not 0xDC00 <= second <= 0xDFFF:
                return None
            out.append(chr(0x10000 + (((first & 0x3FF) << 10) | (second & 0x3FF))))
            i = j + 12
        else:
            out.append(chr(first))
            i = j + 6
    return "".join(out)


def _parse_string(s: str, i: int) -> tuple[str, int] | None:
    m = _STRING_RE.match(s, i)
    if m is None:
        return None
    body = m.group(1)
    if "\\" in body:
        text = _unescape(body)
        if text is None:
            return None
    else:
        text = body
    if "\x00" in text:  # a C string ends at its first NUL
        text = text[: text.index("\x00")]
    return text, m.end()


def parse_cjson(text: str, *, require_end: bool = False) -> tuple[bool, object]:
    """cJSON_ParseWithOpts on ``text``: ``(True, value)`` or ``(False, None)``.

    Objects come back as ``CObject``, arrays as ``list``, numbers as ``float``.
    Without ``require_end`` text after the first complete value is ignored, as
    analysisd's JSON decoder does.
    """
    s = text
    n = len(s)
    ws = _WS_RE.match
    i = 1 if s.startswith("\ufeff") and n > 1 else 0
    i = ws(s, i).end()  # type: ignore[union-attr]
    # Open containers: [container, is_object, key of the member being parsed].
    stack: list[list[Any]] = []
    while True:
        # -- one value starting at i
        value: object
        if s.startswith("null", i):
            value, i = None, i + 4
        elif s.startswith("false", i):
            value, i = False, i + 5
        elif s.startswith("true", i):
            value, i = True, i + 4
        elif i < n and s[i] == '"':
            parsed = _parse_string(s, i)
            if parsed is None:
                return False, None
            value, i = parsed
        elif i < n and (s[i] == "-" or "0" <= s[i] <= "9"):
            chunk = _NUMBER_CHARS_RE.match(s, i).group()  # type: ignore[union-attr]
            m = _STRTOD_RE.match(chunk)
            if m is None:
                return False, None
            value, i = float(m.group()), i + m.end()
        elif i < n and s[i] in "[{":
            if len(stack) >= CJSON_NESTING_LIMIT:
                return False, None
            is_object = s[i] == "{"
            container: list[Any] = CObject() if is_object else []
            i = ws(s, i + 1).end()  # type: ignore[union-attr]
            if i < n and s[i] == ("}" if is_object else "]"):
                value, i = container, i + 1
            else:
                frame: list[Any] = [container, is_object, None]
                stack.append(frame)
                if is_object:
                    got = _member_key(s, i)
                    if got is None:
                        return False, None
                    frame[2], i = got
                continue
        else:
            return False, None
        # -- the value is complete: hand it to the open containers
        while True:
            if not stack:
                if require_end and ws(s, i).end() != n:  # type: ignore[union-attr]
                    return False, None
                return True, value
            frame = stack[-1]
            if frame[1]:
                frame[0].append((frame[2], value))
            else:
                frame[0].append(value)
            i = ws(s, i).end()  # type: ignore[union-attr]
            if i < n and s[i] == ",":
                i = ws(s, i + 1).end()  # type: ignore[union-attr]
                if frame[1]:
                    got = _member_key(s, i)
                    if got is None:
                        return False, None
                    frame[2], i = got
                break
            if i < n and s[i] == ("}" if frame[1] else "]"):
                value, i = frame[0], i + 1
                stack.pop()
                continue
            return False, None


def _member_key(s: str, i: int) -> tuple[str, int] | None:
    """An object member's name and the ':' after it; i points at the value."""
    parsed = _parse_string(s, i)
    if parsed is None:
        return None
    key, i = parsed
    i = _WS_RE.match(s, i).end()  # type: ignore[union-attr]
    if i >= len(s) or s[i] != ":":
        return None
    return key, _WS_RE.match(s, i + 1).end()  # type: ignore[union-attr]


# -- field blocks ---------------------------------------------------------------


def _fill_static(event: Event, key: str, text: str) -> bool:
    """fillData's static part; True when the value went to a slot."""
    slot = _STATIC_SLOTS.get(key)
    if slot is not None:
        setattr(event, slot, text)
        return True
    if key == "user" and event.dstuser is None:
        event.dstuser = text
        return True
    return False


def _lower(key: str) -> str:
    return key.lower() if key.isascii() else ascii_lower(key)


class FlatJsonBlock:
    """Fields flattened eagerly (the exact path): a list in decode order."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def find(self, key_lower: str) -> str | None:
        for key, value in self.items:
            if _lower(key) == key_lower:
                return value
        return None

    def pairs(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def count(self) -> int:
        return len(self.items)


# Lowered key -> a spelling met in an earlier document, so the usual request
# ("aws.eventName" asked as "aws.eventname") is a dict lookup. Bounded: hostile
# documents cannot grow it past this many names.
_SPELLINGS: dict[str, str] = {}
_SPELLINGS_MAX = 4096
_UNUSABLE = ""  # _key_line answer for objects that must be scanned
_AMBIGUOUS = "\x00"  # _member answer: several keys lower to the name


def _key_line(node: dict[str, Any]) -> str:
    """The object's lowered keys as ``\\0k1\\0\\0k2\\0``, or _UNUSABLE when a lookup
    by name would not be exact: dotted keys (paths become ambiguous), non-ASCII."""
    joined = "\x00\x00".join(node)
    if "." in joined or not joined.isascii():
        return _UNUSABLE
    return "\x00" + joined.lower() + "\x00"


def _member(node: dict[str, Any], line: str, name: str) -> str | None:
    """The key of ``node`` whose lowered form is ``name``: None when there is
    none, _AMBIGUOUS when case variants leave several."""
    hits = line.count("\x00" + name + "\x00")
    if hits != 1:
        return None if hits == 0 else _AMBIGUOUS
    spelled = _SPELLINGS.get(name)
    if spelled is not None and spelled in node:
        return spelled
    for key in node:
        if key.lower() == name:
            if len(_SPELLINGS) < _SPELLINGS_MAX:
                _SPELLINGS[name] = key
            return key
    raise AssertionError("key line out of step with its object")  # pragma: no cover


class JsonFieldBlock:
    """The dynamic fields of an orjson-parsed document, flattened on demand."""

    __slots__ = (
        "_root",
        "_consumed",
        "null_string",
        "csv",
        "_total",
        "_room",
        "_items",
        "_memo",
        "_lines",
        "flattens",
    )

    def __init__(
        self,
        root: dict[str, Any],
        consumed: frozenset[str],
        *,
        null_string: bool,
        csv: bool,
        total: int,
        room: int,
    ) -> None:
        self._root = root
        self._consumed = consumed  # top-level keys that went to static slots
        self.null_string = null_string
        self.csv = csv
        self._total = total  # fields eager flattening would make, before the cap
        self._room = room
        self._items: list[tuple[str, str]] | None = None
        self._memo: dict[str, str | None] = {}
        self._lines: dict[int, str] = {}  # id(object) -> its _key_line
        self.flattens = 0  # how often the whole document was flattened

    def count(self) -> int:
        return self._total if self._total < self._room else self._room

    def pairs(self) -> Iterator[tuple[str, str]]:
        if self._items is None:
            self._items = self._flatten()
        return iter(self._items)

    def document(self) -> tuple[dict[str, Any], frozenset[str]] | None:
        """The parsed document and its consumed top-level keys, when every field
        it holds exists (no cap cut); the alert builds ``data`` from it."""
        if self._total > self._room:
            return None
        return self._root, self._consumed

    def find(self, key_lower: str) -> str | None:
        memo = self._memo
        found = memo.get(key_lower, memo)
        if found is not memo:
            return found  # type: ignore[return-value]
        if self._total > self._room:
            value = next((v for k, v in self.pairs() if _lower(k) == key_lower), None)
        else:
            value = self._walk(self._root, key_lower, True)
        memo[key_lower] = value
        return value

    def _walk(self, node: dict[str, Any], rest: str, top: bool) -> str | None:
        line = self._lines.get(id(node))
        if line is None:
            line = self._lines[id(node)] = _key_line(node)
        dot = rest.find(".")
        name = rest if dot < 0 else rest[:dot]
        if line is _UNUSABLE or not name or "\x00" in name:
            return self._scan(node, rest, top)
        key = _member(node, line, name)
        if key is None:
            return None
        if key is _AMBIGUOUS:
            return self._scan(node, rest, top)
        value = node[key]
        if dot < 0:
            if type(value) is dict or (top and key in self._consumed):
                return None
            return field_text(value, self.null_string, self.csv)
        if type(value) is not dict:
            return None
        return self._walk(value, rest[dot + 1 :], False)

    def _scan(self, node: dict[str, Any], rest: str, top: bool) -> str | None:
        """Every member in document order, as eager flattening meets them."""
        for key, value in node.items():
            lk = _lower(key)
            if type(value) is dict:
                size = len(lk)
                if len(rest) > size and rest[size] == "." and rest.startswith(lk):
                    found = self._walk(value, rest[size + 1 :], False)
                    if found is not None:
                        return found
            elif lk == rest and not (top and key in self._consumed):
                text = field_text(value, self.null_string, self.csv)
                if text is not None:
                    return text
        return None

    def _flatten(self) -> list[tuple[str, str]]:
        self.flattens += 1
        out: list[tuple[str, str]] = []
        limit = self._room
        if limit <= 0:
            return out
        null_string = self.null_string
        csv = self.csv
        consumed = self._consumed
        stack: list[tuple[str | None, Iterator[tuple[str, Any]]]] = [
            (None, iter(self._root.items()))
        ]
        while stack:
            prefix, members = stack[-1]
            for key, value in members:
                name = key if prefix is None else f"{prefix}.{key}"
                if type(value) is dict:
                    stack.append((name, iter(value.items())))
                    break
                if prefix is None and key in consumed:
                    continue
                text = field_text(value, null_string, csv)
                if text is not None:
                    out.append((name, text))
                    if len(out) >= limit:
                        return out
            else:
                stack.pop()
        return out


def _count_fields(root: dict[str, Any], null_string: bool, csv: bool) -> int:
    """Fields readJSON would make from ``root`` (static ones included)."""
    n = 0
    stack = [root]
    if null_string and not csv:  # every non-object member is a field
        while stack:
            node = stack.pop()
            n += len(node)
            for value in node.values():
                if type(value) is dict:
                    n -= 1
                    stack.append(value)
        return n
    while stack:
        node = stack.pop()
        for value in node.values():
            if type(value) is dict:
                stack.append(value)
            elif field_text(value, null_string, csv) is not None:
                n += 1
    return n


def _read_eager(root: CObject, event: Event, null_string: bool, csv: bool) -> list[tuple[str, str]]:
    """readJSON over a ``parse_cjson`` tree, statics and cap included."""
    out: list[tuple[str, str]] = []
    room = event.field_room
    stack: list[tuple[str | None, Iterator[tuple[str, Any]]]] = [(None, iter(root))]
    while stack:
        prefix, members = stack[-1]
        for key, value in members:
            name = key if prefix is None else f"{prefix}.{key}"
            if type(value) is CObject:
                stack.append((name, iter(value)))
                break
            text = field_text(value, null_string, csv)
            if text is None or (prefix is None and _fill_static(event, key, text)):
                continue
            if len(out) < room:  # analysisd: "Too many fields for JSON decoder."
                out.append((name, text))
        else:
            stack.pop()
    return out


def _parse_fast(text: str) -> object:
    """The orjson tree when it is provably cJSON's, else ``_EXACT``."""
    body = text
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not exc.msg.startswith("unexpected content after document"):
            return _EXACT
        body = text[: exc.pos]
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _EXACT
    if type(doc) is not dict:
        return doc
    if "\\u0000" in body:
        return _EXACT
    try:
        written = orjson.dumps(doc)
    except orjson.JSONEncodeError:
        # Nested deeper than orjson writes (254 levels); what it does write is
        # within cJSON's limit, so only these need the limit checked.
        return _EXACT
    if body.count(":") != written.count(b":"):
        return _EXACT  # duplicate keys (or an escaped colon): let cJSON's rules decide
    return doc


_EXACT = object()


def decode_json(
    event: Event, text: str, *, null_mode: str = "string", array_mode: str = "array"
) -> None:
    """Run the JSON decoder plugin on ``text`` (the log, or the part after the
    parent/prematch); a text that does not parse leaves no fields."""
    try:
        null_string = _NULL_MODES[null_mode]
        csv = _ARRAY_MODES[array_mode]
    except KeyError as exc:
        raise ValueError(
            f"decode_json: json_null_field={null_mode!r} json_array_structure={array_mode!r}"
            " (bug in the decoder loader: validate them at load)"
        ) from exc
    if "\x00" in text:  # analysisd sees a C string
        text = text[: text.index("\x00")]
    doc = _parse_fast(text)
    if doc is _EXACT:
        ok, node = parse_cjson(text)
        if ok and type(node) is CObject:
            items = _read_eager(node, event, null_string, csv)
            if items:
                event.add_block(FlatJsonBlock(items))
        return
    if type(doc) is not dict:
        return  # a top-level array or scalar has no key, so no field
    root: dict[str, Any] = doc
    consumed: set[str] = set()
    if root.keys() & _STATIC_NAMES:
        for key, value in root.items():
            if key in _STATIC_NAMES and type(value) is not dict:
                static = field_text(value, null_string, csv)
                if static is not None and _fill_static(event, key, static):
                    consumed.add(key)
    total = _count_fields(root, null_string, csv) - len(consumed)
    room = event.field_room
    if total > 0 and room > 0:
        block = JsonFieldBlock(
            root, frozenset(consumed), null_string=null_string, csv=csv, total=total, room=room
        )
        event.add_block(block)
