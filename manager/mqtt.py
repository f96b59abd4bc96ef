"""Alert fan-out to an MQTT broker (aiomqtt 2.x), plus manager liveness.

Topics (``topic_prefix`` defaults to ``trailwarden``)::

    <prefix>/alerts/<level>/<rule id>   one message per alert, QoS 1, not retained;
                                        payload: the alerts.json line (no newline)
    <prefix>/status/<manager name>      "online" (retained) once connected;
                                        "offline" (retained) on close, and as the
                                        last will if the connection dies

Subscribers pick what they want with wildcards, e.g. ``trailwarden/alerts/+/80255``
or ``trailwarden/alerts/12/#``; ``min_level`` keeps low levels off the broker.

Theory of operation
-------------------
``submit()`` never waits: it appends ``(topic, payload)`` to a bounded queue (by
count and bytes) or, when full, **drops the new alert and counts it**
(``dropped_queue_full``). A broker that is down or slow therefore never stalls
analysis or the alert files.

One background task owns the connection: connect (a fresh client each time,
with the last will set), publish "online", then publish from the head of the
queue up to ``max_inflight`` messages at a time, removing them once the broker
acknowledged them (PUBACK). A watcher notices a dead connection even while idle.
On any failure the task reconnects with exponential backoff and jitter; the
messages of an interrupted window stay at the head and are sent again
(at-least-once, as QoS 1 is: a subscriber may see a duplicate).

``close()`` stops intake, drains the queue within the timeout, publishes
"offline" and disconnects cleanly (which discards the last will); what could
not be sent is counted as ``dropped_at_close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt

from trailwarden.manager.log_throttle import LogThrottle
from trailwarden.manager.outputs import RenderedAlert, Stats
from trailwarden.manager.tls_client import ClientTls, client_ssl_context

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
# Time allowed for the "offline" status at close when the queue could not drain.
OFFLINE_GRACE_S = 2.0
_TOPIC_FORBIDDEN = frozenset("+#\0")


class MqttConfigError(ValueError):
    """The MQTT settings are unusable (the configuration's fault)."""


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str
    manager_name: str
    port: int = 1883
    topic_prefix: str = "trailwarden"
    min_level: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ClientTls | None = None  # None: plain TCP
    client_id: str | None = None  # default: "trailwarden-<manager_name>"
    keepalive_s: int = 30
    max_inflight: int = 20  # unacknowledged QoS 1 messages at once
    max_queue_count: int = 10_000
    max_queue_bytes: int = 32 * 1024 * 1024
    backoff_initial_ms: int = 100
    backoff_max_ms: int = 30_000
    timeout_s: float = 10.0  # connect, and each wait for a broker acknowledgement
    error_log_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.topic_prefix or self.topic_prefix.strip("/") != self.topic_prefix:
            raise MqttConfigError(
                f"mqtt: topic_prefix {self.topic_prefix!r} is empty or has edge '/'"
            )
        if not self.manager_name or "/" in self.manager_name:
            raise MqttConfigError(f"mqtt: manager_name {self.manager_name!r} is empty or has '/'")
        for name in ("topic_prefix", "manager_name"):
            if _TOPIC_FORBIDDEN.intersection(getattr(self, name)):
                raise MqttConfigError(f"mqtt: {name} must not contain '+', '#' or NUL")
        for name in ("max_inflight", "max_queue_count", "max_queue_bytes", "keepalive_s"):
            if getattr(self, name) <= 0:
                raise MqttConfigError(f"mqtt: {name}={getattr(self, name)} must be > 0")
        if (self.username is None) != (self.password is None):
            raise MqttConfigError("mqtt: username and password go together")

    @property
    def status_topic(self) -> str:
        return f"{self.topic_prefix}/status/{self.manager_name}"


class MqttOutput:
    """The MQTT output (an ``AlertSink``); see the module docstring."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, *, rng: Callable[[], float] = random.random) -> None:
        self._config = config
        self._rng = rng
        self._alerts_prefix = f"{config.topic_prefix}/alerts/"
        self._throttle = LogThrottle(log, config.error_log_interval_s)
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queue_bytes = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._state = "new"
        self._last_error = ""
        self._n: dict[str, int] = dict.fromkeys(
            (
                "submitted",
                "published",
                "filtered",
                "invalid",
                "dropped_queue_full",
                "dropped_at_close",
                "connects",
                "connection_errors",
            ),
            0,
        )

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start the connection task; returns at once, even if the broker is down."""
        if self._task is not None:
            raise RuntimeError("MqttOutput.start() called twice")
        if self._config.tls is not None:
            self._tls_context = client_ssl_context(self._config.tls, who="mqtt")
            self._tls_context.sslsocket_class = _ClosingSSLSocket
        self._state = "connecting"
        self._task = asyncio.create_task(self._run(), name="mqtt-publisher")
        self._task.add_done_callback(self._task_done)

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the queue is empty: every message acknowledged by the broker."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float) -> None:
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
            if not done and self._pump_task is not None:
                # Connected but not drained in time: give up the queue, still
                # say "offline" and disconnect cleanly.
                self._pump_task.cancel()
                done, _ = await asyncio.wait({task}, timeout=OFFLINE_GRACE_S)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._queue:
            self._n["dropped_at_close"] += len(self._queue)
            log.warning("MQTT: %d alerts not published at close.", len(self._queue))
            self._queue.clear()
            self._queue_bytes = 0
        self._drained.set()
        self._state = "closed"

    def stats(self) -> Stats:
        out: Stats = dict(self._n)
        out["queue_items"] = len(self._queue)
        out["queue_bytes"] = self._queue_bytes
        out["state"] = self._state
        out["last_error"] = self._last_error
        return out

    # -- intake ----------------------------------------------------------------

    def submit(self, alert: RenderedAlert) -> bool:
        """Queue one alert for publishing; never blocks (see module docstring)."""
        n = self._n
        if self._closing:
            n["dropped_at_close"] += 1
            return False
        rule = alert.fields.get("rule")
        if not isinstance(rule, dict):
            n["invalid"] += 1
            return False
        level = rule.get("level", 0)  # analysisd omits a level of 0
        rule_id = rule.get("id")
        if not isinstance(level, int) or not isinstance(rule_id, str) or not rule_id:
            n["invalid"] += 1
            return False
        if level < self._config.min_level:
            n["filtered"] += 1
            return False
        if "/" in rule_id or _TOPIC_FORBIDDEN.intersection(rule_id):
            n["invalid"] += 1
            return False
        line = alert.line
        payload = line[:-1] if line.endswith(b"\n") else line
        cfg = self._config
        if (
            len(self._queue) >= cfg.max_queue_count
            or self._queue_bytes + len(payload) > cfg.max_queue_bytes
        ):
            n["dropped_queue_full"] += 1
            self._throttle.log(
                logging.WARNING,
                "queue_full",
                "MQTT: queue full (%d alerts); dropping new alerts until it drains.",
                len(self._queue),
            )
            return False
        self._queue.append((f"{self._alerts_prefix}{level}/{rule_id}", payload))
        self._queue_bytes += len(payload)
        n["submitted"] += 1
        self._drained.clear()
        self._wakeup.set()
        return True

    # -- connection --------------------------------------------------------------

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._state = "failed"
            log.critical("MQTT: publisher stopped by a bug.", exc_info=task.exception())

    def _client(self) -> aiomqtt.Client:
        cfg = self._config
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=cfg.client_id or f"trailwarden-{cfg.manager_name}",
            will=aiomqtt.Will(cfg.status_topic, OFFLINE, qos=1, retain=True),
            clean_session=True,
            keepalive=cfg.keepalive_s,
            timeout=cfg.timeout_s,
            max_inflight_messages=cfg.max_inflight,
            tls_context=self._tls_context,
            logger=log.getChild("aiomqtt"),
        )

    async def _run(self) -> None:
        cfg = self._config
        attempt = 0
        while not (self._closing and not self._queue):
            try:
                client = self._client()
                async with client:
                    self._n["connects"] += 1
                    attempt = 0
                    await client.publish(cfg.status_topic, ONLINE, qos=1, retain=True)
                    self._state = "connected"
                    log.info("MQTT: connected to %s:%d.", cfg.host, cfg.port)
                    await self._serve(client)
                    await client.publish(
                        cfg.status_topic, OFFLINE, qos=1, retain=True, timeout=OFFLINE_GRACE_S
                    )
                return
            except* aiomqtt.MqttError as group:
                exc = _first_leaf(group)
                self._n["connection_errors"] += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                self._state = "reconnecting"
                self._throttle.log(
                    logging.WARNING,
                    "connection",
                    "MQTT: broker %s:%d unavailable (%s); retrying.",
                    cfg.host,
                    cfg.port,
                    self._last_error,
                )
            ceiling = min(cfg.backoff_max_ms, cfg.backoff_initial_ms * (1 << min(attempt, 30)))
            await asyncio.sleep(ceiling * (0.5 + self._rng() / 2) / 1000)
            attempt += 1

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish until closing (queue drained or abandoned) or the connection dies."""
        pump = asyncio.create_task(self._pump(client))
        watch = asyncio.create_task(self._watch(client))
        self._pump_task = pump
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._pump_task = None
            for t in (pump, watch):
                t.cancel()
            results = await asyncio.gather(pump, watch, return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise ExceptionGroup("mqtt connection", errors)

    async def _watch(self, client: aiomqtt.Client) -> None:
        # Nothing is subscribed, so this only ends when the connection does.
        async for _ in client.messages:
            pass
        raise aiomqtt.MqttError("connection closed")

    async def _pump(self, client: aiomqtt.Client) -> None:
        queue = self._queue
        window = self._config.max_inflight
        while True:
            if not queue:
                self._drained.set()
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = list(itertools.islice(queue, window))
            async with asyncio.TaskGroup() as tg:
                for topic, payload in batch:
                    tg.create_task(client.publish(topic, payload, qos=1))
            for _ in batch:
                _, payload = queue.popleft()
                self._queue_bytes -= len(payload)
            self._n["published"] += len(batch)


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails.

    paho-mqtt 2.2 leaves the socket open when the TLS handshake fails (e.g. an
    untrusted broker certificate), leaking one descriptor per reconnect attempt
    until garbage collection.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _first_leaf(group: BaseExceptionGroup[aiomqtt.MqttError]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
