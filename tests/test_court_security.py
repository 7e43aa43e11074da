"""Attacks on the court: replayed and malformed signatures, early exits, re-entrancy
through a payout, and bad constructor parameters."""

from __future__ import annotations

import attrs
import pytest
import vyper
from conftest import (
    ANSWER_WINDOW_S,
    CLAIM_DELAY_S,
    EXIT_DELAY_S,
    MIN_BOND_WEI,
    OWNER_SHARE_WEI,
    PENALTY_WEI,
    World,
    deploy_test_contract,
)

from cancelnote.crypto import SECP256K1_N
from cancelnote.dispute.chain import TransactionReverted
from cancelnote.dispute.court import DEV_PARAMETERS, Court, Offence
from cancelnote.messages import Order, make_sender


def _rule_1a(world: World, owner: bytes | None = None, nonce: int = 1) -> tuple:
    """A provable fill after note (rule 1 (a)): (order, note, note_sig, fill, fill_sig).

    ``owner`` replaces Alice as the order's owner (for a payee without a key).
    """
    order, _ = world.order(world.alice, nonce=nonce)
    if owner is not None:
        order = attrs.evolve(order, sender=make_sender(owner))
    note, note_sig = world.note(order, seq=10, filled_amount=3, last_fill_seq=5)
    fill, fill_sig = world.fill(order, seq=12, amount=1, filled_total=4)
    return order, note, note_sig, fill, fill_sig


def _paid(world: World, order: Order) -> None:
    """Let the fill-after-note claim of ``order`` vest and credit its owner."""
    world.vest()
    world.court.claim(world.deployer, order, Offence.FILL_AFTER_NOTE)


# --- signatures -----------------------------------------------------------------------


def _resigned(world: World, proof: tuple, domain: object) -> tuple:
    """``proof`` (from :func:`_rule_1a`) with its note and fill re-signed in ``domain``."""
    order, note, _, fill, _ = proof
    return order, note, note.sign(world.operator, domain), fill, fill.sign(world.operator, domain)


def test_evidence_signed_for_another_chain_is_worthless(new_world, reverts):
    here, there = new_world(chain_id=1337), new_world(chain_id=4242)
    assert here.court.address == there.court.address  # same deployer and nonce
    proof = _rule_1a(there)  # about there's order, but signed for here
    with reverts("court: not signed by the operator"):
        there.court.prove_fill_after_note(there.bob, *_resigned(there, proof, here.court.domain))
    with reverts("court: note is for another order"):  # here's order is another digest there
        there.court.prove_fill_after_note(there.bob, *_rule_1a(here))


def test_evidence_signed_for_another_court_is_worthless(world, reverts):
    twin = Court.deploy(
        world.chain,
        world.deployer,
        operator=world.operator.address,
        **DEV_PARAMETERS,
    )
    twin.deposit_bond(world.operator, MIN_BOND_WEI)
    proof = _rule_1a(attrs.evolve(world, court=twin))  # about twin's order, signed for world
    with reverts("court: not signed by the operator"):
        twin.prove_fill_after_note(world.bob, *_resigned(world, proof, world.court.domain))


def test_the_high_s_twin_of_a_valid_signature_is_refused(world, reverts):
    order, note, note_sig, fill, fill_sig = _rule_1a(world)
    s = int.from_bytes(fill_sig[32:64], "big")
    twin = fill_sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - fill_sig[64]])
    with reverts("court: signature s is high"):
        world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill, twin)
    world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill, fill_sig)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        pytest.param(
            lambda sig: sig[:64] + b"\x00", "court: signature v is not 27 or 28", id="v-0"
        ),
        pytest.param(
            lambda sig: sig[:64] + b"\x1d", "court: signature v is not 27 or 28", id="v-29"
        ),
        pytest.param(lambda sig: sig[:64], "court: signature is not 65 bytes", id="64-bytes"),
        pytest.param(lambda sig: bytes(64) + sig[64:], "court: invalid signature", id="zero-r-s"),
        pytest.param(
            lambda sig: bytes(32) + sig[32:],
            "court: invalid signature",
            id="zero-r-recovers-nobody",
        ),
    ],
)
def test_malformed_signatures_are_refused(world, reverts, mangle, reason):
    order, note, note_sig, fill, fill_sig = _rule_1a(world)
    with reverts(reason):
        world.court.prove_fill_after_note(world.bob, order, note, mangle(note_sig), fill, fill_sig)


def test_evidence_signed_by_someone_else_is_refused(world, reverts):
    order, note, _, fill, fill_sig = _rule_1a(world)
    with reverts("court: not signed by the operator"):
        world.court.prove_fill_after_note(
            world.bob, order, note, note.sign(world.alice, world.court.domain), fill, fill_sig
        )


# --- the bond -------------------------------------------------------------------------


def test_exit_only_after_the_delay(world, reverts):
    with reverts("court: exit not announced"):
        world.court.withdraw_bond(world.operator)
    receipt = world.court.announce_exit(world.operator)
    announced = world.chain.timestamp()
    assert world.court.events(receipt)[0].args == {
        "announcedAt": announced,
        "withdrawableAt": announced + EXIT_DELAY_S + CLAIM_DELAY_S,
    }
    with reverts("court: exit already announced"):
        world.court.announce_exit(world.operator)
    with reverts("court: exit announced"):
        world.court.deposit_bond(world.operator, 1)
    world.chain.set_next_block_timestamp(announced + EXIT_DELAY_S + CLAIM_DELAY_S - 1)
    with reverts("court: exit delay not over"):
        world.court.withdraw_bond(world.operator)
    order, *proof = _rule_1a(world)
    world.court.prove_fill_after_note(world.bob, order, *proof)  # proofs go on
    _paid(world, order)
    world.court.withdraw_bond(world.operator)
    assert world.court.credits(world.operator.address) == MIN_BOND_WEI - PENALTY_WEI
    assert (world.court.bond(), world.court.exit_announced_at()) == (0, 0)


def test_only_the_operator_manages_its_exit(world, reverts):
    with reverts("court: caller is not the operator"):
        world.court.announce_exit(world.alice)
    world.court.announce_exit(world.operator)
    world.chain.increase_time(EXIT_DELAY_S + CLAIM_DELAY_S)
    with reverts("court: caller is not the operator"):
        world.court.withdraw_bond(world.alice)


def test_deposits_must_reach_the_minimum_bond(new_world, reverts):
    world = new_world(bond=0)
    with reverts("court: empty deposit"):
        world.court.deposit_bond(world.operator, 0)
    with reverts("court: bond below the minimum"):
        world.court.deposit_bond(world.operator, MIN_BOND_WEI - 1)
    world.court.deposit_bond(world.alice, MIN_BOND_WEI)  # anyone may bond the operator
    world.court.deposit_bond(world.operator, 1)
    assert world.court.bond() == MIN_BOND_WEI + 1


# --- money out ------------------------------------------------------------------------


def test_withdraw_pays_the_credit_once(world, reverts):
    order, *proof = _rule_1a(world)
    world.court.prove_fill_after_note(world.bob, order, *proof)
    _paid(world, order)
    before = world.chain.balance(world.alice.address)
    receipt = world.court.withdraw(world.alice)
    assert world.court.events(receipt)[0].args == {
        "account": world.alice.address,
        "amount": OWNER_SHARE_WEI,
    }
    assert world.chain.balance(world.alice.address) > before + OWNER_SHARE_WEI * 99 // 100
    with reverts("court: nothing to withdraw"):
        world.court.withdraw(world.alice)


def test_a_payee_cannot_reenter_withdraw(world):
    attacker = deploy_test_contract(
        world.chain, world.bob, "Reenter", ["address"], [world.court.address]
    )
    proofs = [_rule_1a(world, owner=attacker, nonce=1), _rule_1a(world, world.alice.address, 2)]
    for proof in proofs:
        world.court.prove_fill_after_note(world.bob, *proof)
    world.vest()
    for order, *_ in proofs:
        world.court.claim(world.deployer, order, Offence.FILL_AFTER_NOTE)
    court_before = world.chain.balance(world.court.address)

    def attacker_view(name: str) -> bool:
        selector = vyper.utils.method_id(f"{name}()")
        return world.chain.call(attacker, selector)[-1] == 1

    world.chain.transact(world.bob, attacker, vyper.utils.method_id("withdrawFromCourt()"))
    assert attacker_view("attempted") and not attacker_view("reentered")
    assert world.chain.balance(attacker) == OWNER_SHARE_WEI
    assert world.chain.balance(world.court.address) == court_before - OWNER_SHARE_WEI
    assert world.court.credits(world.alice.address) == OWNER_SHARE_WEI  # others' credit intact


# --- construction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"operator": bytes(20)}, "court: operator is the zero address"),
        ({"answer_window_s": 0}, "court: answer window is zero"),
        ({"exit_delay_s": ANSWER_WINDOW_S}, "court: exit delay must exceed the answer window"),
        ({"exit_delay_s": 2**32}, "court: exit delay too long"),
        ({"min_bond_wei": PENALTY_WEI - 1}, "court: minimum bond below the penalty"),
        ({"min_bond_wei": 2**128}, "court: minimum bond too large"),
        ({"penalty_wei": 2**88, "min_bond_wei": 2**88}, "court: penalty too large"),
        ({"max_pending_ms": 0}, "court: pending bound is zero"),
        (
            {"max_pending_ms": ANSWER_WINDOW_S * 1000 + 1},
            "court: pending bound beyond the answer window",
        ),
        ({"claim_delay_s": 0}, "court: claim delay is zero"),
        ({"claim_delay_s": 2**32}, "court: claim delay too long"),
        ({"burn_share_bps": 10_001}, "court: burn share above 100%"),
        ({"burn_address": bytes(20)}, "court: burn address is the zero address"),
    ],
    ids=[
        "zero-operator",
        "zero-window",
        "delay-not-above-window",
        "delay-too-long",
        "min-bond-below-penalty",
        "min-bond-too-large",
        "penalty-too-large",
        "zero-pending-bound",
        "pending-bound-beyond-window",
        "zero-claim-delay",
        "claim-delay-too-long",
        "burn-share-above-all",
        "zero-burn-address",
    ],
)
def test_bad_parameters_are_refused_at_deployment(world, reverts, change, reason):
    params = {**DEV_PARAMETERS, "operator": world.operator.address}
    with reverts(reason):
        Court.deploy(world.chain, world.deployer, **(params | change))


# --- out-of-range fields ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "value"),
    [
        pytest.param(1, 2**32, id="order-productId-above-uint32"),
        pytest.param(6 + 3, 2**128, id="fill-amount-above-uint128"),
        pytest.param(3, 2**255, id="order-amount-not-a-sign-extended-int128"),
    ],
)
def test_a_field_out_of_its_type_is_refused_before_any_rule_and_changes_nothing(world, word, value):
    """The ABI decoder of the court (Vyper's) refuses a word out of its field's range
    before the function runs: the transaction reverts (without a reason string: no
    ``court: ...`` check is reached) and nothing changes."""
    order, _ = world.order(world.alice)
    fill, sig = world.fill(order, seq=4, amount=0, filled_total=1)
    data = bytearray(world.court.encode_call("proveMalformedFill", order, fill, sig))
    data[4 + 32 * word : 4 + 32 * (word + 1)] = value.to_bytes(32, "big")
    before = (world.court.claims_outstanding(), world.chain.balance(world.court.address))
    with pytest.raises(TransactionReverted) as refused:
        world.chain.transact(world.bob, world.court.address, bytes(data))
    assert refused.value.reason == "reverted without a reason"
    assert (world.court.claims_outstanding(), world.chain.balance(world.court.address)) == before
    world.court.prove_malformed_fill(world.bob, order, fill, sig)  # the clean call is taken
