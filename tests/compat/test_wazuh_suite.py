"""Wazuh's own ruleset test suite (107 INI files) against our engine.

Every log line must give the rule id, level and decoder Wazuh's logtest gives,
except the lines listed in known_failures.txt with the reason they cannot pass
here; a listed line that starts passing fails the test too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trailwarden.manager.ruleset_tests import Outcome, read_cases, run_case
from trailwarden.rules.engine import Engine

pytestmark = pytest.mark.compat

_REPO = Path(__file__).resolve().parents[2]
SHARED_TESTS = (Path(os.environ.get("TRAILWARDEN_SHARED", _REPO.parent / "shared"))
                / "wazuh-ref" / "testing" / "tests")
KNOWN = Path(__file__).with_name("known_failures.txt")


def _known() -> dict[tuple[str, str, str], str]:
    out = {}
    for raw in KNOWN.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        file, section, key, reason = (part.strip() for part in raw.split("|", 3))
        out[(file, section, key)] = reason
    return out


def _ini_files() -> list[str]:
    return sorted(p.name for p in SHARED_TESTS.glob("*.ini") if not p.name.endswith("geoip.ini"))


@pytest.mark.parametrize("ini", _ini_files())
def test_ini_file(ini: str, suite_engine: Engine, wazuh_ref: Path) -> None:
    known = _known()
    unexpected: list[Outcome] = []
    fixed: list[str] = []
    for case in read_cases(wazuh_ref / "testing" / "tests" / ini):
        outcome = run_case(suite_engine, case)
        key = (case.file, case.section, case.key)
        if outcome.passed and key in known:
            fixed.append(f"{case.ident} passes now; remove it from known_failures.txt")
        elif not outcome.passed and key not in known:
            unexpected.append(outcome)
    assert not unexpected and not fixed, "\n".join(
        [o.describe() for o in unexpected] + fixed)
