"""analysisd's non-JSON plugin decoders: PF, SymantecWS, SonicWall and OSSECAlert.

A ``<plugin_decoder>`` hands the event to C code instead of a ``<regex>``. These
four are ports of ``src/analysisd/decoders/plugins/*_decoder.c`` (registered in
``plugin_decoders.c`` in the order of ``PLUGIN_FACTORIES``), behaviour for
behaviour, including where they stop half-way: every field set before a check
fails stays set, as it does in analysisd.

Theory of operation
-------------------
* Input. The C plugins read ``lf->log``; only JSON_Decoder looks at the
  ``offset`` attribute of ``<plugin_decoder>``. So these ignore the ``text``
  argument the decoder chain passes and read ``event.log``.
* Scanning. ``strchr``/``strncmp`` walks become ``str.find``/``startswith``.
  The C code counts bytes where it copies into fixed buffers; ``_clip_utf8``
  applies those limits to the UTF-8 form and drops a character the C copy would
  cut in half (half a character cannot be a ``str``).
* SonicWall runs three OS_Regex patterns. Each quantified class in them is
  followed by a character outside the class, so the OS_Regex scanner never
  records a backtrack point and behaves as a plain leftmost search with greedy
  runs. So each pattern is a loop over the occurrences of its leading literal
  in the ASCII-lowered log (``charmap``), the fixed pieces after it matched in
  place; captures come from the original text. The tests compare this with a
  port of ``_OS_Regex``. It is linear: an attempt cannot pass the start of a
  later one, except inside ``\\S+`` runs, whose end is found once per run.
* Decoder type. SonicWall and OSSECAlert assign ``lf->decoder_info->type``,
  which decides the rules' category check. ``DecoderInfo`` is frozen, so the
  event gets a copy of its decoder info with the new category (memoised).
  OSSECAlert's type has no XML name; it is ``OSSEC_ALERT_CATEGORY`` here, and
  analysisd then skips the rule tree: the event alerts as ``event.rule`` (the
  forwarded alert's rule) or, when that is unset, not at all.
* Rule ids. OSSECAlert looks the forwarded rule id up in analysisd's rules
  hash (``Config.g_rules_hash``: the decimal id text, exactly). Decoders are
  built before rules, so the lookup is a mapping handed to ``plugin_factories``
  that its owner fills once the rules are loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from trailwarden.rules.event import Event, ascii_lower
from trailwarden.rules.model import DecoderInfo

if TYPE_CHECKING:
    # decoders.py calls the plugins; only its type names are needed here.
    from trailwarden.rules.decoders import DecoderSpec, PluginFactory, PluginFunc

__all__ = [
    "OSSEC_ALERT_CATEGORY",
    "PLUGIN_FACTORIES",
    "decode_pf",
    "decode_sonicwall",
    "decode_symantec_ws",
    "make_ossec_alert_decoder",
    "plugin_factories",
]

# The decoder type OSSECAlert_Decoder assigns (OSSEC_ALERT): no <type> or rule
# <category> can name it, so no rule's category check ever passes on it.
OSSEC_ALERT_CATEGORY: Final = "ossec-alert"

# SymantecWS copies the user and the IP address at most this many bytes long.
SYMANTEC_FIELD_MAX: Final = 128
# SymantecWS copies the URL into a char[OS_SIZE_1024 + 1] buffer.
SYMANTEC_URL_MAX: Final = 1024
# SymantecWS copies the id as the 9 bytes from "3="/"2=" on, commas included.
SYMANTEC_ID_MAX: Final = 9
# SonicWall copies at most 6 protocol characters (into calloc(8)).
SONICWALL_PROTO_MAX: Final = 6
# OSSECAlert builds "<location>|<alert location>" with snprintf(buf, 255, ...).
OSSEC_LOCATION_MAX: Final = 254
# OSSECAlert keeps the forwarded log via strncpy(buf, log, 4094).
OSSEC_LOG_MAX: Final = 4094

# Distinct (decoder info, category) relabellings kept; a ruleset has a few
# plugin decoders and four categories, so reaching this means a caller builds
# DecoderInfo objects per event, and the memo starts over.
_CATEGORY_MEMO_MAX: Final = 256
_category_memo: dict[tuple[int, str], tuple[DecoderInfo, DecoderInfo]] = {}


def _set_category(event: Event, category: str) -> None:
    """``lf->decoder_info->type = category`` on this event's view of its decoder."""
    info = event.decoder
    if info is None or info.category == category:
        return
    key = (id(info), category)
    hit = _category_memo.get(key)
    if hit is None or hit[0] is not info:  # the id may belong to a collected object
        if len(_category_memo) >= _CATEGORY_MEMO_MAX:
            _category_memo.clear()
        hit = (info, replace(info, category=category))
        _category_memo[key] = hit
    event.decoder = hit[1]


def _clip_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 form has at most ``limit`` bytes."""
    if text.isascii():
        return text[:limit]
    if len(text) * 4 <= limit:
        return text
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # surrogates: bytes pre-decoding could not decode
        return _clip_escaped(text, limit)
    if len(raw) <= limit:
        return text
    cut = limit
    while raw[cut] & 0xC0 == 0x80:  # valid UTF-8: back up to a character's first byte
        cut -= 1
    return raw[:cut].decode("utf-8")


def _clip_escaped(text: str, limit: int) -> str:
    """``_clip_utf8`` for text holding surrogates, counted one character at a time."""
    used = 0
    for index, ch in enumerate(text):
        code = ord(ch)
        if code < 0x80:
            size = 1
        elif code < 0x800:
            size = 2
        elif 0xDC80 <= code <= 0xDCFF:  # surrogateescape: one raw input byte
            size = 1
        elif code < 0x10000:
            size = 3
        else:
            size = 4
        used += size
        if used > limit:
            return text[:index]
    return text


# -- PF_Decoder (pf_decoder.c) -------------------------------------------------------


def _split_pf_address(address: str) -> tuple[str, str | None]:
    """pf writes "a.b.c.d.port": the port follows the fourth dot, if there is one."""
    if address.count(".") < 4:
        return address, None
    find = address.find
    dot = find(".", find(".", find(".", find(".") + 1) + 1) + 1)
    return address[:dot], address[dot + 1 :]


def decode_pf(event: Event, text: str) -> None:
    """PF_Decoder: action, addresses, ports and protocol of an OpenBSD pf line.

    ``... rule 2/(match) pass in on xl0: 10.1.1.3.6667 > 10.1.1.10.16290: P ...``
    """
    log = event.log
    i = log.find(")")
    if i < 0 or log[i + 1 : i + 2] != " ":
        return
    i += 2
    verb = log[i : i + 1]
    if verb == "p":
        event.action = "pass"
    elif verb == "b":
        event.action = "block"
    else:
        return
    i = log.find(":", i)
    if i < 0 or log[i + 1 : i + 2] != " ":
        return
    i += 2
    end = log.find(" ", i)
    if end < 0:
        return
    event.srcip, port = _split_pf_address(log[i:end])
    if port is not None:
        event.srcport = port
    if log[end + 1 : end + 3] != "> ":
        return
    i = end + 3
    end = log.find(":", i)
    if end < 0:
        return
    event.dstip, port = _split_pf_address(log[i:end])
    if port is not None:
        event.dstport = port
    i = end + 1
    n = len(log)
    while i < n and log[i] == " ":
        i += 1
    if i < n:
        first = log[i]
        event.protocol = "UDP" if first == "u" else "ICMP" if first == "i" else "TCP"


# -- SymantecWS_Decoder (symantecws_decoder.c) -------------------------------------


def decode_symantec_ws(event: Event, text: str) -> None:
    """SymantecWS_Decoder: user, source IP, URL and id of a Symantec Web Security line.

    ``20070717,73613,1=5,11=10.1.1.3,10=userc,3=1,2=1``: ``key=value`` entries
    after the date; the first of each kind wins. The C code skips the date with
    two ``strchr(..., ',')`` calls that find the same comma, so the time field
    is examined as an entry too.
    """
    log = event.log
    comma = log.find(",")
    if comma < 0:
        return
    pos = comma + 1
    n = len(log)
    while True:
        key = log[pos : pos + 3]
        if key == "10=" or key == "11=" or key == "60=":
            limit = SYMANTEC_URL_MAX if key == "60=" else SYMANTEC_FIELD_MAX
            start = pos + 3
            stop = log.find(",", start, start + limit)
            if stop < 0:
                stop = min(n, start + limit)
            value = _clip_utf8(log[start:stop], limit)
            pos = start + len(value)
            if key == "10=":
                if event.dstuser is None:
                    event.dstuser = value
            elif key == "11=":
                if event.srcip is None:
                    event.srcip = value
            elif event.url is None:
                event.url = value
        elif key[:2] == "3=" or key[:2] == "2=":
            # The id keeps its "3="/"2=" and runs on over commas for 9 bytes.
            value = _clip_utf8(log[pos : pos + SYMANTEC_ID_MAX], SYMANTEC_ID_MAX)
            pos += len(value)
            if event.id is None:
                event.id = value
        comma = log.find(",", pos)
        if comma < 0:
            return
        pos = comma + 1


# -- SonicWall_Decoder (sonicwall_decoder.c) ---------------------------------------

# Message ids (m=) that make the event a firewall event, with its action.
_SONICWALL_ACTIONS: Final = {
    "98": "pass",
    "597": "pass",
    "598": "pass",
    "38": "drop",
    "36": "drop",
    "173": "drop",
    "174": "drop",
    "37": "drop",
    "537": "close",
}
_SONICWALL_IDS_CATEGORY: Final = "32"  # c=32: an IDS event, whatever the id
_SONICWALL_PROXY_ID: Final = "97"  # m=97: a web proxy event
# The protocol copy stops at '/' and at the two bytes hostname_map maps to 0.
_PROTO_STOP: Final = frozenset("/\x00\x01")


# Fixed pieces of the three patterns, matched at a known position of the
# lowered log. Each [0-9]+ is followed by a non-digit literal, so a failed
# match gives back at most its own digits: linear, like the C scanner.
_PRIORITY_TAIL: Final = re.compile(r"[0-9] c=([0-9]+) m=([0-9]+) ")  # after "pri="
_IP_PORT: Final = re.compile(r"([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+):([0-9]+):")
_RESULT: Final = re.compile(r"([0-9]+) dstname=")  # after "result="


class _SpaceFinder:
    """``s.find(" ", i)`` for ``\\S+`` runs, each run's end searched once.

    Attempts at later starts that land inside an already measured run reuse its
    end, which keeps hostile inputs (a start literal repeated without spaces)
    linear.
    """

    __slots__ = ("_from", "_space", "_s")

    def __init__(self, s: str) -> None:
        self._s = s
        self._from = len(s) + 1
        self._space = -1

    def find(self, i: int) -> int:
        if not (self._from <= i and (self._space < 0 or i <= self._space)):
            self._from = i
            self._space = self._s.find(" ", i)
        return self._space


def _match_priority(lower: str) -> tuple[int, int, int, int, int] | None:
    """SONICWALL_REGID ``pri=(\\d) c=(\\d+) m=(\\d+) `` searched in the whole log.

    Returns (status index, c= start, c= end, m= start, m= end); the match ends
    at the m= end, the space, which is where the C code continues.
    """
    pos = lower.find("pri=")
    while pos >= 0:
        tail = _PRIORITY_TAIL.match(lower, pos + 4)
        if tail is not None:
            return pos + 4, tail.start(1), tail.end(1), tail.start(2), tail.end(2)
        pos = lower.find("pri=", pos + 1)
    return None


def _match_addresses(lower: str, start: int) -> tuple[int, int, int, int, int, int] | None:
    """SONICWALL_REGEX ``src=(IP):(\\d+):\\S+ dst=(IP):(\\d+):`` from ``start``.

    Returns (src start, src end, src port end, dst start, dst end, dst port end);
    each port starts one past its address's end, and the match ends at the ':'
    after the destination port.
    """
    spaces = _SpaceFinder(lower)
    n = len(lower)
    pos = lower.find("src=", start)
    while pos >= 0:
        src = _IP_PORT.match(lower, pos + 4)
        if src is not None:
            run = src.end()
            if run < n and lower[run] != " ":
                space = spaces.find(run)
                if space >= 0 and lower.startswith(" dst=", space):
                    dst = _IP_PORT.match(lower, space + 5)
                    if dst is not None:
                        return (
                            pos + 4,
                            src.end(1),
                            src.end(2),
                            space + 5,
                            dst.end(1),
                            dst.end(2),
                        )
        pos = lower.find("src=", pos + 1)
    return None


def _match_proxy(lower: str, start: int) -> tuple[int, int, int, int, int] | None:
    """SONICWALL_PROXY ``result=(\\d+) dstname=(\\S+) arg=(\\S+)$`` from ``start``.

    Returns (result start, result end, name start, name end, arg start); the
    argument runs to the end of the log.
    """
    spaces = _SpaceFinder(lower)
    last_space = lower.rfind(" ")
    n = len(lower)
    pos = lower.find("result=", start)
    while pos >= 0:
        result = _RESULT.match(lower, pos + 7)
        if result is not None:
            name = result.end()
            if name < n and lower[name] != " ":
                name_end = spaces.find(name)
                if name_end >= 0 and lower.startswith(" arg=", name_end):
                    arg = name_end + 5
                    if last_space < arg < n:  # a non-empty \S+ up to the end ($)
                        return pos + 7, result.end(1), name, name_end, arg
        pos = lower.find("result=", pos + 1)
    return None


def decode_sonicwall(event: Event, text: str) -> None:
    """SonicWall_Decoder: severity, id, addresses, ports, protocol, action, URL.

    ``... pri=6 c=262144 m=98 msg="Connection Opened" n=23419
    src=2.2.2.2:36701:WAN dst=1.1.1.1:50000:WAN proto=tcp/50000``: ``pri`` is
    the status, ``m`` the id; ``c=32`` makes it an IDS event, some ids a
    firewall event with an action, id 97 a proxy event whose id becomes the
    HTTP result and whose URL is ``dstname`` + ``arg``.
    """
    _set_category(event, "syslog")
    log = event.log
    lower = ascii_lower(log)
    priority = _match_priority(lower)
    if priority is None:
        return
    status, c_start, c_end, m_start, m_end = priority
    event.status = log[status]
    message_id = log[m_start:m_end]
    event.id = message_id
    # The C code compares a 7-byte copy of c= with "32": the same as comparing c=.
    category = log[c_start:c_end]

    addresses = _match_addresses(lower, m_end)
    if addresses is None:
        return
    src, src_end, src_port_end, dst, dst_end, dst_port_end = addresses
    event.srcip = log[src:src_end]
    event.srcport = log[src_end + 1 : src_port_end]
    event.dstip = log[dst:dst_end]
    event.dstport = log[dst_end + 1 : dst_port_end]

    after = -1  # where the proxy pattern is searched from; -1: no space after the ports
    space = log.find(" ", dst_port_end)
    if space >= 0:
        after = space + 1
        if log.startswith("proto=", after):  # strncmp: case-sensitive
            after += 6
            stop = after
            limit = min(len(log), after + SONICWALL_PROTO_MAX)
            while stop < limit and log[stop] not in _PROTO_STOP:
                stop += 1
            protocol = _clip_utf8(log[after:stop], SONICWALL_PROTO_MAX)
            after += len(protocol)
            event.protocol = protocol

    if category == _SONICWALL_IDS_CATEGORY:
        _set_category(event, "ids")
        return
    action = _SONICWALL_ACTIONS.get(message_id)
    if action is not None:
        _set_category(event, "firewall")
        event.action = action
        return
    if message_id != _SONICWALL_PROXY_ID:
        return
    _set_category(event, "squid")
    if after < 0:
        return
    proxy = _match_proxy(lower, after)
    if proxy is None:
        return
    code, code_end, name, name_end, arg = proxy
    event.id = log[code:code_end]
    event.url = log[name:name_end] + log[arg:]


# -- OSSECAlert_Decoder (ossecalert_decoder.c) -------------------------------------

# Nothing is a known rule: what the default factories see (see plugin_factories).
_NO_RULES: Final[Mapping[str, object]] = MappingProxyType({})


def make_ossec_alert_decoder(rules_by_id: Mapping[str, object]) -> PluginFunc:
    """OSSECAlert_Decoder over ``rules_by_id`` (decimal rule id text -> rule).

    Reads an alert forwarded as a log line::

        Alert Level: 5; Rule: 5716 - SSHD authentication failed.;
        Location: (web01) 10.0.0.7->/var/log/secure; srcip: 192.0.2.44;
        user: admin;  <the original log>

    (one line; ``ossec: Alert Level:`` also opens it). On success the event's
    location and hostname become ``<location>|<alert location>``, ``srcip`` and
    ``user`` fill srcip and dstuser, the original log becomes ``full_log`` and
    ``log``, and ``event.rule`` is the alert's rule. ``rules_by_id`` is read at
    decode time, so it may be filled after the decoders are built.
    """

    def decode_ossec_alert(event: Event, text: str) -> None:
        _set_category(event, OSSEC_ALERT_CATEGORY)
        log = event.log
        # strncmp over 12 and 18 characters: neither trailing space is compared.
        if not (log.startswith("Alert Level:") or log.startswith("ossec: Alert Level")):
            return
        i = log.find(";")
        if i < 0:
            return
        i = log.find(":", i + 1)
        if i < 0 or log[i + 1 : i + 2] != " ":
            return
        id_start = i + 2
        id_end = log.find(" ", id_start)
        if id_end < 0:
            return
        rule = rules_by_id.get(log[id_start:id_end])
        if rule is None:  # analysisd warns "Rule id '...' not found internally"
            return
        i = log.find(";", id_end)
        if i < 0 or not log.startswith(" Location: ", i + 1):
            return
        where = i + 12
        where_end = log.find(";", where)
        if where_end < 0:
            return
        alert_location = log[where : min(where_end, where + OSSEC_LOCATION_MAX)]
        location = _clip_utf8(f"{event.location}|{alert_location}", OSSEC_LOCATION_MAX)
        event.location = location
        event.hostname = location
        i = where_end + 1
        # Extra "name: value;" fields, each after one space; two spaces end them.
        while log[i : i + 1] == " " and log[i + 1 : i + 2] != " ":
            i += 1
            end = log.find(";", i)
            if end < 0:
                return
            if log.startswith("srcip: ", i):
                event.srcip = log[i + 7 : end]
            elif log.startswith("user: ", i):
                event.dstuser = log[i + 6 : end]
            i = end + 1
        n = len(log)
        while i < n and log[i] == " ":
            i += 1
        original = _clip_utf8(log[i : i + OSSEC_LOG_MAX], OSSEC_LOG_MAX)
        event.full_log = original
        event.log = original
        event.rule = rule

    return decode_ossec_alert


# -- registration (plugin_decoders.c) ----------------------------------------------


def _without_options(plugin: PluginFunc) -> PluginFactory:
    """A factory for a plugin that reads no decoder option."""

    def factory(spec: DecoderSpec) -> PluginFunc:
        return plugin

    return factory


def plugin_factories(rules_by_id: Mapping[str, object] = _NO_RULES) -> dict[str, PluginFactory]:
    """The four plugins by ``<plugin_decoder>`` name, in analysisd's order.

    ``rules_by_id`` is analysisd's rules hash (``str(rule id)`` -> rule); pass
    the mapping the engine fills after loading the rules. Without it every
    forwarded alert names an unknown rule, as in analysisd without that rule.
    """
    return {
        "PF_Decoder": _without_options(decode_pf),
        "SymantecWS_Decoder": _without_options(decode_symantec_ws),
        "SonicWall_Decoder": _without_options(decode_sonicwall),
        "OSSECAlert_Decoder": _without_options(make_ossec_alert_decoder(rules_by_id)),
    }


PLUGIN_FACTORIES: Final[dict[str, PluginFactory]] = plugin_factories()
