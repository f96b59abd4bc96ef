"""The tailer over real CloudTrail trees: what is read, once, and what is quarantined."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from cloudtrail_files import ACCOUNT, drop, expected_ids, record, records, s3_path, write_object
from tail_harness import TailHarness, jsonl, tree

from trailwarden.agent import tailer as tailer_module
from trailwarden.agent.positions import FileState


@pytest.fixture
async def bucket(tmp_path: Path) -> AsyncIterator[tuple[Path, TailHarness]]:
    root = tmp_path / "bucket"
    root.mkdir()
    harness = TailHarness(tmp_path / "data", [tree(root)])
    await harness.start()
    yield root, harness
    await harness.stop()
    harness.close()


async def test_a_new_file_is_read_once_and_wrapped_as_the_wodle_does(bucket) -> None:
    root, h = bucket
    path = drop(root, "new", 5)
    await h.wait_for(lambda: len(h.records) == 5)
    await h.settle()
    assert h.event_ids() == {i: 1 for i in expected_ids("new", 5)}
    first = json.loads(h.records[0].text)
    assert h.records[0].location == str(path)
    assert first["integration"] == "aws"
    aws = first["aws"]
    assert aws["log_info"] == {
        "aws_account_alias": "",
        "log_file": path.relative_to(root).as_posix(),
        "s3bucket": "bucket",
    }
    assert aws["aws_account_id"] == ACCOUNT and aws["source"] == "cloudtrail"
    assert "responseElements" not in aws  # null dropped, as the wodle does
    assert aws["requestParameters"]["instancesSet"]["items"] == {"instanceId": "i-0abc"}
    assert h.counters.files_done == 1 and h.counters.records_read == 5


async def test_files_are_read_oldest_first(bucket) -> None:
    root, h = bucket
    await h.stop()
    write_object(s3_path(root, stamp="20261127T1230Z"), records("late", 1))
    write_object(s3_path(root, stamp="20261127T1200Z"), records("early", 1))
    await h.start()
    await h.wait_for(lambda: len(h.records) == 2)
    assert [json.loads(r.text)["aws"]["eventID"] for r in h.records] == [
        "early-000000",
        "late-000000",
    ]


async def test_a_renamed_or_copied_file_is_not_read_again(bucket, caplog) -> None:
    root, h = bucket
    path = drop(root, "orig", 4)
    await h.wait_for(lambda: h.counters.files_done == 1)
    renamed = path.parent.parent / "28" / path.name
    renamed.parent.mkdir()
    path.rename(renamed)
    copy = s3_path(root)
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(renamed, copy)
    # and the same document stored plain instead of gzipped
    plain = s3_path(root, suffix=".json")
    plain.write_bytes(gzip.decompress(renamed.read_bytes()))
    with caplog.at_level(logging.INFO, logger="trailwarden.agent"):
        await h.settle(0.5)
    assert h.event_ids() == {i: 1 for i in expected_ids("orig", 4)}
    assert h.counters.files_already_read == 2  # the copy and the plain twin
    assert "already read: not read again" in caplog.text


async def test_digest_files_are_excluded_or_skipped_quietly(bucket, caplog) -> None:
    root, h = bucket
    digest = {
        "awsAccountId": ACCOUNT,
        "digestStartTime": "2026-11-27T12:00:00Z",
        "digestEndTime": "2026-11-27T13:00:00Z",
        "logFiles": [],
    }
    excluded = root / "AWSLogs" / ACCOUNT / "CloudTrail-Digest" / "us-east-1" / "2026" / "11" / "27"
    excluded.mkdir(parents=True)
    (excluded / f"{ACCOUNT}_CloudTrail-Digest_us-east-1_x_20261127T130000Z.json.gz").write_bytes(
        gzip.compress(orjson.dumps(digest))
    )
    stray = root / "digest-export.json"  # matched by the *.json include
    stray.write_bytes(orjson.dumps(digest))
    drop(root, "real", 2)
    with caplog.at_level(logging.WARNING, logger="trailwarden.agent"):
        await h.wait_for(lambda: h.counters.files_done == 2 and len(h.records) == 2)
    assert h.counters.digests_skipped == 1  # the excluded one was never opened
    assert h.counters.files_quarantined == 0
    assert "digest" not in caplog.text.lower()
    assert len(h.records) == 2


async def test_corrupt_and_truncated_gzip_are_quarantined_and_collection_goes_on(
    bucket, caplog
) -> None:
    root, h = bucket
    good = gzip.compress(orjson.dumps({"Records": records("bad", 50)}))
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 40] = b"\xff" * 40
    s3_path(root).parent.mkdir(parents=True, exist_ok=True)
    s3_path(root).write_bytes(bytes(corrupt))
    s3_path(root).write_bytes(good[: len(good) // 2])
    s3_path(root).write_bytes(b"\x1f\x8bnot gzip at all")
    drop(root, "fine", 3)
    with caplog.at_level(logging.WARNING, logger="trailwarden.agent"):
        await h.wait_for(
            lambda: (
                h.counters.files_quarantined == 3
                and h.counters.files_done == 1
                and len(h.records) >= 3
            )
        )
    assert "Quarantined" in caplog.text
    assert "corrupt_gzip" in caplog.text and "truncated_gzip" in caplog.text
    ids = h.event_ids()
    assert {i for i in ids if i.startswith("fine")} == expected_ids("fine", 3)
    assert all(count == 1 for count in ids.values())
    states = {pos.note for _, pos in h.store.items() if pos.state is FileState.QUARANTINED}
    assert states == {"corrupt_gzip", "truncated_gzip"}
    await h.settle()
    assert h.counters.files_quarantined == 3  # never retried


async def test_a_truncated_copy_completed_later_is_finished_not_repeated(bucket) -> None:
    """A file caught half-way through a copy: its first records went out, the rest follow."""
    root, h = bucket
    data = orjson.dumps({"Records": records("half", 40)})
    path = s3_path(root, suffix=".json")
    path.parent.mkdir(parents=True)
    cut = data.index(b'{"eventVersion"', len(data) // 2)  # after about 20 records
    path.write_bytes(data[: cut + 30])
    await h.wait_for(lambda: h.counters.files_quarantined == 1 and len(h.records) == 20)
    sent_first = len(h.records)
    assert 0 < sent_first < 40
    path.write_bytes(data)  # the copy completes
    await h.wait_for(lambda: h.counters.files_done == 1 and len(h.records) == 40)
    assert h.event_ids() == {i: 1 for i in expected_ids("half", 40)}


async def test_oversized_and_invalid_records_are_skipped_and_counted(
    tmp_path: Path, caplog
) -> None:
    root = tmp_path / "bucket"
    h = TailHarness(tmp_path / "data", [tree(root, max_record_bytes=4096)])
    recs = records("sz", 6)
    recs[2] = record("sz-000002", requestParameters={"blob": "B" * 10_000})
    body = orjson.dumps({"Records": recs})
    body = body.replace(b'"eventID":"sz-000004"', b'"eventID":"sz-000004",', 1)  # broken JSON
    path = s3_path(root)
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(body))
    await h.start()
    try:
        with caplog.at_level(logging.WARNING, logger="trailwarden.agent"):
            await h.wait_for(lambda: h.counters.files_done == 1 and len(h.records) == 4)
    finally:
        await h.stop()
        h.close()
    assert set(h.event_ids()) == {"sz-000000", "sz-000001", "sz-000003", "sz-000005"}
    assert h.counters.records_oversized == 1 and h.counters.records_invalid == 1
    assert "exceeds max_record_bytes=4096" in caplog.text


async def test_non_ascii_content_and_paths_arrive_intact(bucket) -> None:
    root, h = bucket
    text = "태그 값 ✓ — emoji 🚀, ünïcödé"
    path = s3_path(root).with_name(f"{ACCOUNT}_CloudTrail_us-east-1_20261127T0900Z_é雪.json.gz")
    write_object(path, [record("nonascii-1", requestParameters={"tagSet": {"value": text}})])
    await h.wait_for(lambda: len(h.records) == 1)
    assert h.records[0].location == str(path)
    aws = json.loads(h.records[0].text)["aws"]
    assert aws["requestParameters"]["tagSet"]["value"] == text
    assert text.encode() in h.records[0].text.encode()  # raw UTF-8, not \\u escapes


async def test_a_thousand_files_each_read_exactly_once(bucket) -> None:
    root, h = bucket
    for i in range(1000):
        write_object(
            s3_path(root, stamp=f"20261127T{i // 60 % 24:02d}{i % 60:02d}Z"), [record(f"k-{i:06d}")]
        )
    await h.wait_for(lambda: len(h.records) == 1000, limit_s=60)
    await h.settle()
    ids = h.event_ids()
    assert len(ids) == 1000 and set(ids.values()) == {1}


async def test_restart_mid_file_resends_the_spool_and_reads_on(tmp_path: Path, monkeypatch) -> None:
    """Crash while a file is half read: acknowledged batches stay done, the
    spooled one is sent again under its sequence, reading resumes after it."""
    monkeypatch.setattr(tailer_module, "SLICE_RECORDS", 5)
    root = tmp_path / "bucket"
    h = TailHarness(
        tmp_path / "data",
        [tree(root)],
        auto_ack=False,
        max_batch_records=10,
        spool_max_bytes=5000,  # one batch fills it: reading pauses mid-file
    )
    drop(root, "mid", 95)
    await h.start()
    for seq in (1, 2):
        await h.wait_for(lambda seq=seq: h.spool.last_seq == seq and h.backpressure.paused)
        h.ack_all()
    await h.wait_for(lambda: h.spool.last_seq == 3 and h.backpressure.paused)
    acknowledged = h.records[:20]
    spooled = {b.seq: b.records for b in h.spool.iter_unacked()}
    assert list(spooled) == [3]
    await h.stop(checkpoint=False)  # killed

    h.records.clear()
    h.spool_max_bytes = 64 * 1024 * 1024
    await h.start()
    try:
        assert {b.seq: b.records for b in h.spool.iter_unacked()} == spooled
        resent = [r for records_ in spooled.values() for r in records_]
        h.auto_ack = True
        await h.wait_for(lambda: h.counters.files_done == 1 and h.spool.unacked_batches == 0)
    finally:
        await h.stop()
        h.close()
    assert h.spool.last_seq > 3
    everything = acknowledged + resent + h.records
    ids = Counter(json.loads(r.text)["aws"]["eventID"] for r in everything)
    assert ids == {i: 1 for i in expected_ids("mid", 95)}


async def test_settling_files_wait_unless_seen_closed(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    h = TailHarness(tmp_path / "data", [tree(root)], settle_ms=60_000)
    await h.start()
    try:
        write_object(s3_path(root), records("fresh", 2))
        await h.settle(0.3)
        assert h.records == []  # modified just now: may still be being written
        old = write_object(s3_path(root), records("old", 1))
        past = old.stat().st_mtime - 3600
        os.utime(old, (past, past))
        await h.wait_for(lambda: len(h.records) == 1)
    finally:
        await h.stop()
        h.close()


async def test_inotify_sees_a_file_renamed_into_place_without_waiting(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    day = s3_path(root).parent
    day.mkdir(parents=True)
    h = TailHarness(
        tmp_path / "data", [tree(root)], inotify=True, settle_ms=60_000, scan_interval_s=30
    )
    await h.start()
    try:
        await h.settle(0.2)  # first scan done; the next one is 30 s away
        # Fresh (would wait 60 s to settle), but inotify saw it renamed into place.
        write_object(s3_path(root), records("notified", 3))
        await h.wait_for(lambda: len(h.records) == 3, limit_s=5)
    finally:
        await h.stop()
        h.close()


async def test_inotify_reads_a_new_object_without_walking_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tree with many objects already read: a new one must cost a look at that
    # file, not another walk of everything (the next scan is 30 s away).
    root = tmp_path / "bucket"
    for i in range(20):
        drop(root, f"old{i}", 1, stamp=f"10{i:02d}")
    walks = 0
    real_scan_trees = tailer_module.scan_trees

    def counting_scan_trees(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal walks
        walks += 1
        return real_scan_trees(*args, **kwargs)

    monkeypatch.setattr(tailer_module, "scan_trees", counting_scan_trees)
    h = TailHarness(tmp_path / "data", [tree(root)], inotify=True, scan_interval_s=30)
    await h.start()
    try:
        await h.wait_for(lambda: len(h.records) == 20, limit_s=5)
        await h.settle(0.2)
        walks_before = walks
        for i in range(3):
            drop(root, f"new{i}", 2, stamp=f"11{i:02d}")
        await h.wait_for(lambda: len(h.records) == 26, limit_s=5)
        drop(root, "digest-like", 1, stamp="1200", suffix=".txt")  # not included: ignored
        await h.settle(0.2)
        assert walks == walks_before
        assert len(h.records) == 26
        assert sorted(h.event_ids().values()) == [1] * 26
    finally:
        await h.stop()
        h.close()


async def test_inotify_follows_new_directories(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    root.mkdir()
    h = TailHarness(tmp_path / "data", [tree(root)], inotify=True, scan_interval_s=30)
    await h.start()
    try:
        await h.settle(0.2)
        drop(root, "newdirs", 2)  # AWSLogs/<account>/CloudTrail/<region>/Y/M/D created now
        await h.wait_for(lambda: len(h.records) == 2, limit_s=5)
        drop(root, "newday", 1, day="2026/11/28")
        await h.wait_for(lambda: len(h.records) == 3, limit_s=5)
    finally:
        await h.stop()
        h.close()


async def test_inotify_watches_empty_directories_present_at_start(tmp_path: Path) -> None:
    # A region whose day folder exists but is still empty when the agent starts,
    # beside folders that hold files: its first file must not wait for a full scan.
    root = tmp_path / "bucket"
    drop(root, "existing", 1)
    empty_day = s3_path(root, region="us-west-2").parent
    empty_day.mkdir(parents=True)
    h = TailHarness(tmp_path / "data", [tree(root)], inotify=True, scan_interval_s=30)
    await h.start()
    try:
        await h.wait_for(lambda: len(h.records) == 1, limit_s=5)
        await h.settle(0.2)  # first scan done; the next one is 30 s away
        drop(root, "later", 2, region="us-west-2")
        await h.wait_for(lambda: len(h.records) == 3, limit_s=5)
    finally:
        await h.stop()
        h.close()


async def test_positions_of_files_gone_for_long_are_forgotten(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    h = TailHarness(tmp_path / "data", [tree(root)], forget_after_s=0.3)
    path = drop(root, "gone", 2)
    await h.start()
    try:
        await h.wait_for(lambda: h.counters.files_done == 1 and len(h.store) == 1)
        path.unlink()
        await h.wait_for(lambda: len(h.store) == 0, limit_s=5)
    finally:
        await h.stop()
        h.close()


async def test_a_source_that_cannot_be_listed_forgets_nothing(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    h = TailHarness(tmp_path / "data", [tree(root)], forget_after_s=0.2)
    drop(root, "away", 2)
    await h.start()
    try:
        await h.wait_for(lambda: len(h.records) == 2 and len(h.store) == 1)
        away = tmp_path / "elsewhere"
        root.rename(away)  # unmounted, say
        await h.settle(0.8)
        assert len(h.store) == 1
        away.rename(root)  # back, with the same files
        await h.settle(0.5)
    finally:
        await h.stop()
        h.close()
    assert h.event_ids() == {i: 1 for i in expected_ids("away", 2)}


async def test_the_last_batch_leaves_once_every_object_is_read(tmp_path: Path) -> None:
    # Linger waits for records still coming; after a drained queue of whole
    # objects none are, so the partial batch is sealed at once, not in 60 s.
    root = tmp_path / "bucket"
    drop(root, "a", 3)
    drop(root, "b", 4)
    h = TailHarness(tmp_path / "data", [tree(root)], max_batch_records=100, linger_s=60)
    await h.start()
    try:
        await h.wait_for(lambda: len(h.records) == 7, limit_s=5)
        assert h.spool.last_seq == 1  # one batch for both objects
        drop(root, "c", 2)
        await h.wait_for(lambda: len(h.records) == 9, limit_s=5)
    finally:
        await h.stop()
        h.close()


async def test_an_open_growing_file_keeps_the_linger(tmp_path: Path) -> None:
    lines = tmp_path / "trail.jsonl"
    lines.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records("l", 2)))
    root = tmp_path / "bucket"
    drop(root, "o", 3)
    h = TailHarness(
        tmp_path / "data", [tree(root), jsonl(lines)], max_batch_records=100, linger_s=0.6
    )
    await h.start()
    try:
        await h.settle(0.3)
        assert h.records == []  # records may still come from the open file
        await h.wait_for(lambda: len(h.records) == 5, limit_s=5)
    finally:
        await h.stop()
        h.close()


async def test_the_c_envelope_and_python_deliver_the_same_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole documents go through the C envelope (on the inflater thread) where
    it is built; the records that reach the manager are those Python gives."""
    from trailwarden.agent import envelope

    if os.environ.get("TRAILWARDEN_PURE_PYTHON"):
        pytest.skip("TRAILWARDEN_PURE_PYTHON: the C envelope is not built")
    assert envelope._native is not None, "the C envelope is not built: run `make native`"
    root = tmp_path / "bucket"
    root.mkdir()
    write_object(s3_path(root, stamp="20261127T0100Z"), records("plain", 40))
    write_object(
        s3_path(root, stamp="20261127T0200Z"),
        [
            record("float", requestParameters={"ratio": 0.25}),  # Python wraps this one
            record("text", requestParameters={"tagSet": {"value": "태그 ✓ \"q\" \\ \n"}}),
            record("cast", responseElements="OK", sourceIPAddress="10.1.2.3"),
        ],
    )
    (root / "plain.json").write_bytes(orjson.dumps([record("bare", tags=["a", "b"])]))
    calls = []
    real = envelope._native.wrap_records

    def counting(*args):  # type: ignore[no-untyped-def]
        calls.append(args[-1])
        return real(*args)

    delivered, positions = {}, {}
    for native in (True, False):
        if native:
            monkeypatch.setattr(envelope._native, "wrap_records", counting)
        else:
            monkeypatch.setattr(envelope, "_native", None)
        harness = TailHarness(tmp_path / f"data-{native}", [tree(root, include=["**/*.json*"])])
        await harness.start()
        try:
            try:
                await harness.wait_for(lambda h=harness: len(h.records) == 44)
                await harness.settle()
            finally:
                await harness.stop()
            # Each file's position: all its records read, and the file's own size.
            positions[native] = sorted(
                (p.path, p.size, p.index, p.state) for _, p in harness.store.items()
            )
        finally:
            harness.close()
        delivered[native] = sorted((r.location, r.text) for r in harness.records)
    assert len(calls) == 3  # each document went through the C envelope once
    assert delivered[True] == delivered[False]
    expected = []
    for path in root.rglob("*.json*"):
        data = path.read_bytes()
        document = orjson.loads(gzip.decompress(data) if path.suffix == ".gz" else data)
        count = len(document["Records"] if isinstance(document, dict) else document)
        expected.append((str(path), path.stat().st_size, count, FileState.DONE))
    assert positions[True] == positions[False] == sorted(expected)
