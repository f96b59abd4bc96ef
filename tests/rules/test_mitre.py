"""The ATT&CK table and ``rule.mitre`` resolution."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from trailwarden.rules import mitre_build
from trailwarden.rules.mitre import MitreTable, Technique, default_mitre_table
from trailwarden.rules.model import MitreRef

VALID_ACCOUNTS_TACTICS = [
    "Defense Evasion",
    "Persistence",
    "Privilege Escalation",
    "Initial Access",
]


def small_table() -> MitreTable:
    return MitreTable(
        [
            Technique("T1078", "Valid Accounts", ("TA0005", "TA0003", "TA0004", "TA0001")),
            Technique("T1110", "Brute Force", ("TA0006",)),
            Technique("T1098", "Account Manipulation", ("TA0003", "TA0004")),
        ],
        {
            "TA0001": "Initial Access",
            "TA0003": "Persistence",
            "TA0004": "Privilege Escalation",
            "TA0005": "Defense Evasion",
            "TA0006": "Credential Access",
        },
        attack_version="test",
    )


def test_shipped_table_has_the_cloudtrail_ids_in_attack_order() -> None:
    table = default_mitre_table()
    for tid in ("T1078", "T1078.004", "T1110", "T1485", "T1530"):
        assert table.technique(tid) is not None, tid
    assert table.rule_mitre([MitreRef("T1078")]) == {
        "id": ["T1078"],
        "tactic": VALID_ACCOUNTS_TACTICS,
        "technique": ["Valid Accounts"],
    }
    assert table.rule_mitre([MitreRef("T1078.004")])["technique"] == ["Cloud Accounts"]  # type: ignore[index]
    assert table.tactic_name("TA0011") == "Command and Control"


def test_shipped_table_covers_every_mitre_id_of_the_ruleset(wazuh_ref: Path) -> None:
    table = default_mitre_table()
    data = json.loads((Path(mitre_build.__file__).parent / "mitre_techniques.json").read_text())
    assert data["attack_version"]
    wanted = mitre_build.rule_technique_ids([wazuh_ref / "rules", wazuh_ref / "testing/ruleset"])
    assert len(wanted) > 150
    missing = {tid for tid in wanted if table.technique(tid) is None}
    assert missing == set(data["not_in_source"])  # recorded, not silently lost
    for tid in wanted - missing:
        technique = table.technique(tid)
        assert technique is not None and technique.tactics
        assert all(table.tactic_name(t) for t in technique.tactics)


def test_old_style_lists_ids_unions_tactics_and_drops_unknown() -> None:
    warnings: list[str] = []
    result = small_table().rule_mitre(
        [MitreRef("T1098"), MitreRef("T9999"), MitreRef("T1078")], warnings.append
    )
    assert result == {
        "id": ["T1098", "T9999", "T1078"],  # every configured id
        "tactic": ["Persistence", "Privilege Escalation", "Defense Evasion", "Initial Access"],
        "technique": ["Account Manipulation", "Valid Accounts"],
    }
    assert warnings == ["Mitre Technique ID 'T9999' not found in database."]


def test_new_style_keeps_pairs_whose_tactic_belongs_to_the_technique() -> None:
    warnings: list[str] = []
    refs = [
        MitreRef("T1078", "TA0001"),
        MitreRef("T1078", "TA0003"),  # same technique again: listed once
        MitreRef("T1110", "TA0001"),  # not a tactic of T1110
        MitreRef("T1098", "TA0003"),  # tactic already listed
    ]
    assert small_table().rule_mitre(refs, warnings.append) == {
        "id": ["T1078", "T1098"],
        "tactic": ["Initial Access", "Persistence"],
        "technique": ["Valid Accounts", "Account Manipulation"],
    }
    assert warnings == ["Mitre Tactic ID 'TA0001' is not a tactic of 'T1110'."]


def test_nothing_resolved_omits_the_key() -> None:
    table = small_table()
    assert table.rule_mitre([]) is None
    assert table.rule_mitre([MitreRef("TA0001")], lambda _: None) is None  # a tactic given as <id>
    assert table.rule_mitre([MitreRef("T1110", "TA0005")], lambda _: None) is None


def test_from_json_rejects_a_malformed_table() -> None:
    with pytest.raises(ValueError, match="malformed MITRE table"):
        MitreTable.from_json(b'{"techniques": {"T1": "not a pair"}}')


def test_build_from_a_stix_bundle(tmp_path: Path) -> None:
    def ref(tid: str) -> list[dict[str, str]]:
        return [{"source_name": "mitre-attack", "external_id": tid}]

    def phase(name: str) -> dict[str, str]:
        return {"kill_chain_name": "mitre-attack", "phase_name": name}

    def tactic(tid: str, name: str, short: str) -> dict[str, object]:
        return {
            "type": "x-mitre-tactic",
            "name": name,
            "x_mitre_shortname": short,
            "external_references": ref(tid),
        }

    bundle = {
        "type": "bundle",
        "objects": [
            {"type": "x-mitre-collection", "x_mitre_version": "13.1"},
            tactic("TA0001", "Initial Access", "initial-access"),
            tactic("TA0003", "Persistence", "persistence"),
            {
                "type": "attack-pattern",
                "name": "Valid Accounts",
                "external_references": ref("T1078"),
                "kill_chain_phases": [phase("persistence"), phase("initial-access")],
            },
            {
                "type": "attack-pattern",
                "name": "Old",
                "revoked": True,
                "external_references": ref("T1110"),
            },
        ],
    }
    (tmp_path / "enterprise-attack.json").write_text(json.dumps(bundle))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.xml").write_text(
        "<group name='g'><rule id='1' level='1'><mitre><id>T1078</id></mitre></rule>"
        "<rule id='2' level='1'><mitre><tacticID>TA0001</tacticID>"
        "<techniqueID>T1078</techniqueID></mitre></rule></group>"
    )
    out = tmp_path / "table.json"
    code = mitre_build.main(
        [
            "--stix",
            str(tmp_path / "enterprise-attack.json"),
            "--rules",
            str(rules),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    table = MitreTable.from_json(out.read_bytes())
    assert table.attack_version == "13.1"
    assert table.technique("T1078") == Technique("T1078", "Valid Accounts", ("TA0003", "TA0001"))
    data = json.loads(out.read_text())
    assert data["not_in_source"] == ["T1078.004", "T1110"]  # ALWAYS ids this source lacks


def test_build_from_a_pysigma_table(tmp_path: Path) -> None:
    source = tmp_path / "mitre_attack.py"
    source.write_text(
        'mitre_attack_version: str = "18.0"\n'
        'mitre_attack_tactics = {"TA0006": "credential-access", "TA0011": "command-and-control"}\n'
        'mitre_attack_techniques = {"T1110": "Brute Force",'
        ' "T1071": "Application Layer Protocol"}\n'
        'mitre_attack_techniques_tactics_mapping = {"T1110": ["credential-access"],'
        ' "T1071": ["command-and-control"]}\n'
    )
    rules = tmp_path / "rules"
    rules.mkdir()
    out = tmp_path / "table.json"
    assert (
        mitre_build.main(["--pysigma", str(source), "--rules", str(rules), "--out", str(out)]) == 0
    )
    table = MitreTable.from_json(out.read_bytes())
    assert table.tactic_name("TA0011") == "Command and Control"
    assert table.technique("T1110") == Technique("T1110", "Brute Force", ("TA0006",))
    assert table.technique("T1071") is None  # not used by any rule
    assert re.search(r'"T1110": \["Brute Force", \["TA0006"\]\]', out.read_text())
