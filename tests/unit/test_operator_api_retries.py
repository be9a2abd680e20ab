"""The operator never gives up on the API server: kopf's delays between the tries of a request
go on without end, each request starting from the first."""

from __future__ import annotations

import collections.abc
import itertools

from modelserving_operator.handlers import RetryForever


def test_the_delays_never_end_and_each_request_starts_from_the_first():
    delays = RetryForever()
    # kopf counts the tries of a Sized iterable and gives up after them; this one is not.
    assert not isinstance(delays, collections.abc.Sized)
    first = list(itertools.islice(delays, 1000))
    again = list(itertools.islice(delays, 10))
    assert len(first) == 1000 and again == first[:10]
    assert first[:6] == [1, 1, 2, 3, 5, 8] and set(first[6:]) == {10}
