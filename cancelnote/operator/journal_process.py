"""The journal's commits in a process of their own, fed over a pipe (docs/operations.md §8).

A commit done in a thread of the operator costs its process two GIL hand-offs and a
thread wake-up (trio's ``to_thread``: about 70 µs of CPU each time) and runs the rows'
chain hashes, SQLite's statements and the seal under the same GIL as the event loop.
Here the operator encodes a commit's rows (:func:`~.journal.commit_rows`: the entries'
JSON, the log's nodes and meta) and writes them to this process in one frame
(:mod:`.child`); the process chains, inserts, commits (FULL: fsync), seals and answers
with the journal's new state. The operator releases the batch's replies only after that
answer: **durable before visible** is unchanged, only where the commit runs moved.

Both sides open the same file: the operator's :class:`~.journal.Journal` for reading
(replay at start, heads proofs), this process's for writing; the operator checks at
start that both see the same state (count, last seq, chain head) and follows the state
each answer gives (:meth:`~.journal.Journal.committed_elsewhere`).

Failures: a commit this process refuses (a seq taken, the disk's error) is raised in the
operator as the same error (:class:`~.journal.JournalCorrupt`) or as
:class:`JournalProcessFailed` naming the error, and is a fault (the server ends; the
journal is the truth on restart). So is this process dying, or taking longer than
:data:`COMMIT_TIMEOUT_S` for a commit: the operator never guesses whether a commit it
did not see answered is on disk, it stops, and the restart reads the file. The process
never outlives the operator (it exits at the end of its input, :mod:`.child`).

Run as ``python -m cancelnote.operator.journal_process`` by :class:`JournalProcess`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import msgspec
import trio

from cancelnote.errors import Fault
from cancelnote.messages import Domain

from .child import Child, ChildFailed, frame, ignore_interrupts, read_frame
from .journal import CommitRows, Journal, JournalCorrupt, JournalEntry, LogWrite, commit_rows

#: A commit (or the start) that takes longer than this is a fault: the disk or the process
#: is stuck, and the operator stops rather than answer what it cannot prove durable.
COMMIT_TIMEOUT_S = 30.0

#: ``[path, chain_id, verifying_contract, name, version, operator, synchronous]``
_Open = tuple[str, int, bytes, str, str, bytes, str]
#: ``[error type ("" if none), error text, count, last_seq, head]``
_Answer = tuple[str, str, int, int, bytes]

_encode = msgspec.msgpack.Encoder().encode
_decode_answer = msgspec.msgpack.Decoder(_Answer).decode


class JournalProcessFailed(Fault):
    """The journal process died, hung, or could not commit (the disk's error)."""

    code = "JOURNAL_PROCESS"


class JournalProcess:
    """The operator's side: ``journal``'s commits, made by a child process.

    Args:
        journal: the operator's open journal (its file, binding and state).
        timeout_s: the longest a commit may take (:data:`COMMIT_TIMEOUT_S`).
    """

    def __init__(self, journal: Journal, timeout_s: float = COMMIT_TIMEOUT_S) -> None:
        self.journal = journal
        self._timeout_s = timeout_s
        self._child: Child | None = None

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child is not None else None

    async def start(self) -> None:
        """Start the process and check that it opened the journal in the state we know.

        Raises:
            JournalProcessFailed: it could not start or open the journal, or found
                another state (another writer committed meanwhile).
        """
        if self.journal.opened_as is None:
            raise JournalProcessFailed("a read-only journal has no writer")
        domain, operator, synchronous = self.journal.opened_as
        self._child = Child(await Child.spawn("cancelnote.operator.journal_process"))
        opening = (
            str(self.journal.path),
            domain.chain_id,
            domain.verifying_contract,
            domain.name,
            domain.version,
            operator,
            synchronous,
        )
        state = await self._call(_encode(opening))
        if state != self.journal.state:
            raise JournalProcessFailed(
                f"the journal process found {state} in {self.journal.path}, not"
                f" {self.journal.state}"
            )

    async def append_many(
        self, entries: Iterable[JournalEntry], logs: Iterable[LogWrite] = ()
    ) -> None:
        """:meth:`Journal.append_many`, in the process; returns once it is durable.

        Raises:
            JournalCorrupt: as :meth:`Journal.append_many`.
            JournalProcessFailed: the process died, hung or hit a disk error.
        """
        self.journal.committed_elsewhere(await self._call(_encode(commit_rows(entries, logs))))

    async def _call(self, payload: bytes) -> tuple[int, int, bytes]:
        child = self._child
        if child is None:
            raise JournalProcessFailed("the journal process is not running")
        try:
            with trio.fail_after(self._timeout_s):
                await child.send(payload)
                error, text, count, last_seq, head = _decode_answer(await child.receive())
        except (ChildFailed, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise JournalProcessFailed(
                f"the journal process (pid {child.process.pid}) failed: {exc}"
            ) from None
        except trio.TooSlowError:
            raise JournalProcessFailed(
                f"the journal process (pid {child.process.pid}) took over {self._timeout_s} s"
            ) from None
        except msgspec.DecodeError as exc:
            raise JournalProcessFailed(f"an unreadable answer: {exc}") from None
        if error == JournalCorrupt.__name__:
            raise JournalCorrupt(text)
        if error:
            raise JournalProcessFailed(f"{error}: {text}")
        return count, last_seq, head

    async def aclose(self) -> None:
        """Stop the process (it exits at the end of its input; killed after a grace)."""
        child, self._child = self._child, None
        if child is not None:
            await child.stop()


# ---------------------------------------------------------------------------------------
# The process.


def _answer(journal: Journal | None, error: BaseException | None = None) -> bytes:
    count, last_seq, head = journal.state if journal is not None else (0, 0, b"")
    kind, text = (type(error).__name__, str(error)) if error is not None else ("", "")
    return frame(_encode((kind, text, count, last_seq, head)))


def main() -> int:
    ignore_interrupts()
    decode_rows = msgspec.msgpack.Decoder(CommitRows).decode
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    payload = read_frame(source)
    if payload is None:
        return 0
    path, chain_id, contract, name, version, operator, synchronous = msgspec.msgpack.decode(
        payload, type=_Open
    )
    journal: Journal | None = None
    try:
        domain = Domain(chain_id, contract, name=name, version=version)
        journal = Journal.open(Path(path), domain, operator, synchronous)  # type: ignore[arg-type]
        answer = _answer(journal)
    except Exception as exc:  # told to the operator, which stops
        answer = _answer(None, exc)
    try:
        sink.write(answer)
        sink.flush()
        while journal is not None and (payload := read_frame(source)) is not None:
            try:
                journal.append_rows(decode_rows(payload))
                answer = _answer(journal)
            except Exception as exc:  # the disk's error, a seq taken: the operator stops
                answer = _answer(journal, exc)
            sink.write(answer)
            sink.flush()
    except BrokenPipeError:
        pass
    finally:
        if journal is not None:
            journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
