"""The event as analysisd sees it while one message travels through the engine.

This is the Python counterpart of analysisd's ``Eventinfo``: pre-decoding fills
the header part, a decoder fills the static and dynamic fields, rule evaluation
reads them. One ``Event`` is created per message and is owned by one call of
``Engine.process``; nothing here is shared between events, so it is mutable and
slotted rather than frozen.

Dynamic fields are kept in decode order as segments: plain ``(key, value)``
pairs from regex decoders, and lazy blocks from the JSON decoder that only
flatten what a rule or the alert actually asks for. ``find_field`` follows
analysisd's ``FindField``: case-insensitive key compare, first occurrence wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from trailwarden.rules.model import DecoderInfo

# analysisd.decoder_order_size (etc/internal_options.conf): the most dynamic
# fields one event may carry; later ones are dropped, as analysisd does.
MAX_DYNAMIC_FIELDS = 256

# Names a decoder <order> (or a top-level JSON key) stores in the static slots
# of the event rather than as dynamic fields, mapped to the Event attribute.
STATIC_ORDER_NAMES: dict[str, str] = {
    "srcip": "srcip",
    "dstip": "dstip",
    "srcport": "srcport",
    "dstport": "dstport",
    "protocol": "protocol",
    "action": "action",
    "srcuser": "srcuser",
    "dstuser": "dstuser",
    "user": "dstuser",
    "id": "id",
    "status": "status",
    "url": "url",
    "data": "data",
    "extra_data": "extra_data",
    "system_name": "systemname",
    "systemname": "systemname",
}

# Order of the static fields inside the alert's "data" object (to_json.c).
STATIC_OUTPUT_ORDER: tuple[tuple[str, str], ...] = (
    ("protocol", "protocol"),
    ("action", "action"),
    ("srcip", "srcip"),
    ("srcport", "srcport"),
    ("srcuser", "srcuser"),
    ("dstip", "dstip"),
    ("dstport", "dstport"),
    ("dstuser", "dstuser"),
    ("id", "id"),
    ("status", "status"),
    ("url", "url"),
    ("data", "data"),
    ("extra_data", "extra_data"),
    ("system_name", "systemname"),
)


# Event.found: no answer kept yet for the key (None means the field is absent).
UNSEEN_FIELD: object = object()


class FieldBlock(Protocol):
    """A run of dynamic fields produced by one decoder step (e.g. the JSON plugin).

    Implementations may compute fields lazily; ``count`` and iteration order
    must equal what eager flattening would have produced.
    """

    def find(self, key_lower: str) -> str | None:
        """Value of the first field whose lower-cased key equals ``key_lower``."""
        ...

    def pairs(self) -> Iterator[tuple[str, str]]:
        """All fields in decode order as ``(key, value)``."""
        ...

    def count(self) -> int:
        """Number of fields this block holds (may be computed lazily)."""
        ...

    # Optional: ``def bound(self) -> int``, a cheap upper bound on ``count()``.


class _PairBlock:
    """Fields appended one by one by regex decoders."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def find(self, key_lower: str) -> str | None:
        for key, value in self.items:
            if key.lower() == key_lower:
                return value
        return None

    def pairs(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def count(self) -> int:
        return len(self.items)


class Event:
    """One message under analysis (analysisd ``Eventinfo``)."""

    __slots__ = (
        # -- pre-decoding (cleanevent.c) --
        "full_log",  # the message as received, after the "q:location:" header
        "log",  # full_log advanced past any syslog header
        "location",  # location after agent parsing ("Wazuh-AWS", "(name) ip->file")
        "agent_id",  # "000" for local events
        "agent_name",  # hostname part of an agent location, else None
        "agent_ip",  # ip part of an agent location unless "any", else None
        "hostname",  # pre-decoded hostname, or agent name, or manager name
        "program_name",
        "predecoded_timestamp",  # the syslog timestamp text when one was parsed
        "time_s",  # reception time, seconds since the epoch (float)
        "generate_time",  # reception time in whole seconds: what timeframes compare
        # -- decoding --
        "decoder",  # the chosen decoder node info (DecoderInfo) or None
        "log_after_parent",
        "log_after_prematch",
        "srcip",
        "dstip",
        "srcport",
        "dstport",
        "protocol",
        "action",
        "srcuser",
        "dstuser",
        "id",
        "status",
        "url",
        "data",
        "extra_data",
        "systemname",
        "srcgeoip",
        "dstgeoip",
        "_blocks",
        "found",  # find_lowered answers by lowered key; cleared when a field is added
        "_nfields",
        "_pending",
        "_lowered_log",
        "_lowered_src",
        # -- rule evaluation --
        "matched_level",  # correlation: level of the rule that consumed this event
        "rule",  # the generated rule (RuleNode) or None
        "firedtimes",
        "previous_events",  # frequency rules: full_log of earlier correlated events
        "previous_log",  # check_diff: the output this event differs from
        "evicted",  # left the correlation memory; searches stop here
        "labels",
    )

    def __init__(self, full_log: str, location: str, time_s: float) -> None:
        self.full_log = full_log
        self.log = full_log
        self.location = location
        self.agent_id = "000"
        self.agent_name: str | None = None
        self.agent_ip: str | None = None
        self.hostname: str | None = None
        self.program_name: str | None = None
        self.predecoded_timestamp: str | None = None
        self.time_s = time_s
        self.generate_time = int(time_s)
        self.decoder: DecoderInfo | None = None
        self.log_after_parent: int | None = None
        self.log_after_prematch: int | None = None
        self.srcip: str | None = None
        self.dstip: str | None = None
        self.srcport: str | None = None
        self.dstport: str | None = None
        self.protocol: str | None = None
        self.action: str | None = None
        self.srcuser: str | None = None
        self.dstuser: str | None = None
        self.id: str | None = None
        self.status: str | None = None
        self.url: str | None = None
        self.data: str | None = None
        self.extra_data: str | None = None
        self.systemname: str | None = None
        self.srcgeoip: str | None = None
        self.dstgeoip: str | None = None
        self._blocks: list[FieldBlock] = []
        self.found: dict[str, str | None] = {}
        self._nfields = 0
        self._pending: list[FieldBlock] = []
        self._lowered_log: str | None = None
        self._lowered_src: str | None = None
        self.matched_level = 0
        self.rule: object | None = None
        self.firedtimes = 0
        self.previous_events: list[str] = []
        self.previous_log: str | None = None
        self.evicted = False
        self.labels: list[tuple[str, str]] = []

    def lowered_log(self) -> str:
        """``log`` with ASCII letters lowered, computed once (OS_Match/OS_Regex read it)."""
        log = self.log
        if self._lowered_src is log and self._lowered_log is not None:
            return self._lowered_log
        lowered = self._lowered_log = log.lower() if log.isascii() else ascii_lower(log)
        self._lowered_src = log  # a plugin may replace the log: cache per text
        return lowered

    # -- dynamic fields -------------------------------------------------------

    @property
    def field_count(self) -> int:
        """Exact number of dynamic fields (counts lazy blocks on first use)."""
        pending = self._pending
        if pending:
            self._nfields += sum(block.count() for block in pending)
            pending.clear()
        return self._nfields

    @property
    def field_room(self) -> int:
        """How many more dynamic fields this event may take."""
        return MAX_DYNAMIC_FIELDS - self.field_count

    @property
    def blocks(self) -> tuple[FieldBlock, ...]:
        """The field blocks in decode order (the alert builder reads them)."""
        return tuple(self._blocks)

    def is_full(self) -> bool:
        """True when no more dynamic fields fit; cheap while far from the cap."""
        pending = self._pending
        if pending:
            bound = self._nfields
            for block in pending:
                bound_of = getattr(block, "bound", None)
                bound += block.count() if bound_of is None else bound_of()
            if bound < MAX_DYNAMIC_FIELDS:
                return False
        return self.field_count >= MAX_DYNAMIC_FIELDS

    def add_field(self, key: str, value: str) -> bool:
        """Append one dynamic field; False when the event is already full."""
        if self.is_full():
            return False
        blocks = self._blocks
        if not blocks or not isinstance(blocks[-1], _PairBlock):
            blocks.append(_PairBlock())
        block = blocks[-1]
        assert isinstance(block, _PairBlock)
        block.items.append((key, value))
        self._nfields += 1
        if self.found:
            self.found.clear()
        return True

    def add_block(self, block: FieldBlock) -> None:
        """Append a block of fields; the producer already respected ``field_room``.

        Its size is only counted when someone needs the exact number: a block
        may offer ``bound()``, a cheap upper bound used while far from the cap.
        """
        self._blocks.append(block)
        self._pending.append(block)
        if self.found:
            self.found.clear()

    def find_field(self, key: str) -> str | None:
        """analysisd ``FindField``: case-insensitive key, first occurrence wins."""
        if not self._blocks:
            return None
        return self.find_lowered(key.lower() if key.isascii() else ascii_lower(key))

    def find_lowered(self, key_lower: str) -> str | None:
        """``find_field`` for a key already ASCII-lowered (compiled rules).

        Answers are kept in ``found`` (rules of one event ask for the same
        few fields again and again); compiled rules read it inline first.
        """
        found = self.found
        value = found.get(key_lower, UNSEEN_FIELD)
        if value is not UNSEEN_FIELD:
            return value  # type: ignore[return-value]
        value = None
        for block in self._blocks:
            value = block.find(key_lower)
            if value is not None:
                break
        found[key_lower] = value
        return value

    def fields(self) -> Iterator[tuple[str, str]]:
        """All dynamic fields in decode order."""
        for block in self._blocks:
            yield from block.pairs()

    def static_value(self, attr: str) -> str | None:
        value: str | None = getattr(self, attr)
        return value


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as analysisd's charmap does.

    ``str.lower`` is exact for ASCII text and is what callers use when
    ``text.isascii()`` (an O(1) check). Other text must not have its non-ASCII
    letters folded: ``bytes.lower`` folds only A-Z, and every byte of a UTF-8
    multi-byte sequence is >= 0x80, so the round trip through UTF-8 is exact
    (``surrogatepass`` carries lone surrogates both ways). It is ~40 times
    faster than ``str.translate`` with a table, which maps char by char.
    """
    if text.isascii():
        return text.lower()
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
