"""The bundled sample tree: reproducible, complete, and readable end to end."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

import trailwarden.agent
from trailwarden.agent.cloudtrail_file import Problem, ProblemKind, Record, read_cloudtrail_file
from trailwarden.agent.discovery import SourceTree, scan_trees
from trailwarden.agent.envelope import origin_for, wrap_record

SAMPLES = Path(trailwarden.agent.__file__).parent / "samples"
TREE = SAMPLES / "cloudtrail"


def documents(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*.json*")):
        data = path.read_bytes()
        out[path.relative_to(root).as_posix()] = (
            gzip.decompress(data) if path.name.endswith(".gz") else data
        )
    return out


def regenerate(out: Path) -> None:
    subprocess.run(
        [sys.executable, str(SAMPLES / "generate.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )


def test_generator_reproduces_the_checked_in_tree(tmp_path: Path) -> None:
    regenerate(tmp_path / "a")
    regenerate(tmp_path / "b")
    assert documents(tmp_path / "a") == documents(TREE)
    for rel in documents(TREE):  # byte-identical run to run (fixed gzip mtime)
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_discovery_finds_the_log_files_but_not_the_digest() -> None:
    result = scan_trees([SourceTree(str(TREE))])
    names = [Path(c.rel_path).name for c in result.candidates]
    assert len(names) == 6
    assert sum(n.endswith(".json") for n in names) == 1
    assert not any("Digest" in n for n in names)
    stamps = [n.split("_")[3] for n in names]
    assert stamps == sorted(stamps)
    assert len(documents(TREE)) == 7  # the digest is there, just not a candidate


def read_all() -> list[tuple[Path, Record]]:
    out = []
    for candidate in scan_trees([SourceTree(str(TREE))]).candidates:
        for item in read_cloudtrail_file(candidate.path, chunk_bytes=333):
            assert isinstance(item, Record), str(item)
            out.append((Path(candidate.path), item))
    return out


def test_records_cover_the_required_events() -> None:
    records = [r.obj for _, r in read_all()]
    assert len(records) == 38
    names = Counter(r["eventName"] for r in records)
    for name in (
        "RunInstances", "StartInstances", "StopInstances", "CreateSecurityGroup",
        "AllocateAddress", "AssociateAddress", "ConsoleLogin", "CreateUser", "CreateBucket",
        "DescribeInstances",
    ):  # fmt: skip
        assert names[name] >= 1, name
    failures = {(r["eventName"], r.get("errorCode")) for r in records if "errorCode" in r}
    for name in ("RunInstances", "StartInstances", "StopInstances"):
        assert (name, "Client.UnauthorizedOperation") in failures
        assert any(r["eventName"] == name and "errorCode" not in r for r in records)
    logins = [r for r in records if r["eventName"] == "ConsoleLogin"]
    assert {r["responseElements"]["ConsoleLogin"] for r in logins} == {"Success", "Failure"}
    assert all("errorCode" not in r for r in logins)
    assert any(r["eventType"] == "AwsServiceEvent" for r in records)
    assert any(r["eventSource"] == "iam.amazonaws.com" for r in records)
    assert any(r["eventSource"] == "s3.amazonaws.com" for r in records)
    assert len({r["eventID"] for r in records}) == len(records)


def test_every_record_wraps_with_the_account_from_its_path() -> None:
    wrapped = []
    for path, record in read_all():
        origin = origin_for(path, TREE)
        assert origin.account_id == "123456789012" and origin.bucket == "cloudtrail"
        out = wrap_record(
            record.obj, log_file=origin.log_file, bucket=origin.bucket, account_id=origin.account_id
        )
        assert orjson.loads(out)["aws"]["log_info"]["log_file"].startswith("AWSLogs/123456789012/")
        wrapped.append(out)
    denied = [w for w in wrapped if b'"errorCode":"Client.UnauthorizedOperation"' in w]
    assert len(denied) == 3
    assert any("결제 서비스 웹 서버 🚀".encode() in w for w in wrapped)  # raw UTF-8 in a .gz
    assert any("결제 😀".encode() in w for w in wrapped)  # \u-escaped in the plain .json


def test_the_digest_file_is_recognised() -> None:
    (digest,) = TREE.rglob("*CloudTrail-Digest*.json.gz")
    items = list(read_cloudtrail_file(str(digest)))
    assert len(items) == 1 and isinstance(items[0], Problem)
    assert items[0].kind is ProblemKind.DIGEST_FILE
