"""Find the CloudTrail files to read under the configured directory trees.

A source tree is a local copy of a CloudTrail bucket (``aws s3 sync``, a mount, an
export). One ``scan_trees`` call walks the trees with ``os.scandir`` and returns
the files that match, oldest first; reading them is the tailer's business.

Theory of operation
-------------------
Globs are matched segment by segment against the path below the tree's root:

* a pattern with a ``/`` matches the whole relative path; ``*``, ``?`` and
  ``[...]`` stay within one segment and a ``**`` segment spans any number of
  segments, including none;
* a pattern without a ``/`` matches a single name: for ``include``, the file
  name; for ``exclude``, any segment, so ``*CloudTrail-Digest*`` prunes the whole
  ``CloudTrail-Digest/`` directory as well as digest files.

Oldest first means by the delivery timestamp in a CloudTrail file name
(``..._20261127T1205Z_...``), falling back to mtime for other names.

Work per scan is bounded by ``max_entries`` directory entries. The walk is
depth-first over sorted names, i.e. in the lexicographic order of the path's
segments, so when a scan stops early its ``cursor`` (the last entry examined)
says exactly what is done, and the next scan skips every subtree that sorts
before it without listing it. With ``ignore_older_s``, the ``YYYY/MM/DD``
directories of the S3 layout that lie wholly before the cut-off are not listed
either, so a years-deep bucket costs only its recent days.
"""

from __future__ import annotations

import calendar
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from itertools import islice
from pathlib import Path

# S3 delivery objects plus plain JSON exports; `**/` allows a bucket prefix and
# AWS Organizations trails (AWSLogs/o-xxx/<account>/...).
DEFAULT_INCLUDE = ("**/AWSLogs/**/CloudTrail/*/*/*/*/*.json.gz", "*.json")
# Digest files share the tree but carry no records.
DEFAULT_EXCLUDE = ("*CloudTrail-Digest*",)
# Directory entries examined per scan: a large bucket copy is walked over several
# scans instead of stalling the tailer for one long walk.
DEFAULT_MAX_ENTRIES = 100_000
# Entries read from one directory (they are sorted in memory). A CloudTrail day
# directory holds about 300 files per region; far more is not a CloudTrail tree.
MAX_DIR_ENTRIES = 200_000

_DELIVERY_TIME = re.compile(r"_(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})?Z[_.]")


@dataclass(frozen=True, slots=True)
class SourceTree:
    """One configured directory tree and the globs that select files in it."""

    root: str
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file that matched, with the stat facts the tailer needs."""

    path: str  # root joined with rel_path
    root: str
    rel_path: str  # "/"-separated, below root
    size: int
    mtime_ns: int
    dev: int  # dev/inode: a cache key for fingerprints, not an identity
    ino: int
    delivered_at: float  # seconds since the epoch: file name timestamp, else mtime


@dataclass(frozen=True, slots=True)
class ScanCursor:
    """Where a scan that hit ``max_entries`` stopped: tree index and path segments."""

    tree: int
    after: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScanResult:
    candidates: tuple[Candidate, ...]  # oldest first
    cursor: ScanCursor | None  # None: every tree was walked to the end
    errors: tuple[str, ...]  # directories that could not be listed, with the reason


def delivery_time(name: str) -> float | None:
    """The delivery timestamp in a CloudTrail file name, in seconds since the epoch."""
    m = _DELIVERY_TIME.search(name)
    if m is None:
        return None
    year, month, day, hour, minute = (int(g) for g in m.groups()[:5])
    second = int(m.group(6) or 0)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


# -- globs ------------------------------------------------------------------------

SegmentMatcher = Callable[[Sequence[str]], bool]


def compile_glob(pattern: str, *, any_segment: bool = False) -> SegmentMatcher:
    """A matcher over path segments for ``pattern`` (see the module docstring).

    ``any_segment`` makes a pattern without ``/`` match any segment instead of
    only the last one (exclude semantics).
    """
    if not pattern or pattern.startswith("/") or pattern.endswith("/"):
        raise ValueError(f"glob {pattern!r}: must be a relative path pattern")
    parts = tuple(pattern.split("/"))
    if len(parts) == 1:
        name = parts[0]
        if any_segment:
            return lambda segs: any(fnmatchcase(s, name) for s in segs)
        return lambda segs: bool(segs) and fnmatchcase(segs[-1], name)
    return lambda segs: _match_segments(parts, segs)


def _match_segments(pattern: tuple[str, ...], segs: Sequence[str]) -> bool:
    """Segment glob match; ``**`` spans zero or more segments. O(len(pattern) * len(segs))."""
    # reach[j]: the pattern prefix matched so far can end right before segs[j].
    n = len(segs)
    reach = [False] * (n + 1)
    reach[0] = True
    for part in pattern:
        nxt = [False] * (n + 1)
        if part == "**":
            seen = False
            for j in range(n + 1):
                seen = seen or reach[j]
                nxt[j] = seen
        else:
            for j in range(n):
                if reach[j] and fnmatchcase(segs[j], part):
                    nxt[j + 1] = True
        reach = nxt
        if not any(reach):
            return False
    return reach[n]


# -- the walk ---------------------------------------------------------------------


def scan_trees(
    trees: Sequence[SourceTree],
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    cursor: ScanCursor | None = None,
    ignore_older_s: float | None = None,
    now: float | None = None,
) -> ScanResult:
    """Walk ``trees`` and return matching files, oldest first.

    Args:
        trees: the configured trees, walked in this order.
        max_entries: directory entries examined before the scan stops early.
        cursor: the previous result's cursor, to continue where it stopped.
        ignore_older_s: skip files delivered longer ago than this.
        now: the current time (seconds since the epoch); defaults to the clock.
    """
    if max_entries < 1:
        raise ValueError(f"max_entries must be positive, got {max_entries}")
    cutoff = None
    if ignore_older_s is not None:
        cutoff = (time.time() if now is None else now) - ignore_older_s
    found: list[Candidate] = []
    errors: list[str] = []
    budget = [max_entries]
    stopped_at: ScanCursor | None = None
    first = cursor.tree if cursor is not None else 0
    for index in range(first, len(trees)):
        tree = trees[index]
        after = cursor.after if cursor is not None and index == cursor.tree else ()
        walk = _TreeWalk(tree, after, cutoff, budget, found, errors)
        last = walk.run()
        if last is not None:
            stopped_at = ScanCursor(index, last)
            break
    found.sort(key=lambda c: (c.delivered_at, c.rel_path))
    return ScanResult(tuple(found), stopped_at, tuple(errors))


class _TreeWalk:
    """One depth-first walk of one tree, sharing the scan's entry budget."""

    def __init__(
        self,
        tree: SourceTree,
        after: tuple[str, ...],
        cutoff: float | None,
        budget: list[int],
        found: list[Candidate],
        errors: list[str],
    ) -> None:
        self.root = str(Path(tree.root).absolute())
        self.include = [compile_glob(p) for p in tree.include]
        self.exclude = [compile_glob(p, any_segment=True) for p in tree.exclude]
        self.after = after
        self.cutoff_day = _utc_day(cutoff) if cutoff is not None else None
        self.cutoff = cutoff
        self.budget = budget
        self.found = found
        self.errors = errors

    def run(self) -> tuple[str, ...] | None:
        """Walk; the segments of the last entry examined if the budget ran out."""
        budget = self.budget
        for segs in self._walk(self.root, ()):
            budget[0] -= 1
            if budget[0] <= 0:
                return segs
        return None

    def _walk(self, directory: str, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        """Yield each entry examined (counted against the budget), depth first."""
        try:
            with os.scandir(directory) as it:
                entries = list(islice(it, MAX_DIR_ENTRIES + 1))
        except OSError as exc:
            self.errors.append(f"{directory}: cannot list: {exc.strerror or exc}")
            return
        if len(entries) > MAX_DIR_ENTRIES:
            del entries[MAX_DIR_ENTRIES:]
            self.errors.append(
                f"{directory}: more than {MAX_DIR_ENTRIES} entries; only the first "
                f"{MAX_DIR_ENTRIES} listed are considered"
            )
        entries.sort(key=lambda e: e.name)
        after = self.after
        for entry in entries:
            segs = (*prefix, entry.name)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)  # no symlink loops
            except OSError:
                continue
            if is_dir:
                if after and after[: len(segs)] == segs:
                    # On the way to the cursor: counted when first examined.
                    if not (self._excluded(segs) or self._too_old(segs)):
                        yield from self._walk(entry.path, segs)
                    continue
                if after and segs < after:
                    continue  # done by an earlier scan
                yield segs
                if not (self._excluded(segs) or self._too_old(segs)):
                    yield from self._walk(entry.path, segs)
            elif not after or segs > after:
                self._consider(entry, segs)
                yield segs

    def _excluded(self, segs: tuple[str, ...]) -> bool:
        return any(match(segs) for match in self.exclude)

    def _too_old(self, segs: tuple[str, ...]) -> bool:
        """A CloudTrail/<region>/YYYY[/MM[/DD]] directory wholly before the cut-off."""
        day = self.cutoff_day
        if day is None:
            return False
        for depth in (1, 2, 3):
            if len(segs) >= depth + 2 and segs[-depth - 2] == "CloudTrail":
                date = segs[-depth:]
                if all(s.isascii() and s.isdigit() for s in date):
                    return tuple(int(s) for s in date) < day[:depth]
        return False

    def _consider(self, entry: os.DirEntry[str], segs: tuple[str, ...]) -> None:
        if not any(match(segs) for match in self.include) or self._excluded(segs):
            return
        try:
            st = entry.stat()
        except OSError:
            return  # removed or unreadable since the listing
        candidate = _candidate(self.root, segs, entry.path, st, self.cutoff)
        if candidate is not None:
            self.found.append(candidate)


def _candidate(
    root: str, segs: tuple[str, ...], path: str, st: os.stat_result, cutoff: float | None
) -> Candidate | None:
    if not stat.S_ISREG(st.st_mode):
        return None
    delivered = delivery_time(segs[-1])
    if delivered is None:
        delivered = st.st_mtime_ns / 1e9
    if cutoff is not None and delivered < cutoff:
        return None
    return Candidate(
        path=path,
        root=root,
        rel_path="/".join(segs),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        dev=st.st_dev,
        ino=st.st_ino,
        delivered_at=delivered,
    )


@lru_cache(maxsize=64)
def _tree_globs(tree: SourceTree) -> tuple[list[SegmentMatcher], list[SegmentMatcher]]:
    include = [compile_glob(p) for p in tree.include]
    exclude = [compile_glob(p, any_segment=True) for p in tree.exclude]
    return include, exclude


def candidate_at(
    tree: SourceTree,
    path: str,
    *,
    ignore_older_s: float | None = None,
    now: float | None = None,
) -> Candidate | None:
    """What a scan of ``tree`` would make of the one file ``path`` (one inotify
    named), or None when a scan would pass it over: outside the tree, not
    included, below an excluded folder, not a regular file, too old or gone."""
    root = Path(tree.root).absolute()
    try:
        segs = Path(path).absolute().relative_to(root).parts
    except ValueError:
        return None  # not below the root
    if not segs or ".." in segs:
        return None
    include, exclude = _tree_globs(tree)
    if not any(match(segs) for match in include):
        return None
    if any(match(segs[:depth]) for depth in range(1, len(segs) + 1) for match in exclude):
        return None  # the file, or a folder the walk would not enter
    full = root.joinpath(*segs)
    try:
        st = full.stat()
    except OSError:
        return None
    cutoff = None
    if ignore_older_s is not None:
        cutoff = (time.time() if now is None else now) - ignore_older_s
    return _candidate(str(root), segs, str(full), st, cutoff)


def _utc_day(ts: float) -> tuple[int, int, int]:
    t = time.gmtime(ts)
    return (t.tm_year, t.tm_mon, t.tm_mday)
