"""JSON decoder plugin: stringification, statics, the cap, laziness and exactness.

``reference_fields`` below is a plain recursive transcription of analysisd's
``readJSON``/``fillData`` over Python's own ``json`` parse (duplicates kept via
``object_pairs_hook``); the lazy block must agree with it on every question.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailwarden.rules import json_decoder
from trailwarden.rules.cjson import print_plain
from trailwarden.rules.event import MAX_DYNAMIC_FIELDS, Event, ascii_lower
from trailwarden.rules.json_decoder import (
    CJSON_NESTING_LIMIT,
    FlatJsonBlock,
    JsonFieldBlock,
    decode_json,
    field_text,
    key_index,
    number_text,
    parse_cjson,
    print_json,
    print_number,
)

STATIC = {
    "srcip", "dstip", "dstport", "srcport", "protocol", "action", "srcuser",
    "dstuser", "id", "status", "url", "data", "extra_data", "systemname",
}  # fmt: skip


class Pairs(list[tuple[str, Any]]):
    pass


def _c_number(v: float) -> str:
    vi = 2**31 - 1 if v >= 2**31 - 1 else -(2**31) if v <= -(2**31) else int(v)
    return str(vi) if vi == v else f"{v:f}"[:63]


def _ref_value(v: Any, null_string: bool, csv: bool) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return _c_number(float(v))
    if v is None:
        return "null" if null_string else None
    if isinstance(v, list):
        if not csv:
            return print_json(_to_cobject(v), formatted=True)
        out = ""
        for i, item in enumerate(v):
            if isinstance(item, list | Pairs):
                continue
            out += _ref_value(item, True, False) or ""
            if i < len(v) - 1:
                out += ","
        return out or None
    raise AssertionError(v)


def _to_cobject(v: Any) -> Any:
    from trailwarden.rules.json_decoder import CObject

    if isinstance(v, Pairs):
        return CObject((k, _to_cobject(x)) for k, x in v)
    if isinstance(v, list):
        return [_to_cobject(x) for x in v]
    return v


def reference_fields(
    text: str, *, null_string: bool = True, csv: bool = False, room: int = MAX_DYNAMIC_FIELDS
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(dynamic fields, static slots) the way readJSON + fillData make them."""
    # analysisd ignores what follows the first complete value
    doc, _ = json.JSONDecoder(object_pairs_hook=Pairs).raw_decode(text)
    fields: list[tuple[str, str]] = []
    statics: dict[str, str] = {}

    def walk(members: Pairs, parent: str | None) -> None:
        for key, value in members:
            name = key if parent is None else f"{parent}.{key}"
            if isinstance(value, Pairs):
                walk(value, name)
                continue
            text_value = _ref_value(value, null_string, csv)
            if text_value is None:
                continue
            if name in STATIC:
                statics[name] = text_value
            elif name == "user" and "dstuser" not in statics:
                statics["dstuser"] = text_value
            elif len(fields) < room:
                fields.append((name, text_value))

    if isinstance(doc, Pairs):
        walk(doc, None)
    return fields, statics


def reference_find(fields: list[tuple[str, str]], key: str) -> str | None:
    lowered = ascii_lower(key)
    return next((v for k, v in fields if ascii_lower(k) == lowered), None)


def decoded(text: str, **modes: str) -> Event:
    event = Event(text, "test", 0.0)
    decode_json(event, text, **modes)
    return event


def assert_matches_reference(text: str, probe_keys: list[str], **modes: str) -> Event:
    event = decoded(text, **modes)
    fields, statics = reference_fields(
        text,
        null_string=modes.get("null_mode", "string") != "discard",
        csv=modes.get("array_mode", "array") == "csv",
    )
    assert event.field_count == len(fields)
    for key in probe_keys:
        assert event.find_field(key) == reference_find(fields, key), key
    assert list(event.fields()) == fields
    for name, value in statics.items():
        assert getattr(event, name) == value
    return event


# -- stringification ------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("5", "5"),
        ("-7", "-7"),
        ("8.0", "8"),
        ("2.5", "2.500000"),
        ("-0.0", "0"),
        ("2147483647", "2147483647"),
        ("2147483648", "2147483648.000000"),  # INT_MAX + 1: valueint saturates
        ("-2147483649", "-2147483649.000000"),
        ("123456789012", "123456789012.000000"),
        ("1e300", f"{1e300:f}"[:63]),  # value_char[64] cuts the text
        ("1.5e3", "1500"),
        ("true", "true"),
        ("false", "false"),
        ('"text"', "text"),
        ('""', ""),
    ],
)
def test_scalar_values_become_c_strings(literal: str, expected: str) -> None:
    event = decoded('{"v": ' + literal + "}")
    assert event.find_field("v") == expected


def test_null_is_a_string_by_default_and_dropped_with_discard() -> None:
    assert decoded('{"n": null, "x": 1}').find_field("n") == "null"
    event = decoded('{"n": null, "x": 1}', null_mode="discard")
    assert event.find_field("n") is None
    assert event.field_count == 1


ARRAY_CASES = [
    ('["a", "b", 1, true, null]', '["a", "b", 1, true, null]', "a,b,1,true,null"),
    (
        '[{"instanceId":"i-0a"},{"instanceId":"i-0b"}]',
        '[{\n\t\t"instanceId":\t"i-0a"\n\t}, {\n\t\t"instanceId":\t"i-0b"\n\t}]',
        None,
    ),
    # csv: the object is skipped, the comma before it is kept
    ('["a", {"k": 1}]', '["a", {\n\t\t"k":\t1\n\t}]', "a,"),
    ('[{"k": 1}, "a"]', '[{\n\t\t"k":\t1\n\t}, "a"]', "a"),
    ("[[1, [2]], 3]", "[[1, [2]], 3]", "3"),
    ("[]", "[]", None),
    ("[{}]", "[{\n\t}]", None),
    ('["", ""]', '["", ""]', ","),
    (
        "[2.5, 1e20, 0.1, 5, -0.0]",
        "[2.5, 1e+20, 0.1, 5, 0]",
        "2.500000,100000000000000000000.000000,0.100000,5,0",
    ),
    (
        '["tab\\there", "\\u0001", "é€😀", "q\\"b\\\\"]',
        '["tab\\there", "\\u0001", "é€😀", "q\\"b\\\\"]',
        'tab\there,\x01,é€😀,q"b\\',
    ),
]


@pytest.mark.parametrize(("array", "formatted", "csv"), ARRAY_CASES)
def test_arrays_in_both_modes(array: str, formatted: str, csv: str | None) -> None:
    text = '{"a": ' + array + "}"
    assert decoded(text).find_field("a") == formatted
    assert decoded(text, array_mode="csv").find_field("a") == csv


def test_empty_object_makes_no_field_and_nested_objects_are_dotted() -> None:
    event = decoded('{"e": {}, "o": {"p": {"q": "deep"}}, "": {"x": 1}}')
    assert list(event.fields()) == [("o.p.q", "deep"), (".x", "1")]


def test_print_number_matches_cjson() -> None:
    assert print_number(0.30000000000000004) == "0.3"  # %1.15g reads back within epsilon
    assert print_number(1 / 3) == "0.33333333333333331"  # off by more than epsilon: 17 digits
    assert print_number(2**53 + 1.0) == "9.00719925474099e+15"
    assert print_number(123456789.123456789) == "123456789.12345679"
    assert print_number(1.0000000000000002) == "1"
    assert print_number(float("nan")) == "null"
    assert print_number(1e-7) == "1e-07"
    assert number_text(math.inf) == "inf"


def test_field_text_objects_make_no_field() -> None:
    assert field_text({"a": 1}, True, False) is None


# -- statics ----------------------------------------------------------------------


def test_top_level_static_names_fill_slots() -> None:
    text = json.dumps(
        {
            "srcip": "1.2.3.4", "dstport": 22, "action": "login", "systemname": "sys",
            "system_name": "dyn", "SRCIP": "case", "nested": {"srcip": "n"}, "extra_data": "e",
        }
    )  # fmt: skip
    event = assert_matches_reference(text, ["srcip", "system_name", "nested.srcip", "SRCIP"])
    assert (event.srcip, event.dstport, event.action) == ("1.2.3.4", "22", "login")
    assert (event.systemname, event.extra_data) == ("sys", "e")
    assert event.find_field("srcip") == "case"  # the static one is no field; "SRCIP" is
    assert [k for k, _ in event.fields()] == ["system_name", "SRCIP", "nested.srcip"]


def test_user_goes_to_dstuser_only_while_it_is_unset() -> None:
    event = decoded('{"user": "first", "dstuser": "second", "x": 1}')
    assert event.dstuser == "second"
    assert event.find_field("user") is None
    event = decoded('{"dstuser": "d", "user": "u"}')
    assert event.dstuser == "d"
    assert list(event.fields()) == [("user", "u")]
    # a duplicate: the first fills the slot, the second is a dynamic field
    event = decoded('{"user": "a", "user": "b"}')
    assert event.dstuser == "a"
    assert list(event.fields()) == [("user", "b")]


def test_static_fields_do_not_use_room() -> None:
    members = {f"f{i}": i for i in range(MAX_DYNAMIC_FIELDS)}
    event = decoded(json.dumps({"srcip": "1.1.1.1", **members}))
    assert event.field_count == MAX_DYNAMIC_FIELDS
    assert event.srcip == "1.1.1.1"
    assert event.find_field(f"f{MAX_DYNAMIC_FIELDS - 1}") == str(MAX_DYNAMIC_FIELDS - 1)


# -- parsing like cJSON -------------------------------------------------------------


def test_text_after_the_first_value_is_ignored() -> None:
    event = decoded('{"a": "x"} trailing {"b": 1}')
    assert list(event.fields()) == [("a", "x")]


@pytest.mark.parametrize("text", ['{"a": ', '{"a" 1}', "{'a': 1}", '{"a": "\\ud800"}', ""])
def test_a_parse_failure_leaves_no_fields(text: str) -> None:
    event = decoded(text)
    assert event.field_count == 0
    assert event.find_field("a") is None


def test_top_level_array_or_scalar_has_no_fields() -> None:
    assert decoded("[1, 2]").field_count == 0
    assert decoded('"a"').field_count == 0


def test_duplicate_keys_are_all_fields_and_the_first_wins() -> None:
    text = '{"a": "1", "b": {"c": 1}, "a": "2", "b": {"c": 2, "d": 3}}'
    event = decoded(text)
    assert isinstance(event._blocks[0], FlatJsonBlock)
    assert list(event.fields()) == [
        ("a", "1"),
        ("b.c", "1"),
        ("a", "2"),
        ("b.c", "2"),
        ("b.d", "3"),
    ]
    assert event.find_field("b.c") == "1"
    assert event.field_count == 5


def test_duplicates_inside_arrays_are_printed_twice() -> None:
    event = decoded('{"a": [{"k": 1, "k": 2}]}')
    assert event.find_field("a") == '[{\n\t\t"k":\t1,\n\t\t"k":\t2\n\t}]'


def test_nul_ends_a_c_string() -> None:
    event = decoded('{"a": "left\\u0000right", "k\\u0000x": "v", "b": "\\uZZZZtail"}')
    assert list(event.fields()) == [("a", "left"), ("k", "v"), ("b", "")]


def test_what_only_cjson_accepts_still_decodes() -> None:
    # raw control characters, leading zeros, "1.", overflow to infinity, vertical tab as space
    event = decoded('{"t": "a\tb", "z": 007, "d": 1., "big": 1e400,\x0b"s": 1}')
    assert list(event.fields()) == [
        ("t", "a\tb"),
        ("z", "7"),
        ("d", "1"),
        ("big", "inf"),
        ("s", "1"),
    ]


def test_nesting_limit() -> None:
    ok = "[" * CJSON_NESTING_LIMIT + "]" * CJSON_NESTING_LIMIT
    too_deep = "[" * (CJSON_NESTING_LIMIT + 1) + "]" * (CJSON_NESTING_LIMIT + 1)
    assert parse_cjson(ok)[0]
    assert not parse_cjson(too_deep)[0]
    inside = '{"a": ' + "[" * (CJSON_NESTING_LIMIT - 1) + "]" * (CJSON_NESTING_LIMIT - 1) + "}"
    assert decoded(inside).field_count == 1
    deeper = '{"a": ' + "[" * CJSON_NESTING_LIMIT + "]" * CJSON_NESTING_LIMIT + "}"
    assert decoded(deeper).field_count == 0


# -- the cap --------------------------------------------------------------------------


def test_the_cap_keeps_the_first_fields_in_document_order() -> None:
    members = {f"k{i}": {"v": i} for i in range(300)}
    members["k5"] = {"v": 5, "x": "early"}
    text = json.dumps({"late": {"x": "no"}, **members})
    event = assert_matches_reference(text, ["k0.v", "k254.v", "k255.v", "k299.v", "late.x"])
    assert event.field_count == MAX_DYNAMIC_FIELDS
    assert event.find_field("k299.v") is None


def test_the_cap_is_shared_with_fields_already_on_the_event() -> None:
    event = Event("x", "test", 0.0)
    for i in range(250):
        event.add_field(f"pre{i}", "v")
    decode_json(event, json.dumps({f"j{i}": i for i in range(10)}))
    assert event.field_count == MAX_DYNAMIC_FIELDS
    assert event.find_field("j5") == "5"
    assert event.find_field("j6") is None


# -- laziness and exactness --------------------------------------------------------------


def _cloudtrail_envelope() -> str:
    record = {
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/x", "userName": "x"},
        "eventTime": "2024-01-01T00:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "CreateUser",
        "requestParameters": {"userName": "y", "tags": [{"key": "a", "value": "b"}]},
        "responseElements": {"user": {"arn": "arn:aws:iam::1:user/y", "createDate": "x"}},
        "source": "cloudtrail",
    }
    return json.dumps({"integration": "aws", "aws": record})


def test_find_walks_the_path_without_flattening() -> None:
    event = decoded(_cloudtrail_envelope())
    block = event._blocks[0]
    assert isinstance(block, JsonFieldBlock)
    assert event.find_field("aws.eventName") == "CreateUser"
    assert event.find_field("AWS.USERIDENTITY.type") == "IAMUser"
    assert event.find_field("aws.requestParameters.tags") is not None
    assert event.find_field("aws.nothing.here") is None
    assert event.find_field("aws.userIdentity") is None  # an object is no field
    assert event.field_count == 13
    assert block.flattens == 0
    assert len(list(event.fields())) == 13
    assert block.flattens == 1


def test_dotted_keys_follow_document_order() -> None:
    text = '{"a": {"b.c": "inner-dotted"}, "a.b": {"c": "outer-dotted"}, "a.b.c": "flat"}'
    assert_matches_reference(text, ["a.b.c", "A.B.C", "a.b", "a"])
    text = '{"a.b": {"c": "dotted-first"}, "a": {"b": {"c": "plain"}}}'
    event = assert_matches_reference(text, ["a.b.c"])
    assert event.find_field("a.b.c") == "dotted-first"


def test_case_variant_keys_first_in_document_order_wins() -> None:
    text = '{"Name": {"x": null}, "name": {"X": "second"}, "NAME": {"x": "third"}}'
    event = assert_matches_reference(text, ["name.x", "NAME.X"], null_mode="discard")
    assert event.find_field("name.x") == "second"
    text = '{"Ümlaut": "a", "ümlaut": "b", "K": "c"}'
    assert_matches_reference(text, ["ümlaut", "Ümlaut", "k"])


def test_discarded_and_empty_members_are_skipped_by_find() -> None:
    text = '{"a": null, "A": [], "b": [{"k": 1}], "B": ["x"]}'
    assert_matches_reference(text, ["a", "b"], null_mode="discard", array_mode="csv")


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(alphabet='ab.:Cé\t"\\', max_size=6),
)
json_keys = st.sampled_from(["a", "A", "b", "a.b", "B.a", "srcip", "user", "dstuser", "", "x:y"])
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(st.tuples(json_keys, children), max_size=4).map(Pairs),
    ),
    max_leaves=30,
)


def _dump(v: Any, compact: bool = False) -> str:
    """JSON text of ``v``, repeated keys kept: spaced like Wazuh's wodle, or compact
    like the agent (where the text is exactly what orjson writes back)."""
    comma, colon = (",", ":") if compact else (", ", ": ")
    if isinstance(v, Pairs):
        members = (f"{json.dumps(k, ensure_ascii=False)}{colon}{_dump(x, compact)}" for k, x in v)
        return "{" + comma.join(members) + "}"
    if isinstance(v, list):
        return "[" + comma.join(_dump(x, compact) for x in v) + "]"
    return orjson.dumps(v).decode() if compact else json.dumps(v)


PROBES = ["a", "A.b", "a.b", "a.a.b", "b.a", "a.b.a", "srcip", "user", "", ".a", "x:y", "a.x:y"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(json_keys, json_values), max_size=6).map(Pairs),
    st.sampled_from(["string", "discard"]),
    st.sampled_from(["array", "csv"]),
)
def test_lazy_block_equals_eager_flattening(doc: Pairs, null_mode: str, array_mode: str) -> None:
    assert_matches_reference(_dump(doc), PROBES, null_mode=null_mode, array_mode=array_mode)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(json_keys, json_values), max_size=6).map(Pairs),
    st.sampled_from(["string", "discard"]),
    st.sampled_from(["array", "csv"]),
)
def test_lazy_block_equals_eager_flattening_on_compact_text(
    doc: Pairs, null_mode: str, array_mode: str
) -> None:
    text = _dump(doc, compact=True)
    event = assert_matches_reference(text, PROBES, null_mode=null_mode, array_mode=array_mode)
    for block in event._blocks:
        assert block.bound() >= block.count()


def test_every_real_cloudtrail_record_matches_eager_flattening(cloudtrail_dir: Path) -> None:
    records = list(_cloudtrail_records(cloudtrail_dir))
    assert len(records) > 300
    for record in records:
        text = json.dumps({"integration": "aws", "aws": {**record, "source": "cloudtrail"}})
        fields, _ = reference_fields(text)
        probes = [k for k, _ in fields[:: max(1, len(fields) // 8)]] + ["aws.errorCode"]
        event = assert_matches_reference(text, probes)
        assert event.find_field("aws.eventName") == record.get("eventName")


def test_every_json_log_of_the_wazuh_test_corpus_matches_eager_flattening(
    wazuh_ref: Path,
) -> None:
    checked = 0
    for path in sorted((wazuh_ref / "testing/tests").glob("*.ini")):
        for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
            name, _, value = line.partition("=")
            text = value.strip()
            if not name.strip().startswith("log ") or not text.startswith("{"):
                continue
            fields, _ = reference_fields(text)
            assert_matches_reference(text, [k for k, _ in fields[::3]] + ["no.such.key"])
            checked += 1
    assert checked > 800  # Windows, Office 365, GCP, Security Lake (trailing text) and more


def _cloudtrail_records(root: Path) -> Any:
    for path in sorted(root.rglob("*")):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            yield from data if isinstance(data, list) else data.get("Records", [])
        elif path.suffix == ".log":
            for line in path.read_text().splitlines():
                record = json.loads(line) if line.strip() else None
                if record and "eventName" in record:
                    yield record


def test_unknown_modes_are_the_loaders_bug() -> None:
    with pytest.raises(ValueError, match="json_null_field"):
        decode_json(Event("{}", "t", 0.0), "{}", null_mode="nothing")


# -- which tree is trusted ------------------------------------------------------------


def test_compact_and_spaced_texts_use_orjson_and_repeated_keys_do_not() -> None:
    record = {"a": {"b": "x:y", "c": [1, 2.5, None]}, "d": True, "e": "\u00e9\n"}
    for text in (orjson.dumps(record).decode(), json.dumps(record), json.dumps(record, indent=2)):
        event = assert_matches_reference(text, ["a.b", "a.c", "d", "e"])
        assert isinstance(event._blocks[0], JsonFieldBlock), text
    for text in ('{"a":1,"a":2}', '{"a": 1, "b": {"c": 1, "c": 2}}', '{"l":[{"k":1,"k":2}]}'):
        event = assert_matches_reference(text, ["a", "b.c", "l"])
        assert isinstance(event._blocks[0], FlatJsonBlock), text


def test_an_escaped_colon_cannot_hide_a_repeated_key() -> None:
    # The dropped member takes a ':' with it and the escape brings one back:
    # counting colons alone would trust orjson's tree, which lost "a": "1".
    text = '{"a": "1", "a": "2", "b": "\\u003a"}'
    event = assert_matches_reference(text, ["a", "b"])
    assert isinstance(event._blocks[0], FlatJsonBlock)
    assert event.find_field("a") == "1"


def test_text_after_the_first_value_is_ignored_after_non_ascii_text() -> None:
    event = decoded('{"é": "ü", "n": 1} {"x": 2}')
    assert list(event.fields()) == [("é", "ü"), ("n", "1")]
    assert isinstance(event._blocks[0], JsonFieldBlock)


def test_nested_past_what_orjson_writes_takes_the_exact_path() -> None:
    deep = '{"a": ' + "[" * 300 + '"x"' + "]" * 300 + ', "b": 1}'
    event = decoded(deep)
    assert isinstance(event._blocks[0], FlatJsonBlock)
    assert event.find_field("b") == "1"


# -- lazy counting ------------------------------------------------------------------------


def test_nothing_is_counted_until_asked_and_the_bound_holds(cloudtrail_dir: Path) -> None:
    for record in list(_cloudtrail_records(cloudtrail_dir))[:60]:
        text = orjson.dumps({"integration": "aws", "aws": record}).decode()
        event = decoded(text)
        block = event._blocks[0]
        assert isinstance(block, JsonFieldBlock)
        assert event.find_field("aws.eventName") == record["eventName"]
        assert not event.is_full()
        assert block._total is None  # the bound answered: no walk
        expected = len(reference_fields(text)[0])
        assert MAX_DYNAMIC_FIELDS >= block.bound() >= block.count() == expected
        assert event.field_count == expected


def test_bound_is_the_text_length_over_five_then_its_colons() -> None:
    members = {f"k{i}": "v" for i in range(10)}
    small = decoded(orjson.dumps(members).decode())._blocks[0]
    assert isinstance(small, JsonFieldBlock)
    assert small.bound() == len(orjson.dumps(members)) // 5
    spaced = decoded(json.dumps(members))._blocks[0]  # its colons were counted anyway
    assert spaced.bound() == 10
    wide = {f"key{i}": "a:b:c" for i in range(100)}  # 300 fields' worth of ':'
    block = decoded(orjson.dumps(wide).decode())._blocks[0]
    assert block.bound() == MAX_DYNAMIC_FIELDS
    assert block.count() == 100
    assert block.bound() == 100  # exact once counted


# -- key indexes --------------------------------------------------------------------------


def test_key_index_maps_ascii_lowered_names_or_refuses() -> None:
    assert key_index({"A": 1, "bC": 2}) == {"a": "A", "bc": "bC"}
    assert key_index({}) == {}
    assert key_index({"a.b": 1}) is None  # dotted: a path could end inside the key
    assert key_index({"Name": 1, "x": 2, "NAME": 3}) is None  # which one is first matters
    assert key_index({"É": 1, "é": 2}) == {"É": "É", "é": "é"}  # only ASCII folds


def test_key_indexes_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_decoder, "_INDEXES", {})
    for i in range(json_decoder._INDEX_KEEP_MAX + 10):
        key_index({f"k{i}": 1})
    assert 0 < len(json_decoder._INDEXES) <= json_decoder._INDEX_KEEP_MAX
    huge = {"k" * (json_decoder._INDEX_KEEP_CHARS + 1): 1}
    assert key_index(huge) == {"k" * (json_decoder._INDEX_KEEP_CHARS + 1): next(iter(huge))}
    assert tuple(huge) not in json_decoder._INDEXES


def test_find_through_objects_that_need_a_scan() -> None:
    text = '{"Aws": {"x": "first"}, "aws": {"x": "second", "y": "only"}, "a.b": {"c": "dotted"}}'
    event = assert_matches_reference(text, ["aws.x", "aws.y", "a.b.c", "AWS.Y", "aws"])
    assert event.find_field("aws.x") == "first"


# -- the printer for orjson trees -------------------------------------------------------

plain_trees = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**64), max_value=2**64),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(plain_trees)
def test_the_plain_printer_prints_like_cjson(tree: Any) -> None:
    assert print_plain(tree) == print_json(tree, formatted=True)


def test_the_plain_printer_hands_deep_trees_to_the_iterative_one() -> None:
    tree: Any = "leaf"
    for i in range(200):
        tree = [tree, {"k": i}] if i % 2 else {"n": tree, "s": "x"}
    assert print_plain(tree) == print_json(tree, formatted=True)
