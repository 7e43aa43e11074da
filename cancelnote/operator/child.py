"""Worker processes of the operator fed over pipes: the framing both sides share, and the
operator's side of one child (:class:`Child`).

A frame is a 4-byte big-endian length, then that many bytes (msgpack, in both users:
the verifier workers and the journal process). A child reads its standard input until
the end and answers on its standard output; its input's only writer is the operator, so
when the operator closes it or dies, even by SIGKILL, the child sees the end of its input
and exits. SIGINT is ignored by children: a Ctrl-C reaches the whole process group, and
the operator stops its children itself.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import BinaryIO

import trio

#: Largest frame either side sends (a batch of the server's at most, with room to spare).
MAX_FRAME = 64 * 1024 * 1024
#: How long a stopping child may take to exit before it is killed.
STOP_GRACE_S = 0.3


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def read_frame(stream: BinaryIO) -> bytes | None:
    """The child's side: one frame's payload, or ``None`` at the end of the stream."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME:
        raise SystemExit(f"{sys.argv[0]}: a frame of {size} bytes")
    payload = stream.read(size)
    return payload if len(payload) == size else None


def ignore_interrupts() -> None:
    """In a child: Ctrl-C is the operator's to handle (it stops its children)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ChildFailed(Exception):
    """A child exited, or sent something that is not a frame."""


class Child:
    """One child process (``python -m module``) and the bytes read from it that do not
    make a frame yet."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()

    @classmethod
    async def spawn(cls, module: str) -> trio.Process:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    async def send(self, payload: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(frame(payload))

    async def receive(self) -> bytes:
        """The next frame's payload.

        Raises:
            ChildFailed: the child exited, or announced a frame over :data:`MAX_FRAME`.
        """
        assert self.process.stdout is not None
        buffer = self._buffer
        while True:
            if len(buffer) >= 4:
                size = int.from_bytes(buffer[:4], "big")
                if size > MAX_FRAME:
                    raise ChildFailed(f"a frame of {size} bytes")
                if len(buffer) >= 4 + size:
                    payload = bytes(buffer[4 : 4 + size])
                    del buffer[: 4 + size]
                    return payload
            data = await self.process.stdout.receive_some(1 << 16)
            if not data:
                raise ChildFailed("the child exited")
            buffer += data

    async def stop(self) -> None:
        """Close its input (it exits), or kill it if it does not within the grace."""
        with trio.CancelScope(shield=True):
            if self.process.stdin is not None:
                await trio.aclose_forcefully(self.process.stdin)
            with trio.move_on_after(STOP_GRACE_S):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
            if self.process.stdout is not None:
                await trio.aclose_forcefully(self.process.stdout)
