"""Attacks on the court: replayed and malformed signatures, early exits, double claims,
re-entrancy through a payout, a bond too small to pay, and bad constructor parameters."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import vyper
from conftest import (
    ANSWER_WINDOW_S,
    DISPUTE_BOND_WEI,
    EXIT_DELAY_S,
    MIN_BOND_WEI,
    PENALTY_WEI,
    World,
)
from eth_abi import encode as abi_encode

from cancelnote.crypto import SECP256K1_N
from cancelnote.dispute.court import DEV_PARAMETERS, Court
from cancelnote.messages import make_sender

REENTER_VY = Path(__file__).resolve().parent.parent / "contracts" / "test" / "Reenter.vy"


def _rule_1a(world: World, owner: bytes | None = None) -> tuple:
    """A provable fill after note (rule 1 (a)): (note, note_sig, fill, fill_sig).

    ``owner`` replaces Alice as the order's owner (for a payee without a key).
    """
    order, _ = world.order(world.alice)
    if owner is not None:
        order = attrs.evolve(order, sender=make_sender(owner))
    note, note_sig = world.note(order, seq=10, filled_amount=3, last_fill_seq=5)
    fill, fill_sig = world.fill(order, seq=12, amount=1, filled_total=4)
    return note, note_sig, fill, fill_sig


# --- signatures -----------------------------------------------------------------------


def test_evidence_signed_for_another_chain_is_worthless(new_world, reverts):
    here, there = new_world(chain_id=1337), new_world(chain_id=4242)
    assert here.court.address == there.court.address  # same deployer and nonce
    with reverts("court: not signed by the operator"):
        there.court.prove_fill_after_note(there.bob, *_rule_1a(here))


def test_evidence_signed_for_another_court_is_worthless(world, reverts):
    twin = Court.deploy(
        world.chain,
        world.deployer,
        operator=world.operator.address,
        **DEV_PARAMETERS,
    )
    twin.deposit_bond(world.operator, MIN_BOND_WEI)
    with reverts("court: not signed by the operator"):
        twin.prove_fill_after_note(world.bob, *_rule_1a(world))


def test_the_high_s_twin_of_a_valid_signature_is_refused(world, reverts):
    note, note_sig, fill, fill_sig = _rule_1a(world)
    s = int.from_bytes(fill_sig[32:64], "big")
    twin = fill_sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - fill_sig[64]])
    with reverts("court: signature s is high"):
        world.court.prove_fill_after_note(world.bob, note, note_sig, fill, twin)
    world.court.prove_fill_after_note(world.bob, note, note_sig, fill, fill_sig)


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
    note, note_sig, fill, fill_sig = _rule_1a(world)
    with reverts(reason):
        world.court.prove_fill_after_note(world.bob, note, mangle(note_sig), fill, fill_sig)


def test_evidence_signed_by_someone_else_is_refused(world, reverts):
    note, _, fill, fill_sig = _rule_1a(world)
    with reverts("court: not signed by the operator"):
        world.court.prove_fill_after_note(
            world.bob, note, note.sign(world.alice, world.court.domain), fill, fill_sig
        )


# --- the bond -------------------------------------------------------------------------


def test_exit_only_after_the_delay(world, reverts):
    with reverts("court: exit not announced"):
        world.court.withdraw_bond(world.operator)
    receipt = world.court.announce_exit(world.operator)
    announced = world.chain.timestamp()
    assert world.court.events(receipt)[0].args == {
        "announcedAt": announced,
        "withdrawableAt": announced + EXIT_DELAY_S,
    }
    with reverts("court: exit already announced"):
        world.court.announce_exit(world.operator)
    with reverts("court: exit announced"):
        world.court.deposit_bond(world.operator, 1)
    world.chain.set_next_block_timestamp(announced + EXIT_DELAY_S - 1)
    with reverts("court: exit delay not over"):
        world.court.withdraw_bond(world.operator)
    world.court.prove_fill_after_note(world.bob, *_rule_1a(world))  # slashing goes on
    world.court.withdraw_bond(world.operator)
    assert world.court.credits(world.operator.address) == MIN_BOND_WEI - PENALTY_WEI
    assert (world.court.bond(), world.court.exit_announced_at()) == (0, 0)


def test_only_the_operator_manages_its_exit(world, reverts):
    with reverts("court: caller is not the operator"):
        world.court.announce_exit(world.alice)
    world.court.announce_exit(world.operator)
    world.chain.increase_time(EXIT_DELAY_S)
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


def test_a_short_bond_pays_what_is_left_and_says_so(new_world):
    world = new_world(bond=MIN_BOND_WEI + PENALTY_WEI // 2)
    paid = []
    for nonce in range(1, 6):
        order, _ = world.order(world.alice, nonce=nonce)
        fill, sig = world.fill(order, seq=4, amount=0, filled_total=1)
        events = world.court.events(world.court.prove_malformed_fill(world.bob, fill, sig))
        paid.append([(e.name, e.args["paid"]) for e in events])
    full = [("Slashed", PENALTY_WEI)]
    assert paid == [
        full,
        full,
        full,
        [("Slashed", PENALTY_WEI // 2), ("SlashShortfall", PENALTY_WEI // 2)],
        [("Slashed", 0), ("SlashShortfall", 0)],
    ]
    assert world.court.bond() == 0
    assert world.court.credits(world.alice.address) == MIN_BOND_WEI + PENALTY_WEI // 2


# --- money out ------------------------------------------------------------------------


def test_withdraw_pays_the_credit_once(world, reverts):
    world.court.prove_fill_after_note(world.bob, *_rule_1a(world))
    before = world.chain.balance(world.alice.address)
    receipt = world.court.withdraw(world.alice)
    assert world.court.events(receipt)[0].args == {
        "account": world.alice.address,
        "amount": PENALTY_WEI,
    }
    assert world.chain.balance(world.alice.address) > before + PENALTY_WEI * 99 // 100  # less gas
    with reverts("court: nothing to withdraw"):
        world.court.withdraw(world.alice)


def test_a_payee_cannot_reenter_withdraw(world):
    source = REENTER_VY.read_text(encoding="utf-8")
    initcode = bytes.fromhex(
        vyper.compile_code(source, output_formats=["bytecode"])["bytecode"][2:]
    )
    attacker = world.chain.deploy(
        world.bob, initcode + abi_encode(["address"], [world.court.address])
    ).contract_address
    world.court.prove_fill_after_note(world.bob, *_rule_1a(world, owner=attacker))
    world.court.prove_fill_after_note(world.bob, *_rule_1a(world, owner=world.alice.address))
    court_before = world.chain.balance(world.court.address)

    def attacker_view(name: str) -> bool:
        selector = vyper.utils.method_id(f"{name}()")
        return world.chain.call(attacker, selector)[-1] == 1

    world.chain.transact(world.bob, attacker, vyper.utils.method_id("withdrawFromCourt()"))
    assert attacker_view("attempted") and not attacker_view("reentered")
    assert world.chain.balance(attacker) == PENALTY_WEI
    assert world.chain.balance(world.court.address) == court_before - PENALTY_WEI
    assert world.court.credits(world.alice.address) == PENALTY_WEI  # others' credit intact


# --- construction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"operator": bytes(20)}, "court: operator is the zero address"),
        ({"answer_window_s": 0}, "court: answer window is zero"),
        ({"exit_delay_s": ANSWER_WINDOW_S}, "court: exit delay must exceed the answer window"),
        ({"exit_delay_s": 2**32}, "court: exit delay too long"),
        ({"min_bond_wei": PENALTY_WEI - 1}, "court: minimum bond below the penalty"),
    ],
    ids=[
        "zero-operator",
        "zero-window",
        "delay-not-above-window",
        "delay-too-long",
        "min-bond-below-penalty",
    ],
)
def test_bad_parameters_are_refused_at_deployment(world, reverts, change, reason):
    params = {
        "operator": world.operator.address,
        "answer_window_s": ANSWER_WINDOW_S,
        "penalty_wei": PENALTY_WEI,
        "min_bond_wei": MIN_BOND_WEI,
        "dispute_bond_wei": DISPUTE_BOND_WEI,
        "exit_delay_s": EXIT_DELAY_S,
        "halt_on_default": True,
    }
    with reverts(reason):
        Court.deploy(world.chain, world.deployer, **(params | change))
