"""The Kafka connection flags of every reader of the log (`modelserving logs`, `logs export`):
the brokers, a client properties file as Kafka's tools take it (`--command-config`) and flags
over it (`add_arguments`), read into brokers and settings (`reader_connection`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelserving.kafka_security.properties import from_properties, parse_properties
from modelserving.kafka_security.settings import (
    KafkaSecurity,
    KafkaSecurityError,
    SaslMechanism,
    SecurityProtocol,
)

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
