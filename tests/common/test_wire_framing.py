"""FrameBuffer: reassembly from any split, limits before allocation, view lifetime."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trailwarden.common.wire import LocalProtocolError, RemoteProtocolError
from trailwarden.common.wire.framing import FrameBuffer, frame_header
from trailwarden.common.wire.limits import HEADER_BYTES


def frames_of(*bodies: bytes) -> bytes:
    return b"".join(frame_header(len(b)) + b for b in bodies)


def collect(buffer: FrameBuffer, limit: int = 1000) -> list[bytes]:
    out = []
    while (body := buffer.next_frame(limit)) is not None:
        out.append(bytes(body))
    return out


BODIES = (b"a", b"hello world", bytes(range(256)) * 3, b"\x00" * 5)


def test_header_is_little_endian_length() -> None:
    assert frame_header(0x01020304) == b"\x04\x03\x02\x01"


def test_every_single_split_point_yields_the_same_frames() -> None:
    stream = frames_of(*BODIES)
    for cut in range(len(stream) + 1):
        buffer = FrameBuffer()
        buffer.feed(stream[:cut])
        got = collect(buffer)
        buffer.feed(stream[cut:])
        got += collect(buffer)
        assert got == list(BODIES), cut
        assert buffer.buffered == 0


def test_byte_by_byte_feeding() -> None:
    stream = frames_of(*BODIES)
    buffer = FrameBuffer()
    got: list[bytes] = []
    for i in range(len(stream)):
        buffer.feed(stream[i : i + 1])
        got += collect(buffer)
    assert got == list(BODIES)


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.data())
def test_arbitrary_chunking(bodies: list[bytes], data: st.DataObject) -> None:
    stream = frames_of(*bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    buffer = FrameBuffer()
    got: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        buffer.feed(stream[start:cut])
        start = cut
        got += collect(buffer)
        # Drained: what remains is one incomplete frame.
        assert buffer.buffered < HEADER_BYTES + 1000
    assert got == bodies


def test_length_over_limit_is_rejected_from_the_header_alone() -> None:
    buffer = FrameBuffer()
    buffer.feed(frame_header(1001))  # no body sent: the check must not wait for it
    with pytest.raises(RemoteProtocolError, match="1001 exceeds the 1000-byte limit"):
        buffer.next_frame(1000)


def test_length_at_limit_waits_for_the_body() -> None:
    buffer = FrameBuffer()
    buffer.feed(frame_header(1000) + b"x" * 999)
    assert buffer.next_frame(1000) is None
    buffer.feed(b"y")
    body = buffer.next_frame(1000)
    assert body is not None and len(body) == 1000


def test_zero_length_frame_is_rejected() -> None:
    buffer = FrameBuffer()
    buffer.feed(frame_header(0))
    with pytest.raises(RemoteProtocolError, match="empty frame"):
        buffer.next_frame(10)


def test_view_is_released_on_next_call_so_the_buffer_can_shrink() -> None:
    buffer = FrameBuffer()
    buffer.feed(frames_of(b"x" * 70_000, b"tail"))
    first = buffer.next_frame(100_000)
    assert first is not None
    # Feeding compacts the consumed 70 kB; that needs the view released.
    buffer.feed(b"")  # empty feed is allowed (the connection maps b"" to EOF)
    with pytest.raises(ValueError, match="released"):
        bytes(first)
    assert collect(buffer, 100_000) == [b"tail"]
    assert buffer.buffered == 0


def test_many_small_frames_in_one_chunk_are_all_returned() -> None:
    bodies = [bytes([i % 256]) * (i % 50 + 1) for i in range(5000)]
    buffer = FrameBuffer()
    buffer.feed(frames_of(*bodies))
    assert collect(buffer) == bodies


def test_feed_after_eof_is_a_local_error() -> None:
    buffer = FrameBuffer()
    buffer.feed_eof()
    assert buffer.eof
    with pytest.raises(LocalProtocolError, match="after EOF"):
        buffer.feed(b"more")


def test_skip_all_drops_everything() -> None:
    buffer = FrameBuffer()
    buffer.feed(frames_of(b"abc", b"def"))
    assert buffer.next_frame(10) is not None
    buffer.skip_all()
    assert buffer.buffered == 0
    assert buffer.next_frame(10) is None
