from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from trailwarden.common.config import ConfigError, build, limits, load_config, to_toml


class Policy(enum.Enum):
    BATCH = "batch"
    NEVER = "never"


@dataclass(frozen=True)
class Output:
    url: str = "http://127.0.0.1:9200"
    batch_max: int = field(default=500, metadata=limits(min=1, max=10_000))


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("/var/lib/trailwarden")
    linger_ms: float = 50.0
    fsync: Policy = Policy.BATCH
    managers: list[str] = field(default_factory=lambda: ["127.0.0.1:1514"])
    name: str | None = None
    indexer: Output = Output()


def test_defaults_and_values(tmp_path: Path) -> None:
    assert load_config(Config, None) == Config()
    path = tmp_path / "c.toml"
    path.write_text('data_dir = "data"\nlinger_ms = 5\nfsync = "never"\nname = "m1"\n'
                    'managers = ["a:1", "b:2"]\n[indexer]\nbatch_max = 10\n')
    config = load_config(Config, path)
    assert config.data_dir == tmp_path / "data"
    assert config.linger_ms == 5.0 and config.fsync is Policy.NEVER
    assert config.managers == ["a:1", "b:2"] and config.name == "m1"
    assert config.indexer == Output(batch_max=10)


@pytest.mark.parametrize(("text", "message"), [
    ("lingr_ms = 5", "unknown key 'lingr_ms' in the top level"),
    ("[indexer]\nurl = 5", "indexer.url = 5 is not a string"),
    ("[indexer]\nbatch_max = 0", "indexer.batch_max = 0 is out of range (1..10000)"),
    ("[indexer]\nbatchmax = 1", "unknown key 'indexer.batchmax' in [indexer]"),
    ('fsync = "always"', "fsync = 'always' is not one of 'batch', 'never'"),
    ("linger_ms = true", "linger_ms = True is not a number"),
    ("managers = [1]", "managers[0] = 1 is not a string"),
    ("indexer = 3", "indexer = 3 is not a table [indexer]"),
    ("= broken", "not valid TOML"),
])
def test_errors_name_the_file_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(Config, path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Config, tmp_path / "absent.toml")


def test_round_trip_through_toml() -> None:
    config = Config(name="x", indexer=Output(batch_max=7))
    assert build(Config, tomllib.loads(to_toml(config))) == config
