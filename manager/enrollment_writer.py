"""Enrollment decisions in batches: every waiting request, one locked client.keys update.

Theory of operation
===================

Connections hand their parsed requests to ``submit``; one task takes every
request waiting, reads what the manager knows of agent connections, and in
a worker thread, under the registry's cross-process lock, decides each
request against the agents as they stand after the previous ones
(``enrollment_policy.py``: two requests for one name in a batch are
duplicates of each other) and saves client.keys once for the whole batch.
Each request's future then gets its new key or its refusal, so a key is
never sent before it is durable.

Throughput therefore follows the batch, not the fsync: a burst of agents
enrolling together costs one registry write.

Failure. A registry that cannot be read or written refuses the batch as
Wazuh does (``Internal manager error adding agent``). Without connection data
(agent-state.json unreadable) no agent is replaced: every enrolled agent
counts as connected. A writer that stops for a bug fails every waiting
request through its done-callback instead of leaving them hanging, and
later requests are refused at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from trailwarden.common.enrollment_protocol import EnrollmentRequest, Refusal, RequestRefused
from trailwarden.common.keys import AgentKey
from trailwarden.manager.agent_registry import (
    LOCK_TIMEOUT_S,
    AgentRegistry,
    Registry,
    RegistryError,
)
from trailwarden.manager.agents_view import (
    AgentState,
    AgentStateError,
    ConnectionStatus,
    connection_status,
)
from trailwarden.manager.enrollment_config import ForceOptions
from trailwarden.manager.enrollment_policy import Presence, Replacement, decide

log = logging.getLogger(__name__)

# How long a request waits for the writer before it is refused: three times
# the registry's own lock timeout, so it fires only if the writer is stuck.
WRITER_TIMEOUT_S: Final = 3 * LOCK_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that got a key, and the agents removed to make room for it."""

    agent: AgentKey
    replaced: tuple[Replacement, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """What the decisions depend on besides the request and the registry."""

    force: ForceOptions
    use_source_ip: bool
    # Agent names equal to it are refused; None: no such check.
    manager_name: str | None
    heartbeat_interval_s: float


@dataclass(slots=True)
class _Pending:
    request: EnrollmentRequest
    peer_ip: str
    done: asyncio.Future[Admitted | RequestRefused]


def _internal(name: str) -> RequestRefused:
    return RequestRefused(Refusal.INTERNAL, f" adding agent: {name}")


class EnrollmentWriter:
    """The one task that changes client.keys for the enrollment listener."""

    __slots__ = (
        "_registry",
        "_settings",
        "_agent_state",
        "_clock",
        "_on_change",
        "_queue",
        "_task",
    )

    def __init__(
        self,
        registry: AgentRegistry,
        settings: PolicySettings,
        *,
        agent_state: Callable[[], AgentState],
        clock: Callable[[], float],
        on_change: Callable[[], None],
    ) -> None:
        """
        Args:
            agent_state: the manager's view of agent connections (called in a
                worker thread, once per batch).
            on_change: called in the event loop after a batch added agents.
        """
        self._registry = registry
        self._settings = settings
        self._agent_state = agent_state
        self._clock = clock
        self._on_change = on_change
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task (in the running event loop)."""
        self._task = asyncio.create_task(self._run(), name="enrollment-writer")
        self._task.add_done_callback(self._stopped)

    async def close(self, timeout_s: float) -> None:
        """Stop the task; requests still waiting are refused."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=timeout_s)
            self._task = None
        self._fail_waiting()

    async def submit(self, request: EnrollmentRequest, peer_ip: str) -> Admitted | RequestRefused:
        """Decide ``request`` and register its agent; returns the key or the refusal."""
        if self._task is None or self._task.done():
            return _internal(request.name)  # stopped (logged by _stopped)
        done: asyncio.Future[Admitted | RequestRefused] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(request, peer_ip, done))
        try:
            async with asyncio.timeout(WRITER_TIMEOUT_S):
                return await done
        except TimeoutError:
            log.error("The enrollment writer did not answer within %g s.", WRITER_TIMEOUT_S)
            return _internal(request.name)

    async def purge(self, agent: AgentKey) -> bool:
        """Remove ``agent`` without a trace (its key never reached it); False on failure."""

        def change(registry: Registry) -> tuple[Registry, bool]:
            if registry.keys.by_id(agent.agent_id) != agent:
                return registry, False  # changed meanwhile: not ours to remove
            return registry.without_agent(agent.agent_id, purge=True), True

        try:
            purged = await asyncio.to_thread(self._registry.update, change)
        except RegistryError as exc:
            log.error("Could not purge agent %s after a failed reply: %s", agent.agent_id, exc)
            return False
        if purged:
            self._on_change()
        return purged

    # -- the task ---------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                outcomes = await asyncio.to_thread(self._apply, batch)
            except RegistryError as exc:
                log.error("Enrollment failed: cannot update the agent registry: %s", exc)
                outcomes = [_internal(p.request.name) for p in batch]
            for pending, outcome in zip(batch, outcomes, strict=True):
                if not pending.done.done():
                    pending.done.set_result(outcome)
            if any(isinstance(o, Admitted) for o in outcomes):
                self._on_change()

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical(
                "The enrollment writer failed; enrollments are refused until restart.",
                exc_info=task.exception(),
            )
        self._fail_waiting()

    def _fail_waiting(self) -> None:
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_result(_internal(pending.request.name))

    def _apply(self, batch: list[_Pending]) -> list[Admitted | RequestRefused]:
        """Decide and register a batch (worker thread; one locked registry update)."""
        settings = self._settings
        now = self._clock()
        try:
            presence = _presence_from(self._agent_state(), now, settings.heartbeat_interval_s)
        except AgentStateError as exc:
            log.error("Cannot read agent connections (%s); no agent will be replaced.", exc)
            presence = _always_active

        def change(registry: Registry) -> tuple[Registry, list[Admitted | RequestRefused]]:
            outcomes: list[Admitted | RequestRefused] = []
            for pending in batch:
                try:
                    admission = decide(
                        pending.request,
                        pending.peer_ip,
                        registry,
                        presence,
                        force=settings.force,
                        now=now,
                        use_source_ip=settings.use_source_ip,
                        manager_name=settings.manager_name,
                    )
                except RequestRefused as exc:
                    outcomes.append(exc)
                    continue
                try:
                    after = registry
                    for replaced in admission.replaces:
                        after = after.without_agent(replaced.agent.agent_id)
                    after, agent = after.with_new_agent(
                        admission.name,
                        admission.ip,
                        now=now,
                        groups=pending.request.groups,
                        origin=f"enrolled from {pending.peer_ip}",
                    )
                except ValueError as exc:  # e.g. agent ids exhausted (8 digits)
                    log.error("Cannot add agent %r: %s", admission.name, exc)
                    outcomes.append(_internal(admission.name))
                    continue
                registry = after
                outcomes.append(Admitted(agent, admission.replaces))
            return registry, outcomes

        return self._registry.update(change)


def _always_active(agent_id: str) -> Presence:
    return Presence(ConnectionStatus.ACTIVE)


def _presence_from(
    state: AgentState, now: float, heartbeat_interval_s: float
) -> Callable[[str], Presence]:
    def presence(agent_id: str) -> Presence:
        activity = state.activity(agent_id)
        status = connection_status(activity, now, state.heartbeat_or(heartbeat_interval_s))
        return Presence(status, activity.last_seen if activity is not None else None)

    return presence
