"""The operator's frame parser is wsproto's equal on every stream of frames, valid or not.

wsproto is the reference: for any sequence of frames (well formed or broken in any
header bit, length encoding, mask, opcode, order, UTF-8 or close payload), cut into any
chunks, both must report the same messages, pings, pongs and close, and refuse the same
streams with the same close code.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from cancelnote.operator import frames
from cancelnote.operator.frames import FrameParser


def _wsproto_server() -> WSConnection:
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    assert any(isinstance(e, Request) for e in server.events())
    server.send(AcceptConnection())
    return server


def _wsproto_events(chunks: list[bytes]) -> list[Any]:
    """Message-level outcome of wsproto: messages joined, controls, then close or error."""
    ws = _wsproto_server()
    out: list[Any] = []
    parts: list[Any] = []
    for chunk in chunks:
        if ws.state is not ConnectionState.OPEN:
            break
        ws.receive_data(chunk)
        for event in ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                parts.append(event.data)
                if event.message_finished:
                    kind = "text" if isinstance(event, TextMessage) else "binary"
                    joined = "".join(parts) if kind == "text" else b"".join(parts)
                    out.append((kind, joined))
                    parts = []
            elif isinstance(event, Ping | Pong):
                out.append((type(event).__name__.lower(), bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:  # a close frame
                    out.append(("close", event.code, event.reason))
                else:  # a parse failure
                    out.append(("error", event.code))
                return out
    return out


def _our_events(chunks: list[bytes], parser: FrameParser | None = None) -> list[Any]:
    parser = parser or FrameParser(server=True)
    out: list[Any] = []
    parts: list[Any] = []
    for chunk in chunks:
        events = parser.feed(chunk)
        for opcode, data, finished in events:
            if opcode in (frames.TEXT, frames.BINARY):
                parts.append(data)
                if finished:
                    kind = "text" if opcode == frames.TEXT else "binary"
                    out.append((kind, "".join(parts) if kind == "text" else b"".join(parts)))
                    parts = []
            elif opcode == frames.CLOSE:
                out.append(("close", *data))
                return out
            else:
                out.append(("ping" if opcode == frames.PING else "pong", data))
        if parser.error is not None:
            out.append(("error", parser.error.code))
            return out
    return out


def raw_frame(
    fin: bool, rsv: int, opcode: int, payload: bytes, masked: bool, length_form: int
) -> bytes:
    """A frame exactly as told, including ill-formed ones (any length encoding, no mask)."""
    size = len(payload)
    form = max(length_form, 0 if size < 126 else 1 if size < 0x10000 else 2)
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if form == 0:
        header = bytes((first, mask_bit | size))
    elif form == 1:
        header = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + frames._unmask(payload, mask)


_CLOSE_PAYLOADS = st.one_of(
    st.just(b""),
    st.binary(max_size=1),
    st.tuples(
        st.sampled_from([1000, 1001, 1004, 1005, 1006, 1011, 1013, 1014, 1015, 2999, 3000, 4999])
        | st.integers(0, 65535),
        st.text(max_size=20).map(lambda t: t.encode()) | st.binary(max_size=20),
    ).map(lambda pair: pair[0].to_bytes(2, "big") + pair[1]),
)
_TEXT_PAYLOADS = st.text(max_size=40).map(lambda t: t.encode()) | st.binary(max_size=40)


@st.composite
def frame_streams(draw: st.DrawFn) -> bytes:
    """Mostly plausible frame sequences (fragmented messages, controls between their
    pieces), each header bit and rule broken now and then."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        opcode = draw(
            st.sampled_from([frames.TEXT, frames.BINARY, frames.CONTINUATION, frames.PING])
            | st.sampled_from([frames.PONG, frames.CLOSE])
            | st.integers(0, 15)
        )
        if opcode == frames.CLOSE:
            payload = draw(_CLOSE_PAYLOADS)
        elif opcode in (frames.PING, frames.PONG):
            payload = draw(st.binary(max_size=130))
        else:
            payload = draw(_TEXT_PAYLOADS | st.binary(min_size=126, max_size=300))
        out.append(
            raw_frame(
                fin=draw(st.booleans() | st.just(True)),
                rsv=draw(st.just(0) | st.integers(0, 7)),
                opcode=opcode,
                payload=payload,
                masked=draw(st.just(True) | st.booleans()),
                length_form=draw(st.just(0) | st.integers(0, 2)),
            )
        )
    return b"".join(out)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_the_parser_agrees_with_wsproto_on_any_frame_stream(data):
    stream = data.draw(frame_streams())
    chunks = data.draw(chunked(stream))
    assert _our_events(chunks) == _wsproto_events(chunks)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.data())
def test_the_parser_agrees_with_wsproto_on_random_bytes(stream, data):
    chunks = data.draw(chunked(stream))
    assert _our_events(chunks) == _wsproto_events(chunks)


def test_a_large_frame_arrives_in_pieces_and_is_never_held_whole():
    payload = ("é" * 50_000).encode()
    wire = raw_frame(True, 0, frames.TEXT, payload, True, 0)
    parser = FrameParser(server=True)
    pieces = [parser.feed(wire[i : i + 4096]) for i in range(0, len(wire), 4096)]
    texts = [data for events in pieces for _, data, _ in events]
    assert len(texts) > 20 and all(len(t.encode()) <= 4096 for t in texts)
    assert "".join(texts) == "é" * 50_000
    assert [finished for events in pieces for _, _, finished in events][-1] is True


def test_frames_the_server_sends_are_read_by_wsproto_as_sent():
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    list(client.events())
    for size in (0, 125, 126, 65535, 65536, 200_000):
        text = "x" * size
        client.receive_data(frames.text_header(size) + text.encode())
        received = [e.data for e in client.events()]
        assert "".join(received) == text
    client.receive_data(frames.control_frame(frames.PING, b"hi"))
    assert [e.payload for e in client.events()] == [b"hi"]
    client.receive_data(frames.close_frame(4001, "é" * 100))
    (close,) = client.events()
    assert close.code == 4001 and len(close.reason.encode()) <= 123


def test_a_client_parser_reads_what_a_wsproto_server_sends_and_masks_what_it_sends():
    parser = FrameParser(server=False)
    server = _wsproto_server()
    assert _our_events([server.send(TextMessage(data="hello"))], parser) == [("text", "hello")]
    server.receive_data(frames.frame(frames.TEXT, b"masked", masked=True))
    assert [e.data for e in server.events()] == ["masked"]
