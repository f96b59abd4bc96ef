"""What the rest of the system needs to know about a rule or decoder after loading.

The compiled matchers live elsewhere (``compile``/``evaluate`` modules); these
frozen records carry the descriptive side that alert formatting, logtest and the
manager read: ids, levels, texts, groups, options.
"""

from __future__ import annotations

from dataclasses import dataclass

from trailwarden.rules.source import Location


@dataclass(frozen=True, slots=True)
class DecoderInfo:
    """The decoder an event was decoded with, as the alert's ``decoder`` shows it."""

    name: str  # after os_setdecoderids: a child reports its parent's name
    parent: str | None  # the parent decoder's name for child decoders
    own_name: str  # the name written in the XML (logtest shows it)
    category: str = "syslog"  # decoder <type>; rules' top-level category check
    accumulate: bool = False
    fts: tuple[str, ...] = ()
    ftscomment: str | None = None
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class MitreRef:
    """One ``<mitre>`` entry: old style ``<id>`` or new style tactic + technique."""

    technique_id: str
    tactic_id: str | None = None


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """Descriptive part of one rule, after ``overwrite`` has been applied."""

    id: int
    level: int  # 0..16
    description: str  # raw, before $(field) substitution
    group_string: str  # <group name=..> + <group> text, joined as analysisd does
    mitre: tuple[MitreRef, ...] = ()
    info: tuple[tuple[str, str], ...] = ()  # (type, text) of each <info>
    cve: str | None = None
    no_full_log: bool = False
    no_counter: bool = False
    log_alert: bool = True  # DO_LOGALERT: written to alerts.json / alerts.log
    mail: bool = False  # DO_MAILALERT
    frequency: int | None = None  # the frequency attribute, for context rules
    context: bool = False  # has an event search (if_matched_*), shows "frequency"
    location: Location | None = None

    @property
    def groups(self) -> list[str]:
        """Non-empty tokens of the group string that carry no compliance prefix."""
        return [t for t in self.group_string.split(",") if t and not _compliance_key(t)]


COMPLIANCE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("pci_dss_", "pci_dss"),
    ("cis_", "cis"),
    ("gdpr_", "gdpr"),
    ("gpg13_", "gpg13"),
    ("hipaa_", "hipaa"),
    ("nist_800_53_", "nist_800_53"),
    ("tsc_", "tsc"),
)


def _compliance_key(token: str) -> str | None:
    for prefix, key in COMPLIANCE_PREFIXES:
        if token.startswith(prefix):
            return key
    return None
