"""The Python binding: events decoded from the ABI, views in package conventions, reverts
as TransactionReverted with the contract's reason."""

from __future__ import annotations

import attrs
import pytest
from conftest import MIN_BOND_WEI

from cancelnote.contracts import load_artifact
from cancelnote.dispute.chain import ChainError
from cancelnote.dispute.court import Court, CourtEvent


def test_events_are_decoded_by_name_with_addresses_as_bytes(world):
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    history = world.court.get_events()
    assert [event.name for event in history] == ["BondDeposited", "CancelRequested"]
    assert history[0] == CourtEvent("BondDeposited", {"amount": MIN_BOND_WEI, "bond": MIN_BOND_WEI})
    assert history[1].args["owner"] == world.alice.address
    assert list(history[1].args) == [
        "owner",
        "digest",
        "requester",
        "requestId",
        "sender",
        "productId",
        "priceX18",
        "amount",
        "expiration",
        "nonce",
        "requestedAt",
        "deadline",
    ]


def test_a_log_of_another_contract_is_not_decoded(world):
    receipt = world.court.deposit_bond(world.alice, 1)
    foreign = attrs.evolve(receipt.logs[0], address=bytes(20))
    with pytest.raises(ChainError):
        world.court.decode_log(foreign)


def test_at_binds_an_existing_court(world):
    same = Court.at(world.chain, world.court.address)
    assert same.bond() == MIN_BOND_WEI
    assert same.operator() == world.operator.address
    assert same.domain == world.court.domain


def test_dry_run_reverts_carry_the_reason(world, reverts):
    order, _ = world.order(world.alice)
    with reverts("court: cancel not requested"):
        world.chain.call(world.court.address, world.court.encode_call("finalize", order))


def test_every_event_about_an_owner_indexes_the_owners_address():
    """Watchtowers filter the court's logs by owner (a topic), so every event that
    concerns an order's owner carries the owner's address as an indexed argument."""
    about_owners = {"Slashed", "ClaimPaid", "CancelRequested", "CancelAnswered", "CancelDefaulted"}
    events = {e["name"]: e for e in load_artifact("CancelCourt").abi if e["type"] == "event"}
    assert about_owners <= set(events)
    for name in about_owners:
        owner = next(i for i in events[name]["inputs"] if i["name"] == "owner")
        assert (owner["type"], owner["indexed"]) == ("address", True), name
