"""Stream the records out of one CloudTrail object with bounded memory.

A CloudTrail S3 object is one JSON document ``{"Records":[{...},{...}]}``, gzipped
or plain, and can be hundreds of MB once decompressed. Stratus exports are a bare
array ``[{...},{...}]``. Digest files and other AWS objects have no ``Records``.

Theory of operation
-------------------
The file is decompressed in chunks (``gzip`` magic bytes decide, not the name) and
each chunk is fed to ``RecordScanner``, a sans-I/O state machine that never holds
more than the current record (capped at ``max_record_bytes``) plus one chunk:

* Around the records (the top-level object, its keys, the array brackets and
  commas) a tiny tokenizer walks one structural byte at a time. It reads the
  top-level keys to find ``Records`` (and to tell a digest from other objects) and
  skips the values of other keys without buffering them.
* Inside a record the exact scan only needs to know where the record ends. One
  compiled pattern (``_skip``) runs in C over everything that is neither a
  bracket nor an unfinished string, complete strings included, so the Python loop
  turns only at brackets (depth +1/-1) and at strings cut by a chunk boundary
  (the string-body pattern resumes in the next chunk, with a pending-backslash
  flag). The quantifiers are possessive, so matching is linear in the input.
* Most records take a faster path (``_guess_record``): the separator between two
  records is learned once, the next record's end is found with ``bytes.find`` and
  proved by ``orjson.loads`` accepting exactly those bytes as one object. That
  runs at orjson's own speed; whatever the guess cannot prove goes to the exact
  scan.
* A finished record's bytes (joined from the chunk slices it spans) go to
  ``orjson.loads``. When the record index is below ``start_index`` (resume), its
  bytes are neither kept nor parsed.

Every element of the records array gets an index, including the ones reported as
problems, so indexes stay stable for resume. The scanner counts bracket depth but
does not validate JSON grammar between records: broken syntax inside a record is
caught by ``orjson`` for that record only, as long as the brackets and quotes
balance; an unbalanced quote or bracket swallows what follows until the file ends
(reported as truncated JSON).

orjson refuses two things the wodle's ``json.load`` accepts: lone UTF-16
surrogate escapes (``"\\ud800"``) and invalid UTF-8 bytes. Such a record is parsed
again with the standard library and every lone surrogate or undecodable byte
becomes U+FFFD; ``Record.raw`` is then the re-serialised text. NaN, Infinity and
out-of-range floats stay invalid records; orjson reads integers beyond 64 bits as
floats.
"""

from __future__ import annotations

import enum
import gzip
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, cast

import orjson

# CloudTrail delivers events of up to a few hundred KB (truncated with
# "omitted": true beyond that); 1 MiB leaves room while bounding memory per record.
DEFAULT_MAX_RECORD_BYTES = 1 << 20
# Decompressed bytes per read: big enough that per-chunk overhead is noise,
# small next to the record cap.
DEFAULT_CHUNK_BYTES = 256 << 10
# Real records nest < 20 levels; the envelope re-serialises with orjson, which
# stops at 254 levels, and wraps records 2 levels deeper.
MAX_RECORD_DEPTH = 128
# Top-level keys are read to find "Records"; no AWS key comes near this.
MAX_KEY_BYTES = 4096
# Top-level key names remembered to describe an object without Records.
MAX_TOP_KEYS = 32
# Bytes between two records ("," and indentation) for the fast path to learn them.
MAX_SEPARATOR_GAP = 64
# Guesses per record before the exact scan takes over; each failed guess costs
# one orjson parse of the record's head.
MAX_GUESSES = 3

# Each pattern below accepts the empty string, so ``match`` never returns None;
# the casts record that for the type checker without a per-call check.
_Matcher = Callable[[bytes, int], "re.Match[bytes]"]
_ws = cast(_Matcher, re.compile(rb"[ \t\r\n]*+").match)
_between_elements = cast(_Matcher, re.compile(rb"[ \t\r\n,]*+").match)
# Outside strings: run over non-special bytes and complete strings; stops at a
# bracket, at a string that does not close in this chunk, or at the end.
_skip = cast(
    _Matcher,
    re.compile(rb'[^"{}\[\]]*+(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"[^"{}\[\]]*+)*+', re.DOTALL).match,
)
# Inside a string: stops at the closing quote or at a backslash that ends the chunk.
_string_rest = cast(_Matcher, re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL).match)
# A bare scalar (number, true, false, null, or garbage) runs to a delimiter.
_scalar_rest = cast(_Matcher, re.compile(rb'[^ \t\r\n,:{}\[\]"]*+').match)
# A record's first key after its "{" (bounded length), for the keyed separator.
_first_key = cast(
    Callable[[bytes, int], "re.Match[bytes] | None"],
    re.compile(rb'[ \t\r\n]*+"[^"\\]{1,64}+"').match,
)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

_QUOTE, _BACKSLASH = 0x22, 0x5C
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET = 0x7B, 0x7D, 0x5B, 0x5D
_COMMA, _COLON = 0x2C, 0x3A
_UTF8_BOM = b"\xef\xbb\xbf"
_NOT_A_VALUE = frozenset(b"}],:")
_DIGEST_KEYS = frozenset({"digestStartTime", "digestEndTime", "logFiles", "digestS3Object"})


class ProblemKind(enum.Enum):
    """What went wrong; ``terminal`` kinds end the file, the others skip one record."""

    OVERSIZED_RECORD = "oversized_record"
    INVALID_RECORD = "invalid_record"
    DIGEST_FILE = "digest_file"  # a CloudTrail-Digest object: skip quietly
    NO_RECORDS = "no_records"  # a JSON object without a Records array
    INVALID_FILE = "invalid_file"
    TRUNCATED_JSON = "truncated_json"  # the document ends early (still being copied?)
    CORRUPT_GZIP = "corrupt_gzip"
    TRUNCATED_GZIP = "truncated_gzip"

    @property
    def terminal(self) -> bool:
        return self not in (ProblemKind.OVERSIZED_RECORD, ProblemKind.INVALID_RECORD)


@dataclass(frozen=True, slots=True)
class Record:
    """One element of the records array: its index, exact bytes and parsed object."""

    index: int
    raw: bytes
    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the file that is not a usable record (the file's fault)."""

    kind: ProblemKind
    message: str
    source: str = ""  # the file, for messages
    index: int | None = None  # record index, when about one record
    offset: int | None = None  # byte offset in the decompressed document

    def __str__(self) -> str:
        where = [self.source or "<stream>"]
        if self.index is not None:
            where.append(f"record {self.index}")
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        return f"{', '.join(where)}: {self.kind.value}: {self.message}"


# Scanner states.
_S_START, _S_BOM, _S_KEY, _S_COLON, _S_VALUE, _S_AFTER_VALUE = range(6)
_S_ELEMENTS, _S_IN_VALUE, _S_TRAILER, _S_DONE = range(6, 10)
# What the value being scanned is for.
_P_RECORD, _P_KEY, _P_SKIP = range(3)
# The value's syntactic kind.
_V_NEST, _V_STRING, _V_SCALAR = range(3)


class RecordScanner:
    """Sans-I/O record splitter: ``feed(bytes)`` and ``finish()`` return what they found.

    Args:
        max_record_bytes: larger records are skipped and reported.
        start_index: records with a lower index are skipped unparsed (resume).
        source: names the input in problems.
    """

    def __init__(
        self,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        start_index: int = 0,
        source: str = "",
    ) -> None:
        if max_record_bytes < 2:
            raise ValueError(f"max_record_bytes must be at least 2, got {max_record_bytes}")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        self.max_record_bytes = max_record_bytes
        self.start_index = start_index
        self.source = source
        self.next_index = 0  # index the next array element will get
        self.peak_buffered_bytes = 0  # most bytes held for one unfinished value
        self.found_records = False  # a records array (wrapped or bare) was entered
        self._state = _S_START
        self._base = 0  # document offset of the current chunk
        self._bare = False
        self._bom_seen = 0
        # fast path (see _guess_record)
        self._separator: bytes | None = None
        self._keyed_separator: bytes | None = None
        self._closed_at = -1  # position in the current chunk of the last record's "}"
        self._key: str | None = None
        self._top_keys: list[str] = []
        self._records_not_array = False
        # the value being scanned
        self._purpose = _P_SKIP
        self._kind = _V_NEST
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._too_deep = False
        self._parts: list[bytes] | None = None  # None: not collecting
        self._size = 0  # bytes of the value before the current chunk
        self._cap = 0
        self._value_offset = 0
        self._seg_start = 0

    @property
    def done(self) -> bool:
        """A terminal problem was reported or the document ended cleanly."""
        return self._state == _S_DONE

    # -- input ------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Record | Problem]:
        """Consume the next chunk of the document."""
        out: list[Record | Problem] = []
        n = len(data)
        if not n or self._state == _S_DONE:
            self._base += n
            return out
        pos = 0
        self._closed_at = -1
        if self._state == _S_IN_VALUE:
            self._seg_start = 0
        while pos < n:
            st = self._state
            if st == _S_IN_VALUE:
                pos = self._scan_value(data, pos, out)
            elif st == _S_ELEMENTS:
                pos = _between_elements(data, pos).end()
                if pos == n:
                    break
                c = data[pos]
                if c == _RBRACKET:
                    pos += 1
                    self._state = _S_TRAILER if self._bare else _S_AFTER_VALUE
                    continue
                if c == _RBRACE or c == _COLON:
                    pos = self._fatal(out, pos, f"expected a record, got {_show(data, pos)}")
                    continue
                if c == _LBRACE and self.next_index >= self.start_index:
                    if self._closed_at >= 0 and self._separator is None:
                        self._learn_separator(data, pos)
                    if self._separator is not None:
                        end = self._guess_record(data, pos, out)
                        if end >= 0:
                            pos = end
                            continue
                        self._separator = None  # relearn after this record's exact scan
                pos = self._begin_value(data, pos, _P_RECORD)
            elif st == _S_DONE:
                break
            else:
                pos = self._structure(data, pos, out)
        if self._state == _S_IN_VALUE:
            self._hold(data)
        self._base += n
        return out

    def finish(self) -> list[Record | Problem]:
        """The document ended; report what is missing."""
        state = self._state
        self._state = _S_DONE
        if state in (_S_DONE, _S_TRAILER):
            return []
        if state in (_S_START, _S_BOM):
            return [self._problem(ProblemKind.INVALID_FILE, "empty document: no JSON value")]
        if self.found_records and state in (_S_ELEMENTS, _S_IN_VALUE):
            what = f"inside the records array, at record {self.next_index}"
        else:
            what = "inside the top-level object"
        return [self._problem(ProblemKind.TRUNCATED_JSON, f"the document ends {what}")]

    # -- the structure around the records ---------------------------------------

    def _structure(self, data: bytes, pos: int, out: list[Record | Problem]) -> int:
        st = self._state
        if st == _S_BOM:
            return self._bom(data, pos, out)
        pos = _ws(data, pos).end()
        if pos == len(data):
            return pos
        c = data[pos]
        if st == _S_START:
            if c == _LBRACE:
                self._state = _S_KEY
            elif c == _LBRACKET:
                self._bare = self.found_records = True
                self._state = _S_ELEMENTS
            elif c == _UTF8_BOM[0] and self._base + pos == 0:
                self._state = _S_BOM
                self._bom_seen = 1
            else:
                return self._fatal(
                    out, pos, f"not a JSON object or array: starts {_show(data, pos)}"
                )
            return pos + 1
        if st == _S_KEY:
            if c == _QUOTE:
                return self._begin_value(data, pos, _P_KEY)
            if c == _RBRACE:
                return self._close_object(out, pos)
            return self._fatal(
                out, pos, f"expected a key in the top-level object, got {_show(data, pos)}"
            )
        if st == _S_COLON:
            if c != _COLON:
                return self._fatal(
                    out, pos, f"expected ':' after key {self._key!r}, got {_show(data, pos)}"
                )
            self._state = _S_VALUE
            return pos + 1
        if st == _S_VALUE:
            if c in _NOT_A_VALUE:
                return self._fatal(
                    out, pos, f"expected a value for key {self._key!r}, got {_show(data, pos)}"
                )
            if self._key == "Records":
                if c == _LBRACKET:
                    self.found_records = True
                    self._state = _S_ELEMENTS
                    return pos + 1
                self._records_not_array = True
            return self._begin_value(data, pos, _P_SKIP)
        if st == _S_AFTER_VALUE:
            if c == _COMMA:
                self._state = _S_KEY
                return pos + 1
            if c == _RBRACE:
                return self._close_object(out, pos)
            return self._fatal(
                out, pos, f"expected ',' or '}}' in the top-level object, got {_show(data, pos)}"
            )
        # _S_TRAILER
        return self._fatal(out, pos, f"extra data after the top-level value: {_show(data, pos)}")

    def _bom(self, data: bytes, pos: int, out: list[Record | Problem]) -> int:
        # The BOM may span chunks: _bom_seen counts its bytes read so far.
        while pos < len(data) and self._bom_seen < len(_UTF8_BOM):
            if data[pos] != _UTF8_BOM[self._bom_seen]:
                return self._fatal(out, pos, f"not a JSON document: starts {_show(data, pos)}")
            self._bom_seen += 1
            pos += 1
        if self._bom_seen == len(_UTF8_BOM):
            self._state = _S_START
        return pos

    def _close_object(self, out: list[Record | Problem], pos: int) -> int:
        if self.found_records:
            self._state = _S_TRAILER
            return pos + 1
        keys = self._top_keys
        if _DIGEST_KEYS.intersection(keys):
            kind, what = ProblemKind.DIGEST_FILE, "a CloudTrail digest file"
        elif self._records_not_array:
            kind, what = ProblemKind.NO_RECORDS, "'Records' is not an array"
        elif "eventVersion" in keys or "eventName" in keys:
            kind, what = ProblemKind.NO_RECORDS, "a single CloudTrail record, not a log file"
        else:
            kind, what = ProblemKind.NO_RECORDS, "an object without 'Records'"
        out.append(self._problem(kind, f"{what} (top-level keys: {', '.join(keys) or 'none'})"))
        self._state = _S_DONE
        return pos + 1

    def _fatal(self, out: list[Record | Problem], pos: int, message: str) -> int:
        out.append(self._problem(ProblemKind.INVALID_FILE, message, offset=self._base + pos))
        self._state = _S_DONE
        return pos + 1

    def _problem(
        self,
        kind: ProblemKind,
        message: str,
        *,
        index: int | None = None,
        offset: int | None = None,
    ) -> Problem:
        return Problem(kind, message, self.source, index, offset)

    # -- one value: a record, a top-level key, or a skipped top-level value ------

    def _begin_value(self, data: bytes, pos: int, purpose: int) -> int:
        c = data[pos]
        self._purpose = purpose
        self._value_offset = self._base + pos
        self._seg_start = pos
        self._size = 0
        self._too_deep = False
        self._escape = False
        self._state = _S_IN_VALUE
        if purpose == _P_RECORD:
            collect = self.next_index >= self.start_index
            self._cap = self.max_record_bytes
        else:
            collect = purpose == _P_KEY
            self._cap = MAX_KEY_BYTES
        self._parts = [] if collect else None
        if c == _LBRACE or c == _LBRACKET:
            self._kind, self._depth, self._in_string = _V_NEST, 1, False
            return pos + 1
        if c == _QUOTE:
            self._kind, self._depth, self._in_string = _V_STRING, 0, True
            return pos + 1
        self._kind, self._depth, self._in_string = _V_SCALAR, 0, False
        return pos

    def _scan_value(self, data: bytes, pos: int, out: list[Record | Problem]) -> int:
        n = len(data)
        depth = self._depth
        in_string = self._in_string
        if self._escape:  # the previous chunk ended right after a backslash
            self._escape = False
            pos += 1
        if self._kind == _V_SCALAR:
            end = _scalar_rest(data, pos).end()
            if end == n:
                return n
            self._end_value(data, end, out)
            return end
        skip = _skip
        string_rest = _string_rest
        while pos < n:
            if in_string:
                end = string_rest(data, pos).end()
                if end == n:
                    pos = n
                    break
                if data[end] == _BACKSLASH:  # only ever the chunk's last byte
                    self._escape = True
                    pos = n
                    break
                in_string = False
                pos = end + 1
                if depth == 0:  # a string value closes
                    self._depth, self._in_string = depth, in_string
                    self._end_value(data, pos, out)
                    return pos
            else:
                end = skip(data, pos).end()
                if end == n:
                    pos = n
                    break
                c = data[end]
                pos = end + 1
                if c == _QUOTE:
                    in_string = True
                elif c == _LBRACE or c == _LBRACKET:
                    depth += 1
                    if depth > MAX_RECORD_DEPTH:
                        self._too_deep = True
                else:
                    depth -= 1
                    if depth == 0:
                        self._depth, self._in_string = depth, in_string
                        self._end_value(data, pos, out)
                        return pos
        self._depth, self._in_string = depth, in_string
        return pos

    # -- fast path: guess where a record ends, let orjson prove it --------------
    #
    # Records of one file are separated alike: "},{" (or "},\n  {" when pretty)
    # and, in AWS's own files, every record starts with the same key, so
    # b'},{"eventVersion"' marks record ends and almost nothing else. Both
    # separators are learned from two consecutive records, then each record's end
    # is guessed with bytes.find (C string search) and checked by orjson.loads on
    # the bytes up to the guess. If those bytes parse as one JSON object, its
    # closing brace is the one at the guess, so the guess is the record's true end:
    # a JSON parse of a prefix does not depend on what follows it. Anything else (no
    # guess in this chunk, failed parses, a possibly too deep or too big record)
    # falls back to the exact scan, which has the final word.

    def _learn_separator(self, data: bytes, start: int) -> None:
        closed = self._closed_at
        if start - closed > MAX_SEPARATOR_GAP or data[closed] != _RBRACE:
            return
        self._separator = data[closed : start + 1]
        key = _first_key(data, start + 1)
        self._keyed_separator = data[closed : key.end()] if key is not None else None

    def _guess_record(self, data: bytes, start: int, out: list[Record | Problem]) -> int:
        """Emit the record starting at ``data[start]`` and return the position after
        it, or -1 when the exact scan must decide."""
        find = data.find
        limit = start + self.max_record_bytes  # the closing brace must lie before
        parsed: Any = _NOT_PARSED
        close = -1
        keyed = self._keyed_separator
        if keyed is not None:
            close = find(keyed, start + 1, limit + len(keyed) - 1)
            if close >= 0:
                parsed = _parse_guess(data, start, close)
        if parsed is _NOT_PARSED:
            sep = self._separator
            assert sep is not None
            close = start
            for _ in range(MAX_GUESSES):
                close = find(sep, close + 1, limit + len(sep) - 1)
                if close < 0:
                    return -1
                parsed = _parse_guess(data, start, close)
                if parsed is not _NOT_PARSED:
                    break
            else:
                return -1
        raw, obj = parsed
        index = self.next_index
        self.next_index = index + 1
        out.append(Record(index, raw, obj))
        self._closed_at = close
        return close + 1

    def _hold(self, data: bytes) -> None:
        """Chunk ends inside a value: keep its tail if collecting, within the cap."""
        tail = len(data) - self._seg_start
        self._size += tail
        parts = self._parts
        if parts is None:
            return
        if self._size > self._cap:
            self._parts = None  # oversized: stop buffering, keep scanning
            return
        parts.append(data[self._seg_start :])
        if self._size > self.peak_buffered_bytes:
            self.peak_buffered_bytes = self._size

    def _end_value(self, data: bytes, end: int, out: list[Record | Problem]) -> None:
        size = self._size + end - self._seg_start
        parts = self._parts
        raw: bytes | None = None
        if parts is not None and size <= self._cap:
            raw = (
                b"".join((*parts, data[self._seg_start : end]))
                if parts
                else data[self._seg_start : end]
            )
        self._parts = None
        purpose = self._purpose
        if purpose == _P_RECORD:
            self._state = _S_ELEMENTS
            self._closed_at = end - 1
            index = self.next_index
            self.next_index = index + 1
            if index >= self.start_index:
                out.append(self._record(index, raw, size))
        elif purpose == _P_KEY:
            self._state = _S_COLON
            self._key = _key_text(raw)
            if self._key is not None and len(self._top_keys) < MAX_TOP_KEYS:
                self._top_keys.append(self._key)
        else:
            self._state = _S_AFTER_VALUE

    def _record(self, index: int, raw: bytes | None, size: int) -> Record | Problem:
        offset = self._value_offset
        if raw is None:
            return self._problem(
                ProblemKind.OVERSIZED_RECORD,
                f"record of {size} bytes exceeds max_record_bytes={self.max_record_bytes}; skipped",
                index=index,
                offset=offset,
            )
        if self._too_deep:
            message = f"nested deeper than {MAX_RECORD_DEPTH} levels; skipped"
        elif raw[0] != _LBRACE:
            message = f"record is not a JSON object: {raw[:40]!r}"
        else:
            try:
                return Record(index, raw, orjson.loads(raw))
            except orjson.JSONDecodeError as exc:
                repaired = _reparse(raw)
                if repaired is not None:
                    return Record(index, repaired[0], repaired[1])
                message = f"invalid JSON: {exc}"
        return self._problem(ProblemKind.INVALID_RECORD, message, index=index, offset=offset)


_NOT_PARSED = object()


def _parse_guess(data: bytes, start: int, close: int) -> Any:
    """``(raw, obj)`` when ``data[start:close+1]`` is one JSON object, else _NOT_PARSED."""
    raw = data[start : close + 1]
    # Fewer brackets than the depth limit cannot nest beyond it; the exact scan
    # measures the rest.
    if raw.count(b"{") + raw.count(b"[") > MAX_RECORD_DEPTH:
        return _NOT_PARSED
    try:
        return raw, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _NOT_PARSED  # an object inside an array of objects, or a bad record


def _show(data: bytes, pos: int) -> str:
    return repr(data[pos : pos + 16])


def _key_text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    if _BACKSLASH not in raw:
        return raw[1:-1].decode("utf-8", "replace")
    try:
        key = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return key if isinstance(key, str) else None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _reparse(raw: bytes) -> tuple[bytes, dict[str, Any]] | None:
    """Second chance for what orjson refuses but ``json.load`` takes: lone
    surrogates and invalid UTF-8 become U+FFFD. None if still not a JSON object."""
    try:
        obj = json.loads(
            raw.decode("utf-8", "replace"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
        if not isinstance(obj, dict):
            return None
        obj = _scrub_surrogates(obj)
        return orjson.dumps(obj), obj
    except (ValueError, RecursionError, orjson.JSONEncodeError):
        return None


def _scrub_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_LONE_SURROGATE.sub("\ufffd", k): _scrub_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_surrogates(v) for v in value]
    return value


# -- files ------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"


class CloudTrailFileReader:
    """Iterate the records and problems of one ``.json`` / ``.json.gz`` file.

    A terminal problem (``Problem.kind.terminal``) is always the last item. Records
    before a gzip fault were decompressed and parsed intact and are yielded; the
    caller can resume at ``next_index`` once a truncated copy is complete.
    Iterating opens the file (``OSError`` if it cannot be read); a reader is
    iterated once. Given ``document`` (the decompressed content, e.g. from
    ``load_document``), it reads that instead and never opens the file.
    """

    def __init__(
        self,
        path: str,
        *,
        start_index: int = 0,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        document: bytes | None = None,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.path = path
        self.document = document
        self.chunk_bytes = chunk_bytes
        self.scanner = RecordScanner(
            max_record_bytes=max_record_bytes, start_index=start_index, source=path
        )
        self.compressed: bool | None = None  # known once reading starts
        self.document_bytes = 0  # decompressed bytes read so far

    @property
    def next_index(self) -> int:
        return self.scanner.next_index

    @property
    def peak_buffered_bytes(self) -> int:
        """Most bytes held at once: the largest unfinished value plus one chunk."""
        return self.scanner.peak_buffered_bytes + self.chunk_bytes

    def __iter__(self) -> Iterator[Record | Problem]:
        if self.compressed is not None:
            raise RuntimeError(f"{self.path}: a CloudTrailFileReader is iterated once")
        scanner = self.scanner
        document = self.document
        if document is not None:
            self.compressed = False
            size = self.chunk_bytes
            for offset in range(0, len(document), size):
                chunk = document[offset : offset + size]
                self.document_bytes += len(chunk)
                yield from scanner.feed(chunk)
                if scanner.done:
                    return
            yield from scanner.finish()
            return
        with open(self.path, "rb") as raw, ExitStack() as stack:
            self.compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            read = raw.read
            if self.compressed:
                read = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")).read
            size = self.chunk_bytes
            while True:
                try:
                    chunk = read(size)
                except EOFError as exc:
                    yield self._gzip_problem(ProblemKind.TRUNCATED_GZIP, exc)
                    return
                except (gzip.BadGzipFile, zlib.error) as exc:
                    yield self._gzip_problem(ProblemKind.CORRUPT_GZIP, exc)
                    return
                if not chunk:
                    break
                self.document_bytes += len(chunk)
                yield from scanner.feed(chunk)
                if scanner.done:
                    return
        yield from scanner.finish()

    def _gzip_problem(self, kind: ProblemKind, exc: Exception) -> Problem:
        return Problem(
            kind,
            f"gzip stream broken after {self.document_bytes} decompressed bytes: {exc}",
            self.path,
            offset=self.document_bytes,
        )


def load_document(path: str, max_bytes: int) -> bytes | None:
    """The whole decompressed document of a small object, or None when it must
    be streamed with ``CloudTrailFileReader``: larger than ``max_bytes``, not
    one clean gzip member, or unreadable (the reader then says precisely why).

    Runs happily on a worker thread: zlib releases the GIL while inflating.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
            if raw[:2] != _GZIP_MAGIC:
                return raw if len(raw) <= max_bytes else None
            # A gzip file compresses its document, so this bounds the input too.
            rest = f.read(max_bytes * 2)
    except OSError:
        return None
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        document = inflater.decompress(raw + rest, max_bytes + 1)
    except zlib.error:
        return None
    if len(document) > max_bytes or not inflater.eof or inflater.unused_data:
        return None  # too large, truncated, or several members: stream it
    return document


def parse_whole_document(
    document: bytes, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> list[dict[str, Any]] | None:
    """All records of a small, clean document in one ``orjson.loads``, or None
    when the scanner must read it (it then reports whatever is unusual).

    The fast path of a caller that holds the whole document anyway (bounded by
    its own limit): no per-record boundary search. It accepts only what the
    scanner would yield as records, all of them: a ``{"Records": [...]}`` or
    bare array whose elements are all objects, no record over
    ``max_record_bytes``. Sizes are then those of the records' compact JSON,
    which is their size in AWS's compact files; a document with line breaks
    (pretty-printed) larger than the limit goes to the scanner, which measures
    records as written. orjson's own depth limit (1024) replaces the
    scanner's ``MAX_RECORD_DEPTH``; the envelope refuses what orjson cannot
    write back.
    """
    try:
        doc = orjson.loads(document)
    except orjson.JSONDecodeError:
        return None  # lone surrogates, NaN, truncation, a BOM...: the scanner decides
    if type(doc) is dict:
        records = doc.get("Records")
        if type(records) is not list:
            return None
    elif type(doc) is list:
        records = doc
    else:
        return None
    if not set(map(type, records)) <= _DICT_ONLY:
        return None
    if len(document) > max_record_bytes:
        if document.find(b"\n", 0, len(document) - 1) >= 0:
            return None
        try:
            if _any_oversized(records, max_record_bytes, len(document)):
                return None
        except orjson.JSONEncodeError:
            return None  # nested beyond what orjson writes: the scanner reports it
    return records


_DICT_ONLY = frozenset({dict})
# Bytes of records serialised at once to measure them: well below glibc's
# mmap threshold, so the output buffers are reused rather than page-faulted
# in afresh (measured ~25% faster than one record or 400 KB at a time).
SIZE_RUN_BYTES = 64 * 1024


def _any_oversized(records: list[dict[str, Any]], limit: int, document_bytes: int) -> bool:
    """Whether a record's compact JSON exceeds ``limit`` bytes, with a few
    ``orjson.dumps`` of runs of records rather than one per record: a run
    written as ``[r1,r2,...]`` holds its records' sizes plus brackets and
    commas, so a run within the limit clears all its records, and a run over
    it is halved. Records of ordinary size cost one pass in ``SIZE_RUN_BYTES``
    runs."""
    dumps = orjson.dumps
    count = len(records)
    step = max(1, count * min(limit // 2, SIZE_RUN_BYTES) // document_bytes)
    runs = [(lo, min(lo + step, count)) for lo in range(0, count, step)]
    while runs:
        lo, hi = runs.pop()
        if hi - lo == 1:
            if len(dumps(records[lo])) > limit:
                return True
            continue
        # len("[" + ",".join(parts) + "]") = sum(parts) + (hi - lo - 1) + 2
        if len(dumps(records[lo:hi])) - (hi - lo + 1) > limit:
            mid = (lo + hi) // 2
            runs += ((lo, mid), (mid, hi))
    return False


def read_cloudtrail_file(
    path: str,
    *,
    start_index: int = 0,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[Record | Problem]:
    """Records and problems of one CloudTrail file, in file order."""
    return iter(
        CloudTrailFileReader(
            path,
            start_index=start_index,
            max_record_bytes=max_record_bytes,
            chunk_bytes=chunk_bytes,
        )
    )
