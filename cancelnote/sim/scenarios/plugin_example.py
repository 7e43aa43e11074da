"""An example of the lab's three plug-in kinds, used by ``plugin_example.toml``.

Copy this file beside your own scenario and name its classes there as ``module:Class``
(docs/simulation.md §13). Nothing here is imported by the package: the scenario loads
it from its own folder, in every worker of a sweep too.

* :class:`CoinFlipHold`, a strategy (:class:`~cancelnote.sim.adversary.Adversary`):
  holds each cancel with probability ``p`` for ``delay_ms``, drawing from its own named
  stream so every arm of a sweep flips the same coins;
* :class:`MomentumTaker`, an agent (:class:`~cancelnote.sim.agents.Agent`): every
  ``every_ms`` it looks at the mid and, when it has moved more than ``threshold`` since
  its last look, buys (or sells) ``size`` at the best ask (bid);
* :class:`AgentPnl`, a metric (:class:`~cancelnote.sim.metrics.Metric`): the final
  PnL of the operator's own taker and of the momentum taker, marked to the last mid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from cancelnote.operator.policies import CancelContext, Policy
from cancelnote.sim.adversary import Adversary, Axis
from cancelnote.sim.agents import Agent, AgentContext
from cancelnote.sim.metrics import Metric

NS_PER_MS = 10**6


@attrs.define
class _CoinFlip(Policy):
    """The engine policy: hold with probability ``p``, else answer at once."""

    p: float
    delay_ms: int
    rng: np.random.Generator

    def on_cancel(self, ctx: CancelContext) -> int | None:
        if self.rng.random() < self.p:
            return ctx.now_ms + self.delay_ms
        return ctx.now_ms


@attrs.frozen
class CoinFlipHold(Adversary):
    """Hold a cancel ``delay_ms`` with probability ``p`` (a stand-in for your strategy)."""

    p: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0), attrs.validators.le(1)])
    delay_ms: int = attrs.field(default=500, validator=attrs.validators.ge(0))

    @classmethod
    def search_space(cls, scenario: Any) -> dict[str, Axis]:
        return {"p": Axis(0.0, 1.0, points=3), "delay_ms": Axis(0, 1_000, points=3, integer=True)}

    def engine_policy(self) -> Policy:
        return _CoinFlip(self.p, self.delay_ms, self.view.seeds.generator("operator/coin"))


@attrs.frozen
class MomentumTaker(Agent):
    """Trade in the direction of every move larger than ``threshold``."""

    threshold: float = 0.03
    size: float = 1.0
    every_ms: int = 200
    _last: list[float] = attrs.field(factory=list, init=False)  # the mid at the last look

    def start(self, ctx: AgentContext) -> None:
        ctx.schedule_after(self.every_ms * NS_PER_MS, self._look)

    def _look(self, ctx: AgentContext) -> None:
        mid = ctx.mid()
        if self._last and abs(mid - self._last[0]) > self.threshold:
            buy = mid > self._last[0]
            levels = ctx.book()["asks" if buy else "bids"]
            if levels:
                price = int(levels[0][0]) / 10**18
                ctx.send(ctx.order(price, self.size if buy else -self.size))
                ctx.record("momentum", f"buy={buy} price={price!r}")
        self._last[:] = [mid]
        ctx.schedule_after(self.every_ms * NS_PER_MS, self._look)


class AgentPnl(Metric):
    """``sniper_pnl`` and ``momentum_pnl``: cash plus inventory at the last mid."""

    def compute(
        self, world: Any, cancels: np.ndarray, metrics: Mapping[str, float | None]
    ) -> dict[str, float | None]:
        def pnl(agent: str) -> float | None:
            position = world.positions.get(agent)
            return None if position is None else position[1] + position[0] * world.mid()

        return {"sniper_pnl": pnl("sniper"), "momentum_pnl": pnl("momentum")}
