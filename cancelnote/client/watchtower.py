"""The watchtower: turns findings into court calls and follows them to the payout.

Two halves, so that the simulator can drive the decisions without a chain:

* :func:`plan` is the **core**: given the findings, what the court says about the orders
  concerned (:class:`CourtView`) and which orders have a note by now, it returns the
  :data:`Action` list to take. It does no I/O and reads no clock.
* :class:`Watchtower` is the **runner**: it reads the court (events since its cursor,
  forced-cancel states, credits), asks :func:`plan`, executes each action with the
  :class:`~cancelnote.dispute.court.Court` binding, and records every call, its outcome
  and every payout in the evidence store.

Finding states: ``open`` → ``claimed`` (the proof was mined: the court filed a claim for
the order's owner) or ``rejected`` (it reverted, e.g. ``court: offence already proven``:
someone proved it first, and the claim is the owner's all the same) → ``paid`` once the
claim vested and its window paid it in full (a claim paid short stays ``claimed`` and is
claimed again after the next deposit). An unanswered cancel goes ``open`` → ``forced``
(requested on-chain) → ``claimed`` (a default: one penalty) or ``answered`` (the operator
answered in time: no payout, but the court now holds the order's cap and request time),
or ``resolved`` when the note arrived before the watchtower forced it.

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
from cancelnote.dispute.court import (
    CancelState,
    CancelStatus,
    ClaimStatus,
    Court,
    Offence,
    WindowStatus,
)
from cancelnote.messages import (
    CANCEL_TYPES,
    CancellationNote,
    Fill,
    Match,
    Order,
    signature_from_wire,
)
from cancelnote.transparency import LeafProof, SignedHead, path_from_wire

from .evidence import EvidenceStore, Finding
from .verifier import DISPUTABLE, FORCING, Kind, Verifier

LOGGER = logging.getLogger("cancelnote.client.watchtower")

#: The store cursor holding the next block whose court events are to be read.
EVENTS_CURSOR = "court_events_block"
#: Most blocks one ``get_logs`` asks for (public nodes refuse very wide ranges).
MAX_BLOCK_RANGE = 5_000
#: Seconds between two rounds of :meth:`Watchtower.run`.
POLL_S = 1.0
#: Finding states in which the watchtower still has court work (see the module docstring).
_ACTIVE = ("open", "forced", "claimed")
#: The court's events about an owner: each indexes the owner's address (``owner``, or
#: ``account`` for a withdrawal) as its first topic, and every event that names an order
#: digest is one of them. A watchtower asks the chain for these, filtered by its owners.
OWNER_EVENTS = (
    "Slashed",
    "ClaimPaid",
    "CancelRequested",
    "CancelAnswered",
    "CancelDefaulted",
    "Withdrawal",
)


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
    """Force the cancel of our ``order`` on-chain (it takes effect at the request's block)."""

    finding_id: int
    digest: bytes
    order: Order


@attrs.frozen
class Finalize:
    """Settle a forced cancel of ``order`` whose answer window passed unanswered (a default)."""

    finding_id: int
    digest: bytes
    order: Order


@attrs.frozen
class Claim:
    """Have a vested claim for ``offence`` on ``order`` credited to its owner."""

    finding_id: int
    digest: bytes
    order: Order
    offence: Offence


@attrs.frozen
class Resolve:
    """Close a finding (about order ``digest``) without a court call (``status``: why)."""

    finding_id: int
    status: str
    digest: bytes


@attrs.frozen
class Withdraw:
    """Take ``amount`` wei credited to us by the court."""

    amount: int


Action = Prove | ForceCancel | Finalize | Claim | Resolve | Withdraw


@attrs.frozen
class ClaimView:
    """A filed claim and its window, as the court reports them."""

    claim: ClaimStatus
    window: WindowStatus

    def settled(self, penalty: int) -> bool:
        """Whether the window took all it owes and the owner was credited its share."""
        window = self.window
        return window.taken == window.count * penalty and self.claim.paid == self.claim.entitled


@attrs.frozen
class CourtView:
    """What the court says, as the runner read it for one round.

    Attributes:
        chain_time_s: the latest block's timestamp.
        cancels: the forced-cancel state of each order a finding concerns.
        credits: wei the court holds for the watchtower's account.
        account: the watchtower's address (it may force only its own orders).
        claims: the claim of each ``claimed`` finding, by (digest, offence).
        penalty: the court's penalty (what one claim is owed in full).
        fork_proven: whether the HeadsCourt holds a fork proven (it takes one per court).
    """

    chain_time_s: int
    cancels: Mapping[bytes, CancelStatus]
    credits: int
    account: bytes
    claims: Mapping[tuple[bytes, Offence], ClaimView] = attrs.Factory(dict)
    penalty: int = 0
    fork_proven: bool = False


def _signed_fill(wire: Mapping[str, Any]) -> tuple[Fill, bytes]:
    return Fill.from_wire(wire["fill"]), signature_from_wire(wire["signature"])


def _signed_note(wire: Mapping[str, Any]) -> tuple[CancellationNote, bytes]:
    return CancellationNote.from_wire(wire["note"]), signature_from_wire(wire["signature"])


#: The court call proving each kind of finding, and the messages it takes after the order.
_PROOFS: dict[Kind, tuple[str, str]] = {
    Kind.FILL_AFTER_NOTE: ("prove_fill_after_note", "nf"),
    Kind.NOTE_EQUIVOCATION: ("prove_equivocation_notes", "nn"),
    Kind.FILL_EQUIVOCATION: ("prove_equivocation_fills", "ff"),
    Kind.FILLS_OUT_OF_ORDER: ("prove_equivocation_fills", "ff"),
    Kind.MALFORMED_FILL: ("prove_malformed_fill", "f"),
    Kind.BAD_FILL: ("prove_bad_fill", "f"),
    Kind.FILL_ABOVE_CAP: ("prove_fill_above_cap", "f"),
    Kind.FILL_AFTER_REQUEST: ("prove_fill_after_request", "f"),
    Kind.NOTE_OUT_OF_BOUNDS: ("prove_bad_note", "n"),
}


def _order_of(finding: Finding) -> Order:
    return Order.from_wire(finding.evidence["order"]["order"])


def _head(wire: Mapping[str, Any]) -> tuple[Any, bytes]:
    signed = SignedHead.from_wire(wire)
    return signed.head, signed.signature


def _leaf(wire: Mapping[str, Any]) -> LeafProof:
    return LeafProof.from_wire(wire)


def _heads_proof(kind: Kind, ev: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The HeadsCourt call (``heads.`` + its binding's method) and its arguments after the
    sender, from a journal-heads finding's evidence (:mod:`.heads`)."""
    order = Order.from_wire(ev["order"]["order"])
    if kind is Kind.INCONSISTENT_HEADS:
        (first, first_sig), (second, second_sig) = (_head(h) for h in ev["heads"])
        proof = path_from_wire("proof", ev["proof"])
        return "heads.prove_inconsistent_heads", (
            order,
            first,
            first_sig,
            second,
            second_sig,
            proof,
        )
    if kind is Kind.BACKDATED:
        fill, fill_sig = _signed_fill(ev["fills"][0])
        head, head_sig = _head(ev["heads"][0])
        return "heads.prove_backdated", (order, fill, fill_sig, head, head_sig)
    head, head_sig = _head(ev["head"])
    if kind is Kind.FALSE_MATCH:
        fill, _ = _signed_fill(ev["fills"][0])
        named = _leaf(ev["named"]) if "named" in ev else _leaf(ev["fill"])  # ignored then
        match = (
            Match.from_wire(ev["match"]) if "match" in ev else Match(bytes(32), bytes(32), 0, 0, 0)
        )
        return "heads.prove_false_match", (
            order,
            fill,
            head,
            head_sig,
            _leaf(ev["fill"]),
            named,
            match,
        )
    if kind is Kind.MATCH_REUSED:
        (fill1, _), (fill2, _) = (_signed_fill(f) for f in ev["fills"])
        return "heads.prove_match_reused", (
            order,
            fill1,
            fill2,
            head,
            head_sig,
            _leaf(ev["leaf1"]),
            _leaf(ev["leaf2"]),
        )
    assert kind is Kind.FILL_AFTER_CANCEL
    cancellation = CANCEL_TYPES[ev["cancel"]["kind"]].from_wire(ev["cancel"]["tx"])
    return "heads.prove_match_after_cancel", (
        order,
        cancellation,
        Match.from_wire(ev["match"]),
        head,
        head_sig,
        _leaf(ev["order_leaf"]),
        _leaf(ev["cancel_leaf"]),
        _leaf(ev["match_leaf"]),
    )


#: The journal-heads kinds, proven in the HeadsCourt.
_HEADS_KINDS = frozenset(
    {
        Kind.INCONSISTENT_HEADS,
        Kind.BACKDATED,
        Kind.FALSE_MATCH,
        Kind.MATCH_REUSED,
        Kind.FILL_AFTER_CANCEL,
    }
)


def proof_of(finding: Finding) -> Prove:
    """The court call that proves ``finding``: the order, then the signed messages in the
    order the call takes them (its evidence holds every one)."""
    assert finding.id is not None and finding.offence is not None
    kind = Kind(finding.kind)
    if kind in _HEADS_KINDS:
        function, arguments = _heads_proof(kind, finding.evidence)
        return Prove(finding.id, finding.digest, finding.offence, function, arguments)
    if kind not in _PROOFS:
        raise ValueError(f"{kind} is not proven by a fraud proof")
    function, shape = _PROOFS[kind]
    ev = finding.evidence
    notes, fills = iter(ev.get("notes", ())), iter(ev.get("fills", ()))
    args: list[Any] = [_order_of(finding)]
    for item in shape:
        args.extend(_signed_note(next(notes)) if item == "n" else _signed_fill(next(fills)))
    return Prove(finding.id, finding.digest, finding.offence, function, tuple(args))


def plan(findings: Iterable[Finding], view: CourtView, noted: frozenset[bytes]) -> list[Action]:
    """The actions one round should take (the sans-I/O core).

    Args:
        findings: findings in states ``open``, ``forced`` and ``claimed``.
        view: the court's state this round.
        noted: orders that have a note in the store by now.
    """
    actions: list[Action] = []
    # The court pays an offence once per order (a fork once per court): a finding whose
    # offence is claimed already is closed, one proven this round waits for the next.
    # Likewise a cancel is forced, finalized and its default claimed once per order,
    # whichever findings (a missed deadline, a missing leaf) ask for it.
    proving: set[tuple[bytes, Offence]] = set()
    fork_proving = False
    forcing: set[bytes] = set()
    defaulted: set[bytes] = set()
    for finding in findings:
        if finding.kind not in DISPUTABLE or finding.id is None:
            continue
        if finding.status == "claimed":
            offence = finding.offence if finding.kind not in FORCING else None
            key = (finding.digest, offence or Offence.DEFAULT)
            claim = view.claims.get(key)
            if (
                claim is not None
                and view.chain_time_s >= claim.claim.vests_at
                and not claim.settled(view.penalty)
            ):
                actions.append(Claim(finding.id, finding.digest, _order_of(finding), key[1]))
            continue
        if finding.kind not in FORCING:
            if finding.status != "open" or finding.offence is None:
                continue  # (a fork with no order of ours to name: recorded only)
            key = (finding.digest, finding.offence)
            fork = finding.kind == Kind.INCONSISTENT_HEADS
            if key in view.claims or (fork and view.fork_proven):  # by another finding, or party
                actions.append(Resolve(finding.id, "resolved", finding.digest))
            elif key not in proving and not (fork and fork_proving):
                proving.add(key)
                fork_proving |= fork
                actions.append(proof_of(finding))
            continue
        status = view.cancels.get(finding.digest)
        state = CancelState.NONE if status is None else status.state
        if state is CancelState.ANSWERED:
            actions.append(Resolve(finding.id, "answered", finding.digest))
        elif state is CancelState.DEFAULTED:
            claimed = (finding.digest, Offence.DEFAULT) in view.claims
            if claimed or finding.digest in defaulted:  # claimed for another finding
                actions.append(Resolve(finding.id, "resolved", finding.digest))
            else:
                defaulted.add(finding.digest)
                actions.append(Resolve(finding.id, "claimed", finding.digest))
        elif finding.digest in forcing:
            continue
        elif state is CancelState.REQUESTED:
            assert status is not None
            if view.chain_time_s >= status.deadline:
                forcing.add(finding.digest)
                actions.append(Finalize(finding.id, finding.digest, _order_of(finding)))
        elif finding.status == "open":
            if finding.digest in noted:
                actions.append(Resolve(finding.id, "resolved", finding.digest))
                continue
            order = _order_of(finding)
            if order.sender[:20] != view.account:
                continue  # only the owner (or its signed cancel, relayed) may force
            forcing.add(finding.digest)
            actions.append(ForceCancel(finding.id, finding.digest, order))
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
    """Wei credited by the court to the owner by this call (a claim paid)."""
    owed: int = 0
    """Wei a claim this call filed is owed (a proof or a default)."""
    refund: int = 0
    """Of ``paid``, the owner's dispute bond returned with a default's claim."""


class Watchtower:
    """Executes :func:`plan` on a court for the evidence of one store.

    Args:
        verifier: the verifier of the store (it judges fills against court caps).
        court: the court binding (any :class:`~cancelnote.dispute.chain.Chain`).
        signer: pays gas and owns the orders it may force-cancel.
        auto_withdraw: take credited payouts at once.
        owners: the addresses whose orders the store holds, if the caller knows them
            (a client's own: its signer's); ``None`` reads them from the store each round.
    """

    def __init__(
        self,
        verifier: Verifier,
        court: Court,
        signer: Signer,
        *,
        auto_withdraw: bool = True,
        owners: Iterable[bytes] | None = None,
    ) -> None:
        self.verifier = verifier
        self.store: EvidenceStore = verifier.store
        self.court = court
        self.signer = signer
        self.auto_withdraw = auto_withdraw
        self.owners = None if owners is None else frozenset(owners)
        self._court_penalty: int | None = None
        self._owner_events = tuple(court.topic(name) for name in OWNER_EVENTS)

    def step(self, now_ms: int) -> list[Outcome]:
        """One round: read the court, check deadlines, plan, act. Blocking (chain calls)."""
        self.sync_events(now_ms)
        self.verifier.check_deadlines(now_ms)
        findings = sorted(
            (f for status in _ACTIVE for f in self.store.findings(status) if f.kind in DISPUTABLE),
            key=lambda f: f.id or 0,
        )
        digests = {f.digest for f in findings if f.kind in FORCING}
        claims = {
            (f.digest, f.offence or Offence.DEFAULT) for f in findings if f.status == "claimed"
        }
        view = CourtView(
            chain_time_s=self.court.chain.timestamp(),
            cancels={d: self.court.cancel_status(d) for d in digests},
            credits=self.court.credits(self.signer.address) if self.auto_withdraw else 0,
            account=self.signer.address,
            claims={key: self._claim_view(*key) for key in claims},
            penalty=self._penalty() if claims else 0,
            fork_proven=any(
                f.kind == Kind.INCONSISTENT_HEADS and f.status == "open" for f in findings
            )
            and self.court.heads.fork_proven(),
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

        Asks the chain only for the :data:`OWNER_EVENTS` whose owner (their first
        indexed topic) is ours or an owner of an order in the store (``eth_getLogs``
        with topics), so it decodes what concerns them and nothing else: an event about
        one of our orders names its owner, the order's. Reads at most
        :data:`MAX_BLOCK_RANGE` blocks per ``get_logs`` (public nodes refuse wide ranges)
        and moves the cursor after each range is kept, so a crash re-reads at most one
        range (the inserts are idempotent).
        """
        head = self.court.chain.block_number()
        me = self.signer.address
        owners = self.owners
        if owners is None:
            owners = frozenset(o.order.sender[:20] for o in self.store.orders())
        topics = (self._owner_events, sorted(bytes(12) + a for a in owners | {me}))
        start = self.store.cursor(EVENTS_CURSOR)
        while start <= head:
            end = min(head, start + MAX_BLOCK_RANGE - 1)
            capped: set[bytes] = set()
            logs = self.court.chain.get_logs(self.court.address, start, end, topics)
            with self.store.transaction():  # the store's lock held for SQLite work only
                for log in logs:
                    event = self.court.decode_log(log)
                    digest = event.args.get("digest")
                    mine = me in (event.args.get("owner"), event.args.get("account"))
                    if mine or (digest is not None and self.store.order(digest) is not None):
                        self.store.add_chain_event(
                            log.block_number,
                            log.log_index,
                            log.transaction_hash,
                            event.name,
                            event.args,
                        )
                        if digest is not None and event.name in (
                            "CancelRequested",
                            "CancelAnswered",
                        ):
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
        if isinstance(action, Claim):
            waiting = self._would_revert(action)
            if waiting is not None:  # nothing to take yet (an empty bond): try next round
                return Outcome(action, "waiting", waiting)
        try:
            receipt = self._transact(action)
        except TransactionReverted as exc:
            return self._record(action, "rejected", exc.reason, exc.receipt, now_ms)
        events = self.court.events(receipt)
        owed = sum(e.args["penalty"] for e in events if e.name == "Slashed")
        paid = sum(e.args["paid"] + e.args["refund"] for e in events if e.name == "ClaimPaid")
        refund = sum(e.args["refund"] for e in events if e.name == "ClaimPaid")
        if isinstance(action, Claim):
            outcome = (
                "paid"
                if self._claim_view(action.digest, action.offence).settled(self._penalty())
                else "claimed"
            )
            detail = f"credited {paid} wei to the owner"
        else:
            outcome = {Prove: "claimed", ForceCancel: "forced", Finalize: "claimed"}.get(
                type(action), "withdrawn"
            )
            detail = f"claim filed: {owed} wei owed to the owner" if owed else ""
        return self._record(action, outcome, detail, receipt, now_ms, paid, owed, refund)

    def _would_revert(self, action: Claim) -> str | None:
        """The reason a claim would revert now (a dry run), or ``None``."""
        data = self.court.encode_call("claim", action.order, int(action.offence))
        try:
            self.court.chain.call(self.court.address, data, sender=self.signer.address)
        except TransactionReverted as exc:
            return exc.reason
        return None

    def _transact(self, action: Action) -> Receipt:
        court, signer = self.court, self.signer
        if isinstance(action, Prove):
            target, _, name = action.function.rpartition(".")
            binding = court.heads if target == "heads" else court
            return getattr(binding, name)(signer, *action.args)
        if isinstance(action, ForceCancel):
            return court.request_cancel(signer, action.order)
        if isinstance(action, Finalize):
            return court.finalize(signer, action.order)
        if isinstance(action, Claim):
            return court.claim(signer, action.order, action.offence)
        assert isinstance(action, Withdraw)
        return court.withdraw(signer)

    def _claim_view(self, digest: bytes, offence: Offence) -> ClaimView:
        claim = self.court.claim_of(digest, offence)
        return ClaimView(claim, self.court.window_of(claim.window))

    def _penalty(self) -> int:
        if self._court_penalty is None:
            self._court_penalty = self.court.penalty()
        return self._court_penalty

    def _record(
        self,
        action: Action,
        outcome: str,
        detail: str,
        receipt: Receipt | None,
        now_ms: int,
        paid: int = 0,
        owed: int = 0,
        refund: int = 0,
    ) -> Outcome:
        tx_hash = None if receipt is None else receipt.transaction_hash
        finding_id = getattr(action, "finding_id", None)
        digest = getattr(action, "digest", bytes(32))
        name = type(action).__name__
        if isinstance(action, Prove):
            name = action.function.removeprefix("heads.")
        self.store.add_dispute(finding_id, name, digest, tx_hash, outcome, detail, now_ms)
        # A finalize refused (the window is still open on this block) is retried next round,
        # and so is a claim refused (it stays filed).
        retried = isinstance(action, Finalize | Claim) and outcome == "rejected"
        if finding_id is not None and not retried:
            self.store.set_finding_status(finding_id, outcome)
        if isinstance(action, Withdraw) and tx_hash is not None:
            self.store.add_payout(tx_hash, self.signer.address, action.amount, now_ms)
        LOGGER.info(
            "court_call",
            extra={"fields": {"action": name, "outcome": outcome, "detail": detail}},
        )
        return Outcome(action, outcome, detail, tx_hash, paid, owed, refund)
