"""One pattern option of a rule or decoder: ``w_expression_t`` of ``src/shared/expression.c``.

Theory of operation
-------------------
An :class:`Expression` binds a dialect (:class:`ExprType`) to a compiled
matcher and answers the two questions analysisd asks:

* ``test(subject)``, the rule side: ``w_expression_match(...) XOR negate``.
  The caller may pass the subject already ASCII-lowered (``lowered=``) because
  one event's log is tested by many rules; OS_Match and OS_Regex only ever look
  at the lowered text.
* ``match(subject, start)``, the decoder side: search ``subject[start:]``
  (``^`` anchors at ``start``), no ``negate``, returning the pointer
  ``w_expression_match`` stores in ``end_match`` and the captures.

``MatchResult.end`` is that C pointer as an index into ``subject``: the last
character the matcher consumed for literals and single classes, but not
always for OS_Regex quantifiers (see ``osregex._Branch.end_of``), and
``ovector[1] - 1`` for PCRE2, which is ``start - 1`` for an empty match at the
start.  Decoders move one past it themselves when it is not at the end of the
log, as ``DecodeEvent`` does.  OS_Match and STRING never set the pointer in C;
``match`` reports ``start - 1`` for them so "one past" lands on ``start``.

Captures: OS_Regex reports its capture pairs in order up to the first one
the scanner left unset (an empty capture is ``""``); PCRE2 reports groups up
to the highest one that took part, unset ones before it as ``""``.
OS_Regex captures are produced as ``OS_RETURN_SUBSTRING`` does, which is how
analysisd compiles decoder ``<regex>``; ``prematch`` is compiled without it, a
difference only visible at the end of the subject for a prematch containing
parentheses.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, cast

from trailwarden.rules.event import ascii_lower
from trailwarden.rules.osmatch import OsMatch as _OsMatch
from trailwarden.rules.osmatch import PatternError, check_length
from trailwarden.rules.osregex import OsRegex as _OsRegex
from trailwarden.rules.pcre2 import Pcre2 as _Pcre2

__all__ = ["ExprType", "Expression", "MatchResult", "PatternError", "parse_type"]


class ExprType(enum.Enum):
    OSMATCH = "osmatch"
    OSREGEX = "osregex"
    PCRE2 = "pcre2"
    STRING = "string"  # exact strcmp, the <action> default; not selectable with type=


_TYPE_NAMES = {"osmatch": ExprType.OSMATCH, "osregex": ExprType.OSREGEX, "pcre2": ExprType.PCRE2}


def parse_type(value: str | None, default: ExprType) -> ExprType:
    """The ``type=`` attribute (``w_check_attr_type``).

    ``osmatch``, ``osregex`` and ``pcre2`` in any case select a dialect;
    anything else (analysisd logs a warning) and a missing attribute give
    ``default``.  The caller emits the warning for junk values.
    """
    if value is None:
        return default
    return _TYPE_NAMES.get(value.lower(), default)


class MatchResult(NamedTuple):
    """A decoder-side match (a tuple: built per decoded event, so cheaply)."""

    end: int  # the C end pointer as an index into the subject (see module doc)
    groups: tuple[str, ...]  # captures in order; "" for an empty or unset one


_make_result = MatchResult._make


class Expression:
    """A compiled ``<match>``/``<regex>``/``<field>``/... pattern with its ``negate``.

    Raises:
        PatternError: at construction, when the pattern does not compile in
            analysisd (the message gives what and where in the pattern).
    """

    __slots__ = (
        "_matcher",
        "case_insensitive",
        "engine",
        "kind",
        "negate",
        "pattern",
        "required_literal",
        "required_prefix",
        "shape",
    )

    def __init__(self, kind: ExprType, pattern: str, negate: bool = False) -> None:
        self.kind = kind
        self.pattern = pattern
        self.negate = negate
        self._matcher: _OsMatch | _OsRegex | _Pcre2 | None
        if kind is ExprType.OSMATCH:
            self._matcher = _OsMatch(pattern)
            self.engine = "literal"
            self.case_insensitive = True
            self.required_literal = self._matcher.required_literal
        elif kind is ExprType.OSREGEX:
            self._matcher = _OsRegex(pattern)
            self.engine = self._matcher.engine
            self.case_insensitive = True
            self.required_literal = self._matcher.required_literal
        elif kind is ExprType.PCRE2:
            self._matcher = _Pcre2(pattern)
            self.engine = self._matcher.engine
            self.case_insensitive = False
            self.required_literal = self._matcher.required_literal
        elif kind is ExprType.STRING:
            check_length(pattern, "string")
            self._matcher = None
            self.engine = "literal"
            self.case_insensitive = False
            self.required_literal = ascii_lower(pattern) or None
        else:  # pragma: no cover - the enum is closed
            raise TypeError(f"unknown expression type {kind!r}")
        # A literal the (lowered) subject must start with for ``match`` at 0.
        self.required_prefix: str | None = None
        if isinstance(self._matcher, _OsRegex):
            self.required_prefix = self._matcher.required_prefix
        elif isinstance(self._matcher, _OsMatch):
            matcher = self._matcher
            if matcher.required_literal is not None and matcher.prefixes:
                self.required_prefix = matcher.required_literal
        self.shape = _shape(self)

    @property
    def bounded(self) -> bool:
        """True when matching runs on a backtracking engine with a timeout."""
        return self.engine == "bounded"

    def test(self, subject: str, lowered: str | None = None) -> bool:
        """``w_expression_match(subject) XOR negate``, the rule-side check.

        ``lowered`` is the ASCII-lowered ``subject`` when the caller has it
        cached; it is computed here otherwise.
        """
        matcher = self._matcher
        if self.case_insensitive:  # OS_Match / OS_Regex: they only read the lowered text
            if lowered is None:
                lowered = subject.lower() if subject.isascii() else ascii_lower(subject)
            return cast("_OsMatch | _OsRegex", matcher).test(lowered) is not self.negate
        if matcher is None:
            return (subject == self.pattern) is not self.negate
        return matcher.test(subject) is not self.negate

    def match(self, subject: str, start: int = 0, lowered: str | None = None
              ) -> MatchResult | None:
        """Search ``subject[start:]`` as a decoder does: no negate, with captures.

        ``lowered`` is the ASCII-lowered ``subject`` when the caller has it cached
        (decoders run several patterns over the same log).
        """
        matcher = self._matcher
        if isinstance(matcher, _OsRegex):
            if lowered is None:
                lowered = subject.lower() if subject.isascii() else ascii_lower(subject)
            found = matcher.match(subject, lowered, start)
        elif isinstance(matcher, _Pcre2):
            found = matcher.match(subject, start)
        elif isinstance(matcher, _OsMatch):
            text = subject[start:]
            hit = matcher.test(text.lower() if text.isascii() else ascii_lower(text))
            found = (start - 1, ()) if hit else None
        else:
            found = (start - 1, ()) if subject[start:] == self.pattern else None
        if found is None:
            return None
        return _make_result(found)

    def match_end(self, subject: str, start: int = 0, lowered: str | None = None) -> int | None:
        """``match(...).end``, or None: a prematch reads only where it ended, so
        OS_Regex (every decoder prematch of the stock ruleset) builds no result."""
        matcher = self._matcher
        if isinstance(matcher, _OsRegex):
            if lowered is None:
                lowered = subject.lower() if subject.isascii() else ascii_lower(subject)
            found = matcher.match(subject, lowered, start)
            return None if found is None else found[0]
        result = self.match(subject, start, lowered)
        return None if result is None else result.end

    def __repr__(self) -> str:
        neg = ", negate=True" if self.negate else ""
        return f"Expression({self.kind.name}, {self.pattern!r}{neg}, engine={self.engine!r})"


# What a compiled rule may inline instead of calling ``test``: the whole check
# (negate included) is one str operation on the subject, ASCII-lowered for the
# case-insensitive dialects. Kinds: "contains", "prefix", "suffix", "equals"
# (lowered subject), "exact" (raw subject, <action>'s strcmp); all but "exact"
# may carry a tuple of literals, of which any one must hold.
Shape = tuple[str, str | tuple[str, ...]]


def _one_mode(pairs: list[tuple[str, str]]) -> Shape | None:
    """The shape of alternatives that are all non-empty literals of one kind."""
    if not pairs or not all(lit for _, lit in pairs):
        return None
    if len(pairs) == 1:
        return pairs[0]
    modes = {mode for mode, _ in pairs}
    if len(modes) == 1:
        return (pairs[0][0], tuple(lit for _, lit in pairs))
    return None


def _shape(expr: Expression) -> Shape | None:
    if expr.negate:
        return None
    matcher = expr._matcher
    if matcher is None:  # STRING
        return ("exact", expr.pattern)
    if isinstance(matcher, _OsMatch):
        if matcher.negate or matcher.always:
            return None
        kinds = (
            [("equals", lit) for lit in matcher.equals]
            + [("prefix", lit) for lit in matcher.prefixes]
            + [("suffix", lit) for lit in matcher.suffixes]
            + [("contains", lit) for lit in matcher.substrings]
        )
        return _one_mode(kinds)
    if isinstance(matcher, _OsRegex):
        if matcher.constant is not None or matcher.tester is not None:
            return None
        if not all(mode in ("contains", "prefix", "suffix", "equals")
                   for mode, _ in matcher.literals):
            return None
        return _one_mode(list(matcher.literals))
    return None
