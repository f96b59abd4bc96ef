"""Wazuh's not-quite-XML rule and decoder files, read the way analysisd reads them.

Theory of operation
-------------------
analysisd parses ruleset files with its own small parser (``os_xml``), not a
conforming XML parser, and the stock files depend on that:

* a file may hold several root elements (``<var>`` then several ``<group>``);
* patterns carry bare ``<`` and ``&`` (``<regex>^<(\\d+)></regex>``): a ``<``
  that does not start a well-formed tag is text, and no entity is decoded;
* comments may contain ``--``;
* an element's content is its own text pieces joined, without the children,
  and is kept byte for byte (no trimming);
* ``<var name="X">value</var>`` elements (at any depth) define variables that
  are substituted as ``$X`` into every element content and attribute value of
  the same file, but only when the file defines at least one variable.

So this module is a small tokenizer written for those rules rather than a
pre-processing step in front of an XML library, and every element remembers the
line it started on so that problems are reported as ``path:line``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trailwarden.rules.source import Location, RulesetProblem

# A ruleset file larger than this is refused: the stock files are all under
# 300 KiB, and the loader holds a file's text and element tree in memory.
MAX_RULESET_FILE_BYTES = 16 * 1024 * 1024

# os_xml keeps variable names in a 256-byte buffer.
MAX_VARIABLE_NAME = 255

_NAME = r"[A-Za-z_][A-Za-z0-9_.:\-]*"
# Bounded alternatives, anchored at the '<' the scanner found; tag text only.
_OPEN_TAG = re.compile(rf"<({_NAME})((?:\s+{_NAME}\s*=\s*(?:\"[^\"]*\"|'[^']*'))*)\s*(/?)>")
_ATTR = re.compile(rf"({_NAME})\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_CLOSE_TAG = re.compile(rf"</({_NAME})\s*>")
# Characters that end a variable name in os_xml_variables.c.
_VAR_END = frozenset("$.|, ")


@dataclass(slots=True)
class XmlElement:
    """One element: tag as written, attributes in order, own text, children."""

    tag: str
    attrs: list[tuple[str, str]]
    line: int
    text: str = ""
    children: list[XmlElement] = field(default_factory=list)

    def attr(self, name: str) -> str | None:
        """First attribute whose name equals ``name`` case-insensitively."""
        lname = name.lower()
        for key, value in self.attrs:
            if key.lower() == lname:
                return value
        return None


@dataclass(slots=True)
class XmlDocument:
    path: str
    roots: list[XmlElement]
    problems: list[RulesetProblem]

    def location(self, line: int | None = None) -> Location:
        return Location(self.path, line)


class _Builder:
    __slots__ = ("path", "problems", "stack", "texts", "roots", "variables")

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[RulesetProblem] = []
        self.roots: list[XmlElement] = []
        # Open elements and, beside each, the text pieces gathered so far.
        self.stack: list[XmlElement] = []
        self.texts: list[list[str]] = []
        self.variables: list[XmlElement] = []

    def error(self, line: int, message: str) -> None:
        self.problems.append(RulesetProblem(Location(self.path, line), message))

    def add_text(self, piece: str) -> None:
        if self.texts and piece:
            self.texts[-1].append(piece)

    def open(self, element: XmlElement, self_closing: bool) -> None:
        if element.tag.lower() == "var":
            self.variables.append(element)
        elif self.stack:
            self.stack[-1].children.append(element)
        else:
            self.roots.append(element)
        if not self_closing:
            self.stack.append(element)
            self.texts.append([])

    def close(self, tag: str, line: int) -> bool:
        if not self.stack:
            self.error(line, f"closing tag </{tag}> without an open element")
            return False
        top = self.stack[-1]
        if top.tag != tag:
            self.error(line, f"element <{top.tag}> (line {top.line}) closed by </{tag}>")
            return False
        top.text = "".join(self.texts.pop())
        self.stack.pop()
        return True


def parse_wazuh_xml(text: str, path: str) -> XmlDocument:
    """Parse one rules/decoders file; problems are returned, not raised."""
    builder = _Builder(path)
    if len(text) > MAX_RULESET_FILE_BYTES:
        builder.error(1, f"file is larger than {MAX_RULESET_FILE_BYTES} bytes")
        return XmlDocument(path, [], builder.problems)

    pos = 0
    line = 1
    counted_to = 0
    n = len(text)
    find = text.find
    while pos < n:
        lt = find("<", pos)
        if lt < 0:
            builder.add_text(text[pos:])
            break
        if lt > pos:
            builder.add_text(text[pos:lt])
        line += text.count("\n", counted_to, lt)
        counted_to = lt
        if text.startswith("<!--", lt):
            end = find("-->", lt + 4)
            if end < 0:
                builder.error(line, "comment not closed")
                break
            pos = end + 3
            continue
        if text.startswith("<?", lt):
            end = find("?>", lt + 2)
            if end < 0:
                builder.error(line, "processing instruction not closed")
                break
            pos = end + 2
            continue
        if _escaped(text, lt):
            # `\<` is OS_Regex's escaped '<' inside a pattern, never markup
            # (but `\\<` is an escaped backslash followed by a tag).
            builder.add_text("<")
            pos = lt + 1
            continue
        if text.startswith("</", lt):
            m = _CLOSE_TAG.match(text, lt)
            if m:
                if not builder.close(m.group(1), line):
                    break
                pos = m.end()
                continue
        else:
            m = _OPEN_TAG.match(text, lt)
            if m:
                attrs = [
                    (a.group(1), a.group(2) if a.group(2) is not None else a.group(3) or "")
                    for a in _ATTR.finditer(m.group(2))
                ]
                element = XmlElement(m.group(1), attrs, line)
                builder.open(element, self_closing=m.group(3) == "/")
                pos = m.end()
                continue
        # A '<' that starts no well-formed tag is pattern text, as in os_xml.
        builder.add_text("<")
        pos = lt + 1
    else:
        line += text.count("\n", counted_to, n)

    if not builder.problems:
        for element in builder.stack:
            builder.error(element.line, f"element <{element.tag}> is not closed")
    if builder.variables and not builder.problems:
        _apply_variables(builder)
    return XmlDocument(path, builder.roots, builder.problems)


def _escaped(text: str, index: int) -> bool:
    """True when an odd number of backslashes precede ``text[index]``."""
    count = 0
    i = index - 1
    while i >= 0 and text[i] == "\\":
        count += 1
        i -= 1
    return count % 2 == 1


def _apply_variables(builder: _Builder) -> None:
    values: dict[str, str] = {}
    for var in builder.variables:
        name = var.attr("name")
        if name is None or len(var.attrs) != 1:
            builder.error(var.line, 'a <var> takes exactly one attribute, "name"')
            continue
        values.setdefault(name.lower(), var.text)
    for root in builder.roots:
        _substitute_tree(root, values, builder)


def _substitute_tree(element: XmlElement, values: dict[str, str], builder: _Builder) -> None:
    element.text = _substitute(element.text, values, element.line, builder)
    if element.attrs:
        element.attrs = [
            (k, _substitute(v, values, element.line, builder)) for k, v in element.attrs
        ]
    for child in element.children:
        _substitute_tree(child, values, builder)


def _substitute(text: str, values: dict[str, str], line: int, builder: _Builder) -> str:
    """Replace ``$NAME`` the way os_xml does; ``$(field)`` is left for descriptions."""
    if len(text) <= 2 or "$" not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or text.startswith("$(", i):
            out.append(ch)
            i += 1
            continue
        j = i + 1
        while j < n and text[j] not in _VAR_END:
            j += 1
        name = text[i + 1 : j]
        if not name:
            out.append("$")
            i += 1
            continue
        if len(name) > MAX_VARIABLE_NAME:
            builder.error(line, f"variable name too long: ${name[:40]}...")
            return text
        value = values.get(name.lower())
        if value is None:
            builder.error(line, f"unknown variable ${name}")
            return text
        out.append(value)
        i = j
    return "".join(out)
