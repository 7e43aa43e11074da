"""Findings 1, 2, 5 and 6 of the hardening issue, against the real ``operator run`` process.

The real process is what matters here: it imports py-evm, which raises the recursion limit
to 100,000, so a C JSON decoder there overflows the thread's stack (a SIGSEGV, no log
line) on nesting that an in-process test at the default limit sees as a RecursionError.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from test_server import PRICE, SIZE, connect

from cancelnote import keystore
from cancelnote.crypto import Signer, keccak
from cancelnote.messages import Domain
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.hostile import RawClient, open_tcp, upgrade_then_close
from cancelnote.operator.testing import Trader

pytestmark = pytest.mark.slow

PASSWORD = "process test"


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    keystore.create(tmp_path / "operator.json", PASSWORD, iterations=2**10)
    return tmp_path / "operator.json"


def command(tmp_path: Path, db: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cancelnote.cli",
        "operator",
        "run",
        "--db",
        str(db),
        "--key",
        str(tmp_path / "operator.json"),
        "--password-file",
        str(tmp_path / "password"),
        "--chain",
        "in-process",
        "--port",
        "0",
        "--no-watch",
        "--products",
        "1",
        *extra,
    ]


class Operator:
    """A running ``operator run`` process, its port and its domain."""

    def __init__(self, process: trio.Process, port: int, domain: Domain, log: Path) -> None:
        self.process, self.port, self.domain, self.log = process, port, domain, log

    def events(self) -> list[str]:
        return [json.loads(line)["event"] for line in self.log.read_text().splitlines()]

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await self.process.wait()
        return self.process.returncode


async def start(tmp_path: Path, db: Path, *extra: str) -> Operator:
    log = tmp_path / f"operator-{time.monotonic_ns()}.log"
    with open(log, "wb") as stderr:
        process = await trio.lowlevel.open_process(
            command(tmp_path, db, *extra), stdout=subprocess.PIPE, stderr=stderr
        )
    line = b""
    with trio.fail_after(60):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            assert chunk, f"the operator exited: {log.read_text()}"
            line += chunk
    words = dict(word.split("=", 1) for word in line.decode().split() if "=" in word)
    port = int(line.decode().split("ws://127.0.0.1:")[1].split()[0])
    return Operator(process, port, Domain(int(words["chain_id"]), words["court"]), log)


async def refused(tmp_path: Path, db: Path) -> tuple[int, str]:
    """Run ``operator run`` on a journal expected to be refused: (exit status, stderr)."""
    result = await trio.run_process(
        command(tmp_path, db), capture_stdout=True, capture_stderr=True, check=False
    )
    return result.returncode, result.stderr.decode()


async def is_serving(operator: Operator) -> bool:
    async with connect(operator.port) as client:
        answer = await client.request({"book": {"product_id": 1}})
    return answer["status"] == "success" and operator.process.returncode is None


# ---------------------------------------------------------------------------------------
# Finding 1: one deeply nested message killed the process (SIGSEGV).


@pytest.mark.parametrize(
    "message",
    [
        "[" * 65_500 + "]" * 65_500,
        '{"order_status": {"digest": ' + "[" * 58_400 + "]" * 58_400 + "}}",
        '{"book": {"product_id": 1, "pad": ' + "{" * 40_000 + "}" * 40_000 + "}}",
    ],
    ids=["bare_arrays", "nested_digest", "nested_unknown_field"],
)
async def test_a_deeply_nested_message_is_an_error_answer_not_a_crash(tmp_path, keyfile, message):
    operator = await start(tmp_path, tmp_path / "j.sqlite")
    try:
        async with connect(operator.port) as client:
            await client.ws.send_message(message)
            answer = await client.answer()
            assert (answer["status"], answer["error_code"]) == ("failure", "INVALID_MESSAGE")
            assert (await client.request({"book": {"product_id": 1}}))["status"] == "success"
        assert operator.process.returncode is None
    finally:
        assert await operator.stop() == 0


# ---------------------------------------------------------------------------------------
# Finding 2: upgrade-then-close (FIN or RST) killed the process within a second.


async def test_upgrade_then_close_in_a_loop_leaves_the_operator_serving(tmp_path, keyfile):
    operator = await start(tmp_path, tmp_path / "j.sqlite")
    try:
        async with trio.open_nursery() as nursery:
            for n, reset in enumerate([False, True] * 4):
                nursery.start_soon(
                    upgrade_then_close, operator.port, f"127.0.0.{2 + n}", 100, reset
                )
        assert await is_serving(operator)
    finally:
        assert await operator.stop() == 0
    assert "fault" not in operator.events()


# ---------------------------------------------------------------------------------------
# Finding 5: SIGTERM took 60 s with one idle or half-sent connection.


async def test_sigterm_exits_within_2_s_whatever_the_connections_do(tmp_path, keyfile):
    operator = await start(tmp_path, tmp_path / "j.sqlite")
    idle = await open_tcp(operator.port, "127.0.0.2")  # never sends a byte
    half_upgrade = await open_tcp(operator.port, "127.0.0.3")
    await half_upgrade.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs")
    half_message = await RawClient.connect(operator.port, "127.0.0.4", receive_buffer=4096)
    await half_message.send('{"book": {"product_id": ', finished=False)
    silent = await RawClient.connect(operator.port, "127.0.0.5", receive_buffer=4096)
    for _ in range(300):  # answers it never reads
        await silent.send('{"book": {"product_id": 1}}')
    try:
        await trio.sleep(0.2)
        started = time.monotonic()
        operator.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            status = await operator.process.wait()
        elapsed = time.monotonic() - started
    finally:
        for stream in (idle, half_upgrade, half_message.stream, silent.stream):
            await trio.aclose_forcefully(stream)
    assert status == 0
    assert elapsed < 2.0, f"SIGTERM took {elapsed:.2f} s"
    assert operator.events()[-1] == "stopped"


# ---------------------------------------------------------------------------------------
# The verifier workers live and die with the operator (issue #14).


def worker_pids(operator: Operator) -> list[int]:
    """The verifier workers' pids, as the operator logged them at start."""
    for line in operator.log.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "verify_workers_started":
            return record["pids"]
    raise AssertionError("no verify_workers_started line")


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has finished: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def journal_process_pid(operator_pid: int) -> int:
    """The real operator's journal process: its child running journal_process."""
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and parent_of(int(entry.name)) == operator_pid
                and b"cancelnote.operator.journal_process" in (entry / "cmdline").read_bytes()
            ):
                return int(entry.name)
        except FileNotFoundError:  # a process that ended meanwhile
            continue
    raise AssertionError("no journal process")


async def crash(operator: Operator) -> None:
    """What a machine crash does: SIGKILL to the operator and its journal process at once
    (alone, the journal process would finish its commit and close the file cleanly)."""
    os.kill(journal_process_pid(operator.process.pid), signal.SIGKILL)
    operator.process.send_signal(signal.SIGKILL)
    await operator.process.wait()


async def test_the_verifier_workers_start_and_stop_with_the_operator(tmp_path, keyfile):
    operator = await start(tmp_path, tmp_path / "j.sqlite")
    pids = worker_pids(operator)
    assert pids and all(running(pid) and parent_of(pid) == operator.process.pid for pid in pids)
    assert await is_serving(operator)
    started = time.monotonic()
    assert await operator.stop() == 0
    assert time.monotonic() - started < 2.0
    assert not any(running(pid) for pid in pids)


async def test_kill_9_of_the_operator_leaves_no_worker_running(tmp_path, keyfile):
    operator = await start(tmp_path, tmp_path / "j.sqlite")
    pids = worker_pids(operator)
    assert await is_serving(operator)
    operator.process.kill()
    await operator.process.wait()
    with trio.fail_after(2):
        while any(running(pid) for pid in pids):
            await trio.sleep(0.02)


# ---------------------------------------------------------------------------------------
# Finding 6: damaged, rolled-back or missing journals started silently.


async def _trade(operator: Operator, orders: int) -> None:
    """Orders, a few matches (fills) and a cancel of each rest (notes)."""
    alice = Trader(Signer(keccak(b"alice process")), operator.domain)
    bob = Trader(Signer(keccak(b"bob process")), operator.domain)
    async with connect(operator.port) as client:
        placed = []
        for k in range(orders):
            request = alice.order(1, PRICE - k * 10**15, SIZE, wall_clock_ms())
            assert (await client.request(request))["status"] == "success"
            placed.append(request)
        assert (await client.request(bob.order(1, PRICE, -SIZE, wall_clock_ms())))["status"] == (
            "success"
        )
        for start_at in range(1, orders, 10):
            cancel = alice.cancel(placed[start_at : start_at + 10], wall_clock_ms())
            assert (await client.request(cancel))["status"] == "success"


@pytest.fixture
async def good_journal(tmp_path, keyfile) -> Path:
    """A journal with orders, fills and notes, from a cleanly stopped operator."""
    db = tmp_path / "good" / "j.sqlite"
    db.parent.mkdir()
    operator = await start(tmp_path, db)
    await _trade(operator, 40)
    assert await operator.stop() == 0
    return db


def _copy(db: Path, to: Path) -> Path:
    to.mkdir()
    for path in db.parent.iterdir():
        shutil.copy(path, to / path.name)
    return to / db.name


def _edit_a_note(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        seq, body = conn.execute("SELECT seq, body FROM journal WHERE kind = 'note'").fetchone()
        edited = json.loads(body)
        edited["note"]["filledAmount"] = str(int(edited["note"]["filledAmount"]) + 1)
        conn.execute("UPDATE journal SET body = ? WHERE seq = ?", (json.dumps(edited), seq))


def _delete_rows(db: Path, where: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"DELETE FROM journal WHERE {where}")


def _truncate(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(db, "r+b") as file:
        file.truncate(db.stat().st_size // 2)


def _randomize(db: Path) -> None:
    db.write_bytes(random.Random(6).randbytes(db.stat().st_size))


DAMAGE = {
    "empty_file": (lambda db: db.write_bytes(b""), "is empty"),
    "missing_file": (lambda db: db.unlink(), "is missing but its seal says"),
    "edited_note": (_edit_a_note, "does not match its chain hash"),
    "deleted_row": (lambda db: _delete_rows(db, "seq = 5"), "rows are missing"),
    "last_20_deleted": (
        lambda db: _delete_rows(db, "seq > (SELECT max(seq) - 20 FROM journal)"),
        "entries",
    ),
    "truncated_file": (_truncate, "journal"),
    "random_file": (_randomize, "journal"),
    "seal_deleted": (lambda db: db.with_name(db.name + "-seal").unlink(), "seal"),
}


async def test_each_damaged_journal_is_refused_with_one_line_and_exit_2(tmp_path, good_journal):
    for name, (damage, words) in DAMAGE.items():
        db = _copy(good_journal, tmp_path / name)
        damage(db)
        status, stderr = await refused(tmp_path, db)
        lines = stderr.strip().splitlines()
        assert (name, status) == (name, 2), stderr
        assert len(lines) == 1 and words in lines[0], (name, stderr)
        assert "Traceback" not in stderr


async def test_kill_9_with_the_wal_lost_is_refused_not_re_signed(tmp_path, keyfile):
    db = tmp_path / "j.sqlite"
    operator = await start(tmp_path, db)
    await _trade(operator, 60)
    await crash(operator)
    os.unlink(db.with_name(db.name + "-wal"))
    status, stderr = await refused(tmp_path, db)
    assert status == 2, stderr
    assert len(stderr.strip().splitlines()) == 1
    assert "entries were lost" in stderr or "is empty" in stderr or "not a" in stderr


async def test_journal_verify_and_export(tmp_path, good_journal):
    verify = [sys.executable, "-m", "cancelnote.cli", "operator", "journal", "verify"]
    ok = await trio.run_process(
        [*verify, "--db", str(good_journal)], capture_stdout=True, check=False
    )
    assert ok.returncode == 0 and ok.stdout.startswith(b"ok: "), ok
    count = int(ok.stdout.split()[1])
    export = await trio.run_process(
        [
            sys.executable,
            "-m",
            "cancelnote.cli",
            "operator",
            "journal",
            "export",
            "--db",
            str(good_journal),
        ],
        capture_stdout=True,
        check=False,
    )
    rows = [json.loads(line) for line in export.stdout.splitlines()]
    assert export.returncode == 0 and len(rows) == count
    assert [row["seq"] for row in rows] == list(range(1, count + 1))
    assert {row["kind"] for row in rows} >= {"order", "match", "fill", "cancel", "note"}
    damaged = _copy(good_journal, tmp_path / "edited")
    _edit_a_note(damaged)
    bad = await trio.run_process([*verify, "--db", str(damaged)], capture_stderr=True, check=False)
    assert bad.returncode == 2 and b"does not match its chain hash" in bad.stderr
