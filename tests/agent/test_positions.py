"""The durable position store: snapshot + journal on real files, crashes included."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from trailwarden.agent import positions as positions_module
from trailwarden.agent.positions import (
    JOURNAL_NAME,
    SNAPSHOT_NAME,
    FileKind,
    FilePosition,
    FileState,
    PositionsError,
    PositionStore,
)


def obj(
    index: int, state: FileState = FileState.READING, path: str = "/t/a.json.gz"
) -> FilePosition:
    return FilePosition(
        FileKind.OBJECT, index, state=state, path=path, size=100, updated=1_700_000_000
    )


def lines(offset: int, index: int = 0) -> FilePosition:
    return FilePosition(FileKind.LINES, index, offset, path="/t/x.jsonl", updated=1_700_000_000)


def reopen(store: PositionStore) -> PositionStore:
    store.close()
    return PositionStore.open(store.directory)


def test_a_new_store_is_empty_and_clean(tmp_path: Path) -> None:
    store = PositionStore.open(tmp_path)
    assert len(store) == 0 and store.acked_seq == 0 and not store.dirty
    store.checkpoint()  # nothing to write
    assert not (tmp_path / SNAPSHOT_NAME).exists()


def test_positions_survive_a_restart_only_once_checkpointed(tmp_path: Path) -> None:
    store = PositionStore.open(tmp_path)
    store.apply([("fp-a", obj(5)), ("fp-b", lines(120, 2))], acked_seq=7)
    assert store.acked_seq == 7 and store.durable_seq == 0 and store.dirty
    unsaved = reopen(store)
    assert len(unsaved) == 0 and unsaved.acked_seq == 0  # not checkpointed: gone
    unsaved.apply([("fp-a", obj(5)), ("fp-b", lines(120, 2))], acked_seq=7)
    unsaved.checkpoint()
    assert unsaved.durable_seq == 7 and not unsaved.dirty
    again = reopen(unsaved)
    assert again.get("fp-a") == obj(5)
    assert again.get("fp-b") == lines(120, 2)
    assert again.acked_seq == 7


def test_each_checkpoint_appends_only_what_changed(tmp_path: Path) -> None:
    store = PositionStore.open(tmp_path)
    store.apply([(f"fp-{i}", obj(i, FileState.DONE)) for i in range(50)], acked_seq=1)
    store.checkpoint()
    size = (tmp_path / JOURNAL_NAME).stat().st_size
    store.apply([("fp-3", obj(9, FileState.DONE))], acked_seq=2)
    store.checkpoint()
    lines_ = (tmp_path / JOURNAL_NAME).read_bytes().splitlines()
    assert len(lines_) == 2
    assert (tmp_path / JOURNAL_NAME).stat().st_size - size < 300  # one entry, not fifty
    assert orjson.loads(lines_[1])["f"].keys() == {"fp-3"}
    assert reopen(store).get("fp-3") == obj(9, FileState.DONE)


def test_a_torn_last_journal_line_is_cut_off(tmp_path: Path) -> None:
    store = PositionStore.open(tmp_path)
    store.apply([("fp-a", obj(1))], acked_seq=1)
    store.checkpoint()
    store.apply([("fp-a", obj(2))], acked_seq=2)
    store.checkpoint()
    store.close()
    journal = tmp_path / JOURNAL_NAME
    data = journal.read_bytes()
    journal.write_bytes(data[:-10])  # a crash in the middle of the second append
    store = PositionStore.open(tmp_path)
    assert store.get("fp-a") == obj(1) and store.acked_seq == 1
    assert journal.read_bytes() == data.splitlines(keepends=True)[0]
    store.apply([("fp-a", obj(3))], acked_seq=3)
    store.checkpoint()
    assert reopen(store).get("fp-a") == obj(3)


def test_compaction_writes_a_snapshot_and_empties_the_journal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(positions_module, "COMPACT_MIN_BYTES", 2000)
    store = PositionStore.open(tmp_path)
    for seq in range(1, 40):
        store.apply([(f"fp-{seq % 7}", obj(seq))], acked_seq=seq)
        store.checkpoint()
    snapshot = orjson.loads((tmp_path / SNAPSHOT_NAME).read_bytes())
    assert snapshot["version"] == 1 and snapshot["generation"] >= 1
    assert (tmp_path / JOURNAL_NAME).stat().st_size < 2000 + 300
    again = reopen(store)
    assert again.acked_seq == 39
    assert {fp: again.get(fp) for fp in (f"fp-{i}" for i in range(7))} == {
        f"fp-{i}": obj(max(s for s in range(1, 40) if s % 7 == i)) for i in range(7)
    }


def test_a_journal_from_before_the_snapshot_is_ignored(tmp_path: Path) -> None:
    """A crash after the compaction's rename but before the journal was emptied."""
    store = PositionStore.open(tmp_path)
    store.apply([("fp-a", obj(1))], acked_seq=1)
    store.checkpoint()
    old_journal = (tmp_path / JOURNAL_NAME).read_bytes()
    store.close()
    (tmp_path / SNAPSHOT_NAME).write_bytes(
        orjson.dumps(
            {"version": 1, "generation": 1, "acked_seq": 5, "files": {"fp-a": obj(4).to_list()}}
        )
    )
    (tmp_path / JOURNAL_NAME).write_bytes(old_journal)  # generation 0 lines
    store = PositionStore.open(tmp_path)
    assert store.get("fp-a") == obj(4) and store.acked_seq == 5
    assert (tmp_path / JOURNAL_NAME).read_bytes() == b""


def test_a_failed_write_leaves_everything_to_the_next_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    store = PositionStore.open(tmp_path)
    store.apply([("fp-a", obj(1))], acked_seq=1)
    store.checkpoint()
    store.apply([("fp-b", obj(2))], acked_seq=2)

    def full_disk(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(positions_module.os, "write", full_disk)
    with pytest.raises(OSError):
        store.checkpoint()
    assert store.dirty and store.durable_seq == 1
    monkeypatch.undo()
    store.checkpoint()  # a full snapshot this time
    again = reopen(store)
    assert again.get("fp-a") == obj(1) and again.get("fp-b") == obj(2)
    assert again.acked_seq == 2


def test_forgotten_files_stay_forgotten(tmp_path: Path) -> None:
    store = PositionStore.open(tmp_path)
    done = FilePosition(FileKind.OBJECT, 3, state=FileState.DONE, updated=1000)
    store.apply([("gone", done), ("present", done)])
    store.checkpoint()
    assert store.forget(["gone", "never-there"]) == 1
    store.checkpoint()
    again = reopen(store)
    assert "gone" not in again and "present" in again


def test_malformed_files_are_reported_with_their_path(tmp_path: Path) -> None:
    (tmp_path / SNAPSHOT_NAME).write_bytes(b"{not json")
    with pytest.raises(PositionsError, match=r"positions\.json: not valid JSON"):
        PositionStore.open(tmp_path)
    (tmp_path / SNAPSHOT_NAME).write_bytes(b'{"version": 9}')
    with pytest.raises(PositionsError, match="unsupported positions format"):
        PositionStore.open(tmp_path)
    (tmp_path / SNAPSHOT_NAME).write_bytes(
        b'{"version":1,"generation":0,"acked_seq":0,"files":{"x":["o",-1,0,"d","",0,"",0]}}'
    )
    with pytest.raises(PositionsError, match=r"files\['x'\]: not a file position"):
        PositionStore.open(tmp_path)


def test_stale_temporaries_of_an_interrupted_snapshot_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / f".{SNAPSHOT_NAME}.abcd1234.tmp"
    stale.write_bytes(b"half a snapshot")
    PositionStore.open(tmp_path).close()
    assert not stale.exists()


def test_position_round_trip_and_equality_ignores_the_timestamp() -> None:
    position = FilePosition(FileKind.LINES, 2, 4096, FileState.READING, "/p", 0, "", 123)
    assert FilePosition.from_list(position.to_list(), "t") == position
    assert position == FilePosition(FileKind.LINES, 2, 4096, FileState.READING, "/p", 0, "", 999)
    assert os.fspath(Path("/p")) == position.path
