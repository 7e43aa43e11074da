"""The court against a plain-Python model of protocol §12-13 (hypothesis state machine).

Every step goes to the contract and to the model; the model predicts success or the exact
revert string, and after every step the bond, the claims and their windows, the credits,
the default count, the halt flag and the ether the court holds must agree. The ether is
all accounted for: bond + what vested windows set aside for owners and not yet credited
+ credits + dispute bonds held + burnt and not yet sent. Block time is the model's: each
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
from cancelnote.dispute.court import DEAD_ADDRESS, CancelState, Court, Offence
from cancelnote.dispute.inprocess import InProcessChain
from cancelnote.messages import CancellationNote, Fill, Order, make_sender

W = 100
PENALTY = 10
DISPUTE_BOND = 3
MIN_BOND = 25  # two and a half penalties: the bond runs short within a run
MAX_PENDING_MS = 5_000
CLAIM_DELAY = 40
BURN_BPS = 2_500
ORDER_SIZE = 6


@attrs.define
class Request:
    state: CancelState
    requested_at: int
    cap: int = 0
    refunded: bool = False


@attrs.define
class Window:
    count: int
    opened_at: int
    taken: int = 0
    closed: bool = False

    def owed(self) -> int:
        return self.count * PENALTY

    def entitlement(self) -> int:
        return (self.taken - self.taken * BURN_BPS // 10_000) // self.count


@attrs.define
class Claim:
    window: int
    paid: int = 0


small = st.integers(0, 6)
rarely = st.sampled_from([False, False, False, True])


class CourtMatchesModel(RuleBasedStateMachine):
    orders = Bundle("orders")
    requested = Bundle("requested")  # orders whose forced cancel was accepted
    claimed = Bundle("claimed")  # (order, owner, offence) with a claim filed

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
            max_pending_ms=MAX_PENDING_MS,
            claim_delay_s=CLAIM_DELAY,
            burn_share_bps=BURN_BPS,
            burn_address=DEAD_ADDRESS,
        )
        self.court.deposit_bond(self.operator, MIN_BOND)
        self.now = self.chain.timestamp()
        self.nonce = 0
        # the model
        self.bond = MIN_BOND
        self.credits = {signer.address: 0 for signer in self.chain.dev_accounts}
        self.requests: dict[bytes, Request] = {}
        self.claims: dict[tuple[bytes, Offence], Claim] = {}
        self.windows: dict[int, Window] = {}
        self.open_window = 1
        self.burnt = 0
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

    def sign(self, message: object) -> bytes:
        return message.sign(self.operator, self.court.domain)  # type: ignore[attr-defined]

    def digest(self, order: Order) -> bytes:
        return order.digest(self.court.domain)

    def status_reason(self, digest: bytes, wanted: CancelState) -> str | None:
        state = self.requests[digest].state if digest in self.requests else CancelState.NONE
        if state == wanted:
            return None
        return {
            CancelState.NONE: "court: cancel not requested",
            CancelState.REQUESTED: "court: cancel already requested",
        }.get(state, "court: cancel already settled")

    # --- the claims model -----------------------------------------------------------

    def file(self, digest: bytes, offence: Offence) -> None:
        """A claim into the open window, closing it first if its claim delay is over."""
        current = self.windows.get(self.open_window)
        if current is not None and self.now >= current.opened_at + CLAIM_DELAY:
            current.closed = True
            self.open_window += 1
            current = None
        if current is None:
            current = self.windows[self.open_window] = Window(0, self.now)
        current.count += 1
        self.claims[(digest, offence)] = Claim(self.open_window)

    def top_up(self, window: int) -> bool:
        found = self.windows.get(window)
        if found is None or self.now < found.opened_at + 2 * CLAIM_DELAY:
            return False
        if window == self.open_window:
            found.closed = True
            self.open_window += 1
        earlier = self.windows.get(window - 1)
        if earlier is not None and earlier.taken < earlier.owed():
            return False
        taken = min(self.bond, found.owed() - found.taken)
        if not taken:
            return False
        self.bond -= taken
        burnt_before = found.taken * BURN_BPS // 10_000
        found.taken += taken
        self.burnt += found.taken * BURN_BPS // 10_000 - burnt_before
        return True

    def outstanding(self) -> int:
        return sum(w.owed() - w.taken for w in self.windows.values())

    # --- rules ----------------------------------------------------------------------

    @rule(target=orders, owner=st.integers(0, 1))
    def place(self, owner: int) -> tuple[Order, Signer]:
        self.nonce += 1
        signer = self.clients[owner]
        order = Order(
            sender=make_sender(signer.address),
            product_id=1,
            price_x18=10**18,
            amount=ORDER_SIZE,
            expiration=2**40,
            nonce=self.nonce,
        )
        return order, signer

    @rule(target=requested, placed=orders)
    def request_cancel(self, placed: tuple[Order, Signer]) -> object:
        order, owner = placed
        digest = self.digest(order)
        expected = self.status_reason(digest, CancelState.NONE)
        self.step(expected, lambda: self.court.request_cancel(owner, order))
        if expected is not None:
            return multiple()
        self.requests[digest] = Request(CancelState.REQUESTED, self.now)
        return placed

    @rule(placed=requested, filled=small, pending=small, late=rarely, too_long=rarely)
    def answer(
        self, placed: tuple[Order, Signer], filled: int, pending: int, late: bool, too_long: bool
    ) -> None:
        order, _ = placed
        digest = self.digest(order)
        request = self.requests.get(digest)
        advance = W + 1 if late else 1
        expected = self.status_reason(digest, CancelState.REQUESTED)
        if expected is None and self.now + advance > request.requested_at + W:
            expected = "court: answer window closed"
        note = self.note(
            order, filled, pending, until=MAX_PENDING_MS + 1 if too_long else 5, last_seq=filled
        )
        if expected is None and filled + pending > ORDER_SIZE:
            expected = "court: note promises more than the order"
        elif expected is None and too_long:
            expected = "court: note pending for too long"
        self.step(
            expected,
            lambda: self.court.answer_cancel(self.clients[0], order, note, self.sign(note)),
            advance,
        )
        if expected is None:
            request.state, request.cap = CancelState.ANSWERED, filled + pending
            self.credits[self.operator.address] += DISPUTE_BOND

    @rule(target=claimed, placed=requested, wait=st.booleans())
    def finalize(self, placed: tuple[Order, Signer], wait: bool) -> object:
        order, owner = placed
        digest = self.digest(order)
        request = self.requests.get(digest)
        advance = W + 1 if wait else 1
        expected = self.status_reason(digest, CancelState.REQUESTED)
        if expected is None and self.now + advance <= request.requested_at + W:
            expected = "court: answer window still open"
        self.step(expected, lambda: self.court.finalize(self.clients[1], order), advance)
        if expected is not None:
            return multiple()
        request.state = CancelState.DEFAULTED
        self.defaults += 1
        self.file(digest, Offence.DEFAULT)
        return (order, owner, Offence.DEFAULT)

    @rule(
        target=claimed,
        placed=orders,
        note_fields=st.tuples(small, small, small, small, small),
        fill_fields=st.tuples(small, small, small),
    )
    def prove_fill_after_note(
        self, placed: tuple[Order, Signer], note_fields: tuple, fill_fields: tuple
    ) -> object:
        order, owner = placed
        filled, pending, until, last_seq, seq = note_fields
        fill_seq, total, fill_time = fill_fields
        note = self.note(order, filled, pending, until=until, last_seq=last_seq, seq=seq)
        fill = self.fill(order, fill_seq, total, fill_time)
        key = (self.digest(order), Offence.FILL_AFTER_NOTE)
        if not violates(note, fill):
            expected = "court: no fill after note"
        elif key in self.claims:
            expected = "court: offence already proven"
        else:
            expected = None
        self.step(
            expected,
            lambda: self.court.prove_fill_after_note(
                self.clients[1], order, note, self.sign(note), fill, self.sign(fill)
            ),
        )
        if expected is not None:
            return multiple()
        self.file(*key)
        return (order, owner, Offence.FILL_AFTER_NOTE)

    @rule(target=claimed, placed=requested, total=st.integers(0, 13), late_ms=st.booleans())
    def prove_fill_after_cancel(
        self, placed: tuple[Order, Signer], total: int, late_ms: bool
    ) -> object:
        """``proveFillAboveCap``, or ``proveFillAfterRequest`` with a fill at the bound or
        just after it."""
        order, owner = placed
        digest = self.digest(order)
        request = self.requests.get(digest)
        key = (digest, Offence.FILL_AFTER_NOTE)
        if late_ms:
            stamp = (request.requested_at * 1000 if request else 0) + MAX_PENDING_MS + 1
            fill = self.fill(order, 50, total, stamp)
            if request is None:
                expected = "court: cancel not requested"
            else:
                expected = "court: offence already proven" if key in self.claims else None
            call = self.court.prove_fill_after_request
        else:
            fill = self.fill(order, 50, total, 0)
            if request is None or request.state is not CancelState.ANSWERED:
                expected = "court: no cap recorded"
            elif total <= request.cap:
                expected = "court: fill within the cap"
            else:
                expected = "court: offence already proven" if key in self.claims else None
            call = self.court.prove_fill_above_cap
        self.step(expected, lambda: call(self.clients[0], order, fill, self.sign(fill)))
        if expected is not None:
            return multiple()
        self.file(*key)
        return (order, owner, Offence.FILL_AFTER_NOTE)

    @rule(claim=claimed, wait=rarely)
    def claim(self, claim: tuple[Order, Signer, Offence], wait: bool) -> None:
        """Claim (after waiting for it to vest, sometimes): the model runs at the block's
        time, so the block is mined at the model's ``now`` (``advance=0`` below)."""
        order, owner, offence = claim
        self.now += 2 * CLAIM_DELAY if wait else 1
        record = self.claims[(self.digest(order), offence)]
        window = self.windows[record.window]
        request = self.requests.get(self.digest(order))
        refund = DISPUTE_BOND if offence is Offence.DEFAULT and not request.refunded else 0
        before = attrs.evolve(window), self.bond, self.burnt
        gain = 0
        if self.now < window.opened_at + 2 * CLAIM_DELAY:
            expected = "court: claim not vested"
        else:
            self.top_up(record.window)
            gain = window.entitlement() - record.paid
            expected = None if gain or refund else "court: nothing to claim"
        self.step(expected, lambda: self.court.claim(self.clients[1], order, offence), 0)
        if expected is None:
            self.credits[owner.address] += gain + refund
            record.paid += gain
            if refund:
                request.refunded = True
        else:  # the transaction reverted: its settlement too
            self.restore(record.window, *before)

    @rule(window=st.integers(1, 4))
    def settle(self, window: int) -> None:
        self.now += 1
        found = self.windows.get(window)
        before = None if found is None else (attrs.evolve(found), self.bond, self.burnt)
        done = self.top_up(window)
        self.step(
            None if done else "court: nothing to settle",
            lambda: self.court.settle(self.clients[0], window),
            0,
        )
        if not done and before is not None:
            self.restore(window, *before)

    def restore(self, number: int, window: Window, bond: int, burnt: int) -> None:
        """Undo the model's part of a reverted transaction (a window it closed or paid)."""
        if self.windows[number].closed and not window.closed:
            self.open_window -= 1
        self.windows[number], self.bond, self.burnt = window, bond, burnt

    @rule(seconds=st.sampled_from([CLAIM_DELAY // 2, CLAIM_DELAY, 2 * CLAIM_DELAY]))
    def wait(self, seconds: int) -> None:
        self.now += seconds

    @rule(amount=st.sampled_from([PENALTY, MIN_BOND]))
    def deposit(self, amount: int) -> None:
        expected = None if self.bond + amount >= MIN_BOND else "court: bond below the minimum"
        self.step(expected, lambda: self.court.deposit_bond(self.clients[0], amount))
        if expected is None:
            self.bond += amount

    @rule()
    def send_burn(self) -> None:
        expected = None if self.burnt else "court: nothing to burn"
        self.step(expected, lambda: self.court.send_burn(self.clients[0]))
        self.burnt = 0

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
            order_digest=self.digest(order),
            sender=order.sender,
            request_hash=bytes(32),
            filled_amount=filled,
            last_fill_seq=last_seq if filled else 0,
            last_fill_hash=b"\x07" * 32 if filled else bytes(32),
            pending_amount=pending,
            pending_until_ms=until,
            received_at_ms=0,
            seq=seq,
        )

    def fill(self, order: Order, seq: int, total: int, time_ms: int) -> Fill:
        return Fill(
            order_digest=self.digest(order),
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
        assert self.court.claims_outstanding() == self.outstanding()
        assert self.court.burn_unsent() == self.burnt

    @invariant()
    def claims_and_windows_agree(self) -> None:
        for (digest, offence), record in self.claims.items():
            status = self.court.claim_of(digest, offence)
            window = self.windows[record.window]
            assert (status.window, status.paid) == (record.window, record.paid)
            assert status.vests_at == window.opened_at + 2 * CLAIM_DELAY
            assert status.entitled == (window.entitlement() if window.closed else 0)
        for number, window in self.windows.items():
            status = self.court.window_of(number)
            assert (status.count, status.taken, status.opened_at) == (
                window.count,
                window.taken,
                window.opened_at,
            )

    @invariant()
    def every_wei_is_accounted_for(self) -> None:
        """Ether held = bond + owed claims (set aside, not yet credited) + credits +
        dispute bonds held + burnt and not yet sent."""
        for address, credit in self.credits.items():
            assert self.court.credits(address) == credit
        set_aside = sum(
            w.taken - w.taken * BURN_BPS // 10_000 for w in self.windows.values()
        ) - sum(c.paid for c in self.claims.values())
        held = DISPUTE_BOND * sum(
            r.state is CancelState.REQUESTED
            or (r.state is CancelState.DEFAULTED and not r.refunded)
            for r in self.requests.values()
        )
        assert self.chain.balance(self.court.address) == (
            self.bond + set_aside + sum(self.credits.values()) + held + self.burnt
        )

    @invariant()
    def requests_agree(self) -> None:
        for digest, request in self.requests.items():
            status = self.court.cancel_status(digest)
            assert (status.state, status.requested_at, status.deadline, status.cap) == (
                request.state,
                request.requested_at,
                request.requested_at + W,
                request.cap if request.state is CancelState.ANSWERED else 0,
            )


CourtMatchesModel.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_court_matches_model = CourtMatchesModel.TestCase
