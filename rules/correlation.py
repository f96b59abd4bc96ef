"""Correlation state: what earlier events a rule can look back at.

Theory of operation
-------------------
analysisd keeps, per rule watched by an ``if_matched_sid`` rule, a list of the
events whose final rule was that rule; per ``if_matched_group`` rule, a list fed
by every rule whose group matches; and one global list of recent alerting
events (``if_matched_regex``). Only events whose final rule has a level above 0
enter these lists. All lists are bounded by the global list's size
(``memory_size``): an event leaving the global list leaves every list, so
memory stays bounded however many events arrive.

A search walks a list from the newest event back. It stops at the first event
older than the rule's ``timeframe`` (reception time, whole seconds), skips events
from other agents (unless ``global_frequency``) and events failing the
``same_*``/``different_*`` conditions, and stops when an event was already
consumed by a rule of the same or higher level. The rule fires on the
(frequency-1)-th qualifying earlier event; the current event and the newest
qualifying one are then marked consumed.

Everything here is explicit state passed in by the caller: no clocks, no globals.
"""

from __future__ import annotations

from collections import deque

from trailwarden.rules.event import Event
from trailwarden.rules.rule_parse import CORRELATION_FIELDS, Rule

# analysisd's global.memory_size default: how many recent alerting events are kept.
DEFAULT_MEMORY_SIZE = 8192
# analysisd keeps at most this many earlier logs for previous_output (last_events[0..10]).
MAX_PREVIOUS_LOGS = 11

_SRCIP_BIT = 1 << CORRELATION_FIELDS.index("srcip")
_ID_BIT = 1 << CORRELATION_FIELDS.index("id")
# same_loop in analysisd starts at the third field: srcip and id are checked on their own.
_SAME_LOOP_FIELDS = tuple(
    (1 << i, name) for i, name in enumerate(CORRELATION_FIELDS) if name not in ("srcip", "id")
)
_DIFFERENT_LOOP_FIELDS = tuple((1 << i, name) for i, name in enumerate(CORRELATION_FIELDS))


class CorrelationState:
    """Per-process (or per logtest session) memory of rule firings and events."""

    __slots__ = (
        "firedtimes",
        "time_ignored",
        "sid_lists",
        "group_lists",
        "last_events",
        "memory_size",
        "diffs",
        "fts_seen",
    )

    def __init__(self, memory_size: int = DEFAULT_MEMORY_SIZE) -> None:
        self.memory_size = memory_size
        self.firedtimes: dict[int, int] = {}
        self.time_ignored: dict[int, float] = {}
        self.sid_lists: dict[int, deque[Event]] = {}
        self.group_lists: dict[int, deque[Event]] = {}
        self.last_events: deque[Event] = deque()
        self.diffs: dict[tuple[int, str], str] = {}
        self.fts_seen: set[str] = set()

    # -- recording -------------------------------------------------------------

    def record(self, event: Event, rule: Rule) -> None:
        """Store an event whose final rule is ``rule`` (level > 0) for later searches."""
        if rule.keeps_sid_list:
            self._append(self.sid_lists.setdefault(rule.id, deque()), event)
        elif rule.group_lists:
            for watcher in rule.group_lists:
                self._append(self.group_lists.setdefault(watcher, deque()), event)
        last = self.last_events
        last.append(event)
        while len(last) > self.memory_size:
            old = last.popleft()
            old.evicted = True

    @staticmethod
    def _append(events: deque[Event], event: Event) -> None:
        while events and events[0].evicted:
            events.popleft()
        events.append(event)

    # -- searching -------------------------------------------------------------

    def search(self, rule: Rule, event: Event, now_s: int) -> bool:
        """Run the rule's event search; True (and marks set) when it fires."""
        kind = rule.search
        if kind == "sids":
            events = self.sid_lists.get(rule.if_matched_sid)
            return events is not None and _search(rule, event, events, now_s, skip_newest=False)
        if kind == "groups":
            events = self.group_lists.get(rule.id)
            return events is not None and _search(rule, event, events, now_s, skip_newest=False)
        if kind == "events":
            return _search(rule, event, self.last_events, now_s, skip_newest=True)
        return True

    # -- check_diff and first-time-seen ------------------------------------------

    def changed(self, rule_id: int, event: Event) -> bool:
        """check_diff: True when this agent's output for the rule differs from last time."""
        key = (rule_id, event.agent_id)
        previous = self.diffs.get(key)
        self.diffs[key] = event.log
        if previous is None or previous == event.log:
            return False
        event.previous_log = previous
        return True

    def first_time(self, signature: str) -> bool:
        if signature in self.fts_seen:
            return False
        self.fts_seen.add(signature)
        return True


def _same_dynamic(rule: Rule, prev: Event, cur: Event) -> bool:
    if cur.field_count == 0 or prev.field_count == 0:
        return False
    for name in rule.same_fields:
        mine = cur.find_field(name)
        if mine is None or prev.find_field(name) != mine:
            return False
    return True


def _different_dynamic(rule: Rule, prev: Event, cur: Event) -> bool:
    if cur.field_count == 0 and prev.field_count == 0:
        return False
    for name in rule.different_fields:
        mine = cur.find_field(name)
        if mine is not None and prev.find_field(name) == mine:
            return False
    return True


def _static_loops(rule: Rule, prev: Event, cur: Event) -> bool:
    same = rule.same_mask
    if same:
        for bit, name in _SAME_LOOP_FIELDS:
            if same & bit:
                a = getattr(prev, name)
                b = getattr(cur, name)
                if a is None or b is None or a != b:
                    return False
    different = rule.different_mask
    if different:
        for bit, name in _DIFFERENT_LOOP_FIELDS:
            if different & bit:
                a = getattr(prev, name)
                if a is not None and a == getattr(cur, name):
                    return False
    return True


def _search(rule: Rule, cur: Event, events: deque[Event], now_s: int, *, skip_newest: bool) -> bool:
    count = 0
    first_matched: Event | None = None
    collected: list[str] = []
    frequency = rule.frequency
    timeframe = rule.timeframe
    check_agent = not rule.global_frequency
    same_mask = rule.same_mask
    is_events = skip_newest
    iterator = reversed(events)
    if skip_newest:
        next(iterator, None)
    for prev in iterator:
        if prev.evicted:
            break
        if now_s - prev.generate_time > timeframe:
            return False
        if check_agent and prev.agent_id != cur.agent_id:
            continue
        if is_events:
            prev_cat = prev.decoder.category if prev.decoder is not None else "syslog"
            cur_cat = cur.decoder.category if cur.decoder is not None else "syslog"
            if prev_cat != cur_cat:
                continue
            if rule.if_matched_regex is not None and not rule.if_matched_regex.test(prev.log):
                continue
        if same_mask & _ID_BIT and (prev.id is None or cur.id is None or prev.id != cur.id):
            continue
        if same_mask & _SRCIP_BIT and (
            prev.srcip is None or cur.srcip is None or prev.srcip != cur.srcip
        ):
            continue
        if is_events:
            if not _static_loops(rule, prev, cur):
                continue
        if rule.same_fields and not _same_dynamic(rule, prev, cur):
            continue
        if rule.different_fields and not _different_dynamic(rule, prev, cur):
            continue
        if not is_events and rule.same_extrainfo and not _static_loops(rule, prev, cur):
            continue
        if prev.matched_level >= rule.level:
            return False
        if (
            count < MAX_PREVIOUS_LOGS
            and len(collected) == count
            and (not is_events or count < frequency)
        ):
            collected.append(prev.full_log)
        if count < frequency:
            count += 1
            if first_matched is None:
                first_matched = prev
            continue
        cur.matched_level = rule.level
        if first_matched is not None:
            first_matched.matched_level = rule.level
        cur.previous_events = collected
        return True
    return False
