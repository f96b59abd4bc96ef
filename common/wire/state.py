"""Which message is legal when: the protocol's one state table.

Rule 1: every decision about whether a message may be sent or received in the
current state, and which state follows, is read from ``TRANSITIONS``. The
connection never tests states itself to decide legality.

Rule 2: the table does not know which end it runs in. A key is (the role of
the *sender*, the message type); both ends track the same state and consult
the same table, the sender when it sends and the receiver when it receives.
``EOF`` counts as a message from the peer.

Why one joint state is safe although both ends send at once: during the
handshake only one side may speak at a time, and once OPEN every transition
changes only the sender's half (agent closed / manager closed) and every
legality test reads only the sender's half, so any interleaving of the two
streams ends in the same state. This is why the manager must accept a Batch
after its own Close: the agent may have sent it before the Close arrived.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from trailwarden.common.wire.codec import MessageType


class Role(enum.Enum):
    AGENT = "agent"
    MANAGER = "manager"

    @property
    def peer(self) -> Role:
        return Role.MANAGER if self is Role.AGENT else Role.AGENT


class StreamEnd(enum.Enum):
    """Pseudo-message: the peer's byte stream ended."""

    EOF = "EOF"


EOF: Final = StreamEnd.EOF


class State(enum.Enum):
    AWAIT_AGENT_HELLO = "AWAIT_AGENT_HELLO"
    AWAIT_MANAGER_HELLO = "AWAIT_MANAGER_HELLO"
    AWAIT_AGENT_PROOF = "AWAIT_AGENT_PROOF"
    AWAIT_MANAGER_PROOF = "AWAIT_MANAGER_PROOF"
    # Session established; both directions sealed from here on.
    OPEN = "OPEN"
    # The agent sent Close: only the manager may still speak.
    AGENT_CLOSED = "AGENT_CLOSED"
    # The manager sent Close: only the agent may still speak.
    MANAGER_CLOSED = "MANAGER_CLOSED"
    # Both sent Close, or the stream ended cleanly: nothing more is legal.
    CLOSED = "CLOSED"
    # An Error was sent or received: further incoming frames are ignored.
    FAILED = "FAILED"
    # This end found a protocol violation (raised LocalProtocolError or
    # RemoteProtocolError): the connection is unusable.
    ERROR = "ERROR"


Message = MessageType | StreamEnd
Key = tuple[Role, Message]

AGENT, MANAGER = Role.AGENT, Role.MANAGER
M = MessageType

# Error may end the connection from either side in any live state.
_EITHER_ERRORS: Final[Mapping[Key, State]] = {
    (AGENT, M.ERROR): State.FAILED,
    (MANAGER, M.ERROR): State.FAILED,
}

TRANSITIONS: Final[Mapping[State, Mapping[Key, State]]] = {
    State.AWAIT_AGENT_HELLO: {
        (AGENT, M.AGENT_HELLO): State.AWAIT_MANAGER_HELLO,
        **_EITHER_ERRORS,
    },
    State.AWAIT_MANAGER_HELLO: {
        (MANAGER, M.MANAGER_HELLO): State.AWAIT_AGENT_PROOF,
        **_EITHER_ERRORS,
    },
    State.AWAIT_AGENT_PROOF: {
        (AGENT, M.AGENT_PROOF): State.AWAIT_MANAGER_PROOF,
        **_EITHER_ERRORS,
    },
    State.AWAIT_MANAGER_PROOF: {
        (MANAGER, M.MANAGER_PROOF): State.OPEN,
        **_EITHER_ERRORS,
    },
    State.OPEN: {
        (AGENT, M.BATCH): State.OPEN,
        (AGENT, M.HEARTBEAT): State.OPEN,
        (AGENT, M.CLOSE): State.AGENT_CLOSED,
        (MANAGER, M.ACK): State.OPEN,
        (MANAGER, M.HEARTBEAT): State.OPEN,
        (MANAGER, M.CLOSE): State.MANAGER_CLOSED,
        **_EITHER_ERRORS,
    },
    State.AGENT_CLOSED: {
        (MANAGER, M.ACK): State.AGENT_CLOSED,
        (MANAGER, M.HEARTBEAT): State.AGENT_CLOSED,
        (MANAGER, M.CLOSE): State.CLOSED,
        (AGENT, EOF): State.CLOSED,
        **_EITHER_ERRORS,
    },
    State.MANAGER_CLOSED: {
        (AGENT, M.BATCH): State.MANAGER_CLOSED,
        (AGENT, M.HEARTBEAT): State.MANAGER_CLOSED,
        (AGENT, M.CLOSE): State.CLOSED,
        (MANAGER, EOF): State.CLOSED,
        **_EITHER_ERRORS,
    },
    State.CLOSED: {
        (AGENT, EOF): State.CLOSED,
        (MANAGER, EOF): State.CLOSED,
    },
    State.FAILED: {
        (AGENT, EOF): State.CLOSED,
        (MANAGER, EOF): State.CLOSED,
    },
    State.ERROR: {},
}

# States in which both directions are sealed with the session keys.
SESSION_STATES: Final = frozenset(
    {State.OPEN, State.AGENT_CLOSED, State.MANAGER_CLOSED, State.CLOSED}
)


def next_state(state: State, sender: Role, message: Message) -> State | None:
    """The state after ``sender`` sends ``message`` in ``state``; None if illegal."""
    return TRANSITIONS[state].get((sender, message))


def legal_messages(state: State, sender: Role) -> list[str]:
    """Names of what ``sender`` may send in ``state``, for error messages."""
    return sorted(m.name for (role, m) in TRANSITIONS[state] if role is sender)
