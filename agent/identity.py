"""Who this agent is: ``<data_dir>/agent.key``, one client.keys line from enrollment.

``trailwarden-agent enroll`` writes the file (``id name ip key``, mode 0600);
the agent reads it at every connection attempt that follows a change, so an
agent enrolled again while running picks up its new key without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from trailwarden.common.keys import KeysFileError, read_client_keys

KEY_FILE_NAME: Final = "agent.key"


class IdentityError(RuntimeError):
    """The agent has no usable key (not enrolled, or a broken key file)."""


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    agent_id: str
    name: str
    key: bytes = b""

    def __repr__(self) -> str:  # never print the key
        return f"AgentIdentity({self.agent_id!r}, {self.name!r})"


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE_NAME


def read_identity(data_dir: Path) -> AgentIdentity:
    """The agent's id, name and key.

    Raises:
        IdentityError: no key file, or not exactly one valid client.keys line.
    """
    path = key_path(data_dir)
    try:
        keys = read_client_keys(path)
    except FileNotFoundError:
        raise IdentityError(
            f"{path}: no agent key; enroll this agent first (trailwarden-agent enroll)"
        ) from None
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read the agent key: {exc.strerror}") from None
    except KeysFileError as exc:
        raise IdentityError(f"{exc}; enroll this agent again") from None
    if len(keys) != 1:
        raise IdentityError(
            f"{path}: expected one agent line (id name ip key), found {len(keys)}; "
            "enroll this agent again"
        )
    agent = keys.agents[0]
    return AgentIdentity(agent.agent_id, agent.name, agent.wire_key())


class IdentitySource:
    """``read_identity`` again whenever the key file changed (a callable)."""

    def __init__(self, data_dir: Path) -> None:
        self._path = key_path(data_dir)
        self._data_dir = data_dir
        self._stamp: tuple[int, int, int] | None = None
        self._identity: AgentIdentity | None = None

    def __call__(self) -> AgentIdentity:
        try:
            st = self._path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        if self._identity is None or stamp != self._stamp:
            self._identity = read_identity(self._data_dir)
            self._stamp = stamp
        return self._identity
