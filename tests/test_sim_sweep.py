"""Sweeps give the same rows whatever the backend and worker count, and resume."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cancelnote.cli import main
from cancelnote.sim.config import ScenarioError
from cancelnote.sim.scenario import apply_overrides
from cancelnote.sim.sweep import make_tasks, parse_grid, run_sweep

SIMULATIONS = Path(__file__).parent.parent / "simulations"
GRID = {"operator.delay_ms": [0, 300]}
SHORT = {
    "run.horizon_s": 3,
    "makers.count": 2,
    "operator.policy": "delay",
    "client.force_after_ms": 200,
}


def _document() -> dict:
    text = (SIMULATIONS / "honest.toml").read_text(encoding="utf-8")
    return apply_overrides(tomllib.loads(text), SHORT)


def _sweep(out: Path, **options) -> bytes:
    run_sweep(_document(), SIMULATIONS, GRID, 2, out, **options)
    return (out / "summary.csv").read_bytes()


@pytest.fixture(scope="module")
def serial_summary(tmp_path_factory) -> bytes:
    return _sweep(tmp_path_factory.mktemp("serial") / "sweep", backend="serial")


def test_process_pool_summary_is_identical_on_one_and_four_workers(serial_summary, tmp_path):
    assert _sweep(tmp_path / "one", backend="process", workers=1) == serial_summary
    assert _sweep(tmp_path / "four", backend="process", workers=4) == serial_summary


def test_dask_local_cluster_summary_is_identical_to_serial(serial_summary, tmp_path):
    # dask is a test dependency: a missing one fails here rather than skipping quietly
    assert _sweep(tmp_path / "dask", backend="dask", workers=2) == serial_summary


def test_summary_has_one_row_per_point_and_seed_and_the_files(serial_summary, tmp_path):
    lines = serial_summary.decode().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["point", "operator.delay_ms", "replicate", "seed"]
    assert len(lines) == 1 + 2 * 2
    out = tmp_path / "files"
    _sweep(out, backend="serial")
    for name in ("points.csv", "summary.parquet", "sweep.png", "sweep.svg", "sweep.json"):
        assert (out / name).stat().st_size > 0


def test_resume_runs_only_the_missing_tasks(serial_summary, tmp_path):
    out = tmp_path / "resumed"
    _sweep(out, backend="serial")
    removed = out / "results" / "p0001-r0001.json"
    removed.unlink()
    kept = (out / "results" / "p0000-r0000.json").stat().st_mtime_ns
    assert _sweep(out, backend="serial", resume=True) == serial_summary
    assert removed.exists()
    assert (out / "results" / "p0000-r0000.json").stat().st_mtime_ns == kept


def test_sweep_refuses_a_used_folder_without_resume(tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "x").write_text("")
    with pytest.raises(FileExistsError):
        _sweep(out, backend="serial")


def test_resume_refuses_a_different_sweep(tmp_path):
    out = tmp_path / "other"
    _sweep(out, backend="serial")
    with pytest.raises(ScenarioError, match="different sweep"):
        run_sweep(_document(), SIMULATIONS, {"operator.delay_ms": [0]}, 2, out, resume=True)


def test_a_bad_grid_value_fails_before_anything_runs(tmp_path):
    with pytest.raises(ScenarioError, match="delay_ms"):
        make_tasks(_document(), SIMULATIONS, {"operator.delay_ms": [-1]}, 1)
    with pytest.raises(ScenarioError, match=r"table\.key"):
        parse_grid(["delay=1,2"])


def test_grid_values_parse_as_toml():
    assert parse_grid(["operator.delay_ms=0,250", "chain.ordering=fifo,cancel_first"]) == {
        "operator.delay_ms": [0, 250],
        "chain.ordering": ["fifo", "cancel_first"],
    }


def test_cli_sweep_then_plot(tmp_path, capsys):
    scenario = tmp_path / "s.toml"
    text = (SIMULATIONS / "honest.toml").read_text(encoding="utf-8")
    scenario.write_text(text.replace("horizon_s = 60", "horizon_s = 2"), encoding="utf-8")
    out = tmp_path / "cli"
    argv = ["sim", "sweep", str(scenario), "--grid", "takers.rate_per_s=1,2", "--seeds", "1"]
    assert main([*argv, "--backend", "serial", "--out", str(out)]) == 0
    assert "2 runs" in capsys.readouterr().out
    assert main(["sim", "plot", str(out)]) == 0
    assert str(out / "sweep.png") in capsys.readouterr().out
