"""The agent and the real manager, both as processes, both killed with SIGKILL.

``trailwarden-manager start --config`` analyses every record with the bundled
ruleset (RunInstances records raise rule 80301) and writes alerts.json; the
agent sends records from a CloudTrail tree. Whatever is killed when, every
alert must be in alerts.json exactly once.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_process import (
    KEY_LINE,
    AgentProcess,
    free_port,
    status,
    wait_until,
    write_agent_config,
    write_agent_key,
)
from cloudtrail_files import record as ct_record
from cloudtrail_files import s3_path, write_object


def run_instances(prefix: str, n: int) -> list[dict]:  # type: ignore[type-arg]
    return [ct_record(f"{prefix}-{i:06d}", eventName="RunInstances") for i in range(n)]


class ManagerProcess:
    def __init__(self, base: Path, port: int) -> None:
        self.data = base / "manager"
        (self.data / "etc").mkdir(parents=True)
        (self.data / "etc" / "client.keys").write_text(KEY_LINE)
        (self.data / "etc" / "client.keys").chmod(0o600)
        self.config = base / "manager.toml"
        self.config.write_text(
            f'[manager]\ndata_dir = "{self.data}"\nstatus_interval_s = 0.2\n'
            f'[remote]\nlisten_address = "127.0.0.1"\nport = {port}\n'
            "[enrollment]\nenabled = false\n"
        )
        self.log = base / "manager.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        before = self._listening()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trailwarden.manager.cli",
                    "start",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=log,
            )
        wait_until(lambda: self._listening() > before, 30, "the manager to listen")

    def _listening(self) -> int:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.count("Listening for agents")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def alert_ids(self) -> Counter[str]:
        path = self.data / "logs" / "alerts" / "alerts.json"
        ids: Counter[str] = Counter()
        if not path.exists():
            return ids
        for line in path.read_text(errors="replace").splitlines():
            try:
                alert = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line while the manager writes
            ids[alert["data"]["aws"]["eventID"]] += 1
        return ids


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Path, ManagerProcess, AgentProcess]]:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    port = free_port()
    manager = ManagerProcess(tmp_path, port)
    data = tmp_path / "agent"
    write_agent_key(data)
    config = write_agent_config(
        tmp_path / "agent.toml",
        data_dir=data,
        ports=[port],
        sources=[("cloudtrail", bucket)],
        delivery={"max_batch_records": 40},
    )
    agent = AgentProcess(config, tmp_path / "agent.log")
    yield tmp_path, manager, agent
    agent.ensure_stopped()
    manager.stop()


def wait_for_alerts(manager: ManagerProcess, expected: set[str], timeout: float = 60) -> None:
    wait_until(lambda: set(manager.alert_ids()) >= expected, timeout, "every alert")


async def test_every_alert_once_through_the_real_manager(pair) -> None:
    tmp_path, manager, agent = pair
    manager.start()
    agent.start()
    write_object(s3_path(tmp_path / "bucket"), run_instances("e2e", 120))
    expected = {f"e2e-{i:06d}" for i in range(120)}
    await asyncio.to_thread(wait_for_alerts, manager, expected)
    ids = manager.alert_ids()
    assert set(ids) == expected and set(ids.values()) == {1}
    alert = next(
        json.loads(line)
        for line in (manager.data / "logs" / "alerts" / "alerts.json").read_text().splitlines()
    )
    assert alert["rule"]["id"] == "80301"
    assert alert["agent"]["id"] == "001" and alert["agent"]["name"] == "test-agent"
    assert alert["location"].endswith(".json.gz")
    await asyncio.to_thread(
        wait_until,
        lambda: status(tmp_path / "agent").get("backlog", {}).get("spooled_batches") == 0,
    )


@pytest.mark.slow
async def test_kill_9_of_either_side_at_random_moments_keeps_alerts_exactly_once(pair) -> None:
    tmp_path, manager, agent = pair
    rng = random.Random(1127)
    expected: set[str] = set()
    manager.start()
    agent.start()
    for round_ in range(6):
        prefix = f"kill{round_}"
        n = rng.randint(40, 200)
        write_object(s3_path(tmp_path / "bucket"), run_instances(prefix, n))
        expected |= {f"{prefix}-{i:06d}" for i in range(n)}
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        victim = rng.choice(("agent", "manager", "both"))
        if victim in ("agent", "both"):
            agent.kill9()
        if victim in ("manager", "both"):
            manager.kill9()
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await asyncio.to_thread(manager.start)
        if victim in ("agent", "both"):
            agent.start()
    await asyncio.to_thread(wait_for_alerts, manager, expected, 120)
    await asyncio.sleep(1.0)  # nothing more may arrive
    ids = manager.alert_ids()
    assert set(ids) == expected
    assert set(ids.values()) == {1}, {k: v for k, v in ids.items() if v != 1}
