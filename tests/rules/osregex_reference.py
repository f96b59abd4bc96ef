"""Test-only reference: a line-by-line port of Wazuh's OS_Regex (compile + ``_OS_Regex``).

It mirrors ``os_regex_compile.c`` and the 4.x ``os_regex_execute.c`` (pattern
and subject as NUL-terminated arrays, the four ``pt_error`` backtrack slots,
the ``_regex_matched`` flag, the end-of-subject clean-up with its pointer side
effects) so the production translation in ``trailwarden.rules.osregex`` can be
property-tested against it.  It is slow and not linear; never use it outside
tests.

The port works on Python characters, not bytes: a non-ASCII character is one
step and belongs to ``\\W``, ``\\S``, ``\\D`` and ``\\.`` only, which is the
production unit too (see REGEX.md).

Instrumentation: :class:`Outcome.exact` is False whenever the scanner took a
step where a complete backtracking matcher would have explored more (or
other) alternatives, so its answer may legitimately differ from a full regex
search.  Each reason is recorded in :attr:`Outcome.reasons`:

``slots``      a backtrack point was dropped because all four slots were used;
``restore``    a restored ``\\x+`` resumed without its look-ahead (the flag was
               clear), skipping one split point;
``restart``    a failed attempt restarted past ``attempt start + 1``;
``blind``      a look-ahead met a ``\\x*`` (or ``\\x+`` behind it) and could not
               see past it;
``stale``      a ``+`` class or a final single class ran on a left-over
               ``_regex_matched`` flag (it can then match zero characters);
``cleanup``    the end-of-subject clean-up failed with only ``*`` classes left;
``negative``   a capture ended before it started (C's ``malloc`` of the length
               fails and the match is dropped);
``abandoned``  a capture marker keeps the position it was given on a path the
               scanner then backtracked out of.

A token counts as having consumed only on the path being scanned: restoring a
backtrack point forgets what the tokens after it consumed on the abandoned path
(else a ``\\x+`` that matched nothing after the restore would pass as honest).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

BACKSLASH = ord("\\")
LPAREN = ord("(")
PLUS = ord("+")
STAR = ord("*")
BEGIN_SET = 0o200
END_SET = 0o400

_CODES = {
    "d": 1,
    "w": 2,
    "s": 3,
    "p": 4,
    "(": 5,
    ")": 6,
    "\\": 7,
    "D": 8,
    "W": 9,
    "S": 10,
    ".": 11,
    "t": 12,
    "$": 13,
    "|": 14,
    "<": 15,
}
_WORD = set(string.ascii_letters + string.digits + "_-@")
_DIGIT = set(string.digits)
_PUNCT = set("!\"#$%&'()*+,-.:;<=>?[]{|}")


def _member(code: int, ch: int) -> bool:
    """regexmap[code][ch] == TRUECHAR, with non-ASCII code points as high bytes."""
    c = chr(ch)
    if code == 1:
        return c in _DIGIT
    if code == 2:
        return c in _WORD
    if code == 3:
        return ch == 32
    if code == 4:
        return c in _PUNCT
    if code == 5:
        return c == "("
    if code == 6:
        return c == ")"
    if code == 7:
        return c == "\\"
    if code == 8:
        return c not in _DIGIT
    if code == 9:
        return c not in _WORD
    if code == 10:
        return ch != 32
    if code == 11:
        return True
    if code == 12:
        return ch == 9
    if code == 13:
        return c == "$"
    if code == 14:
        return c == "|"
    if code == 15:
        return c == "<"
    return False


def _charmap(ch: int) -> int:
    return ch + 32 if 65 <= ch <= 90 else ch


class CompileError(ValueError):
    pass


@dataclass
class Compiled:
    patterns: list[list[int]]  # each NUL-terminated (plus padding)
    flags: list[int]
    closures: list[list[int]] | None  # marker positions per sub-pattern, when sub-strings


def compile_pattern(pattern: str, substrings: bool) -> Compiled:
    """OSRegex_Compile (flags: OS_RETURN_SUBSTRING when `substrings`)."""
    if len(pattern) > 20480:
        raise CompileError("too long")
    buf = [ord(c) for c in pattern]
    parenthesis = 0
    prts_size = 0
    i = 0
    while i < len(buf):
        if buf[i] == BACKSLASH:
            i += 1
            if i >= len(buf) or chr(buf[i]) not in _CODES:
                raise CompileError("bad escape")
            buf[i] = _CODES[chr(buf[i])]
            i += 1
            continue
        if buf[i] == LPAREN:
            parenthesis += 1
        elif buf[i] == ord(")"):
            buf[i] = LPAREN
            parenthesis -= 1
            prts_size += 1
        if parenthesis not in (0, 1):
            raise CompileError("bad parenthesis")
        buf[i] = _charmap(buf[i])
        if buf[i] == ord("|") and parenthesis != 0:
            raise CompileError("| inside parenthesis")
        i += 1
    if parenthesis != 0:
        raise CompileError("unbalanced")
    # Split on OR.  An escaped '|' was replaced by its code (14) above.
    patterns: list[list[int]] = []
    flags: list[int] = []
    cur: list[int] = []
    pieces: list[list[int]] = []
    j = 0
    while j < len(buf):
        if buf[j] == BACKSLASH:
            cur.extend(buf[j : j + 2])
            j += 2
            continue
        if buf[j] == ord("|"):
            pieces.append(cur)
            cur = []
        else:
            cur.append(buf[j])
        j += 1
    pieces.append(cur)
    for piece in pieces:
        f = 0
        if piece and piece[0] == ord("^"):
            piece = piece[1:]
            f |= BEGIN_SET
        if piece and piece[-1] == ord("$"):
            # The byte before the terminator: an escaped '$' is code 13 here.
            piece = piece[:-1]
            f |= END_SET
        patterns.append([*piece, 0, 0, 0, 0])
        flags.append(f)
    closures = None
    if substrings and prts_size > 0:
        closures = [[k for k, v in enumerate(p) if v == LPAREN] for p in patterns]
    return Compiled(patterns, flags, closures)


@dataclass
class Outcome:
    end: int | None  # index returned by OSRegex_Execute (None: no match)
    groups: tuple[str, ...] = ()
    reasons: set[str] = field(default_factory=set)

    @property
    def exact(self) -> bool:
        return not self.reasons


def execute(compiled: Compiled, subject: str) -> Outcome:
    """OSRegex_Execute(_ex): first sub-pattern that matches, with its sub-strings."""
    s = [ord(c) for c in subject] + [0, 0]
    reasons: set[str] = set()
    for index, pat in enumerate(compiled.patterns):
        closure = compiled.closures[index] if compiled.closures is not None else None
        prts: list[int | None] | None = [None] * len(closure) if closure is not None else None
        ret = _os_regex(pat, s, closure, prts, compiled.flags[index], reasons)
        if ret is None:
            continue
        groups: list[str] = []
        if prts is not None and closure is not None:
            for k in _active_reportable(pat, closure):
                if prts[k] is None:
                    reasons.add("pending")
                    break
            j = 0
            while j + 1 < len(prts) and prts[j] is not None and prts[j + 1] is not None:
                a, b = prts[j], prts[j + 1]
                assert a is not None and b is not None
                if b < a:
                    reasons.add("negative")
                    return Outcome(None, (), reasons)
                groups.append(subject[a:b])
                j += 2
        return Outcome(ret, tuple(groups), reasons)
    return Outcome(None, (), reasons)


def _os_regex(
    pat: list[int],
    s: list[int],
    closure: list[int] | None,
    prts: list[int | None] | None,
    flags: int,
    reasons: set[str],
) -> int | None:
    # Capture markers last written on a path the scanner then backtracked out of.
    abandoned: set[int] = set()

    def record(marker: int, value: int) -> None:
        assert closure is not None and prts is not None
        for k, m in enumerate(closure):
            if m == marker:
                prts[k] = value
                abandoned.discard(k)
                break

    def is_plus(x: int) -> bool:
        return x in (PLUS, STAR)

    end_set = bool(flags & END_SET)
    r_code: int | None = 0
    matched = 0
    st_error: int | None = None
    pt = 0
    pt_error: list[int | None] = [None] * 4
    pt_error_str: list[int] = [0] * 4
    st = 0
    attempt_start: int | None = None
    while s[st] != 0:
        if pt == 0 and attempt_start is None:
            attempt_start = st
        p = pat[pt]
        if p == 0:
            if not end_set:
                return r_code
        elif p == LPAREN:
            if closure is not None:
                record(pt, st)
            pt += 1
            if pat[pt] == 0 and not end_set:
                return r_code
        c = s[st]
        if pat[pt] == BACKSLASH:
            if _member(pat[pt + 1], c):
                next_pt = pt + 2
                if not is_plus(pat[next_pt]):
                    pt = next_pt
                    if st_error is None:
                        st_error = st
                    r_code = st
                    st += 1
                    continue
                if pat[next_pt] == STAR:
                    matched = 1
                elif matched and pt not in _consumed_tokens(reasons):
                    # A '+' class in look-ahead mode before it consumed anything:
                    # the flag is left over from an earlier token.
                    reasons.add("stale")
                if matched:
                    next_pt += 1
                    ok_here = -1
                    if pat[next_pt] == LPAREN:
                        next_pt += 1
                    q = pat[next_pt]
                    if q == 0:
                        ok_here = 1
                    elif q == BACKSLASH:
                        if is_plus(pat[next_pt + 2]) and pat[next_pt + 2] == STAR:
                            reasons.add("blind")
                        if _member(pat[next_pt + 1], c):
                            ok_here = 0 if is_plus(pat[next_pt + 2]) else 2
                    elif q == _charmap(c):
                        matched = 0
                        ok_here = 1
                    if ok_here >= 0:
                        if closure is not None and pat[next_pt - 1] == LPAREN:
                            record(next_pt - 1, st + 1 if (matched and ok_here == 1) else st)
                        if pat[next_pt] == 0:
                            _mark_consumed(reasons, pt)
                            st += 1
                            continue
                        next_pt += ok_here
                        for k in range(4):
                            if pt_error[k] is None:
                                pt_error[k] = pt
                                pt_error_str[k] = st
                                break
                        else:
                            reasons.add("slots")
                        pt = next_pt
                        if ok_here == 0:
                            _mark_consumed(reasons, pt)
                    else:
                        _mark_consumed(reasons, pt)
                else:
                    next_pt += 1
                    if closure is not None and pat[next_pt] == LPAREN:
                        record(next_pt, st + 1 if s[st + 1] == 0 else st)
                        next_pt += 1
                    matched = 1
                    _mark_consumed(reasons, pt)
                r_code = st
                st += 1
                continue
            if (pat[pt + 2] == 0 or pat[pt + 3] == 0) and matched == 1 and r_code is not None:
                if pat[pt + 2] == 0 or pt not in _consumed_tokens(reasons):
                    reasons.add("stale")
                r_code = st
                if not end_set:
                    return r_code
            elif pat[pt + 2] == PLUS and matched == 1:
                if pt not in _consumed_tokens(reasons):
                    reasons.add("stale")  # the '+' is skipped having matched nothing
                pt += 3
                matched = 0
                continue
            elif pat[pt + 2] == STAR:
                pt += 3
                r_code = st - 1
                matched = 0
                continue
            matched = 0
        elif pat[pt] == _charmap(c):
            pt += 1
            if st_error is None:
                st_error = st
            r_code = st
            st += 1
            continue
        # Error handling: newest backtrack point first.
        restored = False
        for k in (3, 2, 1, 0):
            saved = pt_error[k]
            if saved is not None:
                pt = saved
                st = pt_error_str[k]
                pt_error[k] = None
                restored = True
                # Tokens after the restored one consumed on the abandoned path
                # only, and markers after it were written there.
                _forget_consumed_after(reasons, pt)
                if closure is not None and prts is not None:
                    abandoned.update(
                        i for i, m in enumerate(closure) if m > pt and prts[i] is not None
                    )
                if pat[pt + 2] == PLUS and not matched:
                    reasons.add("restore")
                break
        if restored:
            st += 1
            continue
        if flags & BEGIN_SET:
            return None
        if st_error is not None:
            st = st_error
            st_error = None
        if attempt_start is not None and st + 1 > attempt_start + 1:
            reasons.add("restart")
        attempt_start = None
        _clear_consumed(reasons)
        pt = 0
        r_code = None
        st += 1
    # Matching for a possible last parenthesis.
    if closure is not None:
        while pat[pt] != LPAREN and pat[pt] != 0:
            if pat[pt] == BACKSLASH and pat[pt + 2] == STAR:
                pt += 3
            else:
                break
        if pat[pt] == LPAREN:
            record(pt, st)

    def endoffile() -> bool:
        nonlocal pt
        if pat[pt] == LPAREN:
            pt += 1
        return pat[pt] == 0

    start_pt = pt
    ok = endoffile()
    if not ok and pat[pt] == BACKSLASH and matched:
        pt += 2
        if is_plus(pat[pt]):
            pt += 1
            if endoffile():
                ok = True
            elif pat[pt] == BACKSLASH:
                pt += 2
                if pat[pt] == STAR:
                    pt += 1
                    ok = endoffile()
    if not ok and pat[pt] == BACKSLASH:
        pt += 2
        if pat[pt] == STAR:
            pt += 1
            ok = endoffile()
    if ok != _honest_cleanup(pat, start_pt, matched, _consumed_tokens(reasons)):
        reasons.add("cleanup")
    if ok and matched and start_pt not in _consumed_tokens(reasons):
        tok = start_pt + 1 if pat[start_pt] == LPAREN else start_pt
        if pat[tok] == BACKSLASH and pat[tok + 2] == PLUS:
            reasons.add("stale")
    if ok and abandoned:
        reasons.add("abandoned")
    return r_code if ok else None


def _active_reportable(pat: list[int], closure: list[int]) -> list[int]:
    """Closure indexes of markers that act as markers, in pairs before the first broken one."""
    literal = _literalised(closure)
    out: list[int] = []
    for k in range(0, len(closure) - 1, 2):
        if k in literal or k + 1 in literal:
            break
        out.extend((k, k + 1))
    return out


def _literalised(closure: list[int]) -> set[int]:
    lit: set[int] = set()
    for k in range(1, len(closure)):
        if closure[k] == closure[k - 1] + 1 and (k - 1) not in lit:
            lit.add(k)
    return lit


def _honest_cleanup(pat: list[int], pt: int, matched: int, consumed: set[int]) -> bool:
    """What a complete matcher accepts at the end: only ``*`` classes left.

    The token under ``pt`` is skipped when it is a quantifier that consumed in
    this attempt (it may end here).
    """
    if pat[pt] == LPAREN:
        pt += 1
    if pat[pt] == BACKSLASH and pat[pt + 2] in (PLUS, STAR) and matched and pt in consumed:
        pt += 3
    while pat[pt] != 0:
        if pat[pt] == LPAREN:
            pt += 1
        elif pat[pt] == BACKSLASH and pat[pt + 2] == STAR:
            pt += 3
        else:
            return False
    return True


# Which '+' tokens consumed a character in the current attempt, kept in the
# reasons set under private keys so the scanner signature stays C-like.
def _consumed_tokens(reasons: set[str]) -> set[int]:
    return {int(r[1:]) for r in reasons if r.startswith("#")}


def _mark_consumed(reasons: set[str], pt: int) -> None:
    reasons.add(f"#{pt}")


def _forget_consumed_after(reasons: set[str], pt: int) -> None:
    for r in [r for r in reasons if r.startswith("#") and int(r[1:]) > pt]:
        reasons.discard(r)


def _clear_consumed(reasons: set[str]) -> None:
    for r in [r for r in reasons if r.startswith("#")]:
        reasons.discard(r)


def run(pattern: str, subject: str, substrings: bool = True) -> Outcome:
    """Compile and execute; private bookkeeping keys removed from the reasons."""
    out = execute(compile_pattern(pattern, substrings), subject)
    out.reasons = {r for r in out.reasons if not r.startswith("#")}
    return out
