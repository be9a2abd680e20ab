"""Tracing: the W3C trace context every call carries (`context`), and the OpenTelemetry spans of
the calls that are sampled (`spans`)."""
