"""Who may enroll under which name and address: Wazuh's duplicate checks and ``<force>`` rules.

Theory of operation
===================

Given a parsed request, the address it came from, the enrolled agents and
what the manager knows about their connections, ``decide`` returns the
address to register and the agents to replace, or refuses. It follows
Wazuh 4.14's ``w_auth_validate_data`` / ``w_auth_replace_agent``
(``src/os_auth/auth.c``) in order:

1. The address: the ``IP:`` field, the source address for ``IP:'src'`` or
   when ``use_source_ip`` is set, else ``any``.
2. Duplicate IP: another active agent registered with the same address
   (``any`` never clashes).
3. The name may not be the manager's own (4.x).
4. Duplicate name.

A duplicate is replaced only if the ``<force>`` rules allow it, checked in
Wazuh's order: ``enabled``; then, unless the old agent never connected, it
must be disconnected and for at least ``disconnected_time``; then it must have
registered at least ``after_registration_time`` ago; then, with
``key_mismatch``, the request's ``K:`` hash must differ from the old agent's
(an equal hash is the same agent asking again while its key is still valid:
it should keep using it). A replaced agent is removed as Wazuh removes one
(``ID !name ip key``) and the newcomer gets a new id.

Wazuh puts the reason for a refusal only in its log; we also put it in the
reply after the Wazuh reason text, so the person enrolling learns why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from trailwarden.common.enrollment_protocol import (
    SOURCE_IP,
    EnrollmentRequest,
    Refusal,
    RequestRefused,
    key_hash,
)
from trailwarden.common.keys import AgentKey
from trailwarden.manager.agent_registry import Registry
from trailwarden.manager.agents_view import ConnectionStatus
from trailwarden.manager.enrollment_config import ForceOptions


@dataclass(frozen=True, slots=True)
class Presence:
    """An enrolled agent's connection as the policy needs it."""

    status: ConnectionStatus
    # For DISCONNECTED: when it was last seen (the disconnection time).
    last_seen: float | None = None


NEVER_CONNECTED = Presence(ConnectionStatus.NEVER_CONNECTED)


@dataclass(frozen=True, slots=True)
class Replacement:
    """An enrolled agent the new one replaces, and which check found it."""

    agent: AgentKey
    clash: str  # "IP" or "name"


@dataclass(frozen=True, slots=True)
class Admission:
    """A request the policy accepts: register ``name`` at ``ip`` after removing ``replaces``."""

    name: str
    ip: str
    replaces: tuple[Replacement, ...] = ()


def resolve_ip(request: EnrollmentRequest, peer_ip: str, *, use_source_ip: bool) -> str:
    """The address to register for ``request`` coming from ``peer_ip``."""
    if request.ip == SOURCE_IP or (request.ip is None and use_source_ip):
        return peer_ip
    return request.ip if request.ip is not None else "any"


def decide(
    request: EnrollmentRequest,
    peer_ip: str,
    registry: Registry,
    presence: Callable[[str], Presence],
    *,
    force: ForceOptions,
    now: float,
    use_source_ip: bool = False,
    manager_name: str | None = None,
) -> Admission:
    """Apply the duplicate checks and force rules to one request.

    Args:
        presence: the connection of an enrolled agent, by id.
        manager_name: names equal to it are refused (Wazuh 4.x); None: no check.

    Raises:
        RequestRefused: the request clashes with an agent that may not be replaced
            (the reason says which and why).
    """
    ip = resolve_ip(request, peer_ip, use_source_ip=use_source_ip)
    replaces: list[Replacement] = []
    if ip != "any":
        holder = next((a for a in registry.keys if a.ip == ip), None)
        if holder is not None:
            why = replacement_refusal(holder, registry, presence, request.key_hash, force, now)
            if why is not None:
                raise RequestRefused(Refusal.DUPLICATE_IP, f": {ip} ({why})")
            replaces.append(Replacement(holder, "IP"))
    if manager_name is not None and request.name == manager_name:
        raise RequestRefused(
            Refusal.INVALID_NAME, f": {request.name} (it is the manager's own name)"
        )
    holder = registry.keys.by_name(request.name)
    if holder is not None and all(r.agent is not holder for r in replaces):
        why = replacement_refusal(holder, registry, presence, request.key_hash, force, now)
        if why is not None:
            raise RequestRefused(Refusal.DUPLICATE_NAME, f": {request.name} ({why})")
        replaces.append(Replacement(holder, "name"))
    return Admission(request.name, ip, tuple(replaces))


def replacement_refusal(
    agent: AgentKey,
    registry: Registry,
    presence: Callable[[str], Presence],
    client_key_hash: str | None,
    force: ForceOptions,
    now: float,
) -> str | None:
    """Why ``agent`` may not be replaced, or None if it may (Wazuh's order of checks)."""
    who = f"agent {agent.agent_id} '{agent.name}'"
    if not force.enabled:
        return f"{who} is enrolled and replacing agents is disabled (force.enabled = false)"
    if force.disconnected_time_enabled:
        seen = presence(agent.agent_id)
        if seen.status is ConnectionStatus.ACTIVE:
            return (
                f"{who} is connected; it can be replaced after "
                f"{duration(force.disconnected_time_s)} disconnected"
            )
        if seen.status is ConnectionStatus.DISCONNECTED and seen.last_seen is not None:
            away = now - seen.last_seen
            if away < force.disconnected_time_s:
                return (
                    f"{who} has been disconnected for {duration(away)}; it can be replaced "
                    f"after {duration(force.disconnected_time_s)}"
                )
    if force.after_registration_time_s > 0:
        record = registry.registration(agent.agent_id)
        age = math.inf if record is None else now - record.registered
        if age < force.after_registration_time_s:
            return (
                f"{who} registered {duration(age)} ago; it can be replaced "
                f"{duration(force.after_registration_time_s)} after registering"
            )
    if force.key_mismatch and client_key_hash is not None and client_key_hash == key_hash(agent):
        return f"{who} already has this key on the manager: keep using the key you hold"
    return None


def duration(seconds: float) -> str:
    """``3600`` as ``1h``, ``95`` as ``1m35s``: for reasons read by people."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    parts.append(f"{secs}s" if secs or not (hours or minutes) else "")
    return "".join(parts)
