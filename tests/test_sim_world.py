"""The world: the real engine, verifier, watchtower and court, deterministic and telling."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tomllib

import pytest

from cancelnote.client.verifier import Kind
from cancelnote.sim.eventlog import EventLog
from cancelnote.sim.metrics import aggregate, run_metrics, t975
from cancelnote.sim.records import INTENTS, NEVER
from cancelnote.sim.scenario import apply_overrides, parse_scenario
from cancelnote.sim.validate_world import (
    SCENARIO,
    determinism_check,
    zero_delay_check,
)
from cancelnote.sim.world import World

SEED = 20261123
#: The demo's world, shorter: a delaying operator against four makers.
DELAYING = {
    "run.horizon_s": 8,
    "makers.count": 4,
    "makers.requote_threshold": 0.04,
    "takers.rate_per_s": 1.0,
    "operator.policy": "delay",
    "client.force_after_ms": 250,
    "court.dispute_bond": 0.01,
}


def _world(overrides: dict, replicate: int = 0, log: EventLog | None = None) -> World:
    document = apply_overrides(tomllib.loads(SCENARIO), {"run.seed": SEED, **overrides})
    return World.build(parse_scenario(document), replicate, log)


def _metrics(overrides: dict, replicates: int = 2) -> list[dict]:
    runs = []
    for r in range(replicates):
        world = _world(overrides, r)
        world.run()
        runs.append(run_metrics(world))
    return runs


def _total(runs: list[dict], name: str) -> float:
    return sum(run[name] for run in runs)


@pytest.fixture(scope="module")
def delay_runs() -> dict[tuple[int, bool], list[dict]]:
    """Delays 100 and 2000 ms, the on-chain defence off and on (common random numbers)."""
    return {
        (d, dispute): _metrics({**DELAYING, "operator.delay_ms": d, "client.dispute": dispute})
        for d in (100, 2000)
        for dispute in (False, True)
    }


def test_a_longer_delay_costs_the_clients_more(delay_runs):
    short, long = delay_runs[(100, False)], delay_runs[(2000, False)]
    assert _total(long, "client_loss") > 1.5 * _total(short, "client_loss") > 0
    # The operator's own taker looks only at the end of a hold; in a long hold the noise
    # takers fill many stale orders first, so its take does not grow with the hold.
    assert _total(long, "operator_gain_gross") > 0
    assert _total(long, "hold_p50_ms") == pytest.approx(2 * 2000, abs=2)


def test_forced_cancels_take_gain_back_from_a_long_delay(delay_runs):
    off, on = delay_runs[(2000, False)], delay_runs[(2000, True)]
    assert _total(on, "disputes_filed") > 0 and _total(off, "disputes_filed") == 0
    assert _total(on, "operator_gain_gross") < _total(off, "operator_gain_gross")
    assert _total(on, "operator_gain_net") < _total(off, "operator_gain_net")
    assert all(run["false_positive_disputes"] == 0 for run in on)


def test_a_short_delay_ends_before_the_watchtower_acts(delay_runs):
    assert delay_runs[(100, True)] == delay_runs[(100, False)]


def test_honest_operator_zero_delay_cancel_first_leaves_no_stale_fill():
    assert zero_delay_check(SEED).passed


def test_same_seed_gives_byte_identical_events_csv_through_court_and_clients():
    check = determinism_check(SEED)
    assert check.passed and int(check.note.split()[0]) > 0  # disputes ran on the court


def _events_sha(overrides: dict, replicate: int = 0) -> str:
    stream = io.StringIO(newline="")
    _world(overrides, replicate, EventLog.start(stream)).run()
    return hashlib.sha256(stream.getvalue().encode()).hexdigest()


def test_events_csv_is_the_same_in_another_process_and_hash_seed():
    overrides = {"operator.policy": "delay", "operator.delay_ms": 400}
    here = _events_sha(overrides)
    code = f"from tests.test_sim_world import _events_sha;print(_events_sha({overrides!r}))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    ).stdout.strip()  # fmt: skip
    assert there == here
    assert _events_sha(overrides, replicate=1) != here


def test_backdated_notes_are_found_by_the_real_verifier_and_proven_by_the_watchtower():
    world = _world(
        {"operator.policy": "backdate", "operator.delay_ms": 400, "operator.backdate_ms": 400}
    )
    clients = [maker.client for maker in world.makers]
    findings: list[str] = []
    original = clients[0].receive

    def spy(wire: dict, now_ms: int):
        received = original(wire, now_ms)
        findings.extend(f.kind for f in received.findings)
        return received

    clients[0].receive = spy  # type: ignore[method-assign]
    world.run()
    assert Kind.FILL_AFTER_NOTE in findings
    proofs = [case for case in world.disputes if case.kind == "prove_fill_after_note"]
    assert proofs and all(case.block_filed == case.block_resolved for case in proofs)
    assert any(case.outcome == "won" and case.paid_wei > 0 for case in proofs)


def test_dropped_cancels_are_forced_and_the_court_records_the_answer():
    world = _world(
        {"operator.policy": "ignore", "operator.ignore_p": 0.5, "client.force_after_ms": 300}
    )
    world.run()
    table = world.recorder.table()
    dropped = table[table["intent"] == INTENTS.index("dropped")]
    forced = dropped[dropped["forced"]]
    settled = forced[forced["t_eff"] != NEVER]
    assert len(settled) and settled["note_on_chain"].all()
    assert (settled["t_eff"] > settled["t_note"]).all()
    assert world.answers == sum(case.outcome == "lost" for case in world.disputes) > 0
    assert {tx.function for tx in world.txs} >= {"ForceCancel", "answerCancel"}


def test_aggregate_gives_the_t_interval_and_skips_undefined_runs():
    stats = aggregate([{"x": 1.0, "y": None}, {"x": 3.0, "y": None}, {"x": 2.0, "y": 4.0}])
    assert stats["x"]["mean"] == 2.0
    assert stats["x"]["ci95"] == pytest.approx(t975(2) * 1.0 / 3**0.5)
    assert stats["y"] == {"mean": 4.0, "ci95": None, "n": 1.0}
    assert t975(1) == 12.706 and t975(100) == pytest.approx(1.984, abs=1e-3)
