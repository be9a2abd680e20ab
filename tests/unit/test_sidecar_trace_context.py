"""The W3C trace context a call carries: the caller's when valid, a new one when absent or
invalid (never a refusal), passed on unchanged when not sampled."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelserving_sidecar.calls import Call, begin_trace
from modelserving_sidecar.tracing.context import (
    MAX_TRACESTATE,
    continued,
    ids_of,
    is_sampled,
    passed_on_state,
    started,
    traceparent_of,
)

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
FORM = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def test_a_valid_traceparent_is_continued_as_it_came():
    assert continued(SAMPLED) == SAMPLED
    assert continued(NOT_SAMPLED) == NOT_SAMPLED
    assert is_sampled(SAMPLED)
    assert not is_sampled(NOT_SAMPLED)
    # Flags other than sampled are carried; only the low bit says sampled.
    assert is_sampled(SAMPLED[:-2] + "03")
    assert not is_sampled(SAMPLED[:-2] + "02")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "00",
        "garbage",
        SAMPLED.upper(),  # the spec's hex is lowercase
        SAMPLED + "-extra",  # version 00 has exactly four fields
        SAMPLED[:-1],
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff is never valid
        "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",  # a later field needs a dash
        "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
    ],
)
def test_an_invalid_traceparent_is_not_continued(header):
    assert continued(header) is None


def test_a_later_version_is_read_as_version_00():
    later = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next"
    assert continued(later) == SAMPLED
    assert continued(SAMPLED.replace("00-", "01-", 1)) == SAMPLED


@given(
    st.one_of(
        st.text(max_size=80),
        # Near the form: hex of either case, a version, zeros, what follows.
        st.from_regex(
            r"[0-9a-fA-F]{2}-[0-9a-f0]{32}-[0-9a-f0]{16}-[0-9a-fA-F]{2}.{0,4}", fullmatch=True
        ),
    )
)
def test_no_header_value_fails_and_what_is_continued_is_version_00(header):
    value = continued(header)
    assert value is None or FORM.fullmatch(value)


def test_a_new_trace_is_not_sampled_and_has_fresh_nonzero_ids():
    first, second = started(), started()
    for value in (first, second):
        assert FORM.fullmatch(value)
        assert continued(value) == value  # valid by the same rules the callers' are held to
        assert not is_sampled(value)
    assert ids_of(first)[:2] != ids_of(second)[:2]


def test_a_span_is_named_by_its_ids():
    trace_id, span_id, flags = ids_of(SAMPLED)
    assert (trace_id, span_id, flags) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 1)
    assert traceparent_of(trace_id, span_id, True) == SAMPLED
    assert traceparent_of(trace_id, span_id, False) == NOT_SAMPLED


def test_tracestate_is_passed_on_when_it_is_a_plain_bounded_value():
    assert passed_on_state("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7") == (
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    )
    assert passed_on_state(None) is None
    assert passed_on_state("") is None
    assert passed_on_state("a=" + "b" * MAX_TRACESTATE) is None
    assert passed_on_state("a=b\r\nx-injected: 1") is None


def test_without_tracing_a_call_carries_the_callers_context_or_a_new_one():
    call = Call("req-1")
    begin_trace(call, None, SAMPLED, "rojo=1", "POST", None)  # type: ignore[arg-type]
    # No collector: nothing is recorded, and the caller's context goes on as it came.
    assert (call.traceparent, call.tracestate, call.span) == (SAMPLED, "rojo=1", None)
    invalid = Call("req-2")
    begin_trace(invalid, None, "00-nonsense", "rojo=1", "POST", None)  # type: ignore[arg-type]
    assert FORM.fullmatch(invalid.traceparent) and not is_sampled(invalid.traceparent)
    assert invalid.tracestate is None  # a tracestate without a valid traceparent is dropped
    absent = Call("req-3")
    begin_trace(absent, None, None, None, "POST", None)  # type: ignore[arg-type]
    assert FORM.fullmatch(absent.traceparent) and absent.traceparent != invalid.traceparent
