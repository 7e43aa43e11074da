"""The operator's journal heads: the log of an honest engine, kept as the server keeps it.

An honest history (in-flight fills, held and released cancels, restarts) gives a log whose
timestamps never decrease, whose heads are all consistent and whose proofs all verify, and
in which no journal-heads rule finds anything; a restart rebuilds nothing and signs heads
of the same tree; a cheating engine is found by the rules that are meant to find it.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cancelnote.api import CancelOrders, CancelProductOrders, PlaceOrder
from cancelnote.crypto import Signer
from cancelnote.dispute import rules
from cancelnote.messages import Domain, Fill, Match
from cancelnote.operator.engine import Engine, split_outputs
from cancelnote.operator.errors import JournalCorrupt, LogRange, NotLogged
from cancelnote.operator.heads import HeadLog
from cancelnote.operator.journal import (
    CancelAccepted,
    FillIssued,
    Journal,
    Matched,
    OrderAccepted,
    log_leaf,
    node_key,
)
from cancelnote.operator.policies import Delay
from cancelnote.operator.testing import Trader
from cancelnote.transparency import (
    LeafKind,
    LeafProof,
    SignedHead,
    genesis_leaf,
    path_from_wire,
    verify_consistency,
)

DOMAIN = Domain(31337, "0x" + "c0" * 20)
OPERATOR = Signer(bytes.fromhex("aa" * 32))
T0 = 1_800_000_000_000
PRICE = 100


@attrs.define
class Operator:
    """An engine, its journal and its log, committed batch by batch as the server does."""

    path: Path
    engine: Engine
    journal: Journal
    heads: HeadLog
    floor_ms: int = 0  # what the service's clock starts from: no entry nor head before it
    signed: list[SignedHead] = attrs.Factory(list)

    @classmethod
    def open(cls, path: Path, **config) -> Operator:
        journal = Journal.open(path, DOMAIN, OPERATOR.address)
        heads = HeadLog.open(journal, OPERATOR, DOMAIN, interval_ms=100)
        engine = Engine(OPERATOR, DOMAIN, {1, 2}, **config)
        last_at_ms = 0

        def checked():
            nonlocal last_at_ms
            for entry in journal.entries():
                heads.check(entry)
                last_at_ms = entry.at_ms
                yield entry

        engine.restore(checked())
        heads.finish()
        return cls(path, engine, journal, heads, max(last_at_ms, heads.floor_ms))

    def step(self, outputs: list, now_ms: int, *, head: bool = False) -> list:
        """One server step: its entries become leaves, a head is signed if due (or asked
        for), everything is committed together."""
        entries, messages = split_outputs(outputs)
        self.heads.extend(entries)
        signed = self.heads.sign(now_ms) if head or self.heads.due(now_ms) else None
        write = self.heads.take(signed)
        self.journal.append_many(entries, [write])
        self.heads.committed(write)
        if signed is not None:
            self.signed.append(signed)
        return messages

    def close(self) -> None:
        self.heads.close()
        self.journal.close()

    def leaves(self) -> list:
        """Every leaf of the log, by seq."""
        reader = self.journal.reader()
        try:
            return [genesis_leaf(DOMAIN, OPERATOR.address)] + [
                log_leaf(reader.entry(seq)) for seq in range(1, self.journal.last_seq() + 1)
            ]
        finally:
            reader.close()


def traders() -> list[Trader]:
    return [Trader(Signer(bytes([n]) * 32), DOMAIN) for n in (1, 2, 3)]


def honest_history(op: Operator, rng: st.DataObject | None = None, *, steps: int = 40) -> None:
    """Orders that cross, cancels (some of orders in flight), time passing, heads."""
    people = traders()
    for person in people:  # nonces stay fresh across restarts
        person._counter = op.journal.last_seq()
    placed: list[PlaceOrder] = []
    now = max(T0, op.floor_ms)
    for step in range(steps):
        now += 37 if rng is None else rng.draw(st.integers(0, 90), label="dt")
        who = people[step % 3]
        choice = step % 5 if rng is None else rng.draw(st.integers(0, 4), label="what")
        if choice in (0, 1, 2) or not placed:
            side = 1 if (step // 2) % 2 else -1
            request = who.order(1, PRICE + (step % 3), side * (step % 4 + 1), now)
            placed.append(request)
        elif choice == 3:
            victim = placed[(step * 7) % len(placed)]
            owner = next(p for p in people if p.sender == victim.order.sender)
            request = owner.cancel([victim], now)
        else:
            request = who.cancel_products((), now)
        op.step(op.engine.handle(request, now), now)
    op.step(op.engine.advance(now + 5_000), now + 5_000, head=True)


def test_an_honest_log_is_ordered_in_time_and_every_proof_verifies(tmp_path):
    op = Operator.open(tmp_path / "j.sqlite", settlement_delay_ms=30)
    honest_history(op)
    leaves = op.leaves()
    assert op.heads.tree.size == len(leaves) == op.journal.last_seq() + 1
    times = [leaf.timestamp_ms for leaf in leaves[1:]]
    assert times == sorted(times)
    heads = [s.head for s in op.signed]
    assert len(heads) > 5 and all(h.size >= 1 for h in heads)
    for s in op.signed:
        s.verify(DOMAIN, OPERATOR.address)
    for earlier, later in itertools.pairwise(heads):
        assert earlier.timestamp_ms <= later.timestamp_ms and earlier.size <= later.size
    for head in heads:
        covered = [leaf.timestamp_ms for leaf in leaves[1 : head.size]]
        after = [leaf.timestamp_ms for leaf in leaves[head.size :]]
        assert all(t <= head.timestamp_ms for t in covered)
        assert all(t >= head.timestamp_ms for t in after)
        seqs = list(range(0, head.size, max(head.size // 9, 1)))[:32]
        answer = op.heads.inclusion(head.size, seqs)
        for item in answer["proofs"]:
            proof = LeafProof.from_wire({k: item[k] for k in ("seq", "leaf", "path")})
            assert proof.leaf == leaves[proof.index]
            proof.verify(head.size, head.root)
            if proof.leaf.kind == LeafKind.MATCH:
                assert Match.from_wire(item["match"]).struct_hash() == proof.leaf.content
    for first in heads[::3]:
        for second in heads[::4]:
            if first.size <= second.size:
                path = path_from_wire("p", op.heads.consistency(first.size, second.size)["path"])
                verify_consistency(first.size, second.size, first.root, second.root, path)
    op.close()


def _offences(op: Operator) -> list:
    """Every journal-heads offence the rules find in the operator's own log and heads."""
    leaves = op.leaves()
    head = op.heads.sign(10**15)  # the whole log (its size and root; the time is moot)
    size, reader = head.head.size, op.journal.reader()
    entries = {seq: reader.entry(seq) for seq in range(1, size)}
    reader.close()

    @functools.cache
    def proof(seq: int) -> LeafProof:
        return LeafProof.from_wire(
            {k: v for k, v in op.heads.inclusion(size, [seq])["proofs"][0].items() if k != "match"}
        )

    found = []
    fills = [e for e in entries.values() if isinstance(e, FillIssued)]
    for fill in fills:
        digest = fill.fill.order_digest
        for signed in op.signed:
            found.append(rules.backdated(digest, fill.fill, signed.head))
        match = entries[fill.match_seq].match
        found.append(
            rules.false_match(
                digest, fill.fill, head.head, proof(fill.seq), proof(fill.match_seq), match
            )
        )
        for other in fills:
            if other.seq != fill.seq and other.fill.order_digest == digest:
                found.append(
                    rules.match_reused(
                        digest, fill.fill, other.fill, head.head, proof(fill.seq), proof(other.seq)
                    )
                )
    orders = {e.order.digest(DOMAIN): e for e in entries.values() if isinstance(e, OrderAccepted)}
    for cancel in (e for e in entries.values() if isinstance(e, CancelAccepted)):
        for match in (e for e in entries.values() if isinstance(e, Matched)):
            for digest in (match.maker, match.taker):
                placed = orders[digest]
                found.append(
                    rules.match_after_cancel(
                        placed.order,
                        digest,
                        cancel.request.tx,
                        match.match,
                        head.head,
                        proof(placed.seq),
                        proof(cancel.seq),
                        proof(match.seq),
                    )
                )
    for first in op.signed:
        for second in op.signed:
            if first.head.size < second.head.size:
                path = path_from_wire(
                    "p", op.heads.consistency(first.head.size, second.head.size)["path"]
                )
                found.append(rules.inconsistent_heads(first.head, second.head, path))
    assert leaves  # (the log was read)
    return [f for f in found if f is not None]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data(), st.sampled_from([0, 40, 200]), st.integers(1, 3))
def test_no_heads_rule_finds_anything_in_an_honest_history_with_restarts(
    tmp_path_factory, data, delay, parts
):
    """In-flight fills settle after cancels, restarts come between parts: nothing is provable."""
    path = tmp_path_factory.mktemp("honest") / "j.sqlite"
    signed: list[SignedHead] = []
    for _ in range(parts):
        op = Operator.open(path, settlement_delay_ms=delay)
        op.signed = signed
        honest_history(op, data, steps=12)
        op.close()
    op = Operator.open(path, settlement_delay_ms=delay)
    op.signed = signed
    assert _offences(op) == []
    op.close()


def test_a_fill_in_flight_at_the_cancel_settles_after_it_and_is_not_provable(tmp_path):
    op = Operator.open(tmp_path / "j.sqlite", settlement_delay_ms=200)
    alice, bob, _ = traders()
    resting = alice.order(1, PRICE, 5, T0)
    op.step(op.engine.handle(resting, T0), T0)
    op.step(op.engine.handle(bob.order(1, PRICE, -2, T0 + 10), T0 + 10), T0 + 10)  # in flight
    op.step(op.engine.handle(alice.cancel([resting], T0 + 20), T0 + 20), T0 + 20)  # pending
    op.step(op.engine.advance(T0 + 1_000), T0 + 1_000, head=True)
    reader = op.journal.reader()
    entries = [reader.entry(seq) for seq in range(1, op.journal.last_seq() + 1)]
    reader.close()
    cancel = next(e for e in entries if isinstance(e, CancelAccepted))
    fills = [e for e in entries if isinstance(e, FillIssued)]
    assert fills and all(f.seq > cancel.seq > f.match_seq for f in fills)
    assert _offences(op) == []
    op.close()


def test_a_held_cancel_with_a_match_during_the_hold_is_provable(tmp_path):
    """The Delay policy holds the cancel it logged; the order still matches: rule 3."""
    op = Operator.open(tmp_path / "j.sqlite", policy=Delay(5_000))
    alice, bob, _ = traders()
    resting = alice.order(1, PRICE, 5, T0)
    op.step(op.engine.handle(resting, T0), T0)
    op.step(op.engine.handle(alice.cancel([resting], T0 + 10), T0 + 10), T0 + 10)
    op.step(op.engine.handle(bob.order(1, PRICE, -2, T0 + 20), T0 + 20), T0 + 20)  # held: it fills
    op.step(op.engine.advance(T0 + 6_000), T0 + 6_000, head=True)
    found = _offences(op)
    assert found and set(found) == {rules.Offence.FILL_AFTER_NOTE}
    op.close()


# --- restart and durability ---------------------------------------------------------------


def test_a_restart_rebuilds_nothing_and_signs_heads_of_the_same_tree(tmp_path, monkeypatch):
    path = tmp_path / "j.sqlite"
    op = Operator.open(path, settlement_delay_ms=30)
    honest_history(op)
    before = op.signed[-1].head
    root, size = op.heads.tree.root(), op.heads.tree.size
    op.close()

    from cancelnote import transparency

    appended = []
    original = transparency.CompactTree.append

    def counting(self, leaf_hash):
        appended.append(leaf_hash)
        return original(self, leaf_hash)

    monkeypatch.setattr(transparency.CompactTree, "append", counting)
    again = Operator.open(path, settlement_delay_ms=30)
    assert appended == []  # nothing rebuilt: the border came from disk
    assert (again.heads.tree.size, again.heads.tree.root()) == (size, root)
    assert again.heads.last_head.head == before and again.heads.floor_ms == before.timestamp_ms
    now = before.timestamp_ms + 100
    again.step(again.engine.advance(now), now, head=True)
    after = again.signed[-1].head
    assert (after.size, after.root) == (size, root) and after.timestamp_ms >= before.timestamp_ms
    people = traders()
    again.step(again.engine.handle(people[0].order(1, PRICE, 1, now), now), now, head=True)
    later = again.signed[-1].head
    path_ = path_from_wire("p", again.heads.consistency(before.size, later.size)["path"])
    verify_consistency(before.size, later.size, before.root, later.root, path_)
    again.close()


def _orders(now: int) -> list[tuple[PlaceOrder, int]]:
    people = traders()
    return [
        (people[n % 3].order(1, PRICE, (-1) ** n * 2, now + 11 * n), now + 11 * n)
        for n in range(12)
    ]


def test_a_journal_without_a_log_gets_one_built_once_from_its_rows(tmp_path):
    path = tmp_path / "j.sqlite"
    journal = Journal.open(path, DOMAIN, OPERATOR.address)
    engine = Engine(OPERATOR, DOMAIN, {1, 2}, settlement_delay_ms=30)
    for request, now in _orders(T0):
        journal.append_many(split_outputs(engine.handle(request, now))[0])
    journal.close()
    live = Operator.open(tmp_path / "live.sqlite", settlement_delay_ms=30)
    for request, now in _orders(T0):
        live.step(live.engine.handle(request, now), now)
    op = Operator.open(path, settlement_delay_ms=30)
    assert op.heads.durable_size == op.journal.last_seq() + 1 == live.heads.durable_size
    assert op.heads.tree.root() == live.heads.tree.root()
    op.close()
    again = Operator.open(path, settlement_delay_ms=30)  # and the next start rebuilds nothing
    assert again.heads.tree.root() == live.heads.tree.root()
    again.close()
    live.close()


def _tamper(path: Path, sql: str, *args) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE tree SET hash = zeroblob(32) WHERE node = ?", "is not row"),
        ("DELETE FROM tree WHERE node = ?", "is not row"),
    ],
)
def test_a_changed_log_is_refused_at_start(tmp_path, sql, message):
    path = tmp_path / "j.sqlite"
    op = Operator.open(path)
    honest_history(op, steps=10)
    op.close()
    _tamper(path, sql, node_key(0, 5))
    with pytest.raises(JournalCorrupt, match=message):
        Operator.open(path)


def test_a_changed_border_or_head_is_refused_at_start(tmp_path):
    path = tmp_path / "j.sqlite"
    op = Operator.open(path)
    honest_history(op, steps=10)
    size = op.heads.tree.size
    op.close()
    _tamper(
        path,
        "UPDATE tree SET hash = zeroblob(32) WHERE node = ?",
        node_key(size.bit_length() - 1, 0),
    )
    with pytest.raises(JournalCorrupt, match="border"):
        Operator.open(path)


def test_queries_answer_only_what_is_durable(tmp_path):
    op = Operator.open(tmp_path / "j.sqlite")
    honest_history(op, steps=10)
    size = op.heads.durable_size
    with pytest.raises(LogRange):
        op.heads.inclusion(size + 1, [0])
    with pytest.raises(LogRange):
        op.heads.inclusion(size, [size])
    with pytest.raises(LogRange):
        op.heads.inclusion(size, list(range(33)))
    with pytest.raises(LogRange):
        op.heads.consistency(size, size - 1)
    assert op.heads.consistency(size, size)["path"] == []
    people = traders()
    placed = people[0].order(1, PRICE, 1, T0 + 10**6)
    with pytest.raises(NotLogged):
        op.heads.locate(placed.order.struct_hash())
    outputs = op.engine.handle(placed, T0 + 10**6)
    entries, _ = split_outputs(outputs)
    op.heads.extend(entries)  # made, not yet committed: not visible
    with pytest.raises(NotLogged):
        op.heads.locate(placed.order.struct_hash())
    write = op.heads.take(None)
    op.journal.append_many(entries, [write])
    op.heads.committed(write)
    assert op.heads.locate(placed.order.struct_hash()) == {"seq": str(entries[0].seq)}
    op.close()


def test_a_backdating_engine_is_caught_by_the_court(tmp_path, new_world):
    """An operator that stamps what it journals ``d`` ms earlier than the heads it signs (to
    date a fill made during a forced cancel's window before the request): the first fill
    after a head is provable, on the real court."""
    world = new_world()
    domain = world.court.domain
    journal = Journal.open(tmp_path / "j.sqlite", domain, world.operator.address)
    heads = HeadLog.open(journal, world.operator, domain, interval_ms=100)
    heads.finish()
    engine = Engine(world.operator, domain, {1})
    alice = Trader(world.alice, domain)
    bob = Trader(world.bob, domain)
    backdate, now = 2_000, T0
    fills: list[Fill] = []
    signed: list[SignedHead] = []
    for _ in range(6):
        now += 150
        stamped = now - backdate  # the engine's clock runs behind the heads' clock
        maker = alice.order(1, PRICE, 1, stamped)
        for request in (maker, bob.order(1, PRICE, -1, stamped)):
            entries, _ = split_outputs(engine.handle(request, stamped))
            heads.extend(entries)
            head = heads.sign(now) if heads.due(now) else None
            write = heads.take(head)
            journal.append_many(entries, [write])
            heads.committed(write)
            signed += [head] if head else []
            fills += [e.fill for e in entries if isinstance(e, FillIssued)]
    provable = [
        (fill, s)
        for fill in fills
        for s in signed
        if rules.backdated(fill.order_digest, fill, s.head)
    ]
    assert provable
    fill, s = provable[0]
    placed = next(
        e.order
        for e in journal.entries()
        if isinstance(e, OrderAccepted) and e.order.digest(domain) == fill.order_digest
    )
    receipt = world.court.heads.prove_backdated(
        world.bob, placed, fill, fill.sign(world.operator, domain), s.head, s.signature
    )
    assert [e.args["offence"] for e in world.court.events(receipt) if e.name == "Slashed"] == [10]
    heads.close()
    journal.close()


def test_cancels_of_every_kind_are_located(tmp_path):
    op = Operator.open(tmp_path / "j.sqlite")
    alice = traders()[0]
    placed = alice.order(1, PRICE, 1, T0)
    op.step(op.engine.handle(placed, T0), T0)
    requests = [alice.cancel([placed], T0 + 1), alice.cancel_products((1,), T0 + 2)]
    for n, request in enumerate(requests):
        op.step(op.engine.handle(request, T0 + 3 + n), T0 + 3 + n)
    for request in requests:
        assert isinstance(request, CancelOrders | CancelProductOrders)
        seq = int(op.heads.locate(request.tx.struct_hash())["seq"])
        assert op.leaves()[seq].content == request.tx.struct_hash()
    op.close()
