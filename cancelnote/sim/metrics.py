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

from .adversary import PUPPET
from .closed_forms import held_value
from .config import ScenarioError
from .market import ArithmeticBrownian
from .plugins import load_class
from .records import HELD, HONEST, INTENTS, NEVER
from .scenario import Scenario
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
    if len(positives) == 0 or len(negatives) == 0:
        return None
    both = np.concatenate([np.asarray(positives, float), np.asarray(negatives, float)])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    ranks = ((last - counts + 1 + last) / 2)[inverse]  # ties (inf included) share a rank
    n_pos = len(positives)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * len(negatives)))


class Metric:
    """A plug-in metric: ``[metrics] plugins = ["module:Class"]`` (:mod:`.plugins`).

    The class is built without arguments once per run; :meth:`compute` gets the finished
    world (read its ``scenario``, ``disputes``, ``txs``, ``positions`` (agent ->
    ``[inventory, cash]``), ``mids`` and ``horizon_ns``), the closed cancel records as
    a :data:`~.records.CANCEL_DTYPE` array and the built-in metrics, and returns new
    metrics by name (floats, or ``None`` where undefined). A name that is already taken
    is an error.
    """

    def compute(
        self, world: World, cancels: np.ndarray, metrics: Mapping[str, float | None]
    ) -> Mapping[str, float | None]:
        raise NotImplementedError


def metric_plugins(scenario: Scenario) -> list[Metric]:
    """The scenario's plug-in metrics, built (a missing or bad one is a ScenarioError)."""
    return [
        load_class(name, Metric, scenario.base_dir, "[metrics] plugins")()
        for name in scenario.metrics.plugins
    ]


def _defined(times: np.ndarray) -> np.ndarray:
    return times != NEVER


def run_metrics(world: World) -> Metrics:
    """Every §7 metric of one finished run (and the scenario's plug-in metrics)."""
    scenario = world.scenario
    onchain = world.onchain
    horizon = world.horizon_ns
    table = world.recorder.table()
    mids = np.frombuffer(world.mids, dtype=float)
    tick_ns = scenario.feed.tick_ms * NS_PER_MS
    received = _defined(table["t_recv"])
    n_requests, n_received = len(table), int(received.sum())
    m: Metrics = {"requests": float(n_requests), "received": float(n_received)}

    # Stale fills and client loss.
    stale = table["stale_fills"] > 0
    loss = math.fsum(table["loss"])
    notional = float(np.sum(table["quantity"] * table["price"]))
    m["client_loss"] = loss
    m["client_loss_bps"] = _ratio(1e4 * loss, notional)
    m["client_loss_per_cancel"] = _ratio(loss, n_requests)
    m["loss_vs_closed_form"] = closed_form_ratio(world, table, mids)

    # The court's claims, and the operator's gain, gross and net.
    m.update(claim_metrics(world))
    operator_gas = sum(tx.gas for tx in world.txs if tx.party in (OPERATOR, PUPPET))
    penalties = m["operator_penalties"]
    assert penalties is not None
    bonds_won = world.answers * scenario.court.dispute_bond
    gross = math.fsum(table["taken"])
    net = gross - penalties - onchain.gas_cost(operator_gas) + bonds_won
    m["operator_gain_gross"] = gross
    m["backdated_fills"] = float(world.backdated_fills)
    # Journal heads: how many were signed, and what the clients found at them (an
    # unlogged cancel is forced; an unproven leaf is recorded only: a locate asked while
    # the order or cancel was still on its way is one).
    m["heads_signed"] = float(world.log.signed if world.log is not None else 0)
    m["heads_unlogged_cancels"] = float(world.heads_findings.get("UNLOGGED_CANCEL", 0))
    m["heads_unproven_leaves"] = float(world.heads_findings.get("UNPROVEN_LEAF", 0))
    m["operator_gas_cost"] = onchain.gas_cost(operator_gas)
    m["operator_bonds_won"] = bonds_won
    m["operator_gain_net"] = net
    m["attack_roi"] = net / scenario.court.operator_bond

    # Stale-fill rate and the adverse-versus-favourable asymmetry.
    m["stale_fill_rate"] = _ratio(int((stale & received).sum()), n_received)
    m["asymmetry"] = _asymmetry(world, table[received], mids, tick_ns)

    # Time to cancel and its parts.
    recv = table[received]
    effective = recv[_defined(recv["t_eff"])]
    _quantiles(effective["t_eff"] - effective["t_send"], "time_to_cancel", m)
    _quantiles(recv["t_recv"] - recv["t_send"], "network", m)
    noted = recv[_defined(recv["t_note"])]
    _quantiles(noted["t_note"] - noted["t_recv"], "hold", m)
    chain = effective[effective["forced"] & effective["note_on_chain"]]
    _quantiles(chain["t_eff"] - chain["t_note"], "chain", m)

    # Detection by note delay.
    tau = scenario.client.detect_ms * NS_PER_MS
    seen = _defined(table["t_note_seen"])
    delays = np.where(seen, (table["t_note_seen"] - table["t_send"]).astype(float), math.inf)
    judged = seen | (horizon - table["t_send"] > tau)
    delayed = table["intent"] != INTENTS.index(HONEST)
    positives, negatives = delays[judged & delayed], delays[judged & ~delayed]
    m["detection_tpr"] = _ratio(int((positives > tau).sum()), len(positives))
    m["detection_fpr"] = _ratio(int((negatives > tau).sum()), len(negatives))
    m["detection_auc"] = _auc(positives, negatives)

    # Disputes.
    cases = world.disputes
    filed = len(cases)
    won = sum(case.outcome == "won" for case in cases)
    lost = sum(case.outcome == "lost" for case in cases)
    m["disputes_filed"] = float(filed)
    m["disputes_won"] = float(won)
    m["disputes_lost"] = float(lost)
    m["dispute_success_rate"] = _ratio(won, won + lost)
    delayed = table["intent"] != INTENTS.index(HONEST)
    dishonest = delayed | table["misbehaved"]
    cheated = {bytes(d) for d in table["digest"][dishonest]} if cases else set()
    m["false_positive_disputes"] = float(sum(case.digest not in cheated for case in cases))
    resolved = [case for case in cases if case.t_resolved is not None]
    block_ns = onchain.block_ns
    m["blocks_to_resolution"] = (  # in block slots: a real chain has a block every slot
        float(np.mean([(case.t_resolved - case.t_filed) / block_ns for case in resolved]))  # type: ignore[operator]
        if resolved
        else None
    )
    m["gas_per_dispute"] = _ratio(sum(case.gas for case in cases), filed)
    m["dispute_gas_total"] = float(sum(case.gas for case in cases))
    m["bond_locked_currency_s"] = sum(
        onchain.currency(case.bond_wei)
        * ((case.t_resolved if case.t_resolved is not None else world.end_ns) - case.t_filed)
        / 1e9
        for case in cases
    )

    # Gas.
    gas_total = sum(tx.gas for tx in world.txs)
    m["gas_total"] = float(gas_total)
    m["gas_cost_total"] = onchain.gas_cost(gas_total)

    # Market quality (compare arms in a sweep: the honest arm is the reference).
    m["quoted_spread_mean"] = _ratio(world.spread_sum, world.spread_samples)
    m["depth_at_best_mean"] = _ratio(world.depth_sum, world.book_samples)
    halted = 0.0 if world.halted_at is None else (horizon - world.halted_at) / 1e9
    m["halted_s"] = max(halted, 0.0)  # (a halt in the cooldown halts no trading)

    # The undisputable-loss floor and the deterrence threshold.
    proofs = [case for case in cases if case.kind.startswith("prove")]
    p_win = _ratio(sum(case.outcome == "won" for case in proofs), len(proofs))
    proof_gas = np.mean([case.gas for case in proofs]) if proofs else PROOF_GAS
    dispute_cost = onchain.gas_cost(int(proof_gas))
    restitution = scenario.court.penalty * (1.0 if p_win is None else p_win)
    provable = table["misbehaved"]
    floor = ~provable if restitution > dispute_cost else np.ones(len(table), bool)
    m["undisputable_loss"] = math.fsum(table["loss"][stale & floor])
    n_dishonest = int(dishonest.sum())
    disputed = {case.digest for case in cases} & cheated
    p_detect = m["detection_tpr"]
    p_file = _ratio(len(disputed), n_dishonest)
    win = m["dispute_success_rate"]
    c_attack = onchain.gas_cost(operator_gas)
    m["dishonest_orders"] = float(n_dishonest)
    if p_detect and p_file and win:
        threshold = (gross - c_attack) / (p_detect * p_file * win)
        m["deterrence_threshold"] = threshold
        m["deterrence_per_offence"] = threshold / n_dishonest
    else:
        m["deterrence_threshold"] = None
        m["deterrence_per_offence"] = None

    for plugin in metric_plugins(scenario):
        extra = plugin.compute(world, table, dict(m))
        taken = sorted(set(extra) & set(m))
        if taken:
            raise ScenarioError(f"[metrics] plugin {type(plugin).__name__} redefines {taken}")
        m.update(extra)
    return m


def claim_metrics(world: World) -> Metrics:
    """The court's claims of one run and what they come to (protocol §13): filed, owed,
    what the windows take from the operator's bond (at most the bond: the rest stays
    owed, ``claims_short``), the burn share, what the clients and the operator's own
    claimants are credited, and the operator's loss through the court
    (``operator_penalties`` = taken − what its own claimants get back). Claims still
    vesting at the horizon count as the court will settle them
    (:meth:`~.records.ClaimLedger.outcome`); ``claims_paid_in_run`` and ``claim_wait_s``
    are what the clients' watchtowers collected within the run."""
    onchain, ledger = world.onchain, world.ledger
    claims = ledger.claims
    m: Metrics = {"claims_filed": float(len(claims))}
    if claims:
        court = onchain.court
        assert court is not None
        outcome = ledger.outcome(court.bond(), world.scenario.court.burn_share_bps)
        owed = sum(c.penalty_wei for c in claims)
        own = world.operator_claimants
        recovered = sum(wei for name, wei in outcome.entitled.items() if name in own)
        clients = sum(wei for name, wei in outcome.entitled.items() if name not in own)
        waits = [(c.t_paid - c.t_filed) / 1e9 for c in claims if c.t_paid is not None]
        taken = outcome.taken_wei
    else:
        owed = taken = recovered = clients = 0
        outcome, waits = None, []
    currency = onchain.currency
    m["claims_owed"] = currency(owed)
    m["claims_taken"] = currency(taken)
    m["claims_short"] = currency(owed - taken)
    m["claims_burnt"] = currency(outcome.burnt_wei if outcome else 0)
    m["client_compensation"] = currency(clients)
    m["operator_recovered"] = currency(recovered)
    m["operator_penalties"] = currency(taken - recovered)
    m["claims_paid_in_run"] = currency(sum(c.paid_wei for c in claims))
    m["claim_wait_s"] = float(np.mean(waits)) if waits else None
    return m


def _holds(world: World, table: np.ndarray, mids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Quantity, effective hold (s), distance from the mid at the hold's start and loss
    of every held order the operator's taker looked at."""
    tick_ns = world.scenario.feed.tick_ms * NS_PER_MS
    held = table[
        (table["intent"] == INTENTS.index(HELD))
        & _defined(table["t_recv"])
        & _defined(table["t_look"])
    ]
    last = len(mids) - 1
    start = np.minimum(held["t_recv"] // tick_ns, last)
    end = np.minimum(held["t_look"] // tick_ns, last)
    hold_s = np.maximum(end - start, 0) * (tick_ns / 1e9)
    distance = held["side"] * (mids[start] - held["price"])
    return held["quantity"], hold_s, distance, held["loss"]


def _expected(
    sigma: float, quantity: np.ndarray, hold_s: np.ndarray, distance: np.ndarray
) -> float:
    return math.fsum(
        q * held_value(sigma * math.sqrt(d), s)
        for q, d, s in zip(quantity.tolist(), hold_s.tolist(), distance.tolist(), strict=True)
    )


def closed_form_ratio(
    world: World, table: np.ndarray, mids: np.ndarray, hold_scale: float = 1.0
) -> float | None:
    """Loss on held orders over the §5 value of their holds (ABM only): Σ q·E[(Y − s)⁺]
    with s the order's distance from the mid when the hold began and Y ~ N(0, σ²d), d the
    *effective* hold: from the tick in force when the cancel arrived to the tick in force
    when the operator's taker last looked at the order (the feed is a grid, so a hold
    that is not a whole number of ticks is seen shorter or longer than it is).
    ``hold_scale`` multiplies d (the validation's power check predicts a wrong hold).
    """
    market = world.scenario.market
    if not isinstance(market, ArithmeticBrownian):
        return None
    quantity, hold_s, distance, loss = _holds(world, table, mids)
    expected = _expected(market.sigma, quantity, hold_s * hold_scale, distance)
    return _ratio(math.fsum(loss), expected)


def intrinsic_share(world: World, table: np.ndarray, mids: np.ndarray) -> float | None:
    """The share of the held orders' closed-form value that is intrinsic: an order already
    in the money when its hold began (s < 0) is worth −s however short the hold, so a
    check of the closed form has power against a wrong hold only where this is small."""
    market = world.scenario.market
    if not isinstance(market, ArithmeticBrownian):
        return None
    quantity, hold_s, distance, _ = _holds(world, table, mids)
    intrinsic = float(np.dot(quantity, np.maximum(-distance, 0.0)))
    return _ratio(intrinsic, _expected(market.sigma, quantity, hold_s, distance))


def _asymmetry(world: World, received: np.ndarray, mids: np.ndarray, tick_ns: int) -> float | None:
    """P(stale | adverse) − P(stale | favourable), the move over the metric horizon H."""
    horizon = round(world.scenario.metrics.asymmetry_horizon_s * 1e9)
    within = received[received["t_recv"] + horizon <= world.horizon_ns]
    last = len(mids) - 1
    start = mids[np.minimum(within["t_recv"] // tick_ns, last)]
    end = mids[np.minimum((within["t_recv"] + horizon) // tick_ns, last)]
    move = within["side"] * (end - start)
    stale = within["stale_fills"] > 0
    adverse, favourable = move < 0, move > 0
    p_adverse = _ratio(int((stale & adverse).sum()), int(adverse.sum()))
    p_favourable = _ratio(int((stale & favourable).sum()), int(favourable.sum()))
    return None if p_adverse is None or p_favourable is None else p_adverse - p_favourable


def aggregate(runs: Sequence[Mapping[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """``{metric: {"mean", "ci95", "n"}}`` over runs (``n`` runs where it is defined)."""
    names = list(runs[0]) if runs else []
    result: dict[str, dict[str, float | None]] = {}
    for name in names:
        values = [v for r in runs if (v := r.get(name)) is not None]
        n = len(values)
        mean = float(np.mean(values)) if n else None
        ci = t975(n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n) if n > 1 else None
        result[name] = {"mean": mean, "ci95": ci, "n": float(n)}
    return result
