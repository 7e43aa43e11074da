"""The malicious operator of the lab: its decision points, and the strategies it plays.

An operator that wants to profit from cancels decides, at each of its decision points,
what to do; the world (:mod:`.world`) asks its :class:`Adversary` at every one:

============================== ==========================================================
hook                            decides
============================== ==========================================================
``engine_policy()``             the engine's :class:`~cancelnote.operator.policies.Policy`:
                                when to process each off-chain cancel (now, later, never)
                                and how to sign each note
``order_delay_ns(order)``       how long an arriving order waits before the engine sees it
``cancel_delay_ns(request)``    how long an arriving cancel waits before the engine sees it
                                (and logs it: with journal heads, a hold that leaves no
                                leaf until it ends)
``looks_at_held(order)``        when the operator's own taker looks at a held order
``looks_at_placed(order)``      when it looks at an order just accepted
``take(order)``                 whether it fills the order now: a *directed* match
                                (:meth:`~cancelnote.operator.engine.Engine.match_directed`)
                                that fills exactly that order, whatever rests beside it
``answer_delay_ns(order)``      how long after seeing a forced cancel on the chain it
                                answers (``None``: never; the court then finds a default)
``fill_time_ms(order)``         the time its taker's fill is stamped with (``None``: now;
                                earlier is backdating: the operator's clock is its word)
``self_claims(trigger)``        how many claims its sock puppet files against its own bond
                                now (``trigger``: ``start``, or ``claim`` when a client's
                                first claim is filed)
============================== ==========================================================

The defaults are the plain operator of the bundled scenarios: the engine policy the
``[operator]`` table names, the sniper looks 1 ms before a hold ends and fills what is
more than ``snipe_edge`` in the money, orders are never delayed, forced cancels are
answered at the next block (never with ``answer_on_chain = false``), fills stamped
with the true time, no self-made claims. A strategy overrides the hooks it needs.

What a strategy may read is :class:`OperatorView` (the world implements it): the clock,
the mid-price feed, the scenario, the operator's own book, and which clients run a
watchtower that goes to court (the operator learns that from who has ever forced a
cancel; the lab gives it as known, the worst case for the defence).

Strategies are frozen attrs classes whose fields are their parameters, given by the
scenario's ``[operator.params]`` table (an unknown key is an error) and searched by
``cancelnote sim attack`` over :meth:`Adversary.search_space`. A plug-in strategy is a
subclass named ``module:Class`` (:mod:`.plugins`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ..operator.policies import (
    POLICY_NAMES,
    CancelContext,
    Delay,
    Honest,
    Ignore,
    Policy,
    TargetSenders,
    build_policy,
)
from .closed_forms import held_value
from .config import ScenarioError
from .plugins import is_plugin, load_class

if TYPE_CHECKING:
    from ..api import CancelOrders, PlaceOrder
    from .scenario import OperatorSpec, Scenario
    from .seeding import Seeds

NS_PER_MS = 10**6
X18 = 10**18


@attrs.frozen
class Axis:
    """One parameter's search range: ``points`` values from ``low`` to ``high``."""

    low: float
    high: float
    points: int = 5
    integer: bool = False

    def values(self, low: float | None = None, high: float | None = None) -> list[float]:
        """``points`` evenly spaced values over ``[low, high]`` (default the whole axis),
        rounded and deduplicated for an integer axis."""
        lo = self.low if low is None else max(self.low, low)
        hi = self.high if high is None else min(self.high, high)
        if self.points == 1 or hi <= lo:
            raw = [lo]
        else:
            raw = [lo + (hi - lo) * i / (self.points - 1) for i in range(self.points)]
        if not self.integer:
            return raw
        return sorted({round(x) for x in raw})


class OrderView:
    """An order as the operator sees it in its own book.

    Its fixed fields come with it; its unmatched size and whether it is still ``ACTIVE``
    (a held cancel leaves it active) are read from the engine when first asked, so a
    strategy that does not look at them costs nothing.
    """

    __slots__ = ("_read", "_state", "digest", "owner", "price", "sender", "side")

    def __init__(
        self,
        digest: bytes,
        owner: str,
        sender: bytes,
        side: int,
        price: float,
        read: Callable[[], tuple[float, bool]],
    ) -> None:
        self.digest, self.owner, self.sender = digest, owner, sender
        self.side, self.price = side, price  # +1 buy, -1 sell; the limit price
        self._read = read
        self._state: tuple[float, bool] | None = None

    def _status(self) -> tuple[float, bool]:
        if self._state is None:
            self._state = self._read()
        return self._state

    @property
    def remaining(self) -> float:
        """Unmatched size, base units (0 once filled or off the book)."""
        return self._status()[0]

    @property
    def active(self) -> bool:
        return self._status()[1]

    def edge(self, mid: float) -> float:
        """What filling it at its price is worth to the taker per unit, against ``mid``."""
        return self.side * (self.price - mid)


class OperatorView(Protocol):
    """What a strategy may read from the world (everything the operator knows)."""

    scenario: Scenario
    seeds: Seeds

    @property
    def now_ns(self) -> int: ...

    def mid(self) -> float: ...

    @property
    def sniper_sender(self) -> bytes: ...

    def watched(self, sender: bytes) -> bool: ...

    def unwatched_senders(self) -> list[bytes]: ...

    def watched_senders(self) -> list[bytes]: ...

    def ns_of_ms(self, at_ms: int) -> int:
        """The simulated time of engine time ``at_ms``."""

    def order_view(self, digest: bytes) -> OrderView | None: ...

    def requested_at_ms(self, digest: bytes) -> int | None:
        """When a forced cancel of ``digest`` took effect (its request's block), engine ms."""

    @property
    def puppet_address(self) -> bytes:
        """The address of the operator's sock puppet (it files self-made claims)."""


class Adversary:
    """The operator's strategy. The base class is the plain operator (see the module
    docstring); subclasses override single hooks. ``bind`` is called once, before any
    other hook, with the world."""

    view: OperatorView

    def bind(self, view: OperatorView) -> None:
        object.__setattr__(self, "view", view)  # works on frozen attrs subclasses too

    @classmethod
    def search_space(cls, scenario: Scenario) -> dict[str, Axis]:
        """The parameters ``sim attack`` searches, with their ranges for ``scenario``."""
        return {}

    @property
    def spec(self) -> OperatorSpec:
        return self.view.scenario.operator

    def engine_policy(self) -> Policy:
        return Honest()

    def needs_mark(self) -> bool:
        """Whether the engine's mark price (the latest tick) is set before every call."""
        return False

    def order_delay_ns(self, order: PlaceOrder) -> int:
        return 0

    def looks_at_held(self, order: OrderView, release_ns: int) -> Iterable[int]:
        if not self.spec.snipe:
            return ()
        return (max(self.view.now_ns, release_ns - NS_PER_MS),)

    def looks_at_placed(self, order: OrderView) -> Iterable[int]:
        return ()

    def looks_at_forced(self, order: OrderView) -> Iterable[int]:
        return ()

    def take(self, order: OrderView) -> bool:
        return self.spec.snipe and order.edge(self.view.mid()) > self.spec.snipe_edge

    def answer_delay_ns(self, digest: bytes) -> int | None:
        return 0 if self.spec.answer_on_chain else None

    def fill_time_ms(self, order: OrderView) -> int | None:
        return None

    def cancel_delay_ns(self, request: CancelOrders) -> int:
        return 0

    def self_claims(self, trigger: str) -> int:
        return 0

    def claimant_name(self, owner: bytes) -> str | None:
        """The name of one of the operator's own claimants (a sock puppet) with address
        ``owner``, or ``None``: whose claims the operator is paid itself."""
        return None

    def patience_ms(self) -> int:
        """How late a note may be before a watchtower forces the cancel."""
        return self.view.scenario.client.force_after_ms


@attrs.frozen
class EnginePolicyAdversary(Adversary):
    """The engine policy ``[operator] policy`` names (``delay``, ``ignore``, ...) and the
    plain sniper: the bundled scenarios' operator."""

    name: str

    def needs_mark(self) -> bool:
        return self.name == "conditional_delay"

    def engine_policy(self) -> Policy:
        spec = self.spec
        seed = 0
        if self.name == "ignore":  # drawn only when used, so no other policy's run changes
            seed = int(self.view.seeds.generator("operator/policy").integers(2**63))
        return build_policy(
            self.name,
            delay_ms=spec.delay_ms,
            backdate_ms=spec.backdate_ms,
            ignore_p=spec.ignore_p,
            seed=seed,
        )


@attrs.frozen
class HoldUnderPatience(Adversary):
    """``patience``: hold every cancel just under the watchtower's patience.

    Exploits the watchtower's fixed deadline: it forces a cancel on-chain only once the
    note is ``client.force_after_ms`` late (and still missing at the next block slot), so
    a hold of ``force_after_ms − margin_ms`` (the margin covers both network legs) is
    never forced, never costs an answer, and its notes are honest (latency, not fraud:
    no court rule convicts it). A negative margin holds past the deadline, betting that
    the note arrives before the watchtower's next block. The sniper fills each held
    order at the end of its hold when it is in the money.
    """

    margin_ms: int = 20

    @classmethod
    def search_space(cls, scenario: Scenario) -> dict[str, Axis]:
        patience = scenario.client.force_after_ms
        block_ms = scenario.chain.block_time_ms
        return {"margin_ms": Axis(-block_ms, patience, points=6, integer=True)}

    def engine_policy(self) -> Policy:
        return Delay(max(0, self.patience_ms() - self.margin_ms))


@attrs.frozen
class UnloggedHold(Adversary):
    """``unlogged``: hold every cancel ``delay_ms`` *before* the engine sees it, fill the
    held orders that end in the money.

    Exploits what journal heads leave (protocol §21, DESIGN §9): a cancel takes effect
    when it is logged, and a fill after its leaf is an offence (``FILL_AFTER_CANCEL``),
    so a hold the engine logs (``patience``) becomes provable; a cancel the operator has
    not logged yet is only late, until the client's alarm (its cancel not in the log
    ``heads.cancel_heads`` heads after sending, or its note ``force_after_ms`` late)
    forces it on-chain. The hold's notes are honest (stamped when the engine saw the
    cancel). Without heads it is ``patience`` by another name.
    """

    delay_ms: int = attrs.field(default=200, validator=attrs.validators.ge(0))

    @classmethod
    def search_space(cls, scenario: Scenario) -> dict[str, Axis]:
        """Holds up to the first alarm: the note deadline, or ``cancel_heads`` heads."""
        bound = scenario.client.force_after_ms
        if scenario.heads.interval_ms:
            bound = min(bound, scenario.heads.cancel_heads * scenario.heads.interval_ms)
        return {"delay_ms": Axis(0, bound, points=6, integer=True)}

    def cancel_delay_ns(self, request: CancelOrders) -> int:
        return self.delay_ms * NS_PER_MS


@attrs.frozen
class ValueGatedDelay(Policy):
    """Hold a cancel ``delay_ms`` only when holding its orders is expected to pay: the
    §5 value q·E[(Y − s)⁺], Y ~ N(0, σ²d), s each order's distance from the mark, is at
    least ``min_gain`` for one of them."""

    delay_ms: int
    min_gain: float
    sigma: float

    def on_cancel(self, ctx: CancelContext) -> int | None:
        spread = self.sigma * math.sqrt(self.delay_ms / 1e3)
        for order in ctx.targets:
            mark = ctx.mark_prices.get(order.product_id)
            if mark is None:
                continue
            side = 1 if order.amount > 0 else -1
            distance = side * (mark - order.price_x18) / X18
            if abs(order.amount) / X18 * held_value(spread, distance) >= self.min_gain:
                return ctx.now_ms + self.delay_ms
        return ctx.now_ms


@attrs.frozen
class FloorHold(Adversary):
    """``floor``: hold only when the move is large enough to pay and the loss stays in
    the undisputable-loss floor (docs/simulation.md §7).

    Exploits the floor itself: a hold signs an honest note, so no court rule convicts
    it, and the losses it causes can never be won back in court; what a hold can cost
    is a forced cancel once it outlasts the watchtower (``answerCancel`` gas, net of the
    dispute bond won) and the detection a late note invites. So the operator holds a
    cancel ``delay_ms`` only when the §5 value of holding one of its orders, from that
    order's distance to the mark as the cancel arrives, is at least ``min_gain``; far
    out-of-the-money orders are answered at once. Needs an arithmetic-Brownian σ (the
    operator's estimate of the volatility; the scenario's own for ``gbm`` and ``jump``
    is its diffusion part).
    """

    delay_ms: int = attrs.field(default=500, validator=attrs.validators.ge(0))
    min_gain: float = attrs.field(default=0.0, converter=float, validator=attrs.validators.ge(0))

    @classmethod
    def search_space(cls, scenario: Scenario) -> dict[str, Axis]:
        patience = scenario.client.force_after_ms
        size = scenario.makers.size
        sigma = scenario.market.sigma
        top = size * sigma * math.sqrt(2 * patience / 1e3) * 0.4  # ~ the at-the-money value
        return {
            "delay_ms": Axis(0, 2 * patience, points=5, integer=True),
            "min_gain": Axis(0.0, top, points=5),
        }

    def engine_policy(self) -> Policy:
        sigma = self.view.scenario.market.sigma
        return ValueGatedDelay(self.delay_ms, self.min_gain, sigma)

    def needs_mark(self) -> bool:
        return True


@attrs.frozen
class UnwatchedHold(Adversary):
    """``unwatched``: hold only the cancels of clients without a watchtower.

    Exploits defences that protect only those who run them: a client whose verifier
    never goes to court (``client.watchtower_share`` < 1 leaves the last makers without
    one) never forces a cancel, so its cancels can be held ``delay_ms`` (as long as the
    operator likes) at no cost, while the watched clients see an honest operator and
    nothing to dispute.
    """

    delay_ms: int = attrs.field(default=2_000, validator=attrs.validators.ge(0))

    @classmethod
    def search_space(cls, scenario: Scenario) -> dict[str, Axis]:
        patience = scenario.client.force_after_ms
        return {"delay_ms": Axis(0, 4 * patience, points=5, integer=True)}

    def engine_policy(self) -> Policy:
        return TargetSenders(Delay(self.delay_ms), frozenset(self.view.unwatched_senders()))


@attrs.frozen
class SplitHold(Adversary):
    """``split``: split one hold across the cancel and the re-quote.

    Exploits defences that time only the cancel: the watchtower's patience and the
    detection rule measure how late a *note* is, but nothing times how long an *order*
    waits before the engine accepts it. So the operator holds each cancel ``cancel_ms``
    (under the patience) and each new order ``requote_ms``; the sniper fills the old
    order at the end of its hold and the new one the moment it is accepted, each when
    in the money: a maker's quote is stale for ``cancel_ms`` on the way out and
    ``requote_ms`` on the way in, and neither leg alone looks long.
    """

    cancel_ms: int = attrs.field(default=250, validator=attrs.validators.ge(0))
    requote_ms: int = attrs.field(default=250, validator=attrs.validators.ge(0))

    @classmethod
    def search_space(cls, scenario: Scenario) -> dict[str, Axis]:
        patience = scenario.client.force_after_ms
        return {
            "cancel_ms": Axis(0, patience, points=4, integer=True),
            "requote_ms": Axis(0, 2 * patience, points=4, integer=True),
        }

    def engine_policy(self) -> Policy:
        return Delay(self.cancel_ms)

    def order_delay_ns(self, order: PlaceOrder) -> int:
        if order.order.sender == self.view.sniper_sender:
            return 0
        return self.requote_ms * NS_PER_MS

    def looks_at_placed(self, order: OrderView) -> Iterable[int]:
        return (self.view.now_ns,) if self.spec.snipe and self.requote_ms else ()


@attrs.frozen
class AnswerWindowFill(Adversary):
    """``window``: let watched clients force their cancels, fill the orders during the
    forced cancel's answer window, answer at its end (protocol v2, §12.3 and §20 attack 9).

    Exploits what v2's forced-cancel rule leaves: the cancel takes effect at the request's
    block, and a fill stamped later than ``maxPendingMs`` after it is an offence
    (``proveFillAfterRequest``), so an operator stamping honestly may still fill within
    ``maxPendingMs`` of the request (what was in flight is allowed), and one that
    backdates (``backdate = 1``) stamps a fill it makes at any time of the window as made
    no later than that bound: the operator's clock against the chain's, which nothing
    checks before a verifiable clock (DESIGN §9). The operator drops every cancel of a
    watched client (its order stays on the book, and the taker fills it while it is in
    the money, until the forced cancel lands), keeps looking at the forced order every
    ``look_every_ms`` for ``until_ms`` after the request (the stale order rests on the
    book, so the noise takers compete for it), fills it when it is in the money, then
    answers in the next slot (never later than two blocks before the deadline) with a
    note that counts the fill.
    """

    until_ms: int = attrs.field(default=10_000, validator=attrs.validators.ge(0))
    backdate: int = attrs.field(default=0, validator=attrs.validators.in_((0, 1)))
    look_every_ms: int = attrs.field(default=250, validator=attrs.validators.gt(0))

    @classmethod
    def search_space(cls, scenario: Scenario) -> dict[str, Axis]:
        return {
            "until_ms": Axis(0, _latest_answer_ms(scenario), points=5, integer=True),
            "backdate": Axis(0, 1, points=2, integer=True),
        }

    def engine_policy(self) -> Policy:
        watched = frozenset(self.view.watched_senders())
        return TargetSenders(Ignore(1.0, random.Random(0)), watched)  # p = 1: draws nothing

    def _look_ms(self) -> int:
        return min(self.until_ms, _latest_answer_ms(self.view.scenario))

    def looks_at_forced(self, order: OrderView) -> Iterable[int]:
        requested = self.view.requested_at_ms(order.digest)
        if not self.spec.snipe or requested is None:
            return ()
        now, end = self.view.now_ns, self._at_ns(requested + self._look_ms())
        return range(now, end + 1, self.look_every_ms * NS_PER_MS)

    def answer_delay_ns(self, digest: bytes) -> int | None:
        requested = self.view.requested_at_ms(digest)
        if requested is None:
            return 0
        return max(0, self._at_ns(requested + self._look_ms() + 1) - self.view.now_ns)

    def fill_time_ms(self, order: OrderView) -> int | None:
        requested = self.view.requested_at_ms(order.digest)
        if not self.backdate or requested is None:
            return None
        court, spec = self.view.scenario.court, self.spec
        return requested + court.max_pending_ms - spec.settlement_delay_ms

    def _at_ns(self, engine_ms: int) -> int:
        return self.view.ns_of_ms(engine_ms)


def _latest_answer_ms(scenario: Scenario) -> int:
    """The latest an answer may be prepared after a request: two blocks before W ends."""
    return scenario.court.answer_window_s * 1_000 - 2 * scenario.chain.block_time_ms


@attrs.frozen
class BondDrain(AnswerWindowFill):
    """``drain``: cheat where the court convicts (``window``, stamping honestly) and file
    claims against the operator's own bond through a sock puppet (protocol v2, §13 and
    §20 attack 5).

    Exploits the escapes v2 leaves in the claims: the court takes at most the bond, so
    once claims exceed it each is paid pro rata, and windows are paid in order. The
    puppet files ``claims`` times as many self-made claims (a fill with amount 0 of a
    made-up order of its own, ``proveMalformedFill``) as the bond has penalties: with the
    first claim of a client (``at_start = 0``), into that claim's window, whose victims
    then share the bond with the puppet; or at the start (``at_start = 1``), into a window
    of its own that takes the bond before any victim's, which are then paid nothing. The
    operator gets back what its puppet is paid: what it loses is the burn share of every
    take (``burn_share_bps``) and the victims' share, plus the proofs' gas.
    """

    claims: float = attrs.field(default=1.0, converter=float, validator=attrs.validators.ge(0))
    at_start: int = attrs.field(default=0, validator=attrs.validators.in_((0, 1)))

    @classmethod
    def search_space(cls, scenario: Scenario) -> dict[str, Axis]:
        return {
            "until_ms": Axis(0, _latest_answer_ms(scenario), points=3, integer=True),
            "claims": Axis(0.0, 2.0, points=3),
            "at_start": Axis(0, 1, points=2, integer=True),
        }

    def self_claims(self, trigger: str) -> int:
        if trigger != ("start" if self.at_start else "claim"):
            return 0
        court = self.view.scenario.court
        return math.ceil(self.claims * court.operator_bond / court.penalty) if court.penalty else 0

    def claimant_name(self, owner: bytes) -> str | None:
        return PUPPET if owner == self.view.puppet_address else None


#: The agent name of the operator's sock puppet.
PUPPET = "puppet"
#: The strategies a scenario names in ``[operator] policy`` (beside the engine policies).
STRATEGIES: dict[str, type[Adversary]] = {
    "patience": HoldUnderPatience,
    "unlogged": UnloggedHold,
    "floor": FloorHold,
    "unwatched": UnwatchedHold,
    "split": SplitHold,
    "window": AnswerWindowFill,
    "drain": BondDrain,
}
#: Every built-in name ``[operator] policy`` accepts.
OPERATOR_POLICIES = (*POLICY_NAMES, *STRATEGIES)


def strategy_class(name: str, base_dir: Path | None = None) -> type[Adversary]:
    """The class of strategy ``name`` (built-in or ``module:Class``)."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if is_plugin(name):
        return load_class(name, Adversary, base_dir, "[operator] policy")
    known = ", ".join(OPERATOR_POLICIES)
    raise ScenarioError(f"[operator] policy {name!r}: one of {known}, or module:Class")


def build_adversary(spec: OperatorSpec, base_dir: Path | None = None) -> Adversary:
    """The adversary ``[operator]`` describes (``policy`` and ``[operator.params]``).

    Raises:
        ScenarioError: an unknown policy or plug-in, or a parameter it does not take.
    """
    params: Mapping[str, Any] = spec.params
    if spec.policy in POLICY_NAMES:
        if params:
            raise ScenarioError(
                f"[operator.params] policy {spec.policy!r} takes its keys in [operator]"
            )
        return EnginePolicyAdversary(spec.policy)
    cls = strategy_class(spec.policy, base_dir)
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        raise ScenarioError(f"[operator.params] {spec.policy}: {error}") from error


__all__ = [
    "OPERATOR_POLICIES",
    "STRATEGIES",
    "Adversary",
    "AnswerWindowFill",
    "Axis",
    "BondDrain",
    "EnginePolicyAdversary",
    "FloorHold",
    "HoldUnderPatience",
    "OperatorView",
    "OrderView",
    "SplitHold",
    "UnloggedHold",
    "UnwatchedHold",
    "build_adversary",
]
