"""The agent registry: client.keys and registration records on real files, under a real flock."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import trailwarden.manager.agent_registry as registry_module
from trailwarden.common.keys import AgentKey, read_client_keys
from trailwarden.manager.agent_registry import (
    AgentRegistry,
    Registry,
    RegistryBusy,
    RegistryError,
)

KEY = "c" * 64


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def add(registry: AgentRegistry, name: str, ip: str = "any", now: float = 1.0) -> AgentKey:
    def change(current: Registry) -> tuple[Registry, AgentKey]:
        return current.with_new_agent(name, ip, now=now, groups=("default",), origin="test")

    return registry.update(change)


def test_empty_data_dir_reads_as_no_agents(tmp_path: Path) -> None:
    current = AgentRegistry(tmp_path).read()
    assert len(current.keys) == 0 and current.registrations == {}


def test_update_writes_both_files(tmp_path: Path) -> None:
    registry = AgentRegistry(tmp_path)
    web = add(registry, "web-1", now=100.0)
    db = add(registry, "db-1", "10.0.0.5", now=200.0)
    assert (web.agent_id, db.agent_id) == ("001", "002")
    keys_path = tmp_path / "etc" / "client.keys"
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "etc").stat().st_mode) == 0o700
    assert keys_path.read_text() == (f"001 web-1 any {web.key}\n002 db-1 10.0.0.5 {db.key}\n")
    doc = json.loads((tmp_path / "var" / "agent-registry.json").read_text())
    assert doc == {
        "version": 1,
        "agents": {
            "001": {"name": "web-1", "registered": 100.0, "groups": ["default"], "origin": "test"},
            "002": {"name": "db-1", "registered": 200.0, "groups": ["default"], "origin": "test"},
        },
    }
    again = AgentRegistry(tmp_path).read()
    assert again.keys == read_client_keys(keys_path)
    assert again.registration("002") is not None
    assert again.registration("002").registered == 200.0  # type: ignore[union-attr]


def test_removal_marks_the_line_and_drops_the_record(tmp_path: Path) -> None:
    registry = AgentRegistry(tmp_path)
    web = add(registry, "web-1")
    add(registry, "db-1")
    registry.update(lambda r: (r.without_agent("001"), None))
    text = (tmp_path / "etc" / "client.keys").read_text()
    assert f"001 !web-1 any {web.key}\n" in text
    current = registry.read()
    assert current.keys.is_removed("001") and "001" not in current.registrations
    # The removed id is never handed out again; a purged highest id would be.
    assert add(registry, "web-1").agent_id == "003"
    registry.update(lambda r: (r.without_agent("003", purge=True), None))
    names = [
        line.split()[1] for line in (tmp_path / "etc" / "client.keys").read_text().splitlines()
    ]
    assert names == ["db-1", "!web-1"]
    assert add(registry, "web-3").agent_id == "003"


def test_agents_imported_from_wazuh_are_dated_at_first_update(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "client.keys").write_text(f"004 imported any {KEY}\n")
    clock = Clock(5000.0)
    registry = AgentRegistry(tmp_path, clock=clock)
    assert registry.read().registration("004") is None
    # An update that changes nothing else still saves the date it gave.
    registry.update(lambda r: (r, None))
    record = registry.read().registration("004")
    assert record is not None and (record.registered, record.origin) == (
        5000.0,
        "found in client.keys",
    )
    clock.now = 9000.0
    registry.update(lambda r: (r, None))
    assert registry.read().registration("004").registered == 5000.0  # type: ignore[union-attr]
    assert add(registry, "new-1").agent_id == "005"


def test_record_for_another_name_is_ignored_and_dropped(tmp_path: Path) -> None:
    registry = AgentRegistry(tmp_path, clock=Clock(7.0))
    add(registry, "web-1", now=1.0)
    # Someone edits client.keys by hand: id 001 is now another agent.
    (tmp_path / "etc" / "client.keys").write_text(f"001 other any {KEY}\n")
    assert registry.read().registration("001") is None
    registry.update(lambda r: (r, None))
    record = registry.read().registration("001")
    assert record is not None and (record.name, record.registered) == ("other", 7.0)


def test_a_failing_change_writes_nothing(tmp_path: Path) -> None:
    registry = AgentRegistry(tmp_path)
    add(registry, "web-1")
    before = (tmp_path / "etc" / "client.keys").read_bytes()

    def change(current: Registry) -> tuple[Registry, None]:
        current.with_new_agent("web-2", "any", now=1.0)
        raise LookupError("refused")

    with pytest.raises(LookupError):
        registry.update(change)
    assert (tmp_path / "etc" / "client.keys").read_bytes() == before


def test_duplicate_name_is_a_value_error(tmp_path: Path) -> None:
    registry = AgentRegistry(tmp_path)
    add(registry, "web-1")
    with pytest.raises(ValueError, match="duplicate agent name"):
        add(registry, "web-1")


def test_reads_see_changes_made_by_other_writers(tmp_path: Path) -> None:
    registry = AgentRegistry(tmp_path)
    add(registry, "web-1")
    assert len(registry.read().keys) == 1
    other = AgentRegistry(tmp_path)
    add(other, "web-2")
    assert [a.name for a in registry.read().keys] == ["web-1", "web-2"]


def test_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from trailwarden.manager.agent_registry import AgentRegistry
        registry = AgentRegistry(Path(sys.argv[1]))
        for i in range(25):
            registry.update(
                lambda r: r.with_new_agent(f"{sys.argv[2]}-{i}", "any", now=1.0)
            )
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tag])
        for tag in ("a", "b", "c")
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    current = AgentRegistry(tmp_path).read()
    assert len(current.keys) == 75
    assert sorted(int(a.agent_id) for a in current.keys) == list(range(1, 76))
    assert len(current.registrations) == 75


def test_lock_held_elsewhere_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "LOCK_TIMEOUT_S", 0.1)
    (tmp_path / "etc").mkdir()
    fd = os.open(tmp_path / "etc" / ".client.keys.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(RegistryBusy, match=r"held the client\.keys lock"):
            add(AgentRegistry(tmp_path), "web-1")
    finally:
        os.close(fd)
    assert add(AgentRegistry(tmp_path), "web-1").agent_id == "001"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "not JSON"),
        (b'{"version": 2, "agents": {}}', "version = 2"),
        (b'{"version": 1, "agents": []}', "agents is not an object"),
        (b'{"version": 1, "agents": {"001": {"name": 5, "registered": 1}}}', "agents.001.name"),
        (
            b'{"version": 1, "agents": {"001": {"name": "a", "registered": "x"}}}',
            "agents.001.registered",
        ),
        (
            b'{"version": 1, "agents": {"001": {"name": "a", "registered": 1, "groups": [1]}}}',
            "agents.001.groups",
        ),
    ],
)
def test_malformed_registry_file(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "var").mkdir()
    path = tmp_path / "var" / "agent-registry.json"
    path.write_bytes(content)
    with pytest.raises(RegistryError) as caught:
        AgentRegistry(tmp_path).read()
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_malformed_client_keys_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "client.keys").write_text(f"001 web-1 any {KEY}\n002 broken\n")
    with pytest.raises(RegistryError, match=r"client.keys:2: expected 'id name ip key'"):
        AgentRegistry(tmp_path).read()


def test_find_by_id_or_name(tmp_path: Path) -> None:
    registry = AgentRegistry(tmp_path)
    web = add(registry, "web-1")
    current = registry.read()
    assert current.find("001") == web
    assert current.find("1") == web
    assert current.find("web-1") == web
    assert current.find("web-2") is None
