"""The six findings of the lab's review (issue 11), each a test that failed before the fix.

1. The sniper filled whichever held order had the better price, not its target.
2. The world's closed-form check had little power (the value was mostly intrinsic) and
   its false-alarm rate was stated for a normal z, not Student's t.
3. ``loss_vs_closed_form`` used the nominal hold, not the one the feed grid lets the
   operator see.
4. ``HeldCancel.closed_form()`` for jump-diffusion returned the diffusion-only value.
5. Sweeps reported no paired differences between arms, though arms share seeds.
6. Memory grew with the horizon (every record kept in memory).
"""

from __future__ import annotations

import csv
import gc
import io
import json
import math
import statistics
import tomllib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cancelnote import messages
from cancelnote.client import evidence
from cancelnote.sim.closed_forms import HeldCancel, held_value
from cancelnote.sim.eventlog import EventLog
from cancelnote.sim.market import JumpDiffusion
from cancelnote.sim.metrics import run_metrics, t975
from cancelnote.sim.records import HELD, INTENTS, NEVER
from cancelnote.sim.scenario import apply_overrides, parse_scenario
from cancelnote.sim.sweep import run_sweep
from cancelnote.sim.validate import Check, false_alarm_probability
from cancelnote.sim.validate_world import (
    GRID,
    SCENARIO,
    HoldRuns,
    hold_check,
    hold_runs,
    wrong_hold_check,
)
from cancelnote.sim.world import World

SEED = 20261123
SIMULATIONS = Path(__file__).parent.parent / "simulations"


def _world(overrides: dict, replicate: int = 0, log: EventLog | None = None) -> World:
    document = apply_overrides(tomllib.loads(SCENARIO), {"run.seed": SEED, **overrides})
    return World.build(parse_scenario(document), replicate, log)


def test_the_sniper_fills_exactly_the_held_order_it_targets_when_holds_overlap():
    """Heavy overlap: several held bids at once, the sniper targets one at a time."""
    stream = io.StringIO(newline="")
    world = _world({**GRID[1].overrides(), "run.horizon_s": 6}, log=EventLog.start(stream))
    world.run()
    rows = list(csv.reader(io.StringIO(stream.getvalue())))[1:]
    snipes = wrong = 0
    for i, row in enumerate(rows):
        if row[1] == "snipe":
            filled = next(r for r in rows[i + 1 :] if r[1] == "fill")
            snipes += 1
            wrong += filled[3] != row[3]
    assert snipes > 20 and wrong == 0


@pytest.fixture(scope="module")
def grid_runs() -> dict[str, HoldRuns]:
    """The validation's overlapping points and its coarse-feed point, 16 replicates each."""
    return {point.name: hold_runs(SEED, point) for point in (*GRID[:3], GRID[4])}


@pytest.mark.parametrize("point", [*GRID[:3], GRID[4]], ids=lambda p: p.name)
def test_the_world_agrees_with_the_closed_form_at_overlapping_holds(grid_runs, point):
    runs = grid_runs[point.name]
    check = hold_check(point, runs)
    assert check.passed, check
    if point.tick_ms == 10:
        assert runs.in_flight > 2  # several holds at once


@pytest.mark.parametrize("point", GRID[:3], ids=lambda p: p.name)
def test_the_world_check_is_on_time_value_and_rejects_a_hold_sixteen_times_shorter(
    grid_runs, point
):
    runs = grid_runs[point.name]
    assert runs.intrinsic < 0.05  # the value is time value, not the quote already crossed
    wrong = wrong_hold_check(runs)
    assert not wrong.passed and abs(wrong.z) > 3


def test_the_false_alarm_rate_of_a_replicate_check_is_students_t():
    assert false_alarm_probability(15) == pytest.approx(0.00897, abs=1e-5)
    assert false_alarm_probability(None) == pytest.approx(0.0027, abs=1e-4)
    assert Check.compare("x", 1.0, 1.0, 0.1, df=15).false_alarm > 3 * (1 / 370)
    assert t975(15) == pytest.approx(2.131)


def test_loss_vs_closed_form_uses_the_hold_the_feed_grid_shows():
    """250 ms holds on a 100 ms feed: cancels arrive 1 ms after a tick and the sniper
    looks 249 ms later, so it acts on two ticks of move (200 ms), not 250 ms."""
    point = GRID[4]
    world = _world({**point.overrides(), "run.horizon_s": 10})
    world.run()
    table = world.recorder.table()
    held = table[(table["intent"] == INTENTS.index(HELD)) & (table["t_look"] != NEVER)]
    tick = point.tick_ms * 10**6
    mids = np.frombuffer(world.mids, dtype=float)
    ticks = held["t_look"] // tick - held["t_recv"] // tick
    assert set(ticks.tolist()) == {2}
    sigma, loss = point.sigma, float(held["loss"].sum())
    distance = held["side"] * (mids[held["t_recv"] // tick] - held["price"])

    def expected(holds_s: np.ndarray) -> float:
        return sum(
            q * held_value(sigma * math.sqrt(d), s)
            for q, d, s in zip(held["quantity"], holds_s, distance, strict=True)
        )

    metric = run_metrics(world)["loss_vs_closed_form"]
    assert metric == pytest.approx(loss / expected(ticks * point.tick_ms / 1e3), rel=1e-9)
    nominal = loss / expected(np.full(len(held), point.delay_ms / 1e3))
    assert abs(metric - nominal) > 0.01 * nominal


def test_held_cancel_closed_form_refuses_jump_diffusion():
    case = HeldCancel(JumpDiffusion(sigma=0.1, jump_rate=2.0, jump_sd=0.5), 1.0, 0.2)
    with pytest.raises(ValueError, match="no closed form"):
        case.closed_form()


def test_a_sweep_reports_paired_differences_that_a_recomputation_from_per_seed_files_gives(
    tmp_path,
):
    text = (SIMULATIONS / "fixed_delay.toml").read_text(encoding="utf-8")
    document = apply_overrides(
        tomllib.loads(text), {"run.horizon_s": 3, "makers.count": 2, "client.dispute": False}
    )
    out = tmp_path / "sweep"
    run_sweep(document, SIMULATIONS, {"operator.delay_ms": [0, 300]}, 4, out, backend="serial")
    with open(out / "differences.csv", newline="", encoding="utf-8") as stream:
        rows = {row["metric"]: row for row in csv.DictReader(stream) if row["point"] == "1"}
    runs = {
        (p, r): json.loads((out / "results" / f"p{p:04d}-r{r:04d}.json").read_text())
        for p in (0, 1)
        for r in range(4)
    }
    for metric in ("operator_gain_gross", "stale_fill_rate", "hold_p50_ms"):
        pairs = [runs[(1, r)][metric] - runs[(0, r)][metric] for r in range(4)]
        mean, sd = statistics.fmean(pairs), statistics.stdev(pairs)
        assert float(rows[metric]["diff_mean"]) == pytest.approx(mean, rel=1e-12, abs=1e-12)
        assert float(rows[metric]["diff_ci95"]) == pytest.approx(t975(3) * sd / 2, rel=1e-12)
        assert rows[metric]["reference"] == "0" and rows[metric]["n"] == "4"


def _traced(horizon_s: float) -> tuple[int, int, int]:
    """After a run of 20 makers: bytes the world keeps beside its engine, bytes the engine
    keeps, and the engine's orders (bounded caches emptied first)."""
    document = apply_overrides(
        tomllib.loads((SIMULATIONS / "fixed_delay.toml").read_text(encoding="utf-8")),
        {"run.horizon_s": horizon_s, "makers.count": 20},
    )
    scenario = parse_scenario(document)
    tracemalloc.start()
    try:
        world = World.build(scenario, 0)
        world.run()
        evidence._bodies.clear()  # the bounded caches of parsed bodies and hashes
        messages._struct_hash.cache_clear()
        messages._digest.cache_clear()
        gc.collect()
        total = tracemalloc.get_traced_memory()[0]
        orders = len(world.engine.snapshot()["orders"])  # those in memory
        world.engine = None  # type: ignore[assignment]
        gc.collect()
        lab = tracemalloc.get_traced_memory()[0]
        return lab, total - lab, orders
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_in_the_horizon_engine_included():
    """The lab's own records are spooled to disk once closed, the clients let closed
    orders' evidence go from memory, and the engine retires finished orders to its
    archive once their nonces' recv_time passed (50 s here): what the world and the engine
    keep does not grow with the horizon once past that window (before the engine's
    archive, the engine kept every order, about 1.2 KB each, two a requote)."""
    _traced(2.0)  # imports and first-use allocations
    lab_short, engine_short, orders_short = _traced(70.0)
    lab_long, engine_long, orders_long = _traced(110.0)
    assert (lab_long - lab_short) / 40 / 20 < 500  # per maker-second: the mid-price feed
    assert (engine_long - engine_short) / 40 / 20 < 500  # (it was about 4 KB)
    assert orders_long < 1.2 * orders_short
