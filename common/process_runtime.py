"""How the long-running processes (agent and manager) set up their runtime."""

from __future__ import annotations

import asyncio
import gc
from typing import Final

__all__ = [
    "AGENT_GC_THRESHOLDS",
    "MANAGER_GC_THRESHOLDS",
    "event_loop_runner",
    "settle_collector",
]

# Cycle-collector thresholds while running. Both processes allocate and free a
# few hundred objects per CloudTrail record, mostly acyclic: with the default
# first generation (700 net new objects) a collection ran every few records,
# ~20% of the agent's CPU; 10,000 with fewer older passes cuts that to ~5% or
# less (measured with gc.callbacks), and the agent's peak RSS stays under its
# 60 MB target (100,000 added ~1.5 MB).
AGENT_GC_THRESHOLDS: Final = (10_000, 20, 20)
# The manager keeps every event it analysed (its decoded JSON, dozens of
# containers) until the event's group is committed, so thousands of events are
# alive at once: a collection every 10,000 net new objects walked all of them,
# 13% of the manager's CPU in bench/e2e.py (1.22 s of 9.2 s); every 100,000
# walks them ten times less often (0.11 s). Only cyclic garbage waits longer.
MANAGER_GC_THRESHOLDS: Final = (100_000, 20, 20)


def settle_collector(thresholds: tuple[int, int, int]) -> None:
    """Call once start-up is done: what was loaded (the compiled ruleset, say)
    lives as long as the process and is kept out of the collector's passes,
    and young objects pile up longer before a collection."""
    gc.freeze()
    gc.set_threshold(*thresholds)


def event_loop_runner() -> asyncio.Runner:
    """A runner on uvloop when installed (the ``speed`` extra), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
