"""HTTP/2 (RFC 9113) as far as the activator's gRPC port needs it, and no further: the first call
of a client's connection read from its bytes (its `:authority` names the serving, its
`authorization` says whether it has a credential), the bytes kept as they came to be replayed to
the pod, a refusal of that call in gRPC's own terms, and where a GOAWAY may go into the pod's
answer stream. Pure: bytes in, bytes out, no I/O.

Why so little: the activator speaks HTTP/2 only until the serving has a pod. It sends its own
SETTINGS at once (gRPC clients wait for the server's before they send a call), every value at
its default; the client's acknowledgment of them is the activator's alone, so it is taken out
of what goes on. It never acknowledges the client's SETTINGS itself: the pod does, when the
bytes reach it. From the pod's first byte on, both ways are the two ends' own conversation
(the pod's SETTINGS reach the client as an update of the activator's defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

import hpack
from hpack.exceptions import HPACKError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9

# Frame types and flags (RFC 9113 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes of a GOAWAY (RFC 9113 7).
NO_ERROR, PROTOCOL_ERROR, ENHANCE_YOUR_CALM = 0x0, 0x1, 0xB

# SETTINGS_MAX_FRAME_SIZE's default, which the activator's SETTINGS leave as it is.
MAX_FRAME = 16384
# A GOAWAY's last stream id that lets every open stream finish, as a graceful shutdown's first.
ALL_STREAMS = 2**31 - 1


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + (stream & ALL_STREAMS).to_bytes(4, "big")
        + payload
    )


# The activator's SETTINGS: none named, so each is at its default (RFC 9113 6.5.2).
SERVER_SETTINGS = frame(SETTINGS, 0, 0)


def goaway(last_stream: int, error: int = NO_ERROR) -> bytes:
    return frame(GOAWAY, 0, 0, last_stream.to_bytes(4, "big") + error.to_bytes(4, "big"))


class ProtocolError(Exception):
    """The client's bytes are not HTTP/2 the activator can read (a connection error)."""


class TooMuch(Exception):
    """The client sent more before its call has a pod than the activator keeps."""


@dataclass(frozen=True)
class Call:
    """The first call on a connection: its stream and its headers (names in lower case)."""

    stream: int
    headers: dict[str, str]

    @property
    def authority(self) -> str:
        return self.headers.get(":authority") or self.headers.get("host", "")

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def path(self) -> str:
        return self.headers.get(":path", "")

    @property
    def timeout(self) -> float | None:
        """Its deadline in seconds from its `grpc-timeout`, when it has a valid one."""
        return grpc_timeout(self.headers.get("grpc-timeout"))


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def grpc_timeout(value: str | None) -> float | None:
    """gRPC's `grpc-timeout` (at most 8 digits and a unit) in seconds; None when absent or
    not of that form."""
    if not value or len(value) > 9 or value[-1] not in _TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * _TIMEOUT_UNITS[value[-1]]


class Opening:
    """What a client sends before its connection has a pod. `feed` takes its bytes as they
    come; `call` is its first call once that call's headers are whole; `take` gives what is to
    go on to the pod (all of it but the acknowledgment of the activator's SETTINGS) since it
    was last called. Once that acknowledgment is out, `passing` says bytes need no more reading:
    they go on as they are."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._unread = bytearray()
        self._kept = bytearray()
        self._preface = False
        self._acked = False
        self._block = bytearray()
        self._block_stream = 0
        self.call: Call | None = None

    @property
    def passing(self) -> bool:
        return self._acked and self.call is not None

    def feed(self, data: bytes) -> None:
        """Read `data`; ProtocolError when it is not HTTP/2, TooMuch past the limit."""
        unread = self._unread
        unread += data
        if not self._preface:
            if len(unread) < len(PREFACE):
                if not PREFACE.startswith(bytes(unread)):
                    raise ProtocolError("not an HTTP/2 connection preface")
                return
            if unread[: len(PREFACE)] != PREFACE:
                raise ProtocolError("not an HTTP/2 connection preface")
            self._kept += PREFACE
            del unread[: len(PREFACE)]
            self._preface = True
        while len(unread) >= FRAME_HEADER:
            length = int.from_bytes(unread[0:3], "big")
            if length > MAX_FRAME:
                raise ProtocolError(f"a frame of {length} bytes, over the {MAX_FRAME} allowed")
            end = FRAME_HEADER + length
            if len(unread) < end:
                break
            kind, flags = unread[3], unread[4]
            stream = int.from_bytes(unread[5:9], "big") & ALL_STREAMS
            whole = bytes(unread[:end])
            del unread[:end]
            if kind == SETTINGS and flags & ACK and not self._acked:
                self._acked = True  # of the activator's SETTINGS: the pod never sent those
                continue
            self._kept += whole
            if self.call is None:
                self._read_header_block(kind, flags, stream, whole[FRAME_HEADER:])
        if len(self._kept) + len(unread) > self._limit:
            raise TooMuch()

    def take(self) -> bytes:
        kept = bytes(self._kept)
        self._kept.clear()
        if self.passing:
            kept += self._unread
            self._unread.clear()
        return kept

    def _read_header_block(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self._block_stream:
            if kind != CONTINUATION or stream != self._block_stream:
                raise ProtocolError("a header block cut by another frame")
        elif kind == HEADERS:
            if stream == 0:
                raise ProtocolError("HEADERS on stream 0")
            start, end = 0, len(payload)
            if flags & PADDED:
                if not payload or payload[0] >= len(payload):
                    raise ProtocolError("HEADERS padded beyond its length")
                start, end = 1, len(payload) - payload[0]
            if flags & PRIORITY_FLAG:
                start += 5
            if start > end:
                raise ProtocolError("HEADERS shorter than its fields")
            payload = payload[start:end]
            self._block_stream = stream
        else:
            return
        self._block += payload
        if flags & END_HEADERS:
            try:
                fields = hpack.Decoder().decode(bytes(self._block))
            except HPACKError as exc:
                raise ProtocolError(f"a header block that does not decode: {exc}") from exc
            headers: dict[str, str] = {}
            for name, value in fields:
                headers.setdefault(str(name).lower(), str(value))
            self.call = Call(self._block_stream, headers)
            self._block_stream = 0
            self._block.clear()


def refusal(stream: int, code: int, message: str, trailers: dict[str, str] | None = None) -> bytes:
    """A gRPC call's answer of status `code` with no message (trailers only), then a GOAWAY
    that leaves the connection: every later stream the client opened was not taken, and gRPC
    clients send those again on a new connection."""
    fields = [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", str(code)),
        ("grpc-message", grpc_message(message)),
        *(trailers or {}).items(),
    ]
    encoder = hpack.Encoder()
    # Nothing in the client's table: its size may have been set below the default.
    encoder.header_table_size = 0
    block = encoder.encode(fields)
    return frame(HEADERS, END_STREAM | END_HEADERS, stream, block) + goaway(stream)


def grpc_message(text: str) -> str:
    """`grpc-message`'s percent-encoding (gRPC's HTTP/2 protocol): every byte outside the
    printable ASCII, and `%` itself."""
    return "".join(
        chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in text.encode("utf-8")
    )


class FrameCursor:
    """Follows the frames of a byte stream (the pod's, to the client) as it passes, to say
    where a frame of the activator's own may go in: between two frames, and not inside a header
    block (a HEADERS and its CONTINUATIONs go together)."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._left = 0  # bytes of the present frame's payload still to pass
        self._in_block = False

    @property
    def between(self) -> bool:
        """Whether what passed so far ends where a frame may go in."""
        return not self._header and not self._left and not self._in_block

    def advance(self, data: bytes) -> int | None:
        """Pass `data`; the last offset in it (0 to len) where a frame may go in, None when
        there is none."""
        found = 0 if self.between else None
        at, size = 0, len(data)
        while at < size:
            if self._left:
                step = min(self._left, size - at)
                at += step
                self._left -= step
            else:
                step = min(FRAME_HEADER - len(self._header), size - at)
                self._header += data[at : at + step]
                at += step
                if len(self._header) < FRAME_HEADER:
                    break
                header = self._header
                self._left = int.from_bytes(header[0:3], "big")
                kind, flags = header[3], header[4]
                if kind in (HEADERS, PUSH_PROMISE, CONTINUATION):
                    self._in_block = not flags & END_HEADERS
                self._header = bytearray()
            if self.between:
                found = at
        return found
