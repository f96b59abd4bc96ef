"""``trailwarden-manager start``: wiring the manager together, signals, ordered shutdown.

``Manager`` builds the parts from the configuration and owns their lifecycle.
Start-up goes down the data path's dependencies: the batch journal recovers
(it may cut the alert files back), the alert files open, the network outputs
start, the pipeline starts, and only then does the agent listener accept
connections, followed by the enrollment listener and the status writer.

``shutdown`` is the one ordered way out (SIGTERM, SIGINT, or a fatal error),
with a timeout on every wait:

1. stop accepting connections (agents and enrollment);
2. stop taking batches: any arriving now stays in its agent's spool;
3. let the pipeline finish what it holds (analyse, write, fsync, acknowledge);
4. say Close(SHUTDOWN) to every agent and close the connections;
5. close the pipeline: journal, alert files (final fsync), network outputs;
6. write the final agent state and status.

A step that runs out of time is logged and the next one runs anyway; what was
not acknowledged is resent by the agents, and the journal makes sure it is
analysed once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from trailwarden.common.config import ConfigError
from trailwarden.common.process_runtime import (
    MANAGER_GC_THRESHOLDS,
    event_loop_runner,
    settle_collector,
)
from trailwarden.manager.alert_files import AlertFiles, AlertFilesError, FsyncPolicy
from trailwarden.manager.batch_journal import BatchJournal, JournalError
from trailwarden.manager.config import (
    ManagerConfig,
    default_config_text,
    indexer_config,
    load_manager_config,
    mqtt_config,
    read_password,
    ruleset_layout,
)
from trailwarden.manager.flow_control import FlowControl
from trailwarden.manager.outputs import AlertSink, Stats
from trailwarden.manager.pipeline import AnalysisPipeline
from trailwarden.manager.ruleset_files import RulesetFilesError, read_sources
from trailwarden.manager.server import RemoteServer
from trailwarden.manager.status import STATUS_FILE, StatusWriter
from trailwarden.rules.engine import Engine

log = logging.getLogger("trailwarden.manager")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Agents listed with their events/s in the status (the busiest ones).
BUSIEST_AGENTS = 10


class StartupError(Exception):
    """The manager cannot start; the message says what to fix."""


def load_engine(config: ManagerConfig) -> Engine:
    """Compile the ruleset ``[analysis]`` selects.

    Raises:
        StartupError: a folder is missing or the ruleset has errors (listed, with file:line).
    """
    try:
        layout, options = ruleset_layout(config.analysis)
        engine, problems = Engine.compile(read_sources(layout), options)
    except RulesetFilesError as exc:
        raise StartupError(f"ruleset: {exc}") from None
    errors = [p for p in problems if p.severity == "error"]
    for problem in problems:
        if problem.severity != "error":
            log.warning("Ruleset: %s", problem)
    if errors:
        listed = "\n".join(str(p) for p in errors[:50])
        more = f"\n... and {len(errors) - 50} more" if len(errors) > 50 else ""
        raise StartupError(
            f"the ruleset has {len(errors)} error(s); fix them (see `trailwarden-manager "
            f"validate-rules`):\n{listed}{more}"
        )
    log.info(
        "Ruleset loaded: %d rules, %d decoder names, alerts from level %d.",
        len(engine.tree.rules),
        len(engine.decoders.names),
        options.log_alert_level,
    )
    return engine


class Manager:
    """Every part of a running manager, started and stopped in order."""

    def __init__(self, config: ManagerConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.data_dir = config.manager.data_dir
        self.stopped = asyncio.Event()
        self.fatal: BaseException | None = None
        self._journal: BatchJournal | None = None
        self._files: AlertFiles | None = None
        self._sinks: list[AlertSink] = []
        self.flow: FlowControl | None = None
        self.pipeline: AnalysisPipeline | None = None
        self.remote: RemoteServer | None = None
        self._enrollment: Any = None
        self._status: StatusWriter | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._shutting_down = False

    # -- start ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; on failure, stop what started and raise.

        Raises:
            StartupError: a part could not start (the message says which and why).
        """
        try:
            await self._start()
        except StartupError:
            await self._abort_start()
            raise
        except (OSError, AlertFilesError, JournalError, ValueError) as exc:
            await self._abort_start()
            raise StartupError(str(exc)) from None

    async def _start(self) -> None:
        cfg = self.config
        data_dir = self.data_dir
        for sub in ("etc", "var", "logs"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o750)
        policy = cfg.alerts.fsync
        journal = BatchJournal(data_dir, sync_each_group=policy is FsyncPolicy.BATCH)
        report = await asyncio.to_thread(journal.open)
        self._journal = journal
        log.info("Batch journal recovered: %s.", report.describe())
        files = AlertFiles(cfg.alerts.files_config(data_dir))
        await files.start()
        self._files = files
        await self._start_sinks()
        self.flow = FlowControl(cfg.analysis.high_water_events, cfg.analysis.high_water_bytes)
        self.pipeline = AnalysisPipeline(
            self.engine,
            files,
            journal,
            self.flow,
            manager_name=cfg.manager_name,
            sinks=self._sinks,
            fsync=policy,
            fsync_interval_ms=cfg.alerts.fsync_interval_ms,
            logall=cfg.alerts.logall_json,
            max_group_batches=cfg.analysis.max_group_batches,
            max_group_events=cfg.analysis.max_group_events,
            on_fatal=self._on_fatal,
        )
        self.pipeline.start()
        self.remote = RemoteServer(cfg.remote, data_dir, self.pipeline, self.flow)
        try:
            await self.remote.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for agents on {cfg.remote.listen_address}:{cfg.remote.port}: "
                f"{exc.strerror or exc}"
            ) from None
        if cfg.enrollment.enabled:
            await self._start_enrollment()
        self._status = StatusWriter(
            data_dir / STATUS_FILE,
            self.component_stats,
            manager_name=cfg.manager_name,
            listen=f"{cfg.remote.listen_address}:{self.remote.port}",
            interval_s=cfg.manager.status_interval_s,
        )
        self._status_task = asyncio.create_task(self._status.run(), name="status-writer")

    async def _start_sinks(self) -> None:
        cfg = self.config
        if cfg.indexer is not None:
            from trailwarden.manager.indexer import IndexerOutput

            password = None
            if cfg.indexer.password_file is not None:
                password = read_password(cfg.indexer.password_file, "indexer")
            sink: AlertSink = IndexerOutput(indexer_config(cfg, password=password))
            await sink.start()
            self._sinks.append(sink)
        if cfg.mqtt is not None:
            from trailwarden.manager.mqtt import MqttOutput

            password = None
            if cfg.mqtt.password_file is not None:
                password = read_password(cfg.mqtt.password_file, "mqtt")
            mqtt: AlertSink = MqttOutput(mqtt_config(cfg, password=password))
            await mqtt.start()
            self._sinks.append(mqtt)

    async def _start_enrollment(self) -> None:
        from trailwarden.manager.enrollment import EnrollmentServer, EnrollmentSetupError

        assert self.remote is not None
        enrollment = EnrollmentServer(
            self.config.enrollment,
            self.data_dir,
            on_keys_changed=self.remote.keys_changed,
            manager_name=self.config.manager_name,
            heartbeat_interval_s=self.config.remote.heartbeat_interval_s,
        )
        try:
            await enrollment.start()
        except EnrollmentSetupError as exc:
            raise StartupError(str(exc)) from None
        self._enrollment = enrollment

    async def _abort_start(self) -> None:
        timeout = self.config.manager.shutdown_timeout_s
        if self._enrollment is not None:
            await self._enrollment.close(timeout)
        if self.remote is not None:
            self.remote.stop_accepting()
            await self.remote.close_sessions(timeout)
            await self.remote.close(timeout)
        if self.pipeline is not None:
            await self.pipeline.close(timeout)
        else:
            for sink in self._sinks:
                await sink.close(timeout)
            if self._files is not None:
                await self._files.close(timeout)
            if self._journal is not None:
                self._journal.close()

    # -- running -----------------------------------------------------------------------------

    def component_stats(self) -> dict[str, Stats]:
        out: dict[str, Stats] = {}
        if self.remote is not None:
            out["remote"] = self.remote.stats()
            out["busiest_agents"] = self.remote.busiest_agents(BUSIEST_AGENTS)
        if self.flow is not None:
            out["flow"] = dict(self.flow.stats())
        if self.pipeline is not None:
            out["pipeline"] = self.pipeline.stats()
        if self._files is not None:
            out["alert_files"] = self._files.stats()
        for sink in self._sinks:
            out[sink.name] = sink.stats()
        if self._enrollment is not None:
            out["enrollment"] = dict(self._enrollment.stats())
        return out

    def _on_fatal(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.stopped.set()

    # -- stop ----------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """The ordered shutdown (see the module docstring); every wait is bounded."""
        if self._shutting_down:
            return
        self._shutting_down = True
        timeout = self.config.manager.shutdown_timeout_s
        remote, pipeline = self.remote, self.pipeline
        log.info("Stopping: no new connections.")
        if remote is not None:
            remote.stop_accepting()
        if self._enrollment is not None:
            await self._enrollment.close(timeout)
        if remote is not None:
            remote.stop_batches()
        if pipeline is not None and not await pipeline.drain(timeout):
            log.warning(
                "Stopping: in-flight batches not finished within %.1f s; their agents will "
                "send them again.",
                timeout,
            )
        if remote is not None:
            await remote.close_sessions(timeout)
        if pipeline is not None:
            await pipeline.close(timeout)
        if remote is not None:
            await remote.close(timeout)
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        if self._status is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status.write(stopped=True), timeout)
        log.info("Stopped.")


# -- the process -------------------------------------------------------------------------------


async def serve(config: ManagerConfig, engine: Engine) -> int:
    """Run a manager until SIGTERM/SIGINT or a fatal error; returns the exit status."""
    manager = Manager(config, engine)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if manager.stopped.is_set():
            log.warning("Already stopping (every step has a timeout); SIGKILL forces it.")
            return
        log.info("Received %s.", signal.Signals(signum).name)
        manager.stopped.set()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        try:
            await manager.start()
        except StartupError as exc:
            log.critical("Cannot start: %s", exc)
            return 2
        log.info("Manager %s started (data directory %s).", config.manager_name, manager.data_dir)
        await manager.stopped.wait()
        await manager.shutdown()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return 1 if manager.fatal is not None else 0


def run_event_loop(main: Any) -> int:
    """Run ``main`` (a coroutine) on uvloop when installed, else asyncio's default loop."""
    with event_loop_runner() as runner:
        result: int = runner.run(main)
    return result


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)
    # asyncio's debug chatter is not the manager's events.
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def cmd_start(args: argparse.Namespace) -> int:
    try:
        config = load_manager_config(args.config)
    except ConfigError as exc:
        print(f"trailwarden-manager start: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.manager.log_level.value)
    try:
        engine = load_engine(config)
    except StartupError as exc:
        log.critical("Cannot start: %s", exc)
        return 2
    settle_collector(MANAGER_GC_THRESHOLDS)
    return run_event_loop(serve(config, engine))


def cmd_config(args: argparse.Namespace) -> int:
    if args.check is not None:
        try:
            load_manager_config(args.check)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"{args.check}: OK")
        return 0
    sys.stdout.write(default_config_text())
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "start",
        help="run the manager in the foreground (agents, enrollment, analysis, alerts)",
        description="Run the manager in the foreground until SIGTERM or SIGINT: accept agent"
        " connections (default port 1514) and enrollments (1515), analyse every batch with the"
        " ruleset, write Wazuh's alert files under <data_dir>/logs/alerts and acknowledge each"
        " batch once its alerts are durable. Logs go to stderr, one line per event;"
        " counters to <data_dir>/var/status.json (see `trailwarden-manager status`)."
        " Exit status: 0 after a clean stop, 1 after a fatal error, 2 when it cannot start.",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration (default: every key's default; see `config --default`)",
    )
    p.set_defaults(func=cmd_start)

    p = subparsers.add_parser(
        "config",
        help="print the default configuration, or check a configuration file",
        description="Print the default configuration as commented TOML (every key with its"
        " default), or check a file as `start` would read it.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--default", action="store_true", help="print the default configuration")
    what.add_argument("--check", type=Path, metavar="FILE", help="check FILE and say what is wrong")
    p.set_defaults(func=cmd_config)
