"""The simulated client's working-set store answers as the real store does, and a world
run with it writes the same bytes as with the real store."""

from __future__ import annotations

import filecmp
import tomllib
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cancelnote.client.evidence import EvidenceStore, Finding, SignedFill, SignedNote, StoredLeaf
from cancelnote.client.verifier import Verifier
from cancelnote.crypto import Signer
from cancelnote.dispute.court import Offence
from cancelnote.messages import Cancellation, CancellationNote, Domain, Fill, Order, make_sender
from cancelnote.sim import clients
from cancelnote.sim.output import run_replicate
from cancelnote.sim.scenario import apply_overrides, parse_scenario
from cancelnote.sim.store import FLUSH_EVERY, WorkingSetStore
from cancelnote.sim.validate_world import SCENARIO
from cancelnote.transparency import Leaf, LeafKind, LeafProof

DOMAIN = Domain(1337, "0x" + "c0" * 20)
OPERATOR = Signer(b"\x02" * 32)
OWNER = Signer(b"\x01" * 32)
SENDER = make_sender(OWNER.address)
ORDERS = [Order(SENDER, 1, 100 + i, 10 if i % 2 else -10, 2_000_000_000, i) for i in range(6)]
DIGESTS = [order.digest(DOMAIN) for order in ORDERS]


def _fill(order: int, seq: int, amount: int) -> SignedFill:
    message = Fill(DIGESTS[order], SENDER, seq, amount, amount, ORDERS[order].price_x18, seq)
    return SignedFill(message, message.sign(OPERATOR, DOMAIN), seq)


def _note(order: int, seq: int) -> SignedNote:
    message = CancellationNote(
        DIGESTS[order], SENDER, bytes(32), 0, 0, bytes(32), 0, 0, 5, seq
    )
    return SignedNote(message, message.sign(OPERATOR, DOMAIN), seq)


class SameAnswers(RuleBasedStateMachine):
    """Random writes, forgets and reads: the working-set store answers every read exactly
    as the real store does (a cancel all of whose orders were forgotten with their note or
    fills is settled, as the verifier would settle it)."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.folder = Path(tempfile.mkdtemp())
        self.real = EvidenceStore.open(self.folder / "real.db", DOMAIN, OPERATOR.address)
        self.sim = WorkingSetStore.open(self.folder / "sim.db", DOMAIN, OPERATOR.address)
        self.placed: list[int] = []
        self.forgotten: set[int] = set()
        self.cancelled: dict[bytes, tuple[int, ...]] = {}
        self.seq = 0
        self.done: set[int] = set()  # orders with a note or all their fills

    def both(self, method: str, *args: object) -> object:
        one, other = getattr(self.real, method)(*args), getattr(self.sim, method)(*args)
        assert one == other, (method, args)
        return one

    @rule(order=st.integers(0, 5))
    def place(self, order: int) -> None:
        if order in self.forgotten:  # a simulated client never re-adds what it forgot
            return
        self.both("add_order", ORDERS[order], ORDERS[order].sign(OWNER, DOMAIN), 7)
        if order not in self.placed:
            self.placed.append(order)

    def following(self) -> list[int]:
        """Orders placed and not forgotten (a simulated client names no other)."""
        return [i for i in self.placed if i not in self.forgotten]

    @precondition(lambda self: self.following())
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        named = data.draw(st.lists(st.sampled_from(self.following()), min_size=1, max_size=2))
        digests = tuple(dict.fromkeys(DIGESTS[i] for i in named))
        request = Cancellation(SENDER, tuple(1 for _ in digests), digests, len(self.cancelled))
        self.both("add_cancel", request, request.sign(OWNER, DOMAIN), 9)
        self.cancelled[request.digest(DOMAIN)] = tuple(dict.fromkeys(named))

    @rule(order=st.integers(0, 5), repeat=st.booleans())
    def fill(self, order: int, repeat: bool) -> None:
        if not repeat:
            self.seq += 1
        signed = _fill(order, max(self.seq, 1), 10)
        self.both("add_fill", signed)
        self.done.add(order)

    @rule(order=st.integers(0, 5), repeat=st.booleans())
    def note(self, order: int, repeat: bool) -> None:
        if not repeat:
            self.seq += 1
        self.both("add_note", _note(order, max(self.seq, 1)))
        self.done.add(order)

    @precondition(lambda self: self.cancelled)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        self.both("mark_settled", data.draw(st.sampled_from(sorted(self.cancelled))))

    @rule(order=st.integers(0, 5), offence=st.sampled_from(list(Offence)))
    def find(self, order: int, offence: Offence) -> None:
        key = f"k{order}{offence}"
        finding = Finding("FILL_AFTER_NOTE", key, DIGESTS[order], offence, "", {}, 1)
        added = self.both("add_finding", finding)
        if added is not None:
            self.both("set_finding_status", added.id, "claimed" if order % 2 else "paid")

    @rule(order=st.integers(0, 5), name=st.sampled_from(["CancelRequested", "CancelAnswered"]))
    def event(self, order: int, name: str) -> None:
        self.seq += 1
        args = {"digest": DIGESTS[order], "cap": 3, "requestedAt": self.seq}
        self.both("add_chain_event", self.seq, 0, bytes(32), name, args)

    @rule(data=st.data(), seq=st.integers(1, 12))
    def locate(self, data: st.DataObject, seq: int) -> None:
        key = data.draw(st.sampled_from(DIGESTS + sorted(self.cancelled)))
        self.both("set_located", key, seq)

    @rule(
        seq=st.integers(0, 12),
        kind=st.sampled_from([LeafKind.FILL, LeafKind.MATCH, LeafKind.NOTE]),
        ref=st.integers(0, 12),
        size=st.integers(1, 20),
    )
    def prove(self, seq: int, kind: LeafKind, ref: int, size: int) -> None:
        self.both("add_leaf", StoredLeaf(LeafProof(seq, Leaf(kind, 7, ref, bytes(32)), ()), size))

    @precondition(lambda self: self.following())
    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from(self.following()))
        self.sim.forget(DIGESTS[order])
        self.forgotten.add(order)
        for request_hash, named in self.cancelled.items():  # what the verifier would settle
            if order in named and all(i in self.forgotten and i in self.done for i in named):
                self.real.mark_settled(request_hash)

    @invariant()
    def reads_agree(self) -> None:
        for digest in DIGESTS:
            self.both("order", digest)
            self.both("fills", digest)
            self.both("notes", digest)
            self.both("court_cap", digest)
            self.both("court_requested_at", digest)
        for seq in range(self.seq + 1):
            self.both("fills_with_seq", seq)
            self.both("notes_with_seq", seq)
        for request_hash in self.cancelled:
            self.both("cancel", request_hash)
        assert [c.request_hash for c in self.real.cancels(unsettled=True)] == [
            c.request_hash for c in self.sim.cancels(unsettled=True)
        ]
        for status in ("open", "claimed", "paid"):
            self.both("findings", status)
        # Journal heads: what the log's answers proved, read from memory.
        for seq in range(14):
            self.both("leaf", seq)
        for key in DIGESTS + list(self.cancelled):
            self.both("located", key)
        for size in (0, 5, 13, 40):
            self.both("unproven", size)
        seqs = list(range(14))
        for method in ("fill_leaves_naming", "located_at"):
            one, other = getattr(self.real, method)(seqs), getattr(self.sim, method)(seqs)
            assert sorted(one) == sorted(other), method
        # What is still unlocated: the same, but for what the simulated client forgot.
        followed = {DIGESTS[i] for i in self.following()}
        orders, cancels = self.real.unlocated()
        sim_orders, sim_cancels = self.sim.unlocated()
        assert [o for o in orders if o.digest in followed] == sim_orders
        kept = {c.request_hash for c in sim_cancels}
        assert {c.request_hash for c in cancels} >= kept
        for cancel in cancels:
            named = self.cancelled[cancel.request_hash]
            assert (cancel.request_hash in kept) == any(i not in self.forgotten for i in named)

    def teardown(self) -> None:
        self.real.close()
        self.sim.close()


SameAnswers.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_the_working_set_store_answers_as_the_real_store = SameAnswers.TestCase


def test_writes_are_flushed_in_batches_and_on_close(tmp_path):
    store = WorkingSetStore.open(tmp_path / "s.db", DOMAIN, OPERATOR.address)
    store.add_order(ORDERS[0], ORDERS[0].sign(OWNER, DOMAIN), 1)
    probe = EvidenceStore.open(tmp_path / "s.db")
    assert probe.orders() == []  # buffered
    for seq in range(1, FLUSH_EVERY):
        store.add_note(_note(0, seq))
    assert len(probe.notes()) == FLUSH_EVERY - 1  # a batch written
    store.close()
    assert len(probe.orders()) == 1 and probe.integrity_check() == "ok"


def test_a_late_fill_of_a_forgotten_order_is_judged_from_the_file(tmp_path):
    store = WorkingSetStore.open(tmp_path / "s.db", DOMAIN, OPERATOR.address)
    store.add_order(ORDERS[0], ORDERS[0].sign(OWNER, DOMAIN), 1)
    verifier = Verifier(store)
    assert verifier.receive_note(_note(0, 5), 10).new
    store.forget(DIGESTS[0])
    late = verifier.receive_fill(_fill(0, 9, 10), 20)  # a fill after the note: an offence
    assert [f.kind for f in late.findings] == ["FILL_AFTER_NOTE"]
    assert not verifier.receive_fill(_fill(0, 9, 10), 21).new


class _RealStore(EvidenceStore):
    """The real store, every read in SQL (it keeps everything: forgetting is a no-op)."""

    def forget(self, digest: bytes) -> None:
        pass


#: Scenarios whose clients find, prove, force and claim; long enough for records to close.
RUNS = {
    "backdate": {"operator.policy": "backdate", "operator.delay_ms": 400,
                 "operator.backdate_ms": 400, "court.claim_delay_s": 2},
    "forced": {"operator.policy": "ignore", "operator.ignore_p": 0.4,
               "client.force_after_ms": 300},
    "equivocate": {"operator.policy": "equivocate"},
    "fill_after_note": {"operator.policy": "fill_after_note"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_run_writes_the_same_bytes_with_the_real_store(name, tmp_path, monkeypatch):
    document = apply_overrides(
        tomllib.loads(SCENARIO), {"run.horizon_s": 14, "client.force_after_ms": 300, **RUNS[name]}
    )
    scenario = parse_scenario(document)
    sim = run_replicate(scenario, 0, tmp_path / "sim")
    monkeypatch.setattr(clients, "WorkingSetStore", _RealStore)
    real = run_replicate(scenario, 0, tmp_path / "real")
    assert sim == real and sim["requests"] > 100
    files = ("events.csv", "cancels.csv", "disputes.csv")
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "sim", tmp_path / "real", files, False)
    assert (mismatch, errors) == ([], []) and len(match) == 3
