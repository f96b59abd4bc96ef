"""template_check against a real osmem-server, case by case.

Each case is a template and a sequence of documents with the decision we
expect. Where osmem implements the rule (most of them), the same documents go
to osmem and its decision must agree; the few rules osmem does not enforce
(Lucene's term limit, an object sent to a leaf field, strict booleans) are
marked ``osmem=False`` and follow the Elasticsearch/OpenSearch document parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from servers import OsmemProcess, osmem_fixture  # noqa: F401  (registers `osmem`)

from trailwarden.manager.template_check import (
    DocumentCheck,
    IndexSimulator,
    ProblemKind,
    TemplateError,
    compare_templates,
    mapped_fields,
    template_parts,
)

MAPPINGS: dict[str, Any] = {
    "date_detection": False,
    "dynamic_templates": [
        {"addresses": {"path_match": "net.*.addr", "mapping": {"type": "ip"}}},
        {
            "counts": {
                "match": "*_count",
                "match_mapping_type": "string",
                "mapping": {"type": "long"},
            }
        },
        {"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}},
    ],
    "properties": {
        "ip": {"type": "ip"},
        "n": {"type": "long"},
        "ts": {"type": "date", "format": "date_optional_time||epoch_millis"},
        "obj": {"properties": {"x": {"type": "keyword"}}},
        "off": {"type": "object", "enabled": False},
        "closed": {"dynamic": "strict", "properties": {"a": {"type": "keyword"}}},
        "short": {"type": "keyword", "ignore_above": 5},
        "flag": {"type": "boolean"},
        "tolerant": {"type": "ip", "ignore_malformed": True},
    },
}
OK = "ok"


@dataclass(frozen=True)
class Step:
    doc: dict[str, Any]
    expect: str | ProblemKind  # "ok", "ignored:<path>", or why it is refused
    osmem: bool = True  # osmem enforces this rule too


CASES: dict[str, tuple[dict[str, Any], list[Step]]] = {
    "ip literals": (
        {},
        [
            Step({"ip": "10.0.0.1"}, OK),
            Step({"ip": "2001:db8::1"}, OK),
            Step({"ip": "010.0.0.1"}, ProblemKind.MALFORMED),
            Step({"ip": "81.2.69.142, 192.168.10.10"}, ProblemKind.MALFORMED),
            Step({"tolerant": "010.0.0.1"}, "ignored:tolerant"),
        ],
    ),
    "index-level ignore_malformed": (
        {"index.mapping.ignore_malformed": True},
        [
            Step({"ip": "010.0.0.1"}, "ignored:ip"),
            Step({"n": "twelve"}, "ignored:n"),
            Step({"obj": "s"}, ProblemKind.CONCRETE_FOR_OBJECT),
        ],
    ),
    "numbers and dates": (
        {},
        [
            Step({"n": "12"}, OK),
            Step({"n": 1.5}, OK),
            Step({"n": "twelve"}, ProblemKind.MALFORMED),
            Step({"ts": "2026-11-28T10:00:00.123+0000"}, OK),
            Step({"ts": "2026-1-5"}, OK),
            Step({"ts": 1795909500000}, OK),
            Step({"ts": "28/11/2026"}, ProblemKind.MALFORMED),
            Step({"ts": "2026-11-28 10:00"}, ProblemKind.MALFORMED),
        ],
    ),
    "objects and concrete values": (
        {},
        [
            Step({"obj": {"x": "a"}}, OK),
            Step({"obj": "s"}, ProblemKind.CONCRETE_FOR_OBJECT),
            Step({"off": "anything"}, OK),
            Step({"off": [1, {"deep": {"er": 2}}]}, OK),
            Step({"dyn": {"e": 1}}, OK),
            Step({"dyn": "s"}, ProblemKind.CONCRETE_FOR_OBJECT),
            Step({"leaf": "s"}, OK),
            Step({"leaf": {"x": 1}}, ProblemKind.OBJECT_FOR_FIELD, osmem=False),
        ],
    ),
    "dynamic mapping": (
        {},
        [
            Step({"a.b": 1}, OK),
            Step({"a": {"b": "x"}}, ProblemKind.MALFORMED),
            Step({"arr": [None, 5]}, OK),
            Step({"arr": "x"}, ProblemKind.MALFORMED),
            Step({"closed": {"a": "ok"}}, OK),
            Step({"closed": {"b": 1}}, ProblemKind.STRICT_DYNAMIC),
            Step({"": 1}, ProblemKind.BAD_FIELD_NAME),
            Step({"x..y": 1}, ProblemKind.BAD_FIELD_NAME),
        ],
    ),
    "dynamic templates": (
        {},
        [
            Step({"net": {"eth0": {"addr": "10.1.2.3"}}}, OK),
            Step({"net": {"eth1": {"addr": "010.1.2.3"}}}, ProblemKind.MALFORMED),
            Step({"net": {"eth1": {"name": "010.1.2.3"}}}, OK),  # not *.addr: a keyword
            Step({"error_count": "7"}, OK),
            Step({"retry_count": "many"}, ProblemKind.MALFORMED),
            Step({"counter": "many"}, OK),
        ],
    ),
    "a refused document maps nothing": (
        {},
        [
            Step({"fresh": 1, "obj": "s"}, ProblemKind.CONCRETE_FOR_OBJECT),
            Step({"fresh": "text"}, OK),  # "fresh" was not mapped as a long
        ],
    ),
    "keywords": (
        {},
        [
            Step({"short": "much too long"}, OK),
            Step({"kw": "x" * 40_000}, ProblemKind.IMMENSE_TERM, osmem=False),
            Step({"short": "x" * 40_000}, OK),
        ],
    ),
    "booleans": (
        {"index.mapping.ignore_malformed": True},
        [
            Step({"flag": "true"}, OK),
            Step({"flag": "yes"}, ProblemKind.MALFORMED, osmem=False),
        ],
    ),
}


def _template(pattern: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {"index_patterns": [pattern], "settings": settings, "mappings": MAPPINGS}


def _expected(check: DocumentCheck) -> str | ProblemKind:
    if check.rejected:
        return check.rejected[0].kind
    if check.ignored:
        return "ignored:" + ",".join(p.path for p in check.ignored)
    return OK


@pytest.mark.parametrize("case", list(CASES))
def test_decisions_match_the_expectation_and_osmem(case: str, osmem: OsmemProcess) -> None:
    settings, steps = CASES[case]
    template = _template("case-*", settings)
    status, body = osmem.request("PUT", "/_template/case", template)
    assert status == 200, body
    simulator = IndexSimulator.from_template(template)
    for n, step in enumerate(steps):
        assert _expected(simulator.index(step.doc)) == step.expect, (case, n, step.doc)
        if not step.osmem:
            continue
        status, body = osmem.request("POST", "/case-1/_doc?refresh=true", step.doc)
        assert (status == 201) == (step.expect == OK or str(step.expect).startswith("ignored")), (
            case,
            n,
            step.doc,
            body,
        )
        if status == 201 and step.expect != OK:
            _, found = osmem.request(
                "POST",
                "/case-1/_search",
                {"query": {"ids": {"values": [body["_id"]]}}, "_source": False},
            )
            assert found["hits"]["hits"][0]["_ignored"] == [str(step.expect)[8:]], (case, n)
    if any(s.osmem for s in steps):
        _, mapping = osmem.request("GET", "/case-1/_mapping")
        server = {p: f.type for p, f in mapped_fields(mapping["case-1"]["mappings"]).items()}
        assert simulator.leaf_types() == server, case


def test_a_problem_names_the_field_and_the_value() -> None:
    check = IndexSimulator.from_template(_template("x-*", {})).index({"ip": "035.249.253.232"})
    (problem,) = check.rejected
    assert problem.path == "ip"
    assert str(problem) == (
        "ip: value the field type cannot parse (ip: '035.249.253.232' is not an IP address literal)"
    )


def test_template_parts_reads_legacy_and_composable_bodies() -> None:
    legacy = {
        "index_patterns": ["a-*"],
        "settings": {"index": {"refresh_interval": "5s"}},
        "mappings": {"properties": {"x": {"type": "long"}}},
    }
    composable = {
        "index_patterns": ["a-*"],
        "template": {
            "settings": {"mapping.ignore_malformed": True},
            "mappings": {"properties": {}},
        },
    }
    assert template_parts(legacy)[0] == {"index.refresh_interval": "5s"}
    assert template_parts(composable)[0] == {"index.mapping.ignore_malformed": True}
    with pytest.raises(TemplateError, match="no mappings"):
        template_parts({"index_patterns": ["a-*"]})
    with pytest.raises(TemplateError, match="mapping type"):
        template_parts({"mappings": {"_doc": {"properties": {}}}})


def test_compare_templates_reports_type_and_shape_mismatches() -> None:
    ours = {
        "mappings": {
            "properties": {
                "a": {"type": "keyword"},
                "b": {"type": "long"},
                "c": {"type": "keyword"},
                "p": {"type": "object", "enabled": False},
            }
        }
    }
    theirs = {
        "mappings": {
            "properties": {
                "a": {"type": "keyword"},
                "b": {"type": "integer"},
                "c": {"properties": {"d": {"type": "ip"}}},
            }
        }
    }
    mismatches, common = compare_templates(ours, theirs)
    assert common == ["a", "b"]
    assert [str(m) for m in mismatches] == [
        "b: long here, integer there",
        "c: keyword here, object there",
    ]
