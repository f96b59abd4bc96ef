"""``trailwarden-agent start`` as a real process: SIGKILL at any moment, SIGTERM in bounded time.

The manager here is the mini manager (tests/agent/mini_manager.py): its
memory of handled batches survives its own "kill", as the real manager's
batch journal does; test_agent_e2e.py repeats the story with the real one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
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
from cloudtrail_files import drop, expected_ids
from mini_manager import MiniManager


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Path, AgentProcess, int]]:
    data = tmp_path / "data"
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    write_agent_key(data)
    port = free_port()
    config = write_agent_config(
        tmp_path / "agent.toml",
        data_dir=data,
        ports=[port],
        sources=[("cloudtrail", bucket)],
        delivery={"max_batch_records": 50},
    )
    process = AgentProcess(config, tmp_path / "agent.log")
    yield tmp_path, process, port
    process.ensure_stopped()


async def wait_drained(data: Path, limit_s: float = 30) -> None:
    async def drained() -> None:
        while True:
            s = status(data)
            backlog = s.get("backlog", {})
            if (
                s.get("state") == "running"
                and backlog.get("spooled_batches") == 0
                and not backlog.get("queued_files")
            ):
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(drained(), limit_s)


async def test_kill_9_between_send_and_ack(agent) -> None:
    tmp_path, process, port = agent
    m = MiniManager(port=port)
    await m.start()
    m.hold_acks = True  # the manager analyses, the agent dies before any Ack
    try:
        for i in range(4):
            drop(tmp_path / "bucket", f"k{i}", 75)
        process.start()
        await m.wait_for(lambda: len(m.received().analysed) == 300, limit_s=30)
        process.kill9()
        m.hold_acks = False
        process.start()
        await m.wait_for(lambda: m.received().duplicates >= 6, limit_s=30)
        await wait_drained(tmp_path / "data")
    finally:
        await m.stop()
    got = m.received()
    assert got.reused == []  # every resent sequence carried the same records
    ids = m.event_ids()
    assert ids == {i: 1 for p in range(4) for i in expected_ids(f"k{p}", 75)}
    assert "Resuming: " in process.log_text()


async def test_kill_9_at_random_moments_of_agent_and_manager(agent) -> None:
    tmp_path, process, port = agent
    rng = random.Random(20261127)
    m = MiniManager(port=port)
    await m.start()
    expected: set[str] = set()
    try:
        for round_ in range(8):
            for f in range(rng.randint(1, 3)):
                prefix = f"r{round_}f{f}"
                n = rng.randint(20, 160)
                drop(tmp_path / "bucket", prefix, n)
                expected |= expected_ids(prefix, n)
            m.hold_acks = rng.random() < 0.4
            process.start()
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            if rng.random() < 0.4:
                await m.kill()  # the manager dies too
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                m.hold_acks = False
                await m.start()
            process.kill9()
        m.hold_acks = False
        process.start()
        await m.wait_for(lambda: len(m.received().analysed) >= len(expected), limit_s=60)
        await wait_drained(tmp_path / "data")
    finally:
        await m.stop()
    got = m.received()
    assert got.reused == []
    ids = m.event_ids()
    assert set(ids) == expected, (
        f"missing {len(expected - set(ids))}, extra {len(set(ids) - expected)}"
    )
    assert set(ids.values()) == {1}, "some record was analysed twice"


async def test_sigterm_stops_in_bounded_time_and_says_so(agent) -> None:
    tmp_path, process, port = agent
    m = MiniManager(port=port)
    await m.start()
    try:
        drop(tmp_path / "bucket", "term", 50)
        process.start()
        await m.wait_for(lambda: len(m.received().analysed) == 50, limit_s=30)
        await wait_drained(tmp_path / "data")
        m.hold_acks = True  # something is in flight at SIGTERM time
        drop(tmp_path / "bucket", "term2", 50)
        await m.wait_for(lambda: len(m.received().analysed) == 100, limit_s=30)
        code, took = await asyncio.to_thread(process.terminate)
    finally:
        await m.stop()
    assert code == 0
    assert took < 3.0 + 5.0  # shutdown_timeout_s plus the bounded steps
    s = status(tmp_path / "data")
    assert s["state"] == "stopped" and s["connection"]["state"] == "stopped"
    assert s["backlog"]["spooled_batches"] >= 1  # unacknowledged: kept for next time
    log = process.log_text()
    assert "Stopping." in log and "Stopped in" in log


async def test_sigterm_with_the_manager_unreachable_is_quick(agent) -> None:
    tmp_path, process, _ = agent
    drop(tmp_path / "bucket", "nomgr", 10)
    process.start()
    await asyncio.to_thread(
        wait_until,
        lambda: status(tmp_path / "data").get("counters", {}).get("records_spooled") == 10,
    )
    code, took = await asyncio.to_thread(process.terminate)
    assert code == 0 and took < 3.0
