"""Pre-decoding against analysisd's OS_CleanMSG (src/analysisd/cleanevent.c).

The header cases are real lines from Wazuh's ruleset test suite wherever the
suite has that format. The other formats use the examples in OS_CleanMSG's own
comments, completed into whole lines. The corpus tests read every ``log N
pass`` line and every decoder from ../shared. They check that the program name
we extract is the one the expected decoder is keyed on.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from lxml import etree

from trailwarden.rules import predecode as predecode_module
from trailwarden.rules.predecode import (
    CACHED_LOCATION_CHARS,
    LOCATION_CACHE_SIZE,
    MAX_LOCATION_BYTES,
    MessageFormatError,
    PreDecoded,
    QueueMessage,
    hostname_for_event,
    manager_short_name,
    predecode,
    predecoder_hostname,
    split_queue_message,
)

# -- headers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    id: str
    message: str
    log: str  # what lf->log holds afterwards
    hostname: str | None
    program_name: str | None
    timestamp: str | None
    cut: bool = False  # the log ends before the message does (a NUL cut)


HEADERS = [
    Header(
        "syslog name[pid]: (sshd.ini)",
        "Feb  9 11:44:56 someserver sshd[1234]: error: Could not stat AuthorizedKeysCommand",
        "error: Could not stat AuthorizedKeysCommand",
        "someserver",
        "sshd",
        "Feb  9 11:44:56",
    ),
    Header(
        "syslog name: (su.ini)",
        "Apr 22 17:51:51 enigma su: dcid to root on /dev/ttyp1",
        "dcid to root on /dev/ttyp1",
        "enigma",
        "su",
        "Apr 22 17:51:51",
    ),
    Header(
        "syslog name: keeps the spaces after the first (sudo.ini)",
        "Apr 27 15:22:23 niban sudo:     dcid : TTY=pts/4 ; PWD=/home/dcid ; USER=root",
        "    dcid : TTY=pts/4 ; PWD=/home/dcid ; USER=root",
        "niban",
        "sudo",
        "Apr 27 15:22:23",
    ),
    Header(
        "syslog name[pid]: with no space after (test_expr_negation.ini)",
        "Dec 19 17:20:08 ubuntu test_expr_negation[12345]:test_action wazuh-agent123@192.168.0.2",
        "test_action wazuh-agent123@192.168.0.2",
        "ubuntu",
        "test_expr_negation",
        "Dec 19 17:20:08",
    ),
    Header(
        "syslog name[pid] with no colon (proftpd.ini)",
        "Jan 04 22:51:57 server proftpd[26169] server.example.net: Fatal: unable to open",
        "server.example.net: Fatal: unable to open",
        "server",
        "proftpd",
        "Jan 04 22:51:57",
    ),
    Header(
        "syslog [ID n fac.sev] dropped (sshd.ini)",
        "Aug 18 07:30:25 192.168.1.5 sshd[20247]: [ID 800047 auth.notice] Failed none for root",
        "Failed none for root",
        "192.168.1.5",
        "sshd",
        "Aug 18 07:30:25",
    ),
    Header(
        "syslog without hostname, name: (dovecot.ini)",
        "Jun 23 15:04:05 Info: imap-login: Login: user=<username>, method=PLAIN",
        "imap-login: Login: user=<username>, method=PLAIN",
        None,
        "Info",
        "Jun 23 15:04:05",
    ),
    Header(
        "syslog without hostname (pfsense.ini)",
        "Jan 22 18:34:00 filterlog: 65,,,0,vmx1,match,pass,out,4",
        "65,,,0,vmx1,match,pass,out,4",
        None,
        "filterlog",
        "Jan 22 18:34:00",
    ),
    Header(
        "syslog name[pid] not closed: analysisd puts the '[' back",
        "Dec 29 10:00:01 host p[12x] y",
        "p[12x] y",
        "host",
        None,
        "Dec 29 10:00:01",
    ),
    Header(
        "syslog hostname with a character outside the map",
        "Dec 29 10:00:01 h%st sshd: x",
        "h%st sshd: x",
        None,
        None,
        "Dec 29 10:00:01",
    ),
    Header(
        "syslog with nothing after the date",
        "Dec 29 10:00:01 host",
        "host",
        None,
        None,
        "Dec 29 10:00:01",
    ),
    Header(
        "syslog with an empty hostname",
        "Dec 29 10:00:01   sshd: x",
        "x",
        "",
        "sshd",
        "Dec 29 10:00:01",
    ),
    Header(
        "AIX |facility:severity name[pid]:",
        "Dec 29 10:00:01 aixhost auth|security:info sshd[12]: Accepted password",
        "Accepted password",
        "aixhost",
        "sshd",
        "Dec 29 10:00:01",
    ),
    Header(
        "AIX name: needs its space",
        "Dec 29 10:00:01 aixhost auth|security:info sshd: Accepted password",
        "Accepted password",
        "aixhost",
        "sshd",
        "Dec 29 10:00:01",
    ),
    Header(
        "AIX name[pid] not closed: the log ends at the '['",
        "Dec 29 10:00:01 aixhost auth|security:info sshd[12] Accepted",
        "auth|security:info sshd",
        "aixhost",
        "sshd",
        "Dec 29 10:00:01",
        cut=True,
    ),
    Header(
        "AIX name with no terminator runs to the end",
        "Dec 29 10:00:01 aixhost auth|security:info sshd msg",
        " msg",
        "aixhost",
        "sshd msg",
        "Dec 29 10:00:01",
    ),
    Header(
        "year Mmm dd hh:mm:ss; '->' is not a hostname (cisco_ios.ini)",
        "2019 May 06 09:28:12 vm-ubuntu16->10.0.0.16 May 6 07:28:11 vm-ubuntu16 fortinet",
        "vm-ubuntu16->10.0.0.16 May 6 07:28:11 vm-ubuntu16 fortinet",
        None,
        None,
        "2019 May 06 09:28:12",
    ),
    Header(
        "ISO 8601 with zone (fortiauth.ini)",
        '2021-07-08T11:01:06-03:00 XXX.XXX.XXX.XXX db[32167]:  category="Event"',
        ' category="Event"',
        "XXX.XXX.XXX.XXX",
        "db",
        "2021-07-08T11:01:06-03:00",
    ),
    Header(
        "ISO 8601 with microseconds (rsyslog)",
        "2009-05-22T09:36:46.214994-07:00 myhost sshd[1]: Accepted",
        "Accepted",
        "myhost",
        "sshd",
        "2009-05-22T09:36:46.214994-07:00",
    ),
    Header(
        "ISO 8601 with milliseconds",
        "2022-12-19T15:02:53.288+00:00 myhost sshd: Accepted",
        "Accepted",
        "myhost",
        "sshd",
        "2022-12-19T15:02:53.288+00:00",
    ),
    Header(
        "ISO 8601 with 'Z' is cut at a fixed offset (exchange.ini)",
        "2021-04-06T14:54:34.255Z,61d2c86f-f9bb-456d-88c0-3529172510ac,15,0,847,30,,Ecp",
        "f-f9bb-456d-88c0-3529172510ac,15,0,847,30,,Ecp",
        None,
        None,
        "2021-04-06T14:54:34.255Z,61d2c8",
    ),
    Header(
        "proftpd YYYY-MM-DD hh:mm:ss,mmm (proftpd.ini)",
        "2015-04-16 21:51:02,805 zuse proftpd[26189] zuse.domain.com (182.100.67.115): USER root",
        "zuse.domain.com (182.100.67.115): USER root",
        "zuse",
        "proftpd",
        "2015-04-16 21:51:02,805",
    ),
    Header(
        "macOS unified log (macos.ini)",
        "2023-01-23 03:22:26.410246-0800  localhost tccd[1030]: [com.apple.TCC:access] Update",
        "[com.apple.TCC:access] Update",
        "localhost",
        "tccd",
        "2023-01-23 03:22:26.410246-0800",
    ),
    Header(
        "xferlog",
        "Mon Apr 17 18:27:14 2006 1 64.160.42.130 5542 /home/user/f.txt b _ o r user ftp 0 * c",
        "1 64.160.42.130 5542 /home/user/f.txt b _ o r user ftp 0 * c",
        None,
        None,
        "Mon Apr 17 18:27:14 2006",
    ),
    Header(
        "snort",
        "01/28-09:13:16.240702  [**] [1:2003:8] SCAN Potential SSH Scan [**]",
        "[**] [1:2003:8] SCAN Potential SSH Scan [**]",
        None,
        None,
        "01/28-09:13:16.240702",
    ),
    Header(
        "suricata",
        "01/28/1979-09:13:16.240702  [**] [1:2001219:20] ET SCAN Potential SSH Scan [**]",
        "[**] [1:2001219:20] ET SCAN Potential SSH Scan [**]",
        None,
        None,
        "01/28/1979-09:13:16.240702",
    ),
    Header(
        # Recent 4.x trees read the suricata date only in messages of 28 bytes or
        # more; some say 26, which moves the log past the end of a 27-byte one.
        "suricata date with only a space after it is not a header",
        "01/28/1979-09:13:16.240702 ",
        "01/28/1979-09:13:16.240702 ",
        None,
        None,
        None,
    ),
    Header(
        "apache [Day Mon dd hh:mm:ss yyyy] (apache.ini)",
        "[Fri Dec 13 06:59:54 2013] [error] [client 12.34.65.78] PHP Notice:",
        "[error] [client 12.34.65.78] PHP Notice:",
        None,
        None,
        "Fri Dec 13 06:59:54 2013",
    ),
    Header(
        "OS X ASL: the log ends at the Message's ']'",
        "[Time 2006.12.28 15:53:55 UTC] [Facility auth] [Sender sshd] [PID 483] "
        "[Message error: PAM: Authentication failure for username from 192.168.0.2] "
        "[Level 3] [UID -2] [GID -2] [Host Hostname]",
        "error: PAM: Authentication failure for username from 192.168.0.2",
        "Hostname",
        "sshd",
        None,
        cut=True,
    ),
    Header(
        "OS X ASL without Message: the log ends at the Sender's ']'",
        "[Time 2006.11.02 14:02:11 UTC] [Facility auth] [Sender sshd] [PID 856]",
        " UTC] [Facility auth] [Sender sshd",
        None,
        "sshd",
        None,
        cut=True,
    ),
    Header(
        "OS X ASL keeps the first Sender and the first Message",
        "[Time 2006.11.02 14:02:11 UTC] [Sender a] [Message m1] [Sender b] [Message m2]",
        "m1",
        None,
        "a",
        None,
        cut=True,
    ),
    Header(
        "[ID n fac.sev] that ends the message leaves an empty log",
        "Dec 29 10:00:01 host su: [ID 123 auth.info]",
        "",
        "host",
        "su",
        "Dec 29 10:00:01",
    ),
    Header(
        "squid epoch (squid_rules.ini)",
        "1140701044.525   1231 192.168.1.201 TCP_DENIED/400 1536 GET ahmet - NONE/- text/html",
        "1231 192.168.1.201 TCP_DENIED/400 1536 GET ahmet - NONE/- text/html",
        None,
        None,
        "1140701044.525  ",
    ),
    Header(
        "squid epoch with a 7-digit elapsed time",
        "1140804070.368 1234567 192.168.1.1 TCP_MISS/200 512 GET http://example.com/",
        "1234567 192.168.1.1 TCP_MISS/200 512 GET http://example.com/",
        None,
        None,
        "1140804070.368",
    ),
    Header(
        "name: needs a space to be a program without a hostname",
        "Dec 29 10:00:01 name:x y",
        "name:x y",
        None,
        None,
        "Dec 29 10:00:01",
    ),
    Header(
        "AIX name[pid]: needs its space, else the log ends at the '['",
        "Dec 29 10:00:01 aixhost auth|security:info sshd[12]:Accepted",
        "auth|security:info sshd",
        "aixhost",
        "sshd",
        "Dec 29 10:00:01",
        cut=True,
    ),
    Header(
        "non-ASCII inside an ASL Message that ends early",
        "[Time 2006.11.02 14:02:11 UTC] [Sender sshd] [Message contraseña inválida] [Host h]",
        "contraseña inválida",
        "h",
        "sshd",
        None,
        cut=True,
    ),
    Header(
        "weekday first is not a header (vsftpd.ini)",
        'Wed Jul 27 18:32:27 2016 [pid 2] CONNECT: Client "10.11.12.13"',
        'Wed Jul 27 18:32:27 2016 [pid 2] CONNECT: Client "10.11.12.13"',
        None,
        None,
        None,
    ),
    Header(
        "apache 2.4 microseconds are not a header (apache.ini)",
        "[Tue Sep 30 11:30:13.262255 2014] [core:error] [pid 20101] AH00037: Symbolic link",
        "[Tue Sep 30 11:30:13.262255 2014] [core:error] [pid 20101] AH00037: Symbolic link",
        None,
        None,
        None,
    ),
    Header(
        "syslog PRI prefix is not a header (f5_big_ip.ini)",
        "<134>Sep 19 13:35:00 bigip-4.pme-ds.f5.com ASM:CEF:0|F5|ASM|11.3.0|",
        "<134>Sep 19 13:35:00 bigip-4.pme-ds.f5.com ASM:CEF:0|F5|ASM|11.3.0|",
        None,
        None,
        None,
    ),
    Header(
        "a date one character short of its length guard",
        "Dec 29 10:00:01 ",
        "Dec 29 10:00:01 ",
        None,
        None,
        None,
    ),
    Header("empty message", "", "", None, None, None),
    Header(
        "non-ASCII after the header",
        "Feb  9 11:44:56 someserver sshd[1234]: Contraseña inválida para ñandú",
        "Contraseña inválida para ñandú",
        "someserver",
        "sshd",
        "Feb  9 11:44:56",
    ),
    Header(
        "non-ASCII hostname is not a hostname",
        "Dec 29 10:00:01 hóst sshd: x",
        "hóst sshd: x",
        None,
        None,
        "Dec 29 10:00:01",
    ),
    Header(
        "offsets are UTF-8 byte offsets, not characters",
        "中 ab cd:ef:gh host prog: msg",  # '中' is 3 bytes: ' ' at bytes 3 and 6
        "msg",
        "host",
        "prog",
        "中 ab cd:ef:gh",
    ),
    Header(
        "'Mär' is tested as 'Mar' but the timestamp loses a byte",
        "Mär 02 17:30:52 host sshd[1]: x",
        "x",
        "host",
        "sshd",
        "Mär 02 17:30:5",
    ),
    Header(
        "a log offset inside a character moves to the next one",
        "01/28-09:13:16.240702 é[**] x",  # analysisd's log starts with é's 2nd byte
        "[**] x",
        None,
        None,
        "01/28-09:13:16.240702",
    ),
]


@pytest.mark.parametrize("case", HEADERS, ids=lambda case: case.id)
def test_header(case: Header) -> None:
    pre = predecode("stdin", case.message)
    assert pre.log_of(case.message) == case.log
    if case.cut:
        assert pre.log_end is not None
    else:
        assert pre.log_end is None
        assert pre.log_start == len(case.message) - len(case.log)
    assert pre.hostname == case.hostname
    assert pre.program_name == case.program_name
    assert pre.timestamp == case.timestamp
    assert (pre.agent_id, pre.location, pre.agent_name, pre.agent_ip) == (
        "000",
        "stdin",
        None,
        None,
    )


def test_header_is_independent_of_the_agent_location() -> None:
    message = HEADERS[0].message
    local = predecode("/var/log/secure", message)
    agent = predecode("[007] (web01) 10.1.2.3->/var/log/secure", message)
    assert (agent.log_start, agent.hostname, agent.program_name, agent.timestamp) == (
        local.log_start,
        local.hostname,
        local.program_name,
        local.timestamp,
    )
    assert hostname_for_event(agent, "manager") == "web01"  # not "someserver"


def test_invalid_utf8_bytes_survive() -> None:
    # A message decoded with surrogateescape carries its invalid bytes as lone
    # surrogates; offsets still line up and the fields stay printable.
    message = b"Dec 29 10:00:01 host sshd[1]: caf\xe9 \xff".decode("utf-8", "surrogateescape")
    pre = predecode("stdin", message)
    assert pre.log_of(message) == "caf\udce9 \udcff"
    assert (pre.hostname, pre.program_name) == ("host", "sshd")
    stamp = "Dec 29 1\udce9:00:01".encode("utf-8", "surrogateescape").decode(
        "utf-8", "surrogateescape"
    )
    pre = predecode("stdin", stamp + " host x: y")
    assert pre.timestamp == "Dec 29 1\ufffd:00:01"
    assert pre.log_of(stamp + " host x: y") == "y"


# -- JSON -----------------------------------------------------------------------


def test_json_queue_message_has_no_header(wazuh_ref: Path) -> None:
    raw = (wazuh_ref / "examples/4x-queue-message-cloudtrail-consolelogin-failure.txt").read_text()
    queued = split_queue_message(raw.rstrip("\n"))
    assert (queued.queue, queued.location) == ("1", "Wazuh-AWS")
    assert queued.message.startswith('{"integration": "aws"')
    pre = predecode(queued.location, queued.message)
    assert pre == PreDecoded(0, None, None, None, None, "000", "Wazuh-AWS", None, None)
    assert pre.log_of(queued.message) is queued.message
    # The no-header result is shared per location: the JSON path allocates nothing.
    assert predecode(queued.location, queued.message + " ") is pre


def _cloudtrail_records(cloudtrail_dir: Path) -> Iterator[dict[str, object]]:
    for path in sorted((cloudtrail_dir / "stratus_detonation_logs").glob("*.json")):
        yield from json.loads(path.read_text())


def test_real_cloudtrail_records_have_no_header(cloudtrail_dir: Path) -> None:
    count = 0
    for record in _cloudtrail_records(cloudtrail_dir):
        event = {"integration": "aws", "aws": dict(record, source="cloudtrail")}
        # As the wodle sends them (json.dumps), and compact (orjson).
        for message in (json.dumps(event), orjson.dumps(event).decode()):
            pre = predecode("[012] (agent-1) 10.0.0.7->cloudtrail", message)
            assert (pre.log_start, pre.log_end, pre.hostname, pre.program_name) == (
                0,
                None,
                None,
                None,
            )
            assert pre.timestamp is None
            count += 1
    assert count > 500


@pytest.mark.parametrize(
    "message",
    ['{"é": 1}', "{}", "{", '{"a":"b"}', '{"userAgent": "Mozilla/5.0 (X11; Linux)"}'],
)
def test_short_and_non_ascii_json_have_no_header(message: str) -> None:
    pre = predecode("Wazuh-AWS", message)
    assert pre.log_of(message) == message
    assert pre.timestamp is None


def test_json_whose_punctuation_lines_up_is_cut_as_analysisd_does() -> None:
    # ' ' at 3 and 6, ':' at 9 and 12, ' ' at 15: analysisd takes it for
    # "Mmm dd hh:mm:ss " and the JSON decoder then sees only the rest.
    message = '{"" :  "a:cd:ef g"}'
    pre = predecode("Wazuh-AWS", message)
    assert pre.timestamp == '{"" :  "a:cd:ef'
    assert pre.log_of(message) == 'g"}'
    assert (pre.hostname, pre.program_name) == (None, None)


# -- queue message and location -------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1:Wazuh-AWS:{}", QueueMessage("1", "Wazuh-AWS", "{}")),
        ("1:stdin:a:b: c", QueueMessage("1", "stdin", "a:b: c")),
        ("1::message", QueueMessage("1", "", "message")),
        ("1:loc:", QueueMessage("1", "loc", "")),
        (
            "1:[004] (winhost) 10.0.0.9->C|:\\logs\\app.log:hello",
            QueueMessage("1", "[004] (winhost) 10.0.0.9->C:\\logs\\app.log", "hello"),
        ),
        ("1:a||:b", QueueMessage("1", "a|", "b")),  # an even run of '|' escapes no ':'
        ("1:a|||:b:c", QueueMessage("1", "a|:b", "c")),
        ("1:a|xb:m", QueueMessage("1", "axb", "m")),
        ("8:syscheck:ab\0cd", QueueMessage("8", "syscheck", "ab")),  # a C string ends at NUL
    ],
)
def test_split_queue_message(raw: str, expected: QueueMessage) -> None:
    assert split_queue_message(raw) == expected


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("", "must start with '<queue>:'"),
        ("1", "must start with '<queue>:'"),
        ("12:loc:m", "must start with '<queue>:'"),
        ("1:location-without-message", "no ':' after its location"),
        ("1:x|:y", "no ':' after its location"),
    ],
)
def test_split_queue_message_rejects(raw: str, complaint: str) -> None:
    with pytest.raises(MessageFormatError, match=re.escape(complaint)):
        split_queue_message(raw)


def test_location_is_cut_at_analysisd_buffer_size() -> None:
    assert len(split_queue_message("1:" + "x" * 9000 + ":m").location) == MAX_LOCATION_BYTES
    # A cut inside a character keeps the whole characters before it.
    location = split_queue_message("1:x" + "é" * 5000 + ":m").location
    assert location == "x" + "é" * ((MAX_LOCATION_BYTES - 1) // 2)
    assert len(location.encode()) == MAX_LOCATION_BYTES - 1


@pytest.mark.parametrize(
    ("location", "agent_id", "after", "agent_name", "agent_ip"),
    [
        ("Wazuh-AWS", "000", "Wazuh-AWS", None, None),
        ("", "000", "", None, None),
        (
            "[001] (web01) 10.0.0.5->/var/log/secure",
            "001",
            "(web01) 10.0.0.5->/var/log/secure",
            "web01",
            "10.0.0.5",
        ),
        (
            "[002] (ip-172-31-1-2) any->Wazuh-AWS",
            "002",
            "(ip-172-31-1-2) any->Wazuh-AWS",
            "ip-172-31-1-2",
            None,
        ),
        ("[003]", "003", "", "", None),
        ("[004] x", "004", "x", "", None),
        ("[005] (open 1.2.3.4->x", "005", "(open 1.2.3.4->x", "", None),
        # An agentless location is local, but analysisd still reads an ip from it.
        ("(script) user@host->/tmp/x", "000", "(script) user@host->/tmp/x", None, "user@host"),
    ],
)
def test_agent_location(
    location: str, agent_id: str, after: str, agent_name: str | None, agent_ip: str | None
) -> None:
    pre = predecode(location, "hello")
    assert (pre.agent_id, pre.location, pre.agent_name, pre.agent_ip) == (
        agent_id,
        after,
        agent_name,
        agent_ip,
    )


def test_agent_location_without_bracket_is_rejected() -> None:
    with pytest.raises(MessageFormatError, match=re.escape("'[007 (web) 1.2.3.4->x'")):
        predecode("[007 (web) 1.2.3.4->x", "hello")


def test_location_cache_is_bounded() -> None:
    cache = predecode_module._without_header
    for i in range(LOCATION_CACHE_SIZE + 10):
        predecode(f"[{i}] (agent{i}) any->cloudtrail", "{}")
    assert cache.cache_info().currsize == LOCATION_CACHE_SIZE
    # A long location is parsed as usual but not kept.
    long_location = "[9] (agent9) 10.0.0.9->/" + "d" * CACHED_LOCATION_CHARS
    misses = cache.cache_info().misses
    assert predecode(long_location, "{}").agent_ip == "10.0.0.9"
    assert cache.cache_info().misses == misses


# -- hostname -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "message", "hostname"),
    [
        ("stdin", "Feb  9 11:44:56 someserver sshd[1234]: x", "someserver"),
        ("stdin", "Feb  9 11:44:56 h%st sshd[1234]: x", "manager"),
        ("Wazuh-AWS", '{"integration": "aws"}', "manager"),
        ("[001] (web01) 10.0.0.5->x", "Feb  9 11:44:56 someserver sshd[1234]: x", "web01"),
        ("[001] 10.0.0.5->x", "Feb  9 11:44:56 someserver sshd[1234]: x", ""),
        ("stdin", "Dec 29 10:00:01   sshd: x", ""),  # an empty hostname is still one
    ],
)
def test_hostname_for_event(location: str, message: str, hostname: str) -> None:
    assert hostname_for_event(predecode(location, message), "manager") == hostname


def test_manager_short_name() -> None:
    assert manager_short_name("wazuh-manager.example.com") == "wazuh-manager"
    assert manager_short_name("wazuh-manager") == "wazuh-manager"


@pytest.mark.parametrize(
    ("full_log", "hostname"),
    [
        ("Feb  9 11:44:56 someserver sshd[1234]: x", "someserver"),
        ("Dec 29 10:00:01 host", "host"),
        ("Dec 29 10:00:01 h%st:x y", "h%st:x"),  # any run of non-spaces
        ('{"integration": "aws"}', None),
        ("2019 May 06 09:28:12 host x", None),
        ("dec 29 10:00:01 host x", None),
        ("Mär 02 17:30:52 host x", None),
    ],
)
def test_predecoder_hostname(full_log: str, hostname: str | None) -> None:
    assert predecoder_hostname(full_log) == hostname


# -- the ruleset test suite -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgramName:
    """One root decoder's <program_name>, or None when it has none."""

    pattern: str
    kind: str  # osmatch, osregex or pcre2
    negate: bool

    def accepts(self, name: str) -> bool | None:
        """Whether analysisd would accept ``name``; None when this test cannot tell."""
        if self.kind == "osmatch":
            hit = _os_match(self.pattern, name)
        elif self.kind == "pcre2":
            hit = re.search(self.pattern, name) is not None
        else:
            return None  # OS_Regex is built and tested elsewhere
        return hit != self.negate


def _os_match(pattern: str, subject: str) -> bool:
    """OS_Match alternatives (spec 6.1), case-insensitive on ASCII."""
    subject = subject.lower()
    for alt in pattern.lower().split("|"):
        if len(alt) > 1 and alt[0] == "^" and alt[-1] == "$":
            hit = subject == alt[1:-1]
        elif alt[:1] == "^":
            hit = subject.startswith(alt[1:])
        elif alt[-1:] == "$":
            hit = subject.endswith(alt[:-1])
        else:
            hit = alt in subject
        if hit:
            return True
    return False


def _root_decoders(wazuh_ref: Path) -> dict[str, list[ProgramName | None]]:
    """Root decoders by name: what each one requires of the program name."""
    paths = sorted((wazuh_ref / "decoders").glob("*.xml"))
    paths += sorted((wazuh_ref / "testing/ruleset").glob("*_decoders.xml"))
    roots: dict[str, list[ProgramName | None]] = defaultdict(list)
    for path in paths:
        text = re.sub(r"<\?xml[^>]*\?>", "", path.read_text(encoding="utf-8"))
        tree = etree.fromstring(f"<root>{text}</root>".encode(), etree.XMLParser(recover=True))
        for decoder in tree.iter("decoder"):
            name = decoder.get("name")
            if name is None or decoder.find("parent") is not None:
                continue
            elements = decoder.findall("program_name")
            if not elements:
                roots[name].append(None)
                continue
            last = elements[-1]  # a later <program_name> replaces an earlier one
            roots[name].append(
                ProgramName(
                    last.text or "",
                    last.get("type", "osmatch"),
                    last.get("negate", "no") == "yes",
                )
            )
    return roots


def _pass_lines(wazuh_ref: Path) -> Iterator[tuple[str, str, str]]:
    """(ini file, expected decoder, log line) for every ``log N pass`` line."""
    for path in sorted((wazuh_ref / "testing/tests").glob("*.ini")):
        lines: list[str] = []
        decoder = ""
        for raw in [*path.read_text(encoding="utf-8").splitlines(), "[end]"]:
            if raw.startswith("["):
                for line in lines:
                    yield path.name, decoder, line
                lines, decoder = [], ""
            elif match := re.match(r"log \d+ pass\s*=(.*)", raw):
                lines.append(match.group(1).strip())
            elif match := re.match(r"decoder\s*=(.*)", raw):
                decoder = match.group(1).strip()


def test_program_name_is_what_the_expected_decoder_is_keyed_on(wazuh_ref: Path) -> None:
    # analysisd offers an event with a program name only the decoders that
    # have one (decoders_list.c OS_GetFirstOSDecoder), so the expected
    # decoder's <program_name> must accept the name we pre-decoded.
    roots = _root_decoders(wazuh_ref)
    checked = 0
    failures = []
    for ini, decoder, line in _pass_lines(wazuh_ref):
        keyed = [p for p in roots.get(decoder, []) if p is not None]
        if not keyed:
            continue
        name = predecode("stdin", line).program_name
        if name is None:
            if len(keyed) == len(roots[decoder]):
                failures.append((ini, decoder, None, line))
            continue
        verdicts = [p.accepts(name) for p in keyed]
        if False in verdicts and True not in verdicts and None not in verdicts:
            failures.append((ini, decoder, name, line))
        checked += 1
    assert failures == []
    assert checked > 550


def test_no_program_name_where_the_decoder_has_none(wazuh_ref: Path) -> None:
    # The other side of the same split: a decoder without <program_name> is
    # offered only events without one, so these lines must have none.
    roots = _root_decoders(wazuh_ref)
    checked = 0
    failures = []
    for ini, decoder, line in _pass_lines(wazuh_ref):
        kinds = roots.get(decoder)
        if not kinds or any(kind is not None for kind in kinds):
            continue
        pre = predecode("stdin", line)
        if pre.program_name is not None:
            failures.append((ini, decoder, pre.program_name, line))
        checked += 1
    assert failures == []
    assert checked > 1200


def test_every_pass_line_keeps_its_log_inside_the_message(wazuh_ref: Path) -> None:
    count = 0
    for _, _, line in _pass_lines(wazuh_ref):
        pre = predecode("stdin", line)
        log = pre.log_of(line)
        assert line[pre.log_start :].startswith(log)
        if pre.timestamp is not None:
            assert line.startswith(pre.timestamp) or line[1:].startswith(pre.timestamp)
        count += 1
    assert count == 1986
