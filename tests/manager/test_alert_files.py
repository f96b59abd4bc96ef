"""AlertFiles against a real directory: layout, ids, rollover, repair, durability."""

from __future__ import annotations

import asyncio
import errno
import gzip
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailwarden.manager import torn_tail
from trailwarden.manager.alert_files import (
    AlertFiles,
    AlertFilesConfig,
    AlertFilesError,
    AlertRenderError,
    FsyncPolicy,
    PendingAlert,
    PendingArchive,
)

TZ = ZoneInfo("Europe/Madrid")


class FakeClock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when.timestamp()


@pytest.fixture
def base_alert(wazuh_ref: Path) -> dict[str, Any]:
    alert = orjson.loads(
        (wazuh_ref / "examples" / "4x-alerts-json-80254-derived.json").read_bytes()
    )
    del alert["id"]
    return alert


def pending(alert: dict[str, Any], epoch: int, seen: list[str] | None = None) -> PendingAlert:
    """Render like the engine will: the id goes after `manager`, as in to_json.c."""

    def render(alert_id: str) -> tuple[bytes, bytes]:
        if seen is not None:
            seen.append(alert_id)
        doc: dict[str, Any] = {}
        for key, value in alert.items():
            doc[key] = value
            if key == "manager":
                doc["id"] = alert_id
        rule = alert["rule"]
        block = (
            f"** Alert {alert_id}: - {','.join(rule['groups'])},\n"
            f"2026 Nov 28 10:00:00 manager->{alert['location']}\n"
            f"Rule: {rule['id']} (level {rule['level']}) -> '{rule['description']}'\n"
            f"{orjson.dumps(alert['data']).decode()}\n\n"
        ).encode()
        return orjson.dumps(doc) + b"\n", block

    return PendingAlert(epoch, render)


def archive(event: dict[str, Any], epoch: int) -> PendingArchive:
    return PendingArchive(epoch, lambda aid: orjson.dumps({**event, "id": aid}) + b"\n")


async def wait_for_stat(files: AlertFiles, name: str, value: int, deadline_s: float = 10) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while files.stats()[name] != value:
        assert loop.time() < end, f"{name} stayed {files.stats()[name]}, expected {value}"
        await asyncio.sleep(0.01)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def open_reader(path: Path) -> BinaryIO:
    return open(path, "rb")


def day_dir(root: Path, kind: str, when: datetime) -> Path:
    return root / "logs" / kind / str(when.year) / when.strftime("%b")


def json_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


def config(root: Path, **kw: Any) -> AlertFilesConfig:
    kw.setdefault("compress_delay_s", 0.0)
    return AlertFilesConfig(data_dir=root, **kw)


async def started(cfg: AlertFilesConfig, clock: FakeClock) -> AlertFiles:
    files = AlertFiles(cfg, clock=clock, tz=TZ)
    await files.start()
    return files


async def test_layout_links_and_ids(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    when = datetime(2026, 11, 28, 10, 0, tzinfo=TZ)
    clock = FakeClock(when)
    files = await started(config(tmp_path), clock)
    epoch = int(clock.now)
    ids = files.write([pending(base_alert, epoch), pending(base_alert, epoch)])
    assert await files.flush()
    await files.close(5)

    d = day_dir(tmp_path, "alerts", when)
    day_json, day_log = d / "ossec-alerts-28.json", d / "ossec-alerts-28.log"
    assert (tmp_path / "logs/alerts/alerts.json").samefile(day_json)
    assert (tmp_path / "logs/alerts/alerts.log").samefile(day_log)
    log_bytes = day_log.read_bytes()
    second_block = log_bytes.index(b"** Alert ", 1)
    # The id is "<epoch>.<offset of the alert in today's alerts.log>".
    assert ids == [f"{epoch}.0", f"{epoch}.{second_block}"]
    assert log_bytes.startswith(f"** Alert {ids[0]}: - amazon,".encode())
    assert log_bytes[second_block:].startswith(f"** Alert {ids[1]}:".encode())
    lines = json_lines(day_json)
    assert [line["id"] for line in lines] == ids
    assert list(lines[0])[:5] == ["timestamp", "rule", "agent", "manager", "id"]
    assert lines[0]["rule"]["id"] == "80254"


async def test_ids_follow_alerts_json_when_alerts_log_is_off(
    tmp_path: Path, base_alert: dict[str, Any]
) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path, alerts_log=False), clock)
    ids = files.write([pending(base_alert, 7), pending(base_alert, 7)])
    await files.close(5)
    day_json = tmp_path / "logs/alerts/alerts.json"
    first_len = day_json.read_bytes().index(b"\n") + 1
    assert ids == ["7.0", f"7.{first_len}"]
    assert not (tmp_path / "logs/alerts/alerts.log").exists()


async def test_one_write_per_file_per_batch(
    tmp_path: Path, base_alert: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path, logall_json=True), clock)
    calls: list[int] = []
    real_write = os.write

    def spy(fd: int, data: Any) -> int:
        calls.append(fd)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    batch: list[PendingAlert | PendingArchive] = []
    for i in range(50):
        batch.append(archive({"event": i}, 1))
        batch.append(pending(base_alert, 1))
    files.write(batch)
    monkeypatch.undo()
    await files.close(5)
    assert len(calls) == 3  # alerts.json, alerts.log, archives.json
    assert len(set(calls)) == 3
    assert len(json_lines(tmp_path / "logs/alerts/alerts.json")) == 50


async def test_archives_carry_the_next_alert_id(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    when = datetime(2026, 11, 28, 10, 0, tzinfo=TZ)
    clock = FakeClock(when)
    files = await started(config(tmp_path, logall_json=True), clock)
    ids = files.write([archive({"n": 1}, 5), pending(base_alert, 5), archive({"n": 2}, 5)])
    await files.close(5)
    block_len = (tmp_path / "logs/alerts/alerts.log").stat().st_size
    assert ids == ["5.0", "5.0", f"5.{block_len}"]
    day_archive = day_dir(tmp_path, "archives", when) / "ossec-archive-28.json"
    assert (tmp_path / "logs/archives/archives.json").samefile(day_archive)
    assert json_lines(day_archive) == [{"n": 1, "id": "5.0"}, {"n": 2, "id": f"5.{block_len}"}]


async def test_midnight_rollover_relinks_and_compresses(
    tmp_path: Path, base_alert: dict[str, Any]
) -> None:
    before = datetime(2026, 11, 30, 23, 59, 59, 500000, tzinfo=TZ)
    after = datetime(2026, 12, 1, 0, 0, 0, 100000, tzinfo=TZ)
    clock = FakeClock(before)
    files = await started(config(tmp_path), clock)
    files.write([pending(base_alert, int(clock.now)) for _ in range(3)])
    old_json = day_dir(tmp_path, "alerts", before) / "ossec-alerts-30.json"
    old_content = old_json.read_bytes()
    # A shipper following alerts.json by inode, as Filebeat does.
    reader = open_reader(tmp_path / "logs/alerts/alerts.json")
    try:
        clock.set(after)
        ids = files.write([pending(base_alert, int(clock.now))])
        assert ids == [f"{int(clock.now)}.0"]  # offsets restart in the new day's file
        new_json = day_dir(tmp_path, "alerts", after) / "ossec-alerts-01.json"
        assert new_json.parent.name == "Dec"
        assert (tmp_path / "logs/alerts/alerts.json").samefile(new_json)
        assert (tmp_path / "logs/alerts/alerts.log").samefile(new_json.with_suffix(".log"))
        assert reader.read() == old_content  # never truncated; the old inode is intact
        await wait_for_stat(files, "compressions", 2)
        await files.close(5)
    finally:
        reader.close()
    assert not old_json.exists()
    with gzip.open(old_json.with_name("ossec-alerts-30.json.gz")) as gz:
        assert gz.read() == old_content
    assert old_json.with_name("ossec-alerts-30.log.gz").is_file()
    assert len(json_lines(new_json)) == 1
    assert files.stats()["rollovers"] == 1
    assert files.stats()["compressions"] == 2


async def test_empty_previous_day_is_removed(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    day1 = datetime(2026, 11, 28, 12, 0, tzinfo=TZ)
    clock = FakeClock(day1)
    files = await started(config(tmp_path), clock)
    clock.set(day1 + timedelta(days=1))
    files.write([pending(base_alert, 1)])
    await files.close(5)
    d = day_dir(tmp_path, "alerts", day1)
    assert sorted(p.name for p in d.iterdir()) == ["ossec-alerts-29.json", "ossec-alerts-29.log"]


async def test_restart_appends_to_todays_files(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path), clock)
    first = files.write([pending(base_alert, 1)])
    await files.close(5)
    log_size = (tmp_path / "logs/alerts/alerts.log").stat().st_size

    files = await started(config(tmp_path), clock)
    second = files.write([pending(base_alert, 2)])
    await files.close(5)
    assert first == ["1.0"]
    assert second == [f"2.{log_size}"]
    assert [line["id"] for line in json_lines(tmp_path / "logs/alerts/alerts.json")] == [
        "1.0",
        second[0],
    ]


async def test_torn_json_line_is_cut_and_kept_aside(
    tmp_path: Path, base_alert: dict[str, Any]
) -> None:
    when = datetime(2026, 11, 28, 10, 0, tzinfo=TZ)
    clock = FakeClock(when)
    files = await started(config(tmp_path), clock)
    files.write([pending(base_alert, 1), pending(base_alert, 1)])
    await files.close(5)
    day_json = day_dir(tmp_path, "alerts", when) / "ossec-alerts-28.json"
    good = day_json.read_bytes()
    # A crash mid-record: a prefix of the next line, then zeros a power loss may leave.
    torn = b'{"timestamp":"2026-11-28T10:00:01.000+0100","rule":{"lev' + b"\0" * 100
    append(day_json, torn)

    files = await started(config(tmp_path), clock)
    assert files.stats()["torn_repairs"] == 1
    files.write([pending(base_alert, 3)])
    await files.close(5)
    data = day_json.read_bytes()
    assert data.startswith(good)
    assert len(json_lines(day_json)) == 3  # every line parses: nothing joined the torn one
    assert day_json.with_name("ossec-alerts-28.json.torn").read_bytes() == torn


async def test_torn_alerts_log_block_is_cut_before_ids_are_assigned(
    tmp_path: Path, base_alert: dict[str, Any]
) -> None:
    when = datetime(2026, 11, 28, 10, 0, tzinfo=TZ)
    clock = FakeClock(when)
    files = await started(config(tmp_path), clock)
    files.write([pending(base_alert, 1), pending(base_alert, 1)])
    await files.close(5)
    day_log = day_dir(tmp_path, "alerts", when) / "ossec-alerts-28.log"
    good = day_log.read_bytes()
    torn = b"** Alert 2.999: - amazon,\n2026 Nov 28 10:00:00 manager->Wazuh-AWS\nRule: 802"
    append(day_log, torn)

    files = await started(config(tmp_path), clock)
    ids = files.write([pending(base_alert, 3)])
    await files.close(5)
    assert ids == [f"3.{len(good)}"]
    assert day_log.read_bytes().startswith(good + b"** Alert 3.")
    assert day_log.with_name("ossec-alerts-28.log.torn").read_bytes() == torn


async def test_torn_first_block_cuts_to_empty(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    when = datetime(2026, 11, 28, 10, 0, tzinfo=TZ)
    d = day_dir(tmp_path, "alerts", when)
    d.mkdir(parents=True)
    (d / "ossec-alerts-28.log").write_bytes(b"** Alert 1.0: - amazon,\n2026 Nov")
    files = await started(config(tmp_path), FakeClock(when))
    assert files.write([pending(base_alert, 9)]) == ["9.0"]
    await files.close(5)


async def test_render_errors_write_nothing(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path), clock)
    two_lines = PendingAlert(1, lambda aid: (b'{"a":1}\n{"b":2}\n', b"** Alert x\n\n"))
    with pytest.raises(AlertRenderError, match="item 1"):
        files.write([pending(base_alert, 1), two_lines])
    bad_block = PendingAlert(1, lambda aid: (b'{"a":1}\n', b"Rule: 1\n"))
    with pytest.raises(AlertRenderError, match=r"alerts\.log block"):
        files.write([bad_block])
    assert (tmp_path / "logs/alerts/alerts.json").stat().st_size == 0
    assert files.write([pending(base_alert, 2)]) == ["2.0"]
    await files.close(5)


async def test_failed_write_is_rolled_back(
    tmp_path: Path, base_alert: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk cannot be produced here without root; inject ENOSPC after a
    # partial write of the second file, as the kernel reports it.
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path), clock)
    files.write([pending(base_alert, 1)])
    sizes = {
        name: (tmp_path / "logs/alerts" / name).stat().st_size
        for name in ("alerts.json", "alerts.log")
    }
    real_write = os.write
    calls = 0

    def failing(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(AlertFilesError, match="No space left"):
        files.write([pending(base_alert, 2), pending(base_alert, 2)])
    monkeypatch.undo()
    for name, size in sizes.items():
        assert (tmp_path / "logs/alerts" / name).stat().st_size == size
    # The writer stays usable and the offsets were not advanced.
    assert files.write([pending(base_alert, 3)]) == [f"3.{sizes['alerts.log']}"]
    assert files.stats()["write_errors"] == 1
    await files.close(5)


async def test_fsync_policies(
    tmp_path: Path, base_alert: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))

    files = await started(config(tmp_path / "b", fsync=FsyncPolicy.BATCH), clock)
    assert synced == []  # nothing written yet: open needs no fsync
    files.write([pending(base_alert, 1)])
    assert synced == []  # write() itself never waits for the disk
    assert await files.flush()
    assert len(synced) >= 2  # both files (plus the directories they are in)
    n = len(synced)
    assert await files.flush()  # nothing new: no fsync
    assert len(synced) == n
    await files.close(5)

    synced.clear()
    files = await started(config(tmp_path / "n", fsync=FsyncPolicy.NEVER), clock)
    files.write([pending(base_alert, 1)])
    assert await files.flush()
    await files.close(5)
    assert synced == []

    files = await started(
        config(tmp_path / "i", fsync=FsyncPolicy.INTERVAL, fsync_interval_ms=20), clock
    )
    files.write([pending(base_alert, 1)])
    assert await files.flush()  # returns without waiting for the disk
    for _ in range(200):
        if files.stats()["fsyncs"]:
            break
        await asyncio.sleep(0.01)
    assert files.stats()["fsyncs"] >= 1
    await files.close(5)


async def test_concurrent_flushes_share_fsyncs(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path), clock)

    async def session(i: int) -> bool:
        files.write([pending(base_alert, i)])
        return await files.flush(timeout_s=10)

    assert all(await asyncio.gather(*(session(i) for i in range(20))))
    assert files.stats()["fsyncs"] < 20
    assert files.stats()["batches"] == 20
    await files.close(5)


async def test_fsync_failure_makes_writer_unusable(
    tmp_path: Path, base_alert: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path), clock)
    files.write([pending(base_alert, 1)])

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(AlertFilesError, match="fsync failed"):
        await files.flush()
    monkeypatch.undo()
    with pytest.raises(AlertFilesError, match="unusable"):
        files.write([pending(base_alert, 2)])
    assert files.stats()["failed"] is True
    await files.close(5)


async def test_second_writer_is_refused(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    first = await started(config(tmp_path), clock)
    second = AlertFiles(config(tmp_path), clock=clock, tz=TZ)
    with pytest.raises(AlertFilesError, match="another manager"):
        await second.start()
    await second.close(1)
    await first.close(5)
    third = await started(config(tmp_path), clock)  # the lock went with the first
    await third.close(5)


async def test_unlinked_alerts_json_is_kept_aside(tmp_path: Path) -> None:
    alerts = tmp_path / "logs/alerts"
    alerts.mkdir(parents=True)
    (alerts / "alerts.json").write_bytes(b'{"only":"copy"}\n')
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path), clock)
    await files.close(5)
    kept = list(alerts.glob("alerts.json.orphaned-*"))
    assert [p.read_bytes() for p in kept] == [b'{"only":"copy"}\n']
    assert (alerts / "alerts.json").stat().st_size == 0


async def test_leftovers_are_compressed_and_interrupted_compressions_finished(
    tmp_path: Path,
) -> None:
    today = datetime(2026, 11, 28, 10, 0, tzinfo=TZ)
    d = day_dir(tmp_path, "alerts", today)
    d.mkdir(parents=True)
    # Manager was down at midnight: yesterday's file was never compressed.
    (d / "ossec-alerts-27.json").write_bytes(b'{"day":27}\n')
    # A compression interrupted before the original was deleted: redo it.
    (d / "ossec-alerts-26.json").write_bytes(b'{"day":26}\n')
    (d / "ossec-alerts-26.json.gz.tmp").write_bytes(b"partial")
    # One interrupted after the original was deleted: the .tmp is complete.
    (d / "ossec-alerts-25.json.gz.tmp").write_bytes(gzip.compress(b'{"day":25}\n'))
    (d / "unrelated.txt").write_bytes(b"x")

    files = await started(config(tmp_path), FakeClock(today))
    await wait_for_stat(files, "compressions", 2)
    await files.close(5)
    names = sorted(p.name for p in d.iterdir())
    assert names == [
        "ossec-alerts-25.json.gz",
        "ossec-alerts-26.json.gz",
        "ossec-alerts-27.json.gz",
        "ossec-alerts-28.json",
        "ossec-alerts-28.log",
        "unrelated.txt",
    ]
    for day in (25, 26, 27):
        with gzip.open(d / f"ossec-alerts-{day}.json.gz") as gz:
            assert gz.read() == f'{{"day":{day}}}\n'.encode()


async def test_compression_waits_for_the_delay(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    day1 = datetime(2026, 11, 28, 23, 0, tzinfo=TZ)
    clock = FakeClock(day1)
    files = await started(config(tmp_path, compress_delay_s=3600), clock)
    files.write([pending(base_alert, 1)])
    clock.set(day1 + timedelta(hours=2))
    files.write([pending(base_alert, 2)])
    assert files.stats()["compressions_pending"] == 2
    await files.close(5)  # interrupted: redone at the next start
    d = day_dir(tmp_path, "alerts", day1)
    assert (d / "ossec-alerts-28.json").is_file()
    assert not list(d.glob("*.gz*"))


async def test_clock_stepping_back_reopens_the_earlier_day(
    tmp_path: Path, base_alert: dict[str, Any]
) -> None:
    day1 = datetime(2026, 11, 28, 23, 59, tzinfo=TZ)
    clock = FakeClock(day1)
    files = await started(config(tmp_path), clock)
    files.write([pending(base_alert, 1)])
    clock.set(day1 + timedelta(minutes=2))
    files.write([pending(base_alert, 2)])
    await wait_for_stat(files, "compressions", 2)  # day 28 compressed (delay 0)
    clock.set(day1 + timedelta(seconds=30))  # e.g. an NTP step back
    files.write([pending(base_alert, 3)])
    clock.set(day1 + timedelta(minutes=3))
    files.write([pending(base_alert, 4)])
    # Day 28 reopened, left again: its second compression appends a gzip member.
    await wait_for_stat(files, "compressions", 4)
    await files.close(5)

    d = day_dir(tmp_path, "alerts", day1)
    assert not (d / "ossec-alerts-28.json").exists()
    with gzip.open(d / "ossec-alerts-28.json.gz") as gz:  # reads every member
        data = gz.read()
    assert sorted(orjson.loads(line)["id"].split(".")[0] for line in data.splitlines()) == [
        "1",
        "3",
    ]
    day2 = [line["id"] for line in json_lines(d / "ossec-alerts-29.json")]
    assert [i.split(".")[0] for i in day2] == ["2", "4"]


async def test_write_outside_lifecycle_is_refused(
    tmp_path: Path, base_alert: dict[str, Any]
) -> None:
    files = AlertFiles(config(tmp_path), clock=FakeClock(datetime(2026, 11, 28, tzinfo=TZ)), tz=TZ)
    with pytest.raises(AlertFilesError, match="outside"):
        files.write([pending(base_alert, 1)])
    await files.start()
    await files.close(5)
    with pytest.raises(AlertFilesError, match="outside"):
        files.write([pending(base_alert, 1)])


def test_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both off"):
        AlertFilesConfig(tmp_path, alerts_log=False, jsonout_output=False)
    with pytest.raises(ValueError, match="fsync_interval_ms"):
        AlertFilesConfig(tmp_path, fsync_interval_ms=0)
    assert FsyncPolicy("interval") is FsyncPolicy.INTERVAL


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
    chunk=st.integers(min_value=1, max_value=17),
)
def test_backward_search_matches_rfind_across_chunk_edges(
    data: bytes, cuts: list[int], chunk: int
) -> None:
    pattern = b"\n\n** Alert "
    for at in sorted(cuts, reverse=True):
        data = data[:at] + pattern + data[at:]
    fd, name = tempfile.mkstemp()
    try:
        os.write(fd, data)
        old = torn_tail.CHUNK_BYTES
        torn_tail.CHUNK_BYTES = chunk  # tiny chunks put boundaries everywhere
        try:
            assert torn_tail._rfind(fd, len(data), pattern) == data.rfind(pattern)
        finally:
            torn_tail.CHUNK_BYTES = old
    finally:
        os.close(fd)
        os.unlink(name)


# -- two-phase writes (plan / commit), as the pipeline uses them --------------------------


async def test_plan_exposes_exact_bytes_and_offsets_before_commit(
    tmp_path: Path, base_alert: dict[str, Any]
) -> None:
    when = datetime(2026, 11, 28, 10, 0, tzinfo=TZ)
    clock = FakeClock(when)
    files = await started(config(tmp_path, logall_json=True), clock)
    files.write([pending(base_alert, 1)])
    sizes = {
        name: (tmp_path / "logs/alerts" / name).stat().st_size
        for name in ("alerts.json", "alerts.log")
    }
    plan = files.plan()
    first = plan.add([pending(base_alert, 2)])
    second = plan.add([archive({"n": 1}, 2), pending(base_alert, 2)])
    json_range, log_range, archive_range = plan.ranges()
    # Ids continue across add() calls from where the files end now.
    assert first == [f"2.{sizes['alerts.log']}"]
    assert second[1] == f"2.{sizes['alerts.log'] + len(log_range.data) // 2}"
    assert json_range.start == sizes["alerts.json"]
    assert log_range.start == sizes["alerts.log"]
    assert archive_range.start == 0 and archive_range.data.count(b"\n") == 1
    # Nothing is on disk until commit, then exactly the planned bytes at the planned offsets.
    assert (tmp_path / "logs/alerts/alerts.json").stat().st_size == sizes["alerts.json"]
    files.commit(plan)
    on_disk = (tmp_path / "logs/alerts/alerts.json").read_bytes()
    assert on_disk[json_range.start : json_range.end] == json_range.data
    log_bytes = (tmp_path / "logs/alerts/alerts.log").read_bytes()
    assert log_bytes[log_range.start :] == log_range.data
    assert files.stats()["alerts_written"] == 3
    await files.close(5)


async def test_stale_plan_is_refused(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path), clock)
    plan = files.plan()
    plan.add([pending(base_alert, 1)])
    files.write([pending(base_alert, 1)])  # another write moved the files' ends
    with pytest.raises(RuntimeError, match="before another write"):
        files.commit(plan)
    assert len(json_lines(tmp_path / "logs/alerts/alerts.json")) == 1
    await files.close(5)


async def test_failed_add_keeps_earlier_items(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    clock = FakeClock(datetime(2026, 11, 28, 10, 0, tzinfo=TZ))
    files = await started(config(tmp_path), clock)
    plan = files.plan()
    plan.add([pending(base_alert, 1)])
    broken = PendingAlert(1, lambda aid: (b"two\nlines\n", b"** Alert x\n\n"))
    with pytest.raises(AlertRenderError):
        plan.add([pending(base_alert, 1), broken])
    assert not plan.empty
    files.commit(plan)
    assert len(json_lines(tmp_path / "logs/alerts/alerts.json")) == 1
    empty = files.plan()
    assert empty.empty
    files.commit(empty)  # nothing to write is fine
    assert files.stats()["alerts_written"] == 1
    await files.close(5)
