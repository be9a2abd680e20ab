"""The inference log's records: what the pipeline makes of one exchange for the spool and Kafka
(the key, the headers, and the seed's Avro `inferencelog` value), a batch at a time.

The payloads are kept, redacted and cut as the logging mode and the policy say (see
`log_policy`); what is the same for every record of a serving is encoded once.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable

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
    PROTOCOL_GRPC,
    PROTOCOL_REST,
    InferenceLogEncoder,
)
from modelserving_sidecar.config import LoggingConfig, LoggingMode, ModelIdentity
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.framing import PENDING_SCHEMA_ID
from modelserving_sidecar.log.policy import (
    LogPolicy,
    NonJsonPolicy,
    Part,
    ShapedPayload,
    unencodable,
)
from modelserving_sidecar.log.spool.segments import SpoolRecord, share_header
from modelserving_sidecar.routing.split import STABLE

log = logging.getLogger(__name__)

ABSENT = ShapedPayload("")  # the payload a mode leaves out
# gRPC messages written as JSON up to this size have their record made on the event loop (a few
# milliseconds at most); larger ones in a thread.
_INLINE_GRPC_BYTES = 64 * 1024
_WARN_EVERY_SECONDS = 60.0  # a payload that cannot be made is said in the log at most this often
_REST = share_header((HEADER_PROTOCOL, PROTOCOL_REST.encode()))
_GRPC = share_header((HEADER_PROTOCOL, PROTOCOL_GRPC.encode()))


@functools.cache
def policy_of(settings: LoggingConfig) -> LogPolicy:
    """The redaction and size policy of a logging section (made once per section)."""
    return settings.policy()


def payload_header(request: ShapedPayload, response: ShapedPayload) -> str:
    """The `payload` header's value: what was done to which payload, e.g.
    `request=redacted+cut,response=digest`; empty when both went as they came."""
    parts = []
    for name, shaped in (("request", request), ("response", response)):
        marks = shaped.marks()
        if marks:
            parts.append(f"{name}={'+'.join(marks)}")
    return ",".join(parts)


def _utf8(body: bytes) -> bytes:
    """The payload as the record's UTF-8 text: as it came when it is UTF-8 (the common case,
    checked without a copy kept), else with U+FFFD for the bad bytes, as `LogPolicy.shape`."""
    try:
        body.decode()
    except UnicodeDecodeError:
        return body.decode("utf-8", errors="replace").encode()
    return body


class SpoolRecordMaker:
    """The spool records of one serving's exchanges, made a batch at a time: what is the same for
    every record (model fields of the Avro value, the pod header, versions and callers seen)
    is encoded once, and a payload the policy leaves alone goes into the value as its bytes."""

    _CACHE_LIMIT = 1024

    def __init__(
        self,
        model: ModelIdentity,
        settings: LoggingConfig,
        pod: str,
        count_changes: Callable[[ShapedPayload, ShapedPayload], None] | None = None,
    ) -> None:
        self._policy = policy_of(settings)
        # A payload within this size goes into the record as it came (only made valid UTF-8):
        # the policy would leave it alone, and most payloads are under the default size limit.
        self._untouched_up_to = self._policy.untouched_up_to
        self._keep_request = settings.mode is not LoggingMode.PREDICTIONS
        self._keep_response = settings.mode is not LoggingMode.MODEL_INPUTS
        self._model = model
        schema_id = settings.confluent_schema_id
        if settings.schema_registry is not None:  # framed with id 0 until the registry gives it
            schema_id = PENDING_SCHEMA_ID
        self.frame_with(schema_id)
        self._default_version = model.version
        self._pod = share_header((HEADER_POD, pod.encode()))
        self._versions: dict[int, tuple[str, bytes]] = {}
        self._roles: dict[str, tuple[str, bytes]] = {}
        self._default_role = STABLE
        self._callers: dict[str, tuple[str, bytes]] = {}
        self._count_changes = count_changes
        self._cut_at = {part: self._policy.cut_at(part) for part in Part}
        self._warned_at = -_WARN_EVERY_SECONDS

    def frame_with(self, schema_id: int | None) -> None:
        """Frame the records made from now on with this schema id (None: plain Avro)."""
        model = self._model
        self._encode = InferenceLogEncoder(model.model_id, model.name, schema_id).encode

    def costly(self, exchange: Exchange) -> bool:
        """Whether the record of this exchange is to be made in a thread, off the event loop:
        a gRPC call whose messages' JSON is written beyond a few milliseconds' worth (a tensor
        of megabytes takes seconds: the request path must keep running meanwhile)."""
        if exchange.grpc_method is None:
            return False
        written = 0
        for keep, body, part in (
            (self._keep_request, exchange.request_body, Part.REQUEST),
            (self._keep_response, exchange.response_body, Part.RESPONSE),
        ):
            if keep:
                cut_at = self._cut_at[part]
                written += min(len(body), cut_at) if cut_at else len(body)
        return written > _INLINE_GRPC_BYTES

    def _body(self, exchange: Exchange, part: Part) -> bytes | ShapedPayload:
        """The payload as the record's JSON text would have it before the policy: a REST body
        as it came, a gRPC message as the REST JSON of the same tensors (no more of it than
        the record can hold, so that the policy cuts it as it cuts the REST call's), or what
        the record holds instead of a message the log cannot write as JSON."""
        body = exchange.request_body if part is Part.REQUEST else exchange.response_body
        if (method := exchange.grpc_method) is None:
            return body
        not_a_tensor, request_json, response_json = _grpc_json()
        try:
            if part is Part.REQUEST:
                return request_json(method, body, self._cut_at[part])
            ok = 200 <= exchange.status < 300
            return response_json(method, body, ok, self._cut_at[part])
        except not_a_tensor as exc:
            # Where redaction rules or the non-JSON policy `drop` apply, the reason alone: what
            # the rules would hide must not reach the topic as raw protobuf.
            if self._policy.non_json[part] is NonJsonPolicy.DROP:
                return unencodable(str(exc))
            return unencodable(str(exc), body)

    def _payloads(self, exchange: Exchange) -> tuple[bytes, bytes, str]:
        keep_request, keep_response = self._keep_request, self._keep_response
        limit = self._untouched_up_to
        if exchange.grpc_method is None:  # REST, the common case: its bodies as they came
            request_body = exchange.request_body if keep_request else b""
            response_body = exchange.response_body if keep_response else b""
            if len(request_body) <= limit and len(response_body) <= limit:
                return _utf8(request_body), _utf8(response_body), ""
            request_made: bytes | ShapedPayload = request_body
            response_made: bytes | ShapedPayload = response_body
        else:
            request_made = self._body(exchange, Part.REQUEST) if keep_request else b""
            response_made = self._body(exchange, Part.RESPONSE) if keep_response else b""
            if (
                isinstance(request_made, bytes)
                and isinstance(response_made, bytes)
                and len(request_made) <= limit
                and len(response_made) <= limit
            ):
                return _utf8(request_made), _utf8(response_made), ""
        request = self._shaped(request_made, Part.REQUEST) if keep_request else ABSENT
        response = self._shaped(response_made, Part.RESPONSE) if keep_response else ABSENT
        return self._changed(request, response)

    def _shaped(self, body: bytes | ShapedPayload, part: Part) -> ShapedPayload:
        return body if isinstance(body, ShapedPayload) else self._policy.shape(body, part)

    def _changed(self, request: ShapedPayload, response: ShapedPayload) -> tuple[bytes, bytes, str]:
        changes = payload_header(request, response)
        if changes and self._count_changes is not None:
            self._count_changes(request, response)
        return request.text.encode(), response.text.encode(), changes

    def _payloads_one_by_one(
        self, exchange: Exchange, error: Exception
    ) -> tuple[bytes, bytes, str]:
        """After making the payloads raised (a fault of ours, or input no parser takes): each
        payload on its own, the one that still fails replaced by the unencodable marker with
        the error's kind (never its message, which may quote the payload)."""
        shaped = []
        for keep, part in (
            (self._keep_request, Part.REQUEST),
            (self._keep_response, Part.RESPONSE),
        ):
            payload = ABSENT
            if keep:
                try:
                    payload = self._shaped(self._body(exchange, part), part)
                except Exception as exc:
                    payload = unencodable(f"the log could not make it: {type(exc).__name__}")
            shaped.append(payload)
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:  # a caller may send many such
            self._warned_at = now
            log.warning(
                "inference log: a record's payloads could not be made (%s); the record keeps its "
                "fields with the payload marked unencodable (counted in "
                "modelserving_inference_log_payloads_unencodable_total)",
                type(error).__name__,
            )
        return self._changed(shaped[0], shaped[1])

    def make(self, exchange: Exchange) -> SpoolRecord:
        """The spool record of one exchange; never raises for what its payloads hold (see
        `_payloads_one_by_one`)."""
        try:
            request, response, changes = self._payloads(exchange)
        except Exception as exc:
            request, response, changes = self._payloads_one_by_one(exchange, exc)
        return self._record(exchange, request, response, changes)

    def bare(self, exchange: Exchange) -> SpoolRecord:
        """The record of an exchange whose record could not be made at all (a fault of ours):
        its fields, and each payload the mode keeps marked unencodable."""
        marked = unencodable("the log could not make this record")
        request = marked if self._keep_request else ABSENT
        response = marked if self._keep_response else ABSENT
        return self._record(exchange, *self._changed(request, response))

    def _record(
        self, exchange: Exchange, request: bytes, response: bytes, changes: str
    ) -> SpoolRecord:
        version = exchange.model_version
        if version is None:
            version = self._default_version
        request_id = exchange.request_id.encode()
        headers: list[tuple[str, bytes]] = [(HEADER_REQUEST_ID, request_id)]
        if exchange.traceparent:
            # Header values come as the caller sent them (bytes that are not UTF-8 included).
            headers.append((HEADER_TRACEPARENT, exchange.traceparent.encode(errors="replace")))
        if exchange.tracestate:  # printable ASCII (tracing.context.passed_on_state)
            headers.append((HEADER_TRACESTATE, exchange.tracestate.encode()))
        if caller := exchange.caller:
            header = self._callers.get(caller)
            if header is None:
                header = share_header((HEADER_CALLER, caller.encode(errors="replace")))
                if len(self._callers) >= self._CACHE_LIMIT:
                    self._callers.clear()
                self._callers[caller] = header
            headers.append(header)
        version_header = self._versions.get(version)
        if version_header is None:
            version_header = share_header((HEADER_MODEL_VERSION, str(version).encode()))
            if len(self._versions) >= self._CACHE_LIMIT:
                self._versions.clear()
            self._versions[version] = version_header
        headers.append(version_header)
        role = exchange.role or self._default_role
        role_header = self._roles.get(role)
        if role_header is None:
            role_header = share_header((HEADER_ROLE, role.encode()))
            if len(self._roles) >= self._CACHE_LIMIT:
                self._roles.clear()
            self._roles[role] = role_header
        headers.append(role_header)
        headers.append(self._pod)
        headers.append(_REST if exchange.grpc_method is None else _GRPC)
        if changes:
            headers.append((HEADER_PAYLOAD, changes.encode()))
        received = exchange.received_ms
        value = self._encode(version, received, exchange.status, request, response)
        return SpoolRecord(request_id, tuple(headers), value, received)


@functools.cache
def _grpc_json() -> tuple[
    type[Exception], Callable[[str, bytes, int], bytes], Callable[[str, bytes, bool, int], bytes]
]:
    """The gRPC messages' JSON writer (its NotATensor, request_json, response_json), imported by
    the first gRPC record (a sidecar without a gRPC port never loads protobuf and TF Serving's
    messages) and once: an import statement per payload cost a tenth of a small call's record."""
    from modelserving_sidecar.grpc.tensor_json import NotATensor, request_json, response_json

    return NotATensor, request_json, response_json


def pod_name() -> str:
    """The pod's name (the Deployment sets POD_NAME; a pod's hostname is its name too)."""
    return os.environ.get("POD_NAME") or socket.gethostname()
