"""Protocol errors, named for whose fault they are, carrying their own policy.

``LocalProtocolError``: this process used the API wrongly (a bug here).
``RemoteProtocolError``: the peer, or something between us, sent bytes that
break the protocol. Subclasses narrow the remote case where the caller's
reaction differs (re-enroll, upgrade, back off).

``retriable`` tells a reconnect loop whether trying again with the same
identity and key can succeed; ``code`` is what the connection told the peer
(in a courtesy ``Error`` frame) when it raised the error.
"""

from __future__ import annotations

from typing import ClassVar

from trailwarden.common.wire.events import ErrorCode


class ProtocolError(Exception):
    """Root of the protocol's errors; abstract, raise a subclass."""

    retriable: ClassVar[bool]
    code: ClassVar[ErrorCode]

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract: raise a Local or Remote subclass")
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """This side misused the connection (sent an event its state forbids...)."""

    retriable = False
    code = ErrorCode.INTERNAL


class BatchTooLarge(LocalProtocolError):
    """A batch does not fit the protocol's limits; nothing was sent.

    The only local error that leaves the connection usable: split the batch
    and send the parts.
    """


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol; the connection is dead."""

    retriable = True
    code = ErrorCode.PROTOCOL_ERROR


class UnsupportedVersion(RemoteProtocolError):
    """The two sides have no protocol version in common."""

    retriable = False
    code = ErrorCode.UNSUPPORTED_VERSION


class UnknownAgent(RemoteProtocolError):
    """Manager side: the agent named an id this manager holds no key for."""

    retriable = False
    code = ErrorCode.UNKNOWN_AGENT


class AuthenticationFailed(RemoteProtocolError):
    """The peer could not prove it holds this agent's key.

    Deliberately silent about which side holds the wrong key: from the wire
    the two cases look the same, and an impostor should learn nothing.
    """

    retriable = False
    code = ErrorCode.AUTH_FAILED


class IntegrityError(RemoteProtocolError):
    """A sealed frame failed authentication: tampered, replayed, reordered or forged."""

    code = ErrorCode.INTEGRITY


class ConnectionLost(RemoteProtocolError):
    """The byte stream ended mid-frame, or before the peer said Close or Error."""
