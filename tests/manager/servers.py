"""Real servers for the output tests: osmem-server, mosquitto, and a TCP proxy.

* ``OsmemProcess``: the ``osmem-server`` binary from the osmem-server wheel, an
  in-memory OpenSearch-compatible server (no real OpenSearch can run here).
* ``MosquittoProcess``: Debian's ``/usr/sbin/mosquitto`` with a generated
  config (loopback listener, no persistence).
* ``TcpProxy``: an asyncio pass-through placed between a client and one of
  those servers to inject network faults a real server will not produce on
  demand (a response lost after the request was processed), to record what
  the client sent, or to terminate TLS in front of a plain-HTTP server.

Processes run on 127.0.0.1 with free ports, are waited for with a deadline,
log to a file under the test's tmp dir (shown when they fail to start), and
are always stopped by the fixtures, by PID, even when a test fails.

Test modules import the fixtures by their ``*_fixture`` names (pytest registers
them under the short name) after putting this directory on ``sys.path``: the
suite runs with ``--import-mode=importlib``, which does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MOSQUITTO = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
START_DEADLINE_S = 30.0
STOP_GRACE_S = 5.0


def free_port() -> int:
    """A port free right now on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited ({proc.returncode}):\n{log_path.read_text()[-2000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} not listening on {port} after {START_DEADLINE_S} s")


def _stop(proc: subprocess.Popen[bytes] | None, *, kill: bool) -> None:
    if proc is None or proc.poll() is not None:
        if proc is not None:
            proc.wait()
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class OsmemProcess:
    """osmem-server on 127.0.0.1; ``restart()`` comes back on the same port, empty."""

    def __init__(self, workdir: Path) -> None:
        import osmem_server  # the wheel's launcher only locates the binary here

        self.binary = osmem_server.resolve_binary()
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._starts += 1
        log_path = self.workdir / f"osmem-{self._starts}.log"
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--addr",
                f"127.0.0.1:{self.port}",
                "--parent-pid",
                str(os.getpid()),
                "--no-ja",
            ],
            stdin=subprocess.PIPE,  # osmem exits when this closes, even if we die
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            for line in log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    ready = json.loads(line)
                    if isinstance(ready, dict) and "url" in ready:
                        self.port = int(ready["url"].rsplit(":", 1)[1])
                        return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"osmem-server did not start:\n{log_path.read_text()[-2000:]}")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        _stop(self.proc, kill=kill)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One JSON request; returns (status, decoded body) for any status."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read() or b"null")

    def count(self, index: str) -> int:
        self.request("POST", f"/{index}/_refresh")
        status, body = self.request("GET", f"/{index}/_count")
        return int(body["count"]) if status == 200 else 0

    def ids(self, index: str) -> list[str]:
        self.request("POST", f"/{index}/_refresh")
        _, body = self.request("POST", f"/{index}/_search", {"size": 10000, "_source": False})
        return [hit["_id"] for hit in body["hits"]["hits"]]


class MosquittoProcess:
    """mosquitto on 127.0.0.1 with a generated config; restartable on its port."""

    def __init__(self, workdir: Path, extra_conf: str = "") -> None:
        if not Path(MOSQUITTO).is_file():
            pytest.fail(f"mosquitto not found at {MOSQUITTO} (apt-get install mosquitto)")
        self.workdir = workdir
        self.port = free_port()
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "user root\n"  # stay as the invoking user (ignored unless root)
            "log_dest stdout\n"
            "log_type all\n" + self.extra_conf
        )
        log_path = self.workdir / f"mosquitto-{self._starts}.log"
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            _wait_port(self.port, self.proc, log_path, "mosquitto")
        except BaseException:
            self.stop()
            raise

    def stop(self, *, kill: bool = False) -> None:
        _stop(self.proc, kill=kill)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class TcpProxy:
    """Loopback pass-through to ``target_port`` with fault injection.

    ``drop_responses = n``: the next ``n`` responses are read from the server
    and then the client's connection is aborted instead of relaying them, as if
    the network failed after the server did the work.
    ``seen`` holds the first ``SEEN_LIMIT`` bytes clients sent.
    """

    SEEN_LIMIT = 1 << 20

    def __init__(self, target_port: int, *, server_ssl: ssl.SSLContext | None = None) -> None:
        self.target_port = target_port
        self.server_ssl = server_ssl
        self.port = 0
        self.drop_responses = 0
        self.dropped = 0
        self.seen = bytearray()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", port, ssl=self.server_ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every connection; handlers end on their own."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in self._writers:
            w.transport.abort()
        if self._conns:
            await asyncio.wait(set(self._conns), timeout=STOP_GRACE_S)

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers.add(c_writer)
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            c_writer.transport.abort()
            self._writers.discard(c_writer)
            self._conns.discard(task)
            return
        self._writers.add(s_writer)
        try:
            up = asyncio.create_task(self._pump(c_reader, s_writer, record=True))
            down = asyncio.create_task(self._pump(s_reader, c_writer, drop=c_writer))
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            for t in (up, down):
                t.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
        finally:
            for w in (c_writer, s_writer):
                w.transport.abort()
                self._writers.discard(w)
            self._conns.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        record: bool = False,
        drop: asyncio.StreamWriter | None = None,
    ) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                if record and len(self.seen) < self.SEEN_LIMIT:
                    self.seen += data[: self.SEEN_LIMIT - len(self.seen)]
                if drop is not None and self.drop_responses > 0:
                    self.drop_responses -= 1
                    self.dropped += 1
                    drop.transport.abort()
                    return
                writer.write(data)
                await writer.drain()


class ScriptedHttpServer:
    """HTTP/1.1 server answering each request with the next scripted reply.

    For indexer replies osmem never gives on demand (per-item 429, 503, 413).
    A reply is ``(status, body)``; once the script runs out, ``default`` is
    used. ``requests`` records ``(method, path, body)`` of every request.
    """

    def __init__(self, replies: list[tuple[int, bytes]], default: tuple[int, bytes]) -> None:
        self.replies = list(replies)
        self.default = default
        self.requests: list[tuple[str, str, bytes]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in self._writers:
                w.transport.abort()
            await self._server.wait_closed()
        if self._conns:
            await asyncio.wait(set(self._conns), timeout=STOP_GRACE_S)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers.add(writer)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                method, path, _ = head.split(" ", 2)
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append((method, path, body))
                status, reply = self.replies.pop(0) if self.replies else self.default
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(reply)}\r\n\r\n".encode()
                    + reply
                )
                await writer.drain()
        writer.close()
        self._writers.discard(writer)
        self._conns.discard(task)


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost.

    Returns (ca_file, cert_file, key_file), PEM.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trailwarden test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "server.pem", "server.key"))
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@pytest.fixture(name="osmem")
def osmem_fixture(tmp_path: Path) -> Iterator[OsmemProcess]:
    """A fresh osmem-server per test (it is in-memory: nothing leaks between tests)."""
    workdir = tmp_path / "osmem"
    workdir.mkdir()
    server = OsmemProcess(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A fresh mosquitto per test."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = MosquittoProcess(workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(name="mosquitto_stopped")
def mosquitto_stopped_fixture(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A mosquitto configured on a free port but not started (the broker is down)."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = MosquittoProcess(workdir)
    try:
        yield broker
    finally:
        broker.stop()
