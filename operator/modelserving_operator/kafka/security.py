"""spec.logging.kafka.security as the operator reads it, and what it becomes.

One block of the spec (or the operator's --kafka-security, the same JSON, for servings whose
spec has none) names the security protocol and where the credentials are: a CA in a Secret or a
ConfigMap, a client certificate and key in a Secret, a SASL mechanism with a user name and a
password in a Secret. Key names default to those of Strimzi's Secrets (a KafkaUser's `user.crt`,
`user.key`, `password`; the cluster CA's `ca.crt`), so Strimzi's work as they are.

It becomes: Secret and ConfigMap volumes of the sidecar and the file names in its config (pure),
and, for the operator's own topic admin client, a KafkaSecurity holding the values read through
the API (never written anywhere, never in a message).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from modelserving.kafka_security.settings import (
    AUTHENTICATION_FAILED,
    KafkaSecurity,
    KafkaSecurityError,
    SaslMechanism,
    SecurityProtocol,
)

# Strimzi's key names: a KafkaUser's Secret and the cluster CA's Secret (<cluster>-cluster-ca-cert).
CA_KEY = "ca.crt"
CERTIFICATE_KEY = "user.crt"
PRIVATE_KEY_KEY = "user.key"
PASSWORD_KEY = "password"

# Where the sidecar finds them: one folder per volume, so that a Secret changed in place reaches
# the running pod (the kubelet updates whole-volume mounts, never subPath ones).
SIDECAR_KAFKA_DIR = "/etc/modelserving/kafka"
CA_DIR = f"{SIDECAR_KAFKA_DIR}/ca"
CLIENT_DIR = f"{SIDECAR_KAFKA_DIR}/client"
SASL_DIR = f"{SIDECAR_KAFKA_DIR}/sasl"
SECRET_FILE_MODE = 0o440  # readable by the pod's user and fsGroup only

FIELD = "spec.logging.kafka.security"


@dataclass(frozen=True)
class KafkaCaSpec:
    secret_name: str | None = None
    config_map_name: str | None = None
    key: str = CA_KEY


@dataclass(frozen=True)
class KafkaClientCertificateSpec:
    secret_name: str
    certificate: str = CERTIFICATE_KEY
    private_key: str = PRIVATE_KEY_KEY


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class KafkaSaslSpec:
    mechanism: str
    password_secret: SecretKeyRef
    username: str | None = None  # None: the Secret's name, as Strimzi names a KafkaUser's Secret

    @property
    def user(self) -> str:
        return self.username or self.password_secret.name


@dataclass(frozen=True)
class KafkaSecuritySpec:
    protocol: str = "PLAINTEXT"
    allow_sasl_plaintext: bool = False
    check_hostname: bool = True
    ca: KafkaCaSpec | None = None
    client_certificate: KafkaClientCertificateSpec | None = None
    sasl: KafkaSaslSpec | None = None


PLAINTEXT = KafkaSecuritySpec()


def parse_security(raw: Mapping[str, Any], where: str = FIELD) -> KafkaSecuritySpec:
    """The block as written (the CRD's defaults applied here too), checked as the CRD's rules
    check it: a bad operator flag is refused with the same words as a bad spec."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be an object, got {raw!r}")
    ca, cert, sasl = raw.get("ca"), raw.get("clientCertificate"), raw.get("sasl")
    try:
        spec = KafkaSecuritySpec(
            protocol=str(raw.get("protocol") or "PLAINTEXT"),
            allow_sasl_plaintext=bool(raw.get("allowSaslPlaintext", False)),
            check_hostname=bool(raw.get("checkHostname", True)),
            ca=KafkaCaSpec(ca.get("secretName"), ca.get("configMapName"), ca.get("key") or CA_KEY)
            if ca
            else None,
            client_certificate=KafkaClientCertificateSpec(
                cert["secretName"],
                cert.get("certificate", CERTIFICATE_KEY),
                cert.get("privateKey", PRIVATE_KEY_KEY),
            )
            if cert
            else None,
            sasl=KafkaSaslSpec(
                sasl["mechanism"],
                SecretKeyRef(
                    (sasl.get("passwordSecret") or {})["name"],
                    (sasl.get("passwordSecret") or {}).get("key") or PASSWORD_KEY,
                ),
                sasl.get("username"),
            )
            if sasl
            else None,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where}: missing {exc}") from None
    check(spec, where)
    return spec


def check(spec: KafkaSecuritySpec, where: str = FIELD) -> None:
    """The CRD's rules (crds/: x-kubernetes-validations of spec.logging.kafka.security)."""
    protocols = [p.value for p in SecurityProtocol]
    if spec.protocol not in protocols:
        raise ValueError(f"{where}.protocol must be one of {', '.join(protocols)}")
    tls = spec.protocol in ("SSL", "SASL_SSL")
    sasl = spec.protocol in ("SASL_SSL", "SASL_PLAINTEXT")
    if spec.protocol == "SASL_PLAINTEXT" and not spec.allow_sasl_plaintext:
        raise ValueError(
            f"{where}: SASL_PLAINTEXT sends the password and every record unencrypted: use "
            "SASL_SSL, or set allowSaslPlaintext: true to accept that"
        )
    if sasl and spec.sasl is None:
        raise ValueError(
            f"{where}: protocol {spec.protocol} needs sasl: a mechanism and the passwordSecret"
        )
    if spec.sasl is not None and not sasl:
        raise ValueError(f"{where}: sasl is set but the protocol is not SASL_SSL: set it")
    if spec.sasl is not None and spec.sasl.mechanism not in [m.value for m in SaslMechanism]:
        raise ValueError(f"{where}.sasl.mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    if spec.client_certificate is not None and not tls:
        raise ValueError(
            f"{where}: clientCertificate needs TLS: set protocol SSL (mutual TLS) or SASL_SSL"
        )
    if spec.client_certificate is not None and not (
        spec.client_certificate.certificate and spec.client_certificate.private_key
    ):
        raise ValueError(
            f"{where}.clientCertificate needs both entries of its Secret: certificate (Strimzi: "
            "user.crt) and privateKey (Strimzi: user.key)"
        )
    if spec.ca is not None:
        if not tls:
            raise ValueError(f"{where}: ca is set but the protocol is not TLS: SSL or SASL_SSL")
        if bool(spec.ca.secret_name) == bool(spec.ca.config_map_name):
            raise ValueError(
                f"{where}.ca names one source: secretName (Strimzi: CLUSTER-cluster-ca-cert) "
                "or configMapName"
            )


# --------------------------------------------------------------------------- the sidecar


def sidecar_security(spec: KafkaSecuritySpec) -> KafkaSecurity:
    """The sidecar's settings: the files where its volumes put the Secrets' entries."""
    return KafkaSecurity(
        protocol=SecurityProtocol(spec.protocol),
        ca_file=f"{CA_DIR}/{CA_KEY}" if spec.ca else "",
        cert_file=f"{CLIENT_DIR}/{CERTIFICATE_KEY}" if spec.client_certificate else "",
        key_file=f"{CLIENT_DIR}/{PRIVATE_KEY_KEY}" if spec.client_certificate else "",
        sasl_mechanism=SaslMechanism(spec.sasl.mechanism) if spec.sasl else None,
        username=spec.sasl.user if spec.sasl else "",
        password_file=f"{SASL_DIR}/{PASSWORD_KEY}" if spec.sasl else "",
        check_hostname=spec.check_hostname,
        allow_sasl_plaintext=spec.allow_sasl_plaintext,
    )


def ca_volume(name: str, ca: KafkaCaSpec) -> dict[str, Any]:
    """A volume of the CA's entry alone, as the file CA_KEY, from its Secret or ConfigMap."""
    items = [{"key": ca.key, "path": CA_KEY}]
    if ca.secret_name:
        secret = {"secretName": ca.secret_name, "items": items, "defaultMode": SECRET_FILE_MODE}
        return {"name": name, "secret": secret}
    return {"name": name, "configMap": {"name": ca.config_map_name, "items": items}}


def sidecar_volumes(spec: KafkaSecuritySpec) -> list[dict[str, Any]]:
    """Only the entries named, each under a fixed file name: a Secret lacking one keeps the pod
    from starting, with the kubelet's event naming it."""
    volumes: list[dict[str, Any]] = []
    if spec.ca is not None:
        volumes.append(ca_volume("kafka-ca", spec.ca))
    if spec.client_certificate is not None:
        cert = spec.client_certificate
        items = [
            {"key": cert.certificate, "path": CERTIFICATE_KEY},
            {"key": cert.private_key, "path": PRIVATE_KEY_KEY},
        ]
        secret = {"secretName": cert.secret_name, "items": items, "defaultMode": SECRET_FILE_MODE}
        volumes.append({"name": "kafka-client", "secret": secret})
    if spec.sasl is not None:
        items = [{"key": spec.sasl.password_secret.key, "path": PASSWORD_KEY}]
        volumes.append(
            {
                "name": "kafka-sasl",
                "secret": {
                    "secretName": spec.sasl.password_secret.name,
                    "items": items,
                    "defaultMode": SECRET_FILE_MODE,
                },
            }
        )
    return volumes


def sidecar_mounts(spec: KafkaSecuritySpec) -> list[dict[str, Any]]:
    folders = {"kafka-ca": CA_DIR, "kafka-client": CLIENT_DIR, "kafka-sasl": SASL_DIR}
    return [
        {"name": volume["name"], "mountPath": folders[volume["name"]], "readOnly": True}
        for volume in sidecar_volumes(spec)
    ]


# --------------------------------------------------------------------------- the topic admin


class SecretReader(Protocol):
    async def get(
        self, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None: ...


def admin_secrets(spec: KafkaSecuritySpec) -> tuple[str, ...]:
    """The Secrets the topic admin reads its credentials from (a CA in a ConfigMap is not one)."""
    names = set()
    if spec.ca is not None and spec.ca.secret_name:
        names.add(spec.ca.secret_name)
    if spec.client_certificate is not None:
        names.add(spec.client_certificate.secret_name)
    if spec.sasl is not None:
        names.add(spec.sasl.password_secret.name)
    return tuple(sorted(names))


class MissingCredentials(Exception):
    """A Secret or ConfigMap the spec names, or an entry of it, is not there."""


async def read_entry(
    kube: SecretReader, kind: str, name: str, namespace: str, key: str, named_in: str
) -> str:
    """An entry of a Secret (decoded) or a ConfigMap that a spec's field (`named_in`) names,
    read through the API; MissingCredentials naming the object and the field when it or the
    entry is not there."""
    obj = await kube.get(kind, name, namespace)
    where = f"the {kind} {namespace}/{name} named in {named_in}"
    if obj is None:
        raise MissingCredentials(f"{where} is missing")
    data = obj.get("data") or {}
    if key not in data:
        raise MissingCredentials(f"{where} has no entry {key}")
    return base64.b64decode(data[key]).decode() if kind == "Secret" else str(data[key])


async def admin_security(
    kube: SecretReader, namespace: str, spec: KafkaSecuritySpec
) -> tuple[KafkaSecurity, str]:
    """The topic admin's settings, with the Secrets' values read through the API (held in
    memory only), and a digest of those values: a changed Secret makes a new admin client."""
    values: dict[str, str] = {}

    async def entry(kind: str, name: str, key: str) -> str:
        return await read_entry(kube, kind, name, namespace, key, FIELD)

    if spec.ca is not None:
        if spec.ca.secret_name:
            values["ca_pem"] = await entry("Secret", spec.ca.secret_name, spec.ca.key)
        else:
            assert spec.ca.config_map_name
            values["ca_pem"] = await entry("ConfigMap", spec.ca.config_map_name, spec.ca.key)
    if spec.client_certificate is not None:
        cert = spec.client_certificate
        values["cert_pem"] = await entry("Secret", cert.secret_name, cert.certificate)
        values["key_pem"] = await entry("Secret", cert.secret_name, cert.private_key)
    if spec.sasl is not None:
        secret = spec.sasl.password_secret
        password = await entry("Secret", secret.name, secret.key)
        values["password"] = password.strip()
    security = KafkaSecurity(
        protocol=SecurityProtocol(spec.protocol),
        sasl_mechanism=SaslMechanism(spec.sasl.mechanism) if spec.sasl else None,
        username=spec.sasl.user if spec.sasl else "",
        check_hostname=spec.check_hostname,
        allow_sasl_plaintext=spec.allow_sasl_plaintext,
        **values,
    )
    try:
        security.check()
    except KafkaSecurityError as exc:
        raise MissingCredentials(f"{FIELD}: {exc}") from None
    digest = hashlib.sha256(repr((spec, sorted(values.items()))).encode()).hexdigest()[:16]
    return security, digest


def what_to_check(reason: str, spec: KafkaSecuritySpec) -> str:
    """What a user fixes for a failure of this reason, in the words of the spec."""
    if reason == AUTHENTICATION_FAILED and spec.sasl is not None:
        return (
            f"check the {spec.sasl.mechanism} user {spec.sasl.user!r} and the password in "
            f"Secret {spec.sasl.password_secret.name} (entry {spec.sasl.password_secret.key}; "
            f"{FIELD}.sasl)"
        )
    parts = []
    if spec.ca is not None:
        source = (
            f"Secret {spec.ca.secret_name}"
            if spec.ca.secret_name
            else f"ConfigMap {spec.ca.config_map_name}"
        )
        parts.append(f"the CA in {source} (entry {spec.ca.key}; {FIELD}.ca)")
    else:
        parts.append(f"the CA ({FIELD}.ca is not set: the system's trusted CAs are used)")
    if spec.client_certificate is not None:
        parts.append(
            f"the client certificate in Secret {spec.client_certificate.secret_name} "
            f"({FIELD}.clientCertificate)"
        )
    return "check " + " and ".join(parts)
