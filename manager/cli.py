"""``trailwarden-manager``: the manager's command line.

Each subcommand is a thin shell: parse arguments, load what it needs, call the
module that does the work, and turn failures into one clear line and an exit
status (0 ok, 1 the work found problems, 2 bad usage or configuration).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from trailwarden.manager import agents_cli, run_demo
from trailwarden.manager import run as start_command
from trailwarden.manager import status as status_command
from trailwarden.manager.ruleset_files import (
    RulesetFilesError,
    RulesetLayout,
    default_layout,
    lists_from_dir,
    read_sources,
    stock_layout,
)
from trailwarden.rules.engine import Engine, EngineOptions
from trailwarden.rules.source import RulesetProblem

# The bundled ruleset carries the EC2 use-case rules at level 2, which the
# page shows as alerts: OSSEC's historical threshold of 1 keeps them. Wazuh's
# own ruleset is meant for Wazuh's threshold of 3.
DEFAULT_LOG_ALERT_LEVEL = 1
WAZUH_LOG_ALERT_LEVEL = 3

_RULESET_HELP = """\
Ruleset selection (all subcommands that load rules):
  By default the bundled Trailwarden ruleset is used (EC2 use-case rules).
  --wazuh-ruleset DIR loads Wazuh 4.x's own ruleset from DIR, a copy of Wazuh's
  ruleset/ folder with rules/, decoders/ and lists/ (e.g. ../shared/wazuh-ref),
  exactly as a Wazuh manager loads it (0215-policy_rules.xml excluded, the
  installer's lists declared, alert threshold 3).
  --rules-dir/--decoders-dir replace the bundled rules/decoders, or with
  --wazuh-ruleset are added after it like Wazuh's etc/rules and etc/decoders.
"""


def _add_ruleset_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ruleset")
    group.add_argument(
        "--wazuh-ruleset",
        type=Path,
        metavar="DIR",
        help="use Wazuh 4.x's ruleset from DIR (rules/, decoders/, lists/)",
    )
    group.add_argument(
        "--rules-dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="rules directory (repeatable; files load sorted by name)",
    )
    group.add_argument(
        "--decoders-dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="decoders directory (repeatable)",
    )
    group.add_argument(
        "--lists-dir",
        type=Path,
        metavar="DIR",
        help="CDB lists: etc/lists/NAME in rules resolves to DIR/NAME",
    )
    group.add_argument(
        "--rule-exclude",
        action="append",
        default=[],
        metavar="FILE",
        help="skip a rules file by name (repeatable)",
    )
    group.add_argument(
        "--decoder-exclude",
        action="append",
        default=[],
        metavar="FILE",
        help="skip a decoders file by name (repeatable)",
    )
    group.add_argument(
        "--log-alert-level",
        type=int,
        metavar="N",
        help="lowest rule level written as an alert (default: 1 for the bundled"
        " ruleset, 3 with --wazuh-ruleset, as Wazuh)",
    )


def layout_from_args(args: argparse.Namespace) -> RulesetLayout:
    if args.wazuh_ruleset is not None:
        base = stock_layout(
            args.wazuh_ruleset, extra_rule_dirs=args.rules_dir, extra_decoder_dirs=args.decoders_dir
        )
    else:
        default = default_layout()
        base = RulesetLayout(
            decoder_dirs=tuple(args.decoders_dir) or default.decoder_dirs,
            rule_dirs=tuple(args.rules_dir) or default.rule_dirs,
            lists=default.lists if not (args.rules_dir or args.decoders_dir) else {},
        )
    lists = dict(base.lists)
    if args.lists_dir is not None:
        if not args.lists_dir.is_dir():
            raise RulesetFilesError(f"--lists-dir: not a directory: {args.lists_dir}")
        lists.update(lists_from_dir(args.lists_dir))
    return RulesetLayout(
        base.decoder_dirs,
        base.rule_dirs,
        (*base.decoder_excludes, *args.decoder_exclude),
        (*base.rule_excludes, *args.rule_exclude),
        lists,
    )


def options_from_args(args: argparse.Namespace, mode: str = "analysisd") -> EngineOptions:
    level = args.log_alert_level
    if level is None:
        level = WAZUH_LOG_ALERT_LEVEL if args.wazuh_ruleset is not None else DEFAULT_LOG_ALERT_LEVEL
    if not 0 <= level <= 16:
        raise RulesetFilesError(f"--log-alert-level must be 0..16, got {level}")
    return EngineOptions(log_alert_level=level, mode=mode)


def load_engine(
    args: argparse.Namespace, mode: str = "analysisd"
) -> tuple[Engine, list[RulesetProblem]]:
    return Engine.compile(read_sources(layout_from_args(args)), options_from_args(args, mode))


def _report_problems(problems: list[RulesetProblem], *, warnings: bool) -> int:
    errors = 0
    for problem in problems:
        if problem.severity == "error":
            errors += 1
            print(problem, file=sys.stderr)
        elif warnings:
            print(problem, file=sys.stderr)
    return errors


# -- subcommands ----------------------------------------------------------------


def cmd_logtest(args: argparse.Namespace) -> int:
    from trailwarden.manager.logtest import run

    engine, problems = load_engine(args, mode="logtest")
    if _report_problems(problems, warnings=args.verbose):
        print(
            "logtest: the ruleset has errors (listed above); fix them or run"
            " `trailwarden-manager validate-rules`",
            file=sys.stderr,
        )
        return 2
    if not args.json and sys.stdin.isatty():
        print("Type one log line per line; Ctrl-D ends the session.", file=sys.stderr)
    run(
        engine,
        sys.stdin,
        sys.stdout,
        location=args.location,
        json=args.json,
        manager_name=args.manager_name,
    )
    return 0


def cmd_validate_rules(args: argparse.Namespace) -> int:
    engine, problems = load_engine(args)
    errors = _report_problems(problems, warnings=True)
    warnings = len(problems) - errors
    print(
        f"{len(engine.tree.rules)} rules and {len(engine.decoders.names)} decoder names loaded;"
        f" {errors} error(s), {warnings} warning(s)"
    )
    return 1 if errors else 0


def cmd_test_ruleset(args: argparse.Namespace) -> int:
    from trailwarden.manager.ruleset_tests import read_cases, run_case

    engine, problems = load_engine(args, mode="logtest")
    if _report_problems(problems, warnings=False):
        return 2
    files: list[Path] = []
    for target in args.tests:
        if target.is_dir():
            files.extend(
                sorted(
                    p
                    for p in target.glob("*.ini")
                    if args.geoip or not p.name.endswith("geoip.ini")
                )
            )
        elif target.is_file():
            files.append(target)
        else:
            print(f"test-ruleset: no such file or directory: {target}", file=sys.stderr)
            return 2
    passed = failed = 0
    for path in files:
        file_failed = 0
        for case in read_cases(path):
            outcome = run_case(engine, case)
            if outcome.passed:
                passed += len(case.lines)
            else:
                failed += len(case.lines)
                file_failed += 1
                print("FAIL", outcome.describe())
        if args.verbose:
            print(f"{path.name}: {'ok' if not file_failed else f'{file_failed} failing'}")
    print(f"{passed} log lines passed, {failed} failed")
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from trailwarden.manager import demo

    engine, problems = load_engine(args)
    if _report_problems(problems, warnings=False):
        return 2
    tree = args.tree or demo.sample_tree()
    if not tree.is_dir():
        print(f"demo: not a directory: {tree}", file=sys.stderr)
        return 2
    print(f"Analysing the CloudTrail files under {tree}\n")
    if args.alerts_json is None:
        demo.run(engine, tree, sys.stdout)
    else:
        with args.alerts_json.open("w", encoding="utf-8") as out:
            demo.run(engine, tree, sys.stdout, alerts_json=out)
        print(f"alerts.json lines written to {args.alerts_json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trailwarden-manager",
        description="Trailwarden manager: Wazuh-compatible analysis of AWS CloudTrail events.",
        epilog=_RULESET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "logtest",
        help="test events against the ruleset, like wazuh-logtest",
        description="Read events from stdin, one per line, and show how the ruleset decodes"
        " them and which rule matches. Correlation state (frequency rules) is kept"
        " across the lines of one run.",
        epilog=_RULESET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: rule_id, level, decoder, alert, output",
    )
    p.add_argument(
        "--location",
        default="stdin",
        help="location the events come from (default: stdin, as wazuh-logtest)",
    )
    p.add_argument(
        "--manager-name",
        default=socket.gethostname(),
        help="manager name shown in alerts (default: this host's name)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="also print ruleset warnings")
    _add_ruleset_args(p)
    p.set_defaults(func=cmd_logtest)

    p = sub.add_parser(
        "validate-rules",
        help="load the ruleset and list every problem (file:line)",
        description="Load rules, decoders and lists and report every problem with file:line."
        " Exits 1 when there is an error, 0 otherwise (warnings are listed too).",
        epilog=_RULESET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_ruleset_args(p)
    p.set_defaults(func=cmd_validate_rules)

    p = sub.add_parser(
        "test-ruleset",
        help="run Wazuh-format ruleset test files (*.ini)",
        description="Run test files in the format of Wazuh's ruleset/testing/tests (as"
        " runtests.py does, without a running manager).",
        epilog=_RULESET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "tests",
        type=Path,
        nargs="+",
        metavar="FILE_OR_DIR",
        help="*.ini files, or directories of them",
    )
    p.add_argument("--geoip", action="store_true", help="include *geoip.ini files")
    p.add_argument("-v", "--verbose", action="store_true", help="print a line per file")
    _add_ruleset_args(p)
    p.set_defaults(func=cmd_test_ruleset)

    p = sub.add_parser(
        "demo", help="analyse the bundled sample CloudTrail files and print the alerts",
        description="Read a CloudTrail tree as the agent does (S3 layout, digests skipped,"
                    " records in Wazuh's aws-s3 envelope), analyse every record and print the"
                    " alerts with a summary by rule. Without --tree, the bundled samples.",
        epilog=_RULESET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", type=Path, metavar="DIR",
                   help="a CloudTrail tree (AWSLogs/... below it) instead of the samples")
    p.add_argument("--alerts-json", type=Path, metavar="FILE",
                   help="also write the alerts as alerts.json lines to FILE")
    _add_ruleset_args(p)
    p.set_defaults(func=cmd_demo)

    run_demo.register(sub, _add_ruleset_args, _RULESET_HELP)
    agents_cli.register(sub)
    start_command.register(sub)
    status_command.register(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except RulesetFilesError as exc:
        print(f"trailwarden-manager: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
