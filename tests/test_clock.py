"""Finding 7 of the hardening issue: the clock, and faults that name their cause.

``_now`` was ``max(last, wall)``: after a +2 h jump every order was ``EXPIRED`` and every
cancel ``NONCE_WINDOW`` for as long as the jump lasted (and a 6-day order could be placed
by a client reading the operator's clock), and a clock 60 s behind froze time, signing a
fill due in 0.5 s a minute late. The :class:`Clock` runs on the monotonic clock and only
steers towards the wall.
"""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest
import trio
from test_server import DOMAIN, OPERATOR, PRICE, SIZE, connect, operator_factory, trader

from cancelnote.operator.clock import JUMP_MS, SLEW, Clock
from cancelnote.operator.engine import Engine
from cancelnote.operator.journal import Journal
from cancelnote.operator.limits import ServerConfig
from cancelnote.operator.server import OperatorServer, root_cause

HOUR_NS = 3_600 * 10**9


class FakeTime:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self, wall_ms: int = 1_800_000_000_000) -> None:
        self.wall = wall_ms * 10**6
        self.mono = 0

    def advance(self, ms: float) -> None:
        self.wall += int(ms * 10**6)
        self.mono += int(ms * 10**6)

    def clock(self, **options) -> Clock:
        return Clock(wall_ns=lambda: self.wall, monotonic_ns=lambda: self.mono, **options)


def test_a_forward_jump_is_logged_and_absorbed_gradually_not_followed(caplog):
    fake = FakeTime()
    clock = fake.clock()
    start = clock.now_ms()
    fake.wall += 2 * HOUR_NS
    fake.advance(1_000)
    with caplog.at_level(logging.WARNING, logger="cancelnote.operator.clock"):
        after = clock.now_ms()
    assert start + 1_000 <= after <= start + 1_000 * (1 + SLEW)
    (record,) = [r for r in caplog.records if r.getMessage() == "clock_jump"]
    assert record.fields["offset_ms"] > 7_000_000


def test_a_backward_jump_never_runs_the_clock_backwards_nor_stops_it():
    fake = FakeTime()
    clock = fake.clock()
    readings = [clock.now_ms()]
    fake.wall -= 60 * 10**9
    for _ in range(100):
        fake.advance(10)
        readings.append(clock.now_ms())
    assert readings == sorted(readings)
    # Time keeps running (at no less than 0.9x): a 0.5 s settlement is not held a minute.
    assert readings[-1] - readings[0] >= 1_000 * (1 - SLEW) - 1


def test_the_clock_catches_up_with_a_wall_that_stays_moved():
    fake = FakeTime()
    clock = fake.clock()
    clock.now_ms()
    fake.wall += 5 * 10**9  # 5 s ahead, for good
    for _ in range(600):
        fake.advance(100)
        clock.now_ms()
    assert abs(clock.offset_ms) < 1  # 5 s absorbed in 50 s at 10 %
    assert JUMP_MS < 5_000


def test_the_clock_never_starts_before_the_journal():
    fake = FakeTime()
    floor = fake.wall // 10**6 + 3_600_000
    clock = fake.clock(floor_ms=floor)
    assert clock.now_ms() >= floor
    fake.advance(10)
    assert clock.now_ms() >= floor + 10 * (1 - SLEW)  # running slow to let the wall catch up


@pytest.fixture
async def start_operator(nursery, tmp_path):
    async with operator_factory(nursery, tmp_path) as start:
        yield start


async def test_no_outage_while_the_wall_clock_is_two_hours_ahead(start_operator):
    offset = [0]
    server = await start_operator(settlement_delay_ms=0)
    server.clock = Clock(wall_ns=lambda: time.time_ns() + offset[0])
    alice = trader(1)
    async with connect(server) as client:
        offset[0] = 2 * HOUR_NS  # the machine's clock jumps; the clients' clocks do not
        await trio.sleep(0.1)
        now = time.time_ns() // 10**6
        placed = alice.order(1, PRICE, SIZE, now)
        assert (await client.request(placed))["status"] == "success"
        cancelled = await client.request(alice.cancel([placed], now))
        assert cancelled["status"] == "success" and cancelled["data"]["notes"]
        # An order beyond the maximum lifetime from the real now stays refused, though
        # the jumped clock would have called it six days.
        too_long = alice.order(1, PRICE, SIZE, now, lifetime_s=7 * 86_400 + 3_600)
        answer = await client.request(too_long)
        assert answer["error_code"] == "INVALID_ORDER"


async def test_a_clock_60_s_behind_still_signs_a_fill_on_time(start_operator):
    offset = [0]
    server = await start_operator(settlement_delay_ms=500)
    server.clock = Clock(wall_ns=lambda: time.time_ns() + offset[0])
    alice, bob = trader(1), trader(2)
    async with connect(server) as client:
        await client.request({"subscribe": {"sender": "0x" + alice.sender.hex(), "after_seq": "0"}})
        offset[0] = -60 * 10**9
        await trio.sleep(0.1)
        await client.request(alice.order(1, PRICE, SIZE, time.time_ns() // 10**6))
        await client.request(bob.order(1, PRICE, -SIZE, time.time_ns() // 10**6))
        with trio.fail_after(3):  # due 0.5 s after the match; a frozen clock took 61 s
            fill = await client.stream_item()
        assert "fill" in fill


async def test_a_failed_commit_ends_the_server_and_logs_the_sqlite_error(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cancelnote.operator")
    journal = Journal.open(tmp_path / "j.sqlite", DOMAIN, OPERATOR.address)
    config = ServerConfig(journal_process=0)  # (the journal process's: test_journal_process)
    server = OperatorServer(Engine(OPERATOR, DOMAIN, {1, 2}), journal, config=config)
    alice = trader(1)
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, "127.0.0.1", 0)
            journal._conn.execute("PRAGMA query_only = ON")  # the disk refuses writes now
            async with connect(server) as client:
                await client.request(alice.order(1, PRICE, SIZE, time.time_ns() // 10**6))
    journal.close()
    # The server's own failure is the sqlite error (the client's is its consequence).
    assert caught.value.subgroup(sqlite3.OperationalError) is not None
    (fault,) = [r for r in caplog.records if r.getMessage() == "journal_fault"]
    assert "OperationalError" in fault.fields["error"] and "readonly" in fault.fields["error"]


def test_root_cause_picks_the_first_exception_that_is_not_a_consequence():
    cause = OSError("disk full")
    group = BaseExceptionGroup(
        "tasks", [trio.BrokenResourceError(), ExceptionGroup("inner", [cause, ValueError()])]
    )
    assert root_cause(group) is cause
