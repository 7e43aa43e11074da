"""The court's fraud proofs, each both ways: an offence is slashed once and pays its victim,
and no pair of messages from an honest history is slashable (hypothesis)."""

from __future__ import annotations

import attrs
import pytest
from conftest import PENALTY_WEI, PRICE, World, violates
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cancelnote.dispute.chain import TransactionReverted
from cancelnote.dispute.court import Offence
from cancelnote.messages import CancellationNote, Fill, Order, make_sender

# A note for an order that had filled 3 by seq 5, with 2 in flight until t = 10 s.
NOTE = {
    "seq": 10,
    "filled_amount": 3,
    "last_fill_seq": 5,
    "pending_amount": 2,
    "pending_until_ms": 10_000,
}


def _slashed(world: World, receipt: object) -> list[dict]:
    return [e.args for e in world.court.events(receipt) if e.name == "Slashed"]


# --- rule 1: fill after note ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fill_kw", "note_kw"),
    [
        pytest.param(
            {"seq": 12, "amount": 3, "filled_total": 6}, {}, id="a-total-above-filled-plus-pending"
        ),
        pytest.param(
            {"seq": 12, "amount": 1, "filled_total": 3},
            {"pending_amount": 0},
            id="b-later-fill-nothing-pending",
        ),
        pytest.param(
            {"seq": 12, "amount": 1, "filled_total": 4, "timestamp_ms": 10_001},
            {},
            id="c-later-fill-after-pending-deadline",
        ),
        pytest.param(
            {"seq": 7, "amount": 1, "filled_total": 3}, {}, id="d-uncounted-fill-before-note"
        ),
        pytest.param(
            {"seq": 5, "amount": 1, "filled_total": 4}, {}, id="e-counted-fill-above-filled"
        ),
    ],
)
def test_fill_after_note_is_slashed_and_pays_the_owner(world, fill_kw, note_kw):
    order, _ = world.order(world.alice)
    note, note_sig = world.note(order, **(NOTE | note_kw))
    fill, fill_sig = world.fill(order, **fill_kw)
    receipt = world.court.prove_fill_after_note(world.bob, note, note_sig, fill, fill_sig)
    assert _slashed(world, receipt) == [
        {
            "digest": note.order_digest,
            "offence": Offence.FILL_AFTER_NOTE,
            "victim": world.alice.address,
            "paid": PENALTY_WEI,
        }
    ]
    assert world.court.credits(world.alice.address) == PENALTY_WEI
    assert world.court.credits(world.bob.address) == 0  # the submitter gains nothing
    assert world.court.offence_paid(note.order_digest, Offence.FILL_AFTER_NOTE)


@pytest.mark.parametrize(
    "fill_kw",
    [
        pytest.param(
            {"seq": 12, "amount": 2, "filled_total": 5, "timestamp_ms": 10_000},
            id="pending-fill-at-the-limits",
        ),
        pytest.param({"seq": 5, "amount": 1, "filled_total": 3}, id="the-last-counted-fill"),
        pytest.param({"seq": 3, "amount": 2, "filled_total": 2}, id="an-earlier-counted-fill"),
    ],
)
def test_fill_the_note_allows_is_not_slashable(world, reverts, fill_kw):
    order, _ = world.order(world.alice)
    note, note_sig = world.note(order, **NOTE)
    fill, fill_sig = world.fill(order, **fill_kw)
    with reverts("court: no fill after note"):
        world.court.prove_fill_after_note(world.bob, note, note_sig, fill, fill_sig)


def test_fill_after_note_is_paid_once_per_digest(world, reverts):
    order, _ = world.order(world.alice)
    note, note_sig = world.note(order, **NOTE)
    fill1, sig1 = world.fill(order, seq=12, amount=3, filled_total=6)
    fill2, sig2 = world.fill(order, seq=7, amount=1, filled_total=3)
    world.court.prove_fill_after_note(world.bob, note, note_sig, fill1, sig1)
    with reverts("court: offence already paid"):
        world.court.prove_fill_after_note(world.bob, note, note_sig, fill1, sig1)
    with reverts("court: offence already paid"):  # another fill, the same offence
        world.court.prove_fill_after_note(world.alice, note, note_sig, fill2, sig2)
    assert world.court.credits(world.alice.address) == PENALTY_WEI


def test_fill_after_note_needs_one_digest_and_one_sender(world, reverts):
    order, _ = world.order(world.alice)
    other, _ = world.order(world.alice, nonce=2)
    note, note_sig = world.note(order, **NOTE)
    fill, fill_sig = world.fill(other, seq=12, amount=3, filled_total=6)
    with reverts("court: digests differ"):
        world.court.prove_fill_after_note(world.bob, note, note_sig, fill, fill_sig)
    forged = attrs.evolve(
        fill, order_digest=note.order_digest, sender=make_sender(world.bob.address)
    )
    with reverts("court: senders differ"):
        world.court.prove_fill_after_note(
            world.bob, note, note_sig, forged, forged.sign(world.operator, world.court.domain)
        )


# --- rule 2: equivocation -------------------------------------------------------------


def test_two_different_notes_for_one_digest_are_slashed_once(world, reverts):
    order, _ = world.order(world.alice)
    note1, sig1 = world.note(order, **NOTE)
    note2, sig2 = world.note(order, **(NOTE | {"filled_amount": 2}))
    receipt = world.court.prove_equivocation_notes(world.bob, note1, sig1, note2, sig2)
    assert [(e["offence"], e["victim"]) for e in _slashed(world, receipt)] == [
        (Offence.NOTE_EQUIVOCATION, world.alice.address)
    ]
    with reverts("court: offence already paid"):
        world.court.prove_equivocation_notes(world.bob, note2, sig2, note1, sig1)


def test_the_same_note_twice_is_not_equivocation(world, reverts):
    order, _ = world.order(world.alice)
    note, sig = world.note(order, **NOTE)
    with reverts("court: notes are identical"):
        world.court.prove_equivocation_notes(world.bob, note, sig, note, sig)


def test_two_different_fills_with_one_seq_are_slashed_once_per_seq(world, reverts):
    order_a, _ = world.order(world.alice)
    order_b, _ = world.order(world.bob)
    fill_a, sig_a = world.fill(order_a, seq=4, amount=1, filled_total=1)
    fill_b, sig_b = world.fill(order_b, seq=4, amount=1, filled_total=1)
    receipt = world.court.prove_equivocation_fills(world.bob, fill_b, sig_b, fill_a, sig_a)
    assert [(e["offence"], e["victim"]) for e in _slashed(world, receipt)] == [
        (Offence.FILL_EQUIVOCATION, world.bob.address)
    ]
    assert world.court.fill_seq_paid(4)
    with reverts("court: offence already paid"):  # the other owner: still one offence
        world.court.prove_equivocation_fills(world.alice, fill_a, sig_a, fill_b, sig_b)


def test_the_same_fill_twice_is_not_equivocation(world, reverts):
    order, _ = world.order(world.alice)
    fill, sig = world.fill(order, seq=4, amount=1, filled_total=1)
    with reverts("court: fills are identical"):
        world.court.prove_equivocation_fills(world.bob, fill, sig, fill, sig)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param((4, 1, 5), (6, 1, 5), id="total-does-not-grow"),
        pytest.param((4, 1, 5), (6, 2, 6), id="total-grows-less-than-the-amount"),
        pytest.param((4, 1, 5), (6, 1, 4), id="total-shrinks"),
        pytest.param((4, 1, 5), (6, 0, 5), id="total-same-with-zero-amount"),
    ],
)
def test_fills_whose_total_does_not_grow_with_seq_are_slashed(world, reverts, first, second):
    order, _ = world.order(world.alice)
    (s1, a1, t1), (s2, a2, t2) = first, second
    fill1, sig1 = world.fill(order, seq=s1, amount=a1, filled_total=t1)
    fill2, sig2 = world.fill(order, seq=s2, amount=a2, filled_total=t2)
    with reverts("court: fills not in seq order"):
        world.court.prove_equivocation_fills(world.bob, fill2, sig2, fill1, sig1)
    receipt = world.court.prove_equivocation_fills(world.bob, fill1, sig1, fill2, sig2)
    assert [e["offence"] for e in _slashed(world, receipt)] == [Offence.FILLS_OUT_OF_ORDER]
    with reverts("court: offence already paid"):
        world.court.prove_equivocation_fills(world.bob, fill1, sig1, fill2, sig2)


def test_fills_of_different_orders_with_different_seqs_are_not_equivocation(world, reverts):
    fill1, sig1 = world.fill(world.order(world.alice)[0], seq=4, amount=1, filled_total=5)
    fill2, sig2 = world.fill(world.order(world.bob)[0], seq=6, amount=1, filled_total=1)
    with reverts("court: digests differ"):
        world.court.prove_equivocation_fills(world.bob, fill1, sig1, fill2, sig2)


@pytest.mark.parametrize(
    ("amount", "filled_total"), [(0, 3), (4, 3)], ids=["zero-amount", "total-below-amount"]
)
def test_a_self_contradictory_fill_is_slashed_once(world, reverts, amount, filled_total):
    order, _ = world.order(world.alice)
    fill, sig = world.fill(order, seq=4, amount=amount, filled_total=filled_total)
    receipt = world.court.prove_malformed_fill(world.bob, fill, sig)
    assert [e["offence"] for e in _slashed(world, receipt)] == [Offence.MALFORMED_FILL]
    with reverts("court: offence already paid"):
        world.court.prove_malformed_fill(world.bob, fill, sig)


def test_a_well_formed_fill_is_not_malformed(world, reverts):
    fill, sig = world.fill(world.order(world.alice)[0], seq=4, amount=3, filled_total=3)
    with reverts("court: fill is well formed"):
        world.court.prove_malformed_fill(world.bob, fill, sig)


# --- rule 4: price and size -----------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "fill_kw"),
    [
        pytest.param(10, {"price_x18": PRICE + 1}, id="buy-above-limit"),
        pytest.param(-10, {"price_x18": PRICE - 1}, id="sell-below-limit"),
        pytest.param(10, {"filled_total": 11}, id="buy-overfilled"),
        pytest.param(-10, {"filled_total": 11}, id="sell-overfilled"),
    ],
)
def test_a_fill_beyond_the_orders_terms_is_slashed_once(world, reverts, amount, fill_kw):
    order, order_sig = world.order(world.alice, amount=amount)
    fill, sig = world.fill(order, **({"seq": 4, "amount": 1, "filled_total": 1} | fill_kw))
    receipt = world.court.prove_bad_fill(world.bob, order, order_sig, fill, sig)
    assert [(e["offence"], e["victim"]) for e in _slashed(world, receipt)] == [
        (Offence.BAD_FILL, world.alice.address)
    ]
    with reverts("court: offence already paid"):
        world.court.prove_bad_fill(world.bob, order, order_sig, fill, sig)


@pytest.mark.parametrize(
    ("amount", "price"),
    [(10, PRICE), (10, PRICE - 1), (-10, PRICE), (-10, PRICE + 1)],
    ids=["buy-at-limit", "buy-below-limit", "sell-at-limit", "sell-above-limit"],
)
def test_a_fill_within_the_orders_terms_is_not_slashable(world, reverts, amount, price):
    order, order_sig = world.order(world.alice, amount=amount)
    fill, sig = world.fill(order, seq=4, amount=10, filled_total=10, price_x18=price)
    with reverts("court: fill within the order's terms"):
        world.court.prove_bad_fill(world.bob, order, order_sig, fill, sig)


def test_bad_fill_needs_the_owners_order_signature(world, reverts):
    order, _ = world.order(world.alice)
    forged_sig = order.sign(world.bob, world.court.domain)
    fill, sig = world.fill(order, seq=4, amount=1, filled_total=1, price_x18=PRICE + 1)
    with reverts("court: order not signed by its owner"):
        world.court.prove_bad_fill(world.bob, order, forged_sig, fill, sig)


def test_bad_fill_needs_a_fill_of_that_order(world, reverts):
    order, order_sig = world.order(world.alice)
    fill, sig = world.fill(world.order(world.alice, nonce=2)[0], seq=4, amount=1, filled_total=1)
    with reverts("court: fill is for another order"):
        world.court.prove_bad_fill(world.bob, order, order_sig, fill, sig)


# --- honest histories are never slashable ---------------------------------------------


@attrs.frozen
class History:
    """An order, its fills in seq order and the note an honest operator would sign."""

    order: Order
    fills: tuple[Fill, ...]
    note: CancellationNote


@st.composite
def honest_histories(draw: st.DrawFn, world: World) -> History:
    """Fills and a note as the operator's journal would record them (protocol §9, §10).

    Fills before the note are counted in it; fills after it settle what the note declared
    pending, no more and no later (often exactly at the limits); seqs are global, so they
    have gaps (other orders' entries) and the note takes one of its own.
    """
    side = draw(st.sampled_from([1, -1]))
    amounts = draw(st.lists(st.integers(1, 10**6), max_size=6))
    counted = draw(st.integers(0, len(amounts)))
    gaps = draw(st.lists(st.integers(1, 3), min_size=len(amounts) + 1, max_size=len(amounts) + 1))
    steps = draw(st.lists(st.integers(0, 2_000), min_size=len(amounts), max_size=len(amounts)))
    seqs = [sum(gaps[: i + 1]) for i in range(len(gaps))]  # one more: the note's
    note_seq = seqs.pop(counted)
    times = [sum(steps[: i + 1]) for i in range(len(steps))]
    order = Order(
        sender=make_sender(world.alice.address, draw(st.sampled_from(["default", "mm"]))),
        product_id=1,
        price_x18=PRICE,
        amount=side * (sum(amounts) + draw(st.integers(0 if amounts else 1, 10**6))),
        expiration=2**40,
        nonce=draw(st.integers(0, 2**64 - 1)),
    )
    digest = order.digest(world.court.domain)
    fills = tuple(
        Fill(
            order_digest=digest,
            sender=order.sender,
            seq=seq,
            amount=amount,
            filled_total=sum(amounts[: i + 1]),
            price_x18=PRICE - side * draw(st.integers(0, 10**18)),  # at or better than the limit
            timestamp_ms=time_ms,
        )
        for i, (seq, amount, time_ms) in enumerate(zip(seqs, amounts, times, strict=True))
    )
    pending = fills[counted:]
    declared = sum(amounts[counted:]) + draw(st.integers(0, 10))
    if not pending:
        declared = draw(st.sampled_from([0, declared]))  # in flight but lapsed, or nothing
    received_at = times[counted - 1] if counted else 0
    note = CancellationNote(
        order_digest=digest,
        sender=order.sender,
        request_hash=bytes(32),
        filled_amount=sum(amounts[:counted]),
        last_fill_seq=fills[counted - 1].seq if counted else 0,
        pending_amount=declared,
        pending_until_ms=max([received_at, *(f.timestamp_ms for f in pending)])
        + draw(st.integers(0, 1_000))
        if declared
        else 0,
        received_at_ms=received_at,
        seq=note_seq,
    )
    return History(order, fills, note)


@pytest.fixture(scope="module")
def shared_world(new_world):
    return new_world()


def _dry_run_reason(world: World, function: str, *args: object) -> str:
    """The revert reason of a read-only call (the proof would revert: nothing is mined)."""
    try:
        world.chain.call(world.court.address, world.court.encode_call(function, *args))
    except TransactionReverted as exc:
        return exc.reason
    return "accepted"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_pair_from_an_honest_history_is_slashable(shared_world, data):
    world = shared_world
    history = data.draw(honest_histories(world))
    domain, op = world.court.domain, world.operator
    note, note_sig = history.note, history.note.sign(op, domain)
    order_sig = history.order.sign(world.alice, domain)
    signed = [(fill, fill.sign(op, domain)) for fill in history.fills]
    for fill, sig in signed:
        assert _dry_run_reason(world, "proveFillAfterNote", note, note_sig, fill, sig) == (
            "court: no fill after note"
        )
        assert (
            _dry_run_reason(world, "proveMalformedFill", fill, sig) == "court: fill is well formed"
        )
        assert _dry_run_reason(world, "proveBadFill", history.order, order_sig, fill, sig) == (
            "court: fill within the order's terms"
        )
    for i, (fill1, sig1) in enumerate(signed):
        for fill2, sig2 in signed[i + 1 :]:
            assert _dry_run_reason(world, "proveEquivocationFills", fill1, sig1, fill2, sig2) == (
                "court: fill totals are consistent"
            )


@settings(max_examples=300, deadline=None)
@given(
    note=st.tuples(*[st.integers(0, 5)] * 6),
    fill=st.tuples(*[st.integers(0, 5)] * 3),
)
def test_rule_1_matches_the_protocol_table(shared_world, note, fill):
    """Small numbers, every order of seqs and amounts: the contract decides as §12.1 does."""
    world = shared_world
    order, _ = world.order(world.alice)
    filled, pending, until, last_seq, seq, received = note
    fill_seq, total, time_ms = fill
    signed_note, note_sig = world.note(
        order,
        seq=seq,
        filled_amount=filled,
        last_fill_seq=last_seq,
        pending_amount=pending,
        pending_until_ms=until,
        received_at_ms=received,
    )
    signed_fill, fill_sig = world.fill(
        order, seq=fill_seq, amount=1, filled_total=total, timestamp_ms=time_ms
    )
    reason = _dry_run_reason(
        world, "proveFillAfterNote", signed_note, note_sig, signed_fill, fill_sig
    )
    assert reason == (
        "accepted" if violates(signed_note, signed_fill) else "court: no fill after note"
    )
