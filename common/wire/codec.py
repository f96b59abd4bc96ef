"""Messages <-> msgpack, with the types checked on the way in.

Every message is a msgpack map whose ``"t"`` names its type. Decoding is
strict: the key set must be exactly the one of that type, every value has its
exact type and range, map keys must be strings (``strict_map_key``), and
extension types are refused. Memory is bounded by the input: decoding works on
one whole frame (what ``Unpacker(max_buffer_size=...)`` would enforce is the
frame limit, checked before the frame is buffered), and ``unpackb`` refuses
any length a msgpack header claims beyond the input's size, so a 5-byte
"array of 4 billion" costs nothing. The one deliberate leniency is text
meant for humans (Error and Close messages): too long is cut, not rejected,
and an unknown Error code becomes ``ErrorCode.UNKNOWN``, so a newer peer's
reason for hanging up always gets through.

Before the session keys exist, frames carry plaintext maps with an extra
``"proto"`` key naming the protocol. That envelope and the pre-session
``Error`` (keys ``proto``, ``t``, ``code``, ``msg``) must never change across
protocol versions: they are how an old and a new peer tell each other that
they cannot talk.

Batches: the records are packed as one flat array ``[location, text, ...]``
and compressed as a whole; the batch's ``"z"`` field names the codec, and the
negotiated protocol version decides which one a peer may use
(``BATCH_CODEC_BY_VERSION``): version 1 zlib level 1, version 2 Zstandard
level 1. Measured on the 312 distinct records of the shared CloudTrail
samples (~1.4 KB each, 438 KB packed), one core of the 2-core bench machine,
in microseconds per record (msgpack itself: 0.24 pack, 0.35 unpack):

    codec        ratio  compress  decompress
    zlib 1        5.8      9.9       2.9
    zstd 1        7.0      1.9       0.6
    zstd -1       5.3      1.5       0.3
    lz4 frame     4.8      1.3       0.2
    isal zlib 1   6.0      1.8       1.6

With zlib, compressing and inflating took ~80 % of the CPU the protocol spent
per record on both ends (bench/protocol.py ran at ~0.22 of its bare-socket
ceiling). zstd 1 compresses five times faster than zlib 1 and smaller; the
faster settings save under 0.5 us more for 25-30 % more bytes on the wire.
A batch that does not shrink is sent raw (codec 0) in every version.

Decompression is bounded before it starts: a zstd frame must state its
content size and it must be within ``MAX_BATCH_RAW_BYTES`` (zstd then
allocates exactly that and fails on data that would inflate further); zlib
inflates with a ``max_length``.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Mapping
from itertools import chain, repeat
from typing import Final, NoReturn

import msgpack
import zstandard

from trailwarden.common.wire.crypto import TAG_BYTES
from trailwarden.common.wire.errors import (
    BatchTooLarge,
    LocalProtocolError,
    RemoteProtocolError,
)
from trailwarden.common.wire.events import (
    Ack,
    Batch,
    Close,
    CloseReason,
    Error,
    ErrorCode,
    Heartbeat,
    Record,
    SendableEvent,
)
from trailwarden.common.wire.limits import (
    MAX_BATCH_RAW_BYTES,
    MAX_ERROR_MESSAGE_BYTES,
    MAX_FRAME_BYTES,
    MAX_LOCATION_CHARS,
    MAX_RECORDS_PER_BATCH,
    MAX_SEQ,
)

PROTOCOL_NAME: Final = "trailwarden"

# See the module docstring for the measurements behind both levels.
ZLIB_LEVEL: Final = 1
ZSTD_LEVEL: Final = 1


class MessageType(enum.IntEnum):
    """The ``"t"`` of every message; also the state table's vocabulary."""

    AGENT_HELLO = 1
    MANAGER_HELLO = 2
    AGENT_PROOF = 3
    MANAGER_PROOF = 4
    BATCH = 5
    ACK = 6
    HEARTBEAT = 7
    CLOSE = 8
    ERROR = 9


class BatchCodec(enum.IntEnum):
    """How a batch's packed records are stored in its ``"d"`` field."""

    RAW = 0
    ZLIB = 1
    ZSTD = 2


# The codec a sender compresses batches with under each protocol version; a
# receiver accepts that one and RAW, nothing else.
BATCH_CODEC_BY_VERSION: Final[Mapping[int, BatchCodec]] = {
    1: BatchCodec.ZLIB,
    2: BatchCodec.ZSTD,
}
# What encode_message/decode_message use when the caller names no codec.
DEFAULT_BATCH_CODEC: Final = BatchCodec.ZSTD
# Computed once: max() over an enum iterates its members on every call.
_MAX_CODEC: Final = max(BatchCodec)


EVENT_TYPES: Final[Mapping[type, MessageType]] = {
    Batch: MessageType.BATCH,
    Ack: MessageType.ACK,
    Heartbeat: MessageType.HEARTBEAT,
    Close: MessageType.CLOSE,
    Error: MessageType.ERROR,
}

_SEALED_KEYS: Final[Mapping[MessageType, frozenset[str]]] = {
    MessageType.BATCH: frozenset({"t", "seq", "n", "z", "d"}),
    MessageType.ACK: frozenset({"t", "seq"}),
    MessageType.HEARTBEAT: frozenset({"t"}),
    MessageType.CLOSE: frozenset({"t", "reason", "msg"}),
    MessageType.ERROR: frozenset({"t", "code", "msg"}),
}
_PLAIN_ERROR_KEYS: Final = frozenset({"proto", "t", "code", "msg"})
_STR_ONLY: Final = frozenset({str})
_RECORD_ONLY: Final = frozenset({Record})


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


_UNPACK_ERRORS: Final = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


def unpack(data: bytes | memoryview, what: str) -> object:
    """One msgpack object from ``data``, which must hold exactly that object.

    Raises:
        RemoteProtocolError: not valid msgpack, trailing bytes, extension types.
    """
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
        )
    except _UNPACK_ERRORS as exc:
        raise RemoteProtocolError(f"{what} is not a valid msgpack message: {exc}") from None


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# -- field access shared with handshake.py -----------------------------------


def require_keys(fields: Mapping[str, object], expected: frozenset[str], what: str) -> None:
    if fields.keys() != expected:
        missing = sorted(expected - fields.keys())
        extra = sorted(repr(k) for k in fields.keys() - expected)
        raise RemoteProtocolError(f"{what}: missing keys {missing}, unexpected keys {extra}")


# Field readers may run before require_keys (versions are read first), so a
# missing key is reported like a wrong value, never as a KeyError.
_MISSING: Final = object()


def int_field(fields: Mapping[str, object], key: str, low: int, high: int, what: str) -> int:
    value = fields.get(key, _MISSING)
    # bool is an int subclass; msgpack's true/false must not pass as 1/0.
    if type(value) is not int or not low <= value <= high:
        raise RemoteProtocolError(
            f"{what} field {key!r} must be an integer in {low}..{high}, got {_describe(value)}"
        )
    return value


def bytes_field(
    fields: Mapping[str, object], key: str, what: str, *, exact: int | None = None
) -> bytes:
    value = fields.get(key, _MISSING)
    if type(value) is not bytes or (exact is not None and len(value) != exact):
        size = "" if exact is None else f" of {exact} bytes"
        raise RemoteProtocolError(
            f"{what} field {key!r} must be binary{size}, got {_describe(value)}"
        )
    return value


def str_field(fields: Mapping[str, object], key: str, what: str) -> str:
    value = fields.get(key, _MISSING)
    if type(value) is not str:
        raise RemoteProtocolError(f"{what} field {key!r} must be a string, got {_describe(value)}")
    return value


def _describe(value: object) -> str:
    if value is _MISSING:
        return "nothing (key missing)"
    if isinstance(value, bytes | str | tuple | dict):
        return f"{type(value).__name__} of length {len(value)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def clip_message(text: str) -> str:
    """``text`` cut to MAX_ERROR_MESSAGE_BYTES of UTF-8, on a character boundary."""
    if len(text) * 4 <= MAX_ERROR_MESSAGE_BYTES:
        return text
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= MAX_ERROR_MESSAGE_BYTES:
        return text
    return encoded[:MAX_ERROR_MESSAGE_BYTES].decode("utf-8", "ignore")


# -- plaintext envelope (handshake stage) --------------------------------------


def pack_plain(message_type: MessageType, fields: Mapping[str, object]) -> bytes:
    return _pack({"proto": PROTOCOL_NAME, "t": int(message_type), **fields})


def unpack_plain(body: bytes | memoryview) -> tuple[MessageType, dict[str, object]]:
    """Type and fields of a handshake-stage frame; checks only the envelope."""
    obj = unpack(body, "handshake frame")
    if type(obj) is not dict or obj.get("proto") != PROTOCOL_NAME:
        raise RemoteProtocolError(
            f"peer does not speak the {PROTOCOL_NAME} protocol "
            f"(expected a map with proto={PROTOCOL_NAME!r}, got {_describe(obj)})"
        )
    return _message_type(obj, "handshake frame"), obj


def _message_type(fields: Mapping[str, object], what: str) -> MessageType:
    tag = fields.get("t")
    if type(tag) is not int or tag not in _TYPE_BY_VALUE:
        raise RemoteProtocolError(f"{what} has unknown message type {_describe(tag)}")
    return _TYPE_BY_VALUE[tag]


_TYPE_BY_VALUE: Final = {int(t): t for t in MessageType}


def encode_plain_error(error: Error) -> bytes:
    return pack_plain(
        MessageType.ERROR, {"code": int(error.code), "msg": clip_message(error.message)}
    )


def decode_plain_error(fields: Mapping[str, object]) -> Error:
    require_keys(fields, _PLAIN_ERROR_KEYS, "error")
    return _error_from_fields(fields)


def _error_from_fields(fields: Mapping[str, object]) -> Error:
    code = fields.get("code", _MISSING)
    if type(code) is not int:
        raise RemoteProtocolError(f"error field 'code' must be an integer, got {_describe(code)}")
    message = clip_message(str_field(fields, "msg", "error"))
    try:
        known = ErrorCode(code)
    except ValueError:
        return Error(ErrorCode.UNKNOWN, f"(peer error code {code}) {message}")
    return Error(known, message)


# -- sealed messages (session stage) -------------------------------------------


def encode_message(
    event: SendableEvent,
    codec: BatchCodec = DEFAULT_BATCH_CODEC,
    compressor: zstandard.ZstdCompressor | None = None,
) -> bytes:
    """The plaintext of a sealed frame for ``event``; a Batch compressed with ``codec``.

    ``compressor`` (from ``new_zstd_compressor``) saves building a zstd
    context per batch (~7 us); without it a fresh one is used.

    Raises:
        BatchTooLarge: the batch exceeds a protocol limit (split it).
        LocalProtocolError: a field has the wrong type or range.
    """
    match event:
        case Batch():
            return _encode_batch(event, codec, compressor)
        case Ack(seq=seq):
            _check_seq(seq, "Ack")
            return _pack({"t": MessageType.ACK.value, "seq": seq})
        case Heartbeat():
            return _pack({"t": MessageType.HEARTBEAT.value})
        case Close(reason=reason, message=message):
            if type(reason) is not CloseReason or type(message) is not str:
                raise LocalProtocolError(f"Close needs a CloseReason and a str, got {event!r}")
            return _pack(
                {"t": MessageType.CLOSE.value, "reason": reason.value, "msg": clip_message(message)}
            )
        case Error(code=code, message=message):
            if type(code) is not ErrorCode or type(message) is not str:
                raise LocalProtocolError(f"Error needs an ErrorCode and a str, got {event!r}")
            return _pack(
                {"t": MessageType.ERROR.value, "code": code.value, "msg": clip_message(message)}
            )
        case _:
            raise LocalProtocolError(f"not a sendable event: {event!r}")


def _check_seq(seq: object, what: str) -> None:
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise LocalProtocolError(f"{what} sequence must be an int in 1..{MAX_SEQ}, got {seq!r}")


def _encode_batch(
    batch: Batch, codec: BatchCodec, compressor: zstandard.ZstdCompressor | None
) -> bytes:
    _check_seq(batch.seq, "Batch")
    records = batch.records
    count = len(records)
    if count == 0:
        raise LocalProtocolError("a Batch must carry at least one record")
    if count > MAX_RECORDS_PER_BATCH:
        raise BatchTooLarge(f"{count} records exceed the {MAX_RECORDS_PER_BATCH}-record limit")
    if not set(map(type, records)) <= _RECORD_ONLY:
        raise LocalProtocolError("Batch records must be Record(location: str, text: str)")
    flat = tuple(chain.from_iterable(records))
    if not set(map(type, flat)) <= _STR_ONLY:
        raise LocalProtocolError("Batch records must be Record(location: str, text: str)")
    longest = max(map(len, flat[0::2]))
    if longest > MAX_LOCATION_CHARS:
        raise LocalProtocolError(
            f"record location of {longest} characters exceeds {MAX_LOCATION_CHARS}"
        )
    packed = _pack(flat)
    if len(packed) > MAX_BATCH_RAW_BYTES:
        raise BatchTooLarge(
            f"{count} records pack to {len(packed)} bytes, over the "
            f"{MAX_BATCH_RAW_BYTES}-byte batch limit"
        )
    compressed = _compress(codec, packed, compressor)
    if len(compressed) < len(packed):
        data = compressed
    else:
        codec, data = BatchCodec.RAW, packed
    message = _pack(
        {"t": MessageType.BATCH.value, "seq": batch.seq, "n": count, "z": codec.value, "d": data}
    )
    if len(message) + TAG_BYTES > MAX_FRAME_BYTES:
        raise BatchTooLarge(
            f"{count} records compress to {len(data)} bytes, over the "
            f"{MAX_FRAME_BYTES}-byte frame limit"
        )
    return message


def new_zstd_compressor() -> zstandard.ZstdCompressor:
    """A compression context for ``encode_message``; reuse it, from one thread at a time."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)


# Smallest power of two >= MAX_BATCH_RAW_BYTES: zstd window sizes are powers of two.
_ZSTD_MAX_WINDOW_BYTES: Final = 1 << (MAX_BATCH_RAW_BYTES - 1).bit_length()
# Decompression contexts not in use. A context (~100 KB) is worth reusing
# (a new one costs more than inflating a small batch) but not worth one per
# connection on a manager holding thousands. A context must not serve two
# threads at once: list.pop and list.append are atomic, so each caller holds
# its own until it puts it back, and the pool never outgrows the number of
# threads that decoded at the same time.
_idle_inflaters: Final[list[zstandard.ZstdDecompressor]] = []


def _compress(
    codec: BatchCodec, packed: bytes, compressor: zstandard.ZstdCompressor | None
) -> bytes:
    if codec is BatchCodec.ZSTD:
        if compressor is None:
            compressor = new_zstd_compressor()
        compressed: bytes = compressor.compress(packed)
        return compressed
    if codec is BatchCodec.ZLIB:
        return zlib.compress(packed, ZLIB_LEVEL)
    if codec is BatchCodec.RAW:
        return packed
    raise LocalProtocolError(f"unknown batch codec {codec!r}")  # pragma: no cover


def unpack_sealed(plaintext: bytes) -> tuple[MessageType, dict[str, object]]:
    """Type and fields of a sealed message, without decoding its payload.

    The connection checks the type against the state table before paying for
    ``decode_message`` (which may decompress a batch).
    """
    obj = unpack(plaintext, "sealed message")
    if type(obj) is not dict:
        raise RemoteProtocolError(f"sealed message must be a map, got {_describe(obj)}")
    message_type = _message_type(obj, "sealed message")
    if message_type not in _SEALED_KEYS:
        raise RemoteProtocolError(f"handshake message {message_type.name} sent inside the session")
    return message_type, obj


def decode_message(
    message_type: MessageType,
    fields: Mapping[str, object],
    codec: BatchCodec = DEFAULT_BATCH_CODEC,
) -> SendableEvent:
    """The event for fields returned by ``unpack_sealed``; a Batch may use ``codec`` or RAW.

    Raises:
        RemoteProtocolError: wrong keys, types or ranges; corrupt or oversized batch.
    """
    what = message_type.name.lower()
    require_keys(fields, _SEALED_KEYS[message_type], what)
    if message_type is MessageType.BATCH:
        return _decode_batch(fields, codec)
    if message_type is MessageType.ACK:
        return Ack(int_field(fields, "seq", 1, MAX_SEQ, what))
    if message_type is MessageType.HEARTBEAT:
        return Heartbeat()
    if message_type is MessageType.CLOSE:
        reason = int_field(fields, "reason", 0, 2**31, what)
        try:
            close_reason = CloseReason(reason)
        except ValueError:
            raise RemoteProtocolError(f"close has unknown reason {reason}") from None
        return Close(close_reason, clip_message(str_field(fields, "msg", what)))
    return _error_from_fields(fields)


def _decode_batch(fields: Mapping[str, object], accepted: BatchCodec) -> Batch:
    seq = int_field(fields, "seq", 1, MAX_SEQ, "batch")
    count = int_field(fields, "n", 1, MAX_RECORDS_PER_BATCH, "batch")
    codec = int_field(fields, "z", 0, _MAX_CODEC, "batch")
    data = bytes_field(fields, "d", "batch")
    if codec == BatchCodec.RAW:
        if len(data) > MAX_BATCH_RAW_BYTES:
            raise RemoteProtocolError(
                f"batch {seq}: {len(data)} raw bytes exceed {MAX_BATCH_RAW_BYTES}"
            )
        packed = data
    elif codec != accepted:
        raise RemoteProtocolError(
            f"batch {seq}: codec {BatchCodec(codec).name} is not the one this protocol "
            f"version uses ({accepted.name}, or RAW)"
        )
    elif codec == BatchCodec.ZSTD:
        packed = _inflate_zstd(data, seq)
    else:
        packed = _inflate_zlib(data, seq)
    flat = unpack(packed, f"batch {seq} records")
    if type(flat) is not tuple or len(flat) != 2 * count:
        raise RemoteProtocolError(
            f"batch {seq}: records must be an array of {2 * count} strings "
            f"(location, text per record), got {_describe(flat)}"
        )
    if not set(map(type, flat)) <= _STR_ONLY:
        raise RemoteProtocolError(f"batch {seq}: every location and text must be a string")
    longest = max(map(len, flat[0::2]))
    if longest > MAX_LOCATION_CHARS:
        raise RemoteProtocolError(
            f"batch {seq}: a record location of {longest} characters exceeds {MAX_LOCATION_CHARS}"
        )
    pairs = iter(flat)
    # tuple.__new__ over zip builds each Record in C: half the cost of Record(loc, text).
    return Batch(seq, tuple(map(tuple.__new__, repeat(Record), zip(pairs, pairs, strict=True))))


def _inflate_zstd(data: bytes, seq: int) -> bytes:
    # The declared size is checked before zstd allocates it; a frame without
    # one (our encoder always writes it) could make zstd guess.
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError(f"batch {seq}: corrupt zstd data ({exc})") from None
    if size < 0:
        raise RemoteProtocolError(f"batch {seq}: zstd frame does not state its content size")
    if size > MAX_BATCH_RAW_BYTES:
        raise RemoteProtocolError(
            f"batch {seq}: zstd data claims {size} bytes, beyond {MAX_BATCH_RAW_BYTES} bytes"
        )
    try:
        inflater = _idle_inflaters.pop()
    except IndexError:
        inflater = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW_BYTES)
    try:
        packed: bytes = inflater.decompress(
            data, max_output_size=MAX_BATCH_RAW_BYTES, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError(f"batch {seq}: corrupt zstd data ({exc})") from None
    finally:
        _idle_inflaters.append(inflater)
    if len(packed) != size:  # pragma: no cover - zstd itself checks the stated size
        raise RemoteProtocolError(f"batch {seq}: zstd data inflates to other than its stated size")
    return packed


def _inflate_zlib(data: bytes, seq: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        packed = inflater.decompress(data, MAX_BATCH_RAW_BYTES)
    except zlib.error as exc:
        raise RemoteProtocolError(f"batch {seq}: corrupt zlib data ({exc})") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise RemoteProtocolError(
            f"batch {seq}: zlib data is truncated or expands beyond {MAX_BATCH_RAW_BYTES} bytes"
        )
    if inflater.unused_data:
        raise RemoteProtocolError(f"batch {seq}: bytes after the end of the zlib data")
    return packed
