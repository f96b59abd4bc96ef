"""Where a piece of the ruleset came from, and the errors that point there.

Every problem in a rules, decoders or list file is reported as
``path:line: message`` so a user can jump to it. Loading collects all problems
instead of stopping at the first (see ``RulesetError``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    path: str
    line: int | None = None

    def __str__(self) -> str:
        return self.path if self.line is None else f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class RulesetProblem:
    """One problem found while loading a ruleset.

    ``severity`` is "error" when analysisd would refuse to start or would skip
    the item, "warning" when it only logs and carries on.
    """

    location: Location
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


class RulesetError(Exception):
    """Raised by strict loading when the ruleset has problems (the file's fault)."""

    def __init__(self, problems: list[RulesetProblem]) -> None:
        self.problems = problems
        head = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        super().__init__(f"{len(problems)} ruleset problem(s): {head}{more}")
