"""The operator's WebSocket server end to end, over real loopback sockets.

Several clients place, match, cancel and subscribe at once; every answer is checked
against the journal (durable before visible, byte for byte) and against the operator's
signature.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from cancelnote.api import request_to_wire
from cancelnote.crypto import Signer, recover_address
from cancelnote.messages import CancellationNote, Domain, Fill, domain_to_json
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.engine import Engine
from cancelnote.operator.journal import Journal
from cancelnote.operator.limits import ServerConfig
from cancelnote.operator.server import OperatorServer
from cancelnote.operator.testing import Trader

DOMAIN = Domain(31337, "0x" + "c0" * 20)
OPERATOR = Signer(bytes.fromhex("aa" * 32))
PRICE = 100 * 10**18
SIZE = 10**18


def trader(n: int) -> Trader:
    return Trader(Signer(bytes([n]) * 32), DOMAIN)


class WsClient:
    """A test client: numbered requests, and everything else (stream items) kept aside."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.stream: list[dict[str, Any]] = []  # fills and notes pushed, in arrival order
        self.texts: list[str] = []  # every fill or note text received, pushed or replied
        self._ids = itertools.count(1)

    async def request(self, body: dict[str, Any] | Any) -> dict[str, Any]:
        """Send a request (a dict, or an API request object) and return its answer."""
        wire = body if isinstance(body, dict) else request_to_wire(body)
        request_id = next(self._ids)
        await self.ws.send_message(json.dumps({**wire, "id": request_id}))
        return await self.answer(request_id)

    async def answer(self, request_id: int | None = None) -> dict[str, Any]:
        """The next answer (with ``request_id``, if given), keeping stream items aside."""
        while True:
            message = json.loads(await self.ws.get_message())
            if "status" not in message:
                self.stream.append(message)
                continue
            for signed in (message.get("data") or {}).get("notes", ()):
                self.texts.append(json.dumps(signed, separators=(",", ":")))
            if request_id is None or message.get("id") == request_id:
                return message

    async def stream_item(self) -> dict[str, Any]:
        while not self.stream:
            message = json.loads(await self.ws.get_message())
            assert "status" not in message, message
            self.stream.append(message)
        return self.stream.pop(0)


@asynccontextmanager
async def connect(port: int | OperatorServer, receive_buffer: int = 0) -> AsyncIterator[WsClient]:
    """A client connection; the test owns the TCP stream, so it is closed however the
    WebSocket ends (trio-websocket 0.12 leaks the client socket when the server closes).

    ``receive_buffer`` (bytes) shrinks the socket's receive buffer: a client that then
    stops reading pushes back on the server after a few messages.
    """
    if isinstance(port, OperatorServer):
        port = port.port
    sock = trio.socket.socket()
    if receive_buffer:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/")
        try:
            yield WsClient(ws)
        finally:
            if ws.closed is None:
                with trio.move_on_after(2):
                    await ws.aclose()
            nursery.cancel_scope.cancel()


StartOperator = Callable[..., Awaitable[OperatorServer]]
DB_PATHS: dict[int, Path] = {}  # id(server) -> its journal file


@asynccontextmanager
async def operator_factory(nursery, tmp_path: Path) -> AsyncIterator[StartOperator]:
    """Start servers on fresh journals; each is shut down cleanly at the end."""
    servers: list[tuple[OperatorServer, Journal]] = []

    async def start(config: ServerConfig | None = None, **engine_config: Any) -> OperatorServer:
        path = tmp_path / f"j{len(servers)}.sqlite"
        journal = Journal.open(path, DOMAIN, OPERATOR.address)
        engine = Engine(OPERATOR, DOMAIN, {1, 2}, **engine_config)
        server = OperatorServer(engine, journal, config=config or ServerConfig())
        DB_PATHS[id(server)] = path
        await nursery.start(server.serve, "127.0.0.1", 0)
        servers.append((server, journal))
        return server

    yield start
    for server, journal in servers:
        with trio.fail_after(10):
            await server.shutdown()
        journal.close()


@pytest.fixture
async def start_operator(nursery, tmp_path: Path) -> AsyncIterator[StartOperator]:
    async with operator_factory(nursery, tmp_path) as start:
        yield start


def journal_rows(server: OperatorServer) -> dict[int, str]:
    """``seq -> signed JSON`` of every fill and note in the journal file (read apart)."""
    with sqlite3.connect(DB_PATHS[id(server)]) as conn:
        rows = conn.execute("SELECT seq, body FROM journal WHERE kind IN ('fill', 'note')")
        out = {}
        for seq, body in rows:
            obj = json.loads(body)
            kind = "fill" if "fill" in obj else "note"
            out[seq] = json.dumps(
                {kind: obj[kind], "signature": obj["signature"]}, separators=(",", ":")
            )
        return out


def signed_seq(signed: dict[str, Any]) -> int:
    return int((signed.get("fill") or signed["note"])["seq"])


def check_operator_signed(signed: dict[str, Any]) -> None:
    message = (
        Fill.from_wire(signed["fill"])
        if "fill" in signed
        else CancellationNote.from_wire(signed["note"])
    )
    assert recover_address(message.digest(DOMAIN), bytes.fromhex(signed["signature"][2:])) == (
        OPERATOR.address
    )


# ---------------------------------------------------------------------------------------
# The API end to end.


async def test_concurrent_clients_trade_and_cancel_and_each_stream_matches_the_journal(
    start_operator,
):
    server = await start_operator()
    traders = [trader(n) for n in range(1, 5)]
    streams: dict[bytes, list[dict[str, Any]]] = {}

    async def session(me: Trader, index: int) -> None:
        async with connect(server) as client:
            answer = await client.request(
                {"subscribe": {"sender": "0x" + me.sender.hex(), "after_seq": "0"}}
            )
            assert answer["status"] == "success" and answer["data"]["replayed"] == 0
            side = 1 if index % 2 else -1
            placed = []
            for k in range(6):
                request = me.order(1, PRICE, side * SIZE, wall_clock_ms())
                answer = await client.request(request)
                assert answer["status"] == "success", answer
                assert answer["request_type"] == "execute_place_order"
                placed.append(request)
                if k % 2:
                    await trio.sleep(0.001)
            cancel = me.cancel(placed, wall_clock_ms())
            answer = await client.request(cancel)
            assert answer["status"] == "success", answer
            data = answer["data"]
            outcomes = (
                len(data["successful_cancellations"])
                + len(data["pending_cancellations"])
                + len(data["failed_cancellations"])
            )
            assert outcomes == len(placed)
            assert {f["reason_code"] for f in data["failed_cancellations"]} <= {"FILLED"}
            for signed in data["notes"]:
                check_operator_signed(signed)
            # Unsubscribing after the last reply: everything of ours is in the stream.
            await client.request({"unsubscribe": {"sender": "0x" + me.sender.hex()}})
            streams[me.sender] = client.stream

    async with trio.open_nursery() as clients:
        for index, me in enumerate(traders):
            clients.start_soon(session, me, index)

    rows = journal_rows(server)
    fills = sum(1 for text in rows.values() if text.startswith('{"fill"'))
    assert fills > 0, "buyers and sellers at one price must have matched"
    for me in traders:
        stream = streams[me.sender]
        seqs = [signed_seq(s) for s in stream]
        assert seqs == sorted(set(seqs)), "a stream has no duplicate and keeps journal order"
        for signed in stream:
            check_operator_signed(signed)
            assert json.dumps(signed, separators=(",", ":")) == rows[signed_seq(signed)]
        mine = [seq for seq, text in rows.items() if '"sender":"0x' + me.sender.hex() + '"' in text]
        assert sorted(mine) == seqs, "a subscriber gets every fill and note of its sender"


async def test_subscribe_after_seq_replays_only_later_items_then_streams_live(start_operator):
    server = await start_operator()
    alice, bob = trader(1), trader(2)
    async with connect(server) as a, connect(server) as b:
        for _ in range(3):
            await a.request(alice.order(1, PRICE, SIZE, wall_clock_ms()))
            await b.request(bob.order(1, PRICE, -SIZE, wall_clock_ms()))
        seqs = sorted(journal_rows(server))
        alice_seqs = [s for s in seqs if alice.sender.hex() in journal_rows(server)[s]]
        assert len(alice_seqs) == 3
        async with connect(server) as watcher:
            sender = "0x" + alice.sender.hex()
            answer = await watcher.request(
                {"subscribe": {"sender": sender, "after_seq": str(alice_seqs[0])}}
            )
            assert answer["data"] == {
                "sender": sender,
                "after_seq": str(alice_seqs[0]),
                "replayed": 2,
                "domain": domain_to_json(server.engine.domain),
                "operator": server.engine.signer.checksum_address,
            }
            replayed = [signed_seq(await watcher.stream_item()) for _ in range(2)]
            assert replayed == alice_seqs[1:]
            await a.request(alice.order(1, PRICE, SIZE, wall_clock_ms()))
            await b.request(bob.order(1, PRICE, -SIZE, wall_clock_ms()))
            live = await watcher.stream_item()
            assert signed_seq(live) > alice_seqs[-1]
            assert live["fill"]["sender"] == sender


async def test_no_answer_or_push_leaves_before_its_entries_are_committed(start_operator):
    server = await start_operator()
    alice, bob = trader(1), trader(2)
    reader = sqlite3.connect(DB_PATHS[id(server)])

    def committed() -> int:
        return reader.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]

    async with connect(server) as a, connect(server) as b:
        await a.request({"subscribe": {"sender": "0x" + alice.sender.hex(), "after_seq": 0}})
        for _ in range(5):
            placed = alice.order(1, PRICE, SIZE, wall_clock_ms())
            await a.request(placed)
            await b.request(bob.order(1, PRICE, -SIZE // 2, wall_clock_ms()))
            fill = await a.stream_item()
            assert signed_seq(fill) <= committed()
            answer = await a.request(alice.cancel([placed], wall_clock_ms()))
            (note,) = answer["data"]["notes"]
            assert signed_seq(note) <= committed()
    reader.close()


async def test_queries_answer_order_status_fills_notes_and_book(start_operator):
    server = await start_operator()
    alice, bob = trader(1), trader(2)
    async with connect(server) as client:
        placed = alice.order(2, PRICE, 3 * SIZE, wall_clock_ms())
        digest = "0x" + placed.order.digest(DOMAIN).hex()
        await client.request(placed)
        await client.request(bob.order(2, PRICE, -SIZE, wall_clock_ms()))
        status = await client.request({"order_status": {"digest": digest}})
        assert status["request_type"] == "query_order_status"
        assert status["data"]["status"] == "ACTIVE"
        assert status["data"]["filled_amount"] == str(SIZE)
        fills = await client.request({"fills": {"digest": digest}})
        (fill,) = fills["data"]["fills"]
        check_operator_signed(fill)
        book = await client.request({"book": {"product_id": 2}})
        assert book["data"]["bids"] == [[str(PRICE), str(2 * SIZE)]]
        await client.request(alice.cancel([placed], wall_clock_ms()))
        notes = await client.request({"notes": {"digest": digest}})
        (note,) = notes["data"]["notes"]
        assert note["note"]["filledAmount"] == str(SIZE)
        status = await client.request({"order_status": {"digest": digest}})
        assert status["data"]["status"] == "CANCELLED"
        assert status["data"]["cancellation_type"] == "OFF_CHAIN"


async def test_held_cancel_is_answered_to_its_client_when_the_policy_releases_it(
    start_operator,
):
    from cancelnote.operator.policies import Delay

    server = await start_operator(policy=Delay(150))
    alice = trader(1)
    async with connect(server) as client:
        placed = alice.order(1, PRICE, SIZE, wall_clock_ms())
        await client.request(placed)
        started = wall_clock_ms()
        answer = await client.request(alice.cancel([placed], wall_clock_ms()))
        assert wall_clock_ms() - started >= 150
        assert answer["status"] == "success"
        assert answer["data"]["successful_cancellations"] == [
            "0x" + placed.order.digest(DOMAIN).hex()
        ]


async def test_shutdown_answers_every_request_it_read_then_closes_with_going_away(
    start_operator,
):
    server = await start_operator()
    alice = trader(1)
    async with connect(server) as client:
        requests = [alice.order(1, PRICE - k, SIZE, wall_clock_ms()) for k in range(50)]
        for k, request in enumerate(requests):
            await client.ws.send_message(json.dumps({**request_to_wire(request), "id": k}))
        assert (await client.answer(0))["status"] == "success"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.shutdown)
            answered = 1
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    assert (await client.answer())["status"] == "success"
                    answered += 1
        assert closed.value.reason.code == 1001
    # Each order is one entry (none cross): every accepted order was answered, and
    # every answer was committed.
    assert server.journal.last_seq() == answered
