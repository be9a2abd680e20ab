"""The W3C trace context (`traceparent`, `tracestate`) of a call: the caller's, when it is valid,
or one the sidecar starts; pure functions over the header strings.

A call that is not sampled costs a string check and, when the caller sent none, one new
traceparent: the sidecar passes the caller's on unchanged (to TF Serving, on the answer, into the
record's headers), as an intermediary that records nothing may; only a sampled call is given
spans (`modelserving_sidecar.tracing.spans`), whose ids replace the parent's.

An invalid traceparent from a caller (bad form, all-zero ids, version ff) never fails a call:
it is treated as absent, and a new trace starts (the spec's rule, with its tracestate dropped).
"""

from __future__ import annotations

import random
import re

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# Version, trace id, parent (span) id, flags, lowercase hex as the spec requires. A version after
# 00 is read as 00 (its first four fields), so a newer caller is still continued.
_FORM = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_SAMPLED_LAST_DIGITS = frozenset("13579bdf")  # the flags' low bit (sampled) set
# The spec asks to pass on at least 512 characters of tracestate; longer ones are dropped here,
# as are values that could not be header values.
MAX_TRACESTATE = 512
_TRACESTATE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F))
_random_bits = random.Random().getrandbits  # ids need to be unique, not secret


def continued(header: str | None) -> str | None:
    """The caller's traceparent, in version 00's form, or None when absent or invalid."""
    if header is None:
        return None
    if len(header) == 55 and header[:3] == "00-":  # the usual case: one match, no slicing
        match = _FORM.fullmatch(header)
        if match is None or match[2] == _ZERO_TRACE or match[3] == _ZERO_SPAN:
            return None
        return header
    match = _FORM.match(header)
    if (
        match is None
        or match[1] in ("00", "ff")  # 00 has exactly 55 characters; ff is never valid
        or (len(header) > 55 and header[55] != "-")
        or match[2] == _ZERO_TRACE
        or match[3] == _ZERO_SPAN
    ):
        return None
    return "00" + header[2:55]


def is_sampled(traceparent: str) -> bool:
    """Whether a traceparent (version 00) asks for the call to be recorded."""
    return traceparent[54] in _SAMPLED_LAST_DIGITS


def started() -> str:
    """A new trace's context, not sampled: random ids (never all zero)."""
    trace_id = _random_bits(128) or 1
    span_id = _random_bits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-00"


def traceparent_of(trace_id: int, span_id: int, sampled: bool) -> str:
    """The traceparent naming a span (sent on to TF Serving, put on the answer and the record)."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def ids_of(traceparent: str) -> tuple[int, int, int]:
    """A valid traceparent's trace id, parent (span) id and flags."""
    return int(traceparent[3:35], 16), int(traceparent[36:52], 16), int(traceparent[53:55], 16)


def passed_on_state(header: str | None) -> str | None:
    """The caller's tracestate to pass on with its traceparent, or None when it is absent, too
    long or not a plain header value (the vendors' entries are not read)."""
    if header is None or not header or len(header) > MAX_TRACESTATE:
        return None
    if not _TRACESTATE_CHARS.issuperset(header):
        return None
    return header
