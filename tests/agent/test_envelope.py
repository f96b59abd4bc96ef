"""The wodle envelope: golden cases per transformation, the Wazuh example, the corpus."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import record_strategies
from hypothesis import given, settings
from hypothesis import strategies as st

from trailwarden.agent.cloudtrail_file import Record, read_cloudtrail_file
from trailwarden.agent.envelope import (
    POLYMORPHIC_MEMBERS,
    WODLE_LOCATION,
    EnvelopeError,
    build_message,
    location_for,
    origin_for,
    parse_s3_key,
    wrap_record,
)
from trailwarden.agent.jsonlines import JsonLinesReader, Line

KEY = (
    "AWSLogs/111122223333/CloudTrail/us-east-2/2014/07/08/"
    "111122223333_CloudTrail_us-east-2_20140708T1740Z_EXAMPLE0000000000.json.gz"
)


def ordered(value: Any) -> Any:
    """Dicts as lists of pairs, so == also compares key order."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


def wrap(record: dict[str, Any], account_id: str | None = "111122223333") -> dict[str, Any]:
    out = wrap_record(record, log_file="k", bucket="b", account_id=account_id)
    parsed: dict[str, Any] = orjson.loads(out)
    return parsed["aws"]


# -- an oracle: the wodle's steps done literally, in place, one pass each ----------


def strict_ipv4(value: Any) -> bool:
    """One IPv4 address as the indexer's ip type reads it (Python rejects leading zeros too)."""
    if not isinstance(value, str):
        return False
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def wodle_oracle(record: dict[str, Any], log_file: str, bucket: str, account: str) -> Any:
    """Spec §1.1 step by step (mutating copies), to cross-check the one-pass version,
    with the envelope's deliberate differences marked where they apply."""
    event = copy.deepcopy(dict(record, source="cloudtrail"))

    def drop_none(node: dict[str, Any]) -> None:
        for k in list(node):
            if isinstance(node[k], dict):
                drop_none(node[k])
            elif node[k] is None:
                del node[k]

    def collapse(node: dict[str, Any]) -> None:
        for k in list(node):
            if isinstance(node[k], list) and len(node[k]) == 1:
                node[k] = node[k][0]
            elif isinstance(node[k], dict):
                collapse(node[k])

    drop_none(event)
    msg: dict[str, Any] = {"integration": "aws", "aws": {"log_info": {}}}
    msg["aws"]["log_info"] = {"aws_account_alias": "", "log_file": log_file, "s3bucket": bucket}
    msg["aws"].update(event)
    msg["aws"]["aws_account_id"] = account
    collapse(msg)
    aws = msg["aws"]
    # Deliberate difference: the wodle tests re.match(r"\d+\.\d+.\d+.\d+", ip) (and
    # raises TypeError, exiting, on a non-string); we want one address the indexer parses.
    ip = aws.get("sourceIPAddress")
    if isinstance(ip, str) and strict_ipv4(ip):
        aws["source_ip_address"] = ip
    if "tags" in aws and not isinstance(aws["tags"], dict):
        aws["tags"] = {"value": aws["tags"]}
    for field in ("additionalEventData", "responseElements", "requestParameters"):
        if field in aws and not isinstance(aws[field], dict):
            aws[field] = {"string": str(aws[field])}
    params = aws.get("requestParameters")
    if isinstance(params, dict) and isinstance(params.get("disableApiTermination"), bool):
        params["disableApiTermination"] = {"value": params["disableApiTermination"]}
    # Deliberate difference: a concrete responseElements.role moves under role.arn.
    response = aws.get("responseElements")
    if isinstance(response, dict) and isinstance(response.get("role"), (str, int, float)):
        response["role"] = {"arn": response["role"]}
    return msg


# -- the Wazuh example ---------------------------------------------------------------


def test_matches_the_wazuh_queue_message_for_a_failed_console_login(
    wazuh_ref: Path, cloudtrail_dir: Path
) -> None:
    example = (
        wazuh_ref / "examples/4x-queue-message-cloudtrail-consolelogin-failure.txt"
    ).read_text()
    header = "1:" + WODLE_LOCATION + ":"
    assert example.startswith(header)
    expected = json.loads(example[len(header) :])
    log = cloudtrail_dir / "elastic_integrations_pipeline_tests/test-console-login-json.log"
    record = orjson.loads(log.read_bytes().splitlines()[1])

    out = wrap_record(record, log_file=KEY, bucket="wazuh-cloudtrail", account_id="111122223333")

    assert ordered(orjson.loads(out)) == ordered(expected)
    assert b", " not in out.replace(b"Windows NT 6.1; WOW64; rv:24.0", b"")  # compact
    assert out.startswith(b'{"integration":"aws","aws":{"log_info":{"aws_account_alias":"",')


def test_account_id_from_the_s3_key_of_the_example(tmp_path: Path) -> None:
    path = tmp_path / "wazuh-cloudtrail" / KEY
    origin = origin_for(path, tmp_path / "wazuh-cloudtrail")
    assert origin.log_file == KEY
    assert origin.bucket == "wazuh-cloudtrail"
    assert origin.account_id == "111122223333"
    assert origin.region == "us-east-2"


# -- one golden case per transformation ------------------------------------------------


def test_none_values_are_dropped_in_dicts_but_not_inside_lists() -> None:
    aws = wrap(
        {
            "eventName": "X",
            "requestParameters": {"a": None, "b": {"c": None, "d": 1}, "e": [None, {"f": None}]},
            "responseElements": None,
        }
    )
    assert ordered(aws["requestParameters"]) == ordered({"b": {"d": 1}, "e": [None, {"f": None}]})
    assert "responseElements" not in aws


def test_single_element_lists_collapse_through_dicts_only() -> None:
    aws = wrap(
        {
            "resources": [{"ARN": "arn:x", "inner": [1]}],  # element itself is not revisited
            "requestParameters": {"ids": ["i-1"], "pair": ["a", "b"], "deep": {"x": [[7]]}},
            "responseElements": {"mixed": [[1], {"k": [2]}]},  # lists are never entered
            "additionalEventData": {"gone": [None]},  # None removal ran first
        }
    )
    assert ordered(aws["resources"]) == ordered({"ARN": "arn:x", "inner": [1]})
    assert ordered(aws["requestParameters"]) == ordered(
        {"ids": "i-1", "pair": ["a", "b"], "deep": {"x": [7]}}
    )
    assert aws["responseElements"] == {"mixed": [[1], {"k": [2]}]}
    assert aws["additionalEventData"] == {"gone": None}


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["a", "b"], {"value": ["a", "b"]}),
        ("env=prod", {"value": "env=prod"}),
        (["only"], {"value": "only"}),  # collapsed first, then wrapped
        ([{"key": "k"}], {"key": "k"}),  # collapsed into a dict: left alone
        ({"key": "k"}, {"key": "k"}),
        (7, {"value": 7}),
        ([None], {"value": None}),  # a collapsed [None] is present, so wrapped
    ],
)
def test_top_level_tags_become_a_dict(tags: Any, expected: Any) -> None:
    aws = wrap({"tags": tags, "requestParameters": {"tags": ["x", "y"]}})
    assert aws["tags"] == expected
    assert aws["requestParameters"]["tags"] == ["x", "y"]  # only the top-level key


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        (["a", "b"], "['a', 'b']"),
        (["solo"], "solo"),
        (True, "True"),
        (False, "False"),
        (5, "5"),
        (1.5, "1.5"),
        ([{"k": None}, True, 1e16], "[{'k': None}, True, 1e+16]"),
        (["결제", "it's"], "['결제', \"it's\"]"),
        ([None], "None"),
    ],
)
def test_non_dict_payload_fields_become_python_str(value: Any, expected: str) -> None:
    for field in ("requestParameters", "responseElements", "additionalEventData"):
        aws = wrap({field: value})
        assert aws[field] == {"string": expected}, field


def test_disable_api_termination_bool_becomes_value_dict() -> None:
    assert wrap({"requestParameters": {"disableApiTermination": True}})["requestParameters"] == {
        "disableApiTermination": {"value": True}
    }
    assert wrap({"requestParameters": [{"a": 1, "disableApiTermination": False}]})[
        "requestParameters"
    ] == {"a": 1, "disableApiTermination": {"value": False}}
    for kept in ({"value": True}, "true"):
        params = wrap({"requestParameters": {"disableApiTermination": kept}})["requestParameters"]
        assert params == {"disableApiTermination": kept}
    assert wrap({"requestParameters": "x"})["requestParameters"] == {"string": "x"}


@pytest.mark.parametrize(
    ("ip", "added"),
    [
        ("89.160.20.156", True),
        ("0.0.0.0", True),
        ("255.255.255.255", True),
        # The wodle's pattern copies the next three; the indexer's ip type refuses
        # them, and with them the whole alert, under Wazuh's template.
        ("035.249.253.232", False),  # Stratus' leading zeros
        ("81.2.69.142, 192.168.10.10", False),  # a proxy chain
        ("1.2x3y4", False),  # two of the wodle's dots are unescaped
        ("1.2.3.00", False),
        ("256.1.1.1", False),
        ("1.2.3.4 ", False),
        ("\u0661.2.3.4", False),  # an Arabic-Indic digit: \d, but not an address
        ("AWS Internal", False),
        ("ec2.amazonaws.com", False),
        ("2001:db8::1", False),  # the wodle never sets IPv6; neither do we
        ("1.2.3", False),
        (["10.0.0.1"], True),  # collapsed to a string first
        (123, False),  # the wodle would crash; we add nothing
        ({"ip": "1.2.3.4"}, False),
    ],
)
def test_source_ip_address_only_for_one_strict_ipv4_address(ip: Any, added: bool) -> None:
    aws = wrap({"sourceIPAddress": ip})
    assert ("source_ip_address" in aws) is added
    assert aws["sourceIPAddress"] == (ip[0] if isinstance(ip, list) else ip)  # kept as sent
    if added:
        assert aws["source_ip_address"] == aws["sourceIPAddress"]
        assert list(aws)[-1] == "source_ip_address"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.,x :", max_size=20))
def test_source_ip_address_agrees_with_pythons_ipv4_parser(ip: str) -> None:
    assert ("source_ip_address" in wrap({"sourceIPAddress": ip})) is strict_ipv4(ip)


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("arn:aws:iam::1:role/r", {"arn": "arn:aws:iam::1:role/r"}),  # Lambda
        ({"roleName": "r", "arn": "arn:x"}, {"roleName": "r", "arn": "arn:x"}),  # IAM
        (["arn:x"], {"arn": "arn:x"}),  # collapsed to a string first
        (7, {"arn": 7}),
        (True, {"arn": True}),
        (["a", "b"], ["a", "b"]),  # lists are left alone
        ([{"roleName": "r"}, {"roleName": "s"}], [{"roleName": "r"}, {"roleName": "s"}]),
    ],
)
def test_a_concrete_response_role_moves_under_arn(role: Any, expected: Any) -> None:
    record = {"responseElements": {"functionName": "f", "role": role, "version": "1"}}
    before = copy.deepcopy(record)
    aws = wrap(record)
    assert aws["responseElements"]["role"] == expected
    assert list(aws["responseElements"]) == ["functionName", "role", "version"]
    assert record == before
    # Only that member: the request's role (Lambda CreateFunction) is always a string.
    assert wrap({"requestParameters": {"role": "arn:x"}})["requestParameters"] == {"role": "arn:x"}
    assert ("responseElements", "role", "arn") in POLYMORPHIC_MEMBERS


def test_key_order_and_collisions_follow_dict_update() -> None:
    record = {
        "source": None,  # dict(record, source=...) keeps the position, overrides None
        "eventName": "X",
        "aws_account_id": "from-record",
        "log_info": {"mine": True, "n": None},
        "eventID": "e",
    }
    aws = wrap(record)
    assert list(aws) == ["log_info", "source", "eventName", "aws_account_id", "eventID"]
    assert aws["source"] == "cloudtrail"
    assert aws["aws_account_id"] == "111122223333"
    assert aws["log_info"] == {"mine": True}


def test_account_id_falls_back_to_the_record() -> None:
    both = {"recipientAccountId": "222", "userIdentity": {"accountId": "333"}}
    assert wrap(both, None)["aws_account_id"] == "222"
    assert wrap({"userIdentity": {"accountId": "333"}}, None)["aws_account_id"] == "333"
    assert "aws_account_id" not in wrap({"eventName": "X"}, None)
    assert wrap(both, "111")["aws_account_id"] == "111"


def test_log_info_fields_and_alias() -> None:
    out = wrap_record({}, log_file="a/b.json", bucket="bk", account_id="1", account_alias="prod")
    assert orjson.loads(out)["aws"]["log_info"] == {
        "aws_account_alias": "prod",
        "log_file": "a/b.json",
        "s3bucket": "bk",
    }


def test_the_callers_record_is_not_modified() -> None:
    record = {
        "requestParameters": [{"disableApiTermination": True, "x": None}],
        "tags": ["a"],
        "userIdentity": {"k": None, "l": [1]},
    }
    before = copy.deepcopy(record)
    wrap(record)
    assert record == before


def test_output_is_compact_and_keeps_non_ascii_as_utf8() -> None:
    out = wrap_record(
        {"errorCode": "AccessDenied", "requestParameters": {"name": "결제 😀"}},
        log_file="k",
        bucket="b",
        account_id="1",
    )
    assert b'"errorCode":"AccessDenied"' in out
    assert "결제 😀".encode() in out
    assert out == orjson.dumps(orjson.loads(out))


def test_too_deep_a_record_is_an_envelope_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(300):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(EnvelopeError, match="cannot be wrapped"):
        wrap_record({"requestParameters": deep}, log_file="k", bucket="b", account_id="1")


# -- S3 keys, origins, locations ---------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "prefix", "org", "account", "region"),
    [
        (KEY, "", None, "111122223333", "us-east-2"),
        (
            "logs/ct/AWSLogs/o-aa11bb22cc/123456789012/CloudTrail/eu-west-1/2026/11/27/x.json.gz",
            "logs/ct",
            "o-aa11bb22cc",
            "123456789012",
            "eu-west-1",
        ),
        ("AWSLogs/000000000/CloudTrail/r/2020/01/02/n.json", "", None, "000000000", "r"),
    ],
)
def test_parse_s3_key(key: str, prefix: str, org: str | None, account: str, region: str) -> None:
    parsed = parse_s3_key(key)
    assert parsed is not None
    assert (parsed.prefix, parsed.org_id, parsed.account_id, parsed.region) == (
        prefix,
        org,
        account,
        region,
    )
    assert parsed.name == key.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    "key",
    [
        "AWSLogs/123/CloudTrail-Digest/us-east-1/2026/11/27/d.json.gz",
        "AWSLogs/123/CloudTrail/us-east-1/2026/11/d.json.gz",
        "AWSLogs/abc/CloudTrail/us-east-1/2026/11/27/x.json.gz",
        "exports/flaws.json",
        "AWSLogs/123/CloudTrail/us-east-1/26/11/27/x.json.gz",
    ],
)
def test_parse_s3_key_rejects_other_layouts(key: str) -> None:
    assert parse_s3_key(key) is None


def test_origin_outside_the_layout_and_outside_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "exports"
    origin = origin_for(root / "sub" / "flaws.json", root, bucket="my-bucket")
    assert (origin.log_file, origin.bucket, origin.account_id) == (
        "sub/flaws.json",
        "my-bucket",
        None,
    )
    with pytest.raises(ValueError, match="not below"):
        origin_for(tmp_path / "elsewhere.json", root)
    with pytest.raises(ValueError, match="source directory itself"):
        origin_for(root, root)


def test_location_names_the_file(tmp_path: Path) -> None:
    assert location_for(tmp_path / "a.json.gz") == str(tmp_path / "a.json.gz")


# -- every record of the shared corpus ----------------------------------------------------


def corpus_records(cloudtrail_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every record of the shared corpus, read the way the agent reads each shape."""
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(cloudtrail_dir.rglob("*")):
        if path.parent == cloudtrail_dir:
            continue  # SOURCES.md, STATS.json
        if path.suffix == ".log":  # NDJSON, not all with a final newline
            lines = JsonLinesReader(str(path)).read(final=True)
            records = [orjson.loads(line.raw) for line in lines if isinstance(line, Line)]
            records = [r for r in records if "digestStartTime" not in r]
        elif path.name.endswith(".json"):  # {"Records": [...]} or a bare array
            items = list(read_cloudtrail_file(str(path)))
            assert all(isinstance(i, Record) for i in items), items
            records = [i.obj for i in items if isinstance(i, Record)]
        else:
            continue  # the .gz twin of a .json
        out.extend((f"{path.name}#{i}", r) for i, r in enumerate(records))
    return out


def reachable_dict_values(node: dict[str, Any]) -> list[Any]:
    """Values reachable from ``node`` through dicts only (where the rules apply)."""
    found = []
    for value in node.values():
        found.append(value)
        if isinstance(value, dict):
            found.extend(reachable_dict_values(value))
    return found


REWRITTEN_LATER = ("source", "tags", "requestParameters", "responseElements", "additionalEventData")


def assert_nulls_dropped_and_lists_collapsed(
    original: dict[str, Any], out: dict[str, Any], name: str, top: bool = True
) -> None:
    """Walk the record and its wrapped form together through dicts."""
    for key, value in original.items():
        if top and key in REWRITTEN_LATER:
            continue  # rewritten by later steps, checked separately
        if value is None:
            assert key not in out, (name, key)
        elif isinstance(value, dict):
            assert_nulls_dropped_and_lists_collapsed(value, out[key], name, top=False)
        elif isinstance(value, list) and len(value) == 1:
            assert out[key] == value[0], (name, key)  # the element, not revisited
        else:
            assert out[key] == value, (name, key)


def test_every_shared_record_wraps_and_obeys_each_rule(cloudtrail_dir: Path) -> None:
    records = corpus_records(cloudtrail_dir)
    assert len(records) == 310 + 14 + 2  # stratus, elastic, trailscraper (SOURCES.md)
    for name, record in records:
        out = wrap_record(record, log_file=KEY, bucket="b", account_id="111122223333")
        msg = orjson.loads(out)
        assert list(msg) == ["integration", "aws"], name
        aws = msg["aws"]
        assert next(iter(aws)) == "log_info", name
        assert aws["source"] == "cloudtrail" and aws["aws_account_id"] == "111122223333", name
        assert_nulls_dropped_and_lists_collapsed(record, aws, name)
        for field in ("requestParameters", "responseElements", "additionalEventData", "tags"):
            assert field not in aws or isinstance(aws[field], dict), name
        params = aws.get("requestParameters", {})
        assert not isinstance(params.get("disableApiTermination"), bool), name
        ip = aws.get("sourceIPAddress")
        assert ("source_ip_address" in aws) is strict_ipv4(ip), name
        assert not isinstance(aws.get("responseElements", {}).get("role"), str), name
        assert ordered(msg) == ordered(wodle_oracle(record, KEY, "b", "111122223333")), name


def test_corpus_shapes_are_exercised(cloudtrail_dir: Path) -> None:
    """The corpus really contains what the rules above are about."""
    records = [r for _, r in corpus_records(cloudtrail_dir)]
    assert any(r.get("responseElements") is None for r in records)
    assert any(
        isinstance(v, list) and len(v) == 1 for r in records for v in reachable_dict_values(r)
    )
    assert any(not re.match(r"\d", str(r.get("sourceIPAddress", ""))) for r in records)
    assert any(str(r.get("sourceIPAddress", "")).startswith("0") for r in records)


# -- arbitrary records against the oracle ---------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(record_strategies.records(max_keys=8))
def test_arbitrary_records_match_the_step_by_step_wodle(record: dict[str, Any]) -> None:
    msg = build_message(record, log_file="k", bucket="b", account_id="1")
    assert ordered(msg) == ordered(wodle_oracle(record, "k", "b", "1"))
    assert ordered(orjson.loads(orjson.dumps(msg))) == ordered(msg)
