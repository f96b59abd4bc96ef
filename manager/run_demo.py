"""``trailwarden-manager run-demo``: the main job end to end, manager and agent on loopback.

What ``make run`` runs. Everything is real and nothing is in-process: the
manager (``trailwarden-manager start``) and the agent (``trailwarden-agent
enroll`` then ``start``) run as their own processes, talk TCP and TLS on
127.0.0.1, and the alerts land in the manager's Wazuh alert files. In order:

1. a fresh data directory (``var/run-demo`` by default) with a generated
   ``manager.toml``: free loopback ports for agents and enrollment, the
   bundled ruleset (or the ruleset flags given);
2. the manager starts; it generates its enrollment password
   (``manager/etc/authd.pass``) and certificate (``etc/sslmanager.cert``);
3. the agent enrolls through the enrollment listener with that password,
   verifying the manager's certificate, and gets its key;
4. the agent starts on the CloudTrail tree (the bundled samples by default);
5. progress comes from the status files both processes rewrite
   (``agent/status.json``, ``manager/var/status.json``); the run is complete
   when the agent has every record of the tree acknowledged (the manager
   acknowledges a batch only once its alerts are written) and the manager has
   analysed them all;
6. both get SIGTERM and must stop cleanly (exit status 0);
7. a summary: records read, events analysed, alerts by rule, file paths.

The engine alone, without processes or network, is ``trailwarden-manager demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from trailwarden.agent.cloudtrail_file import CloudTrailFileReader, Problem, ProblemKind
from trailwarden.agent.config import load_agent_config
from trailwarden.agent.discovery import SourceTree, scan_trees
from trailwarden.common.config import ConfigError
from trailwarden.manager.authd_password import PASSWORD_FILE
from trailwarden.manager.config import load_manager_config
from trailwarden.manager.status import STATUS_FILE
from trailwarden.manager.tls_identity import CERT_FILE

# Relative to the working directory: `make run` keeps it in the checkout's
# ignored var/ folder.
DEFAULT_DATA_DIR: Final = Path("var") / "run-demo"
# Written into a data directory this command created; only such a directory
# (or an empty one) is wiped at the next run, never a folder of someone else's.
MARKER_FILE: Final = ".trailwarden-run-demo"
AGENT_NAME: Final = "run-demo-agent"
LOOPBACK: Final = "127.0.0.1"
# Both processes rewrite their status file this often (the minimum either
# accepts is 0.1 s); progress and completion are read from those files.
STATUS_INTERVAL_S: Final = 0.2
POLL_INTERVAL_S: Final = 0.05
# The whole run after the processes started: 38 records take about a second.
DEFAULT_TIMEOUT_S: Final = 120.0
# Compiling the ruleset and opening both listeners; Wazuh's full ruleset takes seconds.
START_TIMEOUT_S: Final = 120.0
# Each process's ordered shutdown (both finish in well under a second here).
STOP_TIMEOUT_S: Final = 60.0
ENROLL_TIMEOUT_S: Final = 60.0
# A free port found by binding port 0 can be taken by another program before
# the manager binds it: then the manager exits at once and we try new ports.
PORT_ATTEMPTS: Final = 3
# Non-terminal progress output: at most one line per this interval.
PROGRESS_LINE_INTERVAL_S: Final = 0.5
LOG_TAIL_LINES: Final = 15

_COMMANDS: Final = {
    "trailwarden-manager": "trailwarden.manager.cli",
    "trailwarden-agent": "trailwarden.agent.cli",
}


class DemoError(Exception):
    """The run failed; the message says which step and where to look."""


@dataclass(frozen=True, slots=True)
class TreeCount:
    """What the agent will find in the tree (the same discovery and reader)."""

    records: int
    files: int
    digests: int


@dataclass(frozen=True, slots=True)
class DemoOptions:
    data_dir: Path
    tree: Path
    timeout_s: float = DEFAULT_TIMEOUT_S
    archives: bool = False
    # [analysis] keys of the manager configuration (the CLI's ruleset flags).
    analysis: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DemoResult:
    """The numbers of a finished run (what the summary prints)."""

    records_read: int
    records_acked: int
    events_analysed: int
    alerts_by_rule: dict[tuple[str, int, str], int]
    alerts_json: Path
    alerts_log: Path
    tree: TreeCount
    elapsed_s: float

    @property
    def alerts(self) -> int:
        return sum(self.alerts_by_rule.values())


# -- pieces -----------------------------------------------------------------------------------


def console_command(name: str) -> list[str]:
    """argv for one of our console scripts: the installed script next to this
    interpreter, else the same module run by this interpreter."""
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", _COMMANDS[name]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def count_tree(tree: Path) -> TreeCount:
    """Records, files and digest files below ``tree``, found and read as the agent does.

    Raises:
        DemoError: the tree holds no CloudTrail records.
    """
    scan = scan_trees([SourceTree(str(tree))])
    records = digests = files = 0
    for candidate in scan.candidates:
        counted = 0
        for item in CloudTrailFileReader(candidate.path):
            if isinstance(item, Problem):
                if item.kind is ProblemKind.DIGEST_FILE:
                    digests += 1
                continue
            counted += 1
        records += counted
        files += counted > 0
    if records == 0:
        raise DemoError(f"{tree}: no CloudTrail records found (expected AWSLogs/... below it)")
    return TreeCount(records, files, digests)


def prepare_data_dir(data_dir: Path) -> None:
    """Empty ``data_dir`` for a fresh run, if it is ours (or empty, or new).

    Raises:
        DemoError: the directory holds files this command did not create.
    """
    if data_dir.exists():
        if not data_dir.is_dir():
            raise DemoError(f"--data-dir {data_dir} exists and is not a directory")
        if any(data_dir.iterdir()) and not (data_dir / MARKER_FILE).exists():
            raise DemoError(
                f"--data-dir {data_dir} is not empty and was not created by run-demo "
                f"(no {MARKER_FILE}); choose another directory or empty it"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, mode=0o750)
    (data_dir / MARKER_FILE).write_text("Created by `trailwarden-manager run-demo`; wiped by it.\n")


def _toml(value: object) -> str:
    """A TOML value: strings as JSON strings (valid TOML basic strings), lists, numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _toml_tables(top: dict[str, object], tables: dict[str, dict[str, object]]) -> str:
    lines = [f"{key} = {_toml(value)}" for key, value in top.items()]
    for name, values in tables.items():
        lines.append(f"\n[{name}]")  # a name "[x]" makes the array table [[x]]
        lines.extend(f"{k} = {_toml(v)}" for k, v in values.items() if v is not None)
    return "# Generated by `trailwarden-manager run-demo`.\n" + "\n".join(lines) + "\n"


def write_manager_config(
    path: Path, data_dir: Path, *, port: int, enrollment_port: int, options: DemoOptions
) -> None:
    """The manager's configuration: loopback listeners, fast status; checked as `start` will."""
    path.write_text(
        _toml_tables(
            {},
            {
                "manager": {"data_dir": data_dir, "status_interval_s": STATUS_INTERVAL_S},
                "remote": {"listen_address": LOOPBACK, "port": port},
                "analysis": options.analysis,
                "alerts": {"logall_json": options.archives},
                "enrollment": {
                    "listen_address": LOOPBACK,
                    "port": enrollment_port,
                    "use_password": True,
                    # The agent verifies the generated certificate against this address.
                    "cert_hosts": [LOOPBACK, "localhost"],
                },
            },
        )
    )
    try:
        load_manager_config(path)
    except ConfigError as exc:
        raise DemoError(f"the generated manager configuration is wrong (a bug): {exc}") from None


def write_agent_config(path: Path, data_dir: Path, *, port: int, tree: Path) -> None:
    path.write_text(
        _toml_tables(
            {"managers": [f"{LOOPBACK}:{port}"]},
            {
                "agent": {
                    "data_dir": data_dir,
                    "name": AGENT_NAME,
                    "status_interval_s": STATUS_INTERVAL_S,
                },
                # A few dozen records: seal batches promptly, not after the default 0.5 s.
                "delivery": {"linger_ms": 50},
                # The tree is complete before the agent starts: no file is still being written.
                "collection": {"settle_ms": 0},
                "[sources]": {"kind": "cloudtrail", "path": tree},
            },
        )
    )
    try:
        load_agent_config(path)
    except ConfigError as exc:
        raise DemoError(f"the generated agent configuration is wrong (a bug): {exc}") from None


def read_json(path: Path) -> dict[str, Any]:
    """A status file, or {} while it does not exist yet or is being replaced."""
    try:
        with open(path, "rb") as handle:
            doc = json.loads(handle.read())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def alerts_by_rule(alerts_json: Path) -> dict[tuple[str, int, str], int]:
    """(rule id, level, description) -> alerts, from alerts.json."""
    counts: Counter[tuple[str, int, str]] = Counter()
    if not alerts_json.exists():
        return {}
    with open(alerts_json, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                rule = json.loads(line)["rule"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DemoError(f"{alerts_json}:{number}: not an alert line ({exc})") from None
            counts[(str(rule["id"]), int(rule.get("level", 0)), str(rule["description"]))] += 1
    return dict(sorted(counts.items(), key=lambda item: (int(item[0][0]), item[0][1:])))


class Child:
    """One of our processes, its output in a log file."""

    def __init__(self, what: str, argv: Sequence[str], log_path: Path) -> None:
        self.what = what
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    @property
    def exited(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout_s: float) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time. The exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise DemoError(
                    f"the {self.what} did not stop within {timeout_s:g} s of SIGTERM and was "
                    f"killed; see {self.log_path}"
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


# -- the run ----------------------------------------------------------------------------------


class Progress:
    """One progress line: rewritten in place on a terminal, else printed when it changes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._last = ""
        self._last_at = 0.0

    def show(self, text: str, *, final: bool = False) -> None:
        if self._tty:
            self._out.write("\r" + text.ljust(len(self._last)) + ("\n" if final else ""))
            self._out.flush()
        else:
            now = time.monotonic()
            if text != self._last and (final or now - self._last_at >= PROGRESS_LINE_INTERVAL_S):
                self._out.write(text + "\n")
                self._out.flush()
                self._last_at = now
            elif not final:
                return
        self._last = text


class Demo:
    """One run; ``run`` returns the result or raises DemoError (processes stopped)."""

    def __init__(self, options: DemoOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        base = options.data_dir.absolute()
        self.base = base
        self.manager_dir = base / "manager"
        self.agent_dir = base / "agent"
        self.manager_config = base / "manager.toml"
        self.agent_config = base / "agent.toml"
        self.manager: Child | None = None
        self.agent: Child | None = None

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self) -> DemoResult:
        try:
            return self._run()
        finally:
            for child in (self.agent, self.manager):
                if child is not None:
                    child.kill()  # only after a failure: a clean run stopped them already

    def _run(self) -> DemoResult:
        options = self.options
        tree = options.tree.absolute()
        count = count_tree(tree)
        prepare_data_dir(self.base)
        self.say(
            f"CloudTrail tree {tree}: {count.records} records in {count.files} files"
            + (f" (and {count.digests} digest file(s), skipped)" if count.digests else "")
        )
        started = time.monotonic()
        port, enrollment_port = self._start_manager()
        self.say(
            f"Manager running (pid {self._pid(self.manager)}): agents on {LOOPBACK}:{port}, "
            f"enrollment on {LOOPBACK}:{enrollment_port}; log {self.base}/manager.log"
        )
        self._enroll(enrollment_port)
        write_agent_config(self.agent_config, self.agent_dir, port=port, tree=tree)
        self.agent = Child(
            "agent",
            [*console_command("trailwarden-agent"), "start", "--config", str(self.agent_config)],
            self.base / "agent.log",
        )
        self.say(f"Agent running (pid {self._pid(self.agent)}); log {self.base}/agent.log")
        agent_status, manager_status = self._wait_until_done(count.records)
        for child in (self.agent, self.manager):
            assert child is not None
            code = child.stop(STOP_TIMEOUT_S)
            if code != 0:
                raise DemoError(
                    f"the {child.what} exited with status {code} on SIGTERM; see {child.log_path}:"
                    f"\n{child.log_tail()}"
                )
        self.say("Agent and manager stopped cleanly.")
        # Their last status files, written as they stopped, hold the final counters.
        agent_status = read_json(self.agent_dir / "status.json") or agent_status
        manager_status = read_json(self.manager_dir / STATUS_FILE) or manager_status
        alerts_dir = self.manager_dir / "logs" / "alerts"
        counters = agent_status.get("counters", {})
        return DemoResult(
            records_read=int(counters.get("records_read", 0)),
            records_acked=int(counters.get("records_acked", 0)),
            events_analysed=int(manager_status.get("summary", {}).get("events_analysed", 0)),
            alerts_by_rule=alerts_by_rule(alerts_dir / "alerts.json"),
            alerts_json=alerts_dir / "alerts.json",
            alerts_log=alerts_dir / "alerts.log",
            tree=count,
            elapsed_s=time.monotonic() - started,
        )

    @staticmethod
    def _pid(child: Child | None) -> int:
        assert child is not None
        return child.proc.pid

    def _start_manager(self) -> tuple[int, int]:
        """Start the manager on free ports; return (agent port, enrollment port)."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port, enrollment_port = free_port(), free_port()
            while enrollment_port == port:
                enrollment_port = free_port()
            write_manager_config(
                self.manager_config,
                self.manager_dir,
                port=port,
                enrollment_port=enrollment_port,
                options=self.options,
            )
            manager = Child(
                "manager",
                [
                    *console_command("trailwarden-manager"),
                    "start",
                    "--config",
                    str(self.manager_config),
                ],
                self.base / "manager.log",
            )
            self.manager = manager
            status_path = self.manager_dir / STATUS_FILE
            deadline = time.monotonic() + START_TIMEOUT_S
            # The first status file is written once the pipeline and both listeners run.
            while read_json(status_path).get("pid") != manager.proc.pid:
                code = manager.exited
                if code is not None:
                    log = manager.log_path.read_text(errors="replace")
                    if "cannot listen" in log and attempt < PORT_ATTEMPTS:
                        self.say("A chosen port was taken meanwhile; trying other ports.")
                        break
                    raise DemoError(
                        f"the manager exited with status {code} while starting; see "
                        f"{manager.log_path}:\n{manager.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"the manager did not start within {START_TIMEOUT_S:g} s; see "
                        f"{manager.log_path}:\n{manager.log_tail()}"
                    )
                time.sleep(POLL_INTERVAL_S)
            else:
                return port, enrollment_port
        raise DemoError("no free loopback ports for the manager")  # pragma: no cover

    def _enroll(self, enrollment_port: int) -> None:
        password = self.manager_dir / PASSWORD_FILE
        cert = self.manager_dir / CERT_FILE
        argv = [
            *console_command("trailwarden-agent"),
            "enroll",
            "--manager",
            f"{LOOPBACK}:{enrollment_port}",
            "--password-file",
            str(password),
            "--ca-file",
            str(cert),
            "--name",
            AGENT_NAME,
            "--data-dir",
            str(self.agent_dir),
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=ENROLL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise DemoError(f"enrollment did not finish within {ENROLL_TIMEOUT_S:g} s") from None
        if done.returncode != 0:
            raise DemoError(
                f"`{' '.join(argv)}` failed (status {done.returncode}):\n"
                f"{done.stderr.strip()}\n{done.stdout.strip()}"
            )
        self.say(f"{done.stdout.strip()} (password from {password}, manager verified by {cert})")

    def _wait_until_done(self, expected: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Poll both status files until every record is acknowledged and analysed."""
        agent, manager = self.agent, self.manager
        assert agent is not None and manager is not None
        progress = Progress(self.out)
        deadline = time.monotonic() + self.options.timeout_s
        agent_status: dict[str, Any] = {}
        manager_status: dict[str, Any] = {}
        while True:
            for child in (agent, manager):
                code = child.exited
                if code is not None:
                    progress.show(progress_line(agent_status, manager_status, expected), final=True)
                    raise DemoError(
                        f"the {child.what} exited with status {code} during the run; see "
                        f"{child.log_path}:\n{child.log_tail()}"
                    )
            agent_status = read_json(self.agent_dir / "status.json") or agent_status
            manager_status = read_json(self.manager_dir / STATUS_FILE) or manager_status
            done = is_done(agent_status, manager_status, expected)
            progress.show(progress_line(agent_status, manager_status, expected), final=done)
            if done:
                return agent_status, manager_status
            if time.monotonic() > deadline:
                progress.show(progress_line(agent_status, manager_status, expected), final=True)
                raise DemoError(
                    f"not every record was acknowledged and analysed within "
                    f"{self.options.timeout_s:g} s; see {agent.log_path} and {manager.log_path}"
                    f"\nagent:\n{agent.log_tail()}\nmanager:\n{manager.log_tail()}"
                )
            time.sleep(POLL_INTERVAL_S)


def is_done(agent_status: dict[str, Any], manager_status: dict[str, Any], expected: int) -> bool:
    """Every record acknowledged by the manager (so its alerts are written), and the
    manager's status written after that (every record analysed, no batch in progress),
    so the counters shown last are final."""
    counters = agent_status.get("counters", {})
    backlog = agent_status.get("backlog", {})
    pipeline = manager_status.get("components", {}).get("pipeline", {})
    return bool(
        counters.get("records_acked", 0) >= expected
        and backlog.get("spooled_records", 1) == 0
        and backlog.get("in_flight", 1) == 0
        and pipeline.get("events_analysed", 0) >= expected
        and pipeline.get("in_progress_batches", 1) == 0
    )


def progress_line(
    agent_status: dict[str, Any], manager_status: dict[str, Any], expected: int
) -> str:
    counters = agent_status.get("counters", {})
    summary = manager_status.get("summary", {})
    return (
        f"  records read {counters.get('records_read', 0)}/{expected}, "
        f"acknowledged {counters.get('records_acked', 0)}; "
        f"events analysed {summary.get('events_analysed', 0)}, "
        f"alerts {summary.get('alerts_written', 0)}"
    )


def print_summary(result: DemoResult, out: TextIO) -> None:
    write: Callable[[str], Any] = out.write
    write(f"\nRecords read:     {result.records_read} ({result.records_acked} acknowledged)\n")
    write(f"Events analysed:  {result.events_analysed}\n")
    write(f"Alerts:           {result.alerts} in {result.elapsed_s:.1f} s\n")
    if result.alerts_by_rule:
        write(f"\n  {'rule':>6}  {'level':>5}  {'count':>5}  description\n")
        for (rule_id, level, description), count in result.alerts_by_rule.items():
            write(f"  {rule_id:>6}  {level:>5}  {count:>5}  {description}\n")
    write("\nAlert files (Wazuh's formats):\n")
    write(f"  {result.alerts_json}\n  {result.alerts_log}\n")
    out.flush()


# -- the command ------------------------------------------------------------------------------


def cmd_run_demo(args: argparse.Namespace) -> int:
    from trailwarden.manager import demo

    tree: Path = args.tree or demo.sample_tree()
    if not tree.is_dir():
        print(f"run-demo: --tree {tree}: not a directory", file=sys.stderr)
        return 2
    if not args.timeout_s > 0:
        print(f"run-demo: --timeout-s must be positive, got {args.timeout_s}", file=sys.stderr)
        return 2
    options = DemoOptions(
        data_dir=args.data_dir,
        tree=tree,
        timeout_s=args.timeout_s,
        archives=args.archives,
        analysis=analysis_from_args(args),
    )
    try:
        result = Demo(options, sys.stdout).run()
    except DemoError as exc:
        print(f"run-demo: {exc}", file=sys.stderr)
        return 1
    print_summary(result, sys.stdout)
    if args.summary_json is not None:
        _write_summary_json(args.summary_json, result)
    return 0


def _write_summary_json(path: Path, result: DemoResult) -> None:
    doc = {
        "records_read": result.records_read,
        "records_acked": result.records_acked,
        "events_analysed": result.events_analysed,
        "tree_records": result.tree.records,
        "alerts": [
            {"rule_id": rule_id, "level": level, "description": description, "count": count}
            for (rule_id, level, description), count in result.alerts_by_rule.items()
        ],
        "alerts_json": str(result.alerts_json),
        "alerts_log": str(result.alerts_log),
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def analysis_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ruleset flags as the manager configuration's [analysis] keys."""

    def absolute(paths: Sequence[Path]) -> list[str]:
        return [str(p.absolute()) for p in paths]

    table: dict[str, Any] = {}
    if args.wazuh_ruleset is not None:
        table["wazuh_ruleset"] = str(args.wazuh_ruleset.absolute())
    if args.rules_dir:
        table["rules_dirs"] = absolute(args.rules_dir)
    if args.decoders_dir:
        table["decoders_dirs"] = absolute(args.decoders_dir)
    if args.lists_dir is not None:
        table["lists_dir"] = str(args.lists_dir.absolute())
    if args.rule_exclude:
        table["rule_excludes"] = list(args.rule_exclude)
    if args.decoder_exclude:
        table["decoder_excludes"] = list(args.decoder_exclude)
    if args.log_alert_level is not None:
        table["log_alert_level"] = args.log_alert_level
    return table


def register(subparsers: Any, add_ruleset_args: Callable[[argparse.ArgumentParser], None],
             ruleset_help: str) -> None:
    p = subparsers.add_parser(
        "run-demo",
        help="the main job end to end: manager and an enrolled agent on loopback, sample files in,"
        " alert files out",
        description="Run the whole pipeline on this machine with real processes: start a manager"
        " on 127.0.0.1 (free ports, generated configuration), enroll an agent through its"
        " enrollment listener (TLS, the generated password), start the agent on a CloudTrail tree"
        " (default: the bundled samples), show progress, stop both once every record is"
        " acknowledged and analysed, and print records read, events analysed, alerts by rule and"
        " the paths of alerts.json and alerts.log. Everything lives under --data-dir, wiped at"
        " the start of each run (manager/, agent/, their configurations and logs)."
        " Exit status: 0 done, 1 a step failed (the message says which and names the log),"
        " 2 bad usage. `demo` is the engine alone, without processes or network.",
        epilog=ruleset_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"where the run's files go (default: {DEFAULT_DATA_DIR}); emptied first, and only"
        f" if empty or made by run-demo",
    )
    p.add_argument("--tree", type=Path, metavar="DIR",
                   help="a CloudTrail tree (AWSLogs/... below it) instead of the bundled samples")
    p.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"give up if not done this long after the agent starts (default"
                        f" {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--archives", action="store_true",
                   help="also have the manager write every event to logs/archives/archives.json")
    p.add_argument("--summary-json", type=Path, metavar="FILE",
                   help="also write the summary as JSON to FILE")
    add_ruleset_args(p)
    p.set_defaults(func=cmd_run_demo)

