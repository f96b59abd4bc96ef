"""``$(field)`` substitution in rule descriptions (ParseRuleComment)."""

from __future__ import annotations

import pytest

from trailwarden.rules.description import OS_COMMENT_MAX, compile_description, substitute
from trailwarden.rules.event import Event
from trailwarden.rules.json_decoder import decode_json


def make_event() -> Event:
    event = Event("log", "Wazuh-AWS", 0.0)
    decode_json(
        event,
        '{"aws": {"eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin"},'
        ' "srcip": "10.0.0.1", "empty": "", "Program_Name": "dynamic"}',
    )
    event.program_name = "sshd"
    event.hostname = "host1"
    event.dstuser = "root"
    event.extra_data = "extra"
    event.systemname = "sys"
    return event


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "AWS Cloudtrail: $(aws.eventSource) - $(aws.eventName) - User login failed.",
            "AWS Cloudtrail: signin.amazonaws.com - ConsoleLogin - User login failed.",
        ),
        ("no variables at all", "no variables at all"),
        ("case: $(AWS.EVENTNAME)", "case: ConsoleLogin"),  # dynamic fields ignore case
        (
            "static $(srcip) $(dstuser) $(system_name) $(extra_data)",
            "static 10.0.0.1 root sys extra",
        ),
        ("static names are exact: $(SRCIP)", "static names are exact: "),  # then no such field
        ("pre-decoded $(program_name)@$(hostname)", "pre-decoded sshd@host1"),
        (
            "missing [$(nothing)] and empty [$(empty)] and unset [$(url)]",
            "missing [] and empty [] and unset []",
        ),
        ("unclosed $(aws.eventName", "unclosed $(aws.eventName"),
        ("closed $(aws.eventName) then $(open", "closed ConsoleLogin then $(open"),
        ("$(aws.eventName)$(aws.eventName)", "ConsoleLoginConsoleLogin"),
        ("nested $(a$(aws.eventName)) x", "nested ) x"),  # the name runs to the first ')'
        ("$()", ""),
        ("dollar $ alone and $(", "dollar $ alone and $("),
    ],
)
def test_substitution(template: str, expected: str) -> None:
    assert substitute(template, make_event()) == expected


def test_compiled_form_is_reusable_across_events() -> None:
    describe = compile_description("user=$(dstuser)")
    first = make_event()
    second = make_event()
    second.dstuser = "admin"
    assert (describe(first), describe(second)) == ("user=root", "user=admin")


def test_result_reaching_the_limit_falls_back_to_the_raw_description() -> None:
    event = make_event()
    event.data = "x" * 1000
    template = "prefix " + "y" * 16 + " $(data)"  # 24 + 1000 bytes >= 1024
    assert substitute(template, event) == template
    fits = "p" * (OS_COMMENT_MAX - 1 - 1000) + "$(data)"
    assert substitute(fits, event) == "p" * 23 + "x" * 1000


def test_the_limit_counts_bytes_not_characters() -> None:
    event = make_event()
    event.data = "é" * 511  # 1022 bytes
    assert substitute("$(data)", event) == "é" * 511
    assert substitute("ab$(data)", event) == "ab$(data)"  # 1024 bytes: unsubstituted


def test_long_descriptions_without_variables_are_kept_whole() -> None:
    long = "z" * 3000
    assert substitute(long, make_event()) == long


def test_descriptions_are_cut_to_1024_bytes_before_substitution() -> None:
    # analysisd copies the first 1024 bytes; a variable that shrinks the text
    # below the limit leaves the cut copy as the result.
    template = "$(empty)" + "w" * 1100
    assert substitute(template, make_event()) == "w" * (OS_COMMENT_MAX - len("$(empty)"))
