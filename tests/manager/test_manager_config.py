"""The manager's configuration file and the `config`/`start` commands' handling of it."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from trailwarden.common.config import ConfigError
from trailwarden.manager.alert_files import FsyncPolicy
from trailwarden.manager.cli import main as cli_main
from trailwarden.manager.config import (
    ManagerConfig,
    default_config_text,
    indexer_config,
    load_manager_config,
    manager_config_from_dict,
    read_password,
    ruleset_layout,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manager.toml"
    path.write_text(text)
    return path


def test_an_empty_file_is_every_default(tmp_path: Path) -> None:
    config = load_manager_config(write(tmp_path, ""))
    assert config == ManagerConfig()
    assert config.remote.port == 1514
    assert config.alerts.fsync is FsyncPolicy.BATCH
    assert config.indexer is None and config.mqtt is None
    assert load_manager_config(None) == ManagerConfig()


def test_default_text_loads_back_and_shows_every_key() -> None:
    text = default_config_text()
    assert manager_config_from_dict(tomllib.loads(text)) == ManagerConfig()
    for section in ("manager", "remote", "analysis", "alerts", "enrollment"):
        assert f"\n[{section}]\n" in text
        cls = type(getattr(ManagerConfig(), section))
        for f in dataclasses.fields(cls):
            value = getattr(getattr(ManagerConfig(), section), f.name)
            shown = (
                f"\n[{section}.{f.name}]\n" if dataclasses.is_dataclass(value) else (f"{f.name} = ")
            )
            assert shown in text, f"{section}.{f.name} missing from the default text"
    # Optional sections are shown commented out, and uncommenting them works.
    assert "# [indexer]" in text and "# [mqtt]" in text
    assert "# Lowest rule level written as an alert" in text


def test_unknown_key_names_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[remote]\nprot = 1515\n")
    with pytest.raises(ConfigError, match=r"manager\.toml: unknown key 'remote\.prot'"):
        load_manager_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[remote]\nport = "1514"\n', r"remote\.port = '1514' is not an integer"),
        ("[remote]\nport = 70000\n", r"remote\.port = 70000 is out of range"),
        ('[alerts]\nfsync = "sometimes"\n', r"alerts\.fsync = 'sometimes' is not one of"),
        ('[manager]\nlog_level = "loud"\n', r"manager\.log_level"),
        (
            "[remote]\nidle_timeout_s = 5.0\nheartbeat_interval_s = 10.0\n",
            r"idle_timeout_s = 5 must exceed remote\.heartbeat_interval_s",
        ),
        ("[remote]\nmax_handshakes = 10\nmax_connections = 5\n", r"max_handshakes = 10 exceeds"),
        ('[manager]\nname = "a b"\n', r"manager\.name"),
        ("[indexer]\nlinger_ms = 5\n", r"indexer\.url is required"),
        ('[indexer]\nurl = "https://x:9200"\nusername = "u"\n', r"username and password go"),
        ('[indexer]\nurl = "https://x:9200"\n[indexer.tls]\nkey_file = "k.pem"\n', r"cert_file"),
        ("[mqtt]\nport = 1883\n", r"mqtt\.host is required"),
        ("[analysis]\nlog_alert_level = 17\n", r"analysis\.log_alert_level = 17 is out of range"),
    ],
)
def test_wrong_values_are_reported_with_their_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_manager_config(write(tmp_path, text))


def test_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    config = load_manager_config(
        write(tmp_path, '[manager]\ndata_dir = "data"\n[analysis]\nrules_dirs = ["r1", "/abs"]\n')
    )
    assert config.manager.data_dir == tmp_path / "data"
    assert config.analysis.rules_dirs == (tmp_path / "r1", Path("/abs"))


def test_ruleset_selection_follows_the_cli_rules(wazuh_ref: Path, tmp_path: Path) -> None:
    bundled = ManagerConfig()
    layout, options = ruleset_layout(bundled.analysis)
    assert options.log_alert_level == 1
    assert [p.name for p in layout.rule_dirs] == ["rules"]
    stock = manager_config_from_dict({"analysis": {"wazuh_ruleset": str(wazuh_ref)}})
    layout, options = ruleset_layout(stock.analysis)
    assert options.log_alert_level == 3
    assert "0215-policy_rules.xml" in layout.rule_excludes
    assert "etc/lists/amazon/aws-eventnames" in layout.lists
    chosen = manager_config_from_dict(
        {"analysis": {"wazuh_ruleset": str(wazuh_ref), "log_alert_level": 5}}
    )
    assert ruleset_layout(chosen.analysis)[1].log_alert_level == 5


def test_output_sections_map_onto_their_components(tmp_path: Path) -> None:
    secret = tmp_path / "indexer.pass"
    secret.write_text("s3cret\nignored second line\n")
    config = manager_config_from_dict(
        {
            "manager": {"name": "mgr-1"},
            "indexer": {
                "url": "https://indexer:9200",
                "username": "admin",
                "password_file": str(secret),
                "tls": {"ca_file": "/etc/ca.pem"},
                "linger_ms": 50,
            },
            "mqtt": {"host": "broker", "min_level": 7},
        }
    )
    password = read_password(secret, "indexer")
    indexer = indexer_config(config, password=password)
    assert (indexer.url, indexer.username, indexer.password) == (
        "https://indexer:9200",
        "admin",
        "s3cret",
    )
    assert indexer.tls.ca_file == Path("/etc/ca.pem") and indexer.linger_ms == 50
    from trailwarden.manager.config import mqtt_config

    mqtt = mqtt_config(config, password=None)
    assert (mqtt.host, mqtt.min_level, mqtt.manager_name) == ("broker", 7, "mgr-1")
    assert "s3cret" not in repr(indexer)


def test_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["config", "--default"]) == 0
    assert capsys.readouterr().out == default_config_text()
    good = write(tmp_path, "[remote]\nport = 1600\n")
    assert cli_main(["config", "--check", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[remote]\nport = 1600\nbogus = true\n")
    assert cli_main(["config", "--check", str(bad)]) == 2
    assert "unknown key 'remote.bogus'" in capsys.readouterr().err


def test_start_refuses_a_bad_configuration_or_ruleset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, "[nonsense]\n")
    assert cli_main(["start", "--config", str(bad)]) == 2
    assert "unknown key 'nonsense'" in capsys.readouterr().err
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.xml").write_text('<group name="x,">\n<rule id="100" level="3">\n</group>\n')
    config = tmp_path / "ruleset.toml"
    config.write_text(
        f'[manager]\ndata_dir = "{tmp_path / "data"}"\n[analysis]\nrules_dirs = ["{rules}"]\n'
    )
    assert cli_main(["start", "--config", str(config)]) == 2
    assert "broken.xml:" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing was started
