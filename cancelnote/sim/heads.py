"""Journal heads in the lab (protocol §21, docs/simulation.md §17): the real log, the real
heads, the real proofs.

:class:`OperatorLog` is the simulated operator's side: its engine's journal entries go
into a real :class:`~cancelnote.operator.journal.Journal` (a temporary SQLite file,
``synchronous = NORMAL``: a run is disposable) through the real
:class:`~cancelnote.operator.heads.HeadLog`, which makes each entry a leaf of the RFC 9162
tree, signs the heads (an EIP-712 ``JournalHead`` by the operator's key) and answers the
clients' proof queries (inclusion, consistency, locate) with the server's own envelopes.
What the operator's strategy does to its clock (a backdated fill) goes into the log as
it is: the log is the evidence.

:func:`follow_head` is the client's side of one head, the loop
:class:`~cancelnote.client.heads.HeadsFollower` runs on a socket, with the operator's
answers taken from the :class:`OperatorLog` at once (the query round trip is not
simulated: it changes when a finding is made by a round trip, never whether).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..api import Consistency, Inclusion, Locate, failure_wire, success_wire
from ..client.evidence import Finding
from ..client.heads import HeadsVerifier, Query
from ..crypto import Signer
from ..errors import Rejected
from ..messages import Domain
from ..operator.heads import HeadLog
from ..operator.journal import Journal, JournalEntry
from ..transparency import SignedHead

#: Rounds of queries a client asks at one head: locate, the leaves, the matches their
#: fills name, re-proofs against one head (as the follower on a socket).
QUERY_ROUNDS = 4


class OperatorLog:
    """The simulated operator's journal, its log and its heads (module docstring)."""

    def __init__(self, signer: Signer, domain: Domain, interval_ms: int) -> None:
        self._folder = tempfile.mkdtemp(prefix="cancelnote-log-")
        path = Path(self._folder) / "journal.db"
        self.journal = Journal.open(path, domain, signer.address, synchronous="NORMAL")
        self.heads = HeadLog.open(self.journal, signer, domain, interval_ms)
        self.heads.finish()
        self.signed = 0

    def append(self, entries: Sequence[JournalEntry]) -> None:
        """Journal one engine call's entries, with their leaves, in one commit."""
        if entries:
            self.heads.commit(entries)

    def sign(self, now_ms: int) -> SignedHead:
        """Sign the head of the log as it is, committed before it is shown."""
        head = self.heads.sign(now_ms)
        write = self.heads.take(head)
        self.journal.append_many((), [write])
        self.heads.committed(write)
        self.signed += 1
        return head

    def answer(self, query: Query) -> dict[str, Any]:
        """The operator's reply envelope to one proof query, as its server sends it."""
        try:
            if isinstance(query, Inclusion):
                data = self.heads.inclusion(query.size, query.seqs)
            elif isinstance(query, Consistency):
                data = self.heads.consistency(query.first, query.second)
            else:
                assert isinstance(query, Locate)
                data = self.heads.locate(query.content)
        except Rejected as exc:
            return failure_wire(exc, query.REQUEST_TYPE)
        return success_wire(query.REQUEST_TYPE, data, None)

    def close(self) -> None:
        """Close the journal and delete its files."""
        self.heads.close()
        self.journal.close()
        shutil.rmtree(self._folder, ignore_errors=True)


def follow_head(
    heads: HeadsVerifier,
    signed: SignedHead,
    previous: SignedHead | None,
    ask: Callable[[Query], dict[str, Any]],
    now_ms: int,
) -> list[Finding]:
    """One head as a client's follower takes it: check and keep it, ask what it says
    about the client's own messages (``ask``: the operator's answers), judge the answers,
    then the alarms (a cancel not logged within ``cancel_heads`` heads)."""
    found = heads.receive_head(signed, now_ms)
    for _ in range(QUERY_ROUNDS):
        queries = heads.queries(signed, previous)
        previous = None  # (its consistency is asked once)
        if not queries:
            break
        for query in queries:
            found += heads.take(signed, query, ask(query), now_ms)
    return found + heads.check_alarms(now_ms)
