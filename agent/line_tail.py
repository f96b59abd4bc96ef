"""One append-only JSON-lines file held open while it grows.

Identity is the fingerprint of the file's first line (``fingerprint.py``),
so the position found for it is right whatever the file is called now.
The file stays open: after a rename rotation the agent finishes it through
its descriptor, whatever its new name is, before moving on to the new file.

``check`` tells what happened since the last look:

* ``GREW``: more bytes; read them.
* ``ROTATED``: the path now names another file, or none; read to the end
  through the descriptor (a last line without newline counts), then close.
* ``REPLACED``: shorter than what was read (truncation, copytruncate), or
  its first line changed (rewritten in place): close, and open the path
  again as a new file with its own fingerprint.

Lines become records: a line holding one record, or a whole CloudTrail
document ``{"Records": [...]}`` (a position then says how many of that
line's records were taken, so a restart mid-line repeats none). Digest
objects are skipped, and anything else is an invalid record, counted and
logged, never stopping the file.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final, cast

import orjson

from trailwarden.agent.batcher import FileCursor
from trailwarden.agent.envelope import EnvelopeError, wrap_record
from trailwarden.agent.fingerprint import LINE_HEAD_BYTES, head_lines_fingerprint
from trailwarden.agent.jsonlines import JsonLinesReader, Line, LineProblem, LineProblemKind
from trailwarden.agent.positions import FileKind, FilePosition, clip_path
from trailwarden.agent.sources import Source, location_text
from trailwarden.agent.status import Counters
from trailwarden.common.wire import Record as WireRecord

log = logging.getLogger("trailwarden.agent")

# Problems logged per file before they are only counted (summarised on close).
MAX_PROBLEM_LOGS: Final = 5
_DIGEST_KEYS: Final = frozenset({"digestStartTime", "digestEndTime", "logFiles", "digestS3Object"})

# One item for the batcher: record, its bytes (text + location), resume token.
TailItem = tuple[WireRecord, int, tuple[int, int]]


class TailChange(enum.Enum):
    NONE = "none"
    GREW = "grew"
    ROTATED = "rotated"
    REPLACED = "replaced"


class LineTail:
    """See the module docstring."""

    def __init__(
        self,
        source: Source,
        path: str,
        handle: BinaryIO,
        fingerprint: str,
        position: FilePosition | None,
        counters: Counters,
        max_wrapped_bytes: int,
        now: float,
    ) -> None:
        st = os.fstat(handle.fileno())
        self.source = source
        self.path = path
        self.fingerprint = fingerprint
        self._handle = handle
        self._dev, self._ino = st.st_dev, st.st_ino
        self._size = st.st_size
        self._counters = counters
        self._max_wrapped = max_wrapped_bytes
        offset = position.offset if position is not None else 0
        self._skip = position.index if position is not None else 0
        self._reader = JsonLinesReader(path, offset, max_line_bytes=source.max_record_bytes)
        self.resume: tuple[int, int] = (offset, self._skip)
        self._replaced = False
        self.last_activity = now
        self._problems = 0
        origin = source.origin(path)
        self._log_file, self._bucket, self._account = (
            origin.log_file,
            origin.bucket,
            origin.account_id,
        )
        self._location, self._loc_bytes = location_text(path)
        self._clipped_path = clip_path(path)
        self.cursor = FileCursor(fingerprint, self.position)

    @classmethod
    def open(
        cls,
        source: Source,
        path: str,
        lookup: Any,
        counters: Counters,
        max_wrapped_bytes: int,
        now: float,
    ) -> LineTail | None:
        """Open ``path``; None while it has no complete first line (or is gone).

        ``lookup(fingerprint)`` gives the position to resume at.

        Raises:
            OSError: the file exists but cannot be read.
        """
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return None
        try:
            fingerprint = head_lines_fingerprint(os.pread(handle.fileno(), LINE_HEAD_BYTES, 0))
            if fingerprint is None:
                handle.close()
                return None
            return cls(
                source,
                path,
                handle,
                fingerprint,
                lookup(fingerprint),
                counters,
                max_wrapped_bytes,
                now,
            )
        except BaseException:
            handle.close()
            raise

    def position(self, token: object) -> FilePosition:
        """The position for a resume token ``(offset, records taken from that line)``."""
        offset, index = cast(tuple[int, int], token)
        return FilePosition(FileKind.LINES, index, offset, path=self._clipped_path)

    @property
    def resume_position(self) -> FilePosition:
        return self.position(self.resume)

    def close(self) -> None:
        self._handle.close()
        if self._problems > MAX_PROBLEM_LOGS:
            log.warning(
                "%s: %d problem lines in all (only the first %d were logged).",
                self.path,
                self._problems,
                MAX_PROBLEM_LOGS,
            )

    # -- what changed -------------------------------------------------------------------

    def check(self) -> TailChange:
        if self._replaced:
            return TailChange.REPLACED
        st = os.fstat(self._handle.fileno())
        size = st.st_size
        try:
            at_path = Path(self.path).stat()
            moved = (at_path.st_dev, at_path.st_ino) != (self._dev, self._ino)
        except FileNotFoundError:
            moved = True
        if size < self._reader.offset or size < self.resume[0]:
            return TailChange.REPLACED
        if size != self._size:
            head = os.pread(self._handle.fileno(), LINE_HEAD_BYTES, 0)
            if head_lines_fingerprint(head) != self.fingerprint:
                return TailChange.REPLACED
            self._size = size
            return TailChange.ROTATED if moved else TailChange.GREW
        if moved:
            return TailChange.ROTATED
        if size > self._reader.offset and not self._reader.discarding:
            return TailChange.GREW  # bytes left behind by an earlier read that stopped early
        return TailChange.NONE

    # -- reading ------------------------------------------------------------------------

    def items(self, *, final: bool = False) -> Iterator[TailItem]:
        """Records of the lines written since the last call (see the module docstring).

        The consumer may stop early; ``resume`` is where the next call begins.
        """
        reader = self._reader
        complete = False
        try:
            for item in reader.read(final=final, handle=self._handle):
                if type(item) is Line:
                    yield from self._line_records(item)
                elif isinstance(item, LineProblem):
                    if item.kind is not LineProblemKind.OVERSIZED_LINE:
                        # Truncated between check() and this read: the file
                        # is another one now; the caller opens it afresh.
                        self._replaced = True
                        return
                    self._counters.records_oversized += 1
                    self._problem(str(item))
                    if not reader.discarding:
                        self.resume = (reader.offset, 0)
            complete = True
        finally:
            if not complete and not self._replaced:
                # Stopped early, perhaps inside a line of several records:
                # the next read starts again at that line.
                reader.offset, self._skip = self.resume
                reader.discarding = False
        if not reader.discarding and reader.offset > self.resume[0] and self._skip == 0:
            self.resume = (reader.offset, 0)  # blank lines after the last record

    def _line_records(self, line: Line) -> Iterator[TailItem]:
        try:
            obj = orjson.loads(line.raw)
        except orjson.JSONDecodeError as exc:
            self._invalid(line, f"not JSON: {exc}")
            return
        if type(obj) is not dict:
            self._invalid(line, f"not a JSON object: {line.raw[:40]!r}")
            return
        records = obj.get("Records")
        if not isinstance(records, list):
            if _DIGEST_KEYS.intersection(obj):
                self._counters.digests_skipped += 1
                self._done_line(line)
                return
            records = [obj]
        skip, self._skip = self._skip, 0
        last = len(records) - 1
        if last < 0:
            self._done_line(line)
            return
        location, loc_bytes = self._location, self._loc_bytes
        for i in range(skip, last + 1):
            record = records[i]
            token = (line.end, 0) if i == last else (line.start, i + 1)
            text = self._wrap(record, line, i)
            if text is None:
                if i == last:
                    self._done_line(line)
                continue
            self.resume = token
            yield WireRecord(location, text.decode()), len(text) + loc_bytes, token

    def _wrap(self, record: Any, line: Line, i: int) -> bytes | None:
        where = f"{self.path}, byte {line.start}, record {i}"
        if type(record) is not dict:
            self._counters.records_invalid += 1
            self._problem(f"{where}: invalid_record: not a JSON object")
            return None
        try:
            text = wrap_record(
                record, log_file=self._log_file, bucket=self._bucket, account_id=self._account
            )
        except EnvelopeError as exc:
            self._counters.records_invalid += 1
            self._problem(f"{where}: invalid_record: {exc}")
            return None
        if len(text) + self._loc_bytes > self._max_wrapped:
            self._counters.records_oversized += 1
            self._problem(f"{where}: oversized_record: {len(text)} bytes once wrapped; skipped")
            return None
        self._counters.records_read += 1
        return text

    def _invalid(self, line: Line, why: str) -> None:
        self._counters.records_invalid += 1
        self._problem(f"{self.path}, byte {line.start}: invalid_record: {why}")
        self._done_line(line)

    def _done_line(self, line: Line) -> None:
        self._skip = 0
        self.resume = (line.end, 0)

    def _problem(self, message: str) -> None:
        self._problems += 1
        if self._problems <= MAX_PROBLEM_LOGS:
            log.warning("%s", message)
