"""Discovery over real directory trees: globs, order, bounded scans, pruning."""

from __future__ import annotations

import calendar
import os
from pathlib import Path

import pytest

from trailwarden.agent import discovery
from trailwarden.agent.discovery import (
    ScanCursor,
    SourceTree,
    candidate_at,
    compile_glob,
    delivery_time,
    scan_trees,
)

ACCT = "123456789012"


def ct_key(region: str, day: str, stamp: str, prefix: str = "", ext: str = ".json.gz") -> str:
    y, m, d = day.split("/")
    name = f"{ACCT}_CloudTrail_{region}_{y}{m}{d}T{stamp}Z_ABCDEFGHIJKLMNOP{ext}"
    return f"{prefix}AWSLogs/{ACCT}/CloudTrail/{region}/{day}/{name}"


def touch(root: Path, rel: str, mtime: float = 1_700_000_000) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"{}")
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "bucket"
    # mtimes deliberately run against delivery order: names must win
    touch(root, ct_key("us-east-1", "2026/11/27", "1210"), mtime=1_000)
    touch(root, ct_key("us-east-1", "2026/11/27", "1205"), mtime=3_000)
    touch(root, ct_key("eu-west-1", "2026/11/26", "2355"), mtime=2_000)
    touch(root, ct_key("eu-west-1", "2026/11/27", "1215", ext=".json"), mtime=4_000)
    touch(
        root,
        f"logs/AWSLogs/o-abc123defg/{ACCT}/CloudTrail/us-west-2/2026/11/27/"
        f"{ACCT}_CloudTrail_us-west-2_20261127T1200Z_QQQQQQQQQQQQQQQQ.json.gz",
    )
    touch(
        root,
        f"AWSLogs/{ACCT}/CloudTrail-Digest/us-east-1/2026/11/27/"
        f"{ACCT}_CloudTrail-Digest_us-east-1_t_us-east-1_20261127T130000Z.json.gz",
    )
    touch(root, "exports/flaws.json", mtime=1_500)  # plain export: mtime decides
    touch(root, "exports/notes.txt")
    touch(root, "AWSLogs/stray.json.gz")  # not the S3 layout and not .json
    return root


def rels(result: discovery.ScanResult) -> list[str]:
    return [c.rel_path for c in result.candidates]


def test_default_globs_and_oldest_first(tree: Path) -> None:
    result = scan_trees([SourceTree(str(tree))])
    assert result.cursor is None and result.errors == ()
    assert rels(result) == [
        "exports/flaws.json",
        ct_key("eu-west-1", "2026/11/26", "2355"),
        f"logs/AWSLogs/o-abc123defg/{ACCT}/CloudTrail/us-west-2/2026/11/27/"
        f"{ACCT}_CloudTrail_us-west-2_20261127T1200Z_QQQQQQQQQQQQQQQQ.json.gz",
        ct_key("us-east-1", "2026/11/27", "1205"),
        ct_key("us-east-1", "2026/11/27", "1210"),
        ct_key("eu-west-1", "2026/11/27", "1215", ext=".json"),
    ]
    first = result.candidates[1]
    assert first.delivered_at == calendar.timegm((2026, 11, 26, 23, 55, 0, 0, 0, 0))
    assert first.path == str(tree / first.rel_path)
    assert first.size == 2 and first.ino > 0
    assert result.candidates[0].delivered_at == 1_500


def test_custom_globs(tree: Path) -> None:
    only_east = SourceTree(
        str(tree), include=("AWSLogs/*/CloudTrail/us-east-1/**/*.json.gz",), exclude=()
    )
    assert rels(scan_trees([only_east])) == [
        ct_key("us-east-1", "2026/11/27", "1205"),
        ct_key("us-east-1", "2026/11/27", "1210"),
    ]
    everything = SourceTree(str(tree), include=("**",), exclude=("*.txt", "o-*"))
    got = rels(scan_trees([everything]))
    assert "exports/notes.txt" not in got and not any("o-abc" in r for r in got)
    assert any("CloudTrail-Digest" in r for r in got)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        (
            "**/AWSLogs/**/CloudTrail/*/*/*/*/*.json.gz",
            "AWSLogs/1/CloudTrail/r/y/m/d/f.json.gz",
            True,
        ),
        (
            "**/AWSLogs/**/CloudTrail/*/*/*/*/*.json.gz",
            "p/q/AWSLogs/o-x/1/CloudTrail/r/y/m/d/f.json.gz",
            True,
        ),
        (
            "**/AWSLogs/**/CloudTrail/*/*/*/*/*.json.gz",
            "AWSLogs/1/CloudTrail/r/y/m/f.json.gz",
            False,
        ),
        (
            "**/AWSLogs/**/CloudTrail/*/*/*/*/*.json.gz",
            "AWSLogs/1/CloudTrail-Digest/r/y/m/d/f.json.gz",
            False,
        ),
        ("a/*.json", "a/b/c.json", False),
        ("a/**/c.json", "a/c.json", True),
        ("a/**", "a/x/y", True),
        ("a/b?/[cd].json", "a/bz/d.json", True),
        ("*.json", "deep/down/x.json", True),
        ("*.json", "x.json.gz", False),
    ],
)
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert compile_glob(pattern)(path.split("/")) is expected


def test_exclude_names_match_any_segment() -> None:
    assert compile_glob("*Digest*", any_segment=True)(["AWSLogs", "CloudTrail-Digest", "x.gz"])
    assert not compile_glob("*Digest*")(["AWSLogs", "CloudTrail-Digest", "x.gz"])
    for bad in ("", "/abs", "dir/"):
        with pytest.raises(ValueError, match="relative path pattern"):
            compile_glob(bad)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            f"{ACCT}_CloudTrail_us-east-1_20261127T1205Z_ABCDEFGHIJKLMNOP.json.gz",
            (2026, 11, 27, 12, 5, 0),
        ),
        (
            f"{ACCT}_CloudTrail-Digest_us-east-1_t_us-east-1_20261127T130502Z.json.gz",
            (2026, 11, 27, 13, 5, 2),
        ),
        ("flaws.json", None),
        (f"{ACCT}_CloudTrail_us-east-1_20261399T1205Z_X.json.gz", None),
    ],
)
def test_delivery_time_from_names(name: str, expected: tuple[int, ...] | None) -> None:
    want = None if expected is None else calendar.timegm((*expected, 0, 0, 0))
    assert delivery_time(name) == want


@pytest.mark.parametrize("budget", [1, 2, 3, 7, 50])
def test_bounded_scans_resume_and_cover_everything_once(
    tree: Path, tmp_path: Path, budget: int
) -> None:
    second = tmp_path / "second"
    touch(second, ct_key("us-east-1", "2026/11/28", "0000"))
    trees = [SourceTree(str(tree)), SourceTree(str(tmp_path / "missing")), SourceTree(str(second))]
    full = scan_trees(trees)
    seen: list[str] = []
    cursor: ScanCursor | None = None
    scans = 0
    while scans < 1000:
        scans += 1
        result = scan_trees(trees, max_entries=budget, cursor=cursor)
        seen += [c.path for c in result.candidates]
        cursor = result.cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(c.path for c in full.candidates)
    assert len(seen) == len(set(seen)) == 7
    assert budget >= 50 or scans > 1
    assert any("missing" in e and "cannot list" in e for e in full.errors)


def test_ignore_older_prunes_old_date_directories(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path: str) -> object:
        listed.append(path)
        return real_scandir(path)

    monkeypatch.setattr(discovery.os, "scandir", recording_scandir)
    touch(tree, ct_key("us-east-1", "2024/01/05", "0000"))
    touch(tree, ct_key("us-east-1", "2026/10/30", "0000"))
    now = calendar.timegm((2026, 11, 27, 12, 30, 0, 0, 0, 0))
    result = scan_trees([SourceTree(str(tree))], ignore_older_s=86_400, now=now)
    assert rels(result) == [
        ct_key("eu-west-1", "2026/11/26", "2355"),
        f"logs/AWSLogs/o-abc123defg/{ACCT}/CloudTrail/us-west-2/2026/11/27/"
        f"{ACCT}_CloudTrail_us-west-2_20261127T1200Z_QQQQQQQQQQQQQQQQ.json.gz",
        ct_key("us-east-1", "2026/11/27", "1205"),
        ct_key("us-east-1", "2026/11/27", "1210"),
        ct_key("eu-west-1", "2026/11/27", "1215", ext=".json"),
    ]
    east = str(tree / f"AWSLogs/{ACCT}/CloudTrail/us-east-1")
    assert east + "/2026" in listed and east + "/2026/11" in listed
    assert east + "/2024" not in listed  # the year is wholly too old
    assert east + "/2026/10" not in listed
    assert not any("CloudTrail-Digest" in p for p in listed)  # excluded directory


def test_invalid_budget() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        scan_trees([], max_entries=0)


def test_an_overfull_directory_is_capped_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "MAX_DIR_ENTRIES", 5)
    for i in range(8):
        touch(tmp_path, f"flat/{i}.json")
    result = scan_trees([SourceTree(str(tmp_path / "flat"))])
    assert len(result.candidates) == 5
    assert any("more than 5 entries" in e for e in result.errors)


def test_candidate_at_agrees_with_a_scan_file_by_file(tree: Path, tmp_path: Path) -> None:
    """What inotify names is judged as the scan judges it: same files, same facts."""
    for source in (
        SourceTree(str(tree)),
        SourceTree(str(tree), include=("**/*.json", "**/*.json.gz"), exclude=("exports",)),
    ):
        scanned = {c.path: c for c in scan_trees([source]).candidates}
        for path in sorted(p for p in tree.rglob("*") if p.is_file()):
            assert candidate_at(source, str(path)) == scanned.get(str(path)), path
    source = SourceTree(str(tree))
    assert candidate_at(source, str(tmp_path / "elsewhere.json.gz")) is None
    assert candidate_at(source, str(tree / ct_key("us-east-1", "2026/11/27", "9999"))) is None
    assert candidate_at(source, str(tree / ".." / "bucket" / ct_key("us-east-1", "2026/11/27", "1210"))) is None


def test_candidate_at_applies_ignore_older(tree: Path) -> None:
    source = SourceTree(str(tree))
    path = str(tree / ct_key("us-east-1", "2026/11/27", "1210"))
    now = calendar.timegm((2026, 11, 27, 13, 0, 0))
    assert candidate_at(source, path, ignore_older_s=3600, now=now) is not None
    assert candidate_at(source, path, ignore_older_s=60, now=now) is None
