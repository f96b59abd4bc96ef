"""Build ``mitre_techniques.json``: the ATT&CK names the alerts show.

Not imported at run time. Run it when the ATT&CK release or the ruleset changes::

    python -m trailwarden.rules.mitre_build --stix enterprise-attack.json \\
        --rules ../shared/wazuh-ref/rules --out rules/mitre_techniques.json

The source is either an ATT&CK Enterprise STIX 2.x bundle (``--stix``, as
published in mitre/cti) or pySigma's generated table ``sigma/data/mitre_attack.py``
(``--pysigma``, read with ``ast``, never executed). Both keep each technique's
tactics in the order of its ``kill_chain_phases``, which is the order Wazuh's
MITRE database and so ``rule.mitre.tactic`` use.

The table holds every technique id named in a ``<mitre>`` block of the given
rule directories plus ``ALWAYS``; tactics are kept whole.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path
from typing import Any

# Ids the CloudTrail path must resolve even with a trimmed ruleset.
ALWAYS = ("T1078", "T1078.004", "T1110")

_MITRE_BLOCK_RE = re.compile(r"<mitre>(.*?)</mitre>", re.DOTALL)
_MITRE_ID_RE = re.compile(r"<(?:id|techniqueID)>\s*(T\d{4}(?:\.\d{3})?)\s*</")
# Tactic names are stable since ATT&CK v8; pySigma only gives short names.
_SMALL_WORDS = frozenset({"and", "or", "of", "the"})


def rule_technique_ids(rule_dirs: list[Path]) -> set[str]:
    ids = set(ALWAYS)
    for directory in rule_dirs:
        for path in sorted(directory.glob("*.xml")):
            text = path.read_text(encoding="utf-8", errors="replace")
            for block in _MITRE_BLOCK_RE.findall(text):
                ids.update(_MITRE_ID_RE.findall(block))
    return ids


def _title(short_name: str) -> str:
    words = short_name.split("-")
    return " ".join(w if i and w in _SMALL_WORDS else w.capitalize() for i, w in enumerate(words))


def from_pysigma(path: Path) -> tuple[str, dict[str, str], dict[str, tuple[str, list[str]]]]:
    """(version, tactic id -> name, technique id -> (name, tactic ids))."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            if isinstance(target, ast.Name):
                values[target.id] = ast.literal_eval(node.value)
    short_to_id = {short: tid for tid, short in values["mitre_attack_tactics"].items()}
    tactics = {tid: _title(short) for tid, short in values["mitre_attack_tactics"].items()}
    mapping: dict[str, list[str]] = values["mitre_attack_techniques_tactics_mapping"]
    techniques = {
        tid: (name, [short_to_id[s] for s in mapping.get(tid, [])])
        for tid, name in values["mitre_attack_techniques"].items()
    }
    return str(values["mitre_attack_version"]), tactics, techniques


def _external_id(obj: dict[str, Any]) -> str | None:
    for ref in obj.get("external_references", []):
        if ref.get("source_name") == "mitre-attack":
            return str(ref.get("external_id"))
    return None


def from_stix(path: Path) -> tuple[str, dict[str, str], dict[str, tuple[str, list[str]]]]:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    objects: list[dict[str, Any]] = bundle["objects"]
    version = "unknown"
    tactics: dict[str, str] = {}
    short_to_id: dict[str, str] = {}
    for obj in objects:
        if obj.get("type") == "x-mitre-collection":
            version = str(obj.get("x_mitre_version", version))
        if obj.get("type") == "x-mitre-tactic" and not obj.get("revoked"):
            tid = _external_id(obj)
            if tid:
                tactics[tid] = obj["name"]
                short_to_id[obj["x_mitre_shortname"]] = tid
    techniques: dict[str, tuple[str, list[str]]] = {}
    for obj in objects:
        if obj.get("type") != "attack-pattern" or obj.get("revoked"):
            continue
        tid = _external_id(obj)
        if not tid or (tid in techniques and obj.get("x_mitre_deprecated")):
            continue
        phases = [
            short_to_id[p["phase_name"]]
            for p in obj.get("kill_chain_phases", [])
            if p.get("kill_chain_name") == "mitre-attack" and p["phase_name"] in short_to_id
        ]
        techniques[tid] = (obj["name"], phases)
    return version, tactics, techniques


def build(
    source: tuple[str, dict[str, str], dict[str, tuple[str, list[str]]]],
    wanted: set[str],
    source_note: str,
) -> dict[str, Any]:
    version, tactics, techniques = source
    missing = sorted(wanted - techniques.keys())
    return {
        "attack_version": version,
        "source": source_note,
        "generated_by": "rules/mitre_build.py",
        "not_in_source": missing,
        "tactics": dict(sorted(tactics.items())),
        "techniques": {
            tid: [techniques[tid][0], techniques[tid][1]]
            for tid in sorted(wanted)
            if tid in techniques
        },
    }


def render(table: dict[str, Any]) -> str:
    """JSON with one tactic or technique per line, so updates diff well."""
    lines = ["{"]
    for key in ("attack_version", "source", "generated_by", "not_in_source"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(table[key], ensure_ascii=False)},")
    for key in ("tactics", "techniques"):
        entries = [
            f"    {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
            for k, v in table[key].items()
        ]
        lines.append(f"  {json.dumps(key)}: {{")
        lines.append(",\n".join(entries))
        lines.append("  }," if key == "tactics" else "  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--stix", type=Path, help="ATT&CK Enterprise STIX bundle")
    group.add_argument("--pysigma", type=Path, help="pySigma sigma/data/mitre_attack.py")
    parser.add_argument("--rules", type=Path, action="append", required=True)
    parser.add_argument("--note", default="", help="where the source came from")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    source = from_stix(args.stix) if args.stix else from_pysigma(args.pysigma)
    note = args.note or str(args.stix or args.pysigma)
    table = build(source, rule_technique_ids(args.rules), note)
    args.out.write_text(render(table), encoding="utf-8")
    print(
        f"{len(table['techniques'])} techniques (ATT&CK {table['attack_version']}),"
        f" not in source: {', '.join(table['not_in_source']) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
