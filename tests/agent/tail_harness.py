"""Drive the real tailer over real files, with the real spool and position store.

No network: every spooled batch is acknowledged at once (``auto_ack``) or
left in the spool, and the records are collected as the manager would see
them. ``restart`` closes everything (optionally checkpointing first) and
opens it again from disk, like an agent process starting anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from trailwarden.agent.backpressure import SpoolBackpressure
from trailwarden.agent.batcher import Batcher, SealedBatch
from trailwarden.agent.config import CollectionConfig, SourceConfig, SourceKind
from trailwarden.agent.inotify import DirectoryWatcher
from trailwarden.agent.positions import PositionStore
from trailwarden.agent.progress import Progress
from trailwarden.agent.sources import resolve_sources
from trailwarden.agent.spool import Spool
from trailwarden.agent.status import Counters
from trailwarden.agent.tailer import Tailer
from trailwarden.common.wire import Record


class TailHarness:
    def __init__(
        self,
        data_dir: Path,
        sources: list[SourceConfig],
        *,
        auto_ack: bool = True,
        inotify: bool = False,
        max_batch_records: int = 100,
        spool_max_bytes: int = 64 * 1024 * 1024,
        linger_s: float = 0.02,
        **collection: Any,
    ) -> None:
        self.data_dir = data_dir
        self.sources = sources
        self.auto_ack = auto_ack
        self.inotify = inotify
        self.max_batch_records = max_batch_records
        self.spool_max_bytes = spool_max_bytes
        self.linger_s = linger_s
        options = {"settle_ms": 0, "scan_interval_s": 0.05, "poll_interval_ms": 20} | collection
        self.collection = CollectionConfig(**options)
        self.records: list[Record] = []
        self.counters = Counters()
        self.task: asyncio.Future[None] | None = None
        self._inflater = ThreadPoolExecutor(1)

    # -- lifecycle ------------------------------------------------------------------

    def _open(self) -> None:
        self.store = PositionStore.open(self.data_dir)
        self.spool = Spool.open(
            self.data_dir / "spool",
            max_bytes=self.spool_max_bytes,
            segment_bytes=256 * 1024,
            fsync=False,
            acked_seq=self.store.acked_seq,
        )
        self.progress = Progress(self.store, self.spool)
        self.stopping = asyncio.Event()
        self.backpressure = SpoolBackpressure(self.spool, self.stopping)
        self.batcher = Batcher(
            max_records=self.max_batch_records, max_bytes=1 << 20, linger_s=self.linger_s
        )
        self.watcher = DirectoryWatcher.create() if self.inotify else None
        self.tailer = Tailer(
            resolve_sources(tuple(self.sources)),
            self.collection,
            progress=self.progress,
            batcher=self.batcher,
            deliver=self._deliver,
            backpressure=self.backpressure,
            counters=self.counters,
            stopping=self.stopping,
            watcher=self.watcher,
            inflater=self._inflater,
        )

    def _deliver(self, sealed: SealedBatch) -> None:
        spooled = self.progress.seal(sealed)
        if spooled is not None:
            self.records.extend(spooled.records)
            if self.auto_ack:
                self.ack_all()

    def ack_all(self) -> None:
        spool = self.spool
        if spool.unacked_batches:
            summaries = [b.summary() for b in spool.iter_unacked()]
            self.progress.acknowledged(spool.last_seq, summaries)
        self.progress.checkpoint()
        self.backpressure.room_freed()

    async def start(self) -> None:
        self._open()
        self.task = asyncio.ensure_future(self.tailer.run())

    async def stop(self, *, checkpoint: bool = True) -> None:
        """Stop like the agent does (flush the open batch), or like a crash."""
        self.stopping.set()
        assert self.task is not None
        await self.task
        if checkpoint:
            self.tailer.flush()
            self.progress.checkpoint()
        self.spool.close()
        self.store.close()
        if self.watcher is not None:
            self.watcher.close()

    async def restart(self, *, checkpoint: bool = True) -> None:
        await self.stop(checkpoint=checkpoint)
        await self.start()

    def close(self) -> None:
        self._inflater.shutdown(wait=True)

    # -- observations ---------------------------------------------------------------

    def event_ids(self) -> Counter[str]:
        return Counter(json.loads(r.text)["aws"].get("eventID") for r in self.records)

    async def wait_for(self, predicate, limit_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        async def poll() -> None:
            while not predicate():  # noqa: ASYNC110 - the tailer's state has no event to await
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), limit_s)

    async def settle(self, seconds: float = 0.3) -> None:
        """Let the tailer run a few scans with nothing new expected."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), seconds)


def tree(path: Path, **kw: Any) -> SourceConfig:
    return SourceConfig(kind=SourceKind.CLOUDTRAIL, path=path, **kw)


def jsonl(path: Path, **kw: Any) -> SourceConfig:
    return SourceConfig(kind=SourceKind.JSONLINES, path=path, **kw)
