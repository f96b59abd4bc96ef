"""OS_Match and OS_WordMatch: literal dialects, one rule per table row."""

from __future__ import annotations

import pytest

from trailwarden.rules.expression import Expression, ExprType, PatternError
from trailwarden.rules.wordmatch import word_match

OSMATCH_CASES = [
    ("sshd", "Accepted by SSHD[12]", True),
    ("sshd", "ssh", False),
    ("^Failed", "failed password", True),
    ("^Failed", "x Failed", False),
    ("done$", "all DONE", True),
    ("done$", "done.", False),
    ("^exact$", "EXACT", True),
    ("^exact$", "exact!", False),
    ("a|b", "xbx", True),
    ("a|b", "xyz", False),
    # empty alternatives always hold
    ("a||b", "xyz", True),
    ("a|", "xyz", True),
    ("|", "", True),
    ("^", "anything", True),
    ("$", "anything", True),
    ("^$", "", True),
    ("^$", "x", False),
    # ^ and $ are literal inside an alternative; . * \ are always literal
    ("a^b", "a^b", True),
    ("a$b", "xa$bx", True),
    ("a.c", "abc", False),
    ("a.c", "a.c", True),
    ("a*", "a*", True),
    ("\\d", "\\d", True),
    ("\\d", "5", False),
    # leading ! negates the whole pattern
    ("!test", "production", True),
    ("!test", "a TEST run", False),
    ("!a|b", "b", False),
    ("!", "x", False),
    # ASCII-only case folding
    ("ÉCHEC", "échec", False),
    ("échec", "Échec", False),
    ("échec", "échec", True),
    ('"errorCode":"X"', '"errorCode": "X"', False),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), OSMATCH_CASES)
def test_osmatch_rules(pattern: str, subject: str, expected: bool) -> None:
    assert Expression(ExprType.OSMATCH, pattern).test(subject) is expected


@pytest.mark.parametrize(("pattern", "subject"), [("!test", "test"), ("test", "x")])
def test_bang_xor_negate_attribute(pattern: str, subject: str) -> None:
    plain = Expression(ExprType.OSMATCH, pattern).test(subject)
    negated = Expression(ExprType.OSMATCH, pattern, negate=True).test(subject)
    assert negated is not plain


def test_osmatch_uses_a_cached_lowered_subject() -> None:
    expr = Expression(ExprType.OSMATCH, "Root")
    # the caller's lowered text is what gets searched
    assert expr.test("ROOT", lowered="root")
    assert not expr.test("ROOT", lowered="other")


def test_osmatch_required_literal_and_engine() -> None:
    assert Expression(ExprType.OSMATCH, "ConsoleLogin").required_literal == "consolelogin"
    assert Expression(ExprType.OSMATCH, "a|b").required_literal is None
    assert Expression(ExprType.OSMATCH, "!a").required_literal is None
    assert Expression(ExprType.OSMATCH, "a|b").engine == "literal"


def test_osmatch_too_long() -> None:
    with pytest.raises(PatternError, match="at most 20480"):
        Expression(ExprType.OSMATCH, "x" * 20481)


WORDMATCH_CASES = [
    ("authentication_failed", "syslog,sshd,authentication_failed,", True),
    ("authentication_failed", "authentication_failed_foo,", True),
    ("AUTHENTICATION", "sshd,authentication_success,", True),
    ("^syslog", "syslog,sshd,", True),
    ("^sshd", "syslog,sshd,", False),
    ("a|sshd", "syslog,sshd,", True),
    ("end,$", "x,end,", False),  # $ is not special
    ("", "anything", False),
    ("a|", "zzz", True),  # a trailing empty piece always matches
    ("|", "zzz", True),
    ("|a", "zzz", False),  # a leading empty piece never does here
    ("|b|c", "x|b", True),  # ... unless "|" + the next piece occurs
    ("x||c", "zzz", False),
    ("^", "", True),
    ("abc", "", False),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), WORDMATCH_CASES)
def test_word_match(pattern: str, subject: str, expected: bool) -> None:
    assert word_match(pattern, subject) is expected
