"""The tailer's speed-ups give exactly what the plain paths give.

* ``wrap_record(owned=True)`` and ``FileWrapper.wrap_owned`` clean the
  record itself in place and splice its serialisation into the message;
* ``CloudTrailFileReader(document=...)`` reads a document inflated on a worker
  thread (``load_document``) instead of the file;
* ``parse_whole_document`` takes a small document in one parse exactly when
  the scanner would yield all its records (none oversized, none too deep);
* ``head_lines_fingerprint`` fingerprints from bytes a tail already holds;
* ``JsonLinesReader.read(handle=...)`` reads through an open descriptor.
"""

from __future__ import annotations

import copy
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
import record_strategies
from cloudtrail_files import record, records
from hypothesis import given, settings
from hypothesis import strategies as st

from trailwarden.agent.cloudtrail_file import (
    CloudTrailFileReader,
    Problem,
    Record,
    load_document,
    parse_whole_document,
)
from trailwarden.agent.envelope import FileWrapper, wrap_record
from trailwarden.agent.fingerprint import first_lines_fingerprint, head_lines_fingerprint
from trailwarden.agent.jsonlines import JsonLinesReader, Line

SAMPLES = Path(__file__).resolve().parents[2] / "agent" / "samples" / "cloudtrail"


def all_records(cloudtrail_dir: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    files = sorted(SAMPLES.rglob("*.json*")) + sorted(cloudtrail_dir.rglob("*.json"))
    for path in files:
        found.extend(
            item.obj for item in CloudTrailFileReader(str(path)) if isinstance(item, Record)
        )
    for path in sorted(cloudtrail_dir.rglob("*.log")):
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            obj = orjson.loads(line)
            if "eventVersion" in obj:
                found.append(obj)
    return found


EDGE_CASES: list[dict[str, Any]] = [
    record("e1", responseElements=None, requestParameters=None, source=None),
    record("e2", resources=[{"ARN": "arn:x", "type": None, "tags": [{"k": None}]}]),
    record("e3", requestParameters={"a": [None], "b": [], "c": [[1]], "d": {"e": None, "f": [2]}}),
    record("e4", requestParameters=["x", "y"], additionalEventData=True, tags="plain"),
    record("e5", requestParameters={"disableApiTermination": False, "l": [{"m": None}]}),
    record("e6", userIdentity={"sessionContext": {"attributes": {"mfa": None}, "x": [None]}}),
    # Keys the envelope itself writes, as None, a value, or in the record's order.
    record("e7", log_info=None, aws_account_id=None, source_ip_address=None),
    record("e8", log_info={"x": [1]}, aws_account_id="999", source="elsewhere"),
    record("e9", sourceIPAddress="10.1.2.3", source_ip_address="keep?", tags=["t"]),
    record("e10", sourceIPAddress="010.1.2.3", responseElements={"role": "arn:aws:iam::1:role/r"}),
]


def test_wrapping_in_place_gives_the_same_bytes(cloudtrail_dir: Path) -> None:
    corpus = all_records(cloudtrail_dir) + EDGE_CASES
    assert len(corpus) > 300
    for original in corpus:
        expected = wrap_record(original, log_file="k", bucket="b", account_id=None)
        owned = copy.deepcopy(original)
        assert wrap_record(owned, log_file="k", bucket="b", account_id=None, owned=True) == expected
        wrapper = FileWrapper(log_file="k", bucket="b", account_id=None)
        assert wrapper.wrap_owned(copy.deepcopy(original)) == expected
        assert wrapper.wrap_owned(copy.deepcopy(original)) == expected  # shared log_info intact
    untouched = copy.deepcopy(EDGE_CASES[0])
    wrap_record(untouched, log_file="k", bucket="b", account_id="1")
    assert untouched == EDGE_CASES[0]  # not owned: left as it was


@settings(max_examples=400, deadline=None)
@given(
    record_strategies.records(max_keys=10),
    st.sampled_from(["123456789012", None]),
    st.sampled_from(["10.0.0.1", "ec2.amazonaws.com", "010.0.0.1"]),
)
def test_wrapping_in_place_matches_the_general_path_for_any_record(
    drawn: dict[str, Any], account_id: str | None, ip: str
) -> None:
    for original in (drawn, {**drawn, "sourceIPAddress": ip}):
        expected = wrap_record(original, log_file="k", bucket="b", account_id=account_id)
        owned = copy.deepcopy(original)
        wrapper = FileWrapper(log_file="k", bucket="b", account_id=account_id)
        assert wrapper.wrap_owned(owned) == expected
        owned = copy.deepcopy(original)
        assert (
            wrap_record(owned, log_file="k", bucket="b", account_id=account_id, owned=True)
            == expected
        )


def items(reader: CloudTrailFileReader) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for item in reader:
        if isinstance(item, Record):
            out.append(("record", (item.index, item.raw)))
        else:
            assert isinstance(item, Problem)
            out.append(("problem", (item.kind, item.index, item.offset)))
    return out


DOCUMENTS = {
    "plain": orjson.dumps({"Records": records("p", 30)}),
    "bare": orjson.dumps(records("b", 5)),
    "pretty": orjson.dumps({"Records": records("q", 4)}, option=orjson.OPT_INDENT_2),
    "truncated": orjson.dumps({"Records": records("t", 20)})[:-900],
    "digest": b'{"awsAccountId":"1","digestStartTime":"x","logFiles":[]}',
    "bad record": orjson.dumps({"Records": records("r", 3)}).replace(b'"r-000001"', b"r-000001", 1),
    "empty": b"",
}


@pytest.mark.parametrize("name", list(DOCUMENTS))
@pytest.mark.parametrize("start", [0, 2])
def test_a_document_in_memory_reads_like_the_file(tmp_path: Path, name: str, start: int) -> None:
    document = DOCUMENTS[name]
    path = tmp_path / "x.json.gz"
    path.write_bytes(gzip.compress(document))
    from_file = CloudTrailFileReader(
        str(path), start_index=start, max_record_bytes=2000, chunk_bytes=700
    )
    from_memory = CloudTrailFileReader(
        str(path),
        start_index=start,
        max_record_bytes=2000,
        chunk_bytes=700,
        document=load_document(str(path), 1 << 20),
    )
    assert items(from_memory) == items(from_file)
    assert from_memory.next_index == from_file.next_index


def scanned(document: bytes, limit: int) -> list[Record | Problem]:
    return list(CloudTrailFileReader("doc", max_record_bytes=limit, document=document))


def test_whole_parse_refuses_exactly_the_documents_with_an_oversized_record() -> None:
    recs = records("w", 60)
    recs[37]["requestParameters"] = {"blob": "x" * 6000}
    recs[52]["requestParameters"] = {"blob": "y" * 3000}
    document = orjson.dumps({"Records": recs})
    big = len(orjson.dumps(recs[37]))
    # Around the largest record's size, and limits the document exceeds (the
    # size check runs) or not (no record can exceed it).
    for limit in (big - 1, big, big + 1, len(document) - 1, len(document)):
        whole = parse_whole_document(document, max_record_bytes=limit)
        items = scanned(document, limit)
        if limit < big:
            assert whole is None
            assert [i.index for i in items if isinstance(i, Problem)] == [37]
        else:
            assert whole is not None
            assert whole == [i.obj for i in items if isinstance(i, Record)] == recs
    # Several oversized records, the last one alone at the end.
    recs[59]["requestParameters"] = {"blob": "z" * 7000}
    document = orjson.dumps(recs)
    assert parse_whole_document(document, max_record_bytes=big) is None
    assert parse_whole_document(document, max_record_bytes=len(document)) == recs


def test_whole_parse_leaves_records_too_deep_to_write_to_the_scanner() -> None:
    deep: Any = "leaf"
    for _ in range(300):  # orjson reads 1024 levels but writes only 254
        deep = {"d": deep}
    recs = [*records("d", 3), record("deep", requestParameters=deep)]
    document = orjson.dumps({"Records": recs[:3]})[:-2] + b"," + _nested_text(recs[3]) + b"]}"
    assert parse_whole_document(document, max_record_bytes=len(document) // 2) is None
    problems = [i for i in scanned(document, len(document) // 2) if isinstance(i, Problem)]
    assert [p.index for p in problems] == [3]


def _nested_text(value: Any) -> bytes:
    """JSON text deeper than orjson.dumps accepts to write."""
    if isinstance(value, dict):
        inner = b",".join(orjson.dumps(k) + b":" + _nested_text(v) for k, v in value.items())
        return b"{" + inner + b"}"
    return orjson.dumps(value)


def test_load_document_refuses_what_must_be_streamed(tmp_path: Path) -> None:
    body = orjson.dumps({"Records": records("L", 50)})
    gz = tmp_path / "a.json.gz"
    gz.write_bytes(gzip.compress(body))
    plain = tmp_path / "a.json"
    plain.write_bytes(body)
    assert load_document(str(gz), len(body)) == body
    assert load_document(str(plain), len(body)) == body
    assert load_document(str(gz), len(body) - 1) is None  # too large
    assert load_document(str(plain), len(body) - 1) is None
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gz.read_bytes()[:-20])
    assert load_document(str(cut), 1 << 20) is None  # truncated: the reader says why
    two = tmp_path / "two.json.gz"
    two.write_bytes(gzip.compress(body[:100]) + gzip.compress(body[100:]))
    assert load_document(str(two), 1 << 20) is None  # several members: streamed
    assert load_document(str(tmp_path / "missing.json.gz"), 100) is None


def test_head_fingerprint_matches_the_path_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    for content in (b"", b"partial", b'{"a":1}\n{"b":2}\n', b"x" * 9000):
        path.write_bytes(content)
        assert head_lines_fingerprint(content) == first_lines_fingerprint(path)


def test_lines_read_through_a_descriptor_after_a_rename(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"n":1}\n')
    with path.open("rb") as handle:
        reader = JsonLinesReader(str(path))
        assert [i.raw for i in reader.read(handle=handle) if isinstance(i, Line)] == [b'{"n":1}']
        path.rename(tmp_path / "x.jsonl.1")
        with (tmp_path / "x.jsonl.1").open("ab") as writer:
            writer.write(b'{"n":2}\n')
        assert [i.raw for i in reader.read(handle=handle) if isinstance(i, Line)] == [b'{"n":2}']
        assert not handle.closed
