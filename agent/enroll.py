"""``trailwarden-agent enroll``: get a key from a manager's enrollment listener and store it.

The client speaks Wazuh's enrollment protocol (``common/enrollment_protocol.py``),
so it can enroll with a Wazuh manager's authd as well as with ours: TLS to
port 1515, one request line, one reply. The key lands in
``<data_dir>/agent.key`` as one client.keys line, written atomically with
mode 0600.

Like Wazuh's agent, it sends the hash of the key it already holds, if any
(``K:``), so the manager can recognise the same agent; and without a CA to
check the manager against (``--ca-file``) it enrolls anyway, with a warning,
as Wazuh does ("Registering agent to unverified manager").

Every failure is an ``EnrollmentError`` whose message says what happened,
whose fault it is and what to do; ``retriable`` says whether trying again
later can help.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final

from trailwarden.common.enrollment_protocol import (
    DEFAULT_ENROLLMENT_PORT,
    KEY_REPLY_PREFIX,
    MAX_REPLY_BYTES,
    SOURCE_IP,
    EnrollmentRequest,
    ErrorReply,
    Refusal,
    ReplyError,
    agent_name_from_hostname,
    format_request,
    is_valid_agent_name,
    key_hash,
    parse_reply,
)
from trailwarden.common.keys import (
    AgentKey,
    ClientKeys,
    KeysFileError,
    read_client_keys,
    write_client_keys,
)

log = logging.getLogger(__name__)

AGENT_KEY_FILE: Final = "agent.key"
# The agent's own copy of the enrollment password, read when no file is given
# (Wazuh agents read etc/authd.pass the same way).
AGENT_PASSWORD_FILE: Final = "authd.pass"  # noqa: S105 (a file name)
DEFAULT_DATA_DIR: Final = Path("/var/lib/trailwarden-agent")
# Connecting, the TLS handshake, and the manager's reply all fit in this; a
# manager delays a wrong password's answer by up to 30 s by default.
DEFAULT_TIMEOUT_S: Final = 60.0
# A manager's refusal reason is shown up to this length (ours are ~200 characters).
MAX_SHOWN_REASON_CHARS: Final = 1000
# Wazuh's agent reads at most 4095 bytes of its password file.
MAX_PASSWORD_BYTES: Final = 4095


class EnrollmentError(Exception):
    """Enrollment failed; the message says why and whose fault it is."""

    retriable: ClassVar[bool] = False


class LocalSetupError(EnrollmentError):
    """This host's input is wrong: a file, a name, an option (fix it and rerun)."""


class ManagerUnreachable(EnrollmentError):
    """No TLS connection to the manager (network, address, or manager down)."""

    retriable = True


class ManagerIdentityError(EnrollmentError):
    """The manager's certificate does not verify against the pinned CA."""


class EnrollmentRefused(EnrollmentError):
    """The manager answered with an error (its reason is in ``reply``)."""

    def __init__(self, message: str, reply: ErrorReply) -> None:
        super().__init__(message)
        self.reply = reply


class ManagerClosed(EnrollmentError):
    """The manager closed the connection without answering (see its log for why)."""

    retriable = True


class BadManagerReply(EnrollmentError):
    """The manager's reply is malformed: the manager's fault."""

    retriable = True


@dataclass(frozen=True, slots=True)
class EnrollmentTarget:
    """Where and how to enroll."""

    host: str
    port: int = DEFAULT_ENROLLMENT_PORT
    name: str = ""
    password: bytes | None = field(default=None, repr=False)
    ca_file: Path | None = None
    # A client certificate for managers that verify agents (Wazuh's ssl_agent_ca).
    cert_file: Path | None = None
    key_file: Path | None = None
    groups: tuple[str, ...] = ()
    # None: the manager decides (usually "any"); "src": the address we connect
    # from; or an address or network to register.
    ip: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


def parse_manager(text: str, default_port: int = DEFAULT_ENROLLMENT_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address.

    Raises:
        ValueError: not an address (the message says why).
    """
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise ValueError(f"{text!r}: expected [IPv6] or [IPv6]:port")
        host = text[1:close]
        port_text = text[close + 2 :] if close + 1 < len(text) else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{text!r}: missing or malformed host")
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"{text!r}: the port must be 1..65535")
    return host, int(port_text)


def default_agent_name() -> str:
    """This host's name made a valid agent name (Wazuh's default)."""
    return agent_name_from_hostname(socket.gethostname())


def read_password_file(path: Path) -> bytes:
    """The first line of ``path``, without its newline.

    Raises:
        LocalSetupError: unreadable, empty, or too long.
    """
    try:
        with path.open("rb") as handle:
            first = handle.readline(MAX_PASSWORD_BYTES + 2)
    except OSError as exc:
        raise LocalSetupError(f"cannot read the password file {path}: {exc.strerror}") from None
    value = first.rstrip(b"\r\n")
    if not value:
        raise LocalSetupError(f"the password file {path} has no password on its first line")
    if len(value) > MAX_PASSWORD_BYTES:
        raise LocalSetupError(f"the password in {path} is longer than {MAX_PASSWORD_BYTES} bytes")
    return value


def read_agent_key(data_dir: Path) -> AgentKey | None:
    """The key in ``<data_dir>/agent.key``, or None if there is none.

    Raises:
        LocalSetupError: the file exists but is unreadable or not one client.keys line.
    """
    path = data_dir / AGENT_KEY_FILE
    try:
        keys = read_client_keys(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LocalSetupError(f"cannot read {path}: {exc.strerror}") from None
    except KeysFileError as exc:
        raise LocalSetupError(f"{exc} (delete the file to enroll afresh)") from None
    if len(keys) != 1:
        raise LocalSetupError(
            f"{path} holds {len(keys)} active keys; an agent's key file holds exactly one"
        )
    return keys.agents[0]


def store_agent_key(data_dir: Path, agent: AgentKey) -> Path:
    """Write ``agent`` to ``<data_dir>/agent.key`` (atomic, 0600) and return the path.

    Raises:
        LocalSetupError: the directory or file cannot be written.
    """
    path = data_dir / AGENT_KEY_FILE
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_client_keys(path, ClientKeys([agent]))
    except OSError as exc:
        raise LocalSetupError(f"cannot store the key in {path}: {exc.strerror or exc}") from None
    return path


def client_context(target: EnrollmentTarget) -> ssl.SSLContext:
    """TLS 1.2+; verifies the manager against ``ca_file`` when given.

    Raises:
        LocalSetupError: a certificate, key or CA file cannot be loaded.
    """
    try:
        if target.ca_file is not None:
            context = ssl.create_default_context(cafile=str(target.ca_file))
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if target.cert_file is not None:
            key = str(target.key_file) if target.key_file is not None else None
            context.load_cert_chain(str(target.cert_file), key)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(
            str(p) for p in (target.ca_file, target.cert_file, target.key_file) if p is not None
        )
        raise LocalSetupError(f"cannot load the TLS files ({files}): {exc}") from None
    return context


async def request_key(target: EnrollmentTarget, *, current: AgentKey | None = None) -> AgentKey:
    """Ask the manager for a key.

    Args:
        current: the key this agent holds, if any; its hash goes in the
            request so the manager can tell it is the same agent.

    Raises:
        EnrollmentError: a subclass says what failed (see the module docstring).
    """
    name = target.name or default_agent_name()
    if not is_valid_agent_name(name):
        raise LocalSetupError(
            f"agent name {name!r} is invalid: use 2 to 128 of A-Z a-z 0-9 . _ - (--name)"
        )
    request = EnrollmentRequest(
        name=name,
        password=target.password,
        groups=target.groups,
        ip=target.ip,
        key_hash=key_hash(current) if current is not None else None,
    )
    try:
        line = format_request(request)
    except ValueError as exc:
        raise LocalSetupError(f"cannot build the enrollment request: {exc}") from None
    context = client_context(target)
    if target.ca_file is None:
        log.warning(
            "Enrolling with an unverified manager at %s:%d: pass --ca-file with the "
            "manager's certificate (etc/sslmanager.cert) to verify it.",
            target.host,
            target.port,
        )
    where = f"{target.host}:{target.port}"
    try:
        async with asyncio.timeout(target.timeout_s):
            reply = await _exchange(target, context, line, where)
    except TimeoutError:
        raise ManagerUnreachable(
            f"no complete answer from {where} within {target.timeout_s:g} s (network, "
            "firewall, or the manager is overloaded; try again later)"
        ) from None
    if not reply:
        raise ManagerClosed(
            f"{where} closed the connection without answering: it may require an agent "
            "certificate it accepts (--agent-cert/--agent-key), be at its connection limit, "
            "or have timed out the request; the manager's log says which"
        )
    try:
        parsed = parse_reply(reply)
    except ReplyError as exc:
        raise BadManagerReply(f"{where}: {exc} (the manager's fault)") from None
    if isinstance(parsed, ErrorReply):
        raise EnrollmentRefused(_refusal_message(parsed, where, request), parsed)
    if parsed.name != name:
        raise BadManagerReply(
            f"{where}: the key returned is for agent {parsed.name!r}, not {name!r} "
            "(the manager's fault)"
        )
    return parsed


async def _exchange(
    target: EnrollmentTarget, context: ssl.SSLContext, line: bytes, where: str
) -> bytes:
    server_hostname = target.host if target.ca_file is not None else None
    try:
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=context, server_hostname=server_hostname
        )
    except ssl.SSLCertVerificationError as exc:
        raise ManagerIdentityError(
            f"the certificate of {where} does not verify against {target.ca_file}: "
            f"{exc.verify_message or exc} (wrong --ca-file, or not the manager you meant; "
            "the manager's certificate must name the host you connect to)"
        ) from None
    except ssl.SSLError as exc:
        raise ManagerUnreachable(
            f"TLS handshake with {where} failed: {exc.reason or exc} (is {target.port} the "
            "manager's enrollment port?)"
        ) from None
    except socket.gaierror as exc:
        raise ManagerUnreachable(
            f"cannot resolve {target.host!r}: {exc.strerror} (check --manager)"
        ) from None
    except ConnectionRefusedError:
        raise ManagerUnreachable(
            f"connection to {where} refused: nothing listens there (is the manager running "
            "with enrollment enabled, and is the port right?)"
        ) from None
    except OSError as exc:
        raise ManagerUnreachable(
            f"cannot connect to {where}: {exc.strerror or exc} (network or firewall, or "
            "the manager is at its connection limit; try again later)"
        ) from None
    try:
        try:
            writer.write(line)
            await writer.drain()
        except (OSError, ssl.SSLError) as exc:
            raise ManagerClosed(
                f"{where} closed the connection before the request was sent: {exc} (a "
                "manager that verifies agents does so when no accepted agent certificate "
                "(--agent-cert) is presented)"
            ) from None
        return await _read_reply(reader, where)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass  # the reply is what matters; a rough close after it is not an error


async def _read_reply(reader: asyncio.StreamReader, where: str) -> bytes:
    """Everything the manager sends until it closes, or until a key reply is complete."""
    data = b""
    try:
        while len(data) <= MAX_REPLY_BYTES:
            chunk = await reader.read(MAX_REPLY_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
            if data.startswith(KEY_REPLY_PREFIX.encode()) and b"'" in data[len(KEY_REPLY_PREFIX) :]:
                break
    except (ssl.SSLError, OSError) as exc:
        if not data:
            raise ManagerClosed(
                f"{where} broke off the TLS connection without answering: {exc} (a manager "
                "that verifies agents does so when no accepted agent certificate "
                "(--agent-cert) is presented)"
            ) from None
    if len(data) > MAX_REPLY_BYTES:
        raise BadManagerReply(f"{where}: reply longer than {MAX_REPLY_BYTES} bytes")
    return data


_HINTS: Final = {
    Refusal.INVALID_PASSWORD: "the password does not match the manager's etc/authd.pass "
    "(give the right one with --password-file)",
    Refusal.DUPLICATE_NAME: "another agent is enrolled under this name: choose another --name, "
    "or remove the old agent on the manager (trailwarden-manager agents remove NAME)",
    Refusal.DUPLICATE_IP: "another agent is enrolled with this address: remove it on the "
    "manager, or enroll without --ip",
    Refusal.INVALID_NAME: "choose another --name (2 to 128 of A-Z a-z 0-9 . _ -, not the "
    "manager's host name)",
    Refusal.INVALID_GROUP: "the manager does not accept this group (--group)",
    Refusal.TOO_MANY_GROUPS: "fewer --group options",
    Refusal.INCOMPATIBLE_VERSION: "this agent is newer than the manager",
    Refusal.INTERNAL: "the manager could not store the key: its fault, see its log",
}


def _refusal_message(reply: ErrorReply, where: str, request: EnrollmentRequest) -> str:
    if reply.refusal is Refusal.INVALID_PASSWORD and request.password is None:
        hint = (
            "the manager requires a password: give it with --password-file (a copy of the "
            "manager's etc/authd.pass)"
        )
    else:
        hint = _HINTS.get(reply.refusal, "")
    reason = reply.reason[:MAX_SHOWN_REASON_CHARS]
    if not reason.isprintable():  # a hostile manager must not drive the terminal
        reason = repr(reason)[1:-1]
    return f"{where} refused the enrollment: {reason}" + (f"; {hint}" if hint else "")


# -- command line -------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``enroll`` to ``trailwarden-agent``'s subcommands."""
    p = subparsers.add_parser(
        "enroll",
        help="get this agent's key from a manager (Wazuh enrollment protocol, port 1515)",
        description="Connect to the manager's enrollment listener over TLS, ask for a key"
        " and store it in DATA_DIR/agent.key (mode 0600). Works with a Trailwarden manager"
        " and with a Wazuh manager's authd. Prints the agent id.",
        epilog="Examples:\n"
        "  trailwarden-agent enroll --manager mgr.example.com --password-file /root/authd.pass\n"
        "  trailwarden-agent enroll --manager 10.0.0.2:1515 --ca-file sslmanager.cert"
        " --name web-1\n\n"
        "Exit status: 0 enrolled; 1 the manager refused or could not be reached;"
        " 2 bad options or local files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--manager",
        metavar="HOST[:PORT]",
        help="the manager's enrollment address (default port 1515; default host: the first"
        " of `managers` in --config)",
    )
    p.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="file whose first line is the enrollment password (a copy of the manager's"
        " etc/authd.pass; default: DATA_DIR/authd.pass if it exists)",
    )
    p.add_argument(
        "--name",
        help="agent name: 2-128 of A-Z a-z 0-9 . _ - (default: agent.name in --config, else"
        " this host's name)",
    )
    p.add_argument(
        "--ca-file",
        type=Path,
        metavar="FILE",
        help="verify the manager's certificate against this CA or pinned certificate (the"
        " manager's etc/sslmanager.cert); without it the manager is not verified",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"where agent.key goes (default: agent.data_dir in --config, else {DEFAULT_DATA_DIR})",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="agent configuration to take defaults from"
    )
    p.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="GROUP",
        help="ask for this group (repeatable; the manager must know it)",
    )
    address = p.add_mutually_exclusive_group()
    address.add_argument(
        "--ip", help="register this address or network for the agent (default: any)"
    )
    address.add_argument(
        "--use-source-ip",
        action="store_true",
        help="register the address this host connects from",
    )
    p.add_argument(
        "--agent-cert", type=Path, metavar="FILE", help="client certificate, if the manager asks"
    )
    p.add_argument("--agent-key", type=Path, metavar="FILE", help="key of --agent-cert")
    p.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.set_defaults(func=cmd_enroll)


def cmd_enroll(args: argparse.Namespace) -> int:
    """Run ``enroll``: 0 enrolled, 1 refused or unreachable, 2 local problem."""
    try:
        target, data_dir = _target_from_args(args)
        current = read_agent_key(data_dir)
        agent = asyncio.run(request_key(target, current=current))
        path = store_agent_key(data_dir, agent)
    except LocalSetupError as exc:
        print(f"enroll: {exc}", file=sys.stderr)
        return 2
    except EnrollmentError as exc:
        print(f"enroll: {exc}", file=sys.stderr)
        return 1
    if current is not None and current.agent_id != agent.agent_id:
        print(
            f"enroll: replaced the previous key (agent {current.agent_id} '{current.name}')",
            file=sys.stderr,
        )
    print(f"Enrolled as agent {agent.agent_id} '{agent.name}'; key stored in {path}")
    return 0


def _target_from_args(args: argparse.Namespace) -> tuple[EnrollmentTarget, Path]:
    data_dir, name, manager = DEFAULT_DATA_DIR, "", args.manager
    if args.config is not None:
        from trailwarden.agent.config import load_agent_config  # only when asked for
        from trailwarden.common.config import ConfigError

        try:
            config = load_agent_config(args.config)
        except ConfigError as exc:
            raise LocalSetupError(str(exc)) from None
        data_dir, name = config.agent.data_dir, config.agent.name
        addresses = config.manager_addresses()
        if manager is None and addresses:
            host = addresses[0].host
            manager = f"[{host}]" if ":" in host else host
    if manager is None:
        raise LocalSetupError("--manager HOST[:PORT] is required (or --config with managers)")
    try:
        host, port = parse_manager(manager)
    except ValueError as exc:
        raise LocalSetupError(f"--manager {exc}") from None
    data_dir = args.data_dir or data_dir
    password_file = args.password_file
    if password_file is None and (data_dir / AGENT_PASSWORD_FILE).is_file():
        password_file = data_dir / AGENT_PASSWORD_FILE
    password = read_password_file(password_file) if password_file is not None else None
    if args.agent_key is not None and args.agent_cert is None:
        raise LocalSetupError("--agent-key needs --agent-cert")
    if not args.timeout_s > 0:
        raise LocalSetupError(f"--timeout-s must be positive, got {args.timeout_s}")
    target = EnrollmentTarget(
        host=host,
        port=port,
        name=args.name or name,
        password=password,
        ca_file=args.ca_file,
        cert_file=args.agent_cert,
        key_file=args.agent_key,
        groups=tuple(args.group),
        ip=SOURCE_IP if args.use_source_ip else args.ip,
        timeout_s=args.timeout_s,
    )
    return target, data_dir
