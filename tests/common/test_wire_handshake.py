"""The handshake: proof of the key, refusal of strangers, version negotiation."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_pair import AGENT_ID, AGENT_KEY, OTHER_KEY, ConnectionPair, drain

from trailwarden.common.keys import AgentKey, ClientKeys, write_client_keys
from trailwarden.common.wire import (
    MAX_HANDSHAKE_BYTES,
    PROTOCOL_VERSION,
    AgentConnection,
    AuthenticationFailed,
    Connection,
    ConnectionClosed,
    ConnectionLost,
    Error,
    ErrorCode,
    Established,
    LocalProtocolError,
    ManagerConnection,
    ProtocolError,
    RemoteProtocolError,
    State,
    UnknownAgent,
    UnsupportedVersion,
)
from trailwarden.common.wire.codec import MessageType, pack_plain
from trailwarden.common.wire.framing import frame_header
from trailwarden.common.wire.limits import HEADER_BYTES


def plain(message_type: MessageType, **fields: object) -> bytes:
    body = pack_plain(message_type, fields)
    return frame_header(len(body)) + body


def raw_frame(body: bytes) -> bytes:
    return frame_header(len(body)) + body


def test_handshake_establishes_both_sides() -> None:
    pair = ConnectionPair()
    pair.handshake()
    assert pair.agent.state is State.OPEN and pair.manager.state is State.OPEN
    assert pair.manager.agent_id == AGENT_ID
    assert pair.lookups == [AGENT_ID]


def test_the_key_never_travels() -> None:
    pair = ConnectionPair()
    pair.handshake()
    wire = b"".join(pair.sent[pair.agent] + pair.sent[pair.manager])
    assert AGENT_KEY not in wire
    assert AGENT_KEY[:16] not in wire


def test_two_handshakes_derive_different_session_keys() -> None:
    frames = []
    for _ in range(2):
        pair = ConnectionPair()
        pair.handshake()
        frames.append(pair.agent.send(Error(ErrorCode.INTERNAL, "same plaintext")))
    assert frames[0] != frames[1]


def test_wrong_key_fails_without_saying_whose_key_is_wrong() -> None:
    messages = []
    for agent_key, manager_key in ((AGENT_KEY, OTHER_KEY), (OTHER_KEY, AGENT_KEY)):
        pair = ConnectionPair(agent_key=agent_key, manager_keys={AGENT_ID: manager_key})
        pair.flush(pair.agent)
        pair.flush(pair.manager)
        with pytest.raises(AuthenticationFailed) as caught:
            pair.flush(pair.agent)
        assert not caught.value.retriable
        assert pair.manager.state is State.ERROR
        # The agent is told, in the manager's courtesy Error frame.
        (told,) = pair.flush(pair.manager)
        assert isinstance(told, Error) and told.code is ErrorCode.AUTH_FAILED
        assert pair.agent.state is State.FAILED
        assert told.message == str(caught.value)
        messages.append(told.message)
        wire = b"".join(pair.sent[pair.agent] + pair.sent[pair.manager])
        assert AGENT_KEY not in wire and OTHER_KEY not in wire
    assert messages[0] == messages[1]
    assert "different keys" in messages[0]


def test_agent_rejects_a_manager_that_cannot_prove_the_key() -> None:
    pair = ConnectionPair()
    pair.flush(pair.agent)
    pair.flush(pair.manager)
    pair.agent.data_to_send()  # the agent's proof, swallowed by the impostor
    forged = plain(MessageType.MANAGER_PROOF, mac=os.urandom(32))
    with pytest.raises(AuthenticationFailed, match="different keys"):
        pair.deliver(pair.agent, forged)
    assert pair.agent.state is State.ERROR
    # Courtesy Error to the impostor, in plaintext (there is no session).
    courtesy = pair.agent.data_to_send()
    assert b"AUTH" not in courtesy and msgpack.unpackb(courtesy[HEADER_BYTES:])["code"] == 4


def test_unknown_agent_is_refused_with_a_reason_the_agent_sees() -> None:
    pair = ConnectionPair(agent_id="042")
    with pytest.raises(UnknownAgent, match="agent 042 is not registered") as caught:
        pair.flush(pair.agent)
    assert pair.lookups == ["042"]
    assert caught.value.code is ErrorCode.UNKNOWN_AGENT and not caught.value.retriable
    assert pair.manager.state is State.ERROR
    (told,) = pair.flush(pair.manager)
    assert isinstance(told, Error) and told.code is ErrorCode.UNKNOWN_AGENT
    assert "enroll it again" in told.message
    assert not told.code.retriable
    # After the Error the manager closes; the agent sees a clean end.
    assert pair.deliver(pair.agent, b"") == [ConnectionClosed()]
    assert pair.agent.state is State.CLOSED


def test_manager_looks_keys_up_in_a_real_client_keys_file(tmp_path: Path) -> None:
    keys = ClientKeys([AgentKey("001", "web-1", "any", AGENT_KEY.decode())])
    keys, agent = keys.add_new_agent("web-2")
    keys = keys.without_agent("001")
    path = tmp_path / "client.keys"
    write_client_keys(path, keys)
    from trailwarden.common.keys import read_client_keys

    table = read_client_keys(path)
    # The enrolled agent gets in...
    manager = ManagerConnection(table.wire_key)
    agent_conn = AgentConnection(agent.agent_id, agent.wire_key())
    manager.receive_data(agent_conn.data_to_send())
    assert drain(manager) == []
    agent_conn.receive_data(manager.data_to_send())
    drain(agent_conn)
    manager.receive_data(agent_conn.data_to_send())
    assert drain(manager) == [Established(agent.agent_id, PROTOCOL_VERSION)]
    # ...the removed one is told it is unknown.
    manager = ManagerConnection(table.wire_key)
    with pytest.raises(UnknownAgent):
        manager.receive_data(AgentConnection("001", AGENT_KEY).data_to_send())
        drain(manager)


def test_lookup_returning_a_non_key_is_a_local_error() -> None:
    manager = ManagerConnection(lambda agent_id: "a str key")  # type: ignore[arg-type,return-value]
    manager.receive_data(AgentConnection(AGENT_ID, AGENT_KEY).data_to_send())
    with pytest.raises(LocalProtocolError, match="key_lookup"):
        manager.next_event()
    assert manager.state is State.ERROR


# -- versions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent_versions", "manager_versions", "message"),
    [
        ((2,), (1,), "unsupported protocol version 2, this side speaks 1"),
        ((1,), (2,), "unsupported protocol version 1, this side speaks 2"),
        ((3, 4), (1, 2), "unsupported protocol version 3 or 4, this side speaks 1 or 2"),
    ],
)
def test_version_mismatch_gives_a_clear_message_to_both_sides(
    agent_versions: tuple[int, ...], manager_versions: tuple[int, ...], message: str
) -> None:
    pair = ConnectionPair(agent_versions=agent_versions, manager_versions=manager_versions)
    with pytest.raises(UnsupportedVersion) as caught:
        pair.flush(pair.agent)
    assert str(caught.value) == message
    assert not caught.value.retriable
    (told,) = pair.flush(pair.manager)
    assert told == Error(ErrorCode.UNSUPPORTED_VERSION, message)


@pytest.mark.parametrize(
    ("agent_versions", "manager_versions", "chosen"),
    [((1, 2), (1,), 1), ((1, 2), (2, 3), 2), ((1, 5, 9), (9, 5), 9)],
)
def test_highest_common_version_is_chosen(
    agent_versions: tuple[int, ...], manager_versions: tuple[int, ...], chosen: int
) -> None:
    pair = ConnectionPair(agent_versions=agent_versions, manager_versions=manager_versions)
    pair.handshake()
    assert pair.agent.protocol_version == pair.manager.protocol_version == chosen


def test_a_future_hello_with_other_fields_still_gets_the_version_error() -> None:
    manager = ManagerConnection(lambda _: AGENT_KEY)
    manager.receive_data(
        plain(MessageType.AGENT_HELLO, versions=[7], agent="001", nonce=b"n" * 32, features=["x"])
    )
    with pytest.raises(UnsupportedVersion, match=r"version 7, this side speaks 1 or 2$"):
        manager.next_event()


def test_agent_refuses_a_version_it_did_not_offer() -> None:
    agent = AgentConnection(AGENT_ID, AGENT_KEY)
    agent.data_to_send()
    agent.receive_data(plain(MessageType.MANAGER_HELLO, version=3, nonce=b"m" * 32))
    with pytest.raises(
        UnsupportedVersion, match=r"unsupported protocol version 3, this side speaks 1 or 2$"
    ):
        agent.next_event()
    courtesy = msgpack.unpackb(agent.data_to_send()[HEADER_BYTES:])
    assert courtesy["code"] == ErrorCode.UNSUPPORTED_VERSION


def test_downgrading_the_offer_in_transit_breaks_the_handshake() -> None:
    pair = ConnectionPair(agent_versions=(1, 2), manager_versions=(1, 2))
    hello = msgpack.unpackb(pair.agent.data_to_send()[HEADER_BYTES:])
    assert hello["versions"] == [1, 2]
    hello["versions"] = [1]  # a middleman strips version 2
    body = msgpack.packb(hello, use_bin_type=True)
    pair.deliver(pair.manager, frame_header(len(body)) + body)
    assert pair.manager.protocol_version == 1
    pair.flush(pair.manager)
    with pytest.raises(AuthenticationFailed):
        pair.flush(pair.agent)
    assert pair.agent.state is not State.OPEN


# -- hostile input before authentication ----------------------------------------------


def test_oversized_handshake_frame_is_refused_before_buffering_it() -> None:
    pair = ConnectionPair()
    pair.manager.receive_data(frame_header(MAX_HANDSHAKE_BYTES + 1))
    with pytest.raises(RemoteProtocolError, match="exceeds the 2048-byte limit"):
        pair.manager.next_event()
    assert pair.manager.buffered_bytes == 0
    assert pair.lookups == []


def test_wazuh_agent_gets_told_what_it_is_talking_to() -> None:
    manager = ManagerConnection(lambda _: AGENT_KEY)
    body = b"!001!#AES:" + os.urandom(40)
    manager.receive_data(frame_header(len(body)) + body)
    with pytest.raises(RemoteProtocolError, match=r"Wazuh 4\.x agent protocol"):
        manager.next_event()


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (plain(MessageType.AGENT_HELLO, versions=[1], agent="1x", nonce=b"n" * 32), "agent id"),
        (plain(MessageType.AGENT_HELLO, versions=[1], agent="123456789", nonce=b"n" * 32), "id"),
        (plain(MessageType.AGENT_HELLO, versions=[1], agent="001", nonce=b"short"), "32 bytes"),
        (plain(MessageType.AGENT_HELLO, versions=[], agent="001", nonce=b"n" * 32), "offer"),
        (plain(MessageType.AGENT_HELLO, versions=[True], agent="001", nonce=b"n" * 32), "offer"),
        (
            plain(MessageType.AGENT_HELLO, versions=list(range(1, 18)), agent="1", nonce=b""),
            "offer",
        ),
        (plain(MessageType.AGENT_PROOF, mac=b"m" * 32), "AGENT_PROOF in state AWAIT_AGENT_HELLO"),
        (plain(MessageType.MANAGER_HELLO, version=1, nonce=b"n" * 32), "agent sent MANAGER_HELLO"),
        (raw_frame(msgpack.packb({"t": 1})), "does not speak the trailwarden protocol"),
        (raw_frame(b"\xc1\xc1"), "not a valid msgpack"),
    ],
    ids=lambda value: value if isinstance(value, str) else "frame",
)
def test_malformed_hellos_are_remote_errors(frame: bytes, match: str) -> None:
    pair = ConnectionPair()
    with pytest.raises(RemoteProtocolError, match=match):
        pair.deliver(pair.manager, frame)
    assert pair.lookups == []
    # The agent is told why, in a plaintext Error it can decode.
    told = pair.deliver(pair.agent, pair.manager.data_to_send()) if pair.agent else []
    assert told and isinstance(told[0], Error) and told[0].code is ErrorCode.PROTOCOL_ERROR


def test_manager_closing_during_the_handshake_is_connection_lost() -> None:
    pair = ConnectionPair()
    pair.agent.data_to_send()
    with pytest.raises(ConnectionLost, match="ended without Close or Error in state"):
        pair.deliver(pair.agent, b"")
    assert pair.agent.state is State.ERROR


def test_manager_may_refuse_before_the_hello() -> None:
    pair = ConnectionPair()
    refusal = pair.manager.send(Error(ErrorCode.OVERLOADED, "too many agents connecting"))
    (told,) = pair.deliver(pair.agent, refusal)
    assert told.code is ErrorCode.OVERLOADED and told.code.retriable
    # Whatever the agent already sent is ignored, and the end is clean.
    assert pair.deliver(pair.manager, pair.agent.data_to_send()) == []
    assert pair.deliver(pair.manager, b"") == [pair.manager.next_event()]


def test_every_split_point_of_the_handshake() -> None:
    reference = ConnectionPair(seeded=True)
    flights = []
    for sender in (reference.agent, reference.manager, reference.agent, reference.manager):
        flights.append(sender.data_to_send())
        reference.deliver(reference.peer(sender), flights[-1])
    for index, flight in enumerate(flights):
        for cut in range(len(flight) + 1):
            pair = ConnectionPair(seeded=True)
            events: list[object] = []
            for step, sender in enumerate((pair.agent, pair.manager, pair.agent, pair.manager)):
                data = sender.data_to_send()
                assert data == flights[step]
                receiver = pair.peer(sender)
                if step == index:
                    # (b"" would mean EOF, so empty pieces are not delivered)
                    for piece in (data[:cut], data[cut:]):
                        events += pair.deliver(receiver, piece) if piece else []
                else:
                    events += pair.deliver(receiver, data)
            assert events == [Established(AGENT_ID, PROTOCOL_VERSION)] * 2, (index, cut)


def handshake_with(step_to_replace: int, replacement: bytes) -> tuple[list[object], bool]:
    """Run a seeded handshake, delivering ``replacement`` instead of flight
    ``step_to_replace``; return the agent's events and whether anything raised."""
    pair = ConnectionPair(seeded=True)
    agent_events: list[object] = []
    try:
        for step, sender in enumerate((pair.agent, pair.manager, pair.agent, pair.manager)):
            data = sender.data_to_send()
            if not data:
                break  # the handshake stalled (e.g. a longer length prefix)
            receiver = pair.peer(sender)
            received = pair.deliver(receiver, replacement if step == step_to_replace else data)
            if receiver is pair.agent:
                agent_events += received
        agent_events += pair.deliver(pair.agent, b"")
    except ProtocolError:
        return agent_events, True
    return agent_events, False


def test_every_bit_flip_in_any_flight_stops_the_agent_from_trusting_the_session() -> None:
    reference = ConnectionPair(seeded=True)
    flights = []
    for sender in (reference.agent, reference.manager, reference.agent, reference.manager):
        flights.append(sender.data_to_send())
        reference.deliver(reference.peer(sender), flights[-1])
    # Unmodified, the same seeded run establishes the session.
    events, raised = handshake_with(-1, b"")
    assert Established(AGENT_ID, PROTOCOL_VERSION) in events
    for index, flight in enumerate(flights):
        for bit in range(len(flight) * 8):
            flipped = bytearray(flight)
            flipped[bit // 8] ^= 1 << (bit % 8)
            events, raised = handshake_with(index, bytes(flipped))
            assert raised, (index, bit)
            assert not any(isinstance(e, Established) for e in events), (index, bit)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=6000), st.lists(st.integers(1, 3000), min_size=1, max_size=8))
def test_garbage_before_authentication(data: bytes, chunks: list[int]) -> None:
    for make in (_manager, _agent):
        conn = make()
        _feed_garbage(conn, data, chunks, limit=HEADER_BYTES + MAX_HANDSHAKE_BYTES)


def _manager() -> Connection:
    return ManagerConnection(lambda _: AGENT_KEY)


def _agent() -> Connection:
    conn = AgentConnection(AGENT_ID, AGENT_KEY)
    conn.data_to_send()
    return conn


def _feed_garbage(conn: Connection, data: bytes, chunks: list[int], limit: int) -> None:
    position = 0
    sizes = iter(chunks * (len(data) // max(1, min(chunks)) + 1))
    while position < len(data):
        size = next(sizes)
        conn.receive_data(data[position : position + size])
        position += size
        try:
            drain(conn)
        except RemoteProtocolError as exc:
            assert str(exc)
            assert conn.state is State.ERROR
            assert conn.buffered_bytes == 0
            return
        assert conn.buffered_bytes < limit
    try:
        conn.receive_data(b"")
        drain(conn)
    except RemoteProtocolError:
        assert conn.state is State.ERROR


def test_no_key_derivation_before_the_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    import trailwarden.common.wire.endpoints as connection_module

    real = connection_module.derive_session

    def counting(*args: bytes) -> object:
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(connection_module, "derive_session", counting)
    manager = ManagerConnection(lambda _: AGENT_KEY)
    manager.receive_data(AgentConnection(AGENT_ID, AGENT_KEY).data_to_send())
    drain(manager)
    assert manager.data_to_send()  # the manager hello went out...
    assert calls == []  # ...without any work on the key


def test_constructor_misuse_is_local() -> None:
    with pytest.raises(LocalProtocolError, match="agent id"):
        AgentConnection("abc", AGENT_KEY)
    with pytest.raises(LocalProtocolError, match="agent_key"):
        AgentConnection(AGENT_ID, "text")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="agent_key"):
        AgentConnection(AGENT_ID, b"")
    with pytest.raises(LocalProtocolError, match="version"):
        ManagerConnection(lambda _: None, versions=())
    lookup: Callable[[str], bytes | None] = lambda _: None  # noqa: E731
    with pytest.raises(LocalProtocolError, match="version"):
        ManagerConnection(lookup, versions=(0,))


_handshake_values = (
    st.integers(-3, 5)
    | st.just("trailwarden")
    | st.just("001")
    | st.text(max_size=10)
    | st.binary(min_size=30, max_size=34)
    | st.binary(max_size=4)
    | st.lists(st.integers(0, 3) | st.booleans(), max_size=3)
    | st.none()
)
_handshake_maps = st.dictionaries(
    st.sampled_from(["proto", "t", "versions", "agent", "nonce", "version", "mac", "code", "msg"]),
    _handshake_values,
    max_size=7,
).map(lambda d: {"proto": "trailwarden", **d} if "t" in d else d)


@settings(max_examples=400, deadline=None)
@given(_handshake_maps, st.booleans())
def test_structured_handshake_fuzz(fields: dict[str, object], to_manager: bool) -> None:
    """Well-formed envelopes with wrong contents: only our errors, or an Error event."""
    conn = _manager() if to_manager else _agent()
    conn.receive_data(raw_frame(msgpack.packb(fields, use_bin_type=True)))
    try:
        events = drain(conn)
    except RemoteProtocolError as exc:
        assert str(exc) and conn.state is State.ERROR
        return
    assert all(isinstance(e, Error) for e in events)
