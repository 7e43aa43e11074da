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
* **e2e**: the operator server in its own process (``OperatorServer`` on loopback, with
  ``--verify-workers`` verifier processes), ``--clients`` WebSocket clients in
  ``--client-processes`` processes, each cancelling its own resting orders one digest
  per request with at most ``--window`` requests outstanding; latency is from send to
  answer, as a client sees it. The load generator shares the machine, so it burns as
  little CPU as a client can: every request is signed, framed and masked before the
  clock starts, answers are parsed with the operator's own frame parser (client side)
  and read for their ``id`` and ``status`` only, and every note's signature is checked
  after the clock stops. ``server_cpu_us_per_cancel`` is the operator's own CPU (its
  process, all threads, and its children, the verifier workers and the journal process,
  from ``/proc/PID/stat``) per cancel;
  ``crypto_floor_us_per_cancel`` is one recovery and one signature on coincurve alone
  and ``server_cpu_ratio`` their quotient; ``e2e_*_cores`` say how the machine's cores
  were shared. ``--server-path`` runs it again with every cancel answered by a canned
  reply (no entry, no note), to measure the server around the engine.
* **heads** (:func:`paired_cost`): the same end-to-end run with journal heads every
  ``--heads-ms`` (100) and every client subscribed to them, against the same run without
  heads, alternated ``--heads-runs`` times in this run: ``heads_cost_ratio`` is
  ``server_cpu_us_per_cancel`` with heads over without (the leaves and tree nodes of every
  entry, committed with it, and a head signed, committed and pushed every H ms).
* **metrics** (``--metrics-runs N``, none by default): the same alternation with the
  server's Prometheus metrics on (:class:`~cancelnote.operator.metrics.Metrics`, its
  endpoint served and scraped every second) and off: ``metrics_cost_ratio``.

    python benchmarks/bench_operator.py --out results/operator.json [--server-path]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import math
import multiprocessing
import os
import pstats
import resource
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import trio
from common import raw_recover_rate, raw_sign_rate, write_report
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import Request as WsRequest

from cancelnote.api import CancelOrders, Reply, request_to_wire
from cancelnote.crypto import Signer, keccak
from cancelnote.messages import CancellationNote, Domain, signature_from_wire
from cancelnote.operator import frames
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.engine import Engine, split_outputs
from cancelnote.operator.frames import FrameParser
from cancelnote.operator.heads import HEADS_MS, HeadLog
from cancelnote.operator.journal import Journal
from cancelnote.operator.limits import ServerConfig
from cancelnote.operator.metrics import Metrics
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
    "server_cpu_us_per_cancel": "the operator's CPU per cancel, go to end: its process (all"
    " threads) and its child processes: the verifier workers and the journal process"
    " (/proc/PID/stat)",
    "e2e_server_cpu_us_per_cancel": "= server_cpu_us_per_cancel",
    "e2e_server_main_cpu_us_per_cancel": "(and _workers_: the child processes) the two parts",
    "crypto_floor_us_per_cancel": "one signature recovery + one signature, coincurve alone, CPU"
    " time, measured just before and just after the e2e run (their mean)",
    "server_cpu_ratio": "server_cpu_us_per_cancel / crypto_floor_us_per_cancel",
    "e2e_client_cpu_us_per_cancel": "client processes' CPU per cancel, go to end",
    "e2e_server_main_cores": "(and _workers_, client_, other_) CPU seconds per second of the"
    " operator process, its workers, the clients and everything else on the machine"
    " (/proc/stat) during the e2e run; e2e_machine_busy_cores is the machine's total",
    "server_path_main_cpu_us_per_request": "(--server-path) the operator process's CPU per"
    " request with each cancel answered by a canned reply: the server around the engine",
    "heads_cost_ratio": "server_cpu_us_per_cancel with journal heads at --heads-ms (clients"
    " subscribed to them) over without, the e2e workload, runs alternated in one run",
    "heads_server_cpu_us_per_cancel": "(and no_heads_) the two sides of heads_cost_ratio,"
    " each the mean of its --heads-runs runs",
    "metrics_cost_ratio": "(--metrics-runs) server_cpu_us_per_cancel with Prometheus metrics"
    " on (endpoint served, scraped every second) over off, the e2e workload, alternated",
    "metrics_server_cpu_us_per_cancel": "(and no_metrics_) the two sides of metrics_cost_ratio",
    "thread_commit_cost_ratio": "(--thread-commit-runs) server_cpu_us_per_cancel with the"
    " journal's commits in a thread of the operator (the design before the journal process)"
    " over in the journal process, the e2e workload, alternated",
    "thread_commit_e2e_cancels_per_s": "(and no_thread_commit_, and the same for heads and"
    " metrics) the mean e2e_cancels_per_s of each side of a paired comparison",
    "thread_commit_server_main_cpu_us_per_cancel": "(and no_thread_commit_, heads_, metrics_)"
    " the operator process's own CPU per cancel (the core that bounds e2e), each side",
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


class _CannedCancels:
    """The engine, but each ``cancel_orders`` answered with a fixed reply (no entry, no
    note, no signature): what the server costs around the engine (``--server-path``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def handle(self, request: Any, now_ms: int, verified: Any = None) -> list[Any]:
        if isinstance(request, CancelOrders):
            return [Reply.success(request, {"cancelled_orders": [], "notes": []})]
        return self._engine.handle(request, now_ms, verified)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _serve(
    db: str,
    durability: str,
    workers: int,
    ports: Any,
    stop: Any,
    profile: bool,
    canned: bool,
    heads_ms: int,
    metrics: bool,
    journal_process: int,
) -> None:
    """The server process: an engine, a journal and the WebSocket server (with ``workers``
    verifier processes of its own, and journal heads every ``heads_ms`` unless 0), until
    ``stop``; ``canned``: cancels answered by :class:`_CannedCancels`; ``metrics``:
    Prometheus metrics on, their endpoint scraped every second."""

    async def main() -> None:
        journal = Journal.open(db, DOMAIN, OPERATOR.address, durability)
        engine = Engine(OPERATOR, DOMAIN, {1}, **UNCAPPED)
        heads = None
        if heads_ms:
            heads = HeadLog.open(journal, OPERATOR, DOMAIN, heads_ms)
            heads.finish()
        config = ServerConfig(
            execute_rate_per_address=UNLIMITED,
            verify_workers=workers,
            journal_process=journal_process,
        )
        server = OperatorServer(
            engine, journal, config=config, heads=heads, metrics=Metrics() if metrics else None
        )
        if canned:
            server.engine = _CannedCancels(engine)  # type: ignore[assignment]
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            if server.metrics is not None:
                nursery.start_soon(_scrape, server.metrics.serve("127.0.0.1", 0))
            ports.put(port)
            await trio.to_thread.run_sync(stop.wait)
            await server.shutdown()
            nursery.cancel_scope.cancel()
        if server.metrics is not None:
            server.metrics.close()
        if heads is not None:
            heads.close()
        journal.close()

    if profile:
        print("server profile:\n" + profiled(trio.run, main))
    else:
        trio.run(main)


async def _scrape(port: int) -> None:
    """What Prometheus does, every second (it usually waits 15 s or more)."""
    url = f"http://127.0.0.1:{port}/metrics"
    while True:
        await trio.sleep(1)
        await trio.to_thread.run_sync(lambda: urllib.request.urlopen(url, timeout=5).read())


class _Answer(msgspec.Struct):
    """The two fields of an answer the load generator reads (the rest is skipped in C);
    a pushed head has no ``status``."""

    status: str | None = None
    id: int | None = None


_read_answer = msgspec.json.Decoder(_Answer).decode


class _Socket:
    """A lean WebSocket client: the operator's own frame parser in client mode, frames
    built (and masked) before the clock starts, answers read for their id and status.

    The load generator shares the machine with the server, so it spends as little CPU
    per cancel as a client can: signing, framing and masking happen before ``go``.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._parser = FrameParser(server=False)
        self._parts: list[str] = []
        self.texts: list[str] = []  # every answer, for checking after the clock stops

    @classmethod
    async def connect(cls, host: str, port: int) -> _Socket:
        sock = cls(await trio.open_tcp_stream(host, port))
        ws = WSConnection(ConnectionType.CLIENT)
        await sock._stream.send_all(ws.send(WsRequest(host=f"{host}:{port}", target="/")))
        head = b""
        while b"\r\n\r\n" not in head:
            data = await sock._stream.receive_some(2**16)
            if not data:
                raise RuntimeError("the server closed the connection")
            head += data
        end = head.index(b"\r\n\r\n") + 4
        ws.receive_data(head[:end])
        if not any(isinstance(e, AcceptConnection) for e in ws.events()):
            raise RuntimeError(f"not accepted: {head[:end]!r}")
        sock._leftover = head[end:]
        return sock

    async def send(self, framed: bytes) -> None:
        await self._stream.send_all(framed)

    async def receive(self) -> list[str]:
        """Every whole text message that has arrived (waiting for at least one)."""
        ready: list[str] = []
        data, self._leftover = self._leftover, b""
        while not ready:
            if not data:
                data = await self._stream.receive_some(2**16)
                if not data:
                    raise RuntimeError("the server closed the connection")
            for opcode, payload, finished in self._parser.feed(data):
                if opcode == frames.TEXT:
                    self._parts.append(payload)
                    if finished:
                        ready.append("".join(self._parts))
                        self._parts = []
                elif opcode == frames.CLOSE:
                    raise RuntimeError(f"the server closed the connection: {payload}")
            if self._parser.error is not None:
                raise RuntimeError(f"bad frames from the server: {self._parser.error}")
            data = b""
        return ready

    async def aclose(self) -> None:
        await self._stream.send_all(frames.close_frame(1000, masked=True))
        await self._stream.aclose()


#: What a client sends to have every signed head pushed to it.
_SUBSCRIBE_HEADS = frames.frame(frames.TEXT, b'{"subscribe_heads":{},"id":0}', masked=True)


async def _client(
    host: str,
    port: int,
    me: Trader,
    count: int,
    window: int,
    go: Any,
    ready: Any,
    heads: bool,
) -> tuple[list[float], float, float, list[str], list[Any]]:
    """Place ``count`` orders, wait for ``go``, then cancel them one per request (with
    ``heads``: subscribed to the journal's heads first)."""
    now = wall_clock_ms()
    orders = [me.order(1, PRICE - i, SIZE, now) for i in range(count)]
    cancels = [_framed(me.cancel([o], now), i) for i, o in enumerate(orders)]
    places = [_framed(o, i) for i, o in enumerate(orders)]
    ws = await _Socket.connect(host, port)
    if heads:
        await _pipeline(ws, [_SUBSCRIBE_HEADS], 1, [])
    await _pipeline(ws, places, window, [])
    ws.texts.clear()
    ready.put(1)
    await trio.to_thread.run_sync(go.wait)
    latencies: list[float] = []
    start = time.time()
    await _pipeline(ws, cancels, window, latencies)
    end = time.time()
    await ws.aclose()
    return latencies, start, end, ws.texts, orders


def _framed(request: Any, request_id: int) -> bytes:
    """A request as the masked frame a client sends (signed and built ahead)."""
    text = json.dumps({**request_to_wire(request), "id": request_id}, separators=(",", ":"))
    return frames.frame(frames.TEXT, text.encode(), masked=True)


async def _pipeline(
    ws: _Socket, messages: list[bytes], window: int, latencies: list[float]
) -> None:
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
                answer = _read_answer(text)
                if answer.status is None:
                    continue  # a pushed head
                if answer.status != "success" or answer.id is None:
                    raise RuntimeError(f"benchmark request failed: {text}")
                latencies.append(time.perf_counter() - sent_at.pop(answer.id))
                ws.texts.append(text)
                slots.release()
                left -= 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)


def _check_answers(texts: list[str], orders: list[Any]) -> None:
    """After the clock: every cancel was answered with its order's note, signed by the
    operator (what a client's verifier checks, kept off the measured path)."""
    expected = {o.order.digest(DOMAIN) for o in orders}
    noted = set()
    for text in texts:
        (signed,) = json.loads(text)["data"]["notes"]
        note = CancellationNote.from_wire(signed["note"])
        note.verify(signature_from_wire(signed["signature"]), DOMAIN, OPERATOR.address)
        noted.add(note.order_digest)
    if noted != expected:
        raise RuntimeError(f"{len(expected - noted)} orders were not cancelled with a note")


def _clients(
    port: int,
    first: int,
    clients: int,
    count: int,
    window: int,
    go: Any,
    ready: Any,
    results: Any,
    check: bool,
    heads: bool,
) -> None:
    """A client process: ``clients`` concurrent clients in one trio loop (``check``: their
    answers checked after the clock; ``heads``: each subscribed to the journal's heads).

    Puts ``(latencies and times, CPU seconds this process spent from go to the last
    answer)``; the answers are checked after that.
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

    outcomes, cpu = trio.run(main)
    results.put(("done", cpu))  # the clock stops here; the checks come after
    for _, _, _, texts, orders in outcomes:
        if check:
            _check_answers(texts, orders)
    results.put(([o[:3] for o in outcomes], cpu))


def _cpu_seconds() -> float:
    """User + system CPU of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of another live process, all its threads (Linux ``/proc``)."""
    fields = _stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the server's verifier workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (``/proc/stat``)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def e2e(
    clients: int,
    processes: int,
    count: int,
    window: int,
    durability: str,
    workers: int,
    directory: Path,
    profile: bool = False,
    canned: bool = False,
    heads_ms: int = 0,
    metrics: bool = False,
    spy: Path | None = None,
    journal_process: int = 1,
) -> dict[str, float]:
    """One end-to-end run against a fresh journal (``heads_ms``: journal heads every so
    many ms, every client subscribed to them; 0: no heads)."""
    context = multiprocessing.get_context("spawn")
    ports, ready, results = context.Queue(), context.Queue(), context.Queue()
    stop, go = context.Event(), context.Event()
    server = context.Process(
        target=_serve,
        args=(
            str(directory / f"e2e-{time.monotonic_ns()}.sqlite"),
            durability,
            workers,
            ports,
            stop,
            profile,
            canned,
            heads_ms,
            metrics,
            journal_process,
        ),
    )
    server.start()
    try:
        port = ports.get(timeout=60)
        per_process = [clients // processes + (p < clients % processes) for p in range(processes)]
        client_processes = []
        first = 0
        for n in per_process:
            worker = context.Process(
                target=_clients,
                args=(port, first, n, count, window, go, ready, results, not canned, heads_ms > 0),
            )
            worker.start()
            client_processes.append(worker)
            first += n
        for _ in range(clients):
            ready.get(timeout=300)
        verifiers = _children(server.pid)
        main_cpu = _process_cpu_seconds(server.pid)
        worker_cpu = [_process_cpu_seconds(pid) for pid in verifiers]
        machine_busy, wall = _machine_busy_seconds(), time.perf_counter()
        sampler = _spy(server.pid, spy) if spy is not None else None
        go.set()
        reports, done = [], 0
        while done < len(client_processes):  # ("done", cpu): a process's last answer is in
            message = results.get(timeout=300)
            if message[0] == "done":
                done += 1
            else:
                reports.append(message)  # (a quick process's results, after its "done")
        machine_busy, wall = _machine_busy_seconds() - machine_busy, time.perf_counter() - wall
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            sampler.wait(timeout=60)
        if main_cpu is not None:
            main_cpu = _process_cpu_seconds(server.pid) - main_cpu
        spent_by_workers = [
            (after - before) if (after := _process_cpu_seconds(pid)) is not None else None
            for pid, before in zip(verifiers, worker_cpu, strict=True)
            if before is not None
        ]
        reports += [results.get(timeout=300) for _ in range(len(client_processes) - len(reports))]
        for worker in client_processes:
            worker.join()
    finally:
        stop.set()
        server.join(timeout=30)
    outcomes = [o for report, _ in reports for o in report]
    client_cpu = sum(cpu for _, cpu in reports)
    latencies = sorted(x for lat, _, _ in outcomes for x in lat)
    start = min(s for _, s, _ in outcomes)
    end = max(e for _, _, e in outcomes)
    cancels = len(latencies)
    figures = {
        "e2e_cancels_per_s": cancels / (end - start),
        "e2e_p50_ms": 1000 * latencies[cancels // 2],
        "e2e_p99_ms": 1000 * latencies[int(cancels * 0.99)],
        "e2e_mean_ms": 1000 * statistics.fmean(latencies),
        "e2e_cancels": cancels,
        "e2e_client_cpu_us_per_cancel": 1e6 * client_cpu / cancels,
        "e2e_verify_workers": workers,
        "e2e_server_child_processes": len(verifiers),  # the verify workers, the journal's
        "e2e_client_cores": client_cpu / wall,
        "e2e_machine_busy_cores": machine_busy / wall,
    }
    if main_cpu is not None and None not in spent_by_workers:
        workers_cpu = sum(x for x in spent_by_workers if x is not None)
        figures["e2e_server_main_cpu_us_per_cancel"] = 1e6 * main_cpu / cancels
        figures["e2e_server_workers_cpu_us_per_cancel"] = 1e6 * workers_cpu / cancels
        figures["server_cpu_us_per_cancel"] = 1e6 * (main_cpu + workers_cpu) / cancels
        figures["e2e_server_cpu_us_per_cancel"] = figures["server_cpu_us_per_cancel"]
        figures["e2e_server_main_cores"] = main_cpu / wall
        figures["e2e_server_workers_cores"] = workers_cpu / wall
        figures["e2e_other_cores"] = (
            max(machine_busy - main_cpu - workers_cpu - client_cpu, 0.0) / wall
        )
    return figures


def _spy(pid: int, path: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the server's GIL holders (``--spy``): where its one core goes."""
    command = ["py-spy", "record", "-p", str(pid), "--gil", "-r", "250", "-f", "raw", "-o"]
    return subprocess.Popen([*command, str(path)], stdout=subprocess.DEVNULL)


def paired_cost(
    run_e2e: Callable[..., dict[str, float]], name: str, runs: int, **switched_on: Any
) -> dict[str, float]:
    """``{name}_cost_ratio``: ``server_cpu_us_per_cancel`` (the operator process and its
    verifier workers, from ``/proc``) of the e2e run with ``switched_on`` over without,
    ``runs`` pairs alternated (without, with, without, ...) so both see the same machine."""
    cpu: dict[bool, list[float]] = {False: [], True: []}
    rate: dict[bool, list[float]] = {False: [], True: []}
    main: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(runs):
        for on in (False, True):
            figures = run_e2e(**(switched_on if on else {}))
            if "server_cpu_us_per_cancel" not in figures:
                raise RuntimeError("the server's CPU could not be read from /proc")
            cpu[on].append(figures["server_cpu_us_per_cancel"])
            rate[on].append(figures["e2e_cancels_per_s"])
            main[on].append(figures["e2e_server_main_cpu_us_per_cancel"])
    without, with_ = statistics.fmean(cpu[False]), statistics.fmean(cpu[True])
    return {
        f"{name}_cost_ratio": with_ / without,
        f"{name}_server_cpu_us_per_cancel": with_,
        f"no_{name}_server_cpu_us_per_cancel": without,
        f"{name}_e2e_cancels_per_s": statistics.fmean(rate[True]),
        f"no_{name}_e2e_cancels_per_s": statistics.fmean(rate[False]),
        f"{name}_server_main_cpu_us_per_cancel": statistics.fmean(main[True]),
        f"no_{name}_server_main_cpu_us_per_cancel": statistics.fmean(main[False]),
    }


TARGETS = {
    "engine_ratio": 0.5,
    "e2e_cancels_per_s": 5_000,
    "e2e_p99_ms": 20,
    "server_cpu_ratio": 2.5,
    "heads_cost_ratio": 1.15,
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
    parser.add_argument(
        "--verify-workers",
        type=int,
        default=ServerConfig().verify_workers,
        help="the server's verifier processes (0: the engine recovers signatures)",
    )
    parser.add_argument("--durability", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument(
        "--heads-ms", type=int, default=HEADS_MS, help="H of the heads workload (ms)"
    )
    parser.add_argument(
        "--heads-runs", type=int, default=2, help="alternated pairs of the heads workload"
    )
    parser.add_argument(
        "--thread-commit-runs",
        type=int,
        default=0,
        help="alternated pairs with the journal's commits in a thread instead of the journal"
        " process (thread_commit_cost_ratio)",
    )
    parser.add_argument(
        "--metrics-runs",
        type=int,
        default=0,
        help="alternated pairs with Prometheus metrics on and off (metrics_cost_ratio)",
    )
    parser.add_argument(
        "--server-path",
        action="store_true",
        help="also measure the server around the engine (cancels answered by a canned reply)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print profiles of the engine and the server"
    )
    parser.add_argument(
        "--spy",
        type=Path,
        help="py-spy (on PATH) samples the server's GIL holders during the first e2e run,"
        " collapsed stacks to this file",
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
        # The crypto a cancel cannot avoid, on the CPU clock just before and after e2e.
        floor_before = _crypto_floor_us(args.notes)
        run_e2e = functools.partial(
            e2e,
            args.clients,
            args.client_processes,
            args.per_client,
            args.window,
            args.durability,
            args.verify_workers,
            directory,
        )
        figures.update(run_e2e(args.profile, spy=args.spy))
        floor = statistics.fmean([floor_before, _crypto_floor_us(args.notes)])
        if args.server_path:
            canned = run_e2e(canned=True)
            figures["server_path_requests_per_s"] = canned["e2e_cancels_per_s"]
            figures["server_path_main_cpu_us_per_request"] = canned[
                "e2e_server_main_cpu_us_per_cancel"
            ]
        figures["crypto_floor_us_per_cancel"] = floor
        if "server_cpu_us_per_cancel" in figures:
            figures["server_cpu_ratio"] = figures["server_cpu_us_per_cancel"] / floor
        figures.update(paired_cost(run_e2e, "heads", args.heads_runs, heads_ms=args.heads_ms))
        if args.thread_commit_runs:
            figures.update(
                paired_cost(run_e2e, "thread_commit", args.thread_commit_runs, journal_process=0)
            )
        if args.metrics_runs:
            figures.update(paired_cost(run_e2e, "metrics", args.metrics_runs, metrics=True))
    met = {
        "engine_ratio": figures["engine_ratio"] >= TARGETS["engine_ratio"],
        "e2e_cancels_per_s": figures["e2e_cancels_per_s"] >= TARGETS["e2e_cancels_per_s"],
        "e2e_p99_ms": figures["e2e_p99_ms"] < TARGETS["e2e_p99_ms"],
        "server_cpu_ratio": figures.get("server_cpu_ratio", math.inf)
        <= TARGETS["server_cpu_ratio"],
        "heads_cost_ratio": figures["heads_cost_ratio"] <= TARGETS["heads_cost_ratio"],
    }
    report = {
        "benchmark": "operator",
        "figures": {k: round(v, 3) for k, v in figures.items()},
        "definitions": DEFINITIONS,
        "targets": TARGETS,
        "met": met,
        "parameters": {
            "journal_durability": args.durability,
            "engine_notes_per_workload": args.notes,
            "engine_requests_per_commit": args.batch,
            "clients": args.clients,
            "client_processes": args.client_processes,
            "per_client": args.per_client,
            "window": args.window,
            "verify_workers": args.verify_workers,
            "heads_ms": args.heads_ms,
            "heads_runs": args.heads_runs,
            "metrics_runs": args.metrics_runs,
            "thread_commit_runs": args.thread_commit_runs,
        },
    }
    write_report(args.out, report)
    print(json.dumps(report["figures"], indent=2))
    return 0


def _crypto_floor_us(count: int) -> float:
    """One recovery and one signature (coincurve alone), in microseconds of CPU."""
    sign = raw_sign_rate(count, time.process_time)
    recover = raw_recover_rate(count, time.process_time)
    return 1e6 / sign + 1e6 / recover


if __name__ == "__main__":
    raise SystemExit(main())
