"""The reader's duplicate window (`modelserving logs --dedupe`): a re-sent copy of a recent
record is dropped and counted, a copy older than the window is kept, another record under the
same request id is kept, and the window's memory stays within its size."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelserving.cli import build_parser
from modelserving.inferencelog.cli import duplicates_note
from modelserving.inferencelog.dedupe import DEFAULT_WINDOW, DuplicateWindow, record_identity
from modelserving.inferencelog.record import InferenceLogRecord, encode_record


def logged(request_id: str, answer: str = "[[0.9]]", role: bytes | None = None) -> tuple:
    """A record as the sidecar puts it on the topic: key, headers, Avro value."""
    headers = [("request-id", request_id.encode()), ("model-version", b"3"), ("pod", b"mnist-0")]
    if role is not None:
        headers.append(("role", role))
    record = InferenceLogRecord(17, "mnist", 3, 1_700_000_000_000, 200, "[[1]]", answer)
    return request_id.encode(), headers, encode_record(record)


def test_a_resent_record_is_dropped_and_counted():
    window = DuplicateWindow(10)
    first = [logged(f"req-{i}") for i in range(5)]
    # A crash re-sends the last three, byte for byte.
    kept = [r for r in first + first[2:] if not window.seen(*r)]
    assert kept == first
    assert window.dropped == 3


def test_a_copy_older_than_the_window_is_kept():
    window = DuplicateWindow(3)
    assert not window.seen(*logged("req-0"))
    for i in range(1, 4):  # three other records push req-0 out of a window of three
        assert not window.seen(*logged(f"req-{i}"))
    assert not window.seen(*logged("req-0"))
    assert window.dropped == 0


def test_the_last_record_of_a_full_window_is_still_remembered():
    window = DuplicateWindow(3)
    for i in range(3):
        window.seen(*logged(f"req-{i}"))
    assert window.seen(*logged("req-0"))


def test_a_copy_seen_again_counts_as_recent():
    """A third copy (a second crash) after other records is dropped as well."""
    window = DuplicateWindow(3)
    window.seen(*logged("req-0"))
    window.seen(*logged("req-1"))
    window.seen(*logged("req-2"))
    assert window.seen(*logged("req-0"))
    window.seen(*logged("req-3"))
    window.seen(*logged("req-4"))
    assert window.seen(*logged("req-0"))
    assert window.dropped == 2


def test_another_record_under_the_same_request_id_is_kept():
    window = DuplicateWindow(10)
    assert not window.seen(*logged("req-0", answer="[[0.9]]"))
    # Another answer to the same request: another record, not a copy.
    assert not window.seen(*logged("req-0", answer="[[0.1]]"))
    # A shadow version's record: same request id and value, a header saying what it is.
    assert not window.seen(*logged("req-0", answer="[[0.9]]", role=b"shadow"))
    assert window.seen(*logged("req-0", answer="[[0.9]]", role=b"shadow"))
    assert window.dropped == 1


def test_parts_of_a_record_do_not_run_together():
    assert record_identity(b"ab", [], b"c") != record_identity(b"a", [], b"bc")
    assert record_identity(None, [], b"v") != record_identity(b"", [], b"v")
    assert record_identity(b"k", [("a", b"b")], b"") != record_identity(b"k", [("ab", b"")], b"")
    assert record_identity(b"k", [], b"v") == record_identity(b"k", [], b"v")


def test_the_window_remembers_at_most_its_size_in_bounded_memory():
    size = 10_000
    window = DuplicateWindow(size)
    _, headers, big_value = logged("req", answer="[[0.5]]" * 300)

    def see(first: int, last: int) -> None:
        for i in range(first, last):
            window.seen(f"req-{i}".encode(), headers, big_value)

    tracemalloc.start()
    try:
        see(0, 3 * size)
        full, _ = tracemalloc.get_traced_memory()
        see(3 * size, 6 * size)
        later, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert window.remembered == size
    # Up to 250 bytes a record (the docs say so), however big its payloads...
    assert full / size < 250
    # ...and no more as records go on coming and the oldest are forgotten.
    assert later < full * 1.05


def test_a_window_holds_at_least_one_record():
    with pytest.raises(ValueError):
        DuplicateWindow(0)


@given(
    size=st.integers(min_value=1, max_value=6),
    stream=st.lists(
        st.tuples(st.integers(0, 8), st.sampled_from(["[[0.9]]", "[[0.1]]"])), max_size=60
    ),
)
def test_the_window_drops_exactly_the_copies_of_its_recent_records(size, stream):
    """Against a plain list of the `size` records seen most recently."""
    window = DuplicateWindow(size)
    recent: list[tuple[int, str]] = []
    for item in stream:
        repeat = item in recent
        assert window.seen(*logged(f"req-{item[0]}", answer=item[1])) == repeat
        if repeat:
            recent.remove(item)
        recent = [*recent, item][-size:]
        assert window.remembered == len(recent) <= size


def logs_args(*argv: str):
    full = ["logs", *argv, "--bootstrap-servers", "kafka:9092"]
    return build_parser(full).parse_args(full)


def test_logs_dedupe_flag_takes_an_optional_window():
    assert logs_args("mnist-inference").dedupe == 0
    assert logs_args("mnist-inference", "--dedupe").dedupe == DEFAULT_WINDOW
    assert logs_args("mnist-inference", "--dedupe", "500").dedupe == 500
    assert logs_args("--dedupe=500", "mnist-inference").dedupe == 500


@pytest.mark.parametrize("bad", ["0", "-3", "mnist-inference"])
def test_logs_dedupe_flag_refuses_what_is_not_a_window(bad, capsys):
    with pytest.raises(SystemExit):
        logs_args("--dedupe", bad)
    assert "--dedupe" in capsys.readouterr().err


def test_logs_says_how_many_duplicates_it_dropped():
    window = DuplicateWindow(100)
    none = duplicates_note(window.dropped, window.size)
    window.seen(*logged("req-0"))
    window.seen(*logged("req-0"))
    one = duplicates_note(window.dropped, window.size)
    assert none == "--dedupe: 0 duplicate records dropped (window size 100)"
    assert one == "--dedupe: 1 duplicate record dropped (window size 100)"
