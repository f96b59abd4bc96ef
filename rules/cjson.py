"""cJSON's parser and printers, as analysisd runs them (Wazuh 4.x ``shared/cJSON``).

``parse_cjson`` is a port of ``cJSON_ParseWithOpts``: it accepts what cJSON
accepts (control characters in strings, ``01``, ``1.``, ``1e400``, any byte up
to the space as whitespace), keeps duplicate keys (objects come back as
``CObject``, an ordered list of members), cuts strings at an escaped NUL the
way a C string ends there, and fails past ``CJSON_NESTING_LIMIT``. It is the
exact but slow path: the JSON decoder only uses it for documents orjson cannot
be trusted with.

``print_json`` is ``cJSON_Print`` (formatted) / ``cJSON_PrintUnformatted`` for
any parsed value; ``print_plain`` is the formatted printer specialised for the
trees orjson builds (dicts, lists and scalars, at most 255 levels), which the
alert writer calls once per array field.
"""

from __future__ import annotations

import re
from typing import Any

from mypy_extensions import mypyc_attr

__all__ = [
    "CJSON_NESTING_LIMIT",
    "INT_MAX",
    "INT_MIN",
    "CObject",
    "parse_cjson",
    "print_json",
    "print_number",
    "print_plain",
    "quote",
]

# cJSON's CJSON_NESTING_LIMIT: a document nested deeper fails to parse.
CJSON_NESTING_LIMIT = 1000
# cJSON keeps an int copy of every number, saturated to the C int range.
INT_MAX = 2**31 - 1
INT_MIN = -(2**31)
_DBL_EPSILON = 2.220446049250313e-16
_INF = float("inf")
# Nesting print_plain recurses through before handing over to the iterative printer.
_RECURSION_DEPTH = 64


@mypyc_attr(native_class=False)  # subclasses list: stays a Python class
class CObject(list[tuple[str, Any]]):
    """A cJSON object from ``parse_cjson``: members in order, duplicate keys kept."""

    __slots__ = ()


# -- printing -------------------------------------------------------------------


def print_number(d: float) -> str:
    """cJSON print_number: integers as ``%d``, else ``%1.15g`` unless it does not
    read back (within DBL_EPSILON), then ``%1.17g``; NaN and infinities as null."""
    if d != d or d == _INF or d == -_INF:
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
    # isprintable() is False for every control character (and for some text
    # that needs no escape, which the table then leaves as it is).
    if s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    return '"' + s.translate(_QUOTE_TABLE) + '"'


def print_json(node: object, *, formatted: bool) -> str:
    """cJSON_Print (formatted) or cJSON_PrintUnformatted of a parsed value.

    Iterative, because cJSON documents nest up to 1000 deep. Objects may be
    ``dict`` (orjson) or ``CObject``; any other int/float prints as a number.
    """
    return _print_iterative(node, formatted, 0)


def _print_iterative(node: object, formatted: bool, depth0: int) -> str:
    out: list[str] = []
    emit = out.append
    sep = ", " if formatted else ","
    work: list[tuple[bool, object, int]] = [(False, node, depth0)]
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


def print_plain(v: object, depth: int = 0) -> str:
    """``print_json(v, formatted=True)`` for a tree of dicts, lists and scalars
    (what orjson builds); recursive while shallow, which is faster.

    Strings are quoted inline (``quote``'s test) and scalars printed without a
    call each: array values of alerts are mostly small objects of strings.
    """
    t = type(v)
    if t is not dict and t is not list:
        return _plain_scalar(v)
    if depth >= _RECURSION_DEPTH:
        return _print_iterative(v, True, depth)
    inner = depth + 1
    out: list[str] = []
    add = out.append
    table = _QUOTE_TABLE
    if t is list:
        if not v:
            return "[]"
        for x in v:  # type: ignore[attr-defined]
            tx = type(x)
            if tx is str:
                if x.isprintable() and '"' not in x and "\\" not in x:
                    add(f'"{x}"')
                else:
                    add('"' + x.translate(table) + '"')
            elif tx is dict or tx is list:
                add(print_plain(x, inner))
            else:
                add(_plain_scalar(x))
        return "[" + ", ".join(out) + "]"
    indent = "\t" * inner
    for k, x in v.items():  # type: ignore[attr-defined]
        if not (k.isprintable() and '"' not in k and "\\" not in k):
            k = k.translate(table)
        tx = type(x)
        if tx is str:
            if x.isprintable() and '"' not in x and "\\" not in x:
                add(f'{indent}"{k}":\t"{x}"')
            else:
                add(f'{indent}"{k}":\t"{x.translate(table)}"')
        elif tx is dict or tx is list:
            add(f'{indent}"{k}":\t{print_plain(x, inner)}')
        else:
            add(f'{indent}"{k}":\t{_plain_scalar(x)}')
    if not out:
        return "{\n" + "\t" * depth + "}"
    return "{\n" + ",\n".join(out) + "\n" + "\t" * depth + "}"


def _plain_scalar(v: object) -> str:
    t = type(v)
    if t is str:
        return quote(v)  # type: ignore[arg-type]
    if t is int:
        i: int = v  # type: ignore[assignment]
        return str(i) if INT_MIN < i < INT_MAX else print_number(float(i))
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if t is float:
        return print_number(v)  # type: ignore[arg-type]
    raise TypeError(f"print_plain: {t.__name__} is not a JSON value (bug in caller)")


# -- parsing ----------------------------------------------------------------------

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
