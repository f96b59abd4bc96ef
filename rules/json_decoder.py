"""The JSON_Decoder plugin: one JSON log becomes static and dynamic fields.

analysisd (``plugins/json_decoder.c``) parses the log with cJSON and ``readJSON``
flattens it eagerly: every member whose value is not an object becomes a field
named by its dotted path, in depth-first document order, valued as a C string
(see ``field_text``). Top-level members named like a static slot fill that slot
instead (``fillData``). At most ``MAX_DYNAMIC_FIELDS`` fields exist per event.

Theory of operation
-------------------
* Parsing. orjson accepts a subset of what cJSON accepts and on that subset
  builds the same tree, except for duplicate keys (orjson keeps one value),
  ``\\u0000`` (cJSON's C strings end there) and nesting deeper than cJSON's
  limit. The orjson tree is trusted when orjson can write it back (so it nests
  at most 254 levels, within cJSON's 1000) and one of these proves that no
  member was dropped:

  - the text is exactly what orjson writes for the tree (the agent's compact
    messages): a text with a repeated key cannot be, as a dict holds each key
    once;
  - else (spaced JSON such as Wazuh's own wodle writes) the text has as many
    ``:`` as the written tree: a dropped member takes its ``:`` with it, and
    as no ``\\u003a`` escape is allowed, no colon appears in the written tree
    that the text did not have raw.

  A ``\\u0000`` anywhere sends the text to the exact path too. The exact path is
  ``parse_cjson`` (a port of cJSON's parser, for everything else: documents
  only cJSON accepts, repeated keys, deep nesting), flattened eagerly into a
  ``FlatJsonBlock``.
* Counting. Nothing is counted at decode time. ``bound`` answers from the
  length of the document as orjson writes it (every field takes at least five
  characters: two quotes, the colon, the first character of its value and the
  ``,`` or ``}`` that ends it), or from its number of colons when that is not
  enough; ``count`` walks the tree only when someone needs the exact number.
* Finding. ``JsonFieldBlock.find`` walks only the path asked for. Each object
  on the way is looked up through ``key_index``: its keys by ASCII-lowered
  name, shared by all objects with the same key tuple. Objects with dotted keys
  or keys that differ only by case have no index and are scanned in document
  order, so the first match is the one eager flattening gives. When the
  document may hold more fields than the event has room for, the cap decides:
  past the bound the exact count is taken, and if the cap cuts, the walk gives
  way to the flattened list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import orjson

from trailwarden.rules.cjson import (
    CJSON_NESTING_LIMIT,
    INT_MAX,
    INT_MIN,
    CObject,
    parse_cjson,
    print_json,
    print_number,
    print_plain,
    quote,
)
from trailwarden.rules.event import MAX_DYNAMIC_FIELDS, Event, ascii_lower

__all__ = [
    "CJSON_NESTING_LIMIT",
    "OS_MAXSTR",
    "CObject",
    "FlatJsonBlock",
    "JsonFieldBlock",
    "decode_json",
    "field_text",
    "json_plugin",
    "key_index",
    "number_text",
    "parse_cjson",
    "plain_field_text",
    "print_json",
    "print_number",
    "quote",
]

# analysisd's OS_MAXSTR: csv array values and '['-values this long are dropped.
OS_MAXSTR = 65536
# readJSON prints numbers into char value_char[64]: longer "%f" text is cut.
_NUMBER_TEXT_MAX = 63
# A field's least footprint in JSON text: `"":0` plus the `,` or `}` ending it.
_MIN_FIELD_CHARS = 5

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
_NO_KEYS: frozenset[str] = frozenset()

# <json_null_field> and <json_array_structure>; "empty" is deprecated for "string".
_NULL_MODES = {"string": True, "empty": True, "discard": False}
_ARRAY_MODES = {"array": False, "csv": True}


# -- value text ---------------------------------------------------------------


def number_text(d: float) -> str:
    """readJSON: ``"%i"`` of the saturated int when it equals the double, else ``"%f"``."""
    vi = INT_MAX if d >= INT_MAX else INT_MIN if d <= INT_MIN else int(d)
    if vi == d:
        return str(vi)
    text = f"{d:f}"
    return text if len(text) <= _NUMBER_TEXT_MAX else text[:_NUMBER_TEXT_MAX]


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


def _scalar_text(v: object, null_string: bool) -> str | None:
    """field_text of a value that is neither a string nor a list (nor an object)."""
    t = type(v)
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
    return None


def field_text(v: object, null_string: bool, csv: bool) -> str | None:
    """The C string readJSON hands to fillData for a member value, or None when
    the member makes no field (objects, discarded nulls, empty csv arrays)."""
    t = type(v)
    if t is str:
        return v  # type: ignore[return-value]
    if t is list:
        if csv:
            return _csv_text(v) or None  # type: ignore[arg-type]
        return print_json(v, formatted=True)
    return _scalar_text(v, null_string)


def plain_field_text(v: object, null_string: bool, csv: bool) -> str | None:
    """``field_text`` for a value of an orjson tree a ``JsonFieldBlock`` holds."""
    t = type(v)
    if t is str:
        return v  # type: ignore[return-value]
    if t is list:
        if csv:
            return _csv_text(v) or None  # type: ignore[arg-type]
        return print_plain(v)
    return _scalar_text(v, null_string)


# -- key indexes ------------------------------------------------------------------

# Objects of a kind repeat their key tuple from one event to the next, so the
# index of a tuple is kept; bounded so hostile documents cannot grow it: at most
# this many tuples, each of at most _INDEX_KEEP_CHARS characters of keys.
_INDEX_KEEP_MAX = 1024
_INDEX_KEEP_CHARS = 1024
_INDEXES: dict[tuple[str, ...], dict[str, str] | None] = {}


def _build_index(node: dict[str, Any], joined: str) -> dict[str, str] | None:
    # Keys hold no NUL (documents with \u0000 take the exact path), so one
    # NUL-joined string splits back into the keys.
    if "." in joined:
        return None
    index = dict(zip(ascii_lower(joined).split("\x00"), node, strict=True))
    return index if len(index) == len(node) else None


def key_index(node: dict[str, Any]) -> dict[str, str] | None:
    """The object's keys by ASCII-lowered name, or None when a lookup by name
    would not be exact: a key holds a dot, or two keys differ only by case."""
    keys = tuple(node)
    try:
        return _INDEXES[keys]
    except KeyError:
        pass
    joined = "\x00".join(keys)
    index = _build_index(node, joined) if keys else {}
    if len(joined) <= _INDEX_KEEP_CHARS:
        if len(_INDEXES) >= _INDEX_KEEP_MAX:
            _INDEXES.clear()
        _INDEXES[keys] = index
    return index


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


class FlatJsonBlock:
    """Fields flattened eagerly (the exact path): a list in decode order."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def find(self, key_lower: str) -> str | None:
        for key, value in self.items:
            if ascii_lower(key) == key_lower:
                return value
        return None

    def pairs(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def count(self) -> int:
        return len(self.items)

    def bound(self) -> int:
        return len(self.items)


_MISSING = object()
_SCAN = object()  # _object_at: the path meets an object without a key index


class JsonFieldBlock:
    """The dynamic fields of an orjson-parsed document, flattened on demand.

    ``root``, ``consumed`` (top-level keys that went to static slots) and
    ``room`` (fields the event had left) are read by the alert writer, which
    also keeps what it derived from the document in ``alert_memo``.
    """

    __slots__ = (
        "root",
        "consumed",
        "null_string",
        "csv",
        "room",
        "_written",
        "_bound",
        "_total",
        "_capped",
        "_items",
        "_objects",
        "flattens",
        "alert_memo",
    )

    def __init__(
        self,
        root: dict[str, Any],
        consumed: frozenset[str],
        null_string: bool,
        csv: bool,
        room: int,
        written: bytes,
        colons: int | None = None,
    ) -> None:
        self.root = root
        self.consumed = consumed
        self.null_string = null_string
        self.csv = csv
        self.room = room
        # The document as orjson writes it: as many ':' as the text, and no
        # longer than the text counted in characters.
        self._written = written
        self._bound = colons  # an upper bound on the fields, once known
        self._total: int | None = None  # fields eager flattening makes, before the cap
        self._capped: bool | None = None
        self._items: list[tuple[str, str]] | None = None
        self._objects: dict[str, Any] = {}  # "a.b." -> (object, its key index)
        self.flattens = 0  # how often the whole document was flattened
        self.alert_memo: object = None

    # -- size ---------------------------------------------------------------

    def _size_at_most(self) -> int:
        """An upper bound on the fields before the cap, exact once counted."""
        if self._total is not None:
            return self._total
        bound = self._bound
        if bound is None:
            bound = len(self._written) // _MIN_FIELD_CHARS
            if bound >= MAX_DYNAMIC_FIELDS:
                bound = self._written.count(b":")  # one per member, at least
            self._bound = bound
        return bound

    def total(self) -> int:
        """Fields eager flattening makes from the document, before the cap."""
        if self._total is None:
            self._total = _count_fields(self.root, self.null_string, self.csv) - len(self.consumed)
        return self._total

    def capped(self) -> bool:
        """True when the document holds more fields than the event had room for."""
        capped = self._capped
        if capped is None:
            room = self.room
            capped = self._capped = self._size_at_most() > room and self.total() > room
        return capped

    def may_hold_bracket_strings(self) -> bool:
        """False when no string of the document (key or value) starts with ``[``."""
        return b'"[' in self._written

    def count(self) -> int:
        total = self.total()
        return total if total < self.room else self.room

    def bound(self) -> int:
        bound = self._size_at_most()
        return bound if bound < self.room else self.room

    # -- fields -------------------------------------------------------------

    def pairs(self) -> Iterator[tuple[str, str]]:
        if self._items is None:
            self._items = self._flatten()
        return iter(self._items)

    def find(self, key_lower: str) -> str | None:
        # Not memoised here: Event.find_lowered keeps every answer of the event.
        capped = self._capped
        if capped is None:
            capped = self.capped()
        if capped:
            value = next((v for k, v in self.pairs() if ascii_lower(k) == key_lower), None)
        else:
            # The object holding the field, found once per path: fields are
            # mostly asked for by the dozen from the same object.
            cut = key_lower.rfind(".") + 1
            path = key_lower[:cut]  # "" for the root, else dotted names ending in "."
            objects = self._objects
            where = objects.get(path, _MISSING)
            if where is _MISSING:
                where = objects[path] = self._object_at(path)
            if where is None:
                value = None
            elif where is _SCAN:
                value = self._walk(self.root, key_lower, True)
            else:
                node, index = where
                key = index.get(key_lower[cut:])
                if key is None:
                    value = None
                else:
                    raw = node[key]
                    if type(raw) is dict or (not cut and key in self.consumed):
                        value = None
                    elif type(raw) is str:
                        value = raw
                    else:
                        value = plain_field_text(raw, self.null_string, self.csv)
        return value

    def _object_at(self, path: str) -> object:
        """``(object, key index)`` reached by ``path`` ("" for the root, else
        dotted names each ending in "."), through objects with key indexes;
        None when no field lies under it; _SCAN when an object on the way (or
        the one reached) must be scanned in document order. Each object on the
        way is kept in ``_objects``, so sibling paths share their parents."""
        if not path:
            index = key_index(self.root)
            return _SCAN if index is None else (self.root, index)
        cut = path.rfind(".", 0, len(path) - 1) + 1
        parent_path = path[:cut]
        objects = self._objects
        parent = objects.get(parent_path, _MISSING)
        if parent is _MISSING:
            parent = objects[parent_path] = self._object_at(parent_path)
        if parent is None or parent is _SCAN:
            return parent
        node, index = parent
        key = index.get(path[cut:-1])
        if key is None:
            return None
        value = node[key]
        if type(value) is not dict:
            return None
        index = key_index(value)
        return _SCAN if index is None else (value, index)

    def _walk(self, node: dict[str, Any], rest: str, top: bool) -> str | None:
        while True:
            index = key_index(node)
            if index is None:
                return self._scan(node, rest, top)
            dot = rest.find(".")
            if dot < 0:
                key = index.get(rest)
                if key is None:
                    return None
                value = node[key]
                if type(value) is dict or (top and key in self.consumed):
                    return None
                return plain_field_text(value, self.null_string, self.csv)
            key = index.get(rest[:dot])
            if key is None:
                return None
            value = node[key]
            if type(value) is not dict:
                return None
            node = value
            rest = rest[dot + 1 :]
            top = False

    def _scan(self, node: dict[str, Any], rest: str, top: bool) -> str | None:
        """Every member in document order, as eager flattening meets them."""
        for key, value in node.items():
            lk = ascii_lower(key)
            if type(value) is dict:
                size = len(lk)
                if len(rest) > size and rest[size] == "." and rest.startswith(lk):
                    found = self._walk(value, rest[size + 1 :], False)
                    if found is not None:
                        return found
            elif lk == rest and not (top and key in self.consumed):
                text = plain_field_text(value, self.null_string, self.csv)
                if text is not None:
                    return text
        return None

    def _flatten(self) -> list[tuple[str, str]]:
        self.flattens += 1
        out: list[tuple[str, str]] = []
        limit = self.room
        if limit <= 0:
            return out
        null_string = self.null_string
        csv = self.csv
        consumed = self.consumed
        stack: list[tuple[str | None, Iterator[tuple[str, Any]]]] = [
            (None, iter(self.root.items()))
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
                text = plain_field_text(value, null_string, csv)
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
            elif plain_field_text(value, null_string, csv) is not None:
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


def _decode_exact(event: Event, text: str, null_string: bool, csv: bool) -> None:
    ok, node = parse_cjson(text)
    if ok and type(node) is CObject:
        items = _read_eager(node, event, null_string, csv)
        if items:
            event.add_block(FlatJsonBlock(items))


def _parsed_prefix(text: str, error: orjson.JSONDecodeError) -> tuple[object, str] | None:
    """orjson's tree of the first JSON value in ``text`` when only the text
    after it made orjson fail (analysisd ignores that text), with the parsed
    part; None when the value itself is not orjson's to parse."""
    if not error.msg.startswith("unexpected content after document"):
        return None
    body = text[: error.pos]  # a wrong cut (should pos count bytes) fails to parse
    try:
        return orjson.loads(body), body
    except orjson.JSONDecodeError:
        return None


def decode_json(
    event: Event, text: str, *, null_mode: str = "string", array_mode: str = "array"
) -> None:
    """Run the JSON decoder plugin on ``text`` (the log, or the part after the
    parent/prematch); a text that does not parse leaves no fields."""
    json_plugin(null_mode, array_mode)(event, text)


def json_plugin(
    null_mode: str = "string", array_mode: str = "array"
) -> Callable[[Event, str], None]:
    """``decode_json`` with its modes resolved once (a decoder's plugin)."""
    try:
        null_string = _NULL_MODES[null_mode]
        csv = _ARRAY_MODES[array_mode]
    except KeyError as exc:
        raise ValueError(
            f"decode_json: json_null_field={null_mode!r} json_array_structure={array_mode!r}"
            " (bug in the decoder loader: validate them at load)"
        ) from exc

    return partial(_decode, null_string, csv)  # a C-level call: no extra Python frame


def _decode(null_string: bool, csv: bool, event: Event, text: str) -> None:
    if "\x00" in text:  # analysisd sees a C string
        text = text[: text.index("\x00")]
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        prefix = _parsed_prefix(text, exc)
        if prefix is None:
            _decode_exact(event, text, null_string, csv)
            return
        doc, text = prefix
    if type(doc) is not dict:
        return  # a top-level array or scalar has no key, so no field
    if "\\" in text and "\\u0000" in text:
        _decode_exact(event, text, null_string, csv)
        return
    try:
        written = orjson.dumps(doc)
    except orjson.JSONEncodeError:
        _decode_exact(event, text, null_string, csv)  # nested past 254 levels
        return
    colons = None
    if written != text.encode():
        colons = text.count(":")
        if colons != written.count(b":") or ("\\" in text and "\\u003" in text):
            _decode_exact(event, text, null_string, csv)  # a key repeats (or may)
            return
    root: dict[str, Any] = doc
    if not root:
        return
    consumed = _NO_KEYS
    if not _STATIC_NAMES.isdisjoint(root):
        taken: set[str] = set()
        for key, value in root.items():
            if key in _STATIC_NAMES and type(value) is not dict:
                static = plain_field_text(value, null_string, csv)
                if static is not None and _fill_static(event, key, static):
                    taken.add(key)
        consumed = frozenset(taken)
    room = event.field_room if event._blocks else MAX_DYNAMIC_FIELDS
    if room > 0:
        event.add_block(JsonFieldBlock(root, consumed, null_string, csv, room, written, colons))
