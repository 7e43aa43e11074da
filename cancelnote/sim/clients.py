"""The client seam: one client's real verifier and watchtower, driven by simulated time.

The simulator does not judge the operator itself. Each client keeps its evidence in an
:class:`~cancelnote.client.evidence.EvidenceStore`, hands every fill and note the
operator pushes to the real :class:`~cancelnote.client.verifier.Verifier`, and takes
findings to court with the real :class:`~cancelnote.client.watchtower.Watchtower`, whose
``step`` the world calls once per block slot while the client has something to do there.
The world only decides *when* a client looks at the chain (a finding arrived, a cancel
deadline passed, a case is open), never *what* it does.

Two things differ from a client on a socket, both outside what the lab measures: the
store is a temporary file without fsync (a run is disposable; durability is the
operator's and the real client's concern, tested elsewhere) with a small page cache, so
memory stays flat however long the run; and a pushed fill or note reaches the verifier
as the signed message it is (``receive_fill``/``receive_note``), not as JSON to parse
again. Every signature is still recovered and every rule checked; a simulated client
never reconnects, so it keeps no stream cursor.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from ..api import CancelOrders, PlaceOrder
from ..client.evidence import EvidenceStore, SignedFill, SignedNote
from ..client.verifier import DISPUTABLE, Received, Verifier, VerifierPolicy
from ..client.watchtower import Outcome, Watchtower
from ..crypto import Signer
from ..dispute.court import Court
from ..messages import Domain
from ..operator.journal import FillIssued, NoteIssued

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
    """

    def __init__(self, signer: Signer, domain: Domain, operator: bytes, deadline_ms: int) -> None:
        self.signer = signer
        descriptor, self._path = tempfile.mkstemp(prefix="cancelnote-client-", suffix=".db")
        os.close(descriptor)
        self.store = EvidenceStore.open(
            self._path, domain, operator, durable=False, cache_kib=CACHE_KIB
        )
        self.verifier = Verifier(self.store, VerifierPolicy(cancel_deadline_ms=deadline_ms))
        self.watchtower: Watchtower | None = None

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
        if type(entry) is FillIssued:
            fill = SignedFill(entry.fill, entry.signature, now_ms)
            return self.verifier.receive_fill(fill, now_ms)
        note = SignedNote(entry.note, entry.signature, now_ms)
        return self.verifier.receive_note(note, now_ms)

    def has_open_cases(self) -> bool:
        """Whether a disputable finding is still open or a forced cancel is unsettled."""
        return any(f.status in _OPEN and f.kind in DISPUTABLE for f in self.store.findings())

    def court_round(self, court: Court, now_ms: int) -> list[Outcome]:
        """One watchtower round on ``court`` (deadlines, plan, transactions)."""
        if self.watchtower is None:
            self.watchtower = Watchtower(self.verifier, court, self.signer, auto_withdraw=False)
        return self.watchtower.step(now_ms)

    def close(self) -> None:
        """Close the store and delete its files."""
        self.store.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path + suffix)
