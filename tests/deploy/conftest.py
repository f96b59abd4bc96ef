"""Fixtures of the deploy tests: the corpus alerts, indexed once per template.

Producing and indexing every corpus alert takes a few seconds, so it is done
once per session: one real osmem-server per template (``indexed_corpus``). The
servers stay up for the tests that query them and are stopped, by PID, at the
end of the session.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

_HERE = Path(__file__).parent
# Helpers import by name: this folder's, and tests/manager/servers.py (osmem).
for _helpers in (_HERE.parent / "manager", _HERE):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))

from corpus_alerts import CorpusAlert, produce_alerts  # noqa: E402
from indexed_corpus import IndexRun, index_run  # noqa: E402

DEPLOY = _HERE.parent.parent / "deploy"
OUR_TEMPLATE = DEPLOY / "indexer" / "trailwarden-template.json"


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return DEPLOY


@pytest.fixture(scope="session")
def corpus_alerts(cloudtrail_dir: Path, wazuh_ref: Path) -> list[CorpusAlert]:
    return produce_alerts(cloudtrail_dir, wazuh_ref)


@pytest.fixture(scope="session")
def wazuh_template(wazuh_ref: Path) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(
        (wazuh_ref / "indexer" / "wazuh-template.json").read_bytes()
    )
    return body


@pytest.fixture(scope="session")
def our_template() -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(OUR_TEMPLATE.read_bytes())
    return body


@pytest.fixture(scope="session")
def wazuh_indexed(
    tmp_path_factory: pytest.TempPathFactory, wazuh_ref: Path, corpus_alerts: list[CorpusAlert]
) -> Iterator[IndexRun]:
    """The corpus alerts under Wazuh 4.14.7's own wazuh-template.json."""
    yield from index_run(
        tmp_path_factory.mktemp("osmem-wazuh"),
        "wazuh",
        wazuh_ref / "indexer" / "wazuh-template.json",
        corpus_alerts,
    )


@pytest.fixture(scope="session")
def ours_indexed(
    tmp_path_factory: pytest.TempPathFactory, corpus_alerts: list[CorpusAlert]
) -> Iterator[IndexRun]:
    """The corpus alerts under deploy/indexer/trailwarden-template.json."""
    yield from index_run(
        tmp_path_factory.mktemp("osmem-ours"), "trailwarden", OUR_TEMPLATE, corpus_alerts
    )
