"""The attacks that broke court v1 (issue 9, attacks 3-13), each as the attacker would run
it against the real bytecode; every one succeeded on v1 and fails on v2. Attacks 1 and 2
(a request the watcher could not answer) are in tests/test_watcher.py and
tests/test_watcher_fuzz.py, against the real operator."""

from __future__ import annotations

import attrs
from conftest import (
    ANSWER_WINDOW_S,
    BURN_SHARE_BPS,
    CLAIM_DELAY_S,
    EXIT_DELAY_S,
    MAX_PENDING_MS,
    MIN_BOND_WEI,
    OWNER_SHARE_WEI,
    PENALTY_WEI,
    World,
)

from cancelnote.crypto import Signer
from cancelnote.dispute.court import Offence
from cancelnote.messages import Order, make_sender

ETH = 10**18


def _sign(world: World, message: object) -> bytes:
    return message.sign(world.operator, world.court.domain)  # type: ignore[attr-defined]


def _claim(world: World, order: Order, offence: Offence) -> int:
    """Claim a vested claim; returns what the order's owner was credited by it."""
    receipt = world.court.claim(world.deployer, order, offence)
    return sum(e.args["paid"] for e in world.court.events(receipt) if e.name == "ClaimPaid")


def _claim_owners(world: World, receipt: object) -> list[tuple[bytes, Offence]]:
    return [
        (e.args["owner"], Offence(e.args["offence"]))
        for e in world.court.events(receipt)
        if e.name == "Slashed"
    ]


def _mallory(world: World) -> Signer:
    return world.chain.dev_accounts[4]


# 3 -------------------------------------------------------------------------------------


def test_a_fill_of_the_order_labelled_with_another_sender_is_still_provable(world):
    """v1: "court: senders differ" and "court: fill is for another sender"."""
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    note, note_sig = world.note(order, seq=10)  # cap 0
    world.court.answer_cancel(world.operator, order, note, note_sig)
    fill, _ = world.fill(order, seq=12, amount=5, filled_total=5)
    fill = attrs.evolve(fill, sender=make_sender(world.bob.address))
    fill_sig = _sign(world, fill)
    proof = world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill, fill_sig)
    malformed = world.court.prove_malformed_fill(world.bob, order, fill, fill_sig)
    assert _claim_owners(world, proof) + _claim_owners(world, malformed) == [
        (world.alice.address, Offence.FILL_AFTER_NOTE),
        (world.alice.address, Offence.MALFORMED_FILL),
    ]


# 4 -------------------------------------------------------------------------------------


def test_a_sock_puppets_proof_cannot_preempt_the_owners_claim(world, reverts):
    """v1: Mallory was paid and Alice's proof reverted "offence already paid"."""
    order, _ = world.order(world.alice)
    mallory = _mallory(world)
    puppet = make_sender(mallory.address)
    note, _ = world.note(order, seq=10)
    fill, _ = world.fill(order, seq=12, amount=1, filled_total=1)
    note, fill = attrs.evolve(note, sender=puppet), attrs.evolve(fill, sender=puppet)
    args = (note, _sign(world, note), fill, _sign(world, fill))
    forged_order = attrs.evolve(order, sender=puppet)  # Mallory's own label: another digest
    with reverts("court: note is for another order"):
        world.court.prove_fill_after_note(mallory, forged_order, *args)
    first = world.court.prove_fill_after_note(mallory, order, *args)  # Mallory proves first...
    assert _claim_owners(world, first) == [(world.alice.address, Offence.FILL_AFTER_NOTE)]
    world.vest()
    assert _claim(world, order, Offence.FILL_AFTER_NOTE) == OWNER_SHARE_WEI  # ...Alice is paid
    assert world.court.credits(mallory.address) == 0


# 5 -------------------------------------------------------------------------------------


def test_a_sock_puppet_drain_costs_the_operator_and_leaves_the_victim_its_share(new_world):
    """v1: ten self-made proofs took the whole bond; Alice's proof paid 0."""
    world = new_world(bond=0)
    world.court.deposit_bond(world.operator, 10 * PENALTY_WEI)
    mallory = _mallory(world)
    puppets = []
    for nonce in range(100, 110):
        order, _ = world.order(mallory, nonce=nonce)
        fill, _ = world.fill(order, seq=nonce, amount=0, filled_total=1)
        world.court.prove_malformed_fill(mallory, order, fill, _sign(world, fill))
        puppets.append(order)
    assert world.court.bond() == 10 * PENALTY_WEI  # nothing leaves before the claims vest
    order, _ = world.order(world.alice)  # Alice sees the claims and proves her own in time
    world.chain.increase_time(CLAIM_DELAY_S - 60)
    note, note_sig = world.note(order, seq=10)
    fill, fill_sig = world.fill(order, seq=12, amount=1, filled_total=1)
    world.court.prove_fill_after_note(world.alice, order, note, note_sig, fill, fill_sig)
    world.vest()
    alice = _claim(world, order, Offence.FILL_AFTER_NOTE)
    drained = sum(_claim(world, p, Offence.MALFORMED_FILL) for p in puppets)
    taken = 10 * PENALTY_WEI  # eleven claims share ten penalties' worth
    share = (taken - taken * BURN_SHARE_BPS // 10_000) // 11
    assert alice == share > 0
    assert drained == 10 * share
    assert world.court.burn_unsent() == taken * BURN_SHARE_BPS // 10_000  # the drain's cost
    assert world.court.claims_outstanding() == PENALTY_WEI  # still owed, to all eleven
    world.court.deposit_bond(world.alice, MIN_BOND_WEI)  # a later deposit pays Alice the rest
    assert alice + _claim(world, order, Offence.FILL_AFTER_NOTE) == OWNER_SHARE_WEI


# 6 -------------------------------------------------------------------------------------


def test_an_overstated_note_cannot_choose_afterwards_which_fill_it_counted(world, reverts):
    """v1: the note claimed 1.0 filled at seq 19 with one real fill of 0.2 at seq 10, and a
    fill of 0.8 signed later at seq 19 was "no fill after note"."""
    order, _ = world.order(world.alice)
    real, _ = world.fill(order, seq=10, amount=2 * ETH // 10, filled_total=2 * ETH // 10)
    later, later_sig = world.fill(order, seq=19, amount=8 * ETH // 10, filled_total=ETH)
    note, note_sig = world.note(order, seq=20, filled_amount=ETH, last_fill_seq=19)
    assert note.last_fill_hash != later.struct_hash()  # the note named no fill then
    receipt = world.court.prove_fill_after_note(
        world.alice, order, note, note_sig, later, later_sig
    )
    assert _claim_owners(world, receipt) == [(world.alice.address, Offence.FILL_AFTER_NOTE)]
    unnamed, unnamed_sig = world.note(
        order, seq=20, filled_amount=ETH, last_fill_seq=19, last_fill_hash=bytes(32)
    )
    receipt = world.court.prove_bad_note(world.alice, order, unnamed, unnamed_sig)
    assert _claim_owners(world, receipt) == [(world.alice.address, Offence.NOTE_OUT_OF_BOUNDS)]
    honest, honest_sig = world.note(order, seq=20, last_fill=real)
    with reverts("court: no fill after note"):
        world.court.prove_fill_after_note(
            world.alice,
            order,
            honest,
            honest_sig,
            *world.fill(order, seq=10, amount=2 * ETH // 10, filled_total=2 * ETH // 10),
        )


# 7 -------------------------------------------------------------------------------------


def test_a_note_cannot_keep_the_remainder_pending_for_weeks(world):
    """v1: pendingUntilMs = 2**64 - 1 allowed a fill weeks later."""
    order, _ = world.order(world.alice)
    note, note_sig = world.note(
        order, seq=20, pending_amount=ETH, pending_until_ms=2**64 - 1, received_at_ms=1_000
    )
    receipt = world.court.prove_bad_note(world.alice, order, note, note_sig)
    assert _claim_owners(world, receipt) == [(world.alice.address, Offence.NOTE_OUT_OF_BOUNDS)]
    bounded, bounded_sig = world.note(
        order, seq=20, pending_amount=ETH, pending_until_ms=1_000 + MAX_PENDING_MS,
        received_at_ms=1_000,
    )  # fmt: skip
    weeks_later, sig = world.fill(
        order, seq=30, amount=ETH, filled_total=ETH, timestamp_ms=1_000 + 21 * 86_400_000
    )
    receipt = world.court.prove_fill_after_note(
        world.alice, order, bounded, bounded_sig, weeks_later, sig
    )
    assert _claim_owners(world, receipt) == [(world.alice.address, Offence.FILL_AFTER_NOTE)]


# 8 -------------------------------------------------------------------------------------


def test_a_forced_answer_cannot_lift_the_cap_above_the_order(world, reverts):
    """v1: an answer with pendingAmount 2**128 - 1 set a cap no fill could exceed."""
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    note, note_sig = world.note(order, seq=20, pending_amount=2**128 - 1, pending_until_ms=5)
    with reverts("court: note promises more than the order"):
        world.court.answer_cancel(world.operator, order, note, note_sig)


# 9 -------------------------------------------------------------------------------------


def test_filling_during_the_answer_window_is_provable(world):
    """v1: a fill at T + W - 10 s counted by an answer at the deadline was provable by
    nothing, and the operator kept the dispute bond."""
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    requested_at = world.chain.timestamp()
    fill, fill_sig = world.fill(
        order, seq=30, amount=ETH, filled_total=ETH,
        timestamp_ms=(requested_at + ANSWER_WINDOW_S - 10) * 1000,
    )  # fmt: skip
    world.chain.set_next_block_timestamp(requested_at + ANSWER_WINDOW_S)
    note, note_sig = world.note(order, seq=31, last_fill=fill)
    world.court.answer_cancel(world.operator, order, note, note_sig)
    receipt = world.court.prove_fill_after_request(world.alice, order, fill, fill_sig)
    assert _claim_owners(world, receipt) == [(world.alice.address, Offence.FILL_AFTER_NOTE)]


# 10 ------------------------------------------------------------------------------------


def test_a_claim_proven_on_an_empty_bond_is_paid_once_the_operator_rebonds(new_world, reverts):
    """v1: the proof paid 0, was marked paid, and Alice's proof after the re-bond reverted."""
    world = new_world(bond=0)
    order, _ = world.order(world.alice)
    note, note_sig = world.note(order, seq=10)
    fill, fill_sig = world.fill(order, seq=12, amount=1, filled_total=1)
    world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill, fill_sig)
    world.vest()
    with reverts("court: nothing to claim"):
        _claim(world, order, Offence.FILL_AFTER_NOTE)
    world.court.deposit_bond(world.operator, MIN_BOND_WEI)
    assert _claim(world, order, Offence.FILL_AFTER_NOTE) == OWNER_SHARE_WEI


# 11 ------------------------------------------------------------------------------------


def test_one_default_is_one_penalty(world, reverts):
    """v1: after a default (cap 0), an honest fill made before the request was "above the
    cap": two penalties and a refund for one default."""
    order, _ = world.order(world.alice)
    before = world.chain.timestamp()
    honest, honest_sig = world.fill(
        order, seq=5, amount=ETH // 10, filled_total=ETH // 10, timestamp_ms=(before - 60) * 1000
    )
    world.court.request_cancel(world.alice, order)
    world.chain.increase_time(ANSWER_WINDOW_S + 1)
    world.court.finalize(world.bob, order)
    with reverts("court: no cap recorded"):
        world.court.prove_fill_above_cap(world.bob, order, honest, honest_sig)
    with reverts("court: fill within the pending bound"):
        world.court.prove_fill_after_request(world.bob, order, honest, honest_sig)
    assert world.court.claims_outstanding() == PENALTY_WEI


# 12 ------------------------------------------------------------------------------------


def test_an_offence_signed_as_the_exit_delay_ends_is_still_paid(world, reverts):
    """v1: a fill after note signed just before the delay ended, then withdrawBond in the
    next block: the victim's proof paid 0."""
    order, _ = world.order(world.alice)
    world.court.announce_exit(world.operator)
    announced = world.chain.timestamp()
    note, note_sig = world.note(order, seq=10)
    fill, fill_sig = world.fill(order, seq=12, amount=1, filled_total=1)
    world.chain.set_next_block_timestamp(announced + EXIT_DELAY_S)
    with reverts("court: exit delay not over"):
        world.court.withdraw_bond(world.operator)
    world.court.prove_fill_after_note(world.alice, order, note, note_sig, fill, fill_sig)
    world.chain.set_next_block_timestamp(announced + EXIT_DELAY_S + CLAIM_DELAY_S)
    world.court.withdraw_bond(world.operator)
    world.vest()
    assert _claim(world, order, Offence.FILL_AFTER_NOTE) == OWNER_SHARE_WEI


# 13 ------------------------------------------------------------------------------------


def test_both_owners_of_one_equivocated_seq_are_paid(world):
    """v1: whoever proved first was paid; the other owner's proof reverted."""
    alice_order, _ = world.order(world.alice)
    bob_order, _ = world.order(world.bob)
    alice_fill, alice_sig = world.fill(alice_order, seq=7, amount=1, filled_total=1)
    bob_fill, bob_sig = world.fill(bob_order, seq=7, amount=1, filled_total=1)
    first = world.court.prove_equivocation_fills(
        world.alice, alice_order, alice_fill, alice_sig, bob_fill, bob_sig
    )
    second = world.court.prove_equivocation_fills(
        world.bob, bob_order, bob_fill, bob_sig, alice_fill, alice_sig
    )
    assert _claim_owners(world, first) + _claim_owners(world, second) == [
        (world.alice.address, Offence.FILL_EQUIVOCATION),
        (world.bob.address, Offence.FILL_EQUIVOCATION),
    ]
