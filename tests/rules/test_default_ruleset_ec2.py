"""The nine scenarios of Wazuh's "Amazon EC2 use cases" page on the bundled ruleset.

Each record goes through the agent's wodle envelope (compact JSON) and the
engine with the bundled ruleset, and must fire the page's rule at its level.
Real CloudTrail records from ../shared/cloudtrail are used where they exist;
the others are built from AWS's documented record layout.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from trailwarden.agent.envelope import wrap_record
from trailwarden.manager.ruleset_files import default_layout, read_sources
from trailwarden.rules.engine import Engine, EngineOptions

S3_KEY = ("AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/27/"
          "123456789012_CloudTrail_us-east-1_20261127T1200Z_abcdefghijklmnop.json.gz")
UNAUTHORIZED = {
    "errorCode": "Client.UnauthorizedOperation",
    "errorMessage": "You are not authorized to perform this operation. Encoded authorization"
                    " failure message: 4c2e1a",
}


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine, problems = Engine.compile(read_sources(default_layout()),
                                      EngineOptions(log_alert_level=1))
    assert not problems, [str(p) for p in problems]
    return engine


def _records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    if path.suffix == ".log":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict):
        return list(data.get("Records", []))  # other objects (stats, digests) hold none
    return list(data)


def _real(cloudtrail_dir: Path, name: str, *, failed: bool) -> dict[str, Any]:
    for path in sorted(cloudtrail_dir.rglob("*")):
        if path.suffix not in (".json", ".log") or "digest" in path.name:
            continue
        for record in _records(path):
            if record.get("eventName") == name and ("errorCode" in record) == failed:
                return record
    raise AssertionError(f"no real {name} record (failed={failed}) in {cloudtrail_dir}")


def _documented(name: str, request: dict[str, Any], response: dict[str, Any] | None,
                **extra: Any) -> dict[str, Any]:
    """A record in the layout of AWS's CloudTrail record-contents documentation."""
    return {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser", "principalId": "AIDAEXAMPLEPRINCIPAL",
            "arn": "arn:aws:iam::123456789012:user/alice", "accountId": "123456789012",
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "alice",
        },
        "eventTime": "2026-11-27T11:58:02Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64",
        **extra,
        "requestParameters": request,
        "responseElements": response,
        "requestID": "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d",
        "eventID": f"00000000-0000-4000-8000-{abs(hash(name)) % 10**12:012d}",
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": "123456789012",
        "eventCategory": "Management",
    }


def _scenarios(cloudtrail_dir: Path) -> dict[str, tuple[dict[str, Any], int, int]]:
    start = _real(cloudtrail_dir, "StartInstances", failed=False)
    stop = _real(cloudtrail_dir, "StopInstances", failed=False)
    start_denied = copy.deepcopy(start)
    start_denied.update(UNAUTHORIZED, responseElements=None)
    stop_denied = copy.deepcopy(stop)
    stop_denied.update(UNAUTHORIZED, responseElements=None)
    return {
        "run instance": (_real(cloudtrail_dir, "RunInstances", failed=False), 80301, 2),
        "run instance unauthorized": (_real(cloudtrail_dir, "RunInstances", failed=True),
                                      80303, 5),
        "start instance": (start, 80305, 2),
        "start instance unauthorized": (start_denied, 80306, 5),
        "stop instance": (stop, 80308, 2),
        "stop instance unauthorized": (stop_denied, 80309, 5),
        "create security group": (_documented(
            "CreateSecurityGroup",
            {"groupName": "web", "groupDescription": "web tier", "vpcId": "vpc-0a1b2c3d"},
            {"_return": True, "groupId": "sg-0123456789abcdef0"}), 80404, 2),
        "allocate address": (_documented(
            "AllocateAddress", {"domain": "vpc"},
            {"publicIp": "203.0.113.25", "allocationId": "eipalloc-0123456789abcdef0",
             "domain": "vpc", "networkBorderGroup": "us-east-1"}), 80411, 2),
        "associate address": (_documented(
            "AssociateAddress",
            {"allocationId": "eipalloc-0123456789abcdef0", "instanceId": "i-0abc123def4567890",
             "allowReassociation": False},
            {"_return": True, "associationId": "eipassoc-0123456789abcdef0"}), 80446, 2),
    }


def test_nine_page_scenarios(engine: Engine, cloudtrail_dir: Path) -> None:
    results = {}
    for name, (record, rule_id, level) in _scenarios(cloudtrail_dir).items():
        message = wrap_record(record, log_file=S3_KEY, bucket="trail-bucket",
                              account_id="123456789012").decode()
        verdict = engine.process(message, "cloudtrail", 1_790_000_000.0, engine.new_state())
        results[name] = (verdict.rule.id if verdict.rule else None, verdict.level, verdict.alert)
        assert results[name] == (rule_id, level, True), (name, results[name])
    assert len(results) == 9


def test_alert_shows_the_page_rule_and_the_record(engine: Engine, cloudtrail_dir: Path) -> None:
    record = _real(cloudtrail_dir, "RunInstances", failed=True)
    message = wrap_record(record, log_file=S3_KEY, bucket="trail-bucket",
                          account_id="123456789012").decode()
    verdict = engine.process(message, "cloudtrail", 1_790_000_000.0, engine.new_state())
    alert = engine.render(verdict, alert_id="1790000000.0", manager_name="manager").alert
    assert alert["rule"] == {
        "level": 5, "description": "Amazon-ec2: Run instance unauthorized", "id": "80303",
        "firedtimes": 1, "mail": False, "groups": ["aws", "aws_ec2", "amazon"],
        "pci_dss": ["10.6.1"],
    }
    assert alert["decoder"] == {"name": "aws-cloudtrail"}
    data = alert["data"]
    assert data["action"] == "RunInstances"
    assert data["aws"]["eventName"] == "RunInstances"
    assert data["aws"]["errorCode"] == "Client.UnauthorizedOperation"
    assert data["aws"]["source"] == "cloudtrail"
    assert data["aws"]["log_info"]["s3bucket"] == "trail-bucket"


def test_other_ec2_calls_are_silenced_by_the_base_rule(engine: Engine) -> None:
    record = _documented("DescribeInstances", {"maxResults": 5}, None, readOnly=True)
    message = wrap_record(record, log_file=S3_KEY, bucket="b", account_id=None).decode()
    verdict = engine.process(message, "cloudtrail", 1_790_000_000.0, engine.new_state())
    assert (verdict.rule.id if verdict.rule else None, verdict.alert) == (80300, False)
