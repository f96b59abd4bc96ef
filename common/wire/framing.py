"""Length-prefixed frames: bytes in, whole frame bodies out.

Theory of operation: received bytes are appended to one ``bytearray``; a read
offset marks what has been handed out. ``next_frame`` reads the 4-byte length
in place, checks it against the caller's limit *before* waiting for (and so
buffering) the body, and hands out the body as a ``memoryview`` slice, so a
2 MiB sealed frame is decrypted straight from the receive buffer without a
copy. A view is valid until the next call on the buffer, which releases it;
only then is the consumed prefix dropped, because a bytearray cannot be
resized while a view of it is alive.

With the caller draining ``next_frame`` until it returns ``None``, what stays
buffered is one incomplete frame: less than ``HEADER_BYTES + limit``.
"""

from __future__ import annotations

import struct
from typing import Final

from trailwarden.common.wire.errors import LocalProtocolError, RemoteProtocolError
from trailwarden.common.wire.limits import HEADER_BYTES

_HEADER: Final = struct.Struct("<I")

# Consumed bytes are dropped when nothing is left after them, or when at least
# this much (and at least half the buffer) is dead at the front: smaller
# prefixes cost more to memmove than they free, and the half rule keeps a
# buffer full of tiny frames from being moved once per frame.
_COMPACT_AFTER_BYTES: Final = 64 * 1024


def frame_header(body_length: int) -> bytes:
    """The 4-byte length prefix for a body of ``body_length`` bytes."""
    return _HEADER.pack(body_length)


class FrameBuffer:
    """Reassembles frames from arbitrary splits of the byte stream."""

    __slots__ = ("_buf", "_pos", "_eof", "_whole", "_body")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        # Views handed out by the last next_frame; released on the next call.
        self._whole: memoryview | None = None
        self._body: memoryview | None = None

    @property
    def eof(self) -> bool:
        """True once ``feed_eof`` was called (more frames may still be buffered)."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as a frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof:
            raise LocalProtocolError("receive_data called after EOF (b'') was already given")
        self._release()
        self._compact()
        self._buf += data

    def feed_eof(self) -> None:
        self._eof = True

    def next_frame(self, limit: int) -> memoryview | None:
        """The next complete frame body, or None if more bytes are needed.

        Raises:
            RemoteProtocolError: the length prefix is 0 or above ``limit``.
        """
        self._release()
        self._compact()
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < HEADER_BYTES:
            return None
        (length,) = _HEADER.unpack_from(buf, pos)
        if length > limit:
            raise RemoteProtocolError(
                f"frame length {length} exceeds the {limit}-byte limit for this stage"
            )
        if length == 0:
            raise RemoteProtocolError("empty frame (length 0)")
        end = pos + HEADER_BYTES + length
        if len(buf) < end:
            return None
        self._pos = end
        whole = memoryview(buf)
        self._whole = whole
        self._body = whole[pos + HEADER_BYTES : end]
        return self._body

    def skip_all(self) -> None:
        """Drop everything buffered (the connection stopped reading)."""
        self._release()
        self._buf.clear()
        self._pos = 0

    def _release(self) -> None:
        if self._body is not None:
            self._body.release()
            self._body = None
        if self._whole is not None:
            self._whole.release()
            self._whole = None

    def _compact(self) -> None:
        pos = self._pos
        if pos and (
            pos == len(self._buf) or (pos >= _COMPACT_AFTER_BYTES and 2 * pos >= len(self._buf))
        ):
            del self._buf[:pos]
            self._pos = 0
