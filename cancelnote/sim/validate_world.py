"""The world's checks for ``cancelnote sim validate``: exact properties of the full simulator.

Each is a :class:`~.validate.Check` that must match exactly (standard error 0), on a
small scenario embedded here (so the checks run from any directory):

* an honest operator with zero delay and ``cancel_first`` ordering leaves zero stale
  fills (a cancel is answered the instant it arrives; nothing can fill after it);
* the same scenario and seed write a byte-identical ``events.csv``, through the real
  engine, the real verifier and watchtower and the court (a delaying operator whose
  cancels are forced on-chain, so every part runs);
* a sweep writes the same ``summary.csv`` on 1 and on 4 worker processes;
* statistically, the world against the §5 closed form across a grid of volatility,
  hold, distance and overlap (:data:`GRID`): one maker, no other trader, a fixed 1 ms
  link and an operator holding every cancel; the operator's taker fills exactly the
  held order it targets, so its take over the §5 value of each hold
  (``loss_vs_closed_form``, with the *effective* hold: tick to tick) is 1 within 3
  standard errors over replicates (Student's t: a correct simulator fails a point with
  probability :func:`~.validate.false_alarm_probability`, 0.009 at 16 replicates).

The grid is chosen for power: the maker requotes before the mid reaches its quotes
(``requote_threshold`` < ``half_spread``), so a held order is not yet in the money when
its hold begins and the value is time value, not intrinsic value (the note of each row
gives the intrinsic share). Each row also gives the z the same runs would show against a
hold 1/16 as long (a check that passes a hold 1/16 as long tests nothing); holds
overlap where requotes come faster than holds end, and one point holds 250 ms on a
100 ms feed, where the effective hold differs from the nominal one.
"""

from __future__ import annotations

import hashlib
import io
import math
import statistics
import tempfile
import tomllib
from pathlib import Path

import attrs
import numpy as np

from .eventlog import EventLog
from .metrics import closed_form_ratio, intrinsic_share, run_metrics
from .records import HELD, INTENTS
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
#: The closed-form checks: a lone maker, no takers, no jitter, no court.
LONE_MAKER = {
    "run.horizon_s": 20,
    "makers.count": 1,
    "takers.rate_per_s": 0.0,
    "operator.policy": "delay",
    "client.dispute": False,
    "latency.entry": {"model": "fixed", "ns": 1_000_000},
    "latency.response": {"model": "fixed", "ns": 1_000_000},
}
CLOSED_FORM_REPLICATES = 16
#: The power check: the z the same runs show against a hold this much shorter.
WRONG_HOLD_SCALE = 1 / 16


@attrs.frozen
class HoldPoint:
    """One point of the closed-form grid: volatility, hold, the maker's quotes, the feed."""

    name: str
    sigma: float
    delay_ms: int
    half_spread: float
    requote_threshold: float
    tick_ms: int = 10
    horizon_s: float = 20.0

    def overrides(self) -> dict[str, object]:
        return {
            **LONE_MAKER,
            "run.horizon_s": self.horizon_s,
            "market.sigma": self.sigma,
            "operator.delay_ms": self.delay_ms,
            "makers.half_spread": self.half_spread,
            "makers.requote_threshold": self.requote_threshold,
            "feed.tick_ms": self.tick_ms,
        }


#: σ per √s, hold ms, half-spread, requote threshold (and feed tick): every point keeps
#: the quote out of the money at the cancel; the first three overlap holds.
GRID = (
    HoldPoint("σ .05, 500 ms, s .04, overlap", 0.05, 500, 0.04, 0.02),
    HoldPoint("σ .05, 250 ms, s .03, heavy overlap", 0.05, 250, 0.03, 0.01, horizon_s=8.0),
    HoldPoint("σ .1, 1 s, s .08, overlap", 0.1, 1000, 0.08, 0.06),
    HoldPoint("σ .05, 200 ms, s .06, disjoint", 0.05, 200, 0.06, 0.05),
    HoldPoint("σ .05, 250 ms, 100 ms feed", 0.05, 250, 0.04, 0.02, tick_ms=100),
)


def _document(seed: int, overrides: dict[str, object]) -> dict[str, object]:
    return apply_overrides(tomllib.loads(SCENARIO), {"run.seed": seed, **overrides})


def zero_delay_check(seed: int) -> Check:
    """Honest, zero delay, cancel-first: measured = stale-fill rate."""
    document = _document(seed, {"chain.ordering": "cancel_first"})
    world = World.build(parse_scenario(document), 0)
    world.run()
    rate = run_metrics(world)["stale_fill_rate"] or 0.0
    note = f"{world.recorder.closed} cancels, {world.fills} fills"
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


@attrs.frozen
class HoldRuns:
    """What the replicates of one grid point measured."""

    ratios: list[float]
    wrong_ratios: list[float]  # against a hold WRONG_HOLD_SCALE as long
    intrinsic: float  # mean intrinsic share of the closed-form value
    in_flight: float  # mean number of held cancels at once


def hold_runs(seed: int, point: HoldPoint, replicates: int = CLOSED_FORM_REPLICATES) -> HoldRuns:
    """Run one grid point's replicates."""
    scenario = parse_scenario(_document(seed, point.overrides()))
    ratios: list[float] = []
    wrong: list[float] = []
    intrinsic: list[float] = []
    in_flight: list[float] = []
    for replicate in range(replicates):
        world = World.build(scenario, replicate)
        world.run()
        table = world.recorder.table()
        mids = np.frombuffer(world.mids, dtype=float)
        ratio = closed_form_ratio(world, table, mids)
        wrong_ratio = closed_form_ratio(world, table, mids, WRONG_HOLD_SCALE)
        share = intrinsic_share(world, table, mids)
        if ratio is None or wrong_ratio is None or share is None:
            raise ValueError(f"{point}: replicate {replicate} held nothing to compare")
        ratios.append(ratio)
        wrong.append(wrong_ratio)
        intrinsic.append(share)
        held = int((table["intent"] == INTENTS.index(HELD)).sum())
        in_flight.append(held * point.delay_ms / 1e3 / scenario.run.horizon_s)
    return HoldRuns(ratios, wrong, statistics.fmean(intrinsic), statistics.fmean(in_flight))


def closed_form_check(
    seed: int, point: HoldPoint = GRID[0], replicates: int = CLOSED_FORM_REPLICATES
) -> Check:
    """Mean ``loss_vs_closed_form`` of one grid point's held cancels against 1 (z is t
    with ``replicates − 1`` degrees of freedom); the note gives the intrinsic share, the
    holds in flight and the z against a hold 1/16 as long."""
    return hold_check(point, hold_runs(seed, point, replicates))


def hold_check(point: HoldPoint, runs: HoldRuns) -> Check:
    """The check of one grid point from its runs."""
    mean, stderr = _mean_se(runs.ratios)
    df = len(runs.ratios) - 1
    note = (
        f"{df + 1} reps; intrinsic {runs.intrinsic:.0%}, {runs.in_flight:.1f} held at"
        f" once; z at d/16 {wrong_hold_check(runs).z:.0f}"
    )
    return Check.compare(f"closed form: {point.name}", 1.0, mean, stderr, note, df)


def wrong_hold_check(runs: HoldRuns) -> Check:
    """The same runs against the closed form of a hold 1/16 as long: it must fail."""
    mean, stderr = _mean_se(runs.wrong_ratios)
    return Check.compare("hold / 16", 1.0, mean, stderr, df=len(runs.wrong_ratios) - 1)


def _mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def run_world_checks(seed: int) -> list[Check]:
    """The world's checks (seconds; the sweep check starts worker processes)."""
    return [
        zero_delay_check(seed),
        determinism_check(seed),
        workers_check(seed),
        *(closed_form_check(seed, point) for point in GRID),
    ]
