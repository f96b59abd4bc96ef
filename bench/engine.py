"""Rule engine throughput on CloudTrail records, against a JSON-parsing ceiling.

Every real CloudTrail record under ../shared/cloudtrail is wrapped as the agent
sends it (Wazuh's aws-s3 envelope, compact JSON), and the same list of
messages is timed through:

* the ceiling: ``orjson.loads`` of each message (the least any JSON pipeline does);
* the engine with Wazuh 4.x's stock ruleset (all rules, decoders, the AWS list);
* the engine with Trailwarden's bundled ruleset;
* the stock ruleset plus 10x as many extra rules that match none of these
  events but sit on their path (children of the AWS rules testing the same
  fields), to show that cost per event does not grow with rule count.

"Engine" means what the manager does per message: pre-decode, decode, walk the
rules, and for alerting events build the alerts.json line and alerts.log block,
with the cycle collector set as the manager sets it once started.
Rates are measured on one core, interleaved in rounds, best round kept (the
machine is shared and noisy). ``--json`` prints one object with stock_eps,
default_eps, ceiling_eps, stock_ratio and rules_10x_cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from trailwarden.agent.envelope import wrap_record
from trailwarden.common.process_runtime import MANAGER_GC_THRESHOLDS, settle_collector
from trailwarden.manager.ruleset_files import default_layout, read_sources, stock_layout
from trailwarden.rules import engine as engine_module
from trailwarden.rules.engine import Engine, EngineOptions, RulesetSources

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TRAILWARDEN_SHARED", REPO.parent / "shared"))
S3_KEY = ("AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/27/"
          "123456789012_CloudTrail_us-east-1_20261127T1200Z_abcdefghijklmnop.json.gz")


def load_messages() -> list[str]:
    records: list[dict[str, Any]] = []
    for path in sorted((SHARED / "cloudtrail").rglob("*")):
        if path.suffix not in (".json", ".log") or "digest" in path.name:
            continue
        text = path.read_text()
        if path.suffix == ".log":
            records.extend(json.loads(line) for line in text.splitlines() if line.strip())
            continue
        data = json.loads(text)
        records.extend(data.get("Records", []) if isinstance(data, dict) else data)
    return [wrap_record(r, log_file=S3_KEY, bucket="trail-bucket",
                        account_id="123456789012").decode() for r in records]


def extra_rules(count: int) -> str:
    """Rules no CloudTrail record matches, on the same path as the stock AWS rules."""
    rules = []
    for i in range(count):
        if i % 2:
            body = (f"<if_sid>80202</if_sid><field name=\"aws.eventName\">"
                    f"^SyntheticCall{i}$</field>")
        else:
            body = f"<if_sid>80200</if_sid><field name=\"aws.source\">synthetic{i}</field>"
        rules.append(f'<rule id="{200000 + i}" level="5">{body}'
                     f"<description>synthetic rule {i}</description></rule>")
    return '<group name="bench,">\n' + "\n".join(rules) + "\n</group>\n"


def compile_engine(sources: RulesetSources, level: int) -> Engine:
    engine, problems = Engine.compile(sources, EngineOptions(log_alert_level=level))
    errors = [str(p) for p in problems if p.severity == "error"]
    if errors:
        raise SystemExit("ruleset errors:\n" + "\n".join(errors[:10]))
    return engine


def engine_pass(engine: Engine) -> Callable[[list[str]], int]:
    def run(messages: list[str]) -> int:
        state = engine.new_state()
        now = time.time()
        alerts = 0
        offset = 0
        for message in messages:
            verdict = engine.process(message, "cloudtrail", now, state)
            if verdict.alert:
                rendered = engine.render(verdict, alert_id=f"{int(now)}.{offset}",
                                         manager_name="bench")
                offset += len(rendered.log_block)
                alerts += 1
        return alerts

    return run


def ceiling_pass(messages: list[str]) -> int:
    loads = orjson.loads
    for message in messages:
        loads(message)
    return 0


def measure(passes: dict[str, Callable[[list[str]], int]], messages: list[str],
            rounds: int) -> dict[str, float]:
    best = dict.fromkeys(passes, float("inf"))
    for _ in range(rounds):
        for name, run in passes.items():
            start = time.perf_counter()
            run(messages)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(messages) / seconds for name, seconds in best.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000,
                        help="messages per timed pass (the real records, repeated)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; best is kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    base = load_messages()
    messages = (base * (args.events // len(base) + 1))[: args.events]
    stock_sources = read_sources(stock_layout(SHARED / "wazuh-ref"))
    stock = compile_engine(stock_sources, 3)
    n_extra = 10 * len(stock.tree.rules)
    bloated = compile_engine(RulesetSources(
        stock_sources.decoders,
        [*stock_sources.rules, ("9999-bench_rules.xml", extra_rules(n_extra))],
        stock_sources.lists), 3)
    default = compile_engine(read_sources(default_layout()), 1)

    passes = {"ceiling": ceiling_pass, "stock": engine_pass(stock),
              "default": engine_pass(default), "stock_10x": engine_pass(bloated)}
    for run in passes.values():  # warm caches (candidate indexes, MITRE table)
        run(base)
    # The manager's runtime as it analyses (after start-up): the compiled
    # rulesets frozen out of the collector's passes, its thresholds. The
    # ceiling runs under the same settings.
    settle_collector(MANAGER_GC_THRESHOLDS)
    rates = measure(passes, messages, args.rounds)
    result = {
        "stock_eps": round(rates["stock"]),
        "default_eps": round(rates["default"]),
        "ceiling_eps": round(rates["ceiling"]),
        "stock_ratio": round(rates["stock"] / rates["ceiling"], 4),
        "rules_10x_cost": round(rates["stock"] / rates["stock_10x"], 4),
        # "mypyc" when setup.py compiled the engine (make native), else "python".
        "engine_build": "python" if engine_module.__file__.endswith(".py") else "mypyc",
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{len(base)} real CloudTrail records, {len(messages)} messages per pass,"
          f" best of {args.rounds} rounds, one core, engine build: {result['engine_build']}")
    print(f"ceiling (orjson.loads)      {result['ceiling_eps']:>10,} events/s")
    print(f"stock Wazuh ruleset         {result['stock_eps']:>10,} events/s"
          f"  ({len(stock.tree.rules)} rules)  ratio to ceiling {result['stock_ratio']:.3f}"
          "  (target >= 40,000/s and >= 0.15)")
    print(f"bundled default ruleset     {result['default_eps']:>10,} events/s")
    print(f"stock + {n_extra} extra rules  {round(rates['stock_10x']):>10,} events/s"
          f"  cost per event x{result['rules_10x_cost']:.3f} (target <= 1.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
