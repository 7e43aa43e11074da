"""The world's checks for ``cancelnote sim validate``: exact properties of the full simulator.

Each is a :class:`~.validate.Check` that must match exactly (standard error 0), on a
small scenario embedded here (so the checks run from any directory):

* an honest operator with zero delay and ``cancel_first`` ordering leaves zero stale
  fills (a cancel is answered the instant it arrives; nothing can fill after it);
* the same scenario and seed write a byte-identical ``events.csv``, through the real
  engine, the real verifier and watchtower and the court (a delaying operator whose
  cancels are forced on-chain, so every part runs);
* a sweep writes the same ``summary.csv`` on 1 and on 4 worker processes;
* statistically (within 3 standard errors over replicates): one maker, no other trader,
  a fixed 1 ms link and an operator holding every cancel 500 ms: the sniper's take over
  the §5 value of each hold (``loss_vs_closed_form``) is 1. The real engine, the grid
  of ticks and the sniper reproduce the closed form; with noise takers the ratio falls
  (they fill held orders first, at worse moments for the operator).
"""

from __future__ import annotations

import hashlib
import io
import math
import statistics
import tempfile
import tomllib
from pathlib import Path

from .eventlog import EventLog
from .metrics import run_metrics
from .scenario import apply_overrides, parse_scenario
from .sweep import run_sweep
from .validate import Check
from .world import World

#: A small world: two makers, fast links, a block a second; 5 simulated seconds.
SCENARIO = """
[run]
horizon_s = 5
[market]
model = "abm"
sigma = 0.05
[latency.entry]
model = "cubic"
min_ns = 1_000_000
[latency.response]
model = "cubic"
min_ns = 1_000_000
[makers]
count = 2
requote_threshold = 0.02
[client]
force_after_ms = 300
[chain]
block_time_s = 1
"""
#: The delaying arm of the determinism check (its cancels are forced on-chain).
DELAYING = {"operator.policy": "delay", "operator.delay_ms": 400}
#: The closed-form check: a lone maker, no takers, no jitter, no court.
LONE_MAKER = {
    "run.horizon_s": 60,
    "makers.count": 1,
    "makers.requote_threshold": 0.06,  # requotes rarer than holds: they never overlap
    "takers.rate_per_s": 0.0,
    "operator.policy": "delay",
    "operator.delay_ms": 500,
    "client.dispute": False,
    "latency.entry": {"model": "fixed", "ns": 1_000_000},
    "latency.response": {"model": "fixed", "ns": 1_000_000},
}
CLOSED_FORM_REPLICATES = 16


def _document(seed: int, overrides: dict[str, object]) -> dict[str, object]:
    return apply_overrides(tomllib.loads(SCENARIO), {"run.seed": seed, **overrides})


def zero_delay_check(seed: int) -> Check:
    """Honest, zero delay, cancel-first: measured = stale-fill rate."""
    document = _document(seed, {"chain.ordering": "cancel_first"})
    world = World.build(parse_scenario(document), 0)
    world.run()
    rate = run_metrics(world)["stale_fill_rate"] or 0.0
    note = f"{len(world.cancels)} cancels, {len(world.fills)} fills"
    return Check.compare("zero delay, cancel-first: stale", 0.0, rate, 0.0, note)


def events_digest(seed: int) -> tuple[str, int]:
    """The sha256 of one run's ``events.csv`` of the delaying arm, and its transactions."""
    stream = io.StringIO(newline="")
    world = World.build(parse_scenario(_document(seed, DELAYING)), 0, EventLog.start(stream))
    world.run()
    return hashlib.sha256(stream.getvalue().encode()).hexdigest(), len(world.txs)


def determinism_check(seed: int) -> Check:
    """Two runs, one seed: measured = 1 if their event logs differ."""
    (first, txs), (second, _) = events_digest(seed), events_digest(seed)
    note = f"{txs} txs on the court, events.csv sha256 {first[:16]}…"
    return Check.compare("world determinism (events.csv)", 0.0, float(first != second), 0.0, note)


def workers_check(seed: int) -> Check:
    """One sweep on 1 and on 4 processes: measured = 1 if the summaries differ."""
    document = _document(seed, DELAYING)
    grid = {"operator.delay_ms": [0, 400]}
    summaries = []
    with tempfile.TemporaryDirectory() as scratch:
        for workers in (1, 4):
            out = Path(scratch) / f"w{workers}"
            run_sweep(document, Path.cwd(), grid, 2, out, backend="process", workers=workers)
            summaries.append((out / "summary.csv").read_bytes())
    digest = hashlib.sha256(summaries[0]).hexdigest()[:16]
    differ = float(summaries[0] != summaries[1])
    return Check.compare("sweep on 1 and 4 workers", 0.0, differ, 0.0, f"summary {digest}…")


def closed_form_check(seed: int, replicates: int = CLOSED_FORM_REPLICATES) -> Check:
    """Mean ``loss_vs_closed_form`` of a lone maker's held cancels against 1."""
    scenario = parse_scenario(_document(seed, LONE_MAKER))
    ratios = []
    for replicate in range(replicates):
        world = World.build(scenario, replicate)
        world.run()
        ratios.append(run_metrics(world)["loss_vs_closed_form"])
    mean = statistics.fmean(ratios)
    stderr = statistics.stdev(ratios) / math.sqrt(replicates)
    note = f"{replicates} replicates of {scenario.run.horizon_s:g} s"
    return Check.compare("held cancels / closed form", 1.0, mean, stderr, note)


def run_world_checks(seed: int) -> list[Check]:
    """The world's checks (seconds; the sweep check starts worker processes)."""
    return [
        zero_delay_check(seed),
        determinism_check(seed),
        workers_check(seed),
        closed_form_check(seed),
    ]
