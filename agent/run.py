"""The running agent: wiring, periodic duties, signals, and one ordered shutdown.

Data flow, on one event loop; three worker threads take what releases the
GIL or blocks: inflating objects, fsync + encoding + the connection, and
writing checkpoints::

    files --Tailer--> Batcher --Progress.seal--> Spool --Sender--> manager
                                                   ^                  |
    positions.json <--checkpoint-- PositionStore <-+------ Ack -------+

Durable state in ``<data_dir>``: ``agent.key`` (enrollment), ``positions.json``
and ``positions.journal`` (acknowledged progress), ``spool/`` (batches under
their sequence numbers), ``status.json`` (a view for ``trailwarden-agent
status``) and ``agent.lock`` (one agent per data directory).

Shutdown (SIGTERM, SIGINT, ``Agent.request_stop``) is ``Agent._shutdown``,
every wait bounded: stop reading, seal the open batch into the spool, give
the manager ``shutdown_timeout_s`` to acknowledge what is in flight, close
the connection, write the positions, write the final status. A second
signal skips the waiting. Whatever is not acknowledged stays in the spool
and is sent first after the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import functools
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

from trailwarden.agent.backpressure import SpoolBackpressure
from trailwarden.agent.batcher import Batcher, SealedBatch
from trailwarden.agent.config import AgentConfig
from trailwarden.agent.identity import AgentIdentity, IdentityError, IdentitySource
from trailwarden.agent.inotify import DirectoryWatcher
from trailwarden.agent.positions import FileState, PositionsError, PositionStore
from trailwarden.agent.progress import Progress
from trailwarden.agent.sender import Sender
from trailwarden.agent.sources import resolve_sources
from trailwarden.agent.spool import Spool, SpoolError
from trailwarden.agent.status import STATUS_VERSION, Counters, write_status
from trailwarden.agent.tailer import Tailer
from trailwarden.common.process_runtime import (
    AGENT_GC_THRESHOLDS,
    event_loop_runner,
    settle_collector,
)

log = logging.getLogger("trailwarden.agent")

LOCK_NAME: Final = "agent.lock"
SPOOL_DIR: Final = "spool"
# Reading stops at its next slice; a scan or a fingerprint may take longer.
TAILER_STOP_TIMEOUT_S: Final = 5.0
# The sender's Close and socket teardown.
SENDER_STOP_TIMEOUT_S: Final = 3.0
# malloc arenas: the loop thread and three workers share two (see _tune_malloc).
MALLOC_ARENAS: Final = 2
# Allocations from this size up are mmapped and returned to the system on free.
MALLOC_MMAP_BYTES: Final = 256 * 1024
_M_ARENA_MAX: Final = -8  # glibc's mallopt parameter numbers
_M_MMAP_THRESHOLD: Final = -3


class AgentError(RuntimeError):
    """The agent cannot start: its data directory, key or state is unusable."""


class DataDirLock:
    """An exclusive flock on ``<data_dir>/agent.lock``; the kernel drops it
    when the process dies, however it dies."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / LOCK_NAME
        self._fd = -1

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AgentError(
                f"{self._path}: another trailwarden-agent is running with this data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Agent:
    """One agent process's worth of state (see the module docstring)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.data_dir = config.agent.data_dir
        self.counters = Counters()
        self.started = time.time()
        self._stop = asyncio.Event()
        self._forced = asyncio.Event()
        self._force = False
        self._failed: BaseException | None = None
        self.identity: AgentIdentity | None = None
        self.progress: Progress | None = None
        self.tailer: Tailer | None = None
        self.sender: Sender | None = None
        self._backpressure: SpoolBackpressure | None = None

    def request_stop(self) -> None:
        """Begin the ordered shutdown; a second call skips its waiting."""
        if self._stop.is_set():
            if not self._force:
                log.warning("Second stop request: not waiting for the manager.")
            self._force = True
            self._forced.set()
        self._stop.set()

    # -- running ---------------------------------------------------------------------

    async def run(self, *, install_signals: bool = False) -> None:
        """Run until ``request_stop`` (or a signal); raises AgentError on startup failure."""
        config = self.config
        data_dir = self.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AgentError(f"{data_dir}: cannot create the data directory: {exc}") from None
        lock = DataDirLock(data_dir)
        lock.acquire()
        try:
            identities = IdentitySource(data_dir)
            try:
                self.identity = identities()
            except IdentityError as exc:
                raise AgentError(str(exc)) from None
            try:
                store = PositionStore.open(data_dir)
            except PositionsError as exc:
                raise AgentError(str(exc)) from None
            try:
                spool = Spool.open(
                    data_dir / SPOOL_DIR,
                    max_bytes=config.spool.max_bytes,
                    segment_bytes=config.spool.segment_bytes,
                    fsync=config.spool.fsync,
                    acked_seq=store.acked_seq,
                )
            except SpoolError as exc:
                store.close()
                raise AgentError(str(exc)) from None
            try:
                await self._run(store, spool, identities, install_signals)
            finally:
                spool.close()
                store.close()
        finally:
            lock.release()

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped the agent, if a task failed (already logged)."""
        return self._failed

    async def _run(
        self,
        store: PositionStore,
        spool: Spool,
        identities: IdentitySource,
        install_signals: bool,
    ) -> None:
        config = self.config
        progress = self.progress = Progress(store, spool)
        reading_stop = asyncio.Event()
        backpressure = self._backpressure = SpoolBackpressure(spool, reading_stop)
        delivery = config.delivery
        batcher = Batcher(
            max_records=delivery.max_batch_records,
            max_bytes=delivery.max_batch_bytes,
            linger_s=delivery.linger_ms / 1000,
        )
        encoder = ThreadPoolExecutor(1, thread_name_prefix="trailwarden-encode")
        io = ThreadPoolExecutor(1, thread_name_prefix="trailwarden-io")
        inflater = ThreadPoolExecutor(1, thread_name_prefix="trailwarden-inflate")
        sender = self.sender = Sender(
            config.manager_addresses(),
            identities,
            progress,
            delivery,
            self.counters,
            encoder=encoder,
        )
        counters = self.counters

        def deliver(sealed: SealedBatch) -> None:
            spooled = progress.seal(sealed)
            if spooled is not None:
                counters.batches_spooled += 1
                counters.records_spooled += len(spooled.records)
                sender.wake()

        watcher = DirectoryWatcher.create() if config.collection.inotify else None
        if config.collection.inotify and watcher is None:
            log.info("inotify is not available: new files are found by periodic scans only.")
        tailer = self.tailer = Tailer(
            resolve_sources(config.sources),
            config.collection,
            progress=progress,
            batcher=batcher,
            deliver=deliver,
            backpressure=backpressure,
            counters=counters,
            stopping=reading_stop,
            watcher=watcher,
            inflater=inflater,
        )
        if spool.unacked_batches:
            log.info(
                "Resuming: %d batches (%d records) in the spool are sent first.",
                spool.unacked_batches,
                spool.unacked_records,
            )
        loop = asyncio.get_running_loop()
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.request_stop)
        tasks: dict[str, asyncio.Future[None]] = {
            "tailer": asyncio.ensure_future(tailer.run()),
            "sender": asyncio.ensure_future(sender.run()),
            "checkpoint": asyncio.ensure_future(self._checkpoints(io)),
            "status": asyncio.ensure_future(self._statuses()),
        }
        for name, task in tasks.items():
            task.add_done_callback(functools.partial(self._task_ended, name))
        log.info(
            "Agent %s started: %d sources, managers %s.",
            self.identity.agent_id if self.identity else "?",
            len(config.sources),
            ", ".join(f"{m.host}:{m.port}" for m in config.manager_addresses()),
        )
        try:
            await self._stop.wait()
            await self._shutdown(tasks, reading_stop, io)
        finally:
            if install_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            if watcher is not None:
                watcher.close()
            encoder.shutdown(wait=True)
            io.shutdown(wait=True)
            inflater.shutdown(wait=True, cancel_futures=True)

    def _task_ended(self, name: str, task: asyncio.Future[None]) -> None:
        if task.cancelled() or self._stop.is_set():
            return
        exc = task.exception()
        if exc is None:
            log.error("The %s task ended on its own; stopping.", name)
        else:
            log.critical("The %s task failed: %r; stopping.", name, exc, exc_info=exc)
            self._failed = exc
        self._stop.set()

    async def _shutdown(
        self,
        tasks: dict[str, asyncio.Future[None]],
        reading_stop: asyncio.Event,
        io: ThreadPoolExecutor,
    ) -> None:
        """Stop in order, each step bounded (see the module docstring)."""
        started = time.monotonic()
        log.info("Stopping.")
        tailer, sender, progress = self.tailer, self.sender, self.progress
        assert tailer is not None and sender is not None and progress is not None
        # 1. Stop reading.
        reading_stop.set()
        await _wait_task(tasks["tailer"], TAILER_STOP_TIMEOUT_S)
        # 2. Seal the open batch into the spool, so it is sent now or first next time.
        tailer.flush()
        sender.wake()
        # 3. Let the manager acknowledge what is spooled, while connected.
        if not self._force and sender.view.state == "connected":
            timeout = self.config.delivery.shutdown_timeout_s
            drained = await _race(sender.drain(timeout), self._force_requested())
            if not drained:
                log.info(
                    "%d batches not acknowledged at shutdown stay in the spool.",
                    progress.spool.unacked_batches,
                )
        # 4. Close the connection.
        sender.stop()
        await _wait_task(tasks["sender"], SENDER_STOP_TIMEOUT_S)
        # 5. Make acknowledged progress durable.
        tasks["checkpoint"].cancel()
        await asyncio.gather(tasks["checkpoint"], return_exceptions=True)
        try:
            progress.checkpoint()
        except OSError as exc:
            log.error("Final checkpoint failed (%s); acknowledged batches will be re-sent.", exc)
        # 6. The last word in status.json.
        tasks["status"].cancel()
        await asyncio.gather(tasks["status"], return_exceptions=True)
        self._write_status("stopped")
        log.info("Stopped in %.1f s.", time.monotonic() - started)

    async def _force_requested(self) -> bool:
        await self._forced.wait()
        return False

    # -- periodic duties -------------------------------------------------------------

    async def _checkpoints(self, io: ThreadPoolExecutor) -> None:
        progress, backpressure = self.progress, self._backpressure
        assert progress is not None and backpressure is not None
        interval = self.config.collection.checkpoint_interval_ms / 1000
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            pending = progress.begin_checkpoint()
            failure: BaseException | None = None
            stopping = False
            if pending is not None:
                write = loop.run_in_executor(io, pending.write)
                # A cancel (shutdown) while the write runs in its thread must not
                # leave the checkpoint half done: the final one would find it open.
                while not write.done():
                    try:
                        await asyncio.wait([write])
                    except asyncio.CancelledError:
                        stopping = True
                failure = write.exception()
                if isinstance(failure, OSError):
                    log.error(
                        "Cannot write the positions (%s); retrying.", failure.strerror or failure
                    )
            if progress.end_checkpoint(written=failure is None):
                backpressure.room_freed()
            if failure is not None and not isinstance(failure, OSError):
                raise failure
            if stopping:
                raise asyncio.CancelledError

    async def _statuses(self) -> None:
        interval = self.config.agent.status_interval_s
        while True:
            try:
                self._write_status("running")
            except OSError as exc:
                log.warning("Cannot write status.json: %s", exc.strerror or exc)
            await asyncio.sleep(interval)

    def _write_status(self, state: str) -> None:
        write_status(self.data_dir, self.status(state))

    def status(self, state: str = "running") -> dict[str, Any]:
        """The status.json document (see status.py for the layout)."""
        progress, sender, tailer = self.progress, self.sender, self.tailer
        assert progress is not None and sender is not None and tailer is not None
        spool = progress.spool
        store = progress.store
        counts = {FileState.DONE: 0, FileState.QUARANTINED: 0, FileState.READING: 0}
        for _, position in store.items():
            counts[position.state] += 1
        view = sender.view
        identity = self.identity
        return {
            "version": STATUS_VERSION,
            "pid": os.getpid(),
            "state": state,
            "started": self.started,
            "updated": time.time(),
            "status_interval_s": self.config.agent.status_interval_s,
            "agent": {
                "id": identity.agent_id if identity else None,
                "name": identity.name if identity else None,
            },
            "connection": {
                "state": "stopped" if state == "stopped" else view.state,
                "manager": view.manager,
                "since": view.since,
                "last_ack": view.last_ack,
                "last_error": view.last_error,
            },
            "backlog": {
                "spooled_batches": spool.unacked_batches,
                "spooled_records": spool.unacked_records,
                "in_flight": sender.in_flight,
                "spool_bytes": spool.bytes,
                "spool_max_bytes": spool.max_bytes,
                "reading_paused": bool(self._backpressure and self._backpressure.paused),
                "acked_seq": spool.acked_seq,
                "last_seq": spool.last_seq,
                "queued_files": tailer.queued_files,
            },
            "positions": {
                "tracked": len(store),
                "done": counts[FileState.DONE],
                "quarantined": counts[FileState.QUARANTINED],
                "reading": counts[FileState.READING],
            },
            "files": tailer.reading(),
            "counters": self.counters.as_dict(),
        }


async def _wait_task(task: asyncio.Future[None], limit_s: float) -> None:
    if task.done():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            await asyncio.shield(task)
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _race(first: Any, second: Any) -> Any:
    """The result of whichever coroutine finishes first; the other is cancelled."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return next(iter(done)).result()


def _tune_malloc() -> None:
    """glibc only, before any thread starts: at most MALLOC_ARENAS heap arenas
    (not one per thread), and blocks of MALLOC_MMAP_BYTES or more always
    mmapped, so the megabyte buffers of batches go back to the system when
    freed instead of staying in a heap (the dynamic threshold would let them).
    Measured with bench/agent.py: peak RSS 57 MB instead of 60-63 MB, for
    about 10% more CPU (page faults on fresh buffers).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_BYTES)


def run_agent(config: AgentConfig) -> int:
    """Run the agent in this process until a signal; the exit status."""
    agent = Agent(config)
    _tune_malloc()
    settle_collector(AGENT_GC_THRESHOLDS)
    with event_loop_runner() as runner:
        try:
            runner.run(agent.run(install_signals=True))
        except AgentError as exc:
            log.error("%s", exc)
            return 2
        except (SpoolError, PositionsError) as exc:
            log.error("%s", exc)
            return 1
    return 1 if agent.failed is not None else 0
