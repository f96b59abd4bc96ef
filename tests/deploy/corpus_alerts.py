"""Every alert Trailwarden produces for the real CloudTrail records we have.

Records come from ``../shared/cloudtrail`` (every shape: Stratus bare arrays,
Elastic NDJSON lines, a ``{"Records": ...}`` object plain and gzipped; the
digest line is skipped as the agent skips digests) and from the agent's bundled
sample bucket. Each is wrapped as the agent wraps it (``wrap_record`` with
``origin_for``) and analysed by two real engines:

* the bundled ruleset at log_alert_level 1, as an agent-forwarded event
  (``[001] (name) ip->path``), so alerts carry ``agent.*`` and a file location;
* Wazuh's stock ruleset from ``../shared/wazuh-ref`` at log_alert_level 1, as
  the manager-local wodle event (location ``Wazuh-AWS``), as Wazuh itself does.

Every verdict that names a rule is rendered, including level 0 ones that never
reach alerts.json: that puts each record's full ``data.aws`` through the
template, not just the few that alert (``alerted`` says which would be
written). Rendering does not depend on log_alert_level, so one low-level run of
the stock ruleset covers the default level 3 as well.

Alert times start shortly before midnight UTC and advance a few seconds per
record, so the alerts span two daily indices.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from trailwarden.agent.cloudtrail_file import Record, read_cloudtrail_file
from trailwarden.agent.discovery import SourceTree, scan_trees
from trailwarden.agent.envelope import WODLE_LOCATION, location_for, origin_for, wrap_record
from trailwarden.agent.jsonlines import JsonLinesReader, Line
from trailwarden.manager.demo import sample_tree
from trailwarden.manager.outputs import RenderedAlert
from trailwarden.manager.ruleset_files import default_layout, read_sources, stock_layout
from trailwarden.rules.engine import Engine, EngineOptions

# 2026-11-28T23:45:00Z: the first records land on the 28th, later ones on the 29th.
START_EPOCH = 1795909500.0
STEP_S = 3.0
MANAGER_NAME = "trailwarden-test"
AGENT_LOCATION = "[001] (ct-collector) 10.0.0.5->"
# Stock CloudTrail rules whose level is at least Wazuh's default log_alert_level.
WAZUH_DEFAULT_LOG_ALERT_LEVEL = 3


@dataclass(frozen=True, slots=True)
class CorpusRecord:
    name: str  # "<file>#<index>"
    path: Path
    root: Path  # the directory playing the bucket root
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CorpusAlert:
    record: CorpusRecord
    ruleset: str  # "bundled" or "stock"
    rule_id: str
    level: int
    alerted: bool  # written to alerts.json at log_alert_level 1
    rendered: RenderedAlert  # from the alerts.json line, as Filebeat would read it

    @property
    def label(self) -> str:
        return f"{self.ruleset}:{self.rule_id}:{self.record.name}"


def shared_records(cloudtrail_dir: Path) -> Iterator[CorpusRecord]:
    """Every record of the shared corpus, read the way the agent reads each shape."""
    for path in sorted(cloudtrail_dir.rglob("*")):
        if path.parent == cloudtrail_dir or not path.is_file():
            continue  # SOURCES.md, STATS.json
        if path.suffix == ".log":  # NDJSON, not all with a final newline
            lines = JsonLinesReader(str(path)).read(final=True)
            objs = [orjson.loads(line.raw) for line in lines if isinstance(line, Line)]
            records = [r for r in objs if "digestStartTime" not in r]
        elif path.name.endswith((".json", ".json.gz")):
            items = list(read_cloudtrail_file(str(path)))
            bad = [i for i in items if not isinstance(i, Record)]
            if bad:
                raise AssertionError(f"{path}: the reader reported {bad}")
            records = [i.obj for i in items if isinstance(i, Record)]
        else:
            raise AssertionError(f"{path}: a file shape this helper does not know")
        for i, rec in enumerate(records):
            yield CorpusRecord(f"{path.name}#{i}", path, cloudtrail_dir, rec)


def sample_records() -> Iterator[CorpusRecord]:
    """The agent's bundled sample bucket, found as the agent finds files."""
    root = sample_tree()
    for candidate in scan_trees([SourceTree(str(root))]).candidates:
        path = Path(candidate.path)
        for item in read_cloudtrail_file(candidate.path):
            if isinstance(item, Record):
                yield CorpusRecord(f"{path.name}#{item.index}", path, root, item.obj)


def _render(
    engine: Engine, records: list[CorpusRecord], ruleset: str, agent_events: bool
) -> list[CorpusAlert]:
    state = engine.new_state()
    out: list[CorpusAlert] = []
    for n, rec in enumerate(records):
        origin = origin_for(rec.path, rec.root)
        message = wrap_record(
            rec.record, log_file=origin.log_file, bucket=origin.bucket, account_id=origin.account_id
        ).decode()
        location = AGENT_LOCATION + location_for(rec.path) if agent_events else WODLE_LOCATION
        now = START_EPOCH + n * STEP_S
        verdict = engine.process(message, location, now, state, manager_name=MANAGER_NAME)
        if verdict.rule is None:
            continue
        rendered = engine.render(
            verdict, alert_id=f"{int(now)}.{n * 2048}", manager_name=MANAGER_NAME
        )
        out.append(
            CorpusAlert(
                rec,
                ruleset,
                str(verdict.rule.id),
                verdict.rule.level,
                verdict.alert,
                RenderedAlert.from_line(
                    rendered.json_line, dedup_key=f"{ruleset}\0{rec.name}".encode()
                ),
            )
        )
    return out


@functools.cache
def _engines(wazuh_ref: Path) -> tuple[Engine, Engine]:
    options = EngineOptions(log_alert_level=1)
    bundled, problems = Engine.compile(read_sources(default_layout()), options)
    assert not problems, problems
    stock, problems = Engine.compile(read_sources(stock_layout(wazuh_ref)), options)
    assert not problems, problems
    return bundled, stock


def corpus_records(cloudtrail_dir: Path) -> list[CorpusRecord]:
    return [*shared_records(cloudtrail_dir), *sample_records()]


def produce_alerts(cloudtrail_dir: Path, wazuh_ref: Path) -> list[CorpusAlert]:
    """Both rulesets' rendered verdicts for every corpus record (see module docstring)."""
    records = corpus_records(cloudtrail_dir)
    bundled, stock = _engines(wazuh_ref)
    return [
        *_render(bundled, records, "bundled", agent_events=True),
        *_render(stock, records, "stock", agent_events=False),
    ]


def render_stock(records: list[CorpusRecord], wazuh_ref: Path) -> list[CorpusAlert]:
    """Wazuh's stock ruleset's rendered verdicts for ``records``, in order (the
    manager-local wodle event, as for the corpus)."""
    _, stock = _engines(wazuh_ref)
    return _render(stock, records, "stock", agent_events=False)
