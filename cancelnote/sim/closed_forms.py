"""What holding a cancel is worth to the operator: closed forms, and a simulation to check.

The setting (docs/simulation.md, "Closed forms"; simulation-anchors §3.1): a client's
order rests at ``distance`` s >= 0 from the mid-price; the client asks to cancel it; the
operator holds the cancel for ``hold_s`` seconds and then fills the order if, and only if,
the fill is in the money for the operator (the client buys above, or sells below, the
mid). Under arithmetic Brownian motion with volatility σ, X = P(d) − P(0) ~ N(0, v²) with
v = σ√d, and with k = s / v:

* one resting bid: E[(−X − s)⁺] = v·φ(k) − s·Φ(−k), filled with probability Φ(−k);
* a bid and an ask both stale (Copeland–Galai's free straddle): E[(|X| − s)⁺], twice that;
* an operator that may backdate the fill to any instant of the hold (look-back):
  E[(max_{t≤d} (−σW_t) − s)⁺], by the reflection principle also twice the one-sided value;
* under GBM the one-sided value is a Black–Scholes put with zero rate, struck at mid − s.

The value is v·g(k) with g(k) = φ(k) − k·Φ(−k), so (σ, d, s) → (σ, 4d, 2s) doubles it.

``simulate`` plays the scenario on the kernel with a market model, path after path on
one continuous price path (disjoint holds, so the paths are independent), and returns
the mean gain with its standard error.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import numpy as np
from attrs import validators as v

from .eventlog import EventLog
from .kernel import Kernel
from .market import ArithmeticBrownian, GeometricBrownian, MarketModel, MidPricePath
from .seeding import Seeds

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)

Exposure = Literal["one_sided", "straddle", "lookback"]


def normal_cdf(x: float) -> float:
    """Φ(x), accurate in both tails (erfc, not 1 − erf)."""
    return 0.5 * math.erfc(-x / _SQRT2)


def normal_pdf(x: float) -> float:
    """φ(x)."""
    return math.exp(-0.5 * x * x) / _SQRT2PI


def _check_inputs(sigma: float, hold_s: float, distance: float) -> None:
    if sigma < 0 or hold_s < 0 or distance < 0:
        raise ValueError(f"need sigma, hold_s, distance >= 0; got {sigma}, {hold_s}, {distance}")


def one_sided_value(sigma: float, hold_s: float, distance: float) -> float:
    """E[(−X − s)⁺] = v·φ(k) − s·Φ(−k): the expected gain from one held cancel (ABM)."""
    _check_inputs(sigma, hold_s, distance)
    spread = sigma * math.sqrt(hold_s)
    if spread == 0.0:
        return 0.0
    k = distance / spread
    return spread * normal_pdf(k) - distance * normal_cdf(-k)


def fill_probability(sigma: float, hold_s: float, distance: float) -> float:
    """Φ(−k): how often the held order ends in the money (ABM, one side, s > 0 or v > 0)."""
    _check_inputs(sigma, hold_s, distance)
    spread = sigma * math.sqrt(hold_s)
    if spread == 0.0:
        return 0.0
    return normal_cdf(-distance / spread)


def straddle_value(sigma: float, hold_s: float, distance: float) -> float:
    """E[(|X| − s)⁺]: a bid and an ask at ±s, both held (twice the one-sided value)."""
    return 2.0 * one_sided_value(sigma, hold_s, distance)


def lookback_value(sigma: float, hold_s: float, distance: float) -> float:
    """E[(max_{t≤d}(−σW_t) − s)⁺]: the backdating operator's gain (twice the one-sided)."""
    return 2.0 * one_sided_value(sigma, hold_s, distance)


def gbm_one_sided_value(mid0: float, sigma: float, hold_s: float, distance: float) -> float:
    """K·Φ(−d₂) − P₀·Φ(−d₁), K = P₀ − s: a put at zero rate, for percentage volatility."""
    _check_inputs(sigma, hold_s, distance)
    strike = mid0 - distance
    spread = sigma * math.sqrt(hold_s)
    if spread == 0.0 or strike <= 0.0:
        return max(strike - mid0, 0.0)
    d1 = (math.log(mid0 / strike) + 0.5 * spread**2) / spread
    return strike * normal_cdf(-(d1 - spread)) - mid0 * normal_cdf(-d1)


_ABM_VALUES = {
    "one_sided": one_sided_value,
    "straddle": straddle_value,
    "lookback": lookback_value,
}


@attrs.frozen
class HeldCancel:
    """One stale-order scenario: an order at ``distance`` from mid, its cancel held ``hold_s``.

    ``exposure`` says what the operator can exploit: one resting bid (``one_sided``), a
    bid and an ask (``straddle``), or one bid with the fill backdated to the best instant
    of the hold (``lookback``).
    """

    market: MarketModel
    hold_s: float = attrs.field(converter=float, validator=v.gt(0.0))
    distance: float = attrs.field(converter=float, validator=v.ge(0.0))
    exposure: Exposure = attrs.field(
        default="one_sided", validator=v.in_(("one_sided", "straddle", "lookback"))
    )

    def closed_form(self) -> float:
        """The exact expected gain per held cancel.

        Raises:
            ValueError: a model or exposure without a closed form here: GBM with
                two-sided or look-back exposure, any drift, and jump-diffusion (whose
                jumps the diffusion-only value would silently leave out).
        """
        market = self.market
        if isinstance(market, GeometricBrownian):
            if self.exposure != "one_sided" or market.drift != 0.0:
                raise ValueError("GBM: only the one-sided, driftless value has a closed form")
            return gbm_one_sided_value(market.mid0, market.sigma, self.hold_s, self.distance)
        if not isinstance(market, ArithmeticBrownian):
            raise ValueError(
                f"{type(market).__name__}: no closed form (simulate it: closed_forms.simulate)"
            )
        if market.drift != 0.0:
            raise ValueError("the closed forms assume a driftless mid-price")
        return _ABM_VALUES[self.exposure](market.sigma, self.hold_s, self.distance)


@attrs.frozen
class Estimate:
    """A Monte Carlo mean with its standard error, and the fill rate with its own."""

    paths: int
    mean: float
    stderr: float
    fill_rate: float
    fill_stderr: float

    @classmethod
    def from_gains(cls, gains: np.ndarray) -> Estimate:
        """Mean and standard error of per-path gains; a path fills iff its gain is positive."""
        paths = len(gains)
        fills = (gains > 0.0).astype(float)
        root = math.sqrt(paths)
        return cls(
            paths=paths,
            mean=float(gains.mean()),
            stderr=float(gains.std(ddof=1)) / root,
            fill_rate=float(fills.mean()),
            fill_stderr=float(fills.std(ddof=1)) / root,
        )


# A held order in flight between events: path index, its mid-price path, bid, ask.
_Held = tuple[int, MidPricePath, float, float]


def simulate(
    case: HeldCancel,
    paths: int,
    seeds: Seeds,
    stream: str = "market",
    event_log: EventLog | None = None,
) -> Estimate:
    """Play ``case`` ``paths`` times on the kernel and estimate the operator's gain.

    Each path is three events: the client rests its order(s) at the mid ± ``distance``
    and sends a cancel; the operator receives the cancel (no network latency, so the
    hold starts at once) and holds it; at the end of the hold it fills what is in the
    money (at the price of its choice within the hold, if it backdates) and the next
    path starts. Every path's mid-price starts afresh at ``mid0`` (under GBM the value
    depends on the price level), all drawing from the generator named ``stream``.
    """
    if paths < 2:
        raise ValueError("need at least two paths for a standard error")
    kernel = Kernel(event_log)
    rng = seeds.generator(stream)
    hold_ns = round(case.hold_s * 1e9)
    distance = case.distance
    exposure = case.exposure
    gains = np.empty(paths)

    def rest(index: int) -> None:
        mid = case.market.path(rng, kernel.now_ns)
        kernel.record("rest", "client", str(index), f"mid={mid.price!r}")
        kernel.schedule_after(0, hold, (index, mid, mid.price - distance, mid.price + distance))

    def hold(order: _Held) -> None:
        kernel.record("cancel_held", "operator", str(order[0]), f"hold_ns={hold_ns}")
        kernel.schedule_after(hold_ns, release, order)

    def release(order: _Held) -> None:
        index, mid, bid, ask = order
        if exposure == "lookback":
            _, price = mid.at_with_extreme(kernel.now_ns, "low")
        else:
            price = mid.at(kernel.now_ns)
        gain = max(bid - price, 0.0)
        if exposure == "straddle":
            gain += max(price - ask, 0.0)
        gains[index] = gain
        kind = "stale_fill" if gain > 0.0 else "cancelled"
        kernel.record(kind, "operator", str(index), f"price={price!r} gain={gain!r}")
        if index + 1 < paths:
            kernel.schedule_after(0, rest, index + 1)

    kernel.schedule(0, rest, 0)
    kernel.run()
    return Estimate.from_gains(gains)


def held_value(spread: float, distance: float) -> float:
    """E[(Y − s)⁺] for Y ~ N(0, spread²) and any s: an order already in the money at the
    start of the hold (s < 0) included; ``one_sided_value`` is the case s >= 0, v = σ√d."""
    if spread <= 0.0:
        return max(-distance, 0.0)
    k = distance / spread
    return spread * normal_pdf(k) - distance * normal_cdf(-k)
