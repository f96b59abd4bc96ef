"""CDB lists: ``key:value`` text files and the ``<list lookup=...>`` tests on them.

analysisd compiles each declared list to a constant database and looks keys up
with exact, case-sensitive byte compares; a Python ``dict`` gives the same
answers. Lists are data handed to the engine (the caller reads the files), keyed
by the path the ruleset declares, e.g. ``etc/lists/amazon/aws-eventnames``; a
``<list>`` element must name that path exactly (or its ``.cdb`` twin).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from trailwarden.rules.source import Location, RulesetProblem

# A list file larger than this is refused; the stock lists are under 1 MiB and
# the whole list is held in memory.
MAX_LIST_BYTES = 64 * 1024 * 1024


class Lookup(enum.Enum):
    MATCH_KEY = "match_key"
    NOT_MATCH_KEY = "not_match_key"
    MATCH_KEY_VALUE = "match_key_value"
    ADDRESS_MATCH_KEY = "address_match_key"
    NOT_ADDRESS_MATCH_KEY = "not_address_match_key"
    ADDRESS_MATCH_KEY_VALUE = "address_match_key_value"


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def parse_list(text: str, path: str) -> tuple[dict[str, str], list[RulesetProblem]]:
    """Parse a list's text; the first definition of a key wins, as in a CDB."""
    problems: list[RulesetProblem] = []
    entries: dict[str, str] = {}
    if len(text) > MAX_LIST_BYTES:
        problems.append(RulesetProblem(Location(path), f"list larger than {MAX_LIST_BYTES} bytes"))
        return entries, problems
    for line in text.splitlines():
        if not line:
            continue
        if line[0] == '"':
            close = line.find('"', 1)
            if close < 0 or not line.startswith(":", close + 1):
                continue
            key = line[1:close]
            value = line[close + 2 :]
        else:
            colon = line.find(":")
            if colon < 0:
                continue  # lists_make skips lines without a separator
            key = line[:colon]
            value = line[colon + 1 :]
        entries.setdefault(key, _unquote(value))
    return entries, problems


def _address_candidates(key: str) -> list[str]:
    """The exact key, then each prefix ending in '.', longest first."""
    out = [key]
    for i in range(len(key) - 1, 0, -1):
        if key[i - 1] == ".":
            out.append(key[:i])
    return out


@dataclass(frozen=True, slots=True)
class ListLookup:
    """One compiled ``<list>`` condition of a rule."""

    lookup: Lookup
    entries: dict[str, str]
    check_value: Callable[[str], bool] | None

    def test(self, key: str) -> bool:
        entries = self.entries
        lookup = self.lookup
        if lookup is Lookup.MATCH_KEY:
            return key in entries
        if lookup is Lookup.NOT_MATCH_KEY:
            return key not in entries
        if lookup is Lookup.MATCH_KEY_VALUE:
            value = entries.get(key)
            if value is None:
                return False
            return self.check_value is None or self.check_value(value)
        found: str | None = None
        for candidate in _address_candidates(key):
            found = entries.get(candidate)
            if found is not None:
                break
        if lookup is Lookup.ADDRESS_MATCH_KEY:
            return found is not None
        if lookup is Lookup.NOT_ADDRESS_MATCH_KEY:
            return found is None
        # ADDRESS_MATCH_KEY_VALUE: analysisd returns true when its search
        # returns 0, i.e. when the address is absent or its value does NOT
        # match: the test is inverted. We keep that for compatibility and the
        # loader warns whenever a ruleset uses this lookup.
        matched = found is not None and (self.check_value is None or self.check_value(found))
        return not matched
