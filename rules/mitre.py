"""MITRE ATT&CK names for ``rule.mitre`` in alerts (analysisd ``to_json.c``).

analysisd resolves a rule's ``<mitre>`` ids against wazuh-db's MITRE database
when it writes the alert:

* old style (``<id>T1078</id>``): ``id`` lists the configured ids, ``tactic``
  the union of the found techniques' tactics in database order, ``technique``
  the found techniques' names;
* new style (``<tacticID>`` + ``<techniqueID>`` per block): a pair counts when
  the tactic is one of the technique's; ``id``/``technique`` list each found
  technique once, ``tactic`` each matched tactic once.

Unknown ids and tactics that are not the technique's are dropped with a
warning, and when no tactic is left the whole ``mitre`` key is omitted.

The table ships as ``mitre_techniques.json`` (built by ``mitre_build.py``; it
records the ATT&CK version it came from).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

import orjson

from trailwarden.rules.model import MitreRef

__all__ = ["MitreTable", "Technique", "default_mitre_table"]

_log = logging.getLogger(__name__)

_DATA_FILE = "mitre_techniques.json"


@dataclass(frozen=True, slots=True)
class Technique:
    id: str
    name: str
    tactics: tuple[str, ...]  # tactic ids, in the technique's kill-chain order


class MitreTable:
    """Technique and tactic lookups for one ATT&CK release."""

    __slots__ = ("attack_version", "_techniques", "_tactics")

    def __init__(
        self,
        techniques: Iterable[Technique],
        tactic_names: Mapping[str, str],
        *,
        attack_version: str,
    ) -> None:
        self.attack_version = attack_version
        self._techniques = {t.id: t for t in techniques}
        self._tactics = dict(tactic_names)

    @classmethod
    def from_json(cls, data: bytes | str) -> MitreTable:
        """Load the ``mitre_techniques.json`` format; a malformed table is our bug."""
        try:
            raw = orjson.loads(data)
            techniques = [
                Technique(tid, str(name), tuple(tactics))
                for tid, (name, tactics) in raw["techniques"].items()
            ]
            return cls(techniques, raw["tactics"], attack_version=str(raw["attack_version"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{_DATA_FILE}: malformed MITRE table ({exc}); rebuild it") from exc

    def technique(self, technique_id: str) -> Technique | None:
        return self._techniques.get(technique_id)

    def tactic_name(self, tactic_id: str) -> str | None:
        return self._tactics.get(tactic_id)

    def __len__(self) -> int:
        return len(self._techniques)

    def rule_mitre(
        self, refs: Iterable[MitreRef], warn: Callable[[str], None] | None = None
    ) -> dict[str, list[str]] | None:
        """The alert's ``rule.mitre`` object, or None when it is omitted."""
        refs = tuple(refs)
        if not refs:
            return None
        say = warn or _log.warning
        paired = [r for r in refs if r.tactic_id is not None]
        ids: list[str] = []
        tactics: list[str] = []
        names: list[str] = []
        if paired:
            for ref in paired:
                technique = self._techniques.get(ref.technique_id)
                if technique is None:
                    say(f"Mitre Technique ID '{ref.technique_id}' not found in database.")
                    continue
                if ref.tactic_id not in technique.tactics:
                    say(
                        f"Mitre Tactic ID '{ref.tactic_id}' is not a tactic of"
                        f" '{ref.technique_id}'."
                    )
                    continue
                tactic = self._tactics.get(ref.tactic_id or "", ref.tactic_id or "")
                if tactic not in tactics:
                    tactics.append(tactic)
                if technique.name not in names:
                    ids.append(technique.id)
                    names.append(technique.name)
        else:
            ids = [r.technique_id for r in refs]
            for ref in refs:
                technique = self._techniques.get(ref.technique_id)
                if technique is None:
                    say(f"Mitre Technique ID '{ref.technique_id}' not found in database.")
                    continue
                for tactic_id in technique.tactics:
                    tactic = self._tactics.get(tactic_id, tactic_id)
                    if tactic not in tactics:
                        tactics.append(tactic)
                names.append(technique.name)
        if not tactics:
            return None
        return {"id": ids, "tactic": tactics, "technique": names}


@cache
def default_mitre_table() -> MitreTable:
    """The table shipped with the package."""
    data = resources.files("trailwarden.rules").joinpath(_DATA_FILE).read_bytes()
    return MitreTable.from_json(data)
