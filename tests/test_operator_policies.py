"""Policies: honest by default; each cheat leaves the signed evidence a court would use."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from cancelnote.api import Notes, Push, Reply
from cancelnote.crypto import Signer
from cancelnote.dispute import rules
from cancelnote.messages import CancellationNote, Domain, Fill, Order
from cancelnote.operator.engine import Engine
from cancelnote.operator.journal import CancelAccepted, FillIssued, NoteIssued
from cancelnote.operator.policies import (
    POLICY_NAMES,
    Backdate,
    ConditionalDelay,
    Delay,
    Equivocate,
    FillAfterNote,
    HoldAndBackdate,
    Honest,
    Ignore,
    WithholdNotes,
    build_policy,
)
from cancelnote.operator.service import parse_policy
from cancelnote.operator.testing import Trader, rule1, rule2_notes

DOMAIN = Domain(31337, "0x" + "c0" * 20)
OPERATOR = Signer(bytes.fromhex("aa" * 32))
T0 = 1_800_000_000_000


def make_engine(policy, **config) -> Engine:
    return Engine(OPERATOR, DOMAIN, {1}, policy=policy, **config)


def of(outputs, kind):
    return [o for o in outputs if isinstance(o, kind)]


def reply(outputs) -> dict:
    (only,) = of(outputs, Reply)
    return only.wire


def signed_notes(outputs) -> list[CancellationNote]:
    """Notes in the outputs, each checked to carry the operator's signature."""
    notes = []
    for issued in of(outputs, NoteIssued):
        issued.note.verify(issued.signature, DOMAIN, OPERATOR.address)
        notes.append(issued.note)
    return notes


def signed_fills(outputs, digest) -> list[Fill]:
    fills = []
    for issued in of(outputs, FillIssued):
        issued.fill.verify(issued.signature, DOMAIN, OPERATOR.address)
        if issued.fill.order_digest == digest:
            fills.append(issued.fill)
    return fills


@pytest.fixture
def alice():
    return Trader(Signer(b"\x01" * 32), DOMAIN)


@pytest.fixture
def bob():
    return Trader(Signer(b"\x02" * 32), DOMAIN)


def resting_buy(engine, alice, size=10, price=100):
    maker = alice.order(1, price, size, T0)
    engine.handle(maker, T0)
    return maker, maker.order.digest(DOMAIN)


def test_honest_is_the_default_policy():
    assert isinstance(Engine(OPERATOR, DOMAIN, {1}).policy, Honest)


def test_delay_holds_the_cancel_and_counts_the_fills_that_hit_meanwhile(alice, bob):
    engine = make_engine(Delay(300))
    maker, digest = resting_buy(engine, alice)
    held = engine.handle(alice.cancel([maker], T0 + 1), T0 + 1)
    assert [type(o) for o in held] == [CancelAccepted]  # no reply yet
    hit = engine.handle(bob.order(1, 100, -4, T0 + 100), T0 + 100)
    (fill,) = signed_fills(hit, digest)
    released = engine.advance(T0 + 301)
    (note,) = signed_notes(released)
    assert reply(released)["data"]["successful_cancellations"] == ["0x" + digest.hex()]
    assert (note.received_at_ms, note.filled_amount, note.last_fill_seq) == (T0 + 1, 4, fill.seq)
    assert fill.timestamp_ms > note.received_at_ms  # the latency evidence ...
    assert rule1(fill, note) == ""  # ... which no court rule convicts


def test_a_policy_set_after_the_engine_is_built_makes_every_decision(alice):
    # The lab swaps the policy of a running engine (sim.world): the engine must not have
    # decided once, at construction, that an honest policy never needs asking.
    engine = make_engine(Honest())
    maker, _ = resting_buy(engine, alice)
    engine.policy = Delay(300)
    held = engine.handle(alice.cancel([maker], T0 + 1), T0 + 1)
    assert [type(o) for o in held] == [CancelAccepted]
    other, _ = resting_buy(engine, alice, price=99)
    engine.policy = WithholdNotes()
    outputs = engine.handle(alice.cancel([other], T0 + 2), T0 + 2)
    assert [n.published for n in of(outputs, NoteIssued)] == [False]


def test_delay_does_not_hold_an_on_chain_request(alice):
    engine = make_engine(Delay(300))
    _, digest = resting_buy(engine, alice)
    (note,) = signed_notes(engine.force_cancel(digest, T0 + 1))
    assert note.received_at_ms == T0 + 1


@pytest.mark.parametrize(("mark", "held"), [(90, True), (110, False), (None, False)])
def test_conditional_delay_holds_only_when_the_mark_moved_against_the_order(alice, mark, held):
    engine = make_engine(ConditionalDelay(300))
    maker, _ = resting_buy(engine, alice)
    if mark is not None:
        engine.set_mark_price(1, mark)
    outputs = engine.handle(alice.cancel([maker], T0 + 1), T0 + 1)
    assert (not of(outputs, Reply)) is held


def test_ignore_drops_the_cancel_without_a_trace_and_the_chain_still_gets_a_note(alice):
    engine = make_engine(Ignore(1.0, random.Random(7)))
    maker, digest = resting_buy(engine, alice)
    before = engine.snapshot()
    assert engine.handle(alice.cancel([maker], T0 + 1), T0 + 1) == []
    assert engine.snapshot() == before
    (note,) = signed_notes(engine.force_cancel(digest, T0 + 2))
    assert note.request_hash == bytes(32)


def test_ignore_draws_from_its_seeded_rng_only(alice):
    def decisions(seed):
        engine = make_engine(Ignore(0.5, random.Random(seed)))
        makers = [alice.order(1, 100, 1, T0) for _ in range(12)]
        for maker in makers:
            engine.handle(maker, T0)
        return [bool(engine.handle(alice.cancel([m], T0), T0)) for m in makers]

    first = decisions(3)
    assert first == decisions(3) and any(first) and not all(first)


def test_fill_after_note_leaves_a_fill_above_the_notes_cap(alice, bob):
    engine = make_engine(FillAfterNote())
    maker, digest = resting_buy(engine, alice)
    (note,) = signed_notes(engine.handle(alice.cancel([maker], T0 + 1), T0 + 1))
    (fill,) = signed_fills(engine.handle(bob.order(1, 100, -3, T0 + 2), T0 + 2), digest)
    assert fill.seq > note.seq and set(rule1(fill, note)) >= {"a", "b"}
    assert not signed_fills(engine.handle(bob.order(1, 100, -3, T0 + 3), T0 + 3), digest)


def test_backdate_signs_an_earlier_time_and_hides_the_fills_since(alice, bob):
    engine = make_engine(Backdate(1_000))
    maker, digest = resting_buy(engine, alice)
    (fill,) = signed_fills(engine.handle(bob.order(1, 100, -4, T0 + 100), T0 + 100), digest)
    (note,) = signed_notes(engine.handle(alice.cancel([maker], T0 + 500), T0 + 500))
    assert (note.received_at_ms, note.filled_amount, note.last_fill_seq) == (T0 - 500, 0, 0)
    assert "d" in rule1(fill, note)


def test_equivocate_signs_two_different_notes_for_one_digest(alice):
    engine = make_engine(Equivocate())
    maker, _ = resting_buy(engine, alice)
    outputs = engine.handle(alice.cancel([maker], T0 + 1), T0 + 1)
    first, second = signed_notes(outputs)
    assert rule2_notes(first, second)
    assert second.filled_amount + second.pending_amount == 10  # the cap: the whole order
    assert [CancellationNote.from_wire(n["note"]) for n in reply(outputs)["data"]["notes"]] == [
        first
    ]
    assert [CancellationNote.from_wire(p.wire["note"]) for p in of(outputs, Push)] == [
        first,
        second,
    ]
    again = engine.handle(alice.cancel([maker], T0 + 2), T0 + 2)
    assert [CancellationNote.from_wire(n["note"]) for n in reply(again)["data"]["notes"]] == [first]


def test_withhold_notes_cancels_without_sending_the_note_until_the_chain_asks(alice):
    engine = make_engine(WithholdNotes())
    maker, digest = resting_buy(engine, alice)
    outputs = engine.handle(alice.cancel([maker], T0 + 1), T0 + 1)
    data = reply(outputs)["data"]
    assert data["successful_cancellations"] == ["0x" + digest.hex()] and data["notes"] == []
    assert not of(outputs, Push)
    assert reply(engine.handle(Notes(digest), T0 + 2))["data"]["notes"] == []
    (withheld,) = of(outputs, NoteIssued)
    (push,) = of(engine.force_cancel(digest, T0 + 3), Push)
    assert push.wire == withheld.signed_wire


# ---------------------------------------------------------------------------------------
# The court's view: honest behaviours are never convicted, every cheat is.

POLICIES = {
    "Honest": lambda: Honest(),
    "Delay": lambda: Delay(250),
    "ConditionalDelay": lambda: ConditionalDelay(250),
    "Ignore": lambda: Ignore(0.5, random.Random(1)),
    "WithholdNotes": lambda: WithholdNotes(),
    "FillAfterNote": lambda: FillAfterNote(),
    "Backdate": lambda: Backdate(300),
    "Equivocate": lambda: Equivocate(),
}
NEVER_CONVICTED = {"Honest", "Delay", "ConditionalDelay", "Ignore", "WithholdNotes"}


class CourtCatchesExactlyTheCheats(RuleBasedStateMachine):
    """Random trading under one policy; the court's findings after every step."""

    placed = Bundle("placed")

    @initialize(policy=st.sampled_from(sorted(POLICIES)), delay=st.sampled_from([0, 400]))
    def start(self, policy, delay):
        self.policy = policy
        self.engine = make_engine(POLICIES[policy](), settlement_delay_ms=delay)
        self.engine.set_mark_price(1, 100)
        self.now = T0
        self.traders = [Trader(Signer(bytes([n]) * 32), DOMAIN) for n in (1, 2)]
        self.fills: dict[bytes, list[Fill]] = defaultdict(list)
        self.notes: dict[bytes, list[CancellationNote]] = defaultdict(list)
        self.orders: dict[bytes, Order] = {}

    def record(self, outputs):
        for issued in of(outputs, FillIssued):
            issued.fill.verify(issued.signature, DOMAIN, OPERATOR.address)
            self.fills[issued.fill.order_digest].append(issued.fill)
        for note in signed_notes(outputs):
            self.notes[note.order_digest].append(note)

    @rule(
        target=placed,
        who=st.integers(0, 1),
        buy=st.booleans(),
        price=st.integers(98, 102),
        size=st.integers(1, 4),
    )
    def place(self, who, buy, price, size):
        request = self.traders[who].order(1, price, size if buy else -size, self.now)
        self.orders[request.order.digest(DOMAIN)] = request.order
        self.record(self.engine.handle(request, self.now))
        return (who, request)

    @rule(entry=consumes(placed))
    def cancel(self, entry):
        who, request = entry
        self.record(self.engine.handle(self.traders[who].cancel([request], self.now), self.now))

    @rule(entry=placed)
    def force_cancel(self, entry):
        self.record(self.engine.force_cancel(entry[1].order.digest(DOMAIN), self.now))

    @rule(dt=st.integers(1, 500))
    def advance(self, dt):
        self.now += dt
        self.record(self.engine.advance(self.now))

    @invariant()
    def court_findings_match_the_policy(self):
        if not hasattr(self, "engine"):
            return
        for digest, notes in self.notes.items():
            first = notes[0]
            fills = self.fills[digest]
            for note in notes:  # every policy's notes keep the bounds: its cheat is elsewhere
                fault = rules.note_fault(self.orders[digest], note, self.engine.max_pending_ms)
                assert fault is None, (self.policy, note)
            convicted = any(rule1(f, n) for f in fills for n in notes) or any(
                rule2_notes(first, n) for n in notes[1:]
            )
            if self.policy in NEVER_CONVICTED:
                assert not convicted, (self.policy, fills, notes)
            elif self.policy == "Equivocate":
                assert convicted and len(notes) == 2
            elif self.policy == "FillAfterNote":  # caught exactly when it filled past the cap
                cap = first.filled_amount + first.pending_amount
                assert convicted == any(f.seq > first.seq and f.filled_total > cap for f in fills)
            else:  # Backdate: caught exactly when the note hid a fill
                hidden = [f for f in fills if first.received_at_ms < f.timestamp_ms]
                assert convicted == any(f.seq < first.seq for f in hidden)


TestCourtCatchesExactlyTheCheats = CourtCatchesExactlyTheCheats.TestCase
TestCourtCatchesExactlyTheCheats.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_name_is_reachable_from_the_command_line(name):
    argument = {"delay": ":250", "conditional_delay": ":250", "backdate": ":250", "ignore": ":0.5"}
    text = name.replace("_", "-") + argument.get(name, "")
    # the command line's one argument is the backdate for ``backdate`` (no hold), else the hold
    parameters = {"backdate_ms": 250} if name == "backdate" else {"delay_ms": 250, "ignore_p": 0.5}
    assert type(parse_policy(text)) is type(build_policy(name, **parameters))


def test_backdate_holds_only_when_given_a_delay():
    assert build_policy("backdate", backdate_ms=300) == Backdate(300)
    assert build_policy("backdate", delay_ms=500, backdate_ms=300) == HoldAndBackdate(
        Delay(500), Backdate(300)
    )


@pytest.mark.parametrize("text", ["nosuch", "delay", "delay:x", "honest:1", "ignore:2", "delay:-5"])
def test_a_malformed_policy_is_refused(text):
    with pytest.raises(ValueError):
        parse_policy(text)
