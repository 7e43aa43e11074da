"""Hostile input over a real socket: each gets a structured error, nothing changes state,
and honest clients connected at the same time keep being served."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from typing import Any

import pytest
import trio
from test_server import DOMAIN, PRICE, SIZE, connect, operator_factory, trader
from trio_websocket import ConnectionClosed

from cancelnote.api import PlaceOrder, request_to_wire
from cancelnote.crypto import SECP256K1_N
from cancelnote.messages import Order, make_nonce
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.limits import ServerConfig


@pytest.fixture
async def start_operator(nursery, tmp_path):
    async with operator_factory(nursery, tmp_path) as start:
        yield start


def _order_wire(placed: PlaceOrder, **changes: Any) -> str:
    wire = copy.deepcopy(request_to_wire(placed))
    wire["place_order"]["order"].update(changes)
    return json.dumps(wire)


def _signed(owner, **fields: Any) -> PlaceOrder:
    """A correctly signed order of ``owner`` with some fields set (nonce: now + 50 s)."""
    now = wall_clock_ms()
    values = {
        "sender": owner.sender,
        "product_id": 1,
        "price_x18": PRICE,
        "amount": SIZE,
        "expiration": now // 1000 + 3600,
        "nonce": make_nonce(now + 50_000),
    }
    values.update(fields)
    order = Order(**values)
    return PlaceOrder(order.product_id, order, order.sign(owner.signer, DOMAIN))


def _with_signature(placed: PlaceOrder, signature: bytes) -> str:
    wire = request_to_wire(placed)
    wire["place_order"]["signature"] = "0x" + signature.hex()
    return json.dumps(wire)


def _high_s(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signature[64]])


def hostile_inputs(alice, bob, replayed: PlaceOrder, replayed_cancel: Any) -> list[tuple]:
    """``(name, message, error_code)``: text or binary frames a hostile client sends."""
    now = wall_clock_ms()
    good = alice.order(1, PRICE, SIZE, now)
    book = {"book": {"product_id": 1}}
    flipped = bytearray(good.signature)
    flipped[5] ^= 1
    mismatched = alice.cancel([replayed], now)
    cancel_wire = request_to_wire(mismatched)
    cancel_wire["cancel_orders"]["tx"]["productIds"] = [1, 1]
    empty_cancel = alice.cancel([], now)
    return [
        ("not_json", '{"place_order": ', "INVALID_MESSAGE"),
        ("json_array", "[1, 2]", "INVALID_MESSAGE"),
        ("json_scalar", "42", "INVALID_MESSAGE"),
        ("unknown_request", '{"withdraw_all": {}}', "INVALID_MESSAGE"),
        (
            "two_requests",
            json.dumps({**book, "fills": {"digest": "0x" + "00" * 32}}),
            "INVALID_MESSAGE",
        ),
        ("duplicate_key", '{"book": {"product_id": 1, "product_id": 2}}', "INVALID_MESSAGE"),
        ("nan", '{"book": {"product_id": NaN}}', "INVALID_MESSAGE"),
        ("deep_nesting", "[" * 60_000 + "]" * 60_000, "INVALID_MESSAGE"),
        ("binary_frame", b"\x00\x01binary", "INVALID_MESSAGE"),
        ("id_not_integer", json.dumps({**book, "id": "seven"}), "INVALID_MESSAGE"),
        (
            "envelope_product_as_string",
            json.dumps({"book": {"product_id": "1"}}),
            "INVALID_MESSAGE",
        ),
        ("amount_float", _order_wire(good, amount=1.5), "INVALID_MESSAGE"),
        ("amount_bool", _order_wire(good, amount=True), "INVALID_MESSAGE"),
        ("amount_beyond_int128", _order_wire(good, amount=str(2**200)), "INVALID_MESSAGE"),
        (
            "amount_5000_digits",
            _order_wire(good).replace(f'"amount": "{SIZE}"', '"amount": ' + "9" * 5000),
            "INVALID_MESSAGE",
        ),
        ("nonce_negative", _order_wire(good, nonce="-1"), "INVALID_MESSAGE"),
        ("price_5000_digit_string", _order_wire(good, priceX18="9" * 5000), "INVALID_MESSAGE"),
        ("expiration_beyond_uint64", _order_wire(good, expiration=str(2**64)), "INVALID_MESSAGE"),
        ("leading_zero_integer", _order_wire(good, amount="01"), "INVALID_MESSAGE"),
        ("unknown_order_field", _order_wire(good, extra="1"), "INVALID_MESSAGE"),
        ("cancel_lengths_differ", json.dumps(cancel_wire), "INVALID_MESSAGE"),
        ("cancel_no_digest", json.dumps(request_to_wire(empty_cancel)), "INVALID_MESSAGE"),
        (
            "subscribe_short_sender",
            '{"subscribe": {"sender": "0x12", "after_seq": "0"}}',
            "INVALID_MESSAGE",
        ),
        (
            "subscribe_negative_seq",
            json.dumps({"subscribe": {"sender": "0x" + alice.sender.hex(), "after_seq": "-1"}}),
            "INVALID_MESSAGE",
        ),
        (
            "subscribe_5000_digit_seq",
            json.dumps(
                {"subscribe": {"sender": "0x" + alice.sender.hex(), "after_seq": "9" * 5000}}
            ),
            "INVALID_MESSAGE",
        ),
        ("zero_amount", json.dumps(request_to_wire(_signed(alice, amount=0))), "INVALID_ORDER"),
        (
            "negative_price",
            json.dumps(request_to_wire(_signed(alice, price_x18=-1))),
            "INVALID_ORDER",
        ),
        (
            "unknown_product",
            json.dumps(request_to_wire(_signed(alice, product_id=9))),
            "UNKNOWN_PRODUCT",
        ),
        (
            "expired_order",
            json.dumps(request_to_wire(_signed(alice, expiration=now // 1000 - 1))),
            "EXPIRED",
        ),
        (
            "nonce_in_the_past",
            json.dumps(request_to_wire(_signed(alice, nonce=make_nonce(now - 1_000)))),
            "NONCE_WINDOW",
        ),
        (
            "nonce_far_future",
            json.dumps(request_to_wire(_signed(alice, nonce=make_nonce(now + 200_000)))),
            "NONCE_WINDOW",
        ),
        ("signature_flipped_bit", _with_signature(good, bytes(flipped)), "INVALID_SIGNATURE"),
        ("signature_high_s", _with_signature(good, _high_s(good.signature)), "INVALID_SIGNATURE"),
        ("signature_short", _with_signature(good, b"\x12\x34"), "INVALID_SIGNATURE"),
        (
            "signed_by_someone_else",
            _with_signature(good, good.order.sign(bob.signer, DOMAIN)),
            "INVALID_SIGNATURE",
        ),
        ("replayed_order", json.dumps(request_to_wire(replayed)), "REPLAYED"),
        ("replayed_cancel", json.dumps(request_to_wire(replayed_cancel)), "REPLAYED"),
        (
            "unknown_digest_status",
            json.dumps({"order_status": {"digest": "0x" + "ab" * 32}}),
            "NOT_FOUND",
        ),
        ("unknown_product_book", json.dumps({"book": {"product_id": 77}}), "UNKNOWN_PRODUCT"),
    ]


async def test_each_hostile_input_gets_its_error_code_and_changes_nothing(start_operator):
    server = await start_operator(config=ServerConfig(max_message_chars=150_000))
    alice, bob = trader(1), trader(2)
    async with connect(server) as client:
        replayed = alice.order(1, PRICE, SIZE, wall_clock_ms())
        assert (await client.request(replayed))["status"] == "success"
        cancel = alice.cancel([replayed], wall_clock_ms())
        assert (await client.request(cancel))["status"] == "success"
        before, last_seq = server.engine.snapshot(), server.journal.last_seq()
        for number, (name, message, code) in enumerate(
            hostile_inputs(alice, bob, replayed, cancel)
        ):
            await client.ws.send_message(message)
            answer = await client.answer()
            assert (name, answer["status"], answer["error_code"]) == (name, "failure", code)
            assert isinstance(answer["error"], str) and answer["error"]
            # The connection stays open and serves the next request.
            pong = await client.request({"book": {"product_id": 1}, "id": number})
            assert pong["status"] == "success", name
        assert server.engine.snapshot() == before
        assert server.journal.last_seq() == last_seq


async def test_failure_to_a_malformed_request_echoes_its_id_and_request_type(start_operator):
    server = await start_operator()
    async with connect(server) as client:
        await client.ws.send_message(json.dumps({"order_status": {"digest": "0x12"}, "id": 41}))
        answer = await client.answer()
        assert answer == {
            "status": "failure",
            "signature": None,
            "error": answer["error"],
            "error_code": "INVALID_MESSAGE",
            "request_type": "query_order_status",
            "id": 41,
        }


async def test_message_over_the_size_limit_is_refused_and_the_connection_stays_up(
    start_operator,
):
    server = await start_operator(config=ServerConfig(max_message_chars=10_000))
    async with connect(server) as client:
        await client.ws.send_message(json.dumps({"book": {"product_id": 1}, "pad": "x" * 20_000}))
        answer = await client.answer()
        assert answer["error_code"] == "INVALID_MESSAGE"
        assert "exceeds 10000" in answer["error"]
        assert (await client.request({"book": {"product_id": 1}}))["status"] == "success"


async def test_message_over_the_transport_limit_closes_only_that_connection(start_operator):
    server = await start_operator(config=ServerConfig(max_message_chars=10_000))
    alice = trader(1)
    async with connect(server) as honest, connect(server) as hostile:
        await hostile.ws.send_message("x" * 50_000)
        with pytest.raises(ConnectionClosed) as closed:
            await hostile.answer()
        assert closed.value.reason.code == 1009
        answer = await honest.request(alice.order(1, PRICE, SIZE, wall_clock_ms()))
        assert answer["status"] == "success"


async def test_cancel_of_an_unknown_digest_fails_that_order_with_not_found(start_operator):
    server = await start_operator()
    alice = trader(1)
    async with connect(server) as client:
        answer = await client.request(alice.cancel([(b"\xab" * 32, 1)], wall_clock_ms()))
        assert answer["status"] == "success"
        assert answer["data"]["failed_cancellations"] == [
            {"digest": "0x" + "ab" * 32, "reason_code": "NOT_FOUND"}
        ]
        assert answer["data"]["notes"] == []


async def test_flood_past_the_rate_limit_is_refused_while_another_wallet_trades(
    start_operator,
):
    server = await start_operator(rate_limit=30)
    flooder, honest = trader(1), trader(2)
    codes: list[str] = []

    async def flood() -> None:
        async with connect(server) as client:
            for k in range(60):
                answer = await client.request(flooder.order(1, PRICE - k, SIZE, wall_clock_ms()))
                codes.append(answer.get("error_code", "OK"))

    async def trade() -> None:
        async with connect(server) as client:
            for k in range(20):
                answer = await client.request(honest.order(2, PRICE + k, -SIZE, wall_clock_ms()))
                assert answer["status"] == "success", answer

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        nursery.start_soon(trade)
    assert codes == ["OK"] * 30 + ["RATE_LIMITED"] * 30


async def test_junk_flood_does_not_stop_honest_clients_connected_at_the_same_time(
    start_operator,
):
    server = await start_operator()
    alice, bob = trader(1), trader(2)
    inputs = hostile_inputs(alice, bob, alice.order(1, 1, 1, 0), alice.cancel([], 0))
    junk = [message for _, message, _ in inputs if isinstance(message, str)][:10]
    done = trio.Event()

    async def hostile() -> None:
        async with connect(server) as client:
            sent = 0
            while not done.is_set():
                await client.ws.send_message(junk[sent % len(junk)])
                assert (await client.answer())["status"] == "failure"
                sent += 1

    async def honest(me, side: int) -> None:
        async with connect(server) as client:
            for _ in range(25):
                answer = await client.request(me.order(1, PRICE, side * SIZE, wall_clock_ms()))
                assert answer["status"] == "success", answer

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(hostile)
        async with trio.open_nursery() as honest_clients:
            honest_clients.start_soon(honest, alice, 1)
            honest_clients.start_soon(honest, bob, -1)
        done.set()
    assert server.engine.snapshot()["orders"].__len__() == 50


async def test_a_client_that_stops_reading_is_disconnected_and_others_are_not_held_up(
    start_operator, caplog
):
    server = await start_operator(
        config=ServerConfig(
            max_send_bytes=200_000, query_rate=10_000, query_rate_per_address=10_000
        ),
        rate_limit=10_000,
    )
    alice = trader(1)
    caplog.set_level(logging.INFO, logger="cancelnote.operator.server")

    def closed_slow() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.getMessage() == "connection_closed" and r.fields["code"] == 1008
        ]

    async with connect(server, receive_buffer=2048) as slow, connect(server) as fast:
        for k in range(500):  # a deep book: each answer to a book query is ~35 kB
            await fast.request(alice.order(1, PRICE - k * 10**15, SIZE, wall_clock_ms()))
        book = json.dumps({"book": {"product_id": 1}})
        with trio.fail_after(20):
            sent = 0
            while not closed_slow():  # 400 answers (14 MB) cannot all sit in buffers
                with contextlib.suppress(ConnectionClosed):
                    await slow.ws.send_message(book)
                sent += 1
                if sent % 50 == 0:
                    # The others are never held up meanwhile.
                    with trio.fail_after(1):
                        answer = await fast.request({"book": {"product_id": 2}})
                    assert answer["status"] == "success"
        (closed,) = closed_slow()
        assert "send queue full" in closed.fields["reason"]


async def test_client_leaving_with_answers_pending_does_not_disturb_the_server(start_operator):
    server = await start_operator()
    alice, bob = trader(1), trader(2)
    for _ in range(5):
        async with connect(server) as leaver:
            for k in range(100):
                request = alice.order(1, PRICE - k, SIZE, wall_clock_ms())
                await leaver.ws.send_message(json.dumps(request_to_wire(request)))
        # ...gone without reading an answer.
    async with connect(server) as client:
        answer = await client.request(bob.order(1, PRICE, -SIZE, wall_clock_ms()))
        assert answer["status"] == "success"
