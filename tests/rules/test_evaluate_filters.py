"""The evaluator's shortcuts (log filter, field dispatch, inlined shapes) never change a verdict.

Each engine below is run twice over the same generated messages: as compiled,
and with every node's candidates stripped of their dispatch and log filter,
so that each child is tried in sibling order as analysisd does. The verdicts
must agree message by message.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trailwarden.rules.engine import Engine
from trailwarden.rules.evaluate import Evaluator
from trailwarden.rules.expression import Expression, ExprType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ruleset_builder import build_ok

# Anchored and unanchored literals, with and without rare characters, enough
# of them (> LITERAL_LOOP_MAX) that a re2 set pass is used past the direct checks.
_MATCHES = [
    "^PHP Warning: ", "^spamd", "^nouveau ", "spamd", "hpiod: unable", "Failed password",
    "segfault at ", "kernel:", "(root)", "user=?", "a@b", "^x|^y", "error|fatal",
    "^Installed|^Updated", "disk full$", "refused", "zz top", "q?q", "login", "ok$",
]
_SYSLOG_RULES = "\n".join(
    f'<rule id="{100 + i}" level="{i % 4}"><match>{m}</match>'
    f"<description>m{i}</description></rule>"
    for i, m in enumerate(_MATCHES)
) + '\n<rule id="199" level="2"><regex>^sshd\\s*\\d+ x</regex><description>r</description></rule>'

_JSON_DECODER = """
<decoder name="json">
  <prematch>^{\\s*"</prematch>
  <plugin_decoder>JSON_Decoder</plugin_decoder>
</decoder>
"""
_SOURCES = ["cloudtrail", "securityhub", "guardduty", "trail", "config", "macie", "inspector"]
_JSON_RULES = (
    '<rule id="300" level="0"><decoded_as>json</decoded_as>'
    "<field name=\"integration\">aws</field><description>aws</description></rule>\n"
    + "\n".join(
        f'<rule id="{310 + i}" level="{3 + i % 3}"><if_sid>300</if_sid>'
        f'<field name="aws.source">{s}</field><description>{s}</description></rule>'
        for i, s in enumerate(_SOURCES)
    )
    + '\n<rule id="330" level="4"><if_sid>300</if_sid>'
    '<field name="aws.source">^guard|^mac</field><description>either</description></rule>'
)


def _plain(engine: Engine) -> Engine:
    """The same engine with each node's children tried one by one."""
    engine.evaluator = Evaluator(engine.tree, narrow=False)
    return engine


def _rules() -> str:
    return f'<group name="t,">\n{_SYSLOG_RULES}\n{_JSON_RULES}\n</group>\n'


_FAST = build_ok(_rules(), _JSON_DECODER)
_SLOW = _plain(build_ok(_rules(), _JSON_DECODER))


def _verdict(engine: Engine, message: str) -> int | None:
    verdict = engine.process(message, "test", 1.0, engine.new_state())
    return None if verdict.rule is None else verdict.rule.id


_pieces = st.sampled_from([
    "PHP Warning: ", "php warning: ", "spamd", "SPAMD ", "nouveau ", "hpiod: unable",
    "Failed password", "segfault at ", "kernel:", "(root)", "user=?", "a@b", "x", "y",
    "error", "Installed", "disk full", "refused", "zz top", "q?q", "login", "ok", " ",
    "sshd 12 x", "sshd12 x", "é", "\t", ":",
])
_logs = st.lists(_pieces, max_size=6).map("".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=_logs)
def test_log_filter_keeps_every_syslog_verdict(log: str) -> None:
    assert _verdict(_FAST, log) == _verdict(_SLOW, log)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.lists(st.sampled_from([*_SOURCES, "Guard", "MACIE", "x", ""]), max_size=3)
       .map("".join), integration=st.sampled_from(["aws", "AWS", "gcp"]))
def test_field_dispatch_keeps_every_json_verdict(source: str, integration: str) -> None:
    message = json.dumps({"integration": integration, "aws": {"source": source}})
    assert _verdict(_FAST, message) == _verdict(_SLOW, message)


def test_the_shortcuts_are_in_use() -> None:
    """Guard the comparisons above: the compiled engine really filters and dispatches."""
    _verdict(_FAST, "PHP Warning: x")
    _verdict(_FAST, json.dumps({"integration": "aws", "aws": {"source": "trail"}}))
    root = _FAST.tree.roots[0]
    filters = [c.log_filter for c in root.index.values() if c.log_filter is not None]
    assert filters
    needs = list(filters[0].needs.values())
    assert "php warning: " in needs  # anchored: a startswith on the log
    assert any(isinstance(need, int) for need in needs)
    parent = _FAST.tree.nodes_by_id[300][0]
    assert any(c.dispatch is not None for c in parent.index.values())


def test_anchored_match_is_case_insensitive_and_only_at_the_start() -> None:
    assert _verdict(_FAST, "php WARNING: disk") == 100
    assert _verdict(_FAST, "x PHP Warning: disk") is not None  # ^x, not rule 100
    assert _verdict(_FAST, "x PHP Warning: disk") != 100


# -- patterns inlined into the compiled rule ------------------------------------

_INLINED = [
    ("osmatch", "^Installed|^Updated|^Erased"),  # prefixes: one startswith
    ("osmatch", "yum.log$|.rpm$"),  # suffixes
    ("osmatch", "failure|error|attack"),  # substrings: `in` joined by `or`
    ("osmatch", "^root$|^admin$"),  # equalities: a frozenset
    ("osregex", "securityhub|aws.securityhub"),
    ("osregex", "^a|^b"),
]


@functools.cache
def _single_rule(kind: str, pattern: str) -> Engine:
    rules = (f'<group name="t,"><rule id="100" level="3"><match type="{kind}">{pattern}</match>'
             "<description>one</description></rule></group>")
    return build_ok(rules)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(_INLINED),
       subject=st.lists(st.sampled_from(["Installed", "x", "yum.log", ".RPM", "error", "root",
                                         "ROOT", "admin", "aws.securityhub", "a", "B", " "]),
                        max_size=3).map("".join))
def test_inlined_shapes_agree_with_the_expression(case: tuple[str, str], subject: str) -> None:
    kind, pattern = case
    expr = Expression(ExprType.OSMATCH if kind == "osmatch" else ExprType.OSREGEX, pattern)
    assert expr.shape is not None and isinstance(expr.shape[1], tuple)  # really inlined
    fired = _verdict(_single_rule(kind, pattern), subject) == 100
    assert fired is (bool(subject) and expr.test(subject))  # an empty log never reaches rules
