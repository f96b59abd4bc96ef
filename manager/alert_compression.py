"""Compressing earlier days' alert files as monitord does, without losing data.

monitord (``manage_files.c``, ``compress_log.c``) waits ``day_wait`` seconds
after midnight, then gzips yesterday's ``ossec-alerts-DD.json`` (and ``.log``,
``ossec-archive-DD.json``) to ``<name>.gz`` and deletes the original. We do the
same, crash-safely:

1. wait ``delay_s`` (a shipper may still be reading the old file);
2. in a worker thread, write ``<name>.gz.tmp`` and fsync it;
3. under a lock: delete the original, fsync the directory, rename the
   ``.tmp`` to ``<name>.gz``, fsync the directory.

A crash leaves one of two states, told apart by whether the original is still
there, and ``recover()`` (run at start-up) settles both: original present means
the ``.tmp`` may be partial, so it is discarded and the file compressed again;
original gone means the ``.tmp`` is complete, so it is renamed into place.

If a day is reopened (the clock stepped back) while its compression is pending
or running, ``cancel()`` stops it before step 3, or waits out step 3 if it has
begun. A day reopened after its ``.gz`` exists gets a second gzip member
appended at its next compression (gzip readers see one stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# monitord.day_wait: seconds to wait after midnight before compressing, so a
# shipper still reading yesterday's file can finish it.
DEFAULT_DELAY_S = 10.0
# gzopen(path, "w") in compress_log.c: zlib's default level.
GZIP_LEVEL = 6
# Read size when compressing or copying: bounds memory per step.
CHUNK_BYTES = 1 << 20
FILE_MODE = 0o640
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# The day files this manager writes (and only those are touched).
_OWNED_NAME = re.compile(r"^ossec-(?:alerts-\d\d\.(?:json|log)|archive-\d\d\.json)(\.gz\.tmp)?$")


class DayFileCompressor:
    """Schedules and runs compressions; owned by ``AlertFiles``, loop thread only."""

    def __init__(self, delay_s: float = DEFAULT_DELAY_S, *, enabled: bool = True) -> None:
        self._delay_s = delay_s
        self._enabled = enabled
        self._cancel: dict[Path, threading.Event] = {}
        self._commit_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self.done = 0
        self.errors = 0

    @property
    def pending(self) -> int:
        return len(self._cancel)

    def schedule(self, path: Path) -> None:
        """Compress ``path`` after the delay (no-op if disabled, closed or queued)."""
        if not self._enabled or self._closing.is_set() or path in self._cancel:
            return
        cancel = threading.Event()
        self._cancel[path] = cancel
        task = asyncio.get_running_loop().create_task(self._later(path, cancel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self, path: Path) -> None:
        """Stop a compression of ``path`` (being reopened) before it deletes it."""
        cancel = self._cancel.pop(path, None)
        if cancel is not None:
            cancel.set()
            with self._commit_lock:  # waits out a delete-and-publish in progress
                pass

    async def close(self, timeout_s: float) -> None:
        """Stop everything; interrupted compressions are redone by ``recover``."""
        self._closing.set()
        for cancel in self._cancel.values():
            cancel.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def _later(self, path: Path, cancel: threading.Event) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._delay_s):
                    await self._closing.wait()
            if cancel.is_set() or self._closing.is_set():
                return
            if await asyncio.to_thread(compress_file, path, cancel, self._commit_lock):
                self.done += 1
                log.info("Alert files: compressed %s.", path)
        except OSError as exc:
            self.errors += 1
            log.error("Alert files: cannot compress %s (will retry at next start): %s.", path, exc)
        finally:
            if self._cancel.get(path) is cancel:
                del self._cancel[path]

    @staticmethod
    def recover(bases: Iterable[Path], keep: set[Path]) -> list[Path]:
        """Settle interrupted compressions; list day files to compress.

        Blocking (walks ``<base>/YYYY/Mon/``): run it in a thread. ``keep`` are
        the files in use today, never returned.
        """
        found: list[Path] = []
        for base in bases:
            for year in _subdirs(base, str.isdigit):
                for month in _subdirs(year, MONTHS.__contains__):
                    for entry in sorted(month.iterdir()):
                        m = _OWNED_NAME.match(entry.name)
                        if m is None:
                            continue
                        if m.group(1):  # <name>.gz.tmp
                            original = entry.with_name(entry.name[: -len(".gz.tmp")])
                            if original.exists():
                                entry.unlink()
                            else:
                                entry.replace(original.with_name(original.name + ".gz"))
                                log.info("Alert files: finished compressing %s.", original)
                        elif entry not in keep:
                            found.append(entry)
        return found


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, deleted files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Cancelled(Exception):
    pass


def compress_file(path: Path, cancel: threading.Event, lock: threading.Lock) -> bool:
    """gzip ``path`` to ``path.gz`` (steps 2-3 above); False if cancelled or gone.

    An existing ``.gz`` is copied first, so the new content becomes a second
    gzip member.
    """
    gz = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    try:
        src = open(path, "rb")
    except FileNotFoundError:
        return False
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        with src, open(os.open(tmp, flags, FILE_MODE), "wb") as out:
            if gz.exists():
                with open(gz, "rb") as prev:
                    while chunk := prev.read(CHUNK_BYTES):
                        out.write(chunk)
            mtime = int(os.fstat(src.fileno()).st_mtime)
            with gzip.GzipFile(
                filename=gz.name, mode="wb", fileobj=out, compresslevel=GZIP_LEVEL, mtime=mtime
            ) as z:
                while chunk := src.read(CHUNK_BYTES):
                    if cancel.is_set():
                        raise _Cancelled
                    z.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        with lock:
            if cancel.is_set():
                raise _Cancelled
            # Delete the original before publishing: a crash in between leaves
            # a complete .gz.tmp and no original, which recover() finishes.
            path.unlink()
            fsync_dir(path.parent)
            tmp.replace(gz)
            fsync_dir(path.parent)
    except _Cancelled:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        return False
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return True


def _subdirs(path: Path, accept: Callable[[str], bool]) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if accept(p.name) and p.is_dir())
    except FileNotFoundError:
        return []
