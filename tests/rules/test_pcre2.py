"""PCRE2 dialect: byte-mode semantics on RE2, the look-around rewrites, the bounded fallback."""

from __future__ import annotations

import pytest

from trailwarden.rules.expression import Expression, ExprType, PatternError


def pc(pattern: str) -> Expression:
    return Expression(ExprType.PCRE2, pattern)


BOOLEAN_CASES = [
    # case-sensitive, unanchored
    ("sts:AssumeRole", "x sts:AssumeRole y", True),
    ("sts:AssumeRole", "STS:ASSUMEROLE", False),
    ("(?i)sts:assumerole", "STS:AssumeRole", True),
    ("^(?:ConsoleLogin|GetSessionToken)$", "ConsoleLogin", True),
    ("^(?:ConsoleLogin|GetSessionToken)$", "ConsoleLogins", False),
    # byte mode: '.' is one byte, so a two-byte character needs two dots
    ("^.$", "a", True),
    ("^.$", "é", False),
    ("^..$", "é", True),
    (r"^\xc3\xa9$", "é", True),
    # '.' does not match a newline; \d and \w are ASCII
    ("^a.b$", "a\nb", False),
    (r"^\d+$", "١٢", False),
    (r"^\w+$", "café", False),
    # look-around rewrites used by the stock ruleset
    (r"^(?!^$|^-$).*", "value", True),
    (r"^(?!^$|^-$).*", "-", False),
    (r"^(?!^$|^-$).*", "", False),
    (r"^(?!^$|^-$).*", "-\n", False),
    (r"^(?!^$|^-$).*", "--", True),
    (r"^(?!^$).+$", "x", True),
    (r"^(?!^$).+$", "", False),
    (r"^(?!^N\\A$|^$).*", "N\\A", False),
    (r"^(?!^N\\A$|^$).*", "N/A", True),
    ("^(?=.*a)(?=.*x)", "bxa", True),
    ("^(?=.*a)(?=.*x)", "bx", False),
    ("^(?=.*a)(?=.*x)", "b\nxa", False),  # the look-aheads stop at a newline
    ("(*UTF)\\N{U+202E}", "file\u202egpj.exe", True),
    ("(*UTF)\\N{U+202E}", "file.exe", False),
    # back-references need the bounded engine
    (r"(\w)\1", "hello", True),
    (r"(\w)\1", "helo", False),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), BOOLEAN_CASES)
def test_boolean(pattern: str, subject: str, expected: bool) -> None:
    assert pc(pattern).test(subject) is expected


def test_engines() -> None:
    assert pc("sts:AssumeRole").engine == "literal"
    assert pc("^(?:A|B)$").engine == "re2"
    assert pc(r"^(?!^$|^-$).*").engine == "re2"
    assert pc("^(?=.*a)(?=.*x)").engine == "re2"
    assert pc("(*UTF)\\N{U+202E}").engine == "re2"
    backref = pc(r"(\w)\1")
    assert backref.engine == "bounded"
    assert backref.bounded


def test_captures_follow_the_pcre2_return_code() -> None:
    # groups after the highest one that took part are absent
    m = pc("(a)|(b)").match("a")
    assert m is not None and m.groups == ("a",)
    # unset groups before it are ""
    m = pc("(a)|(b)").match("b")
    assert m is not None and m.groups == ("", "b")
    m = pc(r"user=(\S+) ip=(\S+)").match("x user=bob ip=1.2.3.4")
    assert m is not None
    assert m.groups == ("bob", "1.2.3.4")
    assert m.end == len("x user=bob ip=1.2.3.4") - 1


def test_end_pointer_is_ovector_minus_one() -> None:
    m = pc("bc").match("abcd")
    assert m is not None and m.end == 2
    # an empty match at the start: one before the subject
    m = pc("x*").match("abc")
    assert m is not None and m.end == -1
    m = pc("^b").match("abc", 1)
    assert m is not None and m.end == 1
    assert pc("^b").match("abc", 0) is None


def test_non_ascii_offsets_are_characters() -> None:
    m = pc(r"^(\S+) (\S+)").match("héllo wörld")
    assert m is not None
    assert m.groups == ("héllo", "wörld")
    assert m.end == len("héllo wörld") - 1


def test_invalid_pattern() -> None:
    with pytest.raises(PatternError, match="invalid PCRE2 pattern"):
        pc("(unclosed")


def test_case_insensitive_flag_is_ascii_only_for_ascii_patterns() -> None:
    assert not pc("x").case_insensitive
    assert pc("(?i)^root$").test("ROOT")
