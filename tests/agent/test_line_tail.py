"""Append-only JSON-lines files: growth, restart, truncation, copytruncate, rename rotation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import orjson
import pytest
from cloudtrail_files import expected_ids, record, records
from tail_harness import TailHarness, jsonl


def lines_of(prefix: str, start: int, n: int) -> bytes:
    return b"".join(
        orjson.dumps(record(f"{prefix}-{i:06d}")) + b"\n" for i in range(start, start + n)
    )


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


@pytest.fixture
async def logs(tmp_path: Path):  # type: ignore[no-untyped-def]
    directory = tmp_path / "logs"
    directory.mkdir()
    harness = TailHarness(tmp_path / "data", [jsonl(directory, include=("*.jsonl", "*.jsonl.1"))])
    yield directory, harness
    if harness.task is not None and not harness.task.done():
        await harness.stop()
    harness.close()


def ids(h: TailHarness) -> dict[str, int]:
    return dict(h.event_ids())


async def test_growing_file_is_read_as_it_grows_complete_lines_only(logs) -> None:
    directory, h = logs
    path = directory / "trail.jsonl"
    path.write_bytes(lines_of("g", 0, 3))
    await h.start()
    await h.wait_for(lambda: len(h.records) == 3)
    append(path, lines_of("g", 3, 2) + b'{"eventID":"partial')
    await h.wait_for(lambda: len(h.records) == 5)
    await h.settle(0.2)
    assert len(h.records) == 5  # the partial line waits for its newline
    append(path, b'-x"}\n')
    await h.wait_for(lambda: len(h.records) == 6)
    assert ids(h) == {**{i: 1 for i in expected_ids("g", 5)}, "partial-x": 1}
    assert h.records[0].location == str(path)
    assert json.loads(h.records[0].text)["aws"]["log_info"]["log_file"] == "trail.jsonl"


async def test_restart_resumes_at_the_saved_byte_offset(logs) -> None:
    directory, h = logs
    path = directory / "trail.jsonl"
    path.write_bytes(lines_of("r", 0, 10))
    await h.start()
    await h.wait_for(lambda: len(h.records) == 10)
    await h.stop()
    append(path, lines_of("r", 10, 5))
    await h.start()
    await h.wait_for(lambda: len(h.records) == 15)
    await h.settle(0.2)
    assert ids(h) == {i: 1 for i in expected_ids("r", 15)}


async def test_truncation_in_place_reads_the_new_content_only(logs, caplog) -> None:
    directory, h = logs
    path = directory / "trail.jsonl"
    path.write_bytes(lines_of("old", 0, 6))
    await h.start()
    await h.wait_for(lambda: len(h.records) == 6)
    with caplog.at_level(logging.WARNING, logger="trailwarden.agent"):
        path.write_bytes(lines_of("new", 0, 2))  # truncated and rewritten, shorter
        await h.wait_for(lambda: len(h.records) == 8)
    assert ids(h) == {
        **{i: 1 for i in expected_ids("old", 6)},
        **{i: 1 for i in expected_ids("new", 2)},
    }
    assert "truncated or rewritten" in caplog.text
    assert h.counters.truncations >= 1


async def test_rewritten_with_more_content_is_noticed_by_its_first_line(logs) -> None:
    directory, h = logs
    path = directory / "trail.jsonl"
    path.write_bytes(lines_of("v1", 0, 2))
    await h.start()
    await h.wait_for(lambda: len(h.records) == 2)
    path.write_bytes(lines_of("v2", 0, 5))  # longer than before: size alone would miss it
    await h.wait_for(lambda: len(h.records) == 7)
    assert ids(h) == {
        **{i: 1 for i in expected_ids("v1", 2)},
        **{i: 1 for i in expected_ids("v2", 5)},
    }


async def test_copytruncate_reads_the_tail_from_the_copy_once(logs) -> None:
    directory, h = logs
    path = directory / "trail.jsonl"
    path.write_bytes(lines_of("ct", 0, 4))
    await h.start()
    await h.wait_for(lambda: len(h.records) == 4)
    await h.stop()
    # While the agent is down: more lines, then logrotate's copytruncate.
    append(path, lines_of("ct", 4, 3))
    (directory / "trail.jsonl.1").write_bytes(path.read_bytes())
    path.write_bytes(b"")
    append(path, lines_of("after", 0, 2))
    await h.start()
    await h.wait_for(lambda: len(h.records) == 9)
    await h.settle(0.3)
    assert ids(h) == {
        **{i: 1 for i in expected_ids("ct", 7)},
        **{i: 1 for i in expected_ids("after", 2)},
    }


async def test_rename_rotation_finishes_the_old_file_through_its_descriptor(logs) -> None:
    directory, h = logs
    path = directory / "trail.jsonl"
    path.write_bytes(lines_of("rot", 0, 3))
    await h.start()
    await h.wait_for(lambda: len(h.records) == 3)
    # The writer appends, then logrotate renames to a name no glob matches.
    with path.open("ab") as writer:
        writer.write(lines_of("rot", 3, 2))
        path.rename(directory / "trail.jsonl.2026-11-27")
        writer.write(lines_of("rot", 5, 1))  # the writer's last line, after the rename
    path.write_bytes(lines_of("fresh", 0, 2))
    await h.wait_for(lambda: len(h.records) == 8)
    await h.settle(0.3)
    assert ids(h) == {
        **{i: 1 for i in expected_ids("rot", 6)},
        **{i: 1 for i in expected_ids("fresh", 2)},
    }
    assert h.counters.rotations == 1


async def test_lines_holding_whole_documents_resume_mid_line(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "docs.jsonl"
    path.write_bytes(orjson.dumps({"Records": records("doc", 25)}) + b"\n")
    h = TailHarness(
        tmp_path / "data", [jsonl(path)], auto_ack=False, max_batch_records=10, linger_s=60
    )
    await h.start()
    await h.wait_for(lambda: h.spool.last_seq == 2)
    h.ack_all()  # 20 acknowledged: the position is (line start, 20 records taken)
    acknowledged = h.records[:20]
    (stored,) = [pos for _, pos in h.store.items()]
    assert (stored.offset, stored.index) == (0, 20)
    await h.stop(checkpoint=False)  # killed with the last 5 in the open batch
    h.linger_s = 0.02
    h.records.clear()
    h.auto_ack = True
    await h.start()
    await h.wait_for(lambda: h.spool.unacked_batches == 0 and len(h.records) >= 5)
    await h.settle(0.2)
    await h.stop()
    h.close()
    resent_and_new = h.records
    all_ids = [json.loads(r.text)["aws"]["eventID"] for r in acknowledged + resent_and_new]
    assert sorted(all_ids) == sorted(expected_ids("doc", 25))


async def test_bad_lines_are_counted_and_skipped(logs, caplog) -> None:
    directory, h = logs
    path = directory / "mixed.jsonl"
    digest = {"awsAccountId": "1", "digestStartTime": "x", "logFiles": []}
    path.write_bytes(
        lines_of("ok", 0, 1)
        + b"not json\n"
        + b"[1, 2]\n"
        + orjson.dumps(digest)
        + b"\n"
        + b'{"eventID": "'
        + b"L" * 2_000_000
        + b'"}\n'
        + lines_of("ok", 1, 1)
    )
    with caplog.at_level(logging.WARNING, logger="trailwarden.agent"):
        await h.start()
        await h.wait_for(lambda: len(h.records) == 2)
    assert ids(h) == {i: 1 for i in expected_ids("ok", 2)}
    assert h.counters.records_invalid == 2
    assert h.counters.digests_skipped == 1
    assert h.counters.records_oversized == 1
    assert "not JSON" in caplog.text and "oversized_line" in caplog.text


async def test_a_file_with_no_complete_first_line_waits(logs) -> None:
    directory, h = logs
    path = directory / "slow.jsonl"
    path.write_bytes(b'{"eventID": "slow-000000"')
    await h.start()
    await h.settle(0.2)
    assert h.records == []
    append(path, b"}\n")
    await h.wait_for(lambda: len(h.records) == 1)
