"""deploy/config/*.example.toml through the real loaders; docker-compose.yml's wiring.

The example configurations are read by the programs' own strict loaders (and
the manager's ``config --check`` command), including the optional ``[indexer]``
block once uncommented, and compared with what the systemd units, Filebeat and
the index template expect. docker-compose.yml cannot run here (no Docker
engine): it is parsed and its references (files, volumes, ports, commands)
are checked against the rest of deploy/.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml_subset
from systemd_unit import parse_unit

from trailwarden.agent import cli as agent_cli
from trailwarden.agent.config import SourceKind, load_agent_config
from trailwarden.manager import cli as manager_cli
from trailwarden.manager.config import indexer_config, load_manager_config
from trailwarden.manager.template_check import template_parts

INDEXER_MARKER = "# [indexer]"


def _unit_stop_s(deploy_dir: Path, name: str) -> int:
    service = parse_unit(deploy_dir / "systemd" / f"trailwarden-{name}.service")["Service"]
    (value,) = service["TimeoutStopSec"]
    return int(value.rstrip("s"))


def _uncomment_indexer(text: str) -> str:
    """The example with its optional [indexer] block switched on, as its comment says."""
    head, marker, block = text.partition(INDEXER_MARKER)
    assert marker, "the manager example lost its [indexer] block"
    lines = (marker + block).splitlines()
    assert all(line.startswith("#") for line in lines if line.strip())
    return head + "\n".join(line[2:] if line.startswith("# ") else "" for line in lines) + "\n"


# -- manager --------------------------------------------------------------------------------


def test_the_manager_example_loads_and_fits_the_unit(
    deploy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = deploy_dir / "config" / "manager.example.toml"
    config = load_manager_config(path)
    unit = parse_unit(deploy_dir / "systemd" / "trailwarden-manager.service")["Service"]
    assert unit["ReadWritePaths"] == [str(config.manager.data_dir)]
    assert config.indexer is None  # Filebeat ships alerts.json unless the block is on
    assert config.remote.port == 1514 and config.enrollment.port == 1515
    stop = _unit_stop_s(deploy_dir, "manager")
    assert f"TimeoutStopSec ({stop} s)" in " ".join(path.read_text().split())
    assert manager_cli.main(["config", "--check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_the_manager_examples_indexer_block_uses_our_template(
    deploy_dir: Path, tmp_path: Path
) -> None:
    text = (deploy_dir / "config" / "manager.example.toml").read_text(encoding="utf-8")
    on = tmp_path / "manager.toml"
    on.write_text(_uncomment_indexer(text), encoding="utf-8")
    config = load_manager_config(on)
    assert config.indexer is not None
    assert config.indexer.template == Path("/etc/trailwarden/trailwarden-template.json")
    assert config.indexer.template_name == "trailwarden"
    built = indexer_config(config, password="secret")
    assert built.url.startswith("https://") and built.username == "trailwarden"
    # What the indexer output will PUT: our template, a legacy one (no "template" key).
    ours = json.loads((deploy_dir / "indexer" / "trailwarden-template.json").read_text())
    assert "template" not in ours and template_parts(ours)[1]["properties"]


# -- agent ----------------------------------------------------------------------------------


def test_the_agent_example_loads_and_fits_the_unit(
    deploy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = deploy_dir / "config" / "agent.example.toml"
    config = load_agent_config(path)
    unit = parse_unit(deploy_dir / "systemd" / "trailwarden-agent.service")["Service"]
    assert unit["ReadWritePaths"] == [str(config.agent.data_dir)]
    (manager,) = config.manager_addresses()
    assert (manager.host, manager.port) == ("manager.example.internal", 1514)
    (source,) = config.sources
    assert source.kind is SourceKind.CLOUDTRAIL and source.path is not None
    assert source.path.is_absolute() and source.bucket == source.path.name
    stop = _unit_stop_s(deploy_dir, "agent")
    assert stop >= config.delivery.shutdown_timeout_s + 10
    assert f"TimeoutStopSec ({stop} s)" in " ".join(path.read_text().split())
    assert agent_cli.main(["config", "--check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


# -- docker compose -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose(deploy_dir: Path) -> dict[str, Any]:
    value = yaml_subset.loads((deploy_dir / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(value, dict)
    return value


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Target -> (source, options) of a service's short-syntax volumes."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *options = spec.split(":")
        out[target] = (source, ",".join(options))
    return out


def test_compose_references_files_that_exist(compose: dict[str, Any], deploy_dir: Path) -> None:
    services = compose["services"]
    assert set(services) == {"manager", "filebeat", "template", "opensearch", "dashboards"}
    for name, service in services.items():
        for source, _ in _mounts(service).values():
            if source.startswith("."):
                assert (deploy_dir / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
        for dependency in service.get("depends_on", []):
            assert dependency in services, (name, dependency)
    build = services["manager"]["build"]
    root = (deploy_dir / build["context"]).resolve()
    dockerfile = root / build["dockerfile"]
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (root / source).exists(), line


def test_compose_wires_manager_filebeat_and_indexer_together(
    compose: dict[str, Any], deploy_dir: Path
) -> None:
    services = compose["services"]
    manager, filebeat = services["manager"], services["filebeat"]
    # The manager runs `start` with the example configuration mounted where the
    # command reads it.
    args = manager_cli.build_parser().parse_args(manager["command"])
    assert args.command == "start"
    assert _mounts(manager)[str(args.config)] == ("./config/manager.example.toml", "ro")
    config = load_manager_config(deploy_dir / "config" / "manager.example.toml")
    data_dir = str(config.manager.data_dir)
    assert _mounts(manager)[data_dir][0] == "manager-data"
    assert {p.split(":")[-1] for p in manager["ports"]} == {
        str(config.remote.port),
        str(config.enrollment.port),
    }
    assert _seconds(manager["stop_grace_period"]) >= _unit_stop_s(deploy_dir, "manager")
    # Filebeat reads the same volume, read-only, at the path its config names.
    fb_config_target = filebeat["command"][filebeat["command"].index("-c") + 1]
    fb_source, _ = _mounts(filebeat)[fb_config_target]
    fb_config = yaml_subset.beats_expand(yaml_subset.loads((deploy_dir / fb_source).read_text()))
    (alerts,) = fb_config["filebeat"]["inputs"][0]["paths"]
    assert alerts == f"{data_dir}/logs/alerts/alerts.json"
    assert _mounts(filebeat)[data_dir] == ("manager-data", "ro")
    # ${INDEXER_URL:...} in the Filebeat config is the OpenSearch service here.
    (hosts,) = fb_config["output"]["elasticsearch"]["hosts"]
    assert hosts.startswith("${INDEXER_URL:")
    assert filebeat["environment"]["INDEXER_URL"] == "http://opensearch:9200"
    assert "opensearch" in services
    # The template job installs our template under the name Filebeat's module config uses.
    (command,) = services["template"]["command"]
    assert "/_template/trailwarden" in command and "@/template.json" in command
    assert _mounts(services["template"])["/template.json"][0] == (
        "./indexer/trailwarden-template.json"
    )
    assert re.search(r"curl .*-X PUT", command) and shlex.split(command)


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return int(match.group(1))
