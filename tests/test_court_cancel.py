"""The forced cancel: request (owner, contract or relayer), answer within W and within the
note's bounds, default after W, and the fills it rules out afterwards."""

from __future__ import annotations

import attrs
import pytest
from conftest import (
    ANSWER_WINDOW_S,
    DISPUTE_BOND_WEI,
    MAX_PENDING_MS,
    MIN_BOND_WEI,
    OWNER_SHARE_WEI,
    PENALTY_WEI,
    World,
)

from cancelnote.dispute.court import CancelState, CancelStatus, Offence
from cancelnote.messages import Cancellation, Order, make_nonce, make_sender


def _cancellation(
    world: World, *digests: bytes, valid_for_s: int = 60
) -> tuple[Cancellation, bytes]:
    """Alice's signed request to cancel ``digests``, void ``valid_for_s`` after now."""
    cancellation = Cancellation(
        sender=make_sender(world.alice.address),
        product_ids=tuple(1 for _ in digests),
        digests=digests,
        nonce=make_nonce(1_000 * (world.chain.timestamp() + valid_for_s), entropy=7),
    )
    return cancellation, cancellation.sign(world.alice, world.court.domain)


def _past_deadline(world: World) -> None:
    world.chain.increase_time(ANSWER_WINDOW_S + 1)


def _requested(world: World, **order_kw: object) -> tuple[Order, int]:
    """Alice's order, force-cancelled by Alice; returns it and the request's block time."""
    order, _ = world.order(world.alice, **order_kw)
    receipt = world.court.request_cancel(world.alice, order)
    return order, world.chain.block(receipt.block_number).timestamp


# --- request --------------------------------------------------------------------------


def test_owner_request_logs_the_whole_order_and_takes_the_bond(world):
    order, _ = world.order(world.alice)
    receipt = world.court.request_cancel(world.alice, order)
    digest = order.digest(world.court.domain)
    mined_at = world.chain.timestamp()
    assert world.court.cancel_status(digest) == CancelStatus(
        CancelState.REQUESTED, mined_at, mined_at + ANSWER_WINDOW_S, 0
    )
    [event] = world.court.events(receipt)
    assert event.name == "CancelRequested"
    assert event.args == {
        "owner": world.alice.address,
        "digest": digest,
        "requester": world.alice.address,
        "requestId": 1,
        "sender": order.sender,
        "productId": order.product_id,
        "priceX18": order.price_x18,
        "amount": order.amount,
        "expiration": order.expiration,
        "nonce": order.nonce,
        "requestedAt": mined_at,
        "deadline": mined_at + ANSWER_WINDOW_S,
    }
    assert world.chain.balance(world.court.address) == MIN_BOND_WEI + DISPUTE_BOND_WEI


def test_request_ids_count_every_request(world):
    ids = []
    for nonce in (1, 2, 3):
        order, _ = world.order(world.alice, nonce=nonce)
        [event] = world.court.events(world.court.request_cancel(world.alice, order))
        ids.append(event.args["requestId"])
    assert ids == [1, 2, 3]


def test_contract_recomputes_the_order_digest(world):
    order, _ = world.order(world.alice, nonce=99)
    assert world.court.order_digest(order) == order.digest(world.court.domain)


def test_only_the_owner_may_request(world, reverts):
    order, _ = world.order(world.alice)
    with reverts("court: caller is not the order owner"):
        world.court.request_cancel(world.bob, order)


@pytest.mark.parametrize("value", [0, DISPUTE_BOND_WEI - 1, DISPUTE_BOND_WEI + 1])
def test_request_must_pay_exactly_the_dispute_bond(world, reverts, value):
    order, _ = world.order(world.alice)
    with reverts("court: wrong dispute bond"):
        world.court.request_cancel(world.alice, order, value=value)


def test_one_forced_cancel_per_order_ever(world, reverts):
    order, _ = _requested(world)
    with reverts("court: cancel already requested"):
        world.court.request_cancel(world.alice, order)
    world.court.answer_cancel(world.bob, order, *world.note(order, seq=3))
    with reverts("court: cancel already settled"):
        world.court.request_cancel(world.alice, order)


def test_an_expired_order_cannot_be_force_cancelled(world, reverts):
    order, _ = world.order(world.alice)
    world.chain.set_next_block_timestamp(order.expiration)
    with reverts("court: order expired"):
        world.court.request_cancel(world.alice, order)


# --- relayed request ------------------------------------------------------------------


def test_relayer_forces_a_cancel_with_the_owners_signed_cancellation(world):
    order, _ = world.order(world.alice)
    digest = order.digest(world.court.domain)
    cancellation, sig = _cancellation(world, bytes(32), digest)
    receipt = world.court.request_cancel_signed(world.bob, order, cancellation, sig)
    [event] = world.court.events(receipt)
    assert (event.args["owner"], event.args["requester"], event.args["sender"]) == (
        world.alice.address,
        world.bob.address,
        order.sender,
    )
    assert world.court.cancel_status(digest).state == CancelState.REQUESTED


def test_relayed_default_refunds_the_relayer_and_files_the_owners_claim(world, reverts):
    order, _ = world.order(world.alice)
    cancellation, sig = _cancellation(world, order.digest(world.court.domain))
    world.court.request_cancel_signed(world.bob, order, cancellation, sig)
    _past_deadline(world)
    world.court.finalize(world.deployer, order)
    assert world.court.credits(world.bob.address) == DISPUTE_BOND_WEI
    world.vest()
    world.court.claim(world.deployer, order, Offence.DEFAULT)
    assert world.court.credits(world.alice.address) == OWNER_SHARE_WEI  # no bond: not hers
    with reverts("court: nothing to claim"):
        world.court.claim(world.deployer, order, Offence.DEFAULT)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"digests": (bytes(32),)}, "court: cancellation does not list the order"),
        ({"sender": make_sender("0x" + "11" * 20)}, "court: cancellation is for another sender"),
    ],
    ids=["order-not-listed", "other-sender"],
)
def test_relayed_request_needs_a_cancellation_for_that_order(world, reverts, change, reason):
    order, _ = world.order(world.alice)
    cancellation, _ = _cancellation(world, order.digest(world.court.domain))
    forged = attrs.evolve(cancellation, **change)
    with reverts(reason):
        world.court.request_cancel_signed(
            world.bob, order, forged, forged.sign(world.alice, world.court.domain)
        )


def test_relayed_request_needs_the_owners_signature(world, reverts):
    order, _ = world.order(world.alice)
    cancellation, _ = _cancellation(world, order.digest(world.court.domain))
    with reverts("court: cancellation not signed by the owner"):
        world.court.request_cancel_signed(
            world.bob, order, cancellation, cancellation.sign(world.bob, world.court.domain)
        )


def test_a_void_cancellation_cannot_be_relayed(world, reverts):
    order, _ = world.order(world.alice)
    cancellation, sig = _cancellation(world, order.digest(world.court.domain), valid_for_s=5)
    world.chain.increase_time(5)
    with reverts("court: cancellation expired"):
        world.court.request_cancel_signed(world.bob, order, cancellation, sig)


# --- answer ---------------------------------------------------------------------------


def test_answer_in_the_window_sets_the_cap_and_pays_the_operator(world):
    order, _ = _requested(world)
    counted, _ = world.fill(order, seq=4, amount=3, filled_total=3)
    note, sig = world.note(
        order, seq=9, last_fill=counted, pending_amount=2, pending_until_ms=9_000
    )
    world.chain.set_next_block_timestamp(world.court.cancel_status(note.order_digest).deadline)
    receipt = world.court.answer_cancel(world.bob, order, note, sig)
    [event] = world.court.events(receipt)
    assert (event.name, event.args) == (
        "CancelAnswered",
        {"owner": world.alice.address, "digest": note.order_digest, "cap": 5, "noteSeq": 9},
    )
    status = world.court.cancel_status(note.order_digest)
    assert (status.state, status.cap) == (CancelState.ANSWERED, 5)
    assert world.court.credits(world.operator.address) == DISPUTE_BOND_WEI
    assert world.court.bond() == MIN_BOND_WEI


def test_the_operator_withdraws_the_dispute_bonds_its_answers_earned(world, reverts):
    for nonce in (1, 2):
        order, _ = _requested(world, nonce=nonce)
        world.court.answer_cancel(world.bob, order, *world.note(order, seq=9))
    assert world.court.credits(world.operator.address) == 2 * DISPUTE_BOND_WEI
    receipt = world.court.withdraw(world.operator)
    assert world.court.events(receipt)[0].args["amount"] == 2 * DISPUTE_BOND_WEI
    assert world.court.credits(world.operator.address) == 0
    with reverts("court: nothing to withdraw"):
        world.court.withdraw(world.operator)


def test_a_late_answer_is_refused(world, reverts):
    order, _ = _requested(world)
    _past_deadline(world)
    with reverts("court: answer window closed"):
        world.court.answer_cancel(world.bob, order, *world.note(order, seq=9))


def test_an_answer_of_another_order_is_refused(world, reverts):
    order, _ = _requested(world)
    other, _ = world.order(world.alice, nonce=2)
    with reverts("court: note is for another order"):
        world.court.answer_cancel(world.bob, order, *world.note(other, seq=9))
    with reverts("court: cancel not requested"):
        world.court.answer_cancel(world.bob, other, *world.note(other, seq=9))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"sender": True}, "court: note is for another sender", id="another-sender"),
        pytest.param(
            {"pending_amount": 10**18 + 1, "pending_until_ms": 1},
            "court: note promises more than the order",
            id="above-the-orders-size",
        ),
        pytest.param(
            {"pending_amount": 1, "pending_until_ms": 5_000 + MAX_PENDING_MS + 1},
            "court: note pending for too long",
            id="pending-too-long",
        ),
        pytest.param(
            {"filled_amount": 1}, "court: note misstates its last fill", id="filled-from-no-fill"
        ),
    ],
)
def test_an_out_of_bound_answer_is_refused_with_the_bound_it_breaks(world, reverts, change, reason):
    order, _ = _requested(world)
    note, _ = world.note(order, seq=9, received_at_ms=5_000)
    if change.pop("sender", False):
        change["sender"] = make_sender(world.alice.address, "other")
    forged = attrs.evolve(note, **change)
    with reverts(reason):
        world.court.answer_cancel(
            world.bob, order, forged, forged.sign(world.operator, world.court.domain)
        )


def test_an_answer_not_signed_by_the_operator_is_refused(world, reverts):
    order, _ = _requested(world)
    note, _ = world.note(order, seq=9)
    with reverts("court: not signed by the operator"):
        world.court.answer_cancel(
            world.bob, order, note, note.sign(world.alice, world.court.domain)
        )


# --- default --------------------------------------------------------------------------


def test_finalize_before_the_deadline_is_refused(world, reverts):
    order, _ = _requested(world)
    world.chain.set_next_block_timestamp(
        world.court.cancel_status(order.digest(world.court.domain)).deadline
    )
    with reverts("court: answer window still open"):
        world.court.finalize(world.bob, order)


def test_finalize_of_an_unrequested_or_answered_cancel_is_refused(world, reverts):
    order, _ = world.order(world.alice)
    with reverts("court: cancel not requested"):
        world.court.finalize(world.bob, order)
    world.court.request_cancel(world.alice, order)
    world.court.answer_cancel(world.bob, order, *world.note(order, seq=9))
    _past_deadline(world)
    with reverts("court: cancel already settled"):
        world.court.finalize(world.bob, order)


@pytest.mark.parametrize("halt_on_default", [True, False])
def test_default_files_one_claim_counts_and_halts_if_configured(
    new_world, reverts, halt_on_default
):
    world = new_world(halt_on_default=halt_on_default)
    order, _ = _requested(world)
    digest = order.digest(world.court.domain)
    _past_deadline(world)
    receipt = world.court.finalize(world.bob, order)
    slashed, defaulted = world.court.events(receipt)
    assert (slashed.name, slashed.args["offence"], slashed.args["owner"]) == (
        "Slashed",
        Offence.DEFAULT,
        world.alice.address,
    )
    assert (defaulted.name, defaulted.args) == (
        "CancelDefaulted",
        {"owner": world.alice.address, "digest": digest, "defaults": 1, "halted": halt_on_default},
    )
    assert (world.court.defaults(), world.court.halted()) == (1, halt_on_default)
    assert world.court.cancel_status(digest).state == CancelState.DEFAULTED
    assert world.court.offence_paid(digest, Offence.DEFAULT)
    with reverts("court: cancel already settled"):
        world.court.finalize(world.bob, order)
    with reverts("court: claim not vested"):
        world.court.claim(world.bob, order, Offence.DEFAULT)
    world.vest()
    world.court.claim(world.bob, order, Offence.DEFAULT)  # anyone may; the owner is paid
    assert world.court.credits(world.alice.address) == DISPUTE_BOND_WEI + OWNER_SHARE_WEI
    assert world.court.bond() == MIN_BOND_WEI - PENALTY_WEI


# --- fills ruled out afterwards -------------------------------------------------------


def test_a_fill_above_the_answered_cap_is_the_same_offence_as_fill_after_note(world, reverts):
    order, _ = _requested(world)
    counted, _ = world.fill(order, seq=4, amount=3, filled_total=3)
    note, note_sig = world.note(order, seq=9, last_fill=counted)
    world.court.answer_cancel(world.bob, order, note, note_sig)
    with reverts("court: fill within the cap"):
        world.court.prove_fill_above_cap(
            world.bob, order, *world.fill(order, seq=4, amount=3, filled_total=3)
        )
    late, late_sig = world.fill(order, seq=20, amount=1, filled_total=4)
    world.court.prove_fill_above_cap(world.bob, order, late, late_sig)
    assert world.court.offence_paid(note.order_digest, Offence.FILL_AFTER_NOTE)
    with reverts("court: offence already proven"):
        world.court.prove_fill_after_note(world.bob, order, note, note_sig, late, late_sig)


def test_fill_above_cap_needs_an_answered_cancel_of_that_order(world, reverts):
    order, _ = world.order(world.alice)
    fill, sig = world.fill(order, seq=4, amount=3, filled_total=3)
    with reverts("court: no cap recorded"):
        world.court.prove_fill_above_cap(world.bob, order, fill, sig)
    world.court.request_cancel(world.alice, order)
    with reverts("court: no cap recorded"):  # requested, not yet answered
        world.court.prove_fill_above_cap(world.bob, order, fill, sig)
    _past_deadline(world)
    world.court.finalize(world.bob, order)
    with reverts("court: no cap recorded"):  # a default records no cap: the time rule holds
        world.court.prove_fill_above_cap(world.bob, order, fill, sig)
    with reverts("court: fill is for another order"):
        world.court.prove_fill_above_cap(world.bob, world.order(world.alice, nonce=8)[0], fill, sig)


@pytest.mark.parametrize("settle", ["requested", "answered", "defaulted"])
def test_a_fill_stamped_after_the_request_took_effect_files_a_claim(world, reverts, settle):
    order, requested_at = _requested(world)
    if settle == "answered":
        world.court.answer_cancel(world.bob, order, *world.note(order, seq=9))
    elif settle == "defaulted":
        _past_deadline(world)
        world.court.finalize(world.bob, order)
    bound_ms = requested_at * 1000 + MAX_PENDING_MS
    in_flight, in_flight_sig = world.fill(
        order, seq=10, amount=1, filled_total=1, timestamp_ms=bound_ms
    )
    with reverts("court: fill within the pending bound"):
        world.court.prove_fill_after_request(world.bob, order, in_flight, in_flight_sig)
    late, late_sig = world.fill(order, seq=11, amount=1, filled_total=2, timestamp_ms=bound_ms + 1)
    receipt = world.court.prove_fill_after_request(world.bob, order, late, late_sig)
    assert [e.args["offence"] for e in world.court.events(receipt)] == [Offence.FILL_AFTER_NOTE]
    with reverts("court: offence already proven"):
        world.court.prove_fill_after_request(world.bob, order, late, late_sig)


def test_fill_after_request_needs_a_request_of_that_order(world, reverts):
    order, _ = world.order(world.alice)
    fill, sig = world.fill(order, seq=4, amount=3, filled_total=3, timestamp_ms=2**63)
    with reverts("court: cancel not requested"):
        world.court.prove_fill_after_request(world.bob, order, fill, sig)
    with reverts("court: fill is for another order"):
        world.court.prove_fill_after_request(world.bob, world.order(world.bob)[0], fill, sig)
