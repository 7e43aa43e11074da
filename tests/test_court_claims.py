"""Claims: filed by proofs, grouped in windows, vested after the claim delay, paid from
the bond pro rata when it is short (a share burnt), owed until paid; and the bond's exit
waits for them."""

from __future__ import annotations

from conftest import (
    BURN_SHARE_BPS,
    CLAIM_DELAY_S,
    EXIT_DELAY_S,
    MIN_BOND_WEI,
    OWNER_SHARE_WEI,
    PENALTY_WEI,
    World,
)

from cancelnote.crypto import Signer
from cancelnote.dispute.court import DEAD_ADDRESS, Offence, WindowStatus
from cancelnote.messages import Order


def _malformed(world: World, owner: Signer, nonce: int) -> Order:
    """File a malformed-fill claim for ``owner``'s order ``nonce``; returns the order."""
    order, _ = world.order(owner, nonce=nonce)
    fill, sig = world.fill(order, seq=nonce, amount=0, filled_total=1)
    world.court.prove_malformed_fill(world.bob, order, fill, sig)
    return order


def _claim(world: World, order: Order) -> int:
    """Claim ``order``'s malformed-fill claim; returns what its owner was paid."""
    receipt = world.court.claim(world.deployer, order, Offence.MALFORMED_FILL)
    return sum(e.args["paid"] for e in world.court.events(receipt) if e.name == "ClaimPaid")


def test_a_claim_vests_a_claim_delay_after_its_window_closes(world, reverts):
    order = _malformed(world, world.alice, 1)
    opened = world.chain.timestamp()
    digest = order.digest(world.court.domain)
    status = world.court.claim_of(digest, Offence.MALFORMED_FILL)
    assert (status.window, status.paid, status.vests_at) == (1, 0, opened + 2 * CLAIM_DELAY_S)
    world.chain.set_next_block_timestamp(opened + 2 * CLAIM_DELAY_S - 1)
    with reverts("court: claim not vested"):
        _claim(world, order)
    assert _claim(world, order) == OWNER_SHARE_WEI
    assert world.court.credits(world.alice.address) == OWNER_SHARE_WEI
    assert world.court.burn_unsent() == PENALTY_WEI - OWNER_SHARE_WEI
    assert (world.court.bond(), world.court.claims_outstanding()) == (
        MIN_BOND_WEI - PENALTY_WEI,
        0,
    )
    with reverts("court: nothing to claim"):
        _claim(world, order)


def test_claims_filed_within_a_claim_delay_share_a_window(world):
    first = _malformed(world, world.alice, 1)
    world.chain.increase_time(CLAIM_DELAY_S - 2)
    second = _malformed(world, world.bob, 2)  # the window is still open
    world.chain.increase_time(2)
    third = _malformed(world, world.alice, 3)  # it closed: the next window
    windows = [
        world.court.claim_of(o.digest(world.court.domain), Offence.MALFORMED_FILL).window
        for o in (first, second, third)
    ]
    assert windows == [1, 1, 2]
    assert world.court.window_of(1).count == 2 and world.court.window_of(2).count == 1
    assert world.court.window_of(3) == WindowStatus(0, 0, 0, 0)


def test_a_short_bond_pays_a_window_pro_rata_and_the_rest_stays_owed(new_world, reverts):
    world = new_world(bond=MIN_BOND_WEI)  # three penalties' worth
    orders = [_malformed(world, world.alice, n) for n in range(1, 5)]  # four claims
    world.vest()
    receipt = world.court.settle(world.deployer, 1)
    [settled] = world.court.events(receipt)
    assert settled.args == {"window": 1, "owed": 4 * PENALTY_WEI, "taken": MIN_BOND_WEI}
    share = (MIN_BOND_WEI - MIN_BOND_WEI * BURN_SHARE_BPS // 10_000) // 4
    assert [_claim(world, o) for o in orders] == [share] * 4
    assert world.court.bond() == 0
    assert world.court.claims_outstanding() == PENALTY_WEI
    with reverts("court: nothing to settle"):
        world.court.settle(world.deployer, 1)
    # A later deposit pays what is owed (the owners' share of it), then the rest is bond.
    world.court.deposit_bond(world.operator, MIN_BOND_WEI)
    paid_later = [_claim(world, o) for o in orders]
    assert sum(paid_later) + 4 * share == 4 * OWNER_SHARE_WEI
    assert world.court.bond() == MIN_BOND_WEI - PENALTY_WEI
    assert world.court.claims_outstanding() == 0


def test_windows_are_paid_in_order(new_world, reverts):
    world = new_world(bond=MIN_BOND_WEI)
    early = [_malformed(world, world.alice, n) for n in range(1, 5)]  # window 1: short
    world.chain.increase_time(CLAIM_DELAY_S)
    late = _malformed(world, world.bob, 9)  # window 2
    world.vest()
    with reverts("court: nothing to settle"):  # window 1 first
        world.court.settle(world.deployer, 2)
    with reverts("court: nothing to claim"):
        _claim(world, late)
    world.court.settle(world.deployer, 1)
    world.court.deposit_bond(world.operator, MIN_BOND_WEI)
    with reverts("court: nothing to settle"):  # window 1 is still short of its due
        world.court.settle(world.deployer, 2)
    world.court.settle(world.deployer, 1)
    assert _claim(world, late) == OWNER_SHARE_WEI
    assert sum(_claim(world, o) for o in early) == 4 * OWNER_SHARE_WEI


def test_the_burn_share_goes_to_the_burn_address(world, reverts):
    order = _malformed(world, world.alice, 1)
    world.vest()
    _claim(world, order)
    before = world.chain.balance(DEAD_ADDRESS)
    receipt = world.court.send_burn(world.deployer)
    assert world.court.events(receipt)[0].args == {"amount": PENALTY_WEI - OWNER_SHARE_WEI}
    assert world.chain.balance(DEAD_ADDRESS) == before + PENALTY_WEI - OWNER_SHARE_WEI
    with reverts("court: nothing to burn"):
        world.court.send_burn(world.deployer)


def test_claim_needs_a_filed_claim_of_that_order(world, reverts):
    order, _ = world.order(world.alice)
    with reverts("court: no such claim"):
        world.court.claim(world.bob, order, Offence.MALFORMED_FILL)
    with reverts("court: no such claim"):
        world.court.claim(world.bob, order, Offence.DEFAULT)


def test_the_bond_leaves_only_after_the_exit_and_claim_delays_keeping_what_is_owed(world, reverts):
    world.court.announce_exit(world.operator)
    announced = world.chain.timestamp()
    world.chain.set_next_block_timestamp(announced + EXIT_DELAY_S)
    order = _malformed(world, world.alice, 1)  # signed at the last moment of the exit delay
    world.chain.set_next_block_timestamp(announced + EXIT_DELAY_S + CLAIM_DELAY_S - 1)
    with reverts("court: exit delay not over"):
        world.court.withdraw_bond(world.operator)
    receipt = world.court.withdraw_bond(world.operator)
    assert world.court.events(receipt)[0].args == {
        "amount": MIN_BOND_WEI - PENALTY_WEI,
        "kept": PENALTY_WEI,
    }
    assert world.court.bond() == PENALTY_WEI
    world.vest()
    assert _claim(world, order) == OWNER_SHARE_WEI
