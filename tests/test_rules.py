"""The Python rules agree with the deployed court: it accepts a proof iff a predicate holds.

Every proof is dry-run with ``eth_call`` against one bonded court, so no example changes
the court's state (no "already paid") and the examples stay cheap.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cancelnote.dispute import rules
from cancelnote.dispute.chain import TransactionReverted
from cancelnote.dispute.court import Court, Offence
from cancelnote.dispute.inprocess import InProcessChain
from cancelnote.messages import CancellationNote, Fill, Order, make_sender

SETTINGS = settings(max_examples=60, deadline=None)
DIGESTS = (b"\x11" * 32, b"\x22" * 32)


@pytest.fixture(scope="module")
def court() -> Court:
    chain = InProcessChain(accounts=4)
    deployer, operator = chain.dev_accounts[:2]
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
    )
    court.deposit_bond(operator, 100)
    return court


def accepts(court: Court, function: str, *args: object) -> bool:
    try:
        court.chain.call(court.address, court.encode_call(function, *args))
    except TransactionReverted:
        return False
    return True


def sign(court: Court, message: Fill | CancellationNote | Order, index: int = 1) -> bytes:
    return message.sign(court.chain.dev_accounts[index], court.domain)


small = st.integers(0, 5)
senders = st.sampled_from([make_sender(b"\x01" * 20), make_sender(b"\x01" * 20, "other")])
fills = st.builds(
    Fill,
    order_digest=st.sampled_from(DIGESTS),
    sender=senders,
    seq=st.integers(1, 8),
    amount=small,
    filled_total=small,
    price_x18=st.integers(1, 5),
    timestamp_ms=small,
)
notes = st.builds(
    CancellationNote,
    order_digest=st.sampled_from(DIGESTS),
    sender=senders,
    request_hash=st.just(bytes(32)),
    filled_amount=small,
    last_fill_seq=st.integers(0, 8),
    pending_amount=st.integers(0, 2),
    pending_until_ms=small,
    received_at_ms=small,
    seq=st.integers(1, 8),
)


@SETTINGS
@given(note=notes, fill=fills)
def test_fill_after_note_predicate_is_the_courts(court, note, fill):
    expected = rules.fill_after_note(note, fill) is Offence.FILL_AFTER_NOTE
    args = (note, sign(court, note), fill, sign(court, fill))
    assert accepts(court, "proveFillAfterNote", *args) == expected


@SETTINGS
@given(note1=notes, note2=notes)
def test_note_equivocation_predicate_is_the_courts(court, note1, note2):
    expected = rules.note_equivocation(note1, note2) is Offence.NOTE_EQUIVOCATION
    args = (note1, sign(court, note1), note2, sign(court, note2))
    assert accepts(court, "proveEquivocationNotes", *args) == expected


@SETTINGS
@given(fill1=fills, fill2=fills)
def test_fill_contradiction_predicate_is_the_courts(court, fill1, fill2):
    expected = rules.fill_contradiction(fill1, fill2) is not None
    args = (fill1, sign(court, fill1), fill2, sign(court, fill2))
    assert accepts(court, "proveEquivocationFills", *args) == expected


@SETTINGS
@given(fill=fills)
def test_malformed_fill_predicate_is_the_courts(court, fill):
    expected = rules.malformed_fill(fill) is Offence.MALFORMED_FILL
    assert accepts(court, "proveMalformedFill", fill, sign(court, fill)) == expected


@SETTINGS
@given(
    amount=st.integers(-4, 4).filter(bool),
    price=st.integers(1, 5),
    fill=fills,
    same_order=st.booleans(),
)
def test_bad_fill_predicate_is_the_courts(court, amount, price, fill, same_order):
    owner = court.chain.dev_accounts[2]
    order = Order(make_sender(owner.address), 1, price, amount, 2**40, 7)
    digest = order.digest(court.domain)
    if same_order:
        fill = attrs.evolve(fill, order_digest=digest)
    expected = rules.bad_fill(order, digest, fill) is Offence.BAD_FILL
    args = (order, sign(court, order, 2), fill, sign(court, fill))
    assert accepts(court, "proveBadFill", *args) == expected


def test_fill_above_cap_predicate_is_the_courts(court):
    owner = court.chain.dev_accounts[3]
    order = Order(make_sender(owner.address), 1, 5, -4, court.chain.timestamp() + 3_600, 9)
    digest = order.digest(court.domain)
    receipt = Fill(digest, order.sender, 1, 2, 2, 5, 0)
    court.request_cancel_with_fill(owner, order, receipt, sign(court, receipt))
    court.chain.increase_time(61)
    court.finalize(owner, digest)  # a default: the cap is the receipt's total, 2
    cap = court.cancel_status(digest).cap
    for total in range(5):
        fill = Fill(digest, order.sender, 5, 1, total, 5, 0)
        expected = rules.fill_above_cap(fill, cap) is Offence.FILL_AFTER_NOTE
        assert accepts(court, "proveFillAboveCap", fill, sign(court, fill)) == expected
    assert rules.fill_above_cap(Fill(digest, order.sender, 5, 1, 4, 5, 0), None) is None


def test_rule1_names_each_clause_of_the_specification():
    note = CancellationNote(DIGESTS[0], DIGESTS[1], bytes(32), 2, 3, 0, 0, 0, 5)
    fill = Fill(DIGESTS[0], DIGESTS[1], 4, 1, 2, 1, 0)
    assert rules.rule1(fill, note) == "d"
    with pytest.raises(ValueError, match="same order"):
        rules.rule1(Fill(DIGESTS[1], DIGESTS[1], 4, 1, 2, 1, 0), note)
