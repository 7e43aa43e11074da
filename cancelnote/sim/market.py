"""Mid-price models, sampled exactly at whatever times the simulation's events happen.

A model is a frozen value describing the law of the mid-price; ``path(rng)`` gives the
mutable ``MidPricePath`` that a simulation advances from event to event. Transitions
are the exact laws of the processes over any interval, not Euler steps, so a path
observed only at the (irregular) times of events has exactly the right distribution
there, however far apart they are.

``MidPricePath.at_with_extreme`` also returns the lowest (or highest) price over the
interval, drawn exactly from the Brownian bridge between the two end points: for
W(0) = a, W(t) = b and variance rate s², the minimum is
``(a + b - sqrt((b - a)**2 - 2 s² t ln U)) / 2`` with U ~ U(0, 1]. The look-back
(backdating) operator needs it, and a discretely sampled maximum would be biased low by
about 0.5826·σ·√Δt (Broadie, Glasserman and Kou).

Units: time in seconds (``dt_s``) inside the models, nanoseconds on paths; ``sigma`` is
in price units per √s for the arithmetic models and a fraction per √s for GBM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self, cast

import attrs
import numpy as np
from attrs import validators as v

from .config import build, choose

_SECTION = "market"

Extreme = Literal["low", "high"]
_SIGN: dict[Extreme, float] = {"low": -1.0, "high": 1.0}

_nonnegative = [v.instance_of(float), v.ge(0.0)]
_finite = v.instance_of(float)


def _bridge_extreme(start: float, end: float, variance: float, u: float, sign: float) -> float:
    """The extreme of a Brownian bridge from ``start`` to ``end`` with total ``variance``."""
    return 0.5 * (start + end + sign * math.sqrt((end - start) ** 2 - 2.0 * variance * math.log(u)))


def _uniform_open_closed(rng: np.random.Generator) -> float:
    """U(0, 1], so that its logarithm is finite."""
    return 1.0 - rng.random()


def _brownian_step(
    price: float, drift: float, sigma: float, dt_s: float, rng: np.random.Generator
) -> float:
    """Arithmetic Brownian motion over ``dt_s``: one normal draw."""
    return price + drift * dt_s + sigma * math.sqrt(dt_s) * rng.standard_normal()


def _brownian_step_with_extreme(
    price: float,
    drift: float,
    sigma: float,
    dt_s: float,
    rng: np.random.Generator,
    extreme: Extreme,
) -> tuple[float, float]:
    """Arithmetic Brownian motion over ``dt_s`` and its extreme on the way: two draws."""
    end = _brownian_step(price, drift, sigma, dt_s, rng)
    variance = sigma**2 * dt_s
    return end, _bridge_extreme(price, end, variance, _uniform_open_closed(rng), _SIGN[extreme])


class _Model:
    """What every model shares: a section constructor and ``path``."""

    __slots__ = ()
    mid0: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """The model described by a ``[market]`` section."""
        return build(cls, config, _SECTION)

    def path(self, rng: np.random.Generator, start_ns: int = 0) -> MidPricePath:
        """A price path starting at ``mid0`` at ``start_ns``, drawing from ``rng``."""
        return MidPricePath(cast("MarketModel", self), rng, start_ns, self.mid0)  # a subclass


@attrs.frozen
class ArithmeticBrownian(_Model):
    """dP = drift·dt + sigma·dW: the model of the closed forms (prices can go negative)."""

    MODEL: ClassVar[str] = "abm"
    sigma: float = attrs.field(converter=float, validator=_nonnegative)
    drift: float = attrs.field(default=0.0, converter=float, validator=_finite)
    mid0: float = attrs.field(default=100.0, converter=float, validator=_finite)

    def step(self, price: float, dt_s: float, rng: np.random.Generator) -> float:
        """The price ``dt_s`` seconds after ``price``: one normal draw."""
        return _brownian_step(price, self.drift, self.sigma, dt_s, rng)

    def step_with_extreme(
        self, price: float, dt_s: float, rng: np.random.Generator, extreme: Extreme
    ) -> tuple[float, float]:
        """The end price and the lowest or highest price on the way: two draws."""
        return _brownian_step_with_extreme(price, self.drift, self.sigma, dt_s, rng, extreme)


@attrs.frozen
class GeometricBrownian(_Model):
    """dP/P = drift·dt + sigma·dW: log-normal prices (E[P(t)] = mid0·exp(drift·t))."""

    MODEL: ClassVar[str] = "gbm"
    sigma: float = attrs.field(converter=float, validator=_nonnegative)
    drift: float = attrs.field(default=0.0, converter=float, validator=_finite)
    mid0: float = attrs.field(default=100.0, converter=float, validator=[_finite, v.gt(0.0)])

    def step(self, price: float, dt_s: float, rng: np.random.Generator) -> float:
        """The price ``dt_s`` seconds after ``price``: one normal draw."""
        return price * math.exp(self._log_step(dt_s, rng))

    def step_with_extreme(
        self, price: float, dt_s: float, rng: np.random.Generator, extreme: Extreme
    ) -> tuple[float, float]:
        """The end price and the extreme on the way (the bridge in log-price): two draws."""
        log_end = self._log_step(dt_s, rng)
        variance = self.sigma**2 * dt_s
        log_extreme = _bridge_extreme(
            0.0, log_end, variance, _uniform_open_closed(rng), _SIGN[extreme]
        )
        return price * math.exp(log_end), price * math.exp(log_extreme)

    def _log_step(self, dt_s: float, rng: np.random.Generator) -> float:
        mean = (self.drift - 0.5 * self.sigma**2) * dt_s
        return mean + self.sigma * math.sqrt(dt_s) * rng.standard_normal()


@attrs.frozen
class JumpDiffusion(_Model):
    """Arithmetic Brownian motion plus compound-Poisson jumps.

    Jumps arrive at ``jump_rate`` per second; each is N(``jump_mean``, ``jump_sd``²) in
    price units. This is the world of Budish, Cramton and Shim, where stale quotes are
    sniped when public news (a jump) arrives.
    """

    MODEL: ClassVar[str] = "jump"
    sigma: float = attrs.field(converter=float, validator=_nonnegative)
    jump_rate: float = attrs.field(converter=float, validator=_nonnegative)
    jump_sd: float = attrs.field(converter=float, validator=_nonnegative)
    jump_mean: float = attrs.field(default=0.0, converter=float, validator=_finite)
    drift: float = attrs.field(default=0.0, converter=float, validator=_finite)
    mid0: float = attrs.field(default=100.0, converter=float, validator=_finite)

    def step(self, price: float, dt_s: float, rng: np.random.Generator) -> float:
        """The price ``dt_s`` seconds after ``price``: the sum of n normal jumps is one
        normal, N(n·mean, n·sd²), so a step costs at most three draws."""
        price = _brownian_step(price, self.drift, self.sigma, dt_s, rng)
        jumps = rng.poisson(self.jump_rate * dt_s)
        if jumps:
            spread = math.sqrt(jumps) * self.jump_sd
            price += jumps * self.jump_mean + spread * rng.standard_normal()
        return price

    def step_with_extreme(
        self, price: float, dt_s: float, rng: np.random.Generator, extreme: Extreme
    ) -> tuple[float, float]:
        """The end price and the extreme on the way: bridges between the jump times, each
        jump a candidate extreme on both of its sides."""
        pick = min if extreme == "low" else max
        jump_times = np.sort(rng.uniform(0.0, dt_s, rng.poisson(self.jump_rate * dt_s)))
        best = price
        elapsed = 0.0
        for at in (*jump_times.tolist(), dt_s):
            price, on_the_way = _brownian_step_with_extreme(
                price, self.drift, self.sigma, at - elapsed, rng, extreme
            )
            best = pick(best, on_the_way)
            if at < dt_s:
                price += rng.normal(self.jump_mean, self.jump_sd)
                best = pick(best, price)
            elapsed = at
        return price, best


MarketModel = ArithmeticBrownian | GeometricBrownian | JumpDiffusion

#: The models a ``[market]`` section can name, by their ``model`` key.
MARKET_MODELS: dict[str, type[MarketModel]] = {
    model.MODEL: model for model in (ArithmeticBrownian, GeometricBrownian, JumpDiffusion)
}


def market_from_config(config: Mapping[str, Any]) -> MarketModel:
    """The mid-price model a ``[market]`` section describes."""
    return choose(MARKET_MODELS, config, _SECTION)


@attrs.define
class MidPricePath:
    """One realisation of a mid-price, advanced to event times as the simulation reaches them.

    Draws happen only when time advances, in the order the simulation asks, so the path
    is a deterministic function of the generator's seed and the event times.
    """

    model: MarketModel
    rng: np.random.Generator
    t_ns: int
    price: float

    def at(self, t_ns: int) -> float:
        """The mid-price at ``t_ns`` (not before the last time asked)."""
        dt_s = self._advance(t_ns)
        if dt_s:
            self.price = self.model.step(self.price, dt_s, self.rng)
        return self.price

    def at_with_extreme(self, t_ns: int, extreme: Extreme) -> tuple[float, float]:
        """The mid-price at ``t_ns`` and its ``low`` or ``high`` since the last time asked."""
        dt_s = self._advance(t_ns)
        if not dt_s:
            return self.price, self.price
        self.price, on_the_way = self.model.step_with_extreme(self.price, dt_s, self.rng, extreme)
        return self.price, on_the_way

    def _advance(self, t_ns: int) -> float:
        if t_ns < self.t_ns:
            raise ValueError(f"price asked at {t_ns} ns, before the path's time {self.t_ns} ns")
        dt_s = (t_ns - self.t_ns) / 1e9
        self.t_ns = t_ns
        return dt_s
