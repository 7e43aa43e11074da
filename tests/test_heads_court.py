"""The HeadsCourt: its checks agree with the Python ones for random trees, and each offence
is found exactly when the rules of :mod:`cancelnote.dispute.rules` say (both ways).

Logs here are built leaf by leaf with :class:`cancelnote.transparency.MemoryNodes` and
heads are signed with the operator's key, as an operator would; the honest engine's own
logs (restarts, in-flight fills) are proven unprovable in ``tests/test_operator_heads.py``.
"""

from __future__ import annotations

import attrs
import pytest
from conftest import PRICE, World, make_world
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cancelnote.crypto import keccak
from cancelnote.dispute import rules
from cancelnote.dispute.court import Offence
from cancelnote.messages import (
    Cancellation,
    CancellationProducts,
    Fill,
    JournalHead,
    Match,
    Order,
    make_nonce,
)
from cancelnote.transparency import (
    Leaf,
    LeafKind,
    LeafProof,
    MemoryNodes,
    genesis_leaf,
    proves_inconsistency,
)

T0 = 1_767_225_600_000


@attrs.define
class Log:
    """A log of leaves, as an operator builds it, and its signed heads."""

    world: World
    leaves: list[Leaf] = attrs.Factory(list)
    nodes: MemoryNodes = attrs.Factory(MemoryNodes)

    @classmethod
    def start(cls, world: World) -> Log:
        log = cls(world)
        log.add(genesis_leaf(world.court.domain, world.operator.address))
        return log

    def add(self, leaf: Leaf) -> int:
        self.leaves.append(leaf)
        self.nodes.append(leaf.hash())
        return len(self.leaves) - 1

    def add_message(self, kind: LeafKind, message: object, ref: int = 0, at_ms: int = 0) -> int:
        at_ms = at_ms or T0 + 10 * len(self.leaves)
        return self.add(Leaf(kind, at_ms, ref, message.struct_hash()))

    def head(self, size: int | None = None, at_ms: int | None = None) -> tuple[JournalHead, bytes]:
        size = len(self.leaves) if size is None else size
        at_ms = T0 + 10 * size if at_ms is None else at_ms
        head = JournalHead(size, self.nodes.root(size), at_ms)
        return head, head.sign(self.world.operator, self.world.court.domain)

    def proof(self, index: int, size: int | None = None) -> LeafProof:
        size = len(self.leaves) if size is None else size
        return LeafProof(index, self.leaves[index], self.nodes.inclusion(index, size))


@pytest.fixture(scope="module")
def court_world() -> World:
    """One court for the view tests (they change nothing)."""
    return make_world()


def _order(world: World, nonce: int = 1, product_id: int = 1) -> Order:
    order, _ = world.order(world.alice, nonce=nonce)
    return attrs.evolve(order, product_id=product_id)


def _fill(world: World, order: Order, *, seq: int, amount: int, total: int, at_ms: int) -> Fill:
    fill, _ = world.fill(order, seq=seq, amount=amount, filled_total=total, timestamp_ms=at_ms)
    return fill


def _sign(world: World, message) -> bytes:
    return message.sign(world.operator, world.court.domain)


# --- the court's checks agree with the Python ones --------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(1, 300), st.data())
def test_inclusion_verdicts_agree_for_random_trees(court_world, size, data):
    log = Log(court_world)
    for i in range(size):
        log.add(Leaf(LeafKind(i % 10), T0 + i, i // 3, keccak(i.to_bytes(4, "big"))))
    head, _ = log.head(size)
    index = data.draw(st.integers(0, size - 1))
    proof = log.proof(index)
    heads = court_world.court.heads
    assert heads.leaf_hash(proof) == proof.leaf.hash()
    assert heads.included(proof, head) is rules.included(proof, head) is True
    mutation = data.draw(st.sampled_from(["index", "leaf", "path", "size", "root", "extra"]))
    if mutation == "index":
        proof = attrs.evolve(proof, index=data.draw(st.integers(0, 2**64 - 1)))
    elif mutation == "leaf":
        proof = attrs.evolve(proof, leaf=attrs.evolve(proof.leaf, ref=proof.leaf.ref + 1))
    elif mutation == "path" and proof.path:
        at = data.draw(st.integers(0, len(proof.path) - 1))
        path = list(proof.path)
        path[at] = keccak(path[at])
        proof = attrs.evolve(proof, path=path)
    elif mutation == "size":
        head = attrs.evolve(head, size=data.draw(st.integers(0, 2**64 - 1)))
    elif mutation == "root":
        head = attrs.evolve(head, root=keccak(head.root))
    else:
        proof = attrs.evolve(proof, path=[*proof.path, bytes(32)])
    assert heads.included(proof, head) is rules.included(proof, head)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(2, 200), st.data())
def test_inconsistency_verdicts_agree_for_random_trees(court_world, second, data):
    first = data.draw(st.integers(1, second))
    fork_at = data.draw(st.integers(0, second))  # at or past the end: no fork at all
    honest, forked = Log(court_world), Log(court_world)
    for i in range(second):
        content = keccak(i.to_bytes(4, "big"))
        honest.add(Leaf(LeafKind.ORDER, T0 + i, 0, content))
        forked.add(Leaf(LeafKind.ORDER, T0 + i, 0, content if i < fork_at else keccak(content)))
    small, _ = forked.head(first)
    large, _ = honest.head(second)
    proof = honest.nodes.consistency(first, second) if first < second else []
    mutated = data.draw(st.booleans())
    if mutated and proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        proof[at] = keccak(proof[at])
    elif mutated:
        proof = [bytes(32)]
    found = court_world.court.heads.inconsistent(small, large, proof)
    assert found is (rules.inconsistent_heads(small, large, proof) is not None)
    assert found is proves_inconsistency(first, small.root, second, large.root, proof)
    if not mutated:  # an unbroken proof shows a fork exactly when there is one
        assert found is (fork_at < first)


def test_a_fork_is_found_for_every_pair_of_small_sizes(court_world):
    heads = court_world.court.heads
    for second in range(2, 12):
        for first in range(1, second):
            honest, forked = Log(court_world), Log(court_world)
            for i in range(second):
                content = keccak(i.to_bytes(4, "big"))
                honest.add(Leaf(LeafKind.ORDER, T0, 0, content))
                forked.add(Leaf(LeafKind.ORDER, T0, 0, keccak(content) if i == 0 else content))
            proof = honest.nodes.consistency(first, second)
            small, large = forked.head(first)[0], honest.head(second)[0]
            assert heads.inconsistent(small, large, proof)
            assert not heads.inconsistent(honest.head(first)[0], large, proof)


# --- inconsistent heads -----------------------------------------------------------------


def _forked_logs(world: World, size: int, fork_at: int) -> tuple[Log, Log]:
    honest, forked = Log.start(world), Log.start(world)
    for i in range(1, size):
        content = keccak(i.to_bytes(4, "big"))
        honest.add(Leaf(LeafKind.ORDER, T0 + i, 0, content))
        forked.add(Leaf(LeafKind.ORDER, T0 + i, 0, content if i < fork_at else keccak(content)))
    return honest, forked


def test_two_heads_of_a_forked_log_are_slashed_once_and_halt_the_operator(world, reverts):
    honest, forked = _forked_logs(world, 40, fork_at=17)
    small, small_sig = forked.head(25)
    large, large_sig = honest.head(40)
    proof = honest.nodes.consistency(25, 40)
    payee = _order(world)
    receipt = world.court.heads.prove_inconsistent_heads(
        world.bob, payee, small, small_sig, large, large_sig, proof
    )
    (slashed,) = [e for e in world.court.events(receipt) if e.name == "Slashed"]
    assert slashed.args["offence"] == Offence.INCONSISTENT_HEADS
    assert slashed.args["owner"] == world.alice.address  # the payee's owner
    assert world.court.halted() and world.court.heads.fork_proven()
    with reverts("court: offence already proven"):
        world.court.heads.prove_inconsistent_heads(
            world.bob, _order(world, nonce=2), small, small_sig, large, large_sig, proof
        )


def test_one_size_two_roots_is_a_fork_without_a_proof(world, reverts):
    honest, forked = _forked_logs(world, 12, fork_at=11)
    first, first_sig = honest.head(12)
    second, second_sig = forked.head(12)
    heads = world.court.heads
    with reverts("court: no inconsistency proven"):
        heads.prove_inconsistent_heads(
            world.bob, _order(world), first, first_sig, second, second_sig, [bytes(32)]
        )
    payee = _order(world)
    heads.prove_inconsistent_heads(world.bob, payee, first, first_sig, second, second_sig, [])
    assert world.court.offence_paid(payee.digest(world.court.domain), Offence.INCONSISTENT_HEADS)


def test_heads_of_one_honest_log_are_never_inconsistent(world, reverts):
    log, _ = _forked_logs(world, 30, fork_at=30)
    heads = world.court.heads
    for first in (1, 2, 7, 16, 29):
        small, small_sig = log.head(first)
        large, large_sig = log.head(30, at_ms=T0 + 10**6)
        with reverts("court: no inconsistency proven"):
            heads.prove_inconsistent_heads(
                world.bob,
                _order(world),
                small,
                small_sig,
                large,
                large_sig,
                log.nodes.consistency(first, 30),
            )
    same, same_sig = log.head(30)
    later, later_sig = log.head(30, at_ms=T0 + 10**7)  # one size, one root, two times
    with reverts("court: no inconsistency proven"):
        heads.prove_inconsistent_heads(
            world.bob, _order(world), same, same_sig, later, later_sig, []
        )
    with reverts("court: heads not in size order"):
        heads.prove_inconsistent_heads(
            world.bob, _order(world), later, later_sig, small, small_sig, []
        )


def test_a_fork_needs_the_operator_signatures(world, reverts):
    honest, forked = _forked_logs(world, 20, fork_at=3)
    small, _ = forked.head(10)
    large, large_sig = honest.head(20)
    forged = small.sign(world.bob, world.court.domain)
    with reverts("court: not signed by the operator"):
        world.court.heads.prove_inconsistent_heads(
            world.bob,
            _order(world),
            small,
            forged,
            large,
            large_sig,
            honest.nodes.consistency(10, 20),
        )


# --- backdated fills --------------------------------------------------------------------


def test_a_fill_logged_after_a_head_and_stamped_before_it_is_slashed(world, reverts):
    order = _order(world)
    head = JournalHead(50, keccak(b"root"), T0 + 5_000)
    head_sig = _sign(world, head)
    heads = world.court.heads
    for seq, at_ms in ((50, T0 + 5_000), (49, T0), (120, T0 + 9_000)):  # at the head, before it
        fill = _fill(world, order, seq=seq, amount=1, total=1, at_ms=at_ms)
        assert rules.backdated(order.digest(world.court.domain), fill, head) is None
        with reverts("court: fill not backdated"):
            heads.prove_backdated(world.bob, order, fill, _sign(world, fill), head, head_sig)
    fill = _fill(world, order, seq=50, amount=1, total=1, at_ms=T0 + 4_999)
    assert rules.backdated(order.digest(world.court.domain), fill, head) is Offence.BACKDATED
    receipt = heads.prove_backdated(world.bob, order, fill, _sign(world, fill), head, head_sig)
    (slashed,) = [e for e in world.court.events(receipt) if e.name == "Slashed"]
    assert (
        slashed.args["offence"] == Offence.BACKDATED
        and slashed.args["owner"] == world.alice.address
    )
    assert not world.court.halted()
    with reverts("court: offence already proven"):
        heads.prove_backdated(world.bob, order, fill, _sign(world, fill), head, head_sig)
    other = _fill(world, _order(world, nonce=9), seq=50, amount=1, total=1, at_ms=T0)
    with reverts("court: fill is for another order"):
        heads.prove_backdated(world.bob, order, other, _sign(world, other), head, head_sig)


# --- a match after the cancel -----------------------------------------------------------


@attrs.define
class CancelStory:
    """A log where Alice's order is accepted, then cancelled, then (if ``late``) matched."""

    log: Log
    order: Order
    cancellation: Cancellation | CancellationProducts
    match: Match
    order_seq: int
    cancel_seq: int
    match_seq: int

    def prove(self, world: World, **changes):
        head, head_sig = self.log.head()
        args = {
            "order": self.order,
            "cancellation": self.cancellation,
            "match": self.match,
            "head": head,
            "head_sig": head_sig,
            "order_leaf": self.log.proof(self.order_seq),
            "cancel_leaf": self.log.proof(self.cancel_seq),
            "match_leaf": self.log.proof(self.match_seq),
        }
        args.update(changes)
        found = rules.match_after_cancel(
            args["order"],
            args["order"].digest(world.court.domain),
            args["cancellation"],
            args["match"],
            args["head"],
            args["order_leaf"],
            args["cancel_leaf"],
            args["match_leaf"],
        )
        return found, lambda: world.court.heads.prove_match_after_cancel(world.bob, **args)


def _cancel_story(world: World, *, late: bool, by_product: bool = False) -> CancelStory:
    log = Log.start(world)
    order = _order(world)
    digest = order.digest(world.court.domain)
    other, _ = world.order(world.bob, amount=-(10**18), nonce=7)
    order_seq = log.add_message(LeafKind.ORDER, order)
    nonce = make_nonce(T0 + 90_000, entropy=1)
    cancellation: Cancellation | CancellationProducts
    if by_product:
        cancellation = CancellationProducts(order.sender, (), nonce)
    else:
        cancellation = Cancellation(order.sender, (order.product_id,), (digest,), nonce)
    match = Match(digest, other.digest(world.court.domain), 10**17, PRICE, T0 + 500)
    if not late:
        log.add_message(LeafKind.ORDER, other)
        match_seq = log.add_message(LeafKind.MATCH, match)  # in flight at the cancel
    cancel_seq = log.add_message(LeafKind.CANCEL, cancellation)
    if late:
        log.add_message(LeafKind.ORDER, other)
        match_seq = log.add_message(LeafKind.MATCH, match)
    fill = _fill(world, order, seq=len(log.leaves), amount=10**17, total=10**17, at_ms=T0 + 500)
    log.add(Leaf(LeafKind.FILL, fill.timestamp_ms, match_seq, fill.struct_hash()))
    return CancelStory(log, order, cancellation, match, order_seq, cancel_seq, match_seq)


@pytest.mark.parametrize("by_product", [False, True], ids=["by-digest", "by-product"])
def test_a_match_after_the_cancel_leaf_is_slashed_as_a_fill_after_the_note(
    world, reverts, by_product
):
    story = _cancel_story(world, late=True, by_product=by_product)
    found, prove = story.prove(world)
    assert found is Offence.FILL_AFTER_NOTE
    receipt = prove()
    (slashed,) = [e for e in world.court.events(receipt) if e.name == "Slashed"]
    assert slashed.args["offence"] == Offence.FILL_AFTER_NOTE
    with reverts("court: offence already proven"):
        prove()


def test_a_match_in_flight_at_the_cancel_is_not_an_offence(world, reverts):
    story = _cancel_story(world, late=False)
    found, prove = story.prove(world)
    assert found is None
    with reverts("court: match not after the cancel"):
        prove()


def test_the_cancel_must_name_the_order(world, reverts):
    story = _cancel_story(world, late=True)
    cancellation = story.cancellation
    cases = {
        "court: cancellation is for another sender": attrs.evolve(
            cancellation, sender=_order(world).sender[:20] + b"hedge".ljust(12, b"\x00")
        ),
        "court: cancel does not name the order": attrs.evolve(cancellation, product_ids=(2,)),
    }
    for reason, changed in cases.items():
        found, prove = story.prove(world, cancellation=changed)
        assert found is None
        with reverts(reason):
            prove()


def test_every_leaf_must_be_the_message_s_and_in_the_head(world, reverts):
    story = _cancel_story(world, late=True)
    log = story.log
    order_leaf = log.proof(story.order_seq)
    cases = [
        (
            {
                "order_leaf": attrs.evolve(
                    order_leaf, leaf=attrs.evolve(order_leaf.leaf, kind=LeafKind.FORCED)
                )
            },
            "court: leaf is not the message's",
        ),
        (
            {"order_leaf": attrs.evolve(order_leaf, path=[keccak(b"x"), *order_leaf.path[1:]])},
            "court: leaf not in the head",
        ),
        ({"match": attrs.evolve(story.match, amount=1)}, "court: leaf is not the message's"),
        (
            {"match": attrs.evolve(story.match, maker=keccak(b"m"))},
            "court: match is of another order",
        ),
        ({"order_leaf": log.proof(story.match_seq)}, "court: match not after the cancel"),
    ]
    for changes, reason in cases:
        found, prove = story.prove(world, **changes)
        assert found is None, reason
        with reverts(reason):
            prove()
    head, _ = story.log.head()
    forged = head.sign(world.bob, world.court.domain)
    with reverts("court: not signed by the operator"):
        story.prove(world, head_sig=forged)[1]()


def test_an_order_placed_after_its_cancel_was_never_cancelled(world, reverts):
    """A cancel of an order not yet placed is NOT_FOUND: the order lives on."""
    log = Log.start(world)
    order = _order(world)
    digest = order.digest(world.court.domain)
    other, _ = world.order(world.bob, amount=-(10**18), nonce=7)
    cancellation = Cancellation(order.sender, (1,), (digest,), make_nonce(T0 + 90_000, entropy=1))
    cancel_seq = log.add_message(LeafKind.CANCEL, cancellation)
    order_seq = log.add_message(LeafKind.ORDER, order)
    match = Match(digest, other.digest(world.court.domain), 10**17, PRICE, T0)
    match_seq = log.add_message(LeafKind.MATCH, match)
    story = CancelStory(log, order, cancellation, match, order_seq, cancel_seq, match_seq)
    found, prove = story.prove(world)
    assert found is None
    with reverts("court: match not after the cancel"):
        prove()


# --- false and reused matches -------------------------------------------------------------


def _fill_story(world: World, ref_of: str) -> tuple[Log, Order, Fill, int, Match]:
    """A fill of Alice's order whose leaf names ``ref_of``: its match, the order's own leaf,
    a match of another size, or a leaf after itself."""
    log = Log.start(world)
    order = _order(world)
    digest = order.digest(world.court.domain)
    other, _ = world.order(world.bob, amount=-(10**18), nonce=7)
    order_seq = log.add_message(LeafKind.ORDER, order)
    log.add_message(LeafKind.ORDER, other)
    match = Match(digest, other.digest(world.court.domain), 10**17, PRICE, T0 + 900)
    match_seq = log.add_message(LeafKind.MATCH, match)
    wrong = Match(digest, other.digest(world.court.domain), 2 * 10**17, PRICE, T0 + 900)
    wrong_seq = log.add_message(LeafKind.MATCH, wrong)
    fill = _fill(world, order, seq=len(log.leaves), amount=10**17, total=10**17, at_ms=T0 + 900)
    ref = {"match": match_seq, "order": order_seq, "wrong": wrong_seq, "later": fill.seq + 3}[
        ref_of
    ]
    log.add(Leaf(LeafKind.FILL, fill.timestamp_ms, ref, fill.struct_hash()))
    named = {"match": match, "wrong": wrong}.get(ref_of, match)
    return log, order, fill, ref, named


@pytest.mark.parametrize(
    ("ref_of", "offence"),
    [
        ("match", None),
        ("order", Offence.FALSE_MATCH),
        ("wrong", Offence.FALSE_MATCH),
        ("later", Offence.FALSE_MATCH),
    ],
)
def test_a_fill_must_name_its_own_match(world, reverts, ref_of, offence):
    log, order, fill, ref, named = _fill_story(world, ref_of)
    head, head_sig = log.head()
    fill_leaf = log.proof(fill.seq)
    named_leaf = log.proof(ref) if ref < len(log.leaves) else log.proof(0)
    digest = order.digest(world.court.domain)
    assert rules.false_match(digest, fill, head, fill_leaf, named_leaf, named) is offence
    prove = lambda: world.court.heads.prove_false_match(  # noqa: E731
        world.bob, order, fill, head, head_sig, fill_leaf, named_leaf, named
    )
    if offence is None:
        with reverts("court: the fill names its match"):
            prove()
    else:
        prove()
        assert world.court.offence_paid(digest, Offence.FALSE_MATCH)


def test_a_false_match_needs_the_named_leaf_and_its_match(world, reverts):
    log, order, fill, ref, named = _fill_story(world, "wrong")
    head, head_sig = log.head()
    fill_leaf = log.proof(fill.seq)
    heads = world.court.heads
    with reverts("court: not the leaf the fill names"):
        heads.prove_false_match(
            world.bob, order, fill, head, head_sig, fill_leaf, log.proof(ref - 1), named
        )
    with reverts("court: leaf is not the message's"):
        heads.prove_false_match(
            world.bob,
            order,
            fill,
            head,
            head_sig,
            fill_leaf,
            log.proof(ref),
            attrs.evolve(named, amount=10**17),
        )
    moved = attrs.evolve(fill_leaf, leaf=attrs.evolve(fill_leaf.leaf, timestamp_ms=1))
    with reverts("court: leaf is not the message's"):
        heads.prove_false_match(
            world.bob, order, fill, head, head_sig, moved, log.proof(ref), named
        )


def test_two_fills_of_one_order_naming_one_match_are_slashed(world, reverts):
    log, order, fill, ref, _ = _fill_story(world, "match")
    second = _fill(
        world, order, seq=len(log.leaves), amount=10**17, total=2 * 10**17, at_ms=T0 + 900
    )
    log.add(Leaf(LeafKind.FILL, second.timestamp_ms, ref, second.struct_hash()))
    third = _fill(
        world, order, seq=len(log.leaves), amount=10**17, total=3 * 10**17, at_ms=T0 + 900
    )
    log.add(Leaf(LeafKind.FILL, third.timestamp_ms, ref + 1, third.struct_hash()))
    head, head_sig = log.head()
    digest = order.digest(world.court.domain)
    heads = world.court.heads
    leaves = {f.seq: log.proof(f.seq) for f in (fill, second, third)}
    assert (
        rules.match_reused(digest, fill, third, head, leaves[fill.seq], leaves[third.seq]) is None
    )
    with reverts("court: the fills name different matches"):
        heads.prove_match_reused(
            world.bob, order, fill, third, head, head_sig, leaves[fill.seq], leaves[third.seq]
        )
    with reverts("court: fills are identical"):
        heads.prove_match_reused(
            world.bob, order, fill, fill, head, head_sig, leaves[fill.seq], leaves[fill.seq]
        )
    assert (
        rules.match_reused(digest, fill, second, head, leaves[fill.seq], leaves[second.seq])
        is Offence.FALSE_MATCH
    )
    heads.prove_match_reused(
        world.bob, order, fill, second, head, head_sig, leaves[fill.seq], leaves[second.seq]
    )
    assert world.court.offence_paid(digest, Offence.FALSE_MATCH)


# --- the interface between the courts ----------------------------------------------------


def test_only_the_heads_court_files_heads_claims(world, reverts):
    data = world.court.encode_call("fileHeadsClaim", bytes(32), 9, bytes(32), True)
    with reverts("court: caller is not the heads court"):
        world.chain.transact(world.bob, world.court.address, data)
    with reverts("court: caller is not the heads court"):
        world.chain.transact(world.operator, world.court.address, data)
    assert not world.court.halted()


def test_one_late_fill_is_one_claim_whichever_rule_proves_it(world, reverts):
    story = _cancel_story(world, late=True)
    order = story.order
    note, note_sig = world.note(order, seq=story.cancel_seq + 1)
    fill = _fill(world, order, seq=story.match_seq + 1, amount=10**17, total=10**17, at_ms=T0 + 500)
    world.court.prove_fill_after_note(world.bob, order, note, note_sig, fill, _sign(world, fill))
    with reverts("court: offence already proven"):
        story.prove(world)[1]()
