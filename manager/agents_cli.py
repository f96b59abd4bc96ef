"""``trailwarden-manager agents add|list|remove|show``: manage_agents for client.keys.

The commands work on ``<data_dir>/etc/client.keys`` through the agent registry
(``agent_registry.py``), under the same lock as the enrollment listener, so
they are safe while the manager runs. Connection status comes from the
server's ``<data_dir>/var/agent-state.json`` (``agents_view.py``).

Exit status: 0 done; 1 no such agent, or the change is refused (duplicate);
2 bad usage or unusable files.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from trailwarden.common.config import ConfigError
from trailwarden.common.enrollment_protocol import is_valid_agent_name, is_valid_ip
from trailwarden.common.keys import AgentKey, new_agent_key
from trailwarden.manager.agent_registry import AgentRegistry, Registry, RegistryError
from trailwarden.manager.agents_view import (
    DEFAULT_HEARTBEAT_INTERVAL_S,
    AgentState,
    AgentStateError,
    connection_status,
    read_agent_state,
)
from trailwarden.manager.enrollment_policy import duration

DEFAULT_DATA_DIR: Final = Path("/var/lib/trailwarden-manager")

_EPILOG = """\
Files: DATA_DIR/etc/client.keys (Wazuh's format, mode 0600),
DATA_DIR/var/agent-registry.json (registration dates and groups) and
DATA_DIR/var/agent-state.json (connections, written by the running manager).
Status: "active" means connected and heard from within two heartbeats (the
manager's [remote].heartbeat_interval_s, as recorded in agent-state.json, else
--config's, else 10 s); "disconnected" means enrolled and seen before;
"never connected" means enrolled only.
"""


class _Refused(Exception):
    """The command cannot do what was asked (exit status 1)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agents`` and its subcommands to ``trailwarden-manager``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"manager data directory (default: manager.data_dir in --config, else"
        f" {DEFAULT_DATA_DIR})",
    )
    common.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the manager's configuration: its data_dir and heartbeat interval are used",
    )
    agents = subparsers.add_parser(
        "agents",
        help="add, list, remove or show enrolled agents (like Wazuh's manage_agents)",
        description="Manage the agents in DATA_DIR/etc/client.keys. Safe while the manager"
        " runs: changes take the same lock as the enrollment listener.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = agents.add_subparsers(dest="agents_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "add",
        parents=[common],
        help="add an agent and print its key line",
        description="Add an agent by hand, as manage_agents -a. Prints its client.keys line"
        " (or, with --format base64, Wazuh's import string for manage_agents -i); install"
        " the line as the agent's DATA_DIR/agent.key, mode 0600.",
    )
    p.add_argument("name", help="agent name: 2-128 of A-Z a-z 0-9 . _ -")
    p.add_argument(
        "--ip", default="any", help="address or network (CIDR) it connects from (default: any)"
    )
    p.add_argument("--id", dest="agent_id", help="use this id (default: the next free one)")
    p.add_argument(
        "--key", help="use this key, e.g. to restore an agent (default: a new random key)"
    )
    p.add_argument(
        "--format",
        choices=("line", "base64"),
        default="line",
        help="how to print the key (default: line)",
    )
    p.set_defaults(func=cmd_add)

    p = sub.add_parser(
        "list",
        parents=[common],
        help="list agents with status, last seen and events received",
        description="List the enrolled agents: id, name, IP, status, last seen, events received.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="one JSON document with every field")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "remove",
        parents=[common],
        help="remove an agent (its key stops working)",
        description="Remove an agent as Wazuh does: its line stays in client.keys as"
        " 'ID !name ip key' so its id is never reused; --purge deletes the line. A removed"
        " agent that enrolls again gets a new id.",
    )
    p.add_argument("agent", metavar="ID_OR_NAME")
    p.add_argument("--purge", action="store_true", help="delete the line instead of marking it")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser(
        "show",
        parents=[common],
        help="show everything known about one agent",
        description="Show one agent: key fields, registration, connection and counters.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("agent", metavar="ID_OR_NAME")
    p.add_argument("--json", action="store_true", help="as a JSON object")
    p.add_argument(
        "--key", action="store_true", help="print only the agent's key line (manage_agents -e)"
    )
    p.set_defaults(func=cmd_show)


@dataclass(frozen=True, slots=True)
class _Where:
    data_dir: Path
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S


def _where(args: argparse.Namespace) -> _Where:
    if args.config is None:
        return _Where(args.data_dir or DEFAULT_DATA_DIR)
    # Only when asked for: the full configuration schema imports every output.
    from trailwarden.manager.config import load_manager_config

    config = load_manager_config(args.config)
    return _Where(args.data_dir or config.manager.data_dir, config.remote.heartbeat_interval_s)


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        action(args, _where(args))
    except _Refused as exc:
        print(f"agents {args.agents_command}: {exc}", file=sys.stderr)
        return 1
    except (RegistryError, AgentStateError, ConfigError) as exc:
        print(f"agents {args.agents_command}: {exc}", file=sys.stderr)
        return 2
    return 0


# -- add ------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    return _run(args, _add)


def _add(args: argparse.Namespace, where: _Where) -> None:
    name, ip = args.name, args.ip
    if not is_valid_agent_name(name):
        raise _Refused(f"agent name {name!r} is invalid: use 2 to 128 of A-Z a-z 0-9 . _ -")
    if not is_valid_ip(ip):
        raise _Refused(f"--ip {ip!r} is not 'any', an address or a network")
    registry = AgentRegistry(where.data_dir)

    def change(current: Registry) -> tuple[Registry, AgentKey]:
        holder = current.keys.by_name(name)
        if holder is not None:
            raise _Refused(
                f"name {name!r} is taken by agent {holder.agent_id}; remove it first"
                f" (trailwarden-manager agents remove {holder.agent_id})"
            )
        if ip != "any":
            clash = next((a for a in current.keys if a.ip == ip), None)
            if clash is not None:
                raise _Refused(f"IP {ip} is already registered for agent {clash.agent_id}")
        if args.agent_id is None and args.key is None:
            return current.with_new_agent(name, ip, now=time.time(), origin="agents add")
        agent_id = args.agent_id or current.keys.next_id()
        if current.keys.by_id(agent_id) is not None:
            raise _Refused(f"id {agent_id} is taken by an active agent")
        if current.keys.is_removed(agent_id):
            raise _Refused(f"id {agent_id} belonged to a removed agent; ids are not reused")
        try:
            agent = AgentKey(agent_id, name, ip, args.key or new_agent_key())
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        return current.with_agent(agent, now=time.time(), origin="agents add"), agent

    agent = registry.update(change)
    line = f"{agent.agent_id} {agent.name} {agent.ip} {agent.key}"
    if args.format == "base64":
        print(base64.b64encode(line.encode("ascii")).decode("ascii"))
        how = "import it on a Wazuh agent with manage_agents -i"
    else:
        print(line)
        how = "install the line as the agent's DATA_DIR/agent.key (mode 0600)"
    print(f"Agent {agent.agent_id} '{agent.name}' added; {how}.", file=sys.stderr)


# -- remove ---------------------------------------------------------------------


def cmd_remove(args: argparse.Namespace) -> int:
    return _run(args, _remove)


def _remove(args: argparse.Namespace, where: _Where) -> None:
    registry = AgentRegistry(where.data_dir)

    def change(current: Registry) -> tuple[Registry, AgentKey]:
        agent = current.find(args.agent)
        if agent is None:
            raise _Refused(f"no enrolled agent with id or name {args.agent!r}")
        return current.without_agent(agent.agent_id, purge=args.purge), agent

    agent = registry.update(change)
    how = "purged" if args.purge else "removed"
    print(f"Agent {agent.agent_id} '{agent.name}' {how}.")


# -- list and show --------------------------------------------------------------


def agent_record(
    agent: AgentKey,
    registry: Registry,
    state: AgentState,
    now: float,
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
) -> dict[str, Any]:
    """Everything known about one agent, as JSON-ready values (``--json``)."""
    activity = state.activity(agent.agent_id)
    record = registry.registration(agent.agent_id)
    return {
        "id": agent.agent_id,
        "name": agent.name,
        "ip": agent.ip,
        "status": connection_status(activity, now, heartbeat_interval_s).value,
        "registered": record.registered if record else None,
        "origin": record.origin if record else None,
        "groups": list(record.groups) if record else [],
        "connected_since": activity.connected_since if activity else None,
        "last_seen": activity.last_seen if activity else None,
        "last_peer": activity.last_peer if activity else None,
        "events_received": activity.events_received if activity else 0,
        "bytes_received": activity.bytes_received if activity else 0,
        "batches_received": activity.batches_received if activity else 0,
        "last_batch_seq": activity.last_batch_seq if activity else None,
    }


def _load(where: _Where) -> tuple[Registry, AgentState]:
    return AgentRegistry(where.data_dir).read(), read_agent_state(where.data_dir)


def cmd_list(args: argparse.Namespace) -> int:
    return _run(args, _list)


def _list(args: argparse.Namespace, where: _Where) -> None:
    registry, state = _load(where)
    now = time.time()
    hb = state.heartbeat_or(where.heartbeat_interval_s)
    records = [agent_record(a, registry, state, now, hb) for a in registry.keys]
    if args.json:
        print(json.dumps({"agents": records}, indent=2))
        return
    if not records:
        print(f"No agents enrolled in {where.data_dir / 'etc' / 'client.keys'}.")
        return
    header = ("ID", "NAME", "IP", "STATUS", "LAST SEEN", "EVENTS")
    rows = [
        (
            r["id"],
            r["name"],
            r["ip"],
            r["status"],
            _ago(r["last_seen"], now),
            str(r["events_received"]),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_show(args: argparse.Namespace) -> int:
    return _run(args, _show)


def _show(args: argparse.Namespace, where: _Where) -> None:
    registry, state = _load(where)
    agent = registry.find(args.agent)
    if agent is None:
        raise _Refused(f"no enrolled agent with id or name {args.agent!r}")
    if args.key:
        print(f"{agent.agent_id} {agent.name} {agent.ip} {agent.key}")
        return
    now = time.time()
    record = agent_record(
        agent, registry, state, now, state.heartbeat_or(where.heartbeat_interval_s)
    )
    if args.json:
        print(json.dumps(record, indent=2))
        return
    registered = _when(record["registered"], now)
    if record["origin"]:
        registered += f" ({record['origin']})"
    lines = [
        ("ID", record["id"]),
        ("Name", record["name"]),
        ("IP", record["ip"]),
        ("Status", record["status"]),
        ("Registered", registered),
        ("Groups", ",".join(record["groups"]) or "-"),
        ("Connected since", _when(record["connected_since"], now)),
        ("Last seen", _when(record["last_seen"], now)),
        ("Last peer", record["last_peer"] or "-"),
        ("Events received", str(record["events_received"])),
        ("Bytes received", str(record["bytes_received"])),
        ("Batches received", str(record["batches_received"])),
        (
            "Last batch seq",
            "-" if record["last_batch_seq"] is None else str(record["last_batch_seq"]),
        ),
    ]
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        print(f"{(label + ':').ljust(width)} {value}")


def _ago(when: float | None, now: float) -> str:
    return "-" if when is None else f"{duration(max(0.0, now - when))} ago"


def _when(when: float | None, now: float) -> str:
    if when is None:
        return "-"
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({_ago(when, now)})"
