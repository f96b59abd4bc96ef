"""The enrollment listener's files: password, certificate, and the agent-state reader."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from trailwarden.manager.agents_view import (
    AgentActivity,
    AgentStateError,
    ConnectionStatus,
    connection_status,
    read_agent_state,
)
from trailwarden.manager.authd_password import (
    PasswordFileError,
    load_or_create_password,
    read_password_file,
)
from trailwarden.manager.tls_identity import (
    TlsIdentity,
    TlsIdentityError,
    ensure_identity,
    generate_self_signed,
    peer_certificate_matches,
    server_context,
)

# -- authd.pass -------------------------------------------------------------------------


def test_password_generated_once_stored_0600_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "etc" / "authd.pass"
    with caplog.at_level(logging.INFO, logger="trailwarden.manager.authd_password"):
        first = load_or_create_password(path)
        second = load_or_create_password(path)
    assert first.generated and not second.generated
    assert first.value == second.value and len(first.value) == 32
    assert int(first.value, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == first.value + b"\n"
    shown = [r for r in caplog.records if first.value.decode() in r.getMessage()]
    assert len(shown) == 1 and shown[0].levelno == logging.WARNING
    assert first.value.decode() not in repr(first)


def test_existing_password_file(tmp_path: Path) -> None:
    path = tmp_path / "authd.pass"
    path.write_bytes(b"my secret pass\nsecond line ignored\n")
    assert load_or_create_password(path).value == b"my secret pass"
    path.write_bytes(b"x\n")
    with pytest.raises(PasswordFileError, match="at least 2 bytes"):
        load_or_create_password(path)
    path.write_bytes(b"p" * 5000)
    with pytest.raises(PasswordFileError, match="longer than"):
        read_password_file(path)


# -- certificate ------------------------------------------------------------------------


def test_generated_certificate(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "etc" / "sslmanager.cert", tmp_path / "etc" / "sslmanager.key"
    identity = ensure_identity(cert_path, key_path, ["manager.example", "10.0.0.2"])
    assert identity == TlsIdentity(cert_path, key_path, generated=True)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["manager.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.2")]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=3000)
    # Second start: the same files, nothing regenerated.
    pem = cert_path.read_bytes()
    again = ensure_identity(cert_path, key_path, ["other"])
    assert not again.generated and cert_path.read_bytes() == pem
    context = server_context(again)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_half_an_identity_is_an_error(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_path.write_text("x")
    with pytest.raises(TlsIdentityError, match="exists but"):
        ensure_identity(cert_path, key_path)


def test_unloadable_files_and_ciphers(tmp_path: Path) -> None:
    cert_pem, key_pem = generate_self_signed(["a.example"])
    other_cert, _ = generate_self_signed(["b.example"])
    (tmp_path / "c.pem").write_bytes(other_cert)
    (tmp_path / "k.pem").write_bytes(key_pem)
    with pytest.raises(TlsIdentityError, match="cannot load the certificate"):
        server_context(TlsIdentity(tmp_path / "c.pem", tmp_path / "k.pem"))
    (tmp_path / "c.pem").write_bytes(cert_pem)
    identity = TlsIdentity(tmp_path / "c.pem", tmp_path / "k.pem")
    with pytest.raises(TlsIdentityError, match="cipher list"):
        server_context(identity, ciphers="NO-SUCH-CIPHER")
    with pytest.raises(TlsIdentityError, match="agent CA"):
        server_context(identity, agent_ca_file=tmp_path / "missing.pem")
    assert server_context(identity, agent_ca_file=tmp_path / "c.pem").verify_mode == (
        ssl.CERT_REQUIRED
    )


def test_peer_certificate_matches_address() -> None:
    by_san = {"subjectAltName": (("DNS", "agent"), ("IP Address", "10.0.0.7"))}
    assert peer_certificate_matches(by_san, "10.0.0.7")
    assert not peer_certificate_matches(by_san, "10.0.0.8")
    by_cn = {"subject": ((("commonName", "10.0.0.9"),),)}
    assert peer_certificate_matches(by_cn, "10.0.0.9")
    assert not peer_certificate_matches(None, "10.0.0.9")
    assert not peer_certificate_matches(by_san, "not-an-ip")


# -- agent-state.json -------------------------------------------------------------------


def write_state(data_dir: Path, doc: object) -> None:
    (data_dir / "var").mkdir(exist_ok=True)
    (data_dir / "var" / "agent-state.json").write_text(json.dumps(doc))


def test_agent_state_read(tmp_path: Path) -> None:
    assert read_agent_state(tmp_path).agents == {}
    write_state(
        tmp_path,
        {
            "version": 1,
            "updated": 1000,
            "agents": {
                "001": {
                    "connected": True,
                    "connected_since": 900,
                    "last_seen": 995.5,
                    "last_peer": "10.0.0.7:40000",
                    "events_received": 12,
                    "bytes_received": 3400,
                    "batches_received": 2,
                    "last_batch_seq": 41,
                },
                "002": {"connected": False, "last_seen": None},
            },
        },
    )
    state = read_agent_state(tmp_path)
    assert state.updated == 1000.0
    assert state.activity("001") == AgentActivity(
        True, 900.0, 995.5, "10.0.0.7:40000", 12, 3400, 2, 41
    )
    assert state.activity("002") == AgentActivity()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "top level"),
        ({"version": 9}, "version = 9"),
        ({"version": 1, "agents": {"001": {"connected": "yes"}}}, "agents.001.connected"),
        ({"version": 1, "agents": {"001": {"last_seen": "now"}}}, "agents.001.last_seen"),
        ({"version": 1, "agents": {"001": {"events_received": -1}}}, "agents.001.events_received"),
        ({"version": 1, "agents": {"001": {"last_peer": 7}}}, "agents.001.last_peer"),
    ],
)
def test_agent_state_malformed(tmp_path: Path, doc: object, message: str) -> None:
    write_state(tmp_path, doc)
    with pytest.raises(AgentStateError, match=message):
        read_agent_state(tmp_path)


def test_connection_status_classification() -> None:
    now = 10_000.0
    assert connection_status(None, now) is ConnectionStatus.NEVER_CONNECTED
    assert connection_status(AgentActivity(), now) is ConnectionStatus.NEVER_CONNECTED
    fresh = AgentActivity(connected=True, last_seen=now - 20)
    assert connection_status(fresh, now) is ConnectionStatus.ACTIVE
    # Connected by the file, but silent for more than two heartbeats: a stale file.
    stale = AgentActivity(connected=True, last_seen=now - 21)
    assert connection_status(stale, now) is ConnectionStatus.DISCONNECTED
    assert connection_status(stale, now, heartbeat_interval_s=30) is ConnectionStatus.ACTIVE
    left = AgentActivity(connected=False, last_seen=now - 1)
    assert connection_status(left, now) is ConnectionStatus.DISCONNECTED
