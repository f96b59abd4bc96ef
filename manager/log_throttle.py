"""Log a recurring error once per kind per interval, and say how many were hidden.

An indexer that rejects every document, or a broker that stays down, would
otherwise write one log line per alert or per retry. ``LogThrottle`` lets the
first occurrence of each kind through, counts the rest, and reports the hidden
count with the next occurrence after the interval. Counting for `status` is the
caller's job; this only decides what reaches the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

# Distinct kinds remembered at once; a flood of unique kinds (e.g. error reasons
# that embed values) must not grow memory. Past this, the oldest is forgotten.
MAX_KINDS = 256


class LogThrottle:
    """Per-kind rate limit for log records."""

    __slots__ = ("_logger", "_interval_s", "_clock", "_last", "_hidden")

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._hidden: dict[str, int] = {}

    def log(self, level: int, kind: str, msg: str, *args: Any, **extra: Any) -> bool:
        """Log ``msg % args`` unless ``kind`` was logged within the interval.

        Returns True if the record was emitted. ``extra`` goes to the record as
        structured fields.
        """
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval_s:
            self._hidden[kind] = self._hidden.get(kind, 0) + 1
            return False
        if last is None and len(self._last) >= MAX_KINDS:
            oldest = next(iter(self._last))
            del self._last[oldest]
            self._hidden.pop(oldest, None)
        self._last.pop(kind, None)  # re-insert: dict order is age order
        self._last[kind] = now
        hidden = self._hidden.pop(kind, 0)
        if hidden:
            msg = f"{msg} ({hidden} more like this since the last report)"
        self._logger.log(level, msg, *args, extra=extra or None)
        return True
