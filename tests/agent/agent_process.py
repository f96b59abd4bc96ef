"""Run ``trailwarden-agent start`` as a real process for the tests (and kill it)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mini_manager import AGENT_ID, AGENT_KEY

KEY_LINE = f"{AGENT_ID} test-agent any {AGENT_KEY}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_agent_key(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "agent.key").write_text(KEY_LINE)
    (data_dir / "agent.key").chmod(0o600)


def write_agent_config(
    path: Path,
    *,
    data_dir: Path,
    ports: list[int],
    sources: list[tuple[str, Path]],
    extra: str = "",
    **sections: dict[str, Any],
) -> Path:
    """A TOML file: fast scans and lingers, fsync on, the given sources."""
    defaults: dict[str, dict[str, Any]] = {
        "agent": {"status_interval_s": 0.1},
        "delivery": {
            "linger_ms": 20,
            "backoff_initial_ms": 20,
            "backoff_max_ms": 200,
            "connect_timeout_s": 2.0,
            "shutdown_timeout_s": 3.0,
        },
        "collection": {"scan_interval_s": 0.1, "settle_ms": 0, "checkpoint_interval_ms": 50},
    }
    for name, values in sections.items():
        defaults.setdefault(name, {}).update(values)
    lines = [f"managers = {json.dumps([f'127.0.0.1:{p}' for p in ports])}"]
    defaults["agent"]["data_dir"] = str(data_dir)
    for name, values in defaults.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items())
    for kind, source in sources:
        lines += ["[[sources]]", f'kind = "{kind}"', f"path = {json.dumps(str(source))}"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


class AgentProcess:
    """One ``trailwarden-agent start`` process; its stderr goes to a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trailwarden.agent.cli",
                    "--log-level",
                    "debug",
                    "start",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=log,
            )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM; the exit status and how long the stop took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_stopped(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def status(data_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((data_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
