"""The activator's HTTP/2 reading (h2.py): a connection's first call from its bytes however they
are cut, the acknowledgment of the activator's SETTINGS taken out of what goes on, refusals a
gRPC client reads, and where a frame of the activator's may go into the pod's stream."""

from __future__ import annotations

import hpack
import pytest

from modelserving_sidecar.activator import h2

CLIENT_SETTINGS = h2.frame(h2.SETTINGS, 0, 0, bytes.fromhex("000300000064"))
ACK = h2.frame(h2.SETTINGS, h2.ACK, 0)
FIELDS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/tensorflow.serving.PredictionService/Predict"),
    (":authority", "hpt.team.svc:8500"),
    ("content-type", "application/grpc"),
    ("authorization", "ApiKey k"),
    ("grpc-timeout", "250m"),
]


def block(fields: list[tuple[str, str]] = FIELDS) -> bytes:
    return hpack.Encoder().encode(fields)


def test_the_first_call_is_read_from_bytes_cut_anywhere_and_all_but_the_ack_go_on() -> None:
    headers = h2.frame(h2.HEADERS, h2.END_HEADERS, 1, block())
    data = h2.frame(h2.DATA, h2.END_STREAM, 1, b"\x00\x00\x00\x00\x02ab")
    sent = h2.PREFACE + CLIENT_SETTINGS + ACK + headers + data
    for cut in range(1, len(sent)):
        opening = h2.Opening(1 << 20)
        opening.feed(sent[:cut])
        opening.feed(sent[cut:])
        assert opening.call is not None
        assert (opening.call.stream, opening.call.authority, opening.call.authorization) == (
            1,
            "hpt.team.svc:8500",
            "ApiKey k",
        )
        assert opening.call.timeout == pytest.approx(0.25)
        assert opening.passing
        assert opening.take() == h2.PREFACE + CLIENT_SETTINGS + headers + data


def test_a_header_block_padded_with_priority_and_continued_is_read_whole() -> None:
    whole = block()
    padded = bytes([3]) + bytes(5) + whole[:10] + b"\x00\x00\x00"
    sent = (
        h2.PREFACE
        + h2.frame(h2.HEADERS, h2.PADDED | h2.PRIORITY_FLAG, 3, padded)
        + h2.frame(h2.CONTINUATION, h2.END_HEADERS, 3, whole[10:])
    )
    opening = h2.Opening(1 << 20)
    opening.feed(sent)
    assert opening.call is not None and opening.call.stream == 3
    assert opening.call.path == "/tensorflow.serving.PredictionService/Predict"
    assert not opening.passing  # the ack of the activator's SETTINGS has not come yet
    assert opening.take() == sent
    opening.feed(ACK + b"\x00\x00")  # the ack, then the start of a frame
    assert opening.passing and opening.take() == b"\x00\x00"


@pytest.mark.parametrize(
    "sent",
    [
        b"GET / HTTP/1.1\r\n",
        h2.PREFACE + h2.frame(h2.HEADERS, 0, 1, block()[:5]) + h2.frame(h2.PING, 0, 0, bytes(8)),
        h2.PREFACE + h2.frame(h2.HEADERS, h2.END_HEADERS, 1, b"\xff\xff\xff\xff"),
        h2.PREFACE + (h2.MAX_FRAME + 1).to_bytes(3, "big") + bytes(6),
    ],
    ids=["http1", "block cut by a ping", "undecodable", "frame too large"],
)
def test_what_is_not_http2_is_a_protocol_error(sent: bytes) -> None:
    with pytest.raises(h2.ProtocolError):
        h2.Opening(1 << 20).feed(sent)


def test_more_than_the_limit_before_the_call_has_a_pod_is_too_much() -> None:
    opening = h2.Opening(200)
    opening.feed(h2.PREFACE + h2.frame(h2.HEADERS, h2.END_HEADERS, 1, block()))
    with pytest.raises(h2.TooMuch):
        opening.feed(h2.frame(h2.DATA, 0, 1, bytes(300)))


def test_a_refusal_is_a_trailers_only_answer_then_a_goaway_naming_its_stream() -> None:
    refused = h2.refusal(5, 14, "zero; 100% sure", {"grpc-retry-pushback-ms": "5000"})
    length = int.from_bytes(refused[:3], "big")
    assert (refused[3], refused[4], int.from_bytes(refused[5:9], "big")) == (
        h2.HEADERS,
        h2.END_STREAM | h2.END_HEADERS,
        5,
    )
    fields = dict(hpack.Decoder().decode(refused[9 : 9 + length]))
    assert fields == {
        ":status": "200",
        "content-type": "application/grpc",
        "grpc-status": "14",
        "grpc-message": "zero; 100%25 sure",
        "grpc-retry-pushback-ms": "5000",
    }
    assert refused[9 + length :] == h2.goaway(5)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1S", 1.0), ("250m", 0.25), ("2M", 120.0), ("99999999u", 99.999999), ("1H", 3600.0)],
)
def test_grpc_timeout_is_read_in_each_unit(value: str, seconds: float) -> None:
    assert h2.grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "S", "1s", "123456789S", "-1S", "1.5S"])
def test_a_grpc_timeout_not_of_its_form_is_none(value: str | None) -> None:
    assert h2.grpc_timeout(value) is None


def test_the_cursor_finds_the_last_place_between_frames_outside_a_header_block() -> None:
    headers_open = h2.frame(h2.HEADERS, 0, 1, b"ab")
    continuation = h2.frame(h2.CONTINUATION, h2.END_HEADERS, 1, b"cd")
    data = h2.frame(h2.DATA, 0, 1, b"0123456789")
    stream = headers_open + continuation + data
    cursor = h2.FrameCursor()
    # Inside the header block there is no place (only before it); after it, the last place
    # is data's start.
    assert cursor.advance(headers_open) == 0
    assert cursor.advance(b"") is None
    assert cursor.advance(continuation + data[:12]) == len(continuation)
    assert not cursor.between
    assert cursor.advance(data[12:]) == len(data) - 12 and cursor.between
    # Byte by byte, the places are the frame ends outside the block.
    cursor = h2.FrameCursor()
    places = [at + 1 for at in range(len(stream)) if cursor.advance(stream[at : at + 1]) == 1]
    assert places == [len(headers_open) + len(continuation), len(stream)]
