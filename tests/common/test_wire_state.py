"""The state table's own properties, and that the connection obeys it exactly."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from wire_pair import ConnectionPair

import trailwarden.common.wire as wire_package
from trailwarden.common.wire import (
    Ack,
    Batch,
    Close,
    CloseReason,
    Error,
    ErrorCode,
    Heartbeat,
    LocalProtocolError,
    Record,
    State,
)
from trailwarden.common.wire.codec import EVENT_TYPES, MessageType
from trailwarden.common.wire.events import SendableEvent
from trailwarden.common.wire.state import (
    EOF,
    SESSION_STATES,
    TRANSITIONS,
    Role,
    next_state,
)

HANDSHAKE_TYPES = {
    MessageType.AGENT_HELLO,
    MessageType.MANAGER_HELLO,
    MessageType.AGENT_PROOF,
    MessageType.MANAGER_PROOF,
}
# Which half of a session state is still open: (agent may speak, manager may speak).
HALVES = {
    State.OPEN: (True, True),
    State.AGENT_CLOSED: (False, True),
    State.MANAGER_CLOSED: (True, False),
    State.CLOSED: (False, False),
}


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.ERROR] == {}
    assert set(TRANSITIONS[State.CLOSED]) == {(Role.AGENT, EOF), (Role.MANAGER, EOF)}


def test_handshake_messages_never_inside_the_session_and_vice_versa() -> None:
    for state, row in TRANSITIONS.items():
        for _role, message in row:
            if state in SESSION_STATES:
                assert message not in HANDSHAKE_TYPES, (state, message)
            elif state.name.startswith("AWAIT"):
                assert message in HANDSHAKE_TYPES | {MessageType.ERROR}, (state, message)


def test_in_the_session_each_side_only_changes_and_reads_its_own_half() -> None:
    for state, (agent_open, manager_open) in HALVES.items():
        for (role, message), target in TRANSITIONS[state].items():
            if message in (MessageType.ERROR, EOF):
                continue
            own_open = agent_open if role is Role.AGENT else manager_open
            assert own_open, f"{role} sends {message} in {state} after its own Close"
            new_agent, new_manager = HALVES[target]
            if role is Role.AGENT:
                assert new_manager == manager_open
            else:
                assert new_agent == agent_open
    # Legality for a role depends only on that role's half (Error, which may
    # end any live state, aside).
    for role in Role:
        index = 0 if role is Role.AGENT else 1
        for first, second in itertools.combinations(HALVES, 2):
            if HALVES[first][index] != HALVES[second][index]:
                continue
            legal = {
                s: {
                    m
                    for (r, m) in TRANSITIONS[s]
                    if r is role and m not in (EOF, MessageType.ERROR)
                }
                for s in (first, second)
            }
            assert legal[first] == legal[second], (role, first, second)


def test_messages_from_the_two_sides_commute() -> None:
    """Both ends see the two streams interleaved differently and must agree."""
    for state, row in TRANSITIONS.items():
        for (role_a, msg_a), (role_b, msg_b) in itertools.product(row, row):
            if role_a is role_b or MessageType.ERROR in (msg_a, msg_b) or EOF in (msg_a, msg_b):
                continue
            after_a = next_state(state, role_a, msg_a)
            after_b = next_state(state, role_b, msg_b)
            assert after_a is not None and after_b is not None
            ab = next_state(after_a, role_b, msg_b)
            ba = next_state(after_b, role_a, msg_a)
            assert ab is not None and ab == ba, (state, msg_a, msg_b)


def _open() -> ConnectionPair:
    pair = ConnectionPair()
    pair.handshake()
    pair.send(pair.agent, Batch(1, (Record("l", "t"),)))
    return pair


def _agent_closed() -> ConnectionPair:
    pair = _open()
    pair.send(pair.agent, Close(CloseReason.SHUTDOWN))
    return pair


def _manager_closed() -> ConnectionPair:
    pair = _open()
    pair.send(pair.manager, Close(CloseReason.SHUTDOWN))
    return pair


def _closed() -> ConnectionPair:
    pair = _agent_closed()
    pair.send(pair.manager, Close(CloseReason.SHUTDOWN))
    return pair


def _failed() -> ConnectionPair:
    pair = _open()
    pair.send(pair.manager, Error(ErrorCode.OVERLOADED, "x"))
    return pair


SETUPS: dict[str, Callable[[], ConnectionPair]] = {
    # Agent in AWAIT_MANAGER_HELLO, manager (hello not yet delivered) in AWAIT_AGENT_HELLO.
    "handshake": ConnectionPair,
    "open": _open,
    "agent_closed": _agent_closed,
    "manager_closed": _manager_closed,
    "closed": _closed,
    "failed": _failed,
}
EVENTS: list[SendableEvent] = [
    Batch(2, (Record("l", "t"),)),
    Ack(1),
    Heartbeat(),
    Close(CloseReason.SHUTDOWN),
    Error(ErrorCode.INTERNAL, "x"),
]


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_send_succeeds_exactly_when_the_table_allows_it(
    setup: str, event: SendableEvent, role: Role
) -> None:
    pair = SETUPS[setup]()
    conn = pair.agent if role is Role.AGENT else pair.manager
    state = conn.state
    legal = next_state(state, role, EVENT_TYPES[type(event)]) is not None
    if legal:
        assert conn.send(event)
    else:
        with pytest.raises(LocalProtocolError, match="can't send"):
            conn.send(event)


BANNED_MODULES = {"asyncio", "socket", "selectors", "time", "os", "io", "pathlib", "threading"}


def test_the_wire_package_does_no_io() -> None:
    """Sans-I/O: no networking, clocks or files, checked on the source."""
    package_dir = Path(wire_package.__file__).parent
    modules = sorted(package_dir.glob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                names = []
            for name in names:
                assert name.split(".")[0] not in BANNED_MODULES, f"{path.name} imports {name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"open", "input", "print"}, (
                    f"{path.name} calls {node.func.id}"
                )
