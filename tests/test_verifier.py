"""Signature recovery in verifier workers: order kept, nothing unverified, crashes survived.

The workers recover signers ahead of the engine; the engine still compares them with the
senders and, whenever no worker answered, recovers them itself. These tests pipeline
requests through real workers over real sockets, kill workers in the middle, and replace
them with ones that die at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio
from test_server import DOMAIN, OPERATOR, PRICE, SIZE, connect, operator_factory, trader

from cancelnote.api import request_to_wire, signed_parts
from cancelnote.crypto import recover_address
from cancelnote.messages import CancellationNote, signature_from_wire
from cancelnote.operator import verifier
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.engine import Engine, Verified
from cancelnote.operator.limits import ServerConfig
from cancelnote.operator.server import EXECUTES

T0 = 1_700_000_000_000


@pytest.fixture
async def start_operator(nursery, tmp_path):
    async with operator_factory(nursery, tmp_path) as start:
        yield start


class RecordingEngine:
    """The server's engine, noting every ``(request, verified)`` it is handed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.calls: list[tuple[Any, Verified | None]] = []

    def handle(self, request, now_ms, verified=None):
        self.calls.append((request, verified))
        return self._engine.handle(request, now_ms, verified)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def record_engine_calls(server) -> list[tuple[Any, Verified | None]]:
    """Every ``(request, verified)`` the server hands its engine, from now on."""
    server.engine = RecordingEngine(server.engine)
    return server.engine.calls


def forged(owner, stranger, placed) -> str:
    """``owner``'s cancel of ``placed``, signed by ``stranger``."""
    cancel = owner.cancel([placed], wall_clock_ms())
    wire = request_to_wire(cancel)
    signature = stranger.cancel([placed], wall_clock_ms()).signature
    wire["cancel_orders"]["signature"] = "0x" + signature.hex()
    return json.dumps(wire)


async def place_then_cancel_pipelined(server, me, pairs: int, answers: list[dict]) -> None:
    """Send ``pairs`` place/cancel pairs without waiting (each cancel names the order
    just before it: a reordering would make it NOT_FOUND), then read every answer."""
    async with connect(server) as client:
        for n in range(pairs):
            placed = me.order(1, PRICE // 2 - n * 10**15, SIZE, wall_clock_ms())
            await client.ws.send_message(json.dumps({**request_to_wire(placed), "id": 2 * n}))
            cancel = me.cancel([placed], wall_clock_ms())
            await client.ws.send_message(json.dumps({**request_to_wire(cancel), "id": 2 * n + 1}))
        with trio.fail_after(30):
            for _ in range(2 * pairs):
                answers.append(await client.answer())


# ---------------------------------------------------------------------------------------
# The engine compares what a worker found with the sender.


def test_a_worker_verdict_is_checked_against_the_sender():
    alice, bob = trader(1), trader(2)
    engine = Engine(OPERATOR, DOMAIN, {1}, rate_limit=10**9)
    placed = alice.order(1, PRICE, SIZE, T0)
    ((order, _),) = signed_parts(placed)
    digest = order.digest(DOMAIN)
    (reply,) = [o for o in engine.handle(placed, T0, Verified((digest,), (bob.signer.address,)))]
    assert reply.wire["error_code"] == "INVALID_SIGNATURE"
    (reply,) = engine.handle(placed, T0, Verified((digest,), ("no public key recovers",)))
    assert (reply.wire["error_code"], reply.wire["error"]) == (
        "INVALID_SIGNATURE",
        "no public key recovers",
    )
    verified = Verified((digest,), (alice.signer.address,))
    assert engine.handle(placed, T0, verified)[-1].wire["status"] == "success"


def test_a_verdict_never_skips_a_check_that_comes_before_the_signature():
    alice = trader(1)
    engine = Engine(OPERATOR, DOMAIN, {1}, rate_limit=10**9)
    unknown = alice.order(7, PRICE, SIZE, T0)
    digest = unknown.order.digest(DOMAIN)
    (reply,) = engine.handle(unknown, T0, Verified((digest,), (alice.signer.address,)))
    assert reply.wire["error_code"] == "UNKNOWN_PRODUCT"


# ---------------------------------------------------------------------------------------
# Through the server and real workers.


async def test_pipelined_requests_keep_each_connections_order_through_the_workers(
    start_operator,
):
    server = await start_operator(ServerConfig(execute_rate_per_address=10**6))
    assert server.verifier.lanes == 1 and None not in server.verifier.pids
    results: list[list[dict]] = [[] for _ in range(4)]
    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(place_then_cancel_pipelined, server, trader(10 + n), 40, results[n])
    for answers in results:
        assert [a["id"] for a in answers] == list(range(80))  # in the order sent
        assert all(a["status"] == "success" for a in answers), [
            a for a in answers if a["status"] != "success"
        ][:2]
        for cancel in answers[1::2]:
            assert cancel["data"]["successful_cancellations"] and cancel["data"]["notes"]


async def test_every_execute_reaches_the_engine_with_its_own_signers_verified(start_operator):
    server = await start_operator(ServerConfig(execute_rate_per_address=10**6))
    calls = record_engine_calls(server)
    alice, bob = trader(1), trader(2)
    answers: list[dict] = []
    await place_then_cancel_pipelined(server, alice, 20, answers)
    placed = alice.order(1, PRICE // 2, SIZE, wall_clock_ms())
    async with connect(server) as client:
        assert (await client.request(placed))["status"] == "success"
        await client.ws.send_message(forged(alice, bob, placed))
        refused = await client.answer()
    assert refused["error_code"] == "INVALID_SIGNATURE"
    executes = [(r, v) for r, v in calls if isinstance(r, EXECUTES)]
    assert len(executes) == 42
    for request, verified in executes:
        assert verified is not None  # the workers were up: every one went through them
        parts = signed_parts(request)
        assert verified.digests == tuple(m.digest(DOMAIN) for m, _ in parts)
        assert verified.signers == tuple(
            recover_address(m.digest(DOMAIN), signature) for m, signature in parts
        )
    assert executes[-1][1].signers != (alice.signer.address,)  # found out, and refused


async def test_a_killed_worker_is_replaced_and_every_request_is_answered(start_operator):
    server = await start_operator(ServerConfig(execute_rate_per_address=10**6))
    calls = record_engine_calls(server)
    first = server.verifier.pids[0]
    results: list[list[dict]] = [[] for _ in range(3)]
    finished = trio.Event()
    killed: list[int] = []

    async def kill_workers() -> None:
        """SIGKILL each worker as soon as it is there, while the clients run."""
        while not finished.is_set():
            pid = server.verifier.pids[0]
            if pid is not None and pid not in killed and len(calls) > 20:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            await trio.sleep(0.01)

    async def clients() -> None:
        async with trio.open_nursery() as inner:
            for n in range(3):
                inner.start_soon(
                    place_then_cancel_pipelined, server, trader(20 + n), 150, results[n]
                )
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(kill_workers)
        nursery.start_soon(clients)
    assert first in killed and server.verifier.restarts >= 1
    for answers in results:
        assert [a["id"] for a in answers] == list(range(300))
        assert all(a["status"] == "success" for a in answers)
    # Nothing reached the engine unverified: by a worker, or else by the engine itself.
    for request, verified in calls:
        if isinstance(request, EXECUTES) and verified is not None:
            (message, signature), *_ = signed_parts(request)
            assert verified.signers[0] == recover_address(message.digest(DOMAIN), signature)
    notes = [
        CancellationNote.from_wire(a["data"]["notes"][0]["note"])
        for answers in results
        for a in answers[1::2]
    ]
    assert len({note.seq for note in notes}) == 450  # every cancel its own journaled note
    for answers in results:
        signed = answers[1]["data"]["notes"][0]
        note = CancellationNote.from_wire(signed["note"])
        note.verify(signature_from_wire(signed["signature"]), DOMAIN, OPERATOR.address)


async def test_workers_that_always_die_leave_the_engine_to_verify(start_operator, monkeypatch):
    async def dying_worker(cls):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", "import sys; sys.stdin.buffer.read(1)"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return cls(process)

    monkeypatch.setattr(verifier._Worker, "start", classmethod(dying_worker))
    server = await start_operator(ServerConfig(execute_rate_per_address=10**6))
    calls = record_engine_calls(server)
    alice, bob = trader(1), trader(2)
    answers: list[dict] = []
    await place_then_cancel_pipelined(server, alice, 5, answers)
    assert all(a["status"] == "success" for a in answers)
    placed = alice.order(1, PRICE // 2, SIZE, wall_clock_ms())
    async with connect(server) as client:
        assert (await client.request(placed))["status"] == "success"
        await client.ws.send_message(forged(alice, bob, placed))
        assert (await client.answer())["error_code"] == "INVALID_SIGNATURE"
    assert server.verifier.restarts >= 2
    assert all(v is None for r, v in calls if isinstance(r, EXECUTES))  # the engine's own
