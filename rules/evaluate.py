"""Rule evaluation: ``OS_CheckIfRuleMatch`` and the per-event top-level loop.

Theory of operation
-------------------
A rule's conditions are compiled into a tuple of small test functions, in the
order analysisd evaluates them (decoded_as, program_name, id, system_name,
protocol, match, regex, action, url, location, fields, ip/port, extra info,
first-time-seen, lists, then the correlation search). Order matters only for
the few tests with side effects (check_diff, first-time-seen, the search),
which run last, exactly as in analysisd.

Speed comes from not testing rules that cannot match: for each tree node and
each *event shape* (decoder name, whether a program name was pre-decoded, and
which static fields are set) the node caches the tuple of children whose
``decoded_as``, ``program_name`` and static-field requirements that shape can
meet. The first event of a shape pays for the filter; all later ones walk
only the candidates. Dropping a child this way is exact: analysisd would reject
it at the corresponding presence check.

Depth-first, first match wins: when a rule matches, its candidate children are
tried in sibling order and the first that returns a rule wins. A matching rule
with no matching child is the result, unless it is ``noalert`` (a pure grouping
node), in which case its parent goes on with the next sibling.
"""

from __future__ import annotations

import operator
import time as _time
from dataclasses import dataclass
from typing import Any

import re2

from trailwarden.rules.correlation import CorrelationState
from trailwarden.rules.event import Event, ascii_lower
from trailwarden.rules.plugin_decoders import OSSEC_ALERT_CATEGORY
from trailwarden.rules.rule_compile import RuleTest, compile_rule
from trailwarden.rules.rule_parse import Rule
from trailwarden.rules.ruletree import RuleNode, RuleTree

# Bits of an event's static-field shape (see RuleNode.index).
_SHAPE_ATTRS: tuple[str, ...] = (
    "srcip",
    "dstip",
    "srcport",
    "dstport",
    "protocol",
    "action",
    "id",
    "url",
    "data",
    "extra_data",
    "status",
    "systemname",
    "srcgeoip",
    "dstgeoip",
)
_SHAPE_BIT = {name: 1 << i for i, name in enumerate(_SHAPE_ATTRS)}
_USER_BIT = 1 << len(_SHAPE_ATTRS)  # dstuser or srcuser


class EvalContext:
    """Per-event scratch space shared by the tests of every rule tried."""

    __slots__ = ("_clock", "event", "low", "mode", "now", "now_s", "state")

    def __init__(self, event: Event, state: CorrelationState, now: float, mode: str) -> None:
        self.event = event
        self.state = state
        self.now = now
        self.now_s = int(now)
        # The ASCII-lowered log: every case-insensitive test on the log reads it.
        self.low = event.lowered_log()
        self._clock: tuple[str, int] | None = None
        self.mode = mode

    def lower_log(self) -> str:
        return self.low

    def _local_clock(self) -> tuple[str, int]:
        clock = self._clock
        if clock is None:
            tm = _time.localtime(self.now)
            # analysisd counts weekdays from Sunday.
            clock = self._clock = (f"{tm.tm_hour:02d}:{tm.tm_min:02d}", (tm.tm_wday + 1) % 7)
        return clock

    @property
    def hhmm(self) -> str:
        """Local reception time as HH:MM (only rules with <time> ask)."""
        return self._local_clock()[0]

    @property
    def weekday(self) -> int:
        return self._local_clock()[1]




@dataclass(frozen=True, slots=True)
class _Requirements:
    decoder: str | None
    program_name: bool
    mask: int


def _requirements(rule: Rule) -> _Requirements:
    mask = 0
    patterns = rule.patterns
    for tag, attr in (
        ("id", "id"),
        ("system_name", "systemname"),
        ("protocol", "protocol"),
        ("action", "action"),
        ("url", "url"),
        ("srcport", "srcport"),
        ("dstport", "dstport"),
        ("srcgeoip", "srcgeoip"),
        ("dstgeoip", "dstgeoip"),
        ("data", "data"),
        ("extra_data", "extra_data"),
        ("status", "status"),
    ):
        if tag in patterns:
            mask |= _SHAPE_BIT[attr]
    if "user" in patterns:
        mask |= _USER_BIT
    if rule.srcip is not None:
        mask |= _SHAPE_BIT["srcip"]
    if rule.dstip is not None:
        mask |= _SHAPE_BIT["dstip"]
    for cond in rule.lists:
        if cond.attr == "user":
            mask |= _USER_BIT
        elif cond.attr in _SHAPE_BIT:
            mask |= _SHAPE_BIT[cond.attr]
    return _Requirements(rule.decoded_as, "program_name" in patterns, mask)


_SHAPE_VALUES = operator.attrgetter(*_SHAPE_ATTRS)
_SHAPE_BITS = tuple(_SHAPE_BIT[name] for name in _SHAPE_ATTRS)
_NO_STATICS = (None,) * len(_SHAPE_ATTRS)


def event_shape(event: Event) -> tuple[str | None, bool, int]:
    values = _SHAPE_VALUES(event)
    mask = 0
    if values != _NO_STATICS:  # JSON events usually set no static field
        for bit, value in zip(_SHAPE_BITS, values, strict=True):
            if value is not None:
                mask |= bit
    if event.dstuser is not None or event.srcuser is not None:
        mask |= _USER_BIT
    decoder = event.decoder
    return (decoder.name if decoder is not None else None, event.program_name is not None, mask)


# Below this many candidate children, trying each is cheaper than a dispatch.
DISPATCH_MIN_CHILDREN = 6
# Up to this many distinct literals are looked for with `in`; more go to one re2 set.
LITERAL_LOOP_MAX = 8
# A re2 set call costs about as much as 30 `in` tests on a short text (pybind
# overhead ~1.5 us against ~50 ns), so texts up to this long (field values such
# as aws.source) always take the loop.
LITERAL_LOOP_TEXT_CHARS = 256
# Distinct hit combinations a dispatch remembers its selection for; values
# come from events, so the combinations (up to 2**literals) are bounded here.
SELECTIONS_KEPT_MAX = 256
# Longest field value whose selection is kept (bounds that memory to ~64 KB).
SELECTION_VALUE_CHARS_MAX = 256


class _LiteralSet:
    """Which of many literals occur in a text: a loop for few literals or a
    short text, one re2 set for many literals over a long text."""

    __slots__ = ("_set", "literals")

    def __init__(self, literals: list[str]) -> None:
        self.literals = literals
        self._set: Any = None
        if len(literals) > LITERAL_LOOP_MAX:
            options = re2.Options()
            options.max_mem = 64 << 20
            rset = re2.Set.SearchSet(options)
            for literal in literals:
                rset.Add(re2.escape(literal))
            rset.Compile()
            self._set = rset

    def hits(self, text: str) -> list[int]:
        if self._set is None or len(text) <= LITERAL_LOOP_TEXT_CHARS:
            return [i for i, literal in enumerate(self.literals) if literal in text]
        found = self._set.Match(text)
        return list(found) if found else []


class _Dispatch:
    """Children narrowed by one field's value before any of them is tried.

    A child whose conditions include ``<field name="F">`` with a pattern that
    needs some literal in the value (and is not negated) can only match when
    the value of F contains that literal; children without such a condition on
    F are always tried. Selection keeps sibling order, so the result is exact.
    """

    __slots__ = ("always", "always_nodes", "by_literal", "by_value", "children", "field",
                 "literals", "selections")

    def __init__(self, field_name: str, children: tuple[RuleNode, ...], always: list[int],
                 by_literal: list[list[int]], literals: _LiteralSet) -> None:
        self.field = field_name
        self.children = children
        self.always = always
        self.always_nodes = [children[i] for i in always]
        self.by_literal = by_literal
        self.literals = literals
        # The children a set of literal hits selects, kept per hit tuple, and
        # per field value (a dispatch field such as aws.source takes few values).
        self.selections: dict[tuple[int, ...], list[RuleNode]] = {}
        self.by_value: dict[str, list[RuleNode]] = {}

    @classmethod
    def build(cls, kept: tuple[RuleNode, ...]) -> _Dispatch | None:
        if len(kept) < DISPATCH_MIN_CHILDREN:
            return None
        keyed: list[dict[str, str]] = []
        counts: dict[str, int] = {}
        for node in kept:
            keys: dict[str, str] = {}
            for name, expr in node.rule.fields:
                lname = ascii_lower(name)
                literal = expr.required_literal
                if literal and not expr.negate and lname not in keys:
                    keys[lname] = literal
                    counts[lname] = counts.get(lname, 0) + 1
            keyed.append(keys)
        if not counts:
            return None
        field_name, covered = max(counts.items(), key=lambda item: item[1])
        # A dispatch costs a field lookup per event; it pays only when it can
        # rule out most of the list.
        if covered < DISPATCH_MIN_CHILDREN or covered * 2 < len(kept):
            return None
        literal_ids: dict[str, int] = {}
        by_literal: list[list[int]] = []
        always: list[int] = []
        for position, keys in enumerate(keyed):
            literal = keys.get(field_name)
            if literal is None:
                always.append(position)
                continue
            index = literal_ids.get(literal)
            if index is None:
                index = literal_ids[literal] = len(by_literal)
                by_literal.append([])
            by_literal[index].append(position)
        return cls(field_name, kept, always, by_literal, _LiteralSet(list(literal_ids)))

    def select(self, event: Event) -> list[RuleNode]:
        value = event.find_lowered(self.field)
        if value is None:
            return self.always_nodes
        by_value = self.by_value
        selected = by_value.get(value)
        if selected is not None:
            return selected
        hits = self.literals.hits(value.lower() if value.isascii() else ascii_lower(value))
        if not hits:
            selected = self.always_nodes
        else:
            key = tuple(hits)
            selected = self.selections.get(key)
            if selected is None:
                positions = set(self.always)
                for index in hits:
                    positions.update(self.by_literal[index])
                selected = [self.children[i] for i in sorted(positions)]
                if len(self.selections) < SELECTIONS_KEPT_MAX:
                    self.selections[key] = selected
        if len(by_value) < SELECTIONS_KEPT_MAX and len(value) <= SELECTION_VALUE_CHARS_MAX:
            by_value[value] = selected
        return selected


# Below this many children with a literal on the log, testing them one by one is cheaper.
LOG_FILTER_MIN_CHILDREN = 4
# Literals of a log filter looked for one at a time, as their children are
# reached, before one pass finds all of them: the first match often comes
# early (CloudTrail reaches 7 of the 34 under rule 1), and `in` over a 2 KB log
# costs about a tenth of a re2 set pass, so this bounds the worst case near 2x.
LOG_FILTER_DIRECT_MAX = 8
# Characters that JSON and syslog text hold nearly always: testing for them
# first proves nothing. Any other character of a literal that the log lacks
# (one memchr, ~0.1 us over 2 KB) rules the literal out without a search.
_COMMON_LOG_CHARS = frozenset('abcdefghijklmnopqrstuvwxyz0123456789"{}:,._-/')
# Rare characters tested per literal; the first absent one settles it.
RARE_CHARS_PER_LITERAL = 2


class _LogFilter:
    """Children whose <match>/<regex> needs a literal in the (lowered) log.

    A child whose literal is absent cannot match and is skipped without being
    tried. A pattern anchored at the start (``^PHP Warning: ``, as most
    program-named syslog rules are) needs its literal there: one startswith.
    Other literals are looked for as their children come up (``occurs``), each
    first by its rare characters; past the first few, one pass over the log
    finds all of them (``present``).
    """

    __slots__ = ("literals", "needs", "rare", "texts")

    def __init__(self, needs: dict[int, int | str], literals: _LiteralSet) -> None:
        # id(node) -> the prefix the log must start with, or a literal's index
        self.needs = needs
        self.literals = literals
        self.texts = literals.literals
        self.rare = [
            tuple(dict.fromkeys(c for c in text if c not in _COMMON_LOG_CHARS))[
                :RARE_CHARS_PER_LITERAL]
            for text in self.texts
        ]

    @classmethod
    def build(cls, kept: tuple[RuleNode, ...]) -> _LogFilter | None:
        ids: dict[str, int] = {}
        needs: dict[int, int | str] = {}
        for node in kept:
            for tag in ("match", "regex"):
                expr = node.rule.patterns.get(tag)
                if expr is None or expr.negate or not expr.case_insensitive:
                    continue
                if expr.required_prefix:
                    needs[id(node)] = expr.required_prefix
                    break
                literal = expr.required_literal
                if literal:
                    needs[id(node)] = ids.setdefault(literal, len(ids))
                    break
        if len(needs) < LOG_FILTER_MIN_CHILDREN:
            return None
        return cls(needs, _LiteralSet(list(ids)))

    def occurs(self, index: int, lowered_log: str) -> bool:
        """Whether literal ``index`` occurs in the log, looked for alone."""
        for char in self.rare[index]:
            if char not in lowered_log:
                return False
        return self.texts[index] in lowered_log

    def present(self, lowered_log: str) -> frozenset[int]:
        return frozenset(self.literals.hits(lowered_log))


@dataclass(frozen=True, slots=True)
class _Candidates:
    """The children an event shape can reach, and how to narrow them per event."""

    nodes: tuple[RuleNode, ...]
    dispatch: _Dispatch | None
    log_filter: _LogFilter | None
    # With a log filter and no dispatch: ``nodes`` cut into runs. A run of
    # children that each need the log to start with a prefix carries those
    # prefixes, and one startswith skips the whole run when none is there.
    runs: tuple[Run, ...] = ()


Run = tuple[tuple[str, ...] | None, tuple[RuleNode, ...]]


def _runs(nodes: tuple[RuleNode, ...], log_filter: _LogFilter) -> tuple[Run, ...]:
    runs: list[Run] = []
    prefixes: list[str] = []
    run: list[RuleNode] = []
    for node in nodes:
        need = log_filter.needs.get(id(node))
        anchored = isinstance(need, str)
        if run and anchored is not bool(prefixes):
            runs.append((tuple(prefixes) or None, tuple(run)))
            prefixes, run = [], []
        if isinstance(need, str):
            prefixes.append(need)
        run.append(node)
    if run:
        runs.append((tuple(prefixes) or None, tuple(run)))
    return tuple(runs)


Shape = tuple[str | None, bool, int]


class Evaluator:
    """Runs the rule tree over decoded events."""

    def __init__(self, tree: RuleTree, *, narrow: bool = True) -> None:
        self.tree = tree
        # False: every child whose requirements the shape meets is tried in
        # order, without dispatch or log filters (the reference the narrowing
        # is tested against).
        self.narrow = narrow
        self._reqs: dict[int, _Requirements] = {}
        tests: dict[int, RuleTest] = {}
        for rule in tree.rules.values():
            tests[rule.id] = compile_rule(rule)
            self._reqs[rule.id] = _requirements(rule)
        for node in tree.nodes:
            node.test = tests[node.rule.id]

    def candidates(self, node: RuleNode, shape: Shape) -> _Candidates:
        cached = node.index.get(shape)
        if cached is not None:
            assert isinstance(cached, _Candidates)
            return cached
        decoder, has_pn, mask = shape
        kept = []
        for child in node.children:
            req = self._reqs[child.rule.id]
            if req.decoder is not None and req.decoder != decoder:
                continue
            if req.program_name and not has_pn:
                continue
            if req.mask & ~mask:
                continue
            kept.append(child)
        nodes = tuple(kept)
        dispatch = _Dispatch.build(nodes) if self.narrow else None
        log_filter = _LogFilter.build(nodes) if self.narrow else None
        runs = () if log_filter is None or dispatch is not None else _runs(nodes, log_filter)
        result = _Candidates(nodes, dispatch, log_filter, runs)
        node.index[shape] = result
        return result

    def match(self, event: Event, ctx: EvalContext) -> tuple[Rule | None, Rule | None]:
        """The top-level loop: (final rule or None, the rule it hangs under)."""
        decoder = event.decoder
        category = decoder.category if decoder is not None else "syslog"
        if category == OSSEC_ALERT_CATEGORY:
            # An alert forwarded by another manager already names its rule; the
            # tree is not walked (analysisd's OSSEC_ALERT decoder type).
            forwarded = event.rule
            return (forwarded, None) if isinstance(forwarded, Rule) else (None, None)
        shape = event_shape(event)
        firedtimes = ctx.state.firedtimes
        for top in self.tree.roots:
            if top.rule.category != category or not top.test(event, ctx):
                continue
            found = self._matched(top, event, ctx, shape, firedtimes)
            if found is not None:
                return found
        return None, None

    def _matched(self, node: RuleNode, event: Event, ctx: EvalContext, shape: Shape,
                 firedtimes: dict[int, int]) -> tuple[Rule, Rule | None] | None:
        """``node``'s conditions held: try its children, then decide on the node itself."""
        rule = node.rule
        if node.children:
            candidates: _Candidates | None = node.index.get(shape)  # type: ignore[assignment]
            if candidates is None:
                candidates = self.candidates(node, shape)
            dispatch = candidates.dispatch
            children = candidates.nodes if dispatch is None else dispatch.select(event)
            log_filter = candidates.log_filter
            if log_filter is None:
                for child in children:
                    if child.test(event, ctx):
                        found = self._matched(child, event, ctx, shape, firedtimes)
                        if found is not None:
                            return found[0], found[1] if found[1] is not None else rule
            else:
                needs = log_filter.needs
                low = ctx.low
                present: frozenset[int] | None = None
                direct = LOG_FILTER_DIRECT_MAX
                runs = candidates.runs if dispatch is None else ((None, tuple(children)),)
                for prefixes, run in runs:
                    if prefixes is not None and not low.startswith(prefixes):
                        continue  # every child of the run needs a prefix the log lacks
                    for child in run:
                        literal = needs.get(id(child))
                        if literal is not None:
                            # Its <match>/<regex> needs a literal: skip it if the log lacks it.
                            if isinstance(literal, str):
                                if not low.startswith(literal):
                                    continue
                            elif present is not None:
                                if literal not in present:
                                    continue
                            elif direct:
                                direct -= 1
                                if not log_filter.occurs(literal, low):
                                    continue
                            else:
                                present = log_filter.present(low)
                                if literal not in present:
                                    continue
                        if child.test(event, ctx):
                            found = self._matched(child, event, ctx, shape, firedtimes)
                            if found is not None:
                                return found[0], found[1] if found[1] is not None else rule
        if rule.noalert:
            return None
        firedtimes[rule.id] = firedtimes.get(rule.id, 0) + 1
        return rule, None
