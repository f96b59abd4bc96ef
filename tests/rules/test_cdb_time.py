from __future__ import annotations

import pytest

from trailwarden.rules.cdb import ListLookup, Lookup, parse_list
from trailwarden.rules.timecond import TimeFormatError, parse_time_range, parse_weekdays


def test_list_parsing_first_definition_wins_and_quotes() -> None:
    entries, problems = parse_list('RunInstances:EC2\n"a:b":"c:d"\nnovalue\nRunInstances:dup\nk:\n',
                                   "x")
    assert not problems
    assert entries == {"RunInstances": "EC2", "a:b": "c:d", "k": ""}


@pytest.mark.parametrize(("lookup", "key", "expected"), [
    (Lookup.MATCH_KEY, "10.1.2.3", False),
    (Lookup.NOT_MATCH_KEY, "10.1.2.3", True),
    (Lookup.ADDRESS_MATCH_KEY, "10.1.2.3", True),
    (Lookup.ADDRESS_MATCH_KEY, "11.1.2.3", False),
    (Lookup.NOT_ADDRESS_MATCH_KEY, "11.1.2.3", True),
])
def test_lookups(lookup: Lookup, key: str, expected: bool) -> None:
    assert ListLookup(lookup, {"10.1.": "internal"}, None).test(key) is expected


def test_match_key_value_and_the_inverted_address_value_lookup() -> None:
    def check(value: str) -> bool:
        return value == "bad"

    entries = {"a": "bad", "10.": "bad", "11.": "good"}
    assert ListLookup(Lookup.MATCH_KEY_VALUE, entries, check).test("a")
    assert not ListLookup(Lookup.MATCH_KEY_VALUE, {"a": "good"}, check).test("a")
    inverted = ListLookup(Lookup.ADDRESS_MATCH_KEY_VALUE, entries, check)
    assert not inverted.test("10.0.0.1")  # value matches -> analysisd says false
    assert inverted.test("11.0.0.1")
    assert inverted.test("12.0.0.1")


def test_time_ranges() -> None:
    day = parse_time_range("9 am - 5:30 pm")
    assert day.contains("09:00") and day.contains("17:30") and not day.contains("17:31")
    night = parse_time_range("22:00 - 06:00")
    assert night.contains("23:00") and night.contains("05:59")
    assert not night.contains("06:00") and not night.contains("22:00")
    assert not parse_time_range("!08:00 - 18:00").contains("12:00")
    with pytest.raises(TimeFormatError):
        parse_time_range("25:00 - 26:00")


def test_weekdays() -> None:
    weekdays = parse_weekdays("weekdays")
    assert weekdays.contains(1) and not weekdays.contains(0)
    assert parse_weekdays("sat, sunday").contains(6)
    with pytest.raises(TimeFormatError):
        parse_weekdays("!monday")
