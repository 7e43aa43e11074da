"""``cancelnote sim validate``: the simulator against the closed forms, and against itself.

Each check compares a number the simulation measures with the number theory predicts
and passes if they differ by at most ``TOLERANCE_SE`` standard errors (the determinism
check must match exactly). Every check draws its prices from its own named stream, so
the checks are independent of one another and of the order they run in.
"""

from __future__ import annotations

import hashlib
import io
import math

import attrs

from .closed_forms import HeldCancel, fill_probability, simulate
from .eventlog import EventLog
from .market import ArithmeticBrownian, GeometricBrownian
from .seeding import Seeds

#: A check passes within this many standard errors (a false alarm has odds of ~1 in 370).
TOLERANCE_SE = 3.0
#: The reference case: σ = 1 price unit per √s, a 1 s hold, an order 0.5 from mid (k = 0.5).
SIGMA = 1.0
HOLD_S = 1.0
DISTANCE = 0.5
#: The GBM case: 1% per √s around a mid of 100, the same order 0.5 below mid.
GBM_SIGMA = 0.01
#: Paths per determinism run (the event log of each is kept in memory).
DETERMINISM_PATHS = 2_000
#: Runs compared by the determinism check.
DETERMINISM_RUNS = 3


@attrs.frozen
class Check:
    """One validation result: expected against measured, with the measurement's error."""

    name: str
    expected: float
    measured: float
    stderr: float
    passed: bool
    note: str = ""

    @classmethod
    def compare(
        cls, name: str, expected: float, measured: float, stderr: float, note: str = ""
    ) -> Check:
        """Pass iff ``|measured − expected| <= TOLERANCE_SE · stderr``."""
        passed = abs(measured - expected) <= TOLERANCE_SE * stderr
        return cls(name, expected, measured, stderr, passed, note)

    @property
    def z(self) -> float:
        """How many standard errors apart measured and expected are (0 when exact)."""
        gap = self.measured - self.expected
        return gap / self.stderr if self.stderr else (0.0 if gap == 0 else math.inf)


def _gain_check(name: str, case: HeldCancel, seeds: Seeds, paths: int) -> Check:
    estimate = simulate(case, paths, seeds, stream=f"validate/{name}")
    return Check.compare(name, case.closed_form(), estimate.mean, estimate.stderr)


def run_validation(seed: int, paths: int) -> list[Check]:
    """All checks, each Monte Carlo estimate over ``paths`` simulated held cancels."""
    seeds = Seeds(seed)
    one_sided = HeldCancel(ArithmeticBrownian(SIGMA), HOLD_S, DISTANCE)
    gbm = HeldCancel(GeometricBrownian(GBM_SIGMA), HOLD_S, DISTANCE)
    return [
        _gain_check("one-sided gain", one_sided, seeds, paths),
        _gain_check("straddle gain", attrs.evolve(one_sided, exposure="straddle"), seeds, paths),
        _gain_check("look-back gain", attrs.evolve(one_sided, exposure="lookback"), seeds, paths),
        _gain_check("GBM one-sided gain", gbm, seeds, paths),
        _fill_check(one_sided, seeds, paths),
        _scaling_check(one_sided, seeds, paths),
        _determinism_check(one_sided, seed),
    ]


def _fill_check(case: HeldCancel, seeds: Seeds, paths: int) -> Check:
    estimate = simulate(case, paths, seeds, stream="validate/fill probability")
    expected = fill_probability(case.market.sigma, case.hold_s, case.distance)
    return Check.compare("fill probability", expected, estimate.fill_rate, estimate.fill_stderr)


def _scaling_check(case: HeldCancel, seeds: Seeds, paths: int) -> Check:
    """(σ, d, s) → (σ, 4d, 2s) doubles the gain: the ratio of two independent estimates."""
    scaled = attrs.evolve(case, hold_s=4 * case.hold_s, distance=2 * case.distance)
    base = simulate(case, paths, seeds, stream="validate/scaling/base")
    big = simulate(scaled, paths, seeds, stream="validate/scaling/scaled")
    ratio = big.mean / base.mean
    stderr = ratio * math.hypot(base.stderr / base.mean, big.stderr / big.mean)
    note = f"exact ratio {scaled.closed_form() / case.closed_form():.12f}"
    return Check.compare("scaling (σ, 4d, 2s) ratio", 2.0, ratio, stderr, note)


def _determinism_check(case: HeldCancel, seed: int) -> Check:
    """Runs with one seed write byte-identical event logs: measured = runs that differ."""
    digests = []
    for _ in range(DETERMINISM_RUNS):
        stream = io.StringIO(newline="")
        simulate(case, DETERMINISM_PATHS, Seeds(seed), event_log=EventLog.start(stream))
        digests.append(hashlib.sha256(stream.getvalue().encode()).hexdigest())
    differing = sum(digest != digests[0] for digest in digests[1:])
    note = f"{DETERMINISM_RUNS} runs, events.csv sha256 {digests[0][:16]}…"
    return Check.compare("determinism (event log bytes)", 0.0, float(differing), 0.0, note)


def format_table(checks: list[Check]) -> str:
    """The checks as a plain-text table, one row each, and a summary line."""
    header = f"{'check':<32} {'expected':>12} {'measured':>12} {'std err':>10} {'z':>6}  result"
    lines = [header, "-" * len(header)]
    for check in checks:
        lines.append(
            f"{check.name:<32} {check.expected:>12.6f} {check.measured:>12.6f} "
            f"{check.stderr:>10.6f} {check.z:>6.2f}  {'PASS' if check.passed else 'FAIL'}"
            + (f"  ({check.note})" if check.note else "")
        )
    failed = sum(not check.passed for check in checks)
    lines.append(f"{len(checks) - failed} of {len(checks)} checks passed")
    return "\n".join(lines) + "\n"
