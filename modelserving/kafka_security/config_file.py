"""The security settings in the form of the sidecar's config file (`logging.kafkaSecurity`):
files only, never a secret value. The operator writes it (`to_mapping`), the sidecar reads it
(`from_mapping`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from modelserving.kafka_security.settings import (
    KafkaSecurity,
    KafkaSecurityError,
    SaslMechanism,
    SecurityProtocol,
)

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
