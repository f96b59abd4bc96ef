"""Every size a peer can make us allocate, named once with the reason for its value."""

from __future__ import annotations

from typing import Final

# Length prefix of every frame: unsigned 32-bit little-endian, as Wazuh frames
# over TCP, so a Wazuh agent pointed at us gets a precise error instead of a
# "frame too large" for a byte-swapped length.
HEADER_BYTES: Final = 4

# Largest frame body once the session is open. A batch of ~1000 CloudTrail
# records of 1-2 KiB is ~1.5-2 MiB raw and ~0.2-0.4 MiB compressed (zstd 1:
# 7x, zlib 1: 5.8x on the shared CloudTrail samples); a single record of
# 1 MiB must fit even when it does not compress at all. 2 MiB holds both with
# headroom while a receive buffer stays small enough for thousands of agents.
MAX_FRAME_BYTES: Final = 2 * 1024 * 1024

# Largest frame body before the peer has proved it holds the agent key.
# Handshake messages are under 100 bytes; the largest legitimate one is a
# pre-session Error carrying MAX_ERROR_MESSAGE_BYTES of text. Anyone can open
# a connection, so this is all an unauthenticated peer can make us buffer.
MAX_HANDSHAKE_BYTES: Final = 2048

# Uncompressed size of one batch's records: the decompression bound, since
# zlib can expand ~1000x (zstd far more) and a 2 MiB frame could otherwise
# claim gigabytes. Four times a typical full batch (~2 MiB raw); the agent
# batches by raw size and must stay under both this and MAX_FRAME_BYTES.
MAX_BATCH_RAW_BYTES: Final = 8 * 1024 * 1024

# Records per batch: each costs three Python objects on the manager, so 8 MiB
# of empty records would otherwise become millions of objects. Ten times the
# ~1000 records the agent's batcher aims for.
MAX_RECORDS_PER_BATCH: Final = 10_000

# A record's location is a file path or a tag; Linux PATH_MAX is 4096.
MAX_LOCATION_CHARS: Final = 4096

# Error and Close texts are for humans and logs; longer ones are cut on send
# and on receive rather than rejected, so the reason always gets through.
MAX_ERROR_MESSAGE_BYTES: Final = 1024

# Batch sequence numbers come from the agent's spool (a 64-bit signed rowid).
MAX_SEQ: Final = 2**63 - 1

# Wazuh's OS_IsValidID (src/addagent/validate.c): at most 8 ASCII digits.
MAX_AGENT_ID_CHARS: Final = 8

# Frames sealed under one key per direction. 2^32 frames of at most 2 MiB is
# ~2^49 AES blocks, keeping AES-GCM's forgery and distinguishing bounds near
# 2^-30 (NIST SP 800-38D usage limits); at 1000 frames/s that is 50 days, so a
# connection asks for REKEY (a reconnect) long before a counter could repeat.
MAX_FRAMES_PER_DIRECTION: Final = 2**32

# When should_rekey turns true: early enough that the Close, the peer's
# outstanding Acks and any in-flight frames still fit under the hard limit.
REKEY_AFTER_FRAMES: Final = MAX_FRAMES_PER_DIRECTION - 2**20
