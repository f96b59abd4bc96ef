"""Content fingerprints: stable across rename and copy, different for different content."""

from __future__ import annotations

import gzip
import os
import shutil
import zlib
from pathlib import Path

import orjson
import pytest

from trailwarden.agent.fingerprint import (
    HEAD_BYTES,
    content_fingerprint,
    first_lines_fingerprint,
    object_fingerprint,
)


def cloudtrail_document(n: int, tag: str = "") -> bytes:
    records = [
        {"eventVersion": "1.10", "eventID": f"{tag}event-{i}", "eventName": "StopInstances"}
        for i in range(n)
    ]
    return orjson.dumps({"Records": records})


@pytest.mark.parametrize("n", [3, 2000])  # smaller and larger than HEAD_BYTES
def test_renamed_moved_and_copied_objects_keep_their_fingerprint(tmp_path: Path, n: int) -> None:
    doc = cloudtrail_document(n)
    assert (len(doc) > HEAD_BYTES) is (n > 3)
    original = tmp_path / "a" / "123_CloudTrail_us-east-1_20261127T1205Z_X.json.gz"
    original.parent.mkdir()
    original.write_bytes(gzip.compress(doc, mtime=0))
    fp = object_fingerprint(original)

    copy = tmp_path / "b" / "copy.json.gz"
    copy.parent.mkdir()
    shutil.copy2(original, copy)
    moved = tmp_path / "moved.gz"
    os.rename(original, moved)

    assert object_fingerprint(copy) == fp
    assert object_fingerprint(moved) == fp
    assert fp.startswith("ct1:")


def test_the_plain_twin_and_a_recompressed_copy_match(tmp_path: Path) -> None:
    doc = cloudtrail_document(1500)
    gz = tmp_path / "x.json.gz"
    gz.write_bytes(gzip.compress(doc, compresslevel=9, mtime=0))
    other_gzip = tmp_path / "y.json.gz"
    other_gzip.write_bytes(gzip.compress(doc, compresslevel=1, mtime=123456))
    plain = tmp_path / "x.json"
    plain.write_bytes(doc)
    assert gz.read_bytes() != other_gzip.read_bytes()
    fp = object_fingerprint(gz)
    assert object_fingerprint(other_gzip) == fp
    assert object_fingerprint(plain) == fp
    assert fp == content_fingerprint(doc[:HEAD_BYTES], len(doc), zlib.crc32(doc))


def test_the_shared_fixture_twins(cloudtrail_dir: Path) -> None:
    base = cloudtrail_dir / "trailscraper_fixture"
    name = "111111111111_CloudTrail_eu-central-1_20171211T1505Z_A6kvhMoVeCsc7v8U.json"
    plain, gz = base / name, base / (name + ".gz")
    same_document = gzip.decompress(gz.read_bytes()) == plain.read_bytes()
    assert (object_fingerprint(plain) == object_fingerprint(gz)) is same_document


def test_different_content_gives_different_fingerprints(tmp_path: Path) -> None:
    a = cloudtrail_document(2000)
    variants = {
        "a": a,
        "tail": a[:-20] + b"X" + a[-19:],  # same head and size, different end
        "middle": a[:9000] + b"Y" + a[9001:],  # same head and size, different middle
        "longer": a[:-2] + b",{}]}",
        "other": cloudtrail_document(2000, tag="o"),
    }
    prints = set()
    for name, doc in variants.items():
        path = tmp_path / f"{name}.json.gz"
        path.write_bytes(gzip.compress(doc, mtime=0))
        prints.add(object_fingerprint(path))
        plain = tmp_path / f"{name}.json"
        plain.write_bytes(doc)
        prints.add(object_fingerprint(plain))
    assert len(prints) == len(variants)  # each gz equals its twin, all differ otherwise


def test_zero_padded_gzip_is_read_in_full(tmp_path: Path) -> None:
    doc = cloudtrail_document(2000)
    plain = tmp_path / "p.json"
    plain.write_bytes(doc)
    padded = tmp_path / "z.json.gz"
    padded.write_bytes(gzip.compress(doc, mtime=0) + b"\0" * 512)
    assert object_fingerprint(padded) == object_fingerprint(plain)


def test_first_lines_fingerprint_of_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "ct.jsonl"
    path.write_bytes(b'{"eventID":"a"')
    assert first_lines_fingerprint(path) is None  # no complete line yet
    path.write_bytes(b'{"eventID":"a"}\n')
    fp = first_lines_fingerprint(path)
    assert fp is not None and fp.startswith("ln1:")
    with path.open("ab") as f:
        f.write(b'{"eventID":"b"}\n{"partial')
    assert first_lines_fingerprint(path) == fp
    assert first_lines_fingerprint(path, lines=2) not in (None, fp)
    assert first_lines_fingerprint(path, lines=3) is None

    renamed = tmp_path / "ct.jsonl.1"
    os.rename(path, renamed)
    assert first_lines_fingerprint(renamed) == fp
    path.write_bytes(b'{"eventID":"c"}\n')  # a new file at the old path
    assert first_lines_fingerprint(path) != fp


def test_first_lines_fingerprint_of_a_huge_first_line(tmp_path: Path) -> None:
    path = tmp_path / "ct.jsonl"
    path.write_bytes(b"x" * 10_000)
    fp = first_lines_fingerprint(path, max_bytes=4096)
    assert fp is not None
    path.write_bytes(b"x" * 20_000 + b"\n")
    assert first_lines_fingerprint(path, max_bytes=4096) == fp
    with pytest.raises(ValueError, match="lines"):
        first_lines_fingerprint(path, lines=0)
