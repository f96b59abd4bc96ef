"""The rule tree, built exactly as analysisd builds it (rules_list.c).

Theory of operation
-------------------
Rules with an id below 10 are the top-level templates (syslog, firewall, ...).
Every other rule is attached, in load order, by the first of:

* ``if_sid``: under every node carrying each listed id;
* ``if_level``: under every node whose stored level is at least level*100;
* ``if_group``: under every node whose group string contains the pattern
  (OS_WordMatch), anywhere in the tree;
* otherwise under the first template of the same category.

Only rules loaded earlier can be parents. A rule may therefore appear under
several parents; the rule object (and its state) is shared, while each tree
node has its own children. Siblings are kept ordered by stored level, highest
first, with level 0 stored as 9900 so that silencing rules come first, and load
order breaking ties. ``overwrite="yes"`` replaces a rule's conditions and
options in place without moving its node.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from trailwarden.rules.expression import Expression
from trailwarden.rules.rule_parse import Rule
from trailwarden.rules.source import RulesetProblem
from trailwarden.rules.wordmatch import word_match


@dataclass(slots=True)
class RuleNode:
    rule: Rule
    parent: RuleNode | None = None
    children: list[RuleNode] = field(default_factory=list)
    # -stored_level of each child when it was inserted, for bisect; only valid
    # while no child has been overwritten (`ordered`).
    keys: list[int] = field(default_factory=list)
    ordered: bool = True
    # The rule's compiled conditions (set by the evaluator) and candidate
    # children per event shape (filled lazily by the evaluator).
    test: Any = None
    index: dict[tuple[str | None, bool, int], object] = field(default_factory=dict)


def _insert(parent: RuleNode | None, siblings: list[RuleNode], keys: list[int] | None,
            rule: Rule) -> RuleNode:
    """_OS_AddRule: before the first sibling with a lower stored level.

    Siblings are sorted by stored level unless an overwrite changed one in
    place; then (``keys is None``) the first-lower scan of analysisd is done
    literally, otherwise a bisect finds the same place in O(log n).
    """
    stored = rule.stored_level
    new = RuleNode(rule, parent)
    if keys is not None:
        at = bisect.bisect_right(keys, -stored)
        keys.insert(at, -stored)
        siblings.insert(at, new)
        return new
    for i, node in enumerate(siblings):
        if stored > node.rule.stored_level:
            siblings.insert(i, new)
            return new
    siblings.append(new)
    return new


# Fields an overwrite replaces in place; everything that places the rule in the
# tree or correlates it (if_*, search lists) stays with the original.
_OVERWRITTEN = (
    "level",
    "stored_level",
    "maxsize",
    "frequency",
    "frequency_attr",
    "timeframe",
    "ignore_time",
    "noalert",
    "category",
    "decoded_as",
    "patterns",
    "fields",
    "srcip",
    "dstip",
    "time",
    "weekday",
    "compiled_rule",
    "check_diff",
    "if_fts",
    "lists",
    "context",
    "global_frequency",
    "same_mask",
    "different_mask",
    "same_extrainfo",
    "same_fields",
    "different_fields",
    "description",
    "group_string",
    "info",
    "cve",
    "mitre",
    "mail",
    "log_alert",
    "no_ar",
    "no_full_log",
    "no_counter",
    "ignore_fields",
    "ckignore_fields",
    "location",
)


class RuleTree:
    def __init__(self) -> None:
        self.roots: list[RuleNode] = []
        self.rules: dict[int, Rule] = {}
        # Every node of every rule, so that placing a rule does not walk the tree.
        self.nodes: list[RuleNode] = []
        self.nodes_by_id: dict[int, list[RuleNode]] = {}

    def _place(self, parent: RuleNode | None, rule: Rule) -> None:
        if parent is None:
            node = _insert(None, self.roots, None, rule)
        else:
            node = _insert(parent, parent.children, parent.keys if parent.ordered else None, rule)
        self.nodes.append(node)
        self.nodes_by_id.setdefault(rule.id, []).append(node)

    def walk(self, nodes: list[RuleNode] | None = None) -> Iterator[RuleNode]:
        """Depth-first over every node, in sibling order."""
        stack = list(reversed(self.roots if nodes is None else nodes))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def _nodes_of(self, rule_id: int) -> list[RuleNode]:
        return list(self.nodes_by_id.get(rule_id, ()))

    def add(self, rule: Rule, problems: list[RulesetProblem]) -> bool:
        """Place a parsed rule; False (with a problem) when analysisd would skip it."""
        existing = self.rules.get(rule.id)
        if existing is not None:
            if not rule.overwrite:
                problems.append(
                    RulesetProblem(
                        rule.location,
                        f"rule {rule.id} is already defined at {existing.location}; this"
                        ' duplicate is skipped (use overwrite="yes" to replace it)',
                        "warning",
                    )
                )
                return False
            self._overwrite(existing, rule, problems)
            return True
        if rule.overwrite:
            problems.append(
                RulesetProblem(
                    rule.location,
                    f'rule {rule.id} has overwrite="yes" but no earlier rule has this'
                    " id; it is added as a new rule",
                    "warning",
                )
            )
            rule.overwrite = False
        if rule.id < 10:
            self._place(None, rule)
            self.rules[rule.id] = rule
            return True
        if not self._add_child(rule, problems):
            return False
        self.rules[rule.id] = rule
        self._mark_correlation(rule)
        return True

    def _overwrite(self, old: Rule, new: Rule, problems: list[RulesetProblem]) -> None:
        for attr in ("if_sid", "if_group", "if_level", "if_matched_sid"):
            if getattr(new, attr) not in (None, 0) and getattr(new, attr) != getattr(old, attr):
                problems.append(
                    RulesetProblem(
                        new.location,
                        f"rule {new.id}: overwrite keeps the original <{attr}>"
                        f" ({getattr(old, attr)!r}); the new value is ignored",
                        "warning",
                    )
                )
        for attr in _OVERWRITTEN:
            setattr(old, attr, getattr(new, attr))
        old.rule_info = None
        # The node keeps its place with a new level: its siblings are no longer
        # sorted, so later insertions among them scan as analysisd does.
        for node in self.nodes_by_id.get(old.id, ()):
            if node.parent is not None:
                node.parent.ordered = False

    def _add_child(self, rule: Rule, problems: list[RulesetProblem]) -> bool:
        if rule.if_sid is not None:
            found = False
            for rule_id in _parse_sids(rule.if_sid):
                parents = self._nodes_of(rule_id)
                if not parents:
                    problems.append(
                        RulesetProblem(
                            rule.location,
                            f"rule {rule.id}: if_sid {rule_id} is not a loaded rule",
                            "warning",
                        )
                    )
                    continue
                # A rule that hangs under several parents has one node under
                # each; the child goes under every one of them.
                for parent in parents:
                    rule.category = parent.rule.category
                    self._place(parent, rule)
                found = True
            if not found:
                problems.append(
                    RulesetProblem(
                        rule.location,
                        f"rule {rule.id}: none of if_sid {rule.if_sid!r} is loaded; rule skipped",
                        "warning",
                    )
                )
            return found
        if rule.if_level is not None:
            level = int(rule.if_level) * 100
            if level == 0:
                problems.append(
                    RulesetProblem(rule.location, f"rule {rule.id}: invalid if_level 0", "warning")
                )
                return False
            parents = [
                n for n in self.nodes if n.rule.stored_level >= level and n.rule.id != rule.id
            ]
            return self._add_under(
                rule, parents, f"no rule with level >= {rule.if_level}", problems
            )
        if rule.if_group is not None:
            pattern = rule.if_group
            verdicts: dict[str, bool] = {}
            parents = []
            for n in self.nodes:
                groups = n.rule.group_string
                hit = verdicts.get(groups)
                if hit is None:
                    hit = verdicts[groups] = word_match(pattern, groups)
                if hit and n.rule.id != rule.id:
                    parents.append(n)
            return self._add_under(rule, parents, f"no rule in group {pattern!r}", problems)
        for root in self.roots:
            if root.rule.category == rule.category:
                self._place(root, rule)
                return True
        problems.append(
            RulesetProblem(
                rule.location,
                f"rule {rule.id}: no top-level rule of category '{rule.category}'; rule skipped",
            )
        )
        return False

    def _add_under(
        self, rule: Rule, parents: list[RuleNode], why: str, problems: list[RulesetProblem]
    ) -> bool:
        if not parents:
            problems.append(
                RulesetProblem(rule.location, f"rule {rule.id}: {why}; rule skipped", "warning")
            )
            return False
        for parent in parents:
            self._place(parent, rule)
        return True

    def _mark_correlation(self, rule: Rule) -> None:
        """Point correlation rules at the lists of the rules they watch."""
        if rule.if_matched_sid:
            rule.search = "sids"
            for node in self.nodes_by_id.get(rule.if_matched_sid, ()):
                node.rule.keeps_sid_list = True
        elif rule.if_matched_group is not None:
            rule.search = "groups"
            group: Expression = rule.if_matched_group
            # One entry per matching node, as OS_MarkGroup does: a rule that sits
            # under two parents feeds the list twice.
            verdicts: dict[str, bool] = {}
            for node in self.nodes:
                groups = node.rule.group_string
                hit = verdicts.get(groups)
                if hit is None:
                    hit = verdicts[groups] = group.test(groups)
                if hit:
                    node.rule.group_lists.append(rule.id)
        elif rule.context:
            rule.search = None if rule.check_diff else "events"


def _parse_sids(text: str) -> list[int]:
    """analysisd reads an integer at each digit run of the comma/space list."""
    out = []
    current = ""
    for ch in text:
        if ch.isdigit():
            current += ch
        else:
            if current:
                out.append(int(current))
            current = ""
    if current:
        out.append(int(current))
    return out
