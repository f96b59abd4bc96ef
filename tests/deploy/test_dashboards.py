"""The dashboards' saved objects against the indexed corpus alerts.

No Kibana or OpenSearch Dashboards runs here, so the objects are checked for
what those apps rely on: well-formed saved objects whose references resolve, a
panel grid that fits, and, against the real osmem indices of ``conftest.py``
(under Wazuh's template and under ours), fields that exist with an aggregatable
type and the aggregations the panels send returning buckets at every level.
Each panel's request is built the way Kibana builds it for a legacy
visualisation: the saved Lucene query (and the dashboard's) as
``query_string``, the bucket aggregations nested in their saved order.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from indexed_corpus import IndexRun

from trailwarden.manager.template_check import mapped_fields, template_parts

NDJSON = "dashboards/trailwarden-aws.ndjson"
# Fields named in a Lucene query: `name:` not inside quotes (our queries are simple).
_QUERY_FIELD = re.compile(r'(?<![\w."])([A-Za-z_@][\w.@]*):')
# A date_histogram interval that gives the corpus' half hour a few dozen buckets,
# as Kibana's "auto" does for a time range that fits the data.
FIXED_INTERVAL = "1m"


def _load_generator(deploy_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "trailwarden_dashboards_generate", deploy_dir / "dashboards" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def saved_objects(deploy_dir: Path) -> list[dict[str, Any]]:
    lines = (deploy_dir / NDJSON).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def visualizations(saved_objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each visualisation with its decoded visState and saved query."""
    out = []
    for obj in saved_objects:
        if obj["type"] != "visualization":
            continue
        attrs = obj["attributes"]
        search = json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
        out.append({"id": obj["id"], "state": json.loads(attrs["visState"]), "search": search})
    return out


@pytest.fixture(scope="module")
def dashboard(saved_objects: list[dict[str, Any]]) -> dict[str, Any]:
    (board,) = [o for o in saved_objects if o["type"] == "dashboard"]
    return board


# -- the saved objects themselves ---------------------------------------------------------


def test_the_ndjson_is_what_the_generator_writes(deploy_dir: Path) -> None:
    generator = _load_generator(deploy_dir)
    assert (deploy_dir / NDJSON).read_text(encoding="utf-8") == generator.render()
    assert generator.main(["--check"]) == 0


def test_saved_objects_are_well_formed_and_references_resolve(
    saved_objects: list[dict[str, Any]],
) -> None:
    ids = [(o["type"], o["id"]) for o in saved_objects]
    assert len(ids) == len(set(ids))
    assert {t for t, _ in ids} == {"index-pattern", "visualization", "dashboard"}
    for obj in saved_objects:
        assert set(obj) == {"id", "type", "attributes", "references", "migrationVersion"}
        assert set(obj["migrationVersion"]) == {obj["type"]}
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, (obj["id"], ref)
        attrs = obj["attributes"]
        if obj["type"] != "index-pattern":
            search = json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
            assert search["query"]["language"] == "lucene"
            assert search["filter"] == []
            ref_name = search.get("indexRefName")
            if ref_name is not None:
                assert [r["name"] for r in obj["references"]] == [ref_name]
    (pattern,) = [o for o in saved_objects if o["type"] == "index-pattern"]
    assert pattern["id"] == pattern["attributes"]["title"] == "wazuh-alerts-*"
    assert pattern["attributes"]["timeFieldName"] == "timestamp"


def test_visualisations_are_the_ec2_page_and_aws_overview_views(
    visualizations: list[dict[str, Any]],
) -> None:
    by_title = {v["state"]["title"]: v for v in visualizations}
    pie = by_title["EC2 alerts by rule"]
    assert pie["state"]["type"] == "pie"
    assert [a["params"].get("field") for a in pie["state"]["aggs"]] == [None, "rule.description"]
    assert "rule.groups:aws_ec2" in pie["search"]["query"]["query"]
    groups = by_title["Alert groups over time"]["state"]
    assert groups["type"] == "histogram"
    assert groups["params"]["seriesParams"][0]["mode"] == "stacked"
    assert [(a["type"], a["schema"], a["params"].get("field")) for a in groups["aggs"][1:]] == [
        ("date_histogram", "segment", "timestamp"),
        ("terms", "group", "rule.groups"),
    ]
    overview_fields = {
        a["params"]["field"]
        for v in visualizations
        for a in v["state"]["aggs"]
        if a["type"] == "terms"
    }
    assert {
        "data.aws.source",
        "data.aws.accountId",
        "data.aws.region",
        "data.aws.log_info.s3bucket",
    } <= overview_fields
    for vis in visualizations:
        assert vis["state"]["aggs"][0] == {
            "id": "1",
            "enabled": True,
            "type": "count",
            "schema": "metric",
            "params": {},
        }


def test_the_dashboard_holds_every_visualisation_on_its_grid(
    dashboard: dict[str, Any], visualizations: list[dict[str, Any]]
) -> None:
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    refs = {r["name"]: r["id"] for r in dashboard["references"]}
    assert sorted(refs[p["panelRefName"]] for p in panels) == sorted(
        v["id"] for v in visualizations
    )
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridData"]
        assert grid["i"] == panel["panelIndex"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 48, grid
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"panel {panel['panelIndex']} overlaps another"
        cells |= mine


# -- against the indexed alerts -----------------------------------------------------------


def _fields(vis: dict[str, Any], dashboard_query: str) -> dict[str, str]:
    """Field -> how it is used: "terms", "date_histogram" or "query"."""
    used = {a["params"]["field"]: a["type"] for a in vis["state"]["aggs"] if "field" in a["params"]}
    for text in (vis["search"]["query"]["query"], dashboard_query):
        for name in _QUERY_FIELD.findall(text):
            used.setdefault(name, "query")
    return used


def _request(vis: dict[str, Any], dashboard_query: str, ids: list[str]) -> dict[str, Any]:
    queries = [q for q in (vis["search"]["query"]["query"], dashboard_query) if q]
    aggs: dict[str, Any] = {}
    inner = aggs
    for agg in vis["state"]["aggs"]:
        if agg["schema"] == "metric":
            continue
        params = agg["params"]
        if agg["type"] == "terms":
            body = {
                "terms": {
                    "field": params["field"],
                    "size": params["size"],
                    "order": {"_count": params["order"]},
                }
            }
        elif agg["type"] == "date_histogram":
            body = {
                "date_histogram": {
                    "field": params["field"],
                    "fixed_interval": FIXED_INTERVAL,
                    "min_doc_count": params["min_doc_count"],
                }
            }
        else:
            raise AssertionError(f"{vis['id']}: aggregation {agg['type']} not handled here")
        inner[agg["id"]] = body
        inner = body.setdefault("aggs", {})
    return {
        "size": 0,
        "query": {
            "bool": {
                "must": [{"query_string": {"query": q, "analyze_wildcard": True}} for q in queries],
                "filter": [{"ids": {"values": ids}}],
            }
        },
        "aggs": aggs,
    }


def _assert_buckets(result: dict[str, Any], where: str) -> int:
    """Every bucket level is non-empty; returns the number of leaf buckets."""
    ((name, agg),) = [(k, v) for k, v in result.items() if isinstance(v, dict) and "buckets" in v]
    assert agg["buckets"], f"{where}: aggregation {name} has no buckets"
    leaves = 0
    for bucket in agg["buckets"]:
        subs = {k: v for k, v in bucket.items() if isinstance(v, dict) and "buckets" in v}
        leaves += _assert_buckets(bucket, f"{where} > {bucket['key']}") if subs else 1
    return leaves


@pytest.mark.parametrize("run_name", ["ours_indexed", "wazuh_indexed"])
def test_dashboard_fields_exist_with_their_mapped_types(
    run_name: str,
    request: pytest.FixtureRequest,
    visualizations: list[dict[str, Any]],
    dashboard: dict[str, Any],
    wazuh_template: dict[str, Any],
) -> None:
    run: IndexRun = request.getfixturevalue(run_name)
    dashboard_query = json.loads(
        dashboard["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]
    )["query"]["query"]
    wazuh_types = {p: f.type for p, f in mapped_fields(template_parts(wazuh_template)[1]).items()}
    used: dict[str, str] = {"timestamp": "date_histogram"}  # the index pattern's time field
    for vis in visualizations:
        used.update(_fields(vis, dashboard_query))
    assert {"rule.description", "rule.groups", "timestamp", "data.integration"} <= set(used)
    for index in run.indices:
        status, body = run.server.request(
            "GET", f"/{index}/_mapping/field/{','.join(sorted(used))}"
        )
        assert status == 200, body
        found = {
            name: next(iter(spec["mapping"].values()))["type"]
            for name, spec in body[index]["mappings"].items()
        }
        for name, how in used.items():
            assert name in found, f"{run.template_name} {index}: {name} is not mapped"
            if how == "date_histogram":
                expected = "date"
            else:
                # Wazuh's type where its template maps the field, else a dynamic string.
                expected = wazuh_types.get(name, "keyword")
            assert found[name] == expected, (run.template_name, index, name, found[name])


@pytest.mark.parametrize("run_name", ["ours_indexed", "wazuh_indexed"])
def test_every_panel_aggregation_returns_buckets(
    run_name: str,
    request: pytest.FixtureRequest,
    visualizations: list[dict[str, Any]],
    dashboard: dict[str, Any],
) -> None:
    run: IndexRun = request.getfixturevalue(run_name)
    dashboard_query = json.loads(
        dashboard["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]
    )["query"]["query"]
    # Only what alerts.json would hold: the corpus also indexes level-0 verdicts,
    # which have no rule.level (an empty third column in the rules table).
    alerted = sorted(i for i, d in run.docs.items() if d.alert.alerted and i in run.present)
    results = {}
    for vis in visualizations:
        status, body = run.server.request(
            "POST", "/wazuh-alerts-*/_search", _request(vis, dashboard_query, alerted)
        )
        assert status == 200, (vis["id"], body)
        assert body["hits"]["total"]["value"] > 0, vis["id"]
        _assert_buckets(body["aggregations"], f"{run.template_name} {vis['id']}")
        results[vis["state"]["title"]] = body["aggregations"]

    # The EC2 pie shows the bundled EC2 rules' alerts and Wazuh's own EC2 alerts.
    (pie,) = results["EC2 alerts by rule"].values()
    slices = {b["key"] for b in pie["buckets"]}
    bundled = {s for s in slices if s.startswith("Amazon-ec2: ")}
    stock = {s for s in slices if s.startswith("AWS Cloudtrail: ec2.amazonaws.com - ")}
    assert bundled and stock and bundled | stock == slices, slices
    assert len(slices) == 10  # the pie's size: the corpus has more EC2 alert kinds
    # Stacked groups: the interval buckets split by the groups of that interval's alerts.
    (over_time,) = results["Alert groups over time"].values()
    groups = {g["key"] for b in over_time["buckets"] for g in b["3"]["buckets"]}
    assert {"aws", "aws_ec2", "amazon"} <= groups
    # The AWS overview pies.
    (sources,) = results["Sources"].values()
    assert [b["key"] for b in sources["buckets"]] == ["cloudtrail"]
    (regions,) = results["Regions"].values()
    assert len(regions["buckets"]) == 5  # top 5 of the corpus' many regions
