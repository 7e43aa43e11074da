"""Findings 3 and 4 of the hardening issue, in process: every resource is byte-bounded,
every wait times out, every client class has a cap or a rate, each with its stable code.

Attackers connect from their own loopback addresses (127.0.0.2 and up), honest clients
from 127.0.0.1, as they would from different machines.
"""

from __future__ import annotations

import contextlib
import json
import logging

import pytest
import trio
from test_server import PRICE, SIZE, connect, operator_factory, trader

from cancelnote.api import CloseCode, request_to_wire
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.hostile import RawClient, open_tcp
from cancelnote.operator.limits import ServerConfig

#: The attackers' sockets a test opened (:func:`raw`, :func:`tcp`), closed at its end.
OPENED: list[trio.SocketStream] = []


@pytest.fixture
async def start_operator(nursery, tmp_path):
    """Servers on fresh journals; at the end, every attacker socket the test opened is
    closed, then the servers are shut down (an autouse async fixture's teardown did not
    run under pytest-trio: the sockets leaked, a ResourceWarning each at exit)."""
    async with operator_factory(nursery, tmp_path) as start:
        try:
            yield start
        finally:
            while OPENED:
                await trio.aclose_forcefully(OPENED.pop())


async def raw(port: int, source: str, **options) -> RawClient:
    client = await RawClient.connect(port, source, **options)
    OPENED.append(client.stream)
    return client


async def tcp(port: int, source: str) -> trio.SocketStream:
    stream = await open_tcp(port, source)
    OPENED.append(stream)
    return stream


async def close_code(client: RawClient) -> int | None:
    """Read until the server closes; the close code it sent (``None``: it sent none)."""
    with trio.fail_after(10), contextlib.suppress(EOFError):
        while True:
            await client.text()
    return client.close_code


async def texts(client: RawClient, count: int) -> list[dict]:
    with trio.fail_after(10):
        return [json.loads(await client.text()) for _ in range(count)]


async def honest_round_trip(server) -> None:
    """An honest client on 127.0.0.1 places and cancels, and both succeed."""
    me = trader(9)
    async with connect(server) as client:
        placed = me.order(1, PRICE // 2, SIZE, wall_clock_ms())
        assert (await client.request(placed))["status"] == "success"
        cancelled = await client.request(me.cancel([placed], wall_clock_ms()))
        assert cancelled["status"] == "success" and cancelled["data"]["notes"]


async def wait_for(condition, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


# ---------------------------------------------------------------------------------------
# Finding 3: memory was bounded by message count, not bytes.


async def test_readers_that_never_read_are_closed_at_their_byte_budget(start_operator):
    config = ServerConfig(max_send_bytes=300_000, query_rate=10_000, query_rate_per_address=10_000)
    server = await start_operator(config=config, rate_limit=10_000)
    me = trader(1)
    async with connect(server) as client:
        for k in range(500):  # a 500-level book: each book answer is ~35 kB
            await client.request(me.order(1, PRICE - k * 10**15, SIZE, wall_clock_ms()))
    slow = [await raw(server.port, "127.0.0.2", receive_buffer=4096) for _ in range(6)]
    book = json.dumps({"book": {"product_id": 1}})
    peak = 0

    async def flood(client: RawClient) -> None:
        nonlocal peak
        with trio.move_on_after(10):
            try:
                for _ in range(4000):
                    await client.send(book)
                    peak = max(peak, server.buffered_bytes)
            except (OSError, trio.BrokenResourceError):
                pass

    async with trio.open_nursery() as nursery:
        for client in slow:
            nursery.start_soon(flood, client)
        await wait_for(lambda: not server._connections)
    # Each queue stops at its budget (a book answer over it closes that client).
    assert peak <= 6 * config.max_send_bytes + 6 * config.max_message_chars
    await honest_round_trip(server)
    for client in slow:
        await client.aclose()


async def test_unfinished_fragmented_messages_time_out_and_hold_no_more_than_the_limit(
    start_operator,
):
    config = ServerConfig(message_timeout_s=0.5, max_message_chars=50_000)
    server = await start_operator(config=config)
    holders = [await raw(server.port, "127.0.0.2") for _ in range(20)]
    for client in holders:
        await client.send('{"pad": "', finished=False)
        for _ in range(15):  # 150,000 characters, never finished: beyond the limit
            await client.send("x" * 10_000, finished=False)
    assert server.buffered_bytes <= 20 * (config.max_message_chars + 10_000)
    codes = [await close_code(client) for client in holders]
    assert codes == [CloseCode.MESSAGE_TIMEOUT] * 20
    await wait_for(lambda: server.buffered_bytes == 0)
    await honest_round_trip(server)


async def test_a_message_beyond_the_transport_limit_closes_with_1009(start_operator):
    server = await start_operator(config=ServerConfig(max_message_chars=10_000))
    client = await raw(server.port, "127.0.0.2")
    await client.send("x" * 50_000, finished=False)
    assert await close_code(client) == CloseCode.MESSAGE_TOO_BIG


async def test_plain_http_requests_are_answered_400_and_closed_at_once(start_operator):
    server = await start_operator()
    for _ in range(50):
        stream = await tcp(server.port, "127.0.0.2")
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        with trio.fail_after(2):
            while chunk := await stream.receive_some(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ") and b"BAD_HANDSHAKE" in answer
        await stream.aclose()
    await wait_for(lambda: not server._connections, timeout=2)


# ---------------------------------------------------------------------------------------
# Finding 4: no caps on connections, handshakes, subscriptions, replays, bad requests.


async def test_connections_beyond_the_caps_get_503_and_honest_clients_still_get_in(
    start_operator,
):
    config = ServerConfig(max_connections=30, max_connections_per_address=10)
    server = await start_operator(config=config)
    idle = [await tcp(server.port, "127.0.0.2") for _ in range(10)]
    await wait_for(lambda: len(server._connections) == 10)
    refused = await tcp(server.port, "127.0.0.2")
    assert (await refused.receive_some(4096)).startswith(b"HTTP/1.1 503 ")
    await honest_round_trip(server)  # from 127.0.0.1: under its own address's cap
    more = [await tcp(server.port, f"127.0.0.{3 + n // 10}") for n in range(20)]
    await wait_for(lambda: len(server._connections) == 30)
    full = await tcp(server.port, "127.0.0.9")
    answer = await full.receive_some(4096)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"CONNECTION_LIMIT" in answer
    for stream in [*idle, *more, refused, full]:
        await stream.aclose()


async def test_a_connection_that_never_finishes_its_handshake_is_dropped(start_operator):
    server = await start_operator(config=ServerConfig(handshake_timeout_s=0.3))
    stream = await tcp(server.port, "127.0.0.2")
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line
    with trio.fail_after(2):
        assert await stream.receive_some(4096) == b""


async def test_a_silent_connection_is_pinged_then_closed_with_4000(start_operator):
    server = await start_operator(config=ServerConfig(idle_timeout_s=0.4))
    client = await raw(server.port, "127.0.0.2")
    assert await close_code(client) == CloseCode.IDLE_TIMEOUT
    async with connect(server) as polite:  # trio-websocket answers pings: it stays
        await trio.sleep(1.0)
        assert (await polite.request({"book": {"product_id": 1}}))["status"] == "success"


async def test_subscriptions_beyond_the_cap_are_refused(start_operator):
    server = await start_operator(config=ServerConfig(max_subscriptions=3))
    client = await raw(server.port, "127.0.0.2")
    for n in range(4):
        sender = "0x" + bytes([n + 1]).hex() * 32
        await client.send(json.dumps({"subscribe": {"sender": sender, "after_seq": "0"}}))
    answers = await texts(client, 4)
    assert [a["status"] for a in answers] == ["success"] * 3 + ["failure"]
    assert answers[3]["error_code"] == "SUBSCRIPTION_LIMIT"


async def _history(server, me, notes: int) -> None:
    """``notes`` published notes of ``me`` (orders placed, then cancelled ten at a time)."""
    async with connect(server) as client:
        placed = [me.order(1, PRICE - k, SIZE, wall_clock_ms()) for k in range(notes)]
        for request in placed:
            assert (await client.request(request))["status"] == "success"
        for start in range(0, notes, 10):
            await client.request(me.cancel(placed[start : start + 10], wall_clock_ms()))


def _subscribe(me, request_id: int) -> str:
    return json.dumps(
        {"subscribe": {"sender": "0x" + me.sender.hex(), "after_seq": "0"}, "id": request_id}
    )


async def test_a_replay_streams_as_the_client_reads_and_replays_are_capped(start_operator):
    config = ServerConfig(max_replays=2, max_send_bytes=50_000, execute_rate_per_address=1e6)
    server = await start_operator(config=config, rate_limit=10_000)
    busy, other, third = trader(1), trader(2), trader(3)
    await _history(server, busy, 300)  # ~500 bytes a note: 150 kB, three send budgets
    await _history(server, other, 10)
    await _history(server, third, 10)
    reader = await raw(server.port, "127.0.0.2", receive_buffer=4096)
    await reader.send(_subscribe(busy, 1))
    await trio.sleep(0.5)
    # Not read yet, and not queued whole: it would be over the send budget and closed.
    assert server.buffered_bytes < config.max_send_bytes
    items = await texts(reader, 301)  # the ack and every note, in seq order
    assert items[0]["data"]["replayed"] == 300
    seqs = [int(item["note"]["seq"]) for item in items[1:]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 300
    # Two replays streaming on a connection: a third that has history to replay waits.
    slow = await raw(server.port, "127.0.0.3", receive_buffer=4096)
    for request_id, me in enumerate((busy, other, third), 1):
        await slow.send(_subscribe(me, request_id))
    answers = {}
    with trio.fail_after(10):
        while len(answers) < 3:
            message = json.loads(await slow.text())
            if "status" in message:
                answers[message["id"]] = message.get("error_code", "OK")
    assert answers == {1: "OK", 2: "OK", 3: "REPLAY_LIMIT"}


async def test_bad_signature_flood_is_refused_unchecked_past_the_reject_rate(start_operator):
    config = ServerConfig(reject_rate=1_000, reject_rate_per_address=5)
    server = await start_operator(config=config)
    me, forger = trader(1), trader(2)
    client = await raw(server.port, "127.0.0.2")
    for _ in range(60):
        cancel = me.cancel([(bytes(32), 1)], wall_clock_ms())
        wire = request_to_wire(cancel)
        forged = forger.cancel([(bytes(32), 1)], wall_clock_ms()).signature
        wire["cancel_orders"]["signature"] = "0x" + forged.hex()
        await client.send(json.dumps(wire))
    codes = [answer["error_code"] for answer in await texts(client, 60)]
    assert codes[:25] == ["INVALID_SIGNATURE"] * 25  # the address's burst (5 s at 5/s)
    assert codes[-10:] == ["REJECT_RATE_LIMITED"] * 10
    await honest_round_trip(server)  # 127.0.0.1 has its own allowance


async def test_a_connection_over_its_reject_rate_is_slowed_not_answered_faster(start_operator):
    server = await start_operator(config=ServerConfig(reject_rate=20))
    client = await raw(server.port, "127.0.0.2")
    started = trio.current_time()
    for _ in range(140):  # the burst (100) at once, then 20 a second
        await client.send("not json")
    await texts(client, 140)
    assert trio.current_time() - started >= 1.5


async def test_queries_beyond_the_address_rate_get_query_rate_limited(start_operator):
    server = await start_operator(config=ServerConfig(query_rate=1_000, query_rate_per_address=10))
    clients = [await raw(server.port, "127.0.0.2") for _ in range(2)]
    for client in clients:
        for _ in range(30):
            await client.send(json.dumps({"book": {"product_id": 1}}))
    codes = [a.get("error_code") for client in clients for a in await texts(client, 30)]
    assert codes.count(None) <= 25 and "QUERY_RATE_LIMITED" in codes
    await honest_round_trip(server)


async def test_open_orders_are_capped_per_subaccount_and_product_and_in_total(start_operator):
    server = await start_operator(max_open_orders=5, max_open_orders_per_product=3)
    alice, bob = trader(1), trader(2)
    async with connect(server) as client:
        placed, codes = [], []
        for k in range(4):
            request = alice.order(1, PRICE - k, SIZE, wall_clock_ms())
            answer = await client.request(request)
            codes.append(answer.get("error_code", "OK"))
            placed.append(request)
        assert codes == ["OK"] * 3 + ["OPEN_ORDER_LIMIT"]
        # A replace at the cap frees the slot it fills.
        replace = alice.cancel_and_place(
            placed[:1], alice.order(1, PRICE - 9, SIZE, wall_clock_ms()), wall_clock_ms()
        )
        assert (await client.request(replace))["status"] == "success"
        other_product = await client.request(alice.order(2, PRICE, SIZE, wall_clock_ms()))
        assert other_product["status"] == "success"  # the cap is per product
        bob_codes = []
        for k in range(2):
            answer = await client.request(bob.order(2, PRICE - k - 1, SIZE, wall_clock_ms()))
            bob_codes.append(answer.get("error_code", "OK"))
        assert bob_codes == ["OK", "BOOK_FULL"]  # 3 + 1 + 1 = 5 open in total


async def test_the_total_budget_closes_the_largest_queue_with_1013(start_operator, caplog):
    caplog.set_level(logging.INFO, logger="cancelnote.operator.server")
    config = ServerConfig(
        max_buffered_bytes=200_000,
        max_send_bytes=150_000,
        query_rate=10_000,
        query_rate_per_address=10_000,
    )
    server = await start_operator(config=config, rate_limit=10_000)
    me = trader(1)
    async with connect(server) as client:
        for k in range(300):
            await client.request(me.order(1, PRICE - k * 10**15, SIZE, wall_clock_ms()))
    hogs = [await raw(server.port, f"127.0.0.{2 + n}", receive_buffer=4096) for n in range(3)]
    book = json.dumps({"book": {"product_id": 1}})

    async def hog_it(hog: RawClient) -> None:
        with contextlib.suppress(OSError, trio.BrokenResourceError):
            for _ in range(400):
                await hog.send(book)

    async with trio.open_nursery() as nursery:
        for hog in hogs:
            nursery.start_soon(hog_it, hog)
    await wait_for(lambda: not server._connections)
    codes = [r.fields["code"] for r in caplog.records if r.getMessage() == "connection_closed"]
    # (a client that does not read gets no close frame: the write to it is cut off)
    assert CloseCode.MEMORY_BUDGET in codes
    assert server.buffered_bytes == 0
    await honest_round_trip(server)
