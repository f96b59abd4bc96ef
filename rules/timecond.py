"""``<time>`` and ``<weekday>`` rule conditions (validate_op.c semantics).

Both compare against the event's reception time, never a timestamp inside the
event. Quirks kept on purpose: a range whose start is later than its end is
stored as the *negation* of end..start, so both boundaries fall outside it; a
leading ``!`` on a weekday list is detected but not skipped, which makes
``!monday`` a load error in analysisd (and here).
"""

from __future__ import annotations

from dataclasses import dataclass

_DAYS: tuple[tuple[str, int], ...] = (
    ("sunday", 0),
    ("sun", 0),
    ("monday", 1),
    ("mon", 1),
    ("tuesday", 2),
    ("tue", 2),
    ("wednesday", 3),
    ("wed", 3),
    ("thursday", 4),
    ("thu", 4),
    ("friday", 5),
    ("fri", 5),
    ("saturday", 6),
    ("sat", 6),
    ("weekdays", 7),
    ("weekends", 8),
)


class TimeFormatError(ValueError):
    """The rule's time or weekday text is not in a format analysisd accepts."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: str  # "HH:MM"
    end: str
    negate: bool

    def contains(self, hhmm: str) -> bool:
        inside = self.start <= hhmm <= self.end
        return inside != self.negate


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i] == " ":
        i += 1
    return i


def _hour(text: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(text) and text[j].isdigit():
        j += 1
    if j == i or j - i > 2:
        raise TimeFormatError(f"invalid hour in {text!r}")
    hour = int(text[i:j])
    if hour >= 24:
        raise TimeFormatError(f"hour out of range in {text!r}")
    minute = 0
    i = j
    if i < len(text) and text[i] == ":":
        digits = text[i + 1 : i + 3]
        if len(digits) != 2 or not digits.isdigit():
            raise TimeFormatError(f"invalid minutes in {text!r}")
        minute = int(digits)
        i += 3
    i = _skip_spaces(text, i)
    suffix = text[i : i + 2].lower()
    if suffix in ("am", "pm"):
        if hour == 12:
            hour = 0
        if suffix == "pm":
            hour += 12
            if hour >= 24:
                raise TimeFormatError(f"hour out of range in {text!r}")
        i += 2
    elif suffix[:1] in ("a", "p"):
        raise TimeFormatError(f"invalid am/pm in {text!r}")
    return f"{hour:02d}:{minute:02d}", i


def parse_time_range(text: str) -> TimeRange:
    """``hh[:mm] [am|pm] - hh[:mm] [am|pm]`` with an optional leading ``!``."""
    i = _skip_spaces(text, 0)
    negate = False
    if i < len(text) and text[i] == "!":
        negate = True
        i = _skip_spaces(text, i + 1)
    first, i = _hour(text, i)
    i = _skip_spaces(text, i)
    if i >= len(text) or text[i] != "-":
        raise TimeFormatError(f"expected '-' between the two times in {text!r}")
    i = _skip_spaces(text, i + 1)
    second, i = _hour(text, i)
    if _skip_spaces(text, i) != len(text):
        raise TimeFormatError(f"unexpected text after the time range in {text!r}")
    if first > second:
        return TimeRange(second, first, True)
    return TimeRange(first, second, negate)


@dataclass(frozen=True, slots=True)
class WeekdaySet:
    days: frozenset[int]  # 0 = Sunday
    negate: bool

    def contains(self, weekday_sun0: int) -> bool:
        return (weekday_sun0 in self.days) != self.negate


def parse_weekdays(text: str) -> WeekdaySet:
    i = _skip_spaces(text, 0)
    negate = i < len(text) and text[i] == "!"
    days: set[int] = set()
    lowered = text.lower()
    while i < len(text):
        for name, value in _DAYS:
            if lowered.startswith(name, i):
                if value == 7:
                    days.update((1, 2, 3, 4, 5))
                elif value == 8:
                    days.update((0, 6))
                else:
                    days.add(value)
                i += len(name)
                break
        else:
            raise TimeFormatError(f"invalid weekday list {text!r}")
        if i < len(text) and text[i] in " ,":
            while i < len(text) and text[i] in " ,":
                i += 1
        elif i < len(text):
            raise TimeFormatError(f"invalid weekday list {text!r}")
    if not days:
        raise TimeFormatError(f"no weekday in {text!r}")
    return WeekdaySet(frozenset(days), negate)
