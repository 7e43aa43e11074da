"""The forced cancel: request (owner or relayer), answer within W, default after W, and the
cap it leaves behind."""

from __future__ import annotations

import attrs
import pytest
from conftest import ANSWER_WINDOW_S, DISPUTE_BOND_WEI, MIN_BOND_WEI, PENALTY_WEI, World

from cancelnote.dispute.court import CancelState, CancelStatus, Offence
from cancelnote.messages import Cancellation, make_nonce, make_sender


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


# --- request --------------------------------------------------------------------------


def test_owner_request_records_deadline_and_takes_the_bond(world):
    order, _ = world.order(world.alice)
    receipt = world.court.request_cancel(world.alice, order)
    digest = order.digest(world.court.domain)
    mined_at = world.chain.timestamp()
    assert world.court.cancel_status(digest) == CancelStatus(
        CancelState.REQUESTED, world.alice.address, mined_at + ANSWER_WINDOW_S, 0
    )
    [event] = world.court.events(receipt)
    assert (event.name, event.args["requester"], event.args["deadline"]) == (
        "CancelRequested",
        world.alice.address,
        mined_at + ANSWER_WINDOW_S,
    )
    assert world.chain.balance(world.court.address) == MIN_BOND_WEI + DISPUTE_BOND_WEI


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
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    with reverts("court: cancel already requested"):
        world.court.request_cancel(world.alice, order)
    world.court.answer_cancel(world.bob, *world.note(order, seq=3))
    with reverts("court: cancel already settled"):
        world.court.request_cancel(world.alice, order)


def test_an_expired_order_cannot_be_force_cancelled(world, reverts):
    order, _ = world.order(world.alice)
    world.chain.set_next_block_timestamp(order.expiration)
    with reverts("court: order expired"):
        world.court.request_cancel(world.alice, order)


def test_request_with_a_fill_receipt_sets_the_cap(world, reverts):
    order, _ = world.order(world.alice)
    fill, sig = world.fill(order, seq=4, amount=3, filled_total=3)
    other, other_sig = world.fill(
        world.order(world.alice, nonce=2)[0], seq=5, amount=1, filled_total=1
    )
    with reverts("court: fill is for another order"):
        world.court.request_cancel_with_fill(world.alice, order, other, other_sig)
    world.court.request_cancel_with_fill(world.alice, order, fill, sig)
    assert world.court.cancel_status(fill.order_digest).cap == 3


# --- relayed request ------------------------------------------------------------------


def test_relayer_forces_a_cancel_with_the_owners_signed_cancellation(world):
    order, _ = world.order(world.alice)
    digest = order.digest(world.court.domain)
    cancellation, sig = _cancellation(world, bytes(32), digest)
    receipt = world.court.request_cancel_signed(world.bob, order, cancellation, sig)
    [event] = world.court.events(receipt)
    assert (event.args["owner"], event.args["requester"]) == (
        world.alice.address,
        world.bob.address,
    )
    assert world.court.cancel_status(digest).state == CancelState.REQUESTED


def test_relayed_default_refunds_the_relayer_and_pays_the_owner(world):
    order, _ = world.order(world.alice)
    cancellation, sig = _cancellation(world, order.digest(world.court.domain))
    world.court.request_cancel_signed(world.bob, order, cancellation, sig)
    _past_deadline(world)
    world.court.finalize(world.deployer, order.digest(world.court.domain))
    assert world.court.credits(world.bob.address) == DISPUTE_BOND_WEI
    assert world.court.credits(world.alice.address) == PENALTY_WEI


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
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    note, sig = world.note(
        order, seq=9, filled_amount=3, last_fill_seq=4, pending_amount=2, pending_until_ms=9_000
    )
    world.chain.set_next_block_timestamp(world.court.cancel_status(note.order_digest).deadline)
    receipt = world.court.answer_cancel(world.bob, note, sig)
    assert [(e.name, e.args["cap"]) for e in world.court.events(receipt)] == [("CancelAnswered", 5)]
    status = world.court.cancel_status(note.order_digest)
    assert (status.state, status.cap) == (CancelState.ANSWERED, 5)
    assert world.court.credits(world.operator.address) == DISPUTE_BOND_WEI
    assert world.court.bond() == MIN_BOND_WEI


def test_the_operator_withdraws_the_dispute_bonds_its_answers_earned(world, reverts):
    for nonce in (1, 2):
        order, _ = world.order(world.alice, nonce=nonce)
        world.court.request_cancel(world.alice, order)
        world.court.answer_cancel(world.bob, *world.note(order, seq=9))
    assert world.court.credits(world.operator.address) == 2 * DISPUTE_BOND_WEI
    receipt = world.court.withdraw(world.operator)
    assert world.court.events(receipt)[0].args["amount"] == 2 * DISPUTE_BOND_WEI
    assert world.court.credits(world.operator.address) == 0
    with reverts("court: nothing to withdraw"):
        world.court.withdraw(world.operator)


def test_a_late_answer_is_refused(world, reverts):
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    _past_deadline(world)
    with reverts("court: answer window closed"):
        world.court.answer_cancel(world.bob, *world.note(order, seq=9))


def test_an_answer_for_another_digest_is_refused(world, reverts):
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    with reverts("court: cancel not requested"):
        world.court.answer_cancel(
            world.bob, *world.note(world.order(world.alice, nonce=2)[0], seq=9)
        )


def test_an_answer_for_another_sender_is_refused(world, reverts):
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    note, _ = world.note(order, seq=9)
    forged = attrs.evolve(note, sender=make_sender(world.bob.address))
    with reverts("court: note is for another sender"):
        world.court.answer_cancel(
            world.bob, forged, forged.sign(world.operator, world.court.domain)
        )


def test_an_answer_not_signed_by_the_operator_is_refused(world, reverts):
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    note, _ = world.note(order, seq=9)
    with reverts("court: not signed by the operator"):
        world.court.answer_cancel(world.bob, note, note.sign(world.alice, world.court.domain))


# --- default --------------------------------------------------------------------------


def test_finalize_before_the_deadline_is_refused(world, reverts):
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    world.chain.set_next_block_timestamp(
        world.court.cancel_status(order.digest(world.court.domain)).deadline
    )
    with reverts("court: answer window still open"):
        world.court.finalize(world.bob, order.digest(world.court.domain))


def test_finalize_of_an_unrequested_or_answered_cancel_is_refused(world, reverts):
    order, _ = world.order(world.alice)
    digest = order.digest(world.court.domain)
    with reverts("court: cancel not requested"):
        world.court.finalize(world.bob, digest)
    world.court.request_cancel(world.alice, order)
    world.court.answer_cancel(world.bob, *world.note(order, seq=9))
    _past_deadline(world)
    with reverts("court: cancel already settled"):
        world.court.finalize(world.bob, digest)


@pytest.mark.parametrize("halt_on_default", [True, False])
def test_default_pays_the_owner_counts_and_halts_if_configured(new_world, reverts, halt_on_default):
    world = new_world(halt_on_default=halt_on_default)
    order, _ = world.order(world.alice)
    digest = order.digest(world.court.domain)
    world.court.request_cancel(world.alice, order)
    _past_deadline(world)
    receipt = world.court.finalize(world.bob, digest)
    defaulted, slashed = world.court.events(receipt)
    assert defaulted.name == "CancelDefaulted" and slashed.name == "Slashed"
    assert defaulted.args == {
        "digest": digest,
        "owner": world.alice.address,
        "defaults": 1,
        "halted": halt_on_default,
    }
    assert world.court.credits(world.alice.address) == DISPUTE_BOND_WEI + PENALTY_WEI
    assert (world.court.defaults(), world.court.halted()) == (1, halt_on_default)
    assert world.court.bond() == MIN_BOND_WEI - PENALTY_WEI
    assert world.court.cancel_status(digest).state == CancelState.DEFAULTED
    with reverts("court: cancel already settled"):
        world.court.finalize(world.bob, digest)


# --- the cap afterwards ---------------------------------------------------------------


def test_a_fill_above_the_default_cap_is_slashed_once(world, reverts):
    order, _ = world.order(world.alice)
    receipt_fill, receipt_sig = world.fill(order, seq=4, amount=3, filled_total=3)
    world.court.request_cancel_with_fill(world.alice, order, receipt_fill, receipt_sig)
    _past_deadline(world)
    world.court.finalize(world.bob, receipt_fill.order_digest)
    with reverts("court: fill within the cap"):
        world.court.prove_fill_above_cap(world.bob, receipt_fill, receipt_sig)
    late, late_sig = world.fill(order, seq=20, amount=1, filled_total=4)
    world.court.prove_fill_above_cap(world.bob, late, late_sig)
    assert world.court.credits(world.alice.address) == DISPUTE_BOND_WEI + 2 * PENALTY_WEI
    with reverts("court: offence already paid"):
        world.court.prove_fill_above_cap(world.bob, late, late_sig)


def test_a_fill_above_the_answered_cap_is_the_same_offence_as_fill_after_note(world, reverts):
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    note, note_sig = world.note(order, seq=9, filled_amount=3, last_fill_seq=4)
    world.court.answer_cancel(world.bob, note, note_sig)
    late, late_sig = world.fill(order, seq=20, amount=1, filled_total=4)
    world.court.prove_fill_above_cap(world.bob, late, late_sig)
    assert world.court.offence_paid(note.order_digest, Offence.FILL_AFTER_NOTE)
    with reverts("court: offence already paid"):
        world.court.prove_fill_after_note(world.bob, note, note_sig, late, late_sig)


def test_fill_above_cap_needs_a_recorded_cap(world, reverts):
    order, _ = world.order(world.alice)
    fill, sig = world.fill(order, seq=4, amount=3, filled_total=3)
    with reverts("court: no cap recorded"):
        world.court.prove_fill_above_cap(world.bob, fill, sig)
    world.court.request_cancel(world.alice, order)
    with reverts("court: no cap recorded"):  # requested, not yet answered or defaulted
        world.court.prove_fill_above_cap(world.bob, fill, sig)
