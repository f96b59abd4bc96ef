"""The ruleset Wazuh's test suite runs against, assembled as runtests.py does.

runtests.py copies ``testing/ruleset/test_*_rules.xml`` and
``test_*_decoders.xml`` into a live manager's ``etc/rules`` and
``etc/decoders`` (next to ``local_rules.xml`` / ``local_decoder.xml``), and
edits rule 60000 of ``0575-win-base_rules.xml`` to ``decoded_as json`` without
its ``<category>`` so Windows eventchannel events can be given as JSON. The
same assembly is done here in memory; nothing is copied out of ../shared.
"""

from __future__ import annotations

import re
from pathlib import Path

from trailwarden.manager.ruleset_files import (
    STOCK_LISTS,
    STOCK_RULE_EXCLUDES,
    lists_from_dir,
    order_by_basename,
    read_files,
)
from trailwarden.rules.engine import Engine, EngineOptions, RulesetSources
from trailwarden.rules.source import RulesetProblem

_TEST_RULES = re.compile(r"^test_(.*_)?rules\.xml$")
_TEST_DECODERS = re.compile(r"^test_(.*_)?decoders\.xml$")
_RULE_60000 = re.compile(r'(<rule id="60000"[^>]*>)(.*?)(</rule>)', re.DOTALL)


def _patch_60000(text: str) -> str:
    def edit(m: re.Match[str]) -> str:
        body = m.group(2)
        body = re.sub(r"<category>[^<]*</category>", "", body)
        body = re.sub(r"<decoded_as>[^<]*</decoded_as>", "<decoded_as>json</decoded_as>", body)
        return m.group(1) + body + m.group(3)

    patched, count = _RULE_60000.subn(edit, text)
    if count != 1:
        raise AssertionError("rule 60000 not found in 0575-win-base_rules.xml")
    return patched


def compat_sources(wazuh_ref: Path) -> RulesetSources:
    testing = wazuh_ref / "testing" / "ruleset"
    decoder_files = order_by_basename([
        *sorted((wazuh_ref / "decoders").glob("*.xml")),
        wazuh_ref / "etc" / "local_decoder.xml",
        *sorted(p for p in testing.iterdir() if _TEST_DECODERS.match(p.name)),
    ])
    rule_files = order_by_basename([
        *sorted((wazuh_ref / "rules").glob("*.xml")),
        wazuh_ref / "etc" / "local_rules.xml",
        *sorted(p for p in testing.iterdir() if _TEST_RULES.match(p.name)),
    ], STOCK_RULE_EXCLUDES)
    sources = read_files(decoder_files, rule_files,
                         lists_from_dir(wazuh_ref / "lists", STOCK_LISTS))
    rules = [(path, _patch_60000(text) if path.endswith("/0575-win-base_rules.xml") else text)
             for path, text in sources.rules]
    return RulesetSources(sources.decoders, rules, sources.lists)


def compat_engine(wazuh_ref: Path) -> tuple[Engine, list[RulesetProblem]]:
    return Engine.compile(compat_sources(wazuh_ref), EngineOptions(mode="logtest"))
