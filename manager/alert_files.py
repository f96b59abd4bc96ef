"""Wazuh-compatible alert files: alerts.json, alerts.log and archives.json.

Layout under ``data_dir`` (analysisd ``getloglocation.c``, monitord
``manage_files.c``/``compress_log.c``)::

    logs/alerts/alerts.json       hard link to logs/alerts/2026/Nov/ossec-alerts-28.json
    logs/alerts/alerts.log        hard link to logs/alerts/2026/Nov/ossec-alerts-28.log
    logs/archives/archives.json   hard link to logs/archives/2026/Nov/ossec-archive-28.json
    logs/alerts/2026/Nov/ossec-alerts-27.json.gz   an earlier day, compressed

Theory of operation
-------------------
*Ids.* An alert's ``id`` is ``<epoch>.<offset>``, the offset being where the
alert starts in today's alerts.log (alerts.json when alerts.log is off). The
writer owns the offsets, so callers hand it ``PendingAlert``s whose ``render``
turns an id into the finished bytes; ``write()`` renders a whole batch against
running offsets, validates it, then issues one ``os.write`` per file. Archive
lines (``PendingArchive``) carry the id the next alert would get, as
analysisd's do. Files are opened ``O_APPEND`` and written with raw ``os.write``
(no user-space buffer): when ``write()`` returns, the batch is in the kernel and
survives a crash of this process.

*Two-phase writes.* ``write(items)`` is ``plan()``, ``plan.add(items)``,
``commit(plan)``. A caller that must record where a batch lands before it lands
(the manager's batch journal) uses the phases itself: the plan renders against
the current ends of the files and exposes the exact bytes and offsets
(``WritePlan.ranges``); ``commit`` appends them, or refuses a plan that another
write has made stale. ``add`` may be called repeatedly, so rendering thousands
of alerts can be spread over several event-loop iterations.

*Durability* (``FsyncPolicy``) is what ``flush()`` adds on top, i.e. survival
of a power loss or kernel crash:

* ``batch``: ``flush()`` returns True only after ``fsync`` of every file (and
  of directories whose entries changed) covering all batches written before the
  call. Concurrent flushes share one fsync (group commit). The fsync runs in a
  worker thread; the event loop keeps running.
* ``interval``: ``flush()`` returns at once; a background task fsyncs every
  ``fsync_interval_ms`` when something changed. A power loss can lose up to
  that much acknowledged data.
* ``never``: ``flush()`` returns at once; the kernel writes back when it likes.

If an fsync fails the writer turns unusable: data the kernel could not write
may already be dropped from its cache, so retrying would claim durability that
does not exist. ``flush()`` and later ``write()`` calls raise
``AlertFilesError``; the manager must stop acknowledging agents.

*Day rollover.* Before each batch the clock (injectable) is compared with the
current local day's bounds. On a new day the new files are created (appended
to if they exist) and the links re-pointed atomically (link to a temporary
name, then ``rename`` over the old link). Nothing is ever truncated or renamed
in place, so a reader tailing by inode (Filebeat) finishes the old file and
then follows the new one. The old day's files are closed (after a final fsync
under ``batch``/``interval``), deleted if empty (as analysisd does) or else
compressed to ``<name>.gz`` after ``compress_delay_s`` in a worker thread
(``alert_compression``). At start-up, interrupted compressions are settled and
earlier days left uncompressed are queued. A clock stepping back into an
earlier day reopens that day's file (appending, as analysisd would).

*Torn tails.* A crash or power loss can leave the last record incomplete
(missing bytes, or a run of NULs after a power loss). When a day file is
opened, its tail is checked: a JSON file must end in ``\\n``, alerts.log in
``\\n\\n`` (every block ends with a blank line). Otherwise the file is cut back
to the end of the last complete record (the last ``\\n``; the last
``\\n\\n** Alert `` boundary for alerts.log) and the cut bytes are appended to
``<name>.torn`` beside it, so nothing is silently lost and the next record
never joins a partial one. Such a record was never acknowledged under
``batch``: ``flush()`` had not returned for it.

One process per data directory: an exclusive ``flock`` on
``logs/.trailwarden-alerts.lock`` refuses a second writer.

Not done: analysisd's size-based rotation within a day (``max_output_size``,
``ossec-alerts-DD-NNN.json``), monitord's ``.sum`` checksum files, and the plain
``archives.log`` (``logall``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path

from trailwarden.manager.alert_compression import (
    DEFAULT_DELAY_S,
    FILE_MODE,
    MONTHS,
    DayFileCompressor,
    fsync_dir,
)
from trailwarden.manager.outputs import Stats
from trailwarden.manager.torn_tail import repair_torn_tail

log = logging.getLogger(__name__)

# analysisd runs with umask 0027 and creates 0770 dirs (0666 files: FILE_MODE).
DIR_MODE = 0o750
# Where the per-directory writer lock lives, relative to data_dir.
LOCK_FILE = Path("logs") / ".trailwarden-alerts.lock"

_JSON_END = b"\n"
_LOG_END = b"\n\n"
_LOG_START = b"** Alert "
_LOG_BOUNDARY = _LOG_END + _LOG_START


class FsyncPolicy(enum.StrEnum):
    """When written alerts are forced to stable storage (see module docstring)."""

    BATCH = "batch"
    INTERVAL = "interval"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class AlertFilesConfig:
    data_dir: Path
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    fsync_interval_ms: int = 1000
    alerts_log: bool = True  # ossec.conf <alerts_log>
    jsonout_output: bool = True  # ossec.conf <jsonout_output>
    logall_json: bool = False  # ossec.conf <logall_json>: archives.json
    compress: bool = True
    compress_delay_s: float = DEFAULT_DELAY_S  # monitord.day_wait

    def __post_init__(self) -> None:
        if not (self.alerts_log or self.jsonout_output):
            raise ValueError("alert files: alerts_log and jsonout_output are both off")
        if self.fsync_interval_ms <= 0:
            raise ValueError(f"alert files: fsync_interval_ms={self.fsync_interval_ms} <= 0")
        if self.compress_delay_s < 0:
            raise ValueError(f"alert files: compress_delay_s={self.compress_delay_s} < 0")


@dataclass(frozen=True, slots=True)
class PendingAlert:
    """An alert waiting for its id.

    ``render(alert_id)`` returns ``(alerts.json line, alerts.log block)``: one
    JSON object ending in ``\\n``, and a block starting ``** Alert `` and ending
    in a blank line. ``epoch_s`` is the alert's time (the ``<epoch>`` of the id).
    """

    epoch_s: int
    render: Callable[[str], tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class PendingArchive:
    """An event for archives.json; ``render(alert_id)`` returns its JSON line."""

    epoch_s: int
    render: Callable[[str], bytes]


class AlertFilesError(Exception):
    """The alert files cannot be written (disk, permissions, another writer)."""


class AlertRenderError(ValueError):
    """A renderer returned bytes that would break the file format (a bug in it)."""


class _Stream:
    """One daily file family: its link, today's path, descriptor and size."""

    __slots__ = ("base", "link", "tag", "ext", "end", "boundary", "keep", "fd", "path", "offset")

    def __init__(self, base: Path, link: str, tag: str, ext: str, *, log_format: bool) -> None:
        self.base = base
        self.link = base / link
        self.tag = tag
        self.ext = ext
        # A complete file ends in `end`; records are cut at the last `boundary`,
        # keeping its first `keep` bytes.
        self.end = _LOG_END if log_format else _JSON_END
        self.boundary = _LOG_BOUNDARY if log_format else _JSON_END
        self.keep = len(_LOG_END) if log_format else 1
        self.fd = -1
        self.path: Path | None = None
        self.offset = 0

    def day_path(self, day: date) -> Path:
        return (
            self.base
            / str(day.year)
            / MONTHS[day.month - 1]
            / f"ossec-{self.tag}-{day.day:02d}{self.ext}"
        )


@dataclass(frozen=True, slots=True)
class FileRange:
    """One file's part of a write: ``data`` goes at byte ``start`` of ``path``.

    ``path`` is None and ``data`` empty for a file this writer does not keep
    (e.g. alerts.log switched off).
    """

    path: Path | None
    start: int
    data: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class WritePlan:
    """Alerts rendered against the files' current ends, waiting for ``commit``.

    Made by ``AlertFiles.plan()``. ``add`` may be called many times (a caller
    that renders thousands of alerts can yield to its event loop between
    calls); each item gets the id of the offset where it will land. The plan
    remembers which files and offsets it was made for, so a commit after
    another write is refused instead of corrupting the ids.
    """

    __slots__ = (
        "_json",
        "_log",
        "_archive",
        "_base",
        "_json_parts",
        "_log_parts",
        "_arch_parts",
        "_json_off",
        "_log_off",
        "_arch_off",
        "alerts",
        "archives",
        "_ranges",
    )

    def __init__(self, js: _Stream | None, lg: _Stream | None, ar: _Stream | None) -> None:
        self._json, self._log, self._archive = js, lg, ar
        self._base = tuple((s.fd, s.offset) if s is not None else None for s in (js, lg, ar))
        self._json_parts: list[bytes] = []
        self._log_parts: list[bytes] = []
        self._arch_parts: list[bytes] = []
        self._json_off = js.offset if js is not None else 0
        self._log_off = lg.offset if lg is not None else 0
        self._arch_off = ar.offset if ar is not None else 0
        self.alerts = 0
        self.archives = 0
        self._ranges: tuple[FileRange, FileRange, FileRange] | None = None

    def add(self, items: Sequence[PendingAlert | PendingArchive]) -> list[str]:
        """Render ``items`` after what the plan holds; return their ids in order.

        All or nothing: if a renderer raises or returns a malformed record,
        none of ``items`` is kept (earlier ``add`` calls stay).

        Raises:
            AlertRenderError: a renderer returned a malformed record.
        """
        if self._ranges is not None:
            raise RuntimeError("WritePlan.add() after ranges() sealed the plan (bug)")
        js, lg, ar = self._json, self._log, self._archive
        json_parts: list[bytes] = []
        log_parts: list[bytes] = []
        arch_parts: list[bytes] = []
        json_off, log_off, arch_off = self._json_off, self._log_off, self._arch_off
        ids: list[str] = []
        n_alerts = n_archives = 0
        for index, item in enumerate(items):
            alert_id = f"{item.epoch_s}.{log_off if lg is not None else json_off}"
            ids.append(alert_id)
            if isinstance(item, PendingAlert):
                line, block = item.render(alert_id)
                n_alerts += 1
                if js is not None:
                    if not line.endswith(b"\n") or line.find(b"\n") != len(line) - 1:
                        raise AlertRenderError(
                            f"item {index} (id {alert_id}): alerts.json line must be one line "
                            f"ending in a newline: {line[:80]!r}"
                        )
                    json_parts.append(line)
                    json_off += len(line)
                if lg is not None:
                    if not (block.startswith(_LOG_START) and block.endswith(_LOG_END)):
                        raise AlertRenderError(
                            f"item {index} (id {alert_id}): alerts.log block must start with "
                            f"'** Alert ' and end with a blank line: {block[:80]!r}"
                        )
                    log_parts.append(block)
                    log_off += len(block)
            elif ar is not None:
                line = item.render(alert_id)
                if not line.endswith(b"\n") or line.find(b"\n") != len(line) - 1:
                    raise AlertRenderError(
                        f"item {index} (id {alert_id}): archives.json line must be one line "
                        f"ending in a newline: {line[:80]!r}"
                    )
                arch_parts.append(line)
                arch_off += len(line)
                n_archives += 1
        self._json_parts += json_parts
        self._log_parts += log_parts
        self._arch_parts += arch_parts
        self._json_off, self._log_off, self._arch_off = json_off, log_off, arch_off
        self.alerts += n_alerts
        self.archives += n_archives
        return ids

    @property
    def empty(self) -> bool:
        """True when nothing will be written (no items, or only skipped archives)."""
        if self._ranges is not None:
            return not any(r.data for r in self._ranges)
        return not (self._json_parts or self._log_parts or self._arch_parts)

    def ranges(self) -> tuple[FileRange, FileRange, FileRange]:
        """Where the plan's bytes will land: alerts.json, alerts.log, archives.json.

        Seals the plan (no more ``add``). The bytes are joined once here and
        written as they are by ``commit``, so a caller may record them (e.g.
        a digest in a journal) before committing.
        """
        if self._ranges is None:
            out = []
            for stream, base, parts in zip(
                (self._json, self._log, self._archive),
                self._base,
                (self._json_parts, self._log_parts, self._arch_parts),
                strict=True,
            ):
                if stream is None or base is None:
                    out.append(FileRange(None, 0, b""))
                else:
                    data = parts[0] if len(parts) == 1 else b"".join(parts)
                    out.append(FileRange(stream.path, base[1], data))
            self._json_parts = self._log_parts = self._arch_parts = []
            self._ranges = (out[0], out[1], out[2])
        return self._ranges

    def streams(self) -> tuple[_Stream | None, _Stream | None, _Stream | None]:
        return self._json, self._log, self._archive

    def based_on_current(self) -> bool:
        """True while no other write moved the files since the plan was made."""
        current = tuple(
            (s.fd, s.offset) if s is not None else None
            for s in (self._json, self._log, self._archive)
        )
        return current == self._base


class AlertFiles:
    """Writer of the Wazuh alert files; an ``Output`` fed through ``write()``.

    Args:
        config: what to write and how durably.
        clock: seconds since the epoch; decides the day (tests pass a fake).
        tz: time zone of the day boundaries; None is the system's local time.
    """

    name = "alert_files"

    def __init__(
        self,
        config: AlertFilesConfig,
        *,
        clock: Callable[[], float] = time.time,
        tz: tzinfo | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._tz = tz
        alerts = config.data_dir / "logs" / "alerts"
        self._json = (
            _Stream(alerts, "alerts.json", "alerts", ".json", log_format=False)
            if config.jsonout_output
            else None
        )
        self._log = (
            _Stream(alerts, "alerts.log", "alerts", ".log", log_format=True)
            if config.alerts_log
            else None
        )
        self._archive = (
            _Stream(
                config.data_dir / "logs" / "archives",
                "archives.json",
                "archive",
                ".json",
                log_format=False,
            )
            if config.logall_json
            else None
        )
        self._streams = tuple(s for s in (self._json, self._log, self._archive) if s is not None)
        self._day: date | None = None
        self._day_start = 0.0
        self._day_end = 0.0
        self._lock_fd = -1
        self._started = False
        self._closed = False
        self._failed: BaseException | None = None
        # Durability bookkeeping: batches written vs. batches known durable.
        self._written_seq = 0
        self._synced_seq = 0
        self._sync_task: asyncio.Task[None] | None = None
        self._retired: list[int] = []  # old days' fds, closed by the next sync
        self._dirs_to_sync: set[Path] = set()
        self._interval_task: asyncio.Task[None] | None = None
        self._compressor = DayFileCompressor(config.compress_delay_s, enabled=config.compress)
        self._n: dict[str, int] = dict.fromkeys(
            (
                "alerts_written",
                "archives_written",
                "batches",
                "bytes_written",
                "write_errors",
                "fsyncs",
                "rollovers",
                "torn_repairs",
                "links_orphaned",
            ),
            0,
        )

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Lock the data dir, open (and repair) today's files, start background work.

        Raises:
            AlertFilesError: another writer holds the lock, or a file or
                directory cannot be created.
        """
        if self._started:
            raise RuntimeError("AlertFiles.start() called twice")
        try:
            self._acquire_lock()
            for s in self._streams:
                s.base.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            self._rollover(self._clock())
        except OSError as exc:
            self._release()
            raise AlertFilesError(
                f"alert files: cannot open under {self._config.data_dir}: {exc}"
            ) from exc
        bases = [self._config.data_dir / "logs" / k for k in ("alerts", "archives")]
        today = {s.path for s in self._streams if s.path is not None}
        try:
            leftovers = await asyncio.to_thread(DayFileCompressor.recover, bases, today)
        except OSError as exc:  # compressing old days is housekeeping, not fatal
            log.error("Alert files: cannot scan for earlier days to compress: %s.", exc)
            leftovers = []
        self._started = True
        for path in leftovers:
            self._compressor.schedule(path)
        if self._config.fsync is FsyncPolicy.INTERVAL:
            self._interval_task = asyncio.create_task(self._interval_loop())

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every batch written so far is durable under the policy.

        ``batch``: True once fsynced (see the module docstring). ``interval`` and
        ``never``: True at once, since ``write()`` already handed the data to
        the kernel. Returns False if ``timeout_s`` passed first (the fsync goes
        on; do not acknowledge yet).

        Raises:
            AlertFilesError: an fsync failed (now or earlier).
        """
        self._check_usable()
        if self._config.fsync is not FsyncPolicy.BATCH or self._synced_seq >= self._written_seq:
            return True
        target = self._written_seq
        try:
            async with asyncio.timeout(timeout_s):
                while self._synced_seq < target:
                    await asyncio.shield(self._sync_once())
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float) -> None:
        """Make written data durable (unless ``never``), stop compression, close files.

        Compression interrupted here resumes at the next start.
        """
        if self._closed:
            return
        self._closed = True
        if self._interval_task is not None:
            self._interval_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._interval_task
        deadline = asyncio.get_running_loop().time() + timeout_s
        if self._started and self._failed is None and self._config.fsync is not FsyncPolicy.NEVER:
            try:
                async with asyncio.timeout(timeout_s):
                    while self._synced_seq < self._written_seq or self._retired:
                        await asyncio.shield(self._sync_once())
            except TimeoutError:
                log.error("Alert files: final fsync did not finish within %.1f s.", timeout_s)
            except AlertFilesError:
                pass  # already logged by the sync
        await self._compressor.close(max(0.0, deadline - asyncio.get_running_loop().time()))
        self._release()

    def stats(self) -> Stats:
        out: Stats = dict(self._n)
        out["compressions"] = self._compressor.done
        out["compression_errors"] = self._compressor.errors
        out["compressions_pending"] = self._compressor.pending
        out["day"] = self._day.isoformat() if self._day is not None else ""
        out["failed"] = self._failed is not None
        if self._json is not None:
            out["alerts_json_offset"] = self._json.offset
        if self._log is not None:
            out["alerts_log_offset"] = self._log.offset
        if self._archive is not None:
            out["archives_json_offset"] = self._archive.offset
        return out

    # -- writing -------------------------------------------------------------

    def write(self, items: Sequence[PendingAlert | PendingArchive]) -> list[str]:
        """Assign ids, render and append one batch; return the ids in item order.

        One ``os.write`` per file. The batch is in the kernel on return (see the
        module docstring for what ``flush()`` adds). Either the whole batch is
        appended or, on error, none of it: a failed write is cut back off.

        ``PendingArchive`` items are skipped when ``logall_json`` is off (their
        id is still returned). A renderer's own exceptions propagate as they
        are, with nothing written. Equivalent to ``plan()``, ``add(items)``,
        ``commit(plan)``.

        Raises:
            AlertRenderError: a renderer returned a malformed record; nothing
                was written.
            AlertFilesError: the files could not be written; nothing was kept.
        """
        if not items:
            self._check_usable()
            return []
        plan = self.plan()
        ids = plan.add(items)
        self.commit(plan)
        return ids

    def plan(self) -> WritePlan:
        """Start a write: items added to the plan get ids from the current offsets.

        Rolls the files over first when the day changed. Nothing reaches the
        files until ``commit(plan)``; no other write may happen in between
        (``commit`` refuses a plan that is no longer based on the files' ends).

        Raises:
            AlertFilesError: unusable, outside start()..close(), or the rollover failed.
        """
        self._check_usable()
        if not self._started or self._closed:
            raise AlertFilesError("alert files: write() outside start()..close()")
        now = self._clock()
        if not self._day_start <= now < self._day_end:
            try:
                self._rollover(now)
            except OSError as exc:
                self._n["write_errors"] += 1
                raise AlertFilesError(f"alert files: day rollover failed: {exc}") from exc
        return WritePlan(self._json, self._log, self._archive)

    def commit(self, plan: WritePlan) -> None:
        """Append what ``plan`` holds: one ``os.write`` per file, all or nothing.

        Raises:
            AlertFilesError: a file could not be written; what reached any file
                was cut back off (or the writer turned unusable if even that failed).
            RuntimeError: the plan is stale (another write came first): a caller bug.
        """
        self._check_usable()
        if not plan.based_on_current():
            raise RuntimeError("alert files: commit() of a plan made before another write (bug)")
        ranges = plan.ranges()
        touched: list[_Stream] = []
        try:
            for stream, data in zip(plan.streams(), ranges, strict=True):
                if stream is None or not data.data:
                    continue
                touched.append(stream)
                _write_all(stream.fd, data.data)
        except OSError as exc:
            self._n["write_errors"] += 1
            self._roll_back(touched)
            failing = touched[-1].path if touched else None
            raise AlertFilesError(f"alert files: cannot append to {failing}: {exc}") from exc
        written = 0
        for stream, data in zip(plan.streams(), ranges, strict=True):
            if stream is not None and data.data:
                stream.offset += len(data.data)
                written += len(data.data)
        counters = self._n
        counters["alerts_written"] += plan.alerts
        counters["archives_written"] += plan.archives
        counters["bytes_written"] += written
        counters["batches"] += 1
        if written:
            self._written_seq += 1

    def _roll_back(self, touched: list[_Stream]) -> None:
        """Cut a failed batch off every file it reached; fail hard if that fails."""
        for stream in touched:
            try:
                os.ftruncate(stream.fd, stream.offset)
            except OSError as exc:
                # A partial record stays; the next start's tail repair cuts it.
                self._failed = exc
                log.critical(
                    "Alert files: cannot remove a failed write from %s: %s.", stream.path, exc
                )

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise AlertFilesError(f"alert files unusable after an earlier error: {self._failed}")

    # -- days ----------------------------------------------------------------

    def _rollover(self, now: float) -> None:
        day = datetime.fromtimestamp(now, self._tz).date()
        start, end = self._day_bounds(day)
        had_day = self._day is not None
        for s in self._streams:
            self._open_day(s, s.day_path(day))
        self._day = day
        # Guard against a zone where local midnight does not exist: never let
        # the bounds exclude `now`, or every batch would redo this.
        self._day_start = min(start, now)
        self._day_end = max(end, now + 1e-3)
        if had_day:
            self._n["rollovers"] += 1
            log.info("Alert files: new day %s.", day.isoformat())

    def _day_bounds(self, day: date) -> tuple[float, float]:
        nxt = day + timedelta(days=1)
        if self._tz is None:  # naive datetimes are local time for .timestamp()
            return (
                datetime(day.year, day.month, day.day).timestamp(),  # noqa: DTZ001
                datetime(nxt.year, nxt.month, nxt.day).timestamp(),  # noqa: DTZ001
            )
        return (
            datetime(day.year, day.month, day.day, tzinfo=self._tz).timestamp(),
            datetime(nxt.year, nxt.month, nxt.day, tzinfo=self._tz).timestamp(),
        )

    def _open_day(self, s: _Stream, path: Path) -> None:
        if s.path == path:
            return
        self._compressor.cancel(path)
        month_dir = path.parent
        if not month_dir.is_dir():
            month_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            self._dirs_to_sync.update((month_dir.parent.parent, month_dir.parent, month_dir))
        existed = path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            size = self._repair_tail(fd, path, s)
            if not existed:
                self._dirs_to_sync.add(month_dir)
            self._point_link(s.link, path, fd)
        except BaseException:
            os.close(fd)
            raise
        old_fd, old_path, old_size = s.fd, s.path, s.offset
        s.fd, s.path, s.offset = fd, path, size
        if old_fd >= 0:
            if self._config.fsync is FsyncPolicy.NEVER:
                os.close(old_fd)
            else:
                self._retired.append(old_fd)
        if old_path is not None:
            if old_size == 0:
                with contextlib.suppress(FileNotFoundError):
                    old_path.unlink()  # as analysisd: no empty day files
            else:
                self._compressor.schedule(old_path)

    def _point_link(self, link: Path, target: Path, target_fd: int) -> None:
        """Make ``link`` another name of ``target``, atomically."""
        try:
            st = link.lstat()
        except FileNotFoundError:
            st = None
        if st is not None:
            tst = os.fstat(target_fd)
            if (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino):
                return
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size > 0:
                # Not a link to any day file: its only copy. Keep it aside.
                aside = link.with_name(f"{link.name}.orphaned-{int(self._clock())}")
                link.rename(aside)
                self._n["links_orphaned"] += 1
                log.warning(
                    "Alert files: %s was not linked to a day file; kept as %s.", link, aside
                )
        tmp = link.with_name(f".{link.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.link(target, tmp)
        tmp.replace(link)
        self._dirs_to_sync.add(link.parent)

    def _repair_tail(self, fd: int, path: Path, s: _Stream) -> int:
        """Cut an incomplete last record off (see module docstring); return the size."""
        size, cut = repair_torn_tail(fd, path, s.end, s.boundary, s.keep)
        if cut:
            self._n["torn_repairs"] += 1
            log.warning(
                "Alert files: %s ended in an incomplete record; cut %d bytes at offset %d "
                "and kept them in %s.torn.",
                path,
                cut,
                size,
                path.name,
            )
        return size

    # -- durability ----------------------------------------------------------

    def _sync_once(self) -> asyncio.Task[None]:
        """The fsync in flight, or a new one covering everything written so far."""
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(self._run_sync())
        return self._sync_task

    async def _run_sync(self) -> None:
        seq = self._written_seq
        fds = tuple(s.fd for s in self._streams if s.fd >= 0)
        retired, self._retired = tuple(self._retired), []
        dirs = tuple(self._dirs_to_sync)
        self._dirs_to_sync.clear()
        try:
            await asyncio.to_thread(_fsync_all, fds, retired, dirs)
        except OSError as exc:
            self._failed = exc
            log.critical("Alert files: fsync failed, no longer writing: %s.", exc)
            raise AlertFilesError(f"alert files: fsync failed: {exc}") from exc
        self._n["fsyncs"] += 1
        self._synced_seq = max(self._synced_seq, seq)

    async def _interval_loop(self) -> None:
        interval = self._config.fsync_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if self._synced_seq < self._written_seq or self._retired or self._dirs_to_sync:
                try:
                    await asyncio.shield(self._sync_once())
                except AlertFilesError:
                    return

    def _acquire_lock(self) -> None:
        lock_path = self._config.data_dir / LOCK_FILE
        lock_path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlertFilesError(
                f"alert files: {lock_path} is locked: another manager writes to "
                f"{self._config.data_dir}"
            ) from None
        self._lock_fd = fd

    def _release(self) -> None:
        sync = self._sync_task
        fds = [s.fd for s in self._streams if s.fd >= 0] + self._retired
        for s in self._streams:
            s.fd = -1
        self._retired = []
        if sync is not None and not sync.done():
            # The fsync thread still uses these; close them when it is done.
            sync.add_done_callback(lambda _t: _close_all(fds))
        else:
            _close_all(fds)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1


# -- blocking helpers (some run in worker threads) -----------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_all(fds: tuple[int, ...], retired: tuple[int, ...], dirs: tuple[Path, ...]) -> None:
    try:
        for fd in fds + retired:
            os.fsync(fd)
        for d in dirs:
            fsync_dir(d)
    finally:
        _close_all(retired)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
