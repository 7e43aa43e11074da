"""The client session against the operator's WebSocket server, over loopback sockets."""

from __future__ import annotations

from pathlib import Path

import trio

from cancelnote.client.evidence import EvidenceStore
from cancelnote.client.session import OperatorRejected, Session
from cancelnote.client.verifier import Verifier
from cancelnote.crypto import Signer
from cancelnote.messages import Domain
from cancelnote.operator.engine import Engine
from cancelnote.operator.journal import Journal
from cancelnote.operator.server import OperatorServer

DOMAIN = Domain(31337, "0x" + "c0" * 20)
OPERATOR = Signer(bytes.fromhex("aa" * 32))
PRICE = 100 * 10**18
SIZE = 10**18


async def start_server(nursery, path: Path, **engine_config) -> tuple[OperatorServer, Journal]:
    journal = Journal.open(path, DOMAIN, OPERATOR.address)
    server = OperatorServer(Engine(OPERATOR, DOMAIN, {1, 2}, **engine_config), journal)
    await nursery.start(server.serve, "127.0.0.1", 0)
    return server, journal


def client(tmp_path: Path, n: int, port: int) -> Session:
    store = EvidenceStore.open(tmp_path / f"client{n}.sqlite", DOMAIN, OPERATOR.address)
    return Session(f"ws://127.0.0.1:{port}/", Signer(bytes([n]) * 32), Verifier(store))


async def test_sessions_trade_cancel_and_keep_every_verified_message(nursery, tmp_path):
    server, journal = await start_server(nursery, tmp_path / "j.sqlite")
    alice, bob = client(tmp_path, 1, server.port), client(tmp_path, 2, server.port)
    await nursery.start(alice.run)
    await nursery.start(bob.run)
    sell = await alice.place(1, PRICE, -2 * SIZE)
    await bob.place(1, PRICE, SIZE)
    with trio.fail_after(5):
        fill = await alice.received.receive()  # verified and stored before it got here
    assert fill.message.seq in {f.fill.seq for f in alice.store.fills(sell)}
    data = await alice.cancel([(sell, 1)])
    assert data["successful_cancellations"] == ["0x" + sell.hex()]
    (note,) = alice.store.notes(sell)
    assert note.note.filled_amount == SIZE
    with trio.fail_after(5):
        while alice.verifier.resume_after(alice.sender) < note.note.seq:
            await trio.sleep(0.01)
    assert alice.store.findings() == [] and bob.store.findings() == []
    assert (await alice.status(sell))["status"] == "CANCELLED"
    try:
        await alice.cancel([(sell, 2)])  # not its product: the order is not found
    except OperatorRejected:
        raise AssertionError("a cancel never fails as a whole") from None
    await server.shutdown()
    journal.close()


async def test_reconnected_session_resumes_without_losing_or_duplicating(nursery, tmp_path):
    server, journal = await start_server(nursery, tmp_path / "j.sqlite")
    port = server.port
    alice, bob = client(tmp_path, 1, port), client(tmp_path, 2, port)
    await nursery.start(alice.run)
    await nursery.start(bob.run)
    sell = await alice.place(1, PRICE, -4 * SIZE)
    await bob.place(1, PRICE, SIZE)
    with trio.fail_after(5):
        await alice.received.receive()
    await server.shutdown()  # the operator goes away; fills happen while alice is gone
    journal.close()
    server, journal = await start_server(nursery, tmp_path / "j.sqlite")
    server.engine.restore(journal.entries())
    server.restore_streams(journal.entries())
    assert server.port != port  # a new port: point the sessions at it
    alice.url = bob.url = f"ws://127.0.0.1:{server.port}/"
    with trio.fail_after(10):
        await bob.wait_connected()
    await bob.place(1, PRICE, SIZE)
    with trio.fail_after(10):
        while len(alice.store.fills(sell)) < 2:
            await trio.sleep(0.02)
    totals = [f.fill.filled_total for f in alice.store.fills(sell)]
    assert totals == [SIZE, 2 * SIZE]  # nothing lost, nothing twice
    assert alice.reconnects >= 1 and alice.store.findings() == []
    await server.shutdown()
    journal.close()


async def test_rejected_order_is_kept_marked_and_never_owed_a_note(nursery, tmp_path):
    server, journal = await start_server(nursery, tmp_path / "j.sqlite")
    alice = client(tmp_path, 1, server.port)
    await nursery.start(alice.run)
    try:
        await alice.place(9, PRICE, SIZE)  # product 9 is not traded
    except OperatorRejected as exc:
        assert exc.code == "UNKNOWN_PRODUCT"
    else:
        raise AssertionError("the operator took an order for an unknown product")
    (order,) = alice.store.orders()
    assert order.rejected
    await server.shutdown()
    journal.close()


async def test_cancel_by_product_and_cancel_and_place_keep_their_notes(nursery, tmp_path):
    server, journal = await start_server(nursery, tmp_path / "j.sqlite")
    alice = client(tmp_path, 1, server.port)
    await nursery.start(alice.run)
    first = await alice.place(1, PRICE, SIZE)
    second = await alice.place(2, PRICE, SIZE)
    data = await alice.cancel_and_place([(first, 1)], 1, PRICE - 10**18, SIZE)
    replacement = bytes.fromhex(data["digest"][2:])
    assert data["successful_cancellations"] == ["0x" + first.hex()]
    data = await alice.cancel_products(())
    assert sorted(data["successful_cancellations"]) == sorted(
        "0x" + d.hex() for d in (second, replacement)
    )
    assert {n.note.order_digest for n in alice.store.notes()} == {first, second, replacement}
    assert alice.verifier.check_deadlines(alice.clock() + 10**6) == []
    assert alice.store.findings() == []
    await server.shutdown()
    journal.close()


async def test_new_session_is_caught_up_with_what_arrived_while_it_was_away(nursery, tmp_path):
    server, journal = await start_server(nursery, tmp_path / "j.sqlite")
    alice, bob = client(tmp_path, 1, server.port), client(tmp_path, 2, server.port)
    await nursery.start(bob.run)
    async with trio.open_nursery() as first:  # alice places, then goes away
        await first.start(alice.run)
        sell = await alice.place(1, PRICE, -3 * SIZE)
        first.cancel_scope.cancel()
    for _ in range(3):  # three fills of alice's order while she is offline
        await bob.place(1, PRICE, SIZE)
    assert alice.store.fills(sell) == []
    again = client(tmp_path, 1, server.port)
    await nursery.start(again.run)
    with trio.fail_after(5):
        await again.wait_caught_up()
    fills = again.store.fills(sell)
    assert sorted(f.fill.filled_total for f in fills) == [SIZE, 2 * SIZE, 3 * SIZE]
    assert again.store.findings() == []
    await server.shutdown()
    journal.close()
