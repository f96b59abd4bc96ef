"""The handshake: version negotiation, mutual proof of the agent key, session keys.

Theory of operation (four plaintext frames, then everything is sealed)::

    agent   -> manager  AgentHello   {versions offered, agent id, nonce_a}
    manager -> agent    ManagerHello {version chosen, nonce_m}
    agent   -> manager  AgentProof   {mac_a}
    manager -> agent    ManagerProof {mac_m}

Both sides hash the first two frames exactly as they travelled (length prefix
included) into the transcript ``T``. From the agent key ``K`` (the client.keys
key string, as opaque bytes):

    okm = HKDF-SHA256(ikm=K, salt=nonce_a || nonce_m, info=INFO || T, 128 bytes)
    k_a2m, k_m2a, p_a, p_m = okm[0:32], okm[32:64], okm[64:96], okm[96:128]
    mac_a = HMAC-SHA256(p_a, AGENT_LABEL || T)
    mac_m = HMAC-SHA256(p_m, MANAGER_LABEL || T)

``K`` never travels. The agent proves itself first, so a peer that merely
names an agent id gets a random nonce and nothing computed from ``K``; the
manager answers a wrong proof with AUTH_FAILED and never sends its own. Fresh
nonces from both sides make every session's keys new (old frames and old
proofs are useless), per-role proof keys and labels stop a proof from being
reflected, and binding ``T`` (offered and chosen versions, agent id, nonces)
into the keys makes any change to the hellos (a downgrade of the offer, a
swapped id) end in a failed proof.

The manager's work before the agent has proved itself is bounded and cheap:
parse one frame of at most MAX_HANDSHAKE_BYTES, one key lookup, 32 random
bytes. Key derivation happens only when the proof arrives.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trailwarden.common.wire.codec import (
    MessageType,
    bytes_field,
    int_field,
    pack_plain,
    require_keys,
    str_field,
)
from trailwarden.common.wire.crypto import KEY_BYTES
from trailwarden.common.wire.errors import RemoteProtocolError, UnsupportedVersion
from trailwarden.common.wire.limits import MAX_AGENT_ID_CHARS

# The version this code prefers, and every version it accepts. The versions
# differ only in the batch codec (codec.BATCH_CODEC_BY_VERSION): 1 zlib,
# 2 zstd; 1 stays accepted so agents of the first release keep working.
PROTOCOL_VERSION: Final = 2
SUPPORTED_VERSIONS: Final = (1, PROTOCOL_VERSION)

# Versions are 16-bit; an offer lists at most this many (ample for the
# overlap a rolling upgrade needs).
MAX_VERSION: Final = 0xFFFF
MAX_OFFERED_VERSIONS: Final = 16

NONCE_BYTES: Final = 32
MAC_BYTES: Final = 32
# Agent keys in client.keys are at most 127 printable characters (Wazuh KEYSIZE - 1).
MAX_AGENT_KEY_BYTES: Final = 127

_TRANSCRIPT_PREFIX: Final = b"trailwarden/transcript\x00"
_KEYS_INFO: Final = b"trailwarden/session-keys\x00"
_AGENT_LABEL: Final = b"trailwarden/agent-proof\x00"
_MANAGER_LABEL: Final = b"trailwarden/manager-proof\x00"

_AGENT_HELLO_KEYS: Final = frozenset({"proto", "t", "versions", "agent", "nonce"})
_MANAGER_HELLO_KEYS: Final = frozenset({"proto", "t", "version", "nonce"})
_PROOF_KEYS: Final = frozenset({"proto", "t", "mac"})


@dataclass(frozen=True, slots=True)
class AgentHello:
    versions: tuple[int, ...]
    agent_id: str
    nonce: bytes


@dataclass(frozen=True, slots=True)
class ManagerHello:
    version: int
    nonce: bytes


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """Everything one handshake derives; never sent, never reused across sessions."""

    agent_to_manager: bytes
    manager_to_agent: bytes
    agent_proof: bytes
    manager_proof: bytes


def is_agent_id(text: str) -> bool:
    """Wazuh's rule (OS_IsValidID): 1 to 8 ASCII digits."""
    return 0 < len(text) <= MAX_AGENT_ID_CHARS and text.isascii() and text.isdigit()


def format_versions(versions: tuple[int, ...]) -> str:
    return " or ".join(str(v) for v in versions) or "none"


def negotiate(offered: tuple[int, ...], accepted: tuple[int, ...]) -> int:
    """The highest version in both lists.

    Raises:
        UnsupportedVersion: no overlap; the message names both sides' versions.
    """
    common = set(offered).intersection(accepted)
    if not common:
        raise UnsupportedVersion(
            f"unsupported protocol version {format_versions(offered)}, "
            f"this side speaks {format_versions(accepted)}"
        )
    return max(common)


# -- messages -----------------------------------------------------------------


def encode_agent_hello(hello: AgentHello) -> bytes:
    return pack_plain(
        MessageType.AGENT_HELLO,
        {"versions": list(hello.versions), "agent": hello.agent_id, "nonce": hello.nonce},
    )


def offered_versions(fields: dict[str, object]) -> tuple[int, ...]:
    """The versions an agent hello offers, read before anything else in it.

    Negotiation runs on this alone, so a peer whose hello differs in other
    ways (a future version) still gets a version error, not a format error.
    """
    versions = fields.get("versions")
    if (
        type(versions) is not tuple
        or not 0 < len(versions) <= MAX_OFFERED_VERSIONS
        or any(type(v) is not int or not 0 < v <= MAX_VERSION for v in versions)
    ):
        raise RemoteProtocolError(
            f"agent hello must offer 1 to {MAX_OFFERED_VERSIONS} protocol versions "
            f"as integers in 1..{MAX_VERSION}"
        )
    return versions


def decode_agent_hello(fields: dict[str, object]) -> AgentHello:
    versions = offered_versions(fields)
    require_keys(fields, _AGENT_HELLO_KEYS, "agent hello")
    agent_id = str_field(fields, "agent", "agent hello")
    if not is_agent_id(agent_id):
        raise RemoteProtocolError(
            f"agent hello names agent id {agent_id[:16]!r}: expected 1 to "
            f"{MAX_AGENT_ID_CHARS} ASCII digits"
        )
    nonce = bytes_field(fields, "nonce", "agent hello", exact=NONCE_BYTES)
    return AgentHello(versions, agent_id, nonce)


def encode_manager_hello(hello: ManagerHello) -> bytes:
    return pack_plain(MessageType.MANAGER_HELLO, {"version": hello.version, "nonce": hello.nonce})


def decode_manager_hello(fields: dict[str, object]) -> ManagerHello:
    """Like ``offered_versions``, reads the version first."""
    version = int_field(fields, "version", 1, MAX_VERSION, "manager hello")
    require_keys(fields, _MANAGER_HELLO_KEYS, "manager hello")
    nonce = bytes_field(fields, "nonce", "manager hello", exact=NONCE_BYTES)
    return ManagerHello(version, nonce)


def encode_proof(message_type: MessageType, mac: bytes) -> bytes:
    return pack_plain(message_type, {"mac": mac})


def decode_proof(fields: dict[str, object], what: str) -> bytes:
    require_keys(fields, _PROOF_KEYS, what)
    return bytes_field(fields, "mac", what, exact=MAC_BYTES)


def foreign_protocol_hint(body: bytes | memoryview) -> str | None:
    """Name the peer's protocol when its first frame is recognisably not ours."""
    head = bytes(body[:32])
    if head.startswith((b"#AES:", b"#ping", b":")) or (head.startswith(b"!") and b"!#AES:" in head):
        return (
            "peer speaks the Wazuh 4.x agent protocol (its first message starts "
            f"{head[:12]!r}); this endpoint speaks the trailwarden protocol only"
        )
    return None


# -- key schedule --------------------------------------------------------------


def transcript_hash(agent_hello_frame: bytes, manager_hello_frame: bytes) -> bytes:
    """Digest of both hello frames as they travelled (length prefixes included)."""
    return hashlib.sha256(_TRANSCRIPT_PREFIX + agent_hello_frame + manager_hello_frame).digest()


def derive_session(
    agent_key: bytes, agent_nonce: bytes, manager_nonce: bytes, transcript: bytes
) -> SessionKeys:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=4 * KEY_BYTES,
        salt=agent_nonce + manager_nonce,
        info=_KEYS_INFO + transcript,
    ).derive(agent_key)
    return SessionKeys(
        agent_to_manager=okm[0:KEY_BYTES],
        manager_to_agent=okm[KEY_BYTES : 2 * KEY_BYTES],
        agent_proof=okm[2 * KEY_BYTES : 3 * KEY_BYTES],
        manager_proof=okm[3 * KEY_BYTES :],
    )


def agent_mac(keys: SessionKeys, transcript: bytes) -> bytes:
    return hmac.digest(keys.agent_proof, _AGENT_LABEL + transcript, "sha256")


def manager_mac(keys: SessionKeys, transcript: bytes) -> bytes:
    return hmac.digest(keys.manager_proof, _MANAGER_LABEL + transcript, "sha256")


def macs_equal(expected: bytes, received: bytes) -> bool:
    return hmac.compare_digest(expected, received)
