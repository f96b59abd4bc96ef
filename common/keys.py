"""Wazuh's ``client.keys``: one enrolled agent per line, read and written compatibly.

Format (Wazuh 4.x ``OS_ReadKeys`` / ``OS_WriteKeys``, src/os_crypto/shared/keys.c)::

    <id> <name> <ip|any|CIDR> <key>

* Lines starting with ``#`` or a space are skipped; blank lines too.
* A line whose name starts with ``!`` or ``#`` is a removed agent. Wazuh keeps
  such lines verbatim (``ID !name ip key`` after a removal without purge) and
  counts their ids when choosing the next one; so do we.
* The key is the rest of the line after the third space.
* On writing, active agents come first, then removed lines, as Wazuh does.

We are stricter than Wazuh where it would silently misbehave: it logs and
skips a malformed line, truncates keys past 127 characters and keeps a
Windows ``\\r`` inside the key; we refuse such a file with ``path:line``
so the problem is fixed where it is, rather than surfacing as an agent
that cannot authenticate.

Writes are atomic (temporary file in the same directory, fsync, rename,
fsync of the directory) with mode 0600: the file holds every agent's secret.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from trailwarden.common.wire.limits import MAX_AGENT_ID_CHARS

KEYS_FILE_MODE: Final = 0o600

# Wazuh reads lines with fgets(buffer, OS_BUFFER_SIZE = 2048), which returns
# at most 2047 bytes including the newline; a longer line would be split in
# two by Wazuh, so it is an error here.
MAX_LINE_BYTES: Final = 2046
# 200k agents at ~300 bytes a line is 60 MiB; anything above is not a keys file.
MAX_KEYS_FILE_BYTES: Final = 64 * 1024 * 1024
# Wazuh OS_IsValidName (src/addagent/validate.c): 2..128 of [A-Za-z0-9._-].
MIN_NAME_CHARS: Final = 2
MAX_NAME_CHARS: Final = 128
# Wazuh copies at most KEYSIZE - 1 = 127 characters of the key.
MAX_KEY_CHARS: Final = 127

_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_REMOVED_MARKS: Final = ("!", "#")


class KeysFileError(ValueError):
    """A client.keys file (or an entry for one) is malformed: the input's fault."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


@dataclass(frozen=True, slots=True)
class AgentKey:
    """One active agent: the four fields of its client.keys line."""

    agent_id: str
    name: str
    ip: str
    key: str

    def __post_init__(self) -> None:
        problem = _entry_problem(self.agent_id, self.name, self.ip, self.key)
        if problem is not None:
            raise ValueError(problem)

    def wire_key(self) -> bytes:
        """The key as the wire protocol uses it: the key string's bytes."""
        return self.key.encode("ascii")

    def allows_ip(self, address: str) -> bool:
        """Whether a connection from ``address`` may use this key (Wazuh's IP check).

        ``any`` allows every address; otherwise the address must equal the
        registered IP or fall inside the registered network.
        """
        if self.ip == "any":
            return True
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return peer in ipaddress.ip_network(self.ip, strict=False)


@dataclass(frozen=True, slots=True)
class RemovedAgent:
    """A removed agent's line, kept verbatim so rewriting the file keeps it."""

    agent_id: str
    line: str


class ClientKeys:
    """An immutable client.keys table with lookups by id and by name."""

    __slots__ = ("_agents", "_removed", "_by_id", "_by_name", "_highest_id")

    def __init__(
        self, agents: Iterable[AgentKey] = (), removed: Iterable[RemovedAgent] = ()
    ) -> None:
        """
        Raises:
            ValueError: two active agents share an id or a name.
        """
        self._agents = tuple(agents)
        self._removed = tuple(removed)
        self._by_id: dict[str, AgentKey] = {}
        self._by_name: dict[str, AgentKey] = {}
        for agent in self._agents:
            self._check_new(agent)
            self._by_id[agent.agent_id] = agent
            self._by_name[agent.name] = agent
        # Wazuh's id_counter: the largest numeric id on any line, removed ones too.
        self._highest_id = max(
            (int(i) for i in self._ids() if i.isascii() and i.isdigit()), default=0
        )

    def _check_new(self, agent: AgentKey) -> None:
        if agent.agent_id in self._by_id:
            raise ValueError(f"duplicate agent id {agent.agent_id}")
        if agent.name in self._by_name:
            raise ValueError(f"duplicate agent name {agent.name!r}")

    def __len__(self) -> int:
        return len(self._agents)

    def __iter__(self) -> Iterator[AgentKey]:
        return iter(self._agents)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClientKeys):
            return NotImplemented
        return self._agents == other._agents and self._removed == other._removed

    def __repr__(self) -> str:
        return f"ClientKeys({len(self._agents)} agents, {len(self._removed)} removed)"

    @property
    def agents(self) -> tuple[AgentKey, ...]:
        return self._agents

    @property
    def removed(self) -> tuple[RemovedAgent, ...]:
        return self._removed

    def by_id(self, agent_id: str) -> AgentKey | None:
        return self._by_id.get(agent_id)

    def by_name(self, name: str) -> AgentKey | None:
        return self._by_name.get(name)

    def is_removed(self, agent_id: str) -> bool:
        """True if ``agent_id`` appears only as a removed line."""
        return agent_id not in self._by_id and any(r.agent_id == agent_id for r in self._removed)

    def wire_key(self, agent_id: str) -> bytes | None:
        """The key of an active agent as bytes: a ``ManagerConnection`` key lookup."""
        agent = self._by_id.get(agent_id)
        return None if agent is None else agent.wire_key()

    def next_id(self) -> str:
        """The id Wazuh would give the next agent: one above every numeric id seen."""
        return f"{self._highest_id + 1:03d}"

    def with_agent(self, agent: AgentKey) -> ClientKeys:
        """A table with ``agent`` added at the end; O(n) copies, no re-validation.

        Raises:
            ValueError: its id or name is already active.
        """
        self._check_new(agent)
        table = ClientKeys.__new__(ClientKeys)
        table._agents = (*self._agents, agent)
        table._removed = self._removed
        table._by_id = {**self._by_id, agent.agent_id: agent}
        table._by_name = {**self._by_name, agent.name: agent}
        table._highest_id = max(self._highest_id, int(agent.agent_id))
        return table

    def without_agent(self, agent_id: str, *, purge: bool = False) -> ClientKeys:
        """A table where ``agent_id`` is removed: kept as ``ID !name ip key``
        (Wazuh's removal without purge) or dropped entirely with ``purge``.

        Raises:
            KeyError: no active agent has this id.
        """
        agent = self._by_id.get(agent_id)
        if agent is None:
            raise KeyError(f"no active agent with id {agent_id}")
        agents = tuple(a for a in self._agents if a is not agent)
        if purge:
            return ClientKeys(agents, self._removed)
        line = f"{agent.agent_id} !{agent.name} {agent.ip} {agent.key}"
        return ClientKeys(agents, (*self._removed, RemovedAgent(agent_id, line)))

    def add_new_agent(self, name: str, ip: str = "any") -> tuple[ClientKeys, AgentKey]:
        """Enrol ``name`` with the next id and a fresh key, as Wazuh's authd does."""
        agent = AgentKey(self.next_id(), name, ip, new_agent_key())
        return self.with_agent(agent), agent

    def _ids(self) -> Iterator[str]:
        for agent in self._agents:
            yield agent.agent_id
        for removed in self._removed:
            yield removed.agent_id


def new_agent_key() -> str:
    """A fresh key in Wazuh's shape: 64 hex characters (256 random bits)."""
    return secrets.token_hex(32)


def _entry_problem(agent_id: str, name: str, ip: str, key: str) -> str | None:
    if not (0 < len(agent_id) <= MAX_AGENT_ID_CHARS and agent_id.isascii() and agent_id.isdigit()):
        return f"agent id {agent_id!r} must be 1 to {MAX_AGENT_ID_CHARS} ASCII digits"
    if not MIN_NAME_CHARS <= len(name) <= MAX_NAME_CHARS or not _NAME_CHARS.issuperset(name):
        return (
            f"agent name {name!r} must be {MIN_NAME_CHARS} to {MAX_NAME_CHARS} characters "
            "of A-Z a-z 0-9 . _ -"
        )
    if ip != "any":
        try:
            ipaddress.ip_network(ip, strict=False)
        except ValueError:
            return f"agent IP {ip!r} must be 'any', an address or a network (CIDR)"
    if not 0 < len(key) <= MAX_KEY_CHARS:
        return f"key of {len(key)} characters: Wazuh keys are 1 to {MAX_KEY_CHARS} characters"
    if not (key.isascii() and key.isprintable()) or " " in key:
        return "key must be printable ASCII without spaces"
    return None


def parse_client_keys(data: bytes, source: str) -> ClientKeys:
    """The table in the bytes of a client.keys file.

    Args:
        data: the file's content.
        source: where it came from, for error messages (a path).

    Raises:
        KeysFileError: a malformed line, or a duplicate id or name (``source:line``).
    """
    agents: list[AgentKey] = []
    removed: list[RemovedAgent] = []
    first_line: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw or raw.startswith((b"#", b" ")):
            continue
        if len(raw) > MAX_LINE_BYTES:
            raise KeysFileError(source, number, f"line longer than {MAX_LINE_BYTES} bytes")
        if raw.endswith(b"\r"):
            raise KeysFileError(
                source, number, "line ends with a carriage return (Windows line endings)"
            )
        first, _, rest = raw.partition(b" ")
        if rest.startswith((b"!", b"#")):
            text = raw.decode("ascii", "surrogateescape")
            removed.append(RemovedAgent(first.decode("ascii", "surrogateescape"), text))
            continue
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            raise KeysFileError(source, number, "line is not ASCII") from None
        fields = line.split(" ", 3)
        if len(fields) != 4:
            raise KeysFileError(
                source, number, f"expected 'id name ip key', found {len(fields)} field(s)"
            )
        agent_id, name, ip, key = fields
        try:
            agent = AgentKey(agent_id, name, ip, key)
        except ValueError as exc:
            raise KeysFileError(source, number, str(exc)) from None
        for kind, value in (("id", agent_id), ("name", name)):
            previous = first_line.setdefault((kind, value), number)
            if previous != number:
                raise KeysFileError(
                    source, number, f"agent {kind} {value!r} already used on line {previous}"
                )
        agents.append(agent)
    return ClientKeys(agents, removed)


def format_client_keys(keys: ClientKeys) -> bytes:
    """The file content for ``keys``: active agents, then removed lines."""
    lines = [f"{a.agent_id} {a.name} {a.ip} {a.key}\n" for a in keys.agents]
    lines.extend(f"{r.line}\n" for r in keys.removed)
    return "".join(lines).encode("ascii", "surrogateescape")


def read_client_keys(path: str | os.PathLike[str]) -> ClientKeys:
    """Read and parse a client.keys file.

    Raises:
        OSError: the file cannot be read.
        KeysFileError: it is malformed or too large.
    """
    file_path = Path(path)
    with open(file_path, "rb") as handle:
        data = handle.read(MAX_KEYS_FILE_BYTES + 1)
    if len(data) > MAX_KEYS_FILE_BYTES:
        raise KeysFileError(
            str(file_path), None, f"larger than {MAX_KEYS_FILE_BYTES} bytes: not a keys file"
        )
    return parse_client_keys(data, str(file_path))


def write_client_keys(path: str | os.PathLike[str], keys: ClientKeys) -> None:
    """Replace the file at ``path`` with ``keys`` atomically, mode 0600.

    A reader sees either the old file or the new one, never a mix, even if
    the machine stops mid-write.
    """
    target = Path(path)
    data = format_client_keys(keys)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEYS_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            # O_CREAT's mode is masked by the umask; make it exact.
            os.fchmod(handle.fileno(), KEYS_FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
