"""The chain watcher answers forced cancels with durable notes, on an in-process chain."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio
from conftest import ANSWER_WINDOW_S, World, make_world
from test_server import connect

from cancelnote.dispute.court import CancelState
from cancelnote.messages import CancellationNote
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.engine import Engine
from cancelnote.operator.journal import Journal
from cancelnote.operator.server import OperatorServer
from cancelnote.operator.testing import Trader
from cancelnote.operator.watcher import ChainWatcher, CursorStore

PRICE = 2_000 * 10**18
POLL_S = 0.02


class Operator:
    """A server and a watcher of one court, on a journal file, inside a test nursery."""

    def __init__(self, world: World, db: Path) -> None:
        self.world = world
        self.db = db
        self.journal = Journal.open(db, world.court.domain, world.operator.address)
        engine = Engine(world.operator, world.court.domain, {1}, settlement_delay_ms=0)
        engine.restore(list(self.journal.entries()))
        self.server = OperatorServer(engine, self.journal)
        self.cursor = CursorStore(db, world.court.address)
        self.watcher = ChainWatcher(
            world.court,
            world.operator,
            self.server.inbox,
            self.cursor,
            poll_s=POLL_S,
        )
        self.watching = trio.CancelScope()

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.server.serve, "127.0.0.1", 0)
        nursery.start_soon(self._watch)

    async def _watch(self) -> None:
        with self.watching:
            await self.watcher.run()

    async def stop(self) -> None:
        self.watching.cancel()
        await self.server.shutdown()
        self.cursor.close()
        self.journal.close()


@pytest.fixture
def world() -> World:
    return make_world()


async def wait_answered(world: World, digest: bytes) -> None:
    with trio.fail_after(10):
        while world.court.cancel_status(digest).state is not CancelState.ANSWERED:
            await trio.sleep(POLL_S)


def journal_notes(db: Path) -> list[dict]:
    with sqlite3.connect(db) as conn:
        return [
            json.loads(b)["note"]
            for (b,) in conn.execute("SELECT body FROM journal WHERE kind = 'note'")
        ]


async def test_forced_cancel_of_a_live_order_is_answered_with_a_journaled_on_chain_note(
    world, tmp_path, nursery
):
    operator = Operator(world, tmp_path / "j.sqlite")
    await operator.start(nursery)
    alice = Trader(world.alice, world.court.domain)
    placed = alice.order(1, PRICE, 10**18, wall_clock_ms())
    digest = placed.order.digest(world.court.domain)
    async with connect(operator.server) as client:
        sender = "0x" + alice.sender.hex()
        await client.request({"subscribe": {"sender": sender, "after_seq": "0"}})
        assert (await client.request(placed))["status"] == "success"
        await trio.to_thread.run_sync(world.court.request_cancel, world.alice, placed.order)
        await wait_answered(world, digest)
        pushed = await client.stream_item()
    note = CancellationNote.from_wire(pushed["note"])
    assert note.request_hash == bytes(32) and note.filled_amount == 0
    assert journal_notes(operator.db) == [pushed["note"]]
    assert world.court.cancel_status(digest).cap == 0
    status = await _order_status(operator, digest)
    assert (status["status"], status["cancellation_type"]) == ("CANCELLED", "ON_CHAIN")
    await operator.stop()


async def _order_status(operator: Operator, digest: bytes) -> dict:
    async with connect(operator.server) as client:
        answer = await client.request({"order_status": {"digest": "0x" + digest.hex()}})
    return answer["data"]


async def test_forced_cancel_of_a_cancelled_order_is_answered_with_its_existing_note(
    world, tmp_path, nursery
):
    operator = Operator(world, tmp_path / "j.sqlite")
    await operator.start(nursery)
    alice = Trader(world.alice, world.court.domain)
    placed = alice.order(1, PRICE, 10**18, wall_clock_ms())
    digest = placed.order.digest(world.court.domain)
    async with connect(operator.server) as client:
        await client.request(placed)
        answer = await client.request(alice.cancel([placed], wall_clock_ms()))
        (off_chain,) = answer["data"]["notes"]
    await trio.to_thread.run_sync(world.court.request_cancel, world.alice, placed.order)
    await wait_answered(world, digest)
    assert journal_notes(operator.db) == [off_chain["note"]], "no second note is ever signed"
    assert world.court.cancel_status(digest).state is CancelState.ANSWERED
    await operator.stop()


async def test_forced_cancel_of_an_order_never_sent_is_answered_from_the_calldata(
    world, tmp_path, nursery
):
    operator = Operator(world, tmp_path / "j.sqlite")
    await operator.start(nursery)
    bob = Trader(world.bob, world.court.domain)
    unsent = bob.order(1, PRICE, -(10**18), wall_clock_ms()).order
    digest = unsent.digest(world.court.domain)
    await trio.to_thread.run_sync(world.court.request_cancel, world.bob, unsent)
    await wait_answered(world, digest)
    (note,) = journal_notes(operator.db)
    assert (note["digest"], note["filledAmount"]) == ("0x" + digest.hex(), "0")
    await operator.stop()


async def test_restarted_watcher_resumes_after_its_cursor_and_answers_nothing_twice(
    world, tmp_path, nursery
):
    db = tmp_path / "j.sqlite"
    first = Operator(world, db)
    await first.start(nursery)
    alice = Trader(world.alice, world.court.domain)
    placed = alice.order(1, PRICE, 10**18, wall_clock_ms())
    async with connect(first.server) as client:
        await client.request(placed)
    request = await trio.to_thread.run_sync(world.court.request_cancel, world.alice, placed.order)
    await wait_answered(world, placed.order.digest(world.court.domain))
    await first.stop()
    blocks = world.chain.block_number()

    second = Operator(world, db)
    # The cursor is kept in the journal file; it may stop at the request's block if the
    # first watcher was stopped before saving past it: the request is then seen again,
    # found answered, and skipped.
    assert second.cursor.load() >= request.block_number
    await second.start(nursery)
    await trio.sleep(10 * POLL_S)
    assert second.watcher.answered == 0
    assert world.chain.block_number() == blocks, "no transaction was sent again"
    assert len(journal_notes(db)) == 1
    await second.stop()


async def test_post_bond_adds_to_the_operators_bond(tmp_path, nursery):
    world = make_world(bond=0)
    operator = Operator(world, tmp_path / "j.sqlite")
    await operator.watcher.post_bond(5 * 10**18)
    assert world.court.bond() == 5 * 10**18
    operator.cursor.close()
    operator.journal.close()


async def test_announced_exit_stops_new_orders_but_not_cancels_and_survives_a_restart(
    world, tmp_path, nursery
):
    db = tmp_path / "j.sqlite"
    first = Operator(world, db)
    await first.start(nursery)
    alice = Trader(world.alice, world.court.domain)
    resting = alice.order(1, PRICE, 10**18, wall_clock_ms())
    async with connect(first.server) as client:
        assert (await client.request(resting))["status"] == "success"
        await trio.to_thread.run_sync(world.court.announce_exit, world.operator)
        with trio.fail_after(10):
            while first.server.engine.accepting_orders:
                await trio.sleep(POLL_S)
        refused = await client.request(alice.order(1, PRICE, 10**18, wall_clock_ms()))
        assert refused["error_code"] == "NOT_ACCEPTING_ORDERS"
        cancelled = await client.request(alice.cancel([resting], wall_clock_ms()))
        assert cancelled["data"]["successful_cancellations"]
    await first.stop()
    with sqlite3.connect(db) as conn:
        (body,) = conn.execute("SELECT body FROM journal WHERE kind = 'stop'").fetchone()
    assert "exit" in json.loads(body)["reason"]

    second = Operator(world, db)  # replayed: refuses orders before its watcher polls once
    assert not second.server.engine.accepting_orders
    second.cursor.close()
    second.journal.close()


async def test_halted_court_stops_new_orders(tmp_path, nursery):
    world = make_world()
    operator = Operator(world, tmp_path / "j.sqlite")
    alice = Trader(world.alice, world.court.domain)
    unanswered, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, unanswered)
    world.chain.increase_time(ANSWER_WINDOW_S + 1)
    world.court.finalize(world.bob, unanswered.digest(world.court.domain))
    assert world.court.halted()
    await operator.start(nursery)
    with trio.fail_after(10):
        while operator.server.engine.accepting_orders:
            await trio.sleep(POLL_S)
    async with connect(operator.server) as client:
        refused = await client.request(alice.order(1, PRICE, 10**18, wall_clock_ms()))
    assert refused["error_code"] == "NOT_ACCEPTING_ORDERS"
    await operator.stop()


async def test_watcher_leaves_orders_open_while_the_court_is_neither_halted_nor_exiting(
    world, tmp_path, nursery
):
    operator = Operator(world, tmp_path / "j.sqlite")
    await operator.start(nursery)
    await trio.sleep(5 * POLL_S)
    assert operator.server.engine.accepting_orders and not operator.watcher.stopped_orders
    await operator.stop()
