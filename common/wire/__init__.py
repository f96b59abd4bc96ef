"""The encrypted agent <-> manager protocol, sans I/O.

This package contains no networking, no tasks, no clocks and no file access:
it turns bytes into events and events into bytes (``connection.py``), and the
agent's sender and the manager's session move those bytes over TCP.

Design note
===========

Frames. Every frame is a 4-byte little-endian length, then that many bytes of
body. The length is checked against the limit of the current stage before
any body is buffered: ``MAX_HANDSHAKE_BYTES`` (2 KiB) until the peer has
proved its key, ``MAX_FRAME_BYTES`` (2 MiB) after (``limits.py`` says why).

Handshake (``handshake.py``). Four plaintext msgpack frames::

    agent -> manager   AgentHello   versions offered, agent id, 32-byte nonce_a
    manager -> agent   ManagerHello version chosen, 32-byte nonce_m
    agent -> manager   AgentProof   HMAC(p_a, label_a || T)
    manager -> agent   ManagerProof HMAC(p_m, label_m || T)

``T`` is SHA-256 over both hello frames exactly as they travelled. The agent
key ``K`` (the client.keys key string, as bytes; never sent) feeds
``HKDF-SHA256(ikm=K, salt=nonce_a || nonce_m, info=label || T)``, which yields
four 32-byte keys: agent->manager, manager->agent, and the two proof keys
``p_a``, ``p_m``. The manager finds ``K`` through a callable given the agent
id, and answers an id it does not know with ``Error(UNKNOWN_AGENT)``; a wrong
proof gets ``Error(AUTH_FAILED)`` worded the same whichever key is stale.

Session (``crypto.py``). Every later frame body is AES-256-GCM ciphertext and
tag. Each direction has its own key and an implicit frame counter from 0;
the nonce is a 4-byte direction label plus the 8-byte counter, and the
authenticated data is the length prefix plus that nonce. Messages inside are
msgpack maps (``codec.py``): ``Batch`` (the agent's own durable sequence
number, records compressed as a whole: zstd, or zlib with a version-1 peer),
``Ack`` (highest sequence durably handled), ``Heartbeat``, ``Close``
(reason), ``Error`` (code). Batch sequence numbers survive reconnects; the
sealing counter is per connection.

Why this resists...

* replay: both sides contribute a fresh nonce, so every connection has new
  keys; inside a connection the receiver's own counter fixes the nonce, so a
  repeated frame fails its tag. A replayed hello or proof meets a new nonce
  and its proof no longer verifies.
* reordering, dropping, truncation: the same counter rejects a frame out of
  order or after a gap; a cut mid-frame is reported at EOF, and a stream
  that ends without Close or Error is ``ConnectionLost``, never a clean end.
* reflection: each direction has its own key and nonce label, and the two
  proofs use different keys and labels, so nothing one side sent verifies
  when played back to it.
* downgrade: the offered and chosen versions are inside ``T``, so a
  middleman who edits the offer makes the proofs fail. Version mismatches
  are reported as "unsupported protocol version X, this side speaks Y"
  through an envelope and Error format that no version may change.
* handshake floods: before the agent proves itself, the manager buffers at
  most one 2 KiB frame, does one key lookup and draws 32 random bytes; key
  derivation waits for the proof, and decompression for the session.

Which message is legal when lives in one table (``state.py``); errors say
whose fault they are (``errors.py``). Timeouts (a hello that never comes, a
silent peer) belong to the shell, which owns the clock.
"""

from trailwarden.common.wire.connection import Connection
from trailwarden.common.wire.endpoints import AgentConnection, ManagerConnection
from trailwarden.common.wire.errors import (
    AuthenticationFailed,
    BatchTooLarge,
    ConnectionLost,
    IntegrityError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    UnknownAgent,
    UnsupportedVersion,
)
from trailwarden.common.wire.events import (
    NEED_DATA,
    Ack,
    Batch,
    Close,
    CloseReason,
    ConnectionClosed,
    Error,
    ErrorCode,
    Established,
    Heartbeat,
    NeedData,
    Record,
)
from trailwarden.common.wire.handshake import PROTOCOL_VERSION, SUPPORTED_VERSIONS
from trailwarden.common.wire.limits import (
    MAX_BATCH_RAW_BYTES,
    MAX_FRAME_BYTES,
    MAX_HANDSHAKE_BYTES,
    MAX_LOCATION_CHARS,
    MAX_RECORDS_PER_BATCH,
)
from trailwarden.common.wire.state import Role, State

__all__ = [
    "MAX_BATCH_RAW_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_HANDSHAKE_BYTES",
    "MAX_LOCATION_CHARS",
    "MAX_RECORDS_PER_BATCH",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Ack",
    "AgentConnection",
    "AuthenticationFailed",
    "Batch",
    "BatchTooLarge",
    "Close",
    "CloseReason",
    "Connection",
    "ConnectionClosed",
    "ConnectionLost",
    "Error",
    "ErrorCode",
    "Established",
    "Heartbeat",
    "IntegrityError",
    "LocalProtocolError",
    "ManagerConnection",
    "NeedData",
    "ProtocolError",
    "Record",
    "RemoteProtocolError",
    "Role",
    "State",
    "UnknownAgent",
    "UnsupportedVersion",
]
