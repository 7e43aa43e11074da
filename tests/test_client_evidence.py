"""The evidence store: idempotent, keeps contradictions, refuses other domains, survives
kill -9, and its bundles verify offline and refuse tampering."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import pytest

from cancelnote.client.evidence import (
    EvidenceError,
    EvidenceStore,
    SignedFill,
    SignedNote,
    parse_bundle,
)
from cancelnote.client.verifier import Kind, Verifier
from cancelnote.crypto import Signer
from cancelnote.messages import CancellationNote, Domain, Fill, Order, make_sender

DOMAIN = Domain(1337, "0x" + "c0" * 20)
OPERATOR = Signer(b"\x02" * 32)
OWNER = Signer(b"\x01" * 32)
SENDER = make_sender(OWNER.address)
ORDER = Order(SENDER, 1, 100, -10, 2_000_000_000, 1)
DIGEST = ORDER.digest(DOMAIN)


def fill(seq: int, total: int, amount: int = 1) -> SignedFill:
    message = Fill(DIGEST, SENDER, seq, amount, total, 100, 1_000 + seq)
    return SignedFill(message, message.sign(OPERATOR, DOMAIN), seq)


def note(seq: int, filled: int, last_fill_seq: int) -> SignedNote:
    last_hash = fill(last_fill_seq, filled).fill.struct_hash() if last_fill_seq else bytes(32)
    message = CancellationNote(
        DIGEST, SENDER, bytes(32), filled, last_fill_seq, last_hash, 0, 0, 5, seq
    )
    return SignedNote(message, message.sign(OPERATOR, DOMAIN), seq)


@pytest.fixture
def store(tmp_path) -> EvidenceStore:
    store = EvidenceStore.open(tmp_path / "e.sqlite", DOMAIN, OPERATOR.address)
    store.add_order(ORDER, ORDER.sign(OWNER, DOMAIN), 0)
    return store


def test_the_same_message_twice_is_one_row_and_shows_nothing_new(store):
    verifier = Verifier(store)
    first = verifier.receive_fill(fill(3, 1), 10)
    again = verifier.receive_fill(fill(3, 1), 11)
    assert first.new and not again.new
    assert len(store.fills()) == 1
    assert store.add_order(ORDER, ORDER.sign(OWNER, DOMAIN), 5) is False


def test_a_different_note_for_the_same_order_is_kept_beside_the_first(store):
    verifier = Verifier(store)
    verifier.receive_note(note(7, 0, 0), 10)
    received = verifier.receive_note(note(8, 0, 0), 11)
    assert len(store.notes(DIGEST)) == 2
    assert [f.kind for f in received.findings] == [Kind.NOTE_EQUIVOCATION]


def test_a_message_not_signed_by_the_operator_is_a_finding_not_evidence(store):
    verifier = Verifier(store)
    forged = fill(3, 1)
    forged = attrs.evolve(forged, signature=forged.fill.sign(OWNER, DOMAIN))
    received = verifier.receive_wire(forged.to_wire(), 10)
    assert received.message is None
    assert [f.kind for f in received.findings] == [Kind.BAD_SIGNATURE]
    assert store.fills() == []
    wire = {"fill": {"digest": "0x12"}, "signature": forged.to_wire()["signature"]}
    malformed = verifier.receive_wire(wire, 10)
    assert [f.kind for f in malformed.findings] == [Kind.MALFORMED_MESSAGE]


def test_a_write_from_another_thread_waits_for_an_open_transaction_not_joins_it(store):
    # client watch runs its watchtower in a worker thread on the session's store: a write
    # landing inside the other thread's transaction would be rolled back with it.
    opened, written = threading.Event(), threading.Event()

    def other_thread() -> None:
        opened.wait(5)
        store.set_cursor("events", 7)
        written.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with pytest.raises(RuntimeError), store.transaction():
        store.add_fill(fill(1, 1))
        opened.set()
        assert not written.wait(0.3)  # it waits for this transaction ...
        raise RuntimeError("rolled back")
    worker.join(5)
    assert store.cursor("events") == 7  # ... and then commits on its own
    assert store.fills() == []


def test_a_store_refuses_to_open_for_another_court_or_operator(store, tmp_path):
    store.close()
    with pytest.raises(EvidenceError, match="holds evidence for chain 1337"):
        EvidenceStore.open(tmp_path / "e.sqlite", Domain(1, DOMAIN.verifying_contract))
    with pytest.raises(EvidenceError, match="holds evidence"):
        EvidenceStore.open(tmp_path / "e.sqlite", DOMAIN, OWNER.address)
    reopened = EvidenceStore.open(tmp_path / "e.sqlite")
    assert reopened.domain == DOMAIN and reopened.operator == OPERATOR.address


def test_a_bundle_verifies_offline_and_any_tampering_rejects_it_whole(store):
    verifier = Verifier(store)
    verifier.receive_fill(fill(3, 1), 10)
    verifier.receive_note(note(5, 1, 3), 11)
    bundle = json.loads(json.dumps(store.export_bundle(DIGEST)))
    parsed = parse_bundle(bundle)
    assert len(parsed.fills) == 1 and len(parsed.notes) == 1 and len(parsed.orders) == 1
    bundle["fills"][0]["fill"]["filledTotal"] = "2"  # the operator never signed this
    with pytest.raises(EvidenceError, match="signed by"):
        parse_bundle(bundle)
    with pytest.raises(EvidenceError, match="not a cancelnote-evidence/2"):
        parse_bundle({"format": "other"})


def test_a_time_range_bundle_holds_only_what_arrived_in_it(store):
    verifier = Verifier(store)
    for seq in (3, 4, 5):
        verifier.receive_fill(attrs.evolve(fill(seq, seq - 2), received_at_ms=seq * 100), 0)
    bundle = parse_bundle(store.export_bundle(since_ms=350, until_ms=500))
    assert [f.fill.seq for f in bundle.fills] == [4, 5]


WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.test_client_evidence import DOMAIN, OPERATOR, fill
from cancelnote.client.evidence import EvidenceStore
store = EvidenceStore.open(Path({path!r}), DOMAIN, OPERATOR.address)
seq = store.cursor("written")
while True:
    seq += 1
    with store.transaction():
        store.add_fill(fill(seq, seq))
        store.set_cursor("written", seq)
    print(seq, flush=True)
"""


def test_evidence_survives_kill_9_during_writes(tmp_path):
    path = tmp_path / "kill.sqlite"
    rng = random.Random(5)
    root = str(Path(__file__).parent.parent)
    acknowledged = 0
    for _ in range(4):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER.format(root=root, path=str(path))],
            stdout=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdout is not None
            deadline = time.monotonic() + rng.uniform(0.3, 0.8)
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                if line:
                    acknowledged = max(acknowledged, int(line))
            process.send_signal(signal.SIGKILL)
            for line in process.stdout:  # lines already printed were acknowledged too
                acknowledged = max(acknowledged, int(line))
        store = EvidenceStore.open(path)
        assert store.integrity_check() == "ok"
        seqs = [f.fill.seq for f in store.fills()]
        assert seqs == list(range(1, len(seqs) + 1))  # no hole, nothing torn
        assert len(seqs) >= acknowledged > 0  # every acknowledged row is there
        store.close()


def test_a_gap_in_the_fills_is_recorded_but_is_no_offence(store):
    verifier = Verifier(store)
    verifier.receive_fill(fill(3, 1), 10)
    gap = verifier.receive_fill(fill(6, 3), 11)  # the fill that made the total 2 is missing
    assert [(f.kind, f.offence) for f in gap.findings] == [(Kind.FILL_GAP, None)]
