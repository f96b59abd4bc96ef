"""The enrollment password (``etc/authd.pass``): read, or generated once and shown once.

As Wazuh's authd: the password is the file's first line without its newline;
a file of one byte or less is an error (``w_authd_load_password``). If the
file does not exist, a random password is generated, written with mode 0600
and logged once, at WARNING so that it shows whatever the log level: that log
line is the only time it is ever displayed. Later starts read the file and
say so without showing it. To rotate it, delete the file and restart.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

PASSWORD_FILE: Final = Path("etc") / "authd.pass"
PASSWORD_FILE_MODE: Final = 0o600
# 128 random bits as 32 hex characters, the shape of Wazuh's MD5-hex password.
GENERATED_BYTES: Final = 16
# Wazuh refuses a password file of one byte or less; one character is no password.
MIN_PASSWORD_BYTES: Final = 2
# The password goes into one request line of at most 69632 bytes with the name
# and fields; 4 KiB is Wazuh's fgets buffer for the agent's copy.
MAX_PASSWORD_BYTES: Final = 4095


class PasswordFileError(Exception):
    """The password file is unusable (its content or permissions); names the file."""


@dataclass(frozen=True, slots=True)
class EnrollmentPassword:
    value: bytes
    path: Path
    generated: bool = False

    def __repr__(self) -> str:  # never let the secret reach a log through repr
        return f"EnrollmentPassword(path={str(self.path)!r}, generated={self.generated})"


def read_password_file(path: Path) -> bytes:
    """The password in ``path``: its first line, without the newline.

    Raises:
        OSError: the file cannot be read (FileNotFoundError if it does not exist).
        PasswordFileError: it is too short or too long.
    """
    with path.open("rb") as handle:
        first = handle.readline(MAX_PASSWORD_BYTES + 2)
    value = first.rstrip(b"\r\n")
    if len(value) < MIN_PASSWORD_BYTES:
        raise PasswordFileError(
            f"{path}: the password must be at least {MIN_PASSWORD_BYTES} bytes on the first line"
        )
    if len(value) > MAX_PASSWORD_BYTES:
        raise PasswordFileError(f"{path}: the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return value


def load_or_create_password(path: Path) -> EnrollmentPassword:
    """The enrollment password from ``path``, generated and written there if absent.

    Raises:
        PasswordFileError: the file exists but is unusable, or cannot be created.
    """
    try:
        value = read_password_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PasswordFileError(f"{path}: cannot read the password: {exc.strerror}") from None
    else:
        log.info(
            "Enrollment password read from %s (delete it and restart to rotate it).",
            path,
            extra={"password_file": str(path)},
        )
        return EnrollmentPassword(value, path)
    value = secrets.token_hex(GENERATED_BYTES).encode("ascii")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PASSWORD_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PASSWORD_FILE_MODE)
            handle.write(value + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except FileExistsError:
        # Another process created it between our read and our create: use theirs.
        return load_or_create_password(path)
    except OSError as exc:
        raise PasswordFileError(f"{path}: cannot write a new password: {exc.strerror}") from None
    log.warning(
        "Generated a new enrollment password and stored it in %s (mode 0600). "
        "It is shown only this once: %s",
        path,
        value.decode("ascii"),
        extra={"password_file": str(path)},
    )
    return EnrollmentPassword(value, path, generated=True)
