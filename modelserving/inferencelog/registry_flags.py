"""The schema registry flags of every reader of the log (`modelserving logs`, `logs export`):
where the registry that holds the writers' schemas of framed records is, its CA, and basic-auth
credentials taken as the Kafka flags take a SASL password (a file or an environment variable,
never the command line), read into a `SchemaRegistry` (`schema_registry_of`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from modelserving.inferencelog.schema_registry import SchemaRegistry

URL_ENV = "MODELSERVING_SCHEMA_REGISTRY_URL"
PASSWORD_ENV = "MODELSERVING_SCHEMA_REGISTRY_PASSWORD"


class SchemaRegistryFlagError(ValueError):
    """The registry flags cannot work; the message says what to give instead."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The registry flags; `schema_registry_of` reads them."""
    group = parser.add_argument_group(
        "schema registry",
        "where the writers' schemas of framed records are (Confluent's wire format: magic byte "
        "0 and a schema id before the Avro body); a value's first byte tells whether it is "
        "framed, and without a registry a framed value is read with the inferencelog schema",
    )
    group.add_argument(
        "--schema-registry",
        metavar="URL",
        default=os.environ.get(URL_ENV),
        help="the registry's URL, http(s)://host:port[/path], as Confluent's REST API is "
        f"reached (Apicurio: its ccompat URL) (default: ${URL_ENV})",
    )
    group.add_argument(
        "--schema-registry-ca",
        metavar="FILE",
        help="the CA of the registry's certificate, PEM (default: the system's trusted CAs)",
    )
    group.add_argument("--schema-registry-user", metavar="NAME", help="a basic-auth user name")
    group.add_argument(
        "--schema-registry-password-file",
        metavar="FILE",
        help=f"a file holding its password (or ${PASSWORD_ENV}); never give a password on "
        "the command line",
    )


def schema_registry_of(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> SchemaRegistry | None:
    """The registry the flags say (None: none given); what cannot work raises
    SchemaRegistryFlagError saying what to give."""
    url = args.schema_registry
    if not url:
        for flag in ("schema_registry_ca", "schema_registry_user", "schema_registry_password_file"):
            if getattr(args, flag):
                name = "--" + flag.replace("_", "-")
                raise SchemaRegistryFlagError(f"{name} is given without --schema-registry URL")
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SchemaRegistryFlagError(
            "--schema-registry: give the registry's URL, http(s)://host:port"
        )
    if parts.username is not None or parts.password is not None:
        # A password in the URL would be on the command line, in the shell's history and in
        # the process list: the user goes by flag, the password by file or environment.
        shown = SchemaRegistry(url).shown_url
        raise SchemaRegistryFlagError(
            f"--schema-registry {shown}: give the user with --schema-registry-user and the "
            f"password with --schema-registry-password-file or ${PASSWORD_ENV}, not in the URL"
        )
    ca_pem = None
    if args.schema_registry_ca:
        ca_pem = _read(args.schema_registry_ca, "--schema-registry-ca")
    password = None
    if args.schema_registry_password_file:
        password = _read(args.schema_registry_password_file, "--schema-registry-password-file")
        password = password.rstrip("\r\n")
    elif PASSWORD_ENV in environ:
        password = environ[PASSWORD_ENV]
    if password is not None and not args.schema_registry_user:
        raise SchemaRegistryFlagError(
            "a schema registry password is given without --schema-registry-user"
        )
    return SchemaRegistry(url, ca_pem, args.schema_registry_user, password)


def _read(path: str, flag: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SchemaRegistryFlagError(f"{flag} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SchemaRegistryFlagError(f"{flag} {path}: not a text file") from None
