"""``trailwarden-agent`` commands and the agent's configuration file."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_process import (
    AgentProcess,
    free_port,
    status,
    wait_until,
    write_agent_config,
    write_agent_key,
)

from trailwarden.agent.cli import EXIT_NOT_RUNNING, build_parser, main
from trailwarden.agent.config import (
    DEFAULT_CONFIG_TEXT,
    AgentConfig,
    ManagerAddress,
    SourceConfig,
    SourceKind,
    load_agent_config,
    parse_manager_address,
)
from trailwarden.agent.discovery import DEFAULT_EXCLUDE, DEFAULT_INCLUDE
from trailwarden.agent.status import StatusReport, format_status
from trailwarden.common.config import ConfigError


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trailwarden.agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_default_configuration_text_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(DEFAULT_CONFIG_TEXT)
    config = load_agent_config(path)
    defaults = AgentConfig()
    for section in ("agent", "delivery", "spool", "collection"):
        assert getattr(config, section) == getattr(defaults, section), section
    assert config.manager_addresses() == (ManagerAddress("127.0.0.1", 1514),)
    (source,) = config.sources
    assert source == SourceConfig(kind=SourceKind.CLOUDTRAIL, path=Path("/var/lib/cloudtrail"))
    assert source.include_globs == DEFAULT_INCLUDE and source.exclude_globs == DEFAULT_EXCLUDE
    printed = run_cli("config", "--default")
    assert printed.returncode == 0 and printed.stdout == DEFAULT_CONFIG_TEXT


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert load_agent_config(path) == AgentConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('managers = ["host:99999"]', r"managers\[0\] = 'host:99999': .*port must be 1..65535"),
        ("managers = [{port = 10}]", r"managers\[0\].host is required"),
        ("[[sources]]\nkind = 'cloudtrail'", r"sources\[0\].path is required"),
        (
            "[[sources]]\nkind = 'syslog'\npath = '/x'",
            r"sources\[0\].kind = 'syslog' is not one of",
        ),
        (
            "[[sources]]\npath = '/x'\ninclude = ['/abs/*.gz']",
            r"sources\[0\].include = '/abs/\*.gz'",
        ),
        ("[delivery]\nlinger_secs = 1", r"unknown key 'delivery.linger_secs'"),
        (
            "[delivery]\nmax_batch_bytes = 100000000",
            r"delivery.max_batch_bytes = 100000000 is out of range",
        ),
        (
            "[delivery]\nbackoff_initial_ms = 500\nbackoff_max_ms = 100",
            "backoff_max_ms = 100 is below",
        ),
        (
            "[spool]\nmax_bytes = 8388608\nsegment_bytes = 16777216",
            "segment_bytes = 16777216 exceeds",
        ),
    ],
)
def test_configuration_errors_name_the_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_agent_config(path)
    assert str(caught.value).startswith(str(path))
    checked = run_cli("config", "--check", str(path))
    assert checked.returncode == 2 and str(path) in checked.stderr


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "agent.toml"
    path.parent.mkdir()
    path.write_text(
        "[agent]\ndata_dir = 'state'\n[[sources]]\nkind = 'jsonlines'\npath = '../logs'\n"
    )
    config = load_agent_config(path)
    assert config.agent.data_dir == path.parent / "state"
    assert config.sources[0].path == path.parent / "../logs"
    assert config.sources[0].include_globs == ("*.jsonl", "*.ndjson")
    assert config.sources[0].exclude_globs == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mgr.example.com", ManagerAddress("mgr.example.com", 1514)),
        ("10.0.0.2:1600", ManagerAddress("10.0.0.2", 1600)),
        ("[::1]:1514", ManagerAddress("::1", 1514)),
        ("fe80::1", ManagerAddress("fe80::1", 1514)),
    ],
)
def test_manager_addresses(text: str, expected: ManagerAddress) -> None:
    assert parse_manager_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:abc", "[::1", "a b:1", ":1514"])
def test_bad_manager_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_manager_address(text)


def test_help_texts_cover_every_command() -> None:
    parser = build_parser()
    help_text = parser.format_help()
    for command in ("start", "status", "config", "enroll"):
        assert command in help_text
    out = run_cli("start", "--help")
    assert "SIGTERM" in out.stdout and "--config" in out.stdout
    out = run_cli("status", "--help")
    assert "Exit status 0 if the agent is running, 3 if not" in " ".join(out.stdout.split())


def test_status_without_a_status_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--data-dir", str(tmp_path)]) == EXIT_NOT_RUNNING
    assert "no status file" in capsys.readouterr().err


def test_start_refuses_a_configuration_without_sources(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f"managers = ['127.0.0.1:1']\n[agent]\ndata_dir = '{tmp_path}'\n")
    result = run_cli("start", "--config", str(path))
    assert result.returncode == 2 and "no [[sources]] configured" in result.stderr


def test_start_refuses_without_a_key(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    config = write_agent_config(
        tmp_path / "agent.toml",
        data_dir=tmp_path / "data",
        ports=[free_port()],
        sources=[("cloudtrail", tmp_path / "bucket")],
    )
    result = run_cli("start", "--config", str(config))
    assert result.returncode == 2
    assert "no agent key; enroll this agent first" in result.stderr


def test_status_of_a_running_then_stopped_agent(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    data = tmp_path / "data"
    write_agent_key(data)
    config = write_agent_config(
        tmp_path / "agent.toml",
        data_dir=data,
        ports=[free_port()],
        sources=[("cloudtrail", tmp_path / "bucket")],
    )
    process = AgentProcess(config, tmp_path / "agent.log")
    process.start()
    try:
        wait_until(lambda: status(data).get("state") == "running", 30, "status.json")
        shown = run_cli("status", "--config", str(config))
        assert shown.returncode == 0, shown.stderr
        assert "running (pid" in shown.stdout and "Connection:" in shown.stdout
        assert "Backlog:" in shown.stdout and "records_read" in shown.stdout
        as_json = run_cli("status", "--data-dir", str(data), "--json")
        document = json.loads(as_json.stdout)
        assert document["running"] is True and document["agent"]["id"] == "001"
    finally:
        code, _ = process.terminate()
    assert code == 0
    stopped = run_cli("status", "--data-dir", str(data))
    assert stopped.returncode == EXIT_NOT_RUNNING and "NOT RUNNING" in stopped.stdout


def test_status_of_a_killed_agent_is_not_running(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    data = tmp_path / "data"
    write_agent_key(data)
    config = write_agent_config(
        tmp_path / "agent.toml",
        data_dir=data,
        ports=[free_port()],
        sources=[("cloudtrail", tmp_path / "bucket")],
    )
    process = AgentProcess(config, tmp_path / "agent.log")
    process.start()
    wait_until(lambda: status(data).get("state") == "running", 30, "status.json")
    process.kill9()
    shown = run_cli("status", "--data-dir", str(data))
    assert shown.returncode == EXIT_NOT_RUNNING
    assert "NOT RUNNING" in shown.stdout and "state 'running'" in shown.stdout


def test_format_status_shows_a_paused_reader_and_last_error() -> None:
    now = time.time()
    report = StatusReport(
        {
            "version": 1,
            "pid": os.getpid(),
            "state": "running",
            "started": now - 4000,
            "updated": now,
            "agent": {"id": "007", "name": "ct-1"},
            "connection": {
                "state": "connecting",
                "manager": "10.0.0.1:1514",
                "since": None,
                "last_error": "10.0.0.1:1514: cannot connect: refused",
            },
            "backlog": {
                "spooled_batches": 3,
                "spooled_records": 3000,
                "in_flight": 0,
                "spool_bytes": 5 << 30,
                "spool_max_bytes": 5 << 30,
                "reading_paused": True,
                "acked_seq": 10,
                "last_seq": 13,
            },
            "positions": {"tracked": 5, "done": 4, "quarantined": 1, "reading": 0},
            "files": [{"path": "/b/x.json.gz", "kind": "cloudtrail", "position": "record 7"}],
            "counters": {"records_read": 3000},
        },
        running=True,
        age_s=0.5,
    )
    text = format_status(report)
    assert "007 ct-1  running" in text and "up 66m" in text
    assert "READING PAUSED" in text and "5.0 GiB of 5.0 GiB" in text
    assert "cannot connect: refused" in text and "/b/x.json.gz" in text
    assert "acknowledged 10, last spooled 13" in text


def test_dataclass_defaults_are_immutable() -> None:
    config = AgentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.delivery.linger_ms = 1  # type: ignore[misc]
