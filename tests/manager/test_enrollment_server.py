"""The enrollment listener over real TLS on 127.0.0.1, with real files in a temporary data dir."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import json
import logging
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trailwarden.agent.enroll import (
    EnrollmentRefused,
    EnrollmentTarget,
    ManagerClosed,
    ManagerIdentityError,
    ManagerUnreachable,
    request_key,
)
from trailwarden.common.enrollment_protocol import MAX_REQUEST_BYTES, Refusal, key_hash
from trailwarden.common.keys import AgentKey, ClientKeys, read_client_keys
from trailwarden.manager.agent_registry import AgentRegistry
from trailwarden.manager.agents_view import AgentState
from trailwarden.manager.enrollment import (
    EnrollmentConfig,
    EnrollmentServer,
    EnrollmentSetupError,
)
from trailwarden.manager.enrollment_config import ForceOptions
from trailwarden.manager.tls_identity import generate_self_signed

KEY_REPLY = re.compile(rb"^OSSEC K:'(\d{3}) ([\w.-]+) (\S+) ([0-9a-f]{64})'$")

BASE = EnrollmentConfig(
    listen_address="127.0.0.1",
    port=0,
    request_timeout_s=2.0,
    wrong_password_delay_s=0.1,
    max_wrong_password_delay_s=0.4,
)


@asynccontextmanager
async def running(
    data_dir: Path, config: EnrollmentConfig = BASE, **kw: Any
) -> AsyncIterator[EnrollmentServer]:
    kw.setdefault("manager_name", "the-manager")
    server = EnrollmentServer(config, data_dir, **kw)
    await server.start()
    try:
        yield server
    finally:
        await server.close(timeout_s=2.0)


def password(data_dir: Path) -> bytes:
    return (data_dir / "etc" / "authd.pass").read_bytes().strip()


def no_verify() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def exchange(port: int, line: bytes, context: ssl.SSLContext | None = None) -> bytes:
    """Send ``line`` over TLS and read until the manager closes: what agent-auth does."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context or no_verify())
    try:
        writer.write(line)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


def target(server: EnrollmentServer, name: str, **kw: Any) -> EnrollmentTarget:
    kw.setdefault("timeout_s", 10)
    return EnrollmentTarget("127.0.0.1", server.port, name=name, **kw)


def write_state(data_dir: Path, agents: dict[str, dict[str, Any]]) -> None:
    (data_dir / "var").mkdir(parents=True, exist_ok=True)
    doc = {"version": 1, "updated": time.time(), "agents": agents}
    (data_dir / "var" / "agent-state.json").write_text(json.dumps(doc))


# -- enrolling --------------------------------------------------------------------------


async def test_wazuh_agent_request_gets_a_key_in_authd_format(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        secret = password(tmp_path).decode()
        line = f"OSSEC PASS: {secret} OSSEC A:'wazuh-agent-1' V:'v4.14.7' IP:'src'\n"
        reply = await exchange(server.port, line.encode())
        match = KEY_REPLY.match(reply)
        assert match is not None, reply
        agent_id, name, ip, key = (g.decode() for g in match.groups())
        assert (agent_id, name, ip) == ("001", "wazuh-agent-1", "127.0.0.1")
        # The key is durable before the reply, readable by Wazuh's parser rules.
        keys = read_client_keys(tmp_path / "etc" / "client.keys")
        assert keys.by_id("001") == AgentKey(agent_id, name, ip, key)
        stats = server.stats()
        assert stats["enrolled"] == 1 and stats["connections"] == 1


async def test_enroll_without_password(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, use_password=False)
    async with running(tmp_path, config) as server:
        agent = await request_key(target(server, "web-1"))
        assert agent.agent_id == "001" and agent.ip == "any"
        reply = await exchange(server.port, b"OSSEC A:'web-2'\n")
        assert reply.startswith(b"OSSEC K:'002 web-2 any ")
    assert not (tmp_path / "etc" / "authd.pass").exists()


async def test_enroll_with_password_and_groups(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        agent = await request_key(
            target(server, "web-1", password=password(tmp_path), groups=("web", "linux"))
        )
    record = AgentRegistry(tmp_path).read().registration(agent.agent_id)
    assert record is not None
    assert record.groups == ("web", "linux") and record.origin == "enrolled from 127.0.0.1"


async def test_wrong_password_is_refused_delayed_and_counted(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        delays = []
        for _ in range(4):
            started = time.monotonic()
            reply = await exchange(server.port, b"OSSEC PASS: guess OSSEC A:'web-1'\n")
            delays.append(time.monotonic() - started)
            assert reply == b"ERROR: Invalid password. Unable to add agent"
        # 0.1, 0.2, 0.4, then capped at 0.4 s.
        assert delays[0] >= 0.1 and delays[1] >= 0.2 and delays[2] >= 0.4 and delays[3] >= 0.4
        missing = await exchange(server.port, b"OSSEC A:'web-1'\n")
        assert missing == b"ERROR: Invalid password. Unable to add agent"
        assert server.stats()["wrong_passwords"] == 5
        assert server.stats()["enrolled"] == 0
    assert not (tmp_path / "etc" / "client.keys").exists()


async def test_client_reports_wrong_and_missing_password(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        with pytest.raises(EnrollmentRefused, match="does not match the manager's") as wrong:
            await request_key(target(server, "web-1", password=b"nope"))
        assert wrong.value.reply.refusal is Refusal.INVALID_PASSWORD
        with pytest.raises(EnrollmentRefused, match="requires a password"):
            await request_key(target(server, "web-1"))


async def test_many_concurrent_enrollments_get_distinct_ids(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        secret = password(tmp_path)
        agents = await asyncio.gather(
            *(request_key(target(server, f"node-{i}", password=secret)) for i in range(40))
        )
    assert sorted(int(a.agent_id) for a in agents) == list(range(1, 41))
    keys = read_client_keys(tmp_path / "etc" / "client.keys")
    assert {a.name: a for a in keys} == {a.name: a for a in agents}


async def test_keys_changed_callback(tmp_path: Path) -> None:
    seen: list[ClientKeys] = []
    async with running(tmp_path, on_keys_changed=seen.append) as server:
        agent = await request_key(target(server, "web-1", password=password(tmp_path)))
    assert seen and seen[-1].by_id(agent.agent_id) == agent


# -- duplicates, force, re-enrollment, removal ------------------------------------------


async def test_duplicate_name_refused_by_default_with_the_reason(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        secret = password(tmp_path)
        first = await request_key(target(server, "web-1", password=secret))
        with pytest.raises(EnrollmentRefused) as caught:
            await request_key(target(server, "web-1", password=secret))
        reply = caught.value.reply
        assert reply.refusal is Refusal.DUPLICATE_NAME
        assert reply.reason.startswith("Duplicate agent name: web-1 (agent 001 'web-1' registered")
        assert "1h after registering" in reply.reason
        assert server.stats()["refused"] == 1
    keys = read_client_keys(tmp_path / "etc" / "client.keys")
    assert list(keys) == [first]


async def test_duplicate_name_replaced_when_force_allows(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, force=ForceOptions(after_registration_time_s=0))
    async with running(tmp_path, config) as server:
        secret = password(tmp_path)
        first = await request_key(target(server, "web-1", password=secret))
        second = await request_key(target(server, "web-1", password=secret))
        assert server.stats()["replaced"] == 1
    assert (first.agent_id, second.agent_id) == ("001", "002")
    text = (tmp_path / "etc" / "client.keys").read_text()
    assert text == f"002 web-1 any {second.key}\n001 !web-1 any {first.key}\n"


async def test_connected_agent_is_not_replaced(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, force=ForceOptions(after_registration_time_s=0))
    async with running(tmp_path, config) as server:
        secret = password(tmp_path)
        await request_key(target(server, "web-1", password=secret))
        write_state(tmp_path, {"001": {"connected": True, "last_seen": time.time()}})
        with pytest.raises(EnrollmentRefused, match="is connected"):
            await request_key(target(server, "web-1", password=secret))
        # Disconnected for two hours: replaceable.
        write_state(tmp_path, {"001": {"connected": False, "last_seen": time.time() - 7200}})
        assert (await request_key(target(server, "web-1", password=secret))).agent_id == "002"


async def test_unreadable_agent_state_replaces_nobody(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, force=ForceOptions(after_registration_time_s=0))
    async with running(tmp_path, config) as server:
        secret = password(tmp_path)
        await request_key(target(server, "web-1", password=secret))
        (tmp_path / "var" / "agent-state.json").write_text("{broken")
        with pytest.raises(EnrollmentRefused, match="is connected"):
            await request_key(target(server, "web-1", password=secret))


async def test_re_enrollment_with_the_current_key_is_refused(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, force=ForceOptions(after_registration_time_s=0))
    async with running(tmp_path, config) as server:
        secret = password(tmp_path)
        current = await request_key(target(server, "web-1", password=secret))
        with pytest.raises(EnrollmentRefused, match="already has this key") as caught:
            await request_key(target(server, "web-1", password=secret), current=current)
        assert caught.value.reply.refusal is Refusal.DUPLICATE_NAME
        # A stale key (another hash) is an agent that lost its key: replaced.
        stale = AgentKey("001", "web-1", "any", "0" * 64)
        fresh = await request_key(target(server, "web-1", password=secret), current=stale)
        assert fresh.agent_id == "002"
        line = f"OSSEC PASS: {secret.decode()} OSSEC A:'web-1' V:'v4.14.7' K:'{key_hash(fresh)}'\n"
        reply = await exchange(server.port, line.encode())
        assert reply.startswith(b"ERROR: Duplicate agent name: web-1 (")
        assert reply.endswith(b"keep using the key you hold). Unable to add agent")


async def test_removed_agent_enrolls_again_with_a_new_id(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        secret = password(tmp_path)
        first = await request_key(target(server, "web-1", password=secret))
        AgentRegistry(tmp_path).update(lambda r: (r.without_agent(first.agent_id), None))
        again = await request_key(target(server, "web-1", password=secret), current=first)
    assert again.agent_id == "002"
    keys = read_client_keys(tmp_path / "etc" / "client.keys")
    assert keys.is_removed("001") and keys.by_name("web-1") == again


async def test_duplicate_ip_and_source_ip(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, use_source_ip=True)
    async with running(tmp_path, config) as server:
        secret = password(tmp_path)
        first = await request_key(target(server, "edge-1", password=secret))
        assert first.ip == "127.0.0.1"
        with pytest.raises(EnrollmentRefused, match=r"Duplicate IP: 127\.0\.0\.1 \(agent 001"):
            await request_key(target(server, "edge-2", password=secret))
        # An explicit "any" does not clash.
        assert (await request_key(target(server, "edge-3", password=secret, ip="any"))).ip == "any"


async def test_manager_name_and_newer_agent_versions(tmp_path: Path) -> None:
    async with running(tmp_path, manager_name="mgr-host") as server:
        secret = password(tmp_path).decode()
        with pytest.raises(EnrollmentRefused, match="manager's own name"):
            await request_key(target(server, "mgr-host", password=secret.encode()))
        newer = await exchange(
            server.port, f"OSSEC PASS: {secret} OSSEC A:'web-1' V:'v4.15.0'\n".encode()
        )
        assert newer == (
            b"ERROR: Agent version must be lower or equal to manager version"
            b" (agent v4.15.0, manager v4.14.7). Unable to add agent"
        )
        older = await exchange(
            server.port, f"OSSEC PASS: {secret} OSSEC A:'web-1' V:'v4.2.5'\n".encode()
        )
        assert older.startswith(b"OSSEC K:'001 web-1 any ")
    config = dataclasses.replace(BASE, allow_higher_versions=True)
    async with running(tmp_path, config) as server:
        secret = password(tmp_path).decode()
        newer = await exchange(
            server.port, f"OSSEC PASS: {secret} OSSEC A:'web-2' V:'v5.0.0'\n".encode()
        )
        assert newer.startswith(b"OSSEC K:'002 web-2 any ")


# -- hostile and broken clients ---------------------------------------------------------


async def test_garbage_line(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        secret = password(tmp_path).decode()
        reply = await exchange(server.port, f"OSSEC PASS: {secret} GET / HTTP/1.1\n".encode())
        assert reply == b"ERROR: Invalid request for new agent. Unable to add agent"
        reply = await exchange(server.port, f"OSSEC PASS: {secret} OSSEC A:'a b'\n".encode())
        assert reply == b"ERROR: Invalid agent name: a b. Unable to add agent"
        assert server.stats()["refused"] == 2


async def test_oversized_line_is_refused_without_buffering_it_all(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        # No newline within the limit: refused once the limit is passed, not at EOF.
        reply = await exchange(server.port, b"A" * (MAX_REQUEST_BYTES + 1000))
        assert reply == (
            b"ERROR: Invalid request for new agent: no newline in the first 69632 bytes."
            b" Unable to add agent"
        )
        assert server.stats()["malformed"] == 1


async def test_slow_client_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, request_timeout_s=0.3)
    async with running(tmp_path, config) as server:
        # TLS done, but no request line.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=no_verify())
        writer.write(b"OSSEC A:'slow")
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.2 < time.monotonic() - started < 3
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
        # Plain TCP that never starts TLS.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
        assert server.stats()["timeouts"] == 2


def _blocking_enrollment(port: int, name: str, secret: bytes, answers: list[bytes]) -> None:
    """An agent that sends its ClientHello the moment it connects (blocking sockets)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with no_verify().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"OSSEC PASS: " + secret + f" OSSEC A:'{name}'\n".encode())
            answers.append(tls.recv(4096))


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_client_hello_arriving_with_the_accept_is_not_lost(tmp_path: Path, loop_kind: str) -> None:
    """The manager's loop is busy while an agent connects and says hello: the
    handshake must still complete (a plain stream upgraded with start_tls lost
    the ClientHello under uvloop and hung until the deadline)."""

    async def scenario() -> list[bytes]:
        async with running(tmp_path) as server:
            answers: list[bytes] = []
            agent = threading.Thread(
                target=_blocking_enrollment,
                args=(server.port, "web-1", password(tmp_path), answers),
            )
            agent.start()
            # Block the loop on purpose: the accept and the ClientHello arrive together.
            time.sleep(0.3)  # noqa: ASYNC251
            await asyncio.to_thread(agent.join)
            assert server.stats()["timeouts"] == 0
            return answers

    if loop_kind == "uvloop":
        import uvloop  # installed by the speed extra, which make test installs

        answers = uvloop.run(scenario())
    else:
        answers = asyncio.run(scenario())
    assert len(answers) == 1 and KEY_REPLY.match(answers[0]), answers


async def test_plain_text_client_fails_the_handshake(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"OSSEC A:'web-1'\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        assert b"OSSEC K:" not in data
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.05)
        assert server.stats()["tls_failures"] == 1


async def test_connection_cap(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, max_connections=2)
    async with running(tmp_path, config) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
        assert server.stats()["rejected_busy"] == 1
        for _, idle_writer in idle:
            idle_writer.close()
            await idle_writer.wait_closed()
        await asyncio.sleep(0.1)
        agent = await request_key(target(server, "web-1", password=password(tmp_path)))
        assert agent.agent_id == "001"


async def test_per_address_cap(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, max_connections_per_ip=1)
    async with running(tmp_path, config) as server:
        _, idle = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.sleep(0.1)
        with pytest.raises(ManagerUnreachable):
            await request_key(target(server, "web-1", password=password(tmp_path)))
        assert server.stats()["rejected_busy"] == 1
        idle.close()
        await idle.wait_closed()


# -- TLS identity and pinning -----------------------------------------------------------


async def test_first_start_generates_certificate_and_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        async with running(tmp_path) as server:
            assert server.identity is not None and server.identity.generated
        secret = password(tmp_path).decode()
        assert sum(secret in r.getMessage() for r in caplog.records) == 1
        caplog.clear()
        async with running(tmp_path) as server:
            assert server.identity is not None and not server.identity.generated
    assert not any(secret in r.getMessage() for r in caplog.records)
    assert (tmp_path / "etc" / "sslmanager.cert").is_file()


async def test_pinned_ca_success_and_failure(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        secret = password(tmp_path)
        cert = tmp_path / "etc" / "sslmanager.cert"
        agent = await request_key(target(server, "web-1", password=secret, ca_file=cert))
        assert agent.agent_id == "001"
        other = tmp_path / "other.pem"
        other.write_bytes(generate_self_signed(["127.0.0.1"])[0])
        with pytest.raises(ManagerIdentityError, match="does not verify against"):
            await request_key(target(server, "web-2", password=secret, ca_file=other))
        assert server.stats()["enrolled"] == 1


async def test_pinned_certificate_must_name_the_host(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, cert_hosts=("manager.example",))
    async with running(tmp_path, config) as server:
        cert = tmp_path / "etc" / "sslmanager.cert"
        with pytest.raises(ManagerIdentityError, match="must name the host"):
            await request_key(target(server, "web-1", password=password(tmp_path), ca_file=cert))


async def test_configured_certificate_must_exist(tmp_path: Path) -> None:
    config = dataclasses.replace(
        BASE, cert_file=tmp_path / "missing.pem", key_file=tmp_path / "missing.key"
    )
    with pytest.raises(EnrollmentSetupError, match=r"missing\.pem: configured but not found"):
        await EnrollmentServer(config, tmp_path).start()
    assert not (tmp_path / "missing.pem").exists()


async def test_port_in_use(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        config = dataclasses.replace(BASE, port=server.port)
        with pytest.raises(EnrollmentSetupError, match="cannot listen on"):
            await EnrollmentServer(config, tmp_path / "other").start()


def make_ca(tmp_path: Path, agent_ip: str) -> tuple[Path, Path, Path]:
    """A CA and an agent certificate for ``agent_ip`` signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agents CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    agent_key = ec.generate_private_key(ec.SECP256R1())
    agent = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent")]))
        .issuer_name(ca_name)
        .public_key(agent_key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(agent_ip))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp_path / "ca.pem", tmp_path / "agent.pem", tmp_path / "agent.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(agent.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        agent_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_agent_certificates_verified(tmp_path: Path) -> None:
    ca, cert, key = make_ca(tmp_path, "127.0.0.1")
    config = dataclasses.replace(BASE, agent_ca_file=ca, verify_host=True)
    data_dir = tmp_path / "manager"
    async with running(data_dir, config) as server:
        secret = password(data_dir)
        with pytest.raises(ManagerClosed, match="agent certificate"):
            await request_key(target(server, "web-1", password=secret))
        agent = await request_key(
            target(server, "web-1", password=secret, cert_file=cert, key_file=key)
        )
        assert agent.agent_id == "001"
    # A certificate for another address fails ssl_verify_host.
    ca, cert, key = make_ca(tmp_path, "10.9.9.9")
    config = dataclasses.replace(BASE, agent_ca_file=ca, verify_host=True)
    async with running(data_dir, config) as server:
        with pytest.raises(ManagerClosed):
            await request_key(
                target(server, "web-2", password=secret, cert_file=cert, key_file=key)
            )
        assert server.stats()["tls_failures"] >= 1
        assert server.stats()["enrolled"] == 0


async def test_close_cancels_stuck_connections(tmp_path: Path) -> None:
    config = dataclasses.replace(BASE, request_timeout_s=30)
    server = EnrollmentServer(config, tmp_path, manager_name="m")
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await asyncio.sleep(0.1)
    assert server.stats()["open_connections"] == 1
    started = time.monotonic()
    await server.close(timeout_s=0.2)
    assert time.monotonic() - started < 2
    assert server.stats()["open_connections"] == 0
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()


async def test_key_that_cannot_be_delivered_is_purged(tmp_path: Path) -> None:
    def slow_state() -> AgentState:
        time.sleep(0.3)  # in the writer's thread: the agent hangs up meanwhile
        return AgentState()

    async with running(tmp_path, agent_state=slow_state) as server:
        secret = password(tmp_path).decode()
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=no_verify())
        writer.write(f"OSSEC PASS: {secret} OSSEC A:'web-1'\n".encode())
        await writer.drain()
        raw = writer.get_extra_info("socket")
        # Close with a reset (linger 0), as a crashed agent would.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        await asyncio.sleep(0)
        for _ in range(100):
            if server.stats()["open_connections"] == 0:
                break
            await asyncio.sleep(0.05)
        assert server.stats()["enrolled"] == 0
        keys = read_client_keys(tmp_path / "etc" / "client.keys")
        assert len(keys) == 0 and not keys.removed
        # Retrying is not refused as a duplicate of the lost enrollment.
        agent = await request_key(target(server, "web-1", password=secret.encode()))
        assert agent.agent_id == "001"
