"""Cancellation notes per second: the engine with its journal, and end to end over WebSocket.

Two measurements, in one run so that machine noise hits baseline and subject alike:

* **engine**: an honest engine and a journal on disk (``--durability``, FULL by default:
  every commit fsyncs) answer signed ``cancel_orders`` requests for resting orders. Each
  request: strict parse done beforehand, nonce window, request hash, signature
  *recovery*, replay set, rate limit, then per digest a signed note and its journal
  entry. Requests are committed ``--batch`` at a time and, as the server's dispatcher
  does, a batch's commit (in a worker thread) overlaps the engine's work on the next
  batch; the clock stops when the last commit is on disk. Two workloads:

  - ``engine_cancel_notes_per_s_1``: one digest per request. Each note then costs one
    recovery (the client's signature) and one signature, so its ratio to raw signing
    cannot exceed ``ceiling_ratio`` = ``1 / (1 + sign_time / recover_time)`` (~0.4).
  - ``engine_cancel_notes_per_s_10``: ten digests per request, a market maker's
    cancel of a quote ladder: one recovery is shared by ten notes
    (``ceiling_ratio_10`` = ``1 / (1 + sign_time / (10 * recover_time))``).

  ``engine_cancel_notes_per_s`` and ``engine_ratio`` (the issue's target, >= 0.5) are
  the **10-digest** figures: the issue counts notes, and a market maker's cancel names
  many orders. The single-digest ratio is ``engine_ratio_1``; the report's
  ``definitions`` say the same. The baseline ``raw_sign_per_s`` is coincurve's
  ``sign_recoverable`` on 32-byte hashes, nothing else. ``engine_cpu_us_per_note_*``
  is the process CPU time per note (both threads), less sensitive to a busy machine.
* **e2e**: the operator server in its own process (``OperatorServer`` on loopback),
  ``--clients`` WebSocket clients in ``--client-processes`` processes, each cancelling
  its own resting orders one digest per request with at most ``--window`` requests
  outstanding; latency is from send to answer, as a client sees it. The clients speak
  WebSocket with wsproto directly (masked frames, as any client must): the load
  generator shares the machine, so it should burn as little CPU as it can.
  ``e2e_server_cpu_us_per_cancel`` and ``e2e_client_cpu_us_per_cancel`` say where the
  CPU went (Linux ``/proc`` and ``getrusage``; the server figure includes its journal
  thread).
* **heads** (:func:`heads_cost`): the same end-to-end run with journal heads every
  ``--heads-ms`` (100) and every client subscribed to them, against the same run without
  heads, alternated ``--heads-runs`` times in this run: ``heads_cost_ratio`` is the server
  CPU per cancel with heads over without (the leaves and tree nodes of every entry, the
  nodes committed with it, a head signed, committed and pushed every H ms).

    python benchmarks/bench_operator.py --out results/operator.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import trio
from common import raw_recover_rate, raw_sign_rate, write_report
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, TextMessage
from wsproto.events import Request as WsRequest

from cancelnote.api import request_to_wire
from cancelnote.crypto import Signer, keccak
from cancelnote.messages import Domain
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.engine import Engine, split_outputs
from cancelnote.operator.heads import HeadLog
from cancelnote.operator.journal import Journal
from cancelnote.operator.limits import ServerConfig
from cancelnote.operator.server import OperatorServer
from cancelnote.operator.testing import Trader

DOMAIN = Domain(1337, b"\xc0" * 20)
OPERATOR = Signer(keccak(b"bench operator"))
PRICE = 100 * 10**18
SIZE = 10**18
UNLIMITED = 10**12  # rate limit: the benchmark's wallets are not the subject
#: The engine's limits lifted (per-wallet rate, open orders): the wallets are not the subject.
UNCAPPED = {
    "rate_limit": UNLIMITED,
    "max_open_orders": UNLIMITED,
    "max_open_orders_per_product": UNLIMITED,
}
DEFINITIONS = {
    "engine_cancel_notes_per_s": "= engine_cancel_notes_per_s_10: notes/s answering"
    " cancel_orders of 10 digests each (one signature recovery per 10 notes)",
    "engine_ratio": "= engine_ratio_10: engine_cancel_notes_per_s_10 / raw_sign_per_s",
    "engine_cancel_notes_per_s_1": "notes/s answering cancel_orders of 1 digest each",
    "ceiling_ratio": "bound on engine_ratio_1: 1 / (1 + sign time / recover time)",
    "ceiling_ratio_10": "bound on engine_ratio_10: 1 / (1 + sign time / (10 x recover time))",
    "engine_commits": "journal commits of 'engine_requests_per_commit' requests, each"
    " overlapping the engine's next batch (as the server's dispatcher does); timed until"
    " the last commit is durable",
    "engine_cpu_us_per_note_1": "(and _10) process CPU time per note, engine and commit thread",
    "e2e_cancels_per_s": "single-digest cancel_orders answered per second over WebSocket",
    "e2e_server_cpu_us_per_cancel": "server process CPU (all threads) per cancel, go to end",
    "e2e_client_cpu_us_per_cancel": "client processes' CPU per cancel, go to end",
    "heads_cost_ratio": "server CPU per cancel with journal heads at --heads-ms (clients"
    " subscribed to them) over without, the e2e workload, runs alternated in one run",
}


def trader(n: int) -> Trader:
    return Trader(Signer(keccak(b"bench trader" + n.to_bytes(4, "big"))), DOMAIN)


# ---------------------------------------------------------------------------------------
# The engine with its journal.


def engine_rate(
    notes: int, digests: int, batch: int, durability: str, path: Path
) -> dict[str, float]:
    """Notes per second through engine + journal: ``notes // digests`` cancels of
    ``digests`` orders each, committed ``batch`` requests at a time.

    Returns ``{"notes_per_s", "cpu_us_per_note"}``.
    """
    journal = Journal.open(path, DOMAIN, OPERATOR.address, durability)
    engine = Engine(OPERATOR, DOMAIN, {1}, **UNCAPPED)
    traders = [trader(n) for n in range(16)]
    now = wall_clock_ms()
    count = notes // (16 * digests) * 16 * digests  # every trader's cancels are full
    orders = [traders[i % 16].order(1, PRICE - i, SIZE, now) for i in range(count)]
    for start in range(0, count, batch):
        entries, _ = split_outputs(
            out for o in orders[start : start + batch] for out in engine.handle(o, now)
        )
        journal.append_many(entries)
    # Trader t's orders are t, t + 16, ...; each cancel names ``digests`` of them.
    cancels = [
        traders[t].cancel(orders[t + 16 * k : t + 16 * (k + digests) : 16], now)
        for k in range(0, count // 16, digests)
        for t in range(16)
    ]
    with ThreadPoolExecutor(max_workers=1) as committer:
        committed: Future[None] | None = None
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, len(cancels), batch):
            now = wall_clock_ms()
            outputs = [out for c in cancels[start : start + batch] for out in engine.handle(c, now)]
            entries, _ = split_outputs(outputs)
            if committed is not None:
                committed.result()  # one commit at a time, in order, like the dispatcher
            committed = committer.submit(journal.append_many, entries)
        if committed is not None:
            committed.result()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    made = journal.last_seq()
    journal.close()
    if made != count * 2 + len(cancels) or len(cancels) * digests != count:
        raise RuntimeError(f"expected {count} notes, the journal ends at seq {made}")
    return {"notes_per_s": count / elapsed, "cpu_us_per_note": 1e6 * cpu / count}


def profiled(function: Any, *args: Any, path: Path | None = None) -> str:
    """Run ``function(*args)`` under cProfile; the top of the profile, by own CPU time.

    CPU time, not wall time: on a shared machine a wall-clock profile charges every
    preemption to whatever call was running (a socket ``send`` that woke a client).
    """
    profiler = cProfile.Profile(time.process_time)
    profiler.runcall(function, *args)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("tottime")
    stats.print_stats(30)
    if path is not None:
        stats.dump_stats(path)
    return text.getvalue()


# ---------------------------------------------------------------------------------------
# End to end.


def _serve(
    db: str, durability: str, ports: Any, stop: Any, profile: bool, heads_ms: int = 0
) -> None:
    """The server process: an engine, a journal and the WebSocket server, until ``stop``
    (with journal heads every ``heads_ms`` if not 0)."""

    async def main() -> None:
        journal = Journal.open(db, DOMAIN, OPERATOR.address, durability)
        engine = Engine(OPERATOR, DOMAIN, {1}, **UNCAPPED)
        heads = None
        if heads_ms:
            heads = HeadLog.open(journal, OPERATOR, DOMAIN, heads_ms)
            heads.finish()
        server = OperatorServer(
            engine, journal, config=ServerConfig(execute_rate_per_address=UNLIMITED), heads=heads
        )
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


class _Socket:
    """A minimal WebSocket client over wsproto: frames, masking and nothing else.

    trio-websocket runs a reader task and a memory channel per connection; the load
    generator does without, so that the CPU it takes from the server is what any
    client must spend (framing, masking, JSON).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._parts: list[str] = []
        self._ready: list[str] = []

    @classmethod
    async def connect(cls, host: str, port: int) -> _Socket:
        sock = cls(await trio.open_tcp_stream(host, port))
        await sock._stream.send_all(sock._ws.send(WsRequest(host=f"{host}:{port}", target="/")))
        while not any(isinstance(e, AcceptConnection) for e in await sock._events()):
            pass
        return sock

    async def send(self, text: str) -> None:
        await self._stream.send_all(self._ws.send(TextMessage(data=text)))

    async def receive(self) -> list[str]:
        """Every whole text message that has arrived (waiting for at least one)."""
        while not self._ready:
            for event in await self._events():
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        self._ready.append("".join(self._parts))
                        self._parts = []
                elif isinstance(event, CloseConnection):
                    raise RuntimeError(f"the server closed the connection: {event.code}")
        ready, self._ready = self._ready, []
        return ready

    async def _events(self) -> list[Any]:
        data = await self._stream.receive_some(2**16)
        if not data:
            raise RuntimeError("the server closed the connection")
        self._ws.receive_data(data)
        return list(self._ws.events())

    async def aclose(self) -> None:
        await self._stream.send_all(self._ws.send(CloseConnection(code=1000)))
        await self._stream.aclose()


async def _client(
    host: str,
    port: int,
    me: Trader,
    count: int,
    window: int,
    go: Any,
    ready: Any,
    heads: bool = False,
) -> tuple[list[float], float, float]:
    """Place ``count`` orders, wait for ``go``, then cancel them one per request (with
    ``heads``: subscribed to the journal's heads first)."""
    now = wall_clock_ms()
    orders = [me.order(1, PRICE - i, SIZE, now) for i in range(count)]
    cancels = [_numbered(me.cancel([o], now), i) for i, o in enumerate(orders)]
    places = [_numbered(o, i) for i, o in enumerate(orders)]
    ws = await _Socket.connect(host, port)
    if heads:
        await _pipeline(ws, [json.dumps({"subscribe_heads": {}, "id": 0})], 1, [])
    await _pipeline(ws, places, window, [])
    ready.put(1)
    await trio.to_thread.run_sync(go.wait)
    latencies: list[float] = []
    start = time.time()
    await _pipeline(ws, cancels, window, latencies)
    end = time.time()
    await ws.aclose()
    return latencies, start, end


def _numbered(request: Any, request_id: int) -> str:
    return json.dumps({**request_to_wire(request), "id": request_id})


async def _pipeline(ws: _Socket, messages: list[str], window: int, latencies: list[float]) -> None:
    """Send ``messages`` keeping at most ``window`` unanswered; record each latency."""
    slots = trio.Semaphore(window)
    sent_at: dict[int, float] = {}

    async def send() -> None:
        for index, message in enumerate(messages):
            await slots.acquire()
            sent_at[index] = time.perf_counter()
            await ws.send(message)

    async def receive() -> None:
        left = len(messages)
        while left:
            for text in await ws.receive():
                answer = json.loads(text)
                if "status" not in answer:
                    continue  # a pushed head
                if answer.get("status") != "success":
                    raise RuntimeError(f"benchmark request failed: {answer}")
                latencies.append(time.perf_counter() - sent_at.pop(answer["id"]))
                slots.release()
                left -= 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)


def _clients(
    port: int,
    first: int,
    clients: int,
    count: int,
    window: int,
    go: Any,
    ready: Any,
    results: Any,
    heads: bool = False,
) -> None:
    """A client process: ``clients`` concurrent clients in one trio loop.

    Puts ``(outcomes, CPU seconds this process spent from go to the last answer)``.
    """

    async def main() -> tuple[list[Any], float]:
        outcomes: list[Any] = [None] * clients
        cpu_at_go: list[float] = []

        async def one(k: int) -> None:
            me = trader(first + k)
            outcomes[k] = await _client("127.0.0.1", port, me, count, window, go, ready, heads)

        async def clock() -> None:
            await trio.to_thread.run_sync(go.wait)
            cpu_at_go.append(_cpu_seconds())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(clock)
            for k in range(clients):
                nursery.start_soon(one, k)
        return outcomes, _cpu_seconds() - cpu_at_go[0]

    results.put(trio.run(main))


def _cpu_seconds() -> float:
    """User + system CPU of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of another live process (Linux ``/proc``), or ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def e2e(
    clients: int,
    processes: int,
    count: int,
    window: int,
    durability: str,
    directory: Path,
    profile: bool = False,
    heads_ms: int = 0,
) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    ports, ready, results = context.Queue(), context.Queue(), context.Queue()
    stop, go = context.Event(), context.Event()
    db = directory / f"e2e-{time.monotonic_ns()}.sqlite"
    server = context.Process(
        target=_serve, args=(str(db), durability, ports, stop, profile, heads_ms)
    )
    server.start()
    try:
        port = ports.get(timeout=60)
        per_process = [clients // processes + (p < clients % processes) for p in range(processes)]
        workers = []
        first = 0
        for n in per_process:
            worker = context.Process(
                target=_clients,
                args=(port, first, n, count, window, go, ready, results, heads_ms > 0),
            )
            worker.start()
            workers.append(worker)
            first += n
        for _ in range(clients):
            ready.get(timeout=300)
        server_cpu = _process_cpu_seconds(server.pid)
        go.set()
        reports = [results.get(timeout=300) for _ in workers]
        if server_cpu is not None:
            server_cpu = _process_cpu_seconds(server.pid) - server_cpu
        for worker in workers:
            worker.join()
    finally:
        stop.set()
        server.join(timeout=30)
    outcomes = [o for report, _ in reports for o in report]
    client_cpu = sum(cpu for _, cpu in reports)
    latencies = sorted(x for lat, _, _ in outcomes for x in lat)
    start = min(s for _, s, _ in outcomes)
    end = max(e for _, _, e in outcomes)
    figures = {
        "e2e_cancels_per_s": len(latencies) / (end - start),
        "e2e_p50_ms": 1000 * latencies[len(latencies) // 2],
        "e2e_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "e2e_mean_ms": 1000 * statistics.fmean(latencies),
        "e2e_cancels": len(latencies),
        "e2e_client_cpu_us_per_cancel": 1e6 * client_cpu / len(latencies),
    }
    if server_cpu is not None:
        figures["e2e_server_cpu_us_per_cancel"] = 1e6 * server_cpu / len(latencies)
    return figures


def heads_cost(
    clients: int,
    processes: int,
    count: int,
    window: int,
    durability: str,
    directory: Path,
    heads_ms: int,
    runs: int,
) -> dict[str, float]:
    """``heads_cost_ratio``: e2e server CPU per cancel with heads over without, ``runs``
    pairs alternated (without, with, without, ...) so that both see the same machine."""
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(runs):
        for with_heads in (False, True):
            figures = e2e(
                clients,
                processes,
                count,
                window,
                durability,
                directory,
                heads_ms=heads_ms if with_heads else 0,
            )
            cpu[with_heads].append(figures["e2e_server_cpu_us_per_cancel"])
    without, with_ = statistics.fmean(cpu[False]), statistics.fmean(cpu[True])
    return {
        "heads_cost_ratio": with_ / without,
        "heads_server_cpu_us_per_cancel": with_,
        "no_heads_server_cpu_us_per_cancel": without,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--notes", type=int, default=6_400, help="notes per engine workload")
    parser.add_argument("--batch", type=int, default=64, help="engine requests per commit")
    parser.add_argument("--clients", type=int, default=8, help="e2e WebSocket clients")
    parser.add_argument("--client-processes", type=int, default=2, help="processes for them")
    parser.add_argument("--per-client", type=int, default=1_500, help="e2e cancels per client")
    parser.add_argument("--window", type=int, default=4, help="outstanding requests per client")
    parser.add_argument("--durability", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--heads-ms", type=int, default=100, help="H of the heads workload")
    parser.add_argument(
        "--heads-runs", type=int, default=2, help="alternated pairs of the heads workload"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print profiles of the engine and the server"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        raw_sign = raw_sign_rate(args.notes)
        raw_recover = raw_recover_rate(args.notes)
        engine = {
            digests: engine_rate(
                args.notes, digests, args.batch, args.durability, directory / f"e{digests}.sqlite"
            )
            for digests in (1, 10)
        }
        if args.profile:
            for digests in (1, 10):
                path = directory / f"p{digests}.sqlite"
                print(profiled(engine_rate, args.notes, digests, args.batch, args.durability, path))
        raw_sign = statistics.fmean([raw_sign, raw_sign_rate(args.notes)])
        figures: dict[str, float] = {
            "engine_cancel_notes_per_s": engine[10]["notes_per_s"],
            "engine_ratio": engine[10]["notes_per_s"] / raw_sign,
            "raw_sign_per_s": raw_sign,
            "raw_recover_per_s": raw_recover,
        }
        for digests in (1, 10):
            rate = engine[digests]["notes_per_s"]
            figures[f"engine_cancel_notes_per_s_{digests}"] = rate
            figures[f"engine_ratio_{digests}"] = rate / raw_sign
            figures[f"engine_cpu_us_per_note_{digests}"] = engine[digests]["cpu_us_per_note"]
        figures["ceiling_ratio"] = 1 / (1 + raw_sign / raw_recover)
        figures["ceiling_ratio_10"] = 1 / (1 + raw_sign / (10 * raw_recover))
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
        figures.update(
            heads_cost(
                args.clients,
                args.client_processes,
                args.per_client,
                args.window,
                args.durability,
                directory,
                args.heads_ms,
                args.heads_runs,
            )
        )
    report = {
        "benchmark": "operator",
        "figures": {k: round(v, 3) for k, v in figures.items()},
        "definitions": DEFINITIONS,
        "targets": {
            "engine_ratio": 0.5,
            "e2e_cancels_per_s": 5_000,
            "e2e_p99_ms": 20,
            "heads_cost_ratio": 1.15,
        },
        "met": {
            "engine_ratio": figures["engine_ratio"] >= 0.5,
            "e2e_cancels_per_s": figures["e2e_cancels_per_s"] >= 5_000,
            "e2e_p99_ms": figures["e2e_p99_ms"] < 20,
            "heads_cost_ratio": figures["heads_cost_ratio"] <= 1.15,
        },
        "parameters": {
            "journal_durability": args.durability,
            "engine_notes_per_workload": args.notes,
            "engine_requests_per_commit": args.batch,
            "clients": args.clients,
            "client_processes": args.client_processes,
            "per_client": args.per_client,
            "window": args.window,
            "heads_ms": args.heads_ms,
            "heads_runs": args.heads_runs,
        },
    }
    write_report(args.out, report)
    print(json.dumps(report["figures"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
