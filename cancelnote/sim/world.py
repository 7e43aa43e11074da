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
  rests).
* **The operator** is the real :class:`~cancelnote.operator.engine.Engine` with the
  scenario's policy; every call's outputs are routed: held cancels get a kernel event at
  their release, in-flight matches at their settlement, pushes to their client.
* **The sniper** is the operator's own taker: it fills a held order at the end of the
  hold, or an ignored one while it stays on the book, when that is in the money.
* **Clients** run the real verifier and watchtower (:mod:`.clients`); the court runs on
  an in-process chain whose blocks follow simulated time (:mod:`.onchain`). The operator
  answers forced cancels it sees on the chain (unless ``answer_on_chain`` is false).
* **Ground truth** (:mod:`.records`) is kept as it happens; :mod:`.metrics` reads it.

Time: the engine's clock is ``EPOCH_MS + t_ns // 1_000_000`` (unix ms), the chain's
``EPOCH_S + t_ns // 1_000_000`` (a chain second is a simulated millisecond: see
:mod:`.onchain`). Randomness comes only from named streams of ``Seeds``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from ..api import BookDepth, CancelOrders, OrderStatus, PlaceOrder, Push, Reply
from ..client import watchtower as wt
from ..dispute.chain import TransactionReverted
from ..dispute.inprocess import dev_account
from ..messages import CancellationNote, signature_from_wire, signature_to_wire
from ..operator.engine import Engine, Output
from ..operator.journal import CancelAccepted, FillIssued, Matched, NoteIssued
from ..operator.lifecycle import CancellationType
from ..operator.policies import ConditionalDelay, Policy, build_policy
from ..operator.testing import Trader
from .clients import SimClient, is_disputable
from .eventlog import EventLog
from .kernel import Kernel
from .market import MidPricePath
from .onchain import CHAIN_TIME_SCALE, EPOCH_S, OPERATOR, OnChain, domain_of
from .records import DROPPED, HELD, CancelRecord, DisputeRecord, FillRecord, TxRecord
from .scenario import OperatorSpec, Scenario
from .seeding import Seeds

NS_PER_MS = 10**6
EPOCH_MS = EPOCH_S * 1000
PRODUCT = 1
X18 = 10**18
#: Priorities at one instant: the price tick first, then (with ``cancel_first``) cancels.
TICK_PRIORITY = -10
CANCEL_PRIORITY = -1
#: How often the book is sampled for the market-quality metrics (spread, depth at best).
BOOK_SAMPLE_NS = 100 * NS_PER_MS
#: Dev accounts: the operator, its sniper, the noise takers, then one per maker.
OPERATOR_ACCOUNT, SNIPER_ACCOUNT, TAKER_ACCOUNT, FIRST_MAKER_ACCOUNT = 0, 1, 2, 3
SNIPER, TAKER = "sniper", "taker"


def policy_of(spec: OperatorSpec, seeds: Seeds) -> Policy:
    """The engine policy a scenario's ``[operator]`` table names."""
    seed = 0
    if spec.policy == "ignore":  # drawn only when used, so no other policy's run changes
        seed = int(seeds.generator("operator/policy").integers(2**63))
    return build_policy(
        spec.policy,
        delay_ms=spec.delay_ms,
        backdate_ms=spec.backdate_ms,
        ignore_p=spec.ignore_p,
        seed=seed,
    )


@attrs.define
class Maker:
    """One market maker: its key, its quotes and its client (verifier and watchtower)."""

    name: str
    trader: Trader
    half_spread: float
    client: SimClient | None
    entry: np.random.Generator
    response: np.random.Generator
    centre: float | None = None
    live: dict[bytes, PlaceOrder] = attrs.Factory(dict)  # digest -> order believed resting
    pending: dict[bytes, PlaceOrder] = attrs.Factory(dict)  # cancelled, no note seen yet
    entry_last: int = 0  # arrival time of the last message sent (links are FIFO, as TCP)
    response_last: int = 0


def order_lifetime_s(scenario: Scenario) -> int:
    """Orders outlive the run, in the chain's scaled clock too (the court checks it); the
    engine's maximum lifetime is exactly this, so every order is within it."""
    return (math.ceil(scenario.run.horizon_s) + 3_600) * CHAIN_TIME_SCALE


@attrs.define
class World:
    """One replicate of a scenario, built by :meth:`build` and played by :meth:`run`."""

    scenario: Scenario
    seeds: Seeds
    kernel: Kernel
    engine: Engine
    onchain: OnChain
    makers: list[Maker]
    mid_path: MidPricePath
    sniper: Trader
    taker: Trader
    taker_rng: np.random.Generator
    mids: list[float] = attrs.Factory(list)
    cancels: dict[bytes, CancelRecord] = attrs.Factory(dict)
    fills: list[FillRecord] = attrs.Factory(list)
    disputes: list[DisputeRecord] = attrs.Factory(list)
    txs: list[TxRecord] = attrs.Factory(list)
    penalties_wei: int = 0
    answers: int = 0
    book_samples: list[tuple[float | None, float]] = attrs.Factory(list)  # spread, depth
    halted_at: int | None = None  # when a default halted the operator (halt_on_default)
    _owners: dict[bytes, str] = attrs.Factory(dict)  # order digest -> agent
    _orders: dict[bytes, PlaceOrder] = attrs.Factory(dict)  # maker orders by digest
    _by_sender: dict[bytes, Maker] = attrs.Factory(dict)
    _match_time: dict[int, tuple[int, bytes, bytes]] = attrs.Factory(dict)
    _filled: dict[bytes, int] = attrs.Factory(dict)  # maker order digest -> filled x18
    _exposed: dict[bytes, None] = attrs.Factory(dict)  # orders the sniper watches
    _patrolling: bool = False
    _slot_scheduled: bool = False
    _answers_due: list[tuple[bytes, CancellationNote, bytes]] = attrs.Factory(list)
    _next_block: int = 0
    _open_cases: dict[bytes, DisputeRecord] = attrs.Factory(dict)  # forced cancels

    @classmethod
    def build(cls, scenario: Scenario, replicate: int, event_log: EventLog | None = None) -> World:
        """The world of ``scenario``'s replicate ``replicate`` (seed ``run.seed``)."""
        seeds = Seeds(scenario.run.seed, replicate)
        spec = scenario.operator
        operator = dev_account(OPERATOR_ACCOUNT)
        domain = domain_of(operator)
        engine = Engine(
            operator,
            domain,
            {PRODUCT},
            settlement_delay_ms=spec.settlement_delay_ms,
            policy=policy_of(spec, seeds),
            rate_limit=spec.rate_limit,
            max_order_lifetime_s=order_lifetime_s(scenario),
        )
        count = scenario.makers.count
        onchain = OnChain(
            scenario.court,
            scenario.chain,
            operator,
            FIRST_MAKER_ACCOUNT + count,
            seeds.generator("chain/ordering"),
        )
        client_spec = scenario.client
        makers = []
        for i in range(count):
            name = f"mm/{i}"
            signer = dev_account(FIRST_MAKER_ACCOUNT + i)
            client = (
                SimClient(signer, domain, operator.address, client_spec.force_after_ms)
                if client_spec.verify
                else None
            )
            makers.append(
                Maker(
                    name,
                    Trader(signer, domain, "mm"),
                    scenario.makers.half_spread + i * scenario.makers.spread_step,
                    client,
                    seeds.generator(f"latency/{name}->operator"),
                    seeds.generator(f"latency/operator->{name}"),
                )
            )
        world = cls(
            scenario=scenario,
            seeds=seeds,
            kernel=Kernel(event_log),
            engine=engine,
            onchain=onchain,
            makers=makers,
            mid_path=scenario.market.path(seeds.generator("market")),
            sniper=Trader(dev_account(SNIPER_ACCOUNT), domain, "sniper"),
            taker=Trader(dev_account(TAKER_ACCOUNT), domain, "taker"),
            taker_rng=seeds.generator("taker/0"),
        )
        for maker in makers:
            world._by_sender[maker.trader.sender] = maker
        return world

    # --- running --------------------------------------------------------------------------

    @property
    def horizon_ns(self) -> int:
        return round(self.scenario.run.horizon_s * 1e9)

    @property
    def _tick_ns(self) -> int:
        return self.scenario.feed.tick_ms * NS_PER_MS

    def run(self, progress: Callable[[int, int], None] | None = None, steps: int = 20) -> int:
        """Play the whole horizon; returns the number of kernel events run.

        ``progress(done_ns, horizon_ns)`` is called ``steps`` times along the way.
        """
        kernel = self.kernel
        kernel.schedule(0, self._tick, 0, TICK_PRIORITY)
        if self.scenario.takers.rate_per_s > 0:
            kernel.schedule(self._taker_gap(), self._taker_arrives)
        events = 0
        horizon = self.horizon_ns
        for step in range(1, steps + 1):
            until = horizon * step // steps
            events += kernel.run(until_ns=until)
            if progress is not None:
                progress(until, horizon)
        for maker in self.makers:
            if maker.client is not None:
                maker.client.close()
        return events

    def now_ms(self) -> int:
        return EPOCH_MS + self.kernel.now_ns // NS_PER_MS

    def mid(self) -> float:
        """The latest mid-price tick."""
        return self.mids[-1]

    def mid_at(self, t_ns: int) -> float:
        """The mid-price at ``t_ns`` (the tick in force then), within the run."""
        return self.mids[min(t_ns // self._tick_ns, len(self.mids) - 1)]

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
        if maker.live:
            orders = list(maker.live.values())
            request = trader.cancel(orders, now_ms)
            for placed, digest in zip(orders, maker.live, strict=True):
                order = placed.order
                self.cancels[digest] = CancelRecord(
                    maker.name, digest, 1 if order.amount > 0 else -1,
                    abs(order.amount) / X18, order.price_x18 / X18, now,
                )  # fmt: skip
                self.kernel.record("cancel_send", maker.name, "0x" + digest.hex())
            if maker.client is not None:
                maker.client.cancel_sent(request, now_ms)
                if self.scenario.client.dispute:
                    due = now + (self.scenario.client.force_after_ms + 1) * NS_PER_MS
                    self.kernel.schedule(due, self._deadline, (maker, tuple(maker.live)))
            priority = CANCEL_PRIORITY if self.scenario.chain.ordering == "cancel_first" else 0
            self._send(maker, request, priority)
            maker.pending.update(maker.live)
            maker.live = {}
        size = round(self.scenario.makers.size * X18)
        lifetime = self.engine.max_order_lifetime_s
        for price_x18, amount in zip(self._quotes(maker, mid), (size, -size), strict=True):
            placed = trader.order(PRODUCT, price_x18, amount, now_ms, lifetime)
            digest = placed.order.digest(trader.domain)
            maker.live[digest] = placed
            self._owners[digest] = maker.name
            self._orders[digest] = placed
            if maker.client is not None:
                maker.client.placed(placed, now_ms)
            price = price_x18 / X18
            self.kernel.record("place", maker.name, "0x" + digest.hex(), f"price={price!r}")
            self._send(maker, placed, 0)
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
        """The quoted spread (``None`` when a side is empty) and the depth at the best
        bid and ask, as anyone querying the book sees them."""
        book = self._reply(BookDepth(PRODUCT))["data"]
        bids, asks = book["bids"], book["asks"]
        spread = (int(asks[0][0]) - int(bids[0][0])) / X18 if bids and asks else None
        depth = sum(int(side[0][1]) for side in (bids, asks) if side) / X18
        self.book_samples.append((spread, depth))

    def _send(self, maker: Maker, request: PlaceOrder | CancelOrders, priority: int) -> None:
        delay = self.scenario.entry_latency.sample(maker.entry)
        maker.entry_last = max(self.kernel.now_ns + delay, maker.entry_last + 1)
        self.kernel.schedule(maker.entry_last, self._arrive, request, priority)

    def _arrive(self, request: PlaceOrder | CancelOrders) -> None:
        if isinstance(request, PlaceOrder):
            self._call(request)
            return
        now = self.kernel.now_ns
        for digest in request.tx.digests:
            self.cancels[digest].t_recv = now
        outputs = self._call(request)
        if not any(_answers(out, request) for out in outputs):  # the policy dropped it
            for digest in request.tx.digests:
                self.cancels[digest].intent = DROPPED
                self.kernel.record("cancel_drop", OPERATOR, "0x" + digest.hex())
                self._expose(digest)

    def _taker_gap(self) -> int:
        return max(1, round(self.taker_rng.exponential(1e9 / self.scenario.takers.rate_per_s)))

    def _taker_arrives(self, _: object) -> None:
        buy = bool(self.taker_rng.random() < 0.5)
        book = self._reply(BookDepth(PRODUCT))["data"]
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
        self._owners[placed.order.digest(trader.domain)] = agent
        self._call(placed)

    # --- the operator's engine ------------------------------------------------------------

    def _call(self, request: Any) -> list[Output]:
        if isinstance(self.engine.policy, ConditionalDelay):
            self.engine.set_mark_price(PRODUCT, round(self.mid() * X18))
        outputs = self.engine.handle(request, self.now_ms())
        self._route(outputs)
        return outputs

    def _reply(self, query: Any) -> dict[str, Any]:
        """The answer to a query: the call's last reply of the query's type (a held
        cancel released by the same call answers first)."""
        outputs = self._call(query)
        return next(
            out.wire
            for out in reversed(outputs)
            if isinstance(out, Reply) and out.wire["request_type"] == query.REQUEST_TYPE
        )

    def _advance(self, _: object) -> None:
        self._route(self.engine.advance(self.now_ms()))

    def ns_of_ms(self, at_ms: int) -> int:
        """The simulated time of engine time ``at_ms``."""
        return (at_ms - EPOCH_MS) * NS_PER_MS

    def _route(self, outputs: list[Output]) -> None:
        for out in outputs:
            kind = type(out)
            if kind is Push:
                self._push(out)
            elif kind is FillIssued:
                self._on_fill(out)
            elif kind is Matched:
                self._on_match(out)
            elif kind is NoteIssued:
                self._on_note(out)
            elif kind is CancelAccepted:
                self._on_cancel_accepted(out)

    def _on_cancel_accepted(self, entry: CancelAccepted) -> None:
        if entry.process_at_ms <= entry.at_ms:
            return
        release = self.ns_of_ms(entry.process_at_ms)
        self.kernel.schedule(release, self._advance)
        for digest in entry.request.tx.digests:
            self.cancels[digest].intent = HELD
            self.kernel.record("cancel_hold", OPERATOR, "0x" + digest.hex(), f"until={release}")
            if self.scenario.operator.snipe:
                snipe_at = max(self.kernel.now_ns, release - NS_PER_MS)
                self.kernel.schedule(snipe_at, self._snipe, digest)

    def _on_match(self, entry: Matched) -> None:
        self._match_time[entry.seq] = (self.kernel.now_ns, entry.maker, entry.taker)
        if entry.settle_at_ms > entry.at_ms:
            self.kernel.schedule(self.ns_of_ms(entry.settle_at_ms), self._advance)

    def _on_fill(self, entry: FillIssued) -> None:
        fill = entry.fill
        digest = fill.order_digest
        t_match, maker, taker = self._match_time[entry.match_seq]
        if digest not in self._orders:
            return  # a taker's or the sniper's own fill
        other = taker if digest == maker else maker
        self._filled[digest] = fill.filled_total
        price = fill.price_x18 / X18
        self.fills.append(
            FillRecord(
                digest, fill.seq, fill.amount / X18, price, t_match, self.kernel.now_ns,
                fill.timestamp_ms, self._owners.get(other, "?"),
            )
        )  # fmt: skip
        self.kernel.record(
            "fill", self._owners[digest], "0x" + digest.hex(),
            f"seq={fill.seq} amount={fill.amount / X18!r} price={price!r}",
        )  # fmt: skip

    def _on_note(self, entry: NoteIssued) -> None:
        note = entry.note
        record = self.cancels.get(note.order_digest)
        on_chain = entry.cancellation_type is CancellationType.ON_CHAIN
        self.kernel.record(
            "note", OPERATOR, "0x" + note.order_digest.hex(),
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
        maker = self._by_sender.get(push.sender)
        if maker is not None:
            delay = self.scenario.response_latency.sample(maker.response)
            maker.response_last = max(self.kernel.now_ns + delay, maker.response_last + 1)
            self.kernel.schedule(maker.response_last, self._deliver, (maker, push.wire))

    # --- the clients ----------------------------------------------------------------------

    def _deliver(self, item: tuple[Maker, dict[str, Any]]) -> None:
        maker, wire = item
        if "fill" in wire:
            fill = wire["fill"]
            digest = bytes.fromhex(fill["digest"][2:])
            placed = self._orders[digest]
            if int(fill["filledTotal"]) >= abs(placed.order.amount):
                maker.live.pop(digest, None)
                maker.pending.pop(digest, None)
        else:
            digest = bytes.fromhex(wire["note"]["digest"][2:])
            maker.pending.pop(digest, None)
            record = self.cancels.get(digest)
            if record is not None and record.t_note_seen is None:
                record.t_note_seen = self.kernel.now_ns
        if maker.client is not None:
            received = maker.client.receive(wire, self.now_ms())
            if self.scenario.client.dispute and is_disputable(received):
                self._wants_court(maker.name)

    def _deadline(self, item: tuple[Maker, tuple[bytes, ...]]) -> None:
        maker, digests = item
        if any(
            self.cancels[d].t_note_seen is None
            and self._filled.get(d, 0) < abs(self._orders[d].order.amount)
            for d in digests
        ):
            self._wants_court(maker.name)

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
        """Fill ``digest`` if it is in the money; false once it can no longer be sniped."""
        reply = self._reply(OrderStatus(digest))
        if reply["status"] != "success":
            return False
        status = reply["data"]
        remaining = abs(int(status["unfilled_amount"]))
        if not remaining or (status["status"] != "ACTIVE" and digest not in self._exposed):
            return False
        order = self._orders[digest].order
        side = 1 if order.amount > 0 else -1
        edge = side * (order.price_x18 / X18 - self.mid())
        if edge <= self.scenario.operator.snipe_edge:
            return True
        self.kernel.record("snipe", SNIPER, "0x" + digest.hex(), f"edge={edge!r}")
        self._take(self.sniper, SNIPER, order.price_x18, -side * remaining)
        # A cancelled order let through once leaves the book after that one fill.
        return status["status"] == "ACTIVE"

    # --- the chain ------------------------------------------------------------------------

    def _wants_court(self, party: str) -> None:
        if self.onchain.wait(party) and not self._slot_scheduled:
            self._slot_scheduled = True
            self.kernel.schedule(self.onchain.next_slot(self.kernel.now_ns), self._slot)

    def _slot(self, _: object) -> None:
        self._slot_scheduled = False
        for party in self.onchain.open_slot(self.kernel.now_ns):
            if party == OPERATOR:
                self._operator_round()
            else:
                self._client_round(next(m for m in self.makers if m.name == party))
        self._read_court()
        for maker in self.makers:
            if maker.client is not None and maker.client.has_open_cases():
                self._wants_court(maker.name)
        if self._answers_due:
            self._wants_court(OPERATOR)

    def _transaction(
        self, party: str, function: str, tx_hash: bytes, ok: bool, detail: str = ""
    ) -> TxRecord:
        gas, block = self.onchain.gas_of(tx_hash)
        tx = TxRecord(self.kernel.now_ns, block, party, function, gas, ok, detail)
        self.txs.append(tx)
        self.kernel.record("tx", party, "", f"function={function} gas={gas} ok={ok} {detail}")
        return tx

    def _client_round(self, maker: Maker) -> None:
        assert maker.client is not None
        court = self.onchain.start()
        for outcome in maker.client.court_round(court, self.now_ms()):
            action = outcome.action
            if outcome.tx_hash is None:
                continue
            function = action.function if isinstance(action, wt.Prove) else type(action).__name__
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
                    self.cancels[action.digest].forced = True
                else:
                    self._resolve(case, "lost", tx.block)
            elif isinstance(action, wt.Finalize):
                case = self._open_cases.pop(action.digest, None)
                if case is not None:
                    case.gas += tx.gas
                    case.paid_wei += outcome.owed  # the default's claim; it vests later
                    self._resolve(case, "won" if ok else "lost", tx.block)
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

    def _operator_round(self) -> None:
        court = self.onchain.start()
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
        court, chain = self.onchain.court, self.onchain.chain
        assert court is not None and chain is not None
        head = chain.block_number()
        for log in chain.get_logs(court.address, self._next_block, head):
            event = court.decode_log(log)
            args = event.args
            digest = args.get("digest", b"")
            self.kernel.record("court", event.name, "0x" + digest.hex() if digest else "")
            if event.name == "CancelRequested":
                self._exposed.pop(digest, None)
                if self.scenario.operator.answer_on_chain:
                    self._answer(digest)
            elif event.name == "CancelAnswered":
                self.answers += 1
                self._settled(digest)
                case = self._open_cases.pop(digest, None)
                if case is not None:
                    self._resolve(case, "lost", log.block_number)
            elif event.name == "CancelDefaulted":
                self._settled(digest)
                if args["halted"] and self.halted_at is None:
                    self.halted_at = self.kernel.now_ns
            elif event.name == "Slashed":
                self.penalties_wei += args["penalty"]  # a claim: owed once filed
        self._next_block = head + 1

    def _settled(self, digest: bytes) -> None:
        record = self.cancels.get(digest)
        if record is not None and record.t_eff is None:
            record.t_eff = self.kernel.now_ns

    def _answer(self, digest: bytes) -> None:
        """The operator's watcher: the engine's note for a forced cancel, to submit."""
        outputs = self.engine.force_cancel(digest, self.now_ms(), self._orders[digest].order)
        self._route(outputs)
        for out in outputs:
            if isinstance(out, Push) and "note" in out.wire:
                note = CancellationNote.from_wire(out.wire["note"])
                if note.order_digest == digest:
                    signature = signature_from_wire(out.wire["signature"])
                    self._answers_due.append((digest, note, signature))
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
