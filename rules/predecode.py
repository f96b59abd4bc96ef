"""Pre-decoding: what analysisd's ``OS_CleanMSG`` (src/analysisd/cleanevent.c) does.

Theory of operation
-------------------
analysisd receives ``<q>:<location>:<message>``. The location runs to the
first ``:`` that is not escaped by ``|`` and is then unescaped
(``split_queue_message``). ``predecode`` then splits the location into agent
parts and looks for a header at the start of the message.

**Header.** analysisd recognises a header only by punctuation at fixed *byte*
offsets, guarded by minimum lengths. The formats are tried in this order:

* the syslog family: ``Mmm dd hh:mm:ss``, proftpd ``YYYY-MM-DD hh:mm:ss,mmm``,
  ISO 8601 with ``T`` (zone ``±hh:mm``, with ``.fff`` or ``.ffffff``),
  ``YYYY Mmm dd hh:mm:ss`` and macOS ``YYYY-MM-DD hh:mm:ss.ffffff±hhmm``;
* then xferlog, snort, suricata, apache ``[Day Mon dd hh:mm:ss yyyy]``, OS X
  ASL ``[Time ...] [Sender x] [Message y] [Host z]`` and squid epoch.

Only the syslog family goes on to take a hostname and a program name. Their
characters are from analysisd's hostname map, ``[A-Za-z0-9_.@()/-]``. A month
spelled ``Mär`` is re-laid as ``Mar`` for the offset tests only, so every
later offset counts the two bytes of the ``ä``.

**Bytes.** An offset is a character index only for ASCII text. CPython
knows whether a ``str`` is ASCII in O(1). Other text is parsed as a latin-1
view of its UTF-8 bytes (one character per byte), and the results are mapped
back to character indexes.

**NUL cuts.** analysisd ends each field by writing NUL into its copy of the
log, and every field is a C string in that copy. We record those positions as
*cuts*: a field runs from its start to the first cut at or after it. Three
results show the cuts: the log of an ASL message (and of one AIX form) ends
early, an AIX program name with no terminator runs to the end, and the ``Mär``
timestamp loses its last character.

**Speed.** A message that starts with ``{`` (all JSON traffic) is settled by
three character tests, because every header format that allows ``{`` at
offset 0 needs ``/`` at 2, a space at 3 or ``-`` at 4. The result for a message
without a header depends only on the location, so it is memoised per location
and the JSON path allocates nothing. No regex runs on the JSON path. The
regexes below are ours and anchored at a position. Each is one character
class under ``*``, so it consumes a run and stops: no backtracking, linear
time. They replace analysisd's ``while (class(*p)) p++`` loops at C speed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "CACHED_LOCATION_CHARS",
    "LOCATION_CACHE_SIZE",
    "MAX_LOCATION_BYTES",
    "MessageFormatError",
    "PreDecoded",
    "QueueMessage",
    "hostname_for_event",
    "manager_short_name",
    "predecode",
    "predecoder_hostname",
    "split_queue_message",
]

# analysisd unescapes the location into loc_buff[OS_SIZE_8192 + OS_SIZE_256 + 3];
# one byte of that is the NUL, and longer locations are cut there.
MAX_LOCATION_BYTES = 8192 + 256 + 3 - 1

# Distinct locations whose agent parsing is memoised. A deployment has one per
# (agent, log source); the bound keeps a sender that invents locations from
# growing memory.
LOCATION_CACHE_SIZE = 4096

# Longer locations (rare: real ones are an agent and a path) are parsed every
# time, so the cache holds at most LOCATION_CACHE_SIZE * 512 characters.
CACHED_LOCATION_CHARS = 512

# analysisd's header tests read offsets up to 31. The "Mär" re-lay copies that
# much of the message, plus a NUL so that the year test's offset 20 is in range.
_HEADER_SPAN = 32

_HOST_RUN = re.compile(r"[-A-Za-z0-9_.@()/]*")  # os_regex_maps.c hostname_map
_DIGIT_RUN = re.compile(r"[0-9]*")  # C isdigit: ASCII only, unlike str.isdigit
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]*")  # C isalnum in the C locale
_SPACE_RUN = re.compile(r" *")
_DIGITS = frozenset("0123456789")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")

# json_extended.c W_JSON_ParseHostname: the POSIX regex that fills the alert's
# predecoder.hostname. It is anchored, fixed-width, and ends in one class run.
_ALERT_HOSTNAME = re.compile(r"[A-Z][a-z][a-z] [ 0-3][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} ([^ ]+)")


class MessageFormatError(ValueError):
    """The sender's fault: a queue message or location analysisd would reject."""


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """``<q>:<location>:<message>`` as analysisd receives it, location unescaped."""

    queue: str
    location: str
    message: str


@dataclass(slots=True, init=False)
class PreDecoded:
    """What pre-decoding learnt about one message.

    ``event.log == message[log_start:log_end]``. ``log_end`` is None (the end of
    the message) except where analysisd's NUL cuts end the log early (see the
    module notes). Not frozen: one is made per message, and mypyc compiles a
    hand-written __init__ (a dataclass-generated one stays interpreted).
    """

    log_start: int
    log_end: int | None
    hostname: str | None  # from the header; None when the header had none
    program_name: str | None
    timestamp: str | None  # dec_timestamp: the alert's predecoder.timestamp
    agent_id: str  # "000" for local events
    location: str  # lf->location after agent parsing
    agent_name: str | None  # "(name)" of an agent location ("" if absent); None if local
    agent_ip: str | None  # "ip" of a "(name) ip->..." location, unless "any"

    def __init__(
        self, log_start: int, log_end: int | None, hostname: str | None,
        program_name: str | None, timestamp: str | None, agent_id: str, location: str,
        agent_name: str | None, agent_ip: str | None,
    ) -> None:
        self.log_start = log_start
        self.log_end = log_end
        self.hostname = hostname
        self.program_name = program_name
        self.timestamp = timestamp
        self.agent_id = agent_id
        self.location = location
        self.agent_name = agent_name
        self.agent_ip = agent_ip

    def log_of(self, message: str) -> str:
        """The text decoders and rules see (``lf->log``)."""
        return message[self.log_start : self.log_end]


def split_queue_message(raw: str) -> QueueMessage:
    """Split ``<q>:<location>:<message>`` as analysisd does.

    analysisd reads the datagram as a C string, so text after a NUL is dropped.
    It skips the first two characters without looking at them; we require them
    to be ``<q>:`` and reject anything else as malformed.
    """
    nul = raw.find("\0")
    if nul >= 0:
        raw = raw[:nul]
    if len(raw) < 2 or raw[1] != ":":
        raise MessageFormatError(f"queue message must start with '<queue>:', got {raw[:32]!r}")
    colon = raw.find(":", 2)
    if colon < 0 or raw[colon - 1] == "|":  # raw[1] is ':', so colon - 1 is in range
        colon = _unescaped_colon(raw, 2)
        if colon < 0:
            raise MessageFormatError(f"queue message has no ':' after its location: {raw[:64]!r}")
    return QueueMessage(raw[0], _unescape_location(raw[2:colon]), raw[colon + 1 :])


def predecode(location: str, message: str) -> PreDecoded:
    """Pre-decode one message (NUL-free, as ``split_queue_message`` returns it).

    Raises ``MessageFormatError`` for an agent location (``[``...) without its
    ``]``, which analysisd drops with a format error.
    """
    plain = (
        _without_header(location)
        if len(location) <= CACHED_LOCATION_CHARS
        else _without_header.__wrapped__(location)
    )
    if message[:1] == "{":
        head = message[1:5]
        if len(head) < 4 or (  # 4 characters are at most 16 bytes: too short for a header
            head[1] != "/" and head[2] != " " and head[3] != "-" and head.isascii()
        ):  # and when head is ASCII, its offsets are byte offsets and there is no "ä"
            return plain
    if message.isascii():
        header = _parse_header(message)
        if header is None:
            return plain
        start, end, host, prog, stamp = header
    else:
        raw, errors = _utf8(message)
        header = _parse_header(raw.decode("latin-1"))
        if header is None:
            return plain
        start, end, host, prog, stamp = header
        start = _char_offset(message, raw, start, errors)
        if end is not None:
            end = _char_offset(message, raw, end, errors)
        host, prog, stamp = _from_view(host), _from_view(prog), _from_view(stamp)
    return PreDecoded(
        start,
        end,
        host,
        prog,
        stamp,
        plain.agent_id,
        plain.location,
        plain.agent_name,
        plain.agent_ip,
    )


def hostname_for_event(pre: PreDecoded, manager_shost: str) -> str:
    """analysisd's final ``lf->hostname``.

    Agent events take the agent name and drop the header's hostname. Local
    events keep the header's hostname, else the manager's short name
    (``manager_short_name``).
    """
    if pre.agent_name is not None:
        return pre.agent_name
    return pre.hostname if pre.hostname is not None else manager_shost


def manager_short_name(hostname: str) -> str:
    """analysisd's ``__shost``: the host name without its domain part."""
    return hostname.partition(".")[0]


def predecoder_hostname(full_log: str) -> str | None:
    """The alert's ``predecoder.hostname``.

    analysisd adds it when ``full_log`` starts with ``Mmm dd hh:mm:ss <host>``,
    whatever pre-decoding found.
    """
    match = _ALERT_HOSTNAME.match(full_log)
    return match.group(1) if match else None


# -- location -------------------------------------------------------------------


def _unescaped_colon(raw: str, start: int) -> int:
    """wstr_chr_escape(..., ':', '|'): index of the first ':' not escaped, or -1."""
    pos = raw.find(":", start)
    while pos >= 0:
        # "|" escapes the next character, so ':' is escaped after an odd run of "|".
        k = pos
        while k > start and raw[k - 1] == "|":
            k -= 1
        if (pos - k) % 2 == 0:
            return pos
        pos = raw.find(":", pos + 1)
    return -1


def _unescape_location(text: str) -> str:
    """wstr_unescape(..., '|'): "|x" becomes "x"; a trailing "|" is kept."""
    if "|" in text:
        parts: list[str] = []
        i = 0
        while True:
            j = text.find("|", i)
            if j < 0 or j == len(text) - 1:
                parts.append(text[i:])
                break
            parts.append(text[i:j])
            parts.append(text[j + 1])
            i = j + 2
        text = "".join(parts)
    if len(text) * 4 > MAX_LOCATION_BYTES:  # a cheap bound before encoding
        raw, errors = _utf8(text)
        if len(raw) > MAX_LOCATION_BYTES:
            cut = MAX_LOCATION_BYTES
            while raw[cut] & 0xC0 == 0x80:  # not inside a character
                cut -= 1
            text = raw[:cut].decode("utf-8", errors)
    return text


@lru_cache(maxsize=LOCATION_CACHE_SIZE)
def _without_header(location: str) -> PreDecoded:
    """The result for a message from ``location`` that has no header.

    It carries the location's agent parts: ``[id] (name) ip->source``.
    """
    if location[:1] == "[":
        close = location.find("]", 1)
        if close < 0:
            raise MessageFormatError(f"agent location has no ']' after its id: {location!r}")
        agent_id = location[1:close]
        loc = location[close + 2 :]  # analysisd skips "] " without looking
        if loc[:1] == "(":
            end = loc.find(")", 1)
            agent_name = loc[1:end] if end >= 0 else ""
        else:
            agent_name = ""
    else:
        agent_id, loc, agent_name = "000", location, None
    agent_ip = None
    # json_extended.c W_JSON_ParseAgentIP: two characters past ')' up to '-'.
    if loc[:1] == "(":
        close = loc.find(")")
        if close >= 0:
            ip = loc[close + 2 :].partition("-")[0]
            agent_ip = None if ip == "any" else ip
    return PreDecoded(0, None, None, None, None, agent_id, loc, agent_name, agent_ip)


# -- header ---------------------------------------------------------------------

_Header = tuple[int, int | None, str | None, str | None, str | None]


class _Date(NamedTuple):
    """One of analysisd's date tests, and what it does when the test passes."""

    checks: tuple[tuple[int, str], ...]  # (offset, bytes allowed there)
    min_bytes: int  # shortest message it applies to: analysisd tests "loglen > min_bytes"
    log: int  # where lf->log moves
    stamp: int  # where dec_timestamp starts, or -1 for none
    cut: int  # the timestamp's NUL goes this far before the log
    then: str  # what follows: "syslog" (hostname and program), "asl", "squid" or ""


def _date(
    picture: str, min_bytes: int, log: int, then: str = "", stamp: int = 0, cut: int = 1
) -> _Date:
    """A date test drawn as a picture: '_' is any byte, '9' a digit, '±' '+' or '-'."""
    classes = {"9": "0123456789", "±": "+-"}
    checks = tuple((i, classes.get(c, c)) for i, c in enumerate(picture) if c != "_")
    return _Date(checks, min_bytes, log, stamp, cut, then)


# analysisd's tests in its order; the first that passes wins. A C test with
# alternatives (ISO 8601, squid) is spelled out as one row per alternative.
_DATES = (
    _date("___ __ __:__:__ ", 17, 16, "syslog"),  # Dec 29 10:00:01
    _date("____-__-__ __:__:__,", 24, 24, "syslog"),  # 2015-04-16 21:51:02,805 (proftpd)
    _date("____-__-__T__:__:_____:__ ", 33, 26, "syslog"),  # 2007-06-14T15:48:55-04:00
    _date("____-__-__T__:__:__.______:", 33, 30, "syslog"),  # 2022-12-19T15:02:53.288+00:00
    _date("____-__-__T__:__:__._________:", 33, 33, "syslog"),  # ...T09:36:46.214994-07:00
    _date("____-__-__T__:__:__.", 33, 32, "syslog"),
    _date("9___ ___ __ __:__:__ ", 21, 21, "syslog"),  # 2015 Dec 29 10:00:01
    _date("9___-__-__ __:__:__.______±____ ", 33, 32, "syslog"),  # macOS: ...09.404756-0700
    _date("___ ___ __ __:__:__ ____ _ ", 28, 25),  # xferlog: Mon Apr 17 18:27:14 2006 1 ...
    _date("__/__-__:__:__.______ ", 24, 23, cut=2),  # snort: 01/28-09:13:16.240702  [**]
    _date("__/__/____-__:__:__.______ ", 28, 28, cut=2),  # suricata: 01/28/1979-09:13:16...
    _date("[___ ___ __ __:__:__ ____]", 27, 27, stamp=1, cut=2),  # apache: [Fri Feb 11 ...]
    _date("[T___ ____.__.__ __:", 26, 25, "asl", stamp=-1),  # [Time 2006.12.28 15:53:55 UTC]
    _date("1999______.__9 ______ ", 32, 14, "squid"),  # 1140804070.368  11623
    _date("1999______.__9 _______ ", 32, 14, "squid"),
)


def _parse_header(s: str) -> _Header | None:
    """(log, log_end, hostname, program_name, timestamp), or None without a header.

    Offsets are byte offsets, and ``log_end`` is None for the end of ``s``.
    """
    n = len(s)
    p = s
    if n > 2 and s[1] == "\xc3" and s[2] == "\xa4":
        p = "Ma" + s[3 : _HEADER_SPAN + 3] + "\0"  # "Mär" in UTF-8, re-laid as "Mar"
    for date in _DATES:
        if n >= date.min_bytes:
            for i, allowed in date.checks:
                if p[i] not in allowed:
                    break
            else:
                break
    else:
        return None

    cuts: list[int] = []
    host = prog = -1  # starts of C strings in s, -1 for NULL
    log = date.log
    if date.then == "squid":
        log = _run_end(_SPACE_RUN, s, log)
    if date.stamp >= 0:
        cuts.append(log - date.cut)
    if date.then == "syslog":
        log, host, prog = _host_and_program(s, log, cuts)
    elif date.then == "asl":
        log, host, prog = _asl_entries(s, cuts)
    log = min(log, n)  # "[ID x]" at the very end points past the NUL; nothing is there
    return (
        log,
        _cut_after(log, cuts),
        None if host < 0 else s[host : _cut_after(host, cuts)],
        None if prog < 0 else s[prog : _cut_after(prog, cuts)],
        None if date.stamp < 0 else s[date.stamp : _cut_after(date.stamp, cuts)],
    )


def _cut_after(start: int, cuts: list[int]) -> int | None:
    """Where the C string at ``start`` ends: the first cut at or after it."""
    end = None
    for cut in cuts:
        if cut >= start and (end is None or cut < end):
            end = cut
    return end


def _host_and_program(s: str, log: int, cuts: list[int]) -> tuple[int, int, int]:
    """Hostname and program name after a syslog date: (log, hostname, program_name)."""
    if s[log : log + 1] == " ":
        log += 1
    host = log
    end = _run_end(_HOST_RUN, s, host)
    stop = s[end : end + 1]
    if stop == ":" and s[end + 1 : end + 2] == " ":
        cuts.append(end)  # "name: " with no hostname (Solaris): it is the program
        return _drop_id_prefix(s, end + 2), -1, host
    if stop != " ":
        return host, -1, -1
    cuts.append(end)
    after_host = prog = end + 1  # the log stays here unless a program name is found
    end = _run_end(_HOST_RUN, s, prog)
    stop = s[end : end + 1]
    if stop == ":":  # name: (the space is optional)
        cuts.append(end)
        end += 1
        return _drop_id_prefix(s, end + (s[end : end + 1] == " ")), host, prog
    if stop == "[" and s[end + 1 : end + 2] in _DIGITS:  # name[pid]:
        close = _run_end(_DIGIT_RUN, s, end + 2)
        tail = s[close : close + 2]
        if tail == "]:":
            cuts.append(end)
            close += 2
            return _drop_id_prefix(s, close + (s[close : close + 1] == " ")), host, prog
        if tail == "] ":  # some systems leave out the ':'
            cuts.append(end)
            return _drop_id_prefix(s, close + 2), host, prog
        return after_host, host, -1  # analysisd puts the '[' back
    if stop == "|" and s[end + 1 : end + 2] in _LOWER:  # AIX: x|facility:severity prog:
        mark = _run_end(_ALNUM_RUN, s, end + 2)
        if s[mark : mark + 1] != ":":
            return after_host, host, -1
        mark = _run_end(_ALNUM_RUN, s, mark + 1)
        if s[mark : mark + 1] != " ":
            return after_host, host, -1
        prog = mark + 1
        end = _run_end(_HOST_RUN, s, prog)
        stop = s[end : end + 1]
        if stop == ":" and s[end + 1 : end + 2] == " ":
            cuts.append(end)
            return _drop_id_prefix(s, end + 2), host, prog
        if stop == "[" and s[end + 1 : end + 2] in _DIGITS:
            cuts.append(end)  # stays when the rest fails, so the log ends here
            close = _run_end(_DIGIT_RUN, s, end + 2)
            if s[close : close + 3] == "]: ":
                return _drop_id_prefix(s, close + 3), host, prog
            return after_host, host, prog
        # Nothing terminated the name, so it runs on to the next cut or the end.
        return _drop_id_prefix(s, end), host, prog
    return after_host, host, -1


def _run_end(run: re.Pattern[str], s: str, pos: int) -> int:
    """End of the run of ``run``'s class that starts at ``pos``."""
    match = run.match(s, pos)
    assert match is not None  # a "*" run matches the empty string
    return match.end()


def _drop_id_prefix(s: str, log: int) -> int:
    """Skip a Solaris "[ID 123 facility.severity] " prefix."""
    if s.startswith("[ID ", log):
        close = s.find("]", log + 4)
        if close >= 0:
            return close + 2
    return log


def _asl_entries(s: str, cuts: list[int]) -> tuple[int, int, int]:
    """OS X ASL bracketed entries: (log, hostname, program_name)."""
    log, host, prog = 25, -1, -1
    have_message = False  # one Message entry only: a second could forge the log
    pos = s.find("[", 25)
    while pos >= 0:
        pos += 1
        if prog < 0 and s.startswith("Sender ", pos):
            close = s.find("]", pos + 7)
            if close < 0:
                break
            prog = pos + 7
            cuts.append(close)
            pos = close + 1
        elif not have_message and s.startswith("Message ", pos):
            have_message = True
            log = pos + 8
            close = s.find("]", log)
            if close < 0:
                break
            cuts.append(close)
            pos = close + 1
        elif s.startswith("Host ", pos):
            close = s.find("]", pos + 5)
            if close >= 0:
                host = pos + 5
                cuts.append(close)
            break
        pos = s.find("[", pos)
    return log, host, prog


# -- bytes ----------------------------------------------------------------------


def _utf8(text: str) -> tuple[bytes, str]:
    """UTF-8 bytes of ``text`` and the error handler that round-trips them."""
    try:
        return text.encode("utf-8", "surrogateescape"), "surrogateescape"
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass"), "surrogatepass"


def _char_offset(message: str, raw: bytes, offset: int, errors: str) -> int:
    """Index in ``message`` of byte ``offset`` of ``raw``.

    An offset inside a multi-byte character moves to the next character: the
    partial character analysisd would show cannot be a ``str``.
    """
    for end in range(offset, min(offset + 4, len(raw)) + 1):
        try:
            prefix = raw[:end].decode("utf-8", errors)
        except UnicodeDecodeError:
            continue
        if message.startswith(prefix):
            return len(prefix)
    return len(message)  # pragma: no cover - a 4-byte window always holds a boundary


def _from_view(piece: str | None) -> str | None:
    """A field cut from the latin-1 view, back as text."""
    if piece is None or piece.isascii():
        return piece
    return piece.encode("latin-1").decode("utf-8", "replace")
