"""client.keys: Wazuh's format, read and written with real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import trailwarden.common.keys as keys_module
from trailwarden.common.keys import (
    AgentKey,
    ClientKeys,
    KeysFileError,
    RemovedAgent,
    format_client_keys,
    new_agent_key,
    parse_client_keys,
    read_client_keys,
    write_client_keys,
)

KEY_1 = "8c5bfbb5ec3bd7c0b3e2c6c4d1a0e5f2a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4"
KEY_2 = "0d2f1b8e9a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e"

# What a manager's file looks like after enrolments, a removal without purge
# (`ID !name ip key`, OS_DeleteKey) and an older removal marked with '#'.
WAZUH_FILE = f"""001 web-1 any {KEY_1}
002 !db-1 10.0.0.7 {KEY_2}
003 ip-10-0-3-4.ec2.internal 10.0.3.0/24 {KEY_2}
# a comment line
 a line starting with a space is skipped too

007 #old-host any deadbeef
004 lb_2 2001:db8::/64 {KEY_1}
""".encode()


def wazuh_reads(data: bytes) -> list[tuple[str, str, str, str]]:
    """The active entries Wazuh 4.x ``OS_ReadKeys`` takes from a file (its
    logic restated, for checking that our output is what Wazuh expects)."""
    entries = []
    for line in data.decode("ascii").splitlines(keepends=True):
        if line.startswith(("#", " ")):
            continue
        agent_id, sep, rest = line.partition(" ")
        if not sep or rest.startswith(("#", "!")):
            continue
        name, sep1, rest = rest.partition(" ")
        ip, sep2, key = rest.partition(" ")
        if sep1 and sep2:
            entries.append((agent_id, name, ip, key.rstrip("\n")[:127]))
    return entries


def test_parse_a_wazuh_file() -> None:
    table = parse_client_keys(WAZUH_FILE, "client.keys")
    assert [a.agent_id for a in table] == ["001", "003", "004"]
    assert table.by_id("001") == AgentKey("001", "web-1", "any", KEY_1)
    assert table.by_name("lb_2") == AgentKey("004", "lb_2", "2001:db8::/64", KEY_1)
    assert table.by_id("002") is None and table.by_name("db-1") is None
    assert table.is_removed("002") and table.is_removed("007")
    assert not table.is_removed("001") and not table.is_removed("999")
    assert table.removed == (
        RemovedAgent("002", f"002 !db-1 10.0.0.7 {KEY_2}"),
        RemovedAgent("007", "007 #old-host any deadbeef"),
    )
    # Removed ids still count, as in Wazuh (the next id is never reused).
    assert table.next_id() == "008"
    assert table.wire_key("001") == KEY_1.encode()
    assert table.wire_key("002") is None
    assert len(table) == 3


def test_ip_rules_follow_wazuh() -> None:
    table = parse_client_keys(WAZUH_FILE, "client.keys")
    web, subnet, v6 = table.by_id("001"), table.by_id("003"), table.by_id("004")
    assert web is not None and subnet is not None and v6 is not None
    assert web.allows_ip("203.0.113.9")
    assert subnet.allows_ip("10.0.3.200") and not subnet.allows_ip("10.0.4.1")
    assert v6.allows_ip("2001:db8::42") and not v6.allows_ip("10.0.3.1")
    assert not subnet.allows_ip("not an address")
    single = AgentKey("009", "host", "192.0.2.5", KEY_1)
    assert single.allows_ip("192.0.2.5") and not single.allows_ip("192.0.2.6")


def test_write_then_read_roundtrip_with_mode_0600(tmp_path: Path) -> None:
    table = parse_client_keys(WAZUH_FILE, "client.keys")
    path = tmp_path / "client.keys"
    old_umask = os.umask(0)  # the mode must not depend on the umask
    try:
        write_client_keys(path, table)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_client_keys(path) == table
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_written_file_is_what_wazuh_reads(tmp_path: Path) -> None:
    table = parse_client_keys(WAZUH_FILE, "client.keys")
    path = tmp_path / "client.keys"
    write_client_keys(path, table)
    data = path.read_bytes()
    # Active agents first, then the removed lines verbatim, as OS_WriteKeys does.
    assert (
        data
        == (
            f"001 web-1 any {KEY_1}\n"
            f"003 ip-10-0-3-4.ec2.internal 10.0.3.0/24 {KEY_2}\n"
            f"004 lb_2 2001:db8::/64 {KEY_1}\n"
            f"002 !db-1 10.0.0.7 {KEY_2}\n"
            "007 #old-host any deadbeef\n"
        ).encode()
    )
    assert wazuh_reads(data) == [(a.agent_id, a.name, a.ip, a.key) for a in table]


def test_overwrite_tightens_permissions(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_bytes(b"")
    path.chmod(0o644)
    write_client_keys(path, ClientKeys([AgentKey("001", "a1", "any", KEY_1)]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_client_keys(path).by_id("001") is not None


def test_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "client.keys"
    target.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        write_client_keys(target, ClientKeys())
    assert [p.name for p in tmp_path.iterdir()] == ["client.keys"]


def test_enrol_remove_and_purge() -> None:
    table, first = ClientKeys().add_new_agent("web-1")
    table, second = table.add_new_agent("web-2", "10.1.2.3")
    assert (first.agent_id, second.agent_id) == ("001", "002")
    assert len(first.key) == 64 and int(first.key, 16) >= 0
    assert first.key != second.key
    removed = table.without_agent("001")
    assert removed.by_id("001") is None and removed.is_removed("001")
    assert removed.removed == (RemovedAgent("001", f"001 !web-1 any {first.key}"),)
    assert removed.next_id() == "003"
    purged = table.without_agent("001", purge=True)
    assert purged.removed == () and not purged.is_removed("001")
    # Wazuh can re-enrol the same name once the old entry is removed.
    again, third = removed.add_new_agent("web-1")
    assert third.agent_id == "003" and again.by_name("web-1") == third
    with pytest.raises(KeyError, match="no active agent with id 009"):
        table.without_agent("009")
    with pytest.raises(ValueError, match="duplicate agent name 'web-1'"):
        table.with_agent(AgentKey("005", "web-1", "any", KEY_1))
    with pytest.raises(ValueError, match="duplicate agent id 002"):
        table.with_agent(AgentKey("002", "web-9", "any", KEY_1))


def test_new_keys_look_like_wazuh_keys() -> None:
    key = new_agent_key()
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"001 web-1 any", "expected 'id name ip key', found 3 field(s)"),
        (b"001", "found 1 field(s)"),
        (b"abc web-1 any k", "agent id 'abc' must be 1 to 8 ASCII digits"),
        (b"123456789 web-1 any k", "1 to 8 ASCII digits"),
        (b"001 w any k", "agent name 'w' must be 2 to 128"),
        (b"001 web/1 any k", "agent name 'web/1'"),
        (b"001 " + b"n" * 129 + b" any k", "2 to 128 characters"),
        (b"001 web-1 10.0.0.300 k", "agent IP '10.0.0.300'"),
        (b"001 web-1 anywhere k", "agent IP 'anywhere'"),
        (b"001 web-1 any " + b"k" * 128, "key of 128 characters"),
        (b"001 web-1 any two words", "without spaces"),
        (b"001 web-1 any k\r", "carriage return"),
        (b"001 web-1 any k\xc3\xa9", "not ASCII"),
        (b"001 web-1 any " + b"k" * 3000, "line longer than 2046 bytes"),
    ],
)
def test_malformed_lines_name_file_and_line(line: bytes, message: str) -> None:
    data = f"002 good-agent any {KEY_1}\n".encode() + line + b"\n"
    with pytest.raises(KeysFileError) as caught:
        parse_client_keys(data, "/var/ossec/etc/client.keys")
    assert str(caught.value).startswith("/var/ossec/etc/client.keys:2: ")
    assert message in str(caught.value)
    assert caught.value.line == 2


def test_duplicates_point_at_the_first_use(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_bytes(
        f"001 web-1 any {KEY_1}\n002 web-2 any {KEY_1}\n002 web-3 any {KEY_2}\n".encode()
    )
    with pytest.raises(
        KeysFileError, match=r"client\.keys:3: agent id '002' already used on line 2"
    ):
        read_client_keys(path)
    path.write_bytes(f"001 web-1 any {KEY_1}\n\n005 web-1 any {KEY_2}\n".encode())
    with pytest.raises(KeysFileError, match=r":3: agent name 'web-1' already used on line 1"):
        read_client_keys(path)


def test_removed_lines_are_kept_even_when_odd() -> None:
    odd = b"12x !gone 1.2.3.4 k\xff y\n"
    table = parse_client_keys(odd, "client.keys")
    assert len(table) == 0 and table.removed[0].agent_id == "12x"
    assert format_client_keys(table) == odd
    assert table.next_id() == "001"


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "MAX_KEYS_FILE_BYTES", 100)
    path = tmp_path / "client.keys"
    path.write_bytes(f"001 web-1 any {KEY_1}\n002 web-2 any {KEY_1}\n".encode())
    with pytest.raises(KeysFileError, match="larger than 100 bytes"):
        read_client_keys(path)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_client_keys(tmp_path / "absent")


def test_agent_key_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="agent id"):
        AgentKey("", "web-1", "any", KEY_1)
    with pytest.raises(ValueError, match="key of 0 characters"):
        AgentKey("001", "web-1", "any", "")
