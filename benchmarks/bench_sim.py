"""Kernel events per second: the cost the kernel adds to every simulated event.

Three workloads, each the median of ``--repeats`` runs. Rates are events per second of
*CPU time* of this process (``time.process_time``): on a shared machine, wall-clock time
also counts the time other processes held the core. The wall-clock rates are reported
beside them (``..._wall``); on an idle machine the two agree.

* ``kernel_events_per_s`` (the headline; target 1,000,000): handlers that do nothing,
  ``--depth`` events pending at a time. The clock schedules a batch of ``depth`` events
  at random future times and runs them, so every event costs one push, one pop and one
  call; scheduling is timed with running.
* ``kernel_reschedule_events_per_s``: ``--depth`` agents whose handler only schedules
  the agent's next wakeup (the minimal real handler; anchors §1.7's workload).
* ``kernel_deep_queue_events_per_s``: empty handlers with ``--deep`` events pending at
  once, the worst case for the heap (and for the CPU caches): scenarios should schedule
  each agent's next event, not a whole day of events up front.

Scenario figures, each the median of ``--scenario-repeats`` replicates (kernel events
per CPU second of a whole :class:`~cancelnote.sim.world.World` run):

* ``scenario_events_per_s`` (target 100,000): ``simulations/honest.toml`` with the real
  engine, the real verifier on every client, no disputes;
* ``scenario_disputes_events_per_s``: ``simulations/fixed_delay.toml`` with the on-chain
  defence on (cancels forced 250 ms after sending), so forced cancels and their answers
  run as transactions on the court in py-evm;
* ``ecdsa_sign_per_s`` and ``ecdsa_recover_per_s``: raw coincurve signatures and
  recoveries in the same process, the unit the scenario rates are bounded by; and
  ``scenario_events_per_ecdsa_op`` = events per second / (1 / (1/sign + 1/recover)),
  how many events the world runs in the time of one sign-and-recover pair;
* ``time_shares``: where a scenario's time goes (cProfile, own time by category).

Chain figures (:func:`chain_speedup`), the court's work replayed on both EVMs:

* ``chain_speedup`` (target 100): court transactions per CPU second on revm over py-evm,
  the same sequence (forced cancels, answers, defaults after the window, fraud proofs, a
  withdrawal; calldata encoded before the clock starts) in the same run, each transaction
  auto-mined in its own block; ``chain_speedup_in_blocks``: the same with blocks of ten
  transactions built at slot times; ``chain_*_court_tx_per_s``: the rates themselves. The
  two backends' gas must agree transaction by transaction, or the benchmark fails;
  ``chain_revm_*_us``: where a revm transaction's time goes (:func:`chain_costs`).

An hour of a big world (``hour_*``; targets 200 CPU s and 1,024 MiB):
``simulations/fixed_delay.toml`` with 100 makers (every order, fill and note really
signed and verified), each horizon of ``--hour-horizons`` in a fresh process:

* ``hour_100_makers_honest_cpu_s``: CPU seconds per simulated hour, the least-squares
  slope of CPU time against the horizon (fixed costs, such as building the world, drop
  out), scaled to 3,600 s; ``hour_100_makers_linearity`` is the CPU per kernel event
  over the last step between horizons over that of the first (1 when the cost of an
  event does not grow with the horizon; the market's path makes the events per second
  vary, so the check is per event);
* ``hour_100_makers_peak_rss_mib``: the peak resident memory of an hour, extrapolated
  from the largest horizon along the growth per simulated second of the last step
  (past the warm-up, when the bounded caches have filled; ``hour_rss_mib_by_horizon``).

    python benchmarks/bench_sim.py --out results/sim.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from common import raw_recover_rate, raw_sign_rate, write_report

from cancelnote.crypto import Signer
from cancelnote.dispute.chain import TransactionReverted
from cancelnote.dispute.court import DEV_PARAMETERS, Court
from cancelnote.dispute.local import LocalChain, make_chain, sign_transaction
from cancelnote.messages import CancellationNote, Fill, Order, make_sender
from cancelnote.sim.kernel import Kernel
from cancelnote.sim.scenario import load_scenario
from cancelnote.sim.world import World

TARGET_EVENTS_PER_S = 1_000_000
TARGET_SCENARIO_EVENTS_PER_S = 100_000
TARGET_CHAIN_SPEEDUP = 100
TARGET_HOUR_CPU_S = 200
TARGET_HOUR_RSS_MIB = 1_024
#: The hours' worlds: fixed_delay.toml with 100 makers, honest about time (no note is
#: late enough to be forced), and with forced cancels on the chain (the watchtowers
#: force every cancel whose note is 250 ms late, answered in court).
HOUR_SCENARIOS = {
    "honest": ("fixed_delay.toml", {"makers.count": 100}),
    "onchain": ("fixed_delay.toml", {"makers.count": 100, "client.force_after_ms": 250}),
}
TARGET_HOUR_ONCHAIN_CPU_S = 600
#: The figures' names for each hour's world.
HOUR_FIGURES = {
    "honest": {
        "cpu_s": "hour_100_makers_honest_cpu_s",
        "peak_rss_mib": "hour_100_makers_peak_rss_mib",
        "linearity": "hour_100_makers_linearity",
    },
    "onchain": {
        "cpu_s": "hour_100_makers_onchain_cpu_s",
        "peak_rss_mib": "hour_100_makers_onchain_peak_rss_mib",
        "linearity": "hour_100_makers_onchain_linearity",
    },
}
SIMULATIONS = Path(__file__).resolve().parent.parent / "simulations"
#: The two scenario workloads: (file, overrides).
SCENARIOS = {
    "scenario_events_per_s": ("honest.toml", {}),
    "scenario_disputes_events_per_s": ("fixed_delay.toml", {"client.force_after_ms": 250}),
}
#: Own-time categories of a profile: (name, substrings of "file:function"); the first
#: category that matches takes a function (keccak before the rest of crypto.py).
CATEGORIES = (
    ("py-evm (court transactions)", ("/eth/", "/eth_", "/rlp/", "/trie/")),
    ("sqlite (client evidence store)", ("sqlite3",)),
    ("keccak and EIP-712 encoding", ("keccak", "sha3", "cancelnote/messages.py")),
    ("ecdsa (coincurve sign/recover)", ("secp256k1", "coincurve/", "_cffi_backend", "crypto.py:")),
    ("attrs-generated __init__ and validators", ("<attrs generated",)),
    ("json and regular expressions", ("/json/", "'_json", "re.Pattern", "_sre")),
    ("operator engine", ("cancelnote/operator/",)),
    ("client verifier and watchtower", ("cancelnote/client/",)),
    ("simulator (kernel, world, metrics)", ("cancelnote/sim/",)),
)
# Wakeups spread over a simulated second.
SPREAD_NS = 1_000_000_000


def _nothing(payload: object) -> None:
    """The empty handler."""


@contextmanager
def stopwatch(times: list[float]) -> Iterator[None]:
    """Appends the CPU seconds, then the wall-clock seconds, that the block took."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    times.extend((time.process_time() - cpu, time.perf_counter() - wall))


def batched(events: int, depth: int, rng: random.Random) -> list[float]:
    """CPU and wall seconds to schedule and run ``events`` empty events, ``depth`` pending
    at a time."""
    kernel = Kernel()
    schedule = kernel.schedule
    offsets = [rng.randrange(1, SPREAD_NS) for _ in range(depth)]
    times: list[float] = []
    with stopwatch(times):
        for _ in range(events // depth):
            now = kernel.now_ns
            for offset in offsets:
                schedule(now + offset, _nothing)
            kernel.run()
    return times


def rescheduling(events: int, depth: int, rng: random.Random) -> list[float]:
    """CPU and wall seconds to run ``events`` wakeups of ``depth`` agents whose handler
    only schedules the agent's next wakeup."""
    kernel = Kernel()
    schedule_after = kernel.schedule_after
    delays = [rng.randrange(1, SPREAD_NS) for _ in range(depth)]

    def wake(agent: int) -> None:
        schedule_after(delays[agent], wake, agent)

    for agent in range(depth):
        kernel.schedule(delays[agent], wake, agent)
    times: list[float] = []
    with stopwatch(times):
        kernel.run(max_events=events)
    return times


def deep_queue(events: int, depth: int, rng: random.Random) -> list[float]:
    """CPU and wall seconds to schedule ``events`` empty events at once and run them all (``depth``
    is ``events`` here)."""
    kernel = Kernel()
    schedule = kernel.schedule
    times = [rng.randrange(SPREAD_NS * 1_000) for _ in range(events)]
    seconds: list[float] = []
    with stopwatch(seconds):
        for at_ns in times:
            schedule(at_ns, _nothing)
        kernel.run()
    return seconds


def rates(
    workload: Callable[[int, int, random.Random], list[float]],
    events: int,
    depth: int,
    repeats: int,
) -> tuple[float, float]:
    """Median events per CPU second and per wall second over ``repeats`` runs (fixed seeds)."""
    runs = [workload(events, depth, random.Random(repeat)) for repeat in range(repeats)]
    return (
        statistics.median(events / cpu for cpu, _ in runs),
        statistics.median(events / wall for _, wall in runs),
    )


def scenario_rate(
    name: str, overrides: dict[str, object], horizon_s: float, repeats: int
) -> dict[str, float]:
    """Median kernel events per CPU (and wall) second of whole replicates of a scenario."""
    scenario = load_scenario(SIMULATIONS / name, {"run.horizon_s": horizon_s, **overrides})
    cpu_rates, wall_rates, txs = [], [], []
    for replicate in range(repeats):
        world = World.build(scenario, replicate)
        times: list[float] = []
        with stopwatch(times):
            events = world.run()
        cpu_rates.append(events / times[0])
        wall_rates.append(events / times[1])
        txs.append(len(world.txs))
    return {
        "cpu": statistics.median(cpu_rates),
        "wall": statistics.median(wall_rates),
        "transactions": statistics.median(txs),
        "events": events,
    }


def time_shares(name: str, overrides: dict[str, object], horizon_s: float) -> dict[str, float]:
    """Share of a replicate's profiled own time in each of ``CATEGORIES`` (and "other")."""
    import cProfile
    import pstats

    scenario = load_scenario(SIMULATIONS / name, {"run.horizon_s": horizon_s, **overrides})
    world = World.build(scenario, 0)
    profile = cProfile.Profile()
    profile.runcall(world.run)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    shares = {label: 0.0 for label, _ in CATEGORIES}
    total = other = 0.0
    for (filename, _, function), (_, _, own, _, _) in stats.items():
        total += own
        where = f"{filename}:{function}"
        label = next((lb for lb, keys in CATEGORIES if any(k in where for k in keys)), None)
        if label is None:
            other += own
        else:
            shares[label] += own
    shares["other (builtins, numpy, csv, ...)"] = other
    return {label: round(share / total, 3) for label, share in shares.items()}


#: One court step: (sender, calldata, value, seconds to wait first).
CourtStep = tuple[Signer, bytes, int, int]


def court_sequence(court: Court, signers: Sequence[Signer], rounds: int) -> list[CourtStep]:
    """The court's work in the lab, encoded once: every round forces a cancel; three of four
    are answered (one of those then proven a fill after its note), the fourth defaults."""
    operator, _, alice, bob = signers
    window, bond = DEV_PARAMETERS["answer_window_s"], DEV_PARAMETERS["dispute_bond_wei"]
    price, domain = 2_000 * 10**18, court.domain
    steps: list[CourtStep] = []
    for round_ in range(rounds):
        order = Order(make_sender(alice.address), 1, price, 10**18, 2**40, round_ + 1)
        digest = order.digest(domain)
        steps.append((alice, court.encode_call("requestCancel", order), bond, 0))
        if round_ % 4 == 3:
            steps.append((bob, court.encode_call("finalize", order), 0, window + 1))
            continue
        note = CancellationNote(digest, order.sender, bytes(32), 0, 0, bytes(32), 0, 0, 0, 42)
        note_sig = note.sign(operator, domain)
        steps.append((operator, court.encode_call("answerCancel", order, note, note_sig), 0, 0))
        if round_ % 4 == 1:
            fill = Fill(digest, order.sender, 43, 10**17, 10**17, price, 43)
            proof = court.encode_call(
                "proveFillAfterNote", order, note, note_sig, fill, fill.sign(operator, domain)
            )
            steps.append((bob, proof, 0, 0))
    steps.append((operator, court.encode_call("withdraw"), 0, 0))  # its pay for answering
    return steps


def court_setup(backend: str, rounds: int) -> tuple[LocalChain, Court, list[CourtStep]]:
    """A fresh chain on ``backend`` with a bonded court, and the sequence to replay on it."""
    chain = make_chain(backend, accounts=4)
    operator, deployer, *_ = chain.dev_accounts
    parameters = {**DEV_PARAMETERS, "halt_on_default": False}
    court = Court.deploy(chain, deployer, operator=operator.address, **parameters)
    court.deposit_bond(operator, 100 * 10**18)  # enough for every default
    return chain, court, court_sequence(court, chain.dev_accounts, rounds)


def replay(
    chain: LocalChain, court: Court, steps: list[CourtStep], per_block: int | None
) -> list[int]:
    """Send ``steps`` (auto-mined, or ``per_block`` to a built block); the gas of each."""
    gas: list[int] = []
    for index, (sender, data, value, wait_s) in enumerate(steps):
        if per_block is None:
            if wait_s:
                chain.increase_time(wait_s)
        elif index % per_block == 0 or wait_s:
            building = chain.building
            slot_ms = chain.timestamp_ms() if building is None else building.timestamp_ms
            chain.begin_block(slot_ms + 1_000 * (1 + wait_s))
        try:
            gas.append(chain.transact(sender, court.address, data, value=value).gas_used)
        except TransactionReverted as exc:  # none is expected; it would still count
            assert exc.receipt is not None
            gas.append(exc.receipt.gas_used)
    chain.seal_block()
    return gas


def court_rate(backend: str, rounds: int, per_block: int | None) -> tuple[float, list[int]]:
    """Court transactions per CPU second replaying the sequence on ``backend``, and their gas."""
    chain, court, steps = court_setup(backend, rounds)
    times: list[float] = []
    with stopwatch(times):
        gas = replay(chain, court, steps, per_block)
    return len(steps) / times[0], gas


def chain_speedup(rounds: int, repeats: int) -> dict[str, float]:
    """``chain_speedup`` and its parts (see the module docstring); medians of ``repeats``."""
    figures: dict[str, float] = {}
    for suffix, per_block in (("", None), ("_in_blocks", 10)):
        rates = {}
        for backend in ("revm", "py-evm"):
            runs = [court_rate(backend, rounds, per_block) for _ in range(repeats)]
            rates[backend] = statistics.median(rate for rate, _ in runs)
            rates[f"{backend} gas"] = runs[0][1]
        if rates["revm gas"] != rates["py-evm gas"]:
            raise AssertionError("revm and py-evm charged different gas: not the same run")
        figures[f"chain_speedup{suffix}"] = rates["revm"] / rates["py-evm"]
        figures[f"chain_revm_court_tx_per_s{suffix}"] = rates["revm"]
        figures[f"chain_py_evm_court_tx_per_s{suffix}"] = rates["py-evm"]
    return figures


def chain_costs(rounds: int) -> dict[str, float]:
    """Where a revm transaction's CPU time goes, in µs: the whole ``transact``, one EVM run
    (a ``call`` of the same step on the same state; a transaction makes two), signing, and
    the rest (journal read and write-back, blocks, receipts, logs, checks). A call runs on
    the latest block: a step whose call reverts there (a default, due in the next block)
    is left out of the EVM run's mean."""
    chain, court, steps = court_setup("revm", rounds)
    parts = {"transact": 0.0, "signing": 0.0, "one_evm_run": 0.0}
    runs = 0
    for sender, data, value, wait_s in steps:
        if wait_s:
            chain.increase_time(wait_s)
        started = time.process_time()
        with contextlib.suppress(TransactionReverted):
            chain.call(court.address, data, sender=sender.address, value=value)
            parts["one_evm_run"] += time.process_time() - started
            runs += 1
        started = time.process_time()
        sign_transaction(
            sender, chain_id=chain.chain_id, nonce=chain.nonce(sender.address),
            max_fee_per_gas=2 * chain.base_fee(), gas=10**6, to=court.address, value=value,
            data=data,
        )  # fmt: skip
        signed = time.process_time()
        chain.transact(sender, court.address, data, value=value)
        parts["signing"] += signed - started
        parts["transact"] += time.process_time() - signed
    costs = {
        "chain_revm_transact_us": 1e6 * parts["transact"] / len(steps),
        "chain_revm_signing_us": 1e6 * parts["signing"] / len(steps),
        "chain_revm_one_evm_run_us": 1e6 * parts["one_evm_run"] / runs,
    }
    costs["chain_revm_rest_us"] = costs["chain_revm_transact_us"] - (
        2 * costs["chain_revm_one_evm_run_us"] + costs["chain_revm_signing_us"]
    )
    return costs
_HOUR_CHILD = """
import json, resource, sys, time
from pathlib import Path
from cancelnote.sim.scenario import load_scenario
from cancelnote.sim.world import World
name, overrides, horizon = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
scenario = load_scenario(Path(name), {**overrides, "run.horizon_s": horizon})
started = time.process_time()
world = World.build(scenario, 0)
events = world.run()
cpu = time.process_time() - started
world.recorder.discard()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(
    {"cpu_s": cpu, "events": events, "peak_rss_mib": rss, "transactions": len(world.txs)}
))
"""


def hour_point(world: str, horizon_s: float) -> dict[str, float]:
    """CPU seconds, events and peak RSS of one run of an hour's world, in a fresh process."""
    import subprocess
    import sys

    name, overrides = HOUR_SCENARIOS[world]
    done = subprocess.run(
        [sys.executable, "-c", _HOUR_CHILD, str(SIMULATIONS / name), json.dumps(overrides),
         str(horizon_s)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ``ys`` against ``xs``."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def hour_figures(world: str, horizons: Sequence[float]) -> dict[str, object]:
    """The ``hour_100_makers_<world>_*`` figures from runs of ``horizons`` simulated
    seconds (at least 3)."""
    runs = [hour_point(world, h) for h in horizons]
    cpu = [r["cpu_s"] for r in runs]
    rss = [r["peak_rss_mib"] for r in runs]
    events = [r["events"] for r in runs]
    # CPU per event over the first and the last step between horizons: equal when the
    # cost per simulated event does not grow with the horizon.
    first = (cpu[1] - cpu[0]) / (events[1] - events[0])
    last = (cpu[-1] - cpu[-2]) / (events[-1] - events[-2])
    # Memory: the growth per simulated second over the last step (past the warm-up, when
    # the bounded caches have filled), extrapolated to the hour.
    rss_per_s = (rss[-1] - rss[-2]) / (horizons[-1] - horizons[-2])
    names = HOUR_FIGURES[world]
    return {
        names["cpu_s"]: _slope(horizons, cpu) * 3_600,
        names["linearity"]: last / first,
        names["peak_rss_mib"]: rss[-1] + rss_per_s * (3_600 - horizons[-1]),
        "cpu_s_by_horizon": dict(zip(map(str, horizons), cpu, strict=True)),
        "rss_mib_by_horizon": dict(zip(map(str, horizons), rss, strict=True)),
        "events_by_horizon": dict(zip(map(str, horizons), events, strict=True)),
        "transactions_by_horizon": dict(
            zip(map(str, horizons), [r["transactions"] for r in runs], strict=True)
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--events", type=int, default=1_000_000, help="events per run")
    parser.add_argument("--depth", type=int, default=100, help="events pending at a time")
    parser.add_argument("--deep", type=int, default=100_000, help="pending events, deep queue")
    parser.add_argument("--repeats", type=int, default=5, help="runs per workload (median)")
    parser.add_argument(
        "--horizon-s", type=float, default=30.0, help="simulated seconds per scenario run"
    )
    parser.add_argument(
        "--scenario-repeats", type=int, default=3, help="replicates per scenario (median)"
    )
    parser.add_argument(
        "--chain-rounds", type=int, default=40, help="forced cancels in the chain sequence"
    )
    parser.add_argument(
        "--hour-horizons",
        type=lambda text: [float(h) for h in text.split(",")],
        default=[60.0, 120.0, 180.0, 240.0],
        help="simulated seconds of the hour's runs (comma-separated, at least 3)",
    )
    args = parser.parse_args(argv)

    workloads = {
        "kernel_events_per_s": rates(batched, args.events, args.depth, args.repeats),
        "kernel_reschedule_events_per_s": rates(
            rescheduling, args.events, args.depth, args.repeats
        ),
        "kernel_deep_queue_events_per_s": rates(deep_queue, args.deep, args.deep, args.repeats),
    }
    figures = {name: cpu for name, (cpu, _) in workloads.items()}
    figures.update({f"{name}_wall": wall for name, (_, wall) in workloads.items()})
    sign_rate = raw_sign_rate(5_000, time.process_time)
    recover_rate = raw_recover_rate(5_000, time.process_time)
    figures["ecdsa_sign_per_s"] = sign_rate
    figures["ecdsa_recover_per_s"] = recover_rate
    pair_rate = 1 / (1 / sign_rate + 1 / recover_rate)
    scenarios = {}
    for name, (file, overrides) in SCENARIOS.items():
        measured = scenario_rate(file, overrides, args.horizon_s, args.scenario_repeats)
        figures[name] = measured["cpu"]
        figures[f"{name}_wall"] = measured["wall"]
        figures[name.replace("_per_s", "_per_ecdsa_op")] = measured["cpu"] / pair_rate
        scenarios[name] = {
            "scenario": file,
            "overrides": overrides,
            "events_per_run": measured["events"],
            "court_transactions_per_run": measured["transactions"],
            "time_shares": time_shares(file, overrides, args.horizon_s),
        }
    figures.update(chain_speedup(args.chain_rounds, args.repeats))
    figures.update(chain_costs(args.chain_rounds))
    hours = {world: hour_figures(world, args.hour_horizons) for world in HOUR_SCENARIOS}
    for world, hour in hours.items():
        for name in HOUR_FIGURES[world].values():
            figures[name] = hour[name]  # type: ignore[assignment]
    report = {
        "benchmark": "sim",
        "figures": {
            name: round(value, 2) if value < 100 else round(value)
            for name, value in figures.items()
        },
        "targets": {
            "kernel_events_per_s": TARGET_EVENTS_PER_S,
            "scenario_events_per_s": TARGET_SCENARIO_EVENTS_PER_S,
            "chain_speedup": TARGET_CHAIN_SPEEDUP,
            "hour_100_makers_honest_cpu_s": TARGET_HOUR_CPU_S,
            "hour_100_makers_peak_rss_mib": TARGET_HOUR_RSS_MIB,
            "hour_100_makers_onchain_cpu_s": TARGET_HOUR_ONCHAIN_CPU_S,
            "hour_100_makers_onchain_peak_rss_mib": TARGET_HOUR_RSS_MIB,
        },
        "met": {
            "kernel_events_per_s": figures["kernel_events_per_s"] >= TARGET_EVENTS_PER_S,
            "scenario_events_per_s": figures["scenario_events_per_s"]
            >= TARGET_SCENARIO_EVENTS_PER_S,
            "chain_speedup": figures["chain_speedup"] >= TARGET_CHAIN_SPEEDUP,
            "hour_100_makers_honest_cpu_s": figures["hour_100_makers_honest_cpu_s"]
            <= TARGET_HOUR_CPU_S,
            "hour_100_makers_peak_rss_mib": figures["hour_100_makers_peak_rss_mib"]
            <= TARGET_HOUR_RSS_MIB,
            "hour_100_makers_onchain_cpu_s": figures["hour_100_makers_onchain_cpu_s"]
            <= TARGET_HOUR_ONCHAIN_CPU_S,
            "hour_100_makers_onchain_peak_rss_mib": figures[
                "hour_100_makers_onchain_peak_rss_mib"
            ]
            <= TARGET_HOUR_RSS_MIB,
        },
        "hours": hours,
        "scenarios": scenarios,
        "parameters": {
            "events": args.events,
            "depth": args.depth,
            "deep": args.deep,
            "repeats": args.repeats,
            "horizon_s": args.horizon_s,
            "scenario_repeats": args.scenario_repeats,
            "chain_rounds": args.chain_rounds,
        },
    }
    write_report(args.out, report)
    print(
        json.dumps({"figures": report["figures"], "scenarios": scenarios, "hours": hours}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
