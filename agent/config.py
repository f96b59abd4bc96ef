"""The agent's TOML configuration: what to read, where to send it, how hard to try.

Every key has a default, so a file needs only ``managers`` and one
``[[sources]]`` table. ``trailwarden-agent config --default`` prints the full
file with comments (``DEFAULT_CONFIG_TEXT``); a test keeps it in step with the
dataclasses below. Strict reading (unknown keys, types, ranges) comes from
``common/config.py``; the checks that span several keys (a source needs a
path, a manager address must parse) live in ``load_agent_config`` and name the
file and key like the rest.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from trailwarden.agent.cloudtrail_file import DEFAULT_MAX_RECORD_BYTES
from trailwarden.agent.discovery import DEFAULT_EXCLUDE, DEFAULT_INCLUDE
from trailwarden.common.config import ConfigError, build, limits, load_config
from trailwarden.common.wire import MAX_RECORDS_PER_BATCH

# Wazuh's agent port; our managers listen on it too unless told otherwise.
DEFAULT_MANAGER_PORT: Final = 1514
DEFAULT_DATA_DIR: Final = Path("/var/lib/trailwarden-agent")

MIB: Final = 1024 * 1024
# A batch travels in one frame of at most 2 MiB (common/wire/limits.py) even
# when it does not compress; 1.5 MiB of records plus one record's envelope and
# msgpack overhead stays under it.
MAX_BATCH_BYTES_LIMIT: Final = 3 * MIB // 2
# The same bound for one record: a record alone in its batch must fit a frame.
MAX_RECORD_BYTES_LIMIT: Final = 3 * MIB // 2
# Append-only files whose names mark them as JSON lines.
DEFAULT_JSONLINES_INCLUDE: Final = ("*.jsonl", "*.ndjson")


class SourceKind(enum.Enum):
    """How the files of a source are laid out."""

    # Whole CloudTrail objects ({"Records": [...]}, .json or .json.gz), written once.
    CLOUDTRAIL = "cloudtrail"
    # Append-only files with one record per line, tailed as they grow.
    JSONLINES = "jsonlines"


@dataclass(frozen=True, slots=True)
class AgentSection:
    # Keys, spool, positions and status live here.
    data_dir: Path = DEFAULT_DATA_DIR
    # The name to enroll under; empty: the host name.
    name: str = ""
    # How often the running agent rewrites <data_dir>/status.json.
    status_interval_s: float = field(default=5.0, metadata=limits(min=0.1, max=3600))


@dataclass(frozen=True, slots=True)
class ManagerAddress:
    host: str = ""
    port: int = field(default=DEFAULT_MANAGER_PORT, metadata=limits(min=1, max=65535))


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    max_batch_records: int = field(default=1000, metadata=limits(min=1, max=MAX_RECORDS_PER_BATCH))
    max_batch_bytes: int = field(default=MIB, metadata=limits(min=1024, max=MAX_BATCH_BYTES_LIMIT))
    # A batch that is not full is sealed this long after its first record.
    linger_ms: int = field(default=500, metadata=limits(min=0, max=600_000))
    max_in_flight: int = field(default=8, metadata=limits(min=1, max=256))
    # Records sent per second at most; 0: no limit.
    rate_limit_eps: int = field(default=0, metadata=limits(min=0, max=10_000_000))
    connect_timeout_s: float = field(default=10.0, metadata=limits(min=0.1, max=600))
    # No Ack for this long while batches are in flight: the manager is stuck, reconnect.
    ack_timeout_s: float = field(default=60.0, metadata=limits(min=0.1, max=3600))
    heartbeat_interval_s: float = field(default=10.0, metadata=limits(min=0.1, max=3600))
    backoff_initial_ms: int = field(default=500, metadata=limits(min=1, max=3_600_000))
    backoff_max_ms: int = field(default=60_000, metadata=limits(min=1, max=3_600_000))
    # SIGTERM: how long to wait for in-flight batches to be acknowledged.
    shutdown_timeout_s: float = field(default=10.0, metadata=limits(min=0, max=600))


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    # Batches read ahead of the manager's acknowledgements; reading pauses when full.
    max_bytes: int = field(default=1024 * MIB, metadata=limits(min=4 * MIB, max=2**50))
    segment_bytes: int = field(default=32 * MIB, metadata=limits(min=64 * 1024, max=2**32))
    # fsync before a batch is sent: survives power loss, not only a crash.
    fsync: bool = True


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    # Full scan of every source tree; inotify wakes the agent sooner where it works.
    scan_interval_s: float = field(default=10.0, metadata=limits(min=0.05, max=86_400))
    # How often growing JSON-lines files are checked when inotify is off.
    poll_interval_ms: int = field(default=1000, metadata=limits(min=10, max=600_000))
    # A CloudTrail object modified more recently than this may still be being
    # written; it waits unless inotify saw it closed or renamed into place.
    settle_ms: int = field(default=2000, metadata=limits(min=0, max=3_600_000))
    inotify: bool = True
    # Positions of files no scan has seen for this long (while the agent ran)
    # are forgotten; such a file coming back later is read again.
    forget_after_s: float = field(default=30 * 86_400, metadata=limits(min=60, max=2**31))
    # How often positions are made durable (acknowledged progress lost on power
    # loss is re-sent and recognised by the manager as duplicate batches).
    checkpoint_interval_ms: int = field(default=1000, metadata=limits(min=10, max=600_000))


@dataclass(frozen=True, slots=True)
class SourceConfig:
    kind: SourceKind = SourceKind.CLOUDTRAIL
    # A directory tree, or (jsonlines) one file.
    path: Path | None = None
    # Globs below path; the defaults depend on kind (see discovery.py for the syntax).
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    # log_info.s3bucket in the envelope; default: the directory's name.
    bucket: str | None = None
    max_record_bytes: int = field(
        default=DEFAULT_MAX_RECORD_BYTES, metadata=limits(min=64, max=MAX_RECORD_BYTES_LIMIT)
    )
    # Files delivered longer ago than this are not read.
    ignore_older_s: float | None = field(default=None, metadata=limits(min=1))

    @property
    def include_globs(self) -> tuple[str, ...]:
        if self.include is not None:
            return self.include
        return DEFAULT_INCLUDE if self.kind is SourceKind.CLOUDTRAIL else DEFAULT_JSONLINES_INCLUDE

    @property
    def exclude_globs(self) -> tuple[str, ...]:
        if self.exclude is not None:
            return self.exclude
        return DEFAULT_EXCLUDE if self.kind is SourceKind.CLOUDTRAIL else ()


@dataclass(frozen=True, slots=True)
class AgentConfig:
    agent: AgentSection = AgentSection()
    # "host", "host:port", "[v6]:port", or {host = ..., port = ...}; tried in order.
    managers: tuple[str | ManagerAddress, ...] = ()
    delivery: DeliveryConfig = DeliveryConfig()
    spool: SpoolConfig = SpoolConfig()
    collection: CollectionConfig = CollectionConfig()
    sources: tuple[SourceConfig, ...] = ()

    def manager_addresses(self) -> tuple[ManagerAddress, ...]:
        """``managers`` with every string parsed (load_agent_config checked them)."""
        return tuple(parse_manager_address(m) if isinstance(m, str) else m for m in self.managers)


def parse_manager_address(text: str) -> ManagerAddress:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address.

    Raises:
        ValueError: the text is not an address (the message says why).
    """
    text = text.strip()
    if not text:
        raise ValueError("empty manager address")
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise ValueError(f"{text!r}: expected [IPv6]:port")
        host, port_text = text[1:close], text[close + 2 :]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text:
            raise ValueError(f"{text!r}: missing port after ':'")
    elif text.count(":") > 1:
        ipaddress.IPv6Address(text)  # a bare IPv6 address, or ValueError
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{text!r}: missing or malformed host")
    port = DEFAULT_MANAGER_PORT
    if port_text:
        if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
            raise ValueError(f"{text!r}: port must be 1..65535")
        port = int(port_text)
    return ManagerAddress(host, port)


def load_agent_config(path: Path | None) -> AgentConfig:
    """Read and check an agent configuration file (None: all defaults).

    Raises:
        ConfigError: the file is unreadable or wrong; the message names file and key.
    """
    config = load_config(AgentConfig, path)
    check_agent_config(config, str(path) if path is not None else "<defaults>")
    return config


def agent_config_from_dict(data: dict[str, object], source: str = "<config>") -> AgentConfig:
    """Build and check a configuration from a parsed TOML mapping (tests, tools)."""
    config = build(AgentConfig, data, source=source)
    check_agent_config(config, source)
    return config


def check_agent_config(config: AgentConfig, source: str) -> None:
    """The checks that involve more than one key's type and range."""
    for i, manager in enumerate(config.managers):
        if isinstance(manager, str):
            try:
                parse_manager_address(manager)
            except ValueError as exc:
                raise ConfigError(f"{source}: managers[{i}] = {manager!r}: {exc}") from None
        elif not manager.host:
            raise ConfigError(f"{source}: managers[{i}].host is required")
    for i, src in enumerate(config.sources):
        if src.path is None:
            raise ConfigError(f"{source}: sources[{i}].path is required")
        for key, globs in (("include", src.include), ("exclude", src.exclude)):
            for glob in globs or ():
                if not glob or glob.startswith("/") or glob.endswith("/"):
                    raise ConfigError(
                        f"{source}: sources[{i}].{key} = {glob!r}: globs are relative "
                        "patterns below path, without a leading or trailing '/'"
                    )
    delivery = config.delivery
    if delivery.backoff_max_ms < delivery.backoff_initial_ms:
        raise ConfigError(
            f"{source}: delivery.backoff_max_ms = {delivery.backoff_max_ms} is below "
            f"delivery.backoff_initial_ms = {delivery.backoff_initial_ms}"
        )
    if config.spool.segment_bytes > config.spool.max_bytes:
        raise ConfigError(
            f"{source}: spool.segment_bytes = {config.spool.segment_bytes} exceeds "
            f"spool.max_bytes = {config.spool.max_bytes}"
        )


DEFAULT_CONFIG_TEXT: Final = """\
# trailwarden-agent configuration. Every key is optional except `managers` and
# at least one [[sources]] table; the values shown are the defaults.

# Managers, tried in order; on failure the next one is used ("host[:port]",
# "[IPv6]:port", or tables with host and port). Default port: 1514.
managers = ["127.0.0.1:1514"]

[agent]
# agent.key (from `trailwarden-agent enroll`), spool/, positions.json and
# status.json live here.
data_dir = "/var/lib/trailwarden-agent"
# Name used when enrolling; empty means the host name.
name = ""
status_interval_s = 5.0

[delivery]
max_batch_records = 1000
max_batch_bytes = 1048576
linger_ms = 500
max_in_flight = 8
# Records per second at most; 0 means no limit.
rate_limit_eps = 0
connect_timeout_s = 10.0
ack_timeout_s = 60.0
heartbeat_interval_s = 10.0
backoff_initial_ms = 500
backoff_max_ms = 60000
shutdown_timeout_s = 10.0

[spool]
# Disk space for batches the manager has not acknowledged yet. When it is
# full the agent stops reading; it never drops records.
max_bytes = 1073741824
segment_bytes = 33554432
fsync = true

[collection]
scan_interval_s = 10.0
poll_interval_ms = 1000
settle_ms = 2000
inotify = true
forget_after_s = 2592000.0
checkpoint_interval_ms = 1000

# A local copy of a CloudTrail bucket (aws s3 sync, a mount, an export).
# Default include: the S3 layout (AWSLogs/<account>/CloudTrail/<region>/
# YYYY/MM/DD/*.json.gz) and plain *.json exports; CloudTrail-Digest excluded.
[[sources]]
kind = "cloudtrail"
path = "/var/lib/cloudtrail"
# include = ["**/AWSLogs/**/CloudTrail/*/*/*/*/*.json.gz", "*.json"]
# exclude = ["*CloudTrail-Digest*"]
# bucket = "my-trail-bucket"
max_record_bytes = 1048576

# Append-only JSON-lines files (one CloudTrail record per line), e.g.
# [[sources]]
# kind = "jsonlines"
# path = "/var/log/cloudtrail"
# include = ["*.jsonl", "*.ndjson"]
"""
