"""The event's text helpers: ASCII-only lowering as analysisd's charmap does it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trailwarden.rules.event import Event, ascii_lower


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
