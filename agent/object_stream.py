"""A large CloudTrail object read a piece at a time, its records wrapped by the
C envelope as they are inflated.

Objects too large to inflate whole (``tailer.PREFETCH_MAX_BYTES``) used to go
record by record through the Python scanner (``CloudTrailFileReader``): a
boundary search, one ``orjson.loads`` and one envelope per record, ~3x the
work of the whole-document path. Here the object is inflated ``PIECE_BYTES``
at a time and each piece of its ``Records`` array goes to
``FileWrapper.wrap_piece``, which takes the whole records the piece holds and
says where the next piece starts; a record cut off by the piece's end is taken
again with the next piece. Memory stays bounded by a piece plus one record.

Only what AWS writes is taken this way: a document that starts
``{"Records": [`` (or a bare ``[``) and ends right after the array. At the
first thing the C side does not take (a bad or too large record, a truncated
or corrupt stream, anything after the array, an unusual start) the scanner
takes over from that record's index: it reads the object again from its start
(``start_index`` skips what was already delivered) and reports the problem as
it always has, so records and problems are exactly the scanner's.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from typing import Any, Final

import orjson

from trailwarden.agent.cloudtrail_file import (
    DEFAULT_CHUNK_BYTES,
    CloudTrailFileReader,
    Problem,
    Record,
)
from trailwarden.agent.envelope import NATIVE_WRAPPER, FileWrapper

# Inflated bytes handed to the C envelope at once: large enough that a call's
# overhead and the re-reading of the record cut off at its end are noise,
# small enough to stay far below the agent's memory budget (measured: 256 KiB
# ran faster than 1 MiB). The scanner's read size: a damaged gzip stream gives
# the records inflated before the fault, so both read it in the same steps.
PIECE_BYTES: Final = DEFAULT_CHUNK_BYTES
# What may follow the records array for the document to be AWS's layout: a
# closing brace and whitespace. More than this goes to the scanner.
MAX_TAIL_BYTES: Final = 4096

_GZIP_MAGIC: Final = b"\x1f\x8b"
_WS = rb"[ \t\n\r]*"
_OPENING: Final = re.compile(_WS + rb'(\{' + _WS + rb'"Records"' + _WS + rb":" + _WS + rb")?\[")
_OBJECT_TAIL: Final = re.compile(_WS + rb"\}" + _WS)
_ARRAY_TAIL: Final = re.compile(_WS)
# Bytes the opening can take: any more whitespace goes to the scanner.
_MAX_OPENING_BYTES: Final = 256

# What a piece ended with (_envelope.c's wrap_piece).
_CLOSED: Final = 1
_STOPPED: Final = 2

Item = tuple[int, str | dict[str, Any]] | Problem


class StreamedObject:
    """The records of one object as (index, message) pairs, or (index, record)
    for the few the tailer wraps in Python, and problems; the scanner's items
    from wherever the C envelope stops. Iterated once; ``next_index`` is the
    index after the last record read, as ``CloudTrailFileReader.next_index``.
    """

    def __init__(
        self, path: str, wrapper: FileWrapper, *, start_index: int, max_record_bytes: int
    ) -> None:
        self.path = path
        self.wrapper = wrapper
        self.start_index = start_index
        self.max_record_bytes = max_record_bytes
        self.next_index = start_index
        self.fell_back_at: int | None = None  # where the scanner took over, for tests

    def __iter__(self) -> Iterator[Item]:
        index = yield from self._pieces()
        if index is not None:
            yield from self._scan(index)

    def _pieces(self) -> Generator[Item, None, int | None]:
        """Yield what the C envelope takes; return the index where the scanner
        must take over, or None when the object was read to its end."""
        if not NATIVE_WRAPPER:
            return 0  # a pure-Python install: the scanner reads it all
        wrap_piece, limit = self.wrapper.wrap_piece, self.max_record_bytes
        start, index = self.start_index, 0
        with open(self.path, "rb") as raw, ExitStack() as stack:
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            read = raw.read
            if compressed:
                read = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")).read
            buffer, tail = b"", b""
            opened = first = is_object = False
            closed: re.Pattern[bytes] | None = None  # once the array closed: what may follow
            while True:
                try:
                    data = read(PIECE_BYTES)
                except (EOFError, OSError, zlib.error):
                    return index  # truncated or corrupt: the scanner says which, and where
                final = not data
                if closed is not None:
                    tail += data
                    if len(tail) > MAX_TAIL_BYTES:
                        return index
                    if final:
                        return self._done(index) if closed.fullmatch(tail) else index
                    continue
                buffer += data
                if not opened:
                    match = _OPENING.match(buffer)
                    if match is None:
                        if final or len(buffer) > _MAX_OPENING_BYTES:
                            return index
                        continue
                    opened = True
                    is_object = match.group(1) is not None
                    buffer = buffer[match.end() :]
                    first = True
                result = wrap_piece(
                    buffer, start=max(0, start - index), first=first, max_record_bytes=limit
                )
                assert result is not None  # NATIVE_WRAPPER
                items, taken, consumed, status = result
                kept_from = index + taken - len(items)
                for offset, item in enumerate(items):
                    if type(item) is str:
                        yield kept_from + offset, item
                        continue
                    try:
                        record = orjson.loads(item)  # the tailer wraps it in Python
                    except orjson.JSONDecodeError:
                        return kept_from + offset  # e.g. 1e999: the scanner reports it
                    yield kept_from + offset, record
                index += taken
                first = first and taken == 0
                buffer = buffer[consumed:]
                if status == _CLOSED:
                    closed = _OBJECT_TAIL if is_object else _ARRAY_TAIL
                    tail, buffer = buffer, b""
                    if len(tail) > MAX_TAIL_BYTES:
                        return index
                    if final:
                        return self._done(index) if closed.fullmatch(tail) else index
                elif final or (status == _STOPPED and len(buffer) > limit + PIECE_BYTES):
                    return index  # the array never closed, or a record no piece completes

    def _done(self, index: int) -> int | None:
        """Read to its end: nothing left for the scanner."""
        self.next_index = index
        return None

    def _scan(self, index: int) -> Iterator[Item]:
        self.fell_back_at = start = max(index, self.start_index)
        reader = CloudTrailFileReader(
            self.path,
            start_index=start,
            max_record_bytes=self.max_record_bytes,
            chunk_bytes=PIECE_BYTES,  # a damaged stream breaks where it broke for us
        )
        for item in reader:
            if type(item) is Record:
                yield item.index, item.obj
            else:
                yield item  # type: ignore[misc]  # a Problem
        self.next_index = reader.next_index
