"""The event's text helpers: ASCII-only lowering as analysisd's charmap does it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trailwarden.rules.event import Event, ascii_lower
from trailwarden.rules.json_decoder import decode_json


def _by_definition(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def test_ascii_lower_folds_only_a_to_z_over_every_code_point() -> None:
    # Lone surrogates included: a log decoded with surrogateescape carries them.
    every = "".join(chr(i) for i in range(0x110000))
    assert ascii_lower(every) == _by_definition(every)


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=200))
def test_ascii_lower_matches_the_definition(text: str) -> None:
    assert ascii_lower(text) == _by_definition(text)


def test_non_ascii_letters_keep_their_case() -> None:
    assert ascii_lower("ÉTÉ Straße ΣΊΣΥΦΟΣ ABC") == "ÉtÉ straße ΣΊΣΥΦΟΣ abc"


def test_lowered_log_follows_a_replaced_log() -> None:
    event = Event("Héllo WORLD", "loc", 0.0)
    assert event.lowered_log() == "héllo world"
    event.log = "NEW Ünïcode"
    assert event.lowered_log() == "new Ünïcode"


def test_kept_field_answers_follow_fields_added_later() -> None:
    # find_lowered keeps its answers; a field or block added afterwards must be seen.
    event = Event("log", "loc", 0.0)
    assert event.find_lowered("a.b") is None
    event.add_field("A.B", "first")
    assert event.find_lowered("a.b") == "first"
    event.add_field("a.b", "second")  # FindField: the first occurrence still wins
    assert event.find_lowered("a.b") == "first"
    assert event.find_lowered("c") is None
    decode_json(event, '{"c": "from json", "a": {"b": "later"}}')
    assert event.find_lowered("c") == "from json"
    assert event.find_lowered("a.b") == "first"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "a.b", "A.B", "b", "x.y.z", "X.y.Z"]), max_size=12),
       st.lists(st.sampled_from(["a", "a.b", "b", "x.y.z", "X.Y.Z", "q"]), max_size=12))
def test_kept_answers_equal_a_fresh_lookup(adds: list[str], probes: list[str]) -> None:
    event = Event("log", "loc", 0.0)
    for i, key in enumerate(adds):
        event.add_field(key, f"v{i}")
        for probe in probes:
            assert event.find_lowered(ascii_lower(probe)) == event.find_field(probe)
