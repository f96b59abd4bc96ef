"""XML decoders: loading them into analysisd's two decoder lists, and decoding.

Theory of operation
-------------------
analysisd keeps root decoders in two lists: those with a ``<program_name>`` and
those without. An event that pre-decoded a program name is tried against the
first list only, any other event against the second (``OS_GetFirstOSDecoder``).
Roots are tried in load order and the first whose program name and prematch
match wins; no other root is tried after that, even when none of its children
match. Children of a root are scanned for the first whose prematch matches (a
child without prematch is taken at once); then the chosen node's regex or plugin
runs, followed by its same-name siblings ("get_next" chains), each continuing
where the previous regex stopped when it asks for ``offset="after_regex"``.

A child decoder reports its parent's name unless ``<use_own_name>true``
(``os_setdecoderids``), which is also what ``<decoded_as>`` compares.

Offsets are kept as indexes into ``event.log``; as in analysisd, the position
after a prematch or regex skips one more character when it is not at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from trailwarden.rules.event import MAX_DYNAMIC_FIELDS, STATIC_ORDER_NAMES, Event
from trailwarden.rules.expression import Expression, ExprType, PatternError, parse_type
from trailwarden.rules.model import DecoderInfo
from trailwarden.rules.source import Location, RulesetProblem
from trailwarden.rules.xmlload import XmlDocument, XmlElement

# A plugin decoder reads text (the log or the part after an offset) into the event.
PluginFunc = Callable[[Event, str], None]
# Plugins are built per decoder, so that options such as json_null_field apply.
PluginFactory = Callable[["DecoderSpec"], PluginFunc]


class Offset:
    """Decoder offsets (decode-xml.c flags); plain ints: tested per event."""

    NONE: Final = 0
    AFTER_PARENT: Final = 1
    AFTER_PREMATCH: Final = 2
    AFTER_REGEX: Final = 4


_OFFSETS = {
    "after_parent": Offset.AFTER_PARENT,
    "after_prematch": Offset.AFTER_PREMATCH,
    "after_regex": Offset.AFTER_REGEX,
}

DECODER_TYPES = (
    "firewall",
    "ids",
    "web-log",
    "syslog",
    "squid",
    "windows",
    "host-information",
    "ossec",
)

# Order names that store into an event slot instead of a dynamic field (decode-xml.c).
_ORDER_STATIC = {name: attr for name, attr in STATIC_ORDER_NAMES.items() if name != "systemname"}

# Elements of <decoder>: the loader matches them case-insensitively like
# analysisd, except <type>, which analysisd compares with strcmp.
_DECODER_ELEMENTS = frozenset(
    {
        "parent",
        "regex",
        "prematch",
        "program_name",
        "ftscomment",
        "use_own_name",
        "plugin_decoder",
        "order",
        "accumulate",
        "fts",
        "json_null_field",
        "json_array_structure",
        "var",
    }
)


@dataclass(slots=True)
class DecoderSpec:
    """One <decoder> element after parsing, before it is placed in the lists."""

    name: str
    location: Location
    parent: str | None = None
    program_name: Expression | None = None
    prematch: Expression | None = None
    prematch_offset: int = Offset.NONE
    regex: Expression | None = None
    regex_offset: int = Offset.NONE
    order: list[str] = field(default_factory=list)
    plugin_name: str | None = None
    plugin: PluginFunc | None = None
    plugin_offset: int = Offset.NONE
    category: str = "syslog"
    use_own_name: bool = False
    accumulate: bool = False
    fts: list[str] = field(default_factory=list)
    ftscomment: str | None = None
    json_null_field: str = "string"
    json_array_structure: str = "array"
    get_next: bool = False
    info: DecoderInfo | None = None


@dataclass(slots=True)
class DecoderNode:
    spec: DecoderSpec
    children: list[DecoderNode] = field(default_factory=list)


# (order name -> event attribute or None for a dynamic field) per decoder.
def _compile_order(order: list[str]) -> list[tuple[str, str | None]]:
    return [(name, _ORDER_STATIC.get(name)) for name in order]


# Decoders analysisd registers in code (SetDecodeXML) for events of its own
# modules (rootcheck, syscheck/FIM, host information). Rules may name them in
# <decoded_as>; only those modules' events, which Trailwarden does not produce,
# are ever decoded as them.
BUILTIN_DECODER_NAMES = frozenset({
    "rootcheck", "syscheck_integrity_changed", "syscheck_deleted", "syscheck_new_entry",
    "hostinfo_modified", "hostinfo_new", "syscheck_registry_value_modified",
    "syscheck_registry_value_deleted", "syscheck_registry_value_added",
    "syscheck_registry_key_modified", "syscheck_registry_key_deleted",
    "syscheck_registry_key_added", "syscollector", "ciscat", "sca", "windows_eventchannel",
    "dbsync",
})


class DecoderSet:
    """The loaded decoders: two root lists and the per-node compiled steps."""

    def __init__(self) -> None:
        self.with_program: list[DecoderNode] = []
        self.without_program: list[DecoderNode] = []
        self.names: set[str] = set(BUILTIN_DECODER_NAMES)
        self._orders: dict[int, list[tuple[str, str | None]]] = {}

    # -- loading -------------------------------------------------------------

    def add(self, spec: DecoderSpec, problems: list[RulesetProblem]) -> None:
        """OS_AddOSDecoder: place a decoder under its parents or as a root."""
        self.names.add(spec.name)
        self._orders[id(spec)] = _compile_order(spec.order)
        if spec.parent is not None:
            added = False
            for root in (*self.with_program, *self.without_program):
                if root.spec.name == spec.parent:
                    if not _add_to_chain(root.children, spec, problems):
                        return
                    added = True
            if not added:
                problems.append(
                    RulesetProblem(
                        spec.location,
                        f"decoder '{spec.name}': parent decoder '{spec.parent}' is not defined "
                        "(it must be a root decoder loaded earlier)",
                    )
                )
            return
        roots = self.with_program if spec.program_name is not None else self.without_program
        if spec.regex_offset & Offset.AFTER_REGEX:
            problems.append(
                RulesetProblem(
                    spec.location,
                    f"decoder '{spec.name}': offset after_regex needs a previous regex",
                )
            )
            return
        roots.append(DecoderNode(spec))

    def finish(self) -> None:
        """os_setdecoderids: children report the parent's name unless use_own_name."""
        for root in (*self.with_program, *self.without_program):
            root.spec.info = _info(root.spec, None)
            for child in root.children:
                child.spec.info = _info(child.spec, root.spec)

    # -- decoding ------------------------------------------------------------

    def decode(self, event: Event) -> None:
        """DecodeEvent: choose a decoder and extract fields into ``event``."""
        program_name = event.program_name
        log = event.log
        end_of_log = len(log)
        roots = self.with_program if program_name is not None else self.without_program
        lowered: str | None = None  # the log does not change until a chain runs
        for node in roots:
            spec = node.spec
            pmatch = 0
            if program_name is not None:
                assert spec.program_name is not None
                if not spec.program_name.test(program_name):
                    continue
            prematch = spec.prematch
            if prematch is not None:
                if lowered is None:
                    lowered = event.lowered_log()
                # A literal the pattern needs and the log lacks: no match, no call.
                if prematch.case_insensitive:
                    prefix = prematch.required_prefix
                    if prefix is not None:
                        if not lowered.startswith(prefix):
                            continue
                    else:
                        needed = prematch.required_literal
                        if needed is not None and needed not in lowered:
                            continue
                end = prematch.match_end(log, 0, lowered)
                if end is None:
                    continue
                pmatch = end + 1 if end < end_of_log else end
            event.decoder = spec.info
            event.log_after_prematch = pmatch
            cmatch = pmatch
            if not node.children:
                chain = [node]
                start = 0
            else:
                children = node.children
                chosen = -1
                i = 0
                count = len(children)
                while i < count:
                    child = children[i].spec
                    if child.prematch is None:
                        chosen = i
                        break
                    llog = pmatch if child.prematch_offset & Offset.AFTER_PARENT else 0
                    if lowered is None:
                        lowered = event.lowered_log()
                    cend = child.prematch.match_end(log, llog, lowered)
                    if cend is not None:
                        cmatch = cend + 1 if cend < end_of_log else cend
                        event.decoder = child.info
                        event.log_after_parent = pmatch
                        event.log_after_prematch = cmatch
                        chosen = i
                        break
                    # A multi-regex chain is tried as one: skip its other links.
                    if child.get_next:
                        while i < count and children[i].spec.get_next:
                            i += 1
                    i += 1
                if chosen < 0:
                    return
                chain = children
                start = chosen
            self._run_chain(event, chain, start, pmatch, cmatch)
            return

    def _run_chain(
        self, event: Event, chain: list[DecoderNode], index: int, pmatch: int, cmatch: int
    ) -> None:
        log = event.log
        end_of_log = len(log)
        regex_prev: int | None = None
        count = len(chain)
        while index < count:
            spec = chain[index].spec
            if spec.plugin is not None:
                if spec.plugin_offset & Offset.AFTER_PARENT:
                    text = log[pmatch:]
                elif spec.plugin_offset & Offset.AFTER_PREMATCH:
                    text = log[cmatch:]
                else:
                    text = log
                spec.plugin(event, text)
            elif spec.regex is not None:
                offset = spec.regex_offset
                if offset & Offset.AFTER_PARENT:
                    llog = pmatch
                elif offset & Offset.AFTER_PREMATCH:
                    llog = cmatch
                elif offset & Offset.AFTER_REGEX:
                    llog = cmatch if regex_prev is None else regex_prev
                else:
                    llog = 0
                m = spec.regex.match(log, llog, event.lowered_log())
                if m is None:
                    if spec.get_next and index + 1 < count:
                        index += 1
                        continue
                    return
                regex_prev = m.end + 1 if m.end < end_of_log else m.end
                if event.is_full():
                    return
                order = self._orders[id(spec)]
                for (name, attr), value in zip(order, m.groups, strict=False):
                    if value is None:
                        break
                    if attr is None:
                        event.add_field(name, value)
                    else:
                        setattr(event, attr, value)
            else:
                return
            if spec.get_next and index + 1 < count:
                index += 1
            else:
                return


def _info(spec: DecoderSpec, parent: DecoderSpec | None) -> DecoderInfo:
    if parent is None or spec.use_own_name:
        name = spec.name
    else:
        name = parent.name
    return DecoderInfo(
        name=name,
        parent=parent.name if parent is not None else None,
        own_name=spec.name,
        category=spec.category,
        accumulate=spec.accumulate,
        fts=tuple(spec.fts),
        ftscomment=spec.ftscomment,
        location=spec.location,
    )


def _add_to_chain(
    children: list[DecoderNode], spec: DecoderSpec, problems: list[RulesetProblem]
) -> bool:
    """_OS_AddOSDecoder for a child: same-name siblings become a regex chain."""
    after_regex_ok = False
    for sibling in children:
        other = sibling.spec
        if other.name != spec.name:
            continue
        if (other.prematch is not None or other.regex is not None) and spec.regex_offset:
            after_regex_ok = True
        if spec.prematch is not None:
            problems.append(
                RulesetProblem(
                    spec.location,
                    f"decoder '{spec.name}': a repeated (multi-regex) decoder cannot have"
                    " a prematch",
                )
            )
            return False
        if spec.fts:
            problems.append(
                RulesetProblem(
                    spec.location, f"decoder '{spec.name}': a repeated decoder cannot have fts"
                )
            )
            return False
        # Same-name siblings form a chain when each has a regex or a plugin
        # (Wazuh's own ar_log_json_child chains a JSON plugin with PCRE2 regexes).
        if (other.regex is not None or other.plugin_name is not None) and (
            spec.regex is not None or spec.plugin_name is not None
        ):
            other.get_next = True
        else:
            problems.append(
                RulesetProblem(
                    spec.location,
                    f"decoder '{spec.name}': decoders sharing a name form a regex chain, so"
                    " each needs a <regex> or a <plugin_decoder>",
                )
            )
            return False
    if spec.regex_offset & Offset.AFTER_REGEX and not after_regex_ok:
        problems.append(
            RulesetProblem(
                spec.location,
                f"decoder '{spec.name}': offset after_regex needs an earlier same-name decoder",
            )
        )
        return False
    children.append(DecoderNode(spec))
    return True


# -- parsing <decoder> elements -----------------------------------------------


def _split_names(text: str) -> list[str]:
    """Split an <order>/<fts> list like analysisd: on ',' then the first word."""
    out = []
    for piece in text.split(","):
        word = piece.lstrip(" ")
        space = word.find(" ")
        if space >= 0:
            word = word[:space]
        out.append(word)
    return out


def parse_decoders(
    doc: XmlDocument,
    plugins: dict[str, PluginFactory],
    problems: list[RulesetProblem],
) -> list[DecoderSpec]:
    """Turn a decoders file's elements into specs; problems are appended."""
    specs: list[DecoderSpec] = []
    for element in doc.roots:
        loc = doc.location(element.line)
        if element.tag.lower() != "decoder":
            problems.append(
                RulesetProblem(
                    loc,
                    f"<{element.tag}> is not allowed here; "
                    "a decoders file holds <decoder> elements",
                )
            )
            continue
        spec = _parse_decoder(element, loc, plugins, problems)
        if spec is not None:
            specs.append(spec)
    return specs


def _expression(
    element: XmlElement,
    text: str,
    default: ExprType,
    what: str,
    loc: Location,
    problems: list[RulesetProblem],
) -> Expression | None:
    kind = parse_type(element.attr("type"), default)
    try:
        return Expression(kind, text)
    except PatternError as exc:
        problems.append(RulesetProblem(loc, f"invalid {what} pattern {text!r}: {exc}"))
        return None


def _parse_decoder(
    element: XmlElement,
    loc: Location,
    plugins: dict[str, PluginFactory],
    problems: list[RulesetProblem],
) -> DecoderSpec | None:
    if not element.attrs or element.attrs[0][0].lower() != "name" or len(element.attrs) > 1:
        problems.append(RulesetProblem(loc, 'a <decoder> takes exactly one attribute, "name"'))
        return None
    spec = DecoderSpec(name=element.attrs[0][1], location=loc)
    who = f"decoder '{spec.name}'"
    errors_before = len(problems)
    prematch_text: str | None = None
    prematch_el: XmlElement | None = None
    regex_text: str | None = None
    regex_el: XmlElement | None = None
    pname_text: str | None = None
    pname_el: XmlElement | None = None

    for child in element.children:
        tag = child.tag.lower()
        cloc = Location(loc.path, child.line)
        content = child.text
        if child.tag == "type":
            if content not in DECODER_TYPES:
                problems.append(RulesetProblem(cloc, f"{who}: invalid decoder type '{content}'"))
            spec.category = content
        elif tag == "parent":
            spec.parent = (spec.parent or "") + content
        elif tag in ("regex", "prematch"):
            offset_attr = child.attr("offset")
            offset: int = Offset.NONE
            if offset_attr is not None:
                if offset_attr not in _OFFSETS:
                    problems.append(RulesetProblem(cloc, f"{who}: invalid offset '{offset_attr}'"))
                    continue
                offset = _OFFSETS[offset_attr]
            for name, _ in child.attrs:
                if name.lower() not in ("offset", "type"):
                    problems.append(RulesetProblem(cloc, f"{who}: invalid attribute '{name}'"))
            if tag == "regex":
                if regex_text is not None and offset:
                    problems.append(
                        RulesetProblem(cloc, f"{who}: only the first <regex> may have an offset")
                    )
                if offset:
                    spec.regex_offset = offset
                regex_text = (regex_text or "") + content
                regex_el = child
            else:
                if prematch_text is not None and offset:
                    problems.append(
                        RulesetProblem(cloc, f"{who}: only the first <prematch> may have an offset")
                    )
                if offset:
                    spec.prematch_offset = offset
                prematch_text = (prematch_text or "") + content
                prematch_el = child
        elif tag == "program_name":
            pname_text = (pname_text or "") + content
            pname_el = child
        elif tag == "ftscomment":
            spec.ftscomment = content
        elif tag == "use_own_name":
            spec.use_own_name = content == "true"
        elif tag == "plugin_decoder":
            if content not in plugins:
                problems.append(
                    RulesetProblem(
                        cloc,
                        f"{who}: unknown plugin_decoder '{content}'"
                        f" (known: {', '.join(sorted(plugins))})",
                    )
                )
                continue
            spec.plugin_name = content
            offset_attr = child.attr("offset")
            if offset_attr is not None:
                if offset_attr not in ("after_parent", "after_prematch"):
                    problems.append(
                        RulesetProblem(
                            cloc, f"{who}: invalid plugin_decoder offset '{offset_attr}'"
                        )
                    )
                else:
                    spec.plugin_offset = _OFFSETS[offset_attr]
        elif tag == "order":
            names = _split_names(content)
            if len(names) > MAX_DYNAMIC_FIELDS:
                problems.append(RulesetProblem(cloc, f"{who}: <order> has too many fields"))
            elif any(not n for n in names):
                problems.append(RulesetProblem(cloc, f"{who}: empty field name in <order>"))
            else:
                spec.order = names
        elif tag == "fts":
            spec.fts = _split_names(content)
        elif tag == "accumulate":
            spec.accumulate = True
        elif tag == "json_null_field":
            if content not in ("discard", "string", "empty"):
                problems.append(
                    RulesetProblem(
                        cloc,
                        f"{who}: invalid json_null_field '{content}' (discard, string or empty)",
                    )
                )
            spec.json_null_field = "string" if content == "empty" else content
        elif tag == "json_array_structure":
            if content not in ("array", "csv"):
                problems.append(
                    RulesetProblem(
                        cloc, f"{who}: invalid json_array_structure '{content}' (array or csv)"
                    )
                )
            spec.json_array_structure = content
        elif tag == "var":
            continue
        else:
            problems.append(RulesetProblem(cloc, f"{who}: invalid element <{child.tag}>"))

    if prematch_text is not None and prematch_el is not None:
        spec.prematch = _expression(
            prematch_el,
            prematch_text,
            ExprType.OSREGEX,
            "prematch",
            Location(loc.path, prematch_el.line),
            problems,
        )
    if pname_text is not None and pname_el is not None:
        spec.program_name = _expression(
            pname_el,
            pname_text,
            ExprType.OSMATCH,
            "program_name",
            Location(loc.path, pname_el.line),
            problems,
        )
    if regex_text is not None and regex_el is not None:
        spec.regex = _expression(
            regex_el,
            regex_text,
            ExprType.OSREGEX,
            "regex",
            Location(loc.path, regex_el.line),
            problems,
        )

    if spec.plugin_name is not None:
        spec.plugin = plugins[spec.plugin_name](spec)
    if prematch_text is None and spec.parent is None and pname_text is None:
        problems.append(
            RulesetProblem(loc, f"{who}: a root decoder needs a <prematch> or <program_name>")
        )
    if (regex_text is None and (spec.fts or spec.order)) or (
        regex_text is not None and not spec.order
    ):
        problems.append(RulesetProblem(loc, f"{who}: <regex> and <order> go together"))
    if spec.regex_offset & Offset.AFTER_PARENT and spec.parent is None:
        problems.append(RulesetProblem(loc, f"{who}: offset after_parent without a <parent>"))
    if spec.regex_offset & Offset.AFTER_PREMATCH:
        if spec.parent is None:
            spec.regex_offset = Offset.AFTER_PARENT
        elif prematch_text is None:
            problems.append(
                RulesetProblem(loc, f"{who}: offset after_prematch without a <prematch>")
            )
    if spec.regex_offset & Offset.AFTER_REGEX and (spec.parent is None or regex_text is None):
        problems.append(
            RulesetProblem(loc, f"{who}: offset after_regex needs a <parent> and a <regex>")
        )
    if spec.prematch_offset and not (
        spec.prematch_offset & Offset.AFTER_PARENT and spec.parent is not None
    ):
        problems.append(
            RulesetProblem(
                loc, f"{who}: a <prematch> offset must be after_parent and needs a <parent>"
            )
        )
    if spec.plugin_name is not None and (regex_text is not None or spec.order):
        problems.append(
            RulesetProblem(loc, f"{who}: a plugin decoder cannot also have <regex>/<order>")
        )
    if spec.fts:
        for name in spec.fts:
            if name not in _FTS_STATIC and name not in spec.order:
                problems.append(
                    RulesetProblem(loc, f"{who}: <fts> field '{name}' is not in <order>")
                )
    if len(problems) > errors_before:
        return None
    return spec


_FTS_STATIC = frozenset(
    {
        "dstuser",
        "user",
        "srcuser",
        "srcip",
        "dstip",
        "id",
        "location",
        "data",
        "extra_data",
        "system_name",
        "name",
    }
)
