"""Decoder selection and extraction (DecodeEvent semantics)."""

from __future__ import annotations

import time

from ruleset_builder import build, build_ok

from trailwarden.rules.engine import Engine
from trailwarden.rules.event import Event

DECODERS = """
<decoder name="web">
  <prematch>^\\d+.\\d+.\\d+.\\d+ - </prematch>
</decoder>
<decoder name="web-second">
  <prematch>^\\d+.\\d+</prematch>
</decoder>
<decoder name="web-fields">
  <parent>web</parent>
  <prematch offset="after_parent">GET </prematch>
  <regex offset="after_prematch">^(\\S+) HTTP/\\S+" (\\d+)</regex>
  <order>url, status</order>
</decoder>
<decoder name="web-post">
  <parent>web</parent>
  <use_own_name>true</use_own_name>
  <prematch offset="after_parent">POST </prematch>
  <regex offset="after_prematch">^(\\S+) </regex>
  <order>url</order>
</decoder>
<decoder name="kv">
  <program_name>^kv$</program_name>
</decoder>
<decoder name="kv-chain">
  <parent>kv</parent>
  <regex>user=(\\w+) </regex>
  <order>user</order>
</decoder>
<decoder name="kv-chain">
  <parent>kv</parent>
  <regex>missing=(\\w+)</regex>
  <order>never</order>
</decoder>
<decoder name="kv-chain">
  <parent>kv</parent>
  <regex offset="after_regex">^id=(\\d+)</regex>
  <order>id</order>
</decoder>
<decoder name="kv-chain">
  <parent>kv</parent>
  <regex>src=(\\S+):(\\d+)</regex>
  <order>srcip, custom.port</order>
</decoder>
<decoder name="json-app">
  <prematch>^{"app":</prematch>
</decoder>
<decoder name="json-app-body">
  <parent>json-app</parent>
  <plugin_decoder>JSON_Decoder</plugin_decoder>
</decoder>
<decoder name="json-app-body">
  <parent>json-app</parent>
  <regex>"op":"(\\w+)"</regex>
  <order>action</order>
</decoder>
"""


def _decode(engine: Engine, message: str) -> Event:
    return engine.process(message, "stdin", time.time(), engine.new_state()).event


def test_first_root_wins_and_child_prematch_offsets() -> None:
    engine = build_ok(decoders=DECODERS)
    event = _decode(engine, '10.0.0.1 - - [x] "GET /index.html HTTP/1.1" 200 512')
    assert event.decoder is not None
    assert (event.decoder.name, event.decoder.parent) == ("web", "web")
    assert (event.url, event.status) == ("/index.html", "200")


def test_use_own_name_child_keeps_its_name() -> None:
    engine = build_ok(decoders=DECODERS)
    event = _decode(engine, '10.0.0.1 - - [x] "POST /login HTTP/1.1" 302 0')
    assert event.decoder is not None
    assert event.decoder.name == "web-post"
    assert event.url == "/login"


def test_root_matched_but_no_child_stays_on_the_root() -> None:
    engine = build_ok(decoders=DECODERS)
    event = _decode(engine, '10.0.0.1 - - [x] "DELETE /x HTTP/1.1" 200 0')
    assert event.decoder is not None and event.decoder.name == "web"
    assert event.url is None and event.field_count == 0


def test_program_name_list_and_regex_chain_with_after_regex() -> None:
    engine = build_ok(decoders=DECODERS)
    event = _decode(engine, "Dec 10 01:02:03 host kv[1]: user=alice id=42 src=10.1.1.1:5000")
    assert event.program_name == "kv"
    assert event.decoder is not None and event.decoder.name == "kv"
    # The second link does not match and is skipped; after_regex then continues
    # one character after the end of the first link's match (its last
    # character, the space); dynamic names keep their dots.
    assert event.dstuser == "alice"
    assert event.id == "42"
    assert event.srcip == "10.1.1.1"
    assert list(event.fields()) == [("custom.port", "5000")]


def test_events_with_a_program_name_only_try_program_name_decoders() -> None:
    engine = build_ok(decoders=DECODERS)
    event = _decode(engine, "Dec 10 01:02:03 host other[1]: 10.0.0.1 - - GET /x HTTP/1.1 200")
    assert event.decoder is None


def test_json_plugin_chained_with_a_regex() -> None:
    engine = build_ok(decoders=DECODERS)
    event = _decode(engine, '{"app":"x","op":"Delete","n":5,"tags":["a","b"],"none":null}')
    assert event.action == "Delete"
    assert event.find_field("APP") == "x"
    assert event.find_field("n") == "5"
    assert event.find_field("tags") == '["a", "b"]'
    assert event.find_field("none") == "null"


def test_decoder_problems_are_reported_with_lines() -> None:
    _, problems = build(decoders="""
<decoder name="a">
  <regex>(\\d+)</regex>
</decoder>
<decoder name="b">
  <parent>nobody</parent>
  <regex>x</regex><order>url</order>
</decoder>
<decoder name="c">
  <prematch>x</prematch>
  <plugin_decoder>Nope_Decoder</plugin_decoder>
</decoder>
""")
    text = [str(p) for p in problems]
    assert any(t.startswith("0100-test_decoders.xml:2: error: decoder 'a': a root decoder needs")
               for t in text), text
    assert any(t.startswith("0100-test_decoders.xml:5: error: decoder 'b': parent decoder "
                            "'nobody' is not defined") for t in text), text
    assert any(t.startswith("0100-test_decoders.xml:11: error: decoder 'c': unknown "
                            "plugin_decoder 'Nope_Decoder'") for t in text), text
