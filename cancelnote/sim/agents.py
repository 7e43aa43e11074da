"""Agent plug-ins: extra traders a scenario adds without editing the package.

A scenario adds agents with an array of tables::

    [[agents]]
    class = "plugin_example:MomentumTaker"   # module:Class (see plugins.py)
    name = "momentum"                        # unique; its random stream is agent/<name>
    threshold = 0.03                         # every other key is the class's own field

The class derives from :class:`Agent` and is a frozen attrs class whose fields are its
parameters (an unknown or missing key is an error, as everywhere in a scenario). The
world gives each agent a dev account of its own, FIFO links to and from the operator
drawn from ``[latency.entry]`` and ``[latency.response]`` (streams
``latency/agent/<name>->operator`` and back), and an :class:`AgentContext`, then calls:

* :meth:`Agent.start` once, at time 0 (schedule the first action there);
* :meth:`Agent.on_push` with every fill or note the operator pushes to the agent, when
  it arrives.

The agent's orders are really signed with its key, checked by the engine and matched as
anyone's; its inventory and mark-to-market PnL appear in the run's time series
(``agents.csv``). Agents may not read the wall clock or draw randomness from anything but
``ctx.rng`` (docs/simulation.md §1, determinism rules).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from ..api import BookDepth, CancelOrders, PlaceOrder
from ..operator.testing import Trader

if TYPE_CHECKING:
    from .world import Link, World

X18 = 10**18


class Agent:
    """The interface of an agent plug-in (subclass it; override what you need)."""

    def start(self, ctx: AgentContext) -> None:
        """Called once at time 0."""

    def on_push(self, ctx: AgentContext, wire: Mapping[str, Any]) -> None:
        """A fill (``{"fill": ..., "signature": ...}``) or note the operator pushed."""


@attrs.define
class AgentContext:
    """What an agent can see and do in the world."""

    name: str
    agent: Agent
    trader: Trader
    rng: np.random.Generator
    entry: Link
    response: Link
    _world: World

    @property
    def now_ns(self) -> int:
        return self._world.kernel.now_ns

    def mid(self) -> float:
        """The latest mid-price tick (the public feed)."""
        return self._world.mid()

    def book(self) -> dict[str, Any]:
        """The operator's book as anyone querying it sees it (``bids``, ``asks``: price
        and size x18 strings, best first)."""
        book = self._world.query(BookDepth(self._world.product))
        assert book is not None  # a book query has no reason to fail
        return book

    def schedule_after(self, delay_ns: int, callback: Callable[[AgentContext], None]) -> None:
        """Call ``callback(ctx)`` ``delay_ns`` from now."""
        self._world.kernel.schedule_after(delay_ns, callback, self)

    def order(self, price: float, amount: float, tick: float | None = None) -> PlaceOrder:
        """A signed limit order: ``amount`` base units (> 0 buy, < 0 sell) at ``price``
        (rounded to the makers' tick grid unless ``tick`` says otherwise)."""
        grid = self._world.scenario.makers.tick if tick is None else tick
        tick_x18 = round(grid * X18)
        price_x18 = round(price / grid) * tick_x18
        world = self._world
        return self.trader.order(
            world.product, price_x18, round(amount * X18), world.now_ms(),
            world.engine.max_order_lifetime_s,
        )  # fmt: skip

    def send(self, request: PlaceOrder | CancelOrders) -> None:
        """Send a signed request to the operator (it arrives after the entry latency)."""
        self._world.agent_send(self, request)

    def record(self, kind: str, detail: str = "") -> None:
        """A row in the event log, if the run keeps one."""
        self._world.kernel.record(kind, self.name, "", detail)
