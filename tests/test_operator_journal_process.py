"""The journal's commits in a process of their own (cancelnote/operator/journal_process.py):
the same file as a commit in the operator's thread, the same refusals, and a process that
dies or hangs is a fault that loses nothing acknowledged, in-process and in the real
``operator run``."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
from pathlib import Path

import pytest
import trio
from test_operator_process import (  # noqa: F401 (keyfile is a fixture)
    journal_process_pid,
    keyfile,
    running,
    start,
)
from test_server import DOMAIN, OPERATOR, PRICE, SIZE, connect, trader

from cancelnote.api import request_to_wire
from cancelnote.crypto import Signer, keccak
from cancelnote.messages import CancellationNote, signature_from_wire
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.engine import Engine, split_outputs
from cancelnote.operator.journal import Journal, JournalCorrupt, NoteIssued
from cancelnote.operator.journal_process import JournalProcess, JournalProcessFailed
from cancelnote.operator.limits import ServerConfig
from cancelnote.operator.server import OperatorServer
from cancelnote.operator.testing import Trader

NOW = 1_900_000_000_000


def made_entries(count: int) -> list[list]:
    """Batches of journal entries of a real engine: orders placed, then cancelled."""
    engine = Engine(OPERATOR, DOMAIN, {1}, rate_limit=10**9)
    alice = trader(1)
    batches = []
    for k in range(count):
        placed = alice.order(1, PRICE - k * 10**15, SIZE, NOW)
        made, _ = split_outputs(engine.handle(placed, NOW))
        cancelled, _ = split_outputs(engine.handle(alice.cancel([placed], NOW), NOW))
        batches.append(made + cancelled)
    return batches


def table(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def test_commits_in_the_process_write_the_file_a_thread_commit_writes(tmp_path):
    batches = made_entries(5)
    here = Journal.open(tmp_path / "here.sqlite", DOMAIN, OPERATOR.address)
    there = Journal.open(tmp_path / "there.sqlite", DOMAIN, OPERATOR.address)
    writer = JournalProcess(there)
    await writer.start()
    try:
        for batch in batches:
            here.append_many(batch)
            await writer.append_many(batch)
            assert there.state == here.state  # the operator follows what the process did
    finally:
        await writer.aclose()
    for sql in ("SELECT * FROM journal", "SELECT * FROM meta ORDER BY key"):
        assert table(tmp_path / "there.sqlite", sql) == table(tmp_path / "here.sqlite", sql)
    seal = Path(str(tmp_path / "there.sqlite") + "-seal").read_bytes()
    assert seal == Path(str(tmp_path / "here.sqlite") + "-seal").read_bytes()
    here.close()
    there.close()
    assert [e.seq for e in Journal.open_readonly(tmp_path / "there.sqlite").entries()] == list(
        range(1, sum(map(len, batches)) + 1)
    )


async def test_a_refused_commit_raises_the_thread_s_error_and_changes_nothing(tmp_path):
    first, second = made_entries(2)
    journal = Journal.open(tmp_path / "j.sqlite", DOMAIN, OPERATOR.address)
    writer = JournalProcess(journal)
    await writer.start()
    try:
        await writer.append_many(first)
        before = journal.state
        with pytest.raises(JournalCorrupt, match=r"journal append of seq 1 after \d+"):
            await writer.append_many(first)  # seqs already taken
        assert journal.state == before
        await writer.append_many(second)  # the process goes on: the operator decides
    finally:
        await writer.aclose()
    assert len(table(tmp_path / "j.sqlite", "SELECT seq FROM journal")) == len(first + second)
    journal.close()


async def test_a_journal_another_writer_moved_is_refused_at_start(tmp_path):
    (batch,) = made_entries(1)
    journal = Journal.open(tmp_path / "j.sqlite", DOMAIN, OPERATOR.address)
    other = Journal.open(tmp_path / "j.sqlite", DOMAIN, OPERATOR.address)
    other.append_many(batch)
    other.close()
    writer = JournalProcess(journal)
    with pytest.raises(JournalProcessFailed, match="the journal process found"):
        await writer.start()
    await writer.aclose()
    journal.close()


async def test_a_hung_journal_process_is_a_fault_not_a_wait(tmp_path):
    (batch,) = made_entries(1)
    journal = Journal.open(tmp_path / "j.sqlite", DOMAIN, OPERATOR.address)
    writer = JournalProcess(journal, timeout_s=0.5)
    await writer.start()
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGSTOP)
    try:
        with pytest.raises(JournalProcessFailed, match=r"took over 0\.5 s"):
            await writer.append_many(batch)
    finally:
        os.kill(writer.pid, signal.SIGCONT)
        await writer.aclose()
    journal.close()


def acknowledged_notes(answers: list[dict]) -> set[str]:
    """The order digests of every note a client was answered with."""
    digests = set()
    for answer in answers:
        for signed in (answer.get("data") or {}).get("notes", ()):
            note = CancellationNote.from_wire(signed["note"])
            note.verify(signature_from_wire(signed["signature"]), DOMAIN, OPERATOR.address)
            digests.add(note.order_digest)
    return digests


def journaled_notes(path: Path) -> set[bytes]:
    return {
        entry.note.order_digest
        for entry in Journal.open_readonly(path).entries()
        if isinstance(entry, NoteIssued)
    }


async def test_kill_9_of_the_journal_process_ends_the_server_and_loses_nothing_answered(
    tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="cancelnote.operator")
    path = tmp_path / "j.sqlite"
    journal = Journal.open(path, DOMAIN, OPERATOR.address)
    config = ServerConfig(execute_rate_per_address=10**6, reject_rate_per_address=10**6)
    server = OperatorServer(Engine(OPERATOR, DOMAIN, {1}, rate_limit=10**9), journal, config=config)
    answers: list[dict] = []
    me = trader(3)

    async def traffic() -> None:
        async with connect(server) as client:
            for n in range(10_000):
                placed = me.order(1, PRICE // 2 - n * 10**12, SIZE, wall_clock_ms())
                await client.ws.send_message(json.dumps({**request_to_wire(placed), "id": 2 * n}))
                cancel = me.cancel([placed], wall_clock_ms())
                await client.ws.send_message(
                    json.dumps({**request_to_wire(cancel), "id": 2 * n + 1})
                )
                answers.append(await client.answer(2 * n))
                answers.append(await client.answer(2 * n + 1))
                if n == 20:
                    assert server.journal_process is not None
                    os.kill(server.journal_process.pid, signal.SIGKILL)

    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, "127.0.0.1", 0)
            with trio.fail_after(30):
                await traffic()
    journal.close()
    assert caught.value.subgroup(JournalProcessFailed) is not None
    (fault,) = [r for r in caplog.records if r.getMessage() == "journal_fault"]
    assert "JournalProcessFailed" in fault.fields["error"]
    acknowledged = acknowledged_notes(answers)
    assert len(acknowledged) >= 20
    assert acknowledged <= journaled_notes(path)  # durable before visible


@pytest.mark.slow
async def test_the_real_operator_exits_1_when_its_journal_process_dies_and_restarts_whole(
    tmp_path,
    keyfile,  # noqa: F811
):
    db = tmp_path / "j.sqlite"
    operator = await start(tmp_path, db)
    alice = Trader(Signer(keccak(b"journal process")), operator.domain)
    answers = []
    async with connect(operator.port) as client:
        for n in range(5):
            placed = alice.order(1, PRICE - n * 10**15, SIZE, wall_clock_ms())
            assert (await client.request(placed))["status"] == "success"
            answers.append(await client.request(alice.cancel([placed], wall_clock_ms())))
        os.kill(journal_process_pid(operator.process.pid), signal.SIGKILL)
        with pytest.raises(Exception):  # noqa: B017 (the operator closes the connection)
            placed = alice.order(1, PRICE // 2, SIZE, wall_clock_ms())
            await client.request(placed)
    with trio.fail_after(10):
        await operator.process.wait()
    assert operator.process.returncode == 1
    assert "journal_fault" in operator.events()
    digests = {
        CancellationNote.from_wire(a["data"]["notes"][0]["note"]).order_digest for a in answers
    }
    assert len(digests) == 5
    restarted = await start(tmp_path, db)  # the journal opens: nothing is torn
    try:
        async with connect(restarted.port) as client:
            assert (await client.request({"book": {"product_id": 1}}))["status"] == "success"
    finally:
        assert await restarted.stop() == 0
    assert digests <= journaled_notes(db)


@pytest.mark.slow
async def test_kill_9_of_the_real_operator_leaves_no_journal_process(tmp_path, keyfile):  # noqa: F811
    operator = await start(tmp_path, tmp_path / "j.sqlite")
    child = journal_process_pid(operator.process.pid)
    operator.process.kill()
    await operator.process.wait()
    with trio.fail_after(5):
        while running(child):
            await trio.sleep(0.05)
