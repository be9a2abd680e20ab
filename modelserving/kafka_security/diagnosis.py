"""What a failed connection to Kafka means: the TLS or authentication failure behind a client's
exception (`problem_of`), a connection made once to find it when aiokafka's own clients say only
"unable to bootstrap" (`diagnose`), and the error a reader raises for it (`KafkaRefused`). No
message made here holds a secret.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from modelserving.kafka_security.settings import (
    AUTHENTICATION_FAILED,
    TLS_FAILED,
    KafkaSecurity,
    KafkaSecurityError,
    SecurityProtocol,
)


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
    # Imported here: the readers' `--help` does not wait for aiohttp and aiokafka to load.
    from modelserving.library_internals import connect_to_broker

    if security.protocol is SecurityProtocol.PLAINTEXT:
        return None  # no TLS, no credentials: nothing for a broker to refuse
    try:
        options = security.client_options()
    except KafkaSecurityError as exc:
        return KafkaProblem(exc.reason, str(exc))
    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    try:
        async with asyncio.timeout(timeout):
            conn = await connect_to_broker(
                host, int(port), request_timeout_ms=int(timeout * 1000), **options
            )
        conn.close()
    except Exception as exc:
        return problem_of(exc)
    return None
