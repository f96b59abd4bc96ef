"""Messages <-> msgpack: round trips, strict decoding, bounded batches."""

from __future__ import annotations

import json
import os
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from trailwarden.common.wire import (
    MAX_BATCH_RAW_BYTES,
    MAX_FRAME_BYTES,
    MAX_RECORDS_PER_BATCH,
    Ack,
    Batch,
    BatchTooLarge,
    Close,
    CloseReason,
    Error,
    ErrorCode,
    Heartbeat,
    LocalProtocolError,
    Record,
    RemoteProtocolError,
)
from trailwarden.common.wire.codec import (
    BATCH_CODEC_BY_VERSION,
    BatchCodec,
    MessageType,
    decode_message,
    decode_plain_error,
    encode_message,
    encode_plain_error,
    unpack_plain,
    unpack_sealed,
)
from trailwarden.common.wire.crypto import TAG_BYTES
from trailwarden.common.wire.limits import MAX_ERROR_MESSAGE_BYTES, MAX_LOCATION_CHARS


def roundtrip(event: Any, codec: BatchCodec = BatchCodec.ZSTD) -> Any:
    return decode_message(*unpack_sealed(encode_message(event, codec)), codec)


def decode(fields: dict[str, Any], codec: BatchCodec = BatchCodec.ZSTD) -> Any:
    return decode_message(*unpack_sealed(msgpack.packb(fields, use_bin_type=True)), codec)


def zstd(data: bytes, **options: Any) -> bytes:
    compressed: bytes = zstandard.ZstdCompressor(level=1, **options).compress(data)
    return compressed


def batch_fields(**overrides: Any) -> dict[str, Any]:
    packed = msgpack.packb(["/var/log/x", "text"], use_bin_type=True)
    fields = {"t": 5, "seq": 7, "n": 1, "z": 0, "d": packed}
    fields.update(overrides)
    return fields


@pytest.mark.parametrize(
    "event",
    [
        Batch(1, (Record("/var/log/cloudtrail/a.json.gz", '{"eventName":"RunInstances"}'),)),
        Batch(2**63 - 1, tuple(Record(f"loc{i % 3}", "é" * i) for i in range(50))),
        Batch(3, (Record("", ""),)),
        Ack(1),
        Ack(2**63 - 1),
        Heartbeat(),
        Close(CloseReason.SHUTDOWN),
        Close(CloseReason.REBALANCE, "move to node 2"),
        Error(ErrorCode.OVERLOADED, "queue full"),
    ],
)
def test_roundtrip(event: Any) -> None:
    assert roundtrip(event) == event


@pytest.mark.parametrize(("codec", "ratio"), [(BatchCodec.ZLIB, 4), (BatchCodec.ZSTD, 5)])
def test_cloudtrail_batch_of_1000_fits_one_frame(
    cloudtrail_dir: Path, codec: BatchCodec, ratio: int
) -> None:
    records: list[Record] = []
    for path in sorted((cloudtrail_dir / "stratus_detonation_logs").glob("*.json")):
        for item in json.loads(path.read_text()):
            records.append(Record(str(path), json.dumps(item, separators=(",", ":"))))
    assert len(records) > 300
    batch = Batch(10, tuple(records[i % len(records)] for i in range(1000)))
    encoded = encode_message(batch, codec)
    assert msgpack.unpackb(encoded)["z"] == codec
    raw_size = sum(len(r.text) for r in batch.records)
    assert raw_size > 1_000_000
    # Level 1 of either codec must shrink real CloudTrail several times over.
    assert len(encoded) * ratio < raw_size
    assert len(encoded) + TAG_BYTES <= MAX_FRAME_BYTES
    assert roundtrip(batch, codec) == batch


def test_single_incompressible_record_of_1_mib_fits() -> None:
    # Random hex of 1 MiB: zlib gains only ~2x on it; the limit must hold it anyway.
    text = os.urandom(512 * 1024).hex()
    batch = Batch(1, (Record("/big", text),))
    assert roundtrip(batch) == batch


@pytest.mark.parametrize("codec", [BatchCodec.ZLIB, BatchCodec.ZSTD])
def test_batch_that_does_not_shrink_is_sent_raw(codec: BatchCodec) -> None:
    # A few bytes: either codec's header and checksum outweigh any gain.
    batch = Batch(1, (Record("l", "x7"),))
    assert msgpack.unpackb(encode_message(batch, codec))["z"] == BatchCodec.RAW
    assert roundtrip(batch, codec) == batch


def test_protocol_versions_name_their_codecs() -> None:
    # Version 1 peers (the first release) get zlib; version 2 zstd.
    assert BATCH_CODEC_BY_VERSION == {1: BatchCodec.ZLIB, 2: BatchCodec.ZSTD}


def test_batch_too_large_raw() -> None:
    big = "x" * (MAX_BATCH_RAW_BYTES // 2)
    with pytest.raises(BatchTooLarge, match="batch limit"):
        encode_message(Batch(1, (Record("a", big), Record("b", big), Record("c", "y"))))


def test_batch_too_large_compressed() -> None:
    # 4 MiB of random hex: under the raw limit, but zlib only halves it (> 2 MiB).
    text = os.urandom(1024 * 1024).hex() + os.urandom(1024 * 1024).hex()
    with pytest.raises(BatchTooLarge, match="frame limit"):
        encode_message(Batch(1, (Record("a", text),)))


def test_too_many_records() -> None:
    records = tuple(Record("l", "") for _ in range(MAX_RECORDS_PER_BATCH + 1))
    with pytest.raises(BatchTooLarge, match="record limit"):
        encode_message(Batch(1, records))


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (Batch(0, (Record("a", "b"),)), "sequence"),
        (Batch(2**63, (Record("a", "b"),)), "sequence"),
        (Batch(True, (Record("a", "b"),)), "sequence"),  # type: ignore[arg-type]
        (Batch(1, ()), "at least one record"),
        (Batch(1, (Record("a", b"bytes"),)), "Record"),  # type: ignore[arg-type]
        (Batch(1, (("a", "b"),)), "Record"),  # type: ignore[arg-type]
        (Batch(1, ("ab",)), "Record"),  # type: ignore[arg-type]
        (Batch(1, (Record("l" * (MAX_LOCATION_CHARS + 1), "b"),)), "location"),
        (Ack(0), "sequence"),
        (Close(1, "x"), "CloseReason"),  # type: ignore[arg-type]
        (Error(7, "x"), "ErrorCode"),  # type: ignore[arg-type]
    ],
)
def test_encoding_rejects_bad_events_locally(event: Any, match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        encode_message(event)


def test_long_messages_are_cut_not_rejected() -> None:
    message = "é" * 5000
    event = roundtrip(Error(ErrorCode.INTERNAL, message))
    assert len(event.message.encode()) <= MAX_ERROR_MESSAGE_BYTES
    assert message.startswith(event.message)
    # A peer that sends a longer text still gets its reason through, cut.
    decoded = decode({"t": 8, "reason": 1, "msg": "z" * 50_000})
    assert decoded == Close(CloseReason.SHUTDOWN, "z" * MAX_ERROR_MESSAGE_BYTES)


def test_unknown_error_code_from_a_newer_peer_keeps_its_message() -> None:
    assert decode({"t": 9, "code": 42, "msg": "new thing"}) == Error(
        ErrorCode.UNKNOWN, "(peer error code 42) new thing"
    )


def test_plain_error_envelope_roundtrip() -> None:
    error = Error(ErrorCode.UNSUPPORTED_VERSION, "unsupported protocol version 2")
    message_type, fields = unpack_plain(encode_plain_error(error))
    assert message_type is MessageType.ERROR
    assert decode_plain_error(fields) == error


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"t": 6}, "missing keys \\['seq'\\]"),
        ({"t": 6, "seq": 1, "extra": 1}, "unexpected keys \\[\"'extra'\"\\]"),
        ({"t": 6, "seq": True}, "integer"),
        ({"t": 6, "seq": 1.0}, "integer"),
        ({"t": 6, "seq": 0}, "integer in 1"),
        ({"t": 6, "seq": -5}, "integer in 1"),
        ({"t": 6, "seq": "1"}, "integer"),
        ({"t": 77}, "unknown message type"),
        ({"t": "6"}, "unknown message type"),
        ({"t": 1}, "handshake message AGENT_HELLO sent inside the session"),
        ({"t": 8, "reason": 99, "msg": ""}, "unknown reason 99"),
        ({"t": 8, "reason": 1, "msg": b"bytes"}, "must be a string"),
        ({"t": 9, "code": "x", "msg": ""}, "integer"),
        (batch_fields(seq=0), "'seq'"),
        (batch_fields(n=0), "'n'"),
        (batch_fields(n=MAX_RECORDS_PER_BATCH + 1), "'n'"),
        (batch_fields(n=2), "array of 4 strings"),
        (batch_fields(z=3), "'z'"),
        (batch_fields(z=-1), "'z'"),
        (batch_fields(d="text"), "binary"),
        (batch_fields(z=2, d=b"not zstd"), "corrupt zstd"),
        (batch_fields(z=2, d=zstd(b"\x92\xa1a\xa1b")[:-3]), "corrupt zstd"),
        (batch_fields(z=2, d=zstd(b"\x92\xa1a\xa1b") + b"junk"), "corrupt zstd.*unused data"),
        (batch_fields(z=2, d=zstd(b"\x92\xa1a\xa1b") * 2), "corrupt zstd.*unused data"),
        (batch_fields(z=2, d=zstd(b"\x92\xa1a\xa1b", write_content_size=False)), "content size"),
        # A version-2 connection does not take version 1's codec, nor the reverse.
        (batch_fields(z=1, d=zlib.compress(b"\x92\xa1a\xa1b")), "codec ZLIB is not"),
        (batch_fields(d=msgpack.packb(["l", b"bin"])), "must be a string"),
        (batch_fields(d=msgpack.packb({"l": "t"})), "array of 2 strings"),
        (batch_fields(d=msgpack.packb(["l", "t"]) + b"\x00"), "not a valid msgpack"),
        (batch_fields(d=msgpack.packb(["l" * (MAX_LOCATION_CHARS + 1), "t"])), "location"),
    ],
)
def test_strict_decoding(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode(fields)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (batch_fields(z=1, d=b"not zlib"), "corrupt zlib"),
        (batch_fields(z=1, d=zlib.compress(b"\x92\xa1a\xa1b")[:-3]), "truncated"),
        (batch_fields(z=1, d=zlib.compress(b"\x92\xa1a\xa1b") + b"junk"), "after the end"),
        (batch_fields(z=2, d=zstd(b"\x92\xa1a\xa1b")), "codec ZSTD is not"),
    ],
)
def test_strict_decoding_of_version_1_batches(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode(fields, BatchCodec.ZLIB)


def test_non_map_and_non_string_keys_and_extensions_are_refused() -> None:
    for data, match in [
        (msgpack.packb([5, 1]), "must be a map"),
        (msgpack.packb({1: 5}), "not a valid msgpack"),
        (msgpack.packb({b"t": 6, b"seq": 1}, use_bin_type=True), "unknown message type"),
        (msgpack.packb(msgpack.ExtType(3, b"x")), "extension type"),
        (msgpack.packb({"t": 7}) + b"\xc0", "not a valid msgpack"),
        (b"\xc1", "not a valid msgpack"),
        (b"\xdd\xff\xff\xff\xff", "exceeds max_array_len"),  # claims 4 billion items
        (b"\xc6\xff\xff\xff\xff", "incomplete input"),  # claims 4 GiB of bytes
        (b"", "not a valid msgpack"),
    ]:
        with pytest.raises(RemoteProtocolError, match=match):
            unpack_sealed(data)


def test_zlib_bomb_is_stopped_at_the_raw_limit() -> None:
    packed = msgpack.packb(["l", "a" * (MAX_BATCH_RAW_BYTES + 100)])
    bomb = zlib.compress(packed, 9)
    assert len(bomb) < 64 * 1024  # tiny on the wire...
    with pytest.raises(RemoteProtocolError, match="expands beyond"):
        decode(batch_fields(z=1, d=bomb), BatchCodec.ZLIB)  # ...and never inflated past the limit


def test_zstd_bomb_is_refused_before_inflating() -> None:
    bomb = zstd(b"\x00" * (256 * 1024 * 1024))  # 256 MiB of zeros
    assert len(bomb) < 64 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match="claims 268435456 bytes, beyond"):
            decode(batch_fields(z=2, d=bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # nothing near the claimed size was allocated


def test_zstd_frame_that_inflates_past_its_stated_size_is_refused() -> None:
    # A frame stating 100 bytes whose blocks hold 200: zstd allocates the
    # stated 100 (within the limit) and must fail rather than grow.
    frame = bytearray(zstd(b"a" * 200))
    assert zstandard.frame_content_size(bytes(frame)) == 200
    header = zstandard.get_frame_parameters(bytes(frame))
    assert header.content_size == 200 and frame[5] == 200  # single-segment, 1-byte size
    frame[5] = 100
    with pytest.raises(RemoteProtocolError, match="corrupt zstd"):
        decode(batch_fields(z=2, d=bytes(frame)))


def test_raw_batch_over_the_raw_limit_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="raw bytes exceed"):
        decode(batch_fields(d=b"\x00" * (MAX_BATCH_RAW_BYTES + 1)))


# -- property tests --------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(["t", "seq", "n", "z", "d", "reason", "code", "msg", "proto", "x"])
_near_valid = st.dictionaries(
    _keys,
    st.integers(-2, 12) | st.binary(max_size=40) | st.text(max_size=10) | _values,
    max_size=6,
)


def _check_decoder(data: bytes, codec: BatchCodec = BatchCodec.ZSTD) -> None:
    try:
        event = decode_message(*unpack_sealed(data), codec)
    except RemoteProtocolError as exc:
        assert str(exc)  # every rejection says what was wrong
        return
    # Whatever decodes must re-encode to an equal event (it is a real message).
    assert roundtrip(event, codec) == event


@given(st.binary(max_size=200))
def test_decoder_on_random_bytes(data: bytes) -> None:
    _check_decoder(data)


@given(_values)
def test_decoder_on_random_msgpack(value: object) -> None:
    _check_decoder(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=300)
@given(_near_valid)
def test_decoder_on_almost_valid_maps(fields: dict[str, Any]) -> None:
    _check_decoder(msgpack.packb(fields, use_bin_type=True))


@settings(max_examples=200)
@given(
    st.one_of(st.binary(max_size=300), _values.map(lambda v: msgpack.packb(v, use_bin_type=True))),
    st.integers(1, 12),
    st.sampled_from(BatchCodec),
    st.integers(0, 8),
)
def test_batch_payload_fuzz(payload: bytes, count: int, codec: BatchCodec, cut: int) -> None:
    if codec is BatchCodec.ZLIB:
        data = zlib.compress(payload)
    elif codec is BatchCodec.ZSTD:
        data = zstd(payload)
    else:
        data = payload
    data = data[: len(data) - cut]  # also truncated frames
    fields = batch_fields(n=count, z=int(codec), d=data)
    accepted = BatchCodec.ZSTD if codec is BatchCodec.RAW else codec
    _check_decoder(msgpack.packb(fields, use_bin_type=True), accepted)


@given(
    st.integers(1, 2**63 - 1),
    st.lists(st.tuples(st.text(max_size=40), st.text(max_size=300)), min_size=1, max_size=30),
)
def test_batch_roundtrip_property(seq: int, pairs: list[tuple[str, str]]) -> None:
    batch = Batch(seq, tuple(Record(loc, text) for loc, text in pairs))
    assert roundtrip(batch) == batch


def test_zstd_contexts_are_reused_not_piled_up() -> None:
    from trailwarden.common.wire import codec

    batch = Batch(1, tuple(Record("l", f'{{"n":{i}}}' * 20) for i in range(20)))
    assert msgpack.unpackb(encode_message(batch))["z"] == BatchCodec.ZSTD
    for _ in range(20):
        assert roundtrip(batch) == batch
        with pytest.raises(RemoteProtocolError):
            decode(batch_fields(z=2, d=zstd(b"\x92\xa1a\xa1b")[:-3]))
    # One thread decoded one batch at a time: one context, back in the pool.
    assert len(codec._idle_inflaters) == 1
