"""Find files, read them into records, hand sealed batches on: the agent's reading half.

Theory of operation
-------------------
One task on the agent's event loop does everything between the files and the
spool, in slices that yield to the loop (``SLICE_RECORDS``), so the sender's
acknowledgements and heartbeats keep flowing while it reads.

Finding files. Each source is scanned every ``scan_interval_s``
(``discovery.scan_trees``, oldest first, with a cursor for huge trees). With
inotify (``inotify.py``; the trees' directories are watched) a CloudTrail
object closed or renamed into place is looked at on its own at once
(``discovery.candidate_at``), so a new file costs one stat, not a walk of a
tree that may hold a year of objects; new directories, JSON-lines changes and
an overflowing event queue bring the scan forward instead. The scan is the
safety net: without inotify nothing is missed, only found later.

Which files to read. A CloudTrail object is identified by its content
fingerprint, cached per (device, inode, size, mtime) so a file costs one
fingerprint per change, not per scan. Its position (``Progress.position``)
says whether it is finished, in progress (resume at a record index), or new;
a renamed or copied finished file is recognised and skipped. An object that
changed less than ``settle_ms`` ago may still be being copied and waits,
unless inotify saw it closed or renamed into place. An object that ends
early (truncated gzip or JSON) is quarantined with its record count; if a
longer file appears later at the same path, reading resumes after the
records already sent, so a copy caught half-way is completed, not repeated.

JSON-lines files are held open as ``LineTail``s while they grow (one per
fingerprint: a rotated file and its new name are never read twice), polled
every ``poll_interval_ms`` or on inotify's word, and closed after
``CLOSE_INACTIVE_S`` without growth.

Reading an object. While one object's records are batched, the next queued
one is read ahead on the inflater thread (``_prepare``): inflated whole when
small (``PREFETCH_MAX_BYTES``), then wrapped by the C envelope
(``FileWrapper.wrap_document``), both without the GIL, so the event loop only
batches ready messages. A document the C envelope leaves to Python is parsed
in one ``orjson`` call (``parse_whole_document``) or, when unusual, read by the
streaming scanner (``CloudTrailFileReader``), which also takes large objects
and reports what is wrong with a broken one. A large object is inflated and
wrapped a piece at a time on the event loop's thread (``StreamedObject``),
the scanner taking over at the first record the C envelope does not take.

Records are wrapped in the wodle envelope and added to the ``Batcher``; a
sealed batch goes to ``Progress.seal`` (the spool). Once the queue of objects
is drained and no growing file is open, the partial batch is sealed at once:
its linger time would only hold it back. Before each slice the
tailer waits for room in the spool (``SpoolBackpressure``): the one place
where reading stops for the manager.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import logging
import os
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Final, NamedTuple, cast

from trailwarden.agent.backpressure import SpoolBackpressure
from trailwarden.agent.batcher import Batcher, FileCursor, SealedBatch
from trailwarden.agent.cloudtrail_file import (
    CloudTrailFileReader,
    Problem,
    ProblemKind,
    Record,
    load_document,
    parse_whole_document,
)
from trailwarden.agent.config import CollectionConfig, SourceKind
from trailwarden.agent.discovery import (
    Candidate,
    ScanCursor,
    candidate_at,
    compile_glob,
    scan_trees,
)
from trailwarden.agent.envelope import EnvelopeError, FileWrapper
from trailwarden.agent.fingerprint import object_fingerprint
from trailwarden.agent.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVED_TO,
    DirectoryWatcher,
)
from trailwarden.agent.line_tail import LineTail, TailChange
from trailwarden.agent.object_stream import StreamedObject
from trailwarden.agent.positions import FileKind, FilePosition, FileState, clip_path
from trailwarden.agent.progress import Progress
from trailwarden.agent.sources import Source, location_text, parent_directories
from trailwarden.agent.status import MAX_LISTED_FILES, Counters
from trailwarden.common.wire import MAX_FRAME_BYTES
from trailwarden.common.wire import Record as WireRecord

log = logging.getLogger("trailwarden.agent")

# Records between two yields to the event loop: ~5-10 ms of work, so acks and
# heartbeats are never held up long, while the yield itself costs nothing.
SLICE_RECORDS: Final = 256
# A wrapped record (text + location) must fit one frame alone; 64 KiB of the
# frame stays for msgpack, the batch header and the AEAD tag.
MAX_WRAPPED_BYTES: Final = MAX_FRAME_BYTES - 64 * 1024
# inotify events arrive in bursts (a sync drops many files): wait this long
# for the burst to end before scanning.
RESCAN_DEBOUNCE_S: Final = 0.05
# A scan stopped by its entry budget continues this soon.
SCAN_CONTINUE_S: Final = 0.01
# JSON-lines files held open at most; the least recently active close first.
MAX_OPEN_TAILS: Final = 256
# A JSON-lines file that did not grow for this long is closed (and reopened
# by a scan if it grows again).
CLOSE_INACTIVE_S: Final = 300.0
# Paths inotify saw closed or renamed into place, remembered until read.
MAX_CLOSED_PATHS: Final = 100_000
# Problems logged per object file before they are only counted.
MAX_PROBLEM_LOGS: Final = 5
# How long reading waits before retrying a spool write that failed (disk full).
SPOOL_RETRY_S: Final = 1.0
# Bytes of a file hashed when its gzip head is too broken to fingerprint.
RAW_HEAD_BYTES: Final = 65536
# Objects whose document is at most this large are inflated whole on a worker
# thread while the previous one is parsed (zlib releases the GIL); larger ones
# are streamed. At most two such documents are in memory at once.
PREFETCH_MAX_BYTES: Final = 2 * 1024 * 1024
# Prefetched documents up to this size are parsed in one orjson call (about
# 3.5x their size in Python objects) instead of record by record.
WHOLE_PARSE_MAX_BYTES: Final = 2 * 1024 * 1024

_TRUNCATED_NOTES: Final = frozenset(
    {ProblemKind.TRUNCATED_GZIP.value, ProblemKind.TRUNCATED_JSON.value}
)

Deliver = Callable[[SealedBatch], None]


@dataclass(slots=True)
class _Reading:
    """The object being read, for status.json."""

    path: str
    fingerprint: str
    index: int


@dataclass(slots=True)
class _ObjectJob:
    source: Source
    candidate: Candidate
    fingerprint: str
    start_index: int


class Tailer:
    """See the module docstring."""

    def __init__(
        self,
        sources: list[Source],
        collection: CollectionConfig,
        *,
        progress: Progress,
        batcher: Batcher,
        deliver: Deliver,
        backpressure: SpoolBackpressure,
        counters: Counters,
        stopping: asyncio.Event,
        watcher: DirectoryWatcher | None = None,
        inflater: Executor | None = None,
    ) -> None:
        self._sources = sources
        self._config = collection
        self._progress = progress
        self._batcher = batcher
        self._deliver_to = deliver
        self._backpressure = backpressure
        self._counters = counters
        self._stopping = stopping
        self._watcher = watcher
        self._inflater = inflater
        self._prefetch: tuple[str, Source, asyncio.Future[_Prepared]] | None = None
        self._wake = asyncio.Event()
        now = time.monotonic()
        self._scan_due = now
        self._poll_due = now
        self._settle_due: float | None = None
        self._cursors: list[ScanCursor | None] = [None] * len(sources)
        self._queue: deque[_ObjectJob] = deque()
        self._fingerprints: dict[tuple[int, int, int, int], str] = {}
        self._fingerprints_seen: dict[tuple[int, int, int, int], str] = {}
        self._live: set[str] = set()
        # When a complete scan last saw each fingerprint (this run only).
        self._last_seen: dict[str, float] = {}
        self._cycle_errors = False
        self._started_wall = time.time()
        self._closed_paths: set[str] = set()
        # Objects inotify saw closed or renamed into place, to be looked at on
        # their own: a new file must not cost a walk of the whole tree.
        self._notified: dict[str, Source] = {}
        self._tails: dict[str, LineTail] = {}  # by path
        self._tail_fps: dict[str, LineTail] = {}  # by fingerprint
        self._poll_now: set[str] = set()
        self._current: _Reading | None = None
        self._undelivered: deque[SealedBatch] = deque()
        self._source_of_dir: dict[str, Source] = {}
        # Roots whose whole tree has been walked for watches once: watching only the
        # parents of files found would miss folders that are still empty at start.
        self._trees_watched: set[str] = set()
        self._scan_errors: set[str] = set()
        # Quarantined-as-truncated objects by path: a longer file at the same
        # path resumes after the records they already gave.
        self._truncated: dict[str, FilePosition] = {
            pos.path: pos
            for _, pos in progress.store.items()
            if pos.state is FileState.QUARANTINED and pos.note in _TRUNCATED_NOTES
        }

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Read until ``stopping`` is set; the open batch is left to the caller."""
        loop = asyncio.get_running_loop()
        watcher = self._watcher
        if watcher is not None:
            loop.add_reader(watcher.fileno(), self._on_watch_events)
        try:
            while not self._stopping.is_set():
                await self._retry_delivery()
                now = time.monotonic()
                if now >= self._scan_due:
                    self._scan()
                    self._notified.clear()  # the scan saw them
                elif self._notified:
                    self._consider_notified()
                drained = bool(self._queue)
                while self._queue and not self._stopping.is_set():
                    await self._read_object(self._queue.popleft())
                    if time.monotonic() >= self._poll_due:
                        await self._poll_tails()
                if self._stopping.is_set():
                    break
                if drained and not self._tails:
                    # Every object found is read and no growing file is open:
                    # lingering would only hold the last batch back.
                    self.flush()
                now = time.monotonic()
                if now >= self._poll_due or self._poll_now:
                    await self._poll_tails()
                self._seal_due(time.monotonic())
                await self._idle()
        finally:
            if watcher is not None:
                loop.remove_reader(watcher.fileno())
            self._close_tails()

    async def _idle(self) -> None:
        if self._queue or self._poll_now or self._notified:
            return
        deadlines = [self._scan_due, self._poll_due]
        if self._settle_due is not None:
            deadlines.append(self._settle_due)
        if self._batcher.deadline is not None:
            deadlines.append(self._batcher.deadline)
        timeout = min(deadlines) - time.monotonic()
        if timeout <= 0:
            return
        self._wake.clear()
        stop = asyncio.ensure_future(self._stopping.wait())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((stop, wake), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    async def _pause_point(self) -> None:
        """Between slices: seal a lingering batch, let the loop run, respect backpressure."""
        self._seal_due(time.monotonic())
        await asyncio.sleep(0)
        await self._backpressure.wait_for_room()
        await self._retry_delivery()

    def _seal_due(self, now: float) -> None:
        sealed = self._batcher.due(now)
        if sealed is not None:
            self._deliver(sealed)

    def _deliver(self, sealed: SealedBatch) -> None:
        if self._undelivered:
            self._undelivered.append(sealed)  # keep the order
            return
        try:
            self._deliver_to(sealed)
        except OSError as exc:
            log.error(
                "Cannot write to the spool (%s): reading waits and retries every %.0f s.",
                exc.strerror or exc,
                SPOOL_RETRY_S,
            )
            self._undelivered.append(sealed)

    async def _retry_delivery(self) -> None:
        while self._undelivered and not self._stopping.is_set():
            try:
                self._deliver_to(self._undelivered[0])
            except OSError:
                await asyncio.sleep(SPOOL_RETRY_S)
                continue
            self._undelivered.popleft()

    def flush(self) -> None:
        """Seal the open batch now (shutdown)."""
        sealed = self._batcher.flush()
        if sealed is not None:
            self._deliver(sealed)

    @property
    def undelivered(self) -> int:
        return len(self._undelivered)

    # -- scanning -------------------------------------------------------------------

    def request_scan(self) -> None:
        """Scan soon (tests, signals)."""
        self._scan_due = min(self._scan_due, time.monotonic())
        self._wake.set()

    def _scan(self) -> None:
        started = time.monotonic()
        wall = time.time()
        cycle_start = all(c is None for c in self._cursors)
        if cycle_start:
            self._live = set()
            self._fingerprints_seen = {}
        jobs: list[_ObjectJob] = []
        queued: set[str] = set()
        self._settle_due = None
        for i, source in enumerate(self._sources):
            candidates = self._candidates(i, source, wall)
            for candidate in candidates:
                self._watch_parents(source, candidate.path)
                if source.kind is SourceKind.CLOUDTRAIL:
                    job = self._consider_object(source, candidate, wall, queued)
                    if job is not None:
                        jobs.append(job)
                else:
                    self._consider_lines(source, candidate)
            if self._watcher is not None and source.root not in self._trees_watched:
                self._watch_tree(source, source.root)
                if source.root in self._source_of_dir:  # else (missing root) next scan
                    self._trees_watched.add(source.root)
        jobs.sort(key=lambda j: (j.candidate.delivered_at, j.candidate.rel_path))
        self._queue = deque(jobs)
        complete = all(c is None for c in self._cursors)
        now = time.monotonic()
        if complete:
            self._fingerprints = self._fingerprints_seen
            self._live.update(self._tail_fps)
            self._forget_unseen(wall)
            self._scan_due = now + self._config.scan_interval_s
        else:
            self._scan_due = now + SCAN_CONTINUE_S
        if self._settle_due is not None:
            self._scan_due = min(self._scan_due, self._settle_due)
        log.debug(
            "Scan: %d objects to read, %d files open, %.3f s.",
            len(jobs),
            len(self._tails),
            now - started,
        )

    def _consider_notified(self) -> None:
        """Queue the objects inotify named, looking at those files alone; the
        periodic scan stays the safety net for anything this misses."""
        notified, self._notified = self._notified, {}
        wall = time.time()
        queued = {job.fingerprint for job in self._queue}
        jobs = []
        for path, source in notified.items():
            candidate = candidate_at(
                source.tree, path, ignore_older_s=source.ignore_older_s, now=wall
            )
            if candidate is None:
                continue
            job = self._consider_object(source, candidate, wall, queued)
            if job is not None:
                jobs.append(job)
        if jobs:
            jobs.extend(self._queue)
            jobs.sort(key=lambda j: (j.candidate.delivered_at, j.candidate.rel_path))
            self._queue = deque(jobs)
        if self._settle_due is not None:
            self._scan_due = min(self._scan_due, self._settle_due)

    def _forget_unseen(self, wall: float) -> None:
        """Forget positions of files no complete scan has seen for
        ``forget_after_s`` while this agent ran, so a source that is away for
        a while (an unmounted share) is not re-read when it comes back."""
        seen = self._last_seen
        for fingerprint in self._live:
            seen[fingerprint] = wall
        if self._cycle_errors:
            self._cycle_errors = False
            return  # a directory could not be listed: its files may still exist
        cutoff = wall - self._config.forget_after_s
        if self._started_wall > cutoff:
            return  # not running for long enough to know
        unseen = {fp for fp, _ in self._progress.store.items() if seen.get(fp, 0.0) < cutoff}
        forgotten = self._progress.forget(unseen)
        for fingerprint in unseen:
            seen.pop(fingerprint, None)
        if forgotten:
            log.info(
                "Forgot the positions of %d files not seen for %.0f s.",
                forgotten,
                self._config.forget_after_s,
            )

    def _candidates(self, i: int, source: Source, wall: float) -> tuple[Candidate, ...]:
        if source.only_file is not None:
            candidate = source.single_candidate()
            return (candidate,) if candidate is not None else ()
        result = scan_trees(
            [source.tree],
            cursor=self._cursors[i],
            ignore_older_s=source.ignore_older_s,
            now=wall,
        )
        self._cursors[i] = result.cursor
        if result.errors:
            self._cycle_errors = True
        for error in result.errors:
            if error not in self._scan_errors:  # once per distinct error
                self._scan_errors.add(error)
                log.warning("%s: %s", source.describe(), error)
        return result.candidates

    def _consider_object(
        self, source: Source, c: Candidate, wall: float, queued: set[str]
    ) -> _ObjectJob | None:
        key = (c.dev, c.ino, c.size, c.mtime_ns)
        fingerprint = self._fingerprints.get(key) or self._fingerprints_seen.get(key)
        fresh = fingerprint is None
        if fingerprint is None:
            settle_s = self._config.settle_ms / 1000
            age = wall - c.mtime_ns / 1e9
            if age < settle_s and c.path not in self._closed_paths:
                due = time.monotonic() + (settle_s - age)
                if self._settle_due is None or due < self._settle_due:
                    self._settle_due = due
                return None  # may still be being written
            fingerprint = self._fingerprint(c.path)
            if fingerprint is None:
                return None
            self._counters.files_seen += 1
        self._fingerprints_seen[key] = fingerprint
        self._live.add(fingerprint)
        position = self._progress.position(fingerprint)
        if position is not None and position.finished:
            if fresh:
                self._counters.files_already_read += 1
                log.info(
                    "%s has the content of %s, already %s: not read again.",
                    c.path,
                    position.path or "a file read before",
                    "quarantined" if position.state is FileState.QUARANTINED else "read",
                )
            self._closed_paths.discard(c.path)
            return None
        current = self._current
        if fingerprint in queued or (current is not None and current.fingerprint == fingerprint):
            return None  # a copy of a file already queued or being read
        queued.add(fingerprint)
        start = position.index if position is not None else 0
        if position is None:
            earlier = self._truncated.get(clip_path(c.path))
            if earlier is not None and earlier.size < c.size and earlier.index > 0:
                start = earlier.index
                log.info(
                    "%s grew since it was quarantined as %s: resuming after its first %d "
                    "records, which were sent then.",
                    c.path,
                    earlier.note,
                    start,
                )
        return _ObjectJob(source, c, fingerprint, start)

    def _fingerprint(self, path: str) -> str | None:
        try:
            return object_fingerprint(path)
        except (gzip.BadGzipFile, EOFError, zlib.error):
            return self._raw_fingerprint(path)
        except OSError as exc:
            log.debug("%s: cannot fingerprint yet: %s", path, exc)
            return None

    @staticmethod
    def _raw_fingerprint(path: str) -> str | None:
        """Identity of a file too broken to decompress: its raw head and size."""
        try:
            with open(path, "rb") as f:
                head = f.read(RAW_HEAD_BYTES)
                size = os.fstat(f.fileno()).st_size
        except OSError:
            return None
        digest = hashlib.blake2b(b"%d:" % size + head, digest_size=16).hexdigest()
        return f"raw1:{digest}"

    # -- inotify --------------------------------------------------------------------

    def _watch_parents(self, source: Source, path: str) -> None:
        if self._watcher is None:
            return
        for directory in parent_directories(path, source.root):
            if directory in self._source_of_dir:
                break  # its ancestors are watched already
            self._watch_dir(source, directory)

    def _watch_dir(self, source: Source, directory: str) -> bool:
        watcher = self._watcher
        if watcher is None:
            return False
        if directory not in self._source_of_dir:
            if not watcher.watch(directory):
                return False
            self._source_of_dir[directory] = source
        return True

    def _watch_tree(self, source: Source, top: str) -> None:
        """Watch ``top`` and the directories below it, breadth first, until
        the watch budget runs out (deeper ones are then left to the scans)."""
        excluded = [compile_glob(p, any_segment=True) for p in source.tree.exclude]
        root_parts = len(Path(source.root).parts)
        pending = deque([top])
        while pending:
            directory = pending.popleft()
            if not self._watch_dir(source, directory):
                return
            try:
                with os.scandir(directory) as entries:
                    subdirs = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for path in sorted(subdirs):
                segments = Path(path).parts[root_parts:]
                if not any(match(segments) for match in excluded):
                    pending.append(path)

    def _on_watch_events(self) -> None:
        watcher = self._watcher
        assert watcher is not None
        try:
            events = watcher.read()
        except OSError as exc:
            log.warning("inotify failed (%s); relying on periodic scans.", exc)
            asyncio.get_running_loop().remove_reader(watcher.fileno())
            self._watcher = None
            return
        rescan = False
        for event in events:
            if event.overflow:
                rescan = True
                continue
            mask, path = event.mask, event.path
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    source = self._source_of_dir.get(event.directory)
                    if source is not None:
                        # Its subdirectories may exist already (mkdir -p, a move).
                        self._watch_tree(source, path)
                    rescan = True
                continue
            if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                if len(self._closed_paths) >= MAX_CLOSED_PATHS:
                    self._closed_paths.clear()
                self._closed_paths.add(path)
                source = self._source_of_dir.get(event.directory)
                if (
                    source is not None
                    and source.kind is SourceKind.CLOUDTRAIL
                    and source.only_file is None
                    and len(self._notified) < MAX_CLOSED_PATHS
                ):
                    self._notified[path] = source
                else:
                    rescan = True  # a JSON-lines file, or too many at once: walk
            elif mask & IN_MODIFY:
                if path in self._tails:
                    self._poll_now.add(path)
                else:
                    source = self._source_of_dir.get(event.directory)
                    rescan = rescan or (source is not None and source.kind is SourceKind.JSONLINES)
            elif mask & IN_CREATE:
                source = self._source_of_dir.get(event.directory)
                rescan = rescan or (source is not None and source.kind is SourceKind.JSONLINES)
        if rescan:
            self._scan_due = min(self._scan_due, time.monotonic() + RESCAN_DEBOUNCE_S)
        if rescan or self._poll_now or self._notified:
            self._wake.set()

    # -- CloudTrail objects ---------------------------------------------------------

    async def _read_object(self, job: _ObjectJob) -> None:
        await self._backpressure.wait_for_room()
        if self._stopping.is_set():
            return
        source, c, fingerprint = job.source, job.candidate, job.fingerprint
        position = self._progress.position(fingerprint)
        if position is not None and position.finished:
            return  # finished under another name since the scan
        start = max(job.start_index, position.index if position is not None else 0)
        path = c.path
        stored_path = clip_path(path)
        size = c.size
        updated = int(time.time())
        wrapper = _wrapper_for(source, path)
        wrap = wrapper.wrap_owned
        location, loc_bytes = location_text(path)

        def make_position(token: object) -> FilePosition:
            assert type(token) is int
            return FilePosition(
                FileKind.OBJECT, token, path=stored_path, size=size, updated=updated
            )

        cursor = FileCursor(fingerprint, make_position)
        document, messages = await self._prepared(source, path)
        records_in_document = len(messages) if messages is not None else 0
        if messages is not None and start:
            messages = messages[start:]
        whole_document = (
            messages is None and document is not None and len(document) <= WHOLE_PARSE_MAX_BYTES
        )
        # A whole document's records (~50k containers per MB) live until the
        # file is done and are acyclic: the cycle collector would only scan
        # them again and again as they age through its generations. It waits
        # until they are freed (bounded: WHOLE_PARSE_MAX_BYTES of document).
        paused = whole_document and gc.isenabled()
        if paused:
            gc.disable()
        try:
            whole = None
            if whole_document:
                assert document is not None
                whole = parse_whole_document(document, max_record_bytes=source.max_record_bytes)
            reader: CloudTrailFileReader | StreamedObject | None = None
            items: Iterator[tuple[int, dict[str, Any] | str] | Problem]
            if messages is not None:
                items = enumerate(messages, start)
            elif whole is not None:
                items = enumerate(islice(whole, start, None), start)
            elif document is None:  # large: inflated and wrapped a piece at a time
                reader = StreamedObject(
                    path, wrapper, start_index=start, max_record_bytes=source.max_record_bytes
                )
                items = iter(reader)
            else:
                reader = CloudTrailFileReader(
                    path,
                    start_index=start,
                    max_record_bytes=source.max_record_bytes,
                    document=document,
                )
                items = _pairs(reader)
            reading = self._current = _Reading(path, fingerprint, start)
            counters = self._counters
            add = self._batcher.add
            deliver = self._deliver
            max_wrapped = MAX_WRAPPED_BYTES
            problems = 0
            terminal: Problem | None = None
            consumed = start
            taken = 0
            mono = time.monotonic()
            try:
                for item in items:
                    if type(item) is tuple:
                        index, obj = item
                        consumed = index + 1
                        if type(obj) is str:  # wrapped already (FileWrapper.wrap_document)
                            message = obj
                            wrapped_bytes = len(obj) if obj.isascii() else len(obj.encode())
                        else:
                            try:
                                text = wrap(cast(dict[str, Any], obj))
                            except EnvelopeError as exc:
                                counters.records_invalid += 1
                                problems += 1
                                self._log_problem(problems, f"{path}, record {index}: {exc}")
                                continue
                            message = text.decode()
                            wrapped_bytes = len(text)
                        nbytes = wrapped_bytes + loc_bytes
                        if nbytes > max_wrapped:
                            counters.records_oversized += 1
                            problems += 1
                            self._log_problem(
                                problems,
                                f"{path}, record {index}: oversized_record: {wrapped_bytes} bytes "
                                "once wrapped; skipped",
                            )
                            continue
                        record = WireRecord(location, message)
                        sealed = add(record, nbytes, cursor, consumed, mono)
                        if sealed is not None:
                            deliver(sealed)
                        taken += 1
                        if taken >= SLICE_RECORDS:
                            counters.records_read += taken
                            taken = 0
                            reading.index = consumed
                            await self._pause_point()
                            mono = time.monotonic()
                            if self._stopping.is_set():
                                self._progress.read(fingerprint, make_position(consumed))
                                return
                    else:
                        problem = cast(Problem, item)
                        if problem.kind.terminal:
                            terminal = problem
                            continue
                        if problem.index is not None:
                            consumed = problem.index + 1
                        if problem.kind is ProblemKind.OVERSIZED_RECORD:
                            counters.records_oversized += 1
                        else:
                            counters.records_invalid += 1
                        problems += 1
                        self._log_problem(problems, str(item))
            except OSError as exc:
                # Gone or unreadable mid-way: keep what was read; a later scan retries.
                log.warning("%s: read failed after record %d: %s", path, consumed, exc)
                self._progress.read(fingerprint, make_position(consumed))
                return
            finally:
                counters.records_read += taken
                self._current = None
            if problems > MAX_PROBLEM_LOGS:
                log.warning(
                    "%s: %d record problems in all (first %d logged).",
                    path,
                    problems,
                    MAX_PROBLEM_LOGS,
                )
            if reader is not None:
                next_index = reader.next_index
            elif messages is not None:
                next_index = records_in_document
            else:
                next_index = len(whole or ())
            self._finish_object(fingerprint, path, size, next_index, terminal, updated)
        finally:
            if paused:
                # Free the records first, or the first collection scans them.
                whole = None
                items = iter(())
                gc.enable()

    async def _prepared(self, source: Source, path: str) -> _Prepared:
        """``path`` read ahead (or nothing: stream it), and the next queued
        object's reading started meanwhile."""
        inflater = self._inflater
        if inflater is None:
            return _Prepared(None, None)
        loop = asyncio.get_running_loop()
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None and prefetch[0] == path and prefetch[1] is source:
            pending = prefetch[2]
        else:
            if prefetch is not None:
                prefetch[2].cancel()
            pending = loop.run_in_executor(inflater, _prepare, source, path)
        if self._queue:
            following = self._queue[0]
            next_path = following.candidate.path
            self._prefetch = (
                next_path,
                following.source,
                loop.run_in_executor(inflater, _prepare, following.source, next_path),
            )
        return await pending

    def _finish_object(
        self,
        fingerprint: str,
        path: str,
        size: int,
        next_index: int,
        terminal: Problem | None,
        updated: int,
    ) -> None:
        state, note = FileState.DONE, ""
        if terminal is not None and terminal.kind is ProblemKind.DIGEST_FILE:
            self._counters.digests_skipped += 1
            note = terminal.kind.value
            log.debug("%s: a CloudTrail digest file; skipped.", path)
        elif terminal is not None:
            state, note = FileState.QUARANTINED, terminal.kind.value
            self._counters.files_quarantined += 1
            log.warning(
                "Quarantined %s: %s (its first %d records were read; the file will not be "
                "read again unless its content changes).",
                path,
                terminal,
                next_index,
            )
        if state is FileState.DONE:
            self._counters.files_done += 1
        final = FilePosition(
            FileKind.OBJECT,
            next_index,
            state=state,
            path=clip_path(path),
            size=size,
            note=note,
            updated=updated,
        )
        if note in _TRUNCATED_NOTES:
            self._truncated[final.path] = final
        else:
            self._truncated.pop(final.path, None)
        self._closed_paths.discard(path)
        self._progress.read(fingerprint, final)
        self._batcher.mark(fingerprint, final, time.monotonic())

    @staticmethod
    def _log_problem(count: int, message: str) -> None:
        if count <= MAX_PROBLEM_LOGS:
            log.warning("%s", message)

    # -- JSON-lines files -----------------------------------------------------------

    def _consider_lines(self, source: Source, c: Candidate) -> None:
        tail = self._tails.get(c.path)
        if tail is not None:
            self._live.add(tail.fingerprint)
            return
        if len(self._tails) >= MAX_OPEN_TAILS:
            self._close_idlest_tail()
        try:
            tail = LineTail.open(
                source,
                c.path,
                self._progress.position,
                self._counters,
                MAX_WRAPPED_BYTES,
                time.monotonic(),
            )
        except OSError as exc:
            log.warning("%s: cannot open: %s", c.path, exc.strerror or exc)
            return
        if tail is None:
            return  # no complete first line yet
        self._live.add(tail.fingerprint)
        other = self._tail_fps.get(tail.fingerprint)
        if other is not None:
            tail.close()  # the same file under another name (rotation in progress, a copy)
            return
        if tail.check() is TailChange.NONE and not self._recently_modified(c):
            tail.close()  # nothing new: no descriptor needed until it changes
            return
        self._counters.files_seen += 1
        self._tails[c.path] = tail
        self._tail_fps[tail.fingerprint] = tail
        self._poll_now.add(c.path)

    def _recently_modified(self, c: Candidate) -> bool:
        return time.time() - c.mtime_ns / 1e9 < CLOSE_INACTIVE_S

    async def _poll_tails(self) -> None:
        self._poll_due = time.monotonic() + self._config.poll_interval_ms / 1000
        self._poll_now.clear()
        for tail in list(self._tails.values()):
            if self._stopping.is_set():
                return
            try:
                change = tail.check()
            except OSError as exc:
                log.warning("%s: %s; closing it.", tail.path, exc.strerror or exc)
                self._close_tail(tail)
                continue
            now = time.monotonic()
            if change is TailChange.NONE:
                if now - tail.last_activity > CLOSE_INACTIVE_S:
                    self._close_tail(tail)
                continue
            if change is TailChange.REPLACED:
                self._counters.truncations += 1
                log.warning(
                    "%s was truncated or rewritten (read up to byte %d): reading it again "
                    "from the start as a new file.",
                    tail.path,
                    tail.resume[0],
                )
                self._close_tail(tail)
                self.request_scan()
                continue
            tail.last_activity = now
            rotated = change is TailChange.ROTATED
            await self._read_tail(tail, final=rotated)
            if rotated and not self._stopping.is_set():
                self._counters.rotations += 1
                log.info("%s was rotated: finished the old file, following the new one.", tail.path)
                self._close_tail(tail)
                self.request_scan()

    async def _read_tail(self, tail: LineTail, *, final: bool) -> None:
        add = self._batcher.add
        cursor = tail.cursor
        taken = 0
        mono = time.monotonic()
        for record, nbytes, token in tail.items(final=final):
            sealed = add(record, nbytes, cursor, token, mono)
            if sealed is not None:
                self._deliver(sealed)
            taken += 1
            if taken >= SLICE_RECORDS:
                taken = 0
                await self._pause_point()
                mono = time.monotonic()
                if self._stopping.is_set():
                    break
        position = tail.resume_position
        if self._progress.position(tail.fingerprint) != position:
            self._progress.read(tail.fingerprint, position)
            self._batcher.mark(tail.fingerprint, position, time.monotonic())

    def _close_tail(self, tail: LineTail) -> None:
        self._progress.read(tail.fingerprint, tail.resume_position)
        tail.close()
        self._tails.pop(tail.path, None)
        if self._tail_fps.get(tail.fingerprint) is tail:
            del self._tail_fps[tail.fingerprint]

    def _close_idlest_tail(self) -> None:
        idlest = min(self._tails.values(), key=lambda t: t.last_activity)
        self._close_tail(idlest)

    def _close_tails(self) -> None:
        for tail in list(self._tails.values()):
            self._close_tail(tail)

    # -- status ---------------------------------------------------------------------

    def reading(self) -> list[dict[str, Any]]:
        """The files being read right now, for status.json."""
        files: list[dict[str, Any]] = []
        current = self._current
        if current is not None:
            files.append(
                {
                    "path": current.path,
                    "fingerprint": current.fingerprint,
                    "kind": "cloudtrail",
                    "position": f"record {current.index}",
                }
            )
        for tail in self._tails.values():
            if len(files) >= MAX_LISTED_FILES:
                break
            offset, index = tail.resume
            files.append(
                {
                    "path": tail.path,
                    "fingerprint": tail.fingerprint,
                    "kind": "jsonlines",
                    "position": f"byte {offset}" + (f" (+{index} records)" if index else ""),
                }
            )
        return files

    @property
    def queued_files(self) -> int:
        return len(self._queue)


class _Prepared(NamedTuple):
    """An object read ahead on the inflater thread."""

    document: bytes | None  # None: stream the file (too large, unusual gzip...)
    messages: list[str] | None  # its records' messages, if the C envelope took it


def _prepare(source: Source, path: str) -> _Prepared:
    """Read an object ahead, on the inflater thread: zlib and the C envelope
    (``FileWrapper.wrap_document``) both release the GIL, so a document's
    records are wrapped while the event loop batches and sends the previous
    one's. The document is kept only for the Python paths."""
    document = load_document(path, PREFETCH_MAX_BYTES)
    if document is None or len(document) > WHOLE_PARSE_MAX_BYTES:
        return _Prepared(document, None)
    messages = _wrapper_for(source, path).wrap_document(
        document, start=0, max_record_bytes=source.max_record_bytes
    )
    return _Prepared(None if messages is not None else document, messages)


def _wrapper_for(source: Source, path: str) -> FileWrapper:
    origin = source.origin(path)
    return FileWrapper(log_file=origin.log_file, bucket=origin.bucket, account_id=origin.account_id)


def _pairs(reader: CloudTrailFileReader) -> Iterator[tuple[int, dict[str, Any]] | Problem]:
    """The reader's records as (index, object), its problems as they are."""
    for item in reader:
        if type(item) is Record:
            yield item.index, item.obj
        else:
            yield cast(Problem, item)
