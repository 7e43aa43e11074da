"""The Python rules agree with the deployed court: it accepts a proof iff a predicate holds.

Every proof is dry-run with ``eth_call`` against one bonded court, so no example changes
the court's state (no "already proven") and the examples stay cheap. Messages are drawn
with small numbers, about one of two orders (or an unknown digest), labelled with the
order's sender or another, so every clause and every check is reached.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cancelnote.crypto import keccak
from cancelnote.dispute import rules
from cancelnote.dispute.chain import TransactionReverted
from cancelnote.dispute.court import DEAD_ADDRESS, Court, Offence
from cancelnote.dispute.inprocess import InProcessChain
from cancelnote.messages import CancellationNote, Fill, Order, make_sender

SETTINGS = settings(max_examples=60, deadline=None)
MAX_PENDING_MS = 3
OWNER = make_sender(b"\x01" * 20)


@attrs.frozen
class Setup:
    court: Court
    orders: tuple[Order, ...]  # [0] untouched, [1] answered (cap 2), [2] defaulted, [3] open
    requested_at: tuple[int, ...]  # of orders[1] and orders[2]

    def digest(self, index: int) -> bytes:
        return self.orders[index].digest(self.court.domain)


@pytest.fixture(scope="module")
def setup() -> Setup:
    chain = InProcessChain(accounts=4)
    deployer, operator, owner = chain.dev_accounts[:3]
    court = Court.deploy(
        chain,
        deployer,
        operator=operator.address,
        answer_window_s=60,
        penalty_wei=10,
        min_bond_wei=10,
        dispute_bond_wei=1,
        exit_delay_s=120,
        halt_on_default=False,
        max_pending_ms=MAX_PENDING_MS,
        claim_delay_s=100,
        burn_share_bps=2_500,
        burn_address=DEAD_ADDRESS,
    )
    court.deposit_bond(operator, 100)
    expiration = chain.timestamp() + 3_600
    sender = make_sender(owner.address)
    orders = tuple(Order(sender, 1, 3, amount, expiration, 7) for amount in (4, -4, 5))
    requested_at = []
    for order in orders[1:]:
        receipt = court.request_cancel(owner, order)
        requested_at.append(chain.block(receipt.block_number).timestamp)
    digest = orders[1].digest(court.domain)
    counted = Fill(digest, sender, 1, 2, 2, 3, 0)
    cap_note = CancellationNote(digest, sender, bytes(32), 2, 1, counted.struct_hash(), 0, 0, 0, 2)
    court.answer_cancel(owner, orders[1], cap_note, cap_note.sign(operator, court.domain))
    chain.increase_time(61)
    court.finalize(owner, orders[2])
    still_open = Order(sender, 1, 3, 3, expiration, 8)
    court.request_cancel(owner, still_open)  # every later call is a dry run: it stays open
    return Setup(court, (*orders, still_open), tuple(requested_at))


def accepts(court: Court, function: str, *args: object) -> bool:
    try:
        court.chain.call(court.address, court.encode_call(function, *args))
    except TransactionReverted:
        return False
    return True


def sign(court: Court, message: Fill | CancellationNote) -> bytes:
    return message.sign(court.chain.dev_accounts[1], court.domain)


small = st.integers(0, 5)
indexes = st.integers(0, 2)


@st.composite
def fills(draw: st.DrawFn, setup: Setup) -> Fill:
    digest = draw(st.sampled_from([*map(setup.digest, range(3)), b"\x11" * 32]))
    return Fill(
        order_digest=digest,
        sender=draw(st.sampled_from([OWNER, setup.orders[0].sender, make_sender(OWNER[:20], "x")])),
        seq=draw(st.integers(1, 8)),
        amount=draw(small),
        filled_total=draw(small),
        price_x18=draw(st.integers(1, 5)),
        timestamp_ms=draw(
            st.sampled_from(
                [0, 5, *(1000 * t + MAX_PENDING_MS + d for t in setup.requested_at for d in (0, 1))]
            )
        ),
    )


@st.composite
def notes(draw: st.DrawFn, setup: Setup, fill: Fill | None = None) -> CancellationNote:
    hashes = [bytes(32), keccak(b"unsigned")] + ([fill.struct_hash()] if fill else [])
    return CancellationNote(
        order_digest=draw(st.sampled_from([*map(setup.digest, range(3)), b"\x11" * 32])),
        sender=draw(st.sampled_from([setup.orders[0].sender, make_sender(OWNER[:20], "x")])),
        request_hash=bytes(32),
        filled_amount=draw(small),
        last_fill_seq=draw(st.integers(0, 8)),
        last_fill_hash=draw(st.sampled_from(hashes)),
        pending_amount=draw(st.integers(0, 2)),
        pending_until_ms=draw(small),
        received_at_ms=draw(small),
        seq=draw(st.integers(1, 8)),
    )


@SETTINGS
@given(data=st.data(), index=indexes)
def test_fill_after_note_predicate_is_the_courts(setup, data, index):
    fill = data.draw(fills(setup))
    note = data.draw(notes(setup, fill))
    if data.draw(st.booleans()):  # mostly about the order given, so clauses are reached
        note = attrs.evolve(note, order_digest=setup.digest(index))
        fill = attrs.evolve(fill, order_digest=setup.digest(index))
    expected = rules.fill_after_note(setup.digest(index), note, fill) is Offence.FILL_AFTER_NOTE
    args = (setup.orders[index], note, sign(setup.court, note), fill, sign(setup.court, fill))
    assert accepts(setup.court, "proveFillAfterNote", *args) == expected


@pytest.mark.parametrize(
    ("messages", "predicate", "function"),
    [
        (notes, rules.note_equivocation, "proveEquivocationNotes"),
        (fills, rules.fill_contradiction, "proveEquivocationFills"),
    ],
    ids=["notes", "fills"],
)
@SETTINGS
@given(data=st.data(), index=indexes)
def test_equivocation_predicates_are_the_courts(setup, data, index, messages, predicate, function):
    first, second = data.draw(messages(setup)), data.draw(messages(setup))
    if data.draw(st.booleans()):
        first = attrs.evolve(first, order_digest=setup.digest(index))
        second = attrs.evolve(second, order_digest=setup.digest(index))
    expected = predicate(setup.digest(index), first, second) is not None
    args = (setup.orders[index], first, sign(setup.court, first), second, sign(setup.court, second))
    assert accepts(setup.court, function, *args) == expected


@SETTINGS
@given(data=st.data(), index=indexes)
def test_malformed_fill_predicate_is_the_courts(setup, data, index):
    fill = data.draw(fills(setup))
    order = setup.orders[index]
    expected = rules.malformed_fill(order, setup.digest(index), fill) is Offence.MALFORMED_FILL
    assert accepts(setup.court, "proveMalformedFill", order, fill, sign(setup.court, fill)) == (
        expected
    )


@SETTINGS
@given(data=st.data(), amount=st.integers(-4, 4).filter(bool), price=st.integers(1, 5))
def test_bad_fill_predicate_is_the_courts(setup, data, amount, price):
    order = attrs.evolve(setup.orders[0], amount=amount, price_x18=price)
    digest = order.digest(setup.court.domain)
    fill = data.draw(fills(setup))
    if data.draw(st.booleans()):
        fill = attrs.evolve(fill, order_digest=digest)
    expected = rules.bad_fill(order, digest, fill) is Offence.BAD_FILL
    assert accepts(setup.court, "proveBadFill", order, fill, sign(setup.court, fill)) == expected


@SETTINGS
@given(data=st.data(), index=indexes)
def test_bad_note_predicate_is_the_courts(setup, data, index):
    note = data.draw(notes(setup))
    order = setup.orders[index]
    digest = setup.digest(index)
    if data.draw(st.booleans()):
        note = attrs.evolve(note, order_digest=digest)
    expected = rules.bad_note(order, digest, note, MAX_PENDING_MS) is Offence.NOTE_OUT_OF_BOUNDS
    assert accepts(setup.court, "proveBadNote", order, note, sign(setup.court, note)) == expected


@SETTINGS
@given(data=st.data())
def test_answer_refusal_reason_is_the_note_fault(setup, data):
    """``answerCancel`` refuses exactly the notes ``note_fault`` faults, with its reason."""
    order = setup.orders[3]  # requested last, still open
    note = attrs.evolve(data.draw(notes(setup)), order_digest=setup.digest(3))
    fault = rules.note_fault(order, note, MAX_PENDING_MS)
    try:
        setup.court.chain.call(
            setup.court.address,
            setup.court.encode_call("answerCancel", order, note, sign(setup.court, note)),
        )
    except TransactionReverted as exc:
        reason = exc.reason
    else:
        reason = None
    assert reason == fault


@SETTINGS
@given(data=st.data(), index=indexes)
def test_fill_above_cap_predicate_is_the_courts(setup, data, index):
    fill = attrs.evolve(data.draw(fills(setup)), order_digest=setup.digest(index))
    cap = setup.court.cancel_status(setup.digest(index))
    answered = cap.cap if index == 1 else None
    expected = rules.fill_above_cap(fill, answered) is Offence.FILL_AFTER_NOTE
    args = (setup.orders[index], fill, sign(setup.court, fill))
    assert accepts(setup.court, "proveFillAboveCap", *args) == expected


@SETTINGS
@given(data=st.data(), index=indexes)
def test_fill_after_request_predicate_is_the_courts(setup, data, index):
    fill = attrs.evolve(data.draw(fills(setup)), order_digest=setup.digest(index))
    requested_at = None if index == 0 else setup.requested_at[index - 1]
    assert setup.court.cancel_status(setup.digest(index)).requested_at == (requested_at or 0)
    expected = rules.fill_after_request(fill, requested_at, MAX_PENDING_MS) is not None
    args = (setup.orders[index], fill, sign(setup.court, fill))
    assert accepts(setup.court, "proveFillAfterRequest", *args) == expected


def test_fill_struct_hash_is_the_courts(setup):
    fill = Fill(setup.digest(0), OWNER, 4, 1, 2, 1, 0)
    assert setup.court.fill_struct_hash(fill) == fill.struct_hash()


def test_rule1_names_each_clause_of_the_specification(setup):
    digest = setup.digest(0)
    note = CancellationNote(digest, OWNER, bytes(32), 2, 3, keccak(b"x"), 0, 0, 0, 5)
    fill = Fill(digest, OWNER, 4, 1, 2, 1, 0)
    assert rules.rule1(fill, note) == "d"
    assert rules.rule1(attrs.evolve(fill, seq=3), note) == "f"
    with pytest.raises(ValueError, match="same order"):
        rules.rule1(Fill(b"\x22" * 32, OWNER, 4, 1, 2, 1, 0), note)
