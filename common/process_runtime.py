"""How the long-running processes (agent and manager) set up their runtime."""

from __future__ import annotations

import asyncio
import gc
from typing import Final

__all__ = ["GC_THRESHOLDS", "event_loop_runner", "settle_collector"]

# Cycle-collector thresholds while running. Both processes allocate and free a
# few hundred objects per CloudTrail record, mostly acyclic: with the default
# first generation (700 allocations) a collection ran every few records, ~20%
# of the agent's CPU and ~8-15% of the manager's analysis; 10,000 with fewer
# older passes cuts that to ~5% or less (measured with gc.callbacks).
GC_THRESHOLDS: Final = (10_000, 20, 20)


def settle_collector() -> None:
    """Call once start-up is done: what was loaded (the compiled ruleset, say)
    lives as long as the process and is kept out of the collector's passes,
    and young objects pile up longer before a collection."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def event_loop_runner() -> asyncio.Runner:
    """A runner on uvloop when installed (the ``speed`` extra), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
