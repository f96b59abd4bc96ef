"""The agent keys the listener accepts: ``etc/client.keys``, followed as it changes.

The enrollment listener and ``trailwarden-manager agents`` rewrite client.keys
atomically (a new file renamed over the old one). The server checks the file's
identity (inode, size, modification time) once per heartbeat interval and
re-reads it when it changed; the enrollment listener can also hand over a new
table directly (``replace``). A file that cannot be read or parsed keeps the
previous table in force and is reported, so a half-edited file never locks
every agent out.

A key is handed out only for a connection from an address the agent's entry
allows (Wazuh's ``OS_IsAllowedDynamicID``): ``any``, the registered address,
or an address inside the registered network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path

from trailwarden.common.keys import AgentKey, ClientKeys, KeysFileError, read_client_keys

log = logging.getLogger(__name__)

KEYS_FILE = Path("etc") / "client.keys"

_Identity = tuple[int, int, int, int]


class AgentKeyTable:
    """The current client.keys table, reloaded when the file changes."""

    __slots__ = ("_path", "_keys", "_identity", "_reload_errors", "reloads")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._keys = ClientKeys()
        self._identity: _Identity | None = None
        self._reload_errors = 0
        self.reloads = 0

    @property
    def path(self) -> Path:
        return self._path

    @property
    def keys(self) -> ClientKeys:
        return self._keys

    @property
    def reload_errors(self) -> int:
        return self._reload_errors

    def lookup(self, agent_id: str, peer_ip: str) -> AgentKey | None:
        """The agent's entry if it is active and may connect from ``peer_ip``."""
        agent = self._keys.by_id(agent_id)
        if agent is None or not agent.allows_ip(_plain_address(peer_ip)):
            return None
        return agent

    def replace(self, keys: ClientKeys) -> None:
        """Take a table someone else just wrote (the enrollment listener)."""
        self._keys = keys
        self._identity = self._stat()
        self.reloads += 1

    async def load(self) -> bool:
        """Read the file if it changed since the last read; True when the table changed.

        A missing file is an empty table (no agent enrolled yet). Reading runs
        in a worker thread: a large file must not stall the agents' traffic.
        """
        identity = self._stat()
        if identity == self._identity:
            return False
        if identity is None:
            if self._identity is not None or self.reloads == 0:
                log.warning("No agent keys: %s does not exist; enroll agents first.", self._path)
            changed = len(self._keys) > 0
            self._keys = ClientKeys()
            self._identity = None
            self.reloads += 1
            return changed
        try:
            keys = await asyncio.to_thread(read_client_keys, self._path)
        except (OSError, KeysFileError) as exc:
            self._reload_errors += 1
            # Remember the identity so the same broken file is reported once.
            self._identity = identity
            log.error(
                "Cannot use %s (keeping the previous %d agents): %s.",
                self._path,
                len(self._keys),
                exc,
            )
            return False
        self._identity = identity
        changed = keys != self._keys
        self._keys = keys
        self.reloads += 1
        if changed:
            log.info("Agent keys loaded from %s: %d agents.", self._path, len(keys))
        return changed

    def _stat(self) -> _Identity | None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _plain_address(address: str) -> str:
    """An IPv4-mapped IPv6 address (dual-stack listener) as the IPv4 address it carries."""
    if address.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(address).ipv4_mapped
        except ValueError:
            return address
        if mapped is not None:
            return str(mapped)
    return address
