"""deploy/filebeat/*.yml: parse, and point where the manager writes and Wazuh indexes.

No Filebeat runs here. The files are read with PyYAML when it is installed and
otherwise with the strict subset reader of ``yaml_subset.py`` (PyYAML is not a
dependency, so that is the usual case); then the Beats convention of dotted
keys is applied and the settings are checked against the real thing: the path
the manager's alert writer creates, Wazuh's Filebeat module (its variables and
its ingest pipeline, from ../shared), the index prefix of our pipeline port, our
template file, and every timestamp our alerts carry.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml_subset
from corpus_alerts import CorpusAlert

from trailwarden.manager.alert_files import AlertFiles, AlertFilesConfig, PendingAlert
from trailwarden.manager.config import DEFAULT_DATA_DIR
from trailwarden.manager.ingest_pipeline import ALERTS_INDEX_PREFIX

MODULE_CONFIG = "filebeat/filebeat.yml"
NO_MODULE_CONFIG = "filebeat/filebeat-no-module.yml"
# Go reference-time tokens used in our timestamp layouts, as regular expressions.
_GO_LAYOUT = [
    ("2006", r"\d{4}"),
    ("01", r"\d{2}"),
    ("02", r"\d{2}"),
    ("15", r"\d{2}"),
    ("04", r"\d{2}"),
    ("05", r"\d{2}"),
    (".999", r"(?:\.\d+)?"),
    ("-0700", r"[+-]\d{4}"),
    ("Z07:00", r"(?:Z|[+-]\d{2}:\d{2})"),
]


def _read(path: Path) -> dict[str, Any]:
    value = yaml_subset.beats_expand(yaml_subset.loads(path.read_text(encoding="utf-8")))
    assert isinstance(value, dict), path
    return value


@pytest.fixture(scope="module")
def module_config(deploy_dir: Path) -> dict[str, Any]:
    return _read(deploy_dir / MODULE_CONFIG)


@pytest.fixture(scope="module")
def no_module_config(deploy_dir: Path) -> dict[str, Any]:
    return _read(deploy_dir / NO_MODULE_CONFIG)


@pytest.fixture(scope="module")
def alerts_json_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the manager's real alert writer puts alerts.json under the default data_dir."""

    async def write_one(data_dir: Path) -> None:
        files = AlertFiles(AlertFilesConfig(data_dir=data_dir, compress=False))
        await files.start()
        files.write(
            [
                PendingAlert(
                    1795909500, lambda aid: (b'{"id":"%s"}\n' % aid.encode(), b"** Alert x:\n\n")
                )
            ]
        )
        await files.close(5)

    data_dir = tmp_path_factory.mktemp("manager-data")
    asyncio.run(write_one(data_dir))
    (found,) = [p for p in data_dir.rglob("alerts.json")]
    return DEFAULT_DATA_DIR / found.relative_to(data_dir)


def _go_layout_regex(layout: str) -> re.Pattern[str]:
    pattern, i = "", 0
    while i < len(layout):
        for token, regex in _GO_LAYOUT:
            if layout.startswith(token, i):
                pattern += regex
                i += len(token)
                break
        else:
            assert layout[i] in "T-:", f"layout {layout!r}: {layout[i:]!r} not understood here"
            pattern += re.escape(layout[i])
            i += 1
    return re.compile(pattern)


def _readme_section(deploy_dir: Path, title: str) -> str:
    text = (deploy_dir / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_the_module_config_reads_the_manager_alerts_with_wazuhs_module(
    module_config: dict[str, Any], alerts_json_path: Path, wazuh_ref: Path, deploy_dir: Path
) -> None:
    (module,) = module_config["filebeat"]["modules"]
    assert module["module"] == "wazuh"
    assert module["archives"] == {"enabled": False}
    alerts = module["alerts"]
    assert alerts["enabled"] is True
    assert alerts["var"]["paths"] == [str(alerts_json_path)]
    assert alerts["var"]["index_prefix"] == ALERTS_INDEX_PREFIX
    # Only variables the module declares (Filebeat refuses unknown ones).
    manifest = _read(wazuh_ref / "filebeat" / "wazuh-module" / "alerts" / "manifest.yml")
    declared = {v["name"]: v.get("default") for v in manifest["var"]}
    assert set(alerts["var"]) <= set(declared)
    assert declared["index_prefix"] == ALERTS_INDEX_PREFIX
    template = module_config["setup"]["template"]
    assert template["json"]["enabled"] is True
    assert template["json"]["name"] == "trailwarden"
    assert Path(template["json"]["path"]).name == "trailwarden-template.json"
    assert (deploy_dir / "indexer" / "trailwarden-template.json").is_file()
    assert module_config["setup"]["ilm"]["enabled"] is False


def test_the_no_module_config_does_the_pipelines_steps(
    no_module_config: dict[str, Any],
    alerts_json_path: Path,
    wazuh_ref: Path,
    corpus_alerts: list[CorpusAlert],
) -> None:
    (source,) = no_module_config["filebeat"]["inputs"]
    assert source["type"] == "filestream" and source["id"]
    assert source["paths"] == [str(alerts_json_path)]
    output = no_module_config["output"]["elasticsearch"]
    assert output["index"] == ALERTS_INDEX_PREFIX + "%{+yyyy.MM.dd}"
    assert no_module_config["setup"]["template"]["enabled"] is False

    steps = [next(iter(p.items())) for p in no_module_config["processors"]]
    names = [name for name, _ in steps]
    assert names == [
        "drop_fields",
        "decode_json_fields",
        "drop_event",
        "timestamp",
        "copy_fields",
        "copy_fields",
        "drop_fields",
    ]
    # Filebeat's agent.* goes before the alert is decoded, so the alert's wins.
    assert "agent" in steps[0][1]["fields"]
    decode = steps[1][1]
    assert (decode["fields"], decode["target"], decode["add_error_key"]) == (["message"], "", True)
    # Bad lines are dropped: JSON errors, and timestamps the pipeline's date step refuses.
    conditions = steps[2][1]["when"]["or"]
    assert {"has_fields": ["error"]} in conditions
    (iso,) = [c["not"]["regexp"]["timestamp"] for c in conditions if "not" in c]
    iso_re = re.compile(iso)
    stamp = steps[3][1]
    assert stamp["field"] == "timestamp"
    layouts = [_go_layout_regex(layout) for layout in stamp["layouts"]]
    for value in stamp["test"]:
        assert any(r.fullmatch(value) for r in layouts), value
    for alert in corpus_alerts:
        ts = alert.rendered.fields["timestamp"]
        assert iso_re.match(ts) and any(r.fullmatch(ts) for r in layouts), ts
    assert not iso_re.match("yesterday")
    # The same two fields as Wazuh's pipeline sets, from the same sources.
    pipeline = json.loads(
        (
            wazuh_ref / "filebeat" / "wazuh-module" / "alerts" / "ingest" / "pipeline.json"
        ).read_text()
    )
    sets = [
        (p["set"]["value"].strip("{}"), p["set"]["field"])
        for p in pipeline["processors"]
        if "set" in p
    ]
    copies = [(f["from"], f["to"]) for _, c in steps[4:6] for f in c["fields"]]
    assert copies == sets
    for (source_field, target), (_, copy) in zip(copies, steps[4:6], strict=True):
        assert copy["fail_on_error"] is False  # an existing target stays (override: false)
        assert {"not": {"has_fields": [target]}} in copy["when"]["and"]
        assert source_field  # a flattened regexp key for it is checked by Filebeat
    assert steps[6][1]["fields"] == ["message"]


def test_the_readme_documents_paths_and_index_names(
    deploy_dir: Path, alerts_json_path: Path
) -> None:
    section = _readme_section(deploy_dir, "Filebeat")
    assert str(alerts_json_path) in section
    assert "wazuh-alerts-4.x-YYYY.MM.DD" in section
    for name in (MODULE_CONFIG, NO_MODULE_CONFIG):
        assert Path(name).name in section
    assert "yaml_subset.py" in section and "PyYAML" in section  # which reader checks them


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "duplicate key"),
        ("a:\n\tb: 1\n", "tab"),
        ("a: &x 1\n", "outside the subset"),
        ("a: |\n  text\n", "outside the subset"),
        ("a: 'open\n", "unterminated"),
        ("a: 1\n  b: 2\n", "unexpected indentation"),
    ],
)
def test_the_subset_reader_refuses_what_it_does_not_know(text: str, message: str) -> None:
    with pytest.raises(yaml_subset.YamlSubsetError, match=message):
        yaml_subset.SubsetReader(text).document()


def test_the_subset_reader_reads_wazuhs_own_filebeat_files(wazuh_ref: Path) -> None:
    config = yaml_subset.beats_expand(
        yaml_subset.SubsetReader((wazuh_ref / "filebeat" / "filebeat.yml").read_text()).document()
    )
    assert config["filebeat"]["modules"][0]["alerts"] == {"enabled": True}
    assert config["setup"]["template"]["json"]["path"] == "/etc/filebeat/wazuh-template.json"
    assert config["seccomp"]["syscalls"] == [{"action": "allow", "names": ["rseq"]}]
    flow = yaml_subset.SubsetReader("a: [1, 'x # y', {b: c}]  # note\n").document()
    assert flow == {"a": [1, "x # y", {"b": "c"}]}
