"""The manager's TLS certificate for enrollment: loaded, or generated at first start.

Wazuh's installer creates ``etc/sslmanager.cert`` / ``etc/sslmanager.key``;
we create them the first time the enrollment listener starts without a
configured certificate. The generated certificate is self-signed and marked
as a CA for itself (basic constraints ``CA:TRUE, pathlen:0``), so an agent
can pin it with ``--ca-file`` exactly as it would pin a real CA. Its subject
alternative names list the configured host names and addresses; an agent
that verifies the manager checks the name it connects to against them.

The key is ECDSA P-256: every OpenSSL an agent may run (1.0.2 and later)
speaks it, and it is generated in milliseconds. It is written with mode 0600
before any byte of it is, and the certificate only after the key, so a crash
never leaves a certificate without its key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE: Final = Path("etc") / "sslmanager.cert"
KEY_FILE: Final = Path("etc") / "sslmanager.key"
# Agents pin this certificate; an expiry would stop every enrollment, and a
# rotation is a deliberate act (delete both files and restart), so ten years.
VALIDITY_DAYS: Final = 3650
# A clock a little behind on the agent must not see a certificate "from the future".
BACKDATE: Final = datetime.timedelta(hours=1)
# Wazuh's authd cipher list (DEFAULT_CIPHERS in src/os_auth/auth.h); it
# governs TLS 1.2, TLS 1.3 suites are fixed by OpenSSL.
DEFAULT_CIPHERS: Final = "HIGH:!ADH:!EXP:!MD5:!RC4:!3DES:!CAMELLIA:@STRENGTH"
KEY_FILE_MODE: Final = 0o600


class TlsIdentityError(Exception):
    """The certificate or key cannot be loaded or created (names the file and why)."""


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    """Where the manager's certificate and key are, and whether we just made them."""

    cert_file: Path
    key_file: Path
    generated: bool = False


def default_hosts() -> tuple[str, ...]:
    """Names an agent on this host or the network may use: host name, FQDN, loopback."""
    hosts = [socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"]
    return tuple(dict.fromkeys(h for h in hosts if h))


def ensure_identity(cert_file: Path, key_file: Path, hosts: Iterable[str] = ()) -> TlsIdentity:
    """Use the certificate and key at these paths, generating both if neither exists.

    Args:
        hosts: names and addresses for a generated certificate (default:
            ``default_hosts()``).

    Raises:
        TlsIdentityError: only one of the two files exists, or they cannot be written.
    """
    have_cert, have_key = cert_file.exists(), key_file.exists()
    if have_cert and have_key:
        return TlsIdentity(cert_file, key_file)
    if have_cert or have_key:
        present, missing = (cert_file, key_file) if have_cert else (key_file, cert_file)
        raise TlsIdentityError(
            f"{present} exists but {missing} does not; restore it, or delete {present} "
            "to have a new certificate generated"
        )
    names = tuple(hosts) or default_hosts()
    cert_pem, key_pem = generate_self_signed(names)
    try:
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(key_file, key_pem, KEY_FILE_MODE)
        _write_new(cert_file, cert_pem, 0o644)
    except OSError as exc:
        raise TlsIdentityError(
            f"cannot write the generated certificate to {cert_file} / {key_file}: {exc}"
        ) from None
    return TlsIdentity(cert_file, key_file, generated=True)


def generate_self_signed(
    hosts: Iterable[str], *, now: datetime.datetime | None = None
) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``hosts`` and its key, both PEM.

    Each host is an IP address SAN if it parses as one, else a DNS name.

    Raises:
        ValueError: ``hosts`` is empty.
    """
    names = list(dict.fromkeys(hosts))
    if not names:
        raise ValueError("a certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Trailwarden manager"),
            x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
        ]
    )
    sans: list[x509.GeneralName] = []
    for host in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    start = (now or datetime.datetime.now(datetime.UTC)) - BACKDATE
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def server_context(
    identity: TlsIdentity,
    *,
    ciphers: str = DEFAULT_CIPHERS,
    agent_ca_file: Path | None = None,
) -> ssl.SSLContext:
    """The listener's TLS context: TLS 1.2 or later, Wazuh's cipher list.

    Args:
        agent_ca_file: require agents to present a certificate signed by this
            CA (Wazuh's ``ssl_agent_ca``); None: agents are not asked for one.

    Raises:
        TlsIdentityError: a file cannot be loaded or the cipher list is invalid.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.set_ciphers(ciphers)
    except ssl.SSLError as exc:
        raise TlsIdentityError(f"cipher list {ciphers!r} is invalid: {exc}") from None
    try:
        context.load_cert_chain(str(identity.cert_file), str(identity.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsIdentityError(
            f"cannot load the certificate {identity.cert_file} with key {identity.key_file}: {exc}"
        ) from None
    if agent_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(agent_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsIdentityError(f"cannot load the agent CA {agent_ca_file}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_certificate_matches(cert: Mapping[str, Any] | None, address: str) -> bool:
    """Whether a verified peer certificate (``getpeercert()``) names ``address``
    (Wazuh's ``check_x509_cert``: subject alternative names first, common name second)."""
    if not cert:
        return False
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return False
    values = [v for k, v in cert.get("subjectAltName", ()) if k in ("IP Address", "DNS")]
    if not values:
        values = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    for value in values:
        try:
            if ipaddress.ip_address(str(value).strip()) == wanted:
                return True
        except ValueError:
            continue
    return False


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key someone put there meanwhile; the mode is
    # set at creation, so no byte is ever readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # O_CREAT's mode is masked by the umask
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
