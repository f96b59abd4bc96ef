"""The engine: ruleset text in, one verdict per message out.

``Engine.compile`` takes the ruleset as data (file names and texts, in the order
analysisd would load them, plus the declared CDB lists) and returns the engine
with every problem found, each pointing at ``file:line``. ``Engine.process``
runs one message through pre-decoding, decoding and the rule tree; time and
correlation state are arguments, so the engine itself holds no mutable state
and one compiled engine can serve many independent sessions (logtest) or one
long-running manager.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trailwarden.rules.alert import alert_json_line, build_alert, format_alerts_log
from trailwarden.rules.cdb import parse_list
from trailwarden.rules.correlation import DEFAULT_MEMORY_SIZE, CorrelationState
from trailwarden.rules.decoders import (
    DecoderSet,
    DecoderSpec,
    PluginFactory,
    PluginFunc,
    parse_decoders,
)
from trailwarden.rules.description import Description, compile_description
from trailwarden.rules.evaluate import EvalContext, Evaluator
from trailwarden.rules.event import Event
from trailwarden.rules.json_decoder import json_plugin
from trailwarden.rules.mitre import MitreTable, default_mitre_table
from trailwarden.rules.plugin_decoders import plugin_factories
from trailwarden.rules.predecode import hostname_for_event, manager_short_name, predecode
from trailwarden.rules.rule_parse import Rule, RuleParser
from trailwarden.rules.ruletree import RuleTree
from trailwarden.rules.source import Location, RulesetProblem
from trailwarden.rules.xmlload import parse_wazuh_xml


@dataclass(frozen=True, slots=True)
class RulesetSources:
    """The ruleset as data, in load order (analysisd sorts files by basename)."""

    decoders: Sequence[tuple[str, str]]  # (path, text)
    rules: Sequence[tuple[str, str]]
    lists: Mapping[str, str]  # declared path ("etc/lists/amazon/aws-eventnames") -> text


@dataclass(frozen=True, slots=True)
class EngineOptions:
    log_alert_level: int = 3  # <alerts><log_alert_level>
    email_alert_level: int = 12  # <alerts><email_alert_level>
    default_timeframe: int = 360  # analysisd.default_timeframe
    memory_size: int = DEFAULT_MEMORY_SIZE  # <global><memory_size>
    # "analysisd" or "logtest": they differ in how `ignore` suppresses repeats.
    mode: str = "analysisd"


@dataclass(slots=True, init=False)
class Verdict:
    """What the engine decided for one message."""

    event: Event
    rule: Rule | None  # the final rule (level 0 included), None when no rule matched
    alert: bool  # would be written to alerts.json / alerts.log
    firedtimes: int

    # A hand-written __init__: made per message, and mypyc compiles it (a
    # dataclass-generated one stays interpreted).
    def __init__(self, event: Event, rule: Rule | None, alert: bool, firedtimes: int) -> None:
        self.event = event
        self.rule = rule
        self.alert = alert
        self.firedtimes = firedtimes

    @property
    def level(self) -> int | None:
        return None if self.rule is None else self.rule.level


@dataclass(slots=True, init=False)
class RenderedAlert:
    """One alert in both of Wazuh's formats."""

    alert: dict[str, object]  # the alerts.json object, Wazuh's key order
    json_line: bytes  # alerts.json line, newline included
    log_block: str  # alerts.log "** Alert" block, blank line included

    # A hand-written __init__: made per message, and mypyc compiles it (a
    # dataclass-generated one stays interpreted).
    def __init__(self, alert: dict[str, object], json_line: bytes, log_block: str) -> None:
        self.alert = alert
        self.json_line = json_line
        self.log_block = log_block


def _json_plugin(spec: DecoderSpec) -> PluginFunc:
    return json_plugin(spec.json_null_field, spec.json_array_structure)


def default_plugins(rules_by_id: Mapping[str, object]) -> dict[str, PluginFactory]:
    """analysisd's plugin decoders; ``rules_by_id`` is filled once rules are loaded."""
    plugins: dict[str, PluginFactory] = {"JSON_Decoder": _json_plugin}
    plugins.update(plugin_factories(rules_by_id))
    return plugins


class Engine:
    def __init__(self, decoders: DecoderSet, tree: RuleTree, options: EngineOptions,
                 mitre: MitreTable | None = None) -> None:
        self.decoders = decoders
        self.tree = tree
        self.options = options
        self.evaluator = Evaluator(tree)
        self._mitre = mitre
        self._descriptions: dict[int, Description] = {}

    @classmethod
    def compile(
        cls, sources: RulesetSources, options: EngineOptions | None = None
    ) -> tuple[Engine, list[RulesetProblem]]:
        options = options or EngineOptions()
        problems: list[RulesetProblem] = []
        # analysisd's rules hash, for the OSSEC alert plugin (forwarded alerts
        # name the rule that fired on another manager).
        rules_by_id: dict[str, object] = {}
        plugins = default_plugins(rules_by_id)

        decoders = DecoderSet()
        for path, text in sources.decoders:
            doc = parse_wazuh_xml(text, path)
            problems.extend(doc.problems)
            if doc.problems:
                continue
            for spec in parse_decoders(doc, plugins, problems):
                decoders.add(spec, problems)
        decoders.finish()

        lists: dict[str, dict[str, str]] = {}
        for declared, text in sources.lists.items():
            entries, list_problems = parse_list(text, declared)
            problems.extend(list_problems)
            lists[declared] = entries

        tree = RuleTree()
        for path, text in sources.rules:
            doc = parse_wazuh_xml(text, path)
            problems.extend(doc.problems)
            if doc.problems:
                continue
            parser = RuleParser(
                path,
                lists,
                decoders.names,
                problems,
                log_alert_level=options.log_alert_level,
                email_alert_level=options.email_alert_level,
                default_timeframe=options.default_timeframe,
            )
            for group in doc.roots:
                loc = Location(path, group.line)
                if (
                    group.tag.lower() != "group"
                    or len(group.attrs) != 1
                    or group.attrs[0][0].lower() != "name"
                ):
                    problems.append(
                        RulesetProblem(
                            loc,
                            f"<{group.tag}> at the top of a rules file must be <group name=...>",
                        )
                    )
                    continue
                rules = [c for c in group.children]
                if not rules:
                    problems.append(RulesetProblem(loc, "group without any rule"))
                    continue
                for element in rules:
                    if element.tag.lower() != "rule":
                        problems.append(
                            RulesetProblem(
                                Location(path, element.line),
                                f"<{element.tag}> is not allowed in a <group>; only <rule>",
                            )
                        )
                        continue
                    rule = parser.parse(element, group.attrs[0][1])
                    if rule is not None:
                        tree.add(rule, problems)
        for rule_id, rule in tree.rules.items():
            rules_by_id.setdefault(str(rule_id), rule)
        return cls(decoders, tree, options), problems

    def describe(self, verdict: Verdict) -> str:
        """The rule's description with ``$(field)`` values of this event."""
        rule = verdict.rule
        if rule is None:
            return ""
        render = self._descriptions.get(rule.id)
        if render is None:
            render = self._descriptions[rule.id] = compile_description(rule.description or "")
        return render(verdict.event)

    @property
    def mitre(self) -> MitreTable:
        if self._mitre is None:
            self._mitre = default_mitre_table()
        return self._mitre

    def render(self, verdict: Verdict, *, alert_id: str, manager_name: str) -> RenderedAlert:
        """Build the alerts.json object and line and the alerts.log block."""
        rule = verdict.rule
        if rule is None:
            raise ValueError("render() needs a verdict with a rule (a caller bug)")
        info = rule.describe()
        description = self.describe(verdict)
        previous = verdict.event.previous_events
        alert = build_alert(
            verdict.event, info, description=description, alert_id=alert_id,
            manager_name=manager_name, firedtimes=verdict.firedtimes,
            previous_output="\n".join(previous) if len(previous) >= 2 else None,
            mitre=self.mitre,
        )
        block = format_alerts_log(verdict.event, info, description=description,
                                  alert_id=alert_id, manager_name=manager_name,
                                  previous_lines=previous)
        return RenderedAlert(alert, alert_json_line(alert), block)

    def new_state(self) -> CorrelationState:
        return CorrelationState(self.options.memory_size)

    def process(
        self,
        message: str,
        location: str,
        now: float,
        state: CorrelationState,
        *,
        manager_name: str = "trailwarden",
    ) -> Verdict:
        """Analyse one message received from ``location`` at time ``now``."""
        event = Event(message, location, now)
        pre = predecode(location, message)
        event.log = message[pre.log_start : pre.log_end]  # PreDecoded.log_of, inlined
        event.location = pre.location
        event.agent_id = pre.agent_id
        event.agent_name = pre.agent_name
        event.agent_ip = pre.agent_ip
        event.program_name = pre.program_name
        event.predecoded_timestamp = pre.timestamp
        event.hostname = hostname_for_event(pre, manager_short_name(manager_name))
        self.decoders.decode(event)
        return self.evaluate(event, state, now)

    def evaluate(self, event: Event, state: CorrelationState, now: float) -> Verdict:
        ctx = EvalContext(event, state, now, self.options.mode)
        rule, parent = self.evaluator.match(event, ctx)
        if rule is None:
            return Verdict(event, None, False, 0)
        firedtimes = state.firedtimes.get(rule.id, 0)
        if rule.level == 0:
            event.rule = rule
            return Verdict(event, rule, False, firedtimes)
        alert = True
        if rule.ignore_time:
            ignored_at = state.time_ignored.get(rule.id, 0)
            if ignored_at == 0:
                state.time_ignored[rule.id] = event.generate_time
            elif event.generate_time - ignored_at < rule.ignore_time:
                if self.options.mode == "logtest":
                    alert = False
                elif parent is not None:
                    rule = parent
                    firedtimes = state.firedtimes.get(rule.id, 0)
                else:
                    event.rule = rule
                    return Verdict(event, rule, False, firedtimes)
            elif self.options.mode == "logtest":
                state.time_ignored[rule.id] = 0
            else:
                state.time_ignored[rule.id] = event.generate_time
        event.rule = rule
        event.firedtimes = firedtimes
        state.record(event, rule)
        return Verdict(event, rule, alert and rule.log_alert, firedtimes)
