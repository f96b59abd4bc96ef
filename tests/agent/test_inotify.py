"""The ctypes inotify wrapper on real directories (Linux)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from trailwarden.agent.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVED_TO,
    DirectoryWatcher,
    WatchEvent,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")


def collect(watcher: DirectoryWatcher, want: int, seconds: float = 2.0) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    deadline = time.monotonic() + seconds
    while len(events) < want and time.monotonic() < deadline:
        events.extend(watcher.read())
        time.sleep(0.01)
    return events


def test_file_and_directory_events_are_reported(tmp_path: Path) -> None:
    watcher = DirectoryWatcher.create()
    assert watcher is not None
    try:
        assert watcher.watch(str(tmp_path)) and watcher.watch(str(tmp_path))  # idempotent
        assert watcher.watch_count == 1
        assert watcher.read() == []  # nothing yet, and no blocking
        (tmp_path / "a.json.gz").write_bytes(b"x")
        (tmp_path / ".b.tmp").write_bytes(b"y")
        (tmp_path / ".b.tmp").rename(tmp_path / "b.json.gz")
        (tmp_path / "day").mkdir()
        with (tmp_path / "a.json.gz").open("ab") as f:
            f.write(b"more")
        events = collect(watcher, 6)
    finally:
        watcher.close()
    by_name: dict[str, int] = {}
    for event in events:
        by_name[event.name] = by_name.get(event.name, 0) | event.mask
        assert event.directory == str(tmp_path)
    assert by_name["a.json.gz"] & IN_CLOSE_WRITE and by_name["a.json.gz"] & IN_MODIFY
    assert by_name["b.json.gz"] & IN_MOVED_TO
    assert by_name["day"] & IN_CREATE and by_name["day"] & IN_ISDIR
    assert events[0].path == f"{tmp_path}/{events[0].name}"


def test_watches_are_bounded_and_missing_directories_refused(tmp_path: Path) -> None:
    watcher = DirectoryWatcher.create(max_watches=2)
    assert watcher is not None
    try:
        assert not watcher.watch(str(tmp_path / "missing"))
        for name in ("a", "b", "c"):
            (tmp_path / name).mkdir()
        assert watcher.watch(str(tmp_path / "a")) and watcher.watch(str(tmp_path / "b"))
        assert not watcher.watch(str(tmp_path / "c"))
        assert watcher.refused == 1
    finally:
        watcher.close()


def test_a_deleted_directory_drops_its_watch(tmp_path: Path) -> None:
    watcher = DirectoryWatcher.create()
    assert watcher is not None
    gone = tmp_path / "gone"
    gone.mkdir()
    try:
        assert watcher.watch(str(gone))
        gone.rmdir()
        collect(watcher, 1, 0.5)
        assert not watcher.is_watched(str(gone))
    finally:
        watcher.close()
