"""Build small engines from inline XML for tests."""

from __future__ import annotations

from trailwarden.rules.engine import Engine, EngineOptions, RulesetSources
from trailwarden.rules.source import RulesetProblem

TEMPLATES = """
<group name="syslog,">
  <rule id="1" level="0" noalert="1">
    <category>syslog</category>
    <description>syslog template</description>
  </rule>
</group>
<group name="firewall,">
  <rule id="2" level="0" noalert="1">
    <category>firewall</category>
    <description>firewall template</description>
  </rule>
</group>
"""


def build(
    rules: str = "",
    decoders: str = "",
    *,
    lists: dict[str, str] | None = None,
    mode: str = "logtest",
    log_alert_level: int = 3,
    rule_files: list[tuple[str, str]] | None = None,
) -> tuple[Engine, list[RulesetProblem]]:
    rule_sources = [("0010-templates.xml", TEMPLATES)]
    if rules:
        rule_sources.append(("0100-test_rules.xml", rules))
    rule_sources.extend(rule_files or [])
    decoder_sources = [("0100-test_decoders.xml", decoders)] if decoders else []
    sources = RulesetSources(decoder_sources, rule_sources, lists or {})
    return Engine.compile(sources, EngineOptions(mode=mode, log_alert_level=log_alert_level))


def build_ok(rules: str = "", decoders: str = "", **kwargs: object) -> Engine:
    engine, problems = build(rules, decoders, **kwargs)  # type: ignore[arg-type]
    errors = [str(p) for p in problems if p.severity == "error"]
    assert not errors, errors
    return engine
