"""Reference builders of the inference log's records, one field at a time and with no
caching, for tests to hold the pipeline's `SpoolRecordMaker` against: the same exchange must
give the same bytes both ways."""

from __future__ import annotations

from modelserving.inferencelog.record import (
    HEADER_CALLER,
    HEADER_MODEL_VERSION,
    HEADER_PAYLOAD,
    HEADER_POD,
    HEADER_PROTOCOL,
    HEADER_REQUEST_ID,
    HEADER_ROLE,
    HEADER_TRACEPARENT,
    HEADER_TRACESTATE,
    InferenceLogRecord,
    encode_record,
)
from modelserving_sidecar.config import LoggingConfig, LoggingMode, ModelIdentity
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.policy import LogPolicy, Part, ShapedPayload
from modelserving_sidecar.log.records import ABSENT, payload_header, policy_of
from modelserving_sidecar.log.spool.segments import SpoolRecord

_PLAIN = LogPolicy()  # no rules, no limit: payloads as they came


def shape_exchange(
    exchange: Exchange, mode: LoggingMode, policy: LogPolicy = _PLAIN
) -> tuple[ShapedPayload, ShapedPayload]:
    """The request and response texts a mode keeps, redacted and cut by the policy."""
    request = (
        ABSENT
        if mode is LoggingMode.PREDICTIONS
        else policy.shape(exchange.request_body, Part.REQUEST)
    )
    response = (
        ABSENT
        if mode is LoggingMode.MODEL_INPUTS
        else policy.shape(exchange.response_body, Part.RESPONSE)
    )
    return request, response


def build_record(
    exchange: Exchange,
    model: ModelIdentity,
    mode: LoggingMode,
    shaped: tuple[ShapedPayload, ShapedPayload] | None = None,
) -> InferenceLogRecord | None:
    """The `inferencelog` record of one exchange under a logging mode (None: not logged).

    `shaped` is what `shape_exchange` made of the payloads; without it they go as they came."""
    if mode is LoggingMode.NONE:
        return None
    request, response = shaped or shape_exchange(exchange, mode)
    return InferenceLogRecord(
        model_id=model.model_id,
        model_name=model.name,
        model_version=exchange.model_version
        if exchange.model_version is not None
        else model.version,
        request_timestamp=exchange.received_ms,
        response_http_code=exchange.status,
        inference_request=request.text,
        inference_response=response.text,
    )


def build_headers(
    exchange: Exchange,
    model_version: int,
    pod: str,
    shaped: tuple[ShapedPayload, ShapedPayload] | None = None,
) -> tuple[tuple[str, bytes], ...]:
    """The Kafka headers of one exchange's record; absent facts give no header."""
    headers = [(HEADER_REQUEST_ID, exchange.request_id.encode())]
    if exchange.traceparent:
        headers.append((HEADER_TRACEPARENT, exchange.traceparent.encode()))
    if exchange.tracestate:
        headers.append((HEADER_TRACESTATE, exchange.tracestate.encode()))
    if exchange.caller:
        headers.append((HEADER_CALLER, exchange.caller.encode()))
    headers.append((HEADER_MODEL_VERSION, str(model_version).encode()))
    headers.append((HEADER_ROLE, (exchange.role or "stable").encode()))
    headers.append((HEADER_POD, pod.encode()))
    headers.append((HEADER_PROTOCOL, b"grpc" if exchange.grpc_method else b"rest"))
    if shaped is not None and (changes := payload_header(*shaped)):
        headers.append((HEADER_PAYLOAD, changes.encode()))
    return tuple(headers)


def build_spool_record(
    exchange: Exchange,
    model: ModelIdentity,
    logging_config: LoggingConfig,
    pod: str,
    shaped: tuple[ShapedPayload, ShapedPayload] | None = None,
) -> SpoolRecord | None:
    """What goes to the spool and Kafka for one exchange: key, headers and Avro value, the
    payloads redacted and cut by the settings' policy (or as `shaped` already made them)."""
    if logging_config.mode is LoggingMode.NONE:
        return None
    if shaped is None:
        shaped = shape_exchange(exchange, logging_config.mode, policy_of(logging_config))
    record = build_record(exchange, model, logging_config.mode, shaped)
    assert record is not None
    return SpoolRecord(
        key=exchange.request_id.encode(),
        headers=build_headers(exchange, record.model_version, pod, shaped),
        value=encode_record(record, logging_config.confluent_schema_id),
        timestamp_ms=exchange.received_ms,
    )
