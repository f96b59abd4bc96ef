"""Seal and open the frames of one direction of one session with AES-256-GCM.

Theory of operation: each direction has its own key (from the handshake's key
schedule) and its own frame counter, starting at 0 and never sent. The GCM
nonce is a 4-byte direction label followed by the 8-byte counter; the
additional authenticated data is the frame's length prefix followed by that
nonce. The receiver computes the nonce from its own count of frames opened,
so a frame that is replayed, dropped, reordered, or reflected back to its
sender (other key, other label) fails the tag check, as does any change to
the body or the length prefix.

One ``AESGCM`` object per direction, built once: nothing is derived per frame.
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trailwarden.common.wire.errors import IntegrityError, LocalProtocolError
from trailwarden.common.wire.framing import frame_header
from trailwarden.common.wire.limits import MAX_FRAME_BYTES, MAX_FRAMES_PER_DIRECTION

KEY_BYTES: Final = 32
TAG_BYTES: Final = 16

# Nonce prefixes: each direction's frames carry their own label, so even a
# key-schedule mistake could not make the two directions share a nonce.
AGENT_TO_MANAGER: Final = b"a>m\x00"
MANAGER_TO_AGENT: Final = b"m>a\x00"


class FrameSealer:
    """Turns plaintext messages into complete frames for one direction."""

    __slots__ = ("_aead", "_label", "_count")

    def __init__(self, key: bytes, label: bytes) -> None:
        if len(key) != KEY_BYTES or len(label) != 4:
            raise LocalProtocolError("sealer needs a 32-byte key and a 4-byte direction label")
        self._aead = AESGCM(key)
        self._label = label
        self._count = 0

    @property
    def frames_sealed(self) -> int:
        return self._count

    def seal(self, plaintext: bytes) -> bytes:
        """The whole frame (length prefix + ciphertext + tag) for ``plaintext``."""
        count = self._count
        if count >= MAX_FRAMES_PER_DIRECTION:
            raise LocalProtocolError(
                f"sealed {count} frames under one key; reconnect (Close REKEY) for fresh keys"
            )
        body_length = len(plaintext) + TAG_BYTES
        if body_length > MAX_FRAME_BYTES:
            raise LocalProtocolError(
                f"message of {len(plaintext)} bytes does not fit a {MAX_FRAME_BYTES}-byte frame"
            )
        header = frame_header(body_length)
        nonce = self._label + count.to_bytes(8, "big")
        self._count = count + 1
        return header + self._aead.encrypt(nonce, plaintext, header + nonce)


class FrameOpener:
    """Checks and decrypts the frames of one direction, in order."""

    __slots__ = ("_aead", "_label", "_count")

    def __init__(self, key: bytes, label: bytes) -> None:
        if len(key) != KEY_BYTES or len(label) != 4:
            raise LocalProtocolError("opener needs a 32-byte key and a 4-byte direction label")
        self._aead = AESGCM(key)
        self._label = label
        self._count = 0

    @property
    def frames_opened(self) -> int:
        return self._count

    def open(self, body: memoryview | bytes) -> bytes:
        """Plaintext of the next frame, given its body (what follows the length prefix).

        Raises:
            IntegrityError: the frame is not the next one the peer sealed.
        """
        count = self._count
        if count >= MAX_FRAMES_PER_DIRECTION:
            raise IntegrityError(f"peer sent more than {MAX_FRAMES_PER_DIRECTION} frames")
        nonce = self._label + count.to_bytes(8, "big")
        try:
            plaintext = self._aead.decrypt(nonce, body, frame_header(len(body)) + nonce)
        except InvalidTag:
            raise IntegrityError(
                f"sealed frame #{count} ({len(body)} bytes) failed authentication: "
                "tampered, replayed, reordered or not from this session"
            ) from None
        self._count = count + 1
        return plaintext
