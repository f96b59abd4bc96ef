"""TLS settings for the outputs that connect out (indexer, MQTT broker).

Verification is on unless switched off explicitly: the default context checks
the server's certificate chain and host name against the system trust store, or
against ``ca_file`` when given (the usual case for a Wazuh indexer with its own
root CA). ``cert_file``/``key_file`` add a client certificate (mutual TLS, as
Wazuh's Filebeat uses).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class TlsConfigError(ValueError):
    """The TLS settings are unusable (the configuration's fault)."""


@dataclass(frozen=True, slots=True)
class ClientTls:
    ca_file: Path | None = None
    verify: bool = True
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise TlsConfigError(f"key_file {self.key_file} given without cert_file")


def client_ssl_context(tls: ClientTls, *, who: str) -> ssl.SSLContext:
    """Build the client context; ``who`` names the output in errors and logs.

    Raises:
        TlsConfigError: a file is missing or not a certificate/key.
    """
    try:
        ctx = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls.ca_file is not None else None
        )
        if tls.cert_file is not None:
            ctx.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file is not None else None
            )
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(
            str(p) for p in (tls.ca_file, tls.cert_file, tls.key_file) if p is not None
        )
        raise TlsConfigError(f"{who}: cannot load TLS files ({files}): {exc}") from None
    if not tls.verify:
        log.warning("%s: TLS certificate verification is disabled.", who)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
