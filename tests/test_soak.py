"""A bounded soak: honest clients cancel while a mix of every attack runs at once, and
every honest cancel completes (the hardening issue's soak, 15 s)."""

from __future__ import annotations

import pytest
import trio
from test_server import DOMAIN, PRICE, SIZE, connect, operator_factory, trader

from cancelnote.operator import hostile
from cancelnote.operator.clock import wall_clock_ms

pytestmark = pytest.mark.slow

SOAK_S = 15.0


@pytest.fixture
async def start_operator(nursery, tmp_path):
    async with operator_factory(nursery, tmp_path) as start:
        yield start


async def test_honest_cancels_all_complete_beside_every_attack_at_once(start_operator):
    server = await start_operator()
    busy = trader(50)
    async with connect(server) as client:  # a sender with history, for the replay loop
        placed = [busy.order(2, PRICE // 4 - k, SIZE, wall_clock_ms()) for k in range(50)]
        for request in placed:
            assert (await client.request(request))["status"] == "success"
        for start in range(0, 50, 10):
            await client.request(busy.cancel(placed[start : start + 10], wall_clock_ms()))
    stop = trio.Event()
    attacks = [
        (hostile.slow_readers, {"connections": 4}),
        (hostile.unfinished_fragments, {"connections": 10}),
        (hostile.get_flood, {"parallel": 2}),
        (hostile.connection_flood, {"connections": 100}),
        (hostile.subscription_flood, {"connections": 2}),
        (hostile.replay_loop, {"sender": busy.sender, "connections": 2}),
        (hostile.bad_signature_flood, {"connections": 2}),
        (hostile.book_flood, {"connections": 4}),
        (hostile.many_wallets, {"wallets": 16, "addresses": 4}),
    ]
    outcomes: list[str] = []

    async def honest(n: int) -> None:
        me = trader(100 + n)
        async with connect(server) as client:
            while not stop.is_set():
                placed = me.order(1, PRICE * 2 + n, -SIZE, wall_clock_ms())
                answer = await client.request(placed)
                if answer["status"] != "success":
                    outcomes.append(f"place {answer['error_code']}")
                    continue
                answer = await client.request(me.cancel([placed], wall_clock_ms()))
                ok = answer["status"] == "success" and answer["data"]["notes"]
                outcomes.append("ok" if ok else f"cancel {answer.get('error_code')}")
                await trio.sleep(0.2)

    with trio.fail_after(SOAK_S + 30):
        async with trio.open_nursery() as nursery:
            for k, (attack, options) in enumerate(attacks):
                target = hostile.Target(server.port, DOMAIN, f"127.0.{3 + k}.1")
                nursery.start_soon(lambda a=attack, t=target, o=options: a(t, stop, **o))
            for n in range(3):
                nursery.start_soon(honest, n)
            await trio.sleep(SOAK_S)
            stop.set()
    assert outcomes and set(outcomes) == {"ok"}, sorted(set(outcomes))
    assert len(outcomes) >= 3 * SOAK_S  # about five cancels a second each
