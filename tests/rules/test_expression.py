"""The Expression facade, and every pattern of the stock ruleset: linear engines, hostile input."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from trailwarden.rules.event import ascii_lower
from trailwarden.rules.expression import Expression, ExprType, MatchResult, PatternError, parse_type


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ExprType.OSREGEX),
        ("osmatch", ExprType.OSMATCH),
        ("OSRegex", ExprType.OSREGEX),
        ("PCRE2", ExprType.PCRE2),
        ("string", ExprType.OSREGEX),  # not selectable: falls back to the default
        ("junk", ExprType.OSREGEX),
    ],
)
def test_parse_type(value: str | None, expected: ExprType) -> None:
    assert parse_type(value, ExprType.OSREGEX) is expected


def test_string_is_exact_and_case_sensitive() -> None:
    expr = Expression(ExprType.STRING, "RunInstances")
    assert expr.test("RunInstances")
    assert not expr.test("runinstances")
    assert not expr.test("RunInstancesX")
    assert Expression(ExprType.STRING, "RunInstances", negate=True).test("Other")
    assert expr.engine == "literal"


@pytest.mark.parametrize("kind", [ExprType.OSMATCH, ExprType.OSREGEX, ExprType.PCRE2])
def test_negate_inverts_test_but_not_match(kind: ExprType) -> None:
    plain = Expression(kind, "abc")
    negated = Expression(kind, "abc", negate=True)
    assert plain.test("xabcx") and not negated.test("xabcx")
    assert not plain.test("xyz") and negated.test("xyz")
    assert negated.match("xabcx") == plain.match("xabcx")


def test_match_on_literal_dialects_reports_start_minus_one() -> None:
    assert Expression(ExprType.OSMATCH, "sshd").match("sshd[1]") == MatchResult(-1, ())
    assert Expression(ExprType.OSMATCH, "sshd").match("x sshd", 2) == MatchResult(1, ())
    assert Expression(ExprType.STRING, "a").match("a") == MatchResult(-1, ())
    assert Expression(ExprType.OSMATCH, "sshd").match("cron") is None


def test_lowered_cache_is_used_for_case_insensitive_dialects() -> None:
    expr = Expression(ExprType.OSREGEX, r"^user \w+")
    assert expr.test("USER ROOT", lowered="user root")
    assert expr.case_insensitive
    assert not Expression(ExprType.PCRE2, "x").case_insensitive


def test_errors_are_pattern_errors() -> None:
    with pytest.raises(PatternError):
        Expression(ExprType.OSREGEX, "a\\nb")
    with pytest.raises(ValueError):
        Expression(ExprType.PCRE2, "(")


# -- every pattern of the stock ruleset ----------------------------------------

_TAGS = (
    "match|regex|prematch|field|program_name|srcport|dstport|user|url|protocol|system_name|"
    "location|data|extra_data|hostname|status|action|if_matched_regex|srcgeoip|dstgeoip"
)
_ELEMENT = re.compile(rf"<({_TAGS})\b([^>]*)>(.*?)</\1\s*>", re.S)
_TYPE = re.compile(r'\btype\s*=\s*"([^"]*)"')
_DEFAULTS = {
    "regex": ExprType.OSREGEX,
    "prematch": ExprType.OSREGEX,
    "field": ExprType.OSREGEX,
    "if_matched_regex": ExprType.OSREGEX,
    "action": ExprType.STRING,
}

# Stock patterns that need the bounded (backtracking) engine; the loader warns.
BOUNDED_ALLOWED: frozenset[str] = frozenset()


def _stock_patterns(wazuh_ref: Path) -> list[tuple[str, ExprType, str]]:
    files = [
        *sorted((wazuh_ref / "rules").glob("*.xml")),
        *sorted((wazuh_ref / "decoders").glob("*.xml")),
        *sorted((wazuh_ref / "testing" / "ruleset").glob("*.xml")),
    ]
    found: dict[tuple[ExprType, str], str] = {}
    for path in files:
        text = re.sub(r"<!--.*?-->", "", path.read_text(errors="replace"), flags=re.S)
        for m in _ELEMENT.finditer(text):
            tag, attrs, body = m.groups()
            body = html.unescape(body.replace("<![CDATA[", "").replace("]]>", ""))
            typ = _TYPE.search(attrs)
            kind = parse_type(typ.group(1) if typ else None, _DEFAULTS.get(tag, ExprType.OSMATCH))
            found.setdefault((kind, body), f"{path.name}: <{tag}>")
    assert len(found) > 2000, "the crude extraction should see the whole stock ruleset"
    return [(where, kind, body) for (kind, body), where in found.items()]


@pytest.fixture(scope="module")
def stock(wazuh_ref: Path) -> list[tuple[str, Expression]]:
    compiled: list[tuple[str, Expression]] = []
    errors: list[str] = []
    for where, kind, body in _stock_patterns(wazuh_ref):
        try:
            compiled.append((where, Expression(kind, body)))
        except PatternError as exc:
            errors.append(f"{where}: {exc}")
    assert not errors, errors[:5]
    return compiled


def test_every_stock_pattern_compiles_to_a_linear_engine(
    stock: list[tuple[str, Expression]],
) -> None:
    bounded = {expr.pattern for _, expr in stock if expr.engine == "bounded"}
    assert bounded == BOUNDED_ALLOWED
    engines = {expr.engine for _, expr in stock}
    assert engines <= {"literal", "re2"}
    literal = sum(1 for _, expr in stock if expr.engine == "literal")
    assert literal > len(stock) // 2, "most stock patterns should not touch a regex engine"


_HOSTILE = [
    "a" * 65536,
    ("a1: " * 16384)[:65536],
    '{"a":"' + "\\" * 65520 + '"}',
    ("é " * 32768)[:65536],
]


def test_hostile_subjects_finish(stock: list[tuple[str, Expression]]) -> None:
    """A safety check, not a timing assertion: it passes by finishing."""
    for index, subject in enumerate(_HOSTILE):
        lowered = subject.lower()
        for _, expr in stock:
            expr.test(subject, lowered)
            # the decoder path (captures) once per pattern: it is the slow one
            if expr.engine == "re2" and index < 2:
                expr.match(subject)


_PREMATCH_SUBJECTS = [
    '{"integration":"aws","aws":{"source":"cloudtrail"}}',
    '{ "a": 1}',
    "Nov 29 05:00:00 host sshd[12]: Accepted password for root",
    "wazuh: Agent started",
    "",
    "  leading spaces: x",
    "Ünïcode: ÀB",
]


def test_match_end_is_where_match_ends(stock: list[tuple[str, Expression]]) -> None:
    """Decoders read a prematch's end through ``match_end``; it must equal ``match``'s."""
    for where, expr in stock:
        for subject in _PREMATCH_SUBJECTS:
            for start in (0, 1):
                result = expr.match(subject, start)
                end = expr.match_end(subject, start, ascii_lower(subject))
                assert end == (None if result is None else result.end), (where, subject, start)
