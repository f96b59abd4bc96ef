"""Streaming CloudTrail object reader: real temp files, every split, every fault."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailwarden.agent.cloudtrail_file import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_RECORD_DEPTH,
    CloudTrailFileReader,
    Problem,
    ProblemKind,
    Record,
    RecordScanner,
    read_cloudtrail_file,
)
from trailwarden.agent.envelope import wrap_record


def make_record(i: int, pad: int = 0) -> dict[str, Any]:
    """A record with the shapes that trip scanners: brackets and quotes in strings,
    escapes, arrays of objects, nulls."""
    return {
        "eventVersion": "1.10",
        "userIdentity": {"type": "IAMUser", "userName": f"user-{i}", "accountId": "123456789012"},
        "eventTime": f"2026-11-27T12:{i % 60:02d}:00Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": "RunInstances",
        "sourceIPAddress": "203.0.113.7",
        "requestParameters": {
            "instancesSet": {"items": [{"imageId": "ami-1"}, {"imageId": "ami-2"}]},
            "note": 'tricky "}{][\\ ,{"eventVersion": text},{',
            "userData": '\\\\\\"',
        },
        "responseElements": None,
        "eventID": f"event-{i}",
        "pad": "x" * pad,
    }


def document(records: list[Any], *, indent: bool = False, bare: bool = False) -> bytes:
    body: Any = records if bare else {"Records": records}
    return json.dumps(body, indent=2 if indent else None, ensure_ascii=False).encode()


def split(items: list[Record | Problem]) -> tuple[list[Record], list[Problem]]:
    return (
        [i for i in items if isinstance(i, Record)],
        [i for i in items if isinstance(i, Problem)],
    )


def feed_chunks(data: bytes, sizes: list[int], **kwargs: Any) -> list[Record | Problem]:
    scanner = RecordScanner(**kwargs)
    out: list[Record | Problem] = []
    pos = 0
    for size in sizes:
        out += scanner.feed(data[pos : pos + size])
        pos += size
    out += scanner.feed(data[pos:])
    out += scanner.finish()
    return out


def write(path: Path, data: bytes, *, gz: bool = False) -> str:
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return str(path)


# -- shapes of real files --------------------------------------------------------------


def test_reads_the_shared_s3_object_plain_and_gzipped(cloudtrail_dir: Path) -> None:
    base = cloudtrail_dir / "trailscraper_fixture"
    name = "111111111111_CloudTrail_eu-central-1_20171211T1505Z_A6kvhMoVeCsc7v8U.json"
    expected = orjson.loads((base / name).read_bytes())["Records"]
    for path in (base / name, base / (name + ".gz")):
        reader = CloudTrailFileReader(str(path), chunk_bytes=64)
        records, problems = split(list(reader))
        assert problems == []
        assert [r.obj for r in records] == expected
        assert [r.index for r in records] == list(range(len(expected)))
        assert reader.compressed is path.name.endswith(".gz")


def test_reads_stratus_bare_pretty_arrays(cloudtrail_dir: Path) -> None:
    total = 0
    for path in sorted((cloudtrail_dir / "stratus_detonation_logs").glob("*.json")):
        expected = json.loads(path.read_bytes())
        records, problems = split(list(read_cloudtrail_file(str(path), chunk_bytes=4096)))
        assert problems == [], path
        assert [r.obj for r in records] == expected, path
        assert all(orjson.loads(r.raw) == r.obj for r in records)
        total += len(records)
    assert total == 310


def test_digest_and_single_record_files_are_told_apart(cloudtrail_dir: Path) -> None:
    base = cloudtrail_dir / "elastic_integrations_pipeline_tests"
    items = list(read_cloudtrail_file(str(base / "test-cloudtrail-digest-json.log")))
    assert [p.kind for p in items if isinstance(p, Problem)] == [ProblemKind.DIGEST_FILE]
    assert len(items) == 1 and items[0].kind.terminal  # type: ignore[union-attr]
    items = list(read_cloudtrail_file(str(base / "test-tls-details-json.log")))
    assert len(items) == 1
    problem = items[0]
    assert isinstance(problem, Problem) and problem.kind is ProblemKind.NO_RECORDS
    assert "single CloudTrail record" in problem.message


# -- chunk boundaries --------------------------------------------------------------------


SMALL = [make_record(0), make_record(1, pad=3), {"é": "\\u00e9 \u00e9", "k": [[], {}]}, {}]


@pytest.mark.parametrize(
    "data",
    [
        document(SMALL),
        document(SMALL, indent=True),
        document(SMALL, bare=True),
        b"\xef\xbb\xbf" + document(SMALL),
        b'  {"before": {"Records": 1}, "Records" : ['
        + b" , ".join(orjson.dumps(r) for r in SMALL)
        + b'] , "after": [1, "x"]}  \n',
    ],
    ids=["compact", "indented", "bare", "bom", "spaced"],
)
def test_every_split_position_gives_identical_records(data: bytes) -> None:
    expected = feed_chunks(data, [])
    records, problems = split(expected)
    assert problems == []
    assert [r.obj for r in records] == SMALL
    for i in range(len(data) + 1):
        assert feed_chunks(data, [i]) == expected, i
    assert feed_chunks(data, [1] * len(data)) == expected
    for a in range(0, len(data), 29):  # two cuts
        for b in range(a, len(data), 17):
            assert feed_chunks(data, [a, b - a]) == expected, (a, b)


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(
        st.dictionaries(
            st.text(max_size=6),
            st.recursive(
                # orjson reads integers beyond 64 bits as floats (tested elsewhere)
                st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=10),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3)
                ),
                max_leaves=12,
            ),
            max_size=5,
        ),
        max_size=12,
    ),
    indent=st.booleans(),
    ascii_only=st.booleans(),
    cuts=st.lists(st.integers(1, 64), max_size=30),
)
def test_arbitrary_documents_and_chunkings(
    records: list[dict[str, Any]], indent: bool, ascii_only: bool, cuts: list[int]
) -> None:
    data = json.dumps(
        {"Records": records}, indent=2 if indent else None, ensure_ascii=ascii_only
    ).encode()
    got, problems = split(feed_chunks(data, cuts))
    assert problems == []
    assert [r.obj for r in got] == records
    assert [r.index for r in got] == list(range(len(records)))


# -- size and memory -------------------------------------------------------------------


def test_multi_mb_gzip_with_small_chunks_keeps_memory_bounded(tmp_path: Path) -> None:
    records = [make_record(i, pad=i % 1000) for i in range(6000)]
    data = document(records)
    assert len(data) > 5_000_000
    path = write(tmp_path / "big.json.gz", data, gz=True)
    max_record = 64 << 10
    reader = CloudTrailFileReader(path, chunk_bytes=4096, max_record_bytes=max_record)

    tracemalloc.start()
    try:
        count = 0
        for item in reader:
            assert isinstance(item, Record)
            assert item.obj["eventID"] == f"event-{item.index}"
            if item.index % 50 == 0:  # json.dumps is slow under tracemalloc
                assert item.raw == json.dumps(records[item.index], ensure_ascii=False).encode()
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(records)
    assert reader.peak_buffered_bytes <= max_record + 4096
    assert reader.scanner.peak_buffered_bytes < 8192  # records are ~1-2 KB
    assert peak < 2_000_000, f"peak traced memory {peak} for a {len(data)}-byte document"


def test_a_one_mib_record_passes_intact_and_one_byte_more_does_not(tmp_path: Path) -> None:
    head = orjson.dumps(make_record(7, pad=0))
    fill = DEFAULT_MAX_RECORD_BYTES - len(head)
    exact = orjson.loads(head)
    exact["pad"] = "y" * fill  # the record is now exactly 1 MiB
    exact_raw = orjson.dumps(exact)
    assert len(exact_raw) == DEFAULT_MAX_RECORD_BYTES
    over = dict(exact, pad="y" * (fill + 1))
    data = orjson.dumps({"Records": [make_record(0), exact, over, make_record(3)]})
    for chunk in (DEFAULT_MAX_RECORD_BYTES * 2, 65536, 1000):
        path = write(tmp_path / f"m{chunk}.json.gz", data, gz=True)
        items = list(CloudTrailFileReader(path, chunk_bytes=chunk))
        assert [type(i).__name__ for i in items] == ["Record", "Record", "Problem", "Record"]
        assert isinstance(items[1], Record) and items[1].raw == exact_raw
        assert items[1].obj == exact
        assert isinstance(items[2], Problem)
        assert items[2].kind is ProblemKind.OVERSIZED_RECORD and items[2].index == 2
        assert str(DEFAULT_MAX_RECORD_BYTES + 1) in items[2].message
        assert isinstance(items[3], Record) and items[3].index == 3


def test_oversized_record_in_the_middle_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    records = [make_record(i, pad=200_000 if i == 5 else 10) for i in range(10)]
    path = write(tmp_path / "o.json", document(records))
    for chunk in (100, 4096, 1 << 20):
        reader = CloudTrailFileReader(path, chunk_bytes=chunk, max_record_bytes=50_000)
        got, problems = split(list(reader))
        assert [r.index for r in got] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
        assert [(p.kind, p.index) for p in problems] == [(ProblemKind.OVERSIZED_RECORD, 5)]
        assert reader.peak_buffered_bytes <= 50_000 + chunk + chunk


# -- faults ---------------------------------------------------------------------------------


def test_corrupt_gzip_is_terminal(tmp_path: Path) -> None:
    data = document([make_record(i) for i in range(200)])
    good = gzip.compress(data, mtime=0)
    bad_crc = good[:-8] + bytes([good[-8] ^ 0xFF]) + good[-7:]
    path = tmp_path / "crc.json.gz"
    path.write_bytes(bad_crc)
    items = list(read_cloudtrail_file(str(path), chunk_bytes=1024))
    records, problems = split(items)
    # Records decompressed and parsed before the trailer check are intact.
    assert len(records) > 150
    assert [r.obj["eventID"] for r in records] == [f"event-{i}" for i in range(len(records))]
    assert [p.kind for p in problems] == [ProblemKind.CORRUPT_GZIP]
    assert "CRC" in problems[0].message and problems[0] is items[-1]

    mangled = good[:200] + b"\xff" * 64 + good[264:]
    path.write_bytes(mangled)
    items = list(read_cloudtrail_file(str(path), chunk_bytes=1024))
    assert isinstance(items[-1], Problem) and items[-1].kind is ProblemKind.CORRUPT_GZIP

    path.write_bytes(b"\x1f\x8b\x09" + good[3:])  # unknown compression method
    items = list(read_cloudtrail_file(str(path)))
    assert [i.kind for i in items] == [ProblemKind.CORRUPT_GZIP]  # type: ignore[union-attr]


def test_truncated_gzip_then_resume_when_the_copy_completes(tmp_path: Path) -> None:
    records = [make_record(i, pad=50) for i in range(300)]
    good = gzip.compress(document(records), mtime=0)
    path = tmp_path / "t.json.gz"
    path.write_bytes(good[: len(good) * 6 // 10])
    reader = CloudTrailFileReader(str(path), chunk_bytes=2048)
    items = list(reader)
    got, problems = split(items)
    assert [p.kind for p in problems] == [ProblemKind.TRUNCATED_GZIP]
    assert items[-1] is problems[0]
    assert 0 < len(got) < 300
    assert [r.obj for r in got] == records[: len(got)]
    assert reader.next_index >= len(got)

    path.write_bytes(good)
    rest, problems = split(list(read_cloudtrail_file(str(path), start_index=len(got))))
    assert problems == []
    assert [r.index for r in rest] == list(range(len(got), 300))
    assert [r.obj for r in rest] == records[len(got) :]


def test_invalid_json_in_one_record_skips_only_that_record(tmp_path: Path) -> None:
    parts = [orjson.dumps(make_record(i)) for i in range(5)]
    parts[2] = b'{"eventVersion":"1.10","eventID":"broken","readOnly":tru,"x":[{}]}'
    data = b'{"Records":[' + b",".join(parts) + b"]}"
    for chunk in (7, 64, 4096):
        got, problems = split(
            list(read_cloudtrail_file(write(tmp_path / "i.json", data), chunk_bytes=chunk))
        )
        assert [r.index for r in got] == [0, 1, 3, 4]
        assert [(p.kind, p.index) for p in problems] == [(ProblemKind.INVALID_RECORD, 2)]
        assert "invalid JSON" in problems[0].message
        assert problems[0].offset == data.index(b'{"eventVersion":"1.10","eventID":"broken"')


def test_elements_that_are_not_objects_and_too_deep_records() -> None:
    deep = "[" * (MAX_RECORD_DEPTH + 5) + "]" * (MAX_RECORD_DEPTH + 5)
    data = ('[1, "x", null, {"a": 1}, [2], {"d": ' + deep + "}, true]").encode()
    got, problems = split(feed_chunks(data, [3, 9]))
    assert [(r.index, r.obj) for r in got] == [(3, {"a": 1})]
    assert [p.index for p in problems] == [0, 1, 2, 4, 5, 6]
    assert all(p.kind is ProblemKind.INVALID_RECORD for p in problems)
    assert "deeper than" in problems[4].message


@pytest.mark.parametrize(
    ("data", "kind", "text"),
    [
        (b"", ProblemKind.INVALID_FILE, "empty"),
        (b"  \n", ProblemKind.INVALID_FILE, "empty"),
        (b"hello", ProblemKind.INVALID_FILE, "not a JSON object or array"),
        (b'{"Records":[{"a":1},', ProblemKind.TRUNCATED_JSON, "at record 1"),
        (b'{"Records":[{"a":1}]', ProblemKind.TRUNCATED_JSON, "top-level object"),
        (b'{"Records":[{"a":1}]}{"x":1}', ProblemKind.INVALID_FILE, "extra data"),
        (b'{"Records": {"a": 1}}', ProblemKind.NO_RECORDS, "not an array"),
        (b'{"foo": [1, {"Records": []}], "bar": "s"}', ProblemKind.NO_RECORDS, "foo, bar"),
        (b'{"Records" [', ProblemKind.INVALID_FILE, "expected ':'"),
        (b"{1:2}", ProblemKind.INVALID_FILE, "expected a key"),
    ],
)
def test_file_level_problems(data: bytes, kind: ProblemKind, text: str) -> None:
    for cuts in ([], [1] * len(data)):
        items = feed_chunks(data, cuts, source="f.json")
        problems = [i for i in items if isinstance(i, Problem)]
        assert len(problems) == 1 and problems[0] is items[-1]
        assert problems[0].kind is kind and kind.terminal
        assert text in problems[0].message
        assert str(problems[0]).startswith("f.json")


def test_digest_file_from_its_keys(tmp_path: Path) -> None:
    digest = {
        "awsAccountId": "123456789012",
        "digestStartTime": "2026-11-27T12:00:00Z",
        "logFiles": [{"s3Object": "AWSLogs/x.json.gz", "hashValue": "00"}],
    }
    path = write(tmp_path / "d.json.gz", orjson.dumps(digest), gz=True)
    items = list(read_cloudtrail_file(path))
    assert len(items) == 1 and isinstance(items[0], Problem)
    assert items[0].kind is ProblemKind.DIGEST_FILE


# -- text ------------------------------------------------------------------------------------


def test_non_ascii_and_escapes(tmp_path: Path) -> None:
    text = "결제 서비스 🚀 Zoë"
    data = (
        '{"Records":[{"a":"' + text + '","b":"\\ud83d\\ude00 \\uacb0\\uc81c","c":"\\u0000\\n"}]}'
    ).encode()
    got, problems = split(
        list(read_cloudtrail_file(write(tmp_path / "u.json", data), chunk_bytes=3))
    )
    assert problems == []
    assert got[0].obj == {"a": text, "b": "😀 결제", "c": "\x00\n"}
    assert got[0].raw == data[12:-2]
    wrapped = wrap_record(got[0].obj, log_file="k", bucket="b", account_id="1")
    assert text.encode() in wrapped and "😀 결제".encode() in wrapped


def test_lone_surrogates_and_bad_utf8_become_replacement_characters() -> None:
    data = b'{"Records":[{"a":"x\\ud800y","\\udc00k":"\xff\xfe!"},{"ok":1}]}'
    got, problems = split(feed_chunks(data, [5]))
    assert problems == []
    assert got[0].obj == {"a": "x\ufffdy", "\ufffdk": "\ufffd\ufffd!"}
    assert orjson.loads(got[0].raw) == got[0].obj  # raw is the repaired text
    assert got[1].obj == {"ok": 1}


def test_nan_and_infinity_are_invalid_and_huge_integers_become_floats() -> None:
    data = b'{"Records":[{"a":NaN},{"b":1e999},{"c":123456789012345678901234567890}]}'
    got, problems = split(feed_chunks(data, []))
    assert [p.index for p in problems] == [0, 1]
    assert [r.index for r in got] == [2]
    assert got[0].obj == {"c": 1.2345678901234568e29}


# -- resume ------------------------------------------------------------------------------------


def test_resume_at_index_k_skips_without_parsing(tmp_path: Path) -> None:
    parts = [orjson.dumps(make_record(i)) for i in range(8)]
    parts[1] = b'{"broken": tru}'  # before k: not parsed, so not reported
    parts[2] = orjson.dumps(make_record(2, pad=5000))  # before k: oversized, not reported
    data = b'{"Records":[' + b",".join(parts) + b"]}"
    path = write(tmp_path / "r.json.gz", data, gz=True)
    for chunk in (16, 4096):
        reader = CloudTrailFileReader(path, start_index=4, max_record_bytes=2000, chunk_bytes=chunk)
        items = list(reader)
        assert all(isinstance(i, Record) for i in items)
        assert [i.index for i in items] == [4, 5, 6, 7]  # type: ignore[union-attr]
        assert reader.scanner.peak_buffered_bytes < 2000
    assert list(read_cloudtrail_file(path, start_index=8)) == []
    items = list(read_cloudtrail_file(path, start_index=1, max_record_bytes=2000))
    assert [getattr(i, "kind", None) for i in items[:2]] == [
        ProblemKind.INVALID_RECORD,
        ProblemKind.OVERSIZED_RECORD,
    ]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="start_index"):
        RecordScanner(start_index=-1)
    with pytest.raises(ValueError, match="max_record_bytes"):
        RecordScanner(max_record_bytes=1)
    with pytest.raises(ValueError, match="chunk_bytes"):
        CloudTrailFileReader("x", chunk_bytes=0)


def test_a_reader_is_iterated_once(tmp_path: Path) -> None:
    reader = CloudTrailFileReader(write(tmp_path / "o.json", document([make_record(0)])))
    assert len(list(reader)) == 1
    with pytest.raises(RuntimeError, match="iterated once"):
        list(reader)
    with pytest.raises(FileNotFoundError):
        list(read_cloudtrail_file(str(tmp_path / "missing.json.gz")))


_junk = st.lists(
    st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b",", b":", b" ", b"a", b"1",
                     b'"Records"', b"\xff", b"\xef\xbb\xbf", b"null", b'"k":']),
    max_size=60,
).map(b"".join)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), _junk), cuts=st.lists(st.integers(1, 9)))
def test_garbage_never_raises_and_ends_with_at_most_one_terminal_problem(
    data: bytes, cuts: list[int]
) -> None:
    items = feed_chunks(data, cuts, max_record_bytes=64)
    terminal = [i for i in items if isinstance(i, Problem) and i.kind.terminal]
    assert len(terminal) <= 1
    if terminal:
        assert items[-1] is terminal[0]
    indexes = [i.index for i in items if not (isinstance(i, Problem) and i.kind.terminal)]
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
    whole = feed_chunks(data, [], max_record_bytes=64)
    assert shape(whole) == shape(items)  # chunking changes nothing (but message excerpts)


def shape(items: list[Record | Problem]) -> list[tuple[Any, ...]]:
    return [
        (i.index, i.raw, i.obj) if isinstance(i, Record) else (i.kind, i.index, i.offset)
        for i in items
    ]
