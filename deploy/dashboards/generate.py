"""Build trailwarden-aws.ndjson: Kibana / OpenSearch Dashboards saved objects.

Saved objects keep each visualisation's definition as JSON *inside* a JSON
string, which nobody can review or edit by hand; this script is the readable
source and the ndjson is its output. Run it after a change::

    python deploy/dashboards/generate.py          # rewrite the ndjson
    python deploy/dashboards/generate.py --check  # exit 1 if it is out of date

The objects follow the export format of Kibana 7.10 / OpenSearch Dashboards
1.x-2.x (legacy visualisations, not Lens), which Kibana 8 imports and migrates.
They read the ``wazuh-alerts-*`` index pattern (time field ``timestamp``), the
same id Wazuh's own app uses, so importing over a Wazuh install reuses its
pattern. Panels:

* the EC2 page's two views: a pie of EC2 alerts by rule description (alerts of
  the bundled EC2 rules, group ``aws_ec2``, or any alert on an EC2 API event,
  e.g. Wazuh's 80202) and alert groups over time as stacked bars;
* the Wazuh AWS overview's views: sources, accounts, regions and buckets pies,
  events by source over time (stacked area) and a rules table.

The dashboard shows AWS-integration alerts only (``data.integration:aws``).
Queries use the Lucene syntax, which the indexers run as ``query_string``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("trailwarden-aws.ndjson")
INDEX_PATTERN_ID = "wazuh-alerts-*"
TIME_FIELD = "timestamp"
DASHBOARD_ID = "trailwarden-aws-cloudtrail"
DASHBOARD_QUERY = "data.integration:aws"
EC2_QUERY = 'rule.groups:aws_ec2 OR data.aws.eventSource:"ec2.amazonaws.com"'
# The newest migration each type had in Kibana 7.10 (OpenSearch Dashboards' base):
# newer would make those refuse the import, older would re-run migrations.
MIGRATION_VERSION = {"index-pattern": "7.6.0", "visualization": "7.10.0", "dashboard": "7.9.3"}
KIBANA_VERSION = "7.10.2"
# Dashboard grid: 48 columns wide.
GRID_COLUMNS = 48


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_COUNT = {"id": "1", "enabled": True, "type": "count", "schema": "metric", "params": {}}


def terms(agg_id: str, schema: str, field: str, size: int, label: str = "") -> dict[str, Any]:
    params: dict[str, Any] = {
        "field": field,
        "orderBy": "1",
        "order": "desc",
        "size": size,
        "otherBucket": False,
        "otherBucketLabel": "Other",
        "missingBucket": False,
        "missingBucketLabel": "Missing",
    }
    if label:
        params["customLabel"] = label
    return {"id": agg_id, "enabled": True, "type": "terms", "schema": schema, "params": params}


def over_time(agg_id: str) -> dict[str, Any]:
    return {
        "id": agg_id,
        "enabled": True,
        "type": "date_histogram",
        "schema": "segment",
        "params": {
            "field": TIME_FIELD,
            "useNormalizedEsInterval": True,
            "scaleMetricValues": False,
            "interval": "auto",
            "drop_partials": False,
            "min_doc_count": 1,
            "extended_bounds": {},
        },
    }


def pie_params() -> dict[str, Any]:
    return {
        "type": "pie",
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "isDonut": True,
        "labels": {"show": False, "values": True, "last_level": True, "truncate": 100},
    }


def stacked_params(chart: str) -> dict[str, Any]:
    """Params of a stacked ``histogram`` (vertical bars) or ``area`` chart."""
    series: dict[str, Any] = {
        "show": True,
        "type": chart,
        "mode": "stacked",
        "data": {"label": "Count", "id": "1"},
        "valueAxis": "ValueAxis-1",
        "drawLinesBetweenPoints": True,
        "lineWidth": 2,
        "showCircles": True,
    }
    if chart == "area":
        series["interpolate"] = "linear"
    return {
        "type": chart,
        "grid": {"categoryLines": False},
        "categoryAxes": [
            {
                "id": "CategoryAxis-1",
                "type": "category",
                "position": "bottom",
                "show": True,
                "style": {},
                "scale": {"type": "linear"},
                "labels": {"show": True, "filter": True, "truncate": 100},
                "title": {},
            }
        ],
        "valueAxes": [
            {
                "id": "ValueAxis-1",
                "name": "LeftAxis-1",
                "type": "value",
                "position": "left",
                "show": True,
                "style": {},
                "scale": {"type": "linear", "mode": "normal"},
                "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                "title": {"text": "Count"},
            }
        ],
        "seriesParams": [series],
        "addTooltip": True,
        "addLegend": True,
        "legendPosition": "right",
        "times": [],
        "addTimeMarker": False,
        "labels": {"show": False},
        "thresholdLine": {
            "show": False,
            "value": 10,
            "width": 1,
            "style": "full",
            "color": "#E7664C",
        },
    }


def table_params() -> dict[str, Any]:
    return {
        "perPage": 10,
        "showPartialRows": False,
        "showMetricsAtAllLevels": False,
        "showTotal": False,
        "totalFunc": "sum",
        "percentageCol": "",
    }


def visualization(
    vis_id: str,
    title: str,
    vis_type: str,
    params: dict[str, Any],
    aggs: list[dict[str, Any]],
    query: str = "",
    description: str = "",
) -> dict[str, Any]:
    vis_state = {"title": title, "type": vis_type, "params": params, "aggs": [_COUNT, *aggs]}
    search = {
        "query": {"query": query, "language": "lucene"},
        "filter": [],
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    }
    return {
        "id": vis_id,
        "type": "visualization",
        "attributes": {
            "title": title,
            "visState": _dumps(vis_state),
            "uiStateJSON": "{}",
            "description": description,
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _dumps(search)},
        },
        "references": [
            {
                "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                "type": "index-pattern",
                "id": INDEX_PATTERN_ID,
            }
        ],
        "migrationVersion": {"visualization": MIGRATION_VERSION["visualization"]},
    }


# The dashboard's panels, in this order.
VISUALIZATIONS: list[dict[str, Any]] = [
    visualization(
        "trailwarden-ec2-alerts-by-rule",
        "EC2 alerts by rule",
        "pie",
        pie_params(),
        [terms("2", "segment", "rule.description", 10, "Rule")],
        EC2_QUERY,
        "Alerts on EC2 API calls: the bundled EC2 rules (80301-80446, group aws_ec2) or any"
        " rule firing on an ec2.amazonaws.com event.",
    ),
    visualization(
        "trailwarden-alert-groups-over-time",
        "Alert groups over time",
        "histogram",
        stacked_params("histogram"),
        [over_time("2"), terms("3", "group", "rule.groups", 10, "Group")],
        description="Alerts per time interval, stacked by rule group.",
    ),
    visualization(
        "trailwarden-aws-sources",
        "Sources",
        "pie",
        pie_params(),
        [terms("2", "segment", "data.aws.source", 5)],
    ),
    visualization(
        "trailwarden-aws-accounts",
        "Accounts",
        "pie",
        pie_params(),
        [terms("2", "segment", "data.aws.accountId", 5)],
    ),
    visualization(
        "trailwarden-aws-regions",
        "Regions",
        "pie",
        pie_params(),
        [terms("2", "segment", "data.aws.region", 5)],
    ),
    visualization(
        "trailwarden-aws-buckets",
        "Buckets",
        "pie",
        pie_params(),
        [terms("2", "segment", "data.aws.log_info.s3bucket", 5)],
    ),
    visualization(
        "trailwarden-aws-events-by-source",
        "Events by source over time",
        "area",
        stacked_params("area"),
        [over_time("2"), terms("3", "group", "data.aws.source", 5, "Source")],
    ),
    visualization(
        "trailwarden-aws-rules",
        "Alerts by rule",
        "table",
        table_params(),
        [
            terms("2", "bucket", "rule.id", 50, "Rule ID"),
            terms("3", "bucket", "rule.description", 1, "Description"),
            terms("4", "bucket", "rule.level", 1, "Level"),
        ],
    ),
]
# (width, height) of each panel, in VISUALIZATIONS order; rows fill left to right.
PANEL_SIZES = [(24, 15), (24, 15), (12, 12), (12, 12), (12, 12), (12, 12), (24, 15), (24, 15)]


def index_pattern() -> dict[str, Any]:
    return {
        "id": INDEX_PATTERN_ID,
        "type": "index-pattern",
        "attributes": {"title": INDEX_PATTERN_ID, "timeFieldName": TIME_FIELD},
        "references": [],
        "migrationVersion": {"index-pattern": MIGRATION_VERSION["index-pattern"]},
    }


def dashboard() -> dict[str, Any]:
    panels, references = [], []
    x = y = row_height = 0
    for n, (vis, (width, height)) in enumerate(zip(VISUALIZATIONS, PANEL_SIZES, strict=True)):
        if x + width > GRID_COLUMNS:
            x, y, row_height = 0, y + row_height, 0
        panel_index = str(n + 1)
        panels.append(
            {
                "version": KIBANA_VERSION,
                "gridData": {"x": x, "y": y, "w": width, "h": height, "i": panel_index},
                "panelIndex": panel_index,
                "embeddableConfig": {},
                "panelRefName": f"panel_{n}",
            }
        )
        references.append({"name": f"panel_{n}", "type": "visualization", "id": vis["id"]})
        x += width
        row_height = max(row_height, height)
    search = {"query": {"query": DASHBOARD_QUERY, "language": "lucene"}, "filter": []}
    return {
        "id": DASHBOARD_ID,
        "type": "dashboard",
        "attributes": {
            "title": "Trailwarden: AWS CloudTrail",
            "hits": 0,
            "description": "AWS CloudTrail alerts from Trailwarden (and Wazuh's aws-s3 module).",
            "panelsJSON": _dumps(panels),
            "optionsJSON": _dumps({"hidePanelTitles": False, "useMargins": True}),
            "version": 1,
            "timeRestore": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _dumps(search)},
        },
        "references": references,
        "migrationVersion": {"dashboard": MIGRATION_VERSION["dashboard"]},
    }


def saved_objects() -> list[dict[str, Any]]:
    return [index_pattern(), *VISUALIZATIONS, dashboard()]


def render() -> str:
    return "".join(_dumps(obj) + "\n" for obj in saved_objects())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(saved_objects())} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
