"""The manager's rule commands as a user runs them: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "trailwarden.manager.cli"]
EC2_RUN = ('{"integration":"aws","aws":{"log_info":{"aws_account_alias":"","log_file":"AWSLogs/'
           '123456789012/CloudTrail/us-east-1/2026/11/27/x.json.gz","s3bucket":"b"},'
           '"eventVersion":"1.08","eventSource":"ec2.amazonaws.com","eventName":"RunInstances",'
           '"awsRegion":"us-east-1","errorCode":"Client.UnauthorizedOperation","source":"cloudtrail",'
           '"aws_account_id":"123456789012"}}')
CONSOLE_FAIL = ('{"integration":"aws","aws":{"eventSource":"signin.amazonaws.com","eventName":'
                '"ConsoleLogin","responseElements":{"ConsoleLogin":"Failure"},"source":"cloudtrail"'
                ',"aws_account_id":"1"}}')


def _run(args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


def test_logtest_json_reports_rule_level_decoder_alert_and_output() -> None:
    result = _run(["logtest", "--json"], EC2_RUN + "\nnot an aws event\n")
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert {k: first[k] for k in ("rule_id", "level", "decoder", "alert")} == {
        "rule_id": "80303", "level": 5, "decoder": "aws-cloudtrail", "alert": True}
    assert first["output"]["rule"]["description"] == "Amazon-ec2: Run instance unauthorized"
    assert first["output"]["data"]["aws"]["errorCode"] == "Client.UnauthorizedOperation"
    assert first["output"]["location"] == "stdin"
    assert second == {"rule_id": None, "level": None, "decoder": None, "alert": False,
                      "output": None}


def test_logtest_keeps_correlation_state_across_lines(wazuh_ref: Path) -> None:
    # Rule 80255: the 6th failed console login within 360 s from the same agent.
    lines = "\n".join([CONSOLE_FAIL] * 6) + "\n"
    result = _run(["logtest", "--json", "--wazuh-ruleset", str(wazuh_ref)], lines)
    assert result.returncode == 0, result.stderr
    rules = [json.loads(line)["rule_id"] for line in result.stdout.splitlines()]
    assert rules == ["80254"] * 5 + ["80255"]


def test_logtest_text_mode_shows_the_three_phases() -> None:
    result = _run(["logtest", "--location", "cloudtrail"], EC2_RUN + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "**Phase 1: Completed pre-decoding." in out
    assert "**Phase 2: Completed decoding.\n\tname: 'aws-cloudtrail'" in out
    assert "\taction: 'RunInstances'" in out
    assert "**Phase 3: Completed filtering (rules).\n\tid: '80303'\n\tlevel: '5'" in out
    assert "**Alert to be generated." in out


def test_logtest_with_explicit_directories_and_lists(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    decoders = tmp_path / "decoders"
    lists = tmp_path / "lists" / "mine"
    for d in (rules, decoders, lists):
        d.mkdir(parents=True)
    (decoders / "a.xml").write_text('<decoder name="kv"><prematch>^user=</prematch></decoder>\n'
                                    '<decoder name="kv1"><parent>kv</parent><regex>^user=(\\w+)'
                                    "</regex><order>user</order></decoder>\n")
    (rules / "0010-t.xml").write_text(
        '<group name="t,"><rule id="1" level="0" noalert="1"><category>syslog</category>'
        "<description>t</description></rule></group>\n"
        '<group name="t,"><rule id="100" level="7"><decoded_as>kv</decoded_as>'
        '<list field="user" lookup="match_key">etc/lists/mine/admins</list>'
        "<description>admin $(dstuser) seen</description></rule></group>\n")
    (lists / "admins").write_text("root:\nalice:ops\n")
    result = _run(["logtest", "--json", "--rules-dir", str(rules), "--decoders-dir",
                   str(decoders), "--lists-dir", str(tmp_path / "lists")],
                  "user=alice\nuser=mallory\n")
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["rule_id"] == "100"
    assert first["output"]["rule"]["description"] == "admin alice seen"
    assert second["rule_id"] is None and second["decoder"] == "kv"


def test_validate_rules_lists_every_problem_and_fails(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "0010-bad.xml").write_text(
        '<group name="t,">\n'
        '  <rule id="1" level="0" noalert="1"><category>syslog</category>'
        "<description>t</description></rule>\n"
        '  <rule id="100" level="99"><description>x</description></rule>\n'
        '  <rule id="101" level="3"><regex>(</regex><description>x</description></rule>\n'
        "</group>\n")
    (rules / "0020-broken.xml").write_text('<group name="t,">\n<rule id="5">\n</group>\n')
    result = _run(["validate-rules", "--rules-dir", str(rules)])
    assert result.returncode == 1
    err = result.stderr
    assert f"{rules / '0010-bad.xml'}:3: error: rule 100: level 99 out of range" in err
    assert f"{rules / '0010-bad.xml'}:4: error: rule 101: invalid <regex> pattern" in err
    assert f"{rules / '0020-broken.xml'}:3: error: element <rule> (line 2) closed by </group>" in err
    assert "3 error(s)" in result.stdout


def test_validate_rules_accepts_the_bundled_and_the_stock_ruleset(wazuh_ref: Path) -> None:
    for args in ([], ["--wazuh-ruleset", str(wazuh_ref)]):
        result = _run(["validate-rules", *args])
        assert result.returncode == 0, result.stderr
        assert " 0 error(s)" in result.stdout


def test_test_ruleset_runs_wazuh_ini_files(wazuh_ref: Path, tmp_path: Path) -> None:
    ok = _run(["test-ruleset", "--wazuh-ruleset", str(wazuh_ref),
               str(wazuh_ref / "testing" / "tests" / "aws_s3_access.ini")])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("10 log lines passed, 0 failed")
    bad = tmp_path / "bad.ini"
    bad.write_text("[wrong expectation]\nlog 1 pass = hello\nrule = 1\nalert = 3\ndecoder = x\n")
    failed = _run(["test-ruleset", str(bad)])
    assert failed.returncode == 1
    assert "FAIL bad.ini [wrong expectation] log 1 pass" in failed.stdout


def test_demo_prints_the_page_alerts_for_the_samples() -> None:
    result = _run(["demo"])
    assert result.returncode == 0, result.stderr
    for rule_id in ("80301", "80303", "80305", "80306", "80308", "80309", "80404", "80411",
                    "80446"):
        assert f"   {rule_id}  level " in result.stdout
    assert "-> 9 alerts" in result.stdout


def test_bad_usage_is_explained() -> None:
    result = _run(["logtest", "--lists-dir", "/nonexistent/dir"])
    assert result.returncode == 2
    assert "--lists-dir: not a directory: /nonexistent/dir" in result.stderr
    help_text = _run(["--help"]).stdout
    for command in ("logtest", "validate-rules", "test-ruleset", "demo"):
        assert command in help_text
