"""Linux inotify through ctypes: which directories saw files appear, close or grow.

No new dependency: libc's ``inotify_init1``/``inotify_add_watch`` are called
through ``ctypes`` and the event stream is parsed with ``struct``. Only
directories are watched (a directory watch reports events for the files in
it); the tailer decides what an event means. Anywhere inotify is missing
(another OS, a seccomp sandbox, exhausted ``max_user_watches``)
``DirectoryWatcher.create`` returns None or ``watch`` returns False and the
periodic scan alone finds files: inotify only makes the agent react sooner.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from dataclasses import dataclass
from typing import Final

IN_MODIFY: Final = 0x00000002
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_ISDIR: Final = 0x40000000

WATCH_MASK: Final = (
    IN_MODIFY
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)

_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, name length
# One read drains up to this much of the kernel queue (events are 16 bytes
# plus a padded name, so a few thousand per read).
READ_BYTES: Final = 64 * 1024
# Directories watched at most by one agent; the kernel default per user is
# 8192 (fs.inotify.max_user_watches) on older systems, shared by all programs.
MAX_WATCHES: Final = 4096


@dataclass(frozen=True, slots=True)
class WatchEvent:
    directory: str  # the watched directory ("" for a queue overflow)
    name: str  # the entry inside it ("" for events about the directory itself)
    mask: int

    @property
    def path(self) -> str:
        return f"{self.directory}/{self.name}" if self.name else self.directory

    @property
    def overflow(self) -> bool:
        return bool(self.mask & IN_Q_OVERFLOW)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        _ = libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch
    except (OSError, AttributeError):
        return None
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    return libc


class DirectoryWatcher:
    """One inotify instance watching directories (see the module docstring)."""

    def __init__(self, libc: ctypes.CDLL, fd: int, max_watches: int) -> None:
        self._libc = libc
        self._fd = fd
        self._max_watches = max_watches
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory
        self._watched: dict[str, int] = {}
        self.refused = 0  # watches the kernel or MAX_WATCHES refused

    @classmethod
    def create(cls, max_watches: int = MAX_WATCHES) -> DirectoryWatcher | None:
        """A watcher, or None where inotify is not available."""
        libc = _load_libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        return cls(libc, fd, max_watches)

    def fileno(self) -> int:
        return self._fd

    @property
    def watch_count(self) -> int:
        return len(self._watched)

    def is_watched(self, directory: str) -> bool:
        return directory in self._watched

    def watch(self, directory: str) -> bool:
        """Watch ``directory`` (idempotent); False if it cannot be watched."""
        if directory in self._watched:
            return True
        if len(self._watched) >= self._max_watches:
            self.refused += 1
            return False
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                self.refused += 1  # ENOSPC: the user's watch limit
            return False
        self._dirs[wd] = directory
        self._watched[directory] = wd
        return True

    def read(self) -> list[WatchEvent]:
        """The events queued so far (never blocks)."""
        events: list[WatchEvent] = []
        while True:
            try:
                data = os.read(self._fd, READ_BYTES)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return events
            self._parse(data, events)

    def _parse(self, data: bytes, events: list[WatchEvent]) -> None:
        offset, size = 0, len(data)
        while offset + _EVENT.size <= size:
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw_name = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            name = os.fsdecode(raw_name.rstrip(b"\0"))
            if mask & IN_Q_OVERFLOW:
                events.append(WatchEvent("", "", mask))
                continue
            directory = self._dirs.get(wd)
            if mask & IN_IGNORED:  # the watch is gone (directory deleted or unmounted)
                if directory is not None:
                    del self._dirs[wd]
                    self._watched.pop(directory, None)
                continue
            if directory is not None:
                events.append(WatchEvent(directory, name, mask))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._dirs.clear()
            self._watched.clear()
