"""OS_WordMatch, the matcher of ``if_group``/``if_matched_group`` against group strings.

Theory of operation
-------------------
``OS_WordMatch`` (``os_regex_match.c``) splits the pattern on ``|`` and tests
each piece in order on the subject, ASCII case-insensitively: a piece starting
with ``^`` is a prefix test, any other piece a substring test, and ``$`` is not
special.  Its empty pieces behave unevenly because the C loop compares up to
the *next* ``|`` of the pattern:

* an empty pattern never matches;
* a trailing empty piece (``a|``, or ``|`` alone) always matches;
* an empty piece before another piece ``x`` that is itself followed by ``|``
  matches when the subject contains ``|x``; otherwise it never matches.

Group strings are short, so plain ``str`` methods are all this needs.
"""

from __future__ import annotations

from trailwarden.rules.event import ascii_lower


def word_match(pattern: str, text: str) -> bool:
    """``OS_WordMatch(pattern, text)``: ``|`` alternatives, ``^`` prefix, no case."""
    if not pattern:
        return False
    lowered = ascii_lower(text)
    pieces = ascii_lower(pattern).split("|")
    last = len(pieces) - 1
    for index, piece in enumerate(pieces):
        if not piece:
            if index == last:
                return True
            if index + 1 < last and "|" + pieces[index + 1] in lowered:
                return True
            continue
        if piece[0] == "^":
            if lowered.startswith(piece[1:]):
                return True
        elif piece in lowered:
            return True
    return False
