"""Agent throughput: CloudTrail ``.json.gz`` files to batches acknowledged by a manager.

A CloudTrail tree of realistic records (the bundled samples, each copy with its
own eventID) is generated in a temporary directory, then:

* the ceiling: this process reads every file with plain ``gzip`` + ``orjson``
  (the least any reader does), in records per second;
* a manager listens on loopback: by default a minimal one in this process
  that only decrypts, decompresses and acknowledges, so the number is the
  agent's; with ``--manager real``, ``trailwarden-manager start`` with its
  rule engine and alert files (then the engine is the bottleneck);
* ``trailwarden-agent start`` runs in its own process until the manager has
  acknowledged every record; its CPU time and peak RSS come from /proc.

records/s counts from the agent's start (interpreter start-up included) to
the last acknowledgement. The machine is shared and noisy: compare
``ceiling_ratio`` (the agent's rate over the same run's ceiling) across runs
rather than absolute rates. ``--json`` prints one object with records_per_s,
agent_cpu_s_per_100k, agent_rss_mb and ceiling_ratio (plus details).
``--repeat`` runs several rounds and reports the median; ``--baseline DIR``
runs another agent package (say an earlier commit's) in each round too, for
a before/after comparison under the same load; ``--profile FILE`` samples
the agent with py-spy.

Targets: >= 30,000 records/s; agent RSS <= 60 MB; >= 40% of the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from trailwarden.agent.cloudtrail_file import CloudTrailFileReader, Record
from trailwarden.common.wire import NEED_DATA, Ack, Batch, ManagerConnection, ProtocolError

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "agent" / "samples" / "cloudtrail"
AGENT_ID = "001"
AGENT_KEY = "5f0c9e1d2b3a49586776a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
ACCOUNT = "123456789012"
TARGETS = {"records_per_s": 30_000, "agent_rss_mb": 60, "ceiling_ratio": 0.40}


def sample_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.rglob("*CloudTrail_*.json*")):
        records.extend(
            item.obj for item in CloudTrailFileReader(str(path)) if isinstance(item, Record)
        )
    return records


def make_tree(root: Path, records: int, per_file: int) -> list[Path]:
    """An S3-layout tree of gzipped CloudTrail objects; every record unique."""
    samples = sample_records()
    day = root / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1" / "2026" / "11" / "27"
    day.mkdir(parents=True)
    ns = uuid.UUID("9b1c7a36-4e0f-4c3b-a6d2-5f1e2d3c4b5a")
    files: list[Path] = []
    made = 0
    while made < records:
        n = min(per_file, records - made)
        batch = []
        for i in range(made, made + n):
            record = dict(samples[i % len(samples)])
            record["eventID"] = str(uuid.uuid5(ns, str(i)))
            batch.append(record)
        index = len(files)
        stamp = f"20261127T{index // 60 % 24:02d}{index % 60:02d}Z"
        name = f"{ACCOUNT}_CloudTrail_us-east-1_{stamp}_{index:016x}.json.gz"
        path = day / name
        path.write_bytes(gzip.compress(orjson.dumps({"Records": batch}), 6, mtime=0))
        files.append(path)
        made += n
    return files


def ceiling(files: list[Path]) -> float:
    """Records per second for gzip + orjson alone (best of three passes)."""
    best = float("inf")
    count = 0
    for _ in range(3):
        started = time.perf_counter()
        count = 0
        for path in files:
            count += len(orjson.loads(gzip.decompress(path.read_bytes()))["Records"])
        best = min(best, time.perf_counter() - started)
    return count / best


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MiniManager:
    """Decrypts, decompresses and acknowledges every batch; nothing else."""

    def __init__(self) -> None:
        self.records = 0
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ManagerConnection(
            lambda agent_id: AGENT_KEY.encode() if agent_id == AGENT_ID else None
        )
        with contextlib.suppress(ConnectionError, ProtocolError, asyncio.CancelledError):
            while data := await reader.read(1 << 20):
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    writer.write(conn.data_to_send())
                    if isinstance(event, Batch):
                        self.records += len(event.records)
                        writer.write(conn.send(Ack(event.seq)))
                writer.write(conn.data_to_send())
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def start_real_manager(base: Path, port: int) -> subprocess.Popen[bytes]:
    data = base / "manager"
    (data / "etc").mkdir(parents=True)
    (data / "etc" / "client.keys").write_text(f"{AGENT_ID} bench-agent any {AGENT_KEY}\n")
    config = base / "manager.toml"
    config.write_text(
        f'[manager]\ndata_dir = "{data}"\n[remote]\nlisten_address = "127.0.0.1"\nport = {port}\n'
        "[enrollment]\nenabled = false\n"
    )
    log = open(base / "manager.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trailwarden.manager.cli", "start", "--config", str(config)],
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 60
    while "Listening for agents" not in (base / "manager.log").read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the manager did not start; see {base / 'manager.log'}")
        time.sleep(0.05)
    return proc


def agent_config(base: Path, tree: Path, port: int, status_interval_s: float = 0.1) -> Path:
    data = base / "agent"
    data.mkdir()
    (data / "agent.key").write_text(f"{AGENT_ID} bench-agent any {AGENT_KEY}\n")
    config = base / "agent.toml"
    config.write_text(
        f'managers = ["127.0.0.1:{port}"]\n[agent]\ndata_dir = "{data}"\n'
        f"status_interval_s = {status_interval_s}\n"
        f'[collection]\nsettle_ms = 0\n[[sources]]\npath = "{tree}"\n'
    )
    return config


def proc_usage(pid: int) -> tuple[float, float, float]:
    """CPU seconds (all threads), of the main thread alone, and peak RSS in MB
    of a live process."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu(stat: str) -> float:
        with open(stat) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    with open(f"/proc/{pid}/status") as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    # The main thread's task id is the pid; it runs the event loop.
    return cpu(f"/proc/{pid}/stat"), cpu(f"/proc/{pid}/task/{pid}/stat"), peak_kb / 1024


async def run_agent(
    config: Path,
    data: Path,
    records: int,
    timeout_s: float,
    *,
    python_path: str | None = None,
    profile: Path | None = None,
    acked: MiniManager | None = None,
) -> dict[str, float]:
    """Run one agent until ``records`` are acknowledged: counted by ``acked``
    when it is given, else read from the agent's status.json."""
    env = dict(os.environ)
    if python_path is not None:
        # A package directory named trailwarden on PYTHONPATH wins over the
        # editable install (its finder comes after the path finder).
        env["PYTHONPATH"] = python_path
    started = time.perf_counter()
    agent = subprocess.Popen(  # noqa: ASYNC220 - once, before the timing loop
        [
            sys.executable,
            "-m",
            "trailwarden.agent.cli",
            "--log-level",
            "warning",
            "start",
            "--config",
            str(config),
        ],
        env=env,
    )
    spy = None
    if profile is not None:
        # Sampling from outside by pid: the agent runs unmodified.
        spy = subprocess.Popen(  # noqa: ASYNC220 - once, before the timing loop
            [
                shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy",
                "record",
                "--pid",
                str(agent.pid),
                "--threads",
                "--format",
                "raw",
                "--output",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
        )
    try:
        while True:
            await asyncio.sleep(0.02)
            if agent.poll() is not None:
                raise SystemExit(f"the agent exited with status {agent.returncode}")
            if time.perf_counter() - started > timeout_s:
                raise SystemExit("timed out waiting for acknowledgements")
            if acked is not None:
                if acked.records >= records:
                    break
                continue
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                status = json.loads((data / "status.json").read_text())
                if status["counters"]["records_acked"] >= records:
                    break
        elapsed = time.perf_counter() - started
        cpu, main_cpu, rss = proc_usage(agent.pid)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            spy.wait(30)
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
    return {"elapsed_s": elapsed, "cpu_s": cpu, "main_cpu_s": main_cpu, "rss_mb": rss}


async def one_run(
    args: argparse.Namespace, base: Path, tree: Path, python_path: str | None, use_real: bool
) -> dict[str, float]:
    """One agent from a fresh data directory to a fresh manager (a real
    manager would take a second agent's batches for duplicates)."""
    os.mkdir(base)
    port = free_port()
    manager_proc = None
    mini = None
    try:
        if use_real:
            manager_proc = start_real_manager(base, port)
        else:
            mini = MiniManager()
            await mini.start(port)
        # The minimal manager counts what it acknowledges, so the agent need
        # not write status.json often (its default is every 5 s).
        config = agent_config(base, tree, port, 0.1 if use_real else 5.0)
        return await run_agent(
            config,
            base / "agent",
            args.records,
            args.timeout_s,
            python_path=python_path,
            profile=None if python_path is not None else args.profile,
            acked=mini,
        )
    finally:
        if manager_proc is not None:
            manager_proc.send_signal(signal.SIGTERM)
            manager_proc.wait(60)
        if mini is not None:
            mini.close()


def summary(runs: list[dict[str, float]], ceilings: list[float], records: int) -> dict[str, Any]:
    """The median run by rate, next to the median ceiling of all rounds."""
    run = sorted(runs, key=lambda r: r["elapsed_s"])[len(runs) // 2]
    ceiling_rps = sorted(ceilings)[len(ceilings) // 2]
    rps = records / run["elapsed_s"]
    return {
        "records_per_s": round(rps),
        "agent_cpu_s_per_100k": round(run["cpu_s"] / records * 100_000, 2),
        "agent_main_thread_cpu_s_per_100k": round(run["main_cpu_s"] / records * 100_000, 2),
        "agent_rss_mb": round(run["rss_mb"], 1),
        "ceiling_ratio": round(rps / ceiling_rps, 3),
        "ceiling_records_per_s": round(ceiling_rps),
        "elapsed_s": round(run["elapsed_s"], 2),
        "all_records_per_s": [round(records / r["elapsed_s"]) for r in runs],
        "all_cpu_s_per_100k": [round(r["cpu_s"] / records * 100_000, 2) for r in runs],
        "all_rss_mb": [round(r["rss_mb"], 1) for r in runs],
        "targets_met": {
            "records_per_s": rps >= TARGETS["records_per_s"],
            "agent_rss_mb": run["rss_mb"] <= TARGETS["agent_rss_mb"],
            "ceiling_ratio": rps / ceiling_rps >= TARGETS["ceiling_ratio"],
        },
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="trailwarden-bench-"))
    use_real = args.manager == "real"
    runs: list[dict[str, float]] = []
    baseline_runs: list[dict[str, float]] = []
    ceilings: list[float] = []
    try:
        tree = base / "bucket"
        files = make_tree(tree, args.records, args.per_file)
        for i in range(args.repeat):
            # One ceiling per round, next to the runs it is compared with.
            ceilings.append(ceiling(files))
            if args.baseline is not None:
                baseline_runs.append(
                    await one_run(args, base / f"base-{i}", tree, str(args.baseline), use_real)
                )
            runs.append(await one_run(args, base / f"run-{i}", tree, None, use_real))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = summary(runs, ceilings, args.records)
    result.update(
        records=args.records,
        files=len(files),
        manager=(
            "real trailwarden-manager (rule engine, alert files)"
            if use_real
            else "minimal acking manager"
        ),
        runs=args.repeat,
    )
    if baseline_runs:
        result["baseline"] = {"path": str(args.baseline)} | summary(
            baseline_runs, ceilings, args.records
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records", type=int, default=200_000, help="records in all (default 200000)"
    )
    parser.add_argument(
        "--per-file", type=int, default=1000, help="records per object (default 1000)"
    )
    parser.add_argument(
        "--manager",
        choices=("mini", "real"),
        default="mini",
        help="mini: a manager that only acknowledges (the agent's own rate; default); "
        "real: trailwarden-manager with its rule engine and alert files",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; the median run is reported (default 1)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a directory holding a 'trailwarden' package (e.g. an older agent): in each "
        "round an agent from it runs first, the same way; reported under 'baseline'",
    )
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument(
        "--profile",
        type=Path,
        help="write py-spy's raw (collapsed) samples of the agent here; slows the agent",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"manager: {result['manager']}; {result['records']} records in {result['files']} "
        f"files; median of {result['runs']} runs"
    )
    columns = [("agent", result)]
    if "baseline" in result:
        columns.insert(0, ("baseline", result["baseline"]))
    rows = [
        ("records/s (files to acknowledged)", "records_per_s", "target >= 30000"),
        ("ceiling (gzip + orjson read)", "ceiling_records_per_s", ""),
        ("ratio to the ceiling", "ceiling_ratio", "target >= 0.40"),
        ("agent CPU s per 100k records", "agent_cpu_s_per_100k", ""),
        ("  of which the main thread", "agent_main_thread_cpu_s_per_100k", ""),
        ("agent peak RSS MB", "agent_rss_mb", "target <= 60"),
    ]
    print(f"{'':34}" + "".join(f"{name:>10}" for name, _ in columns))
    for label, key, target in rows:
        print(f"{label:34}" + "".join(f"{col[key]:>10}" for _, col in columns) + f"   {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
