"""The manager's TOML configuration: sections, defaults, and the checks across keys.

Every key has a default, so an empty file (or none) is a valid configuration;
``trailwarden-manager config --default`` prints them all, with a comment above
each key (``default_config_text``, built from this schema by
``common.config.to_toml``, so it can never drift from it). Strict reading
(unknown keys, types and ranges, each named with the file and dotted key) is
``common/config.py``'s; the checks that involve several keys, or values a type
cannot express, live in ``check_manager_config``.

Sections::

    [manager]      data directory, name in alerts, logging, status, shutdown
    [remote]       the agent listener: address, port, limits, timeouts
    [analysis]     ruleset selection (as the CLI's ruleset flags), queue limits
    [alerts]       the Wazuh alert files (AlertFilesConfig)
    [enrollment]   the enrollment listener (manager/enrollment.py)
    [indexer]      optional: alerts to an OpenSearch/Elasticsearch _bulk endpoint
    [mqtt]         optional: alerts to an MQTT broker
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import socket
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from trailwarden.common.config import ConfigError, build, limits, load_config, to_toml
from trailwarden.common.wire import MAX_FRAME_BYTES
from trailwarden.manager.alert_compression import DEFAULT_DELAY_S
from trailwarden.manager.alert_files import AlertFilesConfig, FsyncPolicy
from trailwarden.manager.enrollment_config import EnrollmentConfig
from trailwarden.manager.ingest_pipeline import ALERTS_INDEX_PREFIX
from trailwarden.manager.ruleset_files import RulesetLayout
from trailwarden.manager.tls_client import ClientTls
from trailwarden.rules.engine import EngineOptions

if TYPE_CHECKING:  # the outputs import their clients (aiomqtt...): only when used
    from trailwarden.manager.indexer import IndexerConfig
    from trailwarden.manager.mqtt import MqttConfig

DEFAULT_DATA_DIR: Final = Path("/var/lib/trailwarden-manager")
# Wazuh's remoted port: agents of either kind are pointed at it.
DEFAULT_REMOTE_PORT: Final = 1514
MIB: Final = 1024 * 1024


def _meta(help_text: str, *, min: float | None = None, max: float | None = None) -> Any:
    """Field metadata: the comment printed above the key, and its range."""
    return {**limits(min=min, max=max), "help": help_text}


class LogLevel(enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ManagerSection:
    data_dir: Path = field(
        default=DEFAULT_DATA_DIR,
        metadata=_meta("etc/client.keys, logs/alerts/, var/ (state, status, journal) live here."),
    )
    name: str = field(
        default="", metadata=_meta("Manager name written in alerts; empty: this host's name.")
    )
    log_level: LogLevel = field(
        default=LogLevel.INFO, metadata=_meta("debug, info, warning or error.")
    )
    status_interval_s: float = field(
        default=5.0,
        metadata=_meta("How often var/status.json is rewritten.", min=0.1, max=3600),
    )
    shutdown_timeout_s: float = field(
        default=30.0,
        metadata=_meta(
            "SIGTERM: time to finish in-flight batches, flush and close, per step.",
            min=0.1,
            max=3600,
        ),
    )


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    listen_address: str = field(
        default="0.0.0.0",  # noqa: S104 - agents connect from the network, as to remoted
        metadata=_meta("Address the agent listener binds ('::' for IPv6 and IPv4)."),
    )
    port: int = field(
        default=DEFAULT_REMOTE_PORT, metadata=_meta("TCP port for agents.", min=0, max=65535)
    )
    max_connections: int = field(
        default=16_384,
        metadata=_meta(
            "Connections at once; more are refused (OVERLOADED). Each may buffer one frame "
            f"of up to {MAX_FRAME_BYTES} bytes.",
            min=1,
            max=1_000_000,
        ),
    )
    max_handshakes: int = field(
        default=1024,
        metadata=_meta(
            "Connections not yet authenticated at once (handshake flood bound).",
            min=1,
            max=1_000_000,
        ),
    )
    handshake_timeout_s: float = field(
        default=10.0,
        metadata=_meta(
            "A connection must prove its agent key within this time.", min=0.05, max=600
        ),
    )
    idle_timeout_s: float = field(
        default=60.0,
        metadata=_meta(
            "No complete frame (batch or heartbeat) for this long: the agent is cut "
            "(idle, dead or trickling bytes).",
            min=0.1,
            max=86_400,
        ),
    )
    heartbeat_interval_s: float = field(
        default=10.0,
        metadata=_meta(
            "The agents' heartbeat interval: 'active' means seen within two; client.keys "
            "is checked for changes and agent-state.json rewritten twice per interval.",
            min=0.05,
            max=3600,
        ),
    )
    max_unsent_bytes: int = field(
        default=256 * 1024,
        metadata=_meta(
            "Acknowledgements an agent leaves unread before it is cut (a peer that does not read).",
            min=4096,
            max=1024 * MIB,
        ),
    )
    peer_log_interval_s: float = field(
        default=600.0,
        metadata=_meta(
            "A misbehaving peer is logged once per reason per this interval (always counted).",
            min=0,
            max=86_400,
        ),
    )


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    wazuh_ruleset: Path | None = field(
        default=None,
        metadata=_meta(
            "Use Wazuh 4.x's own ruleset from this folder (rules/, decoders/, lists/) "
            "instead of the bundled one."
        ),
    )
    rules_dirs: tuple[Path, ...] = field(
        default=(),
        metadata=_meta(
            "Rules folders: replace the bundled rules, or are added after wazuh_ruleset's."
        ),
    )
    decoders_dirs: tuple[Path, ...] = field(
        default=(), metadata=_meta("Decoders folders (like rules_dirs).")
    )
    lists_dir: Path | None = field(
        default=None, metadata=_meta("CDB lists: etc/lists/NAME in rules is lists_dir/NAME.")
    )
    rule_excludes: tuple[str, ...] = field(
        default=(), metadata=_meta("Rules files skipped by name.")
    )
    decoder_excludes: tuple[str, ...] = field(
        default=(), metadata=_meta("Decoders files skipped by name.")
    )
    log_alert_level: int | None = field(
        default=None,
        metadata=_meta(
            "Lowest rule level written as an alert; default 1 (bundled) or 3 (wazuh_ruleset).",
            min=0,
            max=16,
        ),
    )
    high_water_events: int = field(
        default=50_000,
        metadata=_meta(
            "Events waiting for analysis at which the manager stops reading from agents.",
            min=1,
            max=10_000_000,
        ),
    )
    high_water_bytes: int = field(
        default=256 * MIB,
        metadata=_meta("The same bound in record bytes.", min=MIB, max=2**40),
    )
    max_group_batches: int = field(
        default=1024,
        metadata=_meta(
            "Batches committed together at most (one journal write and one fsync).",
            min=1,
            max=100_000,
        ),
    )
    max_group_events: int = field(
        default=50_000,
        metadata=_meta("Events committed together at most.", min=1, max=10_000_000),
    )


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    fsync: FsyncPolicy = field(
        default=FsyncPolicy.BATCH,
        metadata=_meta(
            "batch: agents are acknowledged only after fsync (survives power loss); "
            "interval: fsync every fsync_interval_ms; never: leave it to the kernel "
            "(both survive a crash of the manager, not of the machine)."
        ),
    )
    fsync_interval_ms: int = field(
        default=1000, metadata=_meta("For fsync = 'interval'.", min=1, max=3_600_000)
    )
    alerts_log: bool = field(default=True, metadata=_meta("Write logs/alerts/alerts.log."))
    jsonout_output: bool = field(default=True, metadata=_meta("Write logs/alerts/alerts.json."))
    logall_json: bool = field(
        default=False, metadata=_meta("Write every event to logs/archives/archives.json.")
    )
    compress: bool = field(default=True, metadata=_meta("gzip earlier days' files."))
    compress_delay_s: float = field(
        default=DEFAULT_DELAY_S,
        metadata=_meta("Wait after midnight before compressing.", min=0, max=86_400),
    )

    def files_config(self, data_dir: Path) -> AlertFilesConfig:
        return AlertFilesConfig(
            data_dir=data_dir,
            fsync=self.fsync,
            fsync_interval_ms=self.fsync_interval_ms,
            alerts_log=self.alerts_log,
            jsonout_output=self.jsonout_output,
            logall_json=self.logall_json,
            compress=self.compress,
            compress_delay_s=self.compress_delay_s,
        )


@dataclass(frozen=True, slots=True)
class IndexerSection:
    url: str = field(default="", metadata=_meta("e.g. https://indexer:9200 (required)."))
    username: str | None = None
    password_file: Path | None = field(
        default=None, metadata=_meta("File holding the password (first line).")
    )
    tls: ClientTls = field(default_factory=ClientTls)
    index_prefix: str = ALERTS_INDEX_PREFIX
    template: Path | None = field(
        default=None, metadata=_meta("Index template JSON installed before the first batch.")
    )
    template_name: str = "wazuh"
    max_batch_count: int = field(default=500, metadata=limits(min=1, max=100_000))
    max_batch_bytes: int = field(default=5 * MIB, metadata=limits(min=1024, max=1024 * MIB))
    linger_ms: int = field(default=200, metadata=limits(min=0, max=600_000))
    max_queue_count: int = field(default=20_000, metadata=limits(min=1, max=10_000_000))
    max_queue_bytes: int = field(default=64 * MIB, metadata=limits(min=1024, max=2**40))
    backoff_initial_ms: int = field(default=100, metadata=limits(min=1, max=3_600_000))
    backoff_max_ms: int = field(default=30_000, metadata=limits(min=1, max=3_600_000))
    connect_timeout_s: float = field(default=10.0, metadata=limits(min=0.1, max=600))
    request_timeout_s: float = field(default=60.0, metadata=limits(min=0.1, max=3600))
    error_log_interval_s: float = field(default=60.0, metadata=limits(min=0, max=86_400))


@dataclass(frozen=True, slots=True)
class MqttSection:
    host: str = field(default="", metadata=_meta("Broker host (required)."))
    port: int = field(default=1883, metadata=limits(min=1, max=65535))
    topic_prefix: str = "trailwarden"
    min_level: int = field(default=0, metadata=limits(min=0, max=16))
    username: str | None = None
    password_file: Path | None = field(
        default=None, metadata=_meta("File holding the password (first line).")
    )
    tls: ClientTls | None = field(
        default=None, metadata=_meta("A [mqtt.tls] table switches TLS on.")
    )
    client_id: str | None = None
    keepalive_s: int = field(default=30, metadata=limits(min=1, max=65535))
    max_inflight: int = field(default=20, metadata=limits(min=1, max=65535))
    max_queue_count: int = field(default=10_000, metadata=limits(min=1, max=10_000_000))
    max_queue_bytes: int = field(default=32 * MIB, metadata=limits(min=1024, max=2**40))
    backoff_initial_ms: int = field(default=100, metadata=limits(min=1, max=3_600_000))
    backoff_max_ms: int = field(default=30_000, metadata=limits(min=1, max=3_600_000))
    timeout_s: float = field(default=10.0, metadata=limits(min=0.1, max=600))
    error_log_interval_s: float = field(default=60.0, metadata=limits(min=0, max=86_400))


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    manager: ManagerSection = ManagerSection()
    remote: RemoteConfig = RemoteConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    alerts: AlertsConfig = AlertsConfig()
    enrollment: EnrollmentConfig = field(default_factory=EnrollmentConfig)
    indexer: IndexerSection | None = None
    mqtt: MqttSection | None = None

    @property
    def manager_name(self) -> str:
        return self.manager.name or socket.gethostname()


# -- reading -------------------------------------------------------------------------


def load_manager_config(path: Path | None) -> ManagerConfig:
    """Read and check a manager configuration file (None: all defaults).

    Raises:
        ConfigError: the file is unreadable or wrong; the message names file and key.
    """
    source = str(path) if path is not None else "<defaults>"
    try:
        config = load_config(ManagerConfig, path)
    except ConfigError:
        raise
    except ValueError as exc:  # a section's own validation (e.g. TLS key without cert)
        raise ConfigError(f"{source}: {exc}") from None
    check_manager_config(config, source)
    return config


def manager_config_from_dict(data: dict[str, Any], source: str = "<config>") -> ManagerConfig:
    """Build and check a configuration from a parsed TOML mapping (tests, tools)."""
    try:
        config = build(ManagerConfig, data, source=source)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    check_manager_config(config, source)
    return config


def check_manager_config(config: ManagerConfig, source: str) -> None:
    """The checks that involve more than one key's type and range."""
    remote = config.remote
    if remote.idle_timeout_s <= remote.heartbeat_interval_s:
        raise ConfigError(
            f"{source}: remote.idle_timeout_s = {remote.idle_timeout_s:g} must exceed "
            f"remote.heartbeat_interval_s = {remote.heartbeat_interval_s:g}, or agents "
            "are cut between two heartbeats"
        )
    if remote.max_handshakes > remote.max_connections:
        raise ConfigError(
            f"{source}: remote.max_handshakes = {remote.max_handshakes} exceeds "
            f"remote.max_connections = {remote.max_connections}"
        )
    name = config.manager.name
    if name and ("/" in name or any(c.isspace() for c in name)):
        raise ConfigError(f"{source}: manager.name = {name!r} must not contain '/' or spaces")
    if config.indexer is not None:
        if not config.indexer.url:
            raise ConfigError(f"{source}: indexer.url is required in an [indexer] table")
        unread = _UNREAD if config.indexer.password_file is not None else None
        _check_output(lambda: indexer_config(config, password=unread), source, "indexer")
    if config.mqtt is not None:
        if not config.mqtt.host:
            raise ConfigError(f"{source}: mqtt.host is required in an [mqtt] table")
        unread = _UNREAD if config.mqtt.password_file is not None else None
        _check_output(lambda: mqtt_config(config, password=unread), source, "mqtt")


# Stands in for a password file's content while checking a configuration's
# shape: checking never reads secrets.
_UNREAD: Final = "<not read while checking>"


def _check_output(make: Callable[[], object], source: str, section: str) -> None:
    try:
        make()
    except ValueError as exc:
        raise ConfigError(f"{source}: [{section}]: {exc}") from None


# -- mapping onto the components -----------------------------------------------------


def read_password(path: Path, what: str) -> str:
    """The first line of a password file.

    Raises:
        ConfigError: the file cannot be read or is empty.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read the password file {path}: {exc}") from None
    line = text.split("\n", 1)[0].rstrip("\r")
    if not line:
        raise ConfigError(f"{what}: the password file {path} is empty")
    return line


def indexer_config(config: ManagerConfig, *, password: str | None) -> IndexerConfig:
    """The ``IndexerConfig`` for ``[indexer]`` (which must be present).

    ``password`` is the password file's content (``read_password``), read by
    the caller when the manager starts.
    """
    from trailwarden.manager.indexer import IndexerConfig

    section = config.indexer
    assert section is not None
    return IndexerConfig(
        url=section.url,
        username=section.username,
        password=password,
        tls=section.tls,
        index_prefix=section.index_prefix,
        template=section.template,
        template_name=section.template_name,
        max_batch_count=section.max_batch_count,
        max_batch_bytes=section.max_batch_bytes,
        linger_ms=section.linger_ms,
        max_queue_count=section.max_queue_count,
        max_queue_bytes=section.max_queue_bytes,
        backoff_initial_ms=section.backoff_initial_ms,
        backoff_max_ms=section.backoff_max_ms,
        connect_timeout_s=section.connect_timeout_s,
        request_timeout_s=section.request_timeout_s,
        error_log_interval_s=section.error_log_interval_s,
    )


def mqtt_config(config: ManagerConfig, *, password: str | None) -> MqttConfig:
    """The ``MqttConfig`` for ``[mqtt]`` (which must be present); see ``indexer_config``."""
    from trailwarden.manager.mqtt import MqttConfig

    section = config.mqtt
    assert section is not None
    return MqttConfig(
        host=section.host,
        manager_name=config.manager_name,
        port=section.port,
        topic_prefix=section.topic_prefix,
        min_level=section.min_level,
        username=section.username,
        password=password,
        tls=section.tls,
        client_id=section.client_id,
        keepalive_s=section.keepalive_s,
        max_inflight=section.max_inflight,
        max_queue_count=section.max_queue_count,
        max_queue_bytes=section.max_queue_bytes,
        backoff_initial_ms=section.backoff_initial_ms,
        backoff_max_ms=section.backoff_max_ms,
        timeout_s=section.timeout_s,
        error_log_interval_s=section.error_log_interval_s,
    )


def ruleset_args(analysis: AnalysisConfig) -> argparse.Namespace:
    """``[analysis]`` as the CLI's ruleset flags (``cli.layout_from_args``, ``options_from_args``).

    One code path decides what a ruleset selection means, whether it comes
    from flags or from the file.
    """
    return argparse.Namespace(
        wazuh_ruleset=analysis.wazuh_ruleset,
        rules_dir=list(analysis.rules_dirs),
        decoders_dir=list(analysis.decoders_dirs),
        lists_dir=analysis.lists_dir,
        rule_exclude=list(analysis.rule_excludes),
        decoder_exclude=list(analysis.decoder_excludes),
        log_alert_level=analysis.log_alert_level,
    )


def ruleset_layout(analysis: AnalysisConfig) -> tuple[RulesetLayout, EngineOptions]:
    """The ruleset files and engine options ``[analysis]`` selects.

    Raises:
        RulesetFilesError: a configured folder does not exist.
    """
    from trailwarden.manager.cli import layout_from_args, options_from_args

    args = ruleset_args(analysis)
    return layout_from_args(args), options_from_args(args)


# -- printing --------------------------------------------------------------------------

_HEADER: Final = """\
# trailwarden-manager configuration (TOML). Every key is optional; the values
# shown are the defaults. Relative paths are relative to this file's folder.
"""

_OPTIONAL_SECTIONS: Final = (
    (
        "indexer",
        IndexerSection(url="https://indexer:9200"),
        "Optional: index alerts into OpenSearch/Elasticsearch (Wazuh 4.x indices).",
    ),
    (
        "mqtt",
        MqttSection(host="broker.example"),
        "Optional: publish alerts to an MQTT broker (<prefix>/alerts/<level>/<rule>).",
    ),
)


def default_config_text() -> str:
    """The default configuration as commented TOML; it loads back to ``ManagerConfig()``."""
    text = _with_comments(to_toml(ManagerConfig()), ManagerConfig)
    for name, example, title in _OPTIONAL_SECTIONS:
        body = _with_comments(to_toml(example), type(example), prefix=name)
        lines = [f"# {line}" if line else "#" for line in body.rstrip("\n").split("\n")]
        tables = [
            line.replace("# [", f"# [{name}.", 1) if line.startswith("# [") else line
            for line in lines
        ]
        text += f"\n# {title}\n# [{name}]\n" + "\n".join(tables) + "\n"
    return _HEADER + "\n" + text


def _with_comments(toml: str, root: type, prefix: str = "") -> str:
    """Put each field's help text above its ``key = value`` line.

    Keys whose default is "unset" (None) are not in ``to_toml``'s output; they
    are listed commented out at the end of their table, with their help.
    """
    tables = _tables(root, prefix)
    table = prefix
    out: list[str] = []

    def close_table() -> None:
        cls = tables.get(table)
        if cls is None:
            return
        for f in dataclasses.fields(cls):
            if f.default is None and "Section" not in str(f.type):  # optional tables: see below
                _comment(out, f.metadata.get("help"))
                out.append(f"# {f.name} = {_placeholder(f.type)}")
        while len(out) > 1 and out[-1] == "" and out[-2] == "":
            out.pop()

    for line in toml.split("\n"):
        if line.startswith("[") and line.endswith("]"):
            if out and out[-1] == "":
                out.pop()
                close_table()
                out.append("")
            else:
                close_table()
            table = f"{prefix}.{line[1:-1]}" if prefix else line[1:-1]
        elif " = " in line:
            key = line.split(" = ", 1)[0]
            cls = tables.get(table)
            if cls is not None:
                helps = {f.name: f.metadata.get("help") for f in dataclasses.fields(cls)}
                _comment(out, helps.get(key))
        out.append(line)
    if out and out[-1] == "":
        out.pop()
    close_table()
    return "\n".join(out) + "\n"


def _comment(out: list[str], help_text: str | None) -> None:
    if help_text:
        out.extend(f"# {line}" for line in textwrap.wrap(help_text, 76))


def _placeholder(type_text: object) -> str:
    text = str(type_text)
    if "Path" in text:
        return '"<path>"'
    if "int" in text:
        return "<integer>"
    if "ClientTls" in text:
        return '{ ca_file = "<path>" }'
    return '"<text>"'


def _tables(cls: type, prefix: str) -> dict[str, type]:
    """Dotted table name -> dataclass, for ``cls`` and the tables nested in its defaults."""
    found = {prefix: cls}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: object = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(default):
            name = f"{prefix}.{f.name}" if prefix else f.name
            found.update(_tables(type(default), name))
    return found
