"""Seeding, latency and mid-price models: streams keyed by name, laws sampled exactly."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cancelnote.sim.closed_forms import normal_cdf
from cancelnote.sim.config import ScenarioError
from cancelnote.sim.latency import (
    CubicLatency,
    EmpiricalLatency,
    FixedLatency,
    LognormalLatency,
    latency_from_config,
)
from cancelnote.sim.market import (
    ArithmeticBrownian,
    GeometricBrownian,
    JumpDiffusion,
    market_from_config,
)
from cancelnote.sim.seeding import Seeds, name_key

DRAWS = 40_000
SECOND = 1_000_000_000

# --------------------------------------------------------------------------------------
# Seeding


def first_draws(seeds: Seeds, name: str) -> list[int]:
    return seeds.generator(name).integers(2**32, size=4).tolist()


def test_a_stream_is_pinned_by_root_replicate_and_name():
    """Golden values: a change here breaks every recorded experiment's reproducibility."""
    assert name_key("market")[:2] == (3532904164, 3077334094)
    assert first_draws(Seeds(42), "market")[:3] == [2226416998, 1936563092, 219137476]
    assert first_draws(Seeds(42, 1), "client/7")[:3] == [601665569, 12236499, 817214037]


@settings(max_examples=25)
@given(
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6, unique=True),
    st.randoms(use_true_random=False),
)
def test_a_stream_does_not_depend_on_which_other_components_exist(names, random):
    seeds = Seeds(7)
    alone = {name: first_draws(seeds, name) for name in names}
    crowd = [*names, "extra-agent", "another"]
    random.shuffle(crowd)
    together = {name: first_draws(seeds, name) for name in crowd}
    assert all(together[name] == alone[name] for name in names)


def test_names_roots_and_replicates_each_give_different_streams():
    streams = [
        first_draws(Seeds(1), "market"),
        first_draws(Seeds(1), "market2"),
        first_draws(Seeds(2), "market"),
        first_draws(Seeds(1, 1), "market"),
    ]
    assert len({tuple(s) for s in streams}) == len(streams)


def test_streams_are_the_same_whatever_the_hash_seed():
    code = "from cancelnote.sim.seeding import Seeds; print(Seeds(3).generator('mm/1').random())"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("0", "1", "12345")
    }
    assert outputs == {f"{Seeds(3).generator('mm/1').random()}\n"}


@pytest.mark.parametrize("root, replicate", [(-1, 0), (1, -1), (1.5, 0)])
def test_seeds_refuse_negative_or_fractional_roots(root, replicate):
    with pytest.raises((TypeError, ValueError)):
        Seeds(root, replicate)


# --------------------------------------------------------------------------------------
# Latency


def mean_is(samples: np.ndarray, expected: float) -> bool:
    """Within 4 standard errors (fixed seeds: deterministic, but still a real check)."""
    stderr = samples.std(ddof=1) / math.sqrt(len(samples))
    return abs(samples.mean() - expected) <= 4 * stderr


def test_fixed_latency_draws_nothing():
    rng = np.random.default_rng(1)
    before = rng.bit_generator.state
    assert FixedLatency(1_500).sample(rng) == 1_500
    assert rng.bit_generator.state == before


def test_cubic_latency_is_the_abides_formula_on_the_same_uniform_draw():
    model = CubicLatency(min_ns=200_000, jitter=0.5, clip=0.1, unit=10.0)
    rng, replay = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(200):
        x = replay.uniform(0.1, 1.0)
        assert model.sample(rng) == int(200_000 + (0.5 / x**3) * (200_000 / 10.0))


def test_cubic_latency_has_the_mean_and_bounds_of_its_law():
    model = CubicLatency(min_ns=100_000, jitter=0.5, clip=0.2, unit=10.0)
    rng = np.random.default_rng(2)
    samples = np.array([model.sample(rng) for _ in range(DRAWS)], dtype=float)
    scale = 0.5 * 100_000 / 10.0
    # E[x^-3] for x ~ U(c, 1) is (1/(2c²) − 1/2) / (1 − c).
    mean = 100_000 + scale * (1 / (2 * 0.2**2) - 0.5) / (1 - 0.2)
    assert mean_is(samples, mean)
    assert samples.min() >= 100_000 + scale - 1
    assert samples.max() <= 100_000 + scale / 0.2**3


def test_lognormal_latency_has_its_median_above_the_floor():
    model = LognormalLatency(median_ns=50_000, sigma=0.8, min_ns=10_000)
    rng = np.random.default_rng(3)
    samples = np.array([model.sample(rng) for _ in range(DRAWS)])
    below = (samples < 60_000).mean()
    assert abs(below - 0.5) <= 4 * math.sqrt(0.25 / DRAWS)
    assert samples.min() >= 10_000


def test_empirical_latency_resamples_each_measurement_equally(tmp_path):
    path = tmp_path / "latency.csv"
    path.write_text("latency_ns,site\n100,a\n200,b\n400,c\n800,d\n")
    model = EmpiricalLatency.from_csv(path)
    rng = np.random.default_rng(4)
    samples = [model.sample(rng) for _ in range(DRAWS)]
    assert set(samples) == {100, 200, 400, 800}
    for value in (100, 800):
        assert abs(samples.count(value) / DRAWS - 0.25) <= 4 * math.sqrt(0.25 * 0.75 / DRAWS)


@pytest.mark.parametrize(
    "content, message",
    [("delay\n5\n", "no column"), ("latency_ns\n5\n1.5\n", "1.5"), ("latency_ns\n", "at least")],
)
def test_empirical_latency_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ScenarioError, match=message):
        latency_from_config({"model": "empirical", "path": str(path)})


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"model": "fixed", "ns": 7}, FixedLatency(7)),
        ({"model": "lognormal", "median_ns": 100, "sigma": 1}, LognormalLatency(100.0, 1.0)),
        ({"model": "cubic", "min_ns": 200_000}, CubicLatency(200_000, 0.5, 0.1, 10.0)),
    ],
)
def test_latency_sections_build_their_models(config, expected):
    assert latency_from_config(config) == expected


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": "carrier-pigeon"}, "must be one of cubic, empirical, fixed, lognormal"),
        ({"model": "fixed", "nanos": 7}, "unexpected keyword"),
        ({"model": "fixed"}, "missing"),
        ({"model": "fixed", "ns": -1}, "ns"),
        ({"model": "fixed", "ns": 1.5}, "ns"),
        ({"model": "cubic", "min_ns": 1, "clip": 0}, "clip"),
        ({"model": "lognormal", "median_ns": "fast", "sigma": 1}, "fast"),
    ],
)
def test_bad_latency_sections_are_rejected_naming_the_section(config, message):
    with pytest.raises(ScenarioError, match=message) as raised:
        latency_from_config(config)
    assert raised.value.code == "INVALID_SCENARIO"
    assert "[latency]" in str(raised.value)


# --------------------------------------------------------------------------------------
# Mid-price


def end_prices(model, times_ns: list[int], paths: int, seed: int) -> np.ndarray:
    """Prices at the last of ``times_ns``, observed at all of them on the way."""
    rng = np.random.default_rng(seed)
    out = np.empty(paths)
    for i in range(paths):
        path = model.path(rng)
        for t in times_ns:
            price = path.at(t)
        out[i] = price
    return out


IRREGULAR = [0, 1, 3, 7 * SECOND // 10, SECOND, 2 * SECOND, 2 * SECOND, 4 * SECOND]


@pytest.mark.parametrize("times_ns", [[4 * SECOND], IRREGULAR])
def test_abm_is_exact_whatever_the_observation_times(times_ns):
    model = ArithmeticBrownian(sigma=0.5, drift=0.25, mid0=10.0)
    prices = end_prices(model, times_ns, 20_000, seed=11)
    assert mean_is(prices, 10.0 + 0.25 * 4)
    variance = prices.var(ddof=1)
    assert abs(variance / (0.25 * 4) - 1) <= 4 * math.sqrt(2 / len(prices))


def test_gbm_is_lognormal_with_the_drift_of_its_mean():
    model = GeometricBrownian(sigma=0.1, drift=0.05, mid0=50.0)
    prices = end_prices(model, IRREGULAR, 20_000, seed=12)
    assert mean_is(prices, 50.0 * math.exp(0.05 * 4))
    logs = np.log(prices / 50.0)
    assert mean_is(logs, (0.05 - 0.005) * 4)
    assert abs(logs.var(ddof=1) / (0.01 * 4) - 1) <= 4 * math.sqrt(2 / len(logs))


def test_jump_diffusion_adds_the_compound_poisson_moments():
    model = JumpDiffusion(sigma=0.2, jump_rate=1.5, jump_sd=0.3, jump_mean=0.1, mid0=0.0)
    prices = end_prices(model, IRREGULAR, 20_000, seed=13)
    assert mean_is(prices, 1.5 * 4 * 0.1)
    variance = 0.04 * 4 + 1.5 * 4 * (0.1**2 + 0.3**2)
    # Jumps make the tails heavy: allow for the kurtosis in the variance's error.
    assert abs(prices.var(ddof=1) / variance - 1) <= 0.05


@pytest.mark.parametrize(
    "model",
    [
        ArithmeticBrownian(sigma=1.0, mid0=0.0),
        # drift = σ²/2 makes log-price driftless, so the same reflection law holds in logs.
        GeometricBrownian(sigma=0.2, drift=0.02, mid0=1.0),
        JumpDiffusion(sigma=1.0, jump_rate=0.0, jump_sd=1.0, mid0=0.0),
    ],
)
@pytest.mark.parametrize("extreme", ["low", "high"])
def test_extremes_follow_the_reflection_principle(model, extreme):
    """P(min over [0, T] <= −b) = 2Φ(−b/(σ√T)), and symmetrically for the maximum."""
    rng = np.random.default_rng(14)
    sign = -1.0 if extreme == "low" else 1.0
    spread = model.sigma * 2.0  # T = 4 s
    barrier = 0.5 * spread
    crossed = 0
    for _ in range(20_000):
        path = model.path(rng)
        # Two sub-intervals' extremes combine into the whole interval's.
        _, first = path.at_with_extreme(3 * SECOND, extreme)
        end, second = path.at_with_extreme(4 * SECOND, extreme)
        best = min(first, second) if extreme == "low" else max(first, second)
        level = math.log(best / model.mid0) if isinstance(model, GeometricBrownian) else best
        assert sign * (best - end) >= 0.0
        crossed += sign * level >= barrier
    expected = 2 * normal_cdf(-barrier / spread)
    assert abs(crossed / 20_000 - expected) <= 4 * math.sqrt(expected * (1 - expected) / 20_000)


@given(st.integers(0, 2**32), st.floats(0.001, 10.0), st.sampled_from(["low", "high"]))
def test_jump_extremes_bound_both_end_points(seed, dt_s, extreme):
    model = JumpDiffusion(sigma=1.0, jump_rate=3.0, jump_sd=2.0)
    rng = np.random.default_rng(seed)
    end, best = model.step_with_extreme(100.0, dt_s, rng, extreme)
    assert (best <= min(100.0, end)) if extreme == "low" else (best >= max(100.0, end))


def test_a_path_repeats_its_price_at_the_same_time_and_refuses_the_past():
    path = ArithmeticBrownian(sigma=1.0).path(np.random.default_rng(0), start_ns=SECOND)
    price = path.at(2 * SECOND)
    state = path.rng.bit_generator.state
    assert path.at(2 * SECOND) == price
    assert path.at_with_extreme(2 * SECOND, "low") == (price, price)
    assert path.rng.bit_generator.state == state
    with pytest.raises(ValueError, match="before"):
        path.at(SECOND)


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"model": "abm", "sigma": 1}, ArithmeticBrownian(1.0)),
        ({"model": "gbm", "sigma": 0.01, "mid0": 50}, GeometricBrownian(0.01, mid0=50.0)),
        (
            {"model": "jump", "sigma": 0, "jump_rate": 2, "jump_sd": 0.5},
            JumpDiffusion(0.0, 2.0, 0.5),
        ),
    ],
)
def test_market_sections_build_their_models(config, expected):
    assert market_from_config(config) == expected


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": "ou", "sigma": 1}, "must be one of abm, gbm, jump"),
        ({"model": "abm", "sigma_per_sqrt_s": 1}, "unexpected keyword"),
        ({"model": "abm", "sigma": -1}, "sigma"),
        ({"model": "gbm", "sigma": 0.1, "mid0": 0}, "mid0"),
    ],
)
def test_bad_market_sections_are_rejected_naming_the_section(config, message):
    with pytest.raises(ScenarioError, match=message) as raised:
        market_from_config(config)
    assert "[market]" in str(raised.value)
