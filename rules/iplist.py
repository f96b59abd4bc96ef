"""``<srcip>``/``<dstip>`` address lists (``OS_IsValidIP`` + ``OS_IPFoundList``).

Theory of operation
-------------------
Each entry is parsed as ``OS_IsValidIP`` does: an optional leading ``!``, then
``any``, an IPv4 address (optionally ``::ffff:``-prefixed) with an optional
``/bits`` (0-32) or ``/dotted.netmask``, or an IPv6 address in one of the forms
analysisd's regular expressions accept with an optional ``/prefix`` (0-128).
The stored network is ``address & mask``.

The event's value must parse as an IPv4 or IPv6 address (``inet_pton``);
otherwise the list does not match.  Entries are tried in order and the first
one containing the address decides.  Polarity follows ``OS_IPFoundList``: it
starts positive, and once an entry with ``!`` has been seen it stays negative
for the rest of the list, so a hit then means "no match" and running off the
end means "match".  The rule's ``negate`` attribute is XORed last.

Where analysisd would read a NULL pointer (an IPv4 value against an ``any`` or
IPv6 entry, an IPv6 value against an IPv4 entry) we treat the entry as not
containing the value, except ``any``, which contains every valid address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Final

from trailwarden.rules.osmatch import PatternError

# analysisd's IPSIZE: the longest address text it keeps for an entry.
MAX_ENTRY_CHARS: Final = 64

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H = r"[0-9a-fA-F]{1,4}"
_V6_PREFIX = r"(?:/(12[0-8]|1[0-1][0-9]|[0-9]?[0-9]))?"
# The same expressions OS_IsValidIP tries, in order.  Our own fixed patterns,
# applied to short configuration text with bounded repetitions only.
_V4_ENTRY: Final = re.compile(rf"(?:::[fF]{{4}}:)?({_IPV4})(?:/((?:3[0-2]|[1-2]?[0-9])|{_IPV4}))?")
_V6_ENTRIES: Final = tuple(
    re.compile(rf"({body}){_V6_PREFIX}")
    for body in (
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,6}}(?::{_H}){{1}}",
        rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
        rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}",
        rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
        rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
        rf"(?:{_H}:){{1}}(?::{_H}){{1,6}}",
        rf"(?:{_H}:){{1,7}}:",
        rf":(?::{_H}){{1,7}}",
        r"::",
    )
)


@dataclass(frozen=True, slots=True)
class IpEntry:
    """One parsed entry: network and mask as integers of the entry's family."""

    text: str  # as written, without the leading '!'
    negated: bool
    version: int  # 4, 6, or 0 for "any"
    network: int
    mask: int

    def contains(self, version: int, address: int) -> bool:
        if self.version == 0:
            return True
        return self.version == version and (address & self.mask) == self.network


def parse_entry(text: str) -> IpEntry:
    """Parse one ``<srcip>``/``<dstip>`` entry.

    Raises:
        PatternError: the entry is not an address analysisd accepts.
    """
    negated = text.startswith("!")
    body = text[1:] if negated else text
    if body == "any":
        return IpEntry(body, negated, 0, 0, 0)
    if len(body) > MAX_ENTRY_CHARS:
        raise PatternError(f"IP entry {text!r} is longer than {MAX_ENTRY_CHARS} characters")
    m = _V4_ENTRY.fullmatch(body)
    if m:
        address = int(ipaddress.IPv4Address(m.group(1)))
        mask_text = m.group(2)
        if mask_text is None:
            mask = 0xFFFFFFFF
        elif len(mask_text) <= 2:
            bits = int(mask_text)
            mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
        else:
            mask = int(ipaddress.IPv4Address(mask_text))
        return IpEntry(body, negated, 4, address & mask, mask)
    for pattern in _V6_ENTRIES:
        m = pattern.fullmatch(body)
        if m:
            try:
                address = int(ipaddress.IPv6Address(m.group(1)))
            except ipaddress.AddressValueError as exc:
                raise PatternError(f"invalid IPv6 entry {text!r}: {exc}") from exc
            bits = 128 if m.group(2) is None else int(m.group(2))
            mask = ((1 << 128) - 1) ^ ((1 << (128 - bits)) - 1)
            return IpEntry(body, negated, 6, address & mask, mask)
    raise PatternError(
        f"invalid IP entry {text!r}: expected any, IPv4[/bits|/netmask] or IPv6[/prefix]"
    )


def parse_address(value: str) -> tuple[int, int] | None:
    """``inet_pton`` for IPv4 then IPv6: ``(version, integer)`` or None."""
    if not value or "%" in value or "/" in value:
        return None
    try:
        return 4, int(ipaddress.IPv4Address(value))
    except ValueError:
        pass
    try:
        return 6, int(ipaddress.IPv6Address(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class IpList:
    """The OR'd entries of a rule's ``<srcip>`` (or ``<dstip>``) plus ``negate``."""

    entries: tuple[IpEntry, ...] = ()
    negate: bool = False

    def add(self, text: str) -> IpList:
        """A copy with one more entry (each ``<srcip>`` element appends one).

        Raises:
            PatternError: the entry is invalid (the rule is then rejected).
        """
        return replace(self, entries=(*self.entries, parse_entry(text)))

    def with_negate(self, negate: bool) -> IpList:
        """A copy whose ``negate`` is that of the last element, as analysisd keeps it."""
        return replace(self, negate=negate)

    def test(self, value: str) -> bool:
        """``OS_IPFoundList(value) XOR negate``."""
        return self.found(value) is not self.negate

    def found(self, value: str) -> bool:
        parsed = parse_address(value)
        if parsed is None:
            return False
        version, address = parsed
        polarity = True
        for entry in self.entries:
            if entry.negated:
                polarity = False
            if entry.contains(version, address):
                return polarity
        return not polarity
