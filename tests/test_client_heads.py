"""Clients and watchtowers on journal heads: they verify and keep heads and the leaves of
their own messages, find what the heads rules find, and take it to the real court.

End to end: a real server (heads every 50 ms) over loopback, the real client ``Session``
trading, a :class:`HeadsFollower` on its own connection, a :class:`Watchtower` on a court on
py-evm. A held cancel is found by its leaf and slashed; a dropped cancel is forced within
a few heads; an honest run finds nothing. Peers' heads (bundles) show a split view.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
from conftest import make_world

from cancelnote.client.evidence import EvidenceStore, SignedFill, parse_bundle
from cancelnote.client.heads import HeadsFollower, HeadsVerifier
from cancelnote.client.session import Session
from cancelnote.client.verifier import DISPUTABLE, Kind, Verifier, VerifierPolicy
from cancelnote.client.watchtower import Watchtower
from cancelnote.crypto import keccak
from cancelnote.dispute.court import Offence
from cancelnote.messages import Fill, JournalHead
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.engine import Engine
from cancelnote.operator.heads import HeadLog
from cancelnote.operator.journal import Journal
from cancelnote.operator.policies import Delay, Ignore, Policy
from cancelnote.operator.server import OperatorServer
from cancelnote.transparency import Leaf, LeafKind, MemoryNodes, SignedHead, genesis_leaf

H_MS = 50
PRICE = 2_000 * 10**18
POLICY = VerifierPolicy(heads_ms=H_MS, cancel_heads=10, head_clock_tolerance_ms=5_000)


@attrs.define
class Exchange:
    """A court, an operator server with heads, and a watched client per trader."""

    world: object
    server: OperatorServer
    url: str

    def client(
        self, tmp_path: Path, name: str, signer
    ) -> tuple[Verifier, HeadsVerifier, Watchtower]:
        store = EvidenceStore.open(
            tmp_path / f"{name}.sqlite", self.world.court.domain, self.world.operator.address
        )
        verifier = Verifier(store, POLICY)
        return verifier, HeadsVerifier(verifier), Watchtower(verifier, self.world.court, signer)


async def _exchange(nursery, tmp_path: Path, policy: Policy) -> Exchange:
    world = make_world(halt_on_default=False)
    domain = world.court.domain
    journal = Journal.open(tmp_path / "operator.sqlite", domain, world.operator.address)
    heads = HeadLog.open(journal, world.operator, domain, H_MS)
    heads.finish()
    engine = Engine(world.operator, domain, {1}, policy=policy)
    server = OperatorServer(engine, journal, heads=heads)
    await nursery.start(server.serve, "127.0.0.1", 0)
    return Exchange(world, server, f"ws://127.0.0.1:{server.port}/")


async def _stop(exchange: Exchange) -> None:
    with trio.fail_after(10):
        await exchange.server.shutdown()
    exchange.server.heads.close()
    exchange.server.journal.close()


async def _heads(follower: HeadsFollower, count: int) -> None:
    target = follower.seen + count
    with trio.fail_after(10):
        while follower.seen < target:
            await trio.sleep(H_MS / 1000 / 2)


@attrs.define
class Traders:
    """Alice (watched: her store, its heads follower and watchtower) and Bob, trading."""

    alice: Session
    bob: Session
    follower: HeadsFollower
    verifier: Verifier
    tower: Watchtower


async def _traders(nursery, exchange: Exchange, tmp_path: Path) -> Traders:
    world = exchange.world
    verifier, heads, tower = exchange.client(tmp_path, "alice", world.alice)
    bob_verifier, _, _ = exchange.client(tmp_path, "bob", world.bob)
    traders = Traders(
        Session(exchange.url, world.alice, verifier),
        Session(exchange.url, world.bob, bob_verifier),
        HeadsFollower(exchange.url, heads, wall_clock_ms),
        verifier,
        tower,
    )
    for task in (traders.alice.run, traders.bob.run, traders.follower.run):
        await nursery.start(task)
    return traders


async def test_a_held_cancel_is_found_by_its_leaf_and_slashed(nursery, tmp_path):
    exchange = await _exchange(nursery, tmp_path, Delay(2_000))
    world = exchange.world
    try:
        traders = await _traders(nursery, exchange, tmp_path)
        alice, bob, follower = traders.alice, traders.bob, traders.follower
        verifier, tower = traders.verifier, traders.tower
        digest = await alice.place(1, PRICE, 10**18)
        async with trio.open_nursery() as inner:  # the cancel is held 2 s...
            inner.start_soon(alice.cancel, [(digest, 1)])
            await trio.sleep(0.2)
            await bob.place(1, PRICE, -(10**17))  # ...and the order fills meanwhile
            await _heads(follower, 4)
        await _heads(follower, 4)
        assert verifier.store.notes(digest) and verifier.store.fills(digest)
        rule1 = [f for f in verifier.store.findings() if f.kind == Kind.FILL_AFTER_NOTE]
        assert rule1 == []  # the note counts the fill: only the log shows the hold
        (found,) = [f for f in verifier.store.findings() if f.kind == Kind.FILL_AFTER_CANCEL]
        assert found.offence is Offence.FILL_AFTER_NOTE
        outcomes = await trio.to_thread.run_sync(tower.step, wall_clock_ms())
        (proved,) = [o for o in outcomes if o.outcome == "claimed"]
        assert proved.action.function == "heads.prove_match_after_cancel"
        assert world.court.offence_paid(digest, Offence.FILL_AFTER_NOTE)
    finally:
        nursery.cancel_scope.cancel()
        await _stop(exchange)


async def test_an_honest_exchange_leaves_nothing_to_dispute(nursery, tmp_path):
    exchange = await _exchange(nursery, tmp_path, Policy())
    try:
        traders = await _traders(nursery, exchange, tmp_path)
        alice, bob, follower, verifier = (
            traders.alice,
            traders.bob,
            traders.follower,
            traders.verifier,
        )
        digests = [await alice.place(1, PRICE - n, 10**18) for n in range(3)]
        await bob.place(1, PRICE - 10**18, -(15 * 10**17))
        await alice.cancel([(d, 1) for d in digests])
        await _heads(follower, 6)
        kept = verifier.store
        assert kept.fills() and kept.notes() and len(kept.heads()) >= 3
        for fill in kept.fills():
            assert kept.leaf(fill.fill.seq) is not None  # every fill proven in the log
            assert kept.leaf(kept.leaf(fill.fill.seq).proof.leaf.ref).match is not None
        for note in kept.notes():
            assert kept.leaf(note.note.seq) is not None
        assert [f.kind for f in kept.findings() if f.kind in DISPUTABLE] == []
        assert [f.kind for f in kept.findings()] == []
    finally:
        nursery.cancel_scope.cancel()
        await _stop(exchange)


async def test_a_dropped_cancel_is_forced_a_few_heads_after_it_was_sent(nursery, tmp_path):
    import random

    exchange = await _exchange(nursery, tmp_path, Ignore(1.0, random.Random(1)))
    world = exchange.world
    verifier, heads, tower = exchange.client(tmp_path, "alice", world.alice)
    alice = Session(exchange.url, world.alice, verifier)
    follower = HeadsFollower(exchange.url, heads, wall_clock_ms)
    try:
        await nursery.start(alice.run)
        await nursery.start(follower.run)
        digest = await alice.place(1, PRICE, 10**18)
        nursery.start_soon(alice.cancel, [(digest, 1)])  # no answer ever comes
        sent = wall_clock_ms()
        with trio.fail_after(10):
            while not [f for f in verifier.store.findings() if f.kind == Kind.UNLOGGED_CANCEL]:
                await trio.sleep(H_MS / 1000)
        waited = wall_clock_ms() - sent
        assert POLICY.cancel_heads * H_MS <= waited < POLICY.cancel_deadline_ms
        outcomes = await trio.to_thread.run_sync(tower.step, wall_clock_ms())
        assert [o.outcome for o in outcomes if o.action.__class__.__name__ == "ForceCancel"] == [
            "forced"
        ]
    finally:
        nursery.cancel_scope.cancel()
        await _stop(exchange)


# --- the core, sans I/O: backdating, forks, bundles ---------------------------------------


def _signed(world, head: JournalHead) -> SignedHead:
    return SignedHead(head, head.sign(world.operator, world.court.domain))


def _core(tmp_path: Path, world, name: str = "s") -> tuple[EvidenceStore, Verifier, HeadsVerifier]:
    """A store holding one order of Alice's, its verifier and its heads core."""
    store = EvidenceStore.open(
        tmp_path / f"{name}.sqlite", world.court.domain, world.operator.address
    )
    order, signature = world.order(world.alice)
    store.add_order(order, signature, 0)
    verifier = Verifier(store, POLICY)
    return store, verifier, HeadsVerifier(verifier)


def test_a_backdated_fill_is_found_against_the_heads_held_and_slashed(tmp_path):
    world = make_world()
    store = EvidenceStore.open(tmp_path / "s.sqlite", world.court.domain, world.operator.address)
    verifier = Verifier(store, POLICY)
    heads = HeadsVerifier(verifier)
    order, signature = world.order(world.alice)
    store.add_order(order, signature, 0)
    head = _signed(world, JournalHead(40, keccak(b"root"), 5_000))
    assert heads.receive_head(head, 5_000) == []
    fill = Fill(order.digest(world.court.domain), order.sender, 41, 1, 1, PRICE, 4_999)
    fill_sig = fill.sign(world.operator, world.court.domain)
    found = verifier.receive_fill(SignedFill(fill, fill_sig, 5_100), 5_100).findings
    (backdated,) = [f for f in found if f.kind == Kind.BACKDATED]
    tower = Watchtower(verifier, world.court, world.bob)
    outcomes = tower.step(5_200)
    assert [o.outcome for o in outcomes] == ["claimed"]
    assert world.court.offence_paid(order.digest(world.court.domain), Offence.BACKDATED)
    # Arriving in the other order (the fill first, then the head) finds it too.
    other = EvidenceStore.open(tmp_path / "o.sqlite", world.court.domain, world.operator.address)
    other_verifier = Verifier(other, POLICY)
    other.add_order(order, signature, 0)
    other_verifier.receive_fill(SignedFill(fill, fill_sig, 5_100), 5_100)
    found = HeadsVerifier(other_verifier).receive_head(head, 5_200)
    assert [f.kind for f in found] == [Kind.BACKDATED] and backdated.evidence == found[0].evidence


def _split_view(world, size: int, fork_at: int) -> tuple[MemoryNodes, MemoryNodes]:
    honest, forked = MemoryNodes(), MemoryNodes()
    genesis = genesis_leaf(world.court.domain, world.operator.address)
    honest.append(genesis.hash())
    forked.append(genesis.hash())
    for i in range(1, size):
        leaf = Leaf(LeafKind.ORDER, i, 0, keccak(i.to_bytes(4, "big")))
        honest.append(leaf.hash())
        forked.append((leaf if i < fork_at else attrs.evolve(leaf, ref=1)).hash())
    return honest, forked


def test_a_peers_bundle_shows_a_split_view_and_the_court_halts_the_operator(tmp_path):
    world = make_world()
    domain = world.court.domain
    honest, forked = _split_view(world, 30, fork_at=12)
    _, verifier, heads = _core(tmp_path, world, "mine")
    assert heads.receive_head(_signed(world, JournalHead(30, honest.root(30), 1_000)), 1_000) == []
    peer = EvidenceStore.open(tmp_path / "peer.sqlite", domain, world.operator.address)
    HeadsVerifier(Verifier(peer, POLICY)).receive_head(
        _signed(world, JournalHead(30, forked.root(30), 1_000)), 1_000
    )
    bundle = parse_bundle(peer.export_bundle())
    (fork,) = heads.import_heads(bundle.heads, 2_000)
    assert fork.kind == Kind.INCONSISTENT_HEADS and fork.evidence["proof"] == []
    outcomes = Watchtower(verifier, world.court, world.bob).step(2_100)
    assert [o.outcome for o in outcomes] == ["claimed"] and world.court.halted()


def test_an_operators_consistency_proof_from_the_other_view_proves_the_fork(tmp_path):
    world = make_world()
    honest, forked = _split_view(world, 40, fork_at=5)
    _, verifier, heads = _core(tmp_path, world)
    small = _signed(world, JournalHead(20, forked.root(20), 1_000))  # our view
    large = _signed(world, JournalHead(40, honest.root(40), 2_000))  # a peer's
    heads.receive_head(small, 1_000)
    heads.import_heads([large], 2_000)
    (query,) = [q for q in heads.queries(small) if q.KEY == "consistency"]
    assert (query.first, query.second) == (20, 40)
    path = ["0x" + node.hex() for node in honest.consistency(20, 40)]  # from the other view
    answer = {"status": "success", "data": {"first": "20", "second": "40", "path": path}}
    (fork,) = heads.take(large, query, answer, 2_100)
    assert fork.kind == Kind.INCONSISTENT_HEADS
    Watchtower(verifier, world.court, world.bob).step(2_200)
    assert world.court.heads.fork_proven() and world.court.halted()


def test_a_refused_or_wrong_proof_is_recorded_not_disputed(tmp_path):
    world = make_world()
    store = EvidenceStore.open(tmp_path / "s.sqlite", world.court.domain, world.operator.address)
    verifier = Verifier(store, POLICY)
    heads = HeadsVerifier(verifier)
    honest, _ = _split_view(world, 10, 10)
    head = _signed(world, JournalHead(10, honest.root(10), 1_000))
    heads.receive_head(head, 1_000)
    query = heads.queries(head)  # nothing of ours yet
    assert query == []
    from cancelnote.api import Inclusion

    refused = {"status": "failure", "error_code": "OUT_OF_RANGE", "error": "no"}
    (finding,) = heads.take(head, Inclusion(10, (3,)), refused, 1_100)
    assert finding.kind == Kind.UNPROVEN_LEAF and finding.offence is None
    bad = {
        "status": "success",
        "data": {
            "size": "10",
            "proofs": [
                {"seq": "3", "leaf": Leaf(LeafKind.ORDER, 3, 0, keccak(b"x")).to_wire(), "path": []}
            ],
        },
    }
    (finding,) = heads.take(head, Inclusion(10, (3,)), bad, 1_200)
    assert finding.kind == Kind.UNPROVEN_LEAF and store.leaf(3) is None
    forged = SignedHead(head.head, head.head.sign(world.bob, world.court.domain))
    (finding,) = heads.receive_head(forged, 1_300)
    assert finding.kind == Kind.BAD_SIGNATURE and len(store.heads()) == 1


@pytest.mark.parametrize("lag_ms", [10_000, -10_000])
def test_a_head_far_from_the_clients_clock_is_recorded(tmp_path, lag_ms):
    world = make_world()
    store = EvidenceStore.open(tmp_path / "s.sqlite", world.court.domain, world.operator.address)
    heads = HeadsVerifier(Verifier(store, POLICY))
    (finding,) = heads.receive_head(
        _signed(world, JournalHead(3, keccak(b"r"), 50_000 + lag_ms)), 50_000
    )
    assert finding.kind == Kind.HEAD_CLOCK and finding.kind not in DISPUTABLE


def test_a_fork_seen_by_a_store_without_orders_is_recorded_and_nothing_is_sent(tmp_path):
    world = make_world()
    store = EvidenceStore.open(tmp_path / "s.sqlite", world.court.domain, world.operator.address)
    verifier = Verifier(store, POLICY)
    heads = HeadsVerifier(verifier)
    honest, forked = _split_view(world, 9, fork_at=3)
    heads.receive_head(_signed(world, JournalHead(9, honest.root(9), 1_000)), 1_000)
    (fork,) = heads.receive_head(_signed(world, JournalHead(9, forked.root(9), 1_000)), 1_000)
    assert fork.kind == Kind.INCONSISTENT_HEADS and fork.offence is None
    assert Watchtower(verifier, world.court, world.bob).step(1_100) == []
    assert not world.court.halted()
