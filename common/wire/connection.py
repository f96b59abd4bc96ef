"""The machinery a transport drives: bytes in, events out; events in, bytes out.

No sockets, tasks or clocks here. A shell (the agent's sender, the manager's
session) runs a loop like::

    conn = AgentConnection(agent_id, key)        # or ManagerConnection(lookup)
    write(conn.data_to_send())                   # the agent's hello
    while True:
        event = conn.next_event()                # may raise a ProtocolError
        write(conn.data_to_send())               # handshake replies, if any
        if event is NEED_DATA:
            conn.receive_data(await read())      # b"" at EOF
        elif ...: write(conn.send(Batch(...)))

Output has two sources, kept in order: ``send(event)`` returns the frame for
an event the application chose to send, and ``data_to_send()`` returns frames
the connection produced by itself (handshake steps, and a courtesy ``Error``
telling the peer why the connection is being abandoned). ``send`` prepends
any such pending bytes to its result, so writing whatever either returns, in
the order received, is always correct.

After a ``ProtocolError`` escapes ``next_event`` or ``send`` (except
``BatchTooLarge``), the connection is in ``State.ERROR``: write
``data_to_send()`` and close the transport.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import ClassVar

from zstandard import ZstdCompressor

from trailwarden.common.wire.codec import (
    BATCH_CODEC_BY_VERSION,
    DEFAULT_BATCH_CODEC,
    EVENT_TYPES,
    BatchCodec,
    MessageType,
    decode_message,
    decode_plain_error,
    encode_message,
    encode_plain_error,
    new_zstd_compressor,
    unpack_plain,
    unpack_sealed,
)
from trailwarden.common.wire.crypto import (
    AGENT_TO_MANAGER,
    MANAGER_TO_AGENT,
    FrameOpener,
    FrameSealer,
)
from trailwarden.common.wire.errors import (
    BatchTooLarge,
    ConnectionLost,
    LocalProtocolError,
    RemoteProtocolError,
)
from trailwarden.common.wire.events import (
    NEED_DATA,
    Ack,
    Batch,
    ConnectionClosed,
    Error,
    ErrorCode,
    NextEvent,
    ReceivedEvent,
    SendableEvent,
)
from trailwarden.common.wire.framing import FrameBuffer, frame_header
from trailwarden.common.wire.handshake import (
    MAX_OFFERED_VERSIONS,
    MAX_VERSION,
    SessionKeys,
    foreign_protocol_hint,
)
from trailwarden.common.wire.limits import (
    MAX_FRAME_BYTES,
    MAX_HANDSHAKE_BYTES,
    REKEY_AFTER_FRAMES,
)
from trailwarden.common.wire.state import (
    EOF,
    SESSION_STATES,
    Role,
    State,
    legal_messages,
    next_state,
)

# The manager's way to find an agent's key: the client.keys key string as
# bytes, or None to refuse the agent (unknown, removed, or not allowed from
# the address the shell saw). It must not raise.
KeyLookup = Callable[[str], bytes | None]
RandomBytes = Callable[[int], bytes]


class Connection:
    """State shared by both ends; use ``AgentConnection`` or ``ManagerConnection``."""

    role: ClassVar[Role]

    __slots__ = (
        "_frames",
        "_state",
        "_outgoing",
        "_sealer",
        "_opener",
        "_agent_id",
        "_version",
        "_versions",
        "_random_bytes",
        "_last_batch_seq",
        "_last_ack_seq",
        "_batch_codec",
        "_compressor",
    )

    def __init__(self, versions: tuple[int, ...], random_bytes: RandomBytes) -> None:
        if not 0 < len(versions) <= MAX_OFFERED_VERSIONS or any(
            type(v) is not int or not 0 < v <= MAX_VERSION for v in versions
        ):
            raise LocalProtocolError(f"invalid protocol version list {versions!r}")
        self._frames = FrameBuffer()
        self._state = State.AWAIT_AGENT_HELLO
        self._outgoing: list[bytes] = []
        self._sealer: FrameSealer | None = None
        self._opener: FrameOpener | None = None
        self._agent_id: str | None = None
        self._version: int | None = None
        self._versions = tuple(versions)
        self._random_bytes = random_bytes
        # Sequence rules within one connection: batch sequences strictly
        # increase, and each Ack moves forward without passing the last batch.
        self._last_batch_seq = 0
        self._last_ack_seq = 0
        # Chosen with the version when the session starts (codec.py says why).
        self._batch_codec = DEFAULT_BATCH_CODEC
        # Built on the first Batch sent: managers, which send none, never pay for it.
        self._compressor: ZstdCompressor | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} agent={self._agent_id} state={self._state.name}>"

    # -- what the caller may inspect --------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def agent_id(self) -> str | None:
        """The agent this connection speaks for (manager side: once its hello arrived)."""
        return self._agent_id

    @property
    def protocol_version(self) -> int | None:
        """The negotiated version, once the manager chose it."""
        return self._version

    @property
    def batch_codec(self) -> BatchCodec:
        """How batches are compressed on this connection (fixed by the negotiated version)."""
        return self._batch_codec

    @property
    def buffered_bytes(self) -> int:
        """Received bytes not yet turned into events."""
        return self._frames.buffered

    @property
    def should_rekey(self) -> bool:
        """True when a direction nears its frame limit: Close(REKEY) and reconnect."""
        sealer, opener = self._sealer, self._opener
        return (sealer is not None and sealer.frames_sealed >= REKEY_AFTER_FRAMES) or (
            opener is not None and opener.frames_opened >= REKEY_AFTER_FRAMES
        )

    # -- input ------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Give the connection bytes from the transport; ``b""`` means EOF.

        Call ``next_event`` until it returns ``NEED_DATA`` before feeding more:
        that is what keeps the buffer below one frame's limit.
        """
        if self._state in (State.ERROR, State.FAILED):
            # Nothing more will be decoded; keep no bytes, remember only EOF.
            if not data:
                self._frames.feed_eof()
            return
        if data:
            self._frames.feed(data)
        else:
            self._frames.feed_eof()

    def next_event(self) -> NextEvent:
        """The next event from the peer, or ``NEED_DATA``.

        Handshake frames are answered internally (see ``data_to_send``); the
        caller sees ``Established`` once both sides proved the key.

        Raises:
            RemoteProtocolError: the peer broke the protocol (subclasses say how).
            LocalProtocolError: called again after the connection failed.
        """
        frames = self._frames
        while True:
            state = self._state
            if state is State.ERROR:
                raise LocalProtocolError("next_event called on a connection in state ERROR")
            if state is State.FAILED:
                frames.skip_all()
                if frames.eof:
                    self._state = State.CLOSED
                    return ConnectionClosed()
                return NEED_DATA
            limit = MAX_FRAME_BYTES if self._opener is not None else MAX_HANDSHAKE_BYTES
            try:
                body = frames.next_frame(limit)
                if body is None:
                    if frames.eof:
                        return self._end_of_stream()
                    return NEED_DATA
                event = self._receive_frame(body)
            except RemoteProtocolError as exc:
                self._fail(exc)
                raise
            except LocalProtocolError as exc:  # e.g. key_lookup returned a str
                raise self._fail_local(str(exc)) from exc
            if event is not None:
                return event

    # -- output -----------------------------------------------------------------

    def send(self, event: SendableEvent) -> bytes:
        """The bytes to write for ``event``, after any pending ``data_to_send``.

        Raises:
            BatchTooLarge: nothing was sent and the connection is unchanged.
            LocalProtocolError: the event is illegal now; the connection failed.
        """
        message_type = EVENT_TYPES.get(type(event))
        if message_type is None:
            raise self._fail_local(f"send() takes Batch, Ack, Heartbeat, Close or Error: {event!r}")
        role = self.role
        new_state = next_state(self._state, role, message_type)
        if new_state is None:
            raise self._fail_local(
                f"{role.value} can't send {message_type.name} in state {self._state.name} "
                f"(legal: {', '.join(legal_messages(self._state, role)) or 'nothing'})"
            )
        problem = self._sequence_problem(event)
        if problem is not None:
            raise self._fail_local(problem)
        sealer = self._sealer
        try:
            if sealer is not None:
                if self._compressor is None and type(event) is Batch:
                    self._compressor = new_zstd_compressor()
                frame = sealer.seal(encode_message(event, self._batch_codec, self._compressor))
            elif isinstance(event, Error):
                frame = _plain_frame(encode_plain_error(event))
            else:  # pragma: no cover - the state table allows only Error before the session
                raise LocalProtocolError(f"{message_type.name} before the session is established")
        except BatchTooLarge:
            raise
        except LocalProtocolError as exc:
            raise self._fail_local(str(exc)) from exc
        self._commit_sequence(event)
        self._enter(new_state)
        pending = self.data_to_send()
        return pending + frame if pending else frame

    def data_to_send(self) -> bytes:
        """Frames the connection produced itself since the last call; may be empty."""
        if not self._outgoing:
            return b""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    # -- internals --------------------------------------------------------------

    def _receive_frame(self, body: memoryview) -> ReceivedEvent | None:
        opener = self._opener
        if opener is None:
            return self._receive_handshake_frame(body)
        message_type, fields = unpack_sealed(opener.open(body))
        new_state = self._check_receive(message_type)
        event = decode_message(message_type, fields, self._batch_codec)
        problem = self._sequence_problem(event)
        if problem is not None:
            raise RemoteProtocolError(problem)
        self._commit_sequence(event)
        self._enter(new_state)
        return event

    def _receive_handshake_frame(self, body: memoryview) -> ReceivedEvent | None:
        if self._state is State.AWAIT_AGENT_HELLO:
            hint = foreign_protocol_hint(body)
            if hint is not None:
                raise RemoteProtocolError(hint)
        message_type, fields = unpack_plain(body)
        new_state = self._check_receive(message_type)
        if message_type is MessageType.ERROR:
            error = decode_plain_error(fields)
            self._enter(new_state)
            return error
        frame = frame_header(len(body)) + bytes(body)
        return self._on_handshake(message_type, fields, frame, new_state)

    def _on_handshake(
        self,
        message_type: MessageType,
        fields: dict[str, object],
        frame: bytes,
        new_state: State,
    ) -> ReceivedEvent | None:
        """One handshake step of this role (endpoints.py).

        ``message_type`` was already found legal (``new_state`` follows it);
        ``frame`` is the frame as it travelled, for the transcript. Returns
        ``Established`` when the session opens, else None.
        """
        raise NotImplementedError

    def _check_receive(self, message_type: MessageType) -> State:
        peer = self.role.peer
        new_state = next_state(self._state, peer, message_type)
        if new_state is None:
            allowed = ", ".join(legal_messages(self._state, peer)) or "nothing"
            raise RemoteProtocolError(
                f"{peer.value} sent {message_type.name} in state {self._state.name} "
                f"(legal from the {peer.value}: {allowed})"
            )
        return new_state

    def _send_internal(self, message_type: MessageType, body: bytes) -> bytes:
        """Queue a handshake frame; the state table must allow it (else it is a bug here)."""
        new_state = next_state(self._state, self.role, message_type)
        if new_state is None:  # pragma: no cover - guarded by the handshake code paths
            raise LocalProtocolError(f"handshake bug: {message_type.name} in {self._state.name}")
        frame = _plain_frame(body)
        self._outgoing.append(frame)
        self._enter(new_state)
        return frame

    def _enter(self, new_state: State) -> None:
        self._state = new_state
        if new_state is State.FAILED:
            self._frames.skip_all()

    def _sequence_problem(self, event: SendableEvent) -> str | None:
        if isinstance(event, Batch):
            if event.seq <= self._last_batch_seq:
                return (
                    f"batch sequence {event.seq} does not follow {self._last_batch_seq} "
                    "(sequences must increase within a connection)"
                )
        elif isinstance(event, Ack) and not self._last_ack_seq < event.seq <= self._last_batch_seq:
            return (
                f"ack {event.seq} is outside ({self._last_ack_seq}, {self._last_batch_seq}]: "
                "acks must move forward and cover only batches sent on this connection"
            )
        return None

    def _commit_sequence(self, event: SendableEvent) -> None:
        if isinstance(event, Batch):
            self._last_batch_seq = event.seq
        elif isinstance(event, Ack):
            self._last_ack_seq = event.seq

    def _end_of_stream(self) -> ReceivedEvent:
        state = self._state
        pending = self._frames.buffered
        if pending:
            raise ConnectionLost(
                f"connection closed in the middle of a frame ({pending} bytes of it received) "
                f"in state {state.name}"
            )
        if state is State.CLOSED:
            return ConnectionClosed()
        new_state = next_state(state, self.role.peer, EOF)
        if new_state is None:
            hint = ""
            if state is State.AWAIT_MANAGER_HELLO:
                # What a Wazuh manager (or any other service) does with our hello.
                hint = ": it closed without answering the hello; is it a trailwarden manager?"
            raise ConnectionLost(
                f"the {self.role.peer.value}'s side of the connection ended without Close or "
                f"Error in state {state.name}{hint}"
            )
        self._enter(new_state)
        return ConnectionClosed()

    def _fail(self, exc: RemoteProtocolError) -> None:
        """Enter ERROR after a remote violation, queueing a courtesy Error if still legal."""
        if not self._frames.eof:
            self._queue_courtesy(Error(exc.code, str(exc)))
        self._state = State.ERROR
        self._frames.skip_all()

    def _fail_local(self, message: str) -> LocalProtocolError:
        self._queue_courtesy(Error(ErrorCode.INTERNAL, f"internal error on the {self.role.value}"))
        self._state = State.ERROR
        self._frames.skip_all()
        return LocalProtocolError(message)

    def _queue_courtesy(self, error: Error) -> None:
        if next_state(self._state, self.role, MessageType.ERROR) is None:
            return
        sealer = self._sealer
        if sealer is None or self._state not in SESSION_STATES:
            self._outgoing.append(_plain_frame(encode_plain_error(error)))
            return
        # If the frame counter is exhausted the peer only sees the transport close.
        with contextlib.suppress(LocalProtocolError):
            self._outgoing.append(sealer.seal(encode_message(error)))

    def _start_session(self, keys: SessionKeys) -> None:
        assert self._version is not None  # negotiated before any key exists
        # Only tests offer versions beyond SUPPORTED_VERSIONS (simulated peers).
        self._batch_codec = BATCH_CODEC_BY_VERSION.get(self._version, DEFAULT_BATCH_CODEC)
        if self.role is Role.AGENT:
            self._sealer = FrameSealer(keys.agent_to_manager, AGENT_TO_MANAGER)
            self._opener = FrameOpener(keys.manager_to_agent, MANAGER_TO_AGENT)
        else:
            self._sealer = FrameSealer(keys.manager_to_agent, MANAGER_TO_AGENT)
            self._opener = FrameOpener(keys.agent_to_manager, AGENT_TO_MANAGER)


def _plain_frame(body: bytes) -> bytes:
    return frame_header(len(body)) + body
