"""The operator under attack: does an honest client still get its cancels answered, fast?

For each attack of :data:`cancelnote.operator.hostile.ATTACKS` (slow readers, unfinished
fragments, GET flood, connection flood, subscription flood, replay loop, bad-signature
flood, book flood, many wallets), one run of the real ``cancelnote operator run`` process
(in-process chain, durability FULL, default limits) is set up (a 500-level book on
product 1, a sender with a few hundred notes to replay), then:

1. **before**: ``--honest`` honest wallets, each on its own connection from its own
   loopback address (``127.0.1.N``: traders behind their own IPs), cancel one of the
   orders they placed ahead (far from the book), ``--pace`` a second each, for
   ``--before-s``; every cancel's round trip is timed;
2. **during**: the attack starts in its own process, from ``127.0.0.2`` (the many-wallets
   attack from sixteen addresses), so that per-address limits apply to it as to a remote
   attacker; after ``--warmup-s`` the honest cancels are timed again for ``--during-s``;
3. the attack stops; the server's peak RSS during the attack (``VmHWM`` after resetting
   it through ``/proc/PID/clear_refs``) is read, and the operator is ``alive`` if its
   process still runs and answers an honest request, and every honest cancel of the run
   succeeded.

``p99_ratio`` is p99 during / p99 before, from the same run of the same process (the
machine is shared: only such ratios compare). The attacker runs on the same machine, so
its own CPU is part of what the honest client feels. ``journal_seal`` measures the cost
of the seal write per group commit (protocol §10, operations §3) on the same disk:
mean microseconds of the SQLite commit and of the seal write, over ``--seal-commits``
commits of ten notes each.

    python benchmarks/bench_hostile.py --out results/hostile.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from common import write_report
from trio_websocket import wrap_client_stream

from cancelnote import keystore
from cancelnote.api import request_to_wire
from cancelnote.crypto import Signer, keccak
from cancelnote.messages import Domain
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.hostile import ATTACKS, PRICE, SIZE, Target, open_tcp
from cancelnote.operator.testing import Trader

LISTENING = re.compile(rb"listening on ws://[\d.]+:(\d+) chain_id=(\d+) court=(0x[0-9a-fA-F]{40})")
TARGETS = {"all_alive": True, "worst_p99_ratio": 2.0, "max_peak_rss_mib": 512}
#: The networks the setup and the honest wallets connect from (the attackers: 127.0.0.x).
SETUP_NET, HONEST_NET = "127.0.2", "127.0.1"
BOOK_LEVELS = 500
REPLAY_NOTES = 190  # within one address's burst of 400 weight: 190 places + 190 cancels


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


async def _request(ws: Any, wire: dict[str, Any]) -> dict[str, Any]:
    await ws.send_message(_json_dumps(wire))
    while True:
        answer = json.loads(await ws.get_message())
        if "status" in answer:
            return answer


def _trader(domain: Domain, name: bytes) -> Trader:
    return Trader(Signer(keccak(b"bench hostile " + name)), domain)


@asynccontextmanager
async def _websocket(port: int, source: str) -> AsyncIterator[Any]:
    """A trio-websocket client connection from ``source`` (a loopback address)."""
    stream = await open_tcp(port, source)
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/")
        try:
            yield ws
        finally:
            with trio.move_on_after(2):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def _setup(port: int, domain: Domain) -> bytes:
    """A 500-level book on product 1, and a sender with notes to replay; returns it.

    Each wallet connects from its own address, within that address's execute limit."""
    for w in range(BOOK_LEVELS // 100):
        maker = _trader(domain, b"book %d" % w)
        async with _websocket(port, f"{SETUP_NET}.{w + 1}") as ws:
            for k in range(w * 100, (w + 1) * 100):
                placed = maker.order(1, PRICE - (k + 1) * 10**15, SIZE, wall_clock_ms())
                assert (await _request(ws, request_to_wire(placed)))["status"] == "success"
    busy = _trader(domain, b"busy")
    async with _websocket(port, f"{SETUP_NET}.100") as ws:
        placed = []
        for k in range(REPLAY_NOTES):
            order = busy.order(2, PRICE // 4 - k * 10**12, SIZE, wall_clock_ms())
            assert (await _request(ws, request_to_wire(order)))["status"] == "success"
            placed.append(order)
        for start in range(0, REPLAY_NOTES, 10):
            cancel = busy.cancel(placed[start : start + 10], wall_clock_ms())
            assert (await _request(ws, request_to_wire(cancel)))["status"] == "success"
    return busy.sender


async def _prefill(port: int, domain: Domain, wallets: int, count: int) -> list[list[Any]]:
    """``count`` resting orders (far from the book) for each honest wallet, placed ahead
    so that the measured requests are pure cancels (a full book refuses new orders)."""
    orders: list[list[Any]] = []
    for n in range(wallets):
        me = _trader(domain, b"honest %d" % n)
        mine = [me.order(1, PRICE * 2 + k * 10**15, -SIZE, wall_clock_ms()) for k in range(count)]
        async with _websocket(port, _honest_source(n)) as ws:
            for placed in mine:
                assert (await _request(ws, request_to_wire(placed)))["status"] == "success"
        orders.append(mine)
    return orders


def _honest_source(n: int) -> str:
    """Honest wallet ``n``'s address: a trader behind its own IP, as on the internet."""
    return f"{HONEST_NET}.{n + 1}"


async def _honest(
    port: int,
    domain: Domain,
    orders: list[list[Any]],
    pace: float,
    until: float,
    times: list[float],
) -> int:
    """Each wallet cancels its next resting order ``pace`` times a second until ``until``
    (trio time), timing each round trip; returns how many failed."""
    failures = 0

    async def one(n: int) -> None:
        nonlocal failures
        me = _trader(domain, b"honest %d" % n)
        async with _websocket(port, _honest_source(n)) as ws:
            while trio.current_time() < until and orders[n]:
                started = trio.current_time()
                cancel = me.cancel([orders[n].pop()], wall_clock_ms())
                sent = time.perf_counter()
                answer = await _request(ws, request_to_wire(cancel))
                times.append((time.perf_counter() - sent) * 1000)
                if answer["status"] != "success" or not answer["data"]["notes"]:
                    failures += 1
                await trio.sleep_until(started + 1 / pace)

    async with trio.open_nursery() as nursery:
        for n in range(len(orders)):
            nursery.start_soon(one, n)
    return failures


def _attack_process(name: str, port: int, domain: tuple[int, str], sender: bytes, s: float) -> None:
    async def main() -> None:
        stop = trio.Event()
        target = Target(port, Domain(*domain))
        extra = {"sender": sender} if name == "replay_loop" else {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: ATTACKS[name](target, stop, **extra))
            await trio.sleep(s)
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + 5

    trio.run(main)


def _rss_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _start_operator(folder: Path, name: str) -> tuple[trio.Process, int, Domain]:
    log = open(folder / f"{name}.log", "wb")  # noqa: SIM115 (the process owns it)
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "cancelnote.cli",
            "operator",
            "run",
            "--db",
            str(folder / f"{name}.sqlite"),
            "--key",
            str(folder / "operator.json"),
            "--password-file",
            str(folder / "password"),
            "--chain",
            "in-process",
            "--port",
            "0",
            "--no-watch",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    line = b""
    with trio.fail_after(60):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            if not chunk:
                raise RuntimeError((folder / f"{name}.log").read_text())
            line += chunk
    match = LISTENING.search(line)
    assert match, line
    return process, int(match[1]), Domain(int(match[2]), match[3].decode())


async def _measure(name: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    process, port, domain = await _start_operator(folder, name)
    try:
        sender = await _setup(port, domain)
        per_wallet = math.ceil((args.before_s + args.during_s) * args.pace) + 2
        orders = await _prefill(port, domain, args.honest, per_wallet)
        before: list[float] = []
        failures = await _honest(
            port, domain, orders, args.pace, trio.current_time() + args.before_s, before
        )
        rss_before = _rss_kib(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)
        attack = multiprocessing.get_context("spawn").Process(
            target=_attack_process,
            args=(
                name,
                port,
                (domain.chain_id, "0x" + domain.verifying_contract.hex()),
                sender,
                args.warmup_s + args.during_s + 1,
            ),
        )
        attack.start()
        await trio.sleep(args.warmup_s)
        during: list[float] = []
        failures += await _honest(
            port, domain, orders, args.pace, trio.current_time() + args.during_s, during
        )
        await trio.to_thread.run_sync(attack.join, 15)
        if attack.is_alive():
            attack.kill()
        peak = _rss_kib(process.pid, "VmHWM")
        alive = process.returncode is None
        if alive:
            after: list[float] = []
            failures += await _honest(port, domain, orders[:1], 1, trio.current_time() + 0.5, after)
            alive = bool(after) and process.returncode is None
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
        if process.returncode is None:
            process.kill()
    p99_before, p99_during = _percentile(before, 0.99), _percentile(during, 0.99)
    return {
        "name": name,
        "p99_ratio": round(p99_during / p99_before, 3),
        "peak_rss_mib": round(peak / 1024, 1),
        "alive": alive and failures == 0,
        "p50_before_ms": round(statistics.median(before), 2),
        "p99_before_ms": round(p99_before, 2),
        "p50_during_ms": round(statistics.median(during), 2),
        "p99_during_ms": round(p99_during, 2),
        "cancels_before": len(before),
        "cancels_during": len(during),
        "honest_failures": failures,
        "rss_before_mib": round(rss_before / 1024, 1),
    }


def _seal_cost(folder: Path, commits: int) -> dict[str, Any]:
    """Mean µs of the SQLite commit and of the seal write per group commit (FULL)."""
    from cancelnote.operator.engine import Engine, split_outputs
    from cancelnote.operator.journal import Journal

    domain = Domain(31337, "0x" + "c0" * 20)
    operator = Signer(keccak(b"seal operator"))
    journal = Journal.open(folder / "seal.sqlite", domain, operator.address)
    engine = Engine(operator, domain, {1}, rate_limit=10**9, max_open_orders=10**9)
    me = _trader(domain, b"seal")
    now = wall_clock_ms()
    for _ in range(commits):
        placed = [me.order(1, PRICE, SIZE, now) for _ in range(10)]
        entries: list[Any] = []
        for request in [*placed, me.cancel(placed, now)]:
            entries += split_outputs(engine.handle(request, now))[0]
        journal.append_many(entries)
    timings = journal.timings
    journal.close()
    commit_us = timings["commit_ns"] / timings["commits"] / 1000
    seal_us = timings["seal_ns"] / timings["commits"] / 1000
    return {
        "commits": timings["commits"],
        "entries_per_commit": 21,
        "commit_us_mean": round(commit_us, 1),
        "seal_us_mean": round(seal_us, 1),
        "seal_share": round(seal_us / (commit_us + seal_us), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated names")
    parser.add_argument("--honest", type=int, default=12, help="honest wallets")
    parser.add_argument("--pace", type=float, default=4.0, help="cancels a second per wallet")
    parser.add_argument("--before-s", type=float, default=6.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--during-s", type=float, default=8.0)
    parser.add_argument("--seal-commits", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "password").write_text("bench\n")
        keystore.create(folder / "operator.json", "bench", iterations=2**10)
        attacks = []
        for name in args.attacks.split(","):
            result = trio.run(_measure, name, folder, args)
            print(result, file=sys.stderr, flush=True)
            attacks.append(result)
        seal = _seal_cost(folder, args.seal_commits)
    report = {
        "attacks": attacks,
        "worst_p99_ratio": max(a["p99_ratio"] for a in attacks),
        "max_peak_rss_mib": max(a["peak_rss_mib"] for a in attacks),
        "all_alive": all(a["alive"] for a in attacks),
        "journal_seal": seal,
        "targets": TARGETS,
        "parameters": {**vars(args), "out": str(args.out), "cpus": os.cpu_count()},
    }
    write_report(args.out, report)
    print(_json_dumps({k: report[k] for k in ("worst_p99_ratio", "max_peak_rss_mib", "all_alive")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
