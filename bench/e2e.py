"""End to end: CloudTrail ``.json.gz`` files to alerts on disk, agent and manager as processes.

Both run on this machine as the user runs them (``trailwarden-manager start``,
``trailwarden-agent start``), with their default configuration apart from
addresses, data directories and a faster status file; the manager writes
alerts.json / alerts.log with ``fsync = "batch"`` (an agent's batch is
acknowledged only once its alerts are durable). Records are copies of the
bundled samples (or, with ``--source shared``, of the real records in
../shared/cloudtrail), each copy with its own eventID, in S3-layout gzipped
objects. Which copies must alert is known beforehand (the samples are
analysed once with the same ruleset in this process), so every alert is
accounted for.

1. **Throughput**: ``--records`` records in objects of ``--per-file`` are in
   place (delivered a while ago) when the agent starts; the clock runs from
   the agent's start to the moment the last expected alert line is in
   alerts.json. ``records_per_s`` includes the agent's start-up;
   ``records_per_s_steady`` runs from the first alert line to the last.
2. **Latency** at ``--rate`` records/s offered: small objects of
   ``--latency-per-file`` records are dropped into the bucket at that rate for
   ``--latency-s`` seconds (written beside it, then renamed into place, as
   sync tools do); a reader in this process tails alerts.json and matches
   each alert's eventID to the moment its file appeared. ``latency_p50_s`` and
   ``latency_p99_s`` are over every alert of the phase. The alert's own
   timestamp (when the manager took the record for analysis) splits each
   latency into file-to-analysis (agent, network, manager queue) and
   analysis-to-disk (rendering, commit, fsync).

Where the time goes: CPU seconds of each process per 100k records (from
/proc); how much of the throughput phase the manager's event loop spent on a
CPU and waiting for one (their sum near 1 means the manager is the limit, and
the waiting part is other processes on these cores); and
``engine_records_per_s``, the engine alone on the same records in this
process, the best the manager's one analysis loop could do. ``--py-spy DIR``
also records both processes with py-spy during each phase (``DIR/agent.txt``,
``DIR/manager-latency.txt``...: the top functions by own and inclusive
samples; ``*.folded`` hold the raw stacks).

The machine is shared (2 cores, other benchmarks may run at the same time):
repeat and compare. ``--json`` prints one object with records_per_s,
latency_p50_s and latency_p99_s (plus details). Targets: >= 20,000 records/s
sustained; p99 < 1 s at 5,000 records/s offered.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from trailwarden.agent.cloudtrail_file import CloudTrailFileReader, Record
from trailwarden.agent.envelope import wrap_record
from trailwarden.manager.ruleset_files import default_layout, read_sources
from trailwarden.rules.engine import Engine, EngineOptions

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "agent" / "samples" / "cloudtrail"
SHARED = Path(os.environ.get("TRAILWARDEN_SHARED", REPO.parent / "shared"))
AGENT_ID = "001"
AGENT_NAME = "bench-agent"
AGENT_KEY = "5f0c9e1d2b3a49586776a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
ACCOUNT = "123456789012"
TARGETS = {"records_per_s": 20_000, "latency_p99_s": 1.0}
# The alert tail polls alerts.json this often: it adds at most this much to a latency.
TAIL_POLL_S = 0.002
# The data part of an alert line holds the eventID unescaped (in full_log it is \"-escaped).
EVENT_ID = re.compile(rb'"eventID":"([^"]+)"')
# An alert's timestamp is when the manager took its record for analysis (Wazuh's reception time).
TIMESTAMP = re.compile(rb'^\{"timestamp":"([^"]+)"')
# Objects of the throughput phase look delivered this long ago (past the agent's settle time).
DELIVERED_AGO_S = 600
PY_SPY_TOP = 25
# Records timed through the engine alone in this process (about a second).
ENGINE_RECORDS = 10_000


# -- records --------------------------------------------------------------------------


def source_records(source: str) -> list[dict[str, Any]]:
    if source == "samples":
        paths = sorted(SAMPLES.rglob("*CloudTrail_*.json*"))
        return [
            item.obj
            for path in paths
            for item in CloudTrailFileReader(str(path))
            if isinstance(item, Record)
        ]
    records: list[dict[str, Any]] = []
    for path in sorted((SHARED / "cloudtrail").rglob("*")):
        if path.suffix not in (".json", ".log") or "digest" in path.name:
            continue
        text = path.read_text()
        if path.suffix == ".log":
            records.extend(json.loads(line) for line in text.splitlines() if line.strip())
            continue
        data = json.loads(text)
        found = data.get("Records", []) if isinstance(data, dict) else data
        records.extend(r for r in found if isinstance(r, dict) and "eventName" in r)
    return records


def bundled_engine() -> Engine:
    engine, _ = Engine.compile(read_sources(default_layout()), EngineOptions(log_alert_level=1))
    return engine


def wrapped(records: list[dict[str, Any]]) -> list[str]:
    key = f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2026/11/27/x.json.gz"
    return [wrap_record(r, log_file=key, bucket="bucket", account_id=ACCOUNT).decode()
            for r in records]


def alerting_indexes(engine: Engine, messages: list[str]) -> set[int]:
    """Which records alert with the bundled ruleset (the manager's default)."""
    state = engine.new_state()
    location = f"[{AGENT_ID}] ({AGENT_NAME}) any->x"
    return {i for i, m in enumerate(messages) if engine.process(m, location, 0.0, state).alert}


def engine_rate(engine: Engine, messages: list[str], records: int) -> float:
    """Records/s of the engine alone in this process (analysis, and rendering for alerts),
    on the same records: what the manager's one analysis loop could do at best."""
    state = engine.new_state()
    location = f"[{AGENT_ID}] ({AGENT_NAME}) any->x"
    started = time.perf_counter()
    for i in range(records):
        verdict = engine.process(messages[i % len(messages)], location, time.time(), state)
        if verdict.alert:
            engine.render(verdict, alert_id=f"1.{i}", manager_name="bench")
    return records / (time.perf_counter() - started)


class RecordFactory:
    """Copies of the source records, each with a fresh eventID; tracks which must alert."""

    def __init__(self, records: list[dict[str, Any]], alerting: set[int]) -> None:
        self._records = records
        self._alerting = alerting
        self._next = 0
        self._ns = uuid.UUID("0e9a3b44-8b1c-4f0e-9d4a-2c7b6e5f1a30")

    def take(self, n: int) -> tuple[list[dict[str, Any]], list[str]]:
        """n records, and the eventIDs of those that must alert."""
        out, alerting = [], []
        for i in range(self._next, self._next + n):
            j = i % len(self._records)
            record = dict(self._records[j])
            record["eventID"] = str(uuid.uuid5(self._ns, str(i)))
            out.append(record)
            if j in self._alerting:
                alerting.append(record["eventID"])
        self._next += n
        return out, alerting


def day_dir(root: Path, region: str) -> Path:
    return root / "AWSLogs" / ACCOUNT / "CloudTrail" / region / "2026" / "11" / "28"


def object_name(region: str, index: int) -> str:
    stamp = f"20261128T{index // 60 % 24:02d}{index % 60:02d}Z"
    return f"{ACCOUNT}_CloudTrail_{region}_{stamp}_{index:016x}.json.gz"


def gz_object(records: list[dict[str, Any]]) -> bytes:
    return gzip.compress(orjson.dumps({"Records": records}), 6, mtime=0)


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(name: str, module: str) -> list[str]:
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_sched(pid: int) -> tuple[float, float]:
    """(on CPU, waiting for a CPU) seconds of the process's main thread, where its
    event loop runs: their sum over a phase's duration says whether that loop was
    ever idle (the pipeline starved it) or always wanted to run (it is the limit;
    the waiting part is other processes on these cores)."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        on_cpu, waiting, _ = f.read().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


@dataclass
class Pair:
    base: Path
    bucket: Path
    manager: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)

    @property
    def manager_dir(self) -> Path:
        return self.base / "manager"

    @property
    def agent_dir(self) -> Path:
        return self.base / "agent"

    @property
    def alerts_json(self) -> Path:
        return self.manager_dir / "logs" / "alerts" / "alerts.json"

    def start_manager(self, extra: str) -> None:
        data = self.manager_dir
        (data / "etc").mkdir(parents=True)
        (data / "etc" / "client.keys").write_text(f"{AGENT_ID} {AGENT_NAME} any {AGENT_KEY}\n")
        (data / "etc" / "client.keys").chmod(0o600)
        config = self.base / "manager.toml"
        config.write_text(
            f'[manager]\ndata_dir = "{data}"\n'
            f'[remote]\nlisten_address = "127.0.0.1"\nport = {self.port}\n'
            f"[enrollment]\nenabled = false\n{extra}"
        )
        log = open(self.base / "manager.log", "wb")
        self.manager = subprocess.Popen(
            [*command("trailwarden-manager", "trailwarden.manager.cli"), "start", "--config",
             str(config)],
            stdout=log, stderr=log,
        )
        deadline = time.monotonic() + 120
        while read_json(data / "var" / "status.json").get("pid") != self.manager.pid:
            if self.manager.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the manager did not start; see {self.base / 'manager.log'}")
            time.sleep(0.02)

    def start_agent(self, extra: str) -> None:
        data = self.agent_dir
        data.mkdir()
        (data / "agent.key").write_text(f"{AGENT_ID} {AGENT_NAME} any {AGENT_KEY}\n")
        (data / "agent.key").chmod(0o600)
        config = self.base / "agent.toml"
        config.write_text(
            f'managers = ["127.0.0.1:{self.port}"]\n[agent]\ndata_dir = "{data}"\n{extra}\n'
            f'[[sources]]\npath = "{self.bucket}"\n'
        )
        log = open(self.base / "agent.log", "wb")
        self.agent = subprocess.Popen(
            [*command("trailwarden-agent", "trailwarden.agent.cli"), "--log-level", "warning",
             "start", "--config", str(config)],
            stdout=log, stderr=log,
        )

    def check_alive(self) -> None:
        for name, proc in (("manager", self.manager), ("agent", self.agent)):
            if proc is not None and proc.poll() is not None:
                raise SystemExit(
                    f"the {name} exited ({proc.returncode}); see {self.base}/{name}.log"
                )

    def stop(self) -> None:
        for proc in (self.agent, self.manager):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class AlertTail(threading.Thread):
    """Tails alerts.json; records when each eventID's alert line appeared."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True, name="alert-tail")
        self._path = path
        self.seen: dict[str, float] = {}  # perf_counter
        self.seen_wall: dict[str, float] = {}
        self.analysed: dict[str, float] = {}  # the alert's timestamp, epoch seconds
        self.duplicates = 0
        self.lines = 0
        self._halt = threading.Event()

    def run(self) -> None:
        handle = None
        rest = b""
        while not self._halt.is_set():
            if handle is None:
                try:
                    handle = open(self._path, "rb")
                except FileNotFoundError:
                    time.sleep(TAIL_POLL_S)
                    continue
            chunk = handle.read()
            if not chunk:
                time.sleep(TAIL_POLL_S)
                continue
            now = time.perf_counter()
            wall = time.time()
            data = rest + chunk
            end = data.rfind(b"\n") + 1
            rest = data[end:]
            for line in data[:end].splitlines():
                self.lines += 1
                match = EVENT_ID.search(line)
                if match is None:
                    continue
                event_id = match.group(1).decode()
                if event_id in self.seen:
                    self.duplicates += 1
                else:
                    self.seen[event_id] = now
                    self.seen_wall[event_id] = wall
                    stamp = TIMESTAMP.match(line)
                    if stamp is not None:
                        moment = datetime.fromisoformat(stamp.group(1).decode())
                        self.analysed[event_id] = moment.timestamp()
        if handle is not None:
            handle.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def wait_for(self, ids: list[str], timeout_s: float, pair: Pair) -> float | None:
        """When the last of ``ids`` appeared, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pair.check_alive()
            seen = self.seen
            if all(i in seen for i in ids[-1000:]) and all(i in seen for i in ids):
                return max(seen[i] for i in ids)
            time.sleep(0.01)
        return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- phases ---------------------------------------------------------------------------


def throughput_phase(
    args: argparse.Namespace, pair: Pair, factory: RecordFactory, tail: AlertTail
) -> dict[str, Any]:
    region = "us-east-1"
    folder = day_dir(pair.bucket, region)
    folder.mkdir(parents=True, exist_ok=True)
    expected: list[str] = []
    made = index = 0
    delivered = time.time() - DELIVERED_AGO_S
    while made < args.records:
        n = min(args.per_file, args.records - made)
        records, alerting = factory.take(n)
        path = folder / object_name(region, index)
        path.write_bytes(gz_object(records))
        os.utime(path, (delivered, delivered))
        expected.extend(alerting)
        made += n
        index += 1
    started = time.perf_counter()
    pair.start_agent(args.agent_config)
    assert pair.agent is not None and pair.manager is not None
    spies = start_py_spy(args, {"agent": pair.agent.pid, "manager": pair.manager.pid}, "")
    cpu_manager_0 = cpu_seconds(pair.manager.pid)
    sched_manager_0 = main_thread_sched(pair.manager.pid)
    done = tail.wait_for(expected, args.timeout_s, pair)
    if done is None:
        missing = sum(1 for i in expected if i not in tail.seen)
        raise SystemExit(f"throughput: {missing} of {len(expected)} alerts missing after "
                         f"{args.timeout_s:g} s; see {pair.base}")
    cpu_agent = cpu_seconds(pair.agent.pid)
    cpu_manager = cpu_seconds(pair.manager.pid) - cpu_manager_0
    sched_manager = main_thread_sched(pair.manager.pid)
    sched_agent = main_thread_sched(pair.agent.pid)
    stop_py_spy(spies, args)
    first = min(tail.seen[i] for i in expected)
    elapsed = done - started
    return {
        "records": args.records,
        "files": index,
        "alerts": len(expected),
        "elapsed_s": round(elapsed, 2),
        "records_per_s": round(args.records / elapsed),
        "records_per_s_steady": round(args.records / (done - first)) if done > first else None,
        "agent_cpu_s_per_100k": round(cpu_agent / args.records * 100_000, 2),
        "manager_cpu_s_per_100k": round(cpu_manager / args.records * 100_000, 2),
        # Shares of the phase the main threads ran / waited for a CPU.
        "manager_loop_on_cpu": round((sched_manager[0] - sched_manager_0[0]) / elapsed, 2),
        "manager_loop_waiting_cpu": round((sched_manager[1] - sched_manager_0[1]) / elapsed, 2),
        "agent_loop_on_cpu": round(sched_agent[0] / elapsed, 2),
        "agent_loop_waiting_cpu": round(sched_agent[1] / elapsed, 2),
    }


def latency_phase(
    args: argparse.Namespace, pair: Pair, factory: RecordFactory, tail: AlertTail
) -> dict[str, Any]:
    region = "us-west-2"
    # A new region's day folder, as CloudTrail starts one: the agent sees it appear.
    folder = day_dir(pair.bucket, region)
    folder.mkdir(parents=True)
    staging = pair.base / "staging"
    staging.mkdir()
    files = max(1, round(args.rate * args.latency_s / args.latency_per_file))
    interval = args.latency_per_file / args.rate
    prepared = []
    for k in range(files):
        records, alerting = factory.take(args.latency_per_file)
        prepared.append((object_name(region, k), gz_object(records), alerting))
    assert pair.agent is not None and pair.manager is not None
    cpu = (cpu_seconds(pair.agent.pid), cpu_seconds(pair.manager.pid))
    spies = start_py_spy(
        args, {"agent": pair.agent.pid, "manager": pair.manager.pid}, "-latency"
    )
    written: dict[str, float] = {}
    written_wall: dict[str, float] = {}
    expected: list[str] = []
    late = 0.0
    start = time.perf_counter()
    for k, (name, blob, alerting) in enumerate(prepared):
        due = start + k * interval
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        else:
            late = max(late, now - due)
        temp = staging / name
        temp.write_bytes(blob)
        os.rename(temp, folder / name)
        landed, landed_wall = time.perf_counter(), time.time()
        for event_id in alerting:
            written[event_id] = landed
            written_wall[event_id] = landed_wall
        expected.extend(alerting)
    offered_s = time.perf_counter() - start
    done = tail.wait_for(expected, args.timeout_s, pair)
    stop_py_spy(spies, args)
    missing = sum(1 for i in expected if i not in tail.seen)
    latencies = [tail.seen[i] - written[i] for i in expected if i in tail.seen]
    # Where the time goes: file to the manager's analysis (agent, network, manager
    # queue), then analysis to the line on disk (commit, fsync). Wall clock, ms stamps.
    to_analysis = [tail.analysed[i] - written_wall[i] for i in expected if i in tail.analysed]
    to_disk = [tail.seen_wall[i] - tail.analysed[i] for i in expected if i in tail.analysed]
    if not latencies:
        raise SystemExit("latency: no alert arrived")
    cpu_agent = cpu_seconds(pair.agent.pid) - cpu[0]
    cpu_manager = cpu_seconds(pair.manager.pid) - cpu[1]
    records = files * args.latency_per_file
    return {
        "offered_records_per_s": round(records / offered_s),
        "files": files,
        "records": records,
        "alerts": len(expected),
        "alerts_missing": missing,
        "latency_p50_s": round(percentile(latencies, 0.50), 4),
        "latency_p90_s": round(percentile(latencies, 0.90), 4),
        "latency_p99_s": round(percentile(latencies, 0.99), 4),
        "latency_max_s": round(max(latencies), 4),
        "file_to_analysis_p50_s": round(percentile(to_analysis, 0.50), 3),
        "file_to_analysis_p99_s": round(percentile(to_analysis, 0.99), 3),
        "analysis_to_disk_p50_s": round(percentile(to_disk, 0.50), 3),
        "analysis_to_disk_p99_s": round(percentile(to_disk, 0.99), 3),
        "writer_max_late_s": round(late, 4),
        "drained_after_s": round(done - start - offered_s, 3) if done is not None else None,
        "agent_cpu_share": round(cpu_agent / offered_s, 2),
        "manager_cpu_share": round(cpu_manager / offered_s, 2),
    }


# -- profiling ------------------------------------------------------------------------


def start_py_spy(
    args: argparse.Namespace, pids: dict[str, int], suffix: str
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """py-spy on each process; its stacks go to DIR/<name><suffix>.folded."""
    if args.py_spy is None:
        return []
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.py_spy.mkdir(parents=True, exist_ok=True)
    return [
        (name + suffix, _spy(exe, pid, args.py_spy / f"{name}{suffix}.folded"))
        for name, pid in pids.items()
    ]


def _spy(exe: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--threads",
         "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stop_py_spy(
    spies: list[tuple[str, subprocess.Popen[bytes]]], args: argparse.Namespace
) -> None:
    for _, proc in spies:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    for name, _ in spies:
        folded = args.py_spy / f"{name}.folded"
        if folded.exists():
            (args.py_spy / f"{name}.txt").write_text(top_functions(folded))


def top_functions(folded: Path) -> str:
    """Own samples and inclusive samples per function, from py-spy's raw (folded) stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"{total} samples", "", "own%   function"]
    out += [f"{100 * c / total:5.1f}  {f}" for f, c in own.most_common(PY_SPY_TOP)]
    out += ["", "incl%  function"]
    out += [f"{100 * c / total:5.1f}  {f}" for f, c in inclusive.most_common(PY_SPY_TOP)]
    return "\n".join(out) + "\n"


# -- main -----------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict[str, Any]:
    records = source_records(args.source)
    engine = bundled_engine()
    messages = wrapped(records)
    factory = RecordFactory(records, alerting_indexes(engine, messages))
    engine_rps = engine_rate(engine, messages, ENGINE_RECORDS)
    del engine
    base = Path(tempfile.mkdtemp(prefix="trailwarden-e2e-"))
    pair = Pair(base, base / "bucket")
    tail = AlertTail(pair.alerts_json)
    tail.start()
    try:
        pair.start_manager(args.manager_config)
        through = throughput_phase(args, pair, factory, tail)
        latency = latency_phase(args, pair, factory, tail) if args.latency_s > 0 else {}
    finally:
        try:
            tail.stop()
        finally:
            pair.stop()  # never leave the processes running
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
    result: dict[str, Any] = {
        "records_per_s": through["records_per_s"],
        "latency_p50_s": latency.get("latency_p50_s"),
        "latency_p99_s": latency.get("latency_p99_s"),
        "throughput": through,
        "latency": latency,
        "engine_records_per_s": round(engine_rps),
        "manager_share_of_engine": round(through["records_per_s_steady"] / engine_rps, 2)
        if through["records_per_s_steady"] else None,
        "duplicate_alerts": tail.duplicates,
        "source": args.source,
        "kept": str(base) if args.keep else None,
    }
    result["targets_met"] = {
        "records_per_s": through["records_per_s"] >= TARGETS["records_per_s"],
        "latency_p99_s": bool(latency) and latency["latency_p99_s"] < TARGETS["latency_p99_s"],
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--records", type=int, default=200_000,
                        help="throughput phase: records in all (default 200000)")
    parser.add_argument("--per-file", type=int, default=1000,
                        help="throughput phase: records per object (default 1000)")
    parser.add_argument("--rate", type=float, default=5000.0,
                        help="latency phase: records/s offered (default 5000)")
    parser.add_argument("--latency-s", type=float, default=10.0,
                        help="latency phase: seconds of offered load (default 10; 0 skips it)")
    parser.add_argument("--latency-per-file", type=int, default=50,
                        help="latency phase: records per object (default 50)")
    parser.add_argument("--source", choices=("samples", "shared"), default="samples",
                        help="records copied: the bundled samples, or ../shared/cloudtrail")
    parser.add_argument("--manager-config", default="",
                        help="extra TOML appended to the manager configuration")
    parser.add_argument("--agent-config", default="",
                        help="extra TOML appended to the agent configuration (before [[sources]])")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="profile both processes with py-spy during each phase")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = bench(args)
    if args.json:
        print(json.dumps(result))
        return 0
    t, lat = result["throughput"], result["latency"]
    print(f"{t['records']} records in {t['files']} files -> {t['alerts']} alerts on disk")
    print(f"records/s, files to alerts on disk:   {t['records_per_s']:>8}   target >= 20000")
    print(f"  steady (first to last alert):       {t['records_per_s_steady']:>8}")
    print(f"  engine alone, this process, 1 core: {result['engine_records_per_s']:>8}")
    print(f"  agent CPU s per 100k records:       {t['agent_cpu_s_per_100k']:>8}")
    print(f"  manager CPU s per 100k records:     {t['manager_cpu_s_per_100k']:>8}")
    print(f"  manager loop on CPU / waiting:      {t['manager_loop_on_cpu']:>8} /"
          f" {t['manager_loop_waiting_cpu']}")
    if lat:
        print(f"latency at {lat['offered_records_per_s']} records/s offered"
              f" ({lat['files']} files of {args.latency_per_file}, {lat['alerts']} alerts,"
              f" {lat['alerts_missing']} missing):")
        print(f"  p50 {lat['latency_p50_s']:.3f} s  p90 {lat['latency_p90_s']:.3f} s"
              f"  p99 {lat['latency_p99_s']:.3f} s  max {lat['latency_max_s']:.3f} s"
              "   target p99 < 1")
        print(f"  file to analysis p50 {lat['file_to_analysis_p50_s']:.3f} s"
              f" p99 {lat['file_to_analysis_p99_s']:.3f} s; analysis to disk"
              f" p50 {lat['analysis_to_disk_p50_s']:.3f} s"
              f" p99 {lat['analysis_to_disk_p99_s']:.3f} s")
        print(f"  CPU share: agent {lat['agent_cpu_share']}, manager {lat['manager_cpu_share']}")
    print(f"duplicate alerts: {result['duplicate_alerts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
