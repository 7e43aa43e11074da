"""Plug-ins through every runner, the new sweep outputs on every backend, report and attack."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cancelnote.cli import main
from cancelnote.sim.config import ScenarioError
from cancelnote.sim.progress import ProgressBar
from cancelnote.sim.scenario import apply_overrides, load_scenario, parse_scenario
from cancelnote.sim.sweep import Target, parse_zip, points, run_sweep

SIMULATIONS = Path(__file__).parent.parent / "simulations"
PLUGINS = SIMULATIONS / "plugin_example.toml"


def _document(**overrides: object) -> dict:
    document = tomllib.loads(PLUGINS.read_text(encoding="utf-8"))
    document["agents"][0]["threshold"] = 0.005  # trade often in a short run
    return apply_overrides(document, {"run.horizon_s": 3, "makers.count": 2, **overrides})


def _sweep(out: Path, **options: object) -> Path:
    grid = {"operator.params.p": [0.0, 1.0]}
    run_sweep(_document(), SIMULATIONS, grid, 2, out, series=True, **options)
    return out


def _files(out: Path) -> dict[str, bytes]:
    names = ["summary.csv", "points.csv", "differences.csv"]
    names += sorted(str(p.relative_to(out)) for p in (out / "series").rglob("*.csv"))
    return {name: (out / name).read_bytes() for name in names}


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> dict[str, bytes]:
    return _files(_sweep(tmp_path_factory.mktemp("serial") / "sweep", backend="serial"))


def test_plugins_run_through_sim_run_with_their_metrics_and_time_series(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["sim", "run", str(PLUGINS), "--out", str(out), "--set", "run.horizon_s=3"]
    argv += ["--set", "makers.count=2"]
    assert main(argv) == 0
    replicate = out / "replicate-0000"
    metrics = json.loads((replicate / "metrics.json").read_text())["metrics"]
    assert {"sniper_pnl", "momentum_pnl"} <= set(metrics)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["overrides"] == {"run.horizon_s": 3, "makers.count": 2}
    for name in ("market.csv", "agents.csv", "market.parquet", "agents.parquet"):
        assert (replicate / name).stat().st_size > 0
    header, *rows = (replicate / "agents.csv").read_text().splitlines()
    assert header == "t_ns,agent,inventory,cash,pnl"
    assert {row.split(",")[1] for row in rows} >= {"mm/0", "sniper"}
    assert "output:" in capsys.readouterr().out


def test_plugins_run_on_a_process_pool_with_identical_outputs(serial, tmp_path):
    out = _sweep(tmp_path / "pool", backend="process", workers=2)
    assert _files(out) == serial


def test_plugins_run_on_dask_with_identical_outputs(serial, tmp_path):
    out = _sweep(tmp_path / "dask", backend="dask", workers=2)
    assert _files(out) == serial


def test_the_plugin_agent_trades_and_its_pnl_is_a_metric(serial):
    header, *rows = serial["summary.csv"].decode().splitlines()
    column = header.split(",").index("momentum_pnl")
    assert any(row.split(",")[column] not in ("", "0.0") for row in rows)
    assert b"momentum" in serial["series/p0000-r0000/agents.csv"]


def test_a_bad_plugin_fails_at_parse_time_naming_it():
    for overrides, message in [
        ({"operator.policy": "no_such_module:X"}, "cannot import 'no_such_module'"),
        ({"operator.policy": "plugin_example:AgentPnl"}, "not a cancelnote.sim.adversary"),
        ({"operator.params.q": 1}, "unexpected keyword argument 'q'"),
        ({"metrics.plugins": ["plugin_example:Nope"]}, r"\[metrics\] plugins"),
    ]:
        with pytest.raises(ScenarioError, match=message):
            parse_scenario(_document(**overrides), SIMULATIONS)
    document = _document()
    document["agents"].append(dict(document["agents"][0]))
    with pytest.raises(ScenarioError, match="unique"):
        parse_scenario(document, SIMULATIONS)


def test_sim_run_set_overrides_any_key_and_refuses_a_bare_key(tmp_path, capsys):
    scenario = load_scenario(SIMULATIONS / "honest.toml", {"makers.count": 1})
    assert scenario.makers.count == 1
    argv = ["sim", "run", str(SIMULATIONS / "honest.toml"), "--set", "horizon=3"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert "expected table.key=value" in capsys.readouterr().err


def test_zipped_axes_change_together_and_multiply_the_grid():
    zipped = parse_zip(["market.model=abm,gbm", "market.sigma=0.02,0.0002"])
    design = points({"operator.delay_ms": [0, 500]}, zipped)
    assert design == [
        (("market.model", "abm"), ("market.sigma", 0.02), ("operator.delay_ms", 0)),
        (("market.model", "abm"), ("market.sigma", 0.02), ("operator.delay_ms", 500)),
        (("market.model", "gbm"), ("market.sigma", 0.0002), ("operator.delay_ms", 0)),
        (("market.model", "gbm"), ("market.sigma", 0.0002), ("operator.delay_ms", 500)),
    ]
    with pytest.raises(ScenarioError, match="as many values"):
        parse_zip(["market.model=abm,gbm", "market.sigma=0.02"])


def test_sequential_replicates_stop_once_the_ci_is_narrow_enough(tmp_path):
    document = _document(**{"operator.policy": "honest", "operator.params": {}})
    wide = Target("operator_gain_net", 1e9, max_seeds=6)
    rows = run_sweep(document, SIMULATIONS, {}, 2, tmp_path / "a", backend="serial", target=wide)
    assert len(rows) == 2
    narrow = Target("network_p99_ms", 1e-9, max_seeds=6)
    rows = run_sweep(document, SIMULATIONS, {}, 2, tmp_path / "b", backend="serial", target=narrow)
    assert sorted(row["replicate"] for row in rows) == list(range(6))


def test_sim_report_writes_one_self_contained_page(tmp_path, capsys):
    out = _sweep(tmp_path / "sweep", backend="serial")
    assert main(["sim", "report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Paired differences" in page
    assert 'src="http' not in page and "<script" not in page and "href=" not in page
    assert "py-evm" in page and "operator_gain_net" in page


def test_progress_counts_simulated_seconds_and_their_rate():
    stream = io.StringIO()
    bar = ProgressBar("run", seconds_per_unit=1e-9, stream=stream)
    bar(30 * 10**9, 60 * 10**9)
    assert "30.0/60.0 sim s" in stream.getvalue() and "sim s/s" in stream.getvalue()


def test_sim_attack_runs_from_the_real_cli_and_writes_its_result(tmp_path):
    out = tmp_path / "attack"
    command = [
        sys.executable, "-m", "cancelnote.cli", "sim", "attack",
        str(SIMULATIONS / "fixed_delay.toml"),
        "--set", "run.horizon_s=2", "--set", "makers.count=2",
        "--defence", "client.force_after_ms=300",
        "--policy", "honest", "--policy", "patience",
        "--seeds", "2", "--rounds", "1", "--backend", "serial", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert "best response:" in done.stdout and "deterrence:" in done.stdout
    result = json.loads((out / "attack.json").read_text())
    assert result["defence"] == {"client.force_after_ms": 300}
    assert [s["policy"] for s in result["strategies"]] == ["honest", "patience"]
    patience = result["strategies"][1]
    assert (
        len(patience["tried"]) > 6 and -1000 <= patience["searched"]["params"]["margin_ms"] <= 300
    )
    assert (out / "manifest.json").exists()
