"""The server's small parts on their own: flow control, the key table, the state book."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest
from manager_harness import write_keys

from trailwarden.common.keys import AgentKey, ClientKeys
from trailwarden.manager.agent_keys import AgentKeyTable
from trailwarden.manager.agent_state import AgentStateBook
from trailwarden.manager.agents_view import read_agent_state
from trailwarden.manager.flow_control import FlowControl
from trailwarden.manager.status import format_status


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_flow_pauses_at_high_water_and_resumes_below_half() -> None:
    clock = Clock()
    flow = FlowControl(100, 10_000, clock=clock)
    flow.add(60, 10)
    assert not flow.paused
    flow.add(40, 10)
    assert flow.paused and flow.pauses == 1
    waiter = asyncio.create_task(flow.resumed())
    clock.now += 2.5
    flow.remove(40, 10)  # 60 left: above half, still paused
    await asyncio.sleep(0)
    assert flow.paused and not waiter.done()
    flow.remove(20, 0)  # 40 left: below half
    await asyncio.sleep(0)
    assert waiter.done() and not flow.paused
    assert flow.resumed_at == clock.now
    assert flow.stats()["paused_s"] == 2.5
    flow.add(0, 10_000)  # the byte mark pauses too
    assert flow.paused


async def test_key_table_follows_the_file(tmp_path: Path) -> None:
    table = AgentKeyTable(tmp_path / "etc" / "client.keys")
    assert not await table.load()  # no file yet: no agents, no error
    assert table.lookup("001", "127.0.0.1") is None
    write_keys(tmp_path, [("001", "web-1", "any"), ("002", "lan", "192.168.0.0/16")])
    assert await table.load()
    assert table.lookup("001", "10.1.2.3") is not None
    assert table.lookup("002", "192.168.7.7") is not None
    assert table.lookup("002", "10.0.0.1") is None  # outside the registered network
    assert table.lookup("002", "::ffff:192.168.1.1") is not None  # dual-stack listener
    assert not await table.load()  # unchanged: not read again
    (tmp_path / "etc" / "client.keys").write_text("garbage line\n")
    assert not await table.load()
    assert table.reload_errors == 1 and table.lookup("001", "1.2.3.4") is not None
    table.replace(ClientKeys([AgentKey("003", "new", "any", "k" * 64)]))
    assert table.lookup("001", "1.2.3.4") is None and table.lookup("003", "1.2.3.4") is not None
    os.unlink(tmp_path / "etc" / "client.keys")
    assert await table.load()
    assert len(table.keys) == 0


async def test_state_book_writes_the_shared_format(tmp_path: Path) -> None:
    clock = Clock()
    book = AgentStateBook(tmp_path, clock=clock)
    book.load()
    entry = book.connected("001", "10.0.0.5:40000")
    entry.events_received += 7
    entry.batches_received += 1
    entry.last_batch_seq = 3
    assert book.dirty
    assert await book.write()
    assert not book.dirty
    state = read_agent_state(tmp_path)
    assert state.updated == 100.0
    assert state.agents["001"].connected and state.agents["001"].last_batch_seq == 3
    # A restart keeps the counters and says "disconnected".
    again = AgentStateBook(tmp_path, clock=clock)
    again.load()
    restored = again.get("001")
    assert restored is not None and not restored.connected and restored.events_received == 7


async def test_server_records_its_heartbeat_interval_in_the_state_file(tmp_path: Path) -> None:
    from manager_harness import config_for

    from trailwarden.manager.pipeline import AckingPipeline
    from trailwarden.manager.server import RemoteServer

    config = config_for(tmp_path, remote={"heartbeat_interval_s": 45.0, "idle_timeout_s": 300.0})
    flow = FlowControl(10**6, 1 << 30)
    server = RemoteServer(config.remote, tmp_path, AckingPipeline(flow), flow)
    assert await server.book.write()
    assert read_agent_state(tmp_path).heartbeat_interval_s == 45.0
    # A state file without it (an older server's) leaves the reader's own default.
    assert await AgentStateBook(tmp_path).write()
    state = read_agent_state(tmp_path)
    assert state.heartbeat_interval_s is None and state.heartbeat_or(10.0) == 10.0


async def test_state_book_replaces_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "agent-state.json").write_text("{broken")
    book = AgentStateBook(tmp_path)
    book.load()
    assert await book.write()
    assert orjson.loads((tmp_path / "var" / "agent-state.json").read_bytes())["agents"] == {}


@pytest.mark.parametrize("running", [True, False])
def test_status_text(running: bool) -> None:
    doc = {
        "version": 1,
        "pid": os.getpid() if running else 2**22 + 12345,
        "started": 1000.0,
        "updated": 4000.0,
        "interval_s": 5.0,
        "stopped": False,
        "manager": "m1",
        "listen": "0.0.0.0:1514",
        "summary": {
            "connections_open": 3,
            "handshakes_open": 1,
            "connections_accepted": 10,
            "agents_connected": 2,
            "agents_known": 5,
            "events_received": 12345,
            "events_analysed": 12000,
            "events_per_second": 1234.5,
            "duplicate_batches": 2,
            "alerts_written": 40,
            "alerts_per_second": 0.5,
            "queued_events": 0,
            "paused": False,
            "pauses": 0,
            "paused_s": 0.0,
            "drops": {"indexer.dropped_queue_full": 4},
            "busiest_agents": {"001 (web-1)": 900.5, "002 (db)": 12.0},
        },
        "errors": {"unknown_agent": 3},
    }
    text = format_status(doc, 4001.0)
    assert ("running (pid" in text) is running
    assert ("up 50 min 1 s" in text) if running else ("not running" in text)
    assert "12,000 analysed, 1,234.5/s" in text
    assert "indexer.dropped_queue_full 4" in text
    assert "unknown_agent 3" in text
    assert "Busiest:      001 (web-1) 900.5/s, 002 (db) 12.0/s" in text


async def test_batches_of_one_read_share_one_ack(tmp_path: Path) -> None:
    """Fifty batches in one write come back as a single cumulative Ack, not fifty."""
    from agent_client import TestAgent, records
    from manager_harness import DEFAULT_AGENTS, config_for, key_of

    from trailwarden.common.wire import Ack, Batch
    from trailwarden.manager.pipeline import AckingPipeline
    from trailwarden.manager.server import RemoteServer

    write_keys(tmp_path, DEFAULT_AGENTS)
    config = config_for(tmp_path)
    flow = FlowControl(10**6, 1 << 30)
    server = RemoteServer(config.remote, tmp_path, AckingPipeline(flow), flow)
    await server.start()
    try:
        agent = TestAgent("001", key_of("001"), server.port)
        await agent.connect()
        assert agent.writer is not None
        one = tuple(records(1, "r", size=100))
        burst = b"".join(agent.conn.send(Batch(seq, one)) for seq in range(1, 51))
        assert len(burst) < 16 * 1024  # one loopback segment, read at once
        agent.writer.write(burst)
        acks = []
        while agent.acked < 50:
            event = await agent.next_event()
            assert isinstance(event, Ack), event
            acks.append(event.seq)
        assert server.stats()["batches_received"] == 50
        assert acks == [50]
        # Outside a read (a pipeline acknowledging later) an Ack goes out at once.
        await agent.send_batch(51, one)
        await agent.wait_ack(51)
        agent.abort()
    finally:
        server.stop_accepting()
        await server.close_sessions(1.0)
        await server.close(1.0)
