"""The established session: delivery, tampering, replay, closing, sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_pair import AGENT_ID, ConnectionPair, drain

from trailwarden.common.wire import (
    MAX_FRAME_BYTES,
    Ack,
    Batch,
    Close,
    CloseReason,
    ConnectionClosed,
    ConnectionLost,
    Error,
    ErrorCode,
    Heartbeat,
    IntegrityError,
    LocalProtocolError,
    ProtocolError,
    Record,
    RemoteProtocolError,
    State,
)
from trailwarden.common.wire.codec import BatchCodec, encode_message
from trailwarden.common.wire.framing import frame_header
from trailwarden.common.wire.limits import (
    HEADER_BYTES,
    MAX_FRAMES_PER_DIRECTION,
    REKEY_AFTER_FRAMES,
)


def open_pair(*, seeded: bool = False) -> ConnectionPair:
    pair = ConnectionPair(seeded=seeded)
    pair.handshake()
    return pair


def batch(seq: int, n: int = 2) -> Batch:
    return Batch(
        seq, tuple(Record(f"/var/log/ct/{i}.json", f'{{"n":{seq},"i":{i}}}') for i in range(n))
    )


def test_batches_acks_heartbeats_and_an_orderly_close() -> None:
    pair = open_pair()
    pair.send(pair.agent, batch(1))
    pair.send(pair.agent, Heartbeat())
    pair.send(pair.agent, batch(2, n=500))
    pair.send(pair.manager, Ack(1))
    pair.send(pair.manager, Heartbeat())
    pair.send(pair.manager, Ack(2))
    pair.send(pair.agent, Close(CloseReason.SHUTDOWN, "agent stopping"))
    assert pair.agent.state is pair.manager.state is State.AGENT_CLOSED
    pair.send(pair.manager, Close(CloseReason.SHUTDOWN))
    assert pair.agent.state is pair.manager.state is State.CLOSED
    assert pair.deliver(pair.manager, b"") == [ConnectionClosed()]
    assert pair.deliver(pair.agent, b"") == [ConnectionClosed()]


@pytest.mark.parametrize(
    ("agent_versions", "manager_versions", "codec"),
    [
        ((1, 2), (1, 2), BatchCodec.ZSTD),
        ((1,), (1, 2), BatchCodec.ZLIB),  # an agent of the first release
        ((1, 2), (1,), BatchCodec.ZLIB),  # a manager of the first release
    ],
)
def test_the_negotiated_version_chooses_the_batch_codec(
    agent_versions: tuple[int, ...], manager_versions: tuple[int, ...], codec: BatchCodec
) -> None:
    pair = ConnectionPair(agent_versions=agent_versions, manager_versions=manager_versions)
    pair.handshake()
    assert pair.agent.batch_codec is pair.manager.batch_codec is codec
    big = batch(1, n=300)  # compresses, so the codec is really used
    pair.send(pair.agent, big)
    pair.send(pair.manager, Ack(1))
    # The sealed frame is far smaller than the records: they were compressed.
    assert len(pair.sent[pair.agent][-1]) * 3 < sum(len(r.location + r.text) for r in big.records)


def test_a_batch_in_the_other_versions_codec_is_a_protocol_error() -> None:
    pair = open_pair()
    assert pair.manager.batch_codec is BatchCodec.ZSTD
    rogue = pair.agent._sealer  # private access: an agent that ignores the negotiation
    assert rogue is not None
    frame = rogue.seal(encode_message(batch(1, n=50), BatchCodec.ZLIB))
    with pytest.raises(RemoteProtocolError, match="codec ZLIB is not the one"):
        pair.deliver(pair.manager, frame)
    assert pair.manager.state is State.ERROR


def test_sends_carry_pending_handshake_bytes_first() -> None:
    pair = ConnectionPair()
    pair.flush(pair.agent)
    pair.flush(pair.manager)
    pair.flush(pair.agent)
    # The manager has its proof pending; an Error sent now must follow it.
    data = pair.manager.send(Error(ErrorCode.OVERLOADED, "busy"))
    events = pair.deliver(pair.agent, data)
    assert [type(e).__name__ for e in events] == ["Established", "Error"]


def test_every_split_point_of_a_sealed_stream() -> None:
    sender = open_pair(seeded=True)
    events = [batch(1), Heartbeat(), batch(2, n=5), Close(CloseReason.SHUTDOWN, "done")]
    stream = b"".join(sender.agent.send(e) for e in events)
    for cut in range(len(stream) + 1):
        pair = open_pair(seeded=True)  # same seeds: same session keys
        got = []
        for piece in (stream[:cut], stream[cut:]):
            if piece:
                got += pair.deliver(pair.manager, piece)
        assert got == events, cut
        assert pair.manager.buffered_bytes == 0


def test_byte_by_byte_sealed_stream() -> None:
    sender = open_pair(seeded=True)
    stream = sender.agent.send(batch(1, n=20)) + sender.agent.send(Heartbeat())
    pair = open_pair(seeded=True)
    got = []
    for i in range(len(stream)):
        got += pair.deliver(pair.manager, stream[i : i + 1])
    assert got == [batch(1, n=20), Heartbeat()]


# -- tampering ------------------------------------------------------------------------


def test_every_bit_flip_of_a_sealed_frame_is_rejected() -> None:
    sender = open_pair(seeded=True)
    frame = sender.agent.send(batch(7))
    reference = open_pair(seeded=True)
    assert reference.deliver(reference.manager, frame) == [batch(7)]
    for bit in range(len(frame) * 8):
        flipped = bytearray(frame)
        flipped[bit // 8] ^= 1 << (bit % 8)
        pair = open_pair(seeded=True)
        with pytest.raises(RemoteProtocolError) as caught:
            pair.deliver(pair.manager, bytes(flipped))
            pair.deliver(pair.manager, b"")  # a longer length prefix waits; EOF ends it
        if bit >= HEADER_BYTES * 8:
            assert isinstance(caught.value, IntegrityError), bit
        assert pair.manager.state is State.ERROR


def test_replayed_frame_is_rejected_and_the_connection_closed() -> None:
    pair = open_pair()
    frame = pair.agent.send(batch(1))
    assert pair.deliver(pair.manager, frame) == [batch(1)]
    with pytest.raises(IntegrityError, match="frame #1"):
        pair.deliver(pair.manager, frame)
    assert pair.manager.state is State.ERROR
    # The agent is told, sealed (the session keys still work in its direction).
    (told,) = pair.deliver(pair.agent, pair.manager.data_to_send())
    assert told.code is ErrorCode.INTEGRITY and told.code.retriable


def test_reordered_frames_are_rejected() -> None:
    pair = open_pair()
    first, second = pair.agent.send(batch(1)), pair.agent.send(batch(2))
    with pytest.raises(IntegrityError):
        pair.deliver(pair.manager, second + first)


def test_dropped_frame_is_detected_at_the_next_one() -> None:
    pair = open_pair()
    first = pair.agent.send(batch(1))
    pair.agent.send(batch(2))  # lost in transit
    third = pair.agent.send(batch(3))
    assert pair.deliver(pair.manager, first) == [batch(1)]
    with pytest.raises(IntegrityError):
        pair.deliver(pair.manager, third)


def test_frame_from_another_connection_is_rejected() -> None:
    old, new = open_pair(), open_pair()
    frame = old.agent.send(batch(1))
    with pytest.raises(IntegrityError):
        new.deliver(new.manager, frame)


def test_reflected_frame_is_rejected() -> None:
    pair = open_pair()
    frame = pair.agent.send(Heartbeat())
    with pytest.raises(IntegrityError):
        pair.deliver(pair.agent, frame)


def test_truncated_stream_at_eof() -> None:
    pair = open_pair()
    frame = pair.agent.send(batch(1))
    pair.manager.receive_data(frame[:-1])
    assert drain(pair.manager) == []
    with pytest.raises(ConnectionLost, match=rf"middle of a frame \({len(frame) - 1} bytes"):
        pair.deliver(pair.manager, b"")
    assert pair.manager.state is State.ERROR
    assert pair.manager.data_to_send() == b""  # no courtesy to a closed stream


def test_stream_cut_between_frames_without_close_is_not_a_clean_end() -> None:
    pair = open_pair()
    pair.send(pair.agent, batch(1))
    with pytest.raises(ConnectionLost, match="agent's side of the connection ended without Close"):
        pair.deliver(pair.manager, b"")


def test_oversized_sealed_frame_is_refused_from_its_header() -> None:
    pair = open_pair()
    pair.manager.receive_data(frame_header(MAX_FRAME_BYTES + 1))
    with pytest.raises(RemoteProtocolError, match="exceeds the 2097152-byte limit"):
        pair.manager.next_event()
    assert pair.manager.buffered_bytes == 0


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=4000), st.integers(1, 700))
def test_garbage_after_authentication(data: bytes, chunk: int) -> None:
    pair = open_pair(seeded=True)
    conn = pair.manager
    try:
        for start in range(0, len(data), chunk):
            conn.receive_data(data[start : start + chunk])
            drain(conn)
            assert conn.buffered_bytes < HEADER_BYTES + MAX_FRAME_BYTES
        conn.receive_data(b"")
        drain(conn)
    except RemoteProtocolError as exc:
        assert str(exc)
        assert conn.state is State.ERROR
    else:  # pragma: no cover - random bytes cannot carry a valid GCM tag
        pytest.fail("garbage was accepted")


# -- the state table in action ----------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "event", "match"),
    [
        ("agent", Ack(1), "agent can't send ACK in state OPEN"),
        ("manager", batch(1), "manager can't send BATCH in state OPEN"),
    ],
)
def test_sending_the_other_roles_message_is_a_local_error(
    side: str, event: Batch | Ack, match: str
) -> None:
    pair = open_pair()
    conn = getattr(pair, side)
    with pytest.raises(LocalProtocolError, match=match):
        conn.send(event)
    assert conn.state is State.ERROR
    # The peer learns that this side failed, without our internals.
    (told,) = pair.flush(conn)
    assert told.code is ErrorCode.INTERNAL and "internal error on the" in told.message
    with pytest.raises(LocalProtocolError, match="state ERROR"):
        conn.next_event()


def test_batch_before_established_is_a_local_error() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError, match="BATCH in state AWAIT_MANAGER_HELLO"):
        pair.agent.send(batch(1))


def test_nothing_after_own_close() -> None:
    pair = open_pair()
    pair.send(pair.agent, Close(CloseReason.SHUTDOWN))
    with pytest.raises(LocalProtocolError, match="in state AGENT_CLOSED"):
        pair.agent.send(Heartbeat())


def test_peer_sending_an_illegal_message_is_a_remote_error() -> None:
    pair = open_pair()
    # A misbehaving manager, built from its real sealer, seals a Batch.
    rogue = pair.manager._sealer  # private access: deliberately bypassing the state table
    assert rogue is not None
    with pytest.raises(RemoteProtocolError, match="manager sent BATCH in state OPEN"):
        pair.deliver(pair.agent, rogue.seal(encode_message(batch(1))))


def test_batches_in_flight_when_the_manager_closes_are_still_delivered() -> None:
    pair = open_pair()
    in_flight = pair.agent.send(batch(1))
    pair.send(pair.manager, Close(CloseReason.REBALANCE, "go to node 2"))
    assert pair.deliver(pair.manager, in_flight) == [batch(1)]
    # The manager said Close: it cannot Ack that batch; the agent will resend it.
    with pytest.raises(LocalProtocolError, match="MANAGER_CLOSED"):
        pair.manager.send(Ack(1))


def test_simultaneous_close_ends_closed_on_both_sides_in_any_order() -> None:
    for agent_first in (True, False):
        pair = open_pair()
        from_agent = pair.agent.send(Close(CloseReason.SHUTDOWN))
        from_manager = pair.manager.send(Close(CloseReason.SHUTDOWN))
        order = [(pair.manager, from_agent), (pair.agent, from_manager)]
        for receiver, data in order if agent_first else reversed(order):
            assert len(pair.deliver(receiver, data)) == 1
        assert pair.agent.state is pair.manager.state is State.CLOSED


def test_eof_after_the_peers_close_is_clean() -> None:
    pair = open_pair()
    pair.send(pair.agent, Close(CloseReason.SHUTDOWN))
    # The agent closed its socket right after Close: the manager sees a clean end.
    assert pair.deliver(pair.manager, b"") == [ConnectionClosed()]
    assert pair.manager.state is State.CLOSED


def test_after_an_error_further_frames_are_ignored() -> None:
    pair = open_pair()
    in_flight = pair.agent.send(batch(1))
    pair.send(pair.manager, Error(ErrorCode.OVERLOADED, "shedding load"))
    assert pair.agent.state is State.FAILED
    assert pair.deliver(pair.manager, in_flight) == []  # sent before the agent saw the Error
    assert pair.deliver(pair.manager, b"") == [ConnectionClosed()]
    with pytest.raises(LocalProtocolError, match="FAILED"):
        pair.agent.send(batch(2))


# -- sequence numbers ---------------------------------------------------------------------


def test_batch_sequences_must_increase_within_a_connection() -> None:
    pair = open_pair()
    pair.send(pair.agent, batch(5))
    with pytest.raises(LocalProtocolError, match="batch sequence 5 does not follow 5"):
        pair.agent.send(batch(5))


def test_manager_rejects_a_repeated_batch_sequence_from_the_peer() -> None:
    pair = open_pair()
    pair.send(pair.agent, batch(5))
    rogue = pair.agent._sealer  # private access: an agent with a broken spool
    assert rogue is not None
    with pytest.raises(RemoteProtocolError, match="batch sequence 3 does not follow 5"):
        pair.deliver(pair.manager, rogue.seal(encode_message(batch(3))))


@pytest.mark.parametrize("ack", [6, 3])
def test_acks_cover_only_batches_sent_and_move_forward(ack: int) -> None:
    pair = open_pair()
    pair.send(pair.agent, batch(3))
    pair.send(pair.agent, batch(5))
    pair.send(pair.manager, Ack(3))
    with pytest.raises(LocalProtocolError, match=rf"ack {ack} is outside \(3, 5\]"):
        pair.manager.send(Ack(ack))


def test_agent_rejects_an_ack_for_a_batch_it_never_sent() -> None:
    pair = open_pair()
    pair.send(pair.agent, batch(1))
    rogue = pair.manager._sealer  # private access: a manager acking the future
    assert rogue is not None
    with pytest.raises(RemoteProtocolError, match=r"ack 9 is outside \(0, 1\]"):
        pair.deliver(pair.agent, rogue.seal(encode_message(Ack(9))))


def test_batch_sequences_survive_a_reconnect_unchanged() -> None:
    first = open_pair()
    first.send(first.agent, batch(41))
    first.send(first.agent, batch(42))
    first.send(first.manager, Ack(41))
    # The connection drops before batch 42 is acknowledged.
    with pytest.raises(ConnectionLost):
        first.deliver(first.agent, b"")
    second = open_pair()
    old_frame = first.sent[first.agent][-1]
    resent = second.agent.send(batch(42))
    # Same batch, same sequence, but sealed under new keys: a different frame.
    assert resent != old_frame
    assert second.deliver(second.manager, resent) == [batch(42)]
    second.send(second.agent, batch(43))
    second.send(second.manager, Ack(43))


def test_should_rekey_near_the_frame_limit() -> None:
    pair = open_pair()
    assert not pair.agent.should_rekey
    sealer = pair.agent._sealer  # private access: 2^32 real frames would take hours
    assert sealer is not None
    sealer._count = REKEY_AFTER_FRAMES
    assert pair.agent.should_rekey
    sealer._count = MAX_FRAMES_PER_DIRECTION
    with pytest.raises(LocalProtocolError, match="reconnect"):
        pair.agent.send(Heartbeat())


def test_agent_id_is_reported() -> None:
    pair = open_pair()
    assert pair.agent.agent_id == pair.manager.agent_id == AGENT_ID
    assert repr(pair.manager) == "<ManagerConnection agent=001 state=OPEN>"


def test_errors_are_not_instantiable_at_the_root() -> None:
    with pytest.raises(TypeError, match="abstract"):
        ProtocolError("x")


def test_remote_error_policy_matches_the_code_the_peer_is_told() -> None:
    from trailwarden.common.wire import errors

    remote = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.RemoteProtocolError)
    ]
    assert len(remote) >= 6
    for cls in remote:
        assert cls.retriable == cls.code.retriable, cls.__name__
