"""The batch journal on a real directory: replay, verification, roll-back, compaction.

A crash is simulated by dropping the journal without ``close()`` (the WAL
holds exactly what ``os.write`` put there, as after a ``kill -9``) and by
damaging files the way a crash or a power loss can.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from trailwarden.manager import batch_journal
from trailwarden.manager.batch_journal import (
    JOURNAL_DIR,
    SNAPSHOT_NAME,
    WAL_NAME,
    BatchJournal,
    BatchRef,
    GroupBegin,
    JournalError,
    JournalRange,
    digest,
    key_id,
)

KEY = key_id(b"a" * 64)
OTHER_KEY = key_id(b"b" * 64)


def opened(data_dir: Path, *, sync: bool = True) -> BatchJournal:
    journal = BatchJournal(data_dir, sync_each_group=sync)
    journal.open()
    return journal


def crash(journal: BatchJournal) -> None:
    """Drop the journal like a killed process: no fsync, no COMMIT, fds just closed."""
    os.close(journal._wal_fd)
    os.close(journal._lock_fd)
    journal._wal_fd = journal._lock_fd = -1


def append(path: Path, data: bytes) -> JournalRange:
    start = path.stat().st_size if path.exists() else 0
    with path.open("ab") as handle:
        handle.write(data)
    return JournalRange(str(path), start, start + len(data), digest(data))


def planned(path: Path, data: bytes) -> JournalRange:
    """The range ``data`` would take if appended to ``path`` (not written)."""
    start = path.stat().st_size if path.exists() else 0
    return JournalRange(str(path), start, start + len(data), digest(data))


async def commit_group(
    journal: BatchJournal, batches: list[BatchRef], out: Path, data: bytes
) -> int:
    number = journal.next_group()
    rng = planned(out, data)
    await journal.begin(GroupBegin(number, tuple(batches), (rng,)))
    append(out, data)
    journal.commit(number)
    return number


async def test_committed_sequences_survive_a_restart(tmp_path: Path) -> None:
    out = tmp_path / "alerts.json"
    journal = opened(tmp_path)
    assert journal.committed_seq("001", KEY) == 0
    await commit_group(
        journal, [BatchRef("001", KEY, 5), BatchRef("002", OTHER_KEY, 2)], out, b'{"a":1}\n'
    )
    await commit_group(journal, [BatchRef("001", KEY, 9)], out, b'{"a":2}\n')
    assert journal.committed_seq("001", KEY) == 9
    crash(journal)
    again = BatchJournal(tmp_path, sync_each_group=True)
    report = again.open()
    assert report.groups_replayed == 2 and report.groups_rolled_back == 0
    assert again.committed_seq("001", KEY) == 9
    assert again.committed_seq("002", OTHER_KEY) == 2
    # The same id under another key (re-enrolled, or a purged id reused) starts over.
    assert again.committed_seq("001", OTHER_KEY) == 0
    # Start-up folded the WAL into the snapshot.
    assert (tmp_path / JOURNAL_DIR / WAL_NAME).stat().st_size == 0
    snapshot = orjson.loads((tmp_path / JOURNAL_DIR / SNAPSHOT_NAME).read_bytes())
    assert snapshot["agents"]["001"] == {"key": KEY, "seq": 9}
    again.close()


async def test_begin_without_commit_whose_alerts_are_complete_counts_as_done(
    tmp_path: Path,
) -> None:
    out = tmp_path / "alerts.json"
    append(out, b'{"old":true}\n')
    journal = opened(tmp_path)
    data = b'{"alert":1}\n{"alert":2}\n'
    number = journal.next_group()
    await journal.begin(GroupBegin(number, (BatchRef("001", KEY, 3),), (planned(out, data),)))
    append(out, data)
    crash(journal)  # killed after the alerts were written, before COMMIT
    again = BatchJournal(tmp_path, sync_each_group=True)
    report = again.open()
    assert report.groups_verified == 1 and report.groups_rolled_back == 0
    assert again.committed_seq("001", KEY) == 3
    assert out.read_bytes() == b'{"old":true}\n' + data
    again.close()


@pytest.mark.parametrize(
    "damage",
    ["nothing written", "half written", "zeros after power loss", "wrong bytes"],
)
async def test_unfinished_group_is_rolled_back(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "alerts.json"
    before = b'{"old":true}\n'
    append(out, before)
    journal = opened(tmp_path)
    await commit_group(journal, [BatchRef("001", KEY, 1)], out, b'{"g":1}\n')
    committed_size = out.stat().st_size
    data = b'{"alert":"' + b"x" * 200 + b'"}\n'
    number = journal.next_group()
    await journal.begin(GroupBegin(number, (BatchRef("001", KEY, 2),), (planned(out, data),)))
    if damage == "half written":
        append(out, data[: len(data) // 2])
    elif damage == "zeros after power loss":
        append(out, b"\0" * len(data))
    elif damage == "wrong bytes":
        append(out, data.replace(b"x", b"y"))
    crash(journal)
    again = BatchJournal(tmp_path, sync_each_group=True)
    report = again.open()
    assert report.groups_replayed == 1 and report.groups_rolled_back == 1
    assert report.batches_rolled_back == 1
    # The batch is not done (its resend is analysed) and its bytes are gone.
    assert again.committed_seq("001", KEY) == 1
    assert out.read_bytes() == before + b'{"g":1}\n'
    assert out.stat().st_size == committed_size
    again.close()


async def test_roll_back_covers_every_later_group_and_file(tmp_path: Path) -> None:
    alerts, log = tmp_path / "alerts.json", tmp_path / "alerts.log"
    journal = opened(tmp_path, sync=False)
    first = b"1\n"
    n1 = journal.next_group()
    await journal.begin(
        GroupBegin(
            n1,
            (BatchRef("001", KEY, 1),),
            (planned(alerts, first), planned(log, b"** Alert 1\n\n")),
        )
    )
    append(alerts, first[:1])  # torn: the first group does not verify
    n2 = journal.next_group()
    second = b"2\n"
    await journal.begin(
        GroupBegin(
            n2, (BatchRef("002", OTHER_KEY, 1),), (JournalRange(str(alerts), 2, 4, digest(second)),)
        )
    )
    append(alerts, b"\n" + second)
    crash(journal)
    again = BatchJournal(tmp_path, sync_each_group=False)
    report = again.open()
    assert report.groups_rolled_back == 2
    assert alerts.read_bytes() == b""
    assert again.committed_seq("001", KEY) == 0 and again.committed_seq("002", OTHER_KEY) == 0
    again.close()


async def test_torn_journal_tail_is_dropped(tmp_path: Path) -> None:
    out = tmp_path / "alerts.json"
    journal = opened(tmp_path)
    await commit_group(journal, [BatchRef("001", KEY, 4)], out, b"a\n")
    crash(journal)
    wal = tmp_path / JOURNAL_DIR / WAL_NAME
    with wal.open("ab") as handle:
        handle.write(b"\x40\x00\x00\x00\x01\x02")  # a record header cut short
    again = BatchJournal(tmp_path, sync_each_group=True)
    report = again.open()
    assert report.torn_journal_bytes == 6
    assert again.committed_seq("001", KEY) == 4
    again.close()


async def test_a_flipped_bit_ends_the_replay_there(tmp_path: Path) -> None:
    out = tmp_path / "alerts.json"
    journal = opened(tmp_path)
    await commit_group(journal, [BatchRef("001", KEY, 1)], out, b"a\n")
    wal = tmp_path / JOURNAL_DIR / WAL_NAME
    good = wal.stat().st_size
    await commit_group(journal, [BatchRef("001", KEY, 2)], out, b"b\n")
    crash(journal)
    raw = bytearray(wal.read_bytes())
    raw[good + 12] ^= 0x40
    wal.write_bytes(bytes(raw))
    again = BatchJournal(tmp_path, sync_each_group=True)
    report = again.open()
    assert report.torn_journal_bytes == len(raw) - good
    assert again.committed_seq("001", KEY) == 1
    again.close()


async def test_compressed_day_file_stands_for_a_complete_range(tmp_path: Path) -> None:
    out = tmp_path / "ossec-alerts-27.json"
    journal = opened(tmp_path)
    data = b"a\n"
    number = journal.next_group()
    await journal.begin(GroupBegin(number, (BatchRef("001", KEY, 8),), (planned(out, data),)))
    crash(journal)
    (tmp_path / "ossec-alerts-27.json.gz").write_bytes(b"\x1f\x8b...")
    again = BatchJournal(tmp_path, sync_each_group=True)
    assert again.open().groups_verified == 1
    assert again.committed_seq("001", KEY) == 8
    again.close()


async def test_one_manager_per_data_directory(tmp_path: Path) -> None:
    journal = opened(tmp_path)
    second = BatchJournal(tmp_path, sync_each_group=True)
    with pytest.raises(JournalError, match="another manager"):
        second.open()
    journal.close()
    second.open()
    second.close()


async def test_corrupt_snapshot_is_reported_with_its_path(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_DIR).mkdir(parents=True)
    (tmp_path / JOURNAL_DIR / SNAPSHOT_NAME).write_text("{not json")
    journal = BatchJournal(tmp_path, sync_each_group=True)
    with pytest.raises(JournalError, match=SNAPSHOT_NAME):
        journal.open()
    # The lock was released: fixing the file is enough.
    (tmp_path / JOURNAL_DIR / SNAPSHOT_NAME).write_text(
        '{"version": 1, "group": 3, "agents": {"007": {"key": "k", "seq": 12}}}'
    )
    journal.open()
    assert journal.committed_seq("007", "k") == 12
    assert journal.next_group() == 4
    journal.close()


async def test_compaction_and_a_crash_between_its_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_journal, "COMPACT_AFTER_BYTES", 200)
    out = tmp_path / "alerts.json"
    journal = opened(tmp_path)
    for seq in range(1, 6):
        await commit_group(journal, [BatchRef("001", KEY, seq)], out, f"{seq}\n".encode())
        await journal.compact_if_needed()
    assert journal.stats()["compactions"] >= 1
    wal = tmp_path / JOURNAL_DIR / WAL_NAME
    assert wal.stat().st_size < 200
    # A crash after the snapshot was replaced but before the WAL was emptied
    # leaves records the snapshot already holds: they must not count twice or fail.
    saved = wal.read_bytes()
    await commit_group(journal, [BatchRef("001", KEY, 6)], out, b"6\n")
    journal._write_snapshot()
    crash(journal)
    wal.write_bytes(saved + wal.read_bytes()[len(saved) :])
    again = BatchJournal(tmp_path, sync_each_group=True)
    again.open()
    assert again.committed_seq("001", KEY) == 6
    assert again.next_group() == 7
    again.close()


async def test_no_acknowledged_group_is_ever_rolled_back_after_a_power_loss(
    tmp_path: Path,
) -> None:
    """Acknowledged means: BEGIN fsynced, alerts fsynced. The COMMIT may be lost."""
    out = tmp_path / "alerts.json"
    journal = opened(tmp_path)
    data = b"acknowledged\n"
    number = journal.next_group()
    await journal.begin(GroupBegin(number, (BatchRef("003", KEY, 77),), (planned(out, data),)))
    append(out, data)
    journal.commit(number)
    crash(journal)
    # Power loss: the unsynced COMMIT record never reached the disk.
    wal = tmp_path / JOURNAL_DIR / WAL_NAME
    raw = wal.read_bytes()
    wal.write_bytes(raw[: len(raw) - 12])  # most of the 16-byte COMMIT record is gone
    again = BatchJournal(tmp_path, sync_each_group=True)
    report = again.open()
    assert report.groups_verified == 1 and report.groups_rolled_back == 0
    assert again.committed_seq("003", KEY) == 77
    assert out.read_bytes() == data
    again.close()
