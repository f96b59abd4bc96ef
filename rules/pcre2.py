"""PCRE2 patterns (``type="pcre2"``) on linear-time engines where possible.

Theory of operation
-------------------
analysisd compiles PCRE2 patterns with no options: case-sensitive, byte mode
(no UTF), ``.`` not matching ``\\n``, and runs ``pcre2_match`` unanchored on the
subject's bytes.  We reproduce byte mode with RE2's Latin-1 mode on the UTF-8
encoding of the subject (so ``.``, ``[^x]`` and ``\\xhh`` see one byte, exactly as
PCRE2 does) and convert byte offsets back to ``str`` indices for captures and
the end pointer.

RE2 cannot run look-around, back-references, possessive or atomic groups,
``\\K`` and the like.  Three shapes the stock ruleset uses are rewritten into RE2
pieces with the same meaning:

* ``(*UTF)`` at the start switches PCRE2 to UTF-8 mode: compiled the same way,
  but on RE2's UTF-8 mode (``\\N{U+hhhh}`` becomes ``\\x{hhhh}``);
* ``^(?=A)(?=B)REST``: each look-ahead is evaluated at offset 0, i.e. as the
  anchored RE2 ``^A`` (PCRE2 ``$``/``.`` semantics are RE2's in single-line
  mode), and ``^REST`` gives the span;
* ``^(?!^L1$|^L2$)REST`` with literal ``Li``: at offset 0 ``^L$`` holds exactly
  when the subject is ``L`` or ``L`` plus a final newline (PCRE2 ``$``), so the
  look-ahead is a set-membership test, and ``^REST`` gives the span.

Anything else RE2 rejects goes to the third-party ``regex`` module on bytes,
which speaks PCRE syntax; it backtracks, so every call carries
``BOUNDED_TIMEOUT_S`` and a timeout counts as "no match".  Such patterns report
``engine == "bounded"`` so the loader can warn.
"""

from __future__ import annotations

import re
from typing import Final

import re2
import regex

from trailwarden.rules.osmatch import PatternError, check_length

# Wall-clock budget of one `regex` (backtracking) search.  Generous for a 64 KiB
# event on a normal pattern, small enough that a catastrophic pattern cannot
# stall the analysis loop.
BOUNDED_TIMEOUT_S: Final = 0.05

_UNANCHORED: Final = re2._re2.RE2.Anchor.UNANCHORED
_ANCHORED: Final = re2._re2.RE2.Anchor.ANCHOR_START
_NULL: Final = (-1, -1)

# Shapes recognised by the rewrites (applied to the pattern text; linear `re`
# use on our own fixed expressions over the short pattern string).
_UTF_VERB = re.compile(r"\A\(\*UTF8?\)")
_NAMED_CP = re.compile(r"\\N\{U\+([0-9A-Fa-f]{1,6})\}")
_POS_LOOKAHEAD = re.compile(r"\(\?=((?:[^()\\]|\\.)*)\)")
_NEG_LITERALS = re.compile(
    r"\A\^\(\?!((?:\^(?:[^()|\\^$.*+?\[\]{}]|\\[\\^$.*+?()\[\]{}|/-])*\$\|?)+)\)"
)
_NEG_ITEM = re.compile(r"\^((?:[^()|\\^$.*+?\[\]{}]|\\.)*)\$")
_ESCAPED = re.compile(r"\\(.)")


def _options(latin1: bool, capture: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.never_capture = not capture
    options.max_mem = 64 << 20
    if latin1:
        options.encoding = re2.Options.Encoding.LATIN1
    return options


class _Re2:
    """One RE2 program over bytes (Latin-1 or UTF-8 mode)."""

    __slots__ = ("groups", "latin1", "prog", "tester")

    def __init__(self, pattern: str, latin1: bool) -> None:
        raw = pattern.encode("utf-8", "surrogatepass")
        try:
            self.prog = re2._re2.RE2(raw, _options(latin1, capture=True))
            self.tester = re2._re2.RE2(raw, _options(latin1, capture=False))
        except re2.error as exc:  # pragma: no cover - pybind raises only on bad args
            raise ValueError(str(exc)) from exc
        if not self.prog.ok():
            raise ValueError(self.prog.error())
        self.groups = self.prog.NumberOfCapturingGroups()
        self.latin1 = latin1


class Pcre2:
    """A compiled PCRE2 pattern.

    ``engine`` is ``"literal"`` (plain text without metacharacters), ``"re2"``
    or ``"bounded"`` (``regex`` module with a timeout).
    """

    __slots__ = (
        "anchored_checks",
        "engine",
        "excluded",
        "literal",
        "main",
        "fallback",
        "required_literal",
        "pattern",
    )

    def __init__(self, pattern: str) -> None:
        check_length(pattern, "PCRE2")
        self.pattern = pattern
        self.literal: str | None = None
        self.main: _Re2 | None = None
        self.fallback: regex.Pattern[bytes] | None = None
        self.anchored_checks: tuple[_Re2, ...] = ()
        self.excluded: frozenset[str] = frozenset()
        self.required_literal: str | None = None
        if pattern and not any(c in pattern for c in "\\^$.|?*+()[]{}"):
            self.literal = pattern
            self.required_literal = pattern.lower() if pattern.isascii() else None
            self.engine = "literal"
            return
        latin1 = True
        body = pattern
        verb = _UTF_VERB.match(body)
        if verb:
            latin1 = False
            body = _NAMED_CP.sub(lambda m: "\\x{" + m.group(1) + "}", body[verb.end() :])
        try:
            self.main = _Re2(body, latin1)
            self.engine = "re2"
            return
        except ValueError:
            pass
        rewritten = self._rewrite(body, latin1)
        if rewritten:
            self.engine = "re2"
            return
        try:
            self.fallback = regex.compile(pattern.encode("utf-8", "surrogatepass"))
        except regex.error as exc:
            raise PatternError(f"invalid PCRE2 pattern {pattern!r}: {exc}") from exc
        self.engine = "bounded"

    def _rewrite(self, body: str, latin1: bool) -> bool:
        """Express leading look-aheads with RE2 pieces; False when not applicable."""
        if not body.startswith("^("):
            return False
        neg = _NEG_LITERALS.match(body)
        if neg:
            items = [_ESCAPED.sub(r"\1", m.group(1)) for m in _NEG_ITEM.finditer(neg.group(1))]
            rest = body[neg.end() :]
            try:
                self.main = _Re2("^" + rest, latin1)
            except ValueError:
                return False
            self.excluded = frozenset(items) | frozenset(i + "\n" for i in items)
            return True
        checks: list[_Re2] = []
        pos = 1
        while True:
            m = _POS_LOOKAHEAD.match(body, pos)
            if not m:
                break
            try:
                checks.append(_Re2("^" + m.group(1), latin1))
            except ValueError:
                return False
            pos = m.end()
        if not checks:
            return False
        try:
            self.main = _Re2("^" + body[pos:], latin1)
        except ValueError:
            return False
        self.anchored_checks = tuple(checks)
        return True

    def test(self, subject: str) -> bool:
        if self.literal is not None:
            return self.literal in subject
        return self._search(subject, capture=False) is not None

    def match(self, subject: str, start: int) -> tuple[int, tuple[str, ...]] | None:
        """pcre2_match on ``subject[start:]``: end pointer and captures.

        The end pointer is ``ovector[1] - 1`` as ``w_expression_match`` computes
        it (``start - 1`` for an empty match at the start).  Captures follow the
        return code: groups after the highest one that took part are absent,
        unset groups before it are ``""``.
        """
        text = subject[start:] if start else subject
        if self.literal is not None:
            pos = text.find(self.literal)
            if pos < 0:
                return None
            return start + pos + len(self.literal) - 1, ()
        found = self._search(text, capture=True)
        if found is None:
            return None
        end, groups = found
        return start + end, groups

    def _search(self, text: str, capture: bool) -> tuple[int, tuple[str, ...]] | None:
        if self.excluded and text in self.excluded:
            return None
        encoded = text.encode("utf-8", "surrogatepass")
        for check in self.anchored_checks:
            if check.tester.Match(_ANCHORED, encoded, 0, len(encoded))[0] == _NULL:
                return None
        main = self.main
        if main is not None:
            prog = main.prog if capture else main.tester
            spans: list[tuple[int, int]] = prog.Match(_UNANCHORED, encoded, 0, len(encoded))
            if spans[0] == _NULL:
                return None
            if not capture:
                return 0, ()
            return _result(spans, encoded, text)
        assert self.fallback is not None
        try:
            m = self.fallback.search(encoded, timeout=BOUNDED_TIMEOUT_S)
        except TimeoutError:
            return None
        if m is None:
            return None
        if not capture:
            return 0, ()
        return _result(list(m.regs), encoded, text)


def _result(spans: list[tuple[int, int]], encoded: bytes, text: str) -> tuple[int, tuple[str, ...]]:
    ascii_text = len(encoded) == len(text)
    highest = 0
    for index in range(1, len(spans)):
        if spans[index] != _NULL:
            highest = index
    groups: list[str] = []
    for index in range(1, highest + 1):
        s, e = spans[index]
        if s < 0:
            groups.append("")
        elif ascii_text:
            groups.append(text[s:e])
        else:
            groups.append(encoded[s:e].decode("utf-8", "replace"))
    end_byte = spans[0][1]
    end = end_byte if ascii_text else _chars(encoded, end_byte)
    return end - 1, tuple(groups)


def _chars(encoded: bytes, offset: int) -> int:
    """Character index of a byte offset (a split character counts as one)."""
    return len(encoded[:offset].decode("utf-8", "replace"))
