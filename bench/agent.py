"""Agent throughput: CloudTrail ``.json.gz`` files to batches acknowledged by a manager.

A CloudTrail tree of realistic records (the bundled samples, each copy with its
own eventID) is generated in a temporary directory, then:

* the ceiling: this process reads every file with plain ``gzip`` + ``orjson``
  (the least any reader does), in records per second;
* a manager listens on loopback: the real one (``trailwarden-manager start``,
  the rule engine and alert files included) or, with ``--manager mini`` or
  when the manager package is missing, a minimal acking manager in this
  process that only decrypts, decompresses and acknowledges;
* ``trailwarden-agent start`` runs in its own process until the manager has
  acknowledged every record; its CPU time and peak RSS come from /proc.

records/s counts from the agent's start (interpreter start-up included) to
the last acknowledgement. The machine is shared and noisy: compare
``ceiling_ratio`` (the agent's rate over the same run's ceiling) across runs
rather than absolute rates. ``--json`` prints one object with records_per_s,
agent_cpu_s_per_100k, agent_rss_mb and ceiling_ratio (plus details).

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
from importlib.util import find_spec
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
    records = []
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
    files, made = [], 0
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


def agent_config(base: Path, tree: Path, port: int) -> Path:
    data = base / "agent"
    data.mkdir()
    (data / "agent.key").write_text(f"{AGENT_ID} bench-agent any {AGENT_KEY}\n")
    config = base / "agent.toml"
    config.write_text(
        f'managers = ["127.0.0.1:{port}"]\n[agent]\ndata_dir = "{data}"\nstatus_interval_s = 0.1\n'
        f'[collection]\nsettle_ms = 0\n[[sources]]\npath = "{tree}"\n'
    )
    return config


def proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (all threads) and peak RSS in MB of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return cpu, peak_kb / 1024


async def run_agent(config: Path, data: Path, records: int, timeout_s: float) -> dict[str, float]:
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
    )
    try:
        while True:
            await asyncio.sleep(0.02)
            if agent.poll() is not None:
                raise SystemExit(f"the agent exited with status {agent.returncode}")
            if time.perf_counter() - started > timeout_s:
                raise SystemExit("timed out waiting for acknowledgements")
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                status = json.loads((data / "status.json").read_text())
                if status["counters"]["records_acked"] >= records:
                    break
        elapsed = time.perf_counter() - started
        cpu, rss = proc_usage(agent.pid)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
    return {"elapsed_s": elapsed, "cpu_s": cpu, "rss_mb": rss}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="trailwarden-bench-"))
    manager_proc = None
    mini = None
    try:
        tree = base / "bucket"
        files = make_tree(tree, args.records, args.per_file)
        ceiling_rps = ceiling(files)
        port = free_port()
        use_real = args.manager == "real" or (
            args.manager == "auto" and find_spec("trailwarden.manager.run") is not None
        )
        if use_real:
            manager_proc = start_real_manager(base, port)
        else:
            mini = MiniManager()
            await mini.start(port)
        config = agent_config(base, tree, port)
        run = await run_agent(config, base / "agent", args.records, args.timeout_s)
    finally:
        if manager_proc is not None:
            manager_proc.send_signal(signal.SIGTERM)
            manager_proc.wait(60)
        if mini is not None:
            mini.close()
        shutil.rmtree(base, ignore_errors=True)
    rps = args.records / run["elapsed_s"]
    return {
        "records_per_s": round(rps),
        "agent_cpu_s_per_100k": round(run["cpu_s"] / args.records * 100_000, 2),
        "agent_rss_mb": round(run["rss_mb"], 1),
        "ceiling_ratio": round(rps / ceiling_rps, 3),
        "ceiling_records_per_s": round(ceiling_rps),
        "records": args.records,
        "files": len(files),
        "manager": "real trailwarden-manager" if use_real else "minimal acking manager",
        "elapsed_s": round(run["elapsed_s"], 2),
        "targets_met": {
            "records_per_s": rps >= TARGETS["records_per_s"],
            "agent_rss_mb": run["rss_mb"] <= TARGETS["agent_rss_mb"],
            "ceiling_ratio": rps / ceiling_rps >= TARGETS["ceiling_ratio"],
        },
    }


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
        choices=("auto", "real", "mini"),
        default="auto",
        help="auto: the real manager when installed, else the minimal acking one",
    )
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"manager: {result['manager']}; {result['records']} records in {result['files']} files")
    print(f"records/s (files to acknowledged): {result['records_per_s']:>8}   target >= 30000")
    print(f"ceiling (gzip + orjson read):      {result['ceiling_records_per_s']:>8}")
    print(f"ratio to the ceiling:              {result['ceiling_ratio']:>8}   target >= 0.40")
    print(f"agent CPU s per 100k records:      {result['agent_cpu_s_per_100k']:>8}")
    print(f"agent peak RSS MB:                 {result['agent_rss_mb']:>8}   target <= 60")
    return 0


if __name__ == "__main__":
    sys.exit(main())
