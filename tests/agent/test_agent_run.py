"""The whole agent in this process, against the mini manager on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_process import free_port, write_agent_key
from cloudtrail_files import drop, expected_ids
from mini_manager import MiniManager

from trailwarden.agent.config import AgentConfig, agent_config_from_dict
from trailwarden.agent.positions import PendingCheckpoint
from trailwarden.agent.run import Agent, AgentError
from trailwarden.agent.status import read_status


def config(tmp_path: Path, ports: list[int], **sections: dict[str, Any]) -> AgentConfig:
    data: dict[str, Any] = {
        "agent": {"data_dir": str(tmp_path / "data"), "status_interval_s": 0.1},
        "managers": [f"127.0.0.1:{p}" for p in ports],
        "delivery": {
            "linger_ms": 20,
            "backoff_initial_ms": 20,
            "backoff_max_ms": 200,
            "shutdown_timeout_s": 2.0,
        },
        "collection": {"scan_interval_s": 0.05, "settle_ms": 0, "checkpoint_interval_ms": 50},
        "sources": [{"path": str(tmp_path / "bucket")}],
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return agent_config_from_dict(data)


class Running:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.task = asyncio.ensure_future(agent.run())

    async def stop(self) -> None:
        self.agent.request_stop()
        await asyncio.wait_for(self.task, 20)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Path, MiniManager]]:
    (tmp_path / "bucket").mkdir()
    write_agent_key(tmp_path / "data")
    manager = MiniManager()
    await manager.start()
    yield tmp_path, manager
    await manager.stop()


async def test_a_new_file_is_delivered_once_and_status_tells_the_story(setup) -> None:
    tmp_path, m = setup
    running = Running(Agent(config(tmp_path, [m.port])))
    try:
        drop(tmp_path / "bucket", "one", 30)
        await m.wait_for(lambda: len(m.received().analysed) == 30)
        await asyncio.sleep(0.3)
        report = read_status(tmp_path / "data")
        assert report.running
        s = report.status
        assert s["agent"] == {"id": "001", "name": "test-agent"}
        assert s["connection"]["state"] == "connected"
        assert s["connection"]["manager"] == f"127.0.0.1:{m.port}"
        assert s["counters"]["records_acked"] == 30
        assert s["backlog"]["spooled_batches"] == 0
        assert s["positions"]["done"] == 1
    finally:
        await running.stop()
    assert m.event_ids() == {i: 1 for i in expected_ids("one", 30)}
    final = read_status(tmp_path / "data")
    assert final.status["state"] == "stopped" and not final.running


async def test_restart_while_batches_are_unacknowledged_sends_each_record_once(setup) -> None:
    tmp_path, m = setup
    cfg = config(tmp_path, [m.port])
    m.hold_acks = True
    drop(tmp_path / "bucket", "hold", 200)
    first = Running(Agent(cfg))
    await m.wait_for(lambda: len(m.received().analysed) == 200)
    await first.stop()  # batches sent, none acknowledged
    m.release_acks()  # too late: the connection is gone
    second = Running(Agent(cfg))
    try:
        drop(tmp_path / "bucket", "after", 20)
        await m.wait_for(lambda: len(m.received().analysed) == 220)
        await m.wait_for(
            lambda: (
                second.agent.progress is not None
                and second.agent.progress.spool.unacked_batches == 0
            )
        )
    finally:
        await second.stop()
    got = m.received()
    assert got.duplicates > 0 and got.reused == []
    assert m.event_ids() == {
        **{i: 1 for i in expected_ids("hold", 200)},
        **{i: 1 for i in expected_ids("after", 20)},
    }


async def test_manager_down_for_a_while_then_back(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    write_agent_key(tmp_path / "data")
    port = free_port()
    running = Running(Agent(config(tmp_path, [port])))
    try:
        for i in range(5):
            drop(tmp_path / "bucket", f"down{i}", 40)
        await asyncio.sleep(0.5)
        report = read_status(tmp_path / "data")
        assert report.status["connection"]["state"] != "connected"
        assert report.status["backlog"]["spooled_records"] == 200  # read ahead into the spool
        assert "cannot connect" in report.status["connection"]["last_error"]
        m = MiniManager(port=port)
        await m.start()
        try:
            await m.wait_for(lambda: len(m.received().analysed) == 200)
        finally:
            await running.stop()
            await m.stop()
    finally:
        if not running.task.done():
            await running.stop()
    ids = m.event_ids()
    assert len(ids) == 200 and set(ids.values()) == {1}


async def test_a_full_spool_pauses_reading_and_never_drops(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    write_agent_key(tmp_path / "data")
    port = free_port()
    cfg = config(
        tmp_path,
        [port],
        spool={"max_bytes": 4 * 1024 * 1024, "segment_bytes": 256 * 1024},
        delivery={"max_batch_records": 200},
    )
    for i in range(20):
        drop(tmp_path / "bucket", f"full{i:02d}", 250)  # ~5 MB of records in all
    running = Running(Agent(cfg))
    m = MiniManager(port=port)
    try:
        await asyncio.sleep(1.0)
        s = read_status(tmp_path / "data").status
        assert s["backlog"]["reading_paused"] is True
        assert s["backlog"]["spool_bytes"] >= 4 * 1024 * 1024
        assert s["counters"]["records_read"] < 5000  # waiting, not dropping
        await m.start()
        await m.wait_for(lambda: len(m.received().analysed) == 5000, limit_s=30)
        assert running.agent._backpressure is not None
        assert running.agent._backpressure.pauses >= 1
    finally:
        await running.stop()
        await m.stop()
    ids = m.event_ids()
    assert len(ids) == 5000 and set(ids.values()) == {1}


async def test_not_enrolled_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    with pytest.raises(AgentError, match="enroll this agent first"):
        await Agent(config(tmp_path, [free_port()])).run()


async def test_one_agent_per_data_directory(setup) -> None:
    tmp_path, m = setup
    cfg = config(tmp_path, [m.port])
    running = Running(Agent(cfg))
    try:
        await asyncio.sleep(0.2)
        with pytest.raises(AgentError, match="another trailwarden-agent is running"):
            await Agent(cfg).run()
    finally:
        await running.stop()


async def test_a_new_key_is_picked_up_without_a_restart(setup) -> None:
    tmp_path, m = setup
    m.keys = {"002": "b" * 64}  # the manager knows only the re-enrolled identity
    running = Running(Agent(config(tmp_path, [m.port])))
    try:
        drop(tmp_path / "bucket", "rekey", 3)
        await asyncio.sleep(0.4)
        assert m.received("002").analysed == []
        (tmp_path / "data" / "agent.key").write_text(f"002 test-agent any {'b' * 64}\n")
        await m.wait_for(lambda: len(m.received("002").analysed) == 3, limit_s=10)
    finally:
        await running.stop()


async def test_status_lists_the_file_being_read_and_quarantines(setup) -> None:
    tmp_path, m = setup
    bad = tmp_path / "bucket" / "broken.json"
    bad.write_bytes(b'{"Records": [{"eventID": "x"}, ')  # truncated
    running = Running(Agent(config(tmp_path, [m.port])))
    try:
        await m.wait_for(lambda: len(m.received().analysed) == 1)
        await asyncio.sleep(0.3)
        s = read_status(tmp_path / "data").status
        assert s["counters"]["files_quarantined"] == 1
        assert s["positions"]["quarantined"] == 1
    finally:
        await running.stop()
    text = m.received().analysed[0].text
    assert json.loads(text)["aws"]["eventID"] == "x"


async def test_a_second_stop_request_skips_waiting_for_the_manager(setup) -> None:
    tmp_path, m = setup
    m.hold_acks = True
    running = Running(Agent(config(tmp_path, [m.port], delivery={"shutdown_timeout_s": 30.0})))
    drop(tmp_path / "bucket", "force", 10)
    await m.wait_for(lambda: len(m.received().analysed) == 10)
    running.agent.request_stop()
    await asyncio.sleep(0.2)
    assert not running.task.done()  # waiting for acknowledgements
    running.agent.request_stop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(running.task), 5)
    assert running.task.done()


async def test_stopping_while_a_checkpoint_is_being_written(
    setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown cancels the periodic checkpoint while its write runs in a thread:
    the write lands and is accounted for, then the final checkpoint runs."""
    tmp_path, m = setup
    writing = threading.Event()
    slow_write = PendingCheckpoint.write

    def write(self: PendingCheckpoint) -> None:
        writing.set()
        time.sleep(1.0)  # longer than the shutdown steps before the final checkpoint
        slow_write(self)

    monkeypatch.setattr(PendingCheckpoint, "write", write)
    running = Running(Agent(config(tmp_path, [m.port])))
    drop(tmp_path / "bucket", "one", 30)
    await m.wait_for(lambda: len(m.received().analysed) == 30)
    writing.clear()
    assert await asyncio.to_thread(writing.wait, 5)
    # Acknowledged while that write runs: the final checkpoint has work to do.
    drop(tmp_path / "bucket", "two", 30)
    await m.wait_for(lambda: len(m.received().analysed) == 60)
    await running.stop()  # raised "a checkpoint is already being written" before
    assert running.agent.failed is None
    monkeypatch.undo()
    again = Running(Agent(config(tmp_path, [m.port])))  # positions durable: nothing re-sent
    await asyncio.sleep(0.5)
    await again.stop()
    assert again.agent.failed is None
    assert len(m.received().analysed) == 60
