"""Frequency/timeframe correlation with time as an argument."""

from __future__ import annotations

from ruleset_builder import build_ok

from trailwarden.rules.engine import Engine

DECODER = """
<decoder name="auth">
  <program_name>^auth$</program_name>
</decoder>
<decoder name="auth-fields">
  <parent>auth</parent>
  <regex>^(\\w+) from (\\S+) code=(\\d+)</regex>
  <order>status, srcip, code</order>
</decoder>
"""

RULES = """
<group name="auth,">
  <rule id="100" level="0"><decoded_as>auth</decoded_as><description>auth</description></rule>
  <rule id="101" level="5"><if_sid>100</if_sid><status>failed</status>
    <description>login failed from $(srcip)</description><group>authentication_failed,</group>
  </rule>
  <rule id="102" level="10" frequency="4" timeframe="60">
    <if_matched_sid>101</if_matched_sid>
    <same_source_ip />
    <description>brute force from $(srcip)</description>
  </rule>
  <rule id="103" level="4"><if_sid>100</if_sid><status>denied</status>
    <description>access denied</description><group>access_denied,</group>
  </rule>
  <rule id="104" level="12" frequency="3" timeframe="60">
    <if_matched_group>access_denied</if_matched_group>
    <same_field>code</same_field>
    <description>same code thrice</description>
  </rule>
</group>
"""


def _line(ip: str, code: str = "1") -> str:
    return f"Dec 10 01:02:03 host auth[1]: failed from {ip} code={code}"


def _run(engine: Engine, lines: list[tuple[float, str]], location: str = "stdin") -> list[int]:
    state = engine.new_state()
    out = []
    for now, line in lines:
        verdict = engine.process(line, location, now, state)
        assert verdict.rule is not None
        out.append(verdict.rule.id)
    return out


def test_frequency_fires_on_the_nth_event_from_the_same_ip() -> None:
    engine = build_ok(RULES, DECODER)
    ids = _run(engine, [(1000.0, _line("1.1.1.1", str(i))) for i in range(4)])
    assert ids == [101, 101, 101, 102]


def test_events_outside_the_timeframe_do_not_count() -> None:
    engine = build_ok(RULES, DECODER)
    times = [1000.0, 1010.0, 1100.0, 1101.0, 1102.0]
    ids = _run(engine, [(t, _line("1.1.1.1", str(i))) for i, t in enumerate(times)])
    assert ids == [101, 101, 101, 101, 101]


def test_same_source_ip_separates_sources() -> None:
    engine = build_ok(RULES, DECODER)
    lines = [(1000.0, _line(ip, str(i))) for i, ip in
             enumerate(["1.1.1.1", "2.2.2.2", "1.1.1.1", "2.2.2.2", "1.1.1.1", "1.1.1.1"])]
    assert _run(engine, lines) == [101, 101, 101, 101, 101, 102]


def test_a_firing_consumes_the_events_it_counted() -> None:
    engine = build_ok(RULES, DECODER)
    lines = [(1000.0, _line("1.1.1.1", str(i))) for i in range(8)]
    # Fires on the 4th; the 5th..7th cannot reuse consumed events; fires again on the 8th.
    assert _run(engine, lines) == [101, 101, 101, 102, 101, 101, 101, 102]


def test_if_matched_group_with_same_field() -> None:
    engine = build_ok(RULES, DECODER)
    codes = ["7", "8", "7", "7"]
    lines = [(1000.0, _line(f"9.9.9.{i}", code).replace("failed", "denied"))
             for i, code in enumerate(codes)]
    assert _run(engine, lines) == [103, 103, 103, 104]


def test_a_rule_watched_by_sid_does_not_feed_group_lists() -> None:
    # analysisd stores an event in its rule's if_matched_sid list *or* in the
    # if_matched_group lists, never both: 101 is watched by 102's sid search.
    engine = build_ok(RULES.replace("<group>access_denied,</group>", "").replace(
        "<group>authentication_failed,</group>", "<group>access_denied,</group>"), DECODER)
    ids = _run(engine, [(1000.0, _line(f"9.9.9.{i}", "7")) for i in range(3)])
    assert ids == [101, 101, 101]


def test_previous_output_is_collected_for_the_alert() -> None:
    engine = build_ok(RULES, DECODER)
    state = engine.new_state()
    verdict = None
    for i in range(4):
        verdict = engine.process(_line("1.1.1.1", str(i)), "stdin", 1000.0, state)
    assert verdict is not None and verdict.rule is not None and verdict.rule.id == 102
    assert len(verdict.event.previous_events) == 3
    rendered = engine.render(verdict, alert_id="1000.0", manager_name="m")
    assert rendered.alert["rule"]["description"] == "brute force from 1.1.1.1"
    assert rendered.alert["rule"]["frequency"] == 4
    assert rendered.alert["previous_output"].count("\n") == 2


def test_correlation_memory_is_bounded() -> None:
    engine = build_ok(RULES, DECODER)
    state = engine.new_state()
    state.memory_size = 10
    for i in range(50):
        engine.process(_line(f"5.5.{i}.1", str(i)), "stdin", 1000.0 + i, state)
    assert len(state.last_events) == 10
    assert all(len(events) <= 11 for events in state.sid_lists.values())
