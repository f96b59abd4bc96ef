"""Large objects read a piece at a time give exactly the scanner's records and problems.

The reference is ``CloudTrailFileReader`` over the same file: its records
through ``FileWrapper.wrap_owned`` and its problems as they are. Pieces are made
tiny here so records straddle them; the documents cover AWS's layout and each
way out to the scanner (a bad record, a damaged stream, whatever follows the
array).
"""

from __future__ import annotations

import gzip
import os
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from cloudtrail_files import record, records

from trailwarden.agent import envelope, object_stream
from trailwarden.agent.cloudtrail_file import CloudTrailFileReader, Record
from trailwarden.agent.envelope import FileWrapper
from trailwarden.agent.object_stream import StreamedObject

if os.environ.get("TRAILWARDEN_PURE_PYTHON"):
    pytest.skip("TRAILWARDEN_PURE_PYTHON: the C envelope is not built", allow_module_level=True)
assert envelope._native is not None, "the C envelope is not built: run `make native`"

LIMIT = 1 << 20


def wrapper() -> FileWrapper:
    return FileWrapper(log_file="k.json.gz", bucket="b", account_id="123456789012")


def write(tmp_path: Path, document: bytes, *, gz: bool = True) -> str:
    path = tmp_path / ("o.json.gz" if gz else "o.json")
    path.write_bytes(gzip.compress(document, mtime=0) if gz else document)
    return str(path)


def as_seen(items: Any) -> list[Any]:
    """Items as the manager would get them: messages, and problems as text."""
    wrap = wrapper().wrap_owned
    out: list[Any] = []
    for item in items:
        if isinstance(item, tuple):
            index, value = item
            out.append((index, value if type(value) is str else wrap(value).decode()))
        else:
            out.append((item.kind, str(item)))
    return out


def compare(path: str, *, start: int = 0, limit: int = LIMIT) -> StreamedObject:
    streamed = StreamedObject(path, wrapper(), start_index=start, max_record_bytes=limit)
    got = as_seen(streamed)
    # Read in pieces of the same size: a damaged gzip stream gives the records
    # inflated before the fault, so how far that is depends on the read size.
    reader = CloudTrailFileReader(
        path, start_index=start, max_record_bytes=limit, chunk_bytes=object_stream.PIECE_BYTES
    )
    expected = as_seen(
        (i.index, i.obj) if isinstance(i, Record) else i for i in reader
    )
    assert got == expected
    assert streamed.next_index == reader.next_index
    return streamed


@pytest.fixture(autouse=True)
def tiny_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(object_stream, "PIECE_BYTES", 700)  # records straddle pieces


MANY = [
    *records("big", 60),
    record("float", requestParameters={"ratio": 0.5}),  # Python wraps it
    record("text", requestParameters={"v": "태그 ✓ \"q\"\n"}),
    *records("tail", 20),
]


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("start", [0, 1, 37, 82, 90])
def test_aws_layout_is_taken_whole_by_the_c_envelope(tmp_path: Path, gz: bool, start: int) -> None:
    path = write(tmp_path, orjson.dumps({"Records": MANY}), gz=gz)
    assert compare(path, start=start).fell_back_at is None


@pytest.mark.parametrize(
    "document",
    [
        orjson.dumps(MANY),  # a bare array
        orjson.dumps({"Records": MANY}, option=orjson.OPT_INDENT_2),
        b' \n{ "Records" :\n [ ' + orjson.dumps(MANY)[1:] + b" \n}\n",
        b'{"Records":[]}',
    ],
)
def test_other_spellings_of_the_layout(tmp_path: Path, document: bytes) -> None:
    assert compare(write(tmp_path, document)).fell_back_at is None


def body(recs: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(recs)[1:-1]


@pytest.mark.parametrize(
    ("document", "at"),
    [
        (b'{"Records":[' + body(MANY[:30]) + b',{"a":01},' + body(MANY[30:]) + b"]}", 30),
        (b'{"Records":[' + body(MANY[:30]) + b',{"a":1e999},' + body(MANY[30:]) + b"]}", 30),
        (b'{"Records":[' + body(MANY[:5]) + b",7," + body(MANY[5:]) + b"]}", 5),
        (b'{"Records":[' + body(MANY[:40]) + b',{"a":"\\ud800"}]}', 40),
        (b'{"Records":[' + body(MANY) + b'],"Records":[' + body(MANY[:3]) + b"]}", len(MANY)),
        (b'{"Records":[' + body(MANY) + b"]} junk", len(MANY)),
        (b'{"Records":[' + body(MANY) + b"]", len(MANY)),  # the object never closes
        (b'{"Records":[' + body(MANY)[:-40], len(MANY) - 1),  # truncated JSON
        (b'{"eventVersion":"1.08","Records":[' + body(MANY) + b"]}", 0),
        (b'{"CloudTrail-Digest":1,"digestStartTime":"x"}', 0),
        (b"\xef\xbb\xbf" + orjson.dumps({"Records": MANY}), 0),  # a BOM
    ],
)
def test_the_scanner_takes_over_at_the_first_record_the_c_side_refuses(
    tmp_path: Path, document: bytes, at: int
) -> None:
    for start in (0, 3):
        assert compare(write(tmp_path, document), start=start).fell_back_at == max(at, start)


def test_an_oversized_record_goes_to_the_scanner(tmp_path: Path) -> None:
    recs = [*records("r", 10), record("huge", requestParameters={"blob": "x" * 5000})]
    path = write(tmp_path, orjson.dumps({"Records": recs + records("s", 5)}))
    assert compare(path, limit=3000).fell_back_at == 10


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_truncated_and_corrupt_gzip_go_to_the_scanner(tmp_path: Path, cut: float) -> None:
    data = gzip.compress(orjson.dumps({"Records": MANY}), mtime=0)
    truncated = tmp_path / "t.json.gz"
    truncated.write_bytes(data[: int(len(data) * cut)])
    assert compare(str(truncated)).fell_back_at is not None
    corrupt = bytearray(data)
    corrupt[int(len(data) * cut)] ^= 0xFF
    damaged = tmp_path / "c.json.gz"
    damaged.write_bytes(bytes(corrupt))
    compare(str(damaged))


def test_two_gzip_members_read_as_one_document(tmp_path: Path) -> None:
    document = orjson.dumps({"Records": MANY})
    path = tmp_path / "m.json.gz"
    half = len(document) // 2
    path.write_bytes(gzip.compress(document[:half]) + gzip.compress(document[half:]))
    assert compare(str(path)).fell_back_at is None


def test_memory_stays_bounded_by_a_piece_and_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(object_stream, "PIECE_BYTES", 256 * 1024)
    document = orjson.dumps({"Records": records("m", 15_000)})
    assert len(document) > 8_000_000
    path = write(tmp_path, document)
    tracemalloc.start()
    try:
        count = 0
        for _ in StreamedObject(path, wrapper(), start_index=0, max_record_bytes=LIMIT):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 15_000
    assert peak < 4_000_000, peak  # a whole parse would hold ~30 MB


def test_without_the_c_envelope_the_scanner_reads_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(object_stream, "NATIVE_WRAPPER", False)
    path = write(tmp_path, orjson.dumps({"Records": MANY}))
    assert compare(path, start=5).fell_back_at == 5
