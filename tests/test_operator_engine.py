"""The operator engine: matching, cancel answers, acceptance rules, in-flight fills."""

from __future__ import annotations

from collections import defaultdict

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from cancelnote.api import (
    BookDepth,
    CancelOrders,
    Fills,
    Notes,
    OrderStatus,
    PlaceOrder,
    Push,
    Reply,
    request_from_wire,
    request_to_wire,
)
from cancelnote.crypto import Signer, recover_address
from cancelnote.dispute import rules
from cancelnote.messages import CancellationNote, Domain, Fill, Order, make_nonce
from cancelnote.operator.engine import MAX_PENDING_MS, Engine, split_outputs
from cancelnote.operator.errors import JournalCorrupt, OrderNotFound
from cancelnote.operator.journal import (
    FillIssued,
    Matched,
    NoteIssued,
    OrdersStopped,
    entry_from_row,
    entry_to_row,
)
from cancelnote.operator.testing import Trader, rule1

DOMAIN = Domain(31337, "0x" + "c0" * 20)
OPERATOR = Signer(bytes.fromhex("aa" * 32))
T0 = 1_800_000_000_000


def make_engine(**config) -> Engine:
    return Engine(OPERATOR, DOMAIN, {1, 2}, **config)


def trader(n: int) -> Trader:
    return Trader(Signer(bytes([n]) * 32), DOMAIN)


def reply(outputs) -> dict:
    (only,) = [o for o in outputs if isinstance(o, Reply)]
    return only.wire


def of(outputs, kind):
    return [o for o in outputs if isinstance(o, kind)]


def note_of(signed: dict) -> CancellationNote:
    return CancellationNote.from_wire(signed["note"])


def digest(placed: PlaceOrder) -> bytes:
    return placed.order.digest(DOMAIN)


@pytest.fixture
def alice():
    return trader(1)


@pytest.fixture
def bob():
    return trader(2)


# ---------------------------------------------------------------------------------------
# Matching.


def test_crossing_order_matches_resting_makers_in_price_time_priority(alice, bob):
    engine = make_engine()
    first = alice.order(1, 101, -3, T0)
    second = alice.order(1, 100, -3, T0)  # better price: matched first
    third = alice.order(1, 101, -3, T0)  # same price as `first`, later: matched after it
    for placed in (first, second, third):
        engine.handle(placed, T0)
    taker = bob.order(1, 101, 7, T0 + 1)
    matches = of(engine.handle(taker, T0 + 1), Matched)
    assert [(m.maker, m.amount, m.price_x18) for m in matches] == [
        (digest(second), 3, 100),
        (digest(first), 3, 101),
        (digest(third), 1, 101),
    ]
    book = reply(engine.handle(BookDepth(1), T0 + 2))["data"]
    assert book["asks"] == [["101", "2"]] and book["bids"] == []


def test_order_that_does_not_cross_rests_on_the_book(alice, bob):
    engine = make_engine()
    engine.handle(alice.order(1, 100, 5, T0), T0)
    outputs = engine.handle(bob.order(1, 101, -5, T0), T0)
    assert not of(outputs, Matched)
    book = reply(engine.handle(BookDepth(1), T0))["data"]
    assert book["bids"] == [["100", "5"]] and book["asks"] == [["101", "5"]]


def test_each_fill_is_operator_signed_and_numbered_by_the_journal_seq(alice, bob):
    engine = make_engine()
    engine.handle(alice.order(1, 100, 5, T0), T0)
    outputs = engine.handle(bob.order(1, 100, -2, T0), T0)
    fills = of(outputs, FillIssued)
    assert [f.fill.order_digest for f in fills] == [digest(p) for p in ()] or len(fills) == 2
    for issued in fills:
        issued.fill.verify(issued.signature, DOMAIN, OPERATOR.address)
        assert issued.fill.seq == issued.seq and issued.fill.amount == 2
    assert [p.wire for p in of(outputs, Push)] == [f.signed_wire for f in fills]


# ---------------------------------------------------------------------------------------
# Cancel answers.


def test_cancel_after_partial_fill_reports_filled_amount(alice, bob):
    engine = make_engine()
    maker = alice.order(1, 100, 10, T0)
    engine.handle(maker, T0)
    engine.handle(bob.order(1, 100, -4, T0), T0)
    cancel = alice.cancel([maker], T0 + 5)
    outputs = engine.handle(cancel, T0 + 5)
    data = reply(outputs)["data"]
    (signed,) = data["notes"]
    note = note_of(signed)
    assert (note.filled_amount, note.pending_amount, note.received_at_ms) == (4, 0, T0 + 5)
    assert note.request_hash == cancel.tx.digest(DOMAIN)
    note.verify(bytes.fromhex(signed["signature"][2:]), DOMAIN, OPERATOR.address)
    assert data["cancelled_orders"][0]["unfilled_amount"] == "6"
    assert data["successful_cancellations"] == ["0x" + digest(maker).hex()]
    status = reply(engine.handle(OrderStatus(digest(maker)), T0 + 6))["data"]
    assert (status["status"], status["cancellation_type"], status["pending"]) == (
        "CANCELLED",
        "OFF_CHAIN",
        False,
    )


def test_cancel_during_in_flight_fill_is_pending_until_it_settles(alice, bob):
    engine = make_engine(settlement_delay_ms=1_000)
    maker = alice.order(1, 100, 10, T0)
    engine.handle(maker, T0)
    engine.handle(bob.order(1, 100, -4, T0), T0)  # in flight until T0 + 1000
    outputs = engine.handle(alice.cancel([maker], T0 + 10), T0 + 10)
    data = reply(outputs)["data"]
    note = note_of(data["notes"][0])
    assert (note.filled_amount, note.last_fill_seq) == (0, 0)
    assert (note.pending_amount, note.pending_until_ms) == (4, T0 + 1_000)
    assert data["pending_cancellations"] == [
        {
            "digest": "0x" + digest(maker).hex(),
            "pending_amount": "4",
            "pending_until_ms": T0 + 1_000,
        }
    ]
    assert reply(engine.handle(OrderStatus(digest(maker)), T0 + 11))["data"]["pending"] is True
    settled = of(engine.advance(T0 + 1_000), FillIssued)
    (fill,) = [f.fill for f in settled if f.fill.order_digest == digest(maker)]
    assert (fill.filled_total, fill.timestamp_ms) == (4, T0 + 1_000) and fill.seq > note.seq
    assert rule1(fill, note) == ""
    assert reply(engine.handle(OrderStatus(digest(maker)), T0 + 1_001))["data"]["pending"] is False


def test_in_flight_fill_is_not_signed_before_it_settles(alice, bob):
    engine = make_engine(settlement_delay_ms=500)
    engine.handle(alice.order(1, 100, 10, T0), T0)
    outputs = engine.handle(bob.order(1, 100, -4, T0), T0)
    assert of(outputs, Matched) and not of(outputs, FillIssued)
    assert not of(engine.advance(T0 + 499), FillIssued)
    assert len(of(engine.advance(T0 + 500), FillIssued)) == 2


def test_second_cancel_of_a_cancelled_order_resends_the_same_note(alice):
    engine = make_engine()
    maker = alice.order(1, 100, 10, T0)
    engine.handle(maker, T0)
    first = reply(engine.handle(alice.cancel([maker], T0 + 1), T0 + 1))["data"]["notes"]
    again = reply(engine.handle(alice.cancel([maker], T0 + 2), T0 + 2))["data"]
    assert again["failed_cancellations"] == [
        {"digest": "0x" + digest(maker).hex(), "reason_code": "ALREADY_CANCELLED"}
    ]
    assert again["notes"] == first


@pytest.mark.parametrize("reason", ["FILLED", "NOT_FOUND", "NOT_OWNER", "EXPIRED"])
def test_cancel_that_cannot_cancel_fails_per_order_with_its_reason(alice, bob, reason):
    engine = make_engine()
    maker = alice.order(1, 100, 4, T0, lifetime_s=2)
    engine.handle(maker, T0)
    now, target, canceller = T0 + 1, [maker], alice
    if reason == "FILLED":
        engine.handle(bob.order(1, 100, -4, T0), T0)
    elif reason == "NOT_FOUND":
        target = [(digest(maker), 2)]  # the right digest in the wrong product
    elif reason == "NOT_OWNER":
        canceller, target = bob, [maker]
    else:
        now = T0 + 2_000
    engine.advance(now)
    before = engine.snapshot()
    outputs = engine.handle(canceller.cancel(target, now), now)
    data = reply(outputs)["data"]
    assert data["failed_cancellations"] == [
        {"digest": "0x" + digest(maker).hex(), "reason_code": reason}
    ]
    assert data["notes"] == [] and not of(outputs, NoteIssued)
    assert engine.snapshot()["orders"] == before["orders"]


def test_cancel_product_orders_cancels_only_the_senders_orders_in_those_products(alice, bob):
    engine = make_engine()
    mine_1 = alice.order(1, 100, 1, T0)
    mine_2 = alice.order(2, 100, 1, T0)
    theirs = bob.order(1, 99, 1, T0)
    for placed in (mine_1, mine_2, theirs):
        engine.handle(placed, T0)
    data = reply(engine.handle(alice.cancel_products((1,), T0 + 1), T0 + 1))["data"]
    assert data["successful_cancellations"] == ["0x" + digest(mine_1).hex()]
    statuses = [
        reply(engine.handle(OrderStatus(digest(p)), T0 + 2))["data"]["status"]
        for p in (mine_1, mine_2, theirs)
    ]
    assert statuses == ["CANCELLED", "ACTIVE", "ACTIVE"]


def test_cancel_and_place_cancels_then_places_atomically(alice, bob):
    engine = make_engine()
    old = alice.order(1, 100, 5, T0)
    engine.handle(old, T0)
    new = alice.order(1, 101, 5, T0 + 1)
    data = reply(engine.handle(alice.cancel_and_place([old], new, T0 + 1), T0 + 1))["data"]
    assert data["successful_cancellations"] == ["0x" + digest(old).hex()]
    assert data["digest"] == "0x" + digest(new).hex()
    assert reply(engine.handle(BookDepth(1), T0 + 1))["data"]["bids"] == [["101", "5"]]


def test_cancel_and_place_with_a_bad_order_changes_nothing(alice):
    engine = make_engine()
    old = alice.order(1, 100, 5, T0)
    engine.handle(old, T0)
    bad = attrs.evolve(alice.order(1, 101, 5, T0), signature=old.signature)
    before = engine.snapshot()
    outputs = engine.handle(alice.cancel_and_place([old], bad, T0), T0)
    assert reply(outputs)["error_code"] == "INVALID_SIGNATURE"
    assert engine.snapshot() == before


def test_force_cancel_signs_an_on_chain_note_with_a_zero_request_hash(alice, bob):
    engine = make_engine()
    maker = alice.order(1, 100, 5, T0)
    engine.handle(maker, T0)
    engine.handle(bob.order(1, 100, -2, T0), T0)
    (push,) = of(engine.force_cancel(digest(maker), T0 + 3), Push)
    note = note_of(push.wire)
    assert (note.request_hash, note.filled_amount, note.received_at_ms) == (bytes(32), 2, T0 + 3)
    status = reply(engine.handle(OrderStatus(digest(maker)), T0 + 4))["data"]
    assert (status["status"], status["cancellation_type"]) == ("CANCELLED", "ON_CHAIN")


def test_a_note_names_the_fill_it_counts_last_by_its_struct_hash(alice, bob):
    engine = make_engine()
    maker = alice.order(1, 100, 10, T0)
    engine.handle(maker, T0)
    fills = of(engine.handle(bob.order(1, 100, -3, T0), T0), FillIssued)
    fills += of(engine.handle(bob.order(1, 100, -4, T0 + 1), T0 + 1), FillIssued)
    last = [f.fill for f in fills if f.fill.order_digest == digest(maker)][-1]
    cancel = alice.cancel([maker], T0 + 5)
    note = note_of(reply(engine.handle(cancel, T0 + 5))["data"]["notes"][0])
    assert (note.filled_amount, note.last_fill_seq) == (7, last.seq)
    assert note.last_fill_hash == last.struct_hash()
    unfilled = alice.order(1, 90, 1, T0 + 5)
    engine.handle(unfilled, T0 + 5)
    cancel = alice.cancel([unfilled], T0 + 6)
    blank = note_of(reply(engine.handle(cancel, T0 + 6))["data"]["notes"][0])
    assert (blank.filled_amount, blank.last_fill_seq, blank.last_fill_hash) == (0, 0, bytes(32))


def test_a_settlement_delay_beyond_the_courts_pending_bound_is_refused():
    with pytest.raises(ValueError, match="exceeds the court's max_pending_ms"):
        make_engine(settlement_delay_ms=1_001, max_pending_ms=1_000)


def test_a_forced_cancel_is_received_at_the_requests_block_time(alice, bob):
    engine = make_engine()
    maker = alice.order(1, 100, 5, T0)
    engine.handle(maker, T0)
    engine.handle(bob.order(1, 100, -2, T0 + 2_000), T0 + 2_000)  # after the request, unseen
    (push,) = of(engine.force_cancel(digest(maker), T0 + 3_000, None, T0 + 1_000), Push)
    note = note_of(push.wire)
    assert (note.received_at_ms, note.filled_amount) == (T0 + 1_000, 2)
    other = alice.order(1, 100, 5, T0 + 3_000)
    engine.handle(other, T0 + 3_000)
    (push,) = of(engine.force_cancel(digest(other), T0 + 3_000, None, T0 + 9_000), Push)
    assert note_of(push.wire).received_at_ms == T0 + 3_000  # a clock behind the chain's


def test_a_late_watcher_receives_the_forced_cancel_as_early_as_the_pending_bound_allows(alice, bob):
    engine = make_engine(settlement_delay_ms=1_000, max_pending_ms=1_000)
    maker = alice.order(1, 100, 5, T0)
    engine.handle(maker, T0)
    engine.handle(bob.order(1, 100, -2, T0 + 5_000), T0 + 5_000)  # in flight to T0 + 6000
    (push,) = of(engine.force_cancel(digest(maker), T0 + 5_500, None, T0), Push)
    note = note_of(push.wire)
    assert (note.received_at_ms, note.pending_until_ms) == (T0 + 5_000, T0 + 6_000)
    assert rules.note_fault(maker.order, note, 1_000) is None


def test_force_cancel_of_a_cancelled_order_returns_its_existing_note(alice):
    engine = make_engine()
    maker = alice.order(1, 100, 5, T0)
    engine.handle(maker, T0)
    (signed,) = reply(engine.handle(alice.cancel([maker], T0 + 1), T0 + 1))["data"]["notes"]
    outputs = engine.force_cancel(digest(maker), T0 + 9)
    assert [p.wire for p in of(outputs, Push)] == [signed] and not of(outputs, NoteIssued)


def test_force_cancel_of_a_filled_order_still_answers_with_a_note(alice, bob):
    engine = make_engine()
    maker = alice.order(1, 100, 5, T0)
    engine.handle(maker, T0)
    engine.handle(bob.order(1, 100, -5, T0), T0)
    (push,) = of(engine.force_cancel(digest(maker), T0 + 1), Push)
    assert note_of(push.wire).filled_amount == 5
    assert reply(engine.handle(OrderStatus(digest(maker)), T0 + 1))["data"]["status"] == "FILLED"


def test_force_cancel_of_an_unknown_digest_is_not_found():
    with pytest.raises(OrderNotFound):
        make_engine().force_cancel(b"\x01" * 32, T0)


def test_force_cancel_of_an_order_never_placed_answers_and_bars_it_for_good(alice):
    engine = make_engine()
    unseen = alice.order(1, 100, 5, T0)
    outputs = engine.force_cancel(digest(unseen), T0, order=unseen.order)
    (push,) = of(outputs, Push)
    note = note_of(push.wire)
    assert (note.filled_amount, note.pending_amount, note.request_hash) == (0, 0, bytes(32))
    status = reply(engine.handle(OrderStatus(digest(unseen)), T0))["data"]
    assert (status["status"], status["cancellation_type"]) == ("CANCELLED", "ON_CHAIN")
    assert reply(engine.handle(unseen, T0))["error_code"] == "REPLAYED"
    assert reply(engine.handle(BookDepth(1), T0))["data"]["bids"] == []
    rebuilt = make_engine()
    entries, _ = split_outputs(outputs)
    rebuilt.restore(entry_from_row(*entry_to_row(e)) for e in entries)
    assert rebuilt.snapshot() == engine.snapshot()


def test_expired_order_leaves_the_book_when_its_time_passes(alice, bob):
    engine = make_engine()
    maker = alice.order(1, 100, 5, T0, lifetime_s=1)
    engine.handle(maker, T0)
    expire_at = maker.order.expiration * 1000
    assert reply(engine.handle(BookDepth(1), expire_at - 1))["data"]["bids"]
    outputs = engine.handle(bob.order(1, 100, -5, expire_at), expire_at)
    assert not of(outputs, Matched)
    status = reply(engine.handle(OrderStatus(digest(maker)), expire_at))["data"]["status"]
    assert status == "EXPIRED"


def test_queries_list_fills_and_notes_and_unknown_orders_are_not_found(alice, bob):
    engine = make_engine()
    maker = alice.order(1, 100, 5, T0)
    engine.handle(maker, T0)
    engine.handle(bob.order(1, 100, -2, T0), T0)
    notes = reply(engine.handle(alice.cancel([maker], T0), T0))["data"]["notes"]
    fills = reply(engine.handle(Fills(digest(maker)), T0))["data"]["fills"]
    assert [Fill.from_wire(f["fill"]).amount for f in fills] == [2]
    assert reply(engine.handle(Notes(digest(maker)), T0))["data"]["notes"] == notes
    assert reply(engine.handle(OrderStatus(b"\x09" * 32), T0))["error_code"] == "NOT_FOUND"
    assert reply(engine.handle(BookDepth(7), T0))["error_code"] == "UNKNOWN_PRODUCT"


# ---------------------------------------------------------------------------------------
# Acceptance rules: every rejection has a stable code and changes no state.


def _bad_place(alice, bob, engine, kind):
    if kind == "INVALID_SIGNATURE":
        placed = alice.order(1, 100, 1, T0)
        return attrs.evolve(placed, signature=bob.order(1, 100, 1, T0).signature)
    if kind == "INVALID_ORDER":
        return alice.order(1, 100, 0, T0)
    if kind == "INVALID_MESSAGE":
        return attrs.evolve(alice.order(1, 100, 1, T0), product_id=2)
    if kind == "UNKNOWN_PRODUCT":
        return alice.order(9, 100, 1, T0)
    if kind == "EXPIRED":
        return alice.order(1, 100, 1, T0, lifetime_s=0)
    if kind == "NONCE_WINDOW":
        placed = alice.order(1, 100, 1, T0)
        order = attrs.evolve(placed.order, nonce=make_nonce(T0 + 100_001, 1))
        return PlaceOrder(1, order, order.sign(alice.signer, DOMAIN))
    if kind == "REPLAYED":
        placed = alice.order(1, 100, 1, T0)
        engine.handle(placed, T0)
        return placed
    if kind == "RATE_LIMITED":
        for _ in range(engine.rate_limit):
            engine.handle(alice.order(1, 100, 1, T0), T0)
        return alice.order(1, 100, 1, T0)
    raise AssertionError(kind)


REJECTIONS = [
    "INVALID_SIGNATURE",
    "INVALID_ORDER",
    "INVALID_MESSAGE",
    "UNKNOWN_PRODUCT",
    "EXPIRED",
    "NONCE_WINDOW",
    "REPLAYED",
    "RATE_LIMITED",
]


@pytest.mark.parametrize("code", REJECTIONS)
def test_rejected_place_has_a_stable_code_and_changes_no_state(alice, bob, code):
    engine = make_engine(rate_limit=5)
    bad = _bad_place(alice, bob, engine, code)
    before = engine.snapshot()
    outputs = engine.handle(bad, T0)
    assert [type(o) for o in outputs] == [Reply]
    assert outputs[0].wire["status"] == "failure" and outputs[0].wire["error_code"] == code
    assert engine.snapshot() == before


@pytest.mark.parametrize("code", ["NONCE_WINDOW", "REPLAYED", "INVALID_SIGNATURE", "RATE_LIMITED"])
def test_rejected_cancel_has_a_stable_code_and_changes_no_state(alice, bob, code):
    engine = make_engine(rate_limit=3)
    maker = alice.order(1, 100, 1, T0)
    engine.handle(maker, T0)
    cancel = alice.cancel([maker], T0)
    if code == "NONCE_WINDOW":
        tx = attrs.evolve(cancel.tx, nonce=make_nonce(T0, 0))  # recv_time == now: too late
        cancel = CancelOrders(tx, tx.sign(alice.signer, DOMAIN))
    elif code == "REPLAYED":
        engine.handle(alice.cancel([(b"\x05" * 32, 1)], T0), T0)
        replayed = alice.cancel([(b"\x05" * 32, 1)], T0)
        engine.handle(replayed, T0)
        cancel = replayed
    elif code == "INVALID_SIGNATURE":
        cancel = attrs.evolve(cancel, signature=bob.cancel([maker], T0).signature)
    else:  # one weight left, and this cancel names three digests
        engine.handle(alice.order(1, 100, 1, T0), T0)
        cancel = alice.cancel([maker, (b"\x06" * 32, 1), (b"\x07" * 32, 1)], T0)
    before = engine.snapshot()
    outputs = engine.handle(cancel, T0)
    assert [o.wire["error_code"] for o in outputs] == [code]
    assert engine.snapshot() == before


def test_order_expiring_exactly_at_the_maximum_lifetime_is_accepted(alice):
    engine = make_engine(max_order_lifetime_s=600)
    assert reply(engine.handle(alice.order(1, 100, 1, T0, lifetime_s=600), T0))["status"] == (
        "success"
    )


def test_order_expiring_beyond_the_maximum_lifetime_is_invalid_and_changes_nothing(alice):
    engine = make_engine(max_order_lifetime_s=600)
    before = engine.snapshot()
    outputs = engine.handle(alice.order(1, 100, 1, T0, lifetime_s=601), T0)
    assert [o.wire["error_code"] for o in outputs] == ["INVALID_ORDER"]
    assert engine.snapshot() == before


def test_default_maximum_order_lifetime_is_seven_days(alice):
    engine = make_engine()
    assert engine.max_order_lifetime_s == 7 * 86_400
    too_long = alice.order(1, 100, 1, T0, lifetime_s=7 * 86_400 + 1)
    assert reply(engine.handle(too_long, T0))["error_code"] == "INVALID_ORDER"


def test_maximum_order_lifetime_must_be_positive():
    with pytest.raises(ValueError):
        make_engine(max_order_lifetime_s=0)


def test_stopped_engine_refuses_new_orders_and_changes_nothing(alice):
    engine = make_engine()
    engine.stop_accepting_orders("the court halted the operator", T0)
    before = engine.snapshot()
    outputs = engine.handle(alice.order(1, 100, 1, T0), T0)
    assert [o.wire["error_code"] for o in outputs] == ["NOT_ACCEPTING_ORDERS"]
    assert "halted" in outputs[0].wire["error"]
    assert engine.snapshot() == before and not engine.accepting_orders


def test_stopped_engine_still_cancels_and_answers_forced_cancels(alice):
    engine = make_engine()
    first, second = alice.order(1, 100, 1, T0), alice.order(1, 101, 1, T0)
    engine.handle(first, T0)
    engine.handle(second, T0)
    engine.stop_accepting_orders("exit announced", T0)
    data = reply(engine.handle(alice.cancel([first], T0), T0))["data"]
    assert data["successful_cancellations"] == ["0x" + digest(first).hex()]
    assert data["notes"] and note_of(data["notes"][0]).order_digest == digest(first)
    assert reply(engine.handle(alice.cancel_products((), T0), T0))["status"] == "success"
    assert of(engine.force_cancel(digest(second), T0), NoteIssued) == []  # already noted


def test_stopped_engine_refuses_cancel_and_place_as_a_whole(alice):
    engine = make_engine()
    resting = alice.order(1, 100, 1, T0)
    engine.handle(resting, T0)
    engine.stop_accepting_orders("exit announced", T0)
    before = engine.snapshot()
    replace = alice.cancel_and_place([resting], alice.order(1, 99, 1, T0), T0)
    outputs = engine.handle(replace, T0)
    assert [o.wire["error_code"] for o in outputs] == ["NOT_ACCEPTING_ORDERS"]
    assert engine.snapshot() == before


def test_stopping_orders_is_journaled_once_and_survives_a_replay(alice):
    engine = make_engine()
    (entry,) = engine.stop_accepting_orders("first", T0)
    assert isinstance(entry, OrdersStopped) and (entry.seq, entry.reason) == (1, "first")
    assert engine.stop_accepting_orders("second", T0 + 1) == []
    rebuilt = make_engine()
    rebuilt.restore([entry_from_row(*entry_to_row(entry))])
    assert rebuilt.snapshot() == engine.snapshot() and rebuilt.snapshot()["stopped"] == "first"
    placed = alice.order(1, 100, 1, T0 + 1)
    assert reply(rebuilt.handle(placed, T0 + 1))["error_code"] == "NOT_ACCEPTING_ORDERS"


def test_journal_that_stops_orders_twice_is_corrupt():
    engine = make_engine()
    with pytest.raises(JournalCorrupt):
        engine.restore([OrdersStopped(1, T0, "halted"), OrdersStopped(2, T0, "exit")])


def test_not_accepting_orders_comes_after_replay_and_before_the_rate_limit(alice):
    engine = make_engine(rate_limit=1)
    placed = alice.order(1, 100, 1, T0)
    engine.handle(placed, T0)  # spends the whole budget
    engine.stop_accepting_orders("halted", T0)
    assert reply(engine.handle(placed, T0))["error_code"] == "REPLAYED"
    assert reply(engine.handle(alice.order(1, 100, 1, T0), T0))["error_code"] == (
        "NOT_ACCEPTING_ORDERS"
    )


def test_cancel_listing_a_digest_twice_is_invalid_and_charges_nothing(alice):
    engine = make_engine()
    maker = alice.order(1, 100, 1, T0)
    engine.handle(maker, T0)
    before = engine.snapshot()
    outputs = engine.handle(alice.cancel([maker, maker], T0), T0)
    assert [o.wire["error_code"] for o in outputs] == ["INVALID_MESSAGE"]
    assert engine.snapshot() == before
    assert engine.snapshot()["rate_used"] == {alice.signer.address: 1}  # the place only


def test_cancel_and_place_listing_a_digest_twice_is_invalid_and_changes_nothing(alice):
    engine = make_engine()
    maker = alice.order(1, 100, 1, T0)
    engine.handle(maker, T0)
    before = engine.snapshot()
    replace = alice.cancel_and_place([maker, maker], alice.order(1, 99, 1, T0), T0)
    assert [o.wire["error_code"] for o in engine.handle(replace, T0)] == ["INVALID_MESSAGE"]
    assert engine.snapshot() == before


def test_cancel_listing_distinct_digests_is_answered_per_order(alice):
    engine = make_engine()
    maker = alice.order(1, 100, 1, T0)
    engine.handle(maker, T0)
    data = reply(engine.handle(alice.cancel([maker, (b"\x05" * 32, 1)], T0), T0))["data"]
    assert data["successful_cancellations"] == ["0x" + digest(maker).hex()]
    assert [f["reason_code"] for f in data["failed_cancellations"]] == ["NOT_FOUND"]


def test_rate_limit_frees_weight_a_minute_later(alice):
    engine = make_engine(rate_limit=2)
    for _ in range(2):
        engine.handle(alice.order(1, 100, 1, T0), T0)
    late = T0 + 59_999
    assert reply(engine.handle(alice.order(1, 100, 1, late), late))["error_code"] == "RATE_LIMITED"
    later = T0 + 60_000
    assert reply(engine.handle(alice.order(1, 100, 1, later), later))["status"] == "success"


def test_cancel_products_weighs_fifty_for_all_products(alice):
    engine = make_engine(rate_limit=50)
    engine.handle(alice.order(1, 100, 1, T0), T0)
    assert reply(engine.handle(alice.cancel_products((), T0), T0))["error_code"] == "RATE_LIMITED"
    assert reply(engine.handle(alice.cancel_products((1,), T0), T0))["status"] == "success"


def test_accepted_request_hashes_are_forgotten_once_their_recv_time_passes(alice):
    engine = make_engine()
    cancel = alice.cancel([(b"\x05" * 32, 1)], T0)
    engine.handle(cancel, T0)
    recv_time = cancel.tx.nonce >> 20
    engine.advance(recv_time)
    assert engine.snapshot()["requests"] == {}
    assert reply(engine.handle(cancel, recv_time))["error_code"] == "NONCE_WINDOW"


def test_malformed_wire_request_gets_a_failure_reply_naming_the_request_type():
    engine = make_engine()
    (out,) = engine.handle_wire({"cancel_orders": {"tx": {}, "signature": "0x00"}}, T0)
    assert out.wire["request_type"] == "execute_cancel_orders"
    assert out.wire["error_code"] == "INVALID_MESSAGE"
    (out,) = engine.handle_wire({"launch_rockets": {}}, T0)
    assert out.wire["error_code"] == "INVALID_MESSAGE"
    (out,) = engine.handle_wire({"subscribe_heads": {}}, T0)  # the server's, not the engine's
    assert out.wire["error_code"] == "INVALID_MESSAGE"


def test_requests_round_trip_through_their_wire_form(alice):
    placed = attrs.evolve(alice.order(1, 100, 1, T0), id=7)
    requests = [
        placed,
        alice.cancel([placed], T0),
        alice.cancel_products((1, 2), T0),
        alice.cancel_and_place([placed], alice.order(1, 99, 1, T0), T0),
        OrderStatus(digest(placed)),
        Fills(digest(placed)),
        Notes(digest(placed)),
        BookDepth(2),
    ]
    for request in requests:
        assert request_from_wire(request_to_wire(request)) == request


# ---------------------------------------------------------------------------------------
# The engine against a plain-Python model.

MODEL_RATE_LIMIT = 15
REFUSALS = {"FILLED": "FILLED", "EXPIRED": "EXPIRED", "CANCELLED": "ALREADY_CANCELLED"}


@attrs.define
class ModelOrder:
    digest: bytes
    owner: int
    product: int
    is_bid: bool
    price: int
    size: int
    arrival: int
    expires_ms: int
    remaining: int
    state: str = "ACTIVE"


class EngineMatchesModel(RuleBasedStateMachine):
    """Feeds the engine and a naive model alike and checks they agree after every step."""

    live = Bundle("live")
    cancelled = Bundle("cancelled")

    @initialize(delay=st.sampled_from([0, 700]))
    def start(self, delay):
        self.delay = delay
        self.engine = make_engine(settlement_delay_ms=delay, rate_limit=MODEL_RATE_LIMIT)
        self.now = T0
        self.traders = [trader(n) for n in (1, 2, 3)]
        self.orders: dict[bytes, ModelOrder] = {}
        self.matches: list[tuple[bytes, bytes, int, int]] = []  # maker, taker, size, settle
        self.rate_log: list[tuple[int, int, int]] = []  # time, trader, weight
        self.journal: list[tuple[int, str, str]] = []
        self.fills: dict[bytes, list[Fill]] = defaultdict(list)
        self.notes: dict[bytes, list[CancellationNote]] = defaultdict(list)
        self.note_wire: dict[bytes, dict] = {}
        self.accepted_cancels: list[CancelOrders] = []
        self.signed_orders: dict[bytes, Order] = {}
        self.forced_at_s: dict[bytes, int] = {}  # digest -> the request's block time

    # -- plumbing ------------------------------------------------------------------------

    def record(self, outputs):
        for out in outputs:
            if isinstance(out, Reply | Push):
                continue
            self.journal.append(entry_to_row(out))
            if isinstance(out, FillIssued):
                assert recover_address(out.fill.digest(DOMAIN), out.signature) == OPERATOR.address
                self.fills[out.fill.order_digest].append(out.fill)
            elif isinstance(out, NoteIssued):
                assert recover_address(out.note.digest(DOMAIN), out.signature) == OPERATOR.address
                self.notes[out.note.order_digest].append(out.note)
                self.note_wire.setdefault(out.note.order_digest, out.signed_wire)
        return outputs

    def step(self, request):
        self.expire()
        return self.record(self.engine.handle(request, self.now))

    def expire(self):
        for o in self.orders.values():
            if o.state == "ACTIVE" and o.expires_ms <= self.now:
                o.state = "EXPIRED"

    def rate_ok(self, who, weight):
        used = sum(w for t, n, w in self.rate_log if n == who and t > self.now - 60_000)
        return used + weight <= MODEL_RATE_LIMIT

    def settled(self, digest):
        return sum(
            size
            for maker, taker, size, at in self.matches
            if digest in (maker, taker) and at <= self.now
        )

    def in_flight(self, digest):
        flying = [
            (size, at)
            for maker, taker, size, at in self.matches
            if digest in (maker, taker) and at > self.now
        ]
        return sum(s for s, _ in flying), max((at for _, at in flying), default=0)

    def add_order(self, placed: PlaceOrder, who: int) -> ModelOrder:
        self.signed_orders[digest(placed)] = placed.order
        size = abs(placed.order.amount)
        order = ModelOrder(
            digest(placed),
            who,
            placed.product_id,
            placed.order.amount > 0,
            placed.order.price_x18,
            size,
            len(self.orders),
            placed.order.expiration * 1000,
            size,
        )
        self.orders[order.digest] = order
        return order

    def expected_matches(self, taker: ModelOrder):
        makers = sorted(
            (
                o
                for o in self.orders.values()
                if o.product == taker.product
                and o.is_bid != taker.is_bid
                and o.state == "ACTIVE"
                and (o.price <= taker.price if taker.is_bid else o.price >= taker.price)
            ),
            key=lambda o: (o.price if taker.is_bid else -o.price, o.arrival),
        )
        matches = []
        for maker in makers:
            if not taker.remaining:
                break
            size = min(taker.remaining, maker.remaining)
            for o in (maker, taker):
                o.remaining -= size
                o.state = "ACTIVE" if o.remaining else "FILLED"
            matches.append((maker.digest, size, maker.price))
            self.matches.append((maker.digest, taker.digest, size, self.now + self.delay))
        return matches

    # -- rules ---------------------------------------------------------------------------

    @rule(
        target=live,
        who=st.integers(0, 2),
        product=st.sampled_from([1, 2]),
        buy=st.booleans(),
        price=st.integers(98, 102),
        size=st.integers(1, 5),
        lifetime=st.sampled_from([1, 3600]),
    )
    def place(self, who, product, buy, price, size, lifetime):
        placed = self.traders[who].order(product, price, size if buy else -size, self.now, lifetime)
        outputs = self.step(placed)
        if not self.rate_ok(who, 1):
            assert reply(outputs)["error_code"] == "RATE_LIMITED"
            return multiple()
        assert reply(outputs)["status"] == "success"
        self.rate_log.append((self.now, who, 1))
        order = self.add_order(placed, who)
        expected = self.expected_matches(order)
        assert [(m.maker, m.amount, m.price_x18) for m in of(outputs, Matched)] == expected
        return order.digest

    @rule(target=cancelled, d=consumes(live), by_owner=st.booleans())
    def cancel(self, d, by_owner):
        self.expire()
        o = self.orders[d]
        who = o.owner if by_owner else (o.owner + 1) % 3
        request = self.traders[who].cancel([(d, o.product)], self.now)
        outputs = self.step(request)
        if not self.rate_ok(who, 1):
            assert reply(outputs)["error_code"] == "RATE_LIMITED"
            return multiple()
        self.rate_log.append((self.now, who, 1))
        self.accepted_cancels.append(request)
        return d if self.check_cancel_answer(d, who, request, outputs) else multiple()

    @rule(
        target=live,
        d=consumes(live),
        buy=st.booleans(),
        price=st.integers(98, 102),
        size=st.integers(1, 5),
    )
    def cancel_and_place(self, d, buy, price, size):
        self.expire()
        o = self.orders[d]
        trader = self.traders[o.owner]
        placed = trader.order(o.product, price, size if buy else -size, self.now)
        request = trader.cancel_and_place([(d, o.product)], placed, self.now)
        outputs = self.step(request)
        if not self.rate_ok(o.owner, 2):
            assert reply(outputs)["error_code"] == "RATE_LIMITED"
            return multiple()
        self.rate_log.append((self.now, o.owner, 2))
        self.check_cancel_answer(d, o.owner, request, outputs)
        new = self.add_order(placed, o.owner)
        expected = self.expected_matches(new)
        assert [(m.maker, m.amount, m.price_x18) for m in of(outputs, Matched)] == expected
        assert reply(outputs)["data"]["digest"] == "0x" + new.digest.hex()
        return new.digest

    def check_cancel_answer(self, d, who, request, outputs) -> bool:
        """Check a cancel's answer for ``d`` against the model; true if it cancelled."""
        o = self.orders[d]
        data = reply(outputs)["data"]
        reason = "NOT_OWNER" if who != o.owner else REFUSALS.get(o.state)
        if reason is not None:
            assert data["failed_cancellations"] == [
                {"digest": "0x" + d.hex(), "reason_code": reason}
            ]
            if reason == "ALREADY_CANCELLED":
                assert data["notes"] == [self.note_wire[d]]
            return False
        (signed,) = data["notes"]
        note = note_of(signed)
        pending, until = self.in_flight(d)
        assert (note.filled_amount, note.pending_amount, note.pending_until_ms) == (
            self.settled(d),
            pending,
            until,
        )
        assert (note.received_at_ms, note.request_hash) == (self.now, request.tx.digest(DOMAIN))
        listed = data["pending_cancellations"] if pending else data["successful_cancellations"]
        assert len(listed) == 1
        o.state = "CANCELLED"
        return True

    @rule(d=cancelled)
    def cancel_again_resends_the_same_note(self, d):
        o = self.orders[d]
        outputs = self.step(self.traders[o.owner].cancel([(d, o.product)], self.now))
        if not self.rate_ok(o.owner, 1):
            assert reply(outputs)["error_code"] == "RATE_LIMITED"
            return
        self.rate_log.append((self.now, o.owner, 1))
        assert reply(outputs)["data"]["notes"] == [self.note_wire[d]]

    @rule(who=st.integers(0, 2), products=st.sampled_from([(1,), (2,), (1, 2)]))
    def cancel_products(self, who, products):
        outputs = self.step(self.traders[who].cancel_products(products, self.now))
        weight = 5 * len(products)
        if not self.rate_ok(who, weight):
            assert reply(outputs)["error_code"] == "RATE_LIMITED"
            return
        self.rate_log.append((self.now, who, weight))
        targets = {
            "0x" + o.digest.hex()
            for o in self.orders.values()
            if o.owner == who and o.product in products and o.state == "ACTIVE"
        }
        data = reply(outputs)["data"]
        outcomes = data["successful_cancellations"] + [
            p["digest"] for p in data["pending_cancellations"]
        ]
        assert sorted(outcomes) == sorted(targets) and data["failed_cancellations"] == []
        for hex_digest in targets:
            self.orders[bytes.fromhex(hex_digest[2:])].state = "CANCELLED"

    @rule(d=live, lag_ms=st.sampled_from([0, 900, 5_000]))
    def force_cancel(self, d, lag_ms):
        """A forced cancel requested ``lag_ms`` before the watcher hands it to the engine
        (at most once per order: the court takes one request per order, ever)."""
        self.expire()
        o = self.orders[d]
        had = self.note_wire.get(d)
        requested_at_s = (self.now - lag_ms) // 1000
        self.forced_at_s.setdefault(d, requested_at_s)
        outputs = self.record(self.engine.force_cancel(d, self.now, None, requested_at_s * 1000))
        (push,) = of(outputs, Push)
        if had is not None:
            assert push.wire == had
            return
        note = note_of(push.wire)
        assert note.request_hash == bytes(32) and note.filled_amount == self.settled(d)
        if o.state == "ACTIVE":
            o.state = "CANCELLED"

    @rule(dt=st.integers(1, 2_500))
    def advance(self, dt):
        self.now += dt
        self.expire()
        self.record(self.engine.advance(self.now))

    @rule(
        kind=st.sampled_from(
            [
                "INVALID_SIGNATURE",
                "INVALID_ORDER",
                "UNKNOWN_PRODUCT",
                "EXPIRED",
                "NONCE_WINDOW",
                "REPLAYED",
            ]
        )
    )
    def rejected_request_changes_nothing(self, kind):
        alice, bob = self.traders[0], self.traders[1]
        if kind == "REPLAYED":
            if not self.accepted_cancels:
                return
            bad = self.accepted_cancels[-1]
            if (bad.tx.nonce >> 20) <= self.now:
                kind = "NONCE_WINDOW"
        elif kind == "INVALID_SIGNATURE":
            placed = alice.order(1, 100, 1, self.now)
            bad = attrs.evolve(placed, signature=bob.order(1, 100, 1, self.now).signature)
        elif kind == "INVALID_ORDER":
            bad = alice.order(1, 0, 1, self.now)
        elif kind == "UNKNOWN_PRODUCT":
            bad = alice.order(3, 100, 1, self.now)
        elif kind == "EXPIRED":
            bad = alice.order(1, 100, 1, self.now, lifetime_s=0)
        else:
            bad = alice.cancel([(b"\x01" * 32, 1)], self.now - 50_000)
        self.expire()
        self.record(self.engine.advance(self.now))
        before = self.engine.snapshot()
        outputs = self.engine.handle(bad, self.now)
        assert [o.wire["error_code"] for o in outputs] == [kind]
        assert self.engine.snapshot() == before

    @rule()
    def recover_from_the_journal(self):
        """Replace the engine by one rebuilt from its journal rows; the model goes on."""
        self.record(self.engine.advance(self.now))
        rebuilt = make_engine(settlement_delay_ms=self.delay, rate_limit=MODEL_RATE_LIMIT)
        rebuilt.restore(entry_from_row(*row) for row in self.journal)
        assert rebuilt.snapshot() == self.engine.snapshot()
        self.engine = rebuilt

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def book_is_the_models_book_in_price_time_order(self):
        if not hasattr(self, "engine"):
            return
        books = self.engine.snapshot()["books"]
        for product in (1, 2):
            bids, asks = books[product]
            if bids and asks:
                assert bids[-1][0] < asks[0][0], "crossed book"
            for is_bid, side in ((True, bids), (False, asks)):
                resting = sorted(
                    (o.price, o.arrival, o.digest, o.remaining)
                    for o in self.orders.values()
                    if o.product == product and o.is_bid == is_bid and o.state == "ACTIVE"
                )
                assert [(p, d, s) for p, level in side for d, s in level] == [
                    (p, d, s) for p, _, d, s in resting
                ]

    @invariant()
    def quantity_is_conserved_and_fills_respect_the_order(self):
        if not hasattr(self, "engine"):
            return
        for d, o in self.orders.items():
            assert sum(f.amount for f in self.fills[d]) == self.settled(d)
            filled = [f.filled_total for f in self.fills[d]]
            assert filled == sorted(filled) and all(t <= o.size for t in filled)  # rules 2, 4
            for f in self.fills[d]:  # rule 4: never worse than the order's limit
                assert f.price_x18 <= o.price if o.is_bid else f.price_x18 >= o.price
        for product in (1, 2):
            bought = sum(
                f.amount
                for d, fs in self.fills.items()
                for f in fs
                if self.orders[d].product == product and self.orders[d].is_bid
            )
            sold = sum(
                f.amount
                for d, fs in self.fills.items()
                for f in fs
                if self.orders[d].product == product and not self.orders[d].is_bid
            )
            assert bought == sold

    @invariant()
    def notes_count_exactly_the_fills_before_them_and_no_court_rule_holds(self):
        if not hasattr(self, "engine"):
            return
        for d, notes in self.notes.items():
            assert len(notes) == 1, "a digest got two notes"
            (note,) = notes
            before = [f for f in self.fills[d] if f.seq < note.seq]
            assert note.filled_amount == sum(f.amount for f in before)
            assert note.last_fill_seq == max((f.seq for f in before), default=0)
            for fill in self.fills[d]:
                assert rule1(fill, note) == "", (fill, note)
            order = self.signed_orders[d]
            assert rules.note_fault(order, note, self.engine.max_pending_ms) is None, note
        for d, requested_at_s in self.forced_at_s.items():
            for fill in self.fills[d]:  # only what was in flight settles after a forced cancel
                assert not rules.fill_after_request(fill, requested_at_s, MAX_PENDING_MS), fill


TestEngineMatchesModel = EngineMatchesModel.TestCase
TestEngineMatchesModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
