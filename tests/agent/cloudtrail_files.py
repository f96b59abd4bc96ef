"""Build CloudTrail files for the agent's tests: S3 layout, unique event ids."""

from __future__ import annotations

import gzip
import itertools
import os
from pathlib import Path
from typing import Any

import orjson

ACCOUNT = "123456789012"
_counter = itertools.count()


def record(event_id: str, **extra: Any) -> dict[str, Any]:
    """A small but realistic CloudTrail record."""
    rec: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLE",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
            "accountId": ACCOUNT,
            "userName": "alice",
        },
        "eventTime": "2026-11-27T12:00:00Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": "DescribeInstances",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2.15",
        "requestParameters": {"instancesSet": {"items": [{"instanceId": "i-0abc"}]}},
        "responseElements": None,
        "requestID": f"req-{event_id}",
        "eventID": event_id,
        "readOnly": True,
        "eventType": "AwsApiCall",
        "recipientAccountId": ACCOUNT,
    }
    rec.update(extra)
    return rec


def records(prefix: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [record(f"{prefix}-{i:06d}", **extra) for i in range(n)]


def s3_path(
    root: Path,
    region: str = "us-east-1",
    day: str = "2026/11/27",
    stamp: str | None = None,
    suffix: str = ".json.gz",
) -> Path:
    n = next(_counter)
    stamp = stamp or f"20261127T{(n // 60) % 24:02d}{n % 60:02d}Z"
    name = f"{ACCOUNT}_CloudTrail_{region}_{stamp}_{n:016x}{suffix}"
    return root / "AWSLogs" / ACCOUNT / "CloudTrail" / region / day / name


def write_object(
    path: Path, recs: list[dict[str, Any]], *, gz: bool | None = None, atomic: bool = True
) -> Path:
    """Write {"Records": recs}; gzip when the name says so. Atomic: tmp + rename."""
    data = orjson.dumps({"Records": recs})
    if gz is None:
        gz = path.name.endswith(".gz")
    if gz:
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if atomic:
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    else:
        path.write_bytes(data)
    return path


def drop(root: Path, prefix: str, n: int, **kwargs: Any) -> Path:
    """A new S3-layout .json.gz object with n records whose ids start with prefix."""
    return write_object(s3_path(root, **kwargs), records(prefix, n))


def expected_ids(prefix: str, n: int) -> set[str]:
    return {f"{prefix}-{i:06d}" for i in range(n)}
