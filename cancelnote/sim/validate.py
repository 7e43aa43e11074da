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

#: A check passes within this many standard errors. A correct simulator fails a check
#: by chance with probability P(|Z| > 3) ≈ 0.0027 (1 in 370) when its standard error
#: comes from many paths (z is normal), but P(|t_{n-1}| > 3) when it comes from n
#: replicates (0.0090 at n = 16): :func:`false_alarm_probability`.
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


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, front = 1e-300, 1.0
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    front = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            front *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for 0 <= x <= 1."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def false_alarm_probability(df: int | None, tolerance: float = TOLERANCE_SE) -> float:
    """P(|z| > tolerance) for a correct simulator: normal z (``df`` None) or Student's t
    with ``df`` degrees of freedom, P(|t| > c) = I_{df/(df+c²)}(df/2, 1/2)."""
    if df is None:
        return math.erfc(tolerance / math.sqrt(2.0))
    return regularized_beta(df / 2.0, 0.5, df / (df + tolerance**2))


@attrs.frozen
class Check:
    """One validation result: expected against measured, with the measurement's error.

    ``df`` is the degrees of freedom of the standard error when it comes from a few
    replicates (z is then Student's t), ``None`` when it comes from many paths.
    """

    name: str
    expected: float
    measured: float
    stderr: float
    passed: bool
    note: str = ""
    df: int | None = None

    @classmethod
    def compare(
        cls,
        name: str,
        expected: float,
        measured: float,
        stderr: float,
        note: str = "",
        df: int | None = None,
    ) -> Check:
        """Pass iff ``|measured − expected| <= TOLERANCE_SE · stderr``."""
        passed = abs(measured - expected) <= TOLERANCE_SE * stderr
        return cls(name, expected, measured, stderr, passed, note, df)

    @property
    def false_alarm(self) -> float:
        """How often a correct simulator fails this check by chance."""
        return false_alarm_probability(self.df)

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
    width = max([32, *(len(check.name) for check in checks)])
    header = (
        f"{'check':<{width}} {'expected':>12} {'measured':>12} {'std err':>10} {'z':>6}  result"
    )
    lines = [header, "-" * len(header)]
    for check in checks:
        lines.append(
            f"{check.name:<{width}} {check.expected:>12.6f} {check.measured:>12.6f} "
            f"{check.stderr:>10.6f} {check.z:>6.2f}  {'PASS' if check.passed else 'FAIL'}"
            + (f"  ({check.note})" if check.note else "")
        )
    failed = sum(not check.passed for check in checks)
    lines.append(f"{len(checks) - failed} of {len(checks)} checks passed")
    return "\n".join(lines) + "\n"
