"""The operator as a process: ``kill -9`` under load, SIGTERM, and a served chain.

Crash safety (protocol §10, DESIGN §3.3): each trial starts ``cancelnote operator run`` on
the same journal, drives it from several clients (placing crossing orders, cancelling
old and new ones, subscribed to their own fills and notes from seq 0), and kills it at a
random moment. At the end every fill and note a client ever received must be in the
journal byte for byte, and no order may have two different notes, neither in the journal
nor in what clients saw. The other tests start the command against ``cancelnote chain
serve`` (bond, forced cancel answered over JSON-RPC) and stop it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from test_server import PRICE, SIZE, WsClient, connect
from trio_websocket import ConnectionClosed, HandshakeError

from cancelnote import keystore
from cancelnote.api import PlaceOrder
from cancelnote.crypto import Signer, keccak, to_checksum
from cancelnote.dispute.court import DEV_PARAMETERS, CancelState, Court
from cancelnote.dispute.inprocess import dev_account
from cancelnote.dispute.jsonrpc import JsonRpcChain
from cancelnote.messages import Domain
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.testing import Trader

pytestmark = pytest.mark.slow

TRIALS = 20
SEED = 20261123
CLIENTS = 3
WALLET_TRIALS = 2
READY_TIMEOUT_S = 30
LISTENING = re.compile(rb"listening on ws://[\d.]+:(\d+) chain_id=(\d+) court=(0x[0-9a-fA-F]{40})")

#: What a dropped connection looks like to a client of a killed server.
DISCONNECTED = (ConnectionClosed, HandshakeError, trio.BrokenResourceError, OSError)


def _signed_text(signed: dict) -> str:
    return json.dumps(signed, separators=(",", ":"))


async def _start_operator(
    tmp_path: Path, trial: int, chain: tuple[str, ...] = ("--chain", "in-process")
) -> tuple[trio.Process, int, Domain]:
    """``cancelnote operator run`` on the shared journal; returns once it listens."""
    log = open(tmp_path / f"operator-{trial}.log", "wb")  # noqa: SIM115 (the process owns it)
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "cancelnote.cli",
            "operator",
            "run",
            "--db",
            str(tmp_path / "journal.sqlite"),
            "--key",
            str(tmp_path / "operator.json"),
            "--password-file",
            str(tmp_path / "password"),
            *chain,
            "--port",
            "0",
            "--settlement-delay-ms",
            "20",
            "--products",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    line = await _read_line(process, tmp_path / f"operator-{trial}.log")
    match = LISTENING.search(line)
    assert match, line
    return process, int(match[1]), Domain(int(match[2]), match[3].decode())


async def _read_line(process: trio.Process, log: Path | None = None) -> bytes:
    line = b""
    with trio.fail_after(READY_TIMEOUT_S):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            assert chunk, f"the process exited: {log.read_text() if log else ''}"
            line += chunk
    return line


async def _trade(
    port: int, me: Trader, side: int, rng: random.Random, placed: list[PlaceOrder], seen: list
) -> None:
    """Place and cancel until the connection drops; keep every fill and note received."""
    client: WsClient | None = None
    try:
        async with connect(port) as client:
            sender = "0x" + me.sender.hex()
            await client.request({"subscribe": {"sender": sender, "after_seq": "0"}})
            while True:
                now = wall_clock_ms()
                if rng.random() < 0.6 or not placed:
                    request = me.order(
                        1, PRICE + side * rng.randrange(3) * 10**15, side * SIZE, now
                    )
                    answer = await client.request(request)
                    if answer["status"] == "success":
                        placed.append(request)
                else:
                    targets = rng.sample(placed, min(len(placed), rng.randrange(1, 4)))
                    await client.request(me.cancel(targets, now))
    except* DISCONNECTED:
        pass
    finally:
        if client is not None:
            seen.extend(client.texts)
            seen.extend(_signed_text(item) for item in client.stream)


def _journal(path: Path) -> tuple[dict[int, str], dict[str, set[str]]]:
    """``seq -> signed text`` of every fill and note, and ``digest -> note texts``."""
    texts: dict[int, str] = {}
    notes: dict[str, set[str]] = defaultdict(set)
    with sqlite3.connect(path) as conn:
        for seq, kind, body in conn.execute(
            "SELECT seq, kind, body FROM journal WHERE kind IN ('fill', 'note')"
        ):
            obj = json.loads(body)
            text = _signed_text({kind: obj[kind], "signature": obj["signature"]})
            texts[seq] = text
            if kind == "note":
                notes[obj["note"]["digest"]].add(text)
    return texts, notes


async def test_kill_9_under_load_loses_and_contradicts_nothing_clients_received(tmp_path):
    (tmp_path / "password").write_text("crash test\n")
    keystore.create(tmp_path / "operator.json", "crash test", iterations=2**10)
    rng = random.Random(SEED)
    seen: list[str] = []
    placed: list[list[PlaceOrder]] = []
    for trial in range(TRIALS):
        process, port, domain = await _start_operator(tmp_path, trial)
        # A wallet trades for two trials (its orders outlive a crash, and cancels of them
        # get the same notes again), and stays under the rate limit of 600 a minute.
        generation = trial // WALLET_TRIALS
        traders = [
            Trader(Signer(keccak(b"crash %d %d" % (generation, n))), domain) for n in range(CLIENTS)
        ]
        if trial % WALLET_TRIALS == 0:
            placed = [[] for _ in traders]
        try:
            async with trio.open_nursery() as clients:
                for index, me in enumerate(traders):
                    side = 1 if index % 2 else -1
                    clients.start_soon(
                        _trade, port, me, side, random.Random(rng.random()), placed[index], seen
                    )
                await trio.sleep(rng.uniform(0.05, 0.5))
                process.send_signal(signal.SIGKILL)
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == -signal.SIGKILL

    texts, journal_notes = _journal(tmp_path / "journal.sqlite")
    assert seen, "the clients must have received fills and notes"
    assert any(text.startswith('{"fill"') for text in seen)
    assert any(text.startswith('{"note"') for text in seen)
    journaled = set(texts.values())
    missing = [text for text in seen if text not in journaled]
    assert not missing, f"{len(missing)} received messages are not in the journal: {missing[:2]}"
    for text in seen:
        obj = json.loads(text)
        seq = int((obj.get("fill") or obj["note"])["seq"])
        assert texts[seq] == text, "a seq the client holds has other content in the journal"
    assert all(len(notes) == 1 for notes in journal_notes.values())
    seen_notes: dict[str, set[str]] = defaultdict(set)
    for text in seen:
        if text.startswith('{"note"'):
            seen_notes[json.loads(text)["note"]["digest"]].add(text)
    assert all(len(notes) == 1 for notes in seen_notes.values()), "two notes for one order"


async def test_sigterm_answers_what_was_read_closes_with_going_away_and_exits_0(tmp_path):
    (tmp_path / "password").write_text("crash test\n")
    keystore.create(tmp_path / "operator.json", "crash test", iterations=2**10)
    process, port, domain = await _start_operator(tmp_path, 0)
    alice = Trader(Signer(keccak(b"sigterm")), domain)
    try:
        async with connect(port) as client:
            answer = await client.request(alice.order(1, PRICE, SIZE, wall_clock_ms()))
            assert answer["status"] == "success"
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await process.wait() == 0
            with pytest.raises(ConnectionClosed) as closed:
                await client.answer()
            assert closed.value.reason.code == 1001
    finally:
        if process.returncode is None:
            process.kill()
    log = (tmp_path / "operator-0.log").read_text().splitlines()
    events = [json.loads(line)["event"] for line in log]
    assert events[-4:] == ["signal", "shutdown", "connection_closed", "stopped"]


@asynccontextmanager
async def served_court(tmp_path: Path, password: str) -> AsyncIterator[tuple[str, Court]]:
    """``cancelnote chain serve`` with a dev court on it, whose operator is a new keystore
    (``operator.json`` and ``password`` in ``tmp_path``) funded with 1,000 ETH: yields the
    chain's URL and the court; the chain stops after."""
    chain_process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "cancelnote.cli", "chain", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
    )
    try:
        line = b""
        while not line.startswith(b"Listening on "):
            line = await _read_line(chain_process)
        url = line.decode().strip().removeprefix("Listening on ")
        chain = await trio.to_thread.run_sync(JsonRpcChain, url)
        deployer = dev_account(0)
        (tmp_path / "password").write_text(password + "\n")
        operator = keystore.create(tmp_path / "operator.json", password, iterations=2**10)
        court = await trio.to_thread.run_sync(
            partial(Court.deploy, chain, deployer, operator=operator.address, **DEV_PARAMETERS)
        )
        await trio.to_thread.run_sync(
            partial(chain.transact, deployer, operator.address, b"", value=10**21)
        )
        yield url, court
    finally:
        chain_process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await chain_process.wait()
        if chain_process.returncode is None:
            chain_process.kill()


async def test_operator_against_a_served_chain_answers_forced_cancels_even_of_unsent_orders(
    tmp_path,
):
    async with served_court(tmp_path, "served") as (url, court):
        alice = dev_account(1)
        process, port, domain = await _start_operator(
            tmp_path,
            0,
            (
                "--rpc",
                url,
                "--court",
                to_checksum(court.address),
                "--post-bond",
                str(3 * 10**18),
                "--poll-s",
                "0.05",
            ),
        )
        try:
            assert domain == court.domain
            assert await trio.to_thread.run_sync(court.bond) == 3 * 10**18
            trader = Trader(alice, domain)
            placed = trader.order(1, PRICE, SIZE, wall_clock_ms())
            async with connect(port) as client:
                assert (await client.request(placed))["status"] == "success"
            # One order the operator holds, one it never received (signed, never sent):
            # the second is answered from the CancelRequested event, which carries it.
            unsent = trader.order(1, PRICE, 2 * SIZE, wall_clock_ms())
            for order in (placed.order, unsent.order):
                await trio.to_thread.run_sync(court.request_cancel, alice, order)
            for order in (placed.order, unsent.order):
                digest = order.digest(domain)
                with trio.fail_after(20):
                    while (
                        status := await trio.to_thread.run_sync(court.cancel_status, digest)
                    ).state is not (CancelState.ANSWERED):
                        await trio.sleep(0.05)
                assert status.cap == 0
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await process.wait() == 0
