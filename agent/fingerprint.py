"""Identify a file by its content, independent of its inode and path.

The checkpoint store keys progress by fingerprint, so a file that is renamed,
moved, copied or re-synced into another directory is recognised as already read,
and a reused inode or path with new content is not mistaken for an old file.

Two strategies, one per kind of file:

``object_fingerprint`` (CloudTrail objects, written once and never changed)
    Hashes the *document* (decompressed content), not its encoding:
    ``size mod 2**32``, ``CRC-32`` of the whole content, and the first
    ``HEAD_BYTES`` of content. For a gzip file the first two come for free from
    its 8-byte trailer (gzip stores exactly these: CRC-32 and ISIZE of the
    uncompressed data), so fingerprinting costs one small read at each end of the
    file, however large it is. For a plain file they are computed in one pass.

    - A renamed or copied object has the same bytes, hence the same fingerprint.
    - The same object stored gzipped and plain (``x.json.gz`` and ``x.json``)
      has the same document, hence the same fingerprint: it is read once.
    - Two different objects collide only if their first ``HEAD_BYTES`` bytes, their
      size mod 2**32 and their CRC-32 all agree. Distinct CloudTrail objects
      already differ in the head (the first record's eventID and eventTime sit in
      its first few hundred bytes); the whole-content CRC covers the rest.
    - A zero-padded gzip file has zeros where the trailer should be; it is
      decompressed in full to compute the same two numbers. A multi-member gzip
      file (concatenated gzips; AWS writes single-member objects) has the last
      member's trailer at its end: its fingerprint is still stable across renames
      and copies, but differs from its plain twin, and two such files collide only
      if they share their head and their whole last member.

``first_lines_fingerprint`` (append-only JSON-lines files, which grow)
    Anything covering the whole file would change on every append, so, like
    vector's ``FirstLinesChecksum``, only the first complete line(s) are hashed
    (at most ``LINE_HEAD_BYTES``). The fingerprint is ``None`` until the first line
    is complete: a file that has no newline yet cannot be told from the start of
    another one. Two files that start with the same line look identical; the
    first line of a CloudTrail JSON-lines file is a record with a unique eventID.

Fingerprints are strings with a strategy prefix (``ct1:``, ``ln1:``), so a later
change of method cannot match old checkpoints by accident.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from typing import BinaryIO

# Content bytes hashed at the head of an object: holds the first record's
# eventID/eventTime, so distinct objects differ here already.
HEAD_BYTES = 4096
# Bytes of an append-only file's first lines that are hashed; longer first lines
# are identified by this prefix.
LINE_HEAD_BYTES = 8192
# Read size for the full passes (plain files, unusual gzip files).
_PASS_BYTES = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_TRAILER = struct.Struct("<II")  # CRC-32, ISIZE (both little-endian)


def _digest(tag: str, *parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return f"{tag}:{h.hexdigest()}"


def content_fingerprint(head: bytes, size: int, crc32: int) -> str:
    """The object fingerprint from its parts (pure; ``head`` at most HEAD_BYTES)."""
    return _digest("ct1", b"%d:%08x:" % (size & 0xFFFFFFFF, crc32 & 0xFFFFFFFF), head[:HEAD_BYTES])


def object_fingerprint(path: str | os.PathLike[str]) -> str:
    """Fingerprint of a CloudTrail object (``.json`` or ``.json.gz``, by magic bytes).

    Raises:
        OSError: the file cannot be read; ``gzip.BadGzipFile``/``EOFError``/
            ``zlib.error``: a broken gzip file (only when its head is broken, or
            when it has to be decompressed in full, see the module docstring).
    """
    with open(path, "rb") as f:
        if f.read(2) != _GZIP_MAGIC:
            f.seek(0)
            return _pass_fingerprint(f)
        end = f.seek(0, os.SEEK_END)
        f.seek(end - min(end, _GZIP_TRAILER.size))
        crc, isize = _GZIP_TRAILER.unpack(f.read(_GZIP_TRAILER.size).rjust(8, b"\0"))
        f.seek(0)
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            head = gz.read(HEAD_BYTES)
        if len(head) < HEAD_BYTES:  # the whole document is in hand
            return content_fingerprint(head, len(head), zlib.crc32(head))
        if crc or isize:
            return content_fingerprint(head, isize, crc)
        f.seek(0)  # zero padding where the trailer should be
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            return _pass_fingerprint(gz)


def _pass_fingerprint(stream: BinaryIO | gzip.GzipFile) -> str:
    """Head, size and CRC-32 computed over the whole stream."""
    head = b""
    crc = 0
    size = 0
    while block := stream.read(_PASS_BYTES):
        if len(head) < HEAD_BYTES:
            head += block[: HEAD_BYTES - len(head)]
        crc = zlib.crc32(block, crc)
        size += len(block)
    return content_fingerprint(head, size, crc)


def first_lines_fingerprint(
    path: str | os.PathLike[str], lines: int = 1, max_bytes: int = LINE_HEAD_BYTES
) -> str | None:
    """Fingerprint of an append-only file: its first ``lines`` complete lines
    (at most ``max_bytes``), or None while the file has fewer complete lines and
    is shorter than ``max_bytes``."""
    if lines < 1:
        raise ValueError(f"lines must be >= 1, got {lines}")
    with open(path, "rb") as f:
        head = f.read(max_bytes)
    return head_lines_fingerprint(head, lines, max_bytes)


def head_lines_fingerprint(
    head: bytes, lines: int = 1, max_bytes: int = LINE_HEAD_BYTES
) -> str | None:
    """``first_lines_fingerprint`` of a file whose first ``max_bytes`` bytes
    (or all of it, if shorter) are ``head`` (pure; for a caller holding the
    file open)."""
    head = head[:max_bytes]
    pos = -1
    for _ in range(lines):
        pos = head.find(b"\n", pos + 1)
        if pos < 0:
            if len(head) < max_bytes:
                return None
            return _digest("ln1", head)
    return _digest("ln1", head[: pos + 1])
