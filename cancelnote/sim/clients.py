"""The client seam: one client's real verifier and watchtower, driven by simulated time.

The simulator does not judge the operator itself. Each client keeps its evidence in an
:class:`~cancelnote.client.evidence.EvidenceStore` (in memory: a run is disposable),
hands every fill and note the operator pushes to the real
:class:`~cancelnote.client.verifier.Verifier`, and takes findings to court with the
real :class:`~cancelnote.client.watchtower.Watchtower`, whose ``step`` the world calls
once per block slot while the client has something to do there. The world only decides
*when* a client looks at the chain (a finding arrived, a cancel deadline passed, a case
is open), never *what* it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import CancelOrders, PlaceOrder
from ..client.evidence import EvidenceStore
from ..client.verifier import DISPUTABLE, Received, Verifier, VerifierPolicy
from ..client.watchtower import Outcome, Watchtower
from ..crypto import Signer
from ..dispute.court import Court
from ..messages import Domain

#: Finding states in which the watchtower still has court work to do.
_OPEN = ("open", "forced")


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
        self.store = EvidenceStore.open(":memory:", domain, operator)
        self.verifier = Verifier(self.store, VerifierPolicy(cancel_deadline_ms=deadline_ms))
        self.watchtower: Watchtower | None = None

    def placed(self, request: PlaceOrder, now_ms: int) -> None:
        """Keep our signed order (the court needs it to force a cancel)."""
        self.store.add_order(request.order, request.signature, now_ms)

    def cancel_sent(self, request: CancelOrders, now_ms: int) -> None:
        """Keep our signed cancel before it leaves (its deadline runs from now)."""
        self.store.add_cancel(request.tx, request.signature, now_ms)

    def receive(self, wire: Mapping[str, Any], now_ms: int) -> Received:
        """Verify and keep one pushed fill or note."""
        return self.verifier.receive_wire(wire, now_ms, stream=True)

    def has_open_cases(self) -> bool:
        """Whether a disputable finding is still open or a forced cancel is unsettled."""
        return any(f.status in _OPEN and f.kind in DISPUTABLE for f in self.store.findings())

    def court_round(self, court: Court, now_ms: int) -> list[Outcome]:
        """One watchtower round on ``court`` (deadlines, plan, transactions)."""
        if self.watchtower is None:
            self.watchtower = Watchtower(self.verifier, court, self.signer, auto_withdraw=False)
        return self.watchtower.step(now_ms)

    def close(self) -> None:
        self.store.close()
