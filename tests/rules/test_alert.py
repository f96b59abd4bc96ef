"""alerts.json, alerts.log and archive output, against analysisd's format."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailwarden.agent.envelope import wrap_record
from trailwarden.rules import alert as alert_module
from trailwarden.rules import json_decoder
from trailwarden.rules.alert import (
    CJsonNumber,
    alert_json_line,
    build_alert,
    build_archive,
    build_data,
    format_alerts_log,
    format_archive_line,
)
from trailwarden.rules.description import substitute
from trailwarden.rules.event import Event
from trailwarden.rules.json_decoder import decode_json
from trailwarden.rules.mitre import default_mitre_table
from trailwarden.rules.model import DecoderInfo, MitreRef, RuleInfo

JSON_DECODER = DecoderInfo(name="json", parent=None, own_name="json")
GROUPS_80254 = (
    "amazon,aws,authentication_failed,aws_cloudtrail,gdpr_IV_32.2,gdpr_IV_35.7.d,hipaa_164.312.b,"
    "nist_800_53_AC.7,nist_800_53_AU.14,pci_dss_10.2.4,pci_dss_10.2.5,tsc_CC6.1,tsc_CC6.8,"
    "tsc_CC7.2,tsc_CC7.3,"
)
RULE_80254 = RuleInfo(
    id=80254,
    level=5,
    description="AWS Cloudtrail: $(aws.eventSource) - $(aws.eventName) - User login failed.",
    group_string=GROUPS_80254,
    no_full_log=True,
)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC, as on the host the derived examples assume."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    alert_module._local_second.cache_clear()
    yield
    monkeypatch.undo()
    time.tzset()
    alert_module._local_second.cache_clear()


def json_event(text: str, location: str = "Wazuh-AWS", **attrs: Any) -> Event:
    event = Event(text, location, 1717236000.123)
    event.hostname = "wazuh-manager"
    event.decoder = JSON_DECODER
    for name, value in attrs.items():
        setattr(event, name, value)
    decode_json(event, text)
    return event


def example_event(wazuh_ref: Path, location: str = "Wazuh-AWS", **attrs: Any) -> Event:
    line = (wazuh_ref / "examples/4x-queue-message-cloudtrail-consolelogin-failure.txt").read_text()
    return json_event(line.strip().split(":", 2)[2], location, **attrs)


def alert_for(event: Event, rule: RuleInfo = RULE_80254, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "description": substitute(rule.description, event),
        "alert_id": "1717236000.4711",
        "manager_name": "wazuh-manager",
        "firedtimes": 1,
        "previous_output": None,
        "mitre": default_mitre_table(),
    }
    options.update(kwargs)
    return build_alert(event, rule, **options)


# -- golden references --------------------------------------------------------------


def test_alerts_json_line_matches_the_derived_80254_alert(wazuh_ref: Path) -> None:
    golden = (wazuh_ref / "examples/4x-alerts-json-80254-derived.json").read_bytes()
    event = example_event(wazuh_ref)
    line = alert_json_line(alert_for(event))
    assert line == golden
    assert event._blocks[0].flattens == 0  # data came from the document walk


def test_alerts_log_block_matches_the_derived_80254_block(wazuh_ref: Path) -> None:
    golden = (wazuh_ref / "examples/4x-alerts-log-80254-derived.txt").read_text()
    event = example_event(wazuh_ref)
    block = format_alerts_log(
        event,
        RULE_80254,
        description=substitute(RULE_80254.description, event),
        alert_id="1717236000.4711",
        manager_name="wazuh-manager",
    )
    assert block == golden


# -- rule object --------------------------------------------------------------------


def test_rule_object_key_order_and_options() -> None:
    rule = RuleInfo(
        id=80255,
        level=10,
        description="d",
        group_string="aws,pci_dss_1,authentication_failures,gdpr_x,pci_dss_2,,",
        mitre=(MitreRef("T1110"),),
        info=(("link", "https://x"), ("text", " more")),
        cve="CVE-1",
        context=True,
        frequency=6,
        mail=True,
    )
    alert = alert_for(json_event('{"a": "b"}'), rule, firedtimes=3, previous_output="l1\nl2")
    assert list(alert) == [
        "timestamp", "rule", "agent", "manager", "id", "previous_output", "full_log",
        "decoder", "data", "location",
    ]  # fmt: skip
    assert alert["rule"] == {
        "level": 10,
        "description": "d",
        "id": "80255",
        "mitre": {"id": ["T1110"], "tactic": ["Credential Access"], "technique": ["Brute Force"]},
        "cve": "CVE-1",
        "info": "https://x more",
        "frequency": 6,
        "firedtimes": 3,
        "mail": True,
        "groups": ["aws", "authentication_failures"],
        "pci_dss": ["1", "2"],
        "gdpr": ["x"],
    }
    assert list(alert["rule"])[-3:] == ["groups", "pci_dss", "gdpr"]


def test_level_zero_no_counter_and_unresolvable_mitre_are_left_out() -> None:
    rule = RuleInfo(
        id=1,
        level=0,
        description="d",
        group_string="g",
        no_counter=True,
        mitre=(MitreRef("T0000"),),
    )
    warnings: list[str] = []
    alert = alert_for(json_event('{"a": "b"}'), rule, warn=warnings.append)
    assert alert["rule"] == {"description": "d", "id": "1", "mail": False, "groups": ["g"]}
    assert warnings == ["Mitre Technique ID 'T0000' not found in database."]


def test_group_string_is_cut_to_1023_bytes_in_json_only() -> None:
    groups = ",".join(f"g{i:03d}" for i in range(300)) + ","  # 1500 bytes
    rule = RuleInfo(id=2, level=3, description="d", group_string=groups)
    event = json_event('{"a": "b"}')
    alert = alert_for(event, rule)
    # 204 whole "gNNN," tokens are 1020 bytes; the 1023rd byte ends inside "g204".
    assert alert["rule"]["groups"] == [f"g{i:03d}" for i in range(204)] + ["g20"]
    log = format_alerts_log(event, rule, description="d", alert_id="1.2", manager_name="m")
    assert f" - {groups}\n" in log


# -- agent, location, predecoder -------------------------------------------------------


def test_agent_event() -> None:
    event = json_event(
        '{"x": "y"}',
        location="(web01) 10.1.2.3->Wazuh-AWS",
        agent_id="007",
        hostname="web01",
    )
    alert = alert_for(event)
    assert alert["agent"] == {"id": "007", "name": "web01", "ip": "10.1.2.3"}
    assert alert["location"] == "Wazuh-AWS"
    any_ip = json_event(
        '{"x": "y"}', location="(web01) any->/var/log/x", agent_id="007", hostname="web01"
    )
    assert alert_for(any_ip)["agent"] == {"id": "007", "name": "web01"}


def test_agent_ip_label_wins_and_visible_labels_are_listed() -> None:
    event = json_event('{"x": "y"}', location="(web01) any->loc", agent_id="001", hostname="web01")
    event.labels = [
        ("_agent_ip", "192.0.2.9"),
        ("env.tier", "prod"),
        ("!secret", "s"),
        ("owner", "me"),
    ]
    alert = alert_for(event)
    assert alert["agent"] == {
        "id": "001",
        "name": "web01",
        "ip": "192.0.2.9",
        "labels": {"env": {"tier": "prod"}, "owner": "me"},
    }


def test_hidden_labels_leave_an_empty_labels_object_and_empty_values_stay() -> None:
    event = json_event('{"x": "y"}', agent_id="001")
    event.labels = [("!hidden", "h")]
    assert alert_for(event)["agent"]["labels"] == {}
    event.labels = [("blank", ""), ("list", "[1]")]
    assert alert_for(event)["agent"]["labels"] == {"blank": "", "list": [1]}


def test_agentless_location_replaces_agent() -> None:
    event = json_event('{"x": "y"}', location="(ssh_integrity_check) root@db1->/etc")
    alert = alert_for(event)
    assert "agent" not in alert
    assert alert["agentless"] == {"script": "ssh_integrity_check", "user": "root", "host": "db1"}
    assert alert["location"] == "/etc"


def test_predecoder_and_syslog_hostname() -> None:
    event = Event("Jun  1 10:00:00 myhost sshd[1]: Accepted", "/var/log/auth.log", 1717236000.5)
    event.hostname = "myhost"
    event.program_name = "sshd"
    event.predecoded_timestamp = "Jun  1 10:00:00"
    event.decoder = DecoderInfo(name="sshd", parent=None, own_name="sshd")
    event.srcip = "1.2.3.4"
    event.add_field("extra.k", "v")
    alert = alert_for(event, RuleInfo(id=5715, level=3, description="d", group_string="sshd,"))
    assert alert["predecoder"] == {
        "program_name": "sshd",
        "timestamp": "Jun  1 10:00:00",
        "hostname": "myhost",
    }
    assert alert["agent"] == {"id": "000", "name": "wazuh-manager"}
    assert alert["data"] == {"srcip": "1.2.3.4", "extra": {"k": "v"}}
    assert alert["full_log"] == event.full_log
    assert alert["timestamp"] == "2024-06-01T10:00:00.500+0000"


def test_hostname_only_creates_predecoder_after_data() -> None:
    event = Event("Jun 11 10:00:00 h1 something", "loc", 1717236000.0)
    event.hostname = "h1"
    event.decoder = DecoderInfo(name="x", parent="p", own_name="x", accumulate=True, ftscomment="c")
    event.add_field("k", "v")
    alert = alert_for(event, RuleInfo(id=3, level=3, description="d", group_string="g"))
    assert list(alert)[-4:] == ["decoder", "data", "predecoder", "location"]
    assert alert["decoder"] == {"accumulate": 1, "parent": "p", "name": "x", "ftscomment": "c"}


def test_event_without_decoder_has_empty_decoder_and_no_dynamic_data() -> None:
    event = Event("free text", "loc", 1717236000.0)
    event.hostname = "m"
    event.add_field("k", "v")
    event.srcip = "1.1.1.1"
    alert = alert_for(event, RuleInfo(id=4, level=3, description="d", group_string="g"))
    assert alert["decoder"] == {}
    assert alert["data"] == {"srcip": "1.1.1.1"}


# -- data construction ----------------------------------------------------------------


def data_of(text: str, **attrs: Any) -> dict[str, Any]:
    event = json_event(text, **attrs)
    fast = build_data(event)
    general = build_data(event, fast=False)
    assert orjson.dumps(fast, default=alert_module._cjson_default) == orjson.dumps(
        general, default=alert_module._cjson_default
    )
    return general


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "[1, 2]", "[1", '[{"k": 1}]', "é"]),
)
keys = st.sampled_from(["a", "A", "b", "a.b", "", "srcip", "SrcIp", "user", "data", "Ä", "ä"])
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
).filter(lambda d: isinstance(d, dict))


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from(["string", "discard"]), st.sampled_from(["array", "csv"]))
def test_one_walk_data_equals_w_json_add_field(
    document: dict[str, Any], null_mode: str, array_mode: str
) -> None:
    text = json.dumps(document)
    event = Event(text, "loc", 1.0)
    event.decoder = JSON_DECODER
    decode_json(event, text, null_mode=null_mode, array_mode=array_mode)
    fast = orjson.dumps(build_data(event), default=alert_module._cjson_default)
    assert fast == orjson.dumps(build_data(event, fast=False), default=alert_module._cjson_default)


def test_data_skips_empty_strings_and_empty_objects() -> None:
    assert data_of('{"a": {"b": ""}, "c": {}, "d": {"e": {"f": ""}}, "g": "x"}') == {"g": "x"}


def test_data_values_are_strings_except_arrays() -> None:
    data = data_of('{"n": 5, "f": 2.5, "t": true, "z": null, "arr": [1, 2.5, "s", {"k": [true]}]}')
    assert data == {
        "n": "5",
        "f": "2.500000",
        "t": "true",
        "z": "null",
        "arr": [1, 2.5, "s", {"k": [True]}],
    }
    assert all(type(v) is CJsonNumber for v in data["arr"][:2])


def test_string_values_that_look_like_arrays_become_arrays() -> None:
    data = data_of('{"a": "[1, 2]", "b": "[1, 2] x", "c": "[nope]", "d": "[", "e": " [1]"}')
    assert data == {"a": [1, 2], "b": "[1, 2] x", "c": "[nope]", "d": "[", "e": " [1]"}


def test_dotted_keys_nest_and_the_first_value_wins() -> None:
    data = data_of('{"a.b": "dotted", "a": {"b": "plain", "c": "x"}, "A": {"d": "case"}}')
    assert data == {"a": {"b": "dotted", "c": "x", "d": "case"}}
    data = data_of('{"a": "leaf", "a.b": "dropped"}')
    assert data == {"a": "leaf"}


def test_case_variants_merge_into_the_first_name() -> None:
    data = data_of('{"Name": {"x": "1"}, "name": {"x": "2", "y": "3"}, "NAME": "leaf"}')
    assert data == {"Name": {"x": "1", "y": "3"}}


def test_static_fields_come_first_and_block_dynamic_names() -> None:
    data = data_of(
        '{"z": "1", "srcip": "10.0.0.1", "SRCIP": "dyn", "system_name": "d", "systemname": "s"}'
    )
    assert list(data) == ["srcip", "system_name", "z"]
    assert data == {"srcip": "10.0.0.1", "system_name": "s", "z": "1"}


def test_arrays_parsed_back_keep_duplicate_keys() -> None:
    event = json_event('{"a": [{"k": 1, "k": 2}], "b": "x"}')
    line = alert_json_line(alert_for(event))
    assert b'"data":{"a":[{"k":1,"k":2}],"b":"x"}' in line


def test_capped_documents_use_the_general_path() -> None:
    members = {f"k{i}": {"v": str(i)} for i in range(300)}
    data = data_of(json.dumps(members))
    assert len(data) == 256
    assert "k255" in data and "k256" not in data


def test_array_numbers_print_like_cjson() -> None:
    event = json_event('{"a": [0.30000000000000004, 100.0, 1e20, 12345678901234567890, -0.0]}')
    line = alert_json_line(alert_for(event))
    assert b'"a":[0.3,100,1e+20,1.2345678901234567e+19,0]' in line


def test_json_line_escapes_like_cjson() -> None:
    event = json_event(json.dumps({"s": 'q"b\\\x01\x7f\u2028é/\t\n'}))
    line = alert_json_line(alert_for(event))
    assert '"s":"q\\"b\\\\\\u0001\x7f\u2028é/\\t\\n"'.encode() in line
    assert line.endswith(b"}\n")


def test_undecodable_bytes_pass_through_like_c_strings() -> None:
    raw = b'{"a": "bad\xff byte", "b": ["\xfe"]}'
    event = json_event(raw.decode("utf-8", "surrogateescape"))
    line = alert_json_line(alert_for(event))
    assert b'"data":{"a":"bad\xff byte","b":["\xfe"]}' in line


def test_deep_data_falls_back_to_the_cjson_printer() -> None:
    deep = "[" * 300 + "]" * 300
    event = json_event('{"a": ' + deep + "}")
    line = alert_json_line(alert_for(event))
    assert b'"a":' + deep.encode() in line
    assert json.loads(line)["rule"]["id"] == "80254"


# -- alerts.log -------------------------------------------------------------------------


def test_alerts_log_for_an_agent_event_with_static_fields_and_previous_lines() -> None:
    event = Event(
        "Jun  1 10:00:00 h sshd[1]: Failed password",
        "(web01) 10.0.0.5->/var/log/secure",
        1717236000.0,
    )
    event.agent_id = "001"
    event.hostname = "web01"
    event.decoder = DecoderInfo(name="sshd", parent=None, own_name="sshd")
    event.srcip = "1.2.3.4"
    event.srcport = "2222"
    event.dstuser = "root"
    event.labels = [("env", "prod"), ("_system", "x")]
    event.add_field("empty", "")
    event.add_field("k", "v")
    rule = RuleInfo(
        id=5760, level=5, description="d", group_string="sshd,authentication_failed,", mail=True
    )
    block = format_alerts_log(
        event,
        rule,
        description="sshd: authentication failed.",
        alert_id="1717236000.99",
        manager_name="manager",
        previous_lines=["old line 1", "old line 2"],
    )
    assert block == (
        "** Alert 1717236000.99: mail  - sshd,authentication_failed,\n"
        "2024 Jun 01 10:00:00 (web01) 10.0.0.5->/var/log/secure\n"
        "env: prod\n"
        "Rule: 5760 (level 5) -> 'sshd: authentication failed.'\n"
        "Src IP: 1.2.3.4\n"
        "Src Port: 2222\n"
        "User: root\n"
        "Jun  1 10:00:00 h sshd[1]: Failed password\n"
        "k: v\n"
        "old line 1\n"
        "old line 2\n"
        "\n"
    )


def test_alerts_log_prints_full_log_even_with_no_full_log(wazuh_ref: Path) -> None:
    event = example_event(wazuh_ref)
    block = format_alerts_log(event, RULE_80254, description="d", alert_id="1.1", manager_name="m")
    assert f"\n{event.full_log}\n" in block


# -- archives ----------------------------------------------------------------------------


def test_archive_object_and_line() -> None:
    event = Event("DEBUG: something", "aws-s3", 1612876883.660)
    event.hostname = "wazuh-manager"
    assert alert_json_line(
        build_archive(event, manager_name="wazuh-manager", alert_id="1612876883.903281")
    ) == (
        b'{"timestamp":"2021-02-09T13:21:23.660+0000","agent":{"id":"000","name":"wazuh-manager"},'
        b'"manager":{"name":"wazuh-manager"},"id":"1612876883.903281",'
        b'"full_log":"DEBUG: something","decoder":{},"location":"aws-s3"}\n'
    )  # the 4.1 archive line quoted in wazuh/wazuh#7407
    assert format_archive_line(event, manager_name="wazuh-manager") == (
        "2021 Feb 09 13:21:23 wazuh-manager->aws-s3 DEBUG: something\n"
    )
    keepalive = Event("x", "(a) 1.1.1.1->ossec-keepalive", 1.0)
    assert format_archive_line(keepalive, manager_name="m") is None


# -- the CloudTrail corpus -----------------------------------------------------------------


def _records(root: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(root.rglob("*")):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            yield from data if isinstance(data, list) else data.get("Records", [])
        elif path.suffix == ".log":
            for line in path.read_text().splitlines():
                record = json.loads(line) if line.strip() else None
                if record and "eventName" in record:
                    yield record


def test_every_real_record_formats_and_the_fast_data_equals_the_general(
    cloudtrail_dir: Path,
) -> None:
    rule = RuleInfo(
        id=80202,
        level=3,
        description="AWS Cloudtrail: $(aws.eventSource) - $(aws.eventName).",
        group_string="amazon,aws,aws_cloudtrail,",
        mitre=(MitreRef("T1078"), MitreRef("T1078.004")),
    )
    count = 0
    for record in _records(cloudtrail_dir):
        text = json.dumps({"integration": "aws", "aws": {**record, "source": "cloudtrail"}})
        event = json_event(text)
        alert = alert_for(event, rule)
        assert event._blocks[0].flattens == 0  # data came from the one-walk path
        line = alert_json_line(alert)
        parsed = json.loads(line)
        assert parsed["rule"]["description"].startswith(f"AWS Cloudtrail: {record['eventSource']}")
        assert parsed["rule"]["mitre"]["id"] == ["T1078", "T1078.004"]
        general = build_data(event, fast=False)
        assert line.count(b"\n") == 1
        assert parsed["data"] == json.loads(
            orjson.dumps(general, default=alert_module._cjson_default)
        )
        assert format_alerts_log(event, rule, description="d", alert_id="1.1", manager_name="m")
        count += 1
    assert count > 300


def _exact_event(text: str) -> Event:
    """The event as the exact (cJSON port) decoder sees it: a flat field list,
    which takes the general path of both data and the log block."""
    event = Event(text, "cloudtrail", 1717236000.123)
    event.hostname = "wazuh-manager"
    event.decoder = JSON_DECODER
    json_decoder._decode_exact(event, text, True, False)
    return event


def test_every_real_record_renders_byte_equal_through_the_one_walk_and_the_general_path(
    cloudtrail_dir: Path,
) -> None:
    rule = RuleInfo(
        id=80202,
        level=3,
        description="AWS Cloudtrail: $(aws.eventSource) - $(aws.eventName) by $(aws.userIdentity.arn).",
        group_string="amazon,aws,aws_cloudtrail,pci_dss_10.6.1,gdpr_IV_35.7.d,",
        mitre=(MitreRef("T1078"), MitreRef("T1078.004")),
    )
    count = 0
    for record in _records(cloudtrail_dir):
        agent_text = wrap_record(
            record, log_file="AWSLogs/x.json.gz", bucket="trail", account_id="123456789012"
        ).decode()
        spaced_text = json.dumps({"integration": "aws", "aws": {**record, "source": "cloudtrail"}})
        for text in (agent_text, spaced_text):
            fast = Event(text, "cloudtrail", 1717236000.123)
            fast.hostname = "wazuh-manager"
            fast.decoder = JSON_DECODER
            decode_json(fast, text)
            general = _exact_event(text)
            assert type(general._blocks[0]) is json_decoder.FlatJsonBlock
            rendered = []
            for event in (fast, general):
                options: dict[str, Any] = {
                    "description": substitute(rule.description, event),
                    "alert_id": "1717236000.4711",
                    "manager_name": "wazuh-manager",
                }
                alert = build_alert(
                    event,
                    rule,
                    firedtimes=2,
                    previous_output=None,
                    mitre=default_mitre_table(),
                    **options,
                )
                rendered.append((alert_json_line(alert), format_alerts_log(event, rule, **options)))
            assert fast._blocks[0].flattens == 0  # the one walk, not the field list
            assert rendered[0][0] == rendered[1][0], record.get("eventID")
            assert rendered[0][1] == rendered[1][1], record.get("eventID")
            count += 1
    assert count > 600


def test_rendering_leaves_no_reference_cycles(cloudtrail_dir: Path) -> None:
    """The manager renders thousands of alerts a second with the cycle collector
    mostly asleep: an alert's objects must be freed by reference counting."""
    records = list(_records(cloudtrail_dir))
    # A string starting with "[" sends the walk through the checked path.
    records.append({"eventName": "X", "errorMessage": "[not an array", "n": [1, {"a": "[b"}]})
    texts = [
        wrap_record(r, log_file="AWSLogs/x.json.gz", bucket="trail", account_id="1").decode()
        for r in records
    ]
    gc.collect()
    gc.disable()
    try:
        for text in texts:
            event = json_event(text)
            line = alert_json_line(alert_for(event))
            block = format_alerts_log(event, RULE_80254, description="d", alert_id="1.1",
                                      manager_name="m")
            assert line and block
        del event, line, block
        assert gc.collect() == 0
    finally:
        gc.enable()


# -- one walk for the JSON line and the log block ---------------------------------------


def _generic_lines(event: Event) -> str:
    return "".join(f"{k}: {v}\n" for k, v in event.fields() if v)


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from(["string", "discard"]), st.sampled_from(["array", "csv"]))
def test_one_walk_log_lines_equal_the_fields(
    document: dict[str, Any], null_mode: str, array_mode: str
) -> None:
    text = json.dumps(document)
    event = Event(text, "loc", 1.0)
    event.decoder = JSON_DECODER
    decode_json(event, text, null_mode=null_mode, array_mode=array_mode)
    rule = RuleInfo(id=9, level=3, description="d", group_string="g")
    log = format_alerts_log(event, rule, description="d", alert_id="1.1", manager_name="m")
    assert log.endswith(f"\n{event.full_log}\n{_generic_lines(event)}\n")


def test_capped_documents_log_the_fields_the_cap_kept() -> None:
    members = {f"k{i}": {"v": str(i), "e": ""} for i in range(200)}
    event = json_event(json.dumps(members))
    log = format_alerts_log(event, RULE_80254, description="d", alert_id="1.1", manager_name="m")
    lines = _generic_lines(event)
    assert log.endswith(f"\n{event.full_log}\n{lines}\n")
    assert lines.count("\n") == 128 and "k127.v: 127\n" in lines  # 256 fields, half empty


def test_rendering_twice_or_log_first_gives_the_same_output(wazuh_ref: Path) -> None:
    golden = (wazuh_ref / "examples/4x-alerts-json-80254-derived.json").read_bytes()
    golden_log = (wazuh_ref / "examples/4x-alerts-log-80254-derived.txt").read_text()
    event = example_event(wazuh_ref)
    options: dict[str, Any] = {
        "description": substitute(RULE_80254.description, event),
        "alert_id": "1717236000.4711",
        "manager_name": "wazuh-manager",
    }
    assert format_alerts_log(event, RULE_80254, **options) == golden_log
    first = alert_for(event)
    second = alert_for(event)
    assert alert_json_line(first) == alert_json_line(second) == golden
    assert first["data"]["aws"] is not second["data"]["aws"]  # each alert owns its data
    first["rule"]["groups"].append("changed")
    assert alert_json_line(alert_for(event)) == golden
    assert format_alerts_log(event, RULE_80254, **options) == golden_log


def test_strings_that_look_like_arrays_and_array_numbers_in_one_walk() -> None:
    text = orjson.dumps({"s": "[1, 2.5]", "t": "[x", "n": [3000000000, 0.1, -0.0, True]}).decode()
    event = json_event(text)
    line = alert_json_line(alert_for(event))
    assert b'"data":{"s":[1,2.5],"t":"[x","n":[3000000000,0.1,0,true]}' in line
    assert event._blocks[0].flattens == 0


def test_sca_compliance_joins_the_rule_lists_whatever_the_case() -> None:
    event = json_event('{"SCA": {"Check": {"compliance": {"PCI_DSS": "1.1, 2.2", "cis": "5"}}}}')
    rule = RuleInfo(id=3, level=3, description="d", group_string="sca,pci_dss_9,")
    alert = alert_for(event, rule)
    assert alert["rule"]["pci_dss"] == ["9", "1.1", "2.2"]
    assert alert["rule"]["cis"] == ["5"]
    assert list(alert["rule"])[-3:] == ["groups", "pci_dss", "cis"]


def test_rule_parts_follow_the_rule_object_and_warnings_repeat() -> None:
    event = json_event('{"x": "y"}')
    one = RuleInfo(id=7, level=3, description="d", group_string="one,")
    two = RuleInfo(id=7, level=3, description="d", group_string="two,pci_dss_1,")
    assert alert_for(event, one)["rule"]["groups"] == ["one"]
    assert alert_for(event, two)["rule"]["pci_dss"] == ["1"]
    assert alert_for(event, one)["rule"]["groups"] == ["one"]
    unknown = RuleInfo(id=8, level=3, description="d", group_string="g", mitre=(MitreRef("T0"),))
    warnings: list[str] = []
    alert_for(event, unknown, warn=warnings.append)
    alert_for(event, unknown, warn=warnings.append)
    assert warnings == ["Mitre Technique ID 'T0' not found in database."] * 2
