"""Which records a read of the inference log keeps (`InferenceLogQuery.keeps`), and the queries
that cannot be read, refused when they are made."""

from __future__ import annotations

import pytest

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import LoggedInference
from modelserving.inferencelog.record import (
    HEADER_CALLER,
    HEADER_PAYLOAD,
    InferenceLogRecord,
)


def logged(
    model: str = "mnist",
    version: int = 1,
    code: int = 200,
    at_ms: int = 1_000,
    key: str | None = "req-1",
    headers: dict[str, str] | None = None,
) -> LoggedInference:
    record = InferenceLogRecord(17, model, version, at_ms, code, "{}", "{}")
    return LoggedInference(record, key, headers or {}, "t", 0, 0, at_ms)


def test_a_query_with_no_filter_keeps_every_record():
    assert InferenceLogQuery().keeps(logged())
    assert InferenceLogQuery().keeps(logged(key=None))


@pytest.mark.parametrize(
    ("query", "kept", "left_out"),
    [
        (InferenceLogQuery(model="mnist"), logged(), logged(model="iris")),
        (InferenceLogQuery(model_version=2), logged(version=2), logged(version=1)),
        (
            InferenceLogQuery(status_codes=range(500, 600)),
            logged(code=503),
            logged(code=200),
        ),
        (InferenceLogQuery(key="req-1"), logged(), logged(key="req-2")),
        # since inclusive, until exclusive: consecutive ranges neither overlap nor leave a gap
        (InferenceLogQuery(since_ms=1_000), logged(at_ms=1_000), logged(at_ms=999)),
        (InferenceLogQuery(until_ms=1_000), logged(at_ms=999), logged(at_ms=1_000)),
        (
            InferenceLogQuery(where={HEADER_CALLER: "team-a"}),
            logged(headers={HEADER_CALLER: "team-a"}),
            logged(headers={HEADER_CALLER: "team-ab"}),
        ),
        (
            InferenceLogQuery(contains={HEADER_PAYLOAD: "cut"}),
            logged(headers={HEADER_PAYLOAD: "request=redacted+cut"}),
            logged(headers={HEADER_PAYLOAD: "request=redacted"}),
        ),
        # An empty text asks only that the header be there.
        (
            InferenceLogQuery(contains={HEADER_PAYLOAD: ""}),
            logged(headers={HEADER_PAYLOAD: "request=digest"}),
            logged(),
        ),
    ],
)
def test_each_filter_keeps_the_records_it_names_and_only_those(query, kept, left_out):
    assert query.keeps(kept)
    assert not query.keeps(left_out)


def test_filters_together_keep_only_records_that_pass_them_all():
    query = InferenceLogQuery(model="mnist", status_codes={503}, where={HEADER_CALLER: "a"})
    assert query.keeps(logged(code=503, headers={HEADER_CALLER: "a"}))
    assert not query.keeps(logged(code=503, headers={HEADER_CALLER: "b"}))
    assert not query.keeps(logged(model="iris", code=503, headers={HEADER_CALLER: "a"}))


def test_a_query_that_cannot_be_read_is_refused_when_made():
    with pytest.raises(ValueError, match="follows the topic has no end"):
        InferenceLogQuery(follow=True, until_ms=1_000)
    with pytest.raises(ValueError, match="at least 1 record"):
        InferenceLogQuery(dedupe=-1)
    assert InferenceLogQuery(follow=True, since_ms=1_000).follow


def test_a_query_is_frozen():
    query = InferenceLogQuery(model="mnist")
    with pytest.raises(AttributeError):
        query.model = "iris"  # type: ignore[misc]
