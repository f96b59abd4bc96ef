"""``trailwarden-manager demo``: the bundled CloudTrail samples through the rule engine.

No agent, no network: read the sample tree (or any CloudTrail tree) the way the
agent does (S3 layout, digest files skipped, records wrapped in Wazuh's aws-s3
envelope), analyse every record with the ruleset, and print the alerts and a
summary. It is the quickest way to see what a ruleset makes of real CloudTrail
files; ``--alerts-json FILE`` also writes the alerts.json lines.
"""

from __future__ import annotations

import socket
import sys
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import TextIO

from trailwarden.agent.cloudtrail_file import CloudTrailFileReader, Problem, ProblemKind
from trailwarden.agent.discovery import SourceTree, scan_trees
from trailwarden.agent.envelope import location_for, origin_for, wrap_record
from trailwarden.rules.engine import Engine


def sample_tree() -> Path:
    """The bundled sample bucket shipped with the agent package."""
    return Path(str(resources.files("trailwarden.agent").joinpath("samples", "cloudtrail")))


def run(engine: Engine, tree: Path, out: TextIO, *, alerts_json: TextIO | None = None,
        manager_name: str | None = None) -> int:
    """Analyse every CloudTrail record below ``tree``; returns the number of alerts."""
    name = manager_name or socket.gethostname()
    state = engine.new_state()
    scan = scan_trees([SourceTree(str(tree))])
    for error in scan.errors:
        print(f"warning: {error}", file=sys.stderr)
    records = alerts = skipped = 0
    by_rule: Counter[tuple[int, int, str]] = Counter()
    started = time.perf_counter()
    for candidate in scan.candidates:
        origin = origin_for(candidate.path, tree)
        location = location_for(candidate.path)
        for item in CloudTrailFileReader(candidate.path):
            if isinstance(item, Problem):
                if item.kind is not ProblemKind.DIGEST_FILE:
                    print(f"warning: {item.source}: {item.message}", file=sys.stderr)
                skipped += 1
                continue
            records += 1
            message = wrap_record(item.obj, log_file=origin.log_file, bucket=origin.bucket,
                                  account_id=origin.account_id).decode()
            now = time.time()
            verdict = engine.process(message, location, now, state, manager_name=name)
            if not verdict.alert or verdict.rule is None:
                continue
            alerts += 1
            rendered = engine.render(verdict, alert_id=f"{int(now)}.{alerts}",
                                     manager_name=name)
            description = rendered.alert["rule"]["description"]  # type: ignore[index]
            by_rule[(verdict.rule.id, verdict.rule.level, str(description))] += 1
            aws = item.obj
            who = (aws.get("userIdentity") or {}).get("arn") or "?"
            out.write(f"{verdict.rule.id:>6} level {verdict.rule.level:<2} {description}"
                      f"  [{aws.get('eventName')} by {who} from {aws.get('sourceIPAddress')}]\n")
            if alerts_json is not None:
                alerts_json.write(rendered.json_line.decode())
    elapsed = time.perf_counter() - started
    out.write(f"\n{records} records in {len(scan.candidates)} files ({skipped} skipped) -> "
              f"{alerts} alerts in {elapsed:.2f} s\n")
    out.write("Alerts by rule:\n")
    for (rule_id, level, description), count in sorted(by_rule.items()):
        out.write(f"  {rule_id:>6}  level {level:<2}  {count:>4}  {description}\n")
    return alerts
