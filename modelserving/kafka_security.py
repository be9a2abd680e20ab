"""How a Kafka client of the inference log proves itself and checks the broker: the one place for
it. The sidecar's producer, the operator's topic admin, `modelserving logs` and every other reader
take a `KafkaSecurity` and turn it into aiokafka's options with `client_options()`.

Secrets are files, or values held only in memory (the operator reads Secrets through the API):
`client_options()` reads the files each time it is called, so a client made after a Secret
changed in place (a renewed certificate, a new password) uses the new one. No secret value is in
the dataclass's repr, and no message made here holds one.

Readers take the same options as Kafka's own tools: a client properties file (`--command-config`:
`security.protocol`, `ssl.truststore.*`, `ssl.keystore.*`, `sasl.mechanism`, `sasl.jaas.config`)
and flags over it (`add_arguments`, `reader_connection`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import os
import re
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
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


# --------------------------------------------------------------------------- failures


@dataclass(frozen=True)
class KafkaProblem:
    """Why a broker refused a client: a LoggingReady reason and what happened (no secret)."""

    reason: str
    message: str


class KafkaRefused(RuntimeError):
    """A reader's broker refused its TLS or credentials; the message says why, with no secret."""

    def __init__(self, problem: KafkaProblem) -> None:
        super().__init__(f"{problem.reason}: {problem.message}")
        self.problem = problem


def problem_of(exc: BaseException) -> KafkaProblem | None:
    """The TLS or authentication failure behind an exception of a connection, else None."""
    from aiokafka import errors

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KafkaSecurityError):
            return KafkaProblem(current.reason, str(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return KafkaProblem(
                TLS_FAILED,
                f"the broker's certificate was refused: {current.verify_message} (is the CA "
                "the one that signed the broker's certificate, and does the certificate name "
                "the address used?)",
            )
        if isinstance(current, ssl.SSLError):
            return KafkaProblem(
                TLS_FAILED,
                f"the TLS handshake failed: {current.reason or current} (does the broker want a "
                "client certificate, or speak TLS on this port?)",
            )
        if isinstance(current, errors.SaslAuthenticationFailed | errors.IllegalSaslStateError):
            return KafkaProblem(
                AUTHENTICATION_FAILED,
                f"the broker refused the SASL user name or password: {current}",
            )
        if isinstance(current, errors.UnsupportedSaslMechanismError):
            return KafkaProblem(AUTHENTICATION_FAILED, str(current))
        current = current.__cause__ or current.__context__
    return None


async def diagnose(
    bootstrap_servers: str, security: KafkaSecurity, timeout: float = 5.0
) -> KafkaProblem | None:
    """Connect once to the first bootstrap server as a client would and say whether TLS or the
    authentication fails (aiokafka's own clients report only "unable to bootstrap")."""
    from aiokafka.conn import create_conn

    if security.protocol is SecurityProtocol.PLAINTEXT:
        return None  # no TLS, no credentials: nothing for a broker to refuse
    try:
        options = security.client_options()
    except KafkaSecurityError as exc:
        return KafkaProblem(exc.reason, str(exc))
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    try:
        async with asyncio.timeout(timeout):
            conn = await create_conn(
                host, int(port), request_timeout_ms=int(timeout * 1000), **options
            )
        conn.close()
    except Exception as exc:
        return problem_of(exc)
    return None


# --------------------------------------------------------------------------- the sidecar's file

# key of the sidecar config's logging.kafkaSecurity -> field; values are strings but the two flags
_FILE_KEYS = {
    "protocol": "protocol",
    "caFile": "ca_file",
    "certFile": "cert_file",
    "keyFile": "key_file",
    "saslMechanism": "sasl_mechanism",
    "username": "username",
    "passwordFile": "password_file",
    "checkHostname": "check_hostname",
    "allowSaslPlaintext": "allow_sasl_plaintext",
}


def from_mapping(where: str, raw: Mapping[str, Any]) -> KafkaSecurity:
    """Settings from their config-file form (files only: a file holds no secret value)."""
    unknown = sorted(set(raw) - set(_FILE_KEYS))
    if unknown:
        raise KafkaSecurityError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_FILE_KEYS)}"
        )
    values: dict[str, Any] = {}
    for key, name in _FILE_KEYS.items():
        if key not in raw or raw[key] is None:
            continue
        value = raw[key]
        if name in ("check_hostname", "allow_sasl_plaintext"):
            if not isinstance(value, bool):
                raise KafkaSecurityError(f"{where}.{key}: expected true or false, got {value!r}")
        elif not isinstance(value, str):
            raise KafkaSecurityError(f"{where}.{key}: expected a string, got {value!r}")
        values[name] = value
    try:
        security = KafkaSecurity(
            **{
                **values,
                "protocol": SecurityProtocol(values.get("protocol", "PLAINTEXT")),
                "sasl_mechanism": SaslMechanism(values["sasl_mechanism"])
                if values.get("sasl_mechanism")
                else None,
            }
        )
        security.check()
    except ValueError as exc:
        raise KafkaSecurityError(f"{where}: {exc}") from None
    return security


def to_mapping(security: KafkaSecurity) -> dict[str, Any]:
    """The config-file form of settings that name files (the inverse of from_mapping)."""
    if security.ca_pem or security.cert_pem or security.key_pem or security.password:
        raise KafkaSecurityError("settings holding secret values are never written to a file")
    out: dict[str, Any] = {}
    for key, name in _FILE_KEYS.items():
        value = getattr(security, name)
        default = getattr(KafkaSecurity(), name)
        if value != default:
            out[key] = str(value) if isinstance(value, enum.Enum) else value
    return out


# --------------------------------------------------------------------------- Kafka's properties


def parse_properties(text: str) -> dict[str, str]:
    """A Java properties file's keys and values (comments, `=`/`:` separators, continuations)."""
    result: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip() if not logical else raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical += line[:-1]
            continue
        logical += line
        match = re.match(r"([^=:\s]+)(?:\s*[=:]\s*|\s+)?(.*)$", logical)
        if match:
            result[match.group(1)] = match.group(2)
        logical = ""
    return result


_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def from_properties(properties: Mapping[str, str], where: str) -> KafkaSecurity:
    """Settings from a Kafka client's properties, as Kafka's tools take them: PEM trust and key
    stores (by location or inline), and SASL's user and password from `sasl.jaas.config`."""

    def get(key: str) -> str:
        return properties.get(key, "").strip()

    for store in ("truststore", "keystore"):
        kind = get(f"ssl.{store}.type")
        if get(f"ssl.{store}.location") and kind.upper() != "PEM":
            raise KafkaSecurityError(
                f"{where}: ssl.{store}.type {kind or 'JKS'} is not read here: give the "
                f"{store} as PEM (ssl.{store}.type=PEM)"
            )
    try:
        protocol = SecurityProtocol(get("security.protocol").upper() or "PLAINTEXT")
        mechanism = SaslMechanism(get("sasl.mechanism").upper()) if get("sasl.mechanism") else None
    except ValueError as exc:
        raise KafkaSecurityError(f"{where}: {exc}") from None
    jaas = dict(_JAAS_OPTION.findall(get("sasl.jaas.config")))
    if protocol in SASL_PROTOCOLS and mechanism is None:
        mechanism = SaslMechanism.PLAIN if "PlainLoginModule" in get("sasl.jaas.config") else None
    return KafkaSecurity(
        protocol=protocol,
        ca_file=get("ssl.truststore.location"),
        ca_pem=get("ssl.truststore.certificates").replace("\\n", "\n"),
        cert_file=get("ssl.keystore.location"),
        cert_pem=get("ssl.keystore.certificate.chain").replace("\\n", "\n"),
        key_pem=get("ssl.keystore.key").replace("\\n", "\n"),
        sasl_mechanism=mechanism if protocol in SASL_PROTOCOLS else None,
        username=jaas.get("username", ""),
        password=jaas.get("password", "").replace('\\"', '"'),
        check_hostname=get("ssl.endpoint.identification.algorithm").lower() != ""
        if "ssl.endpoint.identification.algorithm" in properties
        else True,
        allow_sasl_plaintext=protocol is SecurityProtocol.SASL_PLAINTEXT,
    )


# --------------------------------------------------------------------------- readers' flags

BOOTSTRAP_ENV = "MODELSERVING_KAFKA_BOOTSTRAP"
PASSWORD_ENV = "MODELSERVING_KAFKA_SASL_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The Kafka connection flags of every reader of the log (`logs`, `logs export`): the
    brokers, and the security a secured Kafka wants; `reader_connection` reads them."""
    group = parser.add_argument_group(
        "Kafka connection",
        "the brokers, and how to connect to a secured Kafka: a client properties file "
        "(--command-config, as Kafka's own tools take) and flags over it",
    )
    group.add_argument(
        "--bootstrap-servers",
        default=os.environ.get(BOOTSTRAP_ENV),
        help=f"Kafka bootstrap servers, host:port[,host:port] (default: "
        f"${BOOTSTRAP_ENV}, else the --command-config file's bootstrap.servers)",
    )
    group.add_argument(
        "--command-config",
        metavar="FILE",
        help="Kafka client properties: bootstrap.servers, security.protocol, "
        "ssl.truststore.location (type PEM), ssl.keystore.location (PEM: key and certificate), "
        "sasl.mechanism, sasl.jaas.config",
    )
    group.add_argument(
        "--security-protocol",
        choices=[p.value for p in SecurityProtocol],
        help="PLAINTEXT (default), SSL or SASL_SSL",
    )
    group.add_argument(
        "--ssl-ca-file",
        metavar="FILE",
        help="the CA of the broker's certificate, PEM (Strimzi: ca.crt of the "
        "cluster CA Secret); default: the system's trusted CAs",
    )
    group.add_argument(
        "--ssl-cert-file",
        metavar="FILE",
        help="a client certificate, PEM, for mutual TLS (Strimzi: user.crt)",
    )
    group.add_argument(
        "--ssl-key-file", metavar="FILE", help="its private key, PEM (Strimzi: user.key)"
    )
    group.add_argument(
        "--no-hostname-check",
        action="store_true",
        help="do not check that the broker's certificate names its address",
    )
    group.add_argument("--sasl-mechanism", choices=[m.value for m in SaslMechanism])
    group.add_argument("--sasl-username", metavar="NAME")
    group.add_argument(
        "--sasl-password-file",
        metavar="FILE",
        help=f"a file holding the SASL password (or ${PASSWORD_ENV}); never "
        "give a password on the command line",
    )


def reader_connection(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> tuple[str, KafkaSecurity]:
    """The brokers and security a reader's flags say; what cannot work raises
    KafkaSecurityError saying what to give."""
    security, file_servers = from_arguments(args, environ)
    servers = args.bootstrap_servers or file_servers
    if not servers:
        raise KafkaSecurityError(
            f"give --bootstrap-servers, ${BOOTSTRAP_ENV} or a --command-config file with "
            "bootstrap.servers"
        )
    return servers, security


def from_arguments(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> tuple[KafkaSecurity, str | None]:
    """The settings the flags (over the properties file) say, and the file's bootstrap.servers
    (None when it names none)."""
    security, bootstrap = KafkaSecurity(), None
    if args.command_config:
        try:
            properties = parse_properties(Path(args.command_config).read_text())
        except OSError as exc:
            raise KafkaSecurityError(
                f"--command-config {args.command_config}: {exc.strerror}"
            ) from None
        security = from_properties(properties, f"--command-config {args.command_config}")
        bootstrap = properties.get("bootstrap.servers") or None
    flags: dict[str, Any] = {}
    if args.security_protocol:
        flags["protocol"] = SecurityProtocol(args.security_protocol)
    for flag, name in (
        ("ssl_ca_file", "ca_file"),
        ("ssl_cert_file", "cert_file"),
        ("ssl_key_file", "key_file"),
        ("sasl_username", "username"),
        ("sasl_password_file", "password_file"),
    ):
        if getattr(args, flag):
            flags[name] = getattr(args, flag)
    if args.sasl_mechanism:
        flags["sasl_mechanism"] = SaslMechanism(args.sasl_mechanism)
    if args.no_hostname_check:
        flags["check_hostname"] = False
    if PASSWORD_ENV in environ and not args.sasl_password_file:
        flags["password"] = environ[PASSWORD_ENV]
    security = replace(security, **flags)
    if security.protocol is SecurityProtocol.SASL_PLAINTEXT:
        security = replace(security, allow_sasl_plaintext=True)  # said by the reader itself
    security.check()
    return security, bootstrap
