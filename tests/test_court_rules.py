"""The court's fraud proofs, each both ways: an offence files one claim for the order's
owner, and no pair of messages from an honest history is provable (hypothesis)."""

from __future__ import annotations

import attrs
import pytest
from conftest import MAX_PENDING_MS, PENALTY_WEI, PRICE, UNSIGNED_FILL_HASH, World, violates
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cancelnote.dispute import rules
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
    "received_at_ms": 9_000,
}


def _claims(world: World, receipt: object) -> list[dict]:
    return [e.args for e in world.court.events(receipt) if e.name == "Slashed"]


def _files_one_claim(world: World, reverts, offence: Offence, prove, *args: object) -> None:
    """``prove(world.bob, *args)`` files one claim of ``offence`` for Alice, the order's
    owner, and the same proof again is refused."""
    receipt = prove(world.bob, *args)
    assert [(c["offence"], c["owner"]) for c in _claims(world, receipt)] == [
        (offence, world.alice.address)
    ]
    with reverts("court: offence already proven"):
        prove(world.bob, *args)


def _counted_fill(world: World, order: Order) -> tuple[Fill, bytes]:
    """The fill NOTE counts last: seq 5, total 3."""
    return world.fill(order, seq=5, amount=1, filled_total=3)


def _note(world: World, order: Order, **change: object) -> tuple[CancellationNote, bytes]:
    """NOTE for ``order``, naming its counted fill, with ``change``."""
    fields = NOTE | {"last_fill_hash": _counted_fill(world, order)[0].struct_hash()} | change
    return world.note(order, **fields)


# --- rule 1: fill after note ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fill_kw", "note_kw"),
    [
        pytest.param(
            {"seq": 12, "amount": 3, "filled_total": 6}, {}, id="a-total-above-filled-plus-pending"
        ),
        pytest.param(
            {"seq": 12, "amount": 1, "filled_total": 3},
            {"pending_amount": 0, "pending_until_ms": 0},
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
            {"seq": 4, "amount": 1, "filled_total": 4}, {}, id="e-counted-fill-above-filled"
        ),
        pytest.param(
            {"seq": 5, "amount": 2, "filled_total": 3}, {}, id="f-another-fill-at-last-fill-seq"
        ),
        pytest.param(
            {"seq": 5, "amount": 1, "filled_total": 3},
            {"filled_amount": 2},
            id="f-last-fill-total-not-filled-amount",
        ),
    ],
)
def test_fill_after_note_files_a_claim_for_the_orders_owner(world, fill_kw, note_kw):
    order, _ = world.order(world.alice)
    note, note_sig = _note(world, order, **note_kw)
    fill, fill_sig = world.fill(order, **fill_kw)
    receipt = world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill, fill_sig)
    assert _claims(world, receipt) == [
        {
            "owner": world.alice.address,
            "digest": note.order_digest,
            "offence": Offence.FILL_AFTER_NOTE,
            "window": 1,
            "penalty": PENALTY_WEI,
        }
    ]
    assert world.court.offence_paid(note.order_digest, Offence.FILL_AFTER_NOTE)
    assert world.court.claims_outstanding() == PENALTY_WEI


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
def test_fill_the_note_allows_is_not_provable(world, reverts, fill_kw):
    order, _ = world.order(world.alice)
    note, note_sig = _note(world, order)
    fill, fill_sig = world.fill(order, **fill_kw)
    with reverts("court: no fill after note"):
        world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill, fill_sig)


def test_fill_after_note_is_claimed_once_per_order(world, reverts):
    order, _ = world.order(world.alice)
    note, note_sig = _note(world, order)
    fill1, sig1 = world.fill(order, seq=12, amount=3, filled_total=6)
    fill2, sig2 = world.fill(order, seq=7, amount=1, filled_total=3)
    world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill1, sig1)
    with reverts("court: offence already proven"):
        world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill1, sig1)
    with reverts("court: offence already proven"):  # another fill, the same offence
        world.court.prove_fill_after_note(world.alice, order, note, note_sig, fill2, sig2)
    assert world.court.claims_outstanding() == PENALTY_WEI


def test_fill_after_note_needs_messages_of_the_order_given(world, reverts):
    order, _ = world.order(world.alice)
    other, _ = world.order(world.alice, nonce=2)
    note, note_sig = _note(world, order)
    fill, fill_sig = world.fill(other, seq=12, amount=3, filled_total=6)
    with reverts("court: fill is for another order"):
        world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill, fill_sig)
    with reverts("court: note is for another order"):
        world.court.prove_fill_after_note(world.bob, other, note, note_sig, fill, fill_sig)


def test_fill_after_note_ignores_the_senders_the_operator_wrote(world):
    """The order names the owner: a note or fill labelled with another sender still pays
    the order's owner (the label is an offence of its own, §12.5/§12.6)."""
    order, _ = world.order(world.alice)
    bob = make_sender(world.bob.address)
    note, _ = _note(world, order)
    note = attrs.evolve(note, sender=bob)
    fill, _ = world.fill(order, seq=12, amount=3, filled_total=6)
    fill = attrs.evolve(fill, sender=bob)
    domain = world.court.domain
    receipt = world.court.prove_fill_after_note(
        world.bob,
        order,
        note,
        note.sign(world.operator, domain),
        fill,
        fill.sign(world.operator, domain),
    )
    assert [c["owner"] for c in _claims(world, receipt)] == [world.alice.address]


# --- rule 2: equivocation -------------------------------------------------------------


def test_two_different_notes_for_one_order_file_one_claim(world, reverts):
    order, _ = world.order(world.alice)
    note1, sig1 = _note(world, order)
    note2, sig2 = _note(world, order, pending_amount=1)
    prove = world.court.prove_equivocation_notes
    _files_one_claim(
        world, reverts, Offence.NOTE_EQUIVOCATION, prove, order, note1, sig1, note2, sig2
    )
    with reverts("court: offence already proven"):  # the pair the other way round
        prove(world.bob, order, note2, sig2, note1, sig1)


def test_the_same_note_twice_is_not_equivocation(world, reverts):
    order, _ = world.order(world.alice)
    note, sig = _note(world, order)
    with reverts("court: notes are identical"):
        world.court.prove_equivocation_notes(world.bob, order, note, sig, note, sig)


def test_notes_of_another_order_are_not_equivocation_of_this_one(world, reverts):
    order, _ = world.order(world.alice)
    note1, sig1 = _note(world, order)
    note2, sig2 = _note(world, world.order(world.alice, nonce=2)[0])
    with reverts("court: note is for another order"):
        world.court.prove_equivocation_notes(world.bob, order, note1, sig1, note2, sig2)


def test_the_same_fill_twice_is_not_equivocation(world, reverts):
    order, _ = world.order(world.alice)
    fill, sig = world.fill(order, seq=4, amount=1, filled_total=1)
    with reverts("court: fills are identical"):
        world.court.prove_equivocation_fills(world.bob, order, fill, sig, fill, sig)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param((4, 1, 5), (6, 1, 5), id="total-does-not-grow"),
        pytest.param((4, 1, 5), (6, 2, 6), id="total-grows-less-than-the-amount"),
        pytest.param((4, 1, 5), (6, 1, 4), id="total-shrinks"),
        pytest.param((4, 1, 5), (6, 0, 5), id="total-same-with-zero-amount"),
    ],
)
def test_fills_whose_total_does_not_grow_with_seq_file_a_claim(world, reverts, first, second):
    order, _ = world.order(world.alice)
    (s1, a1, t1), (s2, a2, t2) = first, second
    fill1, sig1 = world.fill(order, seq=s1, amount=a1, filled_total=t1)
    fill2, sig2 = world.fill(order, seq=s2, amount=a2, filled_total=t2)
    prove = world.court.prove_equivocation_fills
    with reverts("court: fills not in seq order"):
        prove(world.bob, order, fill2, sig2, fill1, sig1)
    _files_one_claim(
        world, reverts, Offence.FILLS_OUT_OF_ORDER, prove, order, fill1, sig1, fill2, sig2
    )


def test_fills_of_different_orders_with_different_seqs_are_not_equivocation(world, reverts):
    order, _ = world.order(world.alice)
    fill1, sig1 = world.fill(order, seq=4, amount=1, filled_total=5)
    fill2, sig2 = world.fill(world.order(world.bob)[0], seq=6, amount=1, filled_total=1)
    with reverts("court: fill is for another order"):
        world.court.prove_equivocation_fills(world.bob, order, fill1, sig1, fill2, sig2)
    with reverts("court: fill is for another order"):  # fill1 must be the order's
        world.court.prove_equivocation_fills(world.bob, order, fill2, sig2, fill1, sig1)


# --- malformed fills and notes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "amount", "filled_total"),
    [({}, 0, 3), ({}, 4, 3), ({"sender": "bob"}, 3, 3)],
    ids=["zero-amount", "total-below-amount", "sender-not-the-orders"],
)
def test_a_self_contradictory_fill_files_one_claim(world, reverts, change, amount, filled_total):
    order, _ = world.order(world.alice)
    fill, _ = world.fill(order, seq=4, amount=amount, filled_total=filled_total)
    if change:
        fill = attrs.evolve(fill, sender=make_sender(world.bob.address))
    sig = fill.sign(world.operator, world.court.domain)
    prove = world.court.prove_malformed_fill
    _files_one_claim(world, reverts, Offence.MALFORMED_FILL, prove, order, fill, sig)


def test_a_well_formed_fill_is_not_malformed(world, reverts):
    order, _ = world.order(world.alice)
    fill, sig = world.fill(order, seq=4, amount=3, filled_total=3)
    with reverts("court: fill is well formed"):
        world.court.prove_malformed_fill(world.bob, order, fill, sig)
    with reverts("court: fill is for another order"):
        world.court.prove_malformed_fill(world.bob, world.order(world.alice, nonce=3)[0], fill, sig)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"sender": None}, "court: note is for another sender", id="another-sender"),
        pytest.param(
            {"pending_amount": 10**18 - 2}, "court: note promises more than the order", id="size"
        ),
        pytest.param(
            {"pending_until_ms": 9_000 + MAX_PENDING_MS + 1},
            "court: note pending for too long",
            id="pending-window",
        ),
        pytest.param(
            {"last_fill_hash": bytes(32)}, "court: note misstates its last fill", id="no-hash"
        ),
        pytest.param(
            {"last_fill_seq": 0}, "court: note misstates its last fill", id="filled-without-fill"
        ),
        pytest.param(
            {"filled_amount": 0}, "court: note misstates its last fill", id="fill-without-amount"
        ),
        pytest.param(
            {"last_fill_seq": 10}, "court: note's last fill is not before it", id="fill-not-before"
        ),
    ],
)
def test_a_note_out_of_bounds_files_a_claim_and_says_which_bound(world, reverts, change, reason):
    order, _ = world.order(world.alice)
    note, _ = _note(world, order)
    if "sender" in change:
        change = {"sender": make_sender(world.bob.address)}
    note = attrs.evolve(note, **change)
    sig = note.sign(world.operator, world.court.domain)
    assert rules.note_fault(order, note, MAX_PENDING_MS) == reason
    prove = world.court.prove_bad_note
    _files_one_claim(world, reverts, Offence.NOTE_OUT_OF_BOUNDS, prove, order, note, sig)


def test_a_note_within_its_bounds_is_not_provable(world, reverts):
    order, _ = world.order(world.alice)
    for note, sig in (_note(world, order), world.note(order, seq=3)):
        with reverts("court: note is within its bounds"):
            world.court.prove_bad_note(world.bob, order, note, sig)
    note, sig = _note(world, order)
    with reverts("court: note is for another order"):
        world.court.prove_bad_note(world.bob, world.order(world.alice, nonce=4)[0], note, sig)


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
def test_a_fill_beyond_the_orders_terms_files_one_claim(world, reverts, amount, fill_kw):
    order, _ = world.order(world.alice, amount=amount)
    fill, sig = world.fill(order, **({"seq": 4, "amount": 1, "filled_total": 1} | fill_kw))
    _files_one_claim(world, reverts, Offence.BAD_FILL, world.court.prove_bad_fill, order, fill, sig)


@pytest.mark.parametrize(
    ("amount", "price"),
    [(10, PRICE), (10, PRICE - 1), (-10, PRICE), (-10, PRICE + 1)],
    ids=["buy-at-limit", "buy-below-limit", "sell-at-limit", "sell-above-limit"],
)
def test_a_fill_within_the_orders_terms_is_not_provable(world, reverts, amount, price):
    order, _ = world.order(world.alice, amount=amount)
    fill, sig = world.fill(order, seq=4, amount=10, filled_total=10, price_x18=price)
    with reverts("court: fill within the order's terms"):
        world.court.prove_bad_fill(world.bob, order, fill, sig)


def test_bad_fill_needs_a_fill_of_that_order(world, reverts):
    order, _ = world.order(world.alice)
    fill, sig = world.fill(world.order(world.alice, nonce=2)[0], seq=4, amount=1, filled_total=1)
    with reverts("court: fill is for another order"):
        world.court.prove_bad_fill(world.bob, order, fill, sig)


# --- honest histories are never provable ------------------------------------------------


@attrs.frozen
class History:
    """An order, its fills in seq order and the note an honest operator would sign."""

    order: Order
    fills: tuple[Fill, ...]
    note: CancellationNote


@st.composite
def honest_histories(draw: st.DrawFn, world: World) -> History:
    """Fills and a note as the operator's journal would record them (protocol §9, §10).

    Fills before the note are counted in it (the last by its hash); fills after it
    settle what the note declared pending, no more and no later (often exactly at the
    limits), within the court's pending bound; seqs are global, so they have gaps (other
    orders' entries) and the note takes one of its own.
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
    room = abs(order.amount) - sum(amounts)  # in flight but lapsed: at most what is left
    declared = sum(amounts[counted:]) + draw(st.integers(0, min(10, room)))
    if not pending:
        declared = draw(st.sampled_from([0, declared]))
    received_at = times[counted - 1] if counted else 0
    if pending:  # matched before the note, so settling at most a settlement delay after it
        received_at = max(received_at, pending[-1].timestamp_ms - MAX_PENDING_MS)
    last = fills[counted - 1] if counted else None
    note = CancellationNote(
        order_digest=digest,
        sender=order.sender,
        request_hash=bytes(32),
        filled_amount=last.filled_total if last else 0,
        last_fill_seq=last.seq if last else 0,
        last_fill_hash=last.struct_hash() if last else bytes(32),
        pending_amount=declared,
        pending_until_ms=min(
            received_at + MAX_PENDING_MS,
            max([received_at, *(f.timestamp_ms for f in pending)]) + draw(st.integers(0, 1_000)),
        )
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
def test_no_message_or_pair_from_an_honest_history_is_provable(shared_world, data):
    world = shared_world
    history = data.draw(honest_histories(world))
    domain, op, order = world.court.domain, world.operator, history.order
    note, note_sig = history.note, history.note.sign(op, domain)
    signed = [(fill, fill.sign(op, domain)) for fill in history.fills]
    assert _dry_run_reason(world, "proveBadNote", order, note, note_sig) == (
        "court: note is within its bounds"
    )
    for fill, sig in signed:
        assert _dry_run_reason(world, "proveFillAfterNote", order, note, note_sig, fill, sig) == (
            "court: no fill after note"
        )
        assert _dry_run_reason(world, "proveMalformedFill", order, fill, sig) == (
            "court: fill is well formed"
        )
        assert _dry_run_reason(world, "proveBadFill", order, fill, sig) == (
            "court: fill within the order's terms"
        )
    for i, (fill1, sig1) in enumerate(signed):
        for fill2, sig2 in signed[i + 1 :]:
            reason = _dry_run_reason(
                world, "proveEquivocationFills", order, fill1, sig1, fill2, sig2
            )
            assert reason == "court: fill totals are consistent"


@settings(max_examples=300, deadline=None)
@given(
    note=st.tuples(*[st.integers(0, 5)] * 6),
    fill=st.tuples(*[st.integers(0, 5)] * 3),
    names_the_fill=st.booleans(),
)
def test_rule_1_matches_the_protocol_table(shared_world, note, fill, names_the_fill):
    """Small numbers, every order of seqs and amounts: the contract decides as §12.1 does."""
    world = shared_world
    order, _ = world.order(world.alice)
    filled, pending, until, last_seq, seq, received = note
    fill_seq, total, time_ms = fill
    signed_fill, fill_sig = world.fill(
        order, seq=fill_seq, amount=1, filled_total=total, timestamp_ms=time_ms
    )
    signed_note, note_sig = world.note(
        order,
        seq=seq,
        filled_amount=filled,
        last_fill_seq=last_seq,
        last_fill_hash=signed_fill.struct_hash() if names_the_fill else UNSIGNED_FILL_HASH,
        pending_amount=pending,
        pending_until_ms=until,
        received_at_ms=received,
    )
    reason = _dry_run_reason(
        world, "proveFillAfterNote", order, signed_note, note_sig, signed_fill, fill_sig
    )
    assert reason == (
        "accepted" if violates(signed_note, signed_fill) else "court: no fill after note"
    )
