"""Cancellation notes per second: the engine with its journal, and end to end over WebSocket.

Two measurements, in one run so that machine noise hits baseline and subject alike:

* **engine**: an honest engine and a journal on disk answer signed single-order
  ``cancel_orders`` requests for resting orders (each: strict parse done beforehand,
  nonce window, request hash, signature recovery, replay set, rate limit, note
  signing, journal entry), committed in groups as the server commits them. The
  baseline is raw coincurve signing of 32-byte hashes (``raw_sign_per_s``);
  ``engine_ratio`` is their quotient. Each cancel costs one signature *recovery* (the
  client's) as well as one signature, so the ratio cannot exceed
  ``1 / (1 + sign_time / recover_time)``; ``ceiling_ratio`` reports that bound.
* **e2e**: the operator server in its own process (``OperatorServer`` on loopback),
  ``--clients`` WebSocket clients in ``--client-processes`` processes, each cancelling
  its own resting orders one digest per request with at most ``--window`` requests
  outstanding; latency is from send to answer, as a client sees it.

    python benchmarks/bench_operator.py --out results/operator.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import coincurve
import trio
from trio_websocket import open_websocket_url

from cancelnote.crypto import Signer, keccak
from cancelnote.messages import Domain
from cancelnote.operator.api import request_to_wire
from cancelnote.operator.engine import Engine, split_outputs
from cancelnote.operator.journal import Journal
from cancelnote.operator.server import OperatorServer, wall_clock_ms
from cancelnote.operator.testing import Trader

DOMAIN = Domain(1337, b"\xc0" * 20)
OPERATOR = Signer(keccak(b"bench operator"))
PRICE = 100 * 10**18
SIZE = 10**18
UNLIMITED = 10**12  # rate limit: the benchmark's wallets are not the subject


def trader(n: int) -> Trader:
    return Trader(Signer(keccak(b"bench trader" + n.to_bytes(4, "big"))), DOMAIN)


def raw_sign_rate(count: int) -> float:
    key = coincurve.PrivateKey(keccak(b"raw"))
    hashes = [keccak(i.to_bytes(8, "big")) for i in range(count)]
    start = time.perf_counter()
    for h in hashes:
        key.sign_recoverable(h, hasher=None)
    return count / (time.perf_counter() - start)


def raw_recover_rate(count: int) -> float:
    key = coincurve.PrivateKey(keccak(b"raw"))
    pairs = [
        (h, key.sign_recoverable(h, hasher=None)) for h in (keccak(b"%d" % i) for i in range(count))
    ]
    start = time.perf_counter()
    for h, signature in pairs:
        coincurve.PublicKey.from_signature_and_message(signature, h, hasher=None)
    return count / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------
# The engine with its journal.


def engine_rate(count: int, batch: int, durability: str, path: Path) -> float:
    """Cancels (one note each) per second through engine + journal, committed per ``batch``."""
    journal = Journal.open(path, DOMAIN, OPERATOR.address, durability)
    engine = Engine(OPERATOR, DOMAIN, {1}, rate_limit=UNLIMITED)
    traders = [trader(n) for n in range(16)]
    now = wall_clock_ms()
    orders = [traders[i % 16].order(1, PRICE - i, SIZE, now) for i in range(count)]
    for start in range(0, count, batch):
        entries, _ = split_outputs(
            out for o in orders[start : start + batch] for out in engine.handle(o, now)
        )
        journal.append_many(entries)
    cancels = [traders[i % 16].cancel([o], now) for i, o in enumerate(orders)]
    started = time.perf_counter()
    for start in range(0, count, batch):
        now = wall_clock_ms()
        outputs = [out for c in cancels[start : start + batch] for out in engine.handle(c, now)]
        entries, _ = split_outputs(outputs)
        journal.append_many(entries)
    elapsed = time.perf_counter() - started
    journal.close()
    return count / elapsed


def profiled(function: Any, *args: Any, path: Path | None = None) -> str:
    """Run ``function(*args)`` under cProfile; the top of the profile, by own time."""
    profiler = cProfile.Profile()
    profiler.runcall(function, *args)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("tottime")
    stats.print_stats(20)
    if path is not None:
        stats.dump_stats(path)
    return text.getvalue()


# ---------------------------------------------------------------------------------------
# End to end.


def _serve(db: str, durability: str, ports: Any, stop: Any, profile: bool) -> None:
    """The server process: an engine, a journal and the WebSocket server, until ``stop``."""

    async def main() -> None:
        journal = Journal.open(db, DOMAIN, OPERATOR.address, durability)
        engine = Engine(OPERATOR, DOMAIN, {1}, rate_limit=UNLIMITED)
        server = OperatorServer(engine, journal)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            ports.put(port)
            await trio.to_thread.run_sync(stop.wait)
            await server.shutdown()
        journal.close()

    if profile:
        print("server profile:\n" + profiled(trio.run, main))
    else:
        trio.run(main)


async def _client(
    url: str, me: Trader, count: int, window: int, go: Any, ready: Any
) -> tuple[list[float], float, float]:
    """Place ``count`` orders, wait for ``go``, then cancel them one per request."""
    now = wall_clock_ms()
    orders = [me.order(1, PRICE - i, SIZE, now) for i in range(count)]
    cancels = [
        json.dumps({**request_to_wire(me.cancel([o], now)), "id": i}) for i, o in enumerate(orders)
    ]
    places = [json.dumps({**request_to_wire(o), "id": i}) for i, o in enumerate(orders)]
    async with open_websocket_url(url, max_message_size=2**24) as ws:
        await _pipeline(ws, places, window, [])
        ready.put(1)
        await trio.to_thread.run_sync(go.wait)
        latencies: list[float] = []
        start = time.time()
        await _pipeline(ws, cancels, window, latencies)
        end = time.time()
    return latencies, start, end


def _numbered(request: Any, request_id: int) -> str:
    return json.dumps({**request_to_wire(request), "id": request_id})


async def _pipeline(ws: Any, messages: list[str], window: int, latencies: list[float]) -> None:
    """Send ``messages`` keeping at most ``window`` unanswered; record each latency."""
    slots = trio.Semaphore(window)
    sent_at: dict[int, float] = {}

    async def send() -> None:
        for index, message in enumerate(messages):
            await slots.acquire()
            sent_at[index] = time.perf_counter()
            await ws.send_message(message)

    async def receive() -> None:
        for _ in messages:
            answer = json.loads(await ws.get_message())
            if answer.get("status") != "success":
                raise RuntimeError(f"benchmark request failed: {answer}")
            latencies.append(time.perf_counter() - sent_at.pop(answer["id"]))
            slots.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)


def _clients(
    url: str, first: int, clients: int, count: int, window: int, go: Any, ready: Any, results: Any
) -> None:
    """A client process: ``clients`` concurrent clients in one trio loop."""

    async def main() -> list[Any]:
        outcomes: list[Any] = [None] * clients

        async def one(k: int) -> None:
            outcomes[k] = await _client(url, trader(first + k), count, window, go, ready)

        async with trio.open_nursery() as nursery:
            for k in range(clients):
                nursery.start_soon(one, k)
        return outcomes

    results.put(trio.run(main))


def e2e(
    clients: int,
    processes: int,
    count: int,
    window: int,
    durability: str,
    directory: Path,
    profile: bool = False,
) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    ports, ready, results = context.Queue(), context.Queue(), context.Queue()
    stop, go = context.Event(), context.Event()
    server = context.Process(
        target=_serve, args=(str(directory / "e2e.sqlite"), durability, ports, stop, profile)
    )
    server.start()
    try:
        url = f"ws://127.0.0.1:{ports.get(timeout=60)}/"
        per_process = [clients // processes + (p < clients % processes) for p in range(processes)]
        workers = []
        first = 0
        for n in per_process:
            worker = context.Process(
                target=_clients, args=(url, first, n, count, window, go, ready, results)
            )
            worker.start()
            workers.append(worker)
            first += n
        for _ in range(clients):
            ready.get(timeout=300)
        go.set()
        outcomes = [o for _ in workers for o in results.get(timeout=300)]
        for worker in workers:
            worker.join()
    finally:
        stop.set()
        server.join(timeout=30)
    latencies = sorted(x for lat, _, _ in outcomes for x in lat)
    start = min(s for _, s, _ in outcomes)
    end = max(e for _, _, e in outcomes)
    return {
        "e2e_cancels_per_s": len(latencies) / (end - start),
        "e2e_p50_ms": 1000 * latencies[len(latencies) // 2],
        "e2e_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "e2e_mean_ms": 1000 * statistics.fmean(latencies),
        "e2e_cancels": len(latencies),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--count", type=int, default=5_000, help="engine cancels")
    parser.add_argument("--batch", type=int, default=64, help="engine cancels per commit")
    parser.add_argument("--clients", type=int, default=8, help="e2e WebSocket clients")
    parser.add_argument("--client-processes", type=int, default=2, help="processes for them")
    parser.add_argument("--per-client", type=int, default=1_500, help="e2e cancels per client")
    parser.add_argument("--window", type=int, default=4, help="outstanding requests per client")
    parser.add_argument("--durability", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument(
        "--profile", action="store_true", help="print profiles of the engine and the server"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        raw_sign = raw_sign_rate(args.count)
        raw_recover = raw_recover_rate(args.count)
        engine = engine_rate(args.count, args.batch, args.durability, directory / "e.sqlite")
        if args.profile:
            print(
                profiled(
                    engine_rate, args.count, args.batch, args.durability, directory / "p.sqlite"
                )
            )
        raw_sign = statistics.fmean([raw_sign, raw_sign_rate(args.count)])
        figures: dict[str, float] = {
            "engine_cancel_notes_per_s": engine,
            "raw_sign_per_s": raw_sign,
            "raw_recover_per_s": raw_recover,
            "engine_ratio": engine / raw_sign,
            "ceiling_ratio": 1 / (1 + raw_sign / raw_recover),
        }
        figures.update(
            e2e(
                args.clients,
                args.client_processes,
                args.per_client,
                args.window,
                args.durability,
                directory,
                args.profile,
            )
        )
    report = {
        "benchmark": "operator",
        "figures": {k: round(v, 3) for k, v in figures.items()},
        "targets": {"engine_ratio": 0.5, "e2e_cancels_per_s": 5_000, "e2e_p99_ms": 20},
        "met": {
            "engine_ratio": figures["engine_ratio"] >= 0.5,
            "e2e_cancels_per_s": figures["e2e_cancels_per_s"] >= 5_000,
            "e2e_p99_ms": figures["e2e_p99_ms"] < 20,
        },
        "parameters": {
            "journal_durability": args.durability,
            "engine_cancels": args.count,
            "engine_batch": args.batch,
            "clients": args.clients,
            "client_processes": args.client_processes,
            "per_client": args.per_client,
            "window": args.window,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["figures"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
