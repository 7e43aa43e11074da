"""The client against each operator behaviour, in one process: engine, clients, court.

For every adversarial policy the client must find the offence in its own evidence, the
court must file the claim for it and pay it once vested; an honest operator must never be
disputed, in-flight fills, cancel races, replaces and forced cancels included.
"""

from __future__ import annotations

import json
import random

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cancelnote.client.evidence import EvidenceStore, parse_bundle
from cancelnote.client.testing import COURT_PARAMETERS, Market
from cancelnote.client.verifier import Kind, Verifier
from cancelnote.client.watchtower import Watchtower
from cancelnote.dispute.court import CancelState, Offence
from cancelnote.messages import Fill
from cancelnote.operator.policies import (
    Backdate,
    Delay,
    Equivocate,
    FillAfterNote,
    Ignore,
    WithholdNotes,
)

PRICE = 100 * 10**18
SIZE = 10**18
PENALTY = COURT_PARAMETERS["penalty_wei"]
OWNER_SHARE = PENALTY - PENALTY * COURT_PARAMETERS["burn_share_bps"] // 10_000
W = COURT_PARAMETERS["answer_window_s"]
CLAIM_DELAY = COURT_PARAMETERS["claim_delay_s"]
DISPUTE_BOND = COURT_PARAMETERS["dispute_bond_wei"]


def kinds(desk) -> set[str]:
    return {f.kind for f in desk.disputable()}


def vest(market) -> None:
    """Let every claim filed so far vest (blocks keep coming on a live chain)."""
    market.chain.increase_time(2 * CLAIM_DELAY)
    market.chain.mine()


def statuses(desk, kind: str) -> list[str]:
    return [f.status for f in desk.store.findings() if f.kind == kind]


def assert_claimed_paid_and_withdrawn(market, desk, offence_kind: str, refund: int = 0) -> None:
    """One watchtower round proves it (a claim is filed); once vested the next round has it
    credited to the owner, and the one after withdraws it."""
    balance = market.chain.balance(desk.trader.signer.address)
    claimed = [o for o in market.watch(desk) if o.outcome == "claimed"]
    assert claimed and claimed[0].owed == PENALTY, claimed
    assert statuses(desk, offence_kind) == ["claimed"]
    assert [o.outcome for o in market.watch(desk)] == []  # not vested yet: wait
    vest(market)
    paid = [o for o in market.watch(desk) if o.outcome == "paid"]
    assert paid and paid[0].paid == OWNER_SHARE + refund, paid
    assert statuses(desk, offence_kind) == ["paid"]
    withdrawn = [o for o in market.watch(desk) if o.outcome == "withdrawn"]
    assert withdrawn and desk.store.payouts()[0][2] == OWNER_SHARE + refund
    assert market.chain.balance(desk.trader.signer.address) > balance + OWNER_SHARE * 9 // 10


# ---------------------------------------------------------------------------------------
# An honest operator is never disputed.


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    settlement_delay_ms=st.sampled_from([0, 700, 5_000]),
    latency_ms=st.sampled_from([0, 40, 1_500]),
)
def test_honest_operator_is_never_disputed_whatever_the_history(
    tmp_path_factory, seed, settlement_delay_ms, latency_ms
):
    rng = random.Random(seed)
    market = Market.open(
        tmp_path_factory.mktemp("m"),
        settlement_delay_ms=settlement_delay_ms,
        latency_ms=latency_ms,
    )
    desks = [market.desk(2), market.desk(3), market.desk(4, "hedge")]
    live = {d.sender: [] for d in desks}
    live[desks[0].sender].append(market.place(desks[0], 1, PRICE, -2 * SIZE))
    market.place(desks[1], 1, PRICE, SIZE)  # at least one trade in every example
    for _ in range(40):
        desk = rng.choice(desks)
        move = rng.random()
        if move < 0.5:
            amount = rng.choice([1, 2, 3]) * SIZE // 2 * rng.choice([1, -1])
            price = PRICE + rng.randint(-3, 3) * 10**18
            live[desk.sender].append(market.place(desk, rng.choice([1, 2]), price, amount))
        elif move < 0.7 and live[desk.sender]:
            chosen = rng.sample(live[desk.sender], rng.randint(1, len(live[desk.sender])))
            market.cancel(desk, chosen)
            live[desk.sender] = [p for p in live[desk.sender] if p not in chosen]
        elif move < 0.78:
            market.cancel_products(desk, rng.choice([(), (1,), (2,)]))
            live[desk.sender] = []
        elif move < 0.85 and live[desk.sender]:
            old = live[desk.sender].pop()
            request = market.cancel_and_place(desk, [old], 1, PRICE, SIZE)
            live[desk.sender].append(request.place_order)
        elif move < 0.9 and live[desk.sender]:  # forced on-chain, whatever the desk holds
            forced = live[desk.sender].pop(rng.randrange(len(live[desk.sender])))
            market.force_cancel(desk, forced)
            market.advance(rng.choice([0, 10, 1_000]))  # the operator's watcher lags
            market.operator_answers(desk, forced)
        elif move < 0.93:
            market.restart()
        else:
            market.advance(rng.choice([10, 300, 1_000, 6_000]))
    market.cancel_products(desks[0], ())  # at least one note in every example
    market.advance(60_000)  # everything in flight settles; every deadline passes
    market.restart()  # and the journal replays into the same state
    for desk in desks:
        assert desk.store.findings() == [], [f.detail for f in desk.store.findings()]
        assert all(o.outcome != "won" for o in market.watch(desk))
        assert desk.store.disputes() == []
    assert sum(len(d.store.notes()) for d in desks) > 0
    assert sum(len(d.store.fills()) for d in desks) > 0


def test_note_with_fills_in_flight_then_their_fills_are_not_offences(tmp_path):
    market = Market.open(tmp_path, settlement_delay_ms=2_000)
    alice, bob = market.desk(2), market.desk(3)
    sell = market.place(alice, 1, PRICE, -2 * SIZE)
    market.place(bob, 1, PRICE, SIZE)  # matched now, settles in 2 s
    market.advance(100)
    market.cancel(alice, [sell])
    (note,) = alice.store.notes()
    assert note.note.pending_amount == SIZE and note.note.filled_amount == 0
    market.advance(2_000)
    (fill,) = alice.store.fills()
    assert fill.fill.seq > note.note.seq
    assert alice.store.findings() == [] and market.watch(alice) == []


# ---------------------------------------------------------------------------------------
# Each cheat is found in the client's own evidence and paid by the court.


@pytest.mark.parametrize("latency_ms", [0, 250])
def test_fill_after_note_is_found_and_the_court_pays_the_owner(tmp_path, latency_ms):
    market = Market.open(tmp_path, policy=FillAfterNote(), latency_ms=latency_ms)
    alice, bob = market.desk(2), market.desk(3)
    sell = market.place(alice, 1, PRICE, -SIZE)
    market.cancel(alice, [sell])
    market.place(bob, 1, PRICE, SIZE)  # the cancelled order still fills
    market.advance(2 * latency_ms)
    assert kinds(alice) == {Kind.FILL_AFTER_NOTE}
    assert_claimed_paid_and_withdrawn(market, alice, Kind.FILL_AFTER_NOTE)
    assert bob.disputable() == []  # bob's fill is a normal fill of his own order


def test_backdated_note_that_hides_a_fill_is_found_and_paid(tmp_path):
    market = Market.open(tmp_path, policy=Backdate(10_000))
    alice, bob = market.desk(2), market.desk(3)
    sell = market.place(alice, 1, PRICE, -2 * SIZE)
    market.advance(5_000)
    market.place(bob, 1, PRICE, SIZE)  # fills half, 5 s before the cancel
    market.advance(5_000)
    market.cancel(alice, [sell])
    (note,) = alice.store.notes()
    assert note.note.filled_amount == 0  # the fill is hidden
    assert kinds(alice) == {Kind.FILL_AFTER_NOTE}
    assert_claimed_paid_and_withdrawn(market, alice, Kind.FILL_AFTER_NOTE)


def test_two_notes_for_one_order_are_found_and_paid(tmp_path):
    market = Market.open(tmp_path, policy=Equivocate())
    alice = market.desk(2)
    sell = market.place(alice, 1, PRICE, -SIZE)
    market.cancel(alice, [sell])
    assert len(alice.store.notes()) == 2
    assert kinds(alice) == {Kind.NOTE_EQUIVOCATION}
    assert_claimed_paid_and_withdrawn(market, alice, Kind.NOTE_EQUIVOCATION)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"price_x18": PRICE - 10**18}, Kind.BAD_FILL),  # a sell filled below its limit
        ({"amount": 0}, Kind.MALFORMED_FILL),
        ({"filled_total": SIZE // 4, "amount": SIZE // 2}, Kind.MALFORMED_FILL),
        ({"filled_total": SIZE // 2}, Kind.FILLS_OUT_OF_ORDER),  # the total did not grow
    ],
)
def test_hand_made_bad_fill_is_found_and_paid(tmp_path, change, kind):
    market = Market.open(tmp_path)
    alice, bob = market.desk(2), market.desk(3)
    sell = market.place(alice, 1, PRICE, -SIZE)
    market.place(bob, 1, PRICE, SIZE // 2)
    (honest,) = alice.store.fills()
    fields = {
        "order_digest": sell.order.digest(market.court.domain),
        "sender": alice.sender,
        "seq": market.engine.last_seq + 1,
        "amount": SIZE // 2,
        "filled_total": SIZE,
        "price_x18": PRICE,
        "timestamp_ms": market.now_ms,
    } | change
    forged = Fill(**fields)
    wire = {
        "fill": forged.to_wire(),
        "signature": "0x" + forged.sign(market.operator, market.court.domain).hex(),
    }
    alice.verifier.receive_wire(wire, market.now_ms, stream=True)
    assert kind in kinds(alice)
    outcomes = market.watch(alice)
    assert any(o.outcome == "claimed" and o.owed == PENALTY for o in outcomes), outcomes
    assert honest.fill.seq < forged.seq


def test_two_fills_with_one_seq_are_found_and_paid(tmp_path):
    market = Market.open(tmp_path)
    alice, bob = market.desk(2), market.desk(3)
    market.place(alice, 1, PRICE, -SIZE)
    market.place(bob, 1, PRICE, SIZE // 2)
    (honest,) = alice.store.fills()
    twin = attrs.evolve(honest.fill, price_x18=PRICE + 1)
    sig = twin.sign(market.operator, market.court.domain)
    alice.verifier.receive_wire(
        {"fill": twin.to_wire(), "signature": "0x" + sig.hex()}, market.now_ms
    )
    assert kinds(alice) == {Kind.FILL_EQUIVOCATION}
    assert_claimed_paid_and_withdrawn(market, alice, Kind.FILL_EQUIVOCATION)


@pytest.mark.parametrize("policy", [Ignore(1.0, random.Random(0)), Delay(120_000)])
def test_unanswered_cancel_is_forced_and_the_default_is_paid(tmp_path, policy):
    market = Market.open(tmp_path, policy=policy)
    alice, bob = market.desk(2), market.desk(3)
    sell = market.place(alice, 1, PRICE, -2 * SIZE)
    market.place(bob, 1, PRICE, SIZE)  # half filled before the cancel: not an offence
    market.cancel(alice, [sell])
    assert alice.store.notes() == []
    market.advance(10_000)
    assert market.watch(alice) == []  # before the deadline: nothing to do
    market.advance(30_000)
    (forced,) = market.watch(alice)
    assert forced.outcome == "forced"
    digest = sell.order.digest(market.court.domain)
    status = market.court.cancel_status(digest)
    assert status.state is CancelState.REQUESTED and status.cap == 0
    assert market.watch(alice) == []  # the window is open: wait
    market.chain.increase_time(W + 1)
    market.chain.mine()  # blocks keep coming on a live chain
    outcomes = market.watch(alice)
    assert [(o.outcome, o.owed) for o in outcomes] == [("claimed", PENALTY)]
    assert market.court.cancel_status(digest).state is CancelState.DEFAULTED
    vest(market)
    assert [(o.outcome, o.paid) for o in market.watch(alice)] == [
        ("paid", OWNER_SHARE + DISPUTE_BOND)  # the penalty's share, and the bond back
    ]
    assert [o.outcome for o in market.watch(alice)] == ["withdrawn"]
    assert alice.disputable()[0].status == "paid"
    assert market.court.claims_outstanding() == 0  # one default, one penalty


@pytest.mark.parametrize("policy", [Ignore(1.0, random.Random(0)), WithholdNotes()])
def test_forced_cancel_answered_in_time_is_not_paid_and_its_cap_is_enforced(tmp_path, policy):
    market = Market.open(tmp_path, policy=policy)
    alice = market.desk(2)
    sell = market.place(alice, 1, PRICE, -SIZE)
    market.cancel(alice, [sell])
    market.advance(31_000)
    assert [o.outcome for o in market.watch(alice)] == ["forced"]
    market.operator_answers(alice, sell)
    assert [o.outcome for o in market.watch(alice)] == ["answered"]
    assert alice.disputable()[0].status == "answered"
    assert market.court.credits(alice.trader.signer.address) == 0
    # The operator then fills above the cap it stated: that is paid.
    over = Fill(
        sell.order.digest(market.court.domain),
        alice.sender,
        10_000,
        SIZE // 2,
        SIZE // 2,
        PRICE,
        market.now_ms,
    )
    sig = over.sign(market.operator, market.court.domain)
    alice.verifier.receive_wire(
        {"fill": over.to_wire(), "signature": "0x" + sig.hex()}, market.now_ms
    )
    assert {Kind.FILL_ABOVE_CAP, Kind.FILL_AFTER_NOTE} <= kinds(alice)
    outcomes = market.watch(alice)
    claimed = [o for o in outcomes if o.outcome == "claimed"]
    rejected = [o for o in outcomes if o.outcome == "rejected"]
    assert len(claimed) == 1 and claimed[0].owed == PENALTY  # one over-fill, one offence...
    assert rejected == []  # ...claimed once: the other finding of it is not sent...
    later = [o.outcome for o in market.watch(alice)]
    assert "resolved" in later and "rejected" not in later  # ...but closed next round
    digest = sell.order.digest(market.court.domain)
    assert market.court.offence_paid(digest, Offence.FILL_AFTER_NOTE)


def test_a_note_arriving_after_the_deadline_but_before_forcing_resolves_it(tmp_path):
    market = Market.open(tmp_path, policy=Delay(40_000))
    alice = market.desk(2)
    sell = market.place(alice, 1, PRICE, -SIZE)
    market.cancel(alice, [sell])
    market.advance(31_000)
    alice.verifier.check_deadlines(market.now_ms)
    market.advance(10_000)  # the delayed note arrives
    assert [o.outcome for o in market.watch(alice)] == ["resolved"]
    assert market.court.cancel_status(sell.order.digest(market.court.domain)).state is (
        CancelState.NONE
    )


# ---------------------------------------------------------------------------------------
# A third-party watchtower wins from an imported bundle.


def test_bundle_from_one_store_wins_the_dispute_from_another_store(tmp_path):
    market = Market.open(tmp_path, policy=FillAfterNote())
    alice, bob = market.desk(2), market.desk(3)
    sell = market.place(alice, 1, PRICE, -SIZE)
    market.cancel(alice, [sell])
    market.place(bob, 1, PRICE, SIZE)
    digest = sell.order.digest(market.court.domain)
    text = json.dumps(alice.store.export_bundle(digest))

    carol_store = EvidenceStore.open(
        tmp_path / "carol.sqlite", market.court.domain, market.operator.address
    )
    carol = Verifier(carol_store)
    found = carol.import_bundle(parse_bundle(json.loads(text)), market.now_ms)
    assert [f.kind for f in found] == [Kind.FILL_AFTER_NOTE]
    tower = Watchtower(carol, market.court, market.chain.dev_accounts[5])
    outcomes = tower.step(market.now_ms)
    assert [o.outcome for o in outcomes] == ["claimed"]
    vest(market)
    assert [o.outcome for o in tower.step(market.now_ms)] == ["paid"]
    # the court pays the order's owner, never the submitter
    assert market.court.credits(alice.trader.signer.address) == OWNER_SHARE
    assert market.court.credits(market.chain.dev_accounts[5].address) == 0


def test_two_alarms_on_one_cancel_force_it_finalize_it_and_claim_its_default_once():
    from conftest import make_world

    from cancelnote.client.evidence import Finding
    from cancelnote.client.watchtower import CourtView, Finalize, ForceCancel, Resolve, plan
    from cancelnote.dispute.court import CancelStatus

    world = make_world()
    order, signature = world.order(world.alice)
    digest = order.digest(world.court.domain)
    evidence = {"order": {"order": order.to_wire(), "signature": "0x" + signature.hex()}}
    alarms = [  # the note's deadline missed, and the cancel's leaf missing from the log
        Finding(kind, kind, digest, None, "", evidence, 0, id=n)
        for n, kind in enumerate((Kind.UNLOGGED_CANCEL, Kind.UNANSWERED_CANCEL), 1)
    ]

    def actions(state: CancelState) -> list:
        status = CancelStatus(state, 100, 200, 0)
        view = CourtView(300, {digest: status}, 0, world.alice.address)
        return plan(alarms, view, frozenset())

    assert [type(a) for a in actions(CancelState.NONE)] == [ForceCancel]
    assert [type(a) for a in actions(CancelState.REQUESTED)] == [Finalize]
    resolved = actions(CancelState.DEFAULTED)
    assert [(type(a), a.status) for a in resolved] == [(Resolve, "claimed"), (Resolve, "resolved")]
