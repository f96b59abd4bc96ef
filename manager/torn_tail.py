"""Cutting an incomplete last record off an append-only file, keeping the bytes.

A crash or power loss can leave the end of an append-only log short: the last
record cut mid-way, or followed by a run of NULs (a file extended before its
data reached the disk). Appending after that would glue the next record to the
broken one. ``repair_torn_tail`` checks the file's last bytes for the record
terminator and, if they are not it, cuts the file back to just after the last
record boundary, first appending the cut bytes to ``<name>.torn`` beside it so
nothing is lost silently. Memory stays bounded whatever the file size: the
boundary is searched backwards in chunks.
"""

from __future__ import annotations

import os
from pathlib import Path

# Read size when searching and copying: bounds memory per step.
CHUNK_BYTES = 1 << 20
FILE_MODE = 0o640


def repair_torn_tail(
    fd: int, path: Path, end: bytes, boundary: bytes, keep: int
) -> tuple[int, int]:
    """Make the file behind ``fd`` end with a complete record.

    Args:
        fd: the file, open for reading and writing.
        path: its name (the ``.torn`` file goes beside it).
        end: how a complete file ends (``b"\\n"`` for JSON lines).
        boundary: what separates records; the cut goes ``keep`` bytes into
            its last occurrence (alerts.log: ``b"\\n\\n** Alert "``, keep 2).

    Returns:
        ``(size, cut)``: the file's size afterwards and how many bytes were
        moved to ``<name>.torn`` (0 when the file was complete).
    """
    size = os.fstat(fd).st_size
    if size == 0 or (size >= len(end) and os.pread(fd, len(end), size - len(end)) == end):
        return size, 0
    at = _rfind(fd, size, boundary)
    cut = at + keep if at >= 0 else 0
    torn = path.with_name(path.name + ".torn")
    out = os.open(torn, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        pos = cut
        while pos < size:
            chunk = os.pread(fd, min(CHUNK_BYTES, size - pos), pos)
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
            pos += len(chunk)
        os.fsync(out)
    finally:
        os.close(out)
    os.ftruncate(fd, cut)
    os.fsync(fd)
    return cut, size - cut


def _rfind(fd: int, size: int, pattern: bytes) -> int:
    """Offset of the last ``pattern`` in the first ``size`` bytes of ``fd``, or -1.

    Reads backwards in chunks overlapping by ``len(pattern) - 1`` bytes, so an
    occurrence across a chunk edge is found once.
    """
    stop_at = size
    while stop_at > 0:
        start = max(0, stop_at - CHUNK_BYTES)
        stop = min(size, stop_at + len(pattern) - 1)
        at = os.pread(fd, stop - start, start).rfind(pattern)
        if at >= 0:
            return start + at
        stop_at = start
    return -1
