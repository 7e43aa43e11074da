"""Closed forms against the published table, the simulator against the closed forms."""

from __future__ import annotations

import hashlib
import io
import math
import os
import subprocess
import sys

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cancelnote.cli import main
from cancelnote.sim import validate, validate_world
from cancelnote.sim.closed_forms import (
    HeldCancel,
    fill_probability,
    gbm_one_sided_value,
    lookback_value,
    one_sided_value,
    simulate,
    straddle_value,
)
from cancelnote.sim.eventlog import EventLog
from cancelnote.sim.market import ArithmeticBrownian, GeometricBrownian, JumpDiffusion
from cancelnote.sim.seeding import Seeds
from cancelnote.sim.validate import Check, run_validation

SEED = 20261123

# simulation-anchors §3.1: σ, d, s, one side, P(fill), both sides / look-back.
ANCHOR_TABLE = [
    (0.01068, 1, 0.01, 0.001003, 0.1746, 0.002006),
    (0.01068, 5, 0.01, 0.005350, 0.3377, 0.010701),
    (1, 1, 0, 0.398942, 0.5000, 0.797885),
    (1, 1, 0.5, 0.197797, 0.3085, 0.395593),
    (1, 4, 1, 0.395593, 0.3085, 0.791186),
]


@pytest.mark.parametrize("sigma, d, s, one, fill, both", ANCHOR_TABLE)
def test_closed_forms_reproduce_the_anchor_table(sigma, d, s, one, fill, both):
    assert round(one_sided_value(sigma, d, s), 6) == one
    assert round(fill_probability(sigma, d, s), 4) == fill
    assert round(straddle_value(sigma, d, s), 6) == both
    assert round(lookback_value(sigma, d, s), 6) == both


@given(st.floats(1e-4, 1e3), st.floats(1e-6, 1e4), st.floats(0.0, 1e3), st.floats(0.01, 100.0))
def test_value_scales_as_v_times_g_of_k(sigma, d, s, factor):
    """(σ, d, s) → (σ, c²d, cs) multiplies the value by c; c = 2 is the validation's case."""
    scaled = one_sided_value(sigma, factor**2 * d, factor * s)
    assert math.isclose(scaled, factor * one_sided_value(sigma, d, s), rel_tol=1e-9, abs_tol=1e-300)


@given(st.floats(1e-3, 10.0), st.floats(1e-3, 10.0), st.floats(0.0, 10.0))
def test_value_falls_with_distance_and_grows_with_the_hold(sigma, d, s):
    value = one_sided_value(sigma, d, s)
    assert 0.0 <= value <= sigma * math.sqrt(d) / math.sqrt(2 * math.pi) + 1e-15
    assert one_sided_value(sigma, d, s + 0.1) <= value
    assert one_sided_value(sigma, 2 * d, s) >= value


def test_gbm_value_approaches_the_abm_value_for_small_moves():
    abm = one_sided_value(sigma=0.5, hold_s=1.0, distance=0.3)
    gbm = gbm_one_sided_value(mid0=1_000.0, sigma=0.0005, hold_s=1.0, distance=0.3)
    assert math.isclose(gbm, abm, rel_tol=1e-3)


def test_negative_inputs_are_refused():
    with pytest.raises(ValueError):
        one_sided_value(1.0, 1.0, -0.1)


def test_closed_forms_exist_only_where_derived():
    with pytest.raises(ValueError, match="GBM"):
        HeldCancel(GeometricBrownian(0.01), 1.0, 0.5, "straddle").closed_form()
    with pytest.raises(ValueError, match="driftless"):
        HeldCancel(ArithmeticBrownian(1.0, drift=0.1), 1.0, 0.5).closed_form()


def test_scaled_holds_double_every_path_with_common_random_numbers():
    """Same stream, 4× the hold, 2× the distance: each path's gain exactly doubles, which
    pins the market's √t scaling and the kernel's hold timing path by path."""
    case = HeldCancel(ArithmeticBrownian(1.0), 1.0, 0.5)
    scaled = attrs.evolve(case, hold_s=4.0, distance=1.0)
    base = simulate(case, 2_000, Seeds(SEED))
    big = simulate(scaled, 2_000, Seeds(SEED))
    assert math.isclose(big.mean, 2 * base.mean, rel_tol=1e-12)
    assert big.fill_rate == base.fill_rate


def test_every_validation_check_passes_with_a_fixed_seed():
    checks = run_validation(SEED, paths=40_000)
    assert [c.name for c in checks if not c.passed] == []
    assert {c.name for c in checks} >= {
        "one-sided gain",
        "straddle gain",
        "look-back gain",
        "scaling (σ, 4d, 2s) ratio",
        "determinism (event log bytes)",
    }


def test_the_look_back_check_catches_an_operator_that_cannot_backdate():
    """The checks have teeth: filling at the end of the hold earns half the look-back value."""
    case = HeldCancel(ArithmeticBrownian(1.0), 1.0, 0.5, "lookback")
    no_backdating = simulate(attrs.evolve(case, exposure="one_sided"), 20_000, Seeds(1))
    check = Check.compare("look-back", case.closed_form(), no_backdating.mean, no_backdating.stderr)
    assert not check.passed
    assert check.z < -20


def test_a_check_passes_within_three_standard_errors_only():
    assert Check.compare("x", 1.0, 1.29, 0.1).passed
    assert not Check.compare("x", 1.0, 1.31, 0.1).passed
    assert Check.compare("exact", 0.0, 0.0, 0.0).passed
    assert not Check.compare("exact", 0.0, 1.0, 0.0).passed


def event_log_digest(seed: int) -> str:
    stream = io.StringIO(newline="")
    case = HeldCancel(JumpDiffusion(1.0, 0.5, 1.0), 1.0, 0.5, "lookback")
    simulate(case, 300, Seeds(seed), event_log=EventLog.start(stream))
    return hashlib.sha256(stream.getvalue().encode()).hexdigest()


def test_the_event_log_is_byte_identical_across_processes_and_hash_seeds():
    code = f"from test_sim_validation import event_log_digest; print(event_log_digest({SEED}))"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hash_seed in ("0", "99")
    }
    assert digests == {event_log_digest(SEED)}
    assert event_log_digest(SEED + 1) != event_log_digest(SEED)


def test_the_event_log_records_each_held_cancel():
    stream = io.StringIO(newline="")
    simulate(
        HeldCancel(ArithmeticBrownian(1.0), 1.0, 0.5), 2, Seeds(1), event_log=EventLog.start(stream)
    )
    rows = stream.getvalue().splitlines()
    assert rows[0] == "t_ns,kind,agent,order_id,payload"
    assert [row.split(",")[:4] for row in rows[1:3]] == [
        ["0", "rest", "client", "0"],
        ["0", "cancel_held", "operator", "0"],
    ]
    assert rows[3].split(",")[0] == "1000000000"
    assert rows[3].split(",")[1] in {"stale_fill", "cancelled"}
    assert len(rows) == 1 + 2 * 3


def test_cli_prints_the_table_and_exits_zero_when_all_pass(capsys, monkeypatch):
    # One point of the world's closed-form grid here; tests/test_sim_findings.py runs more.
    monkeypatch.setattr(validate_world, "GRID", validate_world.GRID[:1])
    assert main(["sim", "validate", "--seed", str(SEED), "--paths", "5000"]) == 0
    out = capsys.readouterr().out
    assert "look-back gain" in out and "7 of 7 checks passed" in out


def test_cli_exits_nonzero_when_a_check_fails(monkeypatch, capsys):
    failing = [Check.compare("broken", 1.0, 2.0, 0.1)]
    monkeypatch.setattr(validate, "run_validation", lambda seed, paths: failing)
    # The world checks pass (the test above runs them); only the failing one matters here.
    monkeypatch.setattr(validate_world, "run_world_checks", lambda seed: [])
    assert main(["sim", "validate"]) == 1
    assert "FAIL" in capsys.readouterr().out
