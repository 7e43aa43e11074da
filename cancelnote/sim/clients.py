"""The client seam: one client's real verifier and watchtower, driven by simulated time.

The simulator does not judge the operator itself. Each client keeps its evidence in an
:class:`~cancelnote.client.evidence.EvidenceStore`, hands every fill and note the
operator pushes to the real :class:`~cancelnote.client.verifier.Verifier`, and takes
findings to court with the real :class:`~cancelnote.client.watchtower.Watchtower`, whose
``step`` the world calls once per block slot while the client has something to do there.
The world only decides *when* a client looks at the chain (a finding arrived, a cancel
deadline passed, a case is open), never *what* it does.

Three things differ from a client on a socket, all outside what the lab measures: the
store is a temporary file without fsync (a run is disposable; durability is the
operator's and the real client's concern, tested elsewhere) with a small page cache; it
keeps its working set in memory and writes in batches (:class:`~.store.WorkingSetStore`:
the real store's code and schema, every answer the one the real store would give), and
lets an order's evidence go from memory once the world says nothing more can happen to
it, so memory stays flat however long the run; and a pushed fill or note reaches the
verifier as the signed message it is (``receive_fill``/``receive_note``), not as JSON to
parse again. Every signature is still recovered and every rule checked; a simulated
client never reconnects, so it keeps no stream cursor.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import Any

from ..api import CancelOrders, PlaceOrder
from ..client.evidence import Finding, SignedFill, SignedNote
from ..client.heads import HeadsVerifier, Query
from ..client.verifier import DISPUTABLE, FORCING, Received, Verifier, VerifierPolicy
from ..client.watchtower import Claim, Outcome, Watchtower
from ..crypto import Signer
from ..dispute.court import Court, Offence
from ..messages import Domain
from ..operator.journal import FillIssued, NoteIssued
from ..transparency import SignedHead
from .heads import follow_head
from .store import WorkingSetStore

#: Finding states in which the watchtower still has court work to do.
_OPEN = ("open", "forced")
#: SQLite page cache of one simulated client's store, KiB (the default is 2 MiB).
CACHE_KIB = 256


def is_disputable(received: Received) -> bool:
    """Whether an arrival showed something the watchtower takes to court."""
    return any(finding.kind in DISPUTABLE for finding in received.findings)


class SimClient:
    """The verifier and watchtower of one simulated client.

    Args:
        signer: the client's key: signs its orders, pays its court calls.
        domain: the court's EIP-712 domain.
        operator: the operator's address (the only valid signer of fills and notes).
        deadline_ms: the verifier's cancel deadline (force on-chain after it).
        court_max_pending_ms: the court's ``maxPendingMs`` (the verifier judges fills
            after a forced cancel by it).
        claim_retry_ms: how long a claim paid short (an empty bond) waits to be claimed
            again.
        heads_ms: the operator's head interval ``H`` (0: no heads; the client then has
            no :attr:`heads`).
        cancel_heads: how many heads a cancel may go unlogged before it is forced.
    """

    def __init__(
        self,
        signer: Signer,
        domain: Domain,
        operator: bytes,
        deadline_ms: int,
        court_max_pending_ms: int,
        claim_retry_ms: int,
        heads_ms: int = 0,
        cancel_heads: int = 10,
    ) -> None:
        self.signer = signer
        descriptor, self._path = tempfile.mkstemp(prefix="cancelnote-client-", suffix=".db")
        os.close(descriptor)
        self.store = WorkingSetStore.open(
            self._path, domain, operator, durable=False, cache_kib=CACHE_KIB
        )
        policy = VerifierPolicy(
            cancel_deadline_ms=deadline_ms,
            court_max_pending_ms=court_max_pending_ms,
            heads_ms=heads_ms or VerifierPolicy().heads_ms,
            cancel_heads=cancel_heads,
        )
        self.verifier = Verifier(self.store, policy)
        self.heads = HeadsVerifier(self.verifier) if heads_ms else None
        self._previous_head: SignedHead | None = None
        self.watchtower: Watchtower | None = None
        self._claim_retry_ms = claim_retry_ms
        self._claim_due: dict[int, int] = {}  # claimed finding id -> when to claim, ms

    def requote(self, cancel: CancelOrders | None, orders: list[PlaceOrder], now_ms: int) -> None:
        """Keep a requote's signed cancel (its deadline runs from now) and new orders (the
        court needs an order to force its cancel) before they leave, in one commit."""
        with self.store.transaction():
            if cancel is not None:
                self.store.add_cancel(cancel.tx, cancel.signature, now_ms)
            for placed in orders:
                self.store.add_order(placed.order, placed.signature, now_ms)

    def receive(self, entry: FillIssued | NoteIssued, now_ms: int) -> Received:
        """Verify and keep one pushed fill or note."""
        if isinstance(entry, FillIssued):
            fill = SignedFill(entry.fill, entry.signature, now_ms)
            return self.verifier.receive_fill(fill, now_ms)
        note = SignedNote(entry.note, entry.signature, now_ms)
        return self.verifier.receive_note(note, now_ms)

    def receive_head(
        self, signed: SignedHead, now_ms: int, ask: Callable[[Query], dict[str, Any]]
    ) -> list[Finding]:
        """Follow one pushed head (``ask``: the operator's answers to proof queries)."""
        assert self.heads is not None
        previous, self._previous_head = self._previous_head, signed
        return follow_head(self.heads, signed, previous, ask, now_ms)

    def court_due_ms(self, now_ms: int) -> int | None:
        """When this client next has work in court: ``now_ms`` while a disputable finding
        is open or a forced cancel unsettled; else when its first unpaid claim vests (a
        claim the court paid short is tried again ``claim_retry_ms`` later); ``None`` if
        it has none."""
        if any(f.kind in DISPUTABLE for status in _OPEN for f in self.store.findings(status)):
            return now_ms
        claimed = [f for f in self.store.findings("claimed") if f.kind in DISPUTABLE]
        if not claimed or self.watchtower is None:
            return None
        court = self.watchtower.court
        due = None
        for finding in claimed:
            assert finding.id is not None
            at = self._claim_due.get(finding.id)
            if at is None:
                offence = finding.offence
                if finding.kind in FORCING:
                    offence = Offence.DEFAULT
                assert offence is not None
                at = court.claim_of(finding.digest, offence).vests_at * 1_000
                self._claim_due[finding.id] = at
            due = at if due is None else min(due, at)
        return due

    def court_round(self, court: Court, now_ms: int) -> list[Outcome]:
        """One watchtower round on ``court`` (deadlines, plan, transactions)."""
        if self.watchtower is None:
            self.watchtower = Watchtower(
                self.verifier, court, self.signer, auto_withdraw=False, owners=[self.signer.address]
            )
        outcomes = self.watchtower.step(now_ms)
        for outcome in outcomes:  # paid short, or nothing to take yet: try again later
            action = outcome.action
            if isinstance(action, Claim) and outcome.outcome in ("claimed", "waiting"):
                self._claim_due[action.finding_id] = now_ms + self._claim_retry_ms
        return outcomes

    def forget(self, digest: bytes) -> None:
        """Nothing more can happen to order ``digest`` (the world closed its record)."""
        self.store.forget(digest)

    def close(self) -> None:
        """Close the store and delete its files."""
        self.store.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path + suffix)
