"""``$(field)`` substitution in rule descriptions (analysisd ``ParseRuleComment``).

Each ``$(name)`` is replaced by the event's value: the static names below
first (exact, case-sensitive), then the pre-decoded ``program_name`` and
``hostname``, then the first dynamic field whose key equals ``name`` ignoring
ASCII case. A missing value is the empty string; a ``$(`` without a closing
``)`` is copied as it is. analysisd builds the result in a 1024-byte buffer:
when any step would reach it, the description is used unsubstituted.

A template is split once into literal and variable parts (``compile_description``);
substituting then only looks the variables up.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from operator import attrgetter, methodcaller

from trailwarden.rules.event import Event, ascii_lower

__all__ = ["OS_COMMENT_MAX", "compile_description", "substitute"]

# analysisd's OS_COMMENT_MAX: the substituted description must stay below it.
OS_COMMENT_MAX = 1024
# Distinct descriptions kept compiled by ``substitute`` (a ruleset has a few thousand).
_CACHE_SIZE = 8192

# ParseRuleComment's static names -> Event attribute.
_STATIC_VARIABLES: dict[str, str] = {
    "dstuser": "dstuser",
    "srcuser": "srcuser",
    "srcip": "srcip",
    "dstip": "dstip",
    "srcgeoip": "srcgeoip",
    "dstgeoip": "dstgeoip",
    "srcport": "srcport",
    "dstport": "dstport",
    "protocol": "protocol",
    "action": "action",
    "id": "id",
    "url": "url",
    "data": "data",
    "status": "status",
    "extra_data": "extra_data",
    "system_name": "systemname",
    "program_name": "program_name",
    "hostname": "hostname",
}

Description = Callable[[Event], str]


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _getter(name: str) -> Callable[[Event], str | None]:
    attr = _STATIC_VARIABLES.get(name)
    if attr is not None:
        return attrgetter(attr)
    # Lowered once, not per event; methodcaller calls without a Python frame.
    find: Callable[[Event], str | None] = methodcaller("find_lowered", ascii_lower(name))
    return find


def compile_description(template: str) -> Description:
    """Split ``template`` once; the result substitutes one event."""
    # analysisd works on a copy of the first 1024 bytes; sizes are in bytes.
    work = template.encode("utf-8", "surrogatepass")[:OS_COMMENT_MAX]
    if b"$(" not in work:
        return lambda event: template  # shorter than the limit, or the limit returns it

    def text(chunk: bytes) -> str:
        return chunk.decode("utf-8", "ignore")

    # (literal, its size in bytes, getter or None for a plain literal)
    parts: list[tuple[str, int, Callable[[Event], str | None] | None]] = []
    rest = work
    while True:
        start = rest.find(b"$(")
        if start < 0:
            parts.append((text(rest), len(rest), None))
            break
        literal = rest[:start]
        end = rest.find(b")", start + 2)
        if end < 0:
            # analysisd checks the text before "$(" first, then copies the rest.
            parts.append((text(literal), len(literal), None))
            parts.append((text(rest[start:]), len(rest) - start, None))
            break
        parts.append((text(literal), len(literal), _getter(text(rest[start + 2 : end]))))
        rest = rest[end + 1 :]

    def describe(event: Event) -> str:
        out: list[str] = []
        n = 0
        for literal, size, getter in parts:
            n += size
            if n >= OS_COMMENT_MAX:
                return template
            out.append(literal)
            if getter is not None:
                value = getter(event)
                if value:
                    n += _size(value)
                    if n >= OS_COMMENT_MAX:
                        return template
                    out.append(value)
        return "".join(out)

    return describe


@lru_cache(maxsize=_CACHE_SIZE)
def _compiled(template: str) -> Description:
    return compile_description(template)


def substitute(template: str, event: Event) -> str:
    """The description of ``template`` for ``event``."""
    return _compiled(template)(event)
