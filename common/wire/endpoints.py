"""The two ends of a connection: what each does at each step of the handshake.

``Connection`` (connection.py) frames, seals, and checks every message
against the state table; these subclasses add the role's handshake steps
(handshake.py holds the messages and the key schedule they use):

* the agent sends its hello on creation, answers the manager's hello with
  its proof, and trusts the session once the manager's proof checks out;
* the manager looks the agent's key up when the hello arrives (refusing an
  unknown id), answers with its nonce, derives keys only when the agent's
  proof arrives, and answers a valid proof with its own.
"""

from __future__ import annotations

import secrets

from trailwarden.common.wire.codec import MessageType
from trailwarden.common.wire.connection import Connection, KeyLookup, RandomBytes
from trailwarden.common.wire.errors import (
    AuthenticationFailed,
    LocalProtocolError,
    UnknownAgent,
    UnsupportedVersion,
)
from trailwarden.common.wire.events import Established, ReceivedEvent
from trailwarden.common.wire.handshake import (
    MAX_AGENT_KEY_BYTES,
    NONCE_BYTES,
    SUPPORTED_VERSIONS,
    AgentHello,
    ManagerHello,
    SessionKeys,
    agent_mac,
    decode_agent_hello,
    decode_manager_hello,
    decode_proof,
    derive_session,
    encode_agent_hello,
    encode_manager_hello,
    encode_proof,
    format_versions,
    is_agent_id,
    macs_equal,
    manager_mac,
    negotiate,
    offered_versions,
    transcript_hash,
)
from trailwarden.common.wire.state import Role, State


def _check_agent_key(key: object, whose: str) -> bytes:
    if type(key) is not bytes or not 0 < len(key) <= MAX_AGENT_KEY_BYTES:
        raise LocalProtocolError(
            f"{whose} must be the client.keys key as 1 to {MAX_AGENT_KEY_BYTES} bytes, "
            f"got {type(key).__name__}"
        )
    return key


class AgentConnection(Connection):
    """The agent's end. Its hello is ready in ``data_to_send()`` on creation."""

    role = Role.AGENT

    __slots__ = ("_agent_key", "_hello", "_hello_frame", "_keys", "_transcript")

    def __init__(
        self,
        agent_id: str,
        agent_key: bytes,
        *,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        """
        Args:
            agent_id: this agent's id from client.keys ("001").
            agent_key: the key string from client.keys, as bytes.
            versions: protocol versions to offer (tests simulate other peers).
            random_bytes: source of the handshake nonce (tests make it fixed).
        """
        super().__init__(versions, random_bytes)
        if type(agent_id) is not str or not is_agent_id(agent_id):
            raise LocalProtocolError(f"agent id must be 1 to 8 ASCII digits, got {agent_id!r}")
        self._agent_id = agent_id
        self._agent_key: bytes | None = _check_agent_key(agent_key, "agent_key")
        self._hello = AgentHello(self._versions, agent_id, random_bytes(NONCE_BYTES))
        self._keys: SessionKeys | None = None
        self._transcript = b""
        self._hello_frame = self._send_internal(
            MessageType.AGENT_HELLO, encode_agent_hello(self._hello)
        )

    def _on_handshake(
        self,
        message_type: MessageType,
        fields: dict[str, object],
        frame: bytes,
        new_state: State,
    ) -> ReceivedEvent | None:
        if message_type is MessageType.MANAGER_HELLO:
            hello = decode_manager_hello(fields)
            if hello.version not in self._versions:
                raise UnsupportedVersion(
                    f"unsupported protocol version {hello.version}, "
                    f"this side speaks {format_versions(self._versions)}"
                )
            assert self._agent_key is not None
            transcript = transcript_hash(self._hello_frame, frame)
            keys = derive_session(self._agent_key, self._hello.nonce, hello.nonce, transcript)
            self._version = hello.version
            self._keys, self._transcript = keys, transcript
            self._enter(new_state)
            self._send_internal(
                MessageType.AGENT_PROOF,
                encode_proof(MessageType.AGENT_PROOF, agent_mac(keys, transcript)),
            )
            return None
        # The state table admits only MANAGER_PROOF here.
        mac = decode_proof(fields, "manager proof")
        session = self._keys
        assert session is not None and self._version is not None
        if not macs_equal(manager_mac(session, self._transcript), mac):
            raise AuthenticationFailed(_key_mismatch(self._hello.agent_id))
        self._start_session(session)
        self._enter(new_state)
        self._agent_key = self._keys = None
        return Established(self._hello.agent_id, self._version)


class ManagerConnection(Connection):
    """The manager's end of one accepted connection."""

    role = Role.MANAGER

    __slots__ = ("_key_lookup", "_agent_key", "_agent_nonce", "_manager_nonce", "_transcript")

    def __init__(
        self,
        key_lookup: KeyLookup,
        *,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        """
        Args:
            key_lookup: agent id -> its key as bytes, or None to refuse the agent
                with UNKNOWN_AGENT. Called once, when the agent's hello arrives.
            versions: protocol versions this manager accepts.
            random_bytes: source of the handshake nonce (tests make it fixed).
        """
        super().__init__(versions, random_bytes)
        self._key_lookup = key_lookup
        self._agent_key: bytes | None = None
        self._agent_nonce = b""
        self._manager_nonce = b""
        self._transcript = b""

    def _on_handshake(
        self,
        message_type: MessageType,
        fields: dict[str, object],
        frame: bytes,
        new_state: State,
    ) -> ReceivedEvent | None:
        if message_type is MessageType.AGENT_HELLO:
            version = negotiate(offered_versions(fields), self._versions)
            hello = decode_agent_hello(fields)
            self._agent_id = hello.agent_id
            self._enter(new_state)
            key = self._key_lookup(hello.agent_id)
            if key is None:
                raise UnknownAgent(
                    f"agent {hello.agent_id} is not registered with this manager "
                    "(never enrolled, removed, or not allowed from this address): enroll it again"
                )
            self._agent_key = _check_agent_key(key, f"key_lookup({hello.agent_id!r})")
            self._version = version
            self._agent_nonce = hello.nonce
            self._manager_nonce = self._random_bytes(NONCE_BYTES)
            reply = self._send_internal(
                MessageType.MANAGER_HELLO,
                encode_manager_hello(ManagerHello(version, self._manager_nonce)),
            )
            self._transcript = transcript_hash(frame, reply)
            return None
        # The state table admits only AGENT_PROOF here.
        mac = decode_proof(fields, "agent proof")
        agent_id, key, chosen = self._agent_id, self._agent_key, self._version
        assert agent_id is not None and key is not None and chosen is not None
        keys = derive_session(key, self._agent_nonce, self._manager_nonce, self._transcript)
        if not macs_equal(agent_mac(keys, self._transcript), mac):
            raise AuthenticationFailed(_key_mismatch(agent_id))
        self._enter(new_state)
        self._send_internal(
            MessageType.MANAGER_PROOF,
            encode_proof(MessageType.MANAGER_PROOF, manager_mac(keys, self._transcript)),
        )
        self._start_session(keys)
        self._agent_key = None
        return Established(agent_id, chosen)


def _key_mismatch(agent_id: str) -> str:
    # The same words on both ends, whichever detects it: neither can tell
    # whose key is the stale one, and an impostor must not learn more.
    return (
        f"authentication failed for agent {agent_id}: the agent and the manager "
        "hold different keys for it"
    )
