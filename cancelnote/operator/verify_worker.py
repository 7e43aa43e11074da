"""A verifier worker process: recovers the signers of the operator's requests on its own core.

Run by :class:`~cancelnote.operator.verifier.Verifier` as ``python -m
cancelnote.operator.verify_worker``; it speaks on its standard input and output, one
frame at a time (:mod:`.child`): a 4-byte big-endian length, then msgpack. A request is ``[batch,
[[digest, signature], ...]]`` (32-byte EIP-712 digests, 65-byte signatures); the answer
is ``[batch, [[signer, error], ...]]``, for each pair the 20-byte address its signature
recovers to and ``""``, or ``b""`` and the text of the
:class:`~cancelnote.errors.SignatureError` that says why none does. It knows nothing of
requests, keys or state: the server computes the digests and the engine compares the
signers with the senders.

It never outlives the operator: it reads its input until the end, and the input's only
writer is the operator (no other process holds the pipe), so when the operator closes it
or dies, even by SIGKILL, the worker sees the end of its input and exits, at worst after
the batch in hand (milliseconds). ``PR_SET_PDEATHSIG`` would not do: it fires when the
*thread* that forked the child ends, and trio forks from its worker threads, which end
when idle. SIGINT is ignored: a Ctrl-C reaches the whole process group, and the operator
stops its workers itself.
"""

from __future__ import annotations

import sys

import msgspec

from cancelnote.crypto import recover_address
from cancelnote.errors import SignatureError
from cancelnote.operator.child import frame, ignore_interrupts, read_frame

Request = tuple[int, list[tuple[bytes, bytes]]]


def recover_all(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, str]]:
    """``(signer, "")`` for each ``(digest, signature)``, or ``(b"", why there is none)``."""
    out: list[tuple[bytes, str]] = []
    for digest, signature in pairs:
        try:
            out.append((recover_address(digest, signature), ""))
        except SignatureError as exc:
            out.append((b"", str(exc)))
    return out


def main() -> int:
    ignore_interrupts()
    decode = msgspec.msgpack.Decoder(Request).decode
    encode = msgspec.msgpack.Encoder().encode
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while (payload := read_frame(source)) is not None:
        batch, pairs = decode(payload)
        try:
            sink.write(frame(encode((batch, recover_all(pairs)))))
            sink.flush()
        except BrokenPipeError:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
