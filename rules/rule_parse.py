"""``<rule>`` elements to ``Rule`` objects, with analysisd's parsing rules.

Every element and attribute of Wazuh 4.x rules (rules.c ``Rules_OP_ReadRules``)
is accepted with the same quirks: repeated pattern elements are concatenated
without a separator, the ``type``/``negate`` of the last occurrence win, most
element names compare case-insensitively but some ``same_*``/``different_*``
names only in lower case, and so on. Problems are collected with ``file:line``;
a problem analysisd treats as fatal makes the rule invalid here (``None``), one
it only warns about is reported with severity "warning".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trailwarden.rules.cdb import ListLookup, Lookup
from trailwarden.rules.compiled_rules import COMPILED_RULES
from trailwarden.rules.expression import Expression, ExprType, PatternError, parse_type
from trailwarden.rules.iplist import IpList
from trailwarden.rules.model import MitreRef, RuleInfo
from trailwarden.rules.source import Location, RulesetProblem
from trailwarden.rules.timecond import (
    TimeFormatError,
    TimeRange,
    WeekdaySet,
    parse_time_range,
    parse_weekdays,
)
from trailwarden.rules.xmlload import XmlElement

# Each pattern piece analysisd concatenates is limited to this many bytes (loadmemory).
MAX_PATTERN_PIECE = 2048

# Static fields in the order of analysisd's field_offset[] table; the bit of a
# field in Rule.same_mask / different_mask is its index here.
CORRELATION_FIELDS: tuple[str, ...] = (
    "srcip",
    "id",
    "dstip",
    "srcport",
    "dstport",
    "srcuser",
    "dstuser",
    "protocol",
    "action",
    "url",
    "data",
    "extra_data",
    "status",
    "systemname",
    "srcgeoip",
    "dstgeoip",
    "location",
)
_BIT = {name: 1 << i for i, name in enumerate(CORRELATION_FIELDS)}

# same_* / different_* elements: (bit, needs exact lower-case name, sets SAME_EXTRAINFO)
_SAME: dict[str, tuple[int, bool, bool]] = {
    "same_source_ip": (_BIT["srcip"], False, False),
    "same_srcip": (_BIT["srcip"], False, False),
    "same_dstip": (_BIT["dstip"], False, True),
    "same_src_port": (_BIT["srcport"], False, True),
    "same_srcport": (_BIT["srcport"], False, True),
    "same_dst_port": (_BIT["dstport"], False, True),
    "same_dstport": (_BIT["dstport"], False, True),
    "same_protocol": (_BIT["protocol"], False, True),
    "same_action": (_BIT["action"], False, True),
    "same_id": (_BIT["id"], True, True),
    "same_url": (_BIT["url"], True, True),
    "same_data": (_BIT["data"], True, True),
    "same_extra_data": (_BIT["extra_data"], True, True),
    "same_status": (_BIT["status"], True, True),
    "same_system_name": (_BIT["systemname"], True, True),
    "same_srcgeoip": (_BIT["srcgeoip"], True, True),
    "same_dstgeoip": (_BIT["dstgeoip"], True, True),
    "same_location": (_BIT["location"], False, True),
    "same_srcuser": (_BIT["srcuser"], False, True),
    "same_user": (_BIT["dstuser"], False, True),
}
_DIFFERENT: dict[str, tuple[int, bool, bool]] = {
    "different_srcip": (_BIT["srcip"], True, True),
    "not_same_source_ip": (_BIT["srcip"], True, True),
    "different_dstip": (_BIT["dstip"], False, True),
    "different_src_port": (_BIT["srcport"], False, True),
    "different_srcport": (_BIT["srcport"], False, True),
    "different_dst_port": (_BIT["dstport"], False, True),
    "different_dstport": (_BIT["dstport"], False, True),
    "different_protocol": (_BIT["protocol"], True, True),
    "different_action": (_BIT["action"], True, True),
    "different_id": (_BIT["id"], True, True),
    "not_same_id": (_BIT["id"], True, True),
    "different_url": (_BIT["url"], True, True),
    "different_data": (_BIT["data"], True, True),
    "different_extra_data": (_BIT["extra_data"], True, True),
    "different_status": (_BIT["status"], True, True),
    "different_system_name": (_BIT["systemname"], True, True),
    "different_srcgeoip": (_BIT["srcgeoip"], True, True),
    "different_dstgeoip": (_BIT["dstgeoip"], True, True),
    "different_srcuser": (_BIT["srcuser"], False, True),
    "different_user": (_BIT["dstuser"], False, True),
    "not_same_user": (_BIT["dstuser"], False, True),
    "different_location": (_BIT["location"], False, True),
}

# Pattern options on static/pre-decoded values: element -> (default type, event attribute).
# <match>/<regex> test the log; <user> is handled specially (dstuser, else srcuser).
_PATTERN_OPTIONS: dict[str, tuple[ExprType, str]] = {
    "match": (ExprType.OSMATCH, "log"),
    "regex": (ExprType.OSREGEX, "log"),
    "program_name": (ExprType.OSMATCH, "program_name"),
    "id": (ExprType.OSMATCH, "id"),
    "system_name": (ExprType.OSMATCH, "systemname"),
    "protocol": (ExprType.OSMATCH, "protocol"),
    "action": (ExprType.STRING, "action"),
    "url": (ExprType.OSMATCH, "url"),
    "location": (ExprType.OSMATCH, "location"),
    "srcport": (ExprType.OSMATCH, "srcport"),
    "dstport": (ExprType.OSMATCH, "dstport"),
    "user": (ExprType.OSMATCH, "user"),
    "srcgeoip": (ExprType.OSMATCH, "srcgeoip"),
    "dstgeoip": (ExprType.OSMATCH, "dstgeoip"),
    "data": (ExprType.OSMATCH, "data"),
    "extra_data": (ExprType.OSMATCH, "extra_data"),
    "hostname": (ExprType.OSMATCH, "hostname"),
    "status": (ExprType.OSMATCH, "status"),
}

# <field name=...> may not name a static field (rules.c w_check_attr_field_name).
_STATIC_FIELD_NAMES = frozenset(
    {
        "srcip",
        "dstip",
        "srcgeoip",
        "dstgeoip",
        "srcport",
        "dstport",
        "user",
        "srcuser",
        "dstuser",
        "url",
        "id",
        "data",
        "extra_data",
        "status",
        "protocol",
        "system_name",
        "action",
    }
)

# <list field=...> names that read a static or pre-decoded value.
_LIST_STATIC = {
    "srcip": "srcip",
    "srcport": "srcport",
    "dstip": "dstip",
    "dstport": "dstport",
    "user": "user",
    "url": "url",
    "id": "id",
    "hostname": "hostname",
    "program_name": "program_name",
    "status": "status",
    "action": "action",
    "protocol": "protocol",
    "system_name": "systemname",
    "data": "data",
    "extra_data": "extra_data",
}

CATEGORIES = ("firewall", "ids", "syslog", "web-log", "squid", "windows", "ossec")

_OPTIONS = (
    "alert_by_email",
    "no_email_alert",
    "log_alert",
    "no_log",
    "no_ar",
    "no_full_log",
    "no_counter",
)

_IGNORE_STATIC = {
    "user": "dstuser",
    "srcip": "srcip",
    "dstip": "dstip",
    "id": "id",
    "location": "location",
    "data": "data",
    "name": "name",
}


@dataclass(slots=True)
class ListCondition:
    attr: str | None  # event attribute for static/pre-decoded values, None for a dynamic field
    field: str  # dynamic field name (or the static name, for messages)
    lookup: ListLookup


@dataclass(slots=True)
class Rule:
    """One rule as loaded: conditions, tree links, correlation and output options."""

    id: int
    level: int
    location: Location
    stored_level: int = 0  # analysisd's sort key: level*100, 9900 for level 0
    maxsize: int = 0
    frequency: int = 0  # internal: attribute - 2
    frequency_attr: int | None = None
    timeframe: int = 360
    ignore_time: int = 0
    noalert: bool = False
    overwrite: bool = False
    category: str = "syslog"
    decoded_as: str | None = None
    patterns: dict[str, Expression] = field(default_factory=dict)  # element -> expression
    fields: list[tuple[str, Expression]] = field(default_factory=list)
    srcip: IpList | None = None
    dstip: IpList | None = None
    time: TimeRange | None = None
    weekday: WeekdaySet | None = None
    compiled_rule: str | None = None
    check_diff: bool = False
    if_fts: bool = False
    lists: list[ListCondition] = field(default_factory=list)
    if_sid: str | None = None
    if_group: str | None = None
    if_level: str | None = None
    if_matched_sid: int = 0
    if_matched_group: Expression | None = None
    if_matched_regex: Expression | None = None
    context: bool = False
    global_frequency: bool = False
    same_mask: int = 0
    different_mask: int = 0
    same_extrainfo: bool = False
    same_fields: list[str] = field(default_factory=list)
    different_fields: list[str] = field(default_factory=list)
    description: str | None = None
    group_string: str = ""
    info: list[tuple[str, str]] = field(default_factory=list)
    cve: str | None = None
    mitre: list[MitreRef] = field(default_factory=list)
    mail: bool = False
    log_alert: bool = True
    no_ar: bool = False
    no_full_log: bool = False
    no_counter: bool = False
    ignore_fields: list[str] = field(default_factory=list)
    ckignore_fields: list[str] = field(default_factory=list)
    # Filled when the tree is built:
    search: str | None = None  # "sids" | "groups" | "events" for context rules
    keeps_sid_list: bool = False  # another rule correlates on this one (if_matched_sid)
    group_lists: list[int] = field(default_factory=list)  # ids of if_matched_group rules
    rule_info: RuleInfo | None = None

    def describe(self) -> RuleInfo:
        if self.rule_info is None:
            self.rule_info = RuleInfo(
                id=self.id,
                level=self.level,
                description=self.description or "",
                group_string=self.group_string,
                mitre=tuple(self.mitre),
                info=tuple(self.info),
                cve=self.cve,
                no_full_log=self.no_full_log,
                no_counter=self.no_counter,
                log_alert=self.log_alert,
                mail=self.mail,
                frequency=self.frequency_attr if self.context else None,
                context=self.search is not None,
                location=self.location,
            )
        return self.rule_info


@dataclass(slots=True)
class _Pending:
    """Pattern text gathered across repeated elements, compiled at the end."""

    text: str
    kind: ExprType
    negate: bool
    line: int


class RuleParser:
    """Parses the <rule> elements of one group; shared settings come from the loader."""

    def __init__(
        self,
        path: str,
        lists: dict[str, dict[str, str]],
        decoder_names: set[str],
        problems: list[RulesetProblem],
        *,
        log_alert_level: int = 3,
        email_alert_level: int = 12,
        default_timeframe: int = 360,
    ) -> None:
        self.path = path
        self.lists = lists
        self.decoder_names = decoder_names
        self.problems = problems
        self.log_alert_level = log_alert_level
        self.email_alert_level = email_alert_level
        self.default_timeframe = default_timeframe

    def _error(self, line: int, message: str) -> None:
        self.problems.append(RulesetProblem(Location(self.path, line), message))

    def _warn(self, line: int, message: str) -> None:
        self.problems.append(RulesetProblem(Location(self.path, line), message, "warning"))

    # -- attributes -----------------------------------------------------------

    def _attributes(self, element: XmlElement) -> Rule | None:
        line = element.line
        values: dict[str, str] = {}
        for name, value in element.attrs:
            lname = name.lower()
            if lname not in (
                "id",
                "level",
                "maxsize",
                "timeframe",
                "frequency",
                "accuracy",
                "noalert",
                "ignore",
                "overwrite",
            ):
                self._error(
                    line,
                    f"invalid rule attribute '{name}' (allowed: id, level, maxsize,"
                    " frequency, timeframe, accuracy, noalert, ignore, overwrite)",
                )
                return None
            values[lname] = value
        rid = values.get("id")
        if rid is None or not rid.isdigit() or len(rid) > 6:
            self._error(
                line, f"invalid or missing rule id {rid!r} (an integer of at most 6 digits)"
            )
            return None
        level_text = values.get("level")
        if level_text is None or not level_text.isdigit():
            self._error(line, f"rule {rid}: invalid or missing level {level_text!r}")
            return None
        level = int(level_text)
        if level > 16:
            self._error(line, f"rule {rid}: level {level} out of range 0..16")
            return None
        rule = Rule(
            id=int(rid),
            level=level,
            location=Location(self.path, line),
            timeframe=self.default_timeframe,
        )
        for key in ("maxsize", "timeframe", "ignore", "accuracy", "frequency"):
            text = values.get(key)
            if text is None:
                continue
            if not text.isdigit():
                self._error(line, f"rule {rid}: {key} must be an integer, got {text!r}")
                return None
        if "maxsize" in values:
            rule.maxsize = int(values["maxsize"][:4])
        if "timeframe" in values:
            rule.timeframe = int(values["timeframe"][:5])
        if "ignore" in values:
            rule.ignore_time = int(values["ignore"][:6])
        if "frequency" in values:
            freq = int(values["frequency"])
            if freq < 2 or freq > 9999:
                self._error(line, f"rule {rid}: frequency {freq} out of range 2..9999")
                return None
            rule.frequency = freq - 2
            rule.frequency_attr = freq
        accuracy = int(values["accuracy"][:4]) if "accuracy" in values else 1
        noalert = values.get("noalert")
        if noalert is not None:
            if noalert in ("0", "1"):
                rule.noalert = noalert == "1"
            else:
                self._warn(line, f"rule {rid}: invalid noalert value {noalert!r} (0 or 1); ignored")
        overwrite = values.get("overwrite")
        if overwrite is not None:
            if overwrite not in ("yes", "no"):
                self._error(line, f"rule {rid}: overwrite must be 'yes' or 'no', got {overwrite!r}")
                return None
            rule.overwrite = overwrite == "yes"
        stored = 99 if level == 0 else level
        rule.stored_level = stored * 100 if accuracy else stored
        rule.mail = level >= self.email_alert_level
        rule.log_alert = level >= self.log_alert_level
        return rule

    # -- the rule -------------------------------------------------------------

    def parse(self, element: XmlElement, group_name: str) -> Rule | None:
        """Parse one <rule>; None when analysisd would reject or skip it."""
        rule = self._attributes(element)
        if rule is None:
            return None
        rid = rule.id
        rule.group_string = group_name
        pending: dict[str, _Pending] = {}
        skip = False
        ok = True
        if not element.children:
            self._error(element.line, f"rule {rid} has no options")
            return None
        for child in element.children:
            tag = child.tag
            ltag = tag.lower()
            content = child.text
            line = child.line
            if len(content) > MAX_PATTERN_PIECE and ltag in _PATTERN_OPTIONS:
                self._error(line, f"rule {rid}: <{tag}> longer than {MAX_PATTERN_PIECE} bytes")
                ok = False
                continue
            if ltag in _PATTERN_OPTIONS:
                default, _ = _PATTERN_OPTIONS[ltag]
                kind = parse_type(child.attr("type"), default)
                self._check_type_attr(child, rid)
                previous = pending.get(ltag)
                text = content if previous is None else previous.text + content
                pending[ltag] = _Pending(text, kind, self._negate(child, rid), line)
            elif ltag == "decoded_as":
                if content not in self.decoder_names:
                    self._error(line, f"rule {rid}: unknown decoder '{content}' in <decoded_as>")
                    ok = False
                rule.decoded_as = content
            elif ltag == "cve":
                rule.cve = (rule.cve or "") + content
            elif ltag == "info":
                kind_attr = child.attr("type") or "text"
                if kind_attr not in ("text", "link", "cve", "osvdb"):
                    self._error(line, f'rule {rid}: invalid <info type="{kind_attr}">')
                    ok = False
                rule.info.append((kind_attr, content))
            elif ltag == "time":
                try:
                    rule.time = parse_time_range(content)
                except TimeFormatError as bad_time:
                    self._error(line, f"rule {rid}: {bad_time}")
                    ok = False
            elif ltag == "weekday":
                try:
                    rule.weekday = parse_weekdays(content)
                except TimeFormatError as bad_time:
                    self._error(line, f"rule {rid}: {bad_time}")
                    ok = False
            elif ltag == "group":
                rule.group_string += content
            elif ltag == "description":
                text = content.replace("\n", " ", 1)
                rule.description = (rule.description or "") + text
            elif ltag in ("srcip", "dstip"):
                target = rule.srcip if ltag == "srcip" else rule.dstip
                try:
                    updated = (target or IpList()).add(content)
                except ValueError as bad_ip:
                    self._error(line, f"rule {rid}: invalid <{tag}> {content!r}: {bad_ip}")
                    ok = False
                    continue
                updated = updated.with_negate(self._negate(child, rid))
                if ltag == "srcip":
                    rule.srcip = updated
                else:
                    rule.dstip = updated
            elif ltag == "field":
                name = child.attr("name")
                if name is None:
                    self._error(line, f"rule {rid}: <field> needs a name attribute")
                    ok = False
                    continue
                if name.lower() in _STATIC_FIELD_NAMES:
                    self._error(
                        line,
                        f'rule {rid}: <field name="{name}"> names a static field;'
                        f" use <{name}> instead",
                    )
                    ok = False
                    continue
                kind = parse_type(child.attr("type"), ExprType.OSREGEX)
                try:
                    rule.fields.append((name, Expression(kind, content, self._negate(child, rid))))
                except PatternError as bad_pattern:
                    self._error(
                        line, f'rule {rid}: invalid pattern in <field name="{name}">: {bad_pattern}'
                    )
                    ok = False
            elif ltag == "list":
                result = self._list(child, rid)
                if result is None:
                    ok = False
                elif result == "skip":
                    skip = True
                    break
                else:
                    assert isinstance(result, ListCondition)
                    rule.lists.append(result)
            elif ltag == "compiled_rule":
                if content not in COMPILED_RULES:
                    self._error(
                        line,
                        f"rule {rid}: unknown compiled rule '{content}' (known: "
                        f"{', '.join(sorted(COMPILED_RULES))})",
                    )
                    ok = False
                rule.compiled_rule = content
            elif ltag == "category":
                if content not in CATEGORIES:
                    self._error(line, f"rule {rid}: invalid category '{content}'")
                    ok = False
                rule.category = content
            elif ltag == "if_sid":
                rule.if_sid = (rule.if_sid or "") + content
            elif ltag == "if_level":
                if not content.isdigit():
                    self._warn(line, f"rule {rid}: invalid <if_level> {content!r}; rule skipped")
                    skip = True
                    break
                rule.if_level = (rule.if_level or "") + content
            elif ltag == "if_group":
                rule.if_group = (rule.if_group or "") + content
            elif ltag == "if_matched_regex":
                rule.context = True
                prev = pending.get("if_matched_regex")
                text = content if prev is None else prev.text + content
                pending["if_matched_regex"] = _Pending(text, ExprType.OSREGEX, False, line)
            elif ltag == "if_matched_group":
                rule.context = True
                prev = pending.get("if_matched_group")
                text = content if prev is None else prev.text + content
                pending["if_matched_group"] = _Pending(text, ExprType.OSMATCH, False, line)
            elif ltag == "if_matched_sid":
                rule.context = True
                if not content.isdigit():
                    self._warn(
                        line, f"rule {rid}: invalid <if_matched_sid> {content!r}; rule skipped"
                    )
                    skip = True
                    break
                rule.if_matched_sid = int(content)
            elif ltag in _SAME and (not _SAME[ltag][1] or tag == ltag):
                bit, _, extra = _SAME[ltag]
                rule.same_mask |= bit
                rule.same_extrainfo |= extra
            elif ltag in _DIFFERENT and (not _DIFFERENT[ltag][1] or tag == ltag):
                bit, _, extra = _DIFFERENT[ltag]
                rule.different_mask |= bit
                rule.same_extrainfo |= extra
            elif ltag in ("same_agent", "not_same_agent"):
                self._warn(line, f"rule {rid}: <{tag}> is deprecated and has no effect")
            elif ltag == "check_diff":
                rule.context = True
                rule.check_diff = True
            elif ltag == "if_fts":
                rule.if_fts = True
            elif ltag == "global_frequency":
                rule.global_frequency = True
            elif ltag == "same_field":
                rule.same_fields.append(content)
            elif ltag in ("not_same_field", "different_field"):
                rule.different_fields.append(content)
            elif ltag == "options":
                if not self._option(rule, content, line):
                    ok = False
            elif ltag == "ignore":
                fields = self._field_list(content, "ignore", rid, line)
                if fields is None:
                    ok = False
                else:
                    rule.ignore_fields = fields
            elif ltag == "check_if_ignored":
                fields = self._field_list(content, "check_if_ignored", rid, line)
                if fields is None:
                    ok = False
                else:
                    rule.ckignore_fields = fields
            elif ltag == "mitre":
                self._mitre(rule, child)
            else:
                self._error(line, f"rule {rid}: invalid option <{tag}>")
                ok = False

        if skip:
            return None
        if rule.if_sid is not None and (
            not rule.if_sid or any(c not in "0123456789, " for c in rule.if_sid)
        ):
            self._warn(element.line, f"rule {rid}: invalid <if_sid> {rule.if_sid!r}; rule skipped")
            return None
        if rule.description is None:
            self._error(element.line, f"rule {rid} has no <description>")
            return None
        has_context_opts = (
            rule.same_mask
            or rule.different_mask
            or rule.same_fields
            or rule.different_fields
            or rule.global_frequency
            or rule.frequency_attr is not None
        )
        if has_context_opts and not rule.context:
            self._error(
                element.line,
                f"rule {rid}: frequency/same_*/different_* options need an"
                " if_matched_sid, if_matched_group or if_matched_regex",
            )
            return None
        for tag, item in pending.items():
            try:
                expr = Expression(item.kind, item.text, item.negate)
            except PatternError as bad_pattern:
                self._error(
                    item.line, f"rule {rid}: invalid <{tag}> pattern {item.text!r}: {bad_pattern}"
                )
                ok = False
                continue
            if tag == "if_matched_regex":
                rule.if_matched_regex = expr
            elif tag == "if_matched_group":
                rule.if_matched_group = expr
            else:
                rule.patterns[tag] = expr
        if not rule.overwrite:
            if rule.if_matched_group is not None and not rule.if_sid and not rule.if_group:
                rule.if_group = pending["if_matched_group"].text
            if rule.if_matched_sid and not rule.if_sid and not rule.if_group:
                rule.if_sid = str(rule.if_matched_sid)
        if not ok:
            return None
        return rule

    # -- helpers --------------------------------------------------------------

    def _negate(self, element: XmlElement, rid: int) -> bool:
        value = element.attr("negate")
        if value is None:
            return False
        if value.lower() == "yes":
            return True
        if value.lower() != "no":
            self._warn(
                element.line, f"rule {rid}: invalid negate value {value!r} (yes or no); using no"
            )
        return False

    def _check_type_attr(self, element: XmlElement, rid: int) -> None:
        value = element.attr("type")
        if value is not None and value.lower() not in ("osregex", "osmatch", "pcre2"):
            self._warn(
                element.line,
                f"rule {rid}: invalid type {value!r} (osregex, osmatch or"
                " pcre2); using the default",
            )

    def _option(self, rule: Rule, content: str, line: int) -> bool:
        if content == "alert_by_email":
            rule.mail = True
        elif content == "no_email_alert":
            rule.mail = False
            # analysisd clears the bit with the mask 0xfff - X, which also drops
            # no_counter (0x1000) when it was set before.
            rule.no_counter = False
        elif content == "log_alert":
            rule.log_alert = True
        elif content == "no_log":
            rule.log_alert = False
            rule.no_counter = False
        elif content == "no_ar":
            rule.no_ar = True
        elif content == "no_full_log":
            rule.no_full_log = True
        elif content == "no_counter":
            rule.no_counter = True
        else:
            self._error(
                line, f"rule {rule.id}: invalid option '{content}' (one of {', '.join(_OPTIONS)})"
            )
            return False
        return True

    def _field_list(self, content: str, what: str, rid: int, line: int) -> list[str] | None:
        out = []
        for piece in content.split(","):
            word = piece.lstrip(" ")
            space = word.find(" ")
            if space >= 0:
                word = word[:space]
            if not word:
                self._error(line, f"rule {rid}: wrong <{what}> value {content!r}")
                return None
            out.append(word)
        return out

    def _list(self, element: XmlElement, rid: int) -> ListCondition | str | None:
        line = element.line
        lookup = Lookup.MATCH_KEY
        attr: str | None = None
        field_name: str | None = None
        check_value: Expression | None = None
        for name, value in element.attrs:
            lname = name.lower()
            if lname == "lookup":
                try:
                    lookup = Lookup(value.lower())
                except ValueError:
                    self._error(line, f'rule {rid}: invalid list lookup="{value}"')
                    return None
            elif lname == "field":
                static = _LIST_STATIC.get(value.lower())
                if static is not None:
                    attr, field_name = static, value
                else:
                    word = value.lstrip(" ")
                    space = word.find(" ")
                    field_name = word if space < 0 else word[:space]
            elif lname == "check_value":
                try:
                    check_value = Expression(ExprType.OSMATCH, value)
                except PatternError as exc:
                    self._error(line, f"rule {rid}: invalid list check_value {value!r}: {exc}")
                    return None
            else:
                self._error(line, f"rule {rid}: invalid <list> attribute '{name}'")
                return None
        if field_name is None:
            self._error(line, f'rule {rid}: <list> needs a field="..." attribute')
            return None
        entries = self.lists.get(element.text)
        if entries is None and element.text.endswith(".cdb"):
            entries = self.lists.get(element.text[:-4])
        if entries is None:
            self._warn(
                line,
                f"rule {rid}: list '{element.text}' is not loaded; rule skipped"
                " (declare it in the ruleset's lists)",
            )
            return "skip"
        if lookup is Lookup.ADDRESS_MATCH_KEY_VALUE:
            self._warn(
                line,
                f"rule {rid}: address_match_key_value is inverted in analysisd (it"
                " is true when the value does NOT match); kept for compatibility",
            )
        checker = None if check_value is None else check_value.test
        return ListCondition(attr, field_name, ListLookup(lookup, entries, checker))

    def _mitre(self, rule: Rule, element: XmlElement) -> None:
        rid = rule.id
        ids: list[str] = []
        tactics: list[str] = []
        techniques: list[str] = []
        failure = False
        for child in element.children:
            tag = child.tag.lower()
            if not child.text:
                self._warn(child.line, f"rule {rid}: empty <{child.tag}> in <mitre>")
                failure = True
            elif tag == "id":
                ids.append(child.text)
            elif tag == "tacticid":
                tactics.append(child.text)
            elif tag == "techniqueid":
                techniques.append(child.text)
            else:
                self._error(child.line, f"rule {rid}: invalid option <{child.tag}> in <mitre>")
                failure = True
        if not element.children:
            self._warn(element.line, f"rule {rid}: empty <mitre>")
            return
        if failure:
            return
        old_style = any(m.tactic_id is None for m in rule.mitre)
        new_style = any(m.tactic_id is not None for m in rule.mitre)
        if ids:
            if tactics or techniques:
                self._warn(
                    element.line,
                    f"rule {rid}: <mitre> mixes <id> with tacticID/techniqueID; block discarded",
                )
                return
            if new_style:
                self._warn(
                    element.line,
                    f"rule {rid}: old and new MITRE formats combined; old format discarded",
                )
                return
            for tid in ids:
                if all(m.technique_id != tid for m in rule.mitre):
                    rule.mitre.append(MitreRef(tid))
            return
        if tactics and techniques:
            if len(tactics) > 1 or len(techniques) > 1:
                self._warn(
                    element.line,
                    f"rule {rid}: one tacticID and one techniqueID per"
                    " <mitre> block; block discarded",
                )
                return
            if old_style:
                self._warn(
                    element.line,
                    f"rule {rid}: old and new MITRE formats combined; old format discarded",
                )
                rule.mitre = [m for m in rule.mitre if m.tactic_id is not None]
            ref = MitreRef(techniques[0], tactics[0])
            if ref not in rule.mitre:
                rule.mitre.append(ref)
        elif techniques:
            self._warn(element.line, f"rule {rid}: MITRE tacticID missing; block discarded")
        elif tactics:
            self._warn(element.line, f"rule {rid}: MITRE techniqueID missing; block discarded")
