"""The example scenarios ship in the package: ``sim scenarios`` lists them, ``--copy DIR``
writes them out, and what it writes runs (the real CLI, as a user runs it)."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cancelnote.sim.bundled import SCENARIOS, bundled_files, summary

ROOT = Path(__file__).parent.parent


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cancelnote", "sim", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def copied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("copy") / "simulations"
    return folder, _cli("scenarios", "--copy", str(folder))


def test_scenarios_lists_every_bundled_scenario_with_its_summary():
    done = _cli("scenarios")
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == sorted(p.stem for p in Path(str(SCENARIOS)).glob("*.toml"))
    assert {"honest", "fixed_delay", "best_response", "answer_window"} <= set(names)
    assert "honest               Honest baseline: the operator answers every cancel at once" in (
        done.stdout
    )


def test_the_repository_folder_is_the_package_folder():
    assert (ROOT / "simulations").resolve() == Path(str(SCENARIOS)).resolve()


def test_copy_writes_every_scenario_and_its_plugin_byte_for_byte(copied):
    folder, done = copied
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{len(bundled_files())} files written to {folder}"
    for item in bundled_files():
        assert (folder / item.name).read_bytes() == item.read_bytes()
    assert (folder / "plugin_example.py").exists()


def test_a_copied_scenario_runs_from_its_new_folder(copied, tmp_path):
    folder, _ = copied
    out = tmp_path / "run"
    done = _cli(
        "run", str(folder / "plugin_example.toml"), "--set", "run.horizon_s=2",
        "--set", "run.replicates=1", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "metrics.json").exists()


def test_copy_refuses_a_folder_holding_one_of_the_files_and_writes_nothing(tmp_path):
    (tmp_path / "honest.toml").write_text("# mine\n", encoding="utf-8")
    done = _cli("scenarios", "--copy", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"cancelnote sim scenarios: {tmp_path / 'honest.toml'} exists: nothing copied"
        " (choose an empty or new folder)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["honest.toml"]
    assert (tmp_path / "honest.toml").read_text(encoding="utf-8") == "# mine\n"


def test_the_package_data_globs_cover_every_bundled_file():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["cancelnote.sim"]
    for item in bundled_files():
        assert any(fnmatch.fnmatch(f"scenarios/{item.name}", glob) for glob in globs), item.name


def test_a_summary_is_the_first_sentence_of_the_leading_comment():
    assert summary("# One line. And more\n# on two.\n[run]\n# not this") == "One line."
    assert summary("# Why? Because.\n") == "Why?"
    assert summary("[run]\n") == ""
