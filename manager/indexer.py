"""Direct alert output to an OpenSearch/Elasticsearch ``_bulk`` endpoint.

Wazuh 5 indexes alerts from the manager itself instead of through Filebeat;
this does the same for our Wazuh 4.x-shaped alerts, into the indices Wazuh 4.x
dashboards read (``wazuh-alerts-4.x-YYYY.MM.DD``), with the documents shaped as
Wazuh's ingest pipeline would (``ingest_pipeline``).

Theory of operation
-------------------
*Never blocking analysis.* ``submit()`` is synchronous and cheap: it runs the
pipeline, serialises the bulk item and appends it to a bounded queue (by count
and by bytes). When the queue is full the new alert is **dropped and counted**
(``dropped_queue_full``) and a warning is logged (throttled); it is still in
alerts.json, which stays the record of truth. Nothing here ever makes the
caller wait.

*Sending.* One background task takes batches from the head of the queue (up to
``max_batch_count`` items / ``max_batch_bytes``, or whatever is there once
``linger_ms`` has passed since the first waiting item) and POSTs them to
``_bulk``, one request at a time, in order. A batch is retried, with
exponential backoff and jitter, until every item is settled:

* connection errors, timeouts, HTTP 429 and 5xx, and 401/403 (credentials or
  privileges may be fixed while we wait): the whole batch again;
* per-item 429/5xx (e.g. ``es_rejected_execution_exception``): those items again;
* per-item 409 on ``create``: the document is already there, from an earlier
  attempt whose response was lost: settled, counted as ``already_indexed``;
* other per-item errors (e.g. ``mapper_parsing_exception``, a type conflict
  with the template): permanent; counted per error type and logged (throttled
  per type, with index, ``_id`` and the server's reason; never credentials);
* HTTP 413: the batch is split in halves; a single item still too large is
  dropped and counted;
* other whole-request 4xx: the batch is dropped and counted (``rejected``).

Retries never duplicate because every document has a fixed ``_id`` and is sent
with ``create``: see ``document_id``.

*Template.* When configured, the index template is PUT before the first batch
(retried like a batch while the indexer is unreachable). If the indexer refuses
it (4xx, e.g. a user without template privileges while an admin installed it),
that is logged and counted and shipping goes on.

*Closing* stops intake, keeps sending until the queue is empty or the timeout
passes, then cancels; what is left is counted as ``dropped_at_close``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from trailwarden.manager.http_client import HttpClient, HttpConnectionError, HttpResponse
from trailwarden.manager.ingest_pipeline import ALERTS_INDEX_PREFIX, PipelineDrop, index_document
from trailwarden.manager.log_throttle import LogThrottle
from trailwarden.manager.outputs import RenderedAlert, Stats
from trailwarden.manager.tls_client import ClientTls, client_ssl_context

log = logging.getLogger(__name__)

# Longest error reason kept in a log line: reasons can quote field values.
MAX_REASON_CHARS = 300
# Distinct error types counted separately in stats(); the rest go to "other".
MAX_ERROR_KINDS = 64
# Index names and template names go into URLs and bulk metadata unescaped.
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,200}$")
_NDJSON = {"Content-Type": "application/x-ndjson"}
_JSON = {"Content-Type": "application/json"}


class IndexerConfigError(ValueError):
    """The indexer settings are unusable (the configuration's fault)."""


@dataclass(frozen=True, slots=True)
class IndexerConfig:
    url: str  # e.g. https://indexer:9200
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ClientTls = field(default_factory=ClientTls)
    index_prefix: str = ALERTS_INDEX_PREFIX
    # Index template: a JSON file or the template body itself. Legacy templates
    # (Wazuh's wazuh-template.json) go to _template, composable ones (with a
    # top-level "template" key) to _index_template.
    template: Path | Mapping[str, Any] | None = None
    template_name: str = "wazuh"
    max_batch_count: int = 500
    max_batch_bytes: int = 5 * 1024 * 1024
    linger_ms: int = 200
    max_queue_count: int = 20_000
    max_queue_bytes: int = 64 * 1024 * 1024
    backoff_initial_ms: int = 100
    backoff_max_ms: int = 30_000
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 60.0
    error_log_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise IndexerConfigError("indexer: username and password go together")
        if not _SAFE_NAME.match(self.index_prefix):
            raise IndexerConfigError(
                f"indexer: index_prefix {self.index_prefix!r} is not a lower-case index name"
            )
        if not _SAFE_NAME.match(self.template_name):
            raise IndexerConfigError(f"indexer: template_name {self.template_name!r} is not valid")
        for name in (
            "max_batch_count",
            "max_batch_bytes",
            "max_queue_count",
            "max_queue_bytes",
            "backoff_initial_ms",
            "backoff_max_ms",
        ):
            if getattr(self, name) <= 0:
                raise IndexerConfigError(f"indexer: {name}={getattr(self, name)} must be > 0")
        if self.linger_ms < 0:
            raise IndexerConfigError(f"indexer: linger_ms={self.linger_ms} must be >= 0")


def document_id(alert: Mapping[str, Any], dedup_key: bytes | None = None) -> str:
    """The ``_id`` of an alert's document: equal for the same event and rule.

    After a crash the agent resends what was not acknowledged and the manager
    analyses it again. The new alert differs in ``id`` (new time, new file
    offset), ``timestamp``, ``firedtimes`` and ``previous_output``, so none of
    those may enter the id. What is stable is which event it is and which rule
    fired. The event is named by ``dedup_key`` when the caller has one (the
    agent's record identity: distinct even for identical log lines); otherwise
    by its content: ``location``, ``full_log`` and ``data``. Content alone makes
    byte-identical events from one agent and rule (rare for CloudTrail, whose
    records carry a unique ``eventID``) share one document.
    """
    agent = alert.get("agent")
    rule = alert.get("rule")
    agent_id = agent.get("id", "") if isinstance(agent, dict) else ""
    rule_id = rule.get("id", "") if isinstance(rule, dict) else ""
    if dedup_key is not None:
        event = b"k\0" + dedup_key
    else:
        # `data` keeps decode order, which is the same when the same record is
        # decoded again, so it needs no (costly) key sorting.
        head = f"c\0{alert.get('location', '')}\0{alert.get('full_log', '')}\0".encode()
        event = head + orjson.dumps(alert.get("data"))
    return hashlib.blake2b(
        f"v1\0{agent_id}\0{rule_id}\0".encode() + event, digest_size=18
    ).hexdigest()


class IndexerOutput:
    """The indexer output (an ``AlertSink``); see the module docstring.

    Args:
        config: endpoint, credentials, limits.
        rng: ``[0, 1)`` source for backoff jitter (tests pass a fixed one).
    """

    name = "indexer"

    def __init__(
        self,
        config: IndexerConfig,
        *,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._rng = rng
        self._throttle = LogThrottle(log, config.error_log_interval_s, clock)
        self._queue: deque[bytes] = deque()
        self._queue_bytes = 0
        self._inflight = 0  # items taken by the sender, not yet settled
        self._inflight_bytes = 0
        self._submitted = 0  # sequence number of the last queued item
        self._settled = 0  # every item up to this one is settled
        self._progress = asyncio.Condition()
        self._wakeup = asyncio.Event()
        self._hurry = False  # flush()/close() waiting: skip the linger
        self._closing = False
        self._http: HttpClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._template_body: bytes | None = None
        self._template_path = ""
        self._state = "new"
        self._last_error = ""
        self._n: dict[str, int] = dict.fromkeys(
            (
                "submitted",
                "indexed",
                "already_indexed",
                "item_errors",
                "rejected",
                "dropped_queue_full",
                "dropped_invalid",
                "dropped_at_close",
                "dropped_too_large",
                "bulk_requests",
                "retries",
                "items_retried",
                "connection_errors",
                "http_errors",
                "template_installed",
                "template_errors",
            ),
            0,
        )
        self._errors_by_type: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Load the template and TLS files and start the sender.

        Raises:
            IndexerConfigError: the template file or the TLS files are unusable.
        """
        cfg = self._config
        if self._task is not None:
            raise RuntimeError("IndexerOutput.start() called twice")
        headers = {"User-Agent": "trailwarden", "Accept": "application/json"}
        if cfg.username is not None and cfg.password is not None:
            token = base64.b64encode(f"{cfg.username}:{cfg.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        try:
            tls = urlsplit(cfg.url).scheme == "https"
            ctx = client_ssl_context(cfg.tls, who="indexer") if tls else None
            self._http = HttpClient(
                cfg.url,
                ssl_context=ctx,
                headers=headers,
                connect_timeout_s=cfg.connect_timeout_s,
                request_timeout_s=cfg.request_timeout_s,
            )
        except ValueError as exc:
            raise IndexerConfigError(f"indexer: {exc}") from None
        if cfg.template is not None:
            self._template_body, self._template_path = self._load_template(cfg.template)
        self._state = "starting"
        self._task = asyncio.create_task(self._run(), name="indexer-sender")
        self._task.add_done_callback(self._sender_done)

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every alert submitted so far is settled (indexed or given up)."""
        target = self._submitted
        if self._settled >= target:
            return True
        self._hurry = True
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout_s), self._progress:
                await self._progress.wait_for(lambda: self._settled >= target)
        except TimeoutError:
            return False
        finally:
            if not self._closing:
                self._hurry = False
        return True

    async def close(self, timeout_s: float) -> None:
        if self._closing:
            return
        self._closing = True
        if self._task is not None:
            if not await self.flush(timeout_s):
                log.warning(
                    "Indexer: %d alerts not indexed within %.1f s of closing.",
                    len(self._queue) + self._inflight,
                    timeout_s,
                )
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._n["dropped_at_close"] += len(self._queue) + self._inflight
        self._queue.clear()
        self._queue_bytes = 0
        self._inflight = self._inflight_bytes = 0
        if self._http is not None:
            await self._http.close()
        self._state = "closed"

    def stats(self) -> Stats:
        out: Stats = dict(self._n)
        out["queue_items"] = len(self._queue) + self._inflight
        out["queue_bytes"] = self._queue_bytes + self._inflight_bytes
        out["state"] = self._state
        out["last_error"] = self._last_error
        for kind, count in self._errors_by_type.items():
            out[f"item_errors.{kind}"] = count
        return out

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._state = "failed"
            log.critical("Indexer: sender stopped by a bug.", exc_info=task.exception())

    # -- intake ----------------------------------------------------------------

    def submit(self, alert: RenderedAlert) -> bool:
        """Queue one alert for indexing; never blocks (see module docstring)."""
        n = self._n
        if self._closing:
            n["dropped_at_close"] += 1
            return False
        fields = alert.fields
        try:
            index, doc = index_document(fields, self._config.index_prefix)
        except PipelineDrop as exc:
            n["dropped_invalid"] += 1
            self._throttle.log(
                logging.WARNING,
                "pipeline",
                "Indexer: dropped alert %s as Wazuh's pipeline would: %s.",
                fields.get("id"),
                exc,
            )
            return False
        item = b"".join(
            (
                b'{"create":{"_index":"',
                index.encode(),
                b'","_id":"',
                document_id(fields, alert.dedup_key).encode(),
                b'"}}\n',
                orjson.dumps(doc),
                b"\n",
            )
        )
        size = len(item)
        cfg = self._config
        if (
            len(self._queue) + self._inflight >= cfg.max_queue_count
            or self._queue_bytes + self._inflight_bytes + size > cfg.max_queue_bytes
        ):
            n["dropped_queue_full"] += 1
            self._throttle.log(
                logging.WARNING,
                "queue_full",
                "Indexer: queue full (%d alerts); dropping new alerts until it drains.",
                len(self._queue) + self._inflight,
            )
            return False
        self._queue.append(item)
        self._queue_bytes += size
        self._submitted += 1
        n["submitted"] += 1
        self._wakeup.set()
        return True

    # -- sender ----------------------------------------------------------------

    async def _run(self) -> None:
        if self._template_body is not None:
            await self._install_template(self._template_body)
        self._state = "running"
        cfg = self._config
        linger_s = cfg.linger_ms / 1000
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._hurry and linger_s > 0 and not self._batch_full():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(linger_s):
                        while not (self._hurry or self._batch_full()):
                            self._wakeup.clear()
                            await self._wakeup.wait()
            batch = self._take_batch()
            await self._send(batch)
            self._inflight = self._inflight_bytes = 0
            async with self._progress:
                self._settled += len(batch)
                self._progress.notify_all()

    def _batch_full(self) -> bool:
        return (
            len(self._queue) >= self._config.max_batch_count
            or self._queue_bytes >= self._config.max_batch_bytes
        )

    def _take_batch(self) -> list[bytes]:
        cfg = self._config
        queue = self._queue
        batch = [queue.popleft()]
        size = len(batch[0])
        while queue and len(batch) < cfg.max_batch_count:
            if size + len(queue[0]) > cfg.max_batch_bytes:
                break
            item = queue.popleft()
            batch.append(item)
            size += len(item)
        self._queue_bytes -= size
        self._inflight = len(batch)
        self._inflight_bytes = size
        return batch

    async def _send(self, batch: list[bytes]) -> None:
        """Settle every item of ``batch`` (see module docstring for the rules)."""
        pending = [batch]  # groups still to send; 413 splits a group
        attempt = 0
        while pending:
            group = pending.pop()
            resp = await self._post(b"".join(group))
            if resp is None or _retriable(resp.status):
                if resp is not None:
                    self._http_error("bulk", resp)
                pending.append(group)
                attempt = await self._backoff(attempt)
                continue
            if resp.status == 413:
                if len(group) == 1:
                    self._n["dropped_too_large"] += 1
                    log.error(
                        "Indexer: one alert (%d bytes) is over the indexer's request limit.",
                        len(group[0]),
                    )
                else:
                    half = len(group) // 2
                    pending += [group[half:], group[:half]]
                continue
            if resp.status != 200:
                self._n["rejected"] += len(group)
                self._http_error("bulk", resp)
                continue
            retry = self._settle_items(group, resp.body)
            if retry:
                pending.append(retry)
                attempt = await self._backoff(attempt)
            else:
                attempt = 0

    async def _post(self, body: bytes) -> HttpResponse | None:
        assert self._http is not None
        self._n["bulk_requests"] += 1
        try:
            return await self._http.request("POST", "/_bulk", body, _NDJSON)
        except HttpConnectionError as exc:
            self._n["connection_errors"] += 1
            self._last_error = str(exc)
            self._state = "retrying"
            self._throttle.log(logging.WARNING, "connection", "Indexer: %s; retrying.", exc)
            return None

    def _settle_items(self, group: list[bytes], body: bytes) -> list[bytes]:
        """Count a bulk response's items; return those to send again."""
        n = self._n
        try:
            reply = orjson.loads(body)
            items = reply["items"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._last_error = "bulk response is not a bulk reply"
            self._throttle.log(
                logging.ERROR, "bad_reply", "Indexer: bulk response is not a bulk reply; retrying."
            )
            return group
        if not isinstance(items, list) or len(items) != len(group):
            self._last_error = "bulk response item count differs from the request"
            self._throttle.log(
                logging.ERROR, "bad_reply", "Indexer: %s; retrying.", self._last_error
            )
            return group
        self._state = "running"
        if reply.get("errors") is False:
            n["indexed"] += len(group)
            return []
        retry: list[bytes] = []
        for item, result in zip(group, items, strict=True):
            outcome: Any = next(iter(result.values()), None) if isinstance(result, dict) else None
            if not isinstance(outcome, dict):
                outcome = {}
            status = outcome.get("status")
            if not isinstance(status, int):
                status = 0
            if 200 <= status < 300:
                n["indexed"] += 1
            elif status == 409:
                n["already_indexed"] += 1
            elif status == 429 or status >= 500:  # this item only; 401/403 here are final
                retry.append(item)
            else:
                self._item_error(outcome, status)
        if retry:
            n["items_retried"] += len(retry)
        return retry

    def _item_error(self, outcome: Mapping[str, Any], status: int) -> None:
        error = outcome.get("error")
        kind = str(error.get("type", "unknown")) if isinstance(error, dict) else "unknown"
        reason = str(error.get("reason", "")) if isinstance(error, dict) else str(error)
        self._n["item_errors"] += 1
        if kind not in self._errors_by_type and len(self._errors_by_type) >= MAX_ERROR_KINDS:
            kind = "other"
        self._errors_by_type[kind] = self._errors_by_type.get(kind, 0) + 1
        self._last_error = f"{kind}: {reason[:MAX_REASON_CHARS]}"
        self._throttle.log(
            logging.ERROR,
            f"item:{kind}",
            "Indexer: alert not indexed (%s %s) in %s, _id %s: %s.",
            status,
            kind,
            outcome.get("_index"),
            outcome.get("_id"),
            reason[:MAX_REASON_CHARS],
        )

    def _http_error(self, what: str, resp: HttpResponse) -> None:
        self._n["http_errors"] += 1
        kind, reason = _error_summary(resp.body)
        self._last_error = f"{what}: HTTP {resp.status} {kind}: {reason}"
        self._state = "retrying" if _retriable(resp.status) else self._state
        self._throttle.log(
            logging.WARNING if _retriable(resp.status) else logging.ERROR,
            f"http:{what}:{resp.status}",
            "Indexer: %s got HTTP %d (%s: %s).",
            what,
            resp.status,
            kind,
            reason,
        )

    async def _backoff(self, attempt: int) -> int:
        """Sleep for attempt ``attempt`` (equal jitter); return the next attempt."""
        cfg = self._config
        self._n["retries"] += 1
        ceiling = min(cfg.backoff_max_ms, cfg.backoff_initial_ms * (1 << min(attempt, 30)))
        await asyncio.sleep(ceiling * (0.5 + self._rng() / 2) / 1000)
        return attempt + 1

    # -- template --------------------------------------------------------------

    def _load_template(self, template: Path | Mapping[str, Any]) -> tuple[bytes, str]:
        cfg = self._config
        if isinstance(template, Path):
            try:
                body = orjson.loads(template.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise IndexerConfigError(f"indexer: template {template}: {exc}") from None
        else:
            body = dict(template)
        if not isinstance(body, dict):
            raise IndexerConfigError(f"indexer: template {template} is not a JSON object")
        # Composable templates nest settings/mappings under "template"; ES 5-era
        # legacy ones used "template" for the index pattern string.
        kind = "_index_template" if isinstance(body.get("template"), dict) else "_template"
        return orjson.dumps(body), f"/{kind}/{cfg.template_name}"

    async def _install_template(self, body: bytes) -> None:
        assert self._http is not None
        attempt = 0
        while True:
            try:
                resp = await self._http.request("PUT", self._template_path, body, _JSON)
            except HttpConnectionError as exc:
                self._n["connection_errors"] += 1
                self._last_error = str(exc)
                self._state = "retrying"
                self._throttle.log(logging.WARNING, "connection", "Indexer: %s; retrying.", exc)
                attempt = await self._backoff(attempt)
                continue
            if 200 <= resp.status < 300:
                self._n["template_installed"] = 1
                log.info("Indexer: template installed at %s.", self._template_path)
                return
            self._http_error("template", resp)
            if not _retriable(resp.status):
                self._n["template_errors"] += 1
                return
            attempt = await self._backoff(attempt)


def _retriable(status: int) -> bool:
    """Statuses worth the same request again later (see module docstring)."""
    return status in (401, 403, 429) or status >= 500


def _error_summary(body: bytes) -> tuple[str, str]:
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown", body[:MAX_REASON_CHARS].decode("utf-8", "replace")
    if isinstance(error, dict):
        return str(error.get("type", "unknown")), str(error.get("reason", ""))[:MAX_REASON_CHARS]
    return "unknown", str(error)[:MAX_REASON_CHARS]
