"""The wheel a user installs: one `trailwarden` namespace, data files, console scripts.

Built for real with pip (an isolated build, as `pip install .` does), then run
from the unpacked wheel rather than the editable checkout.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        timeout=600,
    )
    (built,) = out.glob("trailwarden-*.whl")
    return built


def test_wheel_installs_only_the_trailwarden_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"trailwarden"}, sorted(tops)
    packages = {name.split("/")[1] for name in names if name.startswith("trailwarden/")}
    assert packages == {"agent", "manager", "common", "rules"}
    # No tests, benches or top-level generic modules ship.
    assert not [n for n in names if "/tests/" in n or n.startswith(("tests/", "bench/"))]


def test_wheel_carries_the_data_the_code_reads(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "trailwarden/rules/ruleset/rules/0350-aws_ec2_rules.xml",
        "trailwarden/rules/ruleset/decoders/0100-aws_cloudtrail_decoders.xml",
        "trailwarden/rules/mitre_techniques.json",
        "trailwarden/rules/py.typed",
        "trailwarden/common/py.typed",
    ):
        assert needed in names, needed
    samples = [n for n in names if n.startswith("trailwarden/agent/samples/cloudtrail/")]
    assert any(n.endswith(".json.gz") for n in samples), samples[:5]


def test_wheel_declares_both_console_scripts(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(archive.read(entry_points).decode())
    assert dict(parser["console_scripts"]) == {
        "trailwarden-manager": "trailwarden.manager.cli:main",
        "trailwarden-agent": "trailwarden.agent.cli:main",
    }


def test_wheel_carries_the_compiled_engine_beside_its_sources(wheel: Path) -> None:
    """setup.py compiles the rule engine with mypyc; the .py files ship too."""
    names = set(zipfile.ZipFile(wheel).namelist())
    engine = [n for n in names if n.startswith("trailwarden/rules/engine.") and n.endswith(".so")]
    assert engine, "the rule engine was not compiled (see setup.py's warning in the build log)"
    assert any(n.startswith("trailwarden/rules/_native__mypyc.") for n in names)
    assert "trailwarden/rules/engine.py" in names
    # The agent's C envelope, beside its Python reference.
    assert any(n.startswith("trailwarden/agent/_envelope.") and n.endswith(".so") for n in names)
    assert "trailwarden/agent/envelope.py" in names


_RUN_80301 = (
    # Only the unpacked wheel: the checkout's editable install (a meta-path
    # finder) would supply a module the wheel lacks.
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f)]\n"
    "import trailwarden.rules.engine, trailwarden.manager.ruleset_files as f\n"
    "from trailwarden.rules.engine import Engine, EngineOptions\n"
    "import orjson, trailwarden.agent.envelope as envelope\n"
    "print(trailwarden.rules.engine.__file__, envelope.NATIVE_WRAPPER)\n"
    "engine, problems = Engine.compile(f.read_sources(f.default_layout()), EngineOptions())\n"
    "assert not [p for p in problems if p.severity == 'error'], problems\n"
    "record = {'eventVersion': '1.08', 'eventSource': 'ec2.amazonaws.com',\n"
    "          'eventName': 'RunInstances', 'awsRegion': 'us-east-1',\n"
    "          'sourceIPAddress': '198.51.100.7', 'userIdentity': {'type': 'IAMUser'}}\n"
    "wrapper = envelope.FileWrapper(log_file='k.json.gz', bucket='b', account_id='1')\n"
    "document = orjson.dumps({'Records': [record]})\n"
    "messages = wrapper.wrap_document(document, start=0, max_record_bytes=1 << 20)\n"
    "assert (messages is not None) == envelope.NATIVE_WRAPPER\n"
    "message = messages[0] if messages else wrapper.wrap_owned(record).decode()\n"
    "verdict = engine.process(message, 'cloudtrail', 0.0, engine.new_state())\n"
    "print(verdict.rule.id if verdict.rule else None)\n"
)


def _run_unpacked(target: Path, cwd: Path) -> tuple[Path, bool, str]:
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", _RUN_80301], env=env, capture_output=True, text=True,
        timeout=120, cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    module_file, native_wrapper, rule_id = done.stdout.split()
    return Path(module_file), native_wrapper == "True", rule_id


def test_unpacked_wheel_runs_the_bundled_ruleset(wheel: Path, tmp_path: Path) -> None:
    """The installed code (not the checkout) compiles its ruleset and fires rule 80301."""
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    module_file, native_wrapper, rule_id = _run_unpacked(target, tmp_path)
    assert module_file.is_relative_to(target), module_file
    assert module_file.suffix == ".so", module_file  # the compiled engine ran
    assert native_wrapper  # and the C envelope wrapped the record
    assert rule_id == "80301"


def test_the_pure_python_engine_runs_where_no_extension_loads(wheel: Path, tmp_path: Path) -> None:
    """A host that cannot load the extensions (another platform, no compiler at
    install time) runs the same engine and envelope from the .py files."""
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    for extension in (target / "trailwarden").rglob("*.so"):
        extension.unlink()
    module_file, native_wrapper, rule_id = _run_unpacked(target, tmp_path)
    assert module_file.is_relative_to(target) and module_file.suffix == ".py", module_file
    assert not native_wrapper  # envelope.py wrapped it
    assert rule_id == "80301"
