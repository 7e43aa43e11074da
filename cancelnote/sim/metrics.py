"""The metrics of docs/simulation.md §7, per run, and their means with 95% CIs over seeds.

:func:`run_metrics` reads one finished :class:`~.world.World` (its ground truth, never a
party's claim) and returns a flat ``{name: float | None}``: ``None`` where a metric is
undefined in that run (a rate with nothing to count, a quantile of no cancels, a
threshold whose detection or win probability is zero). :func:`aggregate` averages runs
with ``mean ± t₀.₉₇₅,ₙ₋₁ · s / √n`` over the runs where the metric is defined.

Conventions: money in quote currency, times in milliseconds, gas in gas units (and its
cost in quote currency at the scenario's gas and ether prices). ``requests`` are the
(request, order) pairs of cancels the clients sent; ``received`` those the operator got
before the horizon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .closed_forms import held_value
from .market import ArithmeticBrownian
from .records import HONEST, CancelRecord, FillRecord
from .world import OPERATOR, World

#: Gas of ``proveFillAfterNote`` (docs/gas.md), the cost of a proof when a run made none.
PROOF_GAS = 90_846
SECONDS_PER_YEAR = 365.25 * 86_400
NS_PER_MS = 10**6

# Student's t quantile t(0.975, df) for df = 1..30; beyond, the Cornish-Fisher expansion.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964

Metrics = dict[str, float | None]


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _quantiles(values_ns: Sequence[int], prefix: str, into: Metrics) -> None:
    """p50, p95 and p99 of ``values_ns`` in ms (``None`` when there are none)."""
    array = np.asarray(values_ns, dtype=float) / NS_PER_MS
    for q in (50, 95, 99):
        into[f"{prefix}_p{q}_ms"] = float(np.percentile(array, q)) if array.size else None


def _auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a delayed request's note delay > an honest one's), ties half: the ROC's AUC."""
    if not positives or not negatives:
        return None
    both = np.concatenate([np.asarray(positives, float), np.asarray(negatives, float)])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for value in np.unique(both):  # average the ranks of ties (inf included)
        tied = both == value
        ranks[tied] = ranks[tied].mean()
    n_pos = len(positives)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * len(negatives)))


def _loss(fill: FillRecord, cancel: CancelRecord, world: World) -> float:
    """q · side · (p − m(t̂)): what the client paid above (got below) the mid."""
    claimed_ns = max(world.ns_of_ms(fill.claimed_ms), 0)
    return fill.quantity * cancel.side * (fill.price - world.mid_at(claimed_ns))


def stale_fills(world: World) -> dict[bytes, tuple[int, float]]:
    """``{order digest: (stale fills, client loss on them)}``: fills that executed after
    the operator received the order's cancel (in-flight fills executed before)."""
    stale: dict[bytes, tuple[int, float]] = {}
    for fill in world.fills:
        cancel = world.cancels.get(fill.digest)
        if cancel is not None and cancel.t_recv is not None and fill.t_match > cancel.t_recv:
            count, loss = stale.get(fill.digest, (0, 0.0))
            stale[fill.digest] = (count + 1, loss + _loss(fill, cancel, world))
    return stale


def run_metrics(world: World) -> Metrics:
    """Every §7 metric of one finished run."""
    scenario = world.scenario
    onchain = world.onchain
    horizon = world.horizon_ns
    cancels = world.cancels
    requests = list(cancels.values())
    received = [c for c in requests if c.t_recv is not None]
    m: Metrics = {"requests": float(len(requests)), "received": float(len(received))}

    # Stale fills and client loss.
    stale_loss = {digest: loss for digest, (_, loss) in stale_fills(world).items()}
    loss = float(sum(stale_loss.values()))
    notional = sum(c.quantity * c.price for c in requests)
    m["client_loss"] = loss
    m["client_loss_bps"] = _ratio(1e4 * loss, notional)
    m["client_loss_per_cancel"] = _ratio(loss, len(requests))
    m["loss_vs_closed_form"] = _closed_form_ratio(world, stale_loss)

    # The operator's gain, gross and net.
    operator_gas = sum(tx.gas for tx in world.txs if tx.party == OPERATOR)
    penalties = onchain.currency(world.penalties_wei)
    bonds_won = world.answers * scenario.court.dispute_bond
    net = loss - penalties - onchain.gas_cost(operator_gas) + bonds_won
    m["operator_gain_gross"] = loss
    m["operator_penalties"] = penalties
    m["operator_gas_cost"] = onchain.gas_cost(operator_gas)
    m["operator_bonds_won"] = bonds_won
    m["operator_gain_net"] = net
    m["attack_roi"] = net / scenario.court.operator_bond

    # Stale-fill rate and the adverse-versus-favourable asymmetry.
    m["stale_fill_rate"] = _ratio(sum(c.digest in stale_loss for c in received), len(received))
    m["asymmetry"] = _asymmetry(world, received, stale_loss)

    # Time to cancel and its parts.
    effective = [c for c in received if c.t_eff is not None]
    _quantiles([c.t_eff - c.t_send for c in effective], "time_to_cancel", m)  # type: ignore[operator]
    _quantiles([c.t_recv - c.t_send for c in received], "network", m)  # type: ignore[operator]
    noted = [c for c in received if c.t_note is not None]
    _quantiles([c.t_note - c.t_recv for c in noted], "hold", m)  # type: ignore[operator]
    chain = [c.t_eff - c.t_note for c in effective if c.forced and c.note_on_chain]  # type: ignore[operator]
    _quantiles(chain, "chain", m)

    # Detection by note delay.
    tau = scenario.client.detect_ms * NS_PER_MS
    delays: dict[bool, list[float]] = {True: [], False: []}
    for c in requests:
        if c.t_note_seen is not None:
            delays[c.intent != HONEST].append(float(c.t_note_seen - c.t_send))
        elif horizon - c.t_send > tau:
            delays[c.intent != HONEST].append(math.inf)
    flagged = {key: sum(d > tau for d in values) for key, values in delays.items()}
    m["detection_tpr"] = _ratio(flagged[True], len(delays[True]))
    m["detection_fpr"] = _ratio(flagged[False], len(delays[False]))
    m["detection_auc"] = _auc(delays[True], delays[False])

    # Disputes.
    cases = world.disputes
    filed = len(cases)
    won = sum(case.outcome == "won" for case in cases)
    lost = sum(case.outcome == "lost" for case in cases)
    dishonest = {c.digest for c in requests if c.intent != HONEST or c.misbehaved}
    m["disputes_filed"] = float(filed)
    m["disputes_won"] = float(won)
    m["disputes_lost"] = float(lost)
    m["dispute_success_rate"] = _ratio(won, won + lost)
    m["false_positive_disputes"] = float(sum(case.digest not in dishonest for case in cases))
    resolved = [case for case in cases if case.block_resolved is not None]
    m["blocks_to_resolution"] = (
        float(np.mean([case.block_resolved - case.block_filed for case in resolved]))  # type: ignore[operator]
        if resolved
        else None
    )
    m["gas_per_dispute"] = _ratio(sum(case.gas for case in cases), filed)
    m["dispute_gas_total"] = float(sum(case.gas for case in cases))
    m["bond_locked_currency_s"] = sum(
        onchain.currency(case.bond_wei)
        * ((case.t_resolved if case.t_resolved is not None else horizon) - case.t_filed)
        / 1e9
        for case in cases
    )

    # Gas.
    gas_total = sum(tx.gas for tx in world.txs)
    m["gas_total"] = float(gas_total)
    m["gas_cost_total"] = onchain.gas_cost(gas_total)

    # Market quality (compare arms in a sweep: the honest arm is the reference).
    spreads = [spread for spread, _ in world.book_samples if spread is not None]
    m["quoted_spread_mean"] = float(np.mean(spreads)) if spreads else None
    depths = [depth for _, depth in world.book_samples]
    m["depth_at_best_mean"] = float(np.mean(depths)) if depths else None
    m["halted_s"] = 0.0 if world.halted_at is None else (horizon - world.halted_at) / 1e9

    # The undisputable-loss floor and the deterrence threshold.
    proofs = [case for case in cases if case.kind.startswith("prove")]
    p_win = _ratio(sum(case.outcome == "won" for case in proofs), len(proofs))
    proof_gas = np.mean([case.gas for case in proofs]) if proofs else PROOF_GAS
    dispute_cost = onchain.gas_cost(int(proof_gas))
    restitution = scenario.court.penalty * (1.0 if p_win is None else p_win)
    provable = {c.digest for c in requests if c.misbehaved}
    m["undisputable_loss"] = math.fsum(
        value
        for digest, value in stale_loss.items()
        if digest not in provable or restitution <= dispute_cost
    )
    detected = [c for c in requests if c.digest in dishonest]
    disputed = {case.digest for case in cases} & dishonest
    p_detect = m["detection_tpr"]
    p_file = _ratio(len(disputed), len(detected))
    win = m["dispute_success_rate"]
    c_attack = onchain.gas_cost(operator_gas)
    if p_detect and p_file and win:
        m["deterrence_threshold"] = (loss - c_attack) / (p_detect * p_file * win)
    else:
        m["deterrence_threshold"] = None
    return m


def _closed_form_ratio(world: World, stale_loss: Mapping[bytes, float]) -> float | None:
    """Loss on held orders over the §5 value of their holds (ABM only): E[(Y − s)⁺] with
    Y ~ N(0, σ²d) and s the order's distance from mid when the hold began, summed."""
    market = world.scenario.market
    if not isinstance(market, ArithmeticBrownian):
        return None
    hold_s = world.scenario.operator.delay_ms / 1e3
    expected = 0.0
    held = 0.0
    for c in world.cancels.values():
        if c.intent != "held" or c.t_recv is None:
            continue
        distance = c.side * (world.mid_at(c.t_recv) - c.price)
        expected += c.quantity * held_value(market.sigma * math.sqrt(hold_s), distance)
        held += stale_loss.get(c.digest, 0.0)
    return _ratio(held, expected)


def _asymmetry(
    world: World, received: Sequence[CancelRecord], stale_loss: Mapping[bytes, float]
) -> float | None:
    """P(stale | adverse) − P(stale | favourable), the move over the metric horizon H."""
    horizon = round(world.scenario.metrics.asymmetry_horizon_s * 1e9)
    counts = {True: [0, 0], False: [0, 0]}  # adverse? -> [requests, stale]
    for c in received:
        assert c.t_recv is not None
        if c.t_recv + horizon > world.horizon_ns:
            continue
        move = c.side * (world.mid_at(c.t_recv + horizon) - world.mid_at(c.t_recv))
        if move == 0:
            continue
        tally = counts[move < 0]
        tally[0] += 1
        tally[1] += c.digest in stale_loss
    adverse = _ratio(counts[True][1], counts[True][0])
    favourable = _ratio(counts[False][1], counts[False][0])
    return None if adverse is None or favourable is None else adverse - favourable


def aggregate(runs: Sequence[Mapping[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """``{metric: {"mean", "ci95", "n"}}`` over runs (``n`` runs where it is defined)."""
    names = list(runs[0]) if runs else []
    result: dict[str, dict[str, float | None]] = {}
    for name in names:
        values = [r[name] for r in runs if r.get(name) is not None]
        n = len(values)
        mean = float(np.mean(values)) if n else None
        ci = t975(n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n) if n > 1 else None
        result[name] = {"mean": mean, "ci95": ci, "n": float(n)}
    return result
