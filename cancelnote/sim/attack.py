"""The best response: the operator's most profitable strategy against a given defence.

``cancelnote sim attack SCENARIO --defence client.force_after_ms=250 ...`` asks what a
rational operator would do against that defence. For each candidate strategy
(:data:`~.adversary.STRATEGIES`, an engine policy, or a plug-in) it searches the
strategy's parameters (:meth:`~.adversary.Adversary.search_space`) for the highest mean
of the objective (``operator_gain_net`` by default) over ``seeds`` replicates:

1. **grid**: every combination of each axis's grid values;
2. **refinement**, ``rounds`` times: a finer grid (the same number of values) between
   the best point's neighbours on each axis, keeping every point evaluated so far;
3. **confirmation**: the best point of each strategy runs again on *fresh* replicates
   (indices after the search's), because the best of many noisy means is biased upward;
   its mean and 95% CI are the reported gain.

Every point of one search uses the same replicates (common random numbers), so points
are compared on the same markets. Tasks run on the sweep backends (serial, process
pool, Dask) and the result does not depend on the backend or the number of workers.

From the best response's confirmed runs the report derives the **deterrence
threshold** Π* (docs/simulation.md §7): the penalty per offence that would make the
attack unprofitable, Π* = (G − c_attack) / (N · p_detect · p_file · p_win) with N the
orders it cheated per run, and the **bond** that pays Π* for every offence of one run
(N · Π*). Both are undefined, and reported so, when the court can never be made to pay:
an attack that leaves nothing the court convicts (a hold under the watchtower's
patience) is deterred by no penalty and no bond.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..operator.policies import POLICY_NAMES
from .adversary import STRATEGIES, Axis, strategy_class
from .config import ScenarioError
from .metrics import aggregate
from .scenario import Scenario, apply_overrides, canonical, parse_scenario
from .sweep import Row, Runner, Task

#: The strategies ``sim attack`` tries unless told otherwise (``honest`` is the zero):
#: every built-in one, protocol v2's (``window``, ``drain``) included.
DEFAULT_POLICIES = ("honest", *STRATEGIES)
OBJECTIVE = "operator_gain_net"

Point = tuple[tuple[str, Any], ...]


@attrs.frozen
class Estimate:
    """The objective's mean and 95% CI at one point, with the runs' mean metrics."""

    point: Point
    mean: float | None
    ci95: float | None
    n: int
    metrics: Mapping[str, float | None] = attrs.field(eq=False, repr=False)


#: Evaluates points: ``(points, first replicate, replicates) -> one Estimate each``.
Evaluate = Callable[[Sequence[Point], int, int], list[Estimate]]


def grid_points(space: Mapping[str, Axis]) -> list[Point]:
    """Every combination of each axis's grid values."""
    keys = list(space)
    values = [space[key].values() for key in keys]
    return [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def refined_points(space: Mapping[str, Axis], best: Point, tried: Iterable[Point]) -> list[Point]:
    """A finer grid around ``best``: on each axis, between its neighbours among the
    values tried so far (the axis's end when it has none)."""
    axes = []
    for key, value in best:
        axis = space[key]
        seen = sorted({dict(point)[key] for point in tried})
        index = seen.index(value)
        low = seen[index - 1] if index > 0 else axis.low
        high = seen[index + 1] if index + 1 < len(seen) else axis.high
        axes.append([(key, v) for v in axis.values(low, high)])
    return [tuple(combo) for combo in itertools.product(*axes)]


def _better(a: Estimate, b: Estimate | None) -> bool:
    return b is None or (a.mean is not None and (b.mean is None or a.mean > b.mean))


def search(
    space: Mapping[str, Axis], evaluate: Evaluate, seeds: int, rounds: int = 2
) -> list[Estimate]:
    """Grid, then ``rounds`` refinements; returns every estimate, best first."""
    estimates: dict[Point, Estimate] = {}
    todo = grid_points(space)
    for _ in range(rounds + 1):
        new = [point for point in dict.fromkeys(todo) if point not in estimates]
        for estimate in evaluate(new, 0, seeds):
            estimates[estimate.point] = estimate
        best = max(estimates.values(), key=_key)
        if not space:
            break
        todo = refined_points(space, best.point, estimates)
    return sorted(estimates.values(), key=_key, reverse=True)


def _key(estimate: Estimate) -> tuple[bool, float]:
    return (estimate.mean is not None, -math.inf if estimate.mean is None else estimate.mean)


@attrs.frozen
class StrategyResult:
    """One strategy's search: its best point (searched and confirmed) and every point."""

    policy: str
    best: Estimate
    confirmed: Estimate
    tried: list[Estimate]


@attrs.frozen
class AttackResult:
    """The best response among the strategies, and what would deter it."""

    strategies: list[StrategyResult]
    objective: str

    @property
    def best(self) -> StrategyResult:
        return max(self.strategies, key=lambda s: _key(s.confirmed))

    def deterrence(self) -> dict[str, float | None]:
        """Π* per offence and the bond that pays it for every offence of one run: the
        means of the best response's confirmed runs' ``deterrence_per_offence`` and
        ``deterrence_threshold`` (``None``: the court can never be made to pay)."""
        m = self.best.confirmed.metrics
        return {
            "penalty_per_offence": m.get("deterrence_per_offence"),
            "bond": m.get("deterrence_threshold"),
        }


def world_evaluator(
    document: Mapping[str, Any], base_dir: Path, policy: str, objective: str, runner: Runner
) -> Evaluate:
    """Points of ``policy``'s parameters, evaluated on worlds of ``document`` (the
    defence already applied) as sweep tasks on ``runner``."""

    def overrides(point: Point) -> tuple[tuple[str, Any], ...]:
        params = tuple((f"operator.params.{k}", v) for k, v in point)
        return (("operator.policy", policy), ("operator.params", {}), *params)

    def evaluate(points: Sequence[Point], first: int, count: int) -> list[Estimate]:
        tasks = [
            Task(document, str(base_dir), index, overrides(point), first + r)
            for index, point in enumerate(points)
            for r in range(count)
        ]
        rows: dict[int, list[Row]] = {}
        for row, _ in runner.run(tasks):
            rows.setdefault(row["point"], []).append(row)
        estimates = []
        for index, point in enumerate(points):
            runs = sorted(rows[index], key=lambda row: row["replicate"])
            stats = aggregate([_metrics(row) for row in runs])
            if objective not in stats:
                raise ScenarioError(f"--objective: no metric {objective!r}")
            target = stats[objective]
            means = {name: value["mean"] for name, value in stats.items()}
            estimates.append(
                Estimate(point, target["mean"], target["ci95"], int(target["n"] or 0), means)
            )
        return estimates

    return evaluate


def _metrics(row: Row) -> dict[str, float | None]:
    skip = {"point", "replicate", "seed", "operator.policy"}
    return {k: v for k, v in row.items() if k not in skip and not k.startswith("operator.params")}


def run_attack(
    document: Mapping[str, Any],
    base_dir: Path,
    defence: Mapping[str, Any],
    policies: Sequence[str] = DEFAULT_POLICIES,
    *,
    seeds: int = 4,
    confirm: int | None = None,
    rounds: int = 2,
    objective: str = OBJECTIVE,
    backend: str = "process",
    workers: int = 2,
    scheduler: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> AttackResult:
    """Search every strategy in ``policies`` against ``document`` with ``defence`` applied.

    ``confirm`` replicates (default ``seeds``) re-run each strategy's best point on fresh
    seeds.

    Raises:
        ScenarioError: a bad defence key, policy, or objective.
    """
    defended = apply_overrides(document, defence)
    scenario = parse_scenario(defended, base_dir)
    spaces = {policy: search_space(policy, scenario) for policy in policies}
    results = []
    with Runner(backend, workers, scheduler) as runner:
        for policy, space in spaces.items():
            evaluate = world_evaluator(defended, base_dir, policy, objective, runner)
            if progress is not None:
                progress(policy)
            tried = search(space, evaluate, seeds, rounds)
            best = tried[0]
            (confirmed,) = evaluate([best.point], seeds, confirm or seeds)
            results.append(StrategyResult(policy, best, confirmed, tried))
    return AttackResult(results, objective)


#: The scenario key that turns journal heads on, and sets their interval H.
HEADS_KEY = "heads.interval_ms"


@attrs.frozen
class HeadsComparison:
    """The best response without journal heads and with heads every ``H`` ms, for each
    ``H`` (docs/simulation.md §17): the same search, the same seeds, one key changed."""

    results: list[tuple[int, AttackResult]]  # (H, its search); H = 0 first: no heads

    @property
    def baseline(self) -> AttackResult:
        return self.results[0][1]

    def rows(self) -> list[dict[str, Any]]:
        """Per H: the best response, its confirmed gain and CI, and that gain over the
        gain without heads (``None`` when that is not positive: nothing to take back)."""
        zero = self.baseline.best.confirmed.mean
        out = []
        for interval, result in self.results:
            best = result.best
            mean = best.confirmed.mean
            ratio = None if mean is None or zero is None or zero <= 0 else mean / zero
            out.append(
                {
                    "interval_ms": interval,
                    "policy": best.policy,
                    "params": dict(best.confirmed.point),
                    "mean": mean,
                    "ci95": best.confirmed.ci95,
                    "ratio": ratio,
                }
            )
        return out


def run_heads_comparison(
    document: Mapping[str, Any],
    base_dir: Path,
    defence: Mapping[str, Any],
    heads_ms: Sequence[int],
    policies: Sequence[str] = DEFAULT_POLICIES,
    **options: Any,
) -> HeadsComparison:
    """:func:`run_attack` without heads, then with ``heads.interval_ms`` = each of
    ``heads_ms`` (the defence otherwise the same); ``options`` as for :func:`run_attack`.

    Raises:
        ScenarioError: as :func:`run_attack`, or an interval that is not positive.
    """
    if any(interval <= 0 for interval in heads_ms):
        raise ScenarioError("--heads-ms: each interval must be a positive number of ms")
    results = [
        (interval, run_attack(document, base_dir, {**defence, HEADS_KEY: interval}, policies,
                              **options))
        for interval in (0, *heads_ms)
    ]  # fmt: skip
    return HeadsComparison(results)


def heads_json(comparison: HeadsComparison) -> dict[str, Any]:
    """The ``heads`` part of ``attack.json``: per H, the best response and every strategy's
    confirmed gain."""
    return {
        "rows": comparison.rows(),
        "strategies": {
            str(interval): {
                s.policy: {"mean": s.confirmed.mean, "ci95": s.confirmed.ci95}
                for s in result.strategies
            }
            for interval, result in comparison.results
        },
    }


def format_heads(comparison: HeadsComparison) -> str:
    """The plain-text table of the comparison."""
    header = f"{'heads H':<10} {'best response':<14} {'confirmed gain':>18} {'vs no heads':>12}"
    lines = [
        "journal heads: the best response per head interval (net gain per run)",
        header,
        "-" * len(header),
    ]
    for row in comparison.rows():
        interval = "none" if row["interval_ms"] == 0 else f"{row['interval_ms']} ms"
        mean, ci = row["mean"], row["ci95"]
        gain = "-" if mean is None else f"{mean:.3f}" + (f" ±{ci:.3f}" if ci is not None else "")
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.1%}"
        lines.append(f"{interval:<10} {row['policy']:<14} {gain:>18} {ratio:>12}")
    return "\n".join(lines) + "\n"


def search_space(policy: str, scenario: Scenario) -> dict[str, Axis]:
    """What ``sim attack`` searches for ``policy``: nothing for an engine policy (its
    keys live in ``[operator]``), the strategy's own space otherwise."""
    if policy in POLICY_NAMES:
        return {}
    return strategy_class(policy, scenario.base_dir).search_space(scenario)


def attack_json(
    result: AttackResult, document: Mapping[str, Any], defence: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON of ``attack.json``: the scenario, the defence, every strategy's search."""

    def estimate(e: Estimate) -> dict[str, Any]:
        return {"params": dict(e.point), "mean": e.mean, "ci95": e.ci95, "n": e.n}

    best = result.best
    return {
        "objective": result.objective,
        "scenario": canonical(document),
        "defence": dict(defence),
        "best_response": {
            "policy": best.policy,
            **estimate(best.confirmed),
            **result.deterrence(),
        },
        "strategies": [
            {
                "policy": s.policy,
                "searched": estimate(s.best),
                "confirmed": {**estimate(s.confirmed), "metrics": dict(s.confirmed.metrics)},
                "tried": [estimate(e) for e in s.tried],
            }
            for s in result.strategies
        ],
    }


def format_attack(result: AttackResult) -> str:
    """The plain-text report of ``sim attack``."""
    header = f"{'policy':<12} {'best parameters':<34} {'searched':>18} {'confirmed':>18}"
    lines = [f"objective: {result.objective} (mean ± 95% CI per run)", header, "-" * len(header)]
    for s in result.strategies:
        params = ", ".join(f"{k}={_short(v)}" for k, v in s.best.point) or "-"
        lines.append(f"{s.policy:<12} {params:<34} {_pm(s.best):>18} {_pm(s.confirmed):>18}")
    best = result.best
    deterrence = result.deterrence()
    lines.append(f"best response: {best.policy} ({_pm(best.confirmed)} on fresh seeds)")
    if deterrence["penalty_per_offence"] is None:
        lines.append(
            "deterrence: none; the court can never be made to pay for this attack"
            " (no offence it convicts is detected, filed and won): no penalty or bond deters it"
        )
    else:
        lines.append(
            f"deterrence: penalty Π* = {deterrence['penalty_per_offence']:.4g} per offence;"
            f" bond {deterrence['bond']:.4g} pays it for every offence of one run"
        )
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pm(e: Estimate) -> str:
    if e.mean is None:
        return "-"
    return f"{e.mean:.3f}" + (f" ±{e.ci95:.3f}" if e.ci95 is not None else "")
