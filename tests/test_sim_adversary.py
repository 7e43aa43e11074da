"""The lab's adversary: the directed match it relies on, its strategies, its best response."""

from __future__ import annotations

import csv
import io
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cancelnote.api import BookDepth, request_to_wire
from cancelnote.crypto import Signer
from cancelnote.messages import Domain
from cancelnote.operator.engine import Engine
from cancelnote.operator.journal import Matched
from cancelnote.operator.policies import Delay, TargetSenders
from cancelnote.operator.testing import Trader
from cancelnote.sim.adversary import Axis, HoldUnderPatience, build_adversary
from cancelnote.sim.attack import Estimate, grid_points, refined_points, search
from cancelnote.sim.config import ScenarioError
from cancelnote.sim.eventlog import EventLog
from cancelnote.sim.records import DROPPED, HELD, HONEST, INTENTS, NEVER
from cancelnote.sim.scenario import OperatorSpec, apply_overrides, parse_scenario
from cancelnote.sim.world import World

DOMAIN = Domain(31337, "0x" + "c0" * 20)
T0 = 1_800_000_000_000
X18 = 10**18
SIMULATIONS = Path(__file__).parent.parent / "simulations"
SEED = 20261123


def _engine() -> Engine:
    return Engine(Signer(bytes.fromhex("aa" * 32)), DOMAIN, {1})


def _trader(n: int) -> Trader:
    return Trader(Signer(bytes([n]) * 32), DOMAIN)


def _book_with_two_bids(engine: Engine) -> tuple[bytes, bytes, Trader]:
    """Two resting bids: a better one (100.02) and the target (100.00)."""
    maker = _trader(1)
    better = maker.order(1, 10_002 * X18 // 100, 5 * X18, T0)
    target = maker.order(1, 100 * X18, 5 * X18, T0)
    for placed in (better, target):
        engine.handle(placed, T0)
    return better.order.digest(DOMAIN), target.order.digest(DOMAIN), _trader(2)


def test_a_directed_match_fills_the_target_not_the_better_priced_order():
    engine = _engine()
    _, target, sniper = _book_with_two_bids(engine)
    taker = sniper.order(1, 100 * X18, -5 * X18, T0 + 1)
    outputs = engine.match_directed(taker, target, T0 + 1)
    (match,) = [o for o in outputs if isinstance(o, Matched)]
    assert match.maker == target and match.price_x18 == 100 * X18 and match.amount == 5 * X18
    book = engine.handle(BookDepth(1), T0 + 1)[-1].wire["data"]
    assert book["bids"] == [[str(10_002 * X18 // 100), str(5 * X18)]] and book["asks"] == []


def test_a_plain_order_at_the_targets_price_fills_the_better_one_instead():
    """What the old sniper did: price-time priority takes the better bid first."""
    engine = _engine()
    better, _, sniper = _book_with_two_bids(engine)
    outputs = engine.handle(sniper.order(1, 100 * X18, -5 * X18, T0 + 1), T0 + 1)
    (match,) = [o for o in outputs if isinstance(o, Matched)]
    assert match.maker == better


@pytest.mark.parametrize(
    ("amount", "price", "target_index", "code", "reason"),
    [
        (5, 100, 1, "INVALID_ORDER", "opposite side"),  # a bid cannot fill a bid
        (-5, 101, 1, "INVALID_ORDER", "cross"),  # selling above the target's price
        (-6, 100, 1, "INVALID_ORDER", "exceeds"),  # more than the target has
        (-5, 100, 2, "NOT_FOUND", "no resting order"),
    ],
)
def test_a_directed_match_that_cannot_be_is_refused_and_changes_nothing(
    amount, price, target_index, code, reason
):
    engine = _engine()
    better, target, sniper = _book_with_two_bids(engine)
    digest = (better, target, bytes(32))[target_index]
    before = engine.snapshot()
    outputs = engine.match_directed(
        sniper.order(1, price * X18, amount * X18, T0 + 1), digest, T0 + 1
    )
    (answer,) = outputs
    assert answer.wire["status"] == "failure" and answer.wire["error_code"] == code
    assert reason in answer.wire["error"]
    assert engine.snapshot() == before


def test_a_directed_match_replays_from_the_journal_to_the_same_state():
    source, journal = _engine(), []

    def call(outputs: list) -> None:
        journal.extend(o for o in outputs if hasattr(o, "KIND"))  # the journal entries

    maker, sniper = _trader(1), _trader(2)
    orders = [
        maker.order(1, 10_002 * X18 // 100, 5 * X18, T0),
        maker.order(1, 100 * X18, 5 * X18, T0),
    ]
    for placed in orders:
        call(source.handle(placed, T0))
    taker = sniper.order(1, 100 * X18, -5 * X18, T0 + 1)
    call(source.match_directed(taker, orders[1].order.digest(DOMAIN), T0 + 1))
    assert any(isinstance(entry, Matched) for entry in journal)
    replay = _engine()
    replay.restore(journal)
    assert replay.snapshot() == source.snapshot()


def test_no_wire_request_reaches_the_directed_match():
    engine = _engine()
    _, target, sniper = _book_with_two_bids(engine)
    wire = request_to_wire(sniper.order(1, 100 * X18, -5 * X18, T0 + 1))
    forged = {"match_directed": {**wire["place_order"], "target": "0x" + target.hex()}}
    (answer,) = engine.handle_wire(forged, T0 + 1)
    assert answer.wire["status"] == "failure" and answer.wire["error_code"] == "INVALID_MESSAGE"
    assert "match_directed" not in {cls.__name__ for cls in Engine._HANDLERS}


def test_target_senders_holds_only_the_targeted_clients_cancels():
    engine = Engine(Signer(bytes.fromhex("aa" * 32)), DOMAIN, {1})
    watched, unwatched = _trader(1), _trader(3)
    engine.policy = TargetSenders(Delay(500), frozenset({unwatched.sender}))
    for who in (watched, unwatched):
        placed = who.order(1, 100 * X18, X18, T0)
        engine.handle(placed, T0)
        outputs = engine.handle(who.cancel([placed], T0 + 1), T0 + 1)
        replied = [o for o in outputs if type(o).__name__ == "Reply"]
        assert bool(replied) == (who is watched)


# --- strategies in the world -------------------------------------------------------------

FIXED = {
    "run.seed": SEED,
    "run.horizon_s": 6,
    "makers.count": 2,
    "takers.rate_per_s": 0.0,
    "client.force_after_ms": 300,
    "chain.block_time_s": 1,
    "latency.entry": {"model": "fixed", "ns": 1_000_000},
    "latency.response": {"model": "fixed", "ns": 1_000_000},
}


def _run(policy: str, **params: object) -> World:
    text = (SIMULATIONS / "fixed_delay.toml").read_text(encoding="utf-8")
    overrides = {**FIXED, "operator.policy": policy, "operator.params": dict(params)}
    world = World.build(parse_scenario(apply_overrides(tomllib.loads(text), overrides)), 0)
    world.run()
    return world


def _holds_ms(world: World) -> np.ndarray:
    table = world.recorder.table()
    noted = table[(table["t_note"] != NEVER) & (table["t_recv"] != NEVER)]
    return (noted["t_note"] - noted["t_recv"]) / 1e6


def test_patience_holds_just_under_the_watchtower_and_is_never_forced():
    world = _run("patience", margin_ms=5)
    holds = _holds_ms(world)
    assert holds.size and np.allclose(holds, 295, atol=1)
    assert world.disputes == [] and world.txs == []
    table = world.recorder.table()
    assert (table["intent"] == INTENTS.index(HELD)).all()


def test_a_hold_past_the_patience_is_forced_on_chain():
    late = _run("patience", margin_ms=0)  # 2 ms late, but there before the next block
    assert late.disputes == []
    world = _run("patience", margin_ms=-2_000)  # still missing at the next block
    assert any(case.kind == "force_cancel" for case in world.disputes)


def test_floor_holds_only_what_is_worth_holding():
    everything, picky = (
        _run("floor", delay_ms=200, min_gain=0.0),
        _run("floor", delay_ms=200, min_gain=0.02),
    )
    intents = lambda w: w.recorder.table()["intent"]  # noqa: E731
    assert (intents(everything) == INTENTS.index(HELD)).all()
    held = (intents(picky) == INTENTS.index(HELD)).mean()
    assert 0.0 < held < 0.7
    assert (intents(picky)[intents(picky) != INTENTS.index(HELD)] == INTENTS.index(HONEST)).all()


def test_unwatched_holds_only_clients_without_a_watchtower():
    text = (SIMULATIONS / "fixed_delay.toml").read_text(encoding="utf-8")
    overrides = {
        **FIXED,
        "client.watchtower_share": 0.5,
        "operator.policy": "unwatched",
        "operator.params": {"delay_ms": 2_000},
    }
    world = World.build(parse_scenario(apply_overrides(tomllib.loads(text), overrides)), 0)
    world.run()
    table = world.recorder.table()
    held = table["intent"] == INTENTS.index(HELD)
    assert set(table["client"][held].tolist()) == {1}  # mm/1, the unwatched maker
    assert set(table["client"][~held].tolist()) == {0}
    assert world.disputes == []  # mm/1 never goes to court, mm/0 is never held


def test_split_holds_cancels_and_new_orders_and_snipes_both():
    stream = io.StringIO(newline="")
    text = (SIMULATIONS / "fixed_delay.toml").read_text(encoding="utf-8")
    overrides = {
        **FIXED,
        "operator.policy": "split",
        "operator.params": {"cancel_ms": 100, "requote_ms": 150},
    }
    world = World.build(
        parse_scenario(apply_overrides(tomllib.loads(text), overrides)), 0, EventLog.start(stream)
    )
    world.run()
    assert np.allclose(_holds_ms(world), 100, atol=1)
    rows = list(csv.reader(io.StringIO(stream.getvalue())))[1:]
    held_orders = {row[3] for row in rows if row[1] == "order_hold"}
    held_cancels = {row[3] for row in rows if row[1] == "cancel_hold"}
    sniped = {row[3] for row in rows if row[1] == "snipe"}
    assert sniped & held_orders and sniped & held_cancels  # both legs of the split pay


def test_an_engine_policy_takes_no_params_table():
    with pytest.raises(ScenarioError, match=r"\[operator.params\]"):
        build_adversary(OperatorSpec(policy="delay", params={"delay_ms": 5}))
    with pytest.raises(ScenarioError, match="margin_msx"):
        build_adversary(OperatorSpec(policy="patience", params={"margin_msx": 5}))


def test_a_dropped_order_is_sniped_by_a_directed_match_until_forced():
    text = (SIMULATIONS / "fixed_delay.toml").read_text(encoding="utf-8")
    overrides = {**FIXED, "operator.policy": "ignore", "operator.ignore_p": 1.0}
    world = World.build(parse_scenario(apply_overrides(tomllib.loads(text), overrides)), 0)
    world.run()
    table = world.recorder.table()
    assert (table["intent"] == INTENTS.index(DROPPED)).all() and table["forced"].any()


# --- the best-response search ------------------------------------------------------------


def test_an_integer_axis_rounds_and_deduplicates():
    assert Axis(0, 10, points=5, integer=True).values() == [0, 2, 5, 8, 10]
    assert Axis(0, 1, points=5, integer=True).values() == [0, 1]
    assert Axis(0.0, 1.0, points=3).values(0.25, 2.0) == [0.25, 0.625, 1.0]


def test_refinement_searches_between_the_best_points_neighbours():
    space = {"x": Axis(0.0, 8.0, points=5)}
    tried = grid_points(space)
    assert [dict(p)["x"] for p in tried] == [0.0, 2.0, 4.0, 6.0, 8.0]
    finer = refined_points(space, (("x", 6.0),), tried)
    assert [dict(p)["x"] for p in finer] == [4.0, 5.0, 6.0, 7.0, 8.0]


def _toy(optimum: tuple[float, float], noise: float):
    """A toy policy: its mean gain is 10 − (x − a)² − (y − b)²/4, each replicate adding
    independent noise of sd ``noise`` (seeded by point and replicate)."""

    def evaluate(points, first, count):
        estimates = []
        for point in points:
            x, y = dict(point)["x"], dict(point)["y"]
            value = 10 - (x - optimum[0]) ** 2 - (y - optimum[1]) ** 2 / 4
            stream = np.random.default_rng([round(x * 1e6), round(y * 1e6), first])
            draws = value + noise * stream.standard_normal(count)
            mean, sd = float(draws.mean()), float(draws.std(ddof=1))
            estimates.append(Estimate(point, mean, 2.0 * sd / math.sqrt(count), count, {}))
        return estimates

    return evaluate


def test_the_search_finds_the_planted_optimum_of_a_toy_policy():
    space = {"x": Axis(0.0, 10.0, points=6), "y": Axis(0, 40, points=5, integer=True)}
    found = search(space, _toy((3.3, 27.0), noise=0.0), seeds=4, rounds=4)
    best = dict(found[0].point)
    assert best["x"] == pytest.approx(3.3, abs=0.15) and best["y"] in (26, 27, 28)
    assert found[0].mean == pytest.approx(10.0, abs=0.05)


def test_the_search_finds_the_optimum_through_noise_within_its_resolution():
    space = {"x": Axis(0.0, 10.0, points=6), "y": Axis(0, 40, points=5, integer=True)}
    found = search(space, _toy((6.7, 12.0), noise=0.3), seeds=16, rounds=3)
    best = dict(found[0].point)
    assert abs(best["x"] - 6.7) < 0.6 and abs(best["y"] - 12) <= 4


def test_the_patience_strategy_searches_margins_up_to_the_patience():
    scenario = parse_scenario(
        apply_overrides(
            tomllib.loads((SIMULATIONS / "fixed_delay.toml").read_text(encoding="utf-8")),
            {"client.force_after_ms": 300},
        )
    )
    space = HoldUnderPatience.search_space(scenario)
    assert space["margin_ms"].low == -2_000 and space["margin_ms"].high == 300  # a block
