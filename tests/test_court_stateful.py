"""The court against a plain-Python model of protocol §12-13 (hypothesis state machine).

Every step goes to the contract and to the model; the model predicts success or the exact
revert string, and after every step the bond, the credits, the default count, the halt
flag and the ether the court holds must agree. Block time is the model's: each
transaction is mined at the timestamp the model chose.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from conftest import violates
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from cancelnote.crypto import Signer
from cancelnote.dispute.chain import TransactionReverted
from cancelnote.dispute.court import CancelState, Court
from cancelnote.dispute.inprocess import InProcessChain
from cancelnote.messages import CancellationNote, Fill, Order, make_sender

W = 100
PENALTY = 10
DISPUTE_BOND = 3
MIN_BOND = 25  # two and a half penalties: the bond runs short within a run


@attrs.define
class Request:
    state: CancelState
    deadline: int
    cap: int = 0


small = st.integers(0, 6)
rarely = st.sampled_from([False, False, False, True])


class CourtMatchesModel(RuleBasedStateMachine):
    orders = Bundle("orders")
    requested = Bundle("requested")  # orders whose forced cancel was accepted

    @initialize()
    def deploy(self) -> None:
        self.chain = InProcessChain(accounts=4)
        self.operator, deployer, *self.clients = self.chain.dev_accounts
        self.court = Court.deploy(
            self.chain,
            deployer,
            operator=self.operator.address,
            answer_window_s=W,
            penalty_wei=PENALTY,
            min_bond_wei=MIN_BOND,
            dispute_bond_wei=DISPUTE_BOND,
            exit_delay_s=10 * W,
            halt_on_default=True,
        )
        self.court.deposit_bond(self.operator, MIN_BOND)
        self.now = self.chain.timestamp()
        self.nonce = 0
        # the model
        self.bond = MIN_BOND
        self.credits = {signer.address: 0 for signer in self.chain.dev_accounts}
        self.requests: dict[bytes, Request] = {}
        self.paid: set[bytes] = set()  # digests whose fill-after-note offence was paid
        self.defaults = 0

    # --- driving both ---------------------------------------------------------------

    def step(self, expected: str | None, transact: Callable[[], object], advance: int = 1) -> None:
        """Mine ``transact`` at now + ``advance``; it must succeed or revert with ``expected``."""
        self.now += advance
        self.chain.set_next_block_timestamp(self.now)
        try:
            transact()
        except TransactionReverted as exc:
            assert exc.reason == expected
        else:
            assert expected is None, f"expected a revert: {expected}"

    def slash(self, victim: bytes) -> None:
        paid = min(PENALTY, self.bond)
        self.bond -= paid
        self.credits[victim] += paid

    def sign(self, message: object) -> bytes:
        return message.sign(self.operator, self.court.domain)

    def status_reason(self, digest: bytes, wanted: CancelState) -> str | None:
        state = self.requests[digest].state if digest in self.requests else CancelState.NONE
        if state == wanted:
            return None
        return {
            CancelState.NONE: "court: cancel not requested",
            CancelState.REQUESTED: "court: cancel already requested",
        }.get(state, "court: cancel already settled")

    # --- rules ----------------------------------------------------------------------

    @rule(target=orders, owner=st.integers(0, 1))
    def place(self, owner: int) -> tuple[Order, Signer]:
        self.nonce += 1
        signer = self.clients[owner]
        order = Order(
            sender=make_sender(signer.address),
            product_id=1,
            price_x18=10**18,
            amount=10**6,
            expiration=2**40,
            nonce=self.nonce,
        )
        return order, signer

    @rule(target=requested, placed=orders)
    def request_cancel(self, placed: tuple[Order, Signer]) -> object:
        order, owner = placed
        digest = order.digest(self.court.domain)
        expected = self.status_reason(digest, CancelState.NONE)
        self.step(expected, lambda: self.court.request_cancel(owner, order))
        if expected is not None:
            return multiple()
        self.requests[digest] = Request(CancelState.REQUESTED, self.now + W)
        return placed

    @rule(placed=requested, filled=small, pending=small, late=rarely)
    def answer(self, placed: tuple[Order, Signer], filled: int, pending: int, late: bool) -> None:
        order, _ = placed
        digest = order.digest(self.court.domain)
        request = self.requests.get(digest)
        advance = W + 1 if late else 1
        expected = self.status_reason(digest, CancelState.REQUESTED)
        if expected is None and self.now + advance > request.deadline:
            expected = "court: answer window closed"
        note = self.note(order, filled, pending)
        self.step(
            expected,
            lambda: self.court.answer_cancel(self.clients[0], note, self.sign(note)),
            advance,
        )
        if expected is None:
            request.state, request.cap = CancelState.ANSWERED, filled + pending
            self.credits[self.operator.address] += DISPUTE_BOND

    @rule(placed=requested, wait=st.booleans())
    def finalize(self, placed: tuple[Order, Signer], wait: bool) -> None:
        order, owner = placed
        digest = order.digest(self.court.domain)
        request = self.requests.get(digest)
        advance = W + 1 if wait else 1
        expected = self.status_reason(digest, CancelState.REQUESTED)
        if expected is None and self.now + advance <= request.deadline:
            expected = "court: answer window still open"
        self.step(expected, lambda: self.court.finalize(self.clients[1], digest), advance)
        if expected is None:
            request.state = CancelState.DEFAULTED
            self.defaults += 1
            self.credits[owner.address] += DISPUTE_BOND
            self.slash(owner.address)

    @rule(
        placed=orders,
        note_fields=st.tuples(small, small, small, small, small, small),
        fill_fields=st.tuples(small, small, small),
    )
    def prove_fill_after_note(
        self, placed: tuple[Order, Signer], note_fields: tuple, fill_fields: tuple
    ) -> None:
        order, owner = placed
        filled, pending, until, last_seq, seq, _ = note_fields
        fill_seq, total, fill_time = fill_fields
        note = self.note(order, filled, pending, until=until, last_seq=last_seq, seq=seq)
        fill = self.fill(order, fill_seq, total, fill_time)
        digest = note.order_digest
        if not violates(note, fill):
            expected = "court: no fill after note"
        elif digest in self.paid:
            expected = "court: offence already paid"
        else:
            expected = None
        self.step(
            expected,
            lambda: self.court.prove_fill_after_note(
                self.clients[1], note, self.sign(note), fill, self.sign(fill)
            ),
        )
        if expected is None:
            self.paid.add(digest)
            self.slash(owner.address)

    @rule(placed=requested, total=st.integers(0, 13))
    def prove_fill_above_cap(self, placed: tuple[Order, Signer], total: int) -> None:
        order, owner = placed
        fill = self.fill(order, 50, total, 0)
        digest = fill.order_digest
        request = self.requests.get(digest)
        if request is None or request.state not in (CancelState.ANSWERED, CancelState.DEFAULTED):
            expected = "court: no cap recorded"
        elif total <= request.cap:
            expected = "court: fill within the cap"
        elif digest in self.paid:
            expected = "court: offence already paid"
        else:
            expected = None
        self.step(
            expected,
            lambda: self.court.prove_fill_above_cap(self.clients[0], fill, self.sign(fill)),
        )
        if expected is None:
            self.paid.add(digest)
            self.slash(owner.address)

    @precondition(lambda self: any(self.credits.values()))
    @rule(who=st.integers(0, 2))
    def withdraw(self, who: int) -> None:
        signer = [self.operator, *self.clients][who]
        expected = None if self.credits[signer.address] else "court: nothing to withdraw"
        self.step(expected, lambda: self.court.withdraw(signer))
        self.credits[signer.address] = 0

    # --- messages -------------------------------------------------------------------

    def note(
        self,
        order: Order,
        filled: int,
        pending: int,
        *,
        until: int = 5,
        last_seq: int = 0,
        seq: int = 10,
    ) -> CancellationNote:
        return CancellationNote(
            order_digest=order.digest(self.court.domain),
            sender=order.sender,
            request_hash=bytes(32),
            filled_amount=filled,
            last_fill_seq=last_seq,
            pending_amount=pending,
            pending_until_ms=until,
            received_at_ms=0,
            seq=seq,
        )

    def fill(self, order: Order, seq: int, total: int, time_ms: int) -> Fill:
        return Fill(
            order_digest=order.digest(self.court.domain),
            sender=order.sender,
            seq=seq,
            amount=1,
            filled_total=total,
            price_x18=10**18,
            timestamp_ms=time_ms,
        )

    # --- invariants -----------------------------------------------------------------

    @invariant()
    def operator_state_agrees(self) -> None:
        assert self.court.bond() == self.bond
        assert self.court.defaults() == self.defaults
        assert self.court.halted() == (self.defaults > 0)

    @invariant()
    def credits_agree_and_the_ether_is_all_there(self) -> None:
        for address, credit in self.credits.items():
            assert self.court.credits(address) == credit
        held = DISPUTE_BOND * sum(r.state == CancelState.REQUESTED for r in self.requests.values())
        assert self.chain.balance(self.court.address) == (
            self.bond + sum(self.credits.values()) + held
        )

    @invariant()
    def requests_agree(self) -> None:
        for digest, request in self.requests.items():
            status = self.court.cancel_status(digest)
            assert (status.state, status.deadline, status.cap) == (
                request.state,
                request.deadline,
                request.cap,
            )


CourtMatchesModel.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_court_matches_model = CourtMatchesModel.TestCase
