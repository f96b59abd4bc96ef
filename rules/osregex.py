"""OS_Regex, the default dialect of ``<regex>``, ``<field>``, ``prematch`` and decoder ``regex``.

Theory of operation
-------------------
The pattern is parsed exactly as ``OSRegex_Compile`` does: alternatives split
on unescaped ``|``; per alternative a leading ``^`` anchors at the start and a
trailing unescaped ``$`` at the end; ``(``/``)`` are capture markers (one level,
no ``|`` inside); ``\\x`` escapes are the only classes and ``+``/``*`` are
quantifiers only right after one.  Literal characters are lowered with the
ASCII charmap and the subject is lowered the same way, so matching is
case-insensitive for ASCII only.

Wazuh executes the result with a hand-written scanner (``_OS_Regex``) whose
quantifiers are lazy with a one-token look-ahead and at most four backtrack
points.  We translate each alternative into an equivalent RE2 expression:

* a quantified class becomes a *lazy* RE2 repetition, except the last token of
  an alternative, which the scanner consumes greedily (its look-ahead sees the
  end of the pattern and keeps going);
* the subject is matched already lowered, with literal pattern characters
  lowered, so no RE2 case folding (which is Unicode-aware) is involved;
* the end pointer the C function returns, which decoders use for
  ``after_prematch``/``after_regex`` offsets, is rebuilt from the match span by
  the rules in :func:`_Branch.end_of` (it is *not* always the last matched
  character: a trailing ``\\w+`` reports the first character of its run when it
  reaches the end of the subject and the stopping character when it does not);
* a capture marker right after another marker is a literal ``(`` for the
  scanner (it handles one marker per step), and the capture pairs from that
  point on are never reported; we reproduce both.

Cheapest engines first: alternatives that are pure literals run on ``str``
methods, ``\\.*``/``\\.+`` are constant tests, the rest run on RE2 (linear time)
behind a required-literal prefilter.  The scanner's limited backtracking, its
one-token look-ahead past ``*`` classes and its stale "matched" flag make it miss
or (rarely) add matches that a complete matcher finds; ``REGEX.md`` lists them
and ``tests/rules/osregex_reference.py`` is a port of the scanner that the
property tests compare against.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Final

import re2

from trailwarden.rules.event import ascii_lower
from trailwarden.rules.osmatch import PatternError, check_length

_DIGITS: Final = frozenset(string.digits)
_WORD: Final = frozenset(string.ascii_letters + string.digits + "_-@")
_PUNCT: Final = frozenset("!\"#$%&'()*+,-.:;<=>?[]{|}")


@dataclass(frozen=True, slots=True)
class CharClass:
    """One ``\\x`` escape: the characters it matches (``os_regex_maps.c``)."""

    escape: str  # as written, e.g. "\\w"
    members: frozenset[str]  # ASCII members (for negated classes: the excluded ones)
    negated: bool  # matches everything outside `members`, including all non-ASCII

    def contains(self, ch: str) -> bool:
        return (ch in self.members) is not self.negated

    def re2_syntax(self) -> str:
        if not self.members:
            return r"(?s:.)"
        body = "".join(_re2_class_char(c) for c in sorted(self.members))
        return f"[^{body}]" if self.negated else f"[{body}]"

    @property
    def single_char(self) -> str | None:
        """The one character a literal escape such as ``\\(`` stands for."""
        if not self.negated and len(self.members) == 1:
            return next(iter(self.members))
        return None


def _re2_class_char(ch: str) -> str:
    if ch.isalnum() or ch in "_@ ":
        return ch
    if ch == "\t":
        return r"\t"
    return "\\" + ch


# Every escape OSRegex_Compile accepts; any other is OS_REGEX_BADREGEX.
CLASSES: Final[dict[str, CharClass]] = {
    "d": CharClass("\\d", _DIGITS, False),
    "w": CharClass("\\w", _WORD, False),
    "s": CharClass("\\s", frozenset(" "), False),  # only 0x20, not tab or newline
    "p": CharClass("\\p", _PUNCT, False),
    "(": CharClass("\\(", frozenset("("), False),
    ")": CharClass("\\)", frozenset(")"), False),
    "\\": CharClass("\\\\", frozenset("\\"), False),
    "D": CharClass("\\D", _DIGITS, True),
    "W": CharClass("\\W", _WORD, True),
    "S": CharClass("\\S", frozenset(" "), True),
    ".": CharClass("\\.", frozenset(), True),  # any character
    "t": CharClass("\\t", frozenset("\t"), False),
    "$": CharClass("\\$", frozenset("$"), False),
    "|": CharClass("\\|", frozenset("|"), False),
    "<": CharClass("\\<", frozenset("<"), False),
}


@dataclass(frozen=True, slots=True)
class Token:
    """One scanner step: a literal, a class (maybe quantified) or a capture marker."""

    kind: str  # "lit" | "class" | "mark"
    char: str = ""  # "lit": the (lowered) character
    cls: CharClass | None = None  # "class"
    quant: str = ""  # "class": "", "+" or "*"
    offset: int = 0  # where the token starts in the whole pattern (for messages)


@dataclass(frozen=True, slots=True)
class Alternative:
    """One ``|``-separated sub-pattern as OSRegex_Compile stores it."""

    begin: bool  # BEGIN_SET (leading ^)
    end: bool  # END_SET (trailing unescaped $)
    tokens: tuple[Token, ...]
    groups: int  # capture pairs the scanner can report (see `parse`)


def parse(pattern: str) -> tuple[Alternative, ...]:
    """Parse an OS_Regex pattern the way ``OSRegex_Compile`` does.

    Raises:
        PatternError: invalid escape, bad parentheses, ``|`` inside parentheses,
            or a pattern longer than analysisd accepts.
    """
    check_length(pattern, "OS_Regex")
    alternatives: list[Alternative] = []
    depth = 0
    start = 0
    i = 0
    n = len(pattern)
    while i <= n:
        ch = pattern[i] if i < n else "|"
        if i < n and ch == "\\":
            if i + 1 >= n:
                raise PatternError(
                    f"incomplete escape at offset {i} (end of pattern) in OS_Regex pattern"
                    f" {pattern!r}"
                )
            if pattern[i + 1] not in CLASSES:
                raise PatternError(
                    f"invalid escape {pattern[i : i + 2]!r} at offset {i} in OS_Regex pattern"
                    f" {pattern!r}; valid escapes are"
                    f" {' '.join(c.escape for c in CLASSES.values())}"
                )
            i += 2
            continue
        if i < n and ch == "(":
            depth += 1
            if depth > 1:
                raise PatternError(
                    f"nested '(' at offset {i} in OS_Regex pattern {pattern!r}; only one level"
                    " of parentheses is allowed"
                )
        elif i < n and ch == ")":
            depth -= 1
            if depth < 0:
                raise PatternError(f"unbalanced ')' at offset {i} in OS_Regex pattern {pattern!r}")
        elif ch == "|":
            if depth:
                where = f"offset {i}" if i < n else "end of pattern"
                raise PatternError(
                    f"unclosed '(' before {where} in OS_Regex pattern {pattern!r}"
                    if i >= n
                    else f"'|' inside parentheses at {where} in OS_Regex pattern {pattern!r}"
                )
            alternatives.append(_parse_alternative(pattern, start, i))
            start = i + 1
        i += 1
    return tuple(alternatives)


def _parse_alternative(pattern: str, start: int, stop: int) -> Alternative:
    text = pattern[start:stop]
    begin = text.startswith("^")
    pos = start + 1 if begin else start
    tokens: list[Token] = []
    end = False
    while pos < stop:
        ch = pattern[pos]
        if ch == "\\":
            cls = CLASSES[pattern[pos + 1]]
            quant = ""
            if pos + 2 < stop and pattern[pos + 2] in "+*":
                quant = pattern[pos + 2]
            tokens.append(Token("class", cls=cls, quant=quant, offset=pos))
            pos += 3 if quant else 2
        elif ch in "()":
            tokens.append(Token("mark", offset=pos))
            pos += 1
        elif ch == "$" and pos == stop - 1:
            end = True
            pos += 1
        else:
            lowered = ascii_lower(ch)
            tokens.append(Token("lit", char=lowered, offset=pos))
            pos += 1
    # The scanner handles one marker per step: a marker right after an active
    # marker is compared as a literal '('.  Markers still pair by position
    # (0-1, 2-3, ...) and sub-strings stop at the first pair with an unset end,
    # so only the pairs before the first literalised marker are reported.
    fixed: list[Token] = []
    marks = 0
    broken_pair: int | None = None
    prev_active_mark = False
    for tok in tokens:
        if tok.kind == "mark":
            if prev_active_mark:
                fixed.append(Token("lit", char="(", offset=tok.offset))
                if broken_pair is None:
                    broken_pair = marks // 2
                prev_active_mark = False
            else:
                fixed.append(tok)
                prev_active_mark = True
            marks += 1
            continue
        prev_active_mark = False
        fixed.append(tok)
    groups = marks // 2 if broken_pair is None else broken_pair
    words = [t for t in fixed if t.kind != "mark"]
    if end and len(words) == 1 and words[0].kind == "class" and words[0].quant == "*":
        # `\\x*$`: only the scanner's first attempt (at the subject start) has a
        # non-NULL result pointer when nothing else sets it, so a later attempt that
        # reaches the end still returns NULL: the class must cover the whole subject.
        begin = True
    return Alternative(begin, end, tuple(fixed), groups)


def _null_when_empty(alt: Alternative) -> bool:
    """Two or more ``\\x*`` steps and ``$``, nothing else: an empty match at the
    end of a non-empty subject comes from a later attempt, which leaves the C
    result pointer NULL (as for a lone ``\\x*$``, see ``_parse_alternative``)."""
    words = [t for t in alt.tokens if t.kind != "mark"]
    return (
        alt.end
        and not alt.begin
        and len(words) >= 2
        and all(t.kind == "class" and t.quant == "*" for t in words)
    )


def _is_literal(tok: Token) -> bool:
    return tok.kind == "lit" or (
        tok.kind == "class"
        and not tok.quant
        and tok.cls is not None
        and tok.cls.single_char is not None
    )


def _literal_char(tok: Token) -> str:
    if tok.kind == "lit":
        return tok.char
    assert tok.cls is not None and tok.cls.single_char is not None
    return tok.cls.single_char


def _longest_literal(tokens: tuple[Token, ...]) -> str:
    best = ""
    run: list[str] = []
    for tok in tokens:
        if tok.kind == "mark":
            continue
        if _is_literal(tok):
            run.append(_literal_char(tok))
            continue
        if len(run) > len(best):
            best = "".join(run)
        run = []
    if len(run) > len(best):
        best = "".join(run)
    return best


def _leading_literal(tokens: tuple[Token, ...]) -> str:
    run: list[str] = []
    for tok in tokens:
        if tok.kind == "mark":
            continue
        if not _is_literal(tok):
            break
        run.append(_literal_char(tok))
    return "".join(run)


def _re2_options(capture: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.never_capture = not capture
    # Patterns are bounded (20480 chars); this keeps a huge one from failing on RE2's
    # default 8 MiB program budget while still capping memory per expression.
    options.max_mem = 64 << 20
    return options


_UNANCHORED: Final = re2._re2.RE2.Anchor.UNANCHORED
_surrogate = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]").search
_NULL: Final = (-1, -1)


class _Branch:
    """One alternative compiled for ``match`` (captures and the C end pointer)."""

    __slots__ = (
        "alt",
        "anchored",
        "null_when_empty",
        "groups",
        "literal",
        "marks",
        "regex",
        "searcher",
        "tail",
        "tail_group",
        "trailing_mark",
        "words",
        "substrings",
    )

    def __init__(self, alt: Alternative, substrings: bool) -> None:
        self.alt = alt
        self.substrings = substrings
        self.groups = alt.groups
        words = [t for t in alt.tokens if t.kind != "mark"]
        self.words = words
        self.tail: Token | None = words[-1] if words else None
        last = alt.tokens[-1] if alt.tokens else None
        self.trailing_mark = last is not None and last.kind == "mark" and self.tail is not None
        self.literal: str | None = None
        self.marks: tuple[int, ...] = ()
        self.regex = None
        self.anchored: re.Pattern[str] | None = None
        self.searcher: re.Pattern[str] | None = None
        self.null_when_empty = _null_when_empty(alt)
        self.tail_group = 0
        if all(t.kind == "mark" or _is_literal(t) for t in alt.tokens):
            # Pure literal: capture markers sit at fixed offsets inside it.
            chars: list[str] = []
            marks: list[int] = []
            for tok in alt.tokens:
                if tok.kind == "mark":
                    marks.append(len(chars))
                else:
                    chars.append(_literal_char(tok))
            self.literal = "".join(chars)
            self.marks = tuple(marks[: 2 * alt.groups])
            return
        parts: list[str] = ["^"] if alt.begin else []
        mark_no = 0
        tail_index = max(i for i, t in enumerate(alt.tokens) if t.kind != "mark")
        group_no = 0
        for index, tok in enumerate(alt.tokens):
            if tok.kind == "mark":
                if mark_no < 2 * alt.groups:
                    parts.append("(" if mark_no % 2 == 0 else ")")
                    if mark_no % 2 == 0:
                        group_no += 1
                mark_no += 1
            elif tok.kind == "lit":
                parts.append(re2.escape(tok.char))
            else:
                assert tok.cls is not None
                body = tok.cls.re2_syntax()
                if not tok.quant:
                    parts.append(body)
                elif index == tail_index:
                    # The scanner's look-ahead sees the end of the pattern and keeps
                    # consuming: the last quantifier is greedy.  Its run start feeds
                    # the end-pointer rules, so it gets an internal group.
                    group_no += 1
                    self.tail_group = group_no
                    parts.append(f"({body}{tok.quant})")
                else:
                    parts.append(f"{body}{tok.quant}?")
        if alt.end:
            parts.append("$")
        self.regex = re2.compile("".join(parts), _re2_options(capture=True))._regexp
        self.anchored = _anchored_pattern(alt)
        self.searcher = _literal_led_pattern(alt, tail_index)

    def search(self, lowered: str, subject: str, start: int) -> tuple[int, tuple[str, ...]] | None:
        """Run this alternative on ``subject[start:]``; the C end pointer and groups."""
        alt = self.alt
        if start >= len(subject):
            return _empty_subject(alt, start, self.substrings)
        if self.literal is not None:
            return self._search_literal(lowered, subject, start)
        anchored = self.anchored
        if anchored is not None and lowered.isascii():
            # Same spans as RE2 gives (see _anchored_pattern), without the
            # encoding and the binding's per-call cost (~1.5 us).
            found = anchored.match(lowered, start)
            if found is None:
                return None
            spans = [(found.start() - start, found.end() - start)]
            if self.tail_group:
                spans.append((found.start(1) - start, found.end(1) - start))
            return start + self.end_of(spans, len(lowered) - start), ()
        searcher = self.searcher
        if searcher is not None and (lowered.isascii() or _surrogate(lowered) is None):
            # RE2's spans again (see _literal_led_pattern), without the
            # encoding and the binding's per-call cost: ~5x faster on a CloudTrail log.
            # Character offsets, as RE2's are converted to; a lone surrogate
            # (an undecodable byte) is one character here but three bytes to RE2.
            hit = searcher.search(lowered, start)
            if hit is None:
                return None
            spans = [
                _NULL if s < 0 else (s - start, e - start)
                for s, e in map(hit.span, range(searcher.groups + 1))
            ]
            end = self.end_of(spans, len(lowered) - start)
            return start + end, self._groups(spans, subject, start)
        text = lowered[start:] if start else lowered
        ascii_text = text.isascii()
        encoded = text.encode("utf-8", "surrogatepass")
        assert self.regex is not None
        spans = self.regex.Match(_UNANCHORED, encoded, 0, len(encoded))
        if spans[0] == _NULL:
            return None
        if self.null_when_empty and spans[0][0] == spans[0][1] > 0:
            return None
        if not ascii_text:
            spans = [
                _NULL if s == _NULL else (_chars(encoded, s[0]), _chars(encoded, s[1]))
                for s in spans
            ]
        n = len(text)
        end = self.end_of(spans, n)
        groups = self._groups(spans, subject, start)
        return start + end, groups

    def end_of(self, spans: list[tuple[int, int]], n: int) -> int:
        """The pointer ``_OS_Regex`` returns, relative to the subject start.

        * last token a literal or single class: the last matched character;
        * last token ``\\x+`` over run ``[a, e)``: ``e`` when the run stopped at a
          non-class character (``a`` if a capture marker follows it), ``a`` when
          the run reached the end of the subject;
        * last token ``\\x*``: as ``+`` for a non-empty stopped run (``e - 1`` if
          a marker follows), ``a - 1`` for a run reaching the end (the subject
          start when the class is the whole pattern) and ``e - 1`` for an empty
          run.  An empty match at the start gives ``-1``: C returns a pointer one
          before the subject there.
        """
        ms, me = spans[0]
        tail = self.tail
        if tail is None:
            return ms
        if tail.kind == "lit" or not tail.quant:
            return me - 1
        a, e = spans[self.tail_group]
        if tail.quant == "+":
            if e < n:
                return a if self.trailing_mark else e
            return a
        if e > a:
            if e < n:
                return e - 1 if self.trailing_mark else e
            # The run leaves the pointer where the previous step put it: the last
            # character before the run, or the subject start (the initial pointer)
            # when the class is the only step.
            return a - 1 if (a > ms or len(self.words) > 1) else ms
        return e - 1

    def _groups(self, spans: list[tuple[int, int]], subject: str, start: int) -> tuple[str, ...]:
        out: list[str] = []
        number = 0
        for index in range(1, len(spans)):
            if index == self.tail_group:
                continue
            number += 1
            if number > self.groups:
                break
            s, e = spans[index]
            out.append(subject[start + s : start + e] if s >= 0 else "")
        return tuple(out)

    def _search_literal(
        self, lowered: str, subject: str, start: int
    ) -> tuple[int, tuple[str, ...]] | None:
        alt = self.alt
        lit = self.literal
        assert lit is not None
        n = len(lowered)
        if alt.begin and alt.end:
            pos = start if lowered[start:] == lit else -1
        elif alt.begin:
            pos = start if lowered.startswith(lit, start) else -1
        elif alt.end:
            pos = n - len(lit) if lowered.endswith(lit, start) else -1
        else:
            pos = lowered.find(lit, start)
        if pos < 0:
            return None
        if not lit:
            # An empty alternative: the pointer the scanner was given ("^"/"" on
            # any subject); "$" and "^$" only match the empty subject above.
            if alt.end:
                return None
            return start, ()
        marks = self.marks
        groups = tuple(
            subject[pos + marks[i] : pos + marks[i + 1]] for i in range(0, len(marks) - 1, 2)
        )
        return pos + len(lit) - 1, groups


def _disjoint(cls: CharClass, tok: Token) -> bool:
    """True when no character matches both ``cls`` and the single-step ``tok``."""
    if tok.kind == "lit":
        return not cls.contains(tok.char)
    other = tok.cls
    assert other is not None
    if cls.negated and other.negated:
        return False  # both take every non-ASCII character
    if cls.negated:
        return other.members <= cls.members
    if other.negated:
        return cls.members <= other.members
    return cls.members.isdisjoint(other.members)


def _python_class(cls: CharClass) -> str:
    if not cls.members:
        return "(?s:.)"
    body = "".join(re.escape(c) for c in sorted(cls.members))
    return f"[^{body}]" if cls.negated else f"[{body}]"


def _anchored_pattern(alt: Alternative) -> re.Pattern[str] | None:
    """A Python regex for a ``^`` alternative without captures whose every
    quantified class (but the last token) is followed by a single step it
    cannot match, else None.

    Such an alternative has one way to match: each run stops where the next
    step's character is, so lazy (RE2's translation), greedy and possessive
    runs are the same run. Written with possessive quantifiers and matched at
    one position, the Python regex never backtracks: linear time, and its
    spans (character offsets, no encoding) equal RE2's on ASCII text.
    """
    if not alt.begin or any(t.kind == "mark" for t in alt.tokens):
        return None
    return _possessive_regex(alt, len(alt.tokens) - 1, None)


def _literal_led_pattern(alt: Alternative, tail_index: int) -> re.Pattern[str] | None:
    """A Python regex with the RE2 regex's groups and spans on ASCII text for an
    unanchored alternative that starts with a literal character, else None.

    As in ``_anchored_pattern``, every quantified class but the tail is followed
    by a single step it cannot match, so each run has one way to end and the
    possessive runs written here end where RE2's lazy ones do (the tail run is
    greedy in both). Linear time although Python's engine backtracks: an
    attempt starts only at the first literal, which no quantified class holds,
    so no run crosses the start of a later attempt and each stretch of text
    between two such characters is scanned by at most one attempt per token.
    """
    words = [t for t in alt.tokens if t.kind != "mark"]
    if alt.begin or not words or words[0].kind != "lit":
        return None
    return _possessive_regex(alt, tail_index, words[0].char)


def _possessive_regex(
    alt: Alternative, tail_index: int, avoid: str | None
) -> re.Pattern[str] | None:
    """The alternative as a Python regex with possessive runs and the RE2
    translation's groups (capture markers, then the tail run's own group), or
    None unless every quantified class but the tail is followed by a single step
    it cannot match and holds no ``avoid`` character."""
    tokens = alt.tokens
    parts: list[str] = []
    mark_no = 0
    for index, tok in enumerate(tokens):
        if tok.kind == "mark":
            if mark_no < 2 * alt.groups:
                parts.append("(" if mark_no % 2 == 0 else ")")
            mark_no += 1
            continue
        if tok.kind == "lit":
            parts.append(re.escape(tok.char))
            continue
        cls = tok.cls
        assert cls is not None
        body = _python_class(cls)
        if not tok.quant:
            parts.append(body)
            continue
        if avoid is not None and cls.contains(avoid):
            return None
        if index == tail_index:
            parts.append(f"({body}{tok.quant}+)")  # the tail run's group, as tail_group
            continue
        following = next(t for t in tokens[index + 1 :] if t.kind != "mark")
        if following.quant or not _disjoint(cls, following):
            return None
        parts.append(f"{body}{tok.quant}+")
    if alt.end:
        parts.append(r"\Z")
    return re.compile("".join(parts))


def _chars(encoded: bytes, offset: int) -> int:
    """Character index of a UTF-8 byte offset RE2 reported."""
    try:
        return len(encoded[:offset].decode("utf-8", "surrogatepass"))
    except UnicodeDecodeError:  # an offset inside a lone surrogate's bytes
        return len(encoded[:offset].decode("utf-8", "replace"))


def _empty_subject(
    alt: Alternative, start: int, substrings: bool
) -> tuple[int, tuple[str, ...]] | None:
    """The scanner on an empty subject: only its end-of-subject clean-up runs.

    With nothing consumed it accepts an empty alternative, or one whose first
    step is a single ``\\x*`` class followed by the end (a capture marker may
    sit on either side).  When the pattern has capture markers and sub-strings
    are wanted, the clean-up first skips every leading ``\\x*`` class up to a
    marker.  Nothing is captured.
    """
    toks = alt.tokens
    pos = 0
    if substrings:
        while pos < len(toks) and toks[pos].kind == "class" and toks[pos].quant == "*":
            pos += 1

    def at_end(i: int) -> bool:
        if i < len(toks) and toks[i].kind == "mark":
            i += 1
        return i >= len(toks)

    if pos < len(toks) and toks[pos].kind == "mark":
        if at_end(pos):
            return start, ()
        pos += 1
    elif at_end(pos):
        return start, ()
    if pos < len(toks) and toks[pos].kind == "class" and toks[pos].quant == "*":
        if at_end(pos + 1):
            return start, ()
    return None


class OsRegex:
    """A compiled OS_Regex pattern.

    ``test`` answers the rule-side question (any alternative matches) and
    ``match`` the decoder side (first alternative that matches, its captures
    and the C end pointer).  Both take the ASCII-lowered subject; ``match``
    also takes the original one, from which captures are cut.
    """

    __slots__ = (
        "alternatives",
        "branches",
        "bounded",
        "constant",
        "engine",
        "literals",
        "prefilter",
        "required_literal",
        "required_prefix",
        "start_pattern",
        "tester",
    )

    def __init__(self, pattern: str) -> None:
        self.alternatives = parse(pattern)
        self.branches: tuple[_Branch, ...] | None = None
        self.bounded = False
        # Boolean fast paths: (kind, literal) per alternative, or a regex for the rest.
        literals: list[tuple[str, str]] = []
        regex_parts: list[str] = []
        regex_literals: list[str] = []
        constant: bool | None = None  # True: matches every subject, False: only non-empty
        for alt in self.alternatives:
            words = [t for t in alt.tokens if t.kind != "mark"]
            if all(_is_literal(t) for t in words):
                lit = "".join(_literal_char(t) for t in words)
                mode = (
                    "equals"
                    if alt.begin and alt.end
                    else "prefix"
                    if alt.begin
                    else "suffix"
                    if alt.end
                    else "contains"
                )
                literals.append((mode, lit))
                continue
            if (
                len(words) == 1
                and words[0].kind == "class"
                and words[0].cls is CLASSES["."]
                and words[0].quant
            ):
                # \.* holds for every subject, \.+ for every non-empty one, with
                # or without anchors (the class matches any character).
                always = words[0].quant == "*"
                constant = True if always or constant is True else False
                continue
            regex_parts.append(_boolean_regex(alt))
            regex_literals.append(_longest_literal(alt.tokens))
        self.literals = tuple(literals)
        self.constant = constant
        self.tester = None
        self.prefilter: tuple[str, ...] | None = None
        if regex_parts:
            combined = "|".join(f"(?:{p})" for p in regex_parts)
            self.tester = re2.compile(combined, _re2_options(capture=False))._regexp
            if all(regex_literals):
                self.prefilter = tuple(sorted(set(regex_literals), key=len, reverse=True))
        self.engine = "re2" if regex_parts else "literal"
        self.required_literal: str | None = None
        # What a match at the subject start needs there: the leading literal
        # of a lone ^ alternative (a startswith instead of a search).
        self.required_prefix: str | None = None
        # A lone ^ alternative without captures that ends in a single step
        # (the JSON root decoder's '^{\s*"'): its match ends at the character
        # before the Python regex's end, so `match` needs no branch machinery.
        self.start_pattern: re.Pattern[str] | None = None
        if len(self.alternatives) == 1:
            alt = self.alternatives[0]
            self.required_literal = _longest_literal(alt.tokens) or None
            if alt.begin:
                self.required_prefix = _leading_literal(alt.tokens) or None
            last = alt.tokens[-1] if alt.tokens else None
            if (last is not None and not (last.kind == "class" and last.quant)
                    and not all(_is_literal(t) for t in alt.tokens)):
                self.start_pattern = _anchored_pattern(alt)

    def test(self, lowered: str) -> bool:
        """Whether any alternative matches the ASCII-lowered subject."""
        if not lowered:
            return any(_empty_subject(alt, 0, False) is not None for alt in self.alternatives)
        constant = self.constant
        if constant is not None:
            return True  # \.* or \.+ on a non-empty subject
        for mode, lit in self.literals:
            if mode == "contains":
                if lit in lowered:
                    return True
            elif mode == "prefix":
                if lowered.startswith(lit):
                    return True
            elif mode == "suffix":
                # "$" alone needs the end of the pattern at the end of an empty
                # subject; on anything else the scanner fails.
                if lit and lowered.endswith(lit):
                    return True
            elif lowered == lit:
                return True
        tester = self.tester
        if tester is None:
            return False
        prefilter = self.prefilter
        if prefilter is not None and not any(lit in lowered for lit in prefilter):
            return False
        encoded = lowered.encode("utf-8", "surrogatepass")
        return bool(tester.Match(_UNANCHORED, encoded, 0, len(encoded))[0] != _NULL)

    def match(self, subject: str, lowered: str, start: int) -> tuple[int, tuple[str, ...]] | None:
        """OSRegex_Execute with sub-strings on ``subject[start:]``.

        Returns the C end pointer (an index into ``subject``) and the captures of
        the first alternative that matches, or ``None``.
        """
        start_pattern = self.start_pattern
        if start_pattern is not None and start < len(subject) and lowered.isascii():
            hit = start_pattern.match(lowered, start)
            return None if hit is None else (hit.end() - 1, ())
        branches = self.branches
        if branches is None:
            # C allocates capture bookkeeping for the whole pattern as soon as it has
            # a ')' anywhere (a literal '(' can only be a literalised marker).
            marked = any(
                t.kind == "mark" or (t.kind == "lit" and t.char == "(")
                for alt in self.alternatives
                for t in alt.tokens
            )
            branches = self.branches = tuple(_Branch(alt, marked) for alt in self.alternatives)
        for branch in branches:
            found = branch.search(lowered, subject, start)
            if found is not None:
                return found
        return None


def _boolean_regex(alt: Alternative) -> str:
    """An alternative as an RE2 expression for existence tests (no captures)."""
    parts: list[str] = ["^"] if alt.begin else []
    words = [t for t in alt.tokens if t.kind != "mark"]
    if _null_when_empty(alt):
        # Only a non-empty match counts (test() answers the empty subject
        # itself): one step takes at least one character, the later ones any.
        bodies = [t.cls.re2_syntax() for t in words if t.cls is not None]
        nonempty = (
            bodies[i] + "+" + "".join(f"{b}*" for b in bodies[i + 1 :])
            for i in range(len(bodies))
        )
        return "(?:" + "|".join(nonempty) + ")$"
    for index, tok in enumerate(words):
        if tok.kind == "lit":
            parts.append(re2.escape(tok.char))
            continue
        assert tok.cls is not None
        body = tok.cls.re2_syntax()
        if not tok.quant:
            parts.append(body)
        elif index == len(words) - 1:
            parts.append(f"{body}{tok.quant}")
        else:
            parts.append(f"{body}{tok.quant}?")
    if alt.end:
        parts.append("$")
    return "".join(parts)
