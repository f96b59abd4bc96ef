"""Bad input never crashes the manager: each case over a real loopback socket.

Every case checks three things: the peer gets the right answer (or is cut),
the reason is counted in the server's stats, and a well-behaved agent is
still served afterwards. Logging once per peer is checked where the same
peer misbehaves twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from pathlib import Path

import pytest
from agent_client import TestAgent, records
from manager_harness import DEFAULT_AGENTS, key_of, running_manager, write_keys

from trailwarden.common.wire import (
    Batch,
    Close,
    CloseReason,
    Error,
    ErrorCode,
    Heartbeat,
)
from trailwarden.common.wire.crypto import TAG_BYTES
from trailwarden.manager.run import Manager


async def assert_still_serving(manager: Manager, seq: int = 1) -> None:
    agent = TestAgent("003", key_of("003"), manager.remote.port)
    await agent.connect()
    await agent.send_batch(seq, records(1, f"ok{seq}"))
    await agent.wait_ack(seq)
    await agent.close()


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def plain_error(data: bytes) -> Error:
    """Decode the server's one plaintext Error frame."""
    from trailwarden.common.wire.codec import decode_plain_error, unpack_plain

    (length,) = struct.unpack_from("<I", data)
    _, fields = unpack_plain(data[4 : 4 + length])
    return decode_plain_error(fields)


async def raw_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_unknown_agent_is_refused_and_counted(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        agent = TestAgent("042", "z" * 64, manager.remote.port)
        event = await agent.handshake()
        agent.abort()
        assert isinstance(event, Error) and event.code is ErrorCode.UNKNOWN_AGENT
        assert not event.code.retriable
        assert manager.remote.stats()["errors.unknown_agent"] == 1
        await assert_still_serving(manager)


async def test_wrong_key_fails_authentication(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        agent = TestAgent("001", "not-the-key", manager.remote.port)
        event = await agent.handshake()
        agent.abort()
        assert isinstance(event, Error) and event.code is ErrorCode.AUTH_FAILED
        assert manager.remote.stats()["errors.auth_failed"] == 1
        await assert_still_serving(manager)


async def test_agent_from_an_address_its_key_does_not_allow(tmp_path: Path) -> None:
    agents = [*DEFAULT_AGENTS, ("004", "remote-only", "10.0.0.0/8")]
    async with running_manager(tmp_path, agents=agents) as manager:
        agent = TestAgent("004", key_of("004"), manager.remote.port)
        event = await agent.handshake()
        agent.abort()
        assert isinstance(event, Error) and event.code is ErrorCode.UNKNOWN_AGENT
        assert manager.remote.stats()["errors.unknown_agent"] == 1


async def test_garbage_is_answered_with_an_error_and_logged_once_per_peer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trailwarden.manager.server")
    async with running_manager(tmp_path) as manager:
        for _ in range(2):
            reader, writer = await raw_connection(manager.remote.port)
            writer.write(b"\x10\x00\x00\x00GET / HTTP/1.1\r\n\r\n")
            answer = await read_until_closed(reader)
            writer.close()
            error = plain_error(answer)
            assert error.code is ErrorCode.PROTOCOL_ERROR
        assert manager.remote.stats()["errors.protocol_error"] == 2
        lines = [r for r in caplog.records if "[protocol_error]" in r.getMessage()]
        assert len(lines) == 1
        assert "127.0.0.1" in lines[0].getMessage()
        await assert_still_serving(manager)


async def test_wazuh_agent_gets_a_precise_error(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        reader, writer = await raw_connection(manager.remote.port)
        body = b"!001!#AES:" + bytes(32)
        writer.write(struct.pack("<I", len(body)) + body)
        error = plain_error(await read_until_closed(reader))
        writer.close()
        assert "Wazuh 4.x agent protocol" in error.message
        assert manager.remote.stats()["errors.protocol_error"] == 1


async def test_oversized_frame_is_refused_before_it_is_buffered(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        reader, writer = await raw_connection(manager.remote.port)
        # A 1 GiB frame announced before the handshake: refused on the header alone.
        writer.write(struct.pack("<I", 1 << 30) + b"\x00" * 100)
        error = plain_error(await read_until_closed(reader))
        writer.close()
        assert error.code is ErrorCode.PROTOCOL_ERROR
        assert "exceeds" in error.message
        assert manager.remote.stats()["errors.oversized_frame"] == 1
        await assert_still_serving(manager)


async def test_oversized_frame_inside_the_session(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        assert agent.writer is not None
        agent.writer.write(struct.pack("<I", 3 * 1024 * 1024))
        event = await agent.next_event()
        assert isinstance(event, Error) and event.code is ErrorCode.PROTOCOL_ERROR
        assert "exceeds" in event.message
        agent.abort()
        assert manager.remote.stats()["errors.oversized_frame"] == 1
        await assert_still_serving(manager)


async def test_tampered_frame_fails_integrity(tmp_path: Path) -> None:
    async with running_manager(tmp_path) as manager:
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        assert agent.writer is not None
        frame = bytearray(agent.conn.send(Heartbeat()))
        frame[-TAG_BYTES] ^= 1
        agent.writer.write(bytes(frame))
        event = await agent.next_event()
        assert isinstance(event, Error) and event.code is ErrorCode.INTEGRITY
        agent.abort()
        assert manager.remote.stats()["errors.integrity"] == 1
        await assert_still_serving(manager)


async def test_slowloris_during_the_handshake_is_cut(tmp_path: Path) -> None:
    async with running_manager(tmp_path, remote={"handshake_timeout_s": 0.4}) as manager:
        reader, writer = await raw_connection(manager.remote.port)
        hello = TestAgent("001", key_of("001"), 0).conn.data_to_send()
        cut = False
        for byte in hello[:-1]:  # one byte every 0.1 s, never the whole hello
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                cut = True
                break
            await asyncio.sleep(0.1)
            if reader.at_eof():
                cut = True
                break
        data = await read_until_closed(reader, timeout_s=2.0)
        writer.close()
        assert cut or data == b""
        assert manager.remote.stats()["errors.handshake_timeout"] == 1
        await assert_still_serving(manager)


async def test_slowloris_inside_the_session_is_cut(tmp_path: Path) -> None:
    async with running_manager(
        tmp_path, remote={"idle_timeout_s": 0.6, "heartbeat_interval_s": 0.2}
    ) as manager:
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        assert agent.writer is not None
        frame = agent.conn.send(Batch(1, tuple(records(1, "slow"))))
        answer = asyncio.create_task(agent.next_event(timeout_s=3.0))
        for byte in frame[:40]:  # bytes keep coming, but a frame never completes
            if answer.done():
                break
            agent.writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
        event = await answer
        closed_with = event if isinstance(event, Close) else None
        agent.abort()
        assert closed_with is not None and closed_with.reason is CloseReason.IDLE_TIMEOUT
        assert manager.remote.stats()["errors.idle_timeout"] == 1
        await assert_still_serving(manager)


async def test_silent_agent_is_closed_as_idle(tmp_path: Path) -> None:
    async with running_manager(
        tmp_path, remote={"idle_timeout_s": 0.5, "heartbeat_interval_s": 0.2}
    ) as manager:
        agent = TestAgent("001", key_of("001"), manager.remote.port)
        await agent.connect()
        event = await agent.next_event(timeout_s=3.0)
        assert isinstance(event, Close) and event.reason is CloseReason.IDLE_TIMEOUT
        agent.abort()
        assert manager.remote.stats()["errors.idle_timeout"] == 1


async def test_handshake_flood_is_bounded(tmp_path: Path) -> None:
    async with running_manager(
        tmp_path, remote={"max_handshakes": 4, "handshake_timeout_s": 0.5}
    ) as manager:
        port = manager.remote.port
        silent = [await raw_connection(port) for _ in range(4)]
        await asyncio.sleep(0.1)
        refused = []
        for _ in range(3):
            reader, writer = await raw_connection(port)
            refused.append(plain_error(await read_until_closed(reader)))
            writer.close()
        assert all(e.code is ErrorCode.OVERLOADED for e in refused)
        assert manager.remote.stats()["errors.handshake_limit"] == 3
        # The silent ones are cut at the handshake deadline; then agents get in again.
        for reader, writer in silent:
            assert await read_until_closed(reader, timeout_s=3.0) == b""
            writer.close()
        assert manager.remote.stats()["errors.handshake_timeout"] == 4
        await assert_still_serving(manager)


async def test_connection_cap(tmp_path: Path) -> None:
    async with running_manager(tmp_path, remote={"max_connections": 2, "max_handshakes": 2}) as m:
        port = m.remote.port
        first = TestAgent("001", key_of("001"), port)
        second = TestAgent("002", key_of("002"), port)
        await first.connect()
        await second.connect()
        reader, writer = await raw_connection(port)
        error = plain_error(await read_until_closed(reader))
        writer.close()
        assert error.code is ErrorCode.OVERLOADED and error.code.retriable
        assert m.remote.stats()["errors.over_capacity"] == 1
        await first.close()
        await asyncio.sleep(0.1)
        await assert_still_serving(m)
        await second.close()


async def test_removed_agent_is_disconnected_within_a_heartbeat(tmp_path: Path) -> None:
    async with running_manager(
        tmp_path, remote={"heartbeat_interval_s": 0.3, "idle_timeout_s": 5.0}
    ) as manager:
        agent = TestAgent("002", key_of("002"), manager.remote.port)
        await agent.connect()
        await agent.send_batch(1, records(1, "before"))
        await agent.wait_ack(1)
        write_keys(tmp_path, [a for a in DEFAULT_AGENTS if a[0] != "002"])
        event = await agent.next_event(timeout_s=2.0)
        assert isinstance(event, Close) and event.reason is CloseReason.AGENT_REMOVED
        agent.abort()
        assert manager.remote.stats()["errors.agent_removed"] == 1
        again = TestAgent("002", key_of("002"), manager.remote.port)
        refused = await again.handshake()
        again.abort()
        assert isinstance(refused, Error) and refused.code is ErrorCode.UNKNOWN_AGENT
        await assert_still_serving(manager)


async def test_unparseable_client_keys_keeps_the_previous_table(tmp_path: Path) -> None:
    async with running_manager(tmp_path, remote={"heartbeat_interval_s": 0.2}) as manager:
        keys_file = tmp_path / "etc" / "client.keys"
        keys_file.write_text("this is not a keys file\n")
        await asyncio.sleep(0.6)
        assert manager.remote.stats()["keys_reload_errors"] >= 1
        await assert_still_serving(manager)


async def test_garbage_after_the_handshake_from_many_peers_never_stops_the_server(
    tmp_path: Path,
) -> None:
    async with running_manager(tmp_path) as manager:
        port = manager.remote.port

        async def abuse(n: int) -> None:
            reader, writer = await raw_connection(port)
            writer.write(bytes((n * 37 + i) % 256 for i in range(300)))
            await read_until_closed(reader)
            writer.close()

        await asyncio.gather(*(abuse(n) for n in range(20)))
        stats = manager.remote.stats()
        assert sum(v for k, v in stats.items() if k.startswith("errors.")) == 20  # type: ignore[misc]
        await assert_still_serving(manager)


async def test_peer_that_does_not_read_is_cut(tmp_path: Path) -> None:
    """Acks pile up for a peer that never reads: past max_unsent_bytes it is cut."""
    import socket

    from manager_harness import config_for

    from trailwarden.manager.flow_control import FlowControl
    from trailwarden.manager.pipeline import AckingPipeline
    from trailwarden.manager.server import RemoteServer

    write_keys(tmp_path, DEFAULT_AGENTS)
    config = config_for(tmp_path, remote={"max_unsent_bytes": 4096})
    flow = FlowControl(10**6, 1 << 30)
    server = RemoteServer(config.remote, tmp_path, AckingPipeline(flow), flow)
    await server.start()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        agent = TestAgent("001", key_of("001"), server.port)
        agent.reader, agent.writer = await asyncio.open_connection(sock=sock)
        agent.writer.write(agent.conn.data_to_send())
        await agent.next_event()  # Established
        one = records(1, "r", size=300)
        with contextlib.suppress(ConnectionError, TimeoutError):
            for seq in range(1, 20_001):  # ~30 bytes of Ack each, never read
                agent.writer.write(agent.conn.send(Batch(seq, tuple(one))))
                # One batch per manager read: the batches of one read share one Ack.
                async with asyncio.timeout(5):
                    while (stats := server.stats())["batches_received"] < seq:
                        if stats.get("errors.slow_reader"):
                            break
                        await asyncio.sleep(0)
                if stats.get("errors.slow_reader"):
                    break
        for _ in range(30):
            if server.stats().get("errors.slow_reader"):
                break
            await asyncio.sleep(0.1)
        agent.abort()
        assert server.stats()["errors.slow_reader"] == 1
        for _ in range(30):
            if server.stats()["connections_open"] == 0:
                break
            await asyncio.sleep(0.1)
        assert server.stats()["connections_open"] == 0
    finally:
        server.stop_accepting()
        await server.close_sessions(2)
        await server.close(2)
