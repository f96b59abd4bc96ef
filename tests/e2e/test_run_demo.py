"""`make run` end to end: `trailwarden-manager run-demo` with real processes, TCP and TLS.

The command starts a manager, enrolls an agent through the enrollment
listener, runs the agent on the bundled sample tree and stops both once every
record is acknowledged. These tests check what lands on disk: each of the EC2
page's nine scenarios fires its rule at its level, every record is analysed
exactly once (archives.json holds every event), and each alerts.json line and
alerts.log block is byte for byte what the engine renders for that record, in
Wazuh's key order, with Wazuh's timestamp and `epoch.offset` alert id.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trailwarden.agent.cloudtrail_file import CloudTrailFileReader, Record
from trailwarden.agent.discovery import SourceTree, scan_trees
from trailwarden.agent.envelope import origin_for, wrap_record
from trailwarden.manager.demo import sample_tree
from trailwarden.manager.ruleset_files import default_layout, read_sources
from trailwarden.rules.engine import Engine, EngineOptions

AGENT = {"id": "001", "name": "run-demo-agent"}
UNAUTHORIZED = "Client.UnauthorizedOperation"
# The page's nine scenarios: (eventName, failed with UnauthorizedOperation) -> (rule, level).
SCENARIOS = {
    ("RunInstances", False): ("80301", 2),
    ("RunInstances", True): ("80303", 5),
    ("StartInstances", False): ("80305", 2),
    ("StartInstances", True): ("80306", 5),
    ("StopInstances", False): ("80308", 2),
    ("StopInstances", True): ("80309", 5),
    ("CreateSecurityGroup", False): ("80404", 2),
    ("AllocateAddress", False): ("80411", 2),
    ("AssociateAddress", False): ("80446", 2),
}
# Wazuh's alerts.json top-level keys, in Eprintf order (to_json.c); the
# optional ones are absent for these events except full_log.
WAZUH_KEYS = ["timestamp", "rule", "agent", "manager", "id", "full_log", "decoder", "data",
              "location"]
RULE_KEYS = ["level", "description", "id", "firedtimes", "mail", "groups"]
TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})([+-]\d{4})$")
ALERT_ID = re.compile(r"^(\d+)\.(\d+)$")
TIMEOUT_S = 180


@dataclass(frozen=True)
class SampleRecord:
    path: str
    record: dict[str, Any]


@dataclass(frozen=True)
class Run:
    data_dir: Path
    stdout: str
    summary: dict[str, Any]

    @property
    def alerts_dir(self) -> Path:
        return self.data_dir / "manager" / "logs" / "alerts"


def run_demo(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "trailwarden-manager"
    argv = [str(script)] if script.exists() else [sys.executable, "-m",
                                                  "trailwarden.manager.cli"]
    return subprocess.run([*argv, "run-demo", "--data-dir", str(data_dir), *extra],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def samples() -> dict[str, SampleRecord]:
    """eventID -> the record and its file, read from the bundled tree."""
    out: dict[str, SampleRecord] = {}
    for candidate in scan_trees([SourceTree(str(sample_tree()))]).candidates:
        for item in CloudTrailFileReader(candidate.path):
            if isinstance(item, Record):
                out[item.obj["eventID"]] = SampleRecord(candidate.path, item.obj)
    assert len(out) == 38
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    base = tmp_path_factory.mktemp("run-demo")
    data_dir = base / "demo"
    summary = base / "summary.json"
    done = run_demo(data_dir, "--archives", "--summary-json", str(summary))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return Run(data_dir, done.stdout, json.loads(summary.read_text()))


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine, problems = Engine.compile(read_sources(default_layout()),
                                      EngineOptions(log_alert_level=1))
    assert not [p for p in problems if p.severity == "error"]
    return engine


def alert_lines(run: Run) -> list[bytes]:
    return (run.alerts_dir / "alerts.json").read_bytes().splitlines(keepends=True)


def test_the_summary_counts_every_record_and_the_alerts_by_rule(run: Run) -> None:
    summary = run.summary
    assert summary["tree_records"] == 38
    assert summary["records_read"] == summary["records_acked"] == 38
    assert summary["events_analysed"] == 38
    assert {(a["rule_id"], a["level"], a["count"]) for a in summary["alerts"]} == {
        (rule, level, 1) for rule, level in SCENARIOS.values()
    }
    assert "Agent and manager stopped cleanly." in run.stdout
    assert "Events analysed:  38" in run.stdout
    assert "Records read:     38" in run.stdout
    assert re.search(r"80303\s+5\s+1\s+Amazon-ec2: Run instance unauthorized", run.stdout)
    assert str(run.alerts_dir / "alerts.json") in run.stdout
    assert str(run.alerts_dir / "alerts.log") in run.stdout
    # Progress was shown while it ran, ending with everything acknowledged.
    assert "records read 38/38, acknowledged 38; events analysed 38, alerts 9" in run.stdout


def test_each_of_the_nine_scenarios_fires_its_rule_once(
    run: Run, samples: dict[str, SampleRecord]
) -> None:
    fired: Counter[tuple[str, bool]] = Counter()
    for line in alert_lines(run):
        alert = json.loads(line)
        record = samples[alert["data"]["aws"]["eventID"]].record
        scenario = (record["eventName"], record.get("errorCode") == UNAUTHORIZED)
        assert (alert["rule"]["id"], alert["rule"]["level"]) == SCENARIOS[scenario], scenario
        fired[scenario] += 1
    assert fired == dict.fromkeys(SCENARIOS, 1)


def test_every_record_is_analysed_exactly_once(
    run: Run, samples: dict[str, SampleRecord]
) -> None:
    archives = run.data_dir / "manager" / "logs" / "archives" / "archives.json"
    ids = Counter(
        json.loads(json.loads(line)["full_log"])["aws"]["eventID"]
        for line in archives.read_bytes().splitlines()
    )
    assert ids == dict.fromkeys(samples, 1)
    status = json.loads((run.data_dir / "manager" / "var" / "status.json").read_text())
    assert status["stopped"] is True
    assert status["summary"]["events_analysed"] == 38
    assert status["summary"]["duplicate_batches"] == 0


def test_alert_lines_are_in_wazuh_format(run: Run) -> None:
    log = (run.alerts_dir / "alerts.log").read_bytes()
    lines = alert_lines(run)
    assert len(lines) == 9
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        alert = json.loads(line)
        # cJSON_PrintUnformatted: no spaces, UTF-8 as is, one line.
        assert line == json.dumps(alert, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        keys = list(alert)
        assert keys == [k for k in WAZUH_KEYS if k in alert]
        assert keys[:5] == WAZUH_KEYS[:5] and keys[-3:] == ["decoder", "data", "location"]
        assert list(alert["rule"])[:len(RULE_KEYS)] == RULE_KEYS
        assert alert["agent"] == AGENT  # agent.ip is left out for "any", as Wazuh does
        assert list(alert["manager"]) == ["name"]
        decoder = list(alert["decoder"])
        assert "name" in decoder
        assert decoder == [k for k in ("accumulate", "parent", "name", "ftscomment") if k in decoder]
        stamp = TIMESTAMP.match(alert["timestamp"])
        assert stamp, alert["timestamp"]
        alert_id = ALERT_ID.match(alert["id"])
        assert alert_id, alert["id"]
        # The id is "<epoch>.<offset of the alert's block in alerts.log>".
        offset = int(alert_id.group(2))
        assert log[offset:].startswith(f"** Alert {alert['id']}: - ".encode())
        assert alert["location"].endswith((".json.gz", ".json"))


def test_lines_and_blocks_are_what_the_engine_renders_for_each_record(
    run: Run, samples: dict[str, SampleRecord], engine: Engine
) -> None:
    """Re-analyse each alerting record in this process with the alert's time and id:
    the alerts.json line and the alerts.log block must be the same bytes."""
    log = (run.alerts_dir / "alerts.log").read_bytes()
    offsets = []
    for line in alert_lines(run):
        alert = json.loads(line)
        sample = samples[alert["data"]["aws"]["eventID"]]
        assert alert["location"] == sample.path
        origin = origin_for(sample.path, sample_tree())
        message = wrap_record(sample.record, log_file=origin.log_file, bucket=origin.bucket,
                              account_id=origin.account_id).decode()
        epoch, offset = (int(part) for part in alert["id"].split("."))
        millis = int(alert["timestamp"][20:23])
        now = epoch + (millis + 0.5) / 1000
        verdict = engine.process(message, f"[001] (run-demo-agent) any->{sample.path}", now,
                                 engine.new_state(), manager_name=alert["manager"]["name"])
        rendered = engine.render(verdict, alert_id=alert["id"],
                                 manager_name=alert["manager"]["name"])
        assert rendered.json_line == line
        block = rendered.log_block.encode()
        assert log[offset:offset + len(block)] == block
        offsets.append((offset, len(block)))
    # The blocks tile alerts.log: nothing else is in it.
    offsets.sort()
    position = 0
    for offset, size in offsets:
        assert offset == position
        position += size
    assert position == len(log)


def test_a_second_run_starts_afresh(run: Run, tmp_path: Path) -> None:
    # Same data directory: the previous run's files are replaced, not added to.
    again = run_demo(run.data_dir)
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}"
    assert len(alert_lines(run)) == 9
    assert not (run.data_dir / "manager" / "logs" / "archives").exists()


def test_a_directory_it_did_not_create_is_left_alone(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    done = run_demo(tmp_path)
    assert done.returncode == 1
    assert "was not created by run-demo" in done.stderr
    assert precious.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
