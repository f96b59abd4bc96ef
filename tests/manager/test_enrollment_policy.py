"""Duplicate checks and Wazuh's <force> rules, decided on values (no files, no sockets)."""

from __future__ import annotations

import pytest

from trailwarden.common.enrollment_protocol import (
    EnrollmentRequest,
    Refusal,
    RequestRefused,
    key_hash,
)
from trailwarden.common.keys import AgentKey, ClientKeys
from trailwarden.manager.agent_registry import Registration, Registry
from trailwarden.manager.agents_view import ConnectionStatus
from trailwarden.manager.enrollment_config import ForceOptions
from trailwarden.manager.enrollment_policy import (
    NEVER_CONNECTED,
    Presence,
    decide,
    duration,
    replacement_refusal,
    resolve_ip,
)

NOW = 1_700_000_000.0
HOUR = 3600.0
KEY = "a" * 64
WEB = AgentKey("001", "web-1", "any", KEY)
DB = AgentKey("002", "db-1", "10.0.0.5", "b" * 64)


def registry(registered_ago: float = 2 * HOUR, *agents: AgentKey) -> Registry:
    agents = agents or (WEB, DB)
    return Registry(
        ClientKeys(agents),
        {a.agent_id: Registration(a.name, NOW - registered_ago) for a in agents},
    )


def presence_of(**by_id: Presence):  # type: ignore[no-untyped-def]
    return lambda agent_id: by_id.get(f"id{agent_id}", NEVER_CONNECTED)


def active() -> Presence:
    return Presence(ConnectionStatus.ACTIVE, NOW - 5)


def gone(for_s: float) -> Presence:
    return Presence(ConnectionStatus.DISCONNECTED, NOW - for_s)


def run(
    request: EnrollmentRequest,
    reg: Registry | None = None,
    presence=None,  # type: ignore[no-untyped-def]
    force: ForceOptions | None = None,
    **kw: object,
):  # type: ignore[no-untyped-def]
    return decide(
        request,
        "192.0.2.10",
        reg if reg is not None else registry(),
        presence or presence_of(),
        force=force or ForceOptions(),
        now=NOW,
        **kw,  # type: ignore[arg-type]
    )


def refused(*args: object, **kw: object) -> RequestRefused:
    with pytest.raises(RequestRefused) as caught:
        run(*args, **kw)  # type: ignore[arg-type]
    return caught.value


# -- addresses ------------------------------------------------------------------------


def test_ip_resolution() -> None:
    plain, src = EnrollmentRequest("x1"), EnrollmentRequest("x1", ip="src")
    assert resolve_ip(plain, "192.0.2.10", use_source_ip=False) == "any"
    assert resolve_ip(plain, "192.0.2.10", use_source_ip=True) == "192.0.2.10"
    assert resolve_ip(src, "192.0.2.10", use_source_ip=False) == "192.0.2.10"
    given = EnrollmentRequest("x1", ip="10.9.9.9")
    assert resolve_ip(given, "192.0.2.10", use_source_ip=True) == "10.9.9.9"


def test_new_name_is_admitted() -> None:
    admission = run(EnrollmentRequest("web-2"))
    assert (admission.name, admission.ip, admission.replaces) == ("web-2", "any", ())


def test_any_never_clashes() -> None:
    assert run(EnrollmentRequest("web-2", ip="any")).replaces == ()


# -- duplicate names and the force rules, in Wazuh's order -----------------------------


def test_duplicate_of_a_connected_agent_is_refused_and_says_why() -> None:
    exc = refused(EnrollmentRequest("web-1"), presence=presence_of(id001=active()))
    assert exc.refusal is Refusal.DUPLICATE_NAME
    assert exc.reason.startswith("Duplicate agent name: web-1 (")
    assert "agent 001 'web-1' is connected" in exc.reason
    assert "1h disconnected" in exc.reason


def test_recently_disconnected_agent_is_kept() -> None:
    exc = refused(EnrollmentRequest("web-1"), presence=presence_of(id001=gone(600)))
    assert "disconnected for 10m" in exc.reason


def test_long_disconnected_agent_is_replaced() -> None:
    admission = run(EnrollmentRequest("web-1"), presence=presence_of(id001=gone(HOUR + 1)))
    assert [(r.agent, r.clash) for r in admission.replaces] == [(WEB, "name")]


def test_never_connected_agent_is_replaced_once_registered_long_enough() -> None:
    assert run(EnrollmentRequest("web-1")).replaces[0].agent == WEB
    exc = refused(EnrollmentRequest("web-1"), registry(HOUR - 60))
    assert "registered 59m ago" in exc.reason


def test_agent_without_registration_record_counts_as_old() -> None:
    reg = Registry(ClientKeys([WEB]), {})
    assert run(EnrollmentRequest("web-1"), reg).replaces[0].agent == WEB


def test_same_key_hash_means_keep_the_key() -> None:
    request = EnrollmentRequest("web-1", key_hash=key_hash(WEB))
    exc = refused(request)
    assert "already has this key on the manager" in exc.reason
    # key_mismatch off: the same agent may take a new key.
    assert run(request, force=ForceOptions(key_mismatch=False)).replaces[0].agent == WEB
    # A different hash (another host claiming the name, or a stale key): replaced.
    other = EnrollmentRequest("web-1", key_hash="0" * 40)
    assert run(other).replaces[0].agent == WEB


def test_key_check_comes_after_the_connection_check() -> None:
    request = EnrollmentRequest("web-1", key_hash=key_hash(WEB))
    exc = refused(request, presence=presence_of(id001=active()))
    assert "is connected" in exc.reason


def test_force_disabled_keeps_every_agent() -> None:
    exc = refused(EnrollmentRequest("web-1"), force=ForceOptions(enabled=False))
    assert "force.enabled = false" in exc.reason


def test_disconnected_time_check_can_be_turned_off() -> None:
    force = ForceOptions(disconnected_time_enabled=False)
    admission = run(EnrollmentRequest("web-1"), presence=presence_of(id001=active()), force=force)
    assert admission.replaces[0].agent == WEB


def test_registration_time_zero_turns_its_check_off() -> None:
    force = ForceOptions(after_registration_time_s=0)
    assert run(EnrollmentRequest("web-1"), registry(1.0), force=force).replaces[0].agent == WEB


# -- duplicate IP and the manager's name ---------------------------------------------


def test_duplicate_ip() -> None:
    request = EnrollmentRequest("db-9", ip="10.0.0.5")
    exc = refused(request, presence=presence_of(id002=active()))
    assert exc.refusal is Refusal.DUPLICATE_IP
    assert exc.reason.startswith("Duplicate IP: 10.0.0.5 (agent 002 'db-1' is connected")
    assert [(r.agent, r.clash) for r in run(request).replaces] == [(DB, "IP")]


def test_same_agent_clashing_on_ip_and_name_is_replaced_once() -> None:
    admission = run(EnrollmentRequest("db-1", ip="10.0.0.5"))
    assert [(r.agent, r.clash) for r in admission.replaces] == [(DB, "IP")]


def test_source_ip_clash() -> None:
    reg = registry(2 * HOUR, AgentKey("003", "edge", "192.0.2.10", KEY))
    exc = refused(
        EnrollmentRequest("edge-2", ip="src"),
        reg,
        presence=presence_of(id003=active()),
    )
    assert exc.refusal is Refusal.DUPLICATE_IP


def test_manager_name_is_refused() -> None:
    exc = refused(EnrollmentRequest("manager-1"), manager_name="manager-1")
    assert exc.refusal is Refusal.INVALID_NAME
    assert "manager's own name" in exc.reason
    assert run(EnrollmentRequest("manager-1"), manager_name=None).name == "manager-1"


def test_replacement_refusal_none_when_allowed() -> None:
    assert replacement_refusal(WEB, registry(), presence_of(), None, ForceOptions(), NOW) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.6, "1m"), (95, "1m35s"), (3600, "1h"), (3725, "1h2m5s"), (-5, "0s")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text
