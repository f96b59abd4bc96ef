"""Finding and reading ruleset files the way analysisd does.

The rule engine takes the ruleset as text; this module is the I/O around it.
analysisd merges the ``.xml`` files of every rule (or decoder) directory, sorts
them by *basename* (``strcmp``), skips a basename already taken by an earlier
directory and drops excluded names. CDB lists are only usable when declared,
under the path the ruleset declares (``etc/lists/amazon/aws-eventnames``); here
a declared path maps to a real file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from trailwarden.rules.engine import RulesetSources

# The lists Wazuh's installer declares in ossec.conf (etc/templates/.../rules.template).
STOCK_LISTS: tuple[str, ...] = (
    "etc/lists/audit-keys",
    "etc/lists/amazon/aws-eventnames",
    "etc/lists/security-eventchannel",
    "etc/lists/malicious-ioc/malware-hashes",
    "etc/lists/malicious-ioc/malicious-ip",
    "etc/lists/malicious-ioc/malicious-domains",
)
STOCK_RULE_EXCLUDES: tuple[str, ...] = ("0215-policy_rules.xml",)
LISTS_PREFIX = "etc/lists/"


class RulesetFilesError(Exception):
    """A configured ruleset directory or list file cannot be read (the config's fault)."""


@dataclass(frozen=True, slots=True)
class RulesetLayout:
    decoder_dirs: tuple[Path, ...]
    rule_dirs: tuple[Path, ...]
    decoder_excludes: tuple[str, ...] = ()
    rule_excludes: tuple[str, ...] = ()
    # declared list path -> file holding it
    lists: Mapping[str, Path] = field(default_factory=dict)


def ordered_files(dirs: Iterable[Path], excludes: Iterable[str] = ()) -> list[Path]:
    """``.xml`` files of all dirs, sorted by basename; first directory wins a name."""
    files: list[Path] = []
    for directory in dirs:
        if not directory.is_dir():
            raise RulesetFilesError(f"ruleset directory not found: {directory}")
        files.extend(
            e for e in sorted(directory.iterdir()) if e.name.endswith(".xml") and e.is_file()
        )
    return order_by_basename(files, excludes)


def order_by_basename(files: Iterable[Path], excludes: Iterable[str] = ()) -> list[Path]:
    """analysisd's load order: by basename (strcmp); the first file of a name wins."""
    chosen: dict[str, Path] = {}
    excluded = set(excludes)
    for path in files:
        if path.name not in excluded and path.name not in chosen:
            chosen[path.name] = path
    return [chosen[name] for name in sorted(chosen)]


def read_files(
    decoder_files: Iterable[Path], rule_files: Iterable[Path], lists: Mapping[str, Path]
) -> RulesetSources:
    """Sources from explicit file lists (already in load order)."""
    return RulesetSources(
        [(str(p), _read(p)) for p in decoder_files],
        [(str(p), _read(p)) for p in rule_files],
        {declared: _read(path) for declared, path in lists.items()},
    )


def _read(path: Path) -> str:
    try:
        # Ruleset files are UTF-8; stray bytes are kept (surrogateescape) so a
        # pattern matches exactly the bytes written in the file.
        return path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise RulesetFilesError(f"cannot read {path}: {exc.strerror}") from exc


def read_sources(layout: RulesetLayout) -> RulesetSources:
    return read_files(
        ordered_files(layout.decoder_dirs, layout.decoder_excludes),
        ordered_files(layout.rule_dirs, layout.rule_excludes),
        layout.lists,
    )


def lists_from_dir(lists_dir: Path, declared: Iterable[str] | None = None) -> dict[str, Path]:
    """Map ``etc/lists/X`` to ``lists_dir/X``: every file below, or just the declared ones."""
    if declared is not None:
        out = {}
        for name in declared:
            if not name.startswith(LISTS_PREFIX):
                raise RulesetFilesError(f"list {name!r} must start with {LISTS_PREFIX}")
            path = lists_dir / name[len(LISTS_PREFIX) :]
            if path.is_file():
                out[name] = path
        return out
    return {
        LISTS_PREFIX + p.relative_to(lists_dir).as_posix(): p
        for p in sorted(lists_dir.rglob("*"))
        if p.is_file() and not p.name.endswith(".cdb")
    }


def stock_layout(
    wazuh_ruleset: Path,
    *,
    extra_rule_dirs: Iterable[Path] = (),
    extra_decoder_dirs: Iterable[Path] = (),
) -> RulesetLayout:
    """Wazuh 4.x's own ruleset, as an installed manager loads it.

    ``wazuh_ruleset`` holds ``rules/``, ``decoders/`` and ``lists/`` (a copy of
    Wazuh's ``ruleset/``). User directories come after, like ``etc/rules``.
    """
    return RulesetLayout(
        decoder_dirs=(wazuh_ruleset / "decoders", *extra_decoder_dirs),
        rule_dirs=(wazuh_ruleset / "rules", *extra_rule_dirs),
        rule_excludes=STOCK_RULE_EXCLUDES,
        lists=lists_from_dir(wazuh_ruleset / "lists", STOCK_LISTS),
    )


def default_layout() -> RulesetLayout:
    """Trailwarden's bundled ruleset (package data of trailwarden.rules)."""
    base = Path(str(resources.files("trailwarden.rules").joinpath("ruleset")))
    return RulesetLayout(
        decoder_dirs=(base / "decoders",),
        rule_dirs=(base / "rules",),
        lists=lists_from_dir(base / "lists"),
    )
