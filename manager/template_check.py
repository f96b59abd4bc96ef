"""Will these alerts index under this template? Decided offline, as the indexer would.

An alert that does not fit the index mapping is rejected by OpenSearch or
Elasticsearch per document (``mapper_parsing_exception``); Filebeat logs it and
moves on, so the alert is simply missing from the dashboards. This module reads
an index template (legacy ``_template`` or composable ``_index_template``
body), lists its mapped fields, compares two templates, and replays documents
against a simulated index to say which would be rejected or have a value
dropped, and why.

Theory of operation
-------------------
``IndexSimulator`` holds one index's mapping as a tree of ``_Object`` and
``_Leaf`` nodes built from the template. ``index(doc)`` walks the document the
way the indexer's document parser does:

* Keys with dots are paths (``{"a.b": 1}`` is ``a`` -> ``b``). Arrays are
  flattened: every element goes to the same field, and the first non-null one
  decides the type of a new field. ``null`` is skipped.
* A key with no mapping is added by dynamic mapping (``dynamic: true``, the
  default, inherited from the parent object): the first matching
  ``dynamic_templates`` entry (``match_mapping_type``, ``match``/``unmatch``,
  ``path_match``/``path_unmatch`` with ``*`` wildcards), else the defaults
  (object; ``long`` for integers; ``float`` for fractions; ``boolean``; a string
  becomes ``date`` when ``date_detection`` is on and it looks like one, else
  ``text``). ``dynamic: false`` skips unmapped keys; ``strict`` rejects them.
* New fields take effect for later documents only if this one is accepted: a
  rejected document changes nothing, as in the indexer.

A value is checked against its field's type: an object where a leaf is mapped,
or a scalar where an object is mapped, rejects the document; a value the type
cannot parse (an ``ip`` that is not an address literal, a ``long`` that is not a
number, a ``date`` not in the field's formats) is *malformed*: it rejects the
document unless ``ignore_malformed`` is set on the field or for the index
(``index.mapping.ignore_malformed``), in which case only that value is dropped
(the indexer lists the field in ``_ignored``). ``boolean`` does not support
``ignore_malformed``. A ``keyword`` value longer than 32766 UTF-8 bytes is
Lucene's "immense term" and rejects the document unless ``ignore_above`` keeps
it out of the index first. Objects with ``enabled: false`` take anything.

The rules are Elasticsearch 7 / OpenSearch semantics. Where a type or date
format is not modelled here, values are accepted (the result can only miss a
rejection, never invent one); ``unchecked_formats`` says which formats were
met. Elasticsearch 8 also accepts objects in fields with ``ignore_malformed``;
that leniency is not modelled.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

# Lucene refuses a single indexed term longer than this many UTF-8 bytes.
MAX_TERM_BYTES: Final = 32766
# Longest date text worth parsing; real dates are under 40 characters.
MAX_DATE_CHARS: Final = 64
# Deepest object nesting walked; the indexer's own default limit is 20.
MAX_DEPTH: Final = 100

_INTEGER_RANGES: Final = {
    "long": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-(2**7), 2**7 - 1),
    "unsigned_long": (0, 2**64 - 1),
}
_FLOAT_TYPES: Final = frozenset(("double", "float", "half_float", "scaled_float"))
_STRING_TYPES: Final = frozenset(
    ("keyword", "text", "wildcard", "match_only_text", "constant_keyword", "version")
)
_OBJECT_TYPES: Final = frozenset(("object", "nested"))
# Types that swallow any JSON value: the indexer parses them as a whole.
_ANY_VALUE_TYPES: Final = frozenset(("flattened", "flat_object"))
# Built-in formats modelled here; others are reported in unchecked_formats.
_ISO_FORMATS: Final = frozenset(
    (
        "date_optional_time",
        "strict_date_optional_time",
        "strict_date_optional_time_nanos",
        "date_time",
        "strict_date_time",
        "date_time_no_millis",
        "strict_date_time_no_millis",
        "date",
        "strict_date",
    )
)
_DEFAULT_DATE_FORMATS: Final = ("strict_date_optional_time", "epoch_millis")
# What date detection maps a "2026/11/28 10:00:00" string with (not modelled: unchecked).
_SLASHED_FORMATS: Final = ("yyyy/MM/dd HH:mm:ss", "yyyy/MM/dd", "epoch_millis")
# ISO 8601 as date_optional_time reads it; bounded repeats only, so linear.
_ISO_DATE: Final = re.compile(
    r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?"
    r"(?:T(\d{1,2})(?::(\d{1,2})(?::(\d{1,2})(?:[.,](\d{1,9}))?)?)?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?"
)
_EPOCH: Final = re.compile(r"-?\d{1,19}(?:\.\d{1,9})?")


class TemplateError(ValueError):
    """The template or mapping is not something an indexer would accept (bad input)."""


class ProblemKind(enum.Enum):
    CONCRETE_FOR_OBJECT = "concrete value where an object is mapped"
    OBJECT_FOR_FIELD = "object where a field is mapped"
    MALFORMED = "value the field type cannot parse"
    IMMENSE_TERM = "keyword longer than Lucene's term limit"
    STRICT_DYNAMIC = "new field under dynamic: strict"
    BAD_FIELD_NAME = "empty field name"


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # dotted field path in the document
    kind: ProblemKind
    detail: str  # e.g. the type and a preview of the value

    def __str__(self) -> str:
        return f"{self.path}: {self.kind.value} ({self.detail})"


@dataclass(frozen=True, slots=True)
class DocumentCheck:
    """What the indexer would do with one document."""

    rejected: tuple[Problem, ...]  # any: the whole document is refused
    ignored: tuple[Problem, ...]  # malformed values dropped by ignore_malformed

    @property
    def accepted(self) -> bool:
        return not self.rejected


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One mapped field of a template: a leaf, or an object with ``enabled: false``."""

    path: str
    type: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TypeMismatch:
    path: str
    ours: str
    theirs: str

    def __str__(self) -> str:
        return f"{self.path}: {self.ours} here, {self.theirs} there"


# -- templates ------------------------------------------------------------------------


def template_parts(template: Mapping[str, Any]) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """``(flat settings, mappings)`` of a legacy or composable template body.

    Settings come back flat with the ``index.`` prefix (``index.mapping.ignore_malformed``)
    whether the template nests them or not.

    Raises:
        TemplateError: no mappings, or a mapping type wrapper (Elasticsearch 6).
    """
    inner = template.get("template")
    body: Mapping[str, Any] = inner if isinstance(inner, Mapping) else template
    mappings = body.get("mappings")
    if not isinstance(mappings, Mapping):
        raise TemplateError("template has no mappings object")
    if "properties" not in mappings and len(mappings) == 1:
        (only,) = mappings.values()
        if isinstance(only, Mapping) and "properties" in only:
            raise TemplateError("mappings hold a mapping type; typeless mappings are needed")
    settings = body.get("settings", {})
    if not isinstance(settings, Mapping):
        raise TemplateError("template settings are not an object")
    return _flat_settings(settings), mappings


def _flat_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_settings(value, f"{name}."))
        else:
            out[name if name.startswith("index.") else f"index.{name}"] = value
    return out


def mapped_fields(mappings: Mapping[str, Any]) -> dict[str, FieldMapping]:
    """Every leaf of ``mappings`` (and every disabled object) by dotted path."""
    out: dict[str, FieldMapping] = {}
    _walk_properties(mappings.get("properties", {}), "", out)
    return out


def _walk_properties(props: Any, prefix: str, out: dict[str, FieldMapping]) -> None:
    if not isinstance(props, Mapping):
        raise TemplateError(f"properties of {prefix or 'the root'!r} are not an object")
    for name, spec in props.items():
        path = f"{prefix}{name}"
        if not isinstance(spec, Mapping):
            raise TemplateError(f"mapping of {path!r} is not an object")
        kind = spec.get("type", "object" if "properties" in spec else None)
        if kind is None:
            raise TemplateError(f"mapping of {path!r} has neither type nor properties")
        params = {k: v for k, v in spec.items() if k not in ("type", "properties", "fields")}
        if kind in _OBJECT_TYPES and spec.get("enabled", True) is not False:
            _walk_properties(spec.get("properties", {}), f"{path}.", out)
        else:
            out[path] = FieldMapping(path, str(kind), params)


def compare_templates(
    ours: Mapping[str, Any], theirs: Mapping[str, Any]
) -> tuple[list[TypeMismatch], list[str]]:
    """Fields both templates map with different types, and the paths both map.

    A path that is a leaf in one and an object with properties in the other is
    a mismatch too (its type there is reported as ``object``).
    """
    a = mapped_fields(template_parts(ours)[1])
    b = mapped_fields(template_parts(theirs)[1])
    mismatches: list[TypeMismatch] = []
    common = sorted(a.keys() & b.keys())
    for path in common:
        if a[path].type != b[path].type:
            mismatches.append(TypeMismatch(path, a[path].type, b[path].type))
    for path in sorted(a.keys() ^ b.keys()):
        other = b if path in a else a
        prefix = f"{path}."
        if any(p.startswith(prefix) for p in other):
            mine = _kind(a[path]) if path in a else "object"
            there = "object" if path in a else _kind(b[path])
            mismatches.append(TypeMismatch(path, mine, there))
    return mismatches, common


def _kind(spec: FieldMapping) -> str:
    if spec.type in _OBJECT_TYPES and spec.params.get("enabled") is False:
        return f"{spec.type} (not indexed)"
    return spec.type


# -- the simulated index ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    type: str
    ignore_malformed: bool | None  # None: the index default
    ignore_above: int | None
    formats: tuple[str, ...]


@dataclass(slots=True)
class _Object:
    dynamic: str  # "true", "false", "strict", "runtime", or "" to inherit
    enabled: bool
    children: dict[str, _Object | _Leaf]


@dataclass(frozen=True, slots=True)
class _DynamicTemplate:
    name: str
    match_mapping_type: str | None
    match: str | None
    unmatch: str | None
    path_match: str | None
    path_unmatch: str | None
    mapping: Mapping[str, Any]


def _leaf_from(spec: Mapping[str, Any], path: str) -> _Leaf:
    kind = str(spec.get("type"))
    ignore_malformed = spec.get("ignore_malformed")
    ignore_above = spec.get("ignore_above")
    fmt = spec.get("format")
    if fmt is None:
        formats: tuple[str, ...] = _DEFAULT_DATE_FORMATS if kind == "date" else ()
    elif isinstance(fmt, str):
        formats = tuple(f.strip() for f in fmt.split("||") if f.strip())
    else:
        raise TemplateError(f"format of {path!r} is not a string")
    if ignore_above is not None and not (isinstance(ignore_above, int) and ignore_above >= 0):
        raise TemplateError(f"ignore_above of {path!r} is {ignore_above!r}, not a count")
    return _Leaf(
        kind,
        None if ignore_malformed is None else _as_bool(ignore_malformed, path),
        ignore_above,
        formats,
    )


def _object_from(spec: Mapping[str, Any], path: str) -> _Object:
    dynamic = spec.get("dynamic", "")
    node = _Object(
        str(dynamic).lower() if dynamic != "" else "",
        _as_bool(spec.get("enabled", True), path),
        {},
    )
    props = spec.get("properties", {})
    if not isinstance(props, Mapping):
        raise TemplateError(f"properties of {path or 'the root'!r} are not an object")
    for name, child in props.items():
        child_path = f"{path}.{name}" if path else str(name)
        if not isinstance(child, Mapping):
            raise TemplateError(f"mapping of {child_path!r} is not an object")
        kind = child.get("type", "object")
        node.children[str(name)] = (
            _object_from(child, child_path)
            if kind in _OBJECT_TYPES
            else _leaf_from(child, child_path)
        )
    return node


def _as_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise TemplateError(f"{path or 'mapping'}: {value!r} is not a boolean")


def _wildcard_match(pattern: str, text: str) -> bool:
    """The indexer's simple match: ``*`` is any run of characters, nothing else is special.

    Greedy with one backtrack point (the last ``*``): O(len(pattern) * len(text))
    at worst, whatever the input.
    """
    p = t = 0
    star = mark = -1
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif p < len(pattern) and pattern[p] == text[t]:
            p += 1
            t += 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            t = mark
        else:
            return False
    return all(c == "*" for c in pattern[p:])


class IndexSimulator:
    """One index's mapping, growing by dynamic mapping as documents are accepted."""

    def __init__(self, settings: Mapping[str, Any], mappings: Mapping[str, Any]) -> None:
        self._root = _object_from(mappings, "")
        if self._root.dynamic == "":
            self._root.dynamic = "true"
        self._date_detection = _as_bool(mappings.get("date_detection", True), "date_detection")
        self._ignore_malformed = _as_bool(
            settings.get("index.mapping.ignore_malformed", False), "index.mapping.ignore_malformed"
        )
        self._templates: list[_DynamicTemplate] = []
        raw_templates = mappings.get("dynamic_templates", [])
        if not isinstance(raw_templates, Sequence):
            raise TemplateError("dynamic_templates is not a list")
        for entry in raw_templates:
            if not isinstance(entry, Mapping) or len(entry) != 1:
                raise TemplateError(f"dynamic template {entry!r} is not a one-key object")
            ((name, spec),) = entry.items()
            if not isinstance(spec, Mapping) or not isinstance(spec.get("mapping"), Mapping):
                raise TemplateError(f"dynamic template {name!r} has no mapping")
            self._templates.append(
                _DynamicTemplate(
                    str(name),
                    spec.get("match_mapping_type"),
                    spec.get("match"),
                    spec.get("unmatch"),
                    spec.get("path_match"),
                    spec.get("path_unmatch"),
                    spec["mapping"],
                )
            )
        self.unchecked_formats: set[str] = set()
        # Per document: fields added by dynamic mapping, committed on acceptance.
        self._staged: dict[str, _Object | _Leaf] = {}

    @classmethod
    def from_template(cls, template: Mapping[str, Any]) -> IndexSimulator:
        settings, mappings = template_parts(template)
        return cls(settings, mappings)

    # -- public --------------------------------------------------------------------

    def index(self, doc: Mapping[str, Any]) -> DocumentCheck:
        """Check ``doc``; if accepted, keep the fields it adds for later documents."""
        rejected: list[Problem] = []
        ignored: list[Problem] = []
        self._staged = {}
        self._walk_object(self._root, "", doc, "true", rejected, ignored, 0)
        if not rejected:
            self._commit()
        self._staged = {}
        return DocumentCheck(tuple(rejected), tuple(ignored))

    def field_type(self, path: str) -> str | None:
        """The mapped type at ``path`` now (``object`` for objects), or None."""
        node: _Object | _Leaf = self._root
        for part in path.split("."):
            if not isinstance(node, _Object) or part not in node.children:
                return None
            node = node.children[part]
        return node.type if isinstance(node, _Leaf) else "object"

    def leaf_types(self) -> dict[str, str]:
        """Every mapped leaf (and disabled object) by dotted path, as the index has them now."""
        out: dict[str, str] = {}
        stack: list[tuple[str, _Object]] = [("", self._root)]
        while stack:
            prefix, node = stack.pop()
            for name, child in node.children.items():
                path = f"{prefix}{name}"
                if isinstance(child, _Leaf):
                    out[path] = child.type
                elif not child.enabled:
                    out[path] = "object"
                else:
                    stack.append((f"{path}.", child))
        return out

    # -- walking -------------------------------------------------------------------

    def _child(self, parent: _Object, parent_path: str, name: str) -> _Object | _Leaf | None:
        path = f"{parent_path}.{name}" if parent_path else name
        staged = self._staged.get(path)
        return staged if staged is not None else parent.children.get(name)

    def _commit(self) -> None:
        for path in sorted(self._staged, key=lambda p: p.count(".")):
            parent_path, _, name = path.rpartition(".")
            parent: _Object | _Leaf = self._root
            for part in parent_path.split(".") if parent_path else ():
                assert isinstance(parent, _Object)
                parent = parent.children[part]
            assert isinstance(parent, _Object)
            parent.children.setdefault(name, self._staged[path])

    def _walk_object(
        self,
        node: _Object,
        path: str,
        value: Mapping[str, Any],
        inherited: str,
        rejected: list[Problem],
        ignored: list[Problem],
        depth: int,
    ) -> None:
        if not node.enabled:
            return
        if depth > MAX_DEPTH:
            rejected.append(Problem(path, ProblemKind.MALFORMED, f"nested deeper than {MAX_DEPTH}"))
            return
        dynamic = node.dynamic or inherited
        for key, item in value.items():
            parts = str(key).split(".")
            if not all(parts):
                rejected.append(
                    Problem(
                        f"{path}.{key}" if path else str(key), ProblemKind.BAD_FIELD_NAME, repr(key)
                    )
                )
                continue
            # "a.b": x is {"a": {"b": x}}: walk the intermediate objects.
            target, target_path, target_dynamic = node, path, dynamic
            for part in parts[:-1]:
                inner = self._resolve(target, target_path, part, {}, target_dynamic, rejected)
                target_path = f"{target_path}.{part}" if target_path else part
                if inner is None:
                    break
                if isinstance(inner, _Leaf):
                    rejected.append(Problem(target_path, ProblemKind.OBJECT_FOR_FIELD, inner.type))
                    break
                target, target_dynamic = inner, inner.dynamic or target_dynamic
                if not target.enabled:
                    break
            else:
                self._walk_value(
                    target, target_path, parts[-1], item, target_dynamic, rejected, ignored, depth
                )

    def _walk_value(
        self,
        parent: _Object,
        parent_path: str,
        name: str,
        value: Any,
        dynamic: str,
        rejected: list[Problem],
        ignored: list[Problem],
        depth: int,
    ) -> None:
        path = f"{parent_path}.{name}" if parent_path else name
        values = list(_flatten(value))
        first = next((v for v in values if v is not None), None)
        if first is None:
            return  # null and empty arrays map nothing
        node = self._resolve(parent, parent_path, name, first, dynamic, rejected)
        if node is None:
            return
        if isinstance(node, _Object):
            for v in values:
                if v is None:
                    continue
                if isinstance(v, Mapping):
                    self._walk_object(
                        node, path, v, node.dynamic or dynamic, rejected, ignored, depth + 1
                    )
                elif node.enabled:
                    rejected.append(Problem(path, ProblemKind.CONCRETE_FOR_OBJECT, _preview(v)))
            return
        if node.type == "geo_point" and _is_point_array(value):
            values = [value]
        for v in values:
            if v is not None:
                self._check_leaf(node, path, v, rejected, ignored)

    def _resolve(
        self,
        parent: _Object,
        parent_path: str,
        name: str,
        sample: Any,
        dynamic: str,
        rejected: list[Problem],
    ) -> _Object | _Leaf | None:
        """The node for ``name``, adding it by dynamic mapping if needed (None: not mapped)."""
        existing = self._child(parent, parent_path, name)
        if existing is not None:
            return existing
        path = f"{parent_path}.{name}" if parent_path else name
        if dynamic in ("false", "runtime"):
            return None
        if dynamic == "strict":
            rejected.append(
                Problem(path, ProblemKind.STRICT_DYNAMIC, f"in {parent_path or 'root'}")
            )
            return None
        node = self._dynamic_node(path, name, sample)
        self._staged[path] = node
        return node

    def _dynamic_node(self, path: str, name: str, sample: Any) -> _Object | _Leaf:
        if isinstance(sample, Mapping):
            detected = "object"
        elif isinstance(sample, bool):
            detected = "boolean"
        elif isinstance(sample, int):
            detected = "long"
        elif isinstance(sample, float):
            detected = "double"
        elif self._date_detection and isinstance(sample, str) and _looks_like_date(sample):
            detected = "date"
        else:
            detected = "string"
        for tpl in self._templates:
            if tpl.match_mapping_type not in (None, "*", detected):
                continue
            if tpl.match is not None and not _wildcard_match(tpl.match, name):
                continue
            if tpl.unmatch is not None and _wildcard_match(tpl.unmatch, name):
                continue
            if tpl.path_match is not None and not _wildcard_match(tpl.path_match, path):
                continue
            if tpl.path_unmatch is not None and _wildcard_match(tpl.path_unmatch, path):
                continue
            spec = {
                k: (
                    v.replace("{dynamic_type}", _DEFAULT_TYPE[detected]).replace("{name}", name)
                    if isinstance(v, str)
                    else v
                )
                for k, v in tpl.mapping.items()
            }
            kind = spec.get("type", "object" if detected == "object" else _DEFAULT_TYPE[detected])
            spec["type"] = kind
            if kind in _OBJECT_TYPES:
                return _object_from(spec, path)
            return _leaf_from(spec, path)
        if detected == "object":
            return _Object("", True, {})
        if detected == "date":
            iso = isinstance(sample, str) and _parse_iso(sample, strict=True)
            return _Leaf("date", None, None, _DEFAULT_DATE_FORMATS if iso else _SLASHED_FORMATS)
        return _Leaf(_DEFAULT_TYPE[detected], None, None, ())

    # -- leaf values -----------------------------------------------------------------

    def _check_leaf(
        self, leaf: _Leaf, path: str, value: Any, rejected: list[Problem], ignored: list[Problem]
    ) -> None:
        kind = leaf.type
        if kind in _ANY_VALUE_TYPES:
            return
        if isinstance(value, Mapping) and kind != "geo_point":
            rejected.append(Problem(path, ProblemKind.OBJECT_FOR_FIELD, kind))
            return
        if kind in _STRING_TYPES:
            if kind == "keyword" and isinstance(value, str):
                if leaf.ignore_above is not None and len(value) > leaf.ignore_above:
                    return
                size = len(value.encode("utf-8", "surrogatepass"))
                if size > MAX_TERM_BYTES:
                    rejected.append(Problem(path, ProblemKind.IMMENSE_TERM, f"{size} bytes"))
            return
        problem = self._malformed(leaf, value)
        if problem is None:
            return
        found = Problem(path, ProblemKind.MALFORMED, f"{kind}: {problem}")
        tolerant = (
            leaf.ignore_malformed if leaf.ignore_malformed is not None else self._ignore_malformed
        )
        if tolerant and kind != "boolean":
            ignored.append(found)
        else:
            rejected.append(found)

    def _malformed(self, leaf: _Leaf, value: Any) -> str | None:
        """Why ``value`` does not parse as ``leaf``'s type, or None if it does."""
        kind = leaf.type
        if kind in _INTEGER_RANGES or kind in _FLOAT_TYPES:
            return _number_problem(kind, value)
        if kind == "boolean":
            if value is True or value is False or value in ("true", "false", ""):
                return None
            return f"{_preview(value)} is not true or false"
        if kind == "ip":
            return _ip_problem(value)
        if kind in ("date", "date_nanos"):
            return self._date_problem(leaf.formats, value)
        if kind == "geo_point":
            return _geo_point_problem(value)
        return None  # a type not modelled here: accepted

    def _date_problem(self, formats: tuple[str, ...], value: Any) -> str | None:
        for fmt in formats:
            if fmt in ("epoch_millis", "epoch_second"):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return None
                if isinstance(value, str) and _EPOCH.fullmatch(value):
                    return None
            elif fmt in _ISO_FORMATS:
                if isinstance(value, str) and _parse_iso(value, strict=fmt.startswith("strict")):
                    return None
            else:
                self.unchecked_formats.add(fmt)
                return None
        return f"{_preview(value)} is not in {'||'.join(formats)}"


_DEFAULT_TYPE: Final = {
    "object": "object",
    "boolean": "boolean",
    "long": "long",
    "double": "float",
    "date": "date",
    "string": "text",
}


def _flatten(value: Any) -> Iterator[Any]:
    """Array elements in order, nested arrays included (iterative: any depth)."""
    if not isinstance(value, list):
        yield value
        return
    stack: list[Iterator[Any]] = [iter(value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def _is_point_array(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) in (2, 3)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _number_problem(kind: str, value: Any) -> str | None:
    if isinstance(value, bool):
        return f"{value!r} is not a number"
    number: float | int
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip()) if kind in _INTEGER_RANGES else float(value.strip())
        except ValueError:
            try:
                number = float(value.strip())
            except ValueError:
                return f"{_preview(value)} is not a number"
    else:
        return f"{_preview(value)} is not a number"
    if isinstance(number, float) and not math.isfinite(number):
        return f"{_preview(value)} is not finite"
    limits = _INTEGER_RANGES.get(kind)
    if limits is not None and not limits[0] <= int(number) <= limits[1]:
        return f"{_preview(value)} is out of range for {kind}"
    return None


def _ip_problem(value: Any) -> str | None:
    # Like the indexer, no scope ids and no leading zeros (Python refuses those too).
    if isinstance(value, str) and "%" not in value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            pass
        else:
            return None
    return f"{_preview(value)} is not an IP address literal"


def _geo_point_problem(value: Any) -> str | None:
    if isinstance(value, Mapping):
        lat, lon = value.get("lat"), value.get("lon")
        if isinstance(lat, (int, float)) and isinstance(lon, (int, float)):
            return None if -90 <= lat <= 90 and -180 <= lon <= 180 else "out of range"
        return f"{_preview(value)} has no numeric lat and lon"
    if isinstance(value, list) and _is_point_array(value):
        return None
    if isinstance(value, str) and value:
        return None  # "lat,lon", a geohash or WKT: not checked further
    return f"{_preview(value)} is not a point"


def _parse_iso(text: str, *, strict: bool) -> bool:
    if len(text) > MAX_DATE_CHARS:
        return False
    m = _ISO_DATE.fullmatch(text)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) if g else None for g in m.groups()[:6])
    if strict and any(g is not None and len(g) != 2 for g in m.groups()[1:6]):
        return False
    try:
        datetime(year or 1, month or 1, day or 1, hour or 0, minute or 0, second or 0)  # noqa: DTZ001
    except ValueError:
        return False
    return True


def _looks_like_date(text: str) -> bool:
    """Dynamic date detection's default formats: strict_date_optional_time or yyyy/MM/dd."""
    if _parse_iso(text, strict=True):
        return True
    return (
        len(text) >= 10
        and text[4] == "/"
        and text[7] == "/"
        and text[:4].isdigit()
        and text[5:7].isdigit()
        and text[8:10].isdigit()
    )
