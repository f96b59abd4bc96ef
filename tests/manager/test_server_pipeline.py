"""The server with its real pipeline over loopback: analysis, durable acks, duplicates, groups."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from agent_client import TestAgent, records
from manager_harness import alert_lines, event_ids, key_of, log_blocks, running_manager

from trailwarden.common.wire import Ack, Close, CloseReason, Heartbeat
from trailwarden.manager import pipeline as pipeline_module
from trailwarden.manager.outputs import RenderedAlert, Stats


async def test_batch_is_analysed_written_and_acknowledged(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        established = await agent.connect()
        assert established.agent_id == "001"
        await agent.send_batch(1, records(5, "b1"))
        await agent.wait_ack(1)
        await agent.close()
    alerts = alert_lines(tmp_path)
    assert [a["data"]["aws"]["eventID"] for a in alerts] == [f"b1-{n}" for n in range(5)]
    first = alerts[0]
    # The agent and its location as remoted builds them: "[001] (web-1) any->" + location.
    assert first["agent"] == {"id": "001", "name": "web-1"}
    assert first["location"] == "AWSLogs/123456789012/CloudTrail/us-east-1/f.json.gz"
    assert first["rule"]["id"] == "80301"
    assert first["manager"] == {"name": "test-manager"}
    log_text = (tmp_path / "logs" / "alerts" / "alerts.log").read_text()
    assert "(web-1) any->AWSLogs/123456789012/CloudTrail/us-east-1/f.json.gz" in log_text
    assert log_blocks(tmp_path) == 5


async def test_ack_waits_until_the_alerts_are_durable(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        files = manager._files
        assert files is not None
        release = asyncio.Event()
        flushed: list[int] = []
        real_flush = files.flush

        async def slow_flush(timeout_s: float | None = None) -> bool:
            await release.wait()
            ok = await real_flush(timeout_s)
            flushed.append(files.stats()["fsyncs"])  # type: ignore[arg-type]
            return ok

        files.flush = slow_flush  # type: ignore[method-assign]
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        await agent.send_batch(1, records(3, "d"))
        # The alerts are in the file (written) but not yet fsynced: no Ack may come.
        with pytest.raises(TimeoutError):
            await agent.next_event(timeout_s=0.5)
        assert len(alert_lines(tmp_path)) == 3
        release.set()
        event = await agent.next_event()
        assert event == Ack(1)
        assert flushed and flushed[0] >= 1
        await agent.close()


async def test_resent_batches_are_acknowledged_without_a_second_analysis(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        port = manager.remote.port
        agent = TestAgent("001", key_of("001"), port)
        await agent.connect()
        for seq in (1, 2, 3):
            await agent.send_batch(seq, records(4, f"s{seq}"))
        await agent.wait_ack(3)
        agent.abort()
        # A new connection resends 2 and 3 (the agent never saw their acks), then 4.
        again = TestAgent("001", key_of("001"), port)
        await again.connect()
        await again.send_batch(2, records(4, "s2"))
        await again.send_batch(3, records(4, "s3"))
        await again.send_batch(4, records(4, "s4"))
        await again.wait_ack(4)
        stats = manager.pipeline.stats() if manager.pipeline else {}
        assert stats["duplicate_batches"] == 2
        assert stats["batches_analysed"] == 4
        await again.close()
    ids = event_ids(tmp_path)
    assert Counter(ids) == Counter(f"s{s}-{n}" for s in (1, 2, 3, 4) for n in range(4))


async def test_resend_of_a_batch_still_being_written_waits_for_it(tmp_path: Path) -> None:
    """The first copy is in the pipeline when the agent reconnects and resends it."""
    async with running_manager(tmp_path) as manager:
        files = manager._files
        assert files is not None
        release = asyncio.Event()
        real_flush = files.flush

        async def held_flush(timeout_s: float | None = None) -> bool:
            await release.wait()
            return await real_flush(timeout_s)

        files.flush = held_flush  # type: ignore[method-assign]
        port = manager.remote.port
        first = TestAgent("001", key_of("001"), port)
        await first.connect()
        await first.send_batch(7, records(3, "f"))
        await asyncio.sleep(0.2)
        second = TestAgent("001", key_of("001"), port)
        await second.connect()
        # The older connection is told it was replaced.
        closed = await first.next_event()
        assert closed == Close(CloseReason.SUPERSEDED, closed.message)  # type: ignore[union-attr]
        first.abort()
        await second.send_batch(7, records(3, "f"))
        with pytest.raises(TimeoutError):
            await second.next_event(timeout_s=0.3)
        release.set()
        assert await second.next_event() == Ack(7)
        assert manager.pipeline is not None
        assert manager.pipeline.stats()["duplicate_batches"] == 1
        await second.close()
    assert event_ids(tmp_path) == ["f-0", "f-1", "f-2"]


async def test_many_agents_share_group_commits(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        files = manager._files
        assert files is not None
        release = asyncio.Event()
        real_flush = files.flush

        async def gated_flush(timeout_s: float | None = None) -> bool:
            await release.wait()
            return await real_flush(timeout_s)

        files.flush = gated_flush  # type: ignore[method-assign]
        port = manager.remote.port
        agents = [TestAgent(i, key_of(i), port) for i in ("001", "002", "003")]
        for agent in agents:
            await agent.connect()
        for seq in range(1, 6):
            for agent in agents:
                await agent.send_batch(seq, records(2, f"{agent.agent_id}-{seq}"))
        await asyncio.sleep(0.3)  # all 15 batches analysed while the first group waits
        release.set()
        for agent in agents:
            await agent.wait_ack(5)
        assert manager.pipeline is not None
        stats = manager.pipeline.stats()
        assert stats["batches_analysed"] == 15
        # One group waited for the disk; everything else went into the next one.
        assert stats["groups"] <= 3
        assert stats["journal.groups_committed"] == stats["groups"]
        for agent in agents:
            await agent.close()
    assert len(event_ids(tmp_path)) == 30


async def test_heartbeats_keep_an_agent_alive_and_acks_are_cumulative(tmp_path: Path) -> None:
    async with running_manager(
        tmp_path, remote={"idle_timeout_s": 0.6, "heartbeat_interval_s": 0.2}
    ) as manager:
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        for _ in range(8):  # 1.6 s, well past the idle deadline, kept alive by heartbeats
            await agent.heartbeat()
            await asyncio.sleep(0.2)
        for seq in (1, 2, 3):
            await agent.send_batch(seq, records(1, f"h{seq}"))
        await agent.wait_ack(3)
        assert manager.remote.stats().get("errors.idle_timeout", 0) == 0
        await agent.close()


class RecordingSink:
    """An AlertSink that keeps what it is given (stands in for the indexer/MQTT here)."""

    name = "recording"

    def __init__(self) -> None:
        self.alerts: list[RenderedAlert] = []

    async def start(self) -> None:
        return None

    async def flush(self, timeout_s: float | None = None) -> bool:
        return True

    async def close(self, timeout_s: float) -> None:
        return None

    def stats(self) -> Stats:
        return {"submitted": len(self.alerts)}

    def submit(self, alert: RenderedAlert) -> bool:
        self.alerts.append(alert)
        return True


async def test_network_outputs_get_alerts_after_the_files_with_stable_dedup_keys(
    tmp_path: Path,
) -> None:
    async with running_manager(tmp_path) as manager:
        sink = RecordingSink()
        assert manager.pipeline is not None
        manager.pipeline._sinks = (sink,)
        agent = TestAgent("002", key_of("002"), manager.remote.port)
        await agent.connect()
        await agent.send_batch(41, records(3, "k"))
        await agent.wait_ack(41)
        await agent.close()
    assert [a.dedup_key for a in sink.alerts] == [b"002/41/0", b"002/41/1", b"002/41/2"]
    on_disk = (tmp_path / "logs" / "alerts" / "alerts.json").read_bytes().splitlines(True)
    assert [a.line for a in sink.alerts] == on_disk
    assert sink.alerts[0].fields["agent"]["id"] == "002"  # type: ignore[index]


async def test_analysis_yields_to_the_event_loop_inside_a_large_batch(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        count = 8 * pipeline_module.ANALYSIS_SLICE
        await agent.send_batch(1, records(count, "big", size=300))
        await asyncio.sleep(0)  # let the session read it
        task = asyncio.create_task(ticker())
        await agent.wait_ack(1)
        stop.set()
        await task
        # The analyser gave the loop back at least once per slice of records.
        assert ticks >= 8
        assert manager.pipeline is not None
        assert manager.pipeline.stats()["events_analysed"] == count
        await agent.close()


async def test_heartbeat_only_session_closes_cleanly(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        agent = TestAgent("003", key_of("003"), manager.remote.port)
        await agent.connect()
        await agent.heartbeat()
        seen = await agent.close()
        assert seen and isinstance(seen[-1], Close)
        assert all(isinstance(e, Close | Heartbeat) for e in seen)
    assert alert_lines(tmp_path) == []
