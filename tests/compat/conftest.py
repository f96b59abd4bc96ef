from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from compat_ruleset import compat_engine

from trailwarden.rules.engine import Engine


@pytest.fixture(scope="session")
def suite_engine(wazuh_ref: Path) -> Engine:
    engine, problems = compat_engine(wazuh_ref)
    errors = [p for p in problems if p.severity == "error"]
    assert not errors, "\n".join(str(p) for p in errors[:20])
    return engine
