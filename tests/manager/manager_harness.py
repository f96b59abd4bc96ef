"""Run a real manager in the test's event loop, on a real data directory and a loopback port."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from trailwarden.common.keys import AgentKey, ClientKeys, write_client_keys
from trailwarden.manager.config import ManagerConfig, manager_config_from_dict
from trailwarden.manager.run import Manager, load_engine

# Agent id -> key, for the default agents of the tests.
KEYS = {
    "001": "a" * 64,
    "002": "b" * 64,
    "003": "c" * 64,
}


def write_keys(data_dir: Path, agents: list[tuple[str, str, str]]) -> None:
    """client.keys with (id, name, ip) entries; keys from KEYS (or derived from the id)."""
    table = ClientKeys(
        AgentKey(agent_id, name, ip, KEYS.get(agent_id, agent_id * 8))
        for agent_id, name, ip in agents
    )
    (data_dir / "etc").mkdir(parents=True, exist_ok=True)
    write_client_keys(data_dir / "etc" / "client.keys", table)


def key_of(agent_id: str) -> str:
    return KEYS.get(agent_id, agent_id * 8)


DEFAULT_AGENTS = [("001", "web-1", "any"), ("002", "web-2", "any"), ("003", "db-1", "any")]


def config_for(data_dir: Path, **sections: dict[str, Any]) -> ManagerConfig:
    doc: dict[str, Any] = {
        "manager": {"data_dir": str(data_dir), "name": "test-manager", "status_interval_s": 0.2},
        "remote": {"listen_address": "127.0.0.1", "port": 0},
        "enrollment": {"enabled": False},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return manager_config_from_dict(doc)


@contextlib.asynccontextmanager
async def running_manager(
    data_dir: Path,
    *,
    agents: list[tuple[str, str, str]] | None = None,
    **sections: dict[str, Any],
) -> AsyncIterator[Manager]:
    """A started manager; shut down (in order) when the block ends."""
    if agents is None:
        agents = DEFAULT_AGENTS
    if agents:
        write_keys(data_dir, agents)
    config = config_for(data_dir, **sections)
    manager = Manager(config, load_engine(config))
    await manager.start()
    try:
        yield manager
    finally:
        await manager.shutdown()


def alert_lines(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "logs" / "alerts" / "alerts.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def event_ids(data_dir: Path) -> list[str]:
    """The eventID of every alert in alerts.json, in file order."""
    out = []
    for alert in alert_lines(data_dir):
        out.append(alert["data"]["aws"]["eventID"])
    return out


def log_blocks(data_dir: Path) -> int:
    path = data_dir / "logs" / "alerts" / "alerts.log"
    return path.read_text().count("** Alert ") if path.exists() else 0
