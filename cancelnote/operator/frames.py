"""RFC 6455 framing after the handshake: a sans-I/O parser and the frames the server sends.

The opening handshake is HTTP and stays with wsproto (h11); what follows it is framing
only, and wsproto's general frame machinery (events, extensions hooks, a generator per
connection) cost about 19 µs per received message and 7 µs per sent one on this
project's machines, more than the recovery of the request's signature. This module does
the same work in a few slices and one XOR per frame: :class:`FrameParser` turns received
bytes into message pieces and control frames, checking everything RFC 6455 requires of a
peer (masking, reserved bits and opcodes, minimal lengths, control frame rules,
continuation order, UTF-8 of text and close reasons, close codes), and :func:`text_header`
and :func:`control_frame` build what is sent. ``tests/test_frames.py`` proves it equal to
wsproto on every sequence of frames hypothesis can build, valid or not.

No extension is ever negotiated, so every RSV bit must be clear. Data frames are
delivered as they arrive (a piece per :meth:`FrameParser.feed` call at most), never
buffered whole, so a connection holds at most what its reader chose to keep.
"""

from __future__ import annotations

import codecs
import os
from typing import Any

#: Opcodes (RFC 6455 §5.2).
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = frozenset((CONTINUATION, TEXT, BINARY))
_CONTROL = frozenset((CLOSE, PING, PONG))

#: Close codes a peer may send (RFC 6455 §7.4): the registered ones below 3000 (less the
#: three reserved for local use: 1005, 1006, 1015), and any from 3000 to 4999.
_REGISTERED_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))
NO_STATUS = 1005  # a close frame with no code
#: The longest payload the next shorter length form holds, by extended length's size.
_SHORTER = {2: 125, 8: 0xFFFF}
PROTOCOL_ERROR, INVALID_TEXT = 1002, 1007


class ProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to answer with (1002 or 1007)."""

    def __init__(self, reason: str, code: int = PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code


def _unmask(data: bytes, mask: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``mask`` (one big-integer XOR: C speed)."""
    size = len(data)
    if not size:
        return data
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class FrameParser:
    """Frames received from the peer, as ``(opcode, data, finished)`` events.

    * ``(TEXT, str, finished)`` and ``(BINARY, bytes, finished)``: the next piece of a
      message (``finished``: its last); a fragmented message keeps its first frame's
      opcode, and a text message is decoded as UTF-8 across pieces.
    * ``(PING, bytes, True)``, ``(PONG, bytes, True)``.
    * ``(CLOSE, (code, reason), True)``: the peer's close (1005 if it gave no code); the
      parser takes nothing after it.

    Args:
        server: true on the server side (every frame must be masked), false on a
            client (no frame may be).

    A stream that breaks RFC 6455 ends with :attr:`error`, a :class:`ProtocolError`
    holding the close code to answer.
    """

    __slots__ = (
        "_decoder",
        "_fin",
        "_left",
        "_mask",
        "_masked",
        "_message",
        "_offset",
        "_opcode",
        "_pending",
        "closed",
        "error",
    )

    def __init__(self, *, server: bool) -> None:
        self._masked = server
        self._pending = b""  # bytes of a header not complete yet
        self._opcode: int | None = None  # the frame in progress (its header is read)
        self._fin = False
        self._mask = b""
        self._left = 0  # payload bytes of the frame in progress still to come
        self._offset = 0  # payload bytes of it already delivered (the mask's phase)
        self._message: int | None = None  # opcode of a message begun and not finished
        self._decoder: Any = None  # UTF-8 state of a text message that spans pieces
        self.closed = False  # a close frame or an error came: nothing more is parsed
        self.error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[tuple[int, Any, bool]]:
        """Parse ``data`` (appended to what came before); the events it completes.

        After a protocol error the events before it are returned, :attr:`error` is set
        and the parser takes nothing more (check it after handling the events)."""
        if self.closed:
            return []
        if self._pending:
            data, self._pending = self._pending + data, b""
        events: list[tuple[int, Any, bool]] = []
        try:
            self._parse(data, events)
        except ProtocolError as exc:
            self.error, self.closed = exc, True
        return events

    def _parse(self, data: bytes, events: list[tuple[int, Any, bool]]) -> None:
        at, end = 0, len(data)
        while at < end or (self._opcode is not None and not self._left):
            if self._opcode is None:
                at = self._header(data, at)
                if self._opcode is None:  # an incomplete header waits for more
                    self._pending = data[at:]
                    break
                if self._left and at == end:
                    break
            take = min(self._left, end - at)
            if not self._offset and self._opcode in _DATA:
                self._check_order()
            chunk = data[at : at + take]
            at += take
            self._left -= take
            if self._masked:
                if self._offset % 4:
                    phase = self._offset % 4
                    chunk = _unmask(chunk, self._mask[phase:] + self._mask[:phase])
                else:
                    chunk = _unmask(chunk, self._mask)
            self._offset += take
            if self._opcode in _CONTROL:  # whole: _header waits for all of it
                events.append(self._control(chunk))
                if self.closed:
                    break
            else:
                events.append(self._piece(chunk, not self._left))
            if not self._left:
                self._opcode = None

    def _header(self, data: bytes, at: int) -> int:
        """Read one frame header at ``at`` if it is all there; returns the new position.

        The checks come in wsproto's order, each as soon as its bytes are there, so
        that both refuse the same streams at the same byte."""
        end = len(data)
        if end - at < 2:
            return at
        first, second = data[at], data[at + 1]
        opcode = first & 0x0F
        if opcode not in _DATA and opcode not in _CONTROL:
            raise ProtocolError(f"Invalid opcode {opcode:#x}")
        fin = bool(first & 0x80)
        if opcode in _CONTROL and not fin:
            raise ProtocolError("Invalid attempt to fragment control frame")
        length = second & 0x7F
        if opcode in _CONTROL and length > 125:
            raise ProtocolError("Control frame with payload len > 125")
        position = at + 2
        if length > 125:  # 126: a 2-byte length follows, 127: an 8-byte one
            size = 2 if length == 126 else 8
            if end - position < size:
                return at
            length = int.from_bytes(data[position : position + size], "big")
            position += size
            if length <= _SHORTER[size]:
                shorter = 1 if size == 2 else 2
                raise ProtocolError(
                    f"Payload length used {size} bytes when {shorter} would have sufficed"
                )
            if length >> 63:
                raise ProtocolError("8-byte payload length with non-zero MSB")
        if first & 0x70:
            raise ProtocolError("Reserved bit set unexpectedly")
        masked, mask = bool(second & 0x80), b""
        if masked != self._masked:
            side = "server" if self._masked else "client"
            raise ProtocolError(
                f"{side} received unexpected {'unmasked' if self._masked else 'masked'} frame"
            )
        if masked:
            if end - position < 4:
                return at
            mask = data[position : position + 4]
            position += 4
        if opcode in _CONTROL and end - position < length:
            return at  # control frames (at most 125 bytes) are parsed only once whole
        self._opcode, self._fin, self._left, self._offset = opcode, fin, length, 0
        self._mask = mask
        return position

    def _check_order(self) -> None:
        """A data frame's place in its message, checked as its first piece arrives."""
        if self._message is None:
            if self._opcode == CONTINUATION:
                raise ProtocolError("unexpected CONTINUATION")
        elif self._opcode != CONTINUATION:
            raise ProtocolError(f"expected CONTINUATION, got {self._opcode:#x}")

    def _piece(self, chunk: bytes, frame_done: bool) -> tuple[int, Any, bool]:
        opcode = self._message if self._message is not None else self._opcode
        finished = frame_done and self._fin
        if opcode == TEXT:
            decoder = self._decoder
            try:
                if decoder is None and finished:
                    text = chunk.decode("utf-8")
                else:
                    if decoder is None:
                        decoder = self._decoder = codecs.getincrementaldecoder("utf-8")()
                    text = decoder.decode(chunk, finished)
            except UnicodeDecodeError as exc:
                raise ProtocolError(str(exc), INVALID_TEXT) from None
            piece: tuple[int, Any, bool] = (TEXT, text, finished)
        else:
            piece = (BINARY, chunk, finished)
        if finished:
            self._message = self._decoder = None
        else:
            self._message = opcode
        return piece

    def _control(self, payload: bytes) -> tuple[int, Any, bool]:
        opcode = self._opcode
        if opcode != CLOSE:
            return (opcode, payload, True)  # type: ignore[return-value]
        self.closed = True
        if not payload:
            return (CLOSE, (NO_STATUS, ""), True)
        if len(payload) == 1:
            raise ProtocolError("CLOSE with 1 byte payload")
        code = int.from_bytes(payload[:2], "big")
        if not 1000 <= code <= 4999:
            raise ProtocolError("CLOSE with invalid code")
        if code < 3000 and code not in _REGISTERED_CODES:
            raise ProtocolError(
                "remote CLOSE with local-only reason"
                if code in (1005, 1006, 1015)
                else "CLOSE with unknown reserved code"
            )
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"Error decoding CLOSE reason: {exc}", INVALID_TEXT) from None
        return (CLOSE, (code, reason), True)


# ---------------------------------------------------------------------------------------
# Frames to send.


def _length(first: int, size: int, mask_bit: int) -> bytes:
    if size < 126:
        return bytes((first, mask_bit | size))
    if size < 0x10000:
        return bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    return bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")


def text_header(size: int) -> bytes:
    """The header of an unmasked, final text frame of ``size`` payload bytes (server side)."""
    return _length(0x80 | TEXT, size, 0)


def control_frame(opcode: int, payload: bytes = b"", *, masked: bool = False) -> bytes:
    """A whole PING, PONG or CLOSE frame (payload at most 125 bytes)."""
    if len(payload) > 125:
        raise ValueError("a control frame's payload is at most 125 bytes")
    return frame(opcode, payload, masked=masked)


def close_frame(code: int, reason: str = "", *, masked: bool = False) -> bytes:
    """A CLOSE frame; the reason is cut to fit 125 bytes without splitting a character."""
    data = reason.encode("utf-8")[:123].decode("utf-8", errors="ignore").encode("utf-8")
    return control_frame(CLOSE, code.to_bytes(2, "big") + data, masked=masked)


def frame(opcode: int, payload: bytes, *, masked: bool = False, fin: bool = True) -> bytes:
    """One frame; ``masked`` (every client frame is) with a fresh random key."""
    first = (0x80 if fin else 0) | opcode
    if not masked:
        return _length(first, len(payload), 0) + payload
    mask = os.urandom(4)
    return _length(first, len(payload), 0x80) + mask + _unmask(payload, mask)
