"""OS_Match ("sregex"), the default dialect of ``<match>`` and most static-field options.

Theory of operation
-------------------
OS_Match has no metacharacters besides ``|`` (alternatives, no escape), an
optional leading ``!`` (negates the whole pattern, XOR with the ``negate``
attribute) and ``^``/``$`` at the very start/end of an alternative.  Every
alternative is a plain string test on the ASCII-lowered subject
(``os_match_compile.c`` / ``os_match_execute.c``):

========== ======================================================
``^x$``    equality (``strcasecmp``)
``^x``     prefix (``strncasecmp`` over ``len(x)``)
``x$``     suffix (needs ``len(s) >= len(x)``)
``""``     always true (empty alternative, e.g. ``a||b``, ``a|``)
``x``      substring
========== ======================================================

So the compiled form is four groups of strings tested with C-implemented
``str`` methods (``in`` on a frozenset, ``startswith``/``endswith`` with a
tuple, ``in``); no regex engine is involved and the cost is linear in the
subject.  ``^`` and ``$`` anywhere else, and ``.``, ``*``, ``\\`` everywhere,
are literal characters.

This module also defines :class:`PatternError`, the error every dialect raises
for an invalid rules-file pattern; it lives here, in the dialect module with no
dependencies, so the others can import it without a cycle.
"""

from __future__ import annotations

from trailwarden.rules.event import ascii_lower

# OS_PATTERN_MAXSIZE (os_regex.h): longer patterns fail to compile in analysisd.
MAX_PATTERN_CHARS = 20480


class PatternError(ValueError):
    """A pattern from a rules or decoders file is invalid: the file's fault.

    The message says what is wrong and where in the pattern (character
    offset); the loader prefixes the file and line.
    """


def check_length(pattern: str, dialect: str) -> None:
    """Reject patterns analysisd refuses for their size (OS_REGEX_MAXSIZE)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(
            f"{dialect} pattern is {len(pattern)} characters long; analysisd accepts at most"
            f" {MAX_PATTERN_CHARS}"
        )


class OsMatch:
    """A compiled OS_Match pattern; ``test`` takes the ASCII-lowered subject."""

    __slots__ = (
        "always",
        "equals",
        "negate",
        "prefixes",
        "required_literal",
        "substrings",
        "suffixes",
    )

    def __init__(self, pattern: str) -> None:
        check_length(pattern, "OS_Match")
        self.negate = pattern.startswith("!")
        body = ascii_lower(pattern[1:] if self.negate else pattern)
        equals: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        substrings: list[str] = []
        always = False
        for alt in body.split("|"):
            if len(alt) >= 2 and alt[0] == "^" and alt[-1] == "$":
                equals.add(alt[1:-1])
            elif not alt:
                always = True
            elif alt[-1] == "$":
                suffixes.append(alt[:-1])
            elif alt[0] == "^":
                prefixes.append(alt[1:])
            else:
                substrings.append(alt)
        # "^" alone is a zero-length prefix and "$" alone a zero-length suffix:
        # both hold for every subject, like the empty alternative.
        if "" in prefixes or "" in suffixes:
            always = True
        self.always = always
        self.equals = frozenset(equals)
        self.prefixes = tuple(prefixes)
        self.suffixes = tuple(suffixes)
        # Longest first: the likeliest to be absent, so `any` stops early less often
        # on matching subjects but the order does not change the result.
        self.substrings = tuple(sorted(set(substrings), key=len, reverse=True))
        alts = len(self.equals) + len(self.prefixes) + len(self.suffixes) + len(self.substrings)
        literal: str | None = None
        if not self.negate and not always and alts == 1:
            literal = (
                next(iter(self.equals))
                if self.equals
                else (self.prefixes or self.suffixes or self.substrings)[0]
            )
        self.required_literal = literal or None

    def test(self, lowered: str) -> bool:
        """OSMatch_Execute on an already ASCII-lowered subject (``!`` applied)."""
        # Each group is asked only when it has members: `in` on a set hashes
        # the whole subject (a 2 KB log) even when the set is empty.
        hit = (
            self.always
            or (bool(self.equals) and lowered in self.equals)
            or (bool(self.prefixes) and lowered.startswith(self.prefixes))
            or (bool(self.suffixes) and lowered.endswith(self.suffixes))
            or (bool(self.substrings) and any(sub in lowered for sub in self.substrings))
        )
        return hit is not self.negate
