"""Replace a small file atomically: readers see the old content or the new, never a mix.

The new content goes to a temporary file in the same directory, is flushed and
fsync'ed, renamed over the target, and the directory is fsync'ed so the rename
itself survives a power loss. A crash leaves at most a stray temporary file,
named ``.<target>.<random>.tmp``; ``remove_stale_temporaries`` clears them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def replace_file(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Args:
        durable: fsync the file and its directory (False: atomic against
            crashes of this process only, for files that are cheap to lose).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable (where the OS allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; nothing more to do
    finally:
        os.close(fd)


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries a crash left behind for ``path``."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
