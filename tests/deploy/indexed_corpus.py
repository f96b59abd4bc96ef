"""The corpus alerts shipped into a real osmem-server under one index template.

``index_run`` ships every alert with the real indexer output (``IndexerOutput``:
the ingest-pipeline port, ``create`` with the manager's document ids) and
records, next to what the server did, what ``template_check`` predicted for
each document, so tests can hold one to the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from corpus_alerts import CorpusAlert
from servers import OsmemProcess

from trailwarden.manager.indexer import IndexerConfig, IndexerOutput, document_id
from trailwarden.manager.ingest_pipeline import index_document
from trailwarden.manager.outputs import RenderedAlert, Stats
from trailwarden.manager.template_check import DocumentCheck, IndexSimulator

# Generous: indexing ~500 alerts into osmem takes well under a second.
INDEX_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class IndexedDoc:
    alert: CorpusAlert
    index: str
    doc_id: str
    source: dict[str, Any]  # what was sent: the alert after the pipeline
    predicted: DocumentCheck  # template_check's verdict for it


@dataclass(frozen=True, slots=True)
class IndexRun:
    """The corpus alerts shipped into one osmem-server under one template."""

    template_name: str
    template: dict[str, Any]
    server: OsmemProcess
    stats: Stats
    docs: dict[str, IndexedDoc]  # by _id
    present: frozenset[str]  # ids found in the indices afterwards
    ignored: dict[str, list[str]]  # _id -> the server's _ignored fields
    mappings: dict[str, dict[str, Any]]  # index -> the server's mappings
    simulators: dict[str, IndexSimulator]  # index -> template_check's view of it

    @property
    def indices(self) -> list[str]:
        return sorted(self.mappings)


def index_run(
    workdir: Path, name: str, template_path: Path, alerts: list[CorpusAlert]
) -> Iterator[IndexRun]:
    template: dict[str, Any] = orjson.loads(template_path.read_bytes())
    docs: dict[str, IndexedDoc] = {}
    simulators: dict[str, IndexSimulator] = {}
    for alert in alerts:
        index, source = index_document(alert.rendered.fields)
        doc_id = document_id(alert.rendered.fields, alert.rendered.dedup_key)
        assert doc_id not in docs, f"two corpus alerts share the _id {doc_id}: {alert.label}"
        simulator = simulators.get(index)
        if simulator is None:
            simulator = simulators[index] = IndexSimulator.from_template(template)
        docs[doc_id] = IndexedDoc(alert, index, doc_id, source, simulator.index(source))

    server = OsmemProcess(workdir)
    server.start()
    try:
        stats = ship(server.url, name, template_path, [a.rendered for a in alerts])
        present: set[str] = set()
        ignored: dict[str, list[str]] = {}
        mappings: dict[str, dict[str, Any]] = {}
        for index in sorted(simulators):
            server.request("POST", f"/{index}/_refresh")
            status, body = server.request(
                "POST", f"/{index}/_search", {"size": 10_000, "_source": False}
            )
            assert status == 200, body
            for hit in body["hits"]["hits"]:
                present.add(hit["_id"])
                if hit.get("_ignored"):
                    ignored[hit["_id"]] = sorted(hit["_ignored"])
            status, body = server.request("GET", f"/{index}/_mapping")
            assert status == 200, body
            mappings[index] = body[index]["mappings"]
        yield IndexRun(
            name, template, server, stats, docs, frozenset(present), ignored, mappings, simulators
        )
    finally:
        server.stop()


def ship(url: str, name: str, template_path: Path, alerts: list[RenderedAlert]) -> Stats:
    """Ship ``alerts`` in order with the real indexer output (installing the
    template first); the output's counters once everything has settled."""
    return asyncio.run(_ship(url, name, template_path, alerts))


async def _ship(url: str, name: str, template_path: Path, alerts: list[RenderedAlert]) -> Stats:
    out = IndexerOutput(
        IndexerConfig(
            url=url,
            template=template_path,
            template_name=name,
            linger_ms=5,
            backoff_initial_ms=10,
            backoff_max_ms=100,
        )
    )
    await out.start()
    for alert in alerts:
        assert out.submit(alert), alert.fields.get("id")
    assert await out.flush(timeout_s=INDEX_TIMEOUT_S), "indexer output did not drain"
    await out.close(5)
    return out.stats()
