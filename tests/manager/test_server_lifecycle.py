"""Shutdown order, backpressure, agent state and status files, fatal errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from agent_client import TestAgent, records
from manager_harness import event_ids, key_of, running_manager

from trailwarden.common.wire import Ack, Close, CloseReason
from trailwarden.manager import agents_view
from trailwarden.manager.alert_files import AlertFilesError
from trailwarden.manager.cli import main as cli_main


async def test_shutdown_finishes_in_flight_batches_before_closing(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        files = manager._files
        assert files is not None
        real_flush = files.flush

        async def slow_flush(timeout_s: float | None = None) -> bool:
            await asyncio.sleep(0.3)
            return await real_flush(timeout_s)

        files.flush = slow_flush  # type: ignore[method-assign]
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        for seq in (1, 2, 3):
            await agent.send_batch(seq, records(2, f"inflight{seq}"))
        await asyncio.sleep(0.05)
        stopping = asyncio.create_task(manager.shutdown())
        seen = []
        while True:
            event = await agent.next_event()
            seen.append(event)
            if isinstance(event, Close):
                break
        await stopping
        agent.abort()
        # Every batch taken before the stop was acknowledged, then the Close came.
        assert Ack(3) in seen and seen.index(Ack(3)) < len(seen) - 1
        assert seen[-1] == Close(CloseReason.SHUTDOWN, "manager stopping")
    assert sorted(event_ids(tmp_path)) == sorted(
        f"inflight{s}-{n}" for s in (1, 2, 3) for n in range(2)
    )
    status = orjson.loads((tmp_path / "var" / "status.json").read_bytes())
    assert status["stopped"] is True
    state = agents_view.read_agent_state(tmp_path)
    assert state.agents["001"].connected is False
    assert state.agents["001"].events_received == 6


async def test_batches_after_the_stop_are_left_to_the_agent(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        await agent.send_batch(1, records(1, "kept"))
        await agent.wait_ack(1)
        manager.remote.stop_batches()
        await agent.send_batch(2, records(3, "late"))
        await asyncio.sleep(0.3)
        stats = manager.remote.stats()
        assert stats["batches_refused_at_shutdown"] == 1
        assert stats["events_refused_at_shutdown"] == 3
        assert agent.acked == 1
        agent.abort()
    assert event_ids(tmp_path) == ["kept-0"]


async def test_backpressure_pauses_reading_without_cutting_agents(tmp_path: Path) -> None:
    async with running_manager(
        tmp_path,
        analysis={"high_water_events": 20},
        remote={"idle_timeout_s": 0.5, "heartbeat_interval_s": 0.2},
    ) as manager:
        files = manager._files
        assert files is not None and manager.flow is not None
        release = asyncio.Event()
        real_flush = files.flush

        async def held_flush(timeout_s: float | None = None) -> bool:
            await release.wait()
            return await real_flush(timeout_s)

        files.flush = held_flush  # type: ignore[method-assign]
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        total = 40

        async def send_all() -> None:
            for seq in range(1, total + 1):
                await agent.send_batch(seq, records(5, f"p{seq}", size=20_000, random=True))

        sender = asyncio.create_task(send_all())
        await asyncio.sleep(0.5)
        assert manager.flow.paused
        received = manager.remote.stats()["batches_received"]
        await asyncio.sleep(1.0)  # twice the idle deadline, paused all along
        # Reading stopped: nothing more was taken, and the agent was not cut as idle.
        assert manager.remote.stats()["batches_received"] == received
        assert received < total
        assert manager.remote.stats().get("errors.idle_timeout", 0) == 0
        release.set()
        await agent.wait_ack(total, timeout_s=20)
        await sender
        flow = manager.flow.stats()
        assert flow["pauses"] >= 1 and flow["paused_s"] > 0.5 and not flow["paused"]
        assert flow["queued_events"] == 0
        await agent.close()
    assert len(event_ids(tmp_path)) == 5 * total


async def test_agent_state_file_follows_connections(tmp_path: Path) -> None:
    async with running_manager(
        tmp_path, remote={"heartbeat_interval_s": 0.3, "idle_timeout_s": 5.0}
    ) as manager:
        agent = TestAgent("002", key_of("002"), manager.remote.port)
        await agent.connect()
        await agent.send_batch(9, records(4, "st"))
        await agent.wait_ack(9)
        for _ in range(6):  # heartbeats keep it active while the file is rewritten
            await agent.heartbeat()
            await asyncio.sleep(0.2)
        state = agents_view.read_agent_state(tmp_path)
        entry = state.agents["002"]
        assert entry.connected and entry.last_peer is not None
        assert entry.last_peer.startswith("127.0.0.1:")
        assert (entry.events_received, entry.batches_received, entry.last_batch_seq) == (4, 1, 9)
        assert entry.bytes_received > 0
        status = agents_view.connection_status(entry, time.time(), 0.3)
        assert status is agents_view.ConnectionStatus.ACTIVE
        assert "001" not in state.agents  # never connected
        await agent.close()
        await asyncio.sleep(1.5)
        entry = agents_view.read_agent_state(tmp_path).agents["002"]
        assert not entry.connected
        assert agents_view.connection_status(entry, time.time(), 0.3) is (
            agents_view.ConnectionStatus.DISCONNECTED
        )
    # Counters carry over a restart.
    async with running_manager(tmp_path) as manager:
        agent = TestAgent("002", key_of("002"), manager.remote.port)
        await agent.connect()
        await agent.send_batch(10, records(1, "st2"))
        await agent.wait_ack(10)
        await agent.close()
    entry = agents_view.read_agent_state(tmp_path).agents["002"]
    assert entry.events_received == 5 and entry.batches_received == 2


async def test_status_file_and_command(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    async with running_manager(tmp_path) as manager:
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        await agent.send_batch(1, records(3, "s"))
        await agent.wait_ack(1)
        bad = TestAgent("099", "x" * 10, manager.remote.port)
        await bad.handshake()
        bad.abort()
        await asyncio.sleep(0.6)
        doc = orjson.loads((tmp_path / "var" / "status.json").read_bytes())
        summary = doc["summary"]
        assert summary["connections_open"] == 1 and summary["agents_connected"] == 1
        assert summary["events_analysed"] == 3 and summary["alerts_written"] == 3
        assert doc["errors"] == {"unknown_agent": 1}
        assert doc["components"]["alert_files"]["alerts_written"] == 3
        code = await asyncio.to_thread(cli_main, ["status", "--data-dir", str(tmp_path)])
        out = capsys.readouterr().out
        assert code == 0
        assert "running (pid" in out
        assert "Agents:       1 connected of 3 enrolled" in out
        assert "unknown_agent 1" in out
        await agent.close()
    code = await asyncio.to_thread(cli_main, ["status", "--data-dir", str(tmp_path)])
    assert code == 3
    assert "stopped" in capsys.readouterr().out


async def test_status_without_a_status_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli_main(["status", "--data-dir", str(tmp_path)]) == 1
    assert "no manager has run" in capsys.readouterr().err


async def test_failing_alert_files_stop_the_manager_without_acknowledging(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        files = manager._files
        assert files is not None

        def broken_commit(plan: object) -> None:
            raise AlertFilesError("alert files: cannot append to alerts.json: [Errno 28] No space")

        files.commit = broken_commit  # type: ignore[method-assign,assignment]
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        await agent.send_batch(1, records(2, "lost"))
        await asyncio.wait_for(manager.stopped.wait(), 5)
        assert isinstance(manager.fatal, AlertFilesError)
        assert agent.acked == 0
        assert manager.pipeline is not None and manager.pipeline.stats()["failed"] is True
        agent.abort()


async def test_an_agent_enrolled_through_the_manager_can_connect_at_once(tmp_path: Path) -> None:
    import ssl

    async with running_manager(
        tmp_path,
        enrollment={
            "enabled": True,
            "port": 0,
            "use_password": False,
            "listen_address": "127.0.0.1",
        },
    ) as manager:
        enrollment = manager._enrollment
        assert enrollment is not None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", enrollment.port, ssl=context)
        writer.write(b"OSSEC A:'fresh-agent'\n")
        reply = (await reader.read(4096)).decode()
        writer.close()
        assert reply.startswith("OSSEC K:'"), reply
        agent_id, name, _ip, key = reply.split("'")[1].split(" ")
        assert name == "fresh-agent"
        # No waiting for client.keys to be re-read: the listener handed the table over.
        agent = TestAgent(agent_id, key, manager.remote.port)
        await agent.connect()
        await agent.send_batch(1, records(1, "fresh"))
        await agent.wait_ack(1)
        await agent.close()
        assert manager.component_stats()["enrollment"]["enrolled"] == 1


async def test_per_agent_rates(tmp_path: Path) -> None:
    async with running_manager(tmp_path, manager={"status_interval_s": 600}) as manager:
        a1 = TestAgent("001", key_of("001"), manager.remote.port)
        a2 = TestAgent("002", key_of("002"), manager.remote.port)
        await a1.connect()
        await a2.connect()
        manager.remote.busiest_agents(5)  # the baseline
        await a1.send_batch(1, records(30, "r1"))
        await a2.send_batch(1, records(10, "r2"))
        await a1.wait_ack(1)
        await a2.wait_ack(1)
        rates = manager.remote.busiest_agents(5)
        assert list(rates) == ["001 (web-1)", "002 (web-2)"]  # busiest first
        assert rates["001 (web-1)"] > rates["002 (web-2)"] > 0  # type: ignore[operator]
        assert manager.remote.busiest_agents(5) == {}  # nothing new since
        await a1.close()
        await a2.close()


async def test_interval_policy_acknowledges_at_once_and_fsyncs_later(tmp_path: Path) -> None:
    async with running_manager(
        tmp_path, alerts={"fsync": "interval", "fsync_interval_ms": 200}
    ) as manager:
        assert manager.pipeline is not None
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        await agent.send_batch(1, records(2, "iv"))
        await agent.wait_ack(1)
        await agent.send_batch(2, records(2, "iv2"))
        await agent.wait_ack(2)
        synced = manager.pipeline.stats()["journal.fsyncs"]
        await asyncio.sleep(0.6)  # quiet now: the interval still syncs the last group
        assert manager.pipeline.stats()["journal.fsyncs"] > synced  # type: ignore[operator]
        await agent.close()
    assert event_ids(tmp_path) == ["iv-0", "iv-1", "iv2-0", "iv2-1"]


async def test_enrollment_judges_active_by_the_configured_heartbeat(tmp_path: Path) -> None:
    """[remote].heartbeat_interval_s reaches the enrollment listener's "is it connected?"."""
    import json
    import ssl
    import time

    async with running_manager(
        tmp_path,
        remote={"heartbeat_interval_s": 60.0, "idle_timeout_s": 300.0},
        enrollment={
            "enabled": True,
            "port": 0,
            "use_password": False,
            "listen_address": "127.0.0.1",
        },
    ) as manager:
        enrollment = manager._enrollment
        assert enrollment is not None
        # A state file as an older manager wrote it (no interval recorded): agent
        # 001 connected and last heard 100 s ago, inside two 60 s heartbeats.
        doc = {
            "version": 1,
            "updated": time.time(),
            "agents": {"001": {"connected": True, "last_seen": time.time() - 100}},
        }
        (tmp_path / "var" / "agent-state.json").write_text(json.dumps(doc))
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", enrollment.port, ssl=context)
        writer.write(b"OSSEC A:'web-1'\n")
        reply = (await reader.read(4096)).decode()
        writer.close()
        # With a fixed 10 s heartbeat it would read "disconnected for 1 minute".
        assert reply.startswith("ERROR: ") and "is connected" in reply, reply
