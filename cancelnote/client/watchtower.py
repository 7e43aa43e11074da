"""The watchtower: turns findings into court calls and follows them to the payout.

Two halves, so that the simulator can drive the decisions without a chain:

* :func:`plan` is the **core**: given the findings, what the court says about the orders
  concerned (:class:`CourtView`) and which orders have a note by now, it returns the
  :data:`Action` list to take. It does no I/O and reads no clock.
* :class:`Watchtower` is the **runner**: it reads the court (events since its cursor,
  forced-cancel states, credits), asks :func:`plan`, executes each action with the
  :class:`~cancelnote.dispute.court.Court` binding, and records every call, its outcome
  and every payout in the evidence store.

Finding states: ``open`` → ``disputed`` (a proof was mined) → ``won`` (the court slashed)
or ``rejected`` (it reverted, e.g. ``court: offence already paid``); an unanswered cancel
goes ``open`` → ``forced`` (requested on-chain) → ``won`` (default, paid) or ``answered``
(the operator answered in time: no payout, but the court now holds the order's cap), or
``resolved`` when the note arrived before the watchtower forced it.

No false positives: only findings whose :class:`~cancelnote.dispute.court.Offence` comes
from :mod:`cancelnote.dispute.rules` are proven, and a cancel is forced only after the
client's deadline with no note, while the order is live and not filled. A third-party
watchtower (its key is not the owner's) proves offences (the court pays the victim named
in the evidence, never the submitter) but cannot force a cancel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from cancelnote.crypto import Signer
from cancelnote.dispute.chain import Receipt, TransactionReverted
from cancelnote.dispute.court import CancelState, CancelStatus, Court, Offence
from cancelnote.messages import CancellationNote, Fill, Order, signature_from_wire

from .evidence import EvidenceStore, Finding
from .verifier import DISPUTABLE, Kind, Verifier

LOGGER = logging.getLogger("cancelnote.client.watchtower")

#: The store cursor holding the next block whose court events are to be read.
EVENTS_CURSOR = "court_events_block"
#: Most blocks one ``get_logs`` asks for (public nodes refuse very wide ranges).
MAX_BLOCK_RANGE = 5_000
#: Seconds between two rounds of :meth:`Watchtower.run`.
POLL_S = 1.0


# ---------------------------------------------------------------------------------------
# Actions: what the core asks the runner to do.


@attrs.frozen
class Prove:
    """Submit a fraud proof: call ``function`` of the court binding with ``args``."""

    finding_id: int
    digest: bytes
    offence: Offence
    function: str
    args: tuple[Any, ...]


@attrs.frozen
class ForceCancel:
    """Force the cancel of our ``order`` on-chain, with our latest fill ``receipt`` if any."""

    finding_id: int
    digest: bytes
    order: Order
    receipt: tuple[Fill, bytes] | None


@attrs.frozen
class Finalize:
    """Settle a forced cancel whose answer window passed unanswered (a default)."""

    finding_id: int
    digest: bytes


@attrs.frozen
class Resolve:
    """Close a finding without a court call (``status``: why)."""

    finding_id: int
    status: str


@attrs.frozen
class Withdraw:
    """Take ``amount`` wei credited to us by the court."""

    amount: int


Action = Prove | ForceCancel | Finalize | Resolve | Withdraw


@attrs.frozen
class CourtView:
    """What the court says, as the runner read it for one round.

    Attributes:
        chain_time_s: the latest block's timestamp.
        cancels: the forced-cancel state of each order a finding concerns.
        credits: wei the court holds for the watchtower's account.
        account: the watchtower's address (it may force only its own orders).
    """

    chain_time_s: int
    cancels: Mapping[bytes, CancelStatus]
    credits: int
    account: bytes


def _signed_fill(wire: Mapping[str, Any]) -> tuple[Fill, bytes]:
    return Fill.from_wire(wire["fill"]), signature_from_wire(wire["signature"])


def _signed_note(wire: Mapping[str, Any]) -> tuple[CancellationNote, bytes]:
    return CancellationNote.from_wire(wire["note"]), signature_from_wire(wire["signature"])


def proof_of(finding: Finding) -> Prove:
    """The court call that proves ``finding`` (its evidence holds every message needed)."""
    assert finding.id is not None and finding.offence is not None
    ev = finding.evidence
    kind = Kind(finding.kind)
    args: tuple[Any, ...]
    if kind is Kind.FILL_AFTER_NOTE:
        function, args = (
            "prove_fill_after_note",
            (
                *_signed_note(ev["notes"][0]),
                *_signed_fill(ev["fills"][0]),
            ),
        )
    elif kind is Kind.NOTE_EQUIVOCATION:
        function = "prove_equivocation_notes"
        args = (*_signed_note(ev["notes"][0]), *_signed_note(ev["notes"][1]))
    elif kind in (Kind.FILL_EQUIVOCATION, Kind.FILLS_OUT_OF_ORDER):
        function = "prove_equivocation_fills"
        args = (*_signed_fill(ev["fills"][0]), *_signed_fill(ev["fills"][1]))
    elif kind is Kind.MALFORMED_FILL:
        function, args = "prove_malformed_fill", _signed_fill(ev["fills"][0])
    elif kind is Kind.BAD_FILL:
        order = Order.from_wire(ev["order"]["order"])
        order_sig = signature_from_wire(ev["order"]["signature"])
        function, args = "prove_bad_fill", (order, order_sig, *_signed_fill(ev["fills"][0]))
    elif kind is Kind.FILL_ABOVE_CAP:
        function, args = "prove_fill_above_cap", _signed_fill(ev["fills"][0])
    else:
        raise ValueError(f"{kind} is not proven by a fraud proof")
    return Prove(finding.id, finding.digest, finding.offence, function, args)


def plan(findings: Iterable[Finding], view: CourtView, noted: frozenset[bytes]) -> list[Action]:
    """The actions one round should take (the sans-I/O core).

    Args:
        findings: findings in states ``open`` and ``forced``.
        view: the court's state this round.
        noted: orders that have a note in the store by now.
    """
    actions: list[Action] = []
    for finding in findings:
        if finding.kind not in DISPUTABLE or finding.id is None:
            continue
        if finding.kind != Kind.UNANSWERED_CANCEL:
            if finding.status == "open":
                actions.append(proof_of(finding))
            continue
        status = view.cancels.get(finding.digest)
        state = CancelState.NONE if status is None else status.state
        if state is CancelState.ANSWERED:
            actions.append(Resolve(finding.id, "answered"))
        elif state is CancelState.DEFAULTED:
            actions.append(Resolve(finding.id, "won"))
        elif state is CancelState.REQUESTED:
            assert status is not None
            if view.chain_time_s >= status.deadline:
                actions.append(Finalize(finding.id, finding.digest))
        elif finding.status == "open":
            if finding.digest in noted:
                actions.append(Resolve(finding.id, "resolved"))
                continue
            order = Order.from_wire(finding.evidence["order"]["order"])
            if order.sender[:20] != view.account:
                continue  # only the owner (or its signed cancel, relayed) may force
            fills = finding.evidence.get("fills") or []
            receipt = _signed_fill(fills[-1]) if fills else None
            actions.append(ForceCancel(finding.id, finding.digest, order, receipt))
    if view.credits:
        actions.append(Withdraw(view.credits))
    return actions


# ---------------------------------------------------------------------------------------
# The runner.


@attrs.frozen
class Outcome:
    """What one executed action did (for logs, the CLI and tests)."""

    action: Action
    outcome: str
    detail: str
    tx_hash: bytes | None = None
    paid: int = 0


class Watchtower:
    """Executes :func:`plan` on a court for the evidence of one store.

    Args:
        verifier: the verifier of the store (it judges fills against court caps).
        court: the court binding (any :class:`~cancelnote.dispute.chain.Chain`).
        signer: pays gas and owns the orders it may force-cancel.
        auto_withdraw: take credited payouts at once.
    """

    def __init__(
        self, verifier: Verifier, court: Court, signer: Signer, *, auto_withdraw: bool = True
    ) -> None:
        self.verifier = verifier
        self.store: EvidenceStore = verifier.store
        self.court = court
        self.signer = signer
        self.auto_withdraw = auto_withdraw

    def step(self, now_ms: int) -> list[Outcome]:
        """One round: read the court, check deadlines, plan, act. Blocking (chain calls)."""
        self.sync_events(now_ms)
        self.verifier.check_deadlines(now_ms)
        findings = [
            f
            for f in self.store.findings()
            if f.status in ("open", "forced") and f.kind in DISPUTABLE
        ]
        digests = {f.digest for f in findings if f.kind == Kind.UNANSWERED_CANCEL}
        view = CourtView(
            chain_time_s=self.court.chain.timestamp(),
            cancels={d: self.court.cancel_status(d) for d in digests},
            credits=self.court.credits(self.signer.address) if self.auto_withdraw else 0,
            account=self.signer.address,
        )
        noted = frozenset(d for d in digests if self.store.notes(d))
        outcomes = [self._execute(action, now_ms) for action in plan(findings, view, noted)]
        if any(o.tx_hash is not None for o in outcomes):
            self.sync_events(now_ms)
        return outcomes

    async def run(self, clock: Callable[[], int], poll_s: float = POLL_S) -> None:
        """Step every ``poll_s`` seconds until cancelled (chain calls in a worker thread)."""
        while True:
            await trio.to_thread.run_sync(self.step, clock())
            await trio.sleep(poll_s)

    def sync_events(self, now_ms: int) -> None:
        """Keep the court's events about our orders or our account, from the cursor on.

        Reads at most :data:`MAX_BLOCK_RANGE` blocks per ``get_logs`` (public nodes refuse
        wide ranges) and moves the cursor after each range is kept, so a crash re-reads
        at most one range (the inserts are idempotent).
        """
        head = self.court.chain.block_number()
        ours = {o.digest for o in self.store.orders()}
        start = self.store.cursor(EVENTS_CURSOR)
        while start <= head:
            end = min(head, start + MAX_BLOCK_RANGE - 1)
            capped = set()
            with self.store.transaction():
                for log in self.court.chain.get_logs(self.court.address, start, end):
                    event = self.court.decode_log(log)
                    digest = event.args.get("digest")
                    mine = self.signer.address in (
                        event.args.get("victim"),
                        event.args.get("account"),
                    )
                    if digest in ours or mine:
                        self.store.add_chain_event(
                            log.block_number,
                            log.log_index,
                            log.transaction_hash,
                            event.name,
                            event.args,
                        )
                        if event.name in ("CancelAnswered", "CancelDefaulted"):
                            capped.add(digest)
                for digest in capped:
                    self.verifier.check_cap(digest, now_ms)
                self.store.set_cursor(EVENTS_CURSOR, end + 1)
            start = end + 1

    # --- executing ------------------------------------------------------------------------

    def _execute(self, action: Action, now_ms: int) -> Outcome:
        if isinstance(action, Resolve):
            self.store.set_finding_status(action.finding_id, action.status)
            return Outcome(action, action.status, "closed without a court call")
        try:
            receipt = self._transact(action)
        except TransactionReverted as exc:
            return self._record(action, "rejected", exc.reason, exc.receipt, now_ms)
        slashed = [e for e in self.court.events(receipt) if e.name == "Slashed"]
        paid = sum(e.args["paid"] for e in slashed)
        outcome = {Prove: "won", ForceCancel: "forced", Finalize: "won", Withdraw: "withdrawn"}[
            type(action)
        ]
        detail = f"slashed: {paid} wei to the victim" if slashed else ""
        return self._record(action, outcome, detail, receipt, now_ms, paid)

    def _transact(self, action: Action) -> Receipt:
        court, signer = self.court, self.signer
        if isinstance(action, Prove):
            return getattr(court, action.function)(signer, *action.args)
        if isinstance(action, ForceCancel):
            if action.receipt is None:
                return court.request_cancel(signer, action.order)
            return court.request_cancel_with_fill(signer, action.order, *action.receipt)
        if isinstance(action, Finalize):
            return court.finalize(signer, action.digest)
        assert isinstance(action, Withdraw)
        return court.withdraw(signer)

    def _record(
        self,
        action: Action,
        outcome: str,
        detail: str,
        receipt: Receipt | None,
        now_ms: int,
        paid: int = 0,
    ) -> Outcome:
        tx_hash = None if receipt is None else receipt.transaction_hash
        finding_id = getattr(action, "finding_id", None)
        digest = getattr(action, "digest", bytes(32))
        name = type(action).__name__
        if isinstance(action, Prove):
            name = action.function
        self.store.add_dispute(finding_id, name, digest, tx_hash, outcome, detail, now_ms)
        # A finalize refused (the window is still open on this block) is retried next round.
        if finding_id is not None and not (isinstance(action, Finalize) and outcome == "rejected"):
            self.store.set_finding_status(finding_id, outcome)
        if isinstance(action, Withdraw) and receipt is not None:
            self.store.add_payout(tx_hash, self.signer.address, action.amount, now_ms)
        LOGGER.info(
            "court_call",
            extra={"fields": {"action": name, "outcome": outcome, "detail": detail}},
        )
        return Outcome(action, outcome, detail, tx_hash, paid)
