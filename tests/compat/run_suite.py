"""`make compat`: run Wazuh's ruleset test suite and end with the summary line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from compat_ruleset import compat_engine

from trailwarden.manager.ruleset_tests import iter_suite, read_cases


def main() -> int:
    shared = Path(os.environ.get("TRAILWARDEN_SHARED",
                                 Path(__file__).resolve().parents[3] / "shared"))
    wazuh_ref = shared / "wazuh-ref"
    engine, problems = compat_engine(wazuh_ref)
    for problem in problems:
        if problem.severity == "error":
            print(problem, file=sys.stderr)
    known = set()
    for raw in Path(__file__).with_name("known_failures.txt").read_text().splitlines():
        if raw.strip() and not raw.startswith("#"):
            file, section, key, _ = (p.strip() for p in raw.split("|", 3))
            known.add((file, section, key))
    passed = failed = unexpected = 0
    for outcome in iter_suite(engine, wazuh_ref / "testing" / "tests"):
        case = outcome.case
        # Counted in log lines (a case of three repeated keys is three lines).
        if outcome.passed:
            passed += len(case.lines)
        else:
            failed += len(case.lines)
            if (case.file, case.section, case.key) not in known:
                unexpected += 1
                print("FAIL", outcome.describe())
    geoip = sorted((wazuh_ref / "testing" / "tests").glob("*geoip.ini"))
    if geoip:
        skipped = sum(len(c.lines) for path in geoip for c in read_cases(path))
        print(f"not run: {skipped} log lines of {len(geoip)} *geoip.ini files (they need a GeoIP"
              " database; runtests.py skips them too unless given -g)")
    print(f"wazuh-ruleset-suite: {passed} passed, {failed} failed")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
