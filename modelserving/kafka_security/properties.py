"""The security settings from a Kafka client properties file, as Kafka's own tools take it
(`--command-config`: `security.protocol`, `ssl.truststore.*`, `ssl.keystore.*`,
`sasl.mechanism`, `sasl.jaas.config`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from modelserving.kafka_security.settings import (
    SASL_PROTOCOLS,
    KafkaSecurity,
    KafkaSecurityError,
    SaslMechanism,
    SecurityProtocol,
)


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
