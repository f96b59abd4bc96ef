"""Wazuh's enrollment line protocol (authd, TCP 1515 over TLS), sans I/O.

Theory of operation
===================

An agent opens a TLS connection, sends one request line and reads one reply;
the manager closes the connection after replying. The request grammar is the
one Wazuh 4.14 agents send (``src/shared/enrollment_op.c``
``w_enrollment_send_message``) and ``src/os_auth/auth.c`` ``w_auth_parse_data``
reads::

    [OSSEC PASS: <password> ]OSSEC A:'<name>'[ V:'<version>'][ G:'<g1,g2>']
        [ IP:'<ip>'|' IP:'src'][ K:'<sha1>']\\n

The optional fields come in this fixed order, each at most once. The replies::

    OSSEC K:'<id> <name> <ip> <key>'
    ERROR: <reason>. Unable to add agent

Wazuh compares the password as a prefix of the text after ``OSSEC PASS: ``
that must be followed by a space; so do we, in constant time. Where Wazuh
silently ignores what it does not understand (text after the last field, a
field out of order, a malformed key hash) we refuse the request and say what
is wrong, since no Wazuh agent sends such a line. A request that carries a
password when the manager asks for none is accepted (Wazuh would call it an
invalid request; ignoring an unneeded secret harms nobody).

``K:`` is ``SHA1(id || name || key)`` of the key the agent already holds
(``w_get_key_hash``): it lets the manager tell the same agent re-enrolling
from another host claiming its name.

The line is handled as Latin-1 so that every byte maps to one character and a
password is compared byte for byte whatever its encoding.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Final

from trailwarden.common.keys import MAX_NAME_CHARS, MIN_NAME_CHARS, AgentKey

DEFAULT_ENROLLMENT_PORT: Final = 1515

# Wazuh's MAX_SSL_MSG_SIZE (OS_SIZE_65536 + OS_SIZE_4096): the largest request
# authd reads; a group list alone may be 64 KiB. Replies are far smaller but
# a client reads up to the same bound.
MAX_REQUEST_BYTES: Final = 65536 + 4096
MAX_REPLY_BYTES: Final = MAX_REQUEST_BYTES

# Wazuh's MAX_GROUPS_PER_MULTIGROUP.
MAX_GROUPS: Final = 128
# A group is a directory name under etc/shared; NAME_MAX is 255.
MAX_GROUP_CHARS: Final = 255
# Wazuh reads the version with %2048[^'] and the IP with %64[^' ] (IPSIZE).
MAX_VERSION_CHARS: Final = 2048
MAX_IP_CHARS: Final = 64
# A hex SHA-1.
KEY_HASH_CHARS: Final = 40
# Text from the request echoed into a reply or a log line is cut to this, so a
# 64 KiB "name" cannot be bounced back or flood a log.
MAX_ECHO_CHARS: Final = 128

PASS_PREFIX: Final = "OSSEC PASS: "  # noqa: S105 (a protocol tag)
ADD_PREFIX: Final = "OSSEC A:'"
KEY_REPLY_PREFIX: Final = "OSSEC K:'"
ERROR_REPLY_PREFIX: Final = "ERROR: "
ERROR_REPLY_SUFFIX: Final = ". Unable to add agent"
# The IP field value that means "the address this connection comes from".
SOURCE_IP: Final = "src"

_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_HEX: Final = frozenset("0123456789abcdef")


class Refusal(enum.Enum):
    """Why a request is refused: the reason texts Wazuh's authd replies with.

    The value is the text that starts the reason in an ``ERROR:`` reply; a
    client classifies a reply by it.
    """

    INVALID_PASSWORD = "Invalid password"  # noqa: S105 (a reason text)
    INVALID_REQUEST = "Invalid request for new agent"
    INVALID_NAME = "Invalid agent name"
    UNTERMINATED_FIELD = "Unterminated"
    INCOMPATIBLE_VERSION = "Agent version must be lower or equal to manager version"
    INVALID_VERSION = "Invalid agent version"
    INVALID_GROUP = "Invalid group"
    TOO_MANY_GROUPS = "Maximum multigroup reached"
    INVALID_IP = "Invalid IP"
    INVALID_KEY_HASH = "Invalid key hash"
    DUPLICATE_IP = "Duplicate IP"
    DUPLICATE_NAME = "Duplicate agent name"
    INTERNAL = "Internal manager error"
    OTHER = ""


class RequestRefused(ValueError):
    """A request the manager refuses; ``reply()`` is what goes back to the agent.

    Attributes:
        refusal: the reason's kind.
        detail: the reason text after the kind, e.g. ``": web-1"``.
    """

    def __init__(self, refusal: Refusal, detail: str = "") -> None:
        super().__init__(f"{refusal.value}{detail}")
        self.refusal = refusal
        self.detail = detail

    @property
    def reason(self) -> str:
        return str(self)

    def reply(self) -> bytes:
        return format_error_reply(self.reason)


@dataclass(frozen=True, slots=True)
class EnrollmentRequest:
    """One parsed request line.

    ``ip`` is None when the request has no IP field, ``"src"`` when the agent
    asks for its source address, else the address or network it asked for.
    """

    name: str
    password: bytes | None = field(default=None, repr=False)
    version: str | None = None
    groups: tuple[str, ...] = ()
    ip: str | None = None
    key_hash: str | None = None


def echo(text: str) -> str:
    """``text`` cut and escaped for a reply or a log line."""
    cut = text[:MAX_ECHO_CHARS]
    if not cut.isprintable() or not cut.isascii():
        cut = repr(cut)[1:-1]
    return cut + ("..." if len(text) > MAX_ECHO_CHARS else "")


def is_valid_agent_name(name: str) -> bool:
    """Wazuh's ``OS_IsValidName``: 2 to 128 of ``[A-Za-z0-9._-]``."""
    return MIN_NAME_CHARS <= len(name) <= MAX_NAME_CHARS and _NAME_CHARS.issuperset(name)


def agent_name_from_hostname(hostname: str) -> str:
    """A host name made a valid agent name, as Wazuh's agent does by default
    (``OS_ConvertToValidAgentName``: invalid characters dropped)."""
    return "".join(c for c in hostname if c in _NAME_CHARS)[:MAX_NAME_CHARS]


def key_hash(agent: AgentKey) -> str:
    """The ``K:`` value for ``agent``: hex SHA-1 of id, name and key, concatenated."""
    data = f"{agent.agent_id}{agent.name}{agent.key}".encode("ascii")
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def parse_wazuh_version(text: str) -> tuple[int, int, int] | None:
    """``v4.14.7`` (or ``4.14``, ``v4``) as a tuple; None if it is not one."""
    parts = text.removeprefix("v").split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    return numbers[0], numbers[1], numbers[2]


def _quoted(line: str, pos: int, tag: str, max_chars: int) -> tuple[str, int]:
    """The value of `` TAG'value'`` starting at ``pos`` and the position after it."""
    start = pos + len(tag)
    end = line.find("'", start, start + max_chars + 1)
    if end < 0:
        what = tag.strip(" :'").lower()
        name = {"v": "version", "g": "group", "ip": "IP", "k": "key"}[what]
        raise RequestRefused(Refusal.UNTERMINATED_FIELD, f" {name} field")
    return line[start:end], end + 1


def _check_password(line: str, password: bytes | None) -> int:
    """Check the password part and return where ``OSSEC A:`` should start."""
    if password is None:
        if line.startswith(PASS_PREFIX):
            # Not needed here; skip it (its end is the first " OSSEC A:'").
            end = line.find(" " + ADD_PREFIX, len(PASS_PREFIX))
            return len(line) if end < 0 else end + 1
        return 0
    expected = password.decode("latin-1")
    given = line[len(PASS_PREFIX) : len(PASS_PREFIX) + len(expected)]
    matches = hmac.compare_digest(given.encode("latin-1"), password)
    after = len(PASS_PREFIX) + len(expected)
    if not (line.startswith(PASS_PREFIX) and matches and line[after : after + 1] == " "):
        raise RequestRefused(Refusal.INVALID_PASSWORD)
    return after + 1


def parse_request(line: bytes, *, password: bytes | None) -> EnrollmentRequest:
    """Parse one request line (without its newline) and check its password.

    Args:
        line: the bytes before the first newline.
        password: the manager's password, or None if none is required.

    Raises:
        RequestRefused: the line is malformed, the password wrong, or a field
            invalid; its ``reply()`` is Wazuh's reply for the case.
    """
    text = line.decode("latin-1")
    pos = _check_password(text, password)
    given_password: bytes | None = None
    if pos > 0:
        given_password = text[len(PASS_PREFIX) : pos - 1].encode("latin-1")
    if not text.startswith(ADD_PREFIX, pos):
        raise RequestRefused(Refusal.INVALID_REQUEST)
    name_end = text.find("'", pos + len(ADD_PREFIX))
    if name_end < 0:
        raise RequestRefused(Refusal.INVALID_REQUEST)
    name = text[pos + len(ADD_PREFIX) : name_end]
    if not is_valid_agent_name(name):
        raise RequestRefused(Refusal.INVALID_NAME, f": {echo(name)}")
    pos = name_end + 1

    version: str | None = None
    if text.startswith(" V:'", pos):
        version, pos = _quoted(text, pos, " V:'", MAX_VERSION_CHARS)
        if parse_wazuh_version(version) is None:
            raise RequestRefused(Refusal.INVALID_VERSION, f": {echo(version)}")
    groups: tuple[str, ...] = ()
    if text.startswith(" G:'", pos):
        group_text, pos = _quoted(text, pos, " G:'", MAX_REQUEST_BYTES)
        groups = _parse_groups(group_text)
    ip: str | None = None
    if text.startswith(" IP:'", pos):
        ip, pos = _quoted(text, pos, " IP:'", MAX_IP_CHARS)
        if ip != SOURCE_IP and not is_valid_ip(ip):
            raise RequestRefused(Refusal.INVALID_IP, f": {echo(ip)}")
    hash_value: str | None = None
    if text.startswith(" K:'", pos):
        hash_value, pos = _quoted(text, pos, " K:'", KEY_HASH_CHARS)
        if len(hash_value) != KEY_HASH_CHARS or not _HEX.issuperset(hash_value):
            raise RequestRefused(
                Refusal.INVALID_KEY_HASH, f": {echo(hash_value)} is not a hex SHA-1"
            )
    if pos != len(text):
        raise RequestRefused(
            Refusal.INVALID_REQUEST,
            f": unexpected {echo(text[pos:])!r} (fields are V:, G:, IP:, K: in this order)",
        )
    return EnrollmentRequest(name, given_password, version, groups, ip, hash_value)


def _parse_groups(text: str) -> tuple[str, ...]:
    """Wazuh's group list: comma-separated names, repeats dropped, order kept."""
    groups: list[str] = []
    for group in text.split(","):
        if (
            not group
            or group in (".", "..")
            or len(group) > MAX_GROUP_CHARS
            or not _NAME_CHARS.issuperset(group)
        ):
            raise RequestRefused(Refusal.INVALID_GROUP, f": {echo(group)}")
        if group not in groups:
            groups.append(group)
            if len(groups) > MAX_GROUPS:
                raise RequestRefused(Refusal.TOO_MANY_GROUPS, f": Limit is {MAX_GROUPS}")
    return tuple(groups)


def is_valid_ip(text: str) -> bool:
    """Wazuh's ``OS_IsValidIP``: ``any``, an address, or a network in CIDR form."""
    if text == "any":
        return True
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def format_request(request: EnrollmentRequest) -> bytes:
    """The request line an agent sends for ``request``, newline included.

    Raises:
        ValueError: a field could not be read back by a manager (our bug or
            the caller's bad input; the message names the field).
    """
    if not is_valid_agent_name(request.name):
        raise ValueError(f"agent name {request.name!r} is not 2-128 of A-Z a-z 0-9 . _ -")
    parts: list[str] = []
    if request.password is not None:
        password = request.password.decode("latin-1")
        if "\n" in password or not password:
            raise ValueError("the password is empty or contains a newline")
        parts.append(f"{PASS_PREFIX}{password} ")
    parts.append(f"{ADD_PREFIX}{request.name}'")
    if request.version is not None:
        parts.append(f" V:'{request.version}'")
    if request.groups:
        parts.append(" G:'" + ",".join(request.groups) + "'")
    if request.ip is not None:
        if request.ip != SOURCE_IP and not is_valid_ip(request.ip):
            raise ValueError(f"IP {request.ip!r} is not an address or a network")
        parts.append(f" IP:'{request.ip}'")
    if request.key_hash is not None:
        parts.append(f" K:'{request.key_hash}'")
    parts.append("\n")
    line = "".join(parts).encode("latin-1")
    if len(line) > MAX_REQUEST_BYTES:
        raise ValueError(f"request of {len(line)} bytes exceeds {MAX_REQUEST_BYTES}")
    return line


def format_key_reply(agent: AgentKey) -> bytes:
    """The success reply carrying the agent's new key (no newline, as authd 4.14)."""
    return f"{KEY_REPLY_PREFIX}{agent.agent_id} {agent.name} {agent.ip} {agent.key}'".encode(
        "ascii"
    )


def format_error_reply(reason: str) -> bytes:
    """The failure reply for ``reason`` (its kind's text first)."""
    return f"{ERROR_REPLY_PREFIX}{reason}{ERROR_REPLY_SUFFIX}".encode("latin-1", "replace")


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A manager's ``ERROR:`` reply: the reason text and its kind."""

    reason: str
    refusal: Refusal


class ReplyError(ValueError):
    """The manager's reply is neither a key nor an error: the manager's fault."""


def parse_reply(data: bytes) -> AgentKey | ErrorReply:
    """Parse everything the manager sent before closing the connection.

    Raises:
        ReplyError: the reply is malformed (the message quotes it).
    """
    text = data.decode("latin-1").rstrip("\r\n")
    if text.startswith(KEY_REPLY_PREFIX):
        end = text.find("'", len(KEY_REPLY_PREFIX))
        fields = text[len(KEY_REPLY_PREFIX) : end].split(" ") if end >= 0 else []
        if len(fields) != 4:
            raise ReplyError(f"malformed key reply {echo(text)!r}: expected 'id name ip key'")
        try:
            return AgentKey(*fields)
        except ValueError as exc:
            raise ReplyError(f"key reply {echo(text)!r} has an invalid field: {exc}") from None
    if text.startswith(ERROR_REPLY_PREFIX):
        reason = text[len(ERROR_REPLY_PREFIX) :].removesuffix(ERROR_REPLY_SUFFIX)
        return ErrorReply(reason, classify_reason(reason))
    if not text:
        raise ReplyError("the manager closed the connection without a reply")
    raise ReplyError(f"unexpected reply {echo(text)!r}")


def classify_reason(reason: str) -> Refusal:
    """The kind of an ``ERROR:`` reason text (``OTHER`` if unknown)."""
    for refusal in Refusal:
        if refusal.value and reason.startswith(refusal.value):
            return refusal
    return Refusal.OTHER
