"""Shared test fixtures: where the reference data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"
# ../shared beside the checkout holds Wazuh's GPL ruleset and the CloudTrail
# samples; tests read them from there and never copy them into the repo.
SHARED = Path(os.environ.get("TRAILWARDEN_SHARED", REPO.parent / "shared")).resolve()


def _compiled_rule_modules() -> tuple[list[Path], Path | None]:
    """The rule-engine modules built in place by setup.py, and their shared library."""
    shims, library = [], None
    for extension in RULES.glob("*.so"):
        name = extension.name.split(".")[0]
        if name.endswith("__mypyc"):
            library = extension
        else:
            shims.append(RULES / f"{name}.py")
    return shims, library


AGENT = REPO / "agent"


def _edited_since_built(extension: Path | None, sources: list[Path]) -> list[str]:
    """Sources changed after the extension built from them (none if it was not built)."""
    if extension is None:
        return []
    built = extension.stat().st_mtime
    return sorted(
        str(path.relative_to(REPO))
        for path in sources
        if path.exists() and path.stat().st_mtime > built
    )


def pytest_configure(config: pytest.Config) -> None:
    # Python imports an extension before the .py beside it: tests run after an
    # edit would test the old code and pass or fail for the wrong reason.
    sources, library = _compiled_rule_modules()
    envelope = next(AGENT.glob("_envelope.*.so"), None)
    stale = _edited_since_built(library, sources) + _edited_since_built(
        envelope, [AGENT / "_envelope.c"]
    )
    if stale:
        raise pytest.UsageError(
            f"compiled extensions are older than {', '.join(stale)}: run `make native` to"
            " rebuild them (or `make clean-native` to test the pure-Python modules)"
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    sources, library = _compiled_rule_modules()
    lines = [
        "rule engine: pure Python"
        if library is None
        else f"rule engine: {len(sources)} modules compiled with mypyc ({library.name})"
    ]
    envelope = sorted(AGENT.glob("_envelope.*.so"))
    lines.append(
        f"agent envelope: C ({envelope[0].name})" if envelope else "agent envelope: Python"
    )
    return lines


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
