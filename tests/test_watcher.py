"""The chain watcher answers forced cancels with durable notes, on an in-process chain:
from the court's event alone, whoever sent the request and however its calldata looks."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import attrs
import pytest
import trio
from conftest import (
    ANSWER_WINDOW_S,
    DISPUTE_BOND_WEI,
    World,
    deploy_test_contract,
    dirty_relayed_request,
    forward,
    make_world,
)
from eth_abi import decode as abi_decode
from eth_abi.exceptions import NonEmptyPaddingBytes
from test_server import connect

from cancelnote.dispute.court import CancelState
from cancelnote.messages import Cancellation, CancellationNote, make_nonce, make_sender
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.engine import Engine
from cancelnote.operator.journal import Journal
from cancelnote.operator.server import OperatorServer
from cancelnote.operator.testing import Trader
from cancelnote.operator.watcher import REORG_DEPTH, ChainWatcher, CursorStore

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


async def test_forced_cancel_of_an_order_never_sent_is_answered_from_the_event(
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
    world.court.finalize(world.bob, unanswered)
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


async def test_a_request_with_dirty_abi_padding_is_answered_and_the_server_keeps_serving(
    world, tmp_path, nursery
):
    """Attack 1 (the poison pill): v1 decoded the request's calldata strictly, raised
    ``NonEmptyPaddingBytes``, and the whole operator exited, at every restart."""
    operator = Operator(world, tmp_path / "j.sqlite")
    await operator.start(nursery)
    mallory = world.chain.dev_accounts[4]
    unsent = Trader(mallory, world.court.domain).order(1, PRICE, 10**18, wall_clock_ms()).order
    digest = unsent.digest(world.court.domain)
    cancellation = Cancellation(
        unsent.sender, (1,), (digest,), make_nonce(1000 * (world.chain.timestamp() + 60))
    )
    data = dirty_relayed_request(
        world.court, unsent, cancellation, cancellation.sign(mallory, world.court.domain)
    )
    kinds = list(world.court._functions["requestCancelSigned"].inputs)
    with pytest.raises(NonEmptyPaddingBytes):  # what v1's strict decoding made of it
        abi_decode(kinds, data[4:])
    await trio.to_thread.run_sync(
        lambda: world.chain.transact(mallory, world.court.address, data, value=DISPUTE_BOND_WEI)
    )
    await wait_answered(world, digest)
    alice = Trader(world.alice, world.court.domain)
    async with connect(operator.server) as client:  # still serving
        placed = await client.request(alice.order(1, PRICE, 10**18, wall_clock_ms()))
    assert placed["status"] == "success"
    await operator.stop()


@pytest.mark.parametrize("how", ["owner-contract", "relayer-contract"])
async def test_a_request_sent_by_a_contract_is_answered(world, tmp_path, nursery, how):
    """Attack 2: v1 read the order from the transaction's input, which is the contract's
    call, found none and defaulted."""
    operator = Operator(world, tmp_path / "j.sqlite")
    await operator.start(nursery)
    wallet = deploy_test_contract(world.chain, world.bob, "Forwarder")
    if how == "owner-contract":  # a contract owns the order and forces its cancel
        order = attrs.evolve(world.order(world.alice)[0], sender=make_sender(wallet))
        data = world.court.encode_call("requestCancel", order)
    else:  # a relayer contract forces Alice's cancel with her signed Cancellation
        order, _ = world.order(world.alice)
        cancellation = Cancellation(
            order.sender,
            (1,),
            (order.digest(world.court.domain),),
            make_nonce(1000 * (world.chain.timestamp() + 60)),
        )
        signature = cancellation.sign(world.alice, world.court.domain)
        data = world.court.encode_call("requestCancelSigned", order, cancellation, signature)
    await trio.to_thread.run_sync(
        forward, world.chain, world.bob, wallet, world.court.address, data, DISPUTE_BOND_WEI
    )
    await wait_answered(world, order.digest(world.court.domain))
    (note,) = journal_notes(operator.db)
    assert note["sender"] == "0x" + order.sender.hex()
    await operator.stop()


async def test_a_forced_cancel_takes_effect_at_the_requests_block(world, tmp_path, nursery):
    """The answer is received at the request's block time, not when the watcher saw it
    (the dev chain's clock is behind the wall clock, so the block time is the earlier)."""
    operator = Operator(world, tmp_path / "j.sqlite")
    await operator.start(nursery)
    placed = Trader(world.alice, world.court.domain).order(1, PRICE, 10**18, wall_clock_ms())
    async with connect(operator.server) as client:
        await client.request(placed)
    receipt = await trio.to_thread.run_sync(world.court.request_cancel, world.alice, placed.order)
    requested_at = world.chain.block(receipt.block_number).timestamp
    assert requested_at * 1000 < wall_clock_ms()
    await wait_answered(world, placed.order.digest(world.court.domain))
    (note,) = journal_notes(operator.db)
    assert int(note["receivedAtMs"]) == requested_at * 1000
    await operator.stop()


async def test_a_failing_request_is_logged_and_retried_and_the_others_answered(
    world, tmp_path, nursery, caplog
):
    """Every failure is contained to its request: the watcher logs it and answers the rest."""
    operator = Operator(world, tmp_path / "j.sqlite")
    failing = {"left": 2}
    answer = world.court.answer_cancel

    def flaky(*args):
        if failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("the node fell over")
        return answer(*args)

    operator.watcher.court.answer_cancel = flaky  # type: ignore[method-assign]
    await operator.start(nursery)
    orders = [world.order(world.alice, nonce=n)[0] for n in (1, 2)]
    for order in orders:
        await trio.to_thread.run_sync(world.court.request_cancel, world.alice, order)
    for order in orders:
        await wait_answered(world, order.digest(world.court.domain))
    assert operator.watcher.failures == 2
    assert [r.message for r in caplog.records].count("forced_cancel_failed") == 2
    await operator.stop()


async def test_a_request_in_a_block_behind_the_cursor_is_still_answered(world, tmp_path, nursery):
    """A reorg can re-mine a request into a block the watcher already scanned: the last
    ``REORG_DEPTH`` blocks are read again at every poll."""
    operator = Operator(world, tmp_path / "j.sqlite")
    order, _ = world.order(world.alice)
    receipt = world.court.request_cancel(world.alice, order)
    operator.cursor.save(receipt.block_number + REORG_DEPTH)  # as if scanned already
    await operator.start(nursery)
    await wait_answered(world, order.digest(world.court.domain))
    await trio.sleep(5 * POLL_S)  # read again at every poll, answered once
    assert operator.watcher.answered == 1
    await operator.stop()


async def test_requests_kept_are_answered_while_reading_the_chain_fails(world, tmp_path, nursery):
    operator = Operator(world, tmp_path / "j.sqlite")
    order, _ = world.order(world.alice)
    world.court.request_cancel(world.alice, order)
    await operator.watcher._read_requests()  # kept, not yet answered

    def refuse(*args):
        raise RuntimeError("the node refuses eth_getLogs")

    operator.watcher.court.chain.get_logs = refuse  # type: ignore[method-assign]
    await operator.start(nursery)
    await wait_answered(world, order.digest(world.court.domain))
    assert operator.watcher.failures >= 1
    await operator.stop()
