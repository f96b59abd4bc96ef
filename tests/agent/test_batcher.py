"""The batcher: limits, linger, and the positions each batch completes."""

from __future__ import annotations

import pytest

from trailwarden.agent.batcher import RECORD_OVERHEAD_BYTES, Batcher, FileCursor
from trailwarden.agent.positions import FileKind, FilePosition, FileState
from trailwarden.common.wire import Record


def cursor(fp: str) -> FileCursor:
    return FileCursor(fp, lambda token: FilePosition(FileKind.OBJECT, token))  # type: ignore[arg-type]


def rec(n: int, size: int = 10) -> Record:
    return Record("/l", str(n).rjust(size, "x"))


def test_seals_at_max_records_with_the_last_position_of_each_file() -> None:
    b = Batcher(max_records=3, max_bytes=10**6, linger_s=1)
    a, c = cursor("fp-a"), cursor("fp-c")
    assert b.add(rec(1), 10, a, 1, 0.0) is None
    assert b.add(rec(2), 10, a, 2, 0.0) is None
    sealed = b.add(rec(3), 10, c, 7, 0.0)
    assert sealed is not None
    assert [r.text[-1] for r in sealed.records] == ["1", "2", "3"]
    assert dict(sealed.updates) == {
        "fp-a": FilePosition(FileKind.OBJECT, 2),
        "fp-c": FilePosition(FileKind.OBJECT, 7),
    }
    assert b.empty and b.deadline is None


def test_bytes_limit_seals_before_the_record_that_would_overflow() -> None:
    size = 100 + RECORD_OVERHEAD_BYTES
    b = Batcher(max_records=100, max_bytes=3 * size, linger_s=1)
    a = cursor("fp")
    for i in range(2):
        assert b.add(rec(i), 100, a, i + 1, 0.0) is None
    sealed = b.add(rec(2), 101, a, 3, 0.0)  # would be 3 * size + 1
    assert sealed is not None and len(sealed.records) == 2
    assert dict(sealed.updates) == {"fp": FilePosition(FileKind.OBJECT, 2)}
    rest = b.flush()
    assert rest is not None and len(rest.records) == 1
    assert dict(rest.updates) == {"fp": FilePosition(FileKind.OBJECT, 3)}


def test_a_record_larger_than_the_limit_travels_alone() -> None:
    b = Batcher(max_records=100, max_bytes=1000, linger_s=1)
    a = cursor("fp")
    b.add(rec(1), 10, a, 1, 0.0)
    first = b.add(rec(2, 5000), 5000, a, 2, 0.0)
    assert first is not None and len(first.records) == 1
    # The big one is alone in the open batch; the next record seals it.
    second = b.add(rec(3), 10, a, 3, 0.0)
    assert second is not None and [len(r.text) for r in second.records] == [5000]
    assert dict(second.updates) == {"fp": FilePosition(FileKind.OBJECT, 2)}


def test_linger_time_seals_a_partial_batch() -> None:
    b = Batcher(max_records=100, max_bytes=10**6, linger_s=0.5)
    b.add(rec(1), 10, cursor("fp"), 1, now=10.0)
    assert b.deadline == 10.5
    b.add(rec(2), 10, cursor("fp"), 2, now=10.4)
    assert b.deadline == 10.5  # set by the first record
    assert b.due(10.49) is None
    sealed = b.due(10.5)
    assert sealed is not None and len(sealed.records) == 2


def test_marks_ride_with_records_or_seal_alone() -> None:
    b = Batcher(max_records=10, max_bytes=10**6, linger_s=0.1)
    a = cursor("fp-a")
    b.add(rec(1), 10, a, 1, 0.0)
    done = FilePosition(FileKind.OBJECT, 1, state=FileState.DONE)
    b.mark("fp-a", done, 0.0)  # supersedes the cursor's last token
    quarantined = FilePosition(FileKind.OBJECT, 0, state=FileState.QUARANTINED, note="corrupt_gzip")
    b.mark("fp-q", quarantined, 0.0)
    sealed = b.flush()
    assert sealed is not None and len(sealed.records) == 1
    assert dict(sealed.updates) == {"fp-a": done, "fp-q": quarantined}
    b.mark("fp-z", done, now=5.0)
    assert b.deadline == 5.1
    only_marks = b.due(5.1)
    assert only_marks is not None and only_marks.records == ()
    assert dict(only_marks.updates) == {"fp-z": done}


def test_records_after_a_mark_of_the_same_file_move_it_on() -> None:
    b = Batcher(max_records=10, max_bytes=10**6, linger_s=1)
    a = cursor("fp")
    b.mark("fp", FilePosition(FileKind.OBJECT, 4), 0.0)
    b.add(rec(5), 10, a, 6, 0.0)
    sealed = b.flush()
    assert sealed is not None
    assert dict(sealed.updates) == {"fp": FilePosition(FileKind.OBJECT, 6)}


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Batcher(max_records=0, max_bytes=1, linger_s=0)
