"""The disk spool on real files: sequences, recovery after a crash, limits, release."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from trailwarden.agent import spool as spool_module
from trailwarden.agent.positions import FileKind, FilePosition
from trailwarden.agent.spool import SEGMENT_SUFFIX, Spool, SpoolError
from trailwarden.common.wire import Record

MIB = 1024 * 1024


def open_spool(path: Path, acked: int = 0, **kw) -> Spool:
    options = {"max_bytes": 64 * MIB, "segment_bytes": 4 * MIB, "fsync": True} | kw
    return Spool.open(path, acked_seq=acked, **options)


def batch(tag: str, n: int = 3) -> tuple[list[Record], list[tuple[str, FilePosition]]]:
    records = [Record(f"/logs/{tag}.json.gz", f'{{"n":"{tag}-{i}","é":"ü"}}') for i in range(n)]
    return records, [(f"fp-{tag}", FilePosition(FileKind.OBJECT, n, path=f"/logs/{tag}"))]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob(f"*{SEGMENT_SUFFIX}"))


def test_sequences_are_contiguous_and_survive_a_restart(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    seqs = [spool.append(*batch(t)).seq for t in "abc"]
    assert seqs == [1, 2, 3] and spool.unacked_batches == 3 and spool.unacked_records == 9
    spool.close()
    again = open_spool(tmp_path)
    assert again.last_seq == 3
    recovered = again.recovered_updates()
    assert [seq for seq, _ in recovered] == [1, 2, 3]
    assert recovered[1][1][0][0] == "fp-b"
    assert [b.records for b in again.iter_unacked()] == [tuple(batch(t)[0]) for t in "abc"]
    assert again.append(*batch("d")).seq == 4


def test_acknowledged_batches_are_not_recovered_and_numbering_continues(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for t in "abcd":
        spool.append(*batch(t))
    spool.close()
    again = open_spool(tmp_path, acked=2)
    assert [seq for seq, _ in again.recovered_updates()] == [3, 4]
    assert again.unacked_batches == 2 and again.unacked_records == 6
    with pytest.raises(KeyError):
        again.get(2)
    assert again.get(3).records == tuple(batch("c")[0])
    # Everything acknowledged and released: the next batch is still 5, not 1.
    again.acknowledge(4, 6)
    again.release_through(4)
    again.close()
    third = open_spool(tmp_path, acked=4)
    assert third.unacked_batches == 0 and third.append(*batch("e")).seq == 5


def test_a_torn_tail_is_cut_off(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for t in "abc":
        spool.append(*batch(t))
    spool.close()
    (segment,) = segments(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # killed in the middle of writing batch 3
    again = open_spool(tmp_path)
    assert again.last_seq == 2
    assert again.append(*batch("z")).seq == 3
    assert again.get(3).records == tuple(batch("z")[0])
    again.close()
    assert [b.seq for b in open_spool(tmp_path).iter_unacked()] == [1, 2, 3]


def test_a_zero_filled_tail_is_cut_off(tmp_path: Path) -> None:
    """Delayed allocation after a power loss: the size grew, the data did not arrive."""
    spool = open_spool(tmp_path)
    spool.append(*batch("a"))
    spool.close()
    (segment,) = segments(tmp_path)
    with segment.open("ab") as f:
        f.write(b"\0" * 500)
    again = open_spool(tmp_path)
    assert again.last_seq == 1
    assert segment.stat().st_size < 500


def test_damage_before_the_tail_is_reported_not_repaired(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=64 * 1024)
    big = [Record("/l", "x" * 40_000)]
    for _ in range(4):
        spool.append(big, [])
    spool.close()
    first = segments(tmp_path)[0]
    assert len(segments(tmp_path)) > 1
    data = bytearray(first.read_bytes())
    data[0:4] = b"JUNK"
    first.write_bytes(bytes(data))
    with pytest.raises(SpoolError, match=rf"{first.name}, byte 0: no entry for batch 1"):
        open_spool(tmp_path, segment_bytes=64 * 1024)


def test_segments_rotate_and_are_released_once_acknowledged(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=100 * 1024)
    payload = [Record("/l", "y" * 30_000)]
    for _ in range(10):
        spool.append(payload, [])
    assert len(segments(tmp_path)) >= 3
    used = spool.bytes
    spool.acknowledge(6, 6)
    freed = spool.release_through(6)
    assert freed > 0 and spool.bytes == used - freed
    remaining = segments(tmp_path)
    assert remaining and int(remaining[0].stem) <= 7
    assert [b.seq for b in spool.iter_unacked()] == [7, 8, 9, 10]
    spool.acknowledge(10, 4)
    spool.release_through(10)
    assert spool.bytes == 0 and segments(tmp_path) == []
    assert spool.append(payload, []).seq == 11


def test_release_never_passes_what_was_acknowledged(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=64 * 1024)
    for _ in range(6):
        spool.append([Record("/l", "z" * 40_000)], [])
    spool.acknowledge(2, 2)
    spool.release_through(6)  # asked for more than was acknowledged
    assert [b.seq for b in spool.iter_unacked()] == [3, 4, 5, 6]


def test_full_when_max_bytes_reached(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=200_000, segment_bytes=64 * 1024)
    while not spool.full:
        spool.append([Record("/l", "w" * 20_000)], [])
    assert spool.bytes >= 200_000
    spool.acknowledge(spool.last_seq, spool.unacked_records)
    spool.release_through(spool.last_seq)
    assert not spool.full


def test_batches_come_back_from_disk_when_the_cache_is_gone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(spool_module, "HOT_CACHE_BYTES", 1)
    spool = open_spool(tmp_path, segment_bytes=64 * 1024)
    written = [spool.append(*batch(str(i), 50)) for i in range(20)]
    for expected in written[:-1]:
        got = spool.get(expected.seq)
        assert (got.records, got.updates) == (expected.records, expected.updates)
    assert spool.get(7).seq == 7  # seeking back also works
    assert spool.get(20, take=True).seq == 20


def test_take_drops_the_memory_copy(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append(*batch("a"))
    taken = spool.get(1, take=True)
    assert spool._cache == {} and spool._cache_bytes == 0
    assert spool.get(1).records == taken.records  # from disk now


def test_a_damaged_entry_is_reported_when_read(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(spool_module, "HOT_CACHE_BYTES", 1)
    spool = open_spool(tmp_path)
    spool.append(*batch("a"))
    spool.append(*batch("b"))
    (segment,) = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[40] ^= 0xFF  # inside batch 1
    segment.write_bytes(bytes(data))
    with pytest.raises(SpoolError, match="batch 1 is damaged"):
        spool.get(1)


def test_sync_runs_on_another_thread_while_appending(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, segment_bytes=64 * 1024)
    errors: list[BaseException] = []
    stop = threading.Event()

    def syncer() -> None:
        try:
            while not stop.is_set():
                spool.sync_through(spool.last_seq)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=syncer)
    thread.start()
    for i in range(200):
        spool.append([Record("/l", f"{i}" * 5000)], [])
    stop.set()
    thread.join()
    assert not errors
    spool.sync_through(spool.last_seq)
    assert not spool.needs_sync
    spool.close()
    assert open_spool(tmp_path).last_seq == 200


def test_a_failed_write_assigns_no_sequence(tmp_path: Path, monkeypatch) -> None:
    spool = open_spool(tmp_path)
    spool.append(*batch("a"))

    def full(fd: int, parts: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.os, "writev", full)
    with pytest.raises(OSError):
        spool.append(*batch("b"))
    monkeypatch.undo()
    assert spool.last_seq == 1
    assert spool.append(*batch("c")).seq == 2
    spool.close()
    assert [b.records for b in open_spool(tmp_path).iter_unacked()] == [
        tuple(batch("a")[0]),
        tuple(batch("c")[0]),
    ]


def test_batches_of_any_size_in_turn_read_back_intact(tmp_path: Path) -> None:
    # The packing buffer is reused: a small batch after a large one must not
    # carry the large one's tail, nor a failed pack leave anything behind.
    spool = open_spool(tmp_path)
    sizes = [2000, 1, 300, 2000, 2]
    for i, n in enumerate(sizes):
        spool.append(*batch(f"s{i}", n))
    with pytest.raises(TypeError):
        spool.append([Record("/logs/x", object())], [])  # type: ignore[arg-type]
    spool.append(*batch("after", 1))
    spool.close()
    expected = [tuple(batch(f"s{i}", n)[0]) for i, n in enumerate(sizes)]
    expected.append(tuple(batch("after", 1)[0]))
    assert [b.records for b in open_spool(tmp_path).iter_unacked()] == expected
