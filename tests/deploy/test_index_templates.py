"""Every alert we produce, indexed under Wazuh's template and under ours (real osmem-server).

The alerts are those of ``corpus_alerts`` (every real CloudTrail record, the
bundled and the stock ruleset), shipped by the real indexer output into one
osmem-server per template (``conftest.py``). ``template_check`` predicts the
indexer's decision for each document; the tests hold the server and the
prediction to each other, so a failure names the alert and the field.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from corpus_alerts import CorpusAlert, corpus_records
from indexed_corpus import IndexRun

from trailwarden.manager.template_check import (
    IndexSimulator,
    ProblemKind,
    compare_templates,
    mapped_fields,
    template_parts,
)

# CloudTrail's free-form members: their shape depends on the API called, so the
# same key is an object in one event and a string in another.
PAYLOADS = (
    "requestParameters",
    "responseElements",
    "additionalEventData",
    "serviceEventDetails",
    "edgeDeviceDetails",
)
# The aws-s3 wodle's test for source_ip_address (re.match, anchored at the start only).
WODLE_IP = re.compile(r"\d+\.\d+.\d+.\d+")
DAYS = ("wazuh-alerts-4.x-2026.11.28", "wazuh-alerts-4.x-2026.11.29")
# The types Wazuh's template gives the fields dashboards and rules rely on.
CORE_TYPES = {
    "timestamp": "date",
    "@timestamp": "date",
    "id": "keyword",
    "location": "keyword",
    "full_log": "text",
    "manager.name": "keyword",
    "agent.id": "keyword",
    "agent.name": "keyword",
    "agent.ip": "keyword",
    "rule.id": "keyword",
    "rule.level": "long",
    "rule.firedtimes": "long",
    "rule.description": "keyword",
    "rule.groups": "keyword",
    "rule.mail": "boolean",
    "rule.pci_dss": "keyword",
    "decoder.name": "keyword",
    "data.aws.source": "keyword",
    "data.aws.accountId": "keyword",
    "data.aws.region": "keyword",
    "data.aws.log_info.s3bucket": "keyword",
    "data.aws.source_ip_address": "ip",
}


def _labels(run: IndexRun, ids: set[str] | frozenset[str], limit: int = 10) -> str:
    lines = []
    for doc_id in sorted(ids)[:limit]:
        doc = run.docs[doc_id]
        problems = "; ".join(str(p) for p in doc.predicted.rejected) or "predicted accepted"
        lines.append(f"  {doc.alert.label} in {doc.index}: {problems}")
    more = f"\n  ... and {len(ids) - limit} more" if len(ids) > limit else ""
    return "\n".join(lines) + more


def _get(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _is_strict_ip(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _leaf_paths(doc: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        items = value if isinstance(value, list) else [value]
        dicts = [v for v in items if isinstance(v, dict)]
        if dicts:
            for d in dicts:
                out |= _leaf_paths(d, f"{path}.")
        elif any(v is not None for v in items):
            out.add(path)
    return out


# -- the corpus -------------------------------------------------------------------------


def test_the_corpus_alerts_cover_every_record_and_both_rulesets(
    corpus_alerts: list[CorpusAlert], cloudtrail_dir: Path
) -> None:
    records = corpus_records(cloudtrail_dir)
    # Stratus 310, Elastic 14, trailscraper 2 x 2 (plain and gzipped), bundled samples.
    assert len(records) >= 310 + 14 + 4 + 30
    stock = [a for a in corpus_alerts if a.ruleset == "stock"]
    bundled = [a for a in corpus_alerts if a.ruleset == "bundled"]
    # Wazuh's 80200 takes every aws-integration event: one stock verdict per record.
    assert sorted(a.record.name for a in stock) == sorted(r.name for r in records)
    at_wazuh_default = {a.rule_id for a in stock if a.level >= 3 and a.alerted}
    assert {"80202", "80203", "80253", "80254"} <= at_wazuh_default
    # The bundled ruleset looks at EC2 only; its alerts are the EC2 use-case rules.
    assert bundled and all(
        a.record.record.get("eventSource") == "ec2.amazonaws.com" for a in bundled
    )
    alerted = {a.rule_id for a in bundled if a.alerted}
    assert {"80301", "80303", "80305", "80308"} <= alerted
    assert all(80301 <= int(rule_id) <= 80446 for rule_id in alerted)
    assert all("aws_ec2" in a.rendered.fields["rule"]["groups"] for a in bundled)
    # Agent-forwarded events carry the agent; the stock run is the manager's own wodle.
    assert {a.rendered.fields["agent"]["id"] for a in bundled} == {"001"}
    assert {a.rendered.fields["location"] for a in stock} == {"Wazuh-AWS"}


# -- our template -----------------------------------------------------------------------


def test_our_template_indexes_every_alert(ours_indexed: IndexRun) -> None:
    run = ours_indexed
    missing = set(run.docs) - run.present
    assert not missing, f"alerts refused under our template:\n{_labels(run, missing)}"
    assert run.stats["item_errors"] == 0, run.stats
    assert run.stats["indexed"] == len(run.docs)
    assert run.stats["template_installed"] == 1
    predicted = {i for i, d in run.docs.items() if not d.predicted.accepted}
    assert not predicted, f"template_check expects refusals:\n{_labels(run, predicted)}"
    for index in DAYS:
        expected = sum(1 for d in run.docs.values() if d.index == index)
        assert run.server.count(index) == expected, index


def test_our_template_drops_no_value(ours_indexed: IndexRun) -> None:
    """ignore_malformed is a safety net only: no corpus value needs it.

    The agent sets ``source_ip_address`` only for one canonical IPv4 address,
    so the anonymised Stratus addresses ("035.249.253.232") and the Elastic
    proxy chain ("81.2.69.142, 192.168.10.10") no longer reach the ip field.
    """
    run = ours_indexed
    assert run.ignored == {}
    assert not [d.alert.label for d in run.docs.values() if d.predicted.ignored]


def test_alerts_land_in_the_index_of_their_utc_day(ours_indexed: IndexRun) -> None:
    run = ours_indexed
    assert run.indices == list(DAYS)
    for doc in run.docs.values():
        timestamp = doc.alert.rendered.fields["timestamp"]
        assert timestamp.endswith("+0000")
        assert doc.index == "wazuh-alerts-4.x-" + timestamp[:10].replace("-", ".")
    doc = next(iter(run.docs.values()))
    status, body = run.server.request("GET", f"/{doc.index}/_doc/{doc.doc_id}")
    assert status == 200
    source = body["_source"]
    assert source["@timestamp"] == source["timestamp"][:23] + "Z"
    assert source["data"]["aws"]["region"] == doc.alert.record.record["awsRegion"]


# -- Wazuh's template ---------------------------------------------------------------------


def test_wazuh_template_indexes_every_alert(wazuh_indexed: IndexRun) -> None:
    """Issue 5's criterion: Wazuh's own template, unmodified, refuses no alert.

    Wazuh's alerts for the same records would lose 125 documents here: its
    wodle copies "035.249.253.232" and "81.2.69.142, 192.168.10.10" into the
    ip-typed ``data.aws.source_ip_address``, and ``responseElements.role`` is an
    object for IAM CreateRole but a string for Lambda UpdateFunctionCode. The
    agent's envelope avoids both (``test_payload_shapes.py`` shows the old
    shapes refused by the same server).
    """
    run = wazuh_indexed
    missing = set(run.docs) - run.present
    assert not missing, f"alerts refused under Wazuh's template:\n{_labels(run, missing)}"
    assert run.stats["item_errors"] == 0, run.stats
    assert run.stats["indexed"] == len(run.docs)
    assert run.stats["template_installed"] == 1
    predicted = {i for i, d in run.docs.items() if not d.predicted.accepted}
    assert not predicted, f"template_check expects refusals:\n{_labels(run, predicted)}"
    assert run.ignored == {}  # Wazuh's template has no ignore_malformed: nothing to drop
    assert run.indices == list(DAYS)
    for index in DAYS:
        expected = sum(1 for d in run.docs.values() if d.index == index)
        assert run.server.count(index) == expected, index


def test_source_ip_address_is_every_strict_ipv4_and_nothing_else(
    wazuh_indexed: IndexRun,
) -> None:
    """The ip field is kept wherever it can be: dropped only for values the indexer refuses."""
    run = wazuh_indexed
    kept = wodle_only = 0
    for doc in run.docs.values():
        raw = doc.alert.record.record.get("sourceIPAddress")
        value = _get(doc.source, "data.aws.source_ip_address")
        strict = isinstance(raw, str) and _is_strict_ip(raw) and ":" not in raw  # IPv4 only
        assert value == (raw if strict else None), doc.alert.label
        kept += strict
        # What the wodle's pattern copies and the indexer's ip type refuses.
        wodle_only += not strict and isinstance(raw, str) and bool(WODLE_IP.match(raw))
    # Both cases are really in the corpus (else this proves little).
    assert kept > 50 and wodle_only > 50, (kept, wodle_only)
    status, body = run.server.request(
        "POST",
        "/wazuh-alerts-*/_search",
        {"size": 0, "query": {"exists": {"field": "data.aws.source_ip_address"}}},
    )
    assert status == 200 and body["hits"]["total"]["value"] == kept, body


# -- types --------------------------------------------------------------------------------


@pytest.mark.parametrize("run_name", ["wazuh_indexed", "ours_indexed"])
def test_core_fields_have_wazuhs_types(run_name: str, request: pytest.FixtureRequest) -> None:
    run: IndexRun = request.getfixturevalue(run_name)
    for index in run.indices:
        types = {p: f.type for p, f in mapped_fields(run.mappings[index]).items()}
        wrong = {p: (types.get(p), t) for p, t in CORE_TYPES.items() if types.get(p) != t}
        assert not wrong, f"{run.template_name} {index}: (mapped, expected) {wrong}"


def test_one_type_per_field_across_both_templates_indices(
    wazuh_indexed: IndexRun, ours_indexed: IndexRun
) -> None:
    """A `wazuh-alerts-*` index pattern over days indexed under either template sees
    one type per field (Kibana marks a field with two types as a conflict).

    Under Wazuh's template alone that already fails for payload fields: each
    daily index types a payload key by the first event of the day that has it
    (``responseElements.instancesSet.items.currentState.code`` is a number in
    one event and a string in another). Our template does not index payloads,
    so its days agree with each other and with Wazuh's.
    """
    types: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for run in (wazuh_indexed, ours_indexed):
        for index in run.indices:
            for path, spec in mapped_fields(run.mappings[index]).items():
                types[path][run.template_name].add(spec.type)
    ours_split = {p: t["trailwarden"] for p, t in types.items() if len(t["trailwarden"]) > 1}
    assert not ours_split, ours_split
    disagree = {
        p: dict(t)
        for p, t in types.items()
        if t["trailwarden"] and t["wazuh"] and not t["trailwarden"] <= t["wazuh"]
    }
    assert not disagree, disagree
    wazuh_split = {p for p, t in types.items() if len(t["wazuh"]) > 1}
    assert all(p.split(".")[2] in PAYLOADS for p in wazuh_split), sorted(wazuh_split)
    # The comparison covers the alert fields, not just a handful.
    both = {p for p, t in types.items() if t["trailwarden"] and t["wazuh"]}
    assert len(both) > 60 and set(CORE_TYPES) <= both


@pytest.mark.parametrize("run_name", ["wazuh_indexed", "ours_indexed"])
def test_template_check_sees_the_mapping_the_server_built(
    run_name: str, request: pytest.FixtureRequest
) -> None:
    """template_check's dynamic mapping ends where the server's did, field for field."""
    run: IndexRun = request.getfixturevalue(run_name)
    for index in run.indices:
        server = {p: f.type for p, f in mapped_fields(run.mappings[index]).items()}
        assert run.simulators[index].leaf_types() == server, index


def test_our_template_maps_what_wazuh_maps_with_the_same_type(
    our_template: dict[str, Any], wazuh_template: dict[str, Any], wazuh_indexed: IndexRun
) -> None:
    mismatches, common = compare_templates(our_template, wazuh_template)
    assert not mismatches, [str(m) for m in mismatches]
    assert set(CORE_TYPES) <= set(common)
    # Every field Wazuh maps explicitly that our alerts carry is mapped explicitly by
    # ours too, so a day indexed under ours never falls back to dynamic types there.
    wazuh_fields = mapped_fields(template_parts(wazuh_template)[1])
    ours = mapped_fields(template_parts(our_template)[1])
    carried: set[str] = set()
    for doc in wazuh_indexed.docs.values():
        carried |= _leaf_paths(doc.source)
    wanted = {p for p in wazuh_fields if p in carried}
    assert wanted, "no alert carries a field Wazuh maps: the corpus is not what it seems"
    assert wanted <= set(ours), sorted(wanted - set(ours))


def test_our_template_is_a_legacy_template_layered_over_wazuhs(
    our_template: dict[str, Any], wazuh_template: dict[str, Any]
) -> None:
    """Same indices as Wazuh's, legacy API (what Filebeat 7.10 loads), higher order."""
    assert our_template["index_patterns"] == wazuh_template["index_patterns"]
    assert "template" not in our_template  # composable templates would shadow Wazuh's
    assert our_template["order"] > wazuh_template["order"]
    settings, mappings = template_parts(our_template)
    assert mappings["date_detection"] is False
    assert settings["index.mapping.ignore_malformed"] is True
    # The string rule keeps Wazuh's name, so layered over Wazuh's it replaces it.
    names = [next(iter(t)) for t in mappings["dynamic_templates"]]
    wazuh_names = [next(iter(t)) for t in template_parts(wazuh_template)[1]["dynamic_templates"]]
    assert names == wazuh_names


# -- what osmem cannot show ---------------------------------------------------------------


def test_long_values_and_clashing_payloads_index_under_ours_only(
    ours_indexed: IndexRun, our_template: dict[str, Any], wazuh_template: dict[str, Any]
) -> None:
    """Lucene's 32766-byte term limit and both orders of a payload clash.

    osmem does not enforce the term limit and accepts an object where a string
    was mapped, so these are checked with template_check alone (its rules for
    them follow the Elasticsearch/OpenSearch document parser).
    """
    base = copy.deepcopy(next(iter(ours_indexed.docs.values())).source)
    base["previous_output"] = "x" * 40_000
    base["data"]["aws"]["userAgent"] = "\u00e9" * 20_000  # 40000 UTF-8 bytes
    base["data"]["aws"]["requestParameters"] = {"policyDocument": "p" * 50_000}
    as_string = copy.deepcopy(base)
    as_string["data"]["aws"]["responseElements"] = {"role": "arn:aws:iam::1:role/r"}
    as_object = copy.deepcopy(base)
    as_object["data"]["aws"]["responseElements"] = {"role": {"roleName": "r"}}

    ours = IndexSimulator.from_template(our_template)
    for doc in (as_string, as_object, as_string):
        check = ours.index(doc)
        assert check.accepted and not check.ignored, check

    wazuh = IndexSimulator.from_template(wazuh_template)
    first = wazuh.index(as_string)
    assert {(p.path, p.kind) for p in first.rejected} == {
        ("previous_output", ProblemKind.IMMENSE_TERM),
        ("data.aws.userAgent", ProblemKind.IMMENSE_TERM),
        ("data.aws.requestParameters.policyDocument", ProblemKind.IMMENSE_TERM),
    }
    short = copy.deepcopy(as_string)
    del short["previous_output"], short["data"]["aws"]["userAgent"]
    short["data"]["aws"]["requestParameters"] = {"policyDocument": "p"}
    assert wazuh.index(short).accepted
    clash = copy.deepcopy(short)
    clash["data"]["aws"]["responseElements"] = {"role": {"roleName": "r"}}
    assert [(p.path, p.kind) for p in wazuh.index(clash).rejected] == [
        ("data.aws.responseElements.role", ProblemKind.OBJECT_FOR_FIELD)
    ]
