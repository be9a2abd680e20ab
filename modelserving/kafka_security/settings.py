"""A Kafka client's security settings: `KafkaSecurity`, what it may hold, the checks that refuse
settings that cannot work, and aiokafka's options made from it (`client_options()`), the one
form every client of the log takes them in.

Secrets are files, or values held only in memory (the operator reads Secrets through the API):
`client_options()` reads the files each time it is called, so a client made after a Secret
changed in place (a renewed certificate, a new password) uses the new one. No secret value is in
the dataclass's repr, and no message made here holds one.
"""

from __future__ import annotations

import contextlib
import enum
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SecurityProtocol(enum.StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"  # TLS; with a client certificate, mutual TLS
    SASL_SSL = "SASL_SSL"  # a user name and password over TLS
    SASL_PLAINTEXT = "SASL_PLAINTEXT"  # the same in the clear: refused unless allowed


class SaslMechanism(enum.StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


TLS_PROTOCOLS = (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)
SASL_PROTOCOLS = (SecurityProtocol.SASL_SSL, SecurityProtocol.SASL_PLAINTEXT)

# LoggingReady reasons of a broker that refuses the client, said the same by every client.
AUTHENTICATION_FAILED = "KafkaAuthenticationFailed"
TLS_FAILED = "KafkaTLSFailed"


class KafkaSecurityError(ValueError):
    """The security settings cannot work together, or a file they name cannot be read; the
    message says what to change and holds no secret. `reason`: the LoggingReady reason."""

    def __init__(self, message: str, reason: str = TLS_FAILED) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class KafkaSecurity:
    """A Kafka client's security settings. The CA, certificate and key come from a file or from
    memory (PEM); the password from a file (read anew by each client) or from memory."""

    protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    ca_file: str = ""  # neither file nor PEM: the system's trusted CAs
    ca_pem: str = field(default="", repr=False)
    cert_file: str = ""  # a client certificate (mutual TLS); a file may hold the key too
    cert_pem: str = field(default="", repr=False)
    key_file: str = ""
    key_pem: str = field(default="", repr=False)
    sasl_mechanism: SaslMechanism | None = None
    username: str = ""
    password_file: str = ""
    password: str = field(default="", repr=False)
    check_hostname: bool = True  # Kafka's ssl.endpoint.identification.algorithm=https
    allow_sasl_plaintext: bool = False

    @property
    def tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS

    @property
    def sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS

    @property
    def client_certificate(self) -> bool:
        return bool(self.cert_file or self.cert_pem)

    def check(self) -> None:
        """Refuse settings that cannot work, saying what to change."""
        protocol = self.protocol
        if protocol is SecurityProtocol.SASL_PLAINTEXT and not self.allow_sasl_plaintext:
            raise KafkaSecurityError(
                "SASL_PLAINTEXT sends the password and every record unencrypted: use SASL_SSL, "
                "or allow SASL_PLAINTEXT explicitly"
            )
        if not self.tls and (self.ca_file or self.ca_pem or self.client_certificate):
            raise KafkaSecurityError(
                f"a CA or client certificate is given but the protocol is {protocol}: "
                "use SSL or SASL_SSL"
            )
        # A certificate file may hold its key too (Kafka's PEM key store); PEM in memory may not.
        if self.cert_pem and not (self.key_pem or self.key_file):
            raise KafkaSecurityError("a client certificate needs its private key: give the key")
        if (self.key_file or self.key_pem) and not self.client_certificate:
            raise KafkaSecurityError("a client key needs its certificate: give the certificate")
        if self.sasl:
            if self.sasl_mechanism is None:
                raise KafkaSecurityError(
                    f"{protocol} needs a SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                )
            if not self.username:
                raise KafkaSecurityError(f"{protocol} needs a SASL user name")
            if not (self.password_file or self.password):
                raise KafkaSecurityError(f"{protocol} needs a source of the SASL password")
        elif self.sasl_mechanism is not None or self.username:
            raise KafkaSecurityError(
                f"a SASL mechanism or user is given but the protocol is {protocol}: use SASL_SSL"
            )

    def files(self) -> tuple[str, ...]:
        """The files the settings read: a change to one of them is a rotation."""
        names = (self.ca_file, self.cert_file, self.key_file, self.password_file)
        return tuple(name for name in names if name)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context from the files as they are now (None without TLS)."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(
                cafile=self.ca_file or None, cadata=self.ca_pem or None
            )
            context.check_hostname = self.check_hostname
            if self.client_certificate:
                with _cert_files(self) as (cert, key):
                    context.load_cert_chain(cert, key)
        except FileNotFoundError as exc:
            raise KafkaSecurityError(f"cannot read {exc.filename}: no such file") from None
        except (ssl.SSLError, OSError) as exc:
            # SSLError's text names the library's reason (no PEM, key mismatch), never the data.
            raise KafkaSecurityError(f"the CA, certificate or key cannot be used: {exc}") from None
        return context

    def read_password(self) -> str:
        if not self.password_file:
            return self.password
        try:
            return Path(self.password_file).read_text().strip()
        except OSError as exc:
            raise KafkaSecurityError(
                f"cannot read the SASL password file {self.password_file}: {exc.strerror}",
                AUTHENTICATION_FAILED,
            ) from None

    def client_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments (producer, consumer and admin client alike), from the
        files as they are now."""
        self.check()
        options: dict[str, Any] = {"security_protocol": str(self.protocol)}
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.sasl:
            assert self.sasl_mechanism is not None
            options.update(
                sasl_mechanism=str(self.sasl_mechanism),
                sasl_plain_username=self.username,
                sasl_plain_password=self.read_password(),
            )
        return options


@contextlib.contextmanager
def _cert_files(security: KafkaSecurity) -> Iterator[tuple[str, str | None]]:
    """The certificate and key as files for ssl's load_cert_chain, which reads only files: PEM
    held in memory goes to a private temporary folder for the moment of loading."""
    if not (security.cert_pem or security.key_pem):
        yield security.cert_file, security.key_file or None
        return
    with tempfile.TemporaryDirectory(prefix="modelserving-kafka-") as folder:
        cert, key = security.cert_file, security.key_file or None
        if security.cert_pem:
            cert = _private_file(Path(folder) / "cert.pem", security.cert_pem)
        if security.key_pem:
            key = _private_file(Path(folder) / "key.pem", security.key_pem)
        yield cert, key


def _private_file(path: Path, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return str(path)
