"""The manager's enrolled agents: ``etc/client.keys`` plus when and how each one registered.

Theory of operation
===================

``client.keys`` (Wazuh's format, ``common/keys.py``) is the source of truth
for who may connect; Wazuh tools can read it as it is. Next to it,
``var/agent-registry.json`` keeps what client.keys has no room for: when each
agent registered (Wazuh's ``date_add``, which the ``<force>`` rules need),
the groups it asked for, and where the registration came from::

    {"version": 1, "agents": {"001": {"name": "web-1", "registered": 1700000000.0,
                                      "groups": ["default"], "origin": "enrolled from 10.0.0.5"}}}

A record whose name no longer matches the client.keys line is ignored. An
agent in client.keys without a record (a file copied from a Wazuh manager, a
line added by hand) is given one dated the first time an update sees it, as
wazuh-db dates agents it imports; that record is saved by the update.

Two processes change these files: the manager's enrollment listener and the
``trailwarden-manager agents`` command. Every change is a read-modify-write
under an exclusive ``flock`` on ``etc/.client.keys.lock``, so neither loses
the other's edit. Readers need no lock: both files are replaced atomically.
The registry is written before client.keys, so a crash between the two leaves
a record without a key (ignored and dropped later), never a key without its
registration date.

Parsing client.keys is cached on the file's identity (inode, size, mtime) so
an enrollment does not re-read a 200k-agent file unless it changed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TypeVar

from trailwarden.common.keys import (
    AgentKey,
    ClientKeys,
    KeysFileError,
    read_client_keys,
    write_client_keys,
)

T = TypeVar("T")

KEYS_FILE: Final = Path("etc") / "client.keys"
LOCK_FILE: Final = Path("etc") / ".client.keys.lock"
REGISTRY_FILE: Final = Path("var") / "agent-registry.json"
REGISTRY_VERSION: Final = 1
# Updates hold the lock for one read-modify-write (milliseconds); waiting this
# long means another process is stuck holding it.
LOCK_TIMEOUT_S: Final = 10.0
_LOCK_POLL_S: Final = 0.02
# A record is ~150 bytes; 200k agents is 30 MiB.
MAX_REGISTRY_BYTES: Final = 128 * 1024 * 1024
# etc/ holds every agent's key.
_SECRET_DIR_MODE: Final = 0o700


class RegistryError(Exception):
    """The registry files cannot be used; the message names the file and says why."""


class RegistryBusy(RegistryError):
    """Another process held the client.keys lock for longer than LOCK_TIMEOUT_S."""


@dataclass(frozen=True, slots=True)
class Registration:
    """What client.keys does not say about an agent."""

    name: str
    registered: float
    groups: tuple[str, ...] = ()
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Registry:
    """An immutable view of the enrolled agents; changes return a new one."""

    keys: ClientKeys
    registrations: Mapping[str, Registration] = field(default_factory=dict)

    def registration(self, agent_id: str) -> Registration | None:
        """The record of an active agent, if it has one that matches its name."""
        agent = self.keys.by_id(agent_id)
        record = self.registrations.get(agent_id)
        if agent is None or record is None or record.name != agent.name:
            return None
        return record

    def find(self, id_or_name: str) -> AgentKey | None:
        """An active agent by id (``7`` matches ``007``) or by name."""
        agent = self.keys.by_id(id_or_name)
        if agent is None and id_or_name.isascii() and id_or_name.isdigit():
            agent = self.keys.by_id(f"{int(id_or_name):03d}")
        return agent if agent is not None else self.keys.by_name(id_or_name)

    def with_new_agent(
        self, name: str, ip: str, *, now: float, groups: tuple[str, ...] = (), origin: str = ""
    ) -> tuple[Registry, AgentKey]:
        """Add ``name`` with the next id and a fresh key, registered ``now``.

        Raises:
            ValueError: the name is taken by an active agent, or a field is invalid.
        """
        keys, agent = self.keys.add_new_agent(name, ip)
        record = Registration(name, now, groups, origin)
        return Registry(keys, {**self.registrations, agent.agent_id: record}), agent

    def with_agent(self, agent: AgentKey, *, now: float, origin: str = "") -> Registry:
        """Add ``agent`` as given (id and key chosen by the caller).

        Raises:
            ValueError: its id or name is taken by an active agent.
        """
        record = Registration(agent.name, now, (), origin)
        return Registry(self.keys.with_agent(agent), {**self.registrations, agent.agent_id: record})

    def without_agent(self, agent_id: str, *, purge: bool = False) -> Registry:
        """Remove an active agent: its line becomes ``ID !name ip key`` (Wazuh's
        removal), or disappears with ``purge``.

        Raises:
            KeyError: no active agent has this id.
        """
        keys = self.keys.without_agent(agent_id, purge=purge)
        registrations = {k: v for k, v in self.registrations.items() if k != agent_id}
        return Registry(keys, registrations)

    def _dated(self, now: float) -> Registry:
        """Every active agent with a matching record; missing ones dated ``now``."""
        records = {a.agent_id: r for a in self.keys if (r := self.registration(a.agent_id))}
        if len(records) == len(self.keys) and len(records) == len(self.registrations):
            return self
        for agent in self.keys:
            if agent.agent_id not in records:
                records[agent.agent_id] = Registration(agent.name, now, (), "found in client.keys")
        return replace(self, registrations=records)


class AgentRegistry:
    """The files under one manager data directory."""

    __slots__ = ("_data_dir", "_clock", "_cache_identity", "_cache_keys")

    def __init__(self, data_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._data_dir = data_dir
        self._clock = clock
        self._cache_identity: tuple[int, int, int] | None = None
        self._cache_keys = ClientKeys()

    @property
    def keys_path(self) -> Path:
        return self._data_dir / KEYS_FILE

    @property
    def registry_path(self) -> Path:
        return self._data_dir / REGISTRY_FILE

    def read(self) -> Registry:
        """The current agents, without locking (both files change atomically).

        Raises:
            RegistryError: a file is unreadable or malformed.
        """
        return Registry(self._read_keys(), self._read_registrations())

    def update(self, change: Callable[[Registry], tuple[Registry, T]]) -> T:
        """Apply ``change`` to the current agents under the lock and save the result.

        ``change`` gets the registry as it is on disk (imported agents dated
        now) and returns the new registry and a value for the caller; nothing
        is written if the registry did not change. ``change`` runs under a
        lock other processes wait for: it must not block.

        Raises:
            RegistryBusy: the lock was not obtained within LOCK_TIMEOUT_S.
            RegistryError: a file is unreadable, malformed, or cannot be written.
            Whatever ``change`` raises (nothing is written then).
        """
        with self._locked():
            before = self.read()
            current = before._dated(self._clock())
            after, result = change(current)
            if after.registrations != before.registrations:
                self._write_registrations(after)
            if after.keys != before.keys:
                try:
                    write_client_keys(self.keys_path, after.keys)
                except OSError as exc:
                    raise RegistryError(f"{self.keys_path}: cannot write: {exc.strerror}") from None
            return result

    # -- files ----------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        path = self._data_dir / LOCK_FILE
        try:
            path.parent.mkdir(mode=_SECRET_DIR_MODE, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise RegistryError(f"{path}: cannot open the lock file: {exc.strerror}") from None
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise RegistryError(f"{path}: cannot lock: {exc.strerror}") from None
                if time.monotonic() >= deadline:
                    raise RegistryBusy(
                        f"{path}: another process has held the client.keys lock for more "
                        f"than {LOCK_TIMEOUT_S:g} s"
                    )
                time.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read_keys(self) -> ClientKeys:
        path = self.keys_path
        try:
            st = path.stat()
        except FileNotFoundError:
            return ClientKeys()
        except OSError as exc:
            raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
        identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if identity != self._cache_identity:
            try:
                keys = read_client_keys(path)
            except FileNotFoundError:
                return ClientKeys()
            except OSError as exc:
                raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
            except KeysFileError as exc:
                raise RegistryError(str(exc)) from None
            self._cache_identity, self._cache_keys = identity, keys
        return self._cache_keys

    def _read_registrations(self) -> dict[str, Registration]:
        path = self.registry_path
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_REGISTRY_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
        if len(raw) > MAX_REGISTRY_BYTES:
            raise RegistryError(f"{path}: larger than {MAX_REGISTRY_BYTES} bytes")
        return parse_registrations(raw, str(path))

    def _write_registrations(self, registry: Registry) -> None:
        path = self.registry_path
        doc = {
            "version": REGISTRY_VERSION,
            "agents": {
                agent_id: {
                    "name": r.name,
                    "registered": r.registered,
                    "groups": list(r.groups),
                    "origin": r.origin,
                }
                for agent_id, r in registry.registrations.items()
            },
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        try:
            path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            _replace_file(path, data)
        except OSError as exc:
            raise RegistryError(f"{path}: cannot write: {exc.strerror}") from None


def parse_registrations(raw: bytes, source: str) -> dict[str, Registration]:
    """The records in agent-registry.json (``source`` names it in errors).

    Raises:
        RegistryError: the content does not match the format (names the field).
    """
    try:
        doc: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{source}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != REGISTRY_VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise RegistryError(
            f"{source}: version = {version!r}; this manager reads version {REGISTRY_VERSION}"
        )
    agents = doc.get("agents", {})
    if not isinstance(agents, dict):
        raise RegistryError(f"{source}: agents is not an object")
    records: dict[str, Registration] = {}
    for agent_id, entry in agents.items():
        where = f"{source}: agents.{agent_id}"
        if not isinstance(entry, dict):
            raise RegistryError(f"{where} is not an object")
        name, registered = entry.get("name"), entry.get("registered")
        groups, origin = entry.get("groups", []), entry.get("origin", "")
        if not isinstance(name, str):
            raise RegistryError(f"{where}.name = {name!r} is not a string")
        if (
            isinstance(registered, bool)
            or not isinstance(registered, int | float)
            or not math.isfinite(registered)
        ):
            raise RegistryError(f"{where}.registered = {registered!r} is not epoch seconds")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise RegistryError(f"{where}.groups = {groups!r} is not a list of names")
        if not isinstance(origin, str):
            raise RegistryError(f"{where}.origin = {origin!r} is not a string")
        records[agent_id] = Registration(name, float(registered), tuple(groups), origin)
    return records


def _replace_file(path: Path, data: bytes) -> None:
    """Atomic replace: temporary file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
