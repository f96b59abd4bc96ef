"""analysisd's built-in ``<compiled_rule>`` functions, by name.

Wazuh ships these as C functions (``compiled_rules/generic_samples.c``); the
stock web rules use two of them. Each takes the event and says whether the
rule may match.
"""

from __future__ import annotations

from collections.abc import Callable

from trailwarden.rules.event import Event


def comp_srcuser_dstuser(event: Event) -> bool:
    """True unless both users are set and differ."""
    if event.srcuser is None or event.dstuser is None:
        return True
    return event.srcuser == event.dstuser


def check_id_size(event: Event) -> bool:
    return event.id is not None and len(event.id.encode()) >= 10


def comp_mswin_targetuser_calleruser_diff(event: Event) -> bool:
    """True when the Windows target and caller account names differ."""
    log = event.log
    target = log.find("Target Account Name")
    caller = log.find("Caller User Name")
    if target < 0 or caller < 0:
        return False
    target = log.find(":", target)
    caller = log.find(":", caller)
    if target < 0 or caller < 0:
        return False
    target += 1
    caller += 1
    while target < len(log):
        if caller >= len(log) or log[target] != log[caller]:
            return True
        ch = log[target]
        if ch == "\t" or (ch == " " and log[target + 1 : target + 2] == " "):
            break
        target += 1
        caller += 1
    return False


def is_simple_http_request(event: Event) -> bool:
    """A plain GET/POST without a query string, so attack rules can be skipped."""
    url = event.url
    if url is None:
        return False
    return url == "/" or "?" not in url


_CRAWLER_PREFIXES = (
    "66.249.",
    "72.14.",
    "209.85.",
    "65.55.",
    "207.46.",
    "74.6.",
    "72.30.",
    "67.195.",
)


def is_valid_crawler(event: Event) -> bool:
    return event.log.startswith(_CRAWLER_PREFIXES)


COMPILED_RULES: dict[str, Callable[[Event], bool]] = {
    "comp_srcuser_dstuser": comp_srcuser_dstuser,
    "check_id_size": check_id_size,
    "comp_mswin_targetuser_calleruser_diff": comp_mswin_targetuser_calleruser_diff,
    "is_simple_http_request": is_simple_http_request,
    "is_valid_crawler": is_valid_crawler,
}
