"""The sender over real loopback TCP against a small manager speaking the real protocol."""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mini_manager import AGENT_ID, AGENT_KEY, MiniManager

from trailwarden.agent.config import DeliveryConfig, ManagerAddress
from trailwarden.agent.identity import AgentIdentity, IdentityError
from trailwarden.agent.positions import FileKind, FilePosition, PositionStore
from trailwarden.agent.progress import Progress
from trailwarden.agent.sender import Backoff, Sender
from trailwarden.agent.spool import Spool
from trailwarden.agent.status import Counters
from trailwarden.common.wire import Record

IDENTITY = AgentIdentity(AGENT_ID, "test-agent", AGENT_KEY.encode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SenderHarness:
    def __init__(self, data_dir: Path, ports: list[int], **delivery: object) -> None:
        options: dict[str, object] = {
            "backoff_initial_ms": 20,
            "backoff_max_ms": 200,
            "connect_timeout_s": 2.0,
            "heartbeat_interval_s": 5.0,
        } | delivery
        self.delivery = DeliveryConfig(**options)  # type: ignore[arg-type]
        self.data_dir = data_dir
        self.addresses = tuple(ManagerAddress("127.0.0.1", p) for p in ports)
        self.identity: AgentIdentity | Exception = IDENTITY
        self.counters = Counters()
        self.encoder = ThreadPoolExecutor(1)
        self.store = PositionStore.open(data_dir)
        self.spool = Spool.open(
            data_dir / "spool",
            max_bytes=1 << 30,
            segment_bytes=1 << 20,
            acked_seq=self.store.acked_seq,
        )
        self.progress = Progress(self.store, self.spool)
        self.sender = Sender(
            self.addresses,
            self._identity,
            self.progress,
            self.delivery,
            self.counters,
            encoder=self.encoder,
        )
        self.task: asyncio.Future[None] | None = None

    def _identity(self) -> AgentIdentity:
        if isinstance(self.identity, Exception):
            raise self.identity
        return self.identity

    def spool_batches(self, prefix: str, batches: int, per_batch: int = 5) -> list[int]:
        seqs = []
        for b in range(batches):
            records = [
                Record(f"/logs/{prefix}", f'{{"id":"{prefix}-{b}-{i}"}}') for i in range(per_batch)
            ]
            update = (f"fp-{prefix}", FilePosition(FileKind.OBJECT, (b + 1) * per_batch))
            seqs.append(self.spool.append(records, [update]).seq)
        self.sender.wake()
        return seqs

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.sender.run())

    async def stop(self) -> None:
        self.sender.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
        self.spool.close()
        self.store.close()
        self.encoder.shutdown()


def texts(manager: MiniManager) -> list[str]:
    return [r.text for r in manager.received().analysed]


async def test_batches_are_delivered_in_order_and_acks_move_positions(tmp_path: Path) -> None:
    m = MiniManager()
    await m.start()
    h = SenderHarness(tmp_path, [m.port])
    h.spool_batches("a", 20)
    h.start()
    try:
        await m.wait_for(lambda: len(m.received().analysed) == 100)
        assert await h.sender.drain(5)
        assert sorted(m.received().batches) == list(range(1, 21))
        assert h.store.acked_seq == 20
        assert h.store.get("fp-a") == FilePosition(FileKind.OBJECT, 100)
        assert h.sender.view.state == "connected"
        assert h.counters.batches_acked == 20 and h.counters.records_acked == 100
        assert h.spool.unacked_batches == 0
    finally:
        await h.stop()
        await m.stop()


async def test_manager_down_then_back_delivers_everything_once(tmp_path: Path) -> None:
    port = free_port()
    h = SenderHarness(tmp_path, [port])
    h.spool_batches("down", 5)
    h.start()
    await asyncio.sleep(0.5)  # several refused attempts, with backoff
    assert h.sender.view.state != "connected"
    assert "cannot connect" in (h.sender.view.last_error or "")
    assert h.counters.connection_failures >= 2
    h.spool_batches("more", 3)  # reading goes on meanwhile
    m = MiniManager(port=port)
    await m.start()
    try:
        await m.wait_for(lambda: len(m.received().analysed) == 40)
        assert await h.sender.drain(5)
        assert sorted(m.received().batches) == list(range(1, 9))
        assert m.received().duplicates == 0
    finally:
        await h.stop()
        await m.stop()


async def test_a_manager_killed_before_acking_gets_the_same_batches_again(tmp_path: Path) -> None:
    m = MiniManager()
    await m.start()
    m.hold_acks = True  # analyses, then dies before acknowledging
    h = SenderHarness(tmp_path, [m.port])
    h.spool_batches("k", 6)
    h.start()
    try:
        await m.wait_for(lambda: len(m.received().batches) == 6)
        await m.kill()
        assert h.store.acked_seq == 0
        m.hold_acks = False
        await m.start()  # same port, same memory: the durable part of a manager
        await m.wait_for(lambda: m.received().duplicates == 6)
        assert await h.sender.drain(5)
        got = m.received()
        assert got.reused == []  # the same seqs carried the same records
        assert len(texts(m)) == 30 and len(set(texts(m))) == 30
        assert h.store.acked_seq == 6
    finally:
        await h.stop()
        await m.stop()


async def test_no_ack_in_time_reconnects_and_resends(tmp_path: Path) -> None:
    m = MiniManager()
    await m.start()
    m.hold_acks = True
    h = SenderHarness(tmp_path, [m.port], ack_timeout_s=0.3)
    h.spool_batches("slow", 2)
    h.start()
    try:
        await m.wait_for(lambda: m.connections >= 2, limit_s=5)
        assert "no acknowledgement" in (h.sender.view.last_error or "")
        m.hold_acks = False
        await m.wait_for(lambda: h.spool.unacked_batches == 0, limit_s=5)
        assert m.received().duplicates >= 2 and m.received().reused == []
    finally:
        await h.stop()
        await m.stop()


async def test_failover_to_the_next_manager_and_back_to_the_first(tmp_path: Path) -> None:
    primary_port = free_port()
    backup = MiniManager()
    await backup.start()
    h = SenderHarness(tmp_path, [primary_port, backup.port])
    h.spool_batches("f", 3)
    h.start()
    primary = MiniManager(port=primary_port)
    try:
        await backup.wait_for(lambda: len(backup.received().analysed) == 15)
        assert h.sender.view.manager == f"127.0.0.1:{backup.port}"
        await primary.start()
        await backup.kill()  # the backup goes away: the primary is tried first again
        h.spool_batches("g", 2)
        await primary.wait_for(lambda: len(primary.received().analysed) == 10)
        assert h.sender.view.manager == f"127.0.0.1:{primary_port}"
        assert sorted(primary.received().batches) == [4, 5]
    finally:
        await h.stop()
        await primary.stop()
        await backup.stop()


async def test_rebalance_moves_to_the_next_manager(tmp_path: Path) -> None:
    first, second = MiniManager(), MiniManager()
    await first.start()
    await second.start()
    first.close_after_batches = 1
    h = SenderHarness(tmp_path, [first.port, second.port], max_in_flight=1)
    h.spool_batches("rb", 4)
    h.start()
    try:
        await second.wait_for(lambda: h.spool.unacked_batches == 0)
        assert len(first.received().batches) == 1
        assert sorted(second.received().batches) == [2, 3, 4]
        assert "rebalance" in (h.sender.view.last_error or "")
    finally:
        await h.stop()
        await first.stop()
        await second.stop()


async def test_an_unknown_agent_is_told_to_enroll_and_retried_slowly(tmp_path: Path) -> None:
    m = MiniManager(keys={})
    await m.start()
    h = SenderHarness(tmp_path, [m.port], backoff_initial_ms=10, backoff_max_ms=300)
    h.spool_batches("u", 1)
    h.start()
    try:
        await m.wait_for(lambda: m.connections >= 1)
        await asyncio.sleep(0.2)
        error = h.sender.view.last_error or ""
        assert "UNKNOWN_AGENT" in error and "enroll" in error
        connections = m.connections
        await asyncio.sleep(0.1)
        assert m.connections <= connections + 1  # not hammering the manager
        m.keys[AGENT_ID] = AGENT_KEY  # enrolled: the next attempt succeeds
        await m.wait_for(lambda: h.spool.unacked_batches == 0, limit_s=5)
    finally:
        await h.stop()
        await m.stop()


async def test_a_missing_key_is_reported_and_retried(tmp_path: Path) -> None:
    m = MiniManager()
    await m.start()
    h = SenderHarness(tmp_path, [m.port])
    h.identity = IdentityError("/data/agent.key: no agent key; enroll this agent first")
    h.spool_batches("nokey", 1)
    h.start()
    try:
        await asyncio.sleep(0.2)
        assert "enroll this agent first" in (h.sender.view.last_error or "")
        assert m.connections == 0
        h.identity = IDENTITY
        await m.wait_for(lambda: h.spool.unacked_batches == 0, limit_s=5)
    finally:
        await h.stop()
        await m.stop()


async def test_rate_limit_paces_records(tmp_path: Path) -> None:
    m = MiniManager()
    await m.start()
    h = SenderHarness(tmp_path, [m.port], rate_limit_eps=400, max_batch_records=100)
    h.spool_batches("rl", 20, per_batch=50)  # 1000 records, burst 400
    started = time.monotonic()
    h.start()
    try:
        await m.wait_for(lambda: len(m.received().analysed) == 1000, limit_s=10)
        elapsed = time.monotonic() - started
        assert elapsed >= (1000 - 400) / 400 * 0.9
    finally:
        await h.stop()
        await m.stop()


async def test_heartbeats_keep_an_idle_connection_alive(tmp_path: Path) -> None:
    m = MiniManager()
    await m.start()
    h = SenderHarness(tmp_path, [m.port], heartbeat_interval_s=0.1)
    h.start()
    try:
        await m.wait_for(lambda: m.heartbeats >= 3, limit_s=5)
        assert m.connections == 1
    finally:
        await h.stop()
        await m.stop()


async def test_stop_sends_close_and_keeps_unacknowledged_batches(tmp_path: Path) -> None:
    m = MiniManager()
    await m.start()
    m.hold_acks = True
    h = SenderHarness(tmp_path, [m.port])
    h.spool_batches("st", 3)
    h.start()
    await m.wait_for(lambda: len(m.received().batches) == 3)
    assert not await h.sender.drain(0.2)
    spool_dir = h.spool.directory
    await h.stop()
    await m.wait_for(lambda: m.connections >= 1 and not m.writers)
    assert h.sender.view.state == "stopped"
    reopened = Spool.open(spool_dir, max_bytes=1 << 30, segment_bytes=1 << 20)
    assert reopened.unacked_batches == 3
    reopened.close()
    await m.stop()


def test_backoff_is_jittered_exponential_and_capped() -> None:
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    for n, delay in enumerate(delays[:4]):
        assert 0.1 * 2**n / 2 <= delay <= 0.1 * 2**n
    assert all(0.5 <= d <= 1.0 for d in delays[4:])
    assert len(set(delays)) > 1
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    backoff.give_up_soon()
    assert backoff.next_delay() >= 0.5


@pytest.mark.parametrize("bad", [0])
def test_a_sender_needs_a_manager(tmp_path: Path, bad: int) -> None:
    with pytest.raises(ValueError, match="at least one manager"):
        Sender((), lambda: IDENTITY, None, DeliveryConfig(), Counters(), encoder=None)  # type: ignore[arg-type]
