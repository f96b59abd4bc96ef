"""One Python function per rule: its conditions in analysisd's order, inlined.

Theory of operation
-------------------
A rule is tried for nearly every event that reaches its parent, so the cost of
*trying* it matters more than anything else in the engine. Instead of a list of
small closures (one call per condition, each calling the pattern's ``test``),
each rule is compiled into a single function whose body checks the conditions
one after another and returns False at the first that fails, exactly in the
order ``OS_CheckIfRuleMatch`` uses (decoded_as and presence are handled by the
evaluator's candidate index before the function is called, but are checked
again here so the function is correct on its own).

Patterns whose whole check is one string operation (``Expression.shape``: a
substring, prefix, suffix or equality on the ASCII-lowered value, or ``==`` for
``<action>``) are inlined as that operation; anything else calls the pattern.
Values from the ruleset (literals, field names, patterns) reach the generated
code only as names bound in its namespace, never as source text, so a rules
file cannot inject code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trailwarden.rules.compiled_rules import COMPILED_RULES
from trailwarden.rules.event import UNSEEN_FIELD, Event, ascii_lower
from trailwarden.rules.expression import Expression
from trailwarden.rules.rule_parse import Rule

if TYPE_CHECKING:
    from trailwarden.rules.evaluate import EvalContext

RuleTest = Callable[[Event, "EvalContext"], bool]

# Event attributes a rule may test, by option; the names are ours, not the ruleset's.
_EARLY = (("program_name", "program_name"), ("id", "id"), ("system_name", "systemname"),
          ("protocol", "protocol"))
_AFTER_LOG = (("action", "action"), ("url", "url"), ("location", "location"))
_PORTS = (("srcport", "srcport"), ("dstport", "dstport"))
_GEO = (("srcgeoip", "srcgeoip"), ("dstgeoip", "dstgeoip"))
_EXTRA = (("data", "data"), ("extra_data", "extra_data"), ("hostname", "hostname"),
          ("status", "status"))

_INLINE = {
    "contains": "{lit} in {value}",
    "prefix": "{value}.startswith({lit})",
    "suffix": "{value}.endswith({lit})",
    "equals": "{value} == {lit}",
}


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"ascii_lower": ascii_lower}
        self._lowered_log = False

    def const(self, value: object) -> str:
        name = f"k{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def check(self, condition: str) -> None:
        """Fail the rule unless ``condition`` holds."""
        self.emit(f"if not ({condition}): return False")

    def inline(self, kind: str, literals: str | tuple[str, ...], value: str) -> str:
        """The condition a shape stands for, on the variable ``value``."""
        if isinstance(literals, str):
            return _INLINE[kind].format(lit=self.const(literals), value=value)
        if kind == "contains":
            return " or ".join(f"{self.const(lit)} in {value}" for lit in literals)
        if kind == "equals":
            return f"{value} in {self.const(frozenset(literals))}"
        return _INLINE[kind].format(lit=self.const(literals), value=value)  # str accepts a tuple

    def value_test(self, expr: Expression, value: str) -> None:
        """Test the str in variable ``value`` (known not None) against ``expr``."""
        shape = expr.shape
        if shape is not None and shape[0] == "exact":
            self.check(f"{value} == {self.const(shape[1])}")
        elif shape is not None:
            self.emit(f"lv = {value}.lower() if {value}.isascii() else ascii_lower({value})")
            self.check(self.inline(shape[0], shape[1], "lv"))
        else:
            self.check(f"{self.const(expr.test)}({value})")

    def log_test(self, expr: Expression) -> None:
        if expr.case_insensitive:
            if not self._lowered_log:
                self.emit("low = ctx.low")
                self._lowered_log = True
            shape = expr.shape
            if shape is not None and shape[0] != "exact":
                self.check(self.inline(shape[0], shape[1], "low"))
            else:
                self.check(f"{self.const(expr.test)}(event.log, low)")
        else:
            self.check(f"{self.const(expr.test)}(event.log)")

    def attr_test(self, attr: str, expr: Expression) -> None:
        self.emit(f"v = event.{attr}")
        self.emit("if v is None: return False")
        self.value_test(expr, "v")

    def find(self, key_lower: str) -> None:
        """``v = event.find_lowered(key)``, with a kept answer read inline (no call)."""
        key = self.const(key_lower)
        unseen = self.const(UNSEEN_FIELD)
        self.emit(f"v = event.found.get({key}, {unseen})")
        self.emit(f"if v is {unseen}: v = event.find_lowered({key})")

    def call(self, func: Callable[..., bool], *args: str) -> None:
        self.check(f"{self.const(func)}({', '.join(args)})")


def compile_rule(rule: Rule) -> RuleTest:
    """The rule's conditions as one function ``(event, ctx) -> bool``."""
    w = _Writer()
    patterns = rule.patterns
    if rule.decoded_as is not None:
        w.emit("d = event.decoder")
        w.check(f"d is not None and d.name == {w.const(rule.decoded_as)}")
    for tag, attr in _EARLY:
        if tag in patterns:
            w.attr_test(attr, patterns[tag])
    for tag in ("match", "regex"):
        if tag in patterns:
            w.log_test(patterns[tag])
    for tag, attr in _AFTER_LOG:
        if tag in patterns:
            w.attr_test(attr, patterns[tag])
    for name, expr in rule.fields:
        w.find(ascii_lower(name))
        w.emit("if v is None: return False")
        w.value_test(expr, "v")
    for attr, iplist in (("srcip", rule.srcip), ("dstip", rule.dstip)):
        if iplist is not None:
            w.emit(f"v = event.{attr}")
            w.check(f"v is not None and {w.const(iplist.test)}(v)")
    for tag, attr in _PORTS:
        if tag in patterns:
            w.attr_test(attr, patterns[tag])
    if rule.compiled_rule is not None:
        w.call(COMPILED_RULES[rule.compiled_rule], "event")
    if "user" in patterns:
        w.emit("v = event.dstuser")
        w.emit("if v is None: v = event.srcuser")
        w.emit("if v is None: return False")
        w.value_test(patterns["user"], "v")
    for tag, attr in _GEO:
        if tag in patterns:
            w.attr_test(attr, patterns[tag])
    if rule.maxsize:
        w.emit("log = event.log")
        w.check("(len(log) if log.isascii() else len(log.encode('utf-8', 'surrogateescape')))"
                f" >= {int(rule.maxsize)}")
    if rule.time is not None:
        w.check(f"{w.const(rule.time.contains)}(ctx.hhmm)")
    if rule.weekday is not None:
        w.check(f"{w.const(rule.weekday.contains)}(ctx.weekday)")
    for tag, attr in _EXTRA:
        if tag in patterns:
            w.attr_test(attr, patterns[tag])
    if rule.check_diff:
        w.check(f"ctx.state.changed({int(rule.id)}, event)")
    if rule.if_fts:
        w.call(_first_time_seen, "event", "ctx")
    for cond in rule.lists:
        lookup = w.const(cond.lookup.test)
        if cond.attr is None:
            w.find(ascii_lower(cond.field))
        elif cond.attr == "user":
            w.emit("v = event.srcuser")
            w.emit("if v is None: v = event.dstuser")
        else:
            w.emit(f"v = event.{cond.attr}")
        w.check(f"v is not None and {lookup}(v)")
    if rule.search is not None and not rule.check_diff:
        w.check(f"ctx.state.search({w.const(rule)}, event, ctx.now_s)")
    source = "def check(event, ctx):\n" + "\n".join([*w.lines, "    return True"]) + "\n"
    code = compile(source, f"<rule {rule.id} at {rule.location}>", "exec")
    exec(code, w.namespace)  # noqa: S102 - our own generated source; ruleset values are names
    check: RuleTest = w.namespace["check"]
    return check


def _first_time_seen(event: Event, ctx: EvalContext) -> bool:
    """if_fts: true only the first time the decoder's fts field values are seen."""
    decoder = event.decoder
    if decoder is None or not decoder.fts:
        return False
    parts = [decoder.name]
    for name in decoder.fts:
        if name == "name":
            continue
        if name in ("user", "dstuser"):
            value = event.dstuser
        elif name == "location":
            value = event.location
        elif name == "system_name":
            value = event.systemname
        elif name in ("srcuser", "srcip", "dstip", "id", "data", "extra_data"):
            value = getattr(event, name)
        else:
            value = event.find_field(name)
        parts.append(value or "")
    return ctx.state.first_time(" ".join(parts))
