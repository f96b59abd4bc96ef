"""``trailwarden-manager agents add|list|remove|show`` on a real data directory."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path

import pytest

from trailwarden.common.keys import read_client_keys
from trailwarden.manager.cli import main

KEY = "d" * 64


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str) -> tuple[int, str, str]:
    rc = main(["agents", *argv, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return rc, out, err


def write_state(data_dir: Path, agents: dict[str, dict[str, object]], **top: object) -> None:
    (data_dir / "var").mkdir(parents=True, exist_ok=True)
    doc = {"version": 1, "updated": time.time(), **top, "agents": agents}
    (data_dir / "var" / "agent-state.json").write_text(json.dumps(doc))


def test_add_prints_the_key_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, tmp_path, "add", "web-1")
    assert rc == 0
    keys = read_client_keys(tmp_path / "etc" / "client.keys")
    agent = keys.by_name("web-1")
    assert agent is not None and agent.agent_id == "001"
    assert out == f"001 web-1 any {agent.key}\n"
    assert "Agent 001 'web-1' added" in err and "agent.key" in err
    assert stat.S_IMODE((tmp_path / "etc" / "client.keys").stat().st_mode) == 0o600


def test_add_base64_is_wazuh_import_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, tmp_path, "add", "db-1", "--ip", "10.0.0.0/24", "--format", "base64")
    assert rc == 0
    agent = read_client_keys(tmp_path / "etc" / "client.keys").by_name("db-1")
    assert agent is not None
    assert base64.b64decode(out.strip()).decode() == f"001 db-1 10.0.0.0/24 {agent.key}"


def test_add_with_id_and_key_restores_an_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, tmp_path, "add", "old-1", "--id", "042", "--key", KEY)
    assert rc == 0 and out == f"042 old-1 any {KEY}\n"
    rc, out, _ = run(capsys, tmp_path, "add", "next-1")
    assert out.startswith("043 next-1 any ")


def test_add_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, tmp_path, "add", "web-1", "--ip", "10.0.0.5")[0] == 0
    rc, out, err = run(capsys, tmp_path, "add", "web-1")
    assert (rc, out) == (1, "") and "name 'web-1' is taken by agent 001" in err
    rc, _, err = run(capsys, tmp_path, "add", "web-2", "--ip", "10.0.0.5")
    assert rc == 1 and "IP 10.0.0.5 is already registered for agent 001" in err
    rc, _, err = run(capsys, tmp_path, "add", "web 2")
    assert rc == 1 and "invalid" in err
    rc, _, err = run(capsys, tmp_path, "add", "web-2", "--ip", "nowhere")
    assert rc == 1 and "--ip" in err
    rc, _, err = run(capsys, tmp_path, "add", "web-2", "--id", "001")
    assert rc == 1 and "id 001 is taken" in err
    rc, _, err = run(capsys, tmp_path, "add", "web-2", "--key", "has space")
    assert rc == 1 and "key" in err
    assert len(read_client_keys(tmp_path / "etc" / "client.keys")) == 1


def test_list_shows_status_last_seen_and_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("web-1", "db-1", "new-1"):
        run(capsys, tmp_path, "add", name)
    now = time.time()
    write_state(
        tmp_path,
        {
            "001": {"connected": True, "last_seen": now - 3, "events_received": 1234},
            "002": {"connected": False, "last_seen": now - 7200, "events_received": 7},
        },
    )
    rc, out, _ = run(capsys, tmp_path, "list")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "IP", "STATUS", "LAST", "SEEN", "EVENTS"]
    assert lines[1].split() == ["001", "web-1", "any", "active", "3s", "ago", "1234"]
    assert lines[2].split() == ["002", "db-1", "any", "disconnected", "2h", "ago", "7"]
    assert lines[3].split() == ["003", "new-1", "any", "never", "connected", "-", "0"]


def test_list_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, tmp_path, "add", "web-1")
    write_state(
        tmp_path,
        {
            "001": {
                "connected": True,
                "connected_since": 100.0,
                "last_seen": time.time(),
                "last_peer": "10.0.0.7:40000",
                "events_received": 5,
                "bytes_received": 900,
                "batches_received": 1,
                "last_batch_seq": 17,
            }
        },
    )
    rc, out, _ = run(capsys, tmp_path, "list", "--json")
    assert rc == 0
    (record,) = json.loads(out)["agents"]
    assert record["id"] == "001" and record["status"] == "active"
    assert record["last_peer"] == "10.0.0.7:40000" and record["last_batch_seq"] == 17
    assert record["origin"] == "agents add" and isinstance(record["registered"], float)
    assert "key" not in record


def test_list_empty_and_bad_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, tmp_path, "list")
    assert rc == 0 and out.startswith("No agents enrolled")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "agent-state.json").write_text('{"version": 7}')
    rc, _, err = run(capsys, tmp_path, "list")
    assert rc == 2 and "agent-state.json: version = 7" in err


def test_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, tmp_path, "add", "web-1")
    write_state(tmp_path, {"001": {"connected": False, "last_seen": time.time() - 90}})
    rc, out, _ = run(capsys, tmp_path, "show", "web-1")
    assert rc == 0
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["ID"].strip() == "001" and fields["Status"].strip() == "disconnected"
    assert "(agents add)" in fields["Registered"] and "UTC" in fields["Last seen"]
    assert "1m30s ago" in fields["Last seen"]
    rc, out, _ = run(capsys, tmp_path, "show", "1", "--json")
    assert json.loads(out)["name"] == "web-1"
    rc, out, _ = run(capsys, tmp_path, "show", "001", "--key")
    agent = read_client_keys(tmp_path / "etc" / "client.keys").by_id("001")
    assert agent is not None and out == f"001 web-1 any {agent.key}\n"
    rc, _, err = run(capsys, tmp_path, "show", "nobody")
    assert rc == 1 and "no enrolled agent with id or name 'nobody'" in err


def test_remove_and_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, tmp_path, "add", "web-1")
    run(capsys, tmp_path, "add", "db-1")
    rc, out, _ = run(capsys, tmp_path, "remove", "web-1")
    assert rc == 0 and out == "Agent 001 'web-1' removed.\n"
    keys = read_client_keys(tmp_path / "etc" / "client.keys")
    assert keys.is_removed("001") and keys.by_name("web-1") is None
    assert (tmp_path / "etc" / "client.keys").read_text().splitlines()[1].startswith("001 !web-1 ")
    rc, out, _ = run(capsys, tmp_path, "list")
    assert "web-1" not in out
    rc, _, err = run(capsys, tmp_path, "remove", "web-1")
    assert rc == 1 and "no enrolled agent" in err
    rc, _, err = run(capsys, tmp_path, "add", "web-9", "--id", "001")
    assert rc == 1 and "removed agent" in err
    rc, out, _ = run(capsys, tmp_path, "remove", "002", "--purge")
    assert rc == 0 and out == "Agent 002 'db-1' purged.\n"
    assert "db-1" not in (tmp_path / "etc" / "client.keys").read_text()


def test_malformed_client_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "client.keys").write_text("001 web-1\n")
    rc, _, err = run(capsys, tmp_path, "list")
    assert rc == 2 and "client.keys:1" in err
    rc, _, err = run(capsys, tmp_path, "add", "web-2")
    assert rc == 2 and "client.keys:1" in err


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("add", "list", "remove", "show"):
        with pytest.raises(SystemExit):
            main(["agents", action, "--help"])
        out = capsys.readouterr().out
        assert "--data-dir" in out
    with pytest.raises(SystemExit):
        main(["agents", "--help"])
    assert "never connected" in capsys.readouterr().out


def test_config_file_gives_data_dir_and_heartbeat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "manager.toml"
    config.write_text(
        f'[manager]\ndata_dir = "{data_dir}"\n'
        "[remote]\nheartbeat_interval_s = 60.0\nidle_timeout_s = 300.0\n"
    )
    assert main(["agents", "add", "web-1", "--config", str(config)]) == 0
    assert read_client_keys(data_dir / "etc" / "client.keys").by_name("web-1") is not None
    # Seen 100 s ago: active with 60 s heartbeats, disconnected with the default 10 s.
    write_state(data_dir, {"001": {"connected": True, "last_seen": time.time() - 100}})
    capsys.readouterr()
    assert main(["agents", "show", "web-1", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "active"
    assert main(["agents", "show", "web-1", "--json", "--data-dir", str(data_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "disconnected"
    config.write_text("[manager]\nno_such_key = 1\n")
    assert main(["agents", "list", "--config", str(config)]) == 2
    assert "unknown key 'manager.no_such_key'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("interval_s", "seen_ago_s", "status"),
    [
        (60.0, 100, "active"),  # inside two 60 s heartbeats; the default 10 s says otherwise
        (5.0, 15, "disconnected"),  # past two 5 s heartbeats; the default 10 s says active
    ],
)
def test_status_follows_the_heartbeat_the_server_recorded(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    interval_s: float,
    seen_ago_s: int,
    status: str,
) -> None:
    assert run(capsys, tmp_path, "add", "web-1")[0] == 0
    agents: dict[str, dict[str, object]] = {
        "001": {"connected": True, "last_seen": time.time() - seen_ago_s}
    }
    write_state(tmp_path, agents, heartbeat_interval_s=interval_s)
    rc, out, _ = run(capsys, tmp_path, "show", "web-1", "--json")
    assert rc == 0 and json.loads(out)["status"] == status
    rc, out, _ = run(capsys, tmp_path, "list")
    assert rc == 0 and out.splitlines()[1].split()[3] == status


def test_a_bad_recorded_heartbeat_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, tmp_path, "add", "web-1")[0] == 0
    write_state(tmp_path, {}, heartbeat_interval_s=0)
    rc, _, err = run(capsys, tmp_path, "list")
    assert rc != 0 and "heartbeat_interval_s = 0.0 is not positive" in err
