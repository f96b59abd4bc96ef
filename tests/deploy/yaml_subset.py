"""Read YAML config files: with PyYAML when installed, else with a strict subset reader.

PyYAML is not a dependency of this project, so the Filebeat configs are read
with the small reader below unless ``yaml`` can be imported. It accepts the
block style config files are written in: mappings, sequences (also of
mappings), plain/quoted scalars, flow ``[...]``/``{...}`` collections and
comments; it refuses what it does not know (tabs, anchors, tags, block
scalars, several documents, duplicate keys) with the line number, so a file it
accepts means the same to a full YAML parser. ``USING`` says which one runs.

``beats_expand`` then applies the Beats convention that a dotted key is a path
(``setup.template.json.path: x`` is ``setup: {template: {json: {path: x}}}``).
"""

from __future__ import annotations

import re
from typing import Any

try:  # pragma: no cover - depends on the environment
    import yaml as _yaml
except ImportError:  # pragma: no cover
    _yaml = None

USING = "PyYAML" if _yaml is not None else "the subset reader in yaml_subset.py"

_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_REFUSED_START = ("&", "*", "!", "|", ">", "%", "@", "`")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "/": "/", "0": "\0"}


class YamlSubsetError(ValueError):
    """The text is outside the subset (or not YAML): ``line N: why``."""


def loads(text: str) -> Any:
    """Parse one YAML document (PyYAML if installed, else the subset reader)."""
    if _yaml is not None:
        return _yaml.safe_load(text)
    return SubsetReader(text).document()


def beats_expand(value: Any) -> Any:
    """Dotted keys to nested mappings, recursively, as libbeat's config loader does."""
    if isinstance(value, list):
        return [beats_expand(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise YamlSubsetError(f"{key}: {part} is both a value and a section")
            node = child
        item = beats_expand(item)
        last = parts[-1]
        if isinstance(node.get(last), dict) and isinstance(item, dict):
            _merge(node[last], item, str(key))
        elif last in node:
            raise YamlSubsetError(f"{key}: set twice")
        else:
            node[last] = item
    return out


def _merge(into: dict[str, Any], more: dict[str, Any], where: str) -> None:
    for key, value in more.items():
        if isinstance(into.get(key), dict) and isinstance(value, dict):
            _merge(into[key], value, f"{where}.{key}")
        elif key in into:
            raise YamlSubsetError(f"{where}.{key}: set twice")
        else:
            into[key] = value


class SubsetReader:
    """Block-structure reader over (line number, indent, content) lines."""

    def __init__(self, text: str) -> None:
        self.lines: list[tuple[int, int, str]] = []
        for number, raw in enumerate(text.splitlines(), 1):
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise YamlSubsetError(f"line {number}: tab in indentation")
            content = _strip_comment(raw, number).rstrip()
            if not content.strip():
                continue
            if content.strip() in ("---", "..."):
                raise YamlSubsetError(f"line {number}: document markers are not supported")
            indent = len(content) - len(content.lstrip(" "))
            self.lines.append((number, indent, content.strip()))
        self.pos = 0

    def document(self) -> Any:
        if not self.lines:
            return None
        value = self.block(self.lines[0][1])
        if self.pos != len(self.lines):
            number = self.lines[self.pos][0]
            raise YamlSubsetError(f"line {number}: unexpected indentation")
        return value

    def block(self, indent: int) -> Any:
        number, first_indent, content = self.lines[self.pos]
        if first_indent != indent:
            raise YamlSubsetError(f"line {number}: expected indentation {indent}")
        if content == "-" or content.startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent)

    def sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while self.pos < len(self.lines):
            number, line_indent, content = self.lines[self.pos]
            if line_indent != indent or not (content == "-" or content.startswith("- ")):
                break
            rest = content[1:].lstrip(" ")
            if not rest:
                self.pos += 1
                items.append(self.nested(indent, number))
            elif _split_key(rest, number) is not None:
                # "- key: value": a mapping whose keys line up after the dash.
                offset = indent + len(content) - len(rest)
                self.lines[self.pos] = (number, offset, rest)
                items.append(self.mapping(offset))
            else:
                self.pos += 1
                items.append(_scalar_or_flow(rest, number))
        return items

    def mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while self.pos < len(self.lines):
            number, line_indent, content = self.lines[self.pos]
            if line_indent < indent:
                break
            if line_indent > indent:
                raise YamlSubsetError(f"line {number}: unexpected indentation")
            split = _split_key(content, number)
            if split is None:
                raise YamlSubsetError(f"line {number}: expected 'key: value'")
            key, rest = split
            if key in out:
                raise YamlSubsetError(f"line {number}: duplicate key {key!r}")
            self.pos += 1
            if rest:
                out[key] = _scalar_or_flow(rest, number)
            elif (
                self.pos < len(self.lines)
                and self.lines[self.pos][1] == indent
                and self.lines[self.pos][2].startswith("-")
            ):
                out[key] = self.sequence(indent)  # "key:" then "- item" at the same indent
            else:
                out[key] = self.nested(indent, number)
        return out

    def nested(self, indent: int, number: int) -> Any:
        if self.pos < len(self.lines) and self.lines[self.pos][1] > indent:
            return self.block(self.lines[self.pos][1])
        return None  # "key:" with nothing below is null


def _strip_comment(line: str, number: int) -> str:
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1  # the escaped character cannot end the string
            elif ch == quote:
                quote = ""
        elif ch in "'\"" and (i == 0 or line[i - 1] in " [{,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i]
        i += 1
    if quote:
        raise YamlSubsetError(f"line {number}: unterminated quote")
    return line


def _split_key(content: str, number: int) -> tuple[str, str] | None:
    """``(key, rest)`` for ``key: rest`` / ``key:``; None if the line is not a pair."""
    if content[0] in "'\"":
        end = _quoted_end(content, 0, number)
        key, after = _quoted(content[: end + 1], number), content[end + 1 :]
        if not (after == ":" or after.startswith(": ")):
            return None
        return key, after[1:].strip()
    if content[0] in "[{":
        return None
    match = re.search(r":(?: |$)", content)
    if match is None:
        return None
    key = content[: match.start()].strip()
    if not key or key.startswith(_REFUSED_START) or key.startswith("? "):
        raise YamlSubsetError(f"line {number}: key {key!r} is outside the subset")
    return key, content[match.end() :].strip()


def _quoted_end(text: str, start: int, number: int) -> int:
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == quote:
            if quote == "'" and text[i + 1 : i + 2] == "'":
                i += 2
                continue
            return i
        if text[i] == "\\" and quote == '"':
            i += 1
        i += 1
    raise YamlSubsetError(f"line {number}: unterminated quote")


def _quoted(text: str, number: int) -> str:
    body = text[1:-1]
    if text[0] == "'":
        return body.replace("''", "'")
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            esc = body[i + 1 : i + 2]
            if esc not in _ESCAPES:
                raise YamlSubsetError(f"line {number}: escape \\{esc} is outside the subset")
            out.append(_ESCAPES[esc])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _scalar_or_flow(text: str, number: int) -> Any:
    value, end = _flow_value(text, 0, number, top=True)
    if text[end:].strip():
        raise YamlSubsetError(f"line {number}: trailing text {text[end:]!r}")
    return value


def _flow_value(text: str, i: int, number: int, *, top: bool = False) -> tuple[Any, int]:
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None, i
    ch = text[i]
    if ch in "'\"":
        end = _quoted_end(text, i, number)
        return _quoted(text[i : end + 1], number), end + 1
    if ch == "[":
        items: list[Any] = []
        i += 1
        while True:
            while i < len(text) and text[i] == " ":
                i += 1
            if i < len(text) and text[i] == "]":
                return items, i + 1
            item, i = _flow_value(text, i, number)
            items.append(item)
            while i < len(text) and text[i] == " ":
                i += 1
            if i < len(text) and text[i] == ",":
                i += 1
            elif i < len(text) and text[i] == "]":
                return items, i + 1
            else:
                raise YamlSubsetError(f"line {number}: unterminated [...]")
    if ch == "{":
        mapping: dict[str, Any] = {}
        i += 1
        while True:
            while i < len(text) and text[i] == " ":
                i += 1
            if i < len(text) and text[i] == "}":
                return mapping, i + 1
            colon = text.find(":", i)
            if colon < 0:
                raise YamlSubsetError(f"line {number}: unterminated {{...}}")
            key = str(_plain(text[i:colon].strip(), number))
            value, i = _flow_value(text, colon + 1, number)
            mapping[key] = value
            while i < len(text) and text[i] == " ":
                i += 1
            if i < len(text) and text[i] == ",":
                i += 1
            elif i < len(text) and text[i] == "}":
                return mapping, i + 1
            else:
                raise YamlSubsetError(f"line {number}: unterminated {{...}}")
    if ch in _REFUSED_START:
        raise YamlSubsetError(f"line {number}: {ch!r} is outside the subset")
    end = len(text) if top else _plain_end(text, i)
    return _plain(text[i:end].strip(), number), end


def _plain_end(text: str, i: int) -> int:
    while i < len(text) and text[i] not in ",]}":
        i += 1
    return i


def _plain(text: str, number: int) -> Any:
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text.startswith(_REFUSED_START):
        raise YamlSubsetError(f"line {number}: {text!r} is outside the subset")
    return text
