"""Rule loading: tree placement, sibling order, overwrite and the problems reported."""

from __future__ import annotations

import time

from ruleset_builder import build, build_ok

from trailwarden.rules.engine import Engine

DECODER = """
<decoder name="app">
  <program_name>^app$</program_name>
</decoder>
<decoder name="app-fields">
  <parent>app</parent>
  <regex>user=(\\w+) ip=(\\S+)</regex>
  <order>user, srcip</order>
</decoder>
"""

LINE = "Dec 10 01:02:03 host app[12]: user=bob ip=10.0.0.1 event=login"


def _children(engine: Engine, rule_id: int) -> list[list[int]]:
    return [[c.rule.id for c in node.children] for node in engine.tree.nodes_by_id[rule_id]]


def _rule_for(engine: Engine, line: str = LINE) -> tuple[int | None, int | None]:
    verdict = engine.process(line, "stdin", time.time(), engine.new_state())
    return (None, None) if verdict.rule is None else (verdict.rule.id, verdict.rule.level)


def test_siblings_level_zero_first_then_by_level_then_load_order() -> None:
    engine = build_ok("""
<group name="app,">
  <rule id="100" level="0"><decoded_as>app</decoded_as><description>base</description></rule>
  <rule id="101" level="3"><if_sid>100</if_sid><match>login</match><description>a</description></rule>
  <rule id="102" level="7"><if_sid>100</if_sid><match>login</match><description>b</description></rule>
  <rule id="103" level="0"><if_sid>100</if_sid><match>nope</match><description>c</description></rule>
  <rule id="104" level="7"><if_sid>100</if_sid><match>login</match><description>d</description></rule>
  <rule id="105" level="3" accuracy="0"><if_sid>100</if_sid><description>e</description></rule>
</group>""", DECODER)
    assert _children(engine, 100) == [[103, 102, 104, 101, 105]]
    # First match wins in sibling order: 102 (level 7, loaded before 104).
    assert _rule_for(engine) == (102, 7)


def test_level_zero_child_silences_and_noalert_is_a_grouping_node() -> None:
    engine = build_ok("""
<group name="app,">
  <rule id="100" level="0" noalert="1"><decoded_as>app</decoded_as><description>group</description></rule>
  <rule id="101" level="0"><if_sid>100</if_sid><match>event=login</match><description>quiet</description></rule>
  <rule id="102" level="5"><if_sid>100</if_sid><description>loud</description></rule>
</group>""", DECODER)
    assert _rule_for(engine) == (101, 0)
    assert _rule_for(engine, LINE.replace("login", "logout")) == (102, 5)


def test_if_sid_places_the_rule_under_every_node_of_the_parent() -> None:
    engine = build_ok("""
<group name="app,">
  <rule id="100" level="0"><decoded_as>app</decoded_as><description>a</description></rule>
  <rule id="101" level="0"><decoded_as>app</decoded_as><description>b</description></rule>
  <rule id="102" level="2"><if_sid>100, 101</if_sid><description>both</description></rule>
  <rule id="103" level="4"><if_sid>102</if_sid><user>bob</user><description>child</description></rule>
</group>""", DECODER)
    assert _children(engine, 102) == [[103], [103]]
    assert _rule_for(engine) == (103, 4)


def test_if_group_and_if_level_attach_to_every_matching_rule() -> None:
    engine = build_ok("""
<group name="app,">
  <rule id="100" level="3"><decoded_as>app</decoded_as><group>authentication_success,</group>
    <description>a</description></rule>
  <rule id="110" level="9"><if_group>authentication_success</if_group><srcip>10.0.0.0/8</srcip>
    <description>internal login</description></rule>
  <rule id="120" level="12"><if_level>9</if_level><user>bob</user><description>bob at 9+</description></rule>
</group>""", DECODER)
    assert _children(engine, 100) == [[110]]
    assert _children(engine, 110) == [[120]]
    assert _rule_for(engine) == (120, 12)


def test_overwrite_replaces_conditions_in_place() -> None:
    engine = build_ok(
        """
<group name="app,">
  <rule id="100" level="0"><decoded_as>app</decoded_as><description>base</description></rule>
  <rule id="101" level="3"><if_sid>100</if_sid><match>nothing</match><description>old</description></rule>
  <rule id="102" level="5"><if_sid>100</if_sid><match>login</match><description>other</description></rule>
</group>""",
        DECODER,
        rule_files=[("9000-local.xml", """
<group name="local,">
  <rule id="101" level="8" overwrite="yes"><if_sid>100</if_sid><match>login</match>
    <description>new</description></rule>
</group>""")],
    )
    # The node keeps its place (after 102) although its level is now higher.
    assert _children(engine, 100) == [[102, 101]]
    assert engine.tree.rules[101].description == "new"
    assert _rule_for(engine) == (102, 5)


def test_problems_point_at_file_and_line() -> None:
    _, problems = build("""
<group name="app,">
  <rule id="100" level="0">
    <decoded_as>no-such-decoder</decoded_as>
    <description>x</description>
  </rule>
  <rule id="101" level="20"><description>bad level</description></rule>
  <rule id="102" level="1"><match>x</match></rule>
  <rule id="103" level="1"><bogus>1</bogus><description>x</description></rule>
  <rule id="104" level="1" frequency="4"><match>x</match><description>x</description></rule>
  <rule id="105" level="1"><regex>a\\nb</regex><description>x</description></rule>
  <rule id="106" level="1"><options>no_such_option</options><description>x</description></rule>
  <rule id="107" level="1"><if_sid>99999</if_sid><description>x</description></rule>
  <rule id="108" level="1"><description>dup</description></rule>
  <rule id="108" level="1"><description>dup</description></rule>
</group>""", DECODER)
    text = [str(p) for p in problems]
    expected_prefixes = [
        "0100-test_rules.xml:4: error: rule 100: unknown decoder 'no-such-decoder'",
        "0100-test_rules.xml:7: error: rule 101: level 20 out of range",
        "0100-test_rules.xml:8: error: rule 102 has no <description>",
        "0100-test_rules.xml:9: error: rule 103: invalid option <bogus>",
        "0100-test_rules.xml:10: error: rule 104: frequency/same_*/different_* options need",
        "0100-test_rules.xml:11: error: rule 105: invalid <regex> pattern",
        "0100-test_rules.xml:12: error: rule 106: invalid option 'no_such_option'",
        "0100-test_rules.xml:13: warning: rule 107: if_sid 99999 is not a loaded rule",
        "0100-test_rules.xml:15: warning: rule 108 is already defined at 0100-test_rules.xml:14",
    ]
    for prefix in expected_prefixes:
        assert any(t.startswith(prefix) for t in text), (prefix, text)


def test_skipped_list_rule_and_its_children() -> None:
    engine, problems = build("""
<group name="app,">
  <rule id="100" level="3"><decoded_as>app</decoded_as>
    <list field="user" lookup="match_key">etc/lists/missing</list><description>x</description></rule>
  <rule id="101" level="5"><if_sid>100</if_sid><description>child</description></rule>
</group>""", DECODER)
    text = [str(p) for p in problems]
    assert any("list 'etc/lists/missing' is not loaded; rule skipped" in t for t in text)
    assert any("rule 101: none of if_sid '100' is loaded" in t for t in text)
    assert 100 not in engine.tree.rules and 101 not in engine.tree.rules
