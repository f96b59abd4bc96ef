"""From received batches to durable alerts and acknowledgements, exactly once.

Theory of operation
-------------------
Sessions hand every decrypted batch to ``submit`` with the object to
acknowledge it through (``AckTarget``). Two tasks then move batches through,
in the order they were submitted:

* the *analyser* takes one batch at a time and runs each record through the
  engine (pre-decode, decode, rules) with the agent's location, as remoted
  builds it: ``[<id>] (<name>) <ip>-><record location>``. It yields to the
  event loop every ``ANALYSIS_SLICE`` records, so a 10,000-record batch never
  holds the loop (and every other agent's reads) for long. A batch whose
  sequence is not above the agent's highest accepted one is a *duplicate*
  (a resend after a reconnect or a manager restart) and is not analysed.
* the *committer* takes everything analysed so far as one *group* (up to
  ``max_group_batches``/``max_group_events``) and makes it durable with one
  journal write and one alert-file fsync for all of them (group commit): plan
  the alert-file write and render the alerts into it (yielding every
  ``RENDER_SLICE`` alerts), journal BEGIN, append, flush, journal COMMIT (see
  ``batch_journal.py`` for why this survives a ``kill -9`` at any point). Only
  then is each batch acknowledged, with one cumulative Ack per session, and
  the alerts handed to the network outputs with a dedup key (agent id, batch
  sequence, record index) that is the same when a batch is analysed again.

While the committer waits for the disk, the analyser goes on with the next
batches: analysis and I/O overlap, and the busier the manager, the larger the
groups and the cheaper each batch's share of the fsync.

Duplicates are recognised from the agent's highest *accepted* sequence, which
covers batches still in the pipeline: a batch resent on a new connection while
its first copy is being written is acknowledged after that copy is durable,
because acknowledgements follow submission order.

Every batch is counted in ``FlowControl`` from ``submit`` until it is finished,
which is what pauses reading from agents when analysis falls behind.

A failure of the alert files or the journal is fatal: nothing more can be
made durable, so nothing more is acknowledged; ``on_fatal`` tells the server
to shut down, and the agents keep the batches in their spools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from trailwarden.common.wire import Batch
from trailwarden.manager.alert_files import (
    AlertFiles,
    AlertFilesError,
    FsyncPolicy,
    PendingAlert,
    PendingArchive,
    WritePlan,
)
from trailwarden.manager.batch_journal import (
    BatchJournal,
    BatchRef,
    GroupBegin,
    JournalError,
    JournalRange,
    digest,
)
from trailwarden.manager.flow_control import FlowControl
from trailwarden.manager.log_throttle import LogThrottle
from trailwarden.manager.outputs import AlertSink, RenderedAlert, Stats
from trailwarden.rules.alert import alert_json_line, build_archive
from trailwarden.rules.engine import Engine, Verdict

log = logging.getLogger(__name__)

# Records analysed between two yields to the event loop: ~5 ms at the
# engine's ~40k events/s, so sessions keep reading while a large batch runs.
ANALYSIS_SLICE: Final = 256
# Alerts rendered into a write plan between two yields (rendering costs
# about as much per alert as analysing an event).
RENDER_SLICE: Final = 128
# An engine failure on one record (a bug) is logged at most this often.
ERROR_LOG_INTERVAL_S: Final = 60.0


class AckTarget(Protocol):
    """Where a batch's acknowledgement goes: the session it arrived on."""

    def acknowledge(self, seq: int) -> None:
        """Every batch of this session up to ``seq`` is durably handled."""
        ...


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who sent a batch, as the pipeline needs it."""

    agent_id: str
    name: str
    ip: str  # as registered in client.keys ("any", an address or a network)
    key_id: str  # batch_journal.key_id of the agent's key

    @property
    def location_prefix(self) -> str:
        """What remoted puts before an agent event's location."""
        return f"[{self.agent_id}] ({self.name}) {self.ip}->"


class BatchPipeline(Protocol):
    """What the server needs from whatever handles batches (the real one, or a bench stub)."""

    def submit(self, target: AckTarget, agent: AgentIdentity, batch: Batch) -> None:
        """Take a batch; ``target.acknowledge`` follows once it is durably handled."""
        ...

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything submitted is finished; False on timeout."""
        ...

    async def close(self, timeout_s: float) -> None:
        """Stop the tasks and close what the pipeline owns."""
        ...

    def stats(self) -> Stats: ...


class AckingPipeline:
    """A pipeline that analyses nothing and acknowledges every batch at once.

    For measuring the protocol alone (``bench/protocol.py``): no engine, no
    files. Never use it where alerts matter.
    """

    def __init__(self, flow: FlowControl | None = None) -> None:
        self._flow = flow
        self.batches = 0
        self.events = 0

    def submit(self, target: AckTarget, agent: AgentIdentity, batch: Batch) -> None:
        self.batches += 1
        self.events += len(batch.records)
        target.acknowledge(batch.seq)

    async def drain(self, timeout_s: float) -> bool:
        return True

    async def close(self, timeout_s: float) -> None:
        return None

    def stats(self) -> Stats:
        return {"batches": self.batches, "events": self.events, "analysis": "none (stub)"}


class _AlertJob:
    """One alert waiting for its id; keeps the rendered alert for the network outputs."""

    __slots__ = ("_engine", "_verdict", "_manager_name", "dedup_key", "rendered")

    def __init__(self, engine: Engine, verdict: Verdict, manager_name: str, dedup_key: bytes):
        self._engine = engine
        self._verdict = verdict
        self._manager_name = manager_name
        self.dedup_key = dedup_key
        self.rendered: RenderedAlert | None = None

    def render(self, alert_id: str) -> tuple[bytes, bytes]:
        out = self._engine.render(self._verdict, alert_id=alert_id, manager_name=self._manager_name)
        self.rendered = RenderedAlert(out.json_line, out.alert, self.dedup_key)
        return out.json_line, out.log_block.encode("utf-8", "surrogateescape")


class _Work:
    """One submitted batch on its way through the pipeline."""

    __slots__ = (
        "target",
        "agent",
        "seq",
        "records",
        "events",
        "nbytes",
        "duplicate",
        "items",
        "jobs",
    )

    def __init__(self, target: AckTarget, agent: AgentIdentity, batch: Batch) -> None:
        self.target = target
        self.agent = agent
        self.seq = batch.seq
        self.records = batch.records
        self.events = len(batch.records)
        self.nbytes = sum(len(r.text) for r in batch.records)
        self.duplicate = False
        self.items: list[PendingAlert | PendingArchive] = []
        self.jobs: list[_AlertJob] = []


class AnalysisPipeline:
    """The real pipeline: analysis, group commit through the journal, acks, outputs.

    Args:
        engine: the compiled ruleset.
        files: the alert files (started).
        journal: the batch journal (opened, i.e. recovered).
        sinks: network outputs fed after the files (started).
        flow: the server's backpressure object.
        manager_name: the name alerts carry.
        fsync: the alert files' policy (the journal follows it).
        fsync_interval_ms: for ``interval``: how often the journal is fsynced too.
        logall: also write every event to archives.json.
        on_fatal: called once if the files or the journal fail.
    """

    def __init__(
        self,
        engine: Engine,
        files: AlertFiles,
        journal: BatchJournal,
        flow: FlowControl,
        *,
        manager_name: str,
        sinks: Sequence[AlertSink] = (),
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        fsync_interval_ms: int = 1000,
        logall: bool = False,
        max_group_batches: int = 1024,
        max_group_events: int = 50_000,
        on_fatal: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._state = engine.new_state()
        self._files = files
        self._journal = journal
        self._flow = flow
        self._manager_name = manager_name
        self._sinks = tuple(sinks)
        self._fsync = fsync
        self._journal_sync_s = fsync_interval_ms / 1000
        self._logall = logall
        self._max_group_batches = max_group_batches
        self._max_group_events = max_group_events
        self._on_fatal = on_fatal
        self._clock = clock
        self._incoming: deque[_Work] = deque()
        self._incoming_ready = asyncio.Event()
        self._analysed: deque[_Work] = deque()
        self._analysed_ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_progress = 0  # submitted, not finished
        # agent id -> (key id, highest sequence accepted for analysis)
        self._accepted: dict[str, tuple[str, int]] = {}
        self._failed: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_journal_sync = 0.0
        self._journal_unsynced = False  # ``interval``: groups written since the last fsync
        self._throttle = LogThrottle(log, ERROR_LOG_INTERVAL_S)
        self._n: dict[str, int] = dict.fromkeys(
            (
                "batches_submitted",
                "batches_analysed",
                "duplicate_batches",
                "batches_acknowledged",
                "events_analysed",
                "alerts",
                "groups",
                "analysis_errors",
                "render_errors",
                "dropped_after_failure",
            ),
            0,
        )
        self.last_group_batches = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self._tasks:
            raise RuntimeError("AnalysisPipeline.start() called twice")
        for name, body in (("analyser", self._analyse_loop), ("committer", self._commit_loop)):
            task = asyncio.create_task(body(), name=f"pipeline-{name}")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every submitted batch is finished (or the pipeline failed)."""
        if self._failed is not None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return self._failed is None

    async def close(self, timeout_s: float) -> None:
        """Stop the tasks; make the journal durable; close files and outputs."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._failed is None:
            with contextlib.suppress(JournalError):
                await self._journal.sync()
        for sink in self._sinks:
            await sink.close(timeout_s)
        await self._files.close(timeout_s)
        self._journal.close()

    def stats(self) -> Stats:
        out: Stats = dict(self._n)
        out["in_progress_batches"] = self._in_progress
        out["last_group_batches"] = self.last_group_batches
        out["failed"] = self._failed is not None
        for name, value in self._journal.stats().items():
            out[f"journal.{name}"] = value
        return out

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    # -- intake --------------------------------------------------------------------

    def submit(self, target: AckTarget, agent: AgentIdentity, batch: Batch) -> None:
        if self._failed is not None:
            self._n["dropped_after_failure"] += 1  # not acknowledged: the agent keeps it
            return
        work = _Work(target, agent, batch)
        self._flow.add(work.events, work.nbytes)
        self._in_progress += 1
        self._idle.clear()
        self._incoming.append(work)
        self._incoming_ready.set()
        self._n["batches_submitted"] += 1

    # -- analysis ------------------------------------------------------------------

    async def _analyse_loop(self) -> None:
        incoming = self._incoming
        while True:
            if not incoming:
                self._incoming_ready.clear()
                await self._incoming_ready.wait()
                continue
            work = incoming.popleft()
            if self._is_duplicate(work):
                work.duplicate = True
                self._n["duplicate_batches"] += 1
            else:
                await self._analyse(work)
                self._n["batches_analysed"] += 1
            self._analysed.append(work)
            self._analysed_ready.set()
            await asyncio.sleep(0)

    def _is_duplicate(self, work: _Work) -> bool:
        agent = work.agent
        accepted = self._accepted.get(agent.agent_id)
        if accepted is None or accepted[0] != agent.key_id:
            highest = self._journal.committed_seq(agent.agent_id, agent.key_id)
        else:
            highest = accepted[1]
        if work.seq <= highest:
            return True
        self._accepted[agent.agent_id] = (agent.key_id, work.seq)
        return False

    async def _analyse(self, work: _Work) -> None:
        process = self._engine.process
        engine, state, name = self._engine, self._state, self._manager_name
        prefix = work.agent.location_prefix
        dedup_head = f"{work.agent.agent_id}/{work.seq}/"
        items, jobs = work.items, work.jobs
        logall = self._logall
        records = work.records
        count = len(records)
        start = 0
        while start < count:
            now = self._clock()
            epoch = int(now)
            for index in range(start, min(start + ANALYSIS_SLICE, count)):
                location, text = records[index]
                try:
                    verdict = process(text, prefix + location, now, state, manager_name=name)
                except Exception as exc:  # noqa: BLE001 - one bad record must not stop the agent
                    self._analysis_error(work, index, exc)
                    continue
                if verdict.alert:
                    job = _AlertJob(engine, verdict, name, f"{dedup_head}{index}".encode())
                    jobs.append(job)
                    items.append(PendingAlert(epoch, job.render))
                if logall:
                    items.append(PendingArchive(epoch, _archive_renderer(verdict, name)))
            start += ANALYSIS_SLICE
            if start < count:
                await asyncio.sleep(0)
        self._n["events_analysed"] += count

    def _analysis_error(self, work: _Work, index: int, exc: Exception) -> None:
        self._n["analysis_errors"] += 1
        self._throttle.log(
            logging.ERROR,
            "analysis",
            "Analysis failed on record %d of batch %d from agent %s (a bug; the record is "
            "skipped): %s: %s",
            index,
            work.seq,
            work.agent.agent_id,
            type(exc).__name__,
            exc,
        )

    # -- commit --------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        analysed = self._analysed
        while True:
            if not analysed:
                self._analysed_ready.clear()
                if not self._journal_unsynced:
                    await self._analysed_ready.wait()
                    continue
                # ``interval``: the last groups before a quiet spell get their fsync too.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._analysed_ready.wait(), self._journal_sync_s)
                if not analysed:
                    try:
                        await self._sync_journal()
                    except JournalError as exc:
                        self._fatal(exc, [])
                        return
                continue
            group = [analysed.popleft()]
            events = group[0].events
            while (
                analysed
                and len(group) < self._max_group_batches
                and events + analysed[0].events <= self._max_group_events
            ):
                work = analysed.popleft()
                group.append(work)
                events += work.events
            try:
                await self._commit(group)
            except (AlertFilesError, JournalError) as exc:
                self._fatal(exc, group)
                return
            self._finish(group)

    async def _commit(self, group: list[_Work]) -> None:
        new = [w for w in group if not w.duplicate]
        if not new:
            return
        files, journal = self._files, self._journal
        plan = files.plan()
        await self._render(plan, new)
        ranges = tuple(
            JournalRange(str(r.path), r.start, r.end, digest(r.data))
            for r in plan.ranges()
            if r.data and r.path is not None
        )
        number = journal.next_group()
        batches = tuple(BatchRef(w.agent.agent_id, w.agent.key_id, w.seq) for w in new)
        await journal.begin(GroupBegin(number, batches, ranges))
        if not plan.empty:
            files.commit(plan)
            await files.flush()
        journal.commit(number)
        self._n["groups"] += 1
        self.last_group_batches = len(new)
        if self._fsync is FsyncPolicy.INTERVAL:
            self._journal_unsynced = True
            if time.monotonic() - self._last_journal_sync >= self._journal_sync_s:
                await self._sync_journal()
        await journal.compact_if_needed()

    async def _sync_journal(self) -> None:
        self._last_journal_sync = time.monotonic()
        self._journal_unsynced = False
        await self._journal.sync()

    async def _render(self, plan: WritePlan, works: list[_Work]) -> None:
        """Add every item to the plan, one at a time so a broken renderer costs one alert."""
        done = 0
        for work in works:
            for item in work.items:
                try:
                    plan.add((item,))
                except Exception as exc:  # noqa: BLE001 - a renderer bug costs one alert
                    self._n["render_errors"] += 1
                    self._throttle.log(
                        logging.ERROR,
                        "render",
                        "An alert of batch %d from agent %s could not be rendered (a bug; "
                        "it is not written): %s: %s",
                        work.seq,
                        work.agent.agent_id,
                        type(exc).__name__,
                        exc,
                    )
                done += 1
                if done % RENDER_SLICE == 0:
                    await asyncio.sleep(0)

    def _finish(self, group: list[_Work]) -> None:
        """Acknowledge, feed the network outputs, release the flow."""
        highest: dict[int, tuple[AckTarget, int]] = {}
        events = nbytes = alerts = 0
        sinks = self._sinks
        for work in group:
            key = id(work.target)
            previous = highest.get(key)
            if previous is None or previous[1] < work.seq:
                highest[key] = (work.target, work.seq)
            events += work.events
            nbytes += work.nbytes
            for job in work.jobs:
                rendered = job.rendered
                if rendered is None:
                    continue
                alerts += 1
                for sink in sinks:
                    sink.submit(rendered)
            work.items = []
            work.jobs = []
        for target, seq in highest.values():
            target.acknowledge(seq)
        n = self._n
        n["batches_acknowledged"] += len(group)
        n["alerts"] += alerts
        self._flow.remove(events, nbytes)
        self._in_progress -= len(group)
        if self._in_progress == 0:
            self._idle.set()

    def _fatal(self, exc: BaseException, group: list[_Work]) -> None:
        self._failed = exc
        log.critical(
            "Alerts can no longer be made durable (%s); no batch will be acknowledged. Stopping.",
            exc,
        )
        dropped = [*group, *self._analysed, *self._incoming]
        self._analysed.clear()
        self._incoming.clear()
        self._flow.remove(sum(w.events for w in dropped), sum(w.nbytes for w in dropped))
        self._in_progress = 0
        self._idle.set()
        if self._on_fatal is not None:
            self._on_fatal(exc)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._failed is None:
            log.critical("Pipeline task %s stopped by a bug.", task.get_name(), exc_info=exc)
            self._fatal(exc, [])


def _archive_renderer(verdict: Verdict, manager_name: str) -> Callable[[str], bytes]:
    event = verdict.event

    def render(alert_id: str) -> bytes:
        return alert_json_line(build_archive(event, manager_name=manager_name, alert_id=alert_id))

    return render
