"""The ``[enrollment]`` configuration: the listener, its files, limits and ``<force>`` rules.

Names follow Wazuh's ``<auth>`` block where there is one (``use_password``,
``use_source_ip``, ``ssl_agent_ca`` as ``agent_ca_file``, ``ssl_verify_host``
as ``verify_host``, ``allow_higher_versions``, ``<force>``), with units in
the key names. Each field's ``help`` metadata is the comment
``trailwarden-manager config --default`` prints above the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from trailwarden.common.config import limits
from trailwarden.common.enrollment_protocol import DEFAULT_ENROLLMENT_PORT
from trailwarden.manager.tls_identity import DEFAULT_CIPHERS

# The Wazuh release whose agents we serve; a newer agent is refused unless
# allow_higher_versions, as authd refuses agents newer than itself.
WAZUH_VERSION: Final = "v4.14.7"
_HOUR_S: Final = 3600.0


def _meta(help_text: str, *, min: float | None = None, max: float | None = None) -> Any:
    """Field metadata: the comment printed above the key, and its range."""
    return {**limits(min=min, max=max), "help": help_text}


@dataclass(frozen=True, slots=True)
class ForceOptions:
    """Wazuh's ``<auth><force>`` block, with its defaults (``[enrollment.force]``)."""

    enabled: bool = field(
        default=True, metadata=_meta("Replacing an enrolled agent is allowed at all.")
    )
    key_mismatch: bool = field(
        default=True,
        metadata=_meta(
            "Keep the enrolled agent when the request carries the hash of its current key "
            "(the same agent: it should keep using its key)."
        ),
    )
    disconnected_time_enabled: bool = field(
        default=True,
        metadata=_meta(
            "The enrolled agent must have been disconnected for disconnected_time_s "
            "(never connected is fine)."
        ),
    )
    disconnected_time_s: float = field(
        default=_HOUR_S, metadata=_meta("See disconnected_time_enabled.", min=0)
    )
    after_registration_time_s: float = field(
        default=_HOUR_S,
        metadata=_meta(
            "The enrolled agent must have registered this long ago; 0 turns the check off.",
            min=0,
        ),
    )


@dataclass(frozen=True, slots=True)
class EnrollmentConfig:
    """The ``[enrollment]`` settings; paths default to the manager data directory."""

    enabled: bool = field(default=True, metadata=_meta("Run the enrollment listener."))
    listen_address: str = field(
        default="0.0.0.0",  # noqa: S104 - agents enroll from the network, as with authd
        metadata=_meta("Address the enrollment listener binds ('::' for IPv6 and IPv4)."),
    )
    port: int = field(
        default=DEFAULT_ENROLLMENT_PORT,
        metadata=_meta("TCP port (TLS), Wazuh's authd port.", min=0, max=65535),
    )
    use_password: bool = field(
        default=True,
        metadata=_meta(
            "Require the password in password_file; it is generated (and logged once) "
            "at the first start if the file does not exist."
        ),
    )
    password_file: Path | None = field(
        default=None, metadata=_meta("Default: <data_dir>/etc/authd.pass.")
    )
    cert_file: Path | None = field(
        default=None,
        metadata=_meta(
            "The listener's certificate. With cert_file and key_file unset, "
            "<data_dir>/etc/sslmanager.cert and .key are used, generated at the first start."
        ),
    )
    key_file: Path | None = field(default=None, metadata=_meta("The certificate's key."))
    cert_hosts: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "Host names and addresses written in a generated certificate (agents that "
            "verify it connect by one of them); empty: this host's name, FQDN and loopback."
        ),
    )
    ciphers: str = field(
        default=DEFAULT_CIPHERS, metadata=_meta("OpenSSL cipher list for TLS 1.2 (Wazuh's).")
    )
    agent_ca_file: Path | None = field(
        default=None,
        metadata=_meta(
            "Require agents to present a certificate signed by this CA (Wazuh's ssl_agent_ca)."
        ),
    )
    verify_host: bool = field(
        default=False,
        metadata=_meta(
            "With agent_ca_file: the agent's certificate must name the address it "
            "connects from (Wazuh's ssl_verify_host)."
        ),
    )
    use_source_ip: bool = field(
        default=False,
        metadata=_meta(
            "Register agents under the address they enroll from instead of 'any' (then "
            "they may connect only from it)."
        ),
    )
    allow_higher_versions: bool = field(
        default=False,
        metadata=_meta(f"Accept Wazuh agents newer than {WAZUH_VERSION}."),
    )
    refuse_manager_name: bool = field(
        default=True,
        metadata=_meta("Refuse the manager's own name as an agent name (as Wazuh 4.x)."),
    )
    force: ForceOptions = field(
        default_factory=ForceOptions,
        metadata=_meta("When an enrollment may replace an agent enrolled under the same name."),
    )
    max_connections: int = field(
        default=1000,
        metadata=_meta(
            "Enrollment connections at once (Wazuh's pool); more are closed at once.",
            min=1,
            max=100_000,
        ),
    )
    max_connections_per_ip: int = field(
        default=64,
        metadata=_meta("Enrollment connections at once from one address.", min=1, max=100_000),
    )
    request_timeout_s: float = field(
        default=10.0,
        metadata=_meta(
            "The TLS handshake and the request line must arrive within this time.",
            min=0.01,
            max=600,
        ),
    )
    wrong_password_delay_s: float = field(
        default=1.0,
        metadata=_meta(
            "A wrong password is answered after this delay, doubled for each further "
            "failure from the same address.",
            min=0,
            max=600,
        ),
    )
    max_wrong_password_delay_s: float = field(
        default=30.0, metadata=_meta("The delay's ceiling.", min=0, max=3600)
    )
    wrong_password_window_s: float = field(
        default=600.0,
        metadata=_meta(
            "An address's failures are forgotten after this long without one.",
            min=1,
            max=86_400,
        ),
    )
