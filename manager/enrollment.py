"""The enrollment listener: Wazuh's authd on TCP 1515 over TLS, in asyncio.

Theory of operation
===================

One connection carries one request: TLS handshake, one request line, one
reply, close (``common/enrollment_protocol.py`` has the grammar). A real
Wazuh agent's ``agent-auth`` and ``trailwarden-agent enroll`` both work.
Settings are ``EnrollmentConfig`` (``enrollment_config.py``); decisions and
client.keys writes belong to ``EnrollmentWriter`` (``enrollment_writer.py``),
which answers a batch of requests with one durable write; a key is sent
only once it is on disk.

Bounds. At most ``max_connections`` connections at once (Wazuh's pool of
1000) and ``max_connections_per_ip`` from one address; a connection over
either cap is closed before the TLS handshake. The handshake and the request
line together must arrive within ``request_timeout_s`` and the line is at
most ``MAX_REQUEST_BYTES`` (Wazuh's 69632), so line buffers stay under
``max_connections * MAX_REQUEST_BYTES`` (68 MiB at the defaults).

Wrong passwords. The comparison is constant-time. A wrong password is
answered only after a delay that doubles with each failure from the same
address (``wrong_password_delay_s`` up to ``max_wrong_password_delay_s``,
forgotten after ``wrong_password_window_s`` without failures), and counted;
with the per-address cap, one address can try at most
``max_connections_per_ip`` passwords per maximum delay.

Lost replies. If the key cannot be written to the connection, the new agent
is purged again, as Wazuh does, so a retry is not refused as a duplicate of
itself.

Shutdown (``close``): stop accepting, give open connections ``timeout_s`` to
finish, cancel the rest, then stop the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from trailwarden.common.enrollment_protocol import (
    MAX_REQUEST_BYTES,
    EnrollmentRequest,
    Refusal,
    RequestRefused,
    echo,
    format_key_reply,
    parse_request,
    parse_wazuh_version,
)
from trailwarden.common.keys import ClientKeys
from trailwarden.manager.agent_registry import AgentRegistry, RegistryError
from trailwarden.manager.agents_view import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    AgentState,
    read_agent_state,
)
from trailwarden.manager.authd_password import (
    PASSWORD_FILE,
    EnrollmentPassword,
    PasswordFileError,
    load_or_create_password,
)
from trailwarden.manager.enrollment_config import WAZUH_VERSION, EnrollmentConfig, ForceOptions
from trailwarden.manager.enrollment_writer import Admitted, EnrollmentWriter, PolicySettings
from trailwarden.manager.log_throttle import LogThrottle
from trailwarden.manager.tls_identity import (
    CERT_FILE,
    KEY_FILE,
    TlsIdentity,
    TlsIdentityError,
    ensure_identity,
    peer_certificate_matches,
    server_context,
)

__all__ = ["EnrollmentConfig", "EnrollmentServer", "EnrollmentSetupError", "ForceOptions"]

log = logging.getLogger(__name__)

# Distinct addresses whose wrong passwords are remembered; past this the
# oldest is forgotten, so a spray from many addresses cannot grow memory.
MAX_TRACKED_ADDRESSES: Final = 10_000
# Refusals and wrong passwords are logged at most once per kind per interval.
LOG_INTERVAL_S: Final = 10.0
# After a failed accept (out of descriptors, say), wait this long instead of spinning.
ACCEPT_RETRY_S: Final = 0.1
# The loop's own TLS handshake timeout sits this far behind the request deadline,
# so the deadline (counted as a timeout) always fires first.
HANDSHAKE_TIMEOUT_SLACK_S: Final = 1.0


class EnrollmentSetupError(Exception):
    """The listener cannot start (configuration, files or port); the message says which."""


@dataclass(slots=True)
class _Counters:
    """What the listener has done since start (``stats()``)."""

    connections: int = 0
    rejected_busy: int = 0
    tls_failures: int = 0
    timeouts: int = 0
    malformed: int = 0
    wrong_passwords: int = 0
    refused: int = 0
    enrolled: int = 0
    replaced: int = 0
    internal_errors: int = 0

    def snapshot(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _WrongPasswords:
    """Failures per address and the delay the next failure costs."""

    __slots__ = ("_config", "_failures")

    def __init__(self, config: EnrollmentConfig) -> None:
        self._config = config
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def record(self, address: str, now: float) -> float:
        """Count a failure from ``address``; returns the delay before answering it."""
        count, last = self._failures.pop(address, (0, now))
        if now - last > self._config.wrong_password_window_s:
            count = 0
        count += 1
        self._failures[address] = (count, now)
        if len(self._failures) > MAX_TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
        delay = self._config.wrong_password_delay_s * 2.0 ** min(count - 1, 32)
        return float(min(delay, self._config.max_wrong_password_delay_s))


class EnrollmentServer:
    """The listener; ``start()``, then ``close()`` on shutdown."""

    def __init__(
        self,
        config: EnrollmentConfig,
        data_dir: Path,
        *,
        agent_state: Callable[[], AgentState] | None = None,
        on_keys_changed: Callable[[ClientKeys], None] | None = None,
        manager_name: str | None = None,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        Args:
            data_dir: the manager data directory (etc/client.keys, etc/authd.pass, ...).
            agent_state: what the manager knows of agent connections; default:
                read ``<data_dir>/var/agent-state.json`` for each batch of requests.
            on_keys_changed: called in the event loop with the new client.keys
                table after enrollments changed it (the server's key lookup).
            manager_name: the name agents may not take (default: this host's name).
            heartbeat_interval_s: the agents' heartbeat interval; "active" (not
                replaceable) means seen within two of them.
        """
        self._config = config
        self._data_dir = data_dir
        self._registry = AgentRegistry(data_dir, clock=clock)
        self._on_keys_changed = on_keys_changed
        name = manager_name if manager_name is not None else socket.gethostname()
        settings = PolicySettings(
            force=config.force,
            use_source_ip=config.use_source_ip,
            manager_name=name if config.refuse_manager_name else None,
            heartbeat_interval_s=heartbeat_interval_s,
        )
        self._writer = EnrollmentWriter(
            self._registry,
            settings,
            agent_state=agent_state or (lambda: read_agent_state(data_dir)),
            clock=clock,
            on_change=self._keys_changed,
        )
        self._counters = _Counters()
        self._wrong = _WrongPasswords(config)
        self._throttle = LogThrottle(log, LOG_INTERVAL_S)
        self._per_ip: dict[str, int] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._context: ssl.SSLContext | None = None
        self._password: EnrollmentPassword | None = None
        self.identity: TlsIdentity | None = None

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Load or create the password and certificate, then listen.

        Raises:
            EnrollmentSetupError: a file is unusable or the port cannot be bound.
        """
        config = self._config
        if config.use_password:
            path = config.password_file or self._data_dir / PASSWORD_FILE
            try:
                self._password = load_or_create_password(path)
            except PasswordFileError as exc:
                raise EnrollmentSetupError(f"enrollment password: {exc}") from None
        try:
            self.identity = self._identity()
            self._context = server_context(
                self.identity, ciphers=config.ciphers, agent_ca_file=config.agent_ca_file
            )
        except TlsIdentityError as exc:
            raise EnrollmentSetupError(f"enrollment TLS: {exc}") from None
        if self.identity.generated:
            log.warning(
                "Generated a self-signed enrollment certificate %s; agents can pin it with "
                "`trailwarden-agent enroll --ca-file`.",
                self.identity.cert_file,
            )
        try:
            self._listener = _listen(
                config.listen_address, config.port, min(config.max_connections, 4096)
            )
        except OSError as exc:
            raise EnrollmentSetupError(
                f"enrollment: cannot listen on {config.listen_address}:{config.port}: "
                f"{exc.strerror or exc}"
            ) from None
        self._writer.start()
        self._acceptor = asyncio.create_task(self._accept(self._listener))
        log.info(
            "Accepting enrollments on %s:%d (%s).",
            config.listen_address,
            self.port,
            "password required" if self._password else "no password required",
        )

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._listener is None:
            raise RuntimeError("the enrollment listener is not started")
        port: int = self._listener.getsockname()[1]
        return port

    def stats(self) -> dict[str, int]:
        """Counters since start, for the manager's status."""
        snapshot = self._counters.snapshot()
        snapshot["open_connections"] = len(self._handlers)
        return snapshot

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, let open connections finish for ``timeout_s``, cancel the rest."""
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.wait([self._acceptor], timeout=timeout_s)
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout_s)
        await self._writer.close(timeout_s)

    def _identity(self) -> TlsIdentity:
        config = self._config
        if config.cert_file is None and config.key_file is None:
            return ensure_identity(
                self._data_dir / CERT_FILE, self._data_dir / KEY_FILE, config.cert_hosts
            )
        if config.cert_file is None or config.key_file is None:
            raise TlsIdentityError("cert_file and key_file must be set together")
        for path in (config.cert_file, config.key_file):
            if not path.is_file():
                raise TlsIdentityError(f"{path}: configured but not found")
        return TlsIdentity(config.cert_file, config.key_file)

    def _keys_changed(self) -> None:
        if self._on_keys_changed is None:
            return
        try:
            keys = self._registry.read().keys
        except RegistryError as exc:
            log.error("Cannot re-read client.keys after an enrollment: %s", exc)
            return
        self._on_keys_changed(keys)

    # -- one connection -------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        """Accept connections, refuse those over the caps before any TLS work,
        and give each of the others its own task."""
        loop = asyncio.get_running_loop()
        config = self._config
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors, say: wait, do not spin
                self._throttle.log(logging.WARNING, "accept", "Cannot accept: %s", exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            peer_ip = _normalize_ip(peer[0] if isinstance(peer, tuple) else "")
            if (
                len(self._handlers) >= config.max_connections
                or self._per_ip.get(peer_ip, 0) >= config.max_connections_per_ip
            ):
                self._counters.rejected_busy += 1
                self._throttle.log(
                    logging.WARNING,
                    "busy",
                    "Too many enrollment connections; rejecting %s.",
                    peer_ip,
                )
                conn.close()
                continue
            self._counters.connections += 1
            self._per_ip[peer_ip] = self._per_ip.get(peer_ip, 0) + 1
            task = asyncio.create_task(self._serve(conn, peer_ip))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _serve(self, conn: socket.socket, peer_ip: str) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            opened = await self._read_request(conn, peer_ip)
            if opened is not None:
                writer, line = opened
                await self._converse(writer, line, peer_ip)
        finally:
            left = self._per_ip.pop(peer_ip) - 1
            if left:
                self._per_ip[peer_ip] = left
            if writer is None:
                conn.close()  # no-op once a transport took it over and closed it
            elif not writer.is_closing():
                writer.transport.abort()

    async def _converse(self, writer: asyncio.StreamWriter, line: bytes, peer_ip: str) -> None:
        outcome = await self._handle_line(line, peer_ip)
        if isinstance(outcome, RequestRefused):
            await self._reply(writer, outcome.reply(), peer_ip)
            return
        agent = outcome.agent
        if await self._send(writer, format_key_reply(agent), peer_ip):
            self._admitted(outcome, peer_ip)
            await self._close(writer)
        elif await self._writer.purge(agent):
            log.warning(
                "Agent %s '%s' purged again: its key could not be sent.",
                agent.agent_id,
                agent.name,
                extra={"agent_id": agent.agent_id, "peer": peer_ip},
            )

    async def _read_request(
        self, conn: socket.socket, peer_ip: str
    ) -> tuple[asyncio.StreamWriter, bytes] | None:
        """TLS handshake and request line within the deadline; None: nothing to
        answer (the connection is closed).

        The socket is TLS from its first byte: an agent sends its ClientHello as
        soon as it connects, and a plain stream upgraded later (start_tls) may
        already have buffered it where TLS never looks (uvloop does), which hung
        the handshake until the deadline.
        """
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_REQUEST_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        opened: list[asyncio.StreamWriter] = []  # the writer, once TLS is up
        line: bytes | None = None
        try:
            line = await self._handshake_and_line(conn, peer_ip, reader, protocol, opened)
        finally:
            if line is None and opened and not opened[0].is_closing():
                opened[0].transport.abort()
        if line is None:
            return None
        return opened[0], line

    async def _handshake_and_line(
        self,
        conn: socket.socket,
        peer_ip: str,
        reader: asyncio.StreamReader,
        protocol: asyncio.StreamReaderProtocol,
        opened: list[asyncio.StreamWriter],
    ) -> bytes | None:
        config = self._config
        assert self._context is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(config.request_timeout_s):
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    conn,
                    ssl=self._context,
                    # The deadline above says when to give up; this only must not be first.
                    ssl_handshake_timeout=config.request_timeout_s + HANDSHAKE_TIMEOUT_SLACK_S,
                )
                writer = asyncio.StreamWriter(transport, protocol, reader, loop)
                opened.append(writer)
                cert = writer.get_extra_info("peercert")
                if config.verify_host and config.agent_ca_file is not None:
                    if not peer_certificate_matches(cert, peer_ip):
                        self._counters.tls_failures += 1
                        log.warning(
                            "Agent certificate does not name %s; closing.",
                            peer_ip,
                            extra={"peer": peer_ip},
                        )
                        return None
                line = await reader.readuntil(b"\n")
        except TimeoutError:
            self._counters.timeouts += 1
            self._throttle.log(
                logging.INFO,
                "timeout",
                "Enrollment request from %s not received within %g s; closing.",
                peer_ip,
                config.request_timeout_s,
            )
            return None
        except asyncio.LimitOverrunError:
            self._counters.malformed += 1
            refusal = RequestRefused(
                Refusal.INVALID_REQUEST, f": no newline in the first {MAX_REQUEST_BYTES} bytes"
            )
            await self._reply(opened[0], refusal.reply(), peer_ip)
            return None
        except asyncio.IncompleteReadError:
            self._counters.malformed += 1
            return None  # closed before a full line
        except (ssl.SSLError, OSError) as exc:
            self._counters.tls_failures += 1
            self._throttle.log(
                logging.INFO, "tls", "TLS handshake with %s failed: %s", peer_ip, exc
            )
            return None
        return line[:-1]

    async def _handle_line(self, line: bytes, peer_ip: str) -> Admitted | RequestRefused:
        password = self._password.value if self._password is not None else None
        try:
            request = parse_request(line, password=password)
            self._check_version(request)
        except RequestRefused as exc:
            if exc.refusal is Refusal.INVALID_PASSWORD:
                self._counters.wrong_passwords += 1
                delay = self._wrong.record(peer_ip, time.monotonic())
                self._throttle.log(
                    logging.WARNING,
                    "password",
                    "Invalid enrollment password from %s (answered after %g s).",
                    peer_ip,
                    delay,
                    peer=peer_ip,
                )
                await asyncio.sleep(delay)
            else:
                self._refused(exc, peer_ip)
            return exc
        outcome = await self._writer.submit(request, peer_ip)
        if isinstance(outcome, RequestRefused):
            self._refused(outcome, peer_ip)
        return outcome

    def _check_version(self, request: EnrollmentRequest) -> None:
        if request.version is None or self._config.allow_higher_versions:
            return
        agent, ours = parse_wazuh_version(request.version), parse_wazuh_version(WAZUH_VERSION)
        if agent is not None and ours is not None and agent > ours:
            raise RequestRefused(
                Refusal.INCOMPATIBLE_VERSION,
                f" (agent {echo(request.version)}, manager {WAZUH_VERSION})",
            )

    def _admitted(self, admitted: Admitted, peer_ip: str) -> None:
        agent = admitted.agent
        for replaced in admitted.replaced:
            self._counters.replaced += 1
            log.info(
                "Duplicate %s: removed old agent %s '%s' for a new enrollment from %s.",
                replaced.clash,
                replaced.agent.agent_id,
                replaced.agent.name,
                peer_ip,
                extra={"agent_id": replaced.agent.agent_id, "peer": peer_ip},
            )
        self._counters.enrolled += 1
        log.info(
            "Agent key generated for '%s' (id %s), requested by %s.",
            agent.name,
            agent.agent_id,
            peer_ip,
            extra={"agent_id": agent.agent_id, "peer": peer_ip},
        )

    def _refused(self, refusal: RequestRefused, peer_ip: str) -> None:
        if refusal.refusal is Refusal.INTERNAL:
            self._counters.internal_errors += 1
        else:
            self._counters.refused += 1
        self._throttle.log(
            logging.WARNING,
            f"refused:{refusal.refusal.name}",
            "Enrollment from %s refused: %s",
            peer_ip,
            refusal.reason,
            peer=peer_ip,
        )

    async def _reply(self, writer: asyncio.StreamWriter, data: bytes, peer_ip: str) -> None:
        """Send a final answer and close."""
        if await self._send(writer, data, peer_ip):
            await self._close(writer)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes, peer_ip: str) -> bool:
        """Write ``data``; False if it certainly did not reach the agent.

        Only a failed write or drain counts: once the bytes are out, a rough
        close (an agent that hangs up without TLS close_notify, as Wazuh's
        does) is not a failed delivery.
        """
        try:
            async with asyncio.timeout(self._config.request_timeout_s):
                writer.write(data)
                await writer.drain()
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.info("Could not send the enrollment reply to %s: %s", peer_ip, exc or "timeout")
            return False
        return True

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            async with asyncio.timeout(self._config.request_timeout_s):
                await writer.wait_closed()


def _listen(address: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking listening socket; ``::`` accepts IPv4 too where the host can."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.create_server(
        (address, port),
        family=family,
        backlog=backlog,
        dualstack_ipv6=address == "::" and socket.has_dualstack_ipv6(),
    )
    listener.setblocking(False)
    return listener


def _normalize_ip(text: str) -> str:
    """A peer address as it is registered: IPv4-mapped IPv6 as plain IPv4."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
