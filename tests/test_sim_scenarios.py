"""Every bundled scenario parses, runs and tells its story; bad scenarios are refused."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path

import pytest

from cancelnote.cli import main
from cancelnote.sim import demo
from cancelnote.sim.config import ScenarioError
from cancelnote.sim.output import run_replicate
from cancelnote.sim.scenario import apply_overrides, load_scenario, parse_scenario

SIMULATIONS = Path(__file__).parent.parent / "simulations"
BUNDLED = sorted(path.stem for path in SIMULATIONS.glob("*.toml"))


def _run(name: str, horizon_s: float = 6.0, **overrides: object) -> dict:
    scenario = load_scenario(
        SIMULATIONS / f"{name}.toml", {"run.horizon_s": horizon_s, **overrides}
    )
    return run_replicate(scenario, 0)


#: Bond sizing's answer window (and pending bound) shortened, so that short runs default.
SHORT_WINDOW = {"court.answer_window_s": 4, "court.max_pending_ms": 4_000}


@pytest.fixture(scope="module")
def metrics() -> dict[str, dict]:
    """Each bundled scenario, one short replicate (bond sizing's window shortened; the
    two makers of heads.toml trade longer)."""
    special = {"bond_sizing": (10.0, SHORT_WINDOW), "heads": (30.0, {})}
    return {
        name: _run(name, special[name][0], **special[name][1]) if name in special else _run(name)
        for name in BUNDLED
    }


def test_the_six_scenarios_of_the_issue_are_bundled():
    assert set(BUNDLED) >= {
        "honest", "fixed_delay", "conditional_delay", "ignored_cancels", "backdating",
        "bond_sizing",
    }  # fmt: skip


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_scenario_metrics_are_sane(metrics, name):
    m = metrics[name]
    assert m["requests"] > 50 and m["received"] <= m["requests"]
    assert 0.0 <= (m["stale_fill_rate"] or 0.0) <= 1.0
    assert m["disputes_won"] + m["disputes_lost"] <= m["disputes_filed"]
    assert m["false_positive_disputes"] == 0
    assert m["operator_gain_gross"] >= 0  # its own taker fills only in the money
    assert m["operator_gain_net"] == pytest.approx(
        m["operator_gain_gross"] - m["operator_penalties"] - m["operator_gas_cost"]
        + m["operator_bonds_won"]
    )  # fmt: skip
    assert m["time_to_cancel_p50_ms"] <= m["time_to_cancel_p99_ms"]


def test_honest_baseline_has_no_stale_fill_and_no_dispute(metrics):
    m = metrics["honest"]
    assert m["stale_fill_rate"] == 0 and m["client_loss"] == 0
    assert m["disputes_filed"] == 0 and m["gas_total"] == 0
    assert m["hold_p99_ms"] < 1


def test_fixed_delay_gains_what_no_court_rule_can_take_back(metrics):
    m = metrics["fixed_delay"]
    assert m["operator_gain_gross"] > 0
    assert m["hold_p50_ms"] == pytest.approx(500, abs=1)
    assert m["disputes_filed"] == 0
    assert m["undisputable_loss"] == m["client_loss"]
    assert m["detection_tpr"] == 1.0


def test_conditional_delay_holds_only_orders_in_the_money(metrics):
    m = metrics["conditional_delay"]
    assert m["asymmetry"] > 0
    assert m["stale_fill_rate"] < metrics["fixed_delay"]["stale_fill_rate"]


def test_ignored_cancels_are_forced_and_answered_on_chain(metrics):
    m = metrics["ignored_cancels"]
    assert m["disputes_filed"] > 0
    assert m["disputes_won"] == 0  # the operator answers: the court takes the note
    assert m["operator_bonds_won"] > 0 and m["operator_penalties"] == 0
    assert m["chain_p50_ms"] > 0


def test_backdated_notes_are_proven_and_slashed(metrics):
    m = metrics["backdating"]
    assert m["disputes_won"] > 0
    assert m["operator_penalties"] >= 50.0
    assert m["operator_gain_net"] < m["operator_gain_gross"]


def test_unanswered_forced_cancels_default_and_pay_the_penalty(metrics):
    m = metrics["bond_sizing"]
    assert m["disputes_won"] > 0
    assert m["operator_penalties"] == pytest.approx(50.0 * m["disputes_won"])


def test_sim_run_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    scenario = tmp_path / "honest.toml"
    text = (SIMULATIONS / "honest.toml").read_text(encoding="utf-8")
    scenario.write_text(
        text.replace("horizon_s = 60", "horizon_s = 2").replace("replicates = 4", "replicates = 2"),
        encoding="utf-8",
    )
    assert main(["sim", "run", str(scenario), "--seed", "7", "--out", str(out)]) == 0
    assert f"output: {out}" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7 and len(manifest["scenario_sha256"]) == 64
    assert manifest["dependencies"]["numpy"]
    for replicate in ("replicate-0000", "replicate-0001"):
        for name in ("events.csv", "cancels.csv", "disputes.csv", "metrics.json"):
            assert (out / replicate / name).exists()
    aggregate = json.loads((out / "metrics.json").read_text())["aggregate"]
    assert aggregate["requests"]["n"] == 2
    assert main(["sim", "run", str(scenario), "--out", str(out)]) == 2  # not empty


def _document() -> dict:
    return tomllib.loads((SIMULATIONS / "honest.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"operator.delay_msx": 5}, r"\[operator\] unknown key 'delay_msx'"),
        ({"operator.policy": "nice"}, r"\[operator\] policy 'nice': one of"),
        ({"makers.count": 0}, r"\[makers\] 'count' must be > 0"),
        ({"makers.half_spread": "wide"}, r"\[makers\] 'half_spread' must be"),
        ({"chain.ordering": "lifo"}, r"\[chain\] 'ordering' must be in"),
        ({"client.verify": 1}, r"\[client\] 'verify' must be"),
        ({"market.model": "walk"}, r"\[market\] model must be one of"),
        ({"latency.entry.min_ns": -1}, r"\[latency.entry\]"),
        ({"extra.x": 1}, r"unknown table \[extra\]"),
    ],
)
def test_scenario_errors_name_the_table_and_key(overrides, message):
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(apply_overrides(_document(), overrides))


def test_missing_tables_and_keys_are_named():
    document = _document()
    del document["run"]["horizon_s"]
    with pytest.raises(ScenarioError, match=r"\[run\] missing key 'horizon_s'"):
        parse_scenario(document)
    del document["market"]
    with pytest.raises(ScenarioError, match=r"missing table \[market\]"):
        parse_scenario(document)


def test_a_file_that_is_not_toml_is_a_scenario_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[run\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(path)


def test_the_scenario_hash_covers_overrides():
    base = parse_scenario(_document())
    assert base.sha256() == parse_scenario(_document()).sha256()
    changed = parse_scenario(apply_overrides(_document(), {"operator.delay_ms": 1}))
    assert changed.sha256() != base.sha256()


def test_held_quotes_narrow_the_quoted_spread(metrics):
    assert metrics["fixed_delay"]["quoted_spread_mean"] < metrics["honest"]["quoted_spread_mean"]
    assert metrics["honest"]["depth_at_best_mean"] > 0 and metrics["honest"]["halted_s"] == 0


def test_a_default_halts_the_operator_when_the_court_says_so():
    assert _run("bond_sizing", 10.0, **SHORT_WINDOW, **{"court.halt_on_default": True})[
        "halted_s"
    ] > 0


def test_demo_prints_the_table_and_writes_the_plot(tmp_path, monkeypatch):
    monkeypatch.setattr(
        demo, "GRID", {"operator.delay_ms": [0, 400], "client.dispute": [False, True]}
    )
    monkeypatch.setattr(demo, "SEEDS", 1)
    short = demo.SCENARIO.replace("horizon_s = 8\n", "horizon_s = 3\n")
    assert short != demo.SCENARIO
    monkeypatch.setattr(demo, "SCENARIO", short)
    folder, table = demo.run_demo(tmp_path / "demo")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["delay", "ms", "defence"] and len(lines) == 2 + 4
    assert (folder / "gain_vs_delay.png").stat().st_size > 0
    assert (folder / "gain_vs_delay.svg").stat().st_size > 0
    assert demo.run_demo(tmp_path / "demo")[0].name == "demo-2"  # never overwrites


def test_a_query_that_releases_a_held_cancel_still_gets_its_own_reply():
    # At 16.5 s, replicate 1 of backdating.toml samples the book at the very millisecond
    # a held cancel is released: the engine's outputs then hold the cancel's reply first.
    scenario = load_scenario(SIMULATIONS / "backdating.toml", {"run.horizon_s": 17.0})
    assert run_replicate(scenario, 1)["disputes_won"] > 0


@pytest.mark.parametrize("argv", [["demo"], ["sim", "plot", "anywhere"]])
def test_plotting_without_the_plot_extra_says_what_to_install(argv, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "matplotlib" else real_find_spec(name, *rest),
    )
    assert main(argv) == 2
    assert "pip install 'cancelnote[plot]'" in capsys.readouterr().err
