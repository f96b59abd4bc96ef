"""Exactly once across a manager that dies: real processes, real SIGKILL, real sockets.

The manager runs as ``trailwarden-manager start --config`` in a subprocess.
An agent (``agent_client.TestAgent``) resends what was not acknowledged, as
the real agent does from its spool. Afterwards every record must have exactly
one alert in alerts.json and alerts.log, and the files must be well formed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_client import TestAgent, records
from manager_harness import DEFAULT_AGENTS, event_ids, key_of, log_blocks, write_keys
from servers import free_port

from trailwarden.common.wire import Ack

HERE = Path(__file__).resolve().parent
START_DEADLINE_S = 30.0


class ManagerProcess:
    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, crash_point: str | None = None) -> None:
        if crash_point is None:
            argv = [
                sys.executable,
                "-m",
                "trailwarden.manager.cli",
                "start",
                "--config",
                str(self.config),
            ]
        else:
            argv = [sys.executable, str(HERE / "crash_manager.py"), str(self.config), crash_point]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)

    def stop(self, sig: int = signal.SIGKILL) -> int:
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(30)
        finally:
            self.proc = None

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout_s)
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ManagerProcess, int, Path]]:
    data_dir = tmp_path / "data"
    write_keys(data_dir, DEFAULT_AGENTS)
    port = free_port()
    config = tmp_path / "manager.toml"
    config.write_text(
        f'[manager]\ndata_dir = "{data_dir}"\nname = "crash-test"\nstatus_interval_s = 0.2\n'
        f'[remote]\nlisten_address = "127.0.0.1"\nport = {port}\n'
        "[enrollment]\nenabled = false\n"
    )
    process = ManagerProcess(config, tmp_path / "manager.log")
    try:
        yield process, port, data_dir
    finally:
        if process.proc is not None:
            process.stop(signal.SIGKILL)


async def connect(port: int, process: ManagerProcess) -> TestAgent:
    """Connect as agent 001 once the manager listens."""
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        agent = TestAgent("001", key_of("001"), port)
        try:
            await agent.connect()
            return agent
        except OSError:
            agent.abort()
            assert process.proc is not None and process.proc.poll() is None, process.log()
            assert time.monotonic() < deadline, f"manager not listening:\n{process.log()}"
            await asyncio.sleep(0.05)


def batch(seq: int) -> list:  # type: ignore[type-arg]
    return records(3, f"b{seq}")


def assert_exactly_once(data_dir: Path, seqs: range) -> None:
    expected = Counter(f"b{seq}-{n}" for seq in seqs for n in range(3))
    assert Counter(event_ids(data_dir)) == expected
    assert log_blocks(data_dir) == sum(expected.values())
    text = (data_dir / "logs" / "alerts" / "alerts.log").read_text()
    assert text.endswith("\n\n")


def pipeline_stats(data_dir: Path) -> dict:  # type: ignore[type-arg]
    doc = json.loads((data_dir / "var" / "status.json").read_text())
    return doc["components"]["pipeline"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("fsync", ["batch", "never"])
@pytest.mark.parametrize(
    ("point", "resend_is_duplicate"),
    [
        ("after_begin", False),
        ("mid_write", False),
        ("after_write", True),
        ("after_commit", True),
    ],
)
async def test_death_at_each_point_of_the_commit_path(
    setup: tuple[ManagerProcess, int, Path], point: str, resend_is_duplicate: bool, fsync: str
) -> None:
    """A kill needs no fsync to be survived: every step is in the kernel once written."""
    process, port, data_dir = setup
    with process.config.open("a") as config:
        config.write(f'[alerts]\nfsync = "{fsync}"\n')
    process.start(crash_point=point)
    agent = await connect(port, process)
    await agent.send_batch(1, batch(1))
    code = await asyncio.to_thread(process.wait)
    assert code == 137, process.log()
    with contextlib.suppress(Exception):
        while True:  # nothing may have been acknowledged
            event = await agent.next_event(timeout_s=1.0)
            assert not isinstance(event, Ack)
    agent.abort()

    process.start()
    agent = await connect(port, process)
    await agent.send_batch(1, batch(1))  # the resend, same sequence, same records
    await agent.send_batch(2, batch(2))
    await agent.wait_ack(2)
    await agent.close()
    await asyncio.sleep(0.5)  # one more status write
    stats = pipeline_stats(data_dir)
    assert stats["duplicate_batches"] == (1 if resend_is_duplicate else 0)
    assert process.stop(signal.SIGTERM) == 0, process.log()
    assert_exactly_once(data_dir, range(1, 3))
    assert "Batch journal recovered" in process.log()
    if not resend_is_duplicate and point != "after_begin":
        assert "rolled back" in process.log()


async def test_sigkill_under_load_loses_and_duplicates_nothing(
    setup: tuple[ManagerProcess, int, Path],
) -> None:
    process, port, data_dir = setup
    last, window, kills = 120, 6, 3
    acked = 0
    for run in range(kills + 1):
        process.start()
        agent = await connect(port, process)
        goal = min(acked + 25, last) if run < kills else last
        next_seq = acked + 1  # everything not acknowledged is sent again
        while max(acked, agent.acked) < goal:
            while next_seq <= last and next_seq - max(acked, agent.acked) <= window:
                await agent.send_batch(next_seq, batch(next_seq))
                next_seq += 1
            event = await agent.next_event(timeout_s=10)
            assert isinstance(event, Ack), event
        acked = max(acked, agent.acked)
        if run < kills:
            # Batches are in flight at every stage of the pipeline now.
            process.stop(signal.SIGKILL)
        agent.abort()
    assert process.stop(signal.SIGTERM) == 0, process.log()
    assert_exactly_once(data_dir, range(1, last + 1))
    assert process.log().count("Batch journal recovered") == kills + 1
