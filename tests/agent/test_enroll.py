"""``trailwarden-agent enroll`` against a real enrollment listener (TLS on 127.0.0.1)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trailwarden.agent.enroll import (
    LocalSetupError,
    parse_manager,
    read_agent_key,
    register,
    store_agent_key,
)
from trailwarden.common.keys import AgentKey, read_client_keys
from trailwarden.manager.enrollment import EnrollmentConfig, EnrollmentServer
from trailwarden.manager.enrollment_config import ForceOptions
from trailwarden.manager.tls_identity import generate_self_signed

BASE = EnrollmentConfig(
    listen_address="127.0.0.1", port=0, request_timeout_s=5, wrong_password_delay_s=0.05
)


@dataclasses.dataclass
class Manager:
    server: EnrollmentServer
    data_dir: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "etc" / "authd.pass"

    @property
    def cert(self) -> Path:
        return self.data_dir / "etc" / "sslmanager.cert"


@pytest.fixture
def start_manager(tmp_path: Path) -> Iterator[Callable[..., Manager]]:
    """Run an enrollment listener in its own thread and loop, as a separate manager would."""
    stops: list[Callable[[], None]] = []

    def start(config: EnrollmentConfig = BASE) -> Manager:
        data_dir = tmp_path / f"manager{len(stops)}"
        loop = asyncio.new_event_loop()
        server = EnrollmentServer(config, data_dir, manager_name="the-manager")
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(server.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert ready.wait(10)

        def stop() -> None:
            asyncio.run_coroutine_threadsafe(server.close(2), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

        stops.append(stop)
        return Manager(server, data_dir)

    yield start
    for stop in stops:
        stop()


def enroll(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="trailwarden-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["enroll", *argv])
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_enroll_stores_the_key_and_prints_the_id(
    tmp_path: Path, start_manager: Callable[..., Manager], capsys: pytest.CaptureFixture[str]
) -> None:
    manager = start_manager()
    data_dir = tmp_path / "agent"
    rc, out, err = enroll(
        capsys,
        "--manager", manager.address,
        "--password-file", str(manager.password_file),
        "--name", "web-1",
        "--ca-file", str(manager.cert),
        "--data-dir", str(data_dir),
    )  # fmt: skip
    assert rc == 0, err
    key_file = data_dir / "agent.key"
    assert out == f"Enrolled as agent 001 'web-1'; key stored in {key_file}\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    on_manager = read_client_keys(manager.data_dir / "etc" / "client.keys")
    assert list(read_client_keys(key_file)) == list(on_manager)
    assert read_agent_key(data_dir) == on_manager.by_id("001")


def test_second_enroll_sends_the_key_hash(
    tmp_path: Path, start_manager: Callable[..., Manager], capsys: pytest.CaptureFixture[str]
) -> None:
    config = dataclasses.replace(BASE, force=ForceOptions(after_registration_time_s=0))
    manager = start_manager(config)
    argv = (
        "--manager", manager.address,
        "--password-file", str(manager.password_file),
        "--name", "web-1",
        "--data-dir", str(tmp_path / "agent"),
    )  # fmt: skip
    assert enroll(capsys, *argv)[0] == 0
    before = (tmp_path / "agent" / "agent.key").read_bytes()
    rc, out, err = enroll(capsys, *argv)
    assert rc == 1 and out == ""
    assert "already has this key on the manager: keep using the key you hold" in err
    assert (tmp_path / "agent" / "agent.key").read_bytes() == before


def test_enroll_replacing_an_old_key(
    tmp_path: Path, start_manager: Callable[..., Manager], capsys: pytest.CaptureFixture[str]
) -> None:
    config = dataclasses.replace(BASE, force=ForceOptions(after_registration_time_s=0))
    manager = start_manager(config)
    data_dir = tmp_path / "agent"
    argv = ("--manager", manager.address, "--password-file", str(manager.password_file))
    assert enroll(capsys, *argv, "--name", "web-1", "--data-dir", str(data_dir))[0] == 0
    # The agent lost its key (another one is on disk): the manager replaces the entry.
    store_agent_key(data_dir, AgentKey("001", "web-1", "any", "f" * 64))
    rc, out, err = enroll(capsys, *argv, "--name", "web-1", "--data-dir", str(data_dir))
    assert rc == 0, err
    assert "Enrolled as agent 002 'web-1'" in out
    agent = read_agent_key(data_dir)
    assert agent is not None and agent.agent_id == "002"


def test_password_from_the_data_dir(
    tmp_path: Path, start_manager: Callable[..., Manager], capsys: pytest.CaptureFixture[str]
) -> None:
    manager = start_manager()
    data_dir = tmp_path / "agent"
    data_dir.mkdir()
    (data_dir / "authd.pass").write_bytes(manager.password_file.read_bytes())
    rc, out, err = enroll(
        capsys, "--manager", manager.address, "--name", "web-1", "--data-dir", str(data_dir)
    )
    assert rc == 0, err
    assert out.startswith("Enrolled as agent 001 'web-1'")


def test_wrong_and_missing_password(
    tmp_path: Path, start_manager: Callable[..., Manager], capsys: pytest.CaptureFixture[str]
) -> None:
    manager = start_manager()
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    common = ("--manager", manager.address, "--name", "web-1", "--data-dir", str(tmp_path / "a"))
    rc, _, err = enroll(capsys, *common, "--password-file", str(wrong))
    assert rc == 1
    assert "refused the enrollment: Invalid password" in err and "--password-file" in err
    rc, _, err = enroll(capsys, *common)
    assert rc == 1 and "the manager requires a password" in err
    assert not (tmp_path / "a" / "agent.key").exists()


def test_duplicate_name(
    tmp_path: Path, start_manager: Callable[..., Manager], capsys: pytest.CaptureFixture[str]
) -> None:
    manager = start_manager()
    argv = ("--manager", manager.address, "--password-file", str(manager.password_file))
    assert enroll(capsys, *argv, "--name", "web-1", "--data-dir", str(tmp_path / "a"))[0] == 0
    rc, _, err = enroll(capsys, *argv, "--name", "web-1", "--data-dir", str(tmp_path / "b"))
    assert rc == 1
    assert "Duplicate agent name: web-1 (agent 001 'web-1' registered" in err
    assert "choose another --name" in err


def test_tls_verification_failure(
    tmp_path: Path, start_manager: Callable[..., Manager], capsys: pytest.CaptureFixture[str]
) -> None:
    manager = start_manager()
    other = tmp_path / "other-ca.pem"
    other.write_bytes(generate_self_signed(["127.0.0.1"])[0])
    rc, out, err = enroll(
        capsys,
        "--manager", manager.address,
        "--password-file", str(manager.password_file),
        "--name", "web-1",
        "--ca-file", str(other),
        "--data-dir", str(tmp_path / "a"),
    )  # fmt: skip
    assert rc == 1 and out == ""
    assert "does not verify against" in err and "wrong --ca-file" in err


def test_manager_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rc, _, err = enroll(
        capsys, "--manager", f"127.0.0.1:{port}", "--name", "web-1", "--data-dir", str(tmp_path)
    )
    assert rc == 1
    assert f"connection to 127.0.0.1:{port} refused: nothing listens there" in err


def test_not_an_enrollment_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Something that accepts and answers in plain text, like a web server.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        rc, _, err = enroll(
            capsys, "--manager", f"127.0.0.1:{port}", "--name", "web-1", "--data-dir", str(tmp_path)
        )
        thread.join(5)
    assert rc == 1 and "TLS handshake with" in err and "enrollment port" in err


def test_local_problems_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--data-dir", str(tmp_path), "--name", "web-1")
    rc, _, err = enroll(capsys, "--manager", "host:99999", *base)
    assert rc == 2 and "port must be 1..65535" in err
    rc, _, err = enroll(capsys, "--manager", "host", "--password-file", str(tmp_path / "no"), *base)
    assert rc == 2 and "cannot read the password file" in err
    rc, _, err = enroll(capsys, "--manager", "host", "--data-dir", str(tmp_path), "--name", "a b")
    assert rc == 2 and "agent name 'a b' is invalid" in err
    rc, _, err = enroll(capsys, *base)
    assert rc == 2 and "--manager HOST[:PORT] is required" in err
    (tmp_path / "agent.key").write_text("garbage\n")
    rc, _, err = enroll(capsys, "--manager", "host", *base)
    assert rc == 2 and "agent.key:1" in err and "delete the file" in err


def test_ip_options_are_exclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        enroll(capsys, "--manager", "h", "--ip", "10.0.0.1", "--use-source-ip")
    assert caught.value.code == 2


def test_defaults_from_the_agent_config(
    tmp_path: Path, start_manager: Callable[..., Manager], capsys: pytest.CaptureFixture[str]
) -> None:
    manager = start_manager()
    data_dir = tmp_path / "from-config"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'managers = ["127.0.0.1:1514"]\n[agent]\ndata_dir = "{data_dir}"\nname = "cfg-agent"\n'
    )
    rc, out, err = enroll(
        capsys,
        "--config", str(config),
        "--manager", manager.address,
        "--password-file", str(manager.password_file),
    )  # fmt: skip
    assert rc == 0, err
    assert out == f"Enrolled as agent 001 'cfg-agent'; key stored in {data_dir / 'agent.key'}\n"
    # Without --manager, the first manager's host on the enrollment port 1515.
    rc, _, err = enroll(capsys, "--config", str(config), "--timeout-s", "5")
    assert rc == 1 and "127.0.0.1:1515" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mgr.example", ("mgr.example", 1515)),
        ("mgr.example:2000", ("mgr.example", 2000)),
        ("10.0.0.2", ("10.0.0.2", 1515)),
        ("[2001:db8::1]:1600", ("2001:db8::1", 1600)),
        ("[2001:db8::1]", ("2001:db8::1", 1515)),
        ("2001:db8::1", ("2001:db8::1", 1515)),
        ("fe80::", ("fe80::", 1515)),
    ],
)
def test_parse_manager(text: str, expected: tuple[str, int]) -> None:
    assert parse_manager(text) == expected


@pytest.mark.parametrize(
    "text", ["", "host:", "host:0", "host:x", "[::1", "[::1]:", "[::1]x", "a b"]
)
def test_parse_manager_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_manager(text)


def test_store_agent_key_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LocalSetupError, match="cannot store the key"):
        store_agent_key(blocker / "sub", AgentKey("001", "web-1", "any", "a" * 64))
