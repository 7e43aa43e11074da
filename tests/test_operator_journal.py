"""The journal: durable, append-only, and enough to rebuild the engine exactly."""

from __future__ import annotations

import re
import sqlite3

import pytest

from cancelnote.api import Notes, OrderStatus, Reply
from cancelnote.crypto import Signer
from cancelnote.errors import Fault
from cancelnote.messages import Domain
from cancelnote.operator.engine import Engine, split_outputs
from cancelnote.operator.errors import JournalCorrupt, JournalMismatch
from cancelnote.operator.journal import Journal, OrderAccepted, chain_hash, leaf_hash
from cancelnote.operator.policies import Delay, FillAfterNote
from cancelnote.operator.testing import Trader

DOMAIN = Domain(31337, "0x" + "c0" * 20)
OPERATOR = Signer(bytes.fromhex("aa" * 32))
T0 = 1_800_000_000_000


def make_engine(**config) -> Engine:
    return Engine(OPERATOR, DOMAIN, {1}, **config)


def open_journal(path, **options) -> Journal:
    return Journal.open(path, DOMAIN, OPERATOR.address, **options)


def journaled(engine: Engine, journal: Journal, outputs) -> list:
    """What a server does: commit a call's entries, then hand out the rest."""
    entries, messages = split_outputs(outputs)
    journal.append_many(entries)
    return messages


def reply(outputs) -> dict:
    (only,) = [o for o in outputs if isinstance(o, Reply)]
    return only.wire


@pytest.fixture
def traders():
    return Trader(Signer(b"\x01" * 32), DOMAIN), Trader(Signer(b"\x02" * 32), DOMAIN)


def run_session(engine, journal, traders, now=T0):
    """Orders, a partial fill, an in-flight fill, a cancel: every kind of entry."""
    alice, bob = traders
    maker = alice.order(1, 100, 10, now)
    other = alice.order(1, 99, 3, now, lifetime_s=1)
    for request in (maker, other, bob.order(1, 100, -4, now)):
        journaled(engine, journal, engine.handle(request, now))
    journaled(engine, journal, engine.handle(bob.order(1, 100, -1, now + 5), now + 5))
    cancel = alice.cancel([maker], now + 10)
    journaled(engine, journal, engine.handle(cancel, now + 10))
    journaled(engine, journal, engine.advance(now + 1_000))
    return maker, cancel


def test_replayed_journal_rebuilds_an_identical_engine(tmp_path, traders):
    engine = make_engine(settlement_delay_ms=200)
    journal = open_journal(tmp_path / "j.sqlite")
    run_session(engine, journal, traders)
    journal.close()
    rebuilt = Engine.from_journal(
        open_journal(tmp_path / "j.sqlite"), signer=OPERATOR, domain=DOMAIN, products={1}
    )
    assert rebuilt.snapshot() == engine.snapshot()
    assert rebuilt.last_seq == engine.last_seq == open_journal(tmp_path / "j.sqlite").last_seq()


def test_recovered_engine_resends_the_same_note_byte_for_byte(tmp_path, traders):
    engine = make_engine(settlement_delay_ms=200)
    journal = open_journal(tmp_path / "j.sqlite")
    maker, _ = run_session(engine, journal, traders)
    alice = traders[0]
    again = alice.cancel([maker], T0 + 2_000)
    expected = reply(engine.handle(again, T0 + 2_000))
    rebuilt = Engine.from_journal(journal, signer=OPERATOR, domain=DOMAIN, products={1})
    assert reply(rebuilt.handle(again, T0 + 2_000)) == expected
    digest = maker.order.digest(DOMAIN)
    assert reply(rebuilt.handle(Notes(digest), T0 + 2_001)) == reply(
        engine.handle(Notes(digest), T0 + 2_001)
    )


def test_in_flight_matches_survive_a_restart_and_settle_identically(tmp_path, traders):
    alice, bob = traders
    engine = make_engine(settlement_delay_ms=500)
    journal = open_journal(tmp_path / "j.sqlite")
    journaled(engine, journal, engine.handle(alice.order(1, 100, 5, T0), T0))
    journaled(engine, journal, engine.handle(bob.order(1, 100, -5, T0), T0))
    rebuilt = Engine.from_journal(
        journal, signer=OPERATOR, domain=DOMAIN, products={1}, settlement_delay_ms=500
    )
    assert rebuilt.advance(T0 + 500) == engine.advance(T0 + 500)


def test_held_cancels_and_policy_state_survive_a_restart(tmp_path, traders):
    alice, bob = traders
    config = dict(signer=OPERATOR, domain=DOMAIN, products={1})
    for policy in (Delay(300), FillAfterNote()):
        journal = open_journal(tmp_path / f"{type(policy).__name__}.sqlite")
        engine = Engine(**config, policy=policy)
        maker = alice.order(1, 100, 5, T0)
        journaled(engine, journal, engine.handle(maker, T0))
        journaled(engine, journal, engine.handle(alice.cancel([maker], T0 + 1), T0 + 1))
        rebuilt = Engine.from_journal(journal, **config, policy=policy)
        assert rebuilt.snapshot() == engine.snapshot()
        taker = bob.order(1, 100, -5, T0 + 2)
        assert rebuilt.handle(taker, T0 + 400) == engine.handle(taker, T0 + 400)


def test_append_many_commits_all_or_nothing(tmp_path, traders):
    engine = make_engine()
    journal = open_journal(tmp_path / "j.sqlite")
    first, _ = split_outputs(engine.handle(traders[0].order(1, 100, 1, T0), T0))
    journal.append_many(first)
    later, _ = split_outputs(engine.handle(traders[0].order(1, 101, 1, T0), T0))
    with pytest.raises(JournalCorrupt):
        journal.append_many(later + first)  # the old seq collides: the batch must not land
    assert [e.seq for e in journal.entries()] == [e.seq for e in first]


def test_journal_of_another_operator_or_domain_is_refused(tmp_path):
    open_journal(tmp_path / "j.sqlite").close()
    with pytest.raises(JournalMismatch):
        Journal.open(tmp_path / "j.sqlite", DOMAIN, b"\x01" * 20)
    with pytest.raises(JournalMismatch):
        Journal.open(tmp_path / "j.sqlite", Domain(1, "0x" + "c0" * 20), OPERATOR.address)


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        ("order", "{not json", "journal row 1 (order)"),
        ("order", '{"at_ms": 1}', "journal row 1 (order)"),
        ("teleport", "{}", "unknown kind 'teleport'"),
    ],
)
def test_corrupt_rows_raise_a_fault_naming_the_row(tmp_path, kind, body, message):
    journal = open_journal(tmp_path / "j.sqlite")
    genesis = journal.head
    journal.close()
    chain = chain_hash(genesis, leaf_hash(1, kind, body))  # a row chained as if written so
    with sqlite3.connect(tmp_path / "j.sqlite") as conn:
        conn.execute("INSERT INTO journal VALUES (1, ?, ?, ?)", (kind, body, chain))
    with pytest.raises(JournalCorrupt, match=re.escape(message)) as caught:
        list(open_journal(tmp_path / "j.sqlite").entries())
    assert isinstance(caught.value, Fault) and caught.value.code == "JOURNAL_CORRUPT"


def test_rows_that_parse_but_contradict_the_state_raise_a_fault(traders):
    placed = traders[0].order(1, 100, 1, T0)
    entry = OrderAccepted(1, T0, 1, placed.order, placed.signature, 1)
    duplicate = OrderAccepted(2, T0, 1, placed.order, placed.signature, 1)
    with pytest.raises(JournalCorrupt, match="accepted twice"):
        make_engine().restore([entry, duplicate])
    with pytest.raises(JournalCorrupt, match="seq 1 after 1"):
        make_engine().restore([entry, entry])


def test_synchronous_defaults_to_full_and_normal_is_explicit(tmp_path):
    journal = open_journal(tmp_path / "full.sqlite")
    assert journal._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert journal._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    normal = open_journal(tmp_path / "normal.sqlite", synchronous="NORMAL")
    assert normal._conn.execute("PRAGMA synchronous").fetchone() == (1,)
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        open_journal(tmp_path / "off.sqlite", synchronous="OFF")


def test_replay_restores_order_status_answers(tmp_path, traders):
    engine = make_engine(settlement_delay_ms=200)
    journal = open_journal(tmp_path / "j.sqlite")
    maker, _ = run_session(engine, journal, traders)
    rebuilt = Engine.from_journal(journal, signer=OPERATOR, domain=DOMAIN, products={1})
    query = OrderStatus(maker.order.digest(DOMAIN))
    assert rebuilt.handle(query, T0 + 5_000) == engine.handle(query, T0 + 5_000)
