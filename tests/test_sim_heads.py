"""Journal heads in the lab: the simulated operator journals into the real log and signs
real heads every H; the simulated clients follow them with the real HeadsVerifier and
their watchtowers prove what heads make provable in the real HeadsCourt."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cancelnote.sim.clients import SimClient
from cancelnote.sim.metrics import run_metrics
from cancelnote.sim.scenario import load_scenario
from cancelnote.sim.world import World

SIMULATIONS = Path(__file__).parent.parent / "simulations"
#: answer_window.toml, small: two makers trade 6 s; the in-flight bound is 2 s.
SMALL = {
    "run.horizon_s": 6,
    "run.cooldown_s": 40,
    "makers.count": 2,
    "takers.rate_per_s": 0.0,
    "market.sigma": 0.2,
    "court.max_pending_ms": 2_000,
}
#: The window strategy, backdating: looks at a forced order at its request and 3 s later
#: (past the 2 s bound), stamping the late fill as made within it.
BACKDATING = {
    "operator.params.until_ms": 3_000,
    "operator.params.look_every_ms": 3_000,
    "operator.params.backdate": 1,
}
HEADS = {"heads.interval_ms": 100}


def _run(**overrides: object) -> tuple[World, dict]:
    scenario = load_scenario(SIMULATIONS / "answer_window.toml", {**SMALL, **overrides})
    world = World.build(scenario, 0)
    world.run()
    return world, run_metrics(world)


def _calls(world: World) -> Counter:
    return Counter((tx.function, tx.ok) for tx in world.txs)


@pytest.fixture(scope="module")
def honest() -> tuple[World, dict, list[tuple[int, int, int]]]:
    """An honest operator with heads, and each client's cancels as its store ends: how
    many, how many located in the log, how many with their leaf proven."""
    ends = []
    close = SimClient.close

    def count_then_close(client: SimClient) -> None:
        store = client.store
        cancels = [store.located(c.request_hash) for c in store.cancels()]
        seqs = [seq for seq in cancels if seq is not None]
        ends.append((len(cancels), len(seqs), sum(store.leaf(s) is not None for s in seqs)))
        close(client)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SimClient, "close", count_then_close)
        world, m = _run(**HEADS, **{"operator.policy": "honest", "operator.params": {}})
    return world, m, ends


@pytest.fixture(scope="module")
def backdated() -> tuple[World, dict]:
    return _run(**BACKDATING, **HEADS)


def test_an_honest_operator_signs_a_head_every_h_and_clients_find_nothing_to_dispute(honest):
    world, m, ends = honest
    # Heads from 0 until cancel_heads + 1 intervals after the market closed.
    assert m["heads_signed"] == 6_000 // 100 + 10 + 1 + 1
    assert world.heads_findings.get("UNLOGGED_CANCEL", 0) == 0  # every cancel in the log
    assert m["disputes_filed"] == 0 and m["claims_filed"] == 0 and m["gas_total"] == 0
    assert len(ends) == len(world.makers)
    for cancels, located, proven in ends:  # each client found its cancels in the log
        assert cancels > 0 and located == proven == cancels


def test_the_log_is_the_engines_journal_leaf_for_leaf(honest):
    world, _, _ = honest
    assert world.log is not None
    assert world.log.heads.tree.size == world.engine.last_seq + 1  # and the genesis leaf


def test_backdated_window_fills_are_proven_by_heads_and_paid(backdated):
    world, m = backdated
    calls = _calls(world)
    assert calls[("prove_backdated", True)] >= 1 and not calls[("prove_backdated", False)]
    assert calls[("prove_backdated", True)] <= m["backdated_fills"]  # each a backdated fill
    assert m["operator_penalties"] >= 50.0 * calls[("prove_backdated", True)]


def test_without_heads_the_same_backdated_fills_prove_nothing(backdated):
    world, m = _run(**BACKDATING)
    calls = _calls(world)
    assert m["backdated_fills"] == backdated[1]["backdated_fills"] > 0  # the same fills
    assert not calls[("prove_backdated", True)] and m["heads_signed"] == 0
    assert m["operator_penalties"] < backdated[1]["operator_penalties"]


def test_a_hold_the_engine_logs_is_proven_a_match_after_its_cancel():
    world, m = _run(**HEADS, **{"operator.policy": "patience", "operator.params": {}})
    calls = _calls(world)
    assert calls[("prove_match_after_cancel", True)] == world.heads_findings["FILL_AFTER_CANCEL"]
    assert calls[("prove_match_after_cancel", True)] > 0
    assert m["operator_gain_net"] < 0 < m["operator_gain_gross"]


def test_a_cancel_held_before_the_log_is_forced_after_cancel_heads_heads():
    unlogged = {
        "operator.policy": "unlogged",
        "operator.params": {},
        "operator.params.delay_ms": 2_000,
        "client.force_after_ms": 60_000,  # only the heads' alarm can force it
        "heads.cancel_heads": 2,
    }
    world, m = _run(**HEADS, **unlogged)
    forced = _calls(world)[("ForceCancel", True)]
    assert forced == m["heads_unlogged_cancels"] > 0
    assert m["operator_gain_gross"] == 0  # forced before the hold ends
    quiet, _ = _run(**unlogged)
    assert _calls(quiet)[("ForceCancel", True)] == 0  # without heads, nothing alarms in time


def test_sim_attack_compares_the_best_response_with_heads_per_h_and_sim_report_shows_it(
    tmp_path,
):
    out = tmp_path / "attack"
    command = [
        sys.executable, "-m", "cancelnote", "sim", "attack", str(SIMULATIONS / "heads.toml"),
        "--policy", "honest", "--policy", "unlogged", "--heads-ms", "100", "--seeds", "2",
        "--rounds", "0", "--backend", "serial", "--set", "run.horizon_s=2",
        "--set", "run.cooldown_s=1", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index("journal heads: the best response per head interval (net gain per run)")
    assert lines[start + 3].split()[0] == "none" and lines[start + 4].split()[:2] == ["100", "ms"]
    saved = json.loads((out / "attack.json").read_text(encoding="utf-8"))
    rows = saved["heads"]["rows"]
    assert [row["interval_ms"] for row in rows] == [0, 100]
    assert set(saved["heads"]["strategies"]["100"]) == {"honest", "unlogged"}
    assert rows[0]["policy"] == saved["best_response"]["policy"]  # H = 0 is the plain search
    report = subprocess.run(
        [sys.executable, "-m", "cancelnote", "sim", "report", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Journal heads</h2>" in page and page.count("data:image/png;base64,") == 2
    assert (out / "heads.png").exists()


def test_heads_ms_must_be_positive_integers(tmp_path):
    command = [
        sys.executable, "-m", "cancelnote", "sim", "attack", str(SIMULATIONS / "heads.toml"),
        "--heads-ms", "100,0", "--out", str(tmp_path / "x"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "argument --heads-ms: each must be positive, got '100,0'" in done.stderr
    assert not (tmp_path / "x").exists()
