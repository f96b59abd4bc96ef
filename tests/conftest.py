"""Shared test fixtures: where the reference data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# ../shared beside the checkout holds Wazuh's GPL ruleset and the CloudTrail
# samples; tests read them from there and never copy them into the repo.
SHARED = Path(os.environ.get("TRAILWARDEN_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"reference data not found at {SHARED} (set TRAILWARDEN_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def wazuh_ref(shared_dir: Path) -> Path:
    return shared_dir / "wazuh-ref"


@pytest.fixture(scope="session")
def cloudtrail_dir(shared_dir: Path) -> Path:
    return shared_dir / "cloudtrail"
