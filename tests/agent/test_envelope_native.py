"""The C envelope (``agent/_envelope.c``) gives exactly what the Python path gives.

``FileWrapper.wrap_document`` wraps a whole document's records from its bytes;
the reference is the tailer's Python path over the same document: the
scanner's records (or ``parse_whole_document``'s, the same ones), each through
``FileWrapper.wrap_owned``. Checked over the shared corpus, over generated
records written as JSON text in many ways (escapes, whitespace, duplicate
keys), over random damage to real documents, and case by case for what the C
side hands back to Python (a record, or the whole document).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
import record_strategies
from hypothesis import given, settings
from hypothesis import strategies as st
from test_envelope import corpus_records

from trailwarden.agent import envelope
from trailwarden.agent.cloudtrail_file import CloudTrailFileReader, Record, parse_whole_document
from trailwarden.agent.envelope import FileWrapper

if os.environ.get("TRAILWARDEN_PURE_PYTHON"):
    pytest.skip("TRAILWARDEN_PURE_PYTHON: the C envelope is not built", allow_module_level=True)
assert envelope._native is not None, "the C envelope is not built: run `make native`"
native = envelope._native

LIMIT = 1 << 20
KEY = "AWSLogs/111122223333/CloudTrail/us-east-2/2024/05/01/a.json.gz"


def wrapper(account: str | None = "111122223333") -> FileWrapper:
    return FileWrapper(log_file=KEY, bucket="trail-bucket", account_id=account)


def reference(document: bytes, account: str | None, start: int = 0, limit: int = LIMIT) -> Any:
    """The Python path's messages, or the first problem its scanner reports."""
    items = list(CloudTrailFileReader("doc.json", max_record_bytes=limit, document=document))
    problems = [i for i in items if not isinstance(i, Record)]
    if problems:
        return problems[0]
    wrap = wrapper(account).wrap_owned
    try:
        return [wrap(i.obj).decode() for i in items[start:] if isinstance(i, Record)]
    except envelope.EnvelopeError as exc:
        return exc


def assert_same(document: bytes, account: str | None, start: int = 0, limit: int = LIMIT) -> Any:
    got = wrapper(account).wrap_document(document, start=start, max_record_bytes=limit)
    expected = reference(document, account, start, limit)
    if got is not None:
        assert got == expected, document[:400]
    return got


# -- the corpus -----------------------------------------------------------------------


@pytest.mark.parametrize("account", ["111122223333", None])
def test_every_shared_record_wraps_as_in_python_and_none_falls_back(
    cloudtrail_dir: Path, account: str | None
) -> None:
    records = [r for _, r in corpus_records(cloudtrail_dir)]
    assert len(records) > 300
    wrap = wrapper(account)
    for document in (
        orjson.dumps({"Records": records}),
        orjson.dumps(records, option=orjson.OPT_INDENT_2),
    ):
        raw = native.wrap_records(document, wrap._head, wrap._account_json, LIMIT, 0)
        assert raw is not None
        # Real records never need Python: that is the point of the C path.
        assert all(type(item) is str for item in raw)
        assert raw == reference(document, account)


def test_records_before_start_are_checked_but_not_returned(cloudtrail_dir: Path) -> None:
    records = [r for _, r in corpus_records(cloudtrail_dir)][:10]
    document = orjson.dumps({"Records": records})
    assert assert_same(document, "111122223333", start=7) is not None
    assert wrapper().wrap_document(document, start=10, max_record_bytes=LIMIT) == []
    broken = document[:-2] + b",{]}"  # a broken record after start: the document falls back
    assert wrapper().wrap_document(broken, start=0, max_record_bytes=LIMIT) is None


# -- generated records, written as JSON text in many ways -----------------------------


def rewrite(text: bytes, rnd: random.Random) -> bytes:
    """The same JSON value spelled differently: \\u escapes (surrogate pairs
    too) and short escapes inside strings, whitespace between tokens."""
    out: list[str] = []
    in_string = False
    escaped = 0  # characters of an escape sequence still to copy
    for ch in text.decode():
        if in_string:
            if escaped:
                escaped = 4 if escaped == 5 and ch == "u" else escaped - 1 if escaped < 5 else 0
            elif ch == "\\":
                escaped = 5
            elif ch == '"':
                in_string = False
            elif rnd.random() < 0.3:
                code = ord(ch)
                if ch == "/":
                    out.append("\\/")
                elif code >= 0x10000:
                    code -= 0x10000
                    out.append(f"\\u{0xD800 + (code >> 10):04X}\\u{0xDC00 + (code & 0x3FF):04x}")
                else:
                    out.append(f"\\u{code:04x}")
                continue
        elif ch == '"':
            in_string = True
        out.append(ch)
        if not in_string and ch in ",:{[" and rnd.random() < 0.3:
            out.append(rnd.choice([" ", "\n", "\t", "\r\n  "]))
    return "".join(out).encode()


def with_duplicate(text: bytes, record: dict[str, Any], rnd: random.Random) -> bytes:
    """A record's text with one top-level key written again at the end."""
    if not record:
        return text
    key = rnd.choice(list(record))
    return text[:-1] + b"," + orjson.dumps(key) + b":" + orjson.dumps(rnd.choice([None, 1, "x"])) + b"}"


TEXT_STRINGS = st.text(
    alphabet=st.sampled_from(['a', 'é', '\u2028', '\n', '\x01', '"', '\\', '/', '\U0001f600', '\x7f',
                              '\x00', '.', '1']),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(record_strategies.records(max_keys=8), min_size=1, max_size=3),
    st.sampled_from(["111122223333", None]),
    st.randoms(use_true_random=False),
    st.integers(0, 3),
)
def test_generated_records_wrap_as_in_python(
    records: list[dict[str, Any]], account: str | None, rnd: random.Random, start: int
) -> None:
    texts = []
    for r in records:
        text = orjson.dumps(r)
        if rnd.random() < 0.2:
            text = with_duplicate(text, r, rnd)
        texts.append(text)
    document = b'{"Records":[' + b",".join(texts) + b"]}"
    if rnd.random() < 0.5:
        document = rewrite(document, rnd)
    assert_same(document, account, start=start)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["sourceIPAddress", "recipientAccountId", "tags", "requestParameters",
                         "responseElements", "additionalEventData", "source", "eventName"]),
        st.one_of(TEXT_STRINGS, st.sampled_from(["1.2.3.4", "01.2.3.4", "1.2.3.256", "10.0.0.1 ",
                                                 "255.255.255.255", "1.2.3", ""])),
    ),
    st.sampled_from(["111122223333", None]),
    st.randoms(use_true_random=False),
)
def test_strings_that_need_escapes_and_the_ip_rule(
    record: dict[str, Any], account: str | None, rnd: random.Random
) -> None:
    got = assert_same(rewrite(orjson.dumps([record]), rnd), account)
    assert got is not None


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        (rb'"\\"', "\\"),
        (rb'"\/"', "/"),
        (rb'"\"\b\f\n\r\t"', '"\b\f\n\r\t'),
        (rb'"\u0041\u00e9\u20AC\ud83D\uDE00"', "A\u00e9\u20ac\U0001f600"),
        (rb'"\u0000\u001f\u007f\u2028"', "\x00\x1f\x7f\u2028"),
        (rb'"\u00fF\uFEFF\uABCD\uabcd"', "\u00ff\ufeff\uabcd\uabcd"),
        ("\"\u00e9\U0001f600\"".encode(), "\u00e9\U0001f600"),
    ],
)
def test_every_json_escape_reads_as_its_character(written: bytes, meant: str) -> None:
    document = b'[{"k":' + written + b"," + written + b':"v"}]'
    got = assert_same(document, "1")
    assert got is not None
    assert orjson.loads(got[0])["aws"]["k"] == meant
    assert orjson.loads(got[0])["aws"][meant] == "v"


SPECIAL_KEYS = ["source", "tags", "requestParameters", "responseElements", "additionalEventData",
                "sourceIPAddress", "recipientAccountId", "userIdentity", "eventName"]
SPECIAL_VALUES = [None, True, False, 0, -7, "", "s", "1.2.3.4", {}, {"disableApiTermination": True},
                  {"disableApiTermination": None}, {"role": "arn:aws:iam::1:role/r"},
                  {"role": {"arn": "x"}}, {"accountId": "999"}, {"accountId": ""}, [], ["x"],
                  [None], [1, 2], [{"a": None}]]


@pytest.mark.parametrize("account", ["111122223333", None])
def test_every_special_member_with_every_kind_of_value(account: str | None) -> None:
    """Each member the wodle treats specially, each kind of value, first,
    between others and last: the exact bytes Python writes."""
    for key in SPECIAL_KEYS:
        for value in SPECIAL_VALUES:
            member = orjson.dumps({key: value})[1:-1]
            for before, after in ((b"", b',"z":1'), (b'"a":"x",', b',"z":null'), (b'"a":2,', b"")):
                document = b"[{" + before + member + after + b"}]"
                assert_same(document, account)
                # Inside another member nothing is special.
                assert_same(b'[{"n":{' + member + b"}}]", account)


# -- damage to real documents -----------------------------------------------------------

DAMAGE = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"null", b"1", b"-", b".", b"e",
          b"\\u", b"d8", b"\xc3", b"\xa9", b"\xed\xa0\x80", b"\xff", b" ", b"\n", b"\x01",
          b"[1]", b'"source":', b'"tags":', b'"a":null,', b'"role":', b"true", b"\xef\xbb\xbf"]


def test_damaged_documents_fall_back_or_wrap_as_in_python(cloudtrail_dir: Path) -> None:
    records = [r for _, r in corpus_records(cloudtrail_dir)]
    rnd = random.Random(20261129)
    outcomes = {"fell back": 0, "wrapped": 0}
    for _ in range(1500):
        document = bytearray(orjson.dumps({"Records": rnd.sample(records, rnd.randint(1, 3))}))
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randrange(len(document))
            roll = rnd.random()
            if roll < 0.3:
                del document[at : at + rnd.randint(1, 3)]
            elif roll < 0.8:
                document[at:at] = rnd.choice(DAMAGE)
            else:
                document[at] = rnd.randrange(256)
        got = assert_same(bytes(document), rnd.choice(["111122223333", None]))
        outcomes["fell back" if got is None else "wrapped"] += 1
    assert min(outcomes.values()) > 100, outcomes  # both outcomes exercised


# -- what the C side leaves to Python ----------------------------------------------------

PLAIN = {"eventID": "e1", "eventName": "RunInstances", "sourceIPAddress": "1.2.3.4"}


@pytest.mark.parametrize(
    "extra",
    [
        b'"n":1.5',  # floats: orjson's spelling
        b'"n":-0',  # orjson reads the integer 0
        b'"n":12345678901234567890',  # beyond int64
        b'"eventID":"again"',  # a duplicate key
        b'"log_info":{"x":1}',  # keys the envelope sets itself
        b'"aws_account_id":"1"',
        b'"source_ip_address":"1.2.3.4"',
        b'"tags":["only"]',  # collapses, then gets wrapped
        b'"requestParameters":[1]',
        b'"requestParameters":1e3',
        b'"sourceIPAddress":["5.6.7.8"]',
    ],
)
def test_records_python_must_wrap_come_back_as_written(extra: bytes) -> None:
    record = orjson.dumps(PLAIN)[:-1] + b"," + extra + b"}"
    document = b'{"Records":[' + orjson.dumps(PLAIN) + b"," + record + b"]}"
    wrap = wrapper()
    raw = native.wrap_records(document, wrap._head, wrap._account_json, LIMIT, 0)
    assert raw is not None
    assert type(raw[0]) is str and raw[1] == record
    assert assert_same(document, "111122223333") is not None


def test_the_account_fallback_with_a_list_is_left_to_python() -> None:
    record = b'{"userIdentity":[{"accountId":"1"}],"eventID":"e"}'
    raw = native.wrap_records(b"[" + record + b"]", wrapper(None)._head, None, LIMIT, 0)
    assert raw == [record]
    assert assert_same(b"[" + record + b"]", None) is not None


def nested(depth: int) -> bytes:
    return b'{"Records":[' + b'{"a":' * depth + b"1" + b"}" * depth + b"]}"


@pytest.mark.parametrize(
    "document",
    [
        b'{"Records":[{"a":1}]',  # truncated
        b'{"Records":[{"a":"\\ud800"}]}',  # a lone surrogate
        b'{"Records":[{"a":"\xed\xa0\x80"}]}',  # a surrogate in UTF-8
        b'{"Records":[{"a":"\xc0\xaf"}]}',  # overlong UTF-8
        b'{"Records":[{"a":"x\x01"}]}',  # a raw control character
        b'{"Records":[{"a":01}]}',
        b'{"Records":[{"a":1,}]}',
        b'{"Records":[{"a":NaN}]}',
        b'{"Records":[{"a":1e999}]}',  # JSON's grammar, but orjson refuses infinity
        b'\xef\xbb\xbf{"Records":[{"a":1}]}',  # a BOM
        b'{"Records":[{"a":1}]} x',
        b'{"Records":[{"a":1}],"Records":[]}',
        b'{"Records":[{"a":1},2]}',  # a record that is not an object
        b'{"Records":{"a":1}}',
        b'{"NotRecords":[]}',
        b'"Records"',
        b"",
        nested(70),  # deeper than the C side goes
    ],
)
def test_documents_python_must_read_fall_back_whole(document: bytes) -> None:
    assert wrapper().wrap_document(document, start=0, max_record_bytes=LIMIT) is None


def test_a_record_longer_than_the_limit_as_written_falls_back_whole() -> None:
    small = orjson.dumps({"a": "x" * 100})
    large = orjson.dumps({"a": "x" * 300})
    document = b"[" + small + b"," + large + b"]"
    assert wrapper().wrap_document(document, start=0, max_record_bytes=200) is None
    assert assert_same(document, "1", limit=len(large)) is not None
    # The scanner (what runs instead) quarantines exactly that record.
    read = CloudTrailFileReader("d.json", max_record_bytes=200, document=document)
    assert [type(item).__name__ for item in read] == ["Record", "Problem"]


def test_depth_the_c_side_takes_matches_python() -> None:
    assert assert_same(nested(60), "1") is not None


def test_many_keys_in_one_object_stay_linear_and_exact() -> None:
    record = {f"k{i}": i for i in range(50_000)}
    record["k7"] = None
    document = orjson.dumps([record, {"requestParameters": record}])
    got = assert_same(document, None)
    assert got is not None and len(got) == 2


def test_head_must_end_with_the_payloads_comma() -> None:
    with pytest.raises(ValueError, match="comma"):
        native.wrap_records(b"[]", b"{", None, LIMIT, 0)
    with pytest.raises(TypeError):
        native.wrap_records(b"[]", b",", "123", LIMIT, 0)


def test_parse_whole_document_agrees_on_what_the_c_side_takes(cloudtrail_dir: Path) -> None:
    """The tailer's other fast path sees the same records (so either may run)."""
    records = [r for _, r in corpus_records(cloudtrail_dir)]
    document = orjson.dumps({"Records": records})
    whole = parse_whole_document(document, max_record_bytes=LIMIT)
    assert whole is not None
    wrap = wrapper().wrap_owned
    assert [wrap(r).decode() for r in whole] == wrapper().wrap_document(
        document, start=0, max_record_bytes=LIMIT
    )
