"""``trailwarden-agent``: the agent's command line.

Each subcommand is a thin shell: parse arguments, load the configuration,
call the module that does the work, and turn failures into one clear line
and an exit status (0 ok, 1 failure while running, 2 bad usage or
configuration, 3 ``status``: the agent is not running).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import orjson

from trailwarden.agent.config import (
    DEFAULT_CONFIG_TEXT,
    DEFAULT_DATA_DIR,
    load_agent_config,
)
from trailwarden.common.config import ConfigError

DEFAULT_CONFIG_PATH: Final = Path("/etc/trailwarden/agent.toml")
EXIT_NOT_RUNNING: Final = 3

_DESCRIPTION = """\
Trailwarden agent: reads AWS CloudTrail files (a local copy of a CloudTrail
bucket, plain .json/.json.gz objects, or append-only JSON-lines files) and
delivers every record to a Trailwarden manager, exactly once, over an
encrypted connection. Records wait in a bounded disk spool while the manager
is unreachable; file positions move only when the manager acknowledges.

Typical use:
  trailwarden-agent config --default > /etc/trailwarden/agent.toml   # then edit
  trailwarden-agent enroll --config /etc/trailwarden/agent.toml ...
  trailwarden-agent start --config /etc/trailwarden/agent.toml
  trailwarden-agent status --config /etc/trailwarden/agent.toml
"""


def _start(args: argparse.Namespace) -> int:
    from trailwarden.agent.run import run_agent

    try:
        config = load_agent_config(args.config)
    except ConfigError as exc:
        print(f"trailwarden-agent: {exc}", file=sys.stderr)
        return 2
    if not config.managers:
        print(f"trailwarden-agent: {args.config}: no managers configured", file=sys.stderr)
        return 2
    if not config.sources:
        print(f"trailwarden-agent: {args.config}: no [[sources]] configured", file=sys.stderr)
        return 2
    return run_agent(config)


def _status(args: argparse.Namespace) -> int:
    from trailwarden.agent.status import StatusError, format_status, read_status

    data_dir = args.data_dir
    if data_dir is None:
        try:
            data_dir = load_agent_config(args.config).agent.data_dir
        except ConfigError as exc:
            print(f"trailwarden-agent: {exc}", file=sys.stderr)
            return 2
    try:
        report = read_status(data_dir)
    except StatusError as exc:
        print(f"trailwarden-agent: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    if args.json:
        document = dict(report.status, running=report.running, age_s=round(report.age_s, 3))
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_status(report))
    return 0 if report.running else EXIT_NOT_RUNNING


def _config(args: argparse.Namespace) -> int:
    if args.default:
        sys.stdout.write(DEFAULT_CONFIG_TEXT)
        return 0
    try:
        load_agent_config(args.check)
    except ConfigError as exc:
        print(f"trailwarden-agent: {exc}", file=sys.stderr)
        return 2
    print(f"{args.check}: OK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trailwarden-agent",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log verbosity on stderr (default: info)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = sub.add_parser(
        "start",
        help="run the agent in the foreground until SIGTERM/SIGINT",
        description=(
            "Run the agent in the foreground: scan the configured sources, spool and send "
            "records, write <data_dir>/status.json every agent.status_interval_s. SIGTERM or "
            "SIGINT stops it in order within about delivery.shutdown_timeout_s + 10 s (a "
            "second signal stops without waiting for the manager). The agent must be "
            "enrolled first (<data_dir>/agent.key)."
        ),
    )
    start.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"agent configuration (TOML; default {DEFAULT_CONFIG_PATH})",
    )
    start.set_defaults(func=_start)

    status = sub.add_parser(
        "status",
        help="show whether the agent runs, its connection, backlog, files and counters",
        description=(
            "Read <data_dir>/status.json, written by the running agent, and show the "
            "connection, the backlog (spooled and in-flight batches), positions, the files "
            "being read and the counters. Exit status 0 if the agent is running, 3 if not."
        ),
    )
    where = status.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"read agent.data_dir from this configuration (default {DEFAULT_CONFIG_PATH})",
    )
    where.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"the agent's data directory (e.g. {DEFAULT_DATA_DIR})",
    )
    status.add_argument("--json", action="store_true", help="print status.json as JSON")
    status.set_defaults(func=_status)

    config = sub.add_parser(
        "config",
        help="print the default configuration, or check a configuration file",
        description="Print a commented default configuration, or check a file strictly.",
    )
    what = config.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--default", action="store_true", help="print the default configuration with comments"
    )
    what.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="check FILE (unknown keys, types, ranges) and exit 0 if it is valid",
    )
    config.set_defaults(func=_config)

    _register_enroll(sub)
    return parser


def _register_enroll(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``enroll`` lives in agent/enroll.py (its own engineer); wired here if present."""
    try:
        enroll = importlib.import_module("trailwarden.agent.enroll")
    except ModuleNotFoundError as exc:
        if exc.name != "trailwarden.agent.enroll":
            raise
        return
    register = getattr(enroll, "register", None)
    if register is not None:
        register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
