"""The non-JSON plugin decoders against what analysisd's C plugins extract.

Pre-decoding is someone else's module, so the syslog header of each sample line
is sliced off by hand here (``_strip_header``), the way analysisd's pre-decoder
leaves ``lf->log``. Sample lines come from Wazuh's ruleset test suite and the
decoder files' comments in ../shared; the expected fields were worked out from
the C source (``src/analysisd/decoders/plugins/*_decoder.c``, Wazuh 4.x).

SonicWall_Decoder runs OS_Regex patterns; ``_os_regex`` below is a line-by-line
port of ``_OS_Regex`` (``os_regex_execute.c``) on bytes, and the property tests
compare the module's scanners with ``_sonicwall_reference``, the C function's
flow over that port.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailwarden.rules.event import Event
from trailwarden.rules.model import DecoderInfo
from trailwarden.rules.plugin_decoders import (
    OSSEC_ALERT_CATEGORY,
    OSSEC_LOCATION_MAX,
    OSSEC_LOG_MAX,
    PLUGIN_FACTORIES,
    SONICWALL_PROTO_MAX,
    SYMANTEC_FIELD_MAX,
    SYMANTEC_ID_MAX,
    SYMANTEC_URL_MAX,
    decode_pf,
    decode_sonicwall,
    decode_symantec_ws,
    make_ossec_alert_decoder,
    plugin_factories,
)

STATIC = (
    "srcip",
    "srcport",
    "dstip",
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
)

_HEADER = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (?:\S+ )?")


def _strip_header(line: str, program: str | None = None) -> str:
    """``lf->log`` for a sample line: after "Mmm dd hh:mm:ss host " and "program: "."""
    m = _HEADER.match(line)
    log = line[m.end() :] if m else line
    if program is not None and log.startswith(program + ": "):
        log = log[len(program) + 2 :]
    return log


def _event(
    log: str, *, location: str = "stdin", category: str = "syslog", full_log: str | None = None
) -> Event:
    event = Event(full_log if full_log is not None else log, location, 1_700_000_000.0)
    event.log = log
    event.decoder = DecoderInfo(name="test", parent=None, own_name="test", category=category)
    return event


def _fields(event: Event) -> dict[str, str]:
    return {name: value for name in STATIC if (value := getattr(event, name)) is not None}


def _ini_logs(path: Path) -> list[str]:
    """The "log N pass = ..." lines of a ruleset test file, in order."""
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r"log \d+ pass = (.*)$", line)
        if m:
            out.append(m.group(1))
    return out


# -- PF_Decoder ---------------------------------------------------------------------


def test_pf_decodes_a_tcp_line() -> None:
    event = _event(
        "Mar 30 15:32:33.483712 rule 2/(match) pass in on xl0: 10.20.30.40.6667 > "
        "192.168.2.10.16290: P 7408:7677(269) ack 1773 win 2520 (DF)"
    )
    decode_pf(event, event.log)
    assert _fields(event) == {
        "action": "pass",
        "srcip": "10.20.30.40",
        "srcport": "6667",
        "dstip": "192.168.2.10",
        "dstport": "16290",
        "protocol": "TCP",
    }


def test_pf_decoder_comment_examples(wazuh_ref: Path) -> None:
    text = (wazuh_ref / "decoders/0180-openbsd_decoders.xml").read_text()
    lines = [
        m.group(1)
        for m in re.finditer(r"^\s*- (Mar 30 .*rule \d+/\(match\).*)$", text, re.MULTILINE)
    ]
    assert len(lines) == 4
    expected = [
        ("pass", "140.211.166.3", "6667", "192.168.2.10", "16290", "TCP"),
        ("block", "127.0.0.1", "48784", "127.0.0.1", "23", "TCP"),
        ("pass", "192.168.2.10", "1514", "192.168.2.190", "1030", "UDP"),
        ("pass", "192.168.2.10", "1514", "192.168.2.190", "1030", "UDP"),
    ]
    for line, (action, srcip, srcport, dstip, dstport, proto) in zip(lines, expected, strict=True):
        event = _event(_strip_header(line, "pf"))
        decode_pf(event, event.log)
        assert _fields(event) == {
            "action": action,
            "srcip": srcip,
            "srcport": srcport,
            "dstip": dstip,
            "dstport": dstport,
            "protocol": proto,
        }, line


def test_pf_icmp_has_no_ports() -> None:
    event = _event(
        "Mar 30 17:47:40.390143 rule 2/(match) pass in on lo0: 127.0.0.1 > "
        "127.0.0.1: icmp: echo reply"
    )
    decode_pf(event, event.log)
    assert _fields(event) == {
        "action": "pass",
        "srcip": "127.0.0.1",
        "dstip": "127.0.0.1",
        "protocol": "ICMP",
    }


def test_pf_port_is_after_the_fourth_dot_and_keeps_later_dots() -> None:
    event = _event("x (match) block out on em0: 1.2.3.4.5.6 > a.b: u")
    decode_pf(event, event.log)
    assert _fields(event) == {
        "action": "block",
        "srcip": "1.2.3.4",
        "srcport": "5.6",
        "dstip": "a.b",
        "protocol": "UDP",
    }


def test_pf_ignores_pfsense_filterlog_lines(wazuh_ref: Path) -> None:
    # pfsense.ini expects the regex decoder named "pf" (0455-pfsense); the plugin
    # finds no ')' in a filterlog line and extracts nothing.
    lines = _ini_logs(wazuh_ref / "testing/tests/pfsense.ini")
    assert len(lines) == 2
    for line in lines:
        event = _event(_strip_header(line, "filterlog"))
        decode_pf(event, event.log)
        assert _fields(event) == {}


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("rule 1/(match)pass in", {}),  # no space after ')'
        ("rule 1/(match) drop in on x: 1.2.3.4 > 5.6.7.8: tcp", {}),  # action is not p/b
        ("(match) pass in on x", {"action": "pass"}),  # no ':' after the action
        ("(match) pass in on x:1.2.3.4 > 5.6.7.8: tcp", {"action": "pass"}),
        ("(match) pass in on x: 1.2.3.4", {"action": "pass"}),  # no space after the source
        (
            "(match) block in on x: 1.2.3.4.80 < 5.6.7.8: tcp",
            {"action": "block", "srcip": "1.2.3.4", "srcport": "80"},
        ),
        ("(match) block in on x: 1.2.3.4 >5.6.7.8: tcp", {"action": "block", "srcip": "1.2.3.4"}),
        ("(match) pass in on x: 1.2.3.4 > 5.6.7.8", {"action": "pass", "srcip": "1.2.3.4"}),
        (
            "(match) pass in on x: 1.2.3.4 > 5.6.7.8:",
            {"action": "pass", "srcip": "1.2.3.4", "dstip": "5.6.7.8"},
        ),  # no protocol left
        (
            "(match) pass in on x: 1.2.3.4 > 5.6.7.8:    ",
            {"action": "pass", "srcip": "1.2.3.4", "dstip": "5.6.7.8"},
        ),
        (
            "(match) pass in on x:  > : icmp",
            {"action": "pass", "srcip": "", "dstip": "", "protocol": "ICMP"},
        ),
    ],
)
def test_pf_stops_where_the_c_code_returns(log: str, expected: dict[str, str]) -> None:
    event = _event(log)
    decode_pf(event, log)
    assert _fields(event) == expected


def test_pf_reads_the_log_not_the_offset_text() -> None:
    # Only JSON_Decoder honours <plugin_decoder offset=...>; the others read lf->log.
    event = _event("(match) pass in on x: 1.2.3.4 > 5.6.7.8: udp")
    decode_pf(event, "unrelated")
    assert event.protocol == "UDP"


# -- SymantecWS_Decoder ---------------------------------------------------------------


def test_symantec_decoder_comment_examples(wazuh_ref: Path) -> None:
    text = (wazuh_ref / "decoders/0330-symantec_decoders.xml").read_text()
    lines = re.findall(r"^\s*-?\s*(\d{8},\d+,\S.*)$", text, re.MULTILINE)
    assert len(lines) == 3
    expected: list[dict[str, str]] = [
        {"id": "3=7,2=29"},  # "100=" is not "10=", "41=" nothing; the id runs over commas
        {"srcip": "1.2.3.4", "dstuser": "usera", "id": "3=1,2=2"},
        {"srcip": "2.3.4.5", "dstuser": "userb", "id": "3=2,2=1"},
    ]
    for line, fields in zip(lines, expected, strict=True):
        event = _event(line)
        decode_symantec_ws(event, line)
        assert _fields(event) == fields, line


def test_symantec_url_and_first_value_wins() -> None:
    log = (
        "20240101,73614,1=5,11=10.9.8.7,1106=News,60=http://example.org/a?b=c,10=alice,"
        "11=6.6.6.6,10=bob,60=http://other/,1000=203.0.113.9,2=27"
    )
    event = _event(log)
    decode_symantec_ws(event, log)
    assert _fields(event) == {
        "srcip": "10.9.8.7",
        "url": "http://example.org/a?b=c",
        "dstuser": "alice",
        "id": "2=27",
    }


def test_symantec_keeps_values_set_before() -> None:
    event = _event("20240101,1,10=alice,11=1.1.1.1,3=9")
    event.dstuser, event.srcip, event.id = "earlier", "0.0.0.0", "7"
    decode_symantec_ws(event, event.log)
    assert (event.dstuser, event.srcip, event.id) == ("earlier", "0.0.0.0", "7")


def test_symantec_time_field_is_read_as_an_entry() -> None:
    # Both strchr(',') calls find the first comma, so "10=x" in the time slot counts.
    event = _event("20240101,10=early,10=late")
    decode_symantec_ws(event, event.log)
    assert event.dstuser == "early"


def test_symantec_id_is_nine_bytes() -> None:
    event = _event("20240101,1,3=1234567890,10=zed")
    decode_symantec_ws(event, event.log)
    assert event.id == "3=1234567"
    assert event.dstuser == "zed"


def test_symantec_limits_are_bytes() -> None:
    user = "u" * 500
    url = "http://h/" + "p" * 5000
    log = f"20240101,1,10={user},60={url},11=" + "é" * 200
    event = _event(log)
    decode_symantec_ws(event, log)
    assert event.dstuser == "u" * SYMANTEC_FIELD_MAX
    assert event.url == url[:SYMANTEC_URL_MAX]
    # 128 bytes hold 64 two-byte characters.
    assert event.srcip == "é" * (SYMANTEC_FIELD_MAX // 2)
    # A character cut by the byte limit is dropped, not split.
    event = _event("20240101,1,3=abcdefé,2=x")  # 10 bytes
    decode_symantec_ws(event, event.log)
    assert event.id == "3=abcdef"
    assert len(event.id.encode()) <= SYMANTEC_ID_MAX


def test_symantec_surrogate_escaped_bytes_count_one_byte_each() -> None:
    raw = "\udcff" * 200  # undecodable input bytes as pre-decoding keeps them
    event = _event(f"20240101,1,10={raw}")
    decode_symantec_ws(event, event.log)
    assert event.dstuser == raw[:SYMANTEC_FIELD_MAX]


@pytest.mark.parametrize("log", ["", "no comma", "20240101,", "20240101,10=", ",", ",,,"])
def test_symantec_malformed(log: str) -> None:
    event = _event(log)
    decode_symantec_ws(event, log)
    assert _fields(event) == ({"dstuser": ""} if log == "20240101,10=" else {})


# -- SonicWall_Decoder ----------------------------------------------------------------


def _sonicwall_ini_cases() -> list[tuple[str, int, dict[str, str], str]]:
    """(ini section, log number, fields, category) the C plugin gives each SonicWall.ini log."""
    ac1_nat = {"status": "5", "id": "1197"}  # src=IP::X0 has no port digits
    ac3_vpn = {"status": "1", "id": "1388"}  # src=IP without :port
    return [
        ("acl", 1, ac1_nat, "syslog"),
        ("acl", 2, {"status": "5", "id": "1233"}, "syslog"),  # src=:49702 has no address
        (
            "acl",
            3,
            {
                "status": "5",
                "id": "36",
                "srcip": "67.101.200.27",
                "srcport": "4507",
                "dstip": "67.32.44.2",
                "dstport": "445",
                "action": "drop",
            },
            "firewall",
        ),
        ("acl", 4, ac1_nat, "syslog"),
        (
            "ac2",
            1,
            {
                "status": "6",
                "id": "98",
                "srcip": "2.2.2.2",
                "srcport": "36701",
                "dstip": "1.1.1.1",
                "dstport": "50000",
                "protocol": "tcp",
                "action": "pass",
            },
            "firewall",
        ),
        (
            "ac2",
            2,
            {
                "status": "6",
                "id": "98",
                "srcip": "2.2.2.200",
                "srcport": "36701",
                "dstip": "1.1.1.100",
                "dstport": "50000",
                "protocol": "tcp",
                "action": "pass",
            },
            "firewall",
        ),
        ("ac3", 1, ac3_vpn, "syslog"),  # returns before the c=32 check
        (
            "ac3",
            2,
            {
                "status": "1",
                "id": "30",
                "srcip": "2.2.2.2",
                "srcport": "36701",
                "dstip": "1.1.1.1",
                "dstport": "50000",
            },
            "ids",
        ),
        ("ac3", 3, ac3_vpn, "syslog"),
        (
            "ac4",
            1,
            {
                "status": "3",
                "id": "14",
                "srcip": "192.168.0.62",
                "srcport": "54993",
                "dstip": "151.101.242.49",
                "dstport": "443",
            },
            "syslog",
        ),
        (
            "ac4",
            2,
            {
                "status": "3",
                "id": "14",
                "srcip": "192.168.0.46",
                "srcport": "59668",
                "dstip": "34.194.213.204",
                "dstport": "443",
            },
            "syslog",
        ),
    ]


def test_sonicwall_ini_logs(wazuh_ref: Path) -> None:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in (wazuh_ref / "testing/tests/SonicWall.ini").read_text().splitlines():
        head = re.match(r"\[SonicWall\s*:\s*(\w+)", line)
        if head:
            current = head.group(1)
        m = re.match(r"log \d+ pass = (.*)$", line)
        if m:
            sections.setdefault(current, []).append(m.group(1))
    cases = _sonicwall_ini_cases()
    assert sum(len(v) for v in sections.values()) == len(cases)
    for section, number, fields, category in cases:
        line = sections[section][number - 1]
        event = _event(_strip_header(line), category="firewall")
        decode_sonicwall(event, event.log)
        assert _fields(event) == fields, (section, number)
        assert event.decoder is not None and event.decoder.category == category
        assert _sonicwall_reference(event.log.encode()) == (fields, category)


_PROXY = (
    'id=fw sn=1 time="2024-01-01 00:00:00" fw=10.0.0.1 pri=6 c=1024 m=97 msg="Web site hit"'
    " n=1 src=10.0.0.5:51000:LAN dst=93.184.216.34:80:WAN proto=tcp/http op=GET"
    " result=200 dstname=www.example.org arg=/index.html"
)


def test_sonicwall_proxy_event() -> None:
    event = _event(_PROXY)
    decode_sonicwall(event, _PROXY)
    assert _fields(event) == {
        "status": "6",
        "id": "200",
        "srcip": "10.0.0.5",
        "srcport": "51000",
        "dstip": "93.184.216.34",
        "dstport": "80",
        "protocol": "tcp",
        "url": "www.example.org/index.html",
    }
    assert event.decoder is not None and event.decoder.category == "squid"


def test_sonicwall_proxy_needs_arg_at_the_end() -> None:
    log = _PROXY + " code=1"
    event = _event(log)
    decode_sonicwall(event, log)
    assert event.id == "97" and event.url is None
    assert event.decoder is not None and event.decoder.category == "squid"


@pytest.mark.parametrize(
    ("message_id", "action"),
    [
        ("98", "pass"),
        ("597", "pass"),
        ("598", "pass"),
        ("38", "drop"),
        ("36", "drop"),
        ("173", "drop"),
        ("174", "drop"),
        ("37", "drop"),
        ("537", "close"),
    ],
)
def test_sonicwall_firewall_actions(message_id: str, action: str) -> None:
    log = f"pri=5 c=2 m={message_id} src=1.2.3.4:5:A dst=6.7.8.9:10:B"
    event = _event(log)
    decode_sonicwall(event, log)
    assert event.action == action
    assert event.decoder is not None and event.decoder.category == "firewall"


def test_sonicwall_ids_category_wins_over_the_id() -> None:
    log = "pri=5 c=32 m=98 src=1.2.3.4:5:A dst=6.7.8.9:10:B"
    event = _event(log)
    decode_sonicwall(event, log)
    assert event.action is None
    assert event.decoder is not None and event.decoder.category == "ids"


def test_sonicwall_resets_the_type_to_syslog_first() -> None:
    event = _event("no priority here", category="firewall")
    decode_sonicwall(event, event.log)
    assert _fields(event) == {}
    assert event.decoder is not None and event.decoder.category == "syslog"


def test_sonicwall_protocol_copy() -> None:
    # hostname_map is tested for non-zero: a space is a "valid" character, so
    # the copy runs on to six characters.
    base = "pri=5 c=2 m=1 src=1.2.3.4:5:A dst=6.7.8.9:10:B "
    for tail, protocol in [
        ("proto=udp/5355", "udp"),
        ("proto=icmp note=x", "icmp n"),
        ("proto=/x", ""),
        ("proto=tcp", "tcp"),
        ("proto=", ""),
        ("proto=ééééé", "ééé"),
        ("proto=ab\x01cd", "ab"),
    ]:
        event = _event(base + tail)
        decode_sonicwall(event, event.log)
        assert event.protocol == protocol, tail
        assert len(event.protocol.encode()) <= SONICWALL_PROTO_MAX
    for tail in ["PROTO=tcp", " proto=tcp", "x proto=tcp"]:
        event = _event(base + tail)
        decode_sonicwall(event, event.log)
        assert event.protocol is None, tail


def test_sonicwall_patterns_ignore_ascii_case() -> None:
    log = "PRI=4 C=9 M=537 SRC=1.2.3.4:5:A DST=6.7.8.9:10:B"
    event = _event(log)
    decode_sonicwall(event, log)
    assert (event.status, event.id, event.action, event.srcip, event.dstport) == (
        "4",
        "537",
        "close",
        "1.2.3.4",
        "10",
    )


def test_sonicwall_takes_the_first_full_match() -> None:
    log = "pri=1 c=2 pri=3 c=4 m=5 src=1.1.1.1:1: dst=2.2.2.2:2: src=3.3.3.3:3:x dst=4.4.4.4:4:"
    event = _event(log)
    decode_sonicwall(event, log)
    assert _fields(event) == {
        "status": "3",
        "id": "5",
        "srcip": "3.3.3.3",
        "srcport": "3",
        "dstip": "4.4.4.4",
        "dstport": "4",
    }


def test_sonicwall_hostile_inputs_end() -> None:
    # Thousands of start literals with no space to end their \S+ run: each run
    # is measured once, so this stays linear.
    log = "pri=1 c=2 m=97 " + "src=1.1.1.1:1:" * 5000
    event = _event(log)
    decode_sonicwall(event, log)
    assert event.srcip is None
    log = (
        "pri=1 c=2 m=97 src=1.1.1.1:1:x dst=2.2.2.2:2:y proto=tcp "
        + "result=1 dstname="
        + "result=1 dstname=x" * 4000
        + " arg=a b"
    )
    event = _event(log)
    decode_sonicwall(event, log)
    assert event.id == "97" and event.url is None
    log = "pri=" * 20000 + "1 c=2 m=3 " + "1" * 100_000
    event = _event(log)
    decode_sonicwall(event, log)
    assert (event.status, event.id) == ("1", "3")


# -- OS_Regex reference (port of os_regex_compile.c / os_regex_execute.c) ---------------

_CLASS_CODES = {
    "d": 1,
    "w": 2,
    "s": 3,
    "p": 4,
    "(": 5,
    ")": 6,
    "\\": 7,
    "D": 8,
    "W": 9,
    "S": 10,
    ".": 11,
    "t": 12,
    "$": 13,
    "|": 14,
    "<": 15,
}
_BACKSLASH, _PAREN, _BEGIN_SET, _END_SET = 92, 40, 1, 2


def _in_class(code: int, ch: int) -> bool:
    """``regexmap[code][ch] == 1`` for the classes the SonicWall patterns use."""
    if code == 1:
        return 48 <= ch <= 57
    if code == 10:
        return ch != 32
    raise AssertionError(f"class {code} is not ported")


def _charmap(ch: int) -> int:
    return ch + 32 if 65 <= ch <= 90 else ch


def _compile(pattern: str) -> tuple[list[int], int]:
    """One alternative as OSRegex_Compile leaves it: (pattern bytes + padding, flags)."""
    out: list[int] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out += [_BACKSLASH, _CLASS_CODES[pattern[i + 1]]]
            i += 2
            continue
        out.append(_PAREN if c == ")" else _charmap(ord(c)))
        i += 1
    flags = 0
    if out and out[0] == ord("^"):
        out.pop(0)
        flags |= _BEGIN_SET
    if out and out[-1] == ord("$"):
        out.pop()
        flags |= _END_SET
    return [*out, 0, 0, 0, 0], flags


def _os_regex(pattern: str, subject: bytes) -> tuple[int, list[bytes]] | None:
    """OSRegex_Execute: (index of the returned pointer, substrings) or None."""
    pat, flags = _compile(pattern)
    closure = [k for k, b in enumerate(pat) if b == _PAREN]
    s = subject + b"\0\0"
    prts_str: list[int | None] = [None] * len(closure)

    def mark(at: int, value: int) -> None:
        if at in closure:
            prts_str[closure.index(at)] = value

    def is_plus(b: int) -> bool:
        return b in (ord("+"), ord("*"))

    def ends() -> bool:  # the END_SET test before each successful return
        return not (flags & _END_SET) or s[si] == 0

    r_code: int | None = None
    matched = 0
    si = 0
    st_error: int | None = None
    pt = 0
    pt_error: list[int | None] = [None] * 4
    pt_error_str: list[int] = [0] * 4
    while True:
        handled = False
        if pat[pt] == 0:
            if ends():
                return _result(r_code, prts_str, s)
        elif pat[pt] == _PAREN:
            mark(pt, si)
            pt += 1
            if pat[pt] == 0 and ends():
                return _result(r_code, prts_str, s)
        if pat[pt] == _BACKSLASH:
            if _in_class(pat[pt + 1], s[si]):
                next_pt = pt + 2
                if not is_plus(pat[next_pt]):
                    pt = next_pt
                    if st_error is None:
                        st_error = si
                    r_code = si
                    handled = True
                else:
                    if pat[next_pt] == ord("*"):
                        matched = 1
                    skip_r_code = False
                    if matched:
                        next_pt += 1
                        ok_here = -1
                        if pat[next_pt] == _PAREN:
                            next_pt += 1
                        if pat[next_pt] == 0:
                            ok_here = 1
                        elif pat[next_pt] == _BACKSLASH:
                            if _in_class(pat[next_pt + 1], s[si]):
                                ok_here = 0 if is_plus(pat[next_pt + 2]) else 2
                        elif pat[next_pt] == _charmap(s[si]):
                            matched = 0
                            ok_here = 1
                        if ok_here >= 0:
                            if pat[next_pt - 1] == _PAREN:
                                mark(next_pt - 1, si + 1 if s[si + 1] == 0 else si)
                            if pat[next_pt] == 0:
                                skip_r_code = True
                            else:
                                next_pt += ok_here
                                for k in range(4):
                                    if pt_error[k] is None:
                                        pt_error[k] = pt
                                        pt_error_str[k] = si
                                        break
                                pt = next_pt
                    else:
                        next_pt += 1
                        if pat[next_pt] == _PAREN:
                            mark(next_pt, si + 1 if s[si + 1] == 0 else si)
                            next_pt += 1
                        matched = 1
                    if not skip_r_code:
                        r_code = si
                    handled = True
            elif pat[pt + 3] == 0 and matched == 1 and r_code is not None:
                r_code = si
                if ends():
                    return _result(r_code, prts_str, s)
                matched = 0
            elif pat[pt + 2] == ord("+") and matched == 1:
                pt += 3
                si -= 1
                matched = 0
                handled = True
            elif pat[pt + 2] == ord("*"):
                pt += 3
                si -= 1
                r_code = si
                matched = 0
                handled = True
            else:
                matched = 0
        elif pat[pt] == _charmap(s[si]):
            pt += 1
            if st_error is None:
                st_error = si
            r_code = si
            handled = True
        if not handled:
            for k in (3, 2, 1, 0):
                restored = pt_error[k]
                if restored is not None:
                    pt, si = restored, pt_error_str[k]
                    pt_error[k] = None
                    handled = True
                    break
            if not handled:
                if flags & _BEGIN_SET:
                    return None
                if st_error is not None:
                    si = st_error
                    st_error = None
                pt = 0
                r_code = None
        si += 1
        if s[si] == 0:
            break
    while pat[pt] != _PAREN and pat[pt] != 0:
        if pat[pt] == _BACKSLASH and pat[pt + 2] == ord("*"):
            pt += 3
        else:
            break
    if pat[pt] == _PAREN:
        mark(pt, si)
    p = pt
    if pat[p] == _PAREN:
        p += 1
    if pat[p] == 0:
        return _result(r_code, prts_str, s)
    if pat[p] == _BACKSLASH and matched:
        p += 2
        if is_plus(pat[p]):
            p += 1
            if pat[p] == _PAREN:
                p += 1
            if pat[p] == 0:
                return _result(r_code, prts_str, s)
            if pat[p] == _BACKSLASH:
                p += 2
                if pat[p] == ord("*"):
                    p += 1
                    if pat[p] == _PAREN:
                        p += 1
                    if pat[p] == 0:
                        return _result(r_code, prts_str, s)
    if pat[p] == _BACKSLASH:
        p += 2
        if pat[p] == ord("*"):
            p += 1
            if pat[p] == _PAREN:
                p += 1
            if pat[p] == 0:
                return _result(r_code, prts_str, s)
    return None


def _result(
    r_code: int | None, prts_str: list[int | None], s: bytes
) -> tuple[int, list[bytes]] | None:
    if r_code is None:
        return None
    subs = []
    j = 0
    while j + 1 < len(prts_str):
        start, end = prts_str[j], prts_str[j + 1]
        if start is None or end is None:
            break
        subs.append(s[start:end])
        j += 2
    return r_code, subs


_REGID = "pri=(\\d) c=(\\d+) m=(\\d+) "
_REGEX = "src=(\\d+.\\d+.\\d+.\\d+):(\\d+):\\S+ dst=(\\d+.\\d+.\\d+.\\d+):(\\d+):"
_REGPROXY = "result=(\\d+) dstname=(\\S+) arg=(\\S+)$"


def test_os_regex_reference_sanity() -> None:
    assert _os_regex(_REGID, b"x pri=6 c=262144 m=98 msg") == (21, [b"6", b"262144", b"98"])
    assert _os_regex(_REGID, b"pri=6 c=1 m=2") is None
    assert _os_regex(_REGPROXY, b"result=200 dstname=h arg=/a") == (25, [b"200", b"h", b"/a"])
    assert _os_regex(_REGPROXY, b"result=200 dstname=h arg=/a b") is None


def _text(b: bytes) -> str:
    return b.decode("utf-8", "ignore")  # a cut character is dropped, as the module does


def _sonicwall_reference(log: bytes) -> tuple[dict[str, str], str]:
    """SonicWall_Decoder_Exec's flow over the OS_Regex port: (fields, category)."""
    fields: dict[str, str] = {}
    found = _os_regex(_REGID, log)
    if found is None:
        return fields, "syslog"
    end, subs = found
    fields["status"], fields["id"] = _text(subs[0]), _text(subs[2])
    category = subs[1][:7]
    found = _os_regex(_REGEX, log[end:])
    if found is None:
        return fields, "syslog"
    end2, subs = found
    fields["srcip"], fields["srcport"] = _text(subs[0]), _text(subs[1])
    fields["dstip"], fields["dstport"] = _text(subs[2]), _text(subs[3])
    tmp: int | None = None
    space = log.find(b" ", end + end2)
    if space >= 0:
        tmp = space + 1
        if log[tmp : tmp + 6] == b"proto=":
            tmp += 6
            proto = bytearray()
            while tmp < len(log) and log[tmp] not in (0, 1) and log[tmp] != ord("/"):
                proto.append(log[tmp])
                tmp += 1
                if len(proto) >= SONICWALL_PROTO_MAX:
                    break
            fields["protocol"] = _text(bytes(proto))
    message_id = fields["id"]
    if category == b"32":
        return fields, "ids"
    for ids, action in (("98 597 598", "pass"), ("38 36 173 174 37", "drop"), ("537", "close")):
        if message_id in ids.split():
            fields["action"] = action
            return fields, "firewall"
    if message_id != "97":
        return fields, "syslog"
    if tmp is None or tmp >= len(log):  # the C scanner would read past an empty subject
        return fields, "squid"
    found = _os_regex(_REGPROXY, log[tmp:])
    if found is None:
        return fields, "squid"
    _, subs = found
    fields["id"] = _text(subs[0])
    fields["url"] = _text(subs[1] + subs[2])
    return fields, "squid"


def _check_against_reference(log: str) -> None:
    event = _event(log)
    decode_sonicwall(event, log)
    assert event.decoder is not None
    assert (_fields(event), event.decoder.category) == _sonicwall_reference(log.encode()), log


_TOKENS = [
    "pri=",
    "PRI=",
    "pri=1",
    " c=",
    " C=",
    "c=",
    " m=",
    "m=",
    "src=",
    "SRC=",
    " dst=",
    "dst=",
    "proto=",
    "PROTO=",
    "result=",
    " dstname=",
    "dstname=",
    " arg=",
    "arg=",
    "1",
    "2",
    "7",
    "32",
    "97",
    "98",
    "537",
    "0",
    ".",
    ":",
    " ",
    "  ",
    "/",
    "x",
    "WAN",
    "é",
    "\x01",
    "tcp",
    "icmp",
    "1.2.3.4",
    "1.2.3.4:5:",
    ":80:",
    "=",
    "\t",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join))
def test_sonicwall_matches_reference_on_token_soup(log: str) -> None:
    _check_against_reference(log)


def _mostly(valid: list[str], invalid: list[str]) -> st.SearchStrategy[str]:
    """Valid pieces four times out of five, so generated lines reach the later steps."""
    return st.one_of(
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(valid),
        st.sampled_from(invalid),
    )


_PRI = _mostly(["0", "5", "7"], ["", "12", "x", "é"])
_NUM = _mostly(["0", "32", "262144", "4", "1"], ["", "x", "1x", "3 2"])
_MID = _mostly(["97", "98", "537", "36", "1197", "14"], ["", "x", "0097", "97x"])
_IP = _mostly(
    ["1.2.3.4", "10.0.0.255", "255.255.255.255", "0.0.0.0"],
    ["1.2.3", "1.2.3.4.5", "a.b.c.d", "1..2.3", "", "1.2.3.4:"],
)
_PORT = _mostly(["80", "5", "65535"], ["", "x", "8 0"])
_ZONE = _mostly(["WAN", "X0:host.example", "é", "X1:"], ["", " ", "a b"])
_TAIL = st.sampled_from(
    [
        "",
        " proto=tcp/80",
        ' proto=icmp note="x"',
        " proto=é/é",
        " srcMac=1 proto=udp",
        " proto=tcp result=200 dstname=h arg=/p",
        " result=404 dstname=a.b arg=/x?y=z",
        " result=1 dstname= arg=/",
        " result=2 dstname=h arg=/a b",
        " result=3 dstname=h arg=",
        " proto=tcpudpx result=5 dstname=h:8 arg=/é",
        " proto=",
        " result=6 dstname=h arg=/p result=7 dstname=i arg=/q",
    ]
)


@settings(max_examples=600, deadline=None)
@given(
    st.tuples(
        _PRI,
        _NUM,
        _MID,
        _IP,
        _PORT,
        _ZONE,
        _IP,
        _PORT,
        _ZONE,
        _TAIL,
        st.sampled_from(["", "id=fw sn=1 ", "pri=2 c=3 ", "src=9.9.9.9:9:z "]),
    )
)
def test_sonicwall_matches_reference_on_near_valid_lines(parts: tuple[str, ...]) -> None:
    pri, c, m, sip, sport, szone, dip, dport, dzone, tail, prefix = parts
    log = (
        f'{prefix}pri={pri} c={c} m={m} msg="x" src={sip}:{sport}:{szone} '
        f"dst={dip}:{dport}:{dzone}{tail}"
    )
    _check_against_reference(log)


# -- OSSECAlert_Decoder ---------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    id: int


@dataclass
class _Rules:
    by_id: dict[str, object] = field(default_factory=dict)

    def add(self, *ids: int) -> None:
        for rid in ids:
            self.by_id[str(rid)] = _Rule(rid)


_ALERT = (
    "ossec: Alert Level: 5; Rule: 5716 - SSHD authentication failed.; "
    "Location: (web01) 10.0.0.7->/var/log/secure; srcip: 192.0.2.44; user: admin;  "
    "Mar  2 10:00:00 web01 sshd[311]: Failed password for admin from 192.0.2.44"
)


def _ossec(rules: _Rules) -> Callable[[Event, str], None]:
    return make_ossec_alert_decoder(rules.by_id)


def test_ossec_alert_forwarded_alert() -> None:
    rules = _Rules()
    rules.add(5716)
    event = _event(_ALERT, location="/var/ossec/logs/alerts/alerts.log", category="ossec")
    event.hostname = "manager"
    _ossec(rules)(event, event.log)
    new_location = "/var/ossec/logs/alerts/alerts.log|(web01) 10.0.0.7->/var/log/secure"
    assert event.location == new_location
    assert event.hostname == new_location
    assert _fields(event) == {"srcip": "192.0.2.44", "dstuser": "admin"}
    original = "Mar  2 10:00:00 web01 sshd[311]: Failed password for admin from 192.0.2.44"
    assert event.full_log == original and event.log == original
    assert event.rule == _Rule(5716)
    assert event.decoder is not None and event.decoder.category == OSSEC_ALERT_CATEGORY


def test_ossec_alert_after_program_name_without_extras() -> None:
    rules = _Rules()
    rules.add(1002)
    log = "Alert Level:2; Rule: 1002 - Unknown problem.; Location: db->/var/log/messages;  oops"
    event = _event(log, location="agent->ossec")
    _ossec(rules)(event, log)
    assert event.location == "agent->ossec|db->/var/log/messages"
    assert (event.log, event.rule, _fields(event)) == ("oops", _Rule(1002), {})


def test_ossec_alert_rules_are_read_at_decode_time() -> None:
    rules = _Rules()
    decode = _ossec(rules)
    event = _event(_ALERT)
    decode(event, _ALERT)
    assert event.rule is None and event.location == "stdin"
    rules.add(5716)  # the engine fills the hash after the decoders are built
    event = _event(_ALERT)
    decode(event, _ALERT)
    assert event.rule == _Rule(5716)


@pytest.mark.parametrize(
    ("log", "location_changed"),
    [
        ("Alert level: 5; Rule: 5716 - x; Location: l;  log", False),  # case-sensitive
        ("ossec: Alert Level", False),  # no ';'
        ("Alert Level: 5 Rule 5716", False),
        ("Alert Level: 5; Rule:5716 - x; Location: l;  log", False),  # no space after ':'
        ("Alert Level: 5; Rule: 5716", False),  # no space after the id
        ("Alert Level: 5; Rule: 05716 - x; Location: l;  log", False),  # ids compare as text
        ("Alert Level: 5; Rule: 5716 - x, Location: l;  log", False),  # no ';' after the id
        ("Alert Level: 5; Rule: 5716 - x;Location: l;  log", False),
        ("Alert Level: 5; Rule: 5716 - x; Location: l  log", False),  # location never ends
        ("Alert Level: 5; Rule: 5716 - x; Location: l; srcip: 1.2.3.4", True),  # field never ends
        ("Alert Level: 5; Rule: 5716 - x; Location: l; ", True),
    ],
)
def test_ossec_alert_malformed(log: str, location_changed: bool) -> None:
    rules = _Rules()
    rules.add(5716)
    event = _event(log, location="here")
    _ossec(rules)(event, log)
    assert event.rule is None
    assert event.log == log and event.full_log == log
    assert event.location == ("here|l" if location_changed else "here")
    assert event.decoder is not None and event.decoder.category == OSSEC_ALERT_CATEGORY


def test_ossec_alert_partial_fields_stay() -> None:
    rules = _Rules()
    rules.add(7)
    log = "Alert Level: 1; Rule: 7 - x; Location: l; srcip: 9.9.9.9; user: u"
    event = _event(log)
    _ossec(rules)(event, log)
    assert _fields(event) == {"srcip": "9.9.9.9"} and event.rule is None


def test_ossec_alert_unknown_fields_and_spacing() -> None:
    rules = _Rules()
    rules.add(7)
    log = "Alert Level: 1; Rule: 7 - x; Location: l; other: 1; user: bob;     rest"
    event = _event(log)
    _ossec(rules)(event, log)
    assert (event.dstuser, event.log, event.srcip) == ("bob", "rest", None)
    log = "Alert Level: 1; Rule: 7 - x; Location: l;"  # nothing after: an empty log
    event = _event(log)
    _ossec(rules)(event, log)
    assert (event.log, event.full_log, event.rule) == ("", "", _Rule(7))


def test_ossec_alert_limits() -> None:
    rules = _Rules()
    rules.add(7)
    log = f"Alert Level: 1; Rule: 7 - x; Location: {'L' * 1000};  {'z' * 100_000}"
    event = _event(log, location="loc")
    _ossec(rules)(event, log)
    assert event.location == ("loc|" + "L" * 1000)[:OSSEC_LOCATION_MAX]
    assert event.log == "z" * OSSEC_LOG_MAX
    log = f"Alert Level: 1; Rule: 7 - x; Location: {'€' * 100};  {'ü' * 5000}"
    event = _event(log, location="loc")
    _ossec(rules)(event, log)
    assert event.location == "loc|" + "€" * ((OSSEC_LOCATION_MAX - 4) // 3)
    assert event.log == "ü" * (OSSEC_LOG_MAX // 2)


def test_ossec_alert_without_rules_only_sets_the_type() -> None:
    decode = PLUGIN_FACTORIES["OSSECAlert_Decoder"](_spec())
    event = _event(_ALERT)
    decode(event, _ALERT)
    assert (event.rule, event.location, _fields(event)) == (None, "stdin", {})
    assert event.decoder is not None and event.decoder.category == OSSEC_ALERT_CATEGORY


# -- registration and the decoder chain -----------------------------------------------


def _spec() -> Any:
    from trailwarden.rules.decoders import DecoderSpec
    from trailwarden.rules.source import Location

    return DecoderSpec(name="x", location=Location("test.xml", 1))


def test_factories_in_analysisd_order() -> None:
    assert list(PLUGIN_FACTORIES) == [
        "PF_Decoder",
        "SymantecWS_Decoder",
        "SonicWall_Decoder",
        "OSSECAlert_Decoder",
    ]
    spec = _spec()
    assert PLUGIN_FACTORIES["PF_Decoder"](spec) is decode_pf
    assert PLUGIN_FACTORIES["SymantecWS_Decoder"](spec) is decode_symantec_ws
    assert PLUGIN_FACTORIES["SonicWall_Decoder"](spec) is decode_sonicwall
    rules = _Rules()
    rules.add(5716)
    event = _event(_ALERT)
    plugin_factories(rules.by_id)["OSSECAlert_Decoder"](spec)(event, _ALERT)
    assert event.rule == _Rule(5716)


def _decoder_set(wazuh_ref: Path, names: list[str], rules: dict[str, object]) -> Any:
    from trailwarden.rules.decoders import DecoderSet, parse_decoders
    from trailwarden.rules.xmlload import parse_wazuh_xml

    plugins: dict[str, Any] = dict(plugin_factories(rules))
    plugins["JSON_Decoder"] = lambda spec: lambda event, text: None
    decoders = DecoderSet()
    problems: list[Any] = []
    for name in names:
        path = wazuh_ref / "decoders" / name
        doc = parse_wazuh_xml(path.read_text(), str(path))
        assert doc.problems == []
        for spec in parse_decoders(doc, plugins, problems):
            decoders.add(spec, problems)
    assert problems == []
    decoders.finish()
    return decoders


def test_through_the_stock_decoders(wazuh_ref: Path) -> None:
    """The plugins as the real decoder files wire them (program_name, prematch, parent)."""
    rules = _Rules()
    rules.add(5716)
    decoders = _decoder_set(
        wazuh_ref,
        ["0180-openbsd_decoders.xml", "0200-ossec_decoders.xml", "0330-symantec_decoders.xml"],
        rules.by_id,
    )

    event = _event(
        "Mar 30 15:47:05.522341 rule 4/(match) block in on lo0: 127.0.0.1.48784 > "
        "127.0.0.1.23: S 1381529123:1381529123(0) win 16384"
    )
    event.decoder = None
    event.program_name = "pf"
    decoders.decode(event)
    assert event.decoder is not None and event.decoder.name == "pf"
    assert event.decoder.category == "firewall"
    assert (event.action, event.srcport, event.dstport, event.protocol) == (
        "block",
        "48784",
        "23",
        "TCP",
    )

    event = _event("20070717,73559,1=5,11=2.3.4.5,10=userb,3=2,2=1")
    event.decoder = None
    decoders.decode(event)
    assert event.decoder is not None and event.decoder.name == "symantec-websecurity"
    assert (event.srcip, event.dstuser, event.id) == ("2.3.4.5", "userb", "3=2,2=1")

    # "ossec: Alert Level:" without a program name: the ossec root, then its child.
    event = _event(_ALERT, location="/var/ossec/logs/alerts/alerts.log")
    event.decoder = None
    decoders.decode(event)
    assert event.decoder is not None and event.decoder.name == "ossec"
    assert event.decoder.category == OSSEC_ALERT_CATEGORY
    assert event.rule == _Rule(5716) and event.dstuser == "admin"

    # With the program name pre-decoded, the ossec-alert root reads "Alert Level: ...".
    log = _ALERT.removeprefix("ossec: ")
    event = _event(log, location="loc")
    event.decoder = None
    event.program_name = "ossec"
    decoders.decode(event)
    assert event.decoder is not None and event.decoder.name == "ossec-alert"
    assert event.location == "loc|(web01) 10.0.0.7->/var/log/secure"
    assert event.rule == _Rule(5716)


# -- robustness ----------------------------------------------------------------------

_SAMPLES = [
    "Mar 30 15:32:33.483712 rule 2/(match) pass in on xl0: 1.2.3.4.6667 > 5.6.7.8.16290: P 1",
    "20070717,73614,1=5,11=1.2.3.4,1106=News,60=http://news/,10=userX,1000=2.5.4.2,2=27",
    _PROXY,
    _ALERT,
]
_DECODERS: list[Callable[[Event, str], None]] = [
    decode_pf,
    decode_symantec_ws,
    decode_sonicwall,
    make_ossec_alert_decoder({"5716": _Rule(5716)}),
]


@pytest.mark.parametrize("decode", _DECODERS)
def test_every_truncation_of_every_sample_is_safe(decode: Callable[[Event, str], None]) -> None:
    for sample in _SAMPLES:
        for cut in range(len(sample) + 1):
            event = _event(sample[:cut])
            decode(event, event.log)
            for name in STATIC:
                value = getattr(event, name)
                assert value is None or isinstance(value, str)


@pytest.mark.parametrize("decode", _DECODERS)
def test_huge_values_are_safe(decode: Callable[[Event, str], None]) -> None:
    big = "9" * 200_000
    for sample in _SAMPLES:
        for sep in (" ", ",", ":", ";", "="):
            log = sample.replace(sep, sep + big, 3)
            event = _event(log)
            decode(event, log)
            assert len(event.log) <= len(log)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("()pb: >.,=;10236uiAL \x01é\udcff")), max_size=80),
    st.sampled_from(range(len(_DECODERS))),
)
def test_arbitrary_text_never_raises(log: str, which: int) -> None:
    event = _event(log)
    _DECODERS[which](event, log)
