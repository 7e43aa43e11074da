"""The world: makers, takers, the real operator engine, real clients and the real court.

One :class:`World` is one replicate of a scenario. The parts, and the rules they keep:

* **The mid-price** is drawn on a fixed grid (``feed.tick_ms``) from the ``market``
  stream: every arm of an experiment sees the same path for the same seed, whatever its
  operator does (common random numbers). A tick runs before anything else at its
  instant, and everyone reads the latest tick.
* **Market makers** (``mm/<i>``) quote a bid and an ask around the mid and, when the mid
  is ``requote_threshold`` from their quotes' centre, send one signed cancel for both and
  two new signed orders, never crossing their own orders whose cancel is unanswered.
  Messages to the operator take ``[latency.entry]``, messages back
  ``[latency.response]``, each link drawing from its own stream (FIFO, as TCP).
* **Noise takers** arrive as a Poisson process (``takers``) and hit the best quote with
  an order sized and priced to fill at once (they sit beside the engine: a taker never
  rests). **Plug-in agents** (:mod:`.agents`) trade through links of their own.
* **The operator** is the real :class:`~cancelnote.operator.engine.Engine`; its
  strategy is an :class:`~.adversary.Adversary`, asked at every decision point: the
  engine's policy, how long an arriving order waits, when its own taker (the *sniper*)
  looks at a held or new order and whether it fills it, when it answers a forced
  cancel. The sniper fills exactly the order it targets (a directed match: the operator
  is the matching engine), never a better-priced neighbour. Every call's outputs are
  routed: held cancels get a kernel event at their release, in-flight matches at their
  settlement, pushes to their client.
* **Clients** run the real verifier and watchtower (:mod:`.clients`); the court runs on
  an in-process chain whose blocks follow simulated time (:mod:`.onchain`). The first
  ``client.watchtower_share`` of the makers go to court; the others only verify.
* **Ground truth** (:mod:`.records`) is kept as it happens and closed records are
  spooled to disk, so memory does not grow with the horizon; :mod:`.metrics` reads it.
  A time series (mid, top of book, every agent's inventory and PnL) is streamed to a
  :class:`~.series.SeriesWriter` when one is given.

Time: the engine's clock and the chain's are both ``EPOCH_MS + t_ns // 1_000_000`` (unix
ms; chain seconds are simulated seconds, see :mod:`.onchain`). Randomness comes only from
named streams of ``Seeds``.
"""

from __future__ import annotations

import gc
import math
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from ..api import BookDepth, CancelOrders, OrderStatus, PlaceOrder, Push, Reply
from ..client import watchtower as wt
from ..client.verifier import DISPUTABLE
from ..crypto import Signer
from ..dispute.chain import TransactionReverted
from ..dispute.court import Court
from ..dispute.inprocess import dev_account
from ..messages import (
    CancellationNote,
    Domain,
    Fill,
    Order,
    make_sender,
    nonce_recv_time_ms,
    signature_to_wire,
)
from ..operator.engine import Engine, Output
from ..operator.journal import CancelAccepted, FillIssued, Matched, NoteIssued
from ..operator.lifecycle import CancellationType
from ..operator.testing import Trader
from ..transparency import SignedHead
from .adversary import PUPPET, Adversary, OrderView, build_adversary
from .agents import Agent, AgentContext
from .archive import DiskArchive
from .clients import SimClient, is_disputable
from .eventlog import EventLog
from .heads import OperatorLog
from .kernel import Kernel
from .latency import LatencyModel
from .market import MidPricePath
from .onchain import EPOCH_MS, OPERATOR, OnChain, domain_of
from .plugins import load_class
from .records import (
    DROPPED,
    HELD,
    CancelRecord,
    ClaimLedger,
    DisputeRecord,
    Recorder,
    TxRecord,
)
from .scenario import AgentSpec, Scenario
from .seeding import Seeds
from .series import SeriesWriter

NS_PER_MS = 10**6
PRODUCT = 1
X18 = 10**18
#: Priorities at one instant: the price tick first, then (with ``cancel_first``) cancels.
TICK_PRIORITY = -10
CANCEL_PRIORITY = -1
#: How often the book is sampled for the market-quality metrics and the time series.
BOOK_SAMPLE_NS = 100 * NS_PER_MS
#: How often finished cancel records are closed and spooled to disk.
COMPACT_NS = 10 * 10**9
#: Dev accounts: the operator, its sniper, the noise takers, then one per maker, then
#: one per plug-in agent, then the operator's sock puppet.
OPERATOR_ACCOUNT, SNIPER_ACCOUNT, TAKER_ACCOUNT, FIRST_MAKER_ACCOUNT = 0, 1, 2, 3
SNIPER, TAKER = "sniper", "taker"


@attrs.define
class Link:
    """One direction of a connection: each message arrives strictly after the one
    before it (FIFO, as over TCP), its latency drawn from the link's own stream."""

    model: LatencyModel
    rng: np.random.Generator
    last: int = 0

    def arrival(self, now_ns: int) -> int:
        self.last = max(now_ns + self.model.sample(self.rng), self.last + 1)
        return self.last


@attrs.frozen
class Owner:
    """Who placed an order, on which side, how large (x18): for positions and PnL."""

    agent: str
    side: int
    size: int


@attrs.define
class Maker:
    """One market maker: its key, its quotes and its client (verifier and watchtower)."""

    name: str
    index: int
    trader: Trader
    half_spread: float
    client: SimClient | None
    watched: bool  # its client takes findings to court
    entry: Link
    response: Link
    centre: float | None = None
    live: dict[bytes, PlaceOrder] = attrs.Factory(dict)  # digest -> order believed resting
    pending: dict[bytes, PlaceOrder] = attrs.Factory(dict)  # cancelled, no note seen yet


@attrs.define
class World:
    """One replicate of a scenario, built by :meth:`build` and played by :meth:`run`."""

    scenario: Scenario
    seeds: Seeds
    kernel: Kernel
    engine: Engine
    onchain: OnChain
    adversary: Adversary
    makers: list[Maker]
    mid_path: MidPricePath
    sniper: Trader
    taker: Trader
    taker_rng: np.random.Generator
    puppet: Signer  # the operator's sock puppet: files the claims it makes against itself
    recorder: Recorder
    series: SeriesWriter | None = None
    log: OperatorLog | None = None  # the operator's journal, log and heads ([heads])
    heads_findings: dict[str, int] = attrs.Factory(dict)  # kind -> findings at heads
    agents: list[AgentContext] = attrs.Factory(list)
    mids: array = attrs.Factory(lambda: array("d"))
    disputes: list[DisputeRecord] = attrs.Factory(list)
    txs: list[TxRecord] = attrs.Factory(list)
    ledger: ClaimLedger = attrs.Factory(ClaimLedger)
    operator_claimants: set[str] = attrs.Factory(set)  # names of the operator's own
    fills: int = 0  # operator-signed fills of client orders
    backdated_fills: int = 0  # fills stamped earlier than they were matched
    answers: int = 0
    spread_sum: float = 0.0  # over book samples with both sides
    spread_samples: int = 0
    depth_sum: float = 0.0
    book_samples: int = 0
    halted_at: int | None = None  # when a default halted the operator (halt_on_default)
    positions: dict[str, list[float]] = attrs.Factory(dict)  # agent -> [inventory, cash]
    _logging: bool = False
    _owners: dict[bytes, Owner] = attrs.Factory(dict)  # order digest -> who, side, size
    _orders: dict[bytes, PlaceOrder] = attrs.Factory(dict)  # client orders by digest
    _by_sender: dict[bytes, Maker | AgentContext] = attrs.Factory(dict)
    _by_address: dict[bytes, Maker | AgentContext] = attrs.Factory(dict)
    _match_time: dict[int, tuple[int, bytes, bytes]] = attrs.Factory(dict)
    _filled: dict[bytes, int] = attrs.Factory(dict)  # client order digest -> filled x18
    _exposed: dict[bytes, None] = attrs.Factory(dict)  # orders the sniper watches
    _patrolling: bool = False
    _slot_scheduled: bool = False
    _answers_due: list[tuple[bytes, CancellationNote, bytes]] = attrs.Factory(list)
    _next_block: int = 0
    _open_cases: dict[bytes, DisputeRecord] = attrs.Factory(dict)  # forced cancels
    _requested_at: dict[bytes, int] = attrs.Factory(dict)  # forced: request time, engine ms
    _makers_by_name: dict[str, Maker] = attrs.Factory(dict)
    _wake_at: dict[str, int] = attrs.Factory(dict)  # party -> its court wake-up (a claim)
    _placed: deque[tuple[int, bytes]] = attrs.Factory(deque)  # (recv_time, digest) to retire
    _self_claims_due: int = 0  # the strategy's self-made claims to file at the next slot
    _self_claims_made: int = 0
    _client_claimed: bool = False
    _unfinished: list[bytes] = attrs.Factory(list)  # past recv_time, not finished yet

    @classmethod
    def build(
        cls,
        scenario: Scenario,
        replicate: int,
        event_log: EventLog | None = None,
        series: SeriesWriter | None = None,
    ) -> World:
        """The world of ``scenario``'s replicate ``replicate`` (seed ``run.seed``)."""
        seeds = Seeds(scenario.run.seed, replicate)
        spec = scenario.operator
        operator = dev_account(OPERATOR_ACCOUNT)
        domain = domain_of(operator)
        count = scenario.makers.count
        agent_specs = scenario.agents
        puppet_account = FIRST_MAKER_ACCOUNT + count + len(agent_specs)
        onchain = OnChain(
            scenario.court,
            scenario.chain,
            operator,
            puppet_account + 1,
            seeds.generator("chain/ordering"),
        )
        client_spec = scenario.client
        watched = round(client_spec.watchtower_share * count)
        makers = []
        for i in range(count):
            name = f"mm/{i}"
            signer = dev_account(FIRST_MAKER_ACCOUNT + i)
            client = (
                SimClient(
                    signer,
                    domain,
                    operator.address,
                    client_spec.force_after_ms,
                    scenario.court.max_pending_ms,
                    scenario.court.claim_delay_s * 1_000,
                    scenario.heads.interval_ms,
                    scenario.heads.cancel_heads,
                )
                if client_spec.verify
                else None
            )
            makers.append(
                Maker(
                    name,
                    i,
                    Trader(signer, domain, "mm"),
                    scenario.makers.half_spread + i * scenario.makers.spread_step,
                    client,
                    client_spec.dispute and client is not None and i < watched,
                    Link(scenario.entry_latency, seeds.generator(f"latency/{name}->operator")),
                    Link(scenario.response_latency, seeds.generator(f"latency/operator->{name}")),
                )
            )
        adversary = build_adversary(spec, scenario.base_dir)
        world = cls(
            scenario=scenario,
            seeds=seeds,
            kernel=Kernel(event_log),
            engine=Engine(
                operator,
                domain,
                {PRODUCT},
                settlement_delay_ms=spec.settlement_delay_ms,
                rate_limit=spec.rate_limit,
                max_order_lifetime_s=scenario.makers.order_lifetime_s,
                archive=DiskArchive(),
            ),
            onchain=onchain,
            adversary=adversary,
            makers=makers,
            mid_path=scenario.market.path(seeds.generator("market")),
            sniper=Trader(dev_account(SNIPER_ACCOUNT), domain, "sniper"),
            taker=Trader(dev_account(TAKER_ACCOUNT), domain, "taker"),
            taker_rng=seeds.generator("taker/0"),
            puppet=dev_account(puppet_account),
            recorder=Recorder([maker.name for maker in makers]),
            series=series,
            log=(
                OperatorLog(operator, domain, scenario.heads.interval_ms)
                if scenario.heads.interval_ms
                else None
            ),
            logging=event_log is not None,
        )
        adversary.bind(world)
        world.engine.policy = adversary.engine_policy()
        for maker in makers:
            world._by_sender[maker.trader.sender] = maker
            world._by_address[maker.trader.signer.address] = maker
            world._makers_by_name[maker.name] = maker
        for j, agent_spec in enumerate(agent_specs):
            world._add_agent(j, agent_spec, domain)
        return world

    def _add_agent(self, index: int, spec: AgentSpec, domain: Domain) -> None:
        cls = load_class(spec.cls, Agent, self.scenario.base_dir, "[[agents]] class")
        agent = cls(**spec.params)
        name = spec.name
        signer = dev_account(FIRST_MAKER_ACCOUNT + self.scenario.makers.count + index)
        seeds = self.seeds
        ctx = AgentContext(
            name,
            agent,
            Trader(signer, domain, "agent"),
            seeds.generator(f"agent/{name}"),
            Link(self.scenario.entry_latency, seeds.generator(f"latency/agent/{name}->operator")),
            Link(
                self.scenario.response_latency, seeds.generator(f"latency/operator->agent/{name}")
            ),
            self,
        )
        self.agents.append(ctx)
        self._by_sender[ctx.trader.sender] = ctx
        self._by_address[ctx.trader.signer.address] = ctx

    # --- what the operator's strategy may read (adversary.OperatorView) -------------------

    @property
    def now_ns(self) -> int:
        return self.kernel.now_ns

    @property
    def sniper_sender(self) -> bytes:
        return self.sniper.sender

    @property
    def product(self) -> int:
        return PRODUCT

    def watched(self, sender: bytes) -> bool:
        """Whether the client ``sender`` runs a watchtower that goes to court."""
        maker = self._by_sender.get(sender)
        return isinstance(maker, Maker) and maker.watched

    def unwatched_senders(self) -> list[bytes]:
        return [maker.trader.sender for maker in self.makers if not maker.watched]

    def watched_senders(self) -> list[bytes]:
        return [maker.trader.sender for maker in self.makers if maker.watched]

    def requested_at_ms(self, digest: bytes) -> int | None:
        return self._requested_at.get(digest)

    @property
    def puppet_address(self) -> bytes:
        return self.puppet.address

    def order_view(self, digest: bytes) -> OrderView | None:
        """A client's order as the operator's own book has it (``None``: not a client
        order the world still follows); its state is read from the engine when asked."""
        placed = self._orders.get(digest)
        if placed is None:
            return None
        order = placed.order
        owner = self._owners.get(digest)
        side = 1 if order.amount > 0 else -1
        return OrderView(
            digest, "?" if owner is None else owner.agent, order.sender, side,
            order.price_x18 / X18, lambda: self._order_state(digest),
        )  # fmt: skip

    def _order_state(self, digest: bytes) -> tuple[float, bool]:
        """Unmatched size and ``ACTIVE`` of an order, from the engine's order status."""
        status = self.query(OrderStatus(digest))
        if status is None:
            return 0.0, False
        return abs(int(status["unfilled_amount"])) / X18, status["status"] == "ACTIVE"

    # --- running --------------------------------------------------------------------------

    @property
    def horizon_ns(self) -> int:
        """When the market closes (``run.horizon_s``)."""
        return round(self.scenario.run.horizon_s * 1e9)

    @property
    def end_ns(self) -> int:
        """When the run ends: the horizon and the court's ``run.cooldown_s`` after it."""
        return self.horizon_ns + round(self.scenario.run.cooldown_s * 1e9)

    @property
    def _tick_ns(self) -> int:
        return self.scenario.feed.tick_ms * NS_PER_MS

    def run(self, progress: Callable[[int, int], None] | None = None, steps: int = 20) -> int:
        """Play the whole horizon; returns the number of kernel events run.

        ``progress(done_ns, end_ns)`` is called ``steps`` times along the way. The market
        closes at the horizon (no quotes, no takers, no sniping); the court's business
        (answers, defaults, proofs, claims) runs on through the cooldown.
        """
        kernel = self.kernel
        kernel.schedule(0, self._tick, 0, TICK_PRIORITY)
        if self.scenario.takers.rate_per_s > 0:
            kernel.schedule(self._taker_gap(), self._taker_arrives)
        kernel.schedule(COMPACT_NS, self._compact)
        for ctx in self.agents:
            kernel.schedule(0, lambda c: c.agent.start(c), ctx)
        self._claim_against_self("start")
        if self.log is not None:
            kernel.schedule(0, self._sign_head)
        events = 0
        horizon = self.end_ns
        try:
            for step in range(1, steps + 1):
                until = horizon * step // steps
                events += kernel.run(until_ns=until)
                if progress is not None:
                    progress(until, horizon)
        finally:
            gc.unfreeze()
            if self.log is not None:
                self.log.close()
        for maker in self.makers:
            if maker.client is not None:
                maker.client.close()
        self.recorder.finish()
        if self.series is not None:
            self.series.close()
        return events

    def now_ms(self) -> int:
        return EPOCH_MS + self.kernel.now_ns // NS_PER_MS

    def mid(self) -> float:
        """The latest mid-price tick."""
        return self.mids[-1]

    def _record(self, kind: str, agent: str, digest: bytes = b"", payload: str = "") -> None:
        self.kernel.record(kind, agent, "0x" + digest.hex() if digest else "", payload)

    # --- the market -----------------------------------------------------------------------

    def _tick(self, index: int) -> None:
        mid = self.mid_path.at(self.kernel.now_ns)
        self.mids.append(mid)
        threshold = self.scenario.makers.requote_threshold
        for maker in self.makers:
            if maker.centre is None or abs(mid - maker.centre) >= threshold:
                self._requote(maker, mid)
        if self.kernel.now_ns % BOOK_SAMPLE_NS < self._tick_ns:
            self._sample_book()
        next_ns = (index + 1) * self._tick_ns
        if next_ns <= self.horizon_ns:
            self.kernel.schedule(next_ns, self._tick, index + 1, TICK_PRIORITY)

    def _requote(self, maker: Maker, mid: float) -> None:
        now_ms = self.now_ms()
        now = self.kernel.now_ns
        trader = maker.trader
        request = None
        if maker.live:
            orders = list(maker.live.values())
            request = trader.cancel(orders, now_ms)
            for placed, digest in zip(orders, maker.live, strict=True):
                order = placed.order
                self.recorder.add(
                    CancelRecord(
                        maker.index, digest, 1 if order.amount > 0 else -1,
                        abs(order.amount) / X18, order.price_x18 / X18, now,
                    )
                )  # fmt: skip
                if self._logging:
                    self._record("cancel_send", maker.name, digest)
            if maker.watched:
                due = now + (self.scenario.client.force_after_ms + 1) * NS_PER_MS
                self.kernel.schedule(due, self._deadline, (maker, tuple(maker.live)))
            maker.pending.update(maker.live)
            maker.live = {}
        size = round(self.scenario.makers.size * X18)
        lifetime = self.engine.max_order_lifetime_s
        new = []
        for price_x18, amount in zip(self._quotes(maker, mid), (size, -size), strict=True):
            placed = trader.order(PRODUCT, price_x18, amount, now_ms, lifetime)
            digest = placed.order.digest(trader.domain)
            self._placed.append((nonce_recv_time_ms(placed.order.nonce), digest))
            maker.live[digest] = placed
            self._owners[digest] = Owner(maker.name, 1 if amount > 0 else -1, abs(amount))
            self._orders[digest] = placed
            new.append(placed)
            if self._logging:
                self._record("place", maker.name, digest, f"price={price_x18 / X18!r}")
        if maker.client is not None:
            maker.client.requote(request, new, now_ms)
        if request is not None:
            priority = CANCEL_PRIORITY if self.scenario.chain.ordering == "cancel_first" else 0
            self._send(maker.entry, request, priority)
        for placed in new:
            self._send(maker.entry, placed, 0)
        maker.centre = mid

    def _quotes(self, maker: Maker, mid: float) -> tuple[int, int]:
        """The maker's bid and ask (x18) on the tick grid around ``mid``, kept from
        crossing its own orders whose cancel is still unanswered (self-trade prevention:
        a maker does not trade with itself, and its own new quote must not fill the stale
        one the operator holds before the operator can)."""
        tick = self.scenario.makers.tick
        tick_x18 = round(tick * X18)
        bid = _x18(math.floor((mid - maker.half_spread) / tick + 1e-9) * tick, tick)
        ask = _x18(math.ceil((mid + maker.half_spread) / tick - 1e-9) * tick, tick)
        for placed in maker.pending.values():
            price = placed.order.price_x18
            if placed.order.amount < 0:
                bid = min(bid, price - tick_x18)
            else:
                ask = max(ask, price + tick_x18)
        return bid, ask

    def _sample_book(self) -> None:
        """The quoted spread (when both sides hold orders) and the depth at the best bid
        and ask, as anyone querying the book sees them; a time-series row."""
        book = self.query(BookDepth(PRODUCT))
        assert book is not None
        bids, asks = book["bids"], book["asks"]
        best_bid = int(bids[0][0]) / X18 if bids else None
        best_ask = int(asks[0][0]) / X18 if asks else None
        depth = sum(int(side[0][1]) for side in (bids, asks) if side) / X18
        self.book_samples += 1
        self.depth_sum += depth
        if best_bid is not None and best_ask is not None:
            self.spread_sum += best_ask - best_bid
            self.spread_samples += 1
        if self.series is not None:
            mid = self.mid()
            self.series.market(self.kernel.now_ns, mid, best_bid, best_ask, depth)
            for agent, (inventory, cash) in self.positions.items():
                self.series.agent(
                    self.kernel.now_ns, agent, inventory, cash, cash + inventory * mid
                )

    def _send(self, link: Link, request: PlaceOrder | CancelOrders, priority: int) -> None:
        self.kernel.schedule(link.arrival(self.kernel.now_ns), self._arrive, request, priority)

    def agent_send(self, ctx: AgentContext, request: PlaceOrder | CancelOrders) -> None:
        if isinstance(request, PlaceOrder):
            self._own(request, ctx.name)
        self._send(ctx.entry, request, 0)

    def _own(self, placed: PlaceOrder, agent: str) -> None:
        amount = placed.order.amount
        owner = Owner(agent, 1 if amount > 0 else -1, abs(amount))
        digest = placed.order.digest(self.engine.domain)
        self._owners[digest] = owner
        self._placed.append((nonce_recv_time_ms(placed.order.nonce), digest))

    def _arrive(self, request: PlaceOrder | CancelOrders) -> None:
        if isinstance(request, PlaceOrder):
            delay = self.adversary.order_delay_ns(request)
            if delay > 0:
                if self._logging:
                    digest = request.order.digest(self.engine.domain)
                    self._record("order_hold", OPERATOR, digest, f"for={delay}")
                self.kernel.schedule_after(delay, self._accept_order, request)
                return
            self._accept_order(request)
            return
        now = self.kernel.now_ns
        recorder = self.recorder
        for digest in request.tx.digests:
            record = recorder.get(digest)
            if record is not None:
                record.t_recv = now
        delay = self.adversary.cancel_delay_ns(request)
        if delay > 0:  # held before the engine (and its log) sees it
            for digest in request.tx.digests:
                self._held(digest, now + delay)
            self.kernel.schedule_after(delay, self._accept_cancel, request)
            return
        self._accept_cancel(request)

    def _accept_cancel(self, request: CancelOrders) -> None:
        recorder = self.recorder
        outputs = self._call(request)
        if not any(_answers(out, request) for out in outputs):  # the policy dropped it
            for digest in request.tx.digests:
                record = recorder.get(digest)
                if record is not None:
                    record.intent = DROPPED
                if self._logging:
                    self._record("cancel_drop", OPERATOR, digest)
                self._expose(digest)

    def _accept_order(self, placed: PlaceOrder) -> None:
        self._call(placed)
        digest = placed.order.digest(self.engine.domain)
        view = self.order_view(digest)  # a client's order: the operator may look at it now
        if view is not None:
            for at in self.adversary.looks_at_placed(view):
                self.kernel.schedule(at, self._snipe, digest)

    def _taker_gap(self) -> int:
        return max(1, round(self.taker_rng.exponential(1e9 / self.scenario.takers.rate_per_s)))

    def _taker_arrives(self, _: object) -> None:
        if self.kernel.now_ns > self.horizon_ns:
            return  # the market closed
        buy = bool(self.taker_rng.random() < 0.5)
        book = self.query(BookDepth(PRODUCT))
        assert book is not None
        levels = book["asks"] if buy else book["bids"]
        if levels:
            price_x18, depth = int(levels[0][0]), int(levels[0][1])
            size = min(round(self.scenario.takers.size * X18), depth)
            self._take(self.taker, TAKER, price_x18, size if buy else -size)
        self.kernel.schedule_after(self._taker_gap(), self._taker_arrives)

    def _take(self, trader: Trader, agent: str, price_x18: int, amount: int) -> None:
        """An order that crosses at once (priced and sized from the book it hits)."""
        lifetime = self.engine.max_order_lifetime_s
        placed = trader.order(PRODUCT, price_x18, amount, self.now_ms(), lifetime)
        self._own(placed, agent)
        self._call(placed)

    # --- the operator's engine ------------------------------------------------------------

    def _call(self, request: Any) -> list[Output]:
        if self.adversary.needs_mark():
            self.engine.set_mark_price(PRODUCT, round(self.mid() * X18))
        outputs = self.engine.handle(request, self.now_ms())
        self._route(outputs)
        return outputs

    def query(self, query: Any) -> dict[str, Any] | None:
        """The data of a query's answer (``None`` when it failed): the call's last reply
        of the query's type (a held cancel released by the same call answers first)."""
        outputs = self._call(query)
        wire = next(
            out.wire
            for out in reversed(outputs)
            if isinstance(out, Reply) and out.wire["request_type"] == query.REQUEST_TYPE
        )
        return wire["data"] if wire["status"] == "success" else None

    def _advance(self, _: object) -> None:
        self._route(self.engine.advance(self.now_ms()))

    def ns_of_ms(self, at_ms: int) -> int:
        """The simulated time of engine time ``at_ms``."""
        return (at_ms - EPOCH_MS) * NS_PER_MS

    def _route(self, outputs: list[Output]) -> None:
        if self.log is not None:  # the journal, and the log's leaves, before anything else
            self.log.append([out for out in outputs if not isinstance(out, (Push, Reply))])
        for out in outputs:
            if isinstance(out, Push):
                self._push(out)
            elif isinstance(out, FillIssued):
                self._on_fill(out)
            elif isinstance(out, Matched):
                self._on_match(out)
            elif isinstance(out, NoteIssued):
                self._on_note(out)
            elif isinstance(out, CancelAccepted):
                self._on_cancel_accepted(out)

    def _on_cancel_accepted(self, entry: CancelAccepted) -> None:
        if entry.process_at_ms <= entry.at_ms:
            return
        release = self.ns_of_ms(entry.process_at_ms)
        self.kernel.schedule(release, self._advance)
        for digest in entry.request.tx.digests:
            self._held(digest, release)

    def _held(self, digest: bytes, release_ns: int) -> None:
        """A cancel of ``digest`` is held until ``release_ns``: the strategy's looks."""
        record = self.recorder.get(digest)
        if record is not None:
            record.intent = HELD
        if self._logging:
            self._record("cancel_hold", OPERATOR, digest, f"until={release_ns}")
        view = self.order_view(digest)
        if view is not None:
            for at in self.adversary.looks_at_held(view, release_ns):
                self.kernel.schedule(at, self._snipe, digest)

    def _on_match(self, entry: Matched) -> None:
        self._match_time[entry.seq] = (self.kernel.now_ns, entry.maker, entry.taker)
        if entry.settle_at_ms > entry.at_ms:  # (a backdated match may settle in the past)
            at = max(self.ns_of_ms(entry.settle_at_ms), self.kernel.now_ns)
            self.kernel.schedule(at, self._advance)

    def _on_fill(self, entry: FillIssued) -> None:
        fill = entry.fill
        digest = fill.order_digest
        price = fill.price_x18 / X18
        t_match, maker, taker = self._match_time[entry.match_seq]
        if digest == taker:  # the maker's fill is signed first: the match is done
            del self._match_time[entry.match_seq]
        owner = self._owners.get(digest)
        if owner is not None:
            position = self.positions.setdefault(owner.agent, [0.0, 0.0])
            signed = owner.side * fill.amount / X18
            position[0] += signed
            position[1] -= signed * price
        if digest not in self._orders:  # a taker's, an agent's or the sniper's own fill
            if owner is not None and fill.filled_total >= owner.size:
                del self._owners[digest]
            return
        self.fills += 1
        self._filled[digest] = fill.filled_total
        record = self.recorder.get(digest)
        other = self._owners.get(taker if digest == maker else maker)
        if self.ns_of_ms(fill.timestamp_ms) < t_match - NS_PER_MS:  # stamped before it was
            self.backdated_fills += 1
        if record is not None and record.t_recv is not None and t_match > record.t_recv:
            # Marked to the market when the fill is signed, whatever time it claims.
            loss = fill.amount / X18 * record.side * (price - self.mid())
            record.stale_fills += 1
            record.loss += loss
            if other is not None and other.agent == SNIPER:
                record.taken += loss
        if self._logging:
            self._record(
                "fill", owner.agent if owner else "?", digest,
                f"seq={fill.seq} amount={fill.amount / X18!r} price={price!r}"
                f" counterparty={other.agent if other else '?'}",
            )  # fmt: skip

    def _on_note(self, entry: NoteIssued) -> None:
        note = entry.note
        record = self.recorder.get(note.order_digest)
        on_chain = entry.cancellation_type is CancellationType.ON_CHAIN
        if self._logging:
            self._record(
                "note", OPERATOR, note.order_digest,
                f"seq={note.seq} on_chain={on_chain} published={entry.published}",
            )  # fmt: skip
        if entry.fills_after:
            self._expose(note.order_digest)
        if record is None:
            return
        truth_ms = None if record.t_recv is None else EPOCH_MS + record.t_recv // NS_PER_MS
        if (
            record.t_note is not None
            or entry.fills_after
            or not (entry.published or on_chain)
            or (not on_chain and note.received_at_ms != truth_ms)
        ):
            record.misbehaved = True
        if record.t_note is None:
            record.t_note = self.kernel.now_ns
            record.note_on_chain = on_chain
            if not on_chain:
                record.t_eff = self.kernel.now_ns

    def _push(self, push: Push) -> None:
        target = self._by_sender.get(push.sender)
        if target is not None:
            arrival = target.response.arrival(self.kernel.now_ns)
            self.kernel.schedule(arrival, self._deliver, (target, push.entry))

    # --- journal heads --------------------------------------------------------------------

    def _sign_head(self, _: object = None) -> None:
        """Every ``heads.interval_ms``: the operator signs the head of its log and pushes it
        to every client that follows heads; until ``cancel_heads`` heads after the market
        closed (every cancel sent gets its heads; the court's business after that needs
        none)."""
        assert self.log is not None
        signed = self.log.sign(self.now_ms())
        for maker in self.makers:
            if maker.client is not None and maker.client.heads is not None:
                arrival = maker.response.arrival(self.kernel.now_ns)
                self.kernel.schedule(arrival, self._deliver_head, (maker, signed))
        heads = self.scenario.heads
        interval_ns = heads.interval_ms * NS_PER_MS
        last_ns = min(self.end_ns, self.horizon_ns + (heads.cancel_heads + 1) * interval_ns)
        if self.kernel.now_ns + interval_ns <= last_ns:
            self.kernel.schedule_after(interval_ns, self._sign_head)

    def _deliver_head(self, item: tuple[Maker, SignedHead]) -> None:
        maker, signed = item
        assert maker.client is not None and self.log is not None
        findings = maker.client.receive_head(signed, self.now_ms(), self.log.answer)
        for finding in findings:
            self.heads_findings[finding.kind] = self.heads_findings.get(finding.kind, 0) + 1
        if maker.watched and any(finding.kind in DISPUTABLE for finding in findings):
            self._wants_court(maker.name)

    # --- the clients ----------------------------------------------------------------------

    def _deliver(self, item: tuple[Maker | AgentContext, FillIssued | NoteIssued]) -> None:
        target, entry = item
        if isinstance(target, AgentContext):
            target.agent.on_push(target, entry.signed_wire)
            return
        maker = target
        if maker.client is not None:
            received = maker.client.receive(entry, self.now_ms())
            if maker.watched and is_disputable(received):
                self._wants_court(maker.name)
        if isinstance(entry, FillIssued):
            digest = entry.fill.order_digest
            placed = self._orders.get(digest)
            if placed is not None and entry.fill.filled_total >= abs(placed.order.amount):
                maker.live.pop(digest, None)
                maker.pending.pop(digest, None)
                if self.recorder.get(digest) is None:  # filled while live: done with it
                    self._forget(digest)
        else:
            digest = entry.note.order_digest
            maker.pending.pop(digest, None)
            record = self.recorder.get(digest)
            if record is not None and record.t_note_seen is None:
                record.t_note_seen = self.kernel.now_ns

    def _deadline(self, item: tuple[Maker, tuple[bytes, ...]]) -> None:
        maker, digests = item
        for digest in digests:
            record = self.recorder.get(digest)
            placed = self._orders.get(digest)
            if (
                record is not None
                and record.t_note_seen is None
                and placed is not None
                and self._filled.get(digest, 0) < abs(placed.order.amount)
            ):
                self._wants_court(maker.name)
                return

    # --- the sniper -----------------------------------------------------------------------

    def _expose(self, digest: bytes) -> None:
        if not self.scenario.operator.snipe:
            return
        self._exposed[digest] = None
        if not self._patrolling:
            self._patrolling = True
            self.kernel.schedule_after(
                self.scenario.operator.snipe_every_ms * NS_PER_MS, self._patrol
            )

    def _patrol(self, _: object) -> None:
        for digest in list(self._exposed):
            if not self._snipe(digest):
                del self._exposed[digest]
        self._patrolling = bool(self._exposed)
        if self._patrolling:
            self.kernel.schedule_after(
                self.scenario.operator.snipe_every_ms * NS_PER_MS, self._patrol
            )

    def _snipe(self, digest: bytes) -> bool:
        """Look at ``digest``: fill exactly it if the strategy says so; false once it can
        no longer be sniped."""
        if self.kernel.now_ns > self.horizon_ns:
            return False  # the market closed
        view = self.order_view(digest)
        if view is None or not view.remaining:
            return False
        if not view.active and digest not in self._exposed:
            return False
        record = self.recorder.get(digest)
        if record is not None and record.t_note is None:
            record.t_look = self.kernel.now_ns
        if not self.adversary.take(view):
            return True
        if self._logging:
            self._record("snipe", SNIPER, digest, f"edge={view.edge(self.mid())!r}")
        size = round(view.remaining * X18)
        lifetime = self.engine.max_order_lifetime_s
        # The operator's clock for this fill: now, or earlier for a backdating strategy.
        stamp = self.adversary.fill_time_ms(view)
        at_ms = self.now_ms() if stamp is None else min(stamp, self.now_ms())
        placed = self.sniper.order(
            PRODUCT, round(view.price * X18), -view.side * size, at_ms, lifetime
        )
        self._own(placed, SNIPER)
        outputs = self.engine.match_directed(placed, digest, at_ms)
        self._route(outputs)
        # A cancelled order let through once leaves the book after that one fill.
        return view.active

    # --- closing finished records ---------------------------------------------------------

    def _compact(self, _: object) -> None:
        """Close the cancel records nothing can change any more (their note was seen and
        took effect, no case or exposure is open, the metric horizon has passed)."""
        now = self.kernel.now_ns
        margin = (
            round(self.scenario.metrics.asymmetry_horizon_s * 1e9)
            + 3 * self.onchain.block_ns
            + 10**9
        )
        done = [
            record
            for record in self.recorder.open.values()
            if record.t_note_seen is not None
            and record.t_eff is not None
            and record.t_recv is not None
            and now - record.t_recv > margin
            and now - record.t_note_seen > margin
            and record.digest not in self._exposed
            and record.digest not in self._open_cases
        ]
        for record in done:
            self.recorder.close(record)
            self._forget(record.digest)
        self._retire_finished()
        # What is left is long-lived (the engine keeps every order): keep the cyclic
        # garbage collector from walking it again and again (undone when the run ends).
        gc.freeze()
        if now + COMPACT_NS <= self.end_ns:
            self.kernel.schedule_after(COMPACT_NS, self._compact)

    def _retire_finished(self) -> None:
        """Let the engine put the orders that are finished into its archive (an order is
        tried once its nonce's recv_time passed, and again at each compaction while it
        is still live): the engine's memory stays flat in the horizon."""
        now_ms, engine = self.now_ms(), self.engine
        still = [d for d in self._unfinished if not engine.retire(d, now_ms)]
        placed = self._placed
        while placed and placed[0][0] <= now_ms:
            digest = placed.popleft()[1]
            if not engine.retire(digest, now_ms):
                still.append(digest)
        self._unfinished = still

    def _forget(self, digest: bytes) -> None:
        """Nothing more can happen to a client's order: the world and its client let it go."""
        self._orders.pop(digest, None)
        owner = self._owners.pop(digest, None)
        self._filled.pop(digest, None)
        maker = None if owner is None else self._makers_by_name.get(owner.agent)
        if maker is not None and maker.client is not None:
            maker.client.forget(digest)

    # --- the chain ------------------------------------------------------------------------

    def _wants_court(self, party: str) -> None:
        if self.onchain.wait(party):
            self._schedule_slot()

    def _schedule_slot(self) -> None:
        if not self._slot_scheduled:
            self._slot_scheduled = True
            self.kernel.schedule(self.onchain.next_slot(self.kernel.now_ns), self._slot)

    def _slot(self, _: object) -> None:
        """One block slot: the waiting parties transact in the slot's block, the block is
        sealed, and its logs are read (the operator's watcher and the ground truth)."""
        self._slot_scheduled = False
        clients = []
        for party in self.onchain.open_slot(self.kernel.now_ns):
            if party == OPERATOR:
                self._operator_round()
            else:
                maker = self._makers_by_name[party]
                self._client_round(maker)
                clients.append(maker)
        self.onchain.close_slot()
        self._read_court()
        now_ms = self.now_ms()
        for maker in clients:
            assert maker.client is not None
            due_ms = maker.client.court_due_ms(now_ms)
            if due_ms is not None:
                self._court_at(maker.name, due_ms)
        if self._answers_due:
            self._wants_court(OPERATOR)
        if self.onchain.spilled:  # a full block's rest waits for the next slot
            self._schedule_slot()

    def _court_at(self, party: str, due_ms: int) -> None:
        """``party`` has court work from engine time ``due_ms`` on (now, or when a claim
        vests): it waits for the first slot from then."""
        due_ns = self.ns_of_ms(due_ms)
        if due_ns <= self.kernel.now_ns:
            self._wants_court(party)
            return
        woken = self._wake_at.get(party)
        if due_ns <= self.end_ns and (woken is None or due_ns < woken):
            self._wake_at[party] = due_ns
            self.kernel.schedule(due_ns, self._wake_for_court, party)

    def _wake_for_court(self, party: str) -> None:
        if self._wake_at.get(party) == self.kernel.now_ns:
            del self._wake_at[party]
            self._wants_court(party)

    def _transaction(
        self, party: str, function: str, tx_hash: bytes, ok: bool, detail: str = ""
    ) -> TxRecord:
        receipt = self.onchain.receipt(tx_hash)
        gas, block = receipt.gas_used, receipt.block_number
        tx = TxRecord(self.kernel.now_ns, block, party, function, gas, ok, detail)
        self.txs.append(tx)
        if self._logging:
            self.kernel.record("tx", party, "", f"function={function} gas={gas} ok={ok} {detail}")
        return tx

    def _client_round(self, maker: Maker) -> None:
        assert maker.client is not None
        court = self.onchain.start()
        for outcome in maker.client.court_round(court, self.now_ms()):
            action = outcome.action
            if outcome.tx_hash is None:
                continue
            function = (
                action.function.removeprefix("heads.")  # (a journal-heads rule)
                if isinstance(action, wt.Prove)
                else type(action).__name__
            )
            ok = outcome.outcome != "rejected"
            tx = self._transaction(maker.name, function, outcome.tx_hash, ok, outcome.detail)
            if isinstance(action, wt.ForceCancel):
                case = DisputeRecord(
                    maker.name, action.digest, "force_cancel", tx.t, tx.block, gas=tx.gas,
                    bond_wei=self.onchain.wei(self.scenario.court.dispute_bond),
                )  # fmt: skip
                self.disputes.append(case)
                if ok:
                    self._open_cases[action.digest] = case
                    record = self.recorder.get(action.digest)
                    if record is not None:
                        record.forced = True
                else:
                    self._resolve(case, "lost", tx.block)
            elif isinstance(action, wt.Finalize):
                opened = self._open_cases.pop(action.digest, None)
                if opened is not None:
                    opened.gas += tx.gas
                    opened.paid_wei += outcome.owed  # the default's claim; it vests later
                    self._resolve(opened, "won" if ok else "lost", tx.block)
            elif isinstance(action, wt.Prove):
                case = DisputeRecord(
                    maker.name, action.digest, function, tx.t, tx.block, gas=tx.gas,
                    paid_wei=outcome.owed,  # the claim filed; it vests later
                )  # fmt: skip
                self.disputes.append(case)
                self._resolve(case, "won" if ok else "lost", tx.block)

    def _resolve(self, case: DisputeRecord, outcome: str, block: int) -> None:
        case.outcome = outcome
        case.t_resolved = self.kernel.now_ns
        case.block_resolved = block

    def _claim_against_self(self, trigger: str) -> None:
        """The strategy's self-made claims for ``trigger``, filed at the operator's next slot."""
        count = self.adversary.self_claims(trigger)
        if count:
            self._self_claims_due += count
            self._wants_court(OPERATOR)

    def _file_self_claims(self, court: Court) -> None:
        """The sock puppet proves malformed fills of made-up orders of its own: each a
        real claim against the operator's bond (``proveMalformedFill``), paid to it."""
        count, self._self_claims_due = self._self_claims_due, 0
        sender = make_sender(self.puppet.address, "puppet")
        operator = self.onchain.operator
        for _ in range(count):
            self._self_claims_made += 1
            order = Order(sender, PRODUCT, X18, X18, 2**40, self._self_claims_made)
            digest = order.digest(court.domain)
            fill = Fill(digest, sender, 0, 0, 0, X18, self.now_ms())  # amount 0: malformed
            receipt = court.prove_malformed_fill(
                self.puppet, order, fill, fill.sign(operator, court.domain)
            )
            self._transaction(PUPPET, "proveMalformedFill", receipt.transaction_hash, True)

    def _operator_round(self) -> None:
        court = self.onchain.start()
        if self._self_claims_due:
            self._file_self_claims(court)
        operator = self.onchain.operator
        due, self._answers_due = self._answers_due, []
        for digest, note, signature in due:
            try:
                receipt = court.answer_cancel(operator, self._orders[digest].order, note, signature)
                tx_hash, ok, detail = receipt.transaction_hash, True, ""
            except TransactionReverted as exc:
                assert exc.receipt is not None
                tx_hash, ok, detail = exc.receipt.transaction_hash, False, exc.reason
            tx = self._transaction(OPERATOR, "answerCancel", tx_hash, ok, detail)
            case = self._open_cases.get(digest)
            if case is not None:
                case.gas += tx.gas

    def _read_court(self) -> None:
        """Every court log of the blocks sealed since the last read: the operator's
        watcher (forced cancels) and the ground truth of cases and claims."""
        court, chain = self.onchain.court, self.onchain.chain
        assert court is not None and chain is not None
        head = chain.block_number()
        for log in chain.get_logs(court.address, self._next_block, head):
            event = court.decode_log(log)
            args = event.args
            digest = args.get("digest", b"")
            name = event.name
            if self._logging:
                self._record("court", name, digest)
            if name == "CancelRequested":
                self._exposed.pop(digest, None)
                self._requested_at[digest] = args["requestedAt"] * 1_000
                self._forced_seen(digest)
            elif name == "CancelAnswered":
                self.answers += 1
                self._settled(digest)
                case = self._open_cases.pop(digest, None)
                if case is not None:
                    self._resolve(case, "lost", log.block_number)
            elif name == "CancelDefaulted":
                self._settled(digest)
                if args["halted"] and self.halted_at is None:
                    self.halted_at = self.kernel.now_ns
            elif name == "Slashed":
                agent = self._agent_of(args["owner"])
                if agent in self._makers_by_name and not self._client_claimed:
                    self._client_claimed = True  # a client's first claim
                    self._claim_against_self("claim")
                self.ledger.filed(
                    agent, digest, args["offence"], args["window"], args["penalty"],
                    self.kernel.now_ns,
                )  # fmt: skip
            elif name == "WindowSettled":
                self.ledger.settled(args["window"], args["taken"])
            elif name == "ClaimPaid":
                self.ledger.paid(digest, args["offence"], args["paid"], self.kernel.now_ns)
        self._next_block = head + 1

    def _agent_of(self, owner: bytes) -> str:
        """The agent an owner address belongs to (``?`` for none of the world's)."""
        client = self._by_address.get(owner)
        if client is not None:
            return client.name
        name = self.adversary.claimant_name(owner)
        if name is None:
            return "?"
        self.operator_claimants.add(name)
        return name

    def _settled(self, digest: bytes) -> None:
        record = self.recorder.get(digest)
        if record is not None and record.t_eff is None:
            record.t_eff = self.kernel.now_ns

    def _forced_seen(self, digest: bytes) -> None:
        """The operator's watcher saw a forced cancel: its strategy picks when to answer."""
        view = self.order_view(digest)
        if view is not None:
            for at in self.adversary.looks_at_forced(view):
                self.kernel.schedule(at, self._snipe, digest)
        delay = self.adversary.answer_delay_ns(digest)
        if delay is None:
            return
        if delay > 0:
            self.kernel.schedule_after(delay, self._answer, digest)
        else:
            self._answer(digest)

    def _answer(self, digest: bytes) -> None:
        """The operator's watcher: the engine's note for a forced cancel (effective at the
        request's block), to submit at the next slot."""
        placed = self._orders.get(digest)
        outputs = self.engine.force_cancel(
            digest,
            self.now_ms(),
            None if placed is None else placed.order,
            self._requested_at.get(digest),
        )
        self._route(outputs)
        for out in outputs:
            if isinstance(out, Push) and isinstance(out.entry, NoteIssued):
                issued = out.entry
                if issued.note.order_digest == digest:
                    self._answers_due.append((digest, issued.note, issued.signature))
                    self._wants_court(OPERATOR)
                    return


def _answers(out: Output, request: CancelOrders) -> bool:
    """Whether ``out`` is the engine taking up ``request`` (accepted, held or refused);
    a call's outputs may also answer other, earlier held cancels that it released."""
    if isinstance(out, CancelAccepted):
        return out.request is request
    return isinstance(out, Reply) and out.wire["signature"] == signature_to_wire(request.signature)


def _x18(price: float, tick: float) -> int:
    """A price on the tick grid as an exact x18 integer (no float noise in the digits)."""
    tick_x18 = round(tick * X18)
    return round(price / tick) * tick_x18
