"""Wazuh's ruleset test files (``ruleset/testing/tests/*.ini``) run against our engine.

Wazuh users keep INI test files next to their custom rules and run them with
``runtests.py`` against a live manager. This is the same harness without the
manager: each ``log N pass|fail`` key is one logtest session fed its lines in
order (repeated keys accumulate, which is how frequency rules are tested), and
only the last line's (rule id, level, decoder) is compared with the section's
expectation, with runtests' exit-code logic:

* a ``pass`` line passes when all three equal the expected values and none of
  the expected values is empty;
* a ``fail`` line passes when that is not the case.
"""

from __future__ import annotations

import configparser
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trailwarden.rules.engine import Engine

# logtest feeds events with this location (wazuh-logtest / logtest.c).
LOGTEST_LOCATION = "stdin"


class _MultiOrderedDict(OrderedDict[str, Any]):
    """Repeated keys accumulate (runtests' MultiOrderedDict)."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self:
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


@dataclass(frozen=True, slots=True)
class Case:
    file: str
    section: str
    key: str  # e.g. "log 1 pass"
    lines: tuple[str, ...]
    rule: str
    alert: str
    decoder: str

    @property
    def expects_pass(self) -> bool:
        return not self.key.endswith("fail")

    @property
    def ident(self) -> str:
        return f"{self.file} [{self.section}] {self.key}"


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    passed: bool
    rule: str
    level: str
    decoder: str

    def describe(self) -> str:
        c = self.case
        return (
            f"{c.ident}: expected rule={c.rule!r} level={c.alert!r} decoder={c.decoder!r},"
            f" got rule={self.rule!r} level={self.level!r} decoder={self.decoder!r}"
        )


def read_cases(path: Path) -> list[Case]:
    parser = configparser.RawConfigParser(
        dict_type=_MultiOrderedDict, strict=False, interpolation=None
    )
    # RawConfigParser accepts any dict type; typeshed narrows it, hence Any.
    cfg: Any = parser
    cfg.read(path, encoding="utf-8")
    cases = []
    for section in cfg.sections():
        rule = cfg.get(section, "rule", fallback="")
        alert = cfg.get(section, "alert", fallback="")
        decoder = cfg.get(section, "decoder", fallback="")
        for key, value in cfg.items(section):
            if key.startswith("log "):
                cases.append(
                    Case(path.name, section, key, tuple(value.split("\n")), rule, alert, decoder)
                )
    return cases


def run_case(engine: Engine, case: Case, now: float | None = None) -> Outcome:
    state = engine.new_state()
    rule = level = decoder = ""
    for line in case.lines:
        verdict = engine.process(line, LOGTEST_LOCATION, time.time() if now is None else now, state)
        event = verdict.event
        decoder = event.decoder.name if event.decoder is not None else ""
        if verdict.rule is not None:
            rule, level = str(verdict.rule.id), str(verdict.rule.level)
        else:
            rule = level = ""
    expected = [case.rule, case.alert, case.decoder]
    matched = expected == [rule, level, decoder] and "" not in expected
    return Outcome(case, matched == case.expects_pass, rule, level, decoder)


def iter_suite(
    engine: Engine, tests_dir: Path, *, include_geoip: bool = False
) -> Iterator[Outcome]:
    for path in sorted(tests_dir.glob("*.ini")):
        if not include_geoip and path.name.endswith("geoip.ini"):
            continue
        for case in read_cases(path):
            yield run_case(engine, case)
