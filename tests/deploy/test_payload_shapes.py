"""Shapes that change between events, in one day's index (real osmem-server).

Wazuh's template maps CloudTrail payloads dynamically: the first alert of the
day that carries a key decides its type in that day's index, and a later alert
with another shape is refused whole. Its ``data.aws.source_ip_address`` is
typed ``ip``. The agent's envelope (``agent/envelope.py``) therefore sets
``source_ip_address`` only for one canonical IPv4 address and moves a concrete
``responseElements.role`` under ``role.arn``. These tests show that both
differences from the wodle matter (the wodle's shapes are refused by the same
server) and that a stress corpus alternating every shape CloudTrail is known to
alternate indexes completely, in either order, under either template.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from corpus_alerts import CorpusAlert, CorpusRecord, corpus_records, render_stock
from indexed_corpus import ship
from servers import OsmemProcess, osmem_fixture  # noqa: F401  (registers `osmem`)

from trailwarden.manager.ingest_pipeline import index_document
from trailwarden.manager.outputs import RenderedAlert
from trailwarden.manager.template_check import IndexSimulator, ProblemKind

# The aws-s3 wodle's test for source_ip_address (re.match, anchored at the start only).
WODLE_IP = re.compile(r"\d+\.\d+.\d+.\d+")
OUR_TEMPLATE = Path(__file__).parents[2] / "deploy" / "indexer" / "trailwarden-template.json"


def _role(record: dict[str, Any]) -> Any:
    payload = record.get("responseElements")
    return payload.get("role") if isinstance(payload, dict) else None


def _wodle_shaped(alert: CorpusAlert) -> RenderedAlert:
    """The alert as Wazuh's wodle would have shaped it: our two differences undone."""
    fields = copy.deepcopy(dict(alert.rendered.fields))
    aws = fields["data"]["aws"]
    ip = alert.record.record.get("sourceIPAddress")
    if isinstance(ip, str) and WODLE_IP.match(ip):
        aws["source_ip_address"] = ip
    role = _role(alert.record.record)
    if isinstance(role, str):
        aws["responseElements"]["role"] = role
    return RenderedAlert.from_line(orjson.dumps(fields), alert.rendered.dedup_key)


def _wazuh_template(wazuh_ref: Path) -> Path:
    return wazuh_ref / "indexer" / "wazuh-template.json"


def _present(server: OsmemProcess, alerts: list[CorpusAlert]) -> int:
    indices = {index_document(a.rendered.fields)[0] for a in alerts}
    return sum(server.count(index) for index in indices)


def test_the_wodles_shapes_are_refused_and_ours_index(
    osmem: OsmemProcess, cloudtrail_dir: Path, wazuh_ref: Path
) -> None:
    records = corpus_records(cloudtrail_dir)
    iam = [r for r in records if isinstance(_role(r.record), dict)]
    assert [r.record["eventName"] for r in iam] == ["CreateRole"]
    lambdas = [r for r in records if isinstance(_role(r.record), str)]
    rest = [r for r in records if r not in iam and r not in lambdas]
    # The IAM role object first, so the day's index maps role as an object; the
    # Lambda records next, so they land in the same (first) day.
    alerts = render_stock([*iam, *lambdas, *rest], wazuh_ref)
    assert len(alerts) == len(records)  # Wazuh's 80200 takes every aws event
    first_day = index_document(alerts[0].rendered.fields)[0]
    assert {index_document(a.rendered.fields)[0] for a in alerts[: 1 + len(lambdas)]} == {
        first_day
    }

    old = [_wodle_shaped(a) for a in alerts]
    changed = [a for a, o in zip(alerts, old, strict=True) if o.fields != a.rendered.fields]
    by_role = sorted(a.record.name for a in changed if isinstance(_role(a.record.record), str))
    assert by_role == [
        "aws.persistence.lambda-layer-extension.json#0",
        "aws.persistence.lambda-overwrite-code.json#0",
    ]
    ips = {a.record.record["sourceIPAddress"] for a in changed}
    assert "81.2.69.142, 192.168.10.10" in ips
    assert any(o[:1] == "0" and len(o) > 1 for ip in ips for o in ip.split("."))  # "035...."
    assert len(changed) > 100, len(changed)

    # template_check names the two problems, in this order of documents.
    simulator = IndexSimulator.from_template(orjson.loads(_wazuh_template(wazuh_ref).read_bytes()))
    kinds = set()
    for alert in old:
        kinds |= {
            (p.path, p.kind) for p in simulator.index(index_document(alert.fields)[1]).rejected
        }
    assert kinds == {
        ("data.aws.source_ip_address", ProblemKind.MALFORMED),
        ("data.aws.responseElements.role", ProblemKind.CONCRETE_FOR_OBJECT),
    }

    stats = ship(osmem.url, "wazuh", _wazuh_template(wazuh_ref), old)
    assert stats["item_errors"] == len(changed), stats
    assert stats["item_errors.mapper_parsing_exception"] == len(changed), stats
    assert stats["indexed"] == len(alerts) - len(changed), stats
    # The same alerts as the agent shapes them, into the same index: all accepted.
    stats = ship(osmem.url, "wazuh", _wazuh_template(wazuh_ref), [a.rendered for a in changed])
    assert stats["item_errors"] == 0, stats
    assert stats["indexed"] == len(changed), stats
    assert _present(osmem, alerts) == len(alerts)


def test_a_role_string_first_would_refuse_iams_role_object(
    cloudtrail_dir: Path, wazuh_ref: Path
) -> None:
    """The other order: osmem takes an object into a mapped string, Elasticsearch and
    OpenSearch do not, so this direction is checked with template_check alone."""
    records = corpus_records(cloudtrail_dir)
    lambdas = [r for r in records if isinstance(_role(r.record), str)]
    iam = [r for r in records if isinstance(_role(r.record), dict)]
    alerts = render_stock([*lambdas, *iam], wazuh_ref)
    template = orjson.loads(_wazuh_template(wazuh_ref).read_bytes())
    wodle, ours = IndexSimulator.from_template(template), IndexSimulator.from_template(template)
    problems = set()
    for alert in alerts:
        problems |= {
            (p.path, p.kind)
            for p in wodle.index(index_document(_wodle_shaped(alert).fields)[1]).rejected
        }
        assert ours.index(index_document(alert.rendered.fields)[1]).accepted, alert.label
    assert problems == {("data.aws.responseElements.role", ProblemKind.OBJECT_FOR_FIELD)}
    assert ours.field_type("data.aws.responseElements.role.arn") == "keyword"


# -- a stress corpus: every known shape alternation, in one day's index ------------------

_KEY = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/28/stress.json"


def _event(name: str, source: str = "ec2.amazonaws.com", **fields: Any) -> dict[str, Any]:
    return {
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "accountId": "111122223333", "userName": "u"},
        "eventTime": "2026-11-28T23:00:00Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "stress",
        "eventType": "AwsApiCall",
        "recipientAccountId": "111122223333",
        **fields,
    }


def _instances(*codes: Any) -> dict[str, Any]:
    items = [{"instanceId": f"i-{n}", "currentState": {"code": c}} for n, c in enumerate(codes)]
    return {"instancesSet": {"items": items}}


def _shape_pairs(cloudtrail_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of events whose shapes clash at one path (cloudtrail-formats.md §5)."""
    records = corpus_records(cloudtrail_dir)
    iam = next(r.record for r in records if isinstance(_role(r.record), dict))
    lambdas = [r.record for r in records if isinstance(_role(r.record), str)]
    lam = "lambda.amazonaws.com"
    return [
        # responseElements.role: IAM's Role object vs Lambda's role ARN (real records).
        (iam, lambdas[0]),
        (lambdas[1], iam),
        (
            _event("GetRole", "iam.amazonaws.com", responseElements={"role": {"roleName": "r"}}),
            _event("CreateFunction", lam, responseElements={"role": "arn:aws:iam::1:role/r"}),
        ),
        # sourceIPAddress: an address, then what the wodle's pattern also lets through.
        (_event("A", sourceIPAddress="10.0.0.1"), _event("B", sourceIPAddress="035.249.25.2")),
        (
            _event("A", sourceIPAddress="1.2x3y4"),
            _event("B", sourceIPAddress="81.2.69.142, 192.168.10.10"),
        ),
        (_event("A", sourceIPAddress="AWS Internal"), _event("B", sourceIPAddress="2001:db8::1")),
        # EC2's <Action>Request: "" for an empty request, an object otherwise.
        (
            _event(
                "DescribeEgressOnlyInternetGateways",
                requestParameters={"DescribeEgressOnlyInternetGatewaysRequest": ""},
            ),
            _event(
                "DescribeEgressOnlyInternetGateways",
                requestParameters={"DescribeEgressOnlyInternetGatewaysRequest": {"MaxResults": 5}},
            ),
        ),
        # Numbers vs strings outside arrays (analysisd prints every scalar as text).
        (
            _event("PublishVersion", lam, responseElements={"version": 3}),
            _event("GetFunction", lam, responseElements={"version": "$LATEST"}),
        ),
        (
            _event("DescribeInstances", requestParameters={"maxResults": 1000}),
            _event("DescribeInstances", requestParameters={"maxResults": "all"}),
        ),
        # An array keeps its numbers; one instance collapses to a numeric string.
        (
            _event("StartInstances", responseElements=_instances(0, 16)),
            _event("StartInstances", responseElements=_instances("16")),
        ),
        # The wodle's own casts: whole payloads, disableApiTermination, top-level tags.
        (
            _event("X", requestParameters="name=x", responseElements=True),
            _event("X", requestParameters={"name": "x"}, responseElements={"ok": "yes"}),
        ),
        (
            _event("X", additionalEventData=["a", "b"]),
            _event("X", additionalEventData={"a": "b"}),
        ),
        (
            _event("RunInstances", requestParameters={"disableApiTermination": True}),
            _event("RunInstances", requestParameters={"disableApiTermination": {"value": False}}),
        ),
        (_event("X", tags=["a", "b"]), _event("X", tags={"k": "v"})),
        # requestParameters.tags: a list of tag objects vs a tag map.
        (
            _event("CreateTags", requestParameters={"tags": [{"key": "a"}, {"key": "b"}]}),
            _event("TagResource", lam, requestParameters={"tags": {"key": "c"}}),
        ),
    ]


@pytest.mark.parametrize("template", ["wazuh", "trailwarden"])
@pytest.mark.parametrize("first", [0, 1], ids=["as-listed", "swapped"])
def test_alternating_shapes_in_one_day_index_all_index(
    osmem: OsmemProcess, cloudtrail_dir: Path, wazuh_ref: Path, template: str, first: int
) -> None:
    pairs = _shape_pairs(cloudtrail_dir)
    # a0 b0 a1 b1 ... then b0 a0 b1 a1 ...: every clash meets both orders in one index.
    sequence = [p[first] for p in pairs] + [p[1 - first] for p in pairs] + [p[first] for p in pairs]
    root = Path("/stress")
    records = [
        CorpusRecord(f"stress#{n}", root / _KEY, root, copy.deepcopy(r))
        for n, r in enumerate(sequence)
    ]
    alerts = render_stock(records, wazuh_ref)
    assert len(alerts) == len(records)
    assert len({index_document(a.rendered.fields)[0] for a in alerts}) == 1
    path = _wazuh_template(wazuh_ref) if template == "wazuh" else OUR_TEMPLATE

    # The stress corpus has teeth: shaped as the wodle shapes them, some are refused.
    body = orjson.loads(path.read_bytes())
    wodle, ours = IndexSimulator.from_template(body), IndexSimulator.from_template(body)
    wodle_refused = sum(
        not wodle.index(index_document(_wodle_shaped(a).fields)[1]).accepted for a in alerts
    )
    predicted = [
        a.label for a in alerts if not ours.index(index_document(a.rendered.fields)[1]).accepted
    ]
    assert not predicted, predicted
    if template == "wazuh":
        assert wodle_refused >= 3, wodle_refused

    stats = ship(osmem.url, template, path, [a.rendered for a in alerts])
    assert stats["item_errors"] == 0, stats
    assert stats["indexed"] == len(alerts), stats
    assert _present(osmem, alerts) == len(alerts)
