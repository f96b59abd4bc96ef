"""Read an append-only JSON-lines file from a byte offset, complete lines only.

CloudWatch Logs exports, ELK exports and our own spools hold one CloudTrail record
per line and grow at the end. A reader keeps a byte offset and, on each ``read()``,
returns every complete line after it.

Theory of operation
-------------------
Chunks are read from ``offset`` and split at ``\\n`` with ``bytes.find`` (C). A
line is yielded only once its newline is on disk: a partial last line waits for
the next ``read()``, which re-reads it from its start (so ``offset`` normally sits
on a line boundary), unless the caller says the file is complete (``final``).
``\\r\\n`` endings lose the ``\\r``; blank lines are skipped.

A line longer than ``max_line_bytes`` is reported once, as soon as it crosses the
limit, and its bytes are dropped as they are read until its newline arrives
(``discarding``); memory stays at one line plus one chunk. If the file ends while
discarding, ``offset`` is left inside the line and the next ``read()`` goes on
discarding from there.

A file shorter than ``offset`` was truncated (copytruncate) or replaced: that is
reported and reading restarts at 0. Telling a replaced file from a grown one is
the fingerprint's job (``fingerprint.first_lines_fingerprint``).

For at-least-once delivery the caller checkpoints ``Line.end`` of the last line the
manager acknowledged, not ``offset``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import BinaryIO

# CloudWatch Logs caps an event at 256 KB; CloudTrail records in S3 reach a few
# hundred KB. 1 MiB bounds memory per line with room to spare.
DEFAULT_MAX_LINE_BYTES = 1 << 20
# Bytes per read(): small enough to stay in cache, large enough to amortise calls.
DEFAULT_CHUNK_BYTES = 64 << 10

_NL = b"\n"


@dataclass(frozen=True, slots=True)
class Line:
    """One complete line: ``raw`` without its terminator, file offsets around it."""

    start: int  # offset of the line's first byte
    end: int  # offset after its newline: where reading resumes
    raw: bytes


class LineProblemKind(enum.Enum):
    OVERSIZED_LINE = "oversized_line"  # skipped; reading goes on after its newline
    TRUNCATED = "truncated"  # the file shrank below the offset; restarting at 0


@dataclass(frozen=True, slots=True)
class LineProblem:
    """Something in the file the reader skipped or reset for (the file's fault)."""

    kind: LineProblemKind
    message: str
    source: str
    offset: int  # where in the file

    def __str__(self) -> str:
        return f"{self.source}, byte {self.offset}: {self.kind.value}: {self.message}"


class JsonLinesReader:
    """Tail one append-only JSON-lines file.

    Args:
        path: the file.
        offset: where to start: 0, or ``Line.end`` of the last delivered line.
        max_line_bytes: longer lines (terminator excluded) are skipped and reported.
        chunk_bytes: bytes per ``read`` call on the file.
    """

    def __init__(
        self,
        path: str,
        offset: int = 0,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if max_line_bytes < 1 or chunk_bytes < 1:
            raise ValueError(
                f"max_line_bytes and chunk_bytes must be positive, got "
                f"{max_line_bytes} and {chunk_bytes}"
            )
        self.path = path
        self.offset = offset
        self.max_line_bytes = max_line_bytes
        self.chunk_bytes = chunk_bytes
        self.discarding = False  # inside an oversized line, dropping up to its newline
        self.peak_buffered_bytes = 0  # most bytes held for one partial line

    def read(
        self, *, final: bool = False, handle: BinaryIO | None = None
    ) -> Iterator[Line | LineProblem]:
        """Yield the complete lines written since the last call, and problems.

        ``offset`` advances as items are yielded, so a caller may stop early and
        call again later without losing or repeating lines.

        Args:
            final: the file is complete (an export, or no longer written): a last
                line without a newline is a line too. Exports often end that way.
            handle: read this open file instead of opening ``path`` (a tailer
                keeps the file open to finish it after a rename rotation).
        """
        limit = self.max_line_bytes
        with open(self.path, "rb") if handle is None else nullcontext(handle) as f:
            size = os.fstat(f.fileno()).st_size
            if size < self.offset:
                yield LineProblem(
                    LineProblemKind.TRUNCATED,
                    f"file is {size} bytes, shorter than the read offset {self.offset}; "
                    "reading again from the start",
                    self.path,
                    self.offset,
                )
                self.offset = 0
                self.discarding = False
            f.seek(self.offset)
            read = f.read
            chunk_bytes = self.chunk_bytes
            chunk_at = self.offset  # file offset of the current chunk
            line_start = self.offset
            pending: list[bytes] = []  # the partial line so far
            pending_len = 0
            while chunk := read(chunk_bytes):
                find = chunk.find
                i = 0
                while (nl := find(_NL, i)) >= 0:
                    end = chunk_at + nl + 1
                    if self.discarding:
                        self.discarding = False  # reported when it crossed the limit
                        self.offset = end
                    else:
                        length = pending_len + nl - i
                        if length > limit:  # crossed the limit inside this chunk
                            self.offset = end
                            yield self._oversized(line_start, f"{length} bytes")
                        else:
                            raw = chunk[i:nl]
                            if pending:
                                raw = b"".join((*pending, raw))
                            if raw.endswith(b"\r"):
                                raw = raw[:-1]
                            self.offset = end
                            if raw and not raw.isspace():
                                yield Line(line_start, end, raw)
                    pending = []
                    pending_len = 0
                    line_start = end
                    i = nl + 1
                chunk_at += len(chunk)
                if self.discarding:
                    continue
                rest = len(chunk) - i
                if pending_len + rest > limit:
                    pending = []
                    pending_len = 0
                    self.discarding = True
                    self.offset = line_start
                    yield self._oversized(line_start, f"more than {limit} bytes so far")
                elif rest:
                    pending.append(chunk[i:])
                    pending_len += rest
                    if pending_len > self.peak_buffered_bytes:
                        self.peak_buffered_bytes = pending_len
            if self.discarding:
                self.offset = chunk_at  # resume dropping where this read stopped
            elif final and pending:
                raw = b"".join(pending)
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                self.offset = chunk_at
                if not raw.isspace():
                    yield Line(line_start, chunk_at, raw)

    def _oversized(self, start: int, size: str) -> LineProblem:
        return LineProblem(
            LineProblemKind.OVERSIZED_LINE,
            f"line of {size} exceeds max_line_bytes={self.max_line_bytes}; skipped",
            self.path,
            start,
        )
