"""What the request path hands to the inference log: one request and its answer.

The request path builds an `Exchange` once the answer is sent and calls
`InferenceLogSink.submit`, which never blocks and never raises; all the work
of the log (filtering, encoding, Kafka, the spool) happens off the request path.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request to a :predict/:classify/:regress path (or its gRPC method) and the answer the
    caller got."""

    request_id: str
    received_ms: int  # ms since the epoch when the request arrived (the Avro requestTimestamp)
    status: int  # the HTTP code the caller got (the Avro responseHttpCode)
    request_body: bytes  # the payload the client sent, as sent
    response_body: bytes  # the body the caller got, as sent (TF Serving's, or the sidecar's error)
    model_version: int | None  # the version that answered, when known
    caller: str | None  # who called: API key name or Kubernetes user name, never the credential
    traceparent: str | None  # the W3C trace context of the request, when present
    # The record's role (Kafka header `role`): the answering version's first label or `stable`,
    # `shadow` for a shadow version's copy; None: the role of the config's model.version.
    role: str | None = None
    # A call to TF Serving's gRPC API: its method (Predict, Classify, Regress), and the payloads
    # are its protobuf messages (the answer's is TF Serving's error body when it failed); the
    # log writes them as TF Serving's REST JSON (`grpc_json`). None: a REST request.
    grpc_method: str | None = None
    # The caller's W3C tracestate, passed on with the traceparent (Kafka header `tracestate`).
    tracestate: str | None = None


class InferenceLogSink(Protocol):
    """The inference log as the request path sees it."""

    def accepting(self) -> bool:
        """False when the log can take no more (spool full and the policy refuses predictions)."""
        ...

    def submit(self, exchange: Exchange) -> None:
        """Queue one exchange for the log; never blocks, never raises."""
        ...

    def failure(self) -> str | None:
        """Why the log stopped working for good (the sidecar must be restarted), or None."""
        ...

    def spooled(self, exchange: Exchange) -> Awaitable[bool]:
        """Queue one exchange; what it returns gives, awaited, True once its record is in the
        spool file, or False once it is known never to be (dropped, and counted); True at once
        when the sampling leaves the exchange out (no record is owed). Never raises."""
        ...
