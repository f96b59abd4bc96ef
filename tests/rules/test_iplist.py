"""<srcip>/<dstip> lists: OS_IsValidIP parsing and OS_IPFoundList matching."""

from __future__ import annotations

import pytest

from trailwarden.rules.iplist import IpList, PatternError, parse_entry


def ips(*entries: str, negate: bool = False) -> IpList:
    lst = IpList()
    for entry in entries:
        lst = lst.add(entry)
    return lst.with_negate(negate)


CASES = [
    (("192.168.0.15",), "192.168.0.15", True),
    (("192.168.0.15",), "192.168.0.16", False),
    (("10.0.0.0/8",), "10.200.3.4", True),
    (("10.0.0.0/8",), "11.0.0.1", False),
    (("10.1.2.3/8",), "10.9.9.9", True),  # the network is address & mask
    (("192.168.1.0/255.255.255.0",), "192.168.1.77", True),
    (("192.168.1.0/255.255.255.0",), "192.168.2.1", False),
    (("0.0.0.0/0",), "8.8.8.8", True),
    (("::ffff:10.0.0.1",), "10.0.0.1", True),
    (("2001:db8::/32",), "2001:db8:1::5", True),
    (("2001:db8::/32",), "2001:db9::1", False),
    (("::1",), "::1", True),
    (("fe80::1/64",), "fe80::abcd", True),
    (("any",), "1.2.3.4", True),
    (("any",), "::1", True),
    # the value must be an address
    (("10.0.0.0/8",), "not-an-ip", False),
    (("10.0.0.0/8",), "010.0.0.1", False),
    (("10.0.0.0/8",), "", False),
    (("fe80::/16",), "fe80::1%eth0", False),
    # families never mix
    (("10.0.0.0/8",), "::ffff:10.0.0.1", False),
    (("::/0",), "10.0.0.1", False),
    # the lists are OR'd
    (("1.1.1.1", "2.2.2.2"), "2.2.2.2", True),
    # '!' turns the polarity negative for the rest of the list
    (("!10.0.0.0/8",), "10.1.1.1", False),
    (("!10.0.0.0/8",), "8.8.8.8", True),
    (("1.1.1.1", "!10.0.0.0/8"), "1.1.1.1", True),
    (("1.1.1.1", "!10.0.0.0/8"), "10.1.1.1", False),
    (("1.1.1.1", "!10.0.0.0/8"), "8.8.8.8", True),
    (("!10.0.0.0/8", "1.1.1.1"), "1.1.1.1", False),  # sticky polarity
]


@pytest.mark.parametrize(("entries", "value", "expected"), CASES)
def test_found_list(entries: tuple[str, ...], value: str, expected: bool) -> None:
    assert ips(*entries).test(value) is expected


def test_negate_attribute_is_xored_last() -> None:
    assert not ips("192.168.0.15", negate=True).test("192.168.0.15")
    assert ips("192.168.0.15", negate=True).test("172.115.14.241")
    # an unparsable value is "not found", so negate turns it into a pass
    assert ips("192.168.0.15", negate=True).test("garbage")


@pytest.mark.parametrize(
    "entry",
    [
        "256.1.1.1",
        "1.2.3",
        "10.0.0.0/33",
        "10.0.0.0/x",
        "2001:db8::/129",
        "1.2.3.4.5",
        "",
        "abc",
        "01.2.3.4",
        "1::2::3",
    ],
)
def test_invalid_entries(entry: str) -> None:
    with pytest.raises(PatternError, match=r"invalid IP entry|longer than"):
        parse_entry(entry)


def test_add_returns_a_new_list() -> None:
    base = IpList()
    one = base.add("1.1.1.1")
    assert base.entries == ()
    assert len(one.entries) == 1
    assert one.with_negate(True).negate and not one.negate
