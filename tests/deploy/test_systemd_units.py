"""deploy/systemd/*.service: valid to systemd, hardened, and in step with the programs.

systemd's own tools check the units (``systemd-analyze verify`` for syntax,
``systemd-analyze security --offline`` for the exposure score), on copies whose
command paths point at this checkout's installed entry points, since the units
name /opt/trailwarden. The command lines are parsed by the real CLI parsers, the
writable paths and stop timeouts are compared with the programs' defaults.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from systemd_unit import parse_unit

from trailwarden.agent import cli as agent_cli
from trailwarden.agent.config import DEFAULT_DATA_DIR as AGENT_DATA_DIR
from trailwarden.agent.config import DeliveryConfig
from trailwarden.manager import cli as manager_cli
from trailwarden.manager import run as manager_run
from trailwarden.manager.config import DEFAULT_DATA_DIR as MANAGER_DATA_DIR
from trailwarden.manager.config import ManagerSection

INSTALL_BIN = "/opt/trailwarden/bin/"
# systemd-analyze security's overall exposure (0 safest .. 10), "OK" up to 4.9.
MAX_EXPOSURE = 2.0
# Slack between the programs' own bounded shutdown and systemd's SIGKILL.
STOP_MARGIN_S = 5.0
UNITS = {
    "manager": ("trailwarden-manager.service", manager_cli, MANAGER_DATA_DIR),
    "agent": ("trailwarden-agent.service", agent_cli, AGENT_DATA_DIR),
}
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
}


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, f"time span {value!r} not understood here"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze not found (Debian: apt-get install systemd)")
    return tool


@pytest.fixture
def local_units(tmp_path: Path, deploy_dir: Path) -> dict[str, Path]:
    """The units with /opt/trailwarden/bin replaced by this venv's entry points."""
    venv_bin = Path(sys.executable).parent
    out = {}
    for name, (unit, _, _) in UNITS.items():
        text = (deploy_dir / "systemd" / unit).read_text(encoding="utf-8")
        assert INSTALL_BIN in text
        target = tmp_path / unit
        target.write_text(text.replace(INSTALL_BIN, f"{venv_bin}/"), encoding="utf-8")
        out[name] = target
    for program in ("trailwarden-manager", "trailwarden-agent"):
        assert (venv_bin / program).is_file(), f"{program} is not installed in {venv_bin}"
    return out


def test_systemd_accepts_the_units_without_a_warning(local_units: dict[str, Path]) -> None:
    tool = _systemd_analyze()
    for path in local_units.values():
        result = subprocess.run(
            [tool, "verify", "--man=no", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
            path.name,
            result.stdout,
            result.stderr,
        )


def test_systemd_rates_the_units_well_hardened(local_units: dict[str, Path]) -> None:
    tool = _systemd_analyze()
    for path in local_units.values():
        result = subprocess.run(
            [
                tool,
                "security",
                "--offline=true",
                f"--threshold={int(MAX_EXPOSURE * 10)}",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert match, result.stdout + result.stderr
        assert result.returncode == 0 and float(match.group(1)) <= MAX_EXPOSURE, match.group(0)


@pytest.mark.parametrize("name", list(UNITS))
def test_the_unit_runs_the_program_as_a_user_with_only_its_data_writable(
    name: str, deploy_dir: Path
) -> None:
    unit, cli, data_dir = UNITS[name]
    service = parse_unit(deploy_dir / "systemd" / unit)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == [value], (unit, key, service.get(key))
    (user,) = service["User"]
    assert user not in ("root", "0") and service["Group"] == [user]
    assert service["ReadWritePaths"] == [str(data_dir)]
    assert service["StateDirectory"] == [data_dir.name]
    assert service["Restart"] == ["on-failure"]
    assert parse_unit(deploy_dir / "systemd" / unit)["Install"]["WantedBy"] == ["multi-user.target"]

    (start,) = service["ExecStart"]
    argv = shlex.split(start)
    assert argv[0] == f"{INSTALL_BIN}trailwarden-{name}"
    assert argv[1:3] == ["start", "--config"]
    config_path = Path(argv[3])
    assert config_path == Path(f"/etc/trailwarden/{name}.toml")
    args = cli.build_parser().parse_args(argv[1:])
    assert args.command == "start" and args.config == config_path
    (check,) = service["ExecStartPre"]
    check_args = cli.build_parser().parse_args(shlex.split(check)[1:])
    assert check_args.command == "config" and check_args.check == config_path


def _help(cli: object, command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--help"])  # type: ignore[attr-defined]
    return " ".join(capsys.readouterr().out.split())


def test_the_agent_unit_waits_for_the_agents_own_shutdown(
    deploy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = parse_unit(deploy_dir / "systemd" / "trailwarden-agent.service")["Service"]
    (stop,) = service["TimeoutStopSec"]
    # The agent's promise, from `trailwarden-agent start --help`.
    assert "within about delivery.shutdown_timeout_s + 10 s" in _help(agent_cli, "start", capsys)
    bound = DeliveryConfig().shutdown_timeout_s + 10
    assert _seconds(stop) >= bound + STOP_MARGIN_S, (stop, bound)
    assert _seconds(stop) <= 3 * bound  # not so long that a hung agent holds up a reboot


def test_the_manager_unit_waits_for_every_shutdown_step(deploy_dir: Path) -> None:
    service = parse_unit(deploy_dir / "systemd" / "trailwarden-manager.service")["Service"]
    (stop,) = service["TimeoutStopSec"]
    # manager/run.py documents the ordered shutdown as a numbered list of steps,
    # each bounded by manager.shutdown_timeout_s.
    steps = re.findall(r"^(\d+)\. ", manager_run.__doc__ or "", flags=re.MULTILINE)
    assert steps == [str(n) for n in range(1, len(steps) + 1)] and len(steps) >= 3, steps
    bound = len(steps) * ManagerSection().shutdown_timeout_s
    assert _seconds(stop) >= bound + STOP_MARGIN_S, (stop, bound)
    assert _seconds(stop) <= 2 * bound
