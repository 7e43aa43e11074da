"""An exchange in one process: a real engine, real clients, a real court on py-evm.

For tests and simulations that want the client's verifier and watchtower in the loop
without sockets: :class:`Market` owns an :class:`~cancelnote.dispute.inprocess.InProcessChain`
with a bonded court, the operator's :class:`~cancelnote.operator.engine.Engine` (any
policy), and one :class:`Desk` per client (its evidence store, verifier and watchtower).
Requests go to the engine and its replies and pushes go to the desks exactly as a session
would route them: a message is verified and stored before anything looks at it. A
``latency_ms`` delays every message each way (one connection per desk: order is kept).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs

from cancelnote.api import (
    CancelAndPlace,
    CancelOrders,
    CancelProductOrders,
    Execute,
    PlaceOrder,
    Push,
    Reply,
)
from cancelnote.crypto import Signer
from cancelnote.dispute.court import DEV_PARAMETERS, Court
from cancelnote.dispute.inprocess import InProcessChain
from cancelnote.messages import (
    CancellationNote,
    make_sender,
    signature_from_wire,
    signature_to_wire,
)
from cancelnote.operator.engine import Engine
from cancelnote.operator.policies import Honest, Policy
from cancelnote.operator.testing import Trader

from .evidence import EvidenceStore, Finding
from .verifier import DEFAULT_POLICY, DISPUTABLE, Verifier, VerifierPolicy
from .watchtower import Outcome, Watchtower

#: Court parameters of a market: the dev ones, but a default does not halt the market.
COURT_PARAMETERS = {**DEV_PARAMETERS, "halt_on_default": False}
#: The bond a market's operator posts: enough for several penalties.
BOND_WEI = 10 * 10**18
#: Lifetime of the orders a desk places (longer than any test's answer window).
ORDER_LIFETIME_S = 86_400


@attrs.define
class Desk:
    """One client: its key, its evidence and what watches over it."""

    trader: Trader
    store: EvidenceStore
    verifier: Verifier
    watchtower: Watchtower
    replies: list[dict[str, Any]] = attrs.Factory(list)
    awaiting: dict[str, list[bytes]] = attrs.Factory(dict)  # request signature -> keys

    @property
    def sender(self) -> bytes:
        return self.trader.sender

    def disputable(self) -> list[Finding]:
        """Findings the watchtower would take to court."""
        return [f for f in self.store.findings() if f.kind in DISPUTABLE]


@attrs.define
class Market:
    """A chain, a bonded court, an operator engine and the desks trading on it.

    Build it with :meth:`open`. Time is explicit: :attr:`now_ms` moves only by
    :meth:`advance`; the chain's time moves only by its own blocks and ``increase_time``.
    """

    chain: InProcessChain
    court: Court
    operator: Signer
    engine: Engine
    directory: Path
    now_ms: int
    policy: VerifierPolicy
    latency_ms: int = 0
    desks: dict[bytes, Desk] = attrs.Factory(dict)
    _transit: list[tuple[int, int, Callable[[], None]]] = attrs.Factory(list)
    _journal: list[Any] = attrs.Factory(list)  # every entry the engine made, in order
    _order: Iterator[int] = attrs.Factory(itertools.count)

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        policy: Policy | None = None,
        settlement_delay_ms: int = 0,
        verifier_policy: VerifierPolicy = DEFAULT_POLICY,
        products: Iterable[int] = (1, 2),
        latency_ms: int = 0,
    ) -> Market:
        """A fresh chain and bonded court; ``latency_ms`` is each way between a client and
        the operator (0: everything arrives at once, in the calling step)."""
        chain = InProcessChain(accounts=10)
        deployer, operator = chain.dev_accounts[:2]
        court = Court.deploy(chain, deployer, operator=operator.address, **COURT_PARAMETERS)
        court.deposit_bond(operator, BOND_WEI)
        engine = Engine(
            operator,
            court.domain,
            frozenset(products),
            settlement_delay_ms=settlement_delay_ms,
            policy=Honest() if policy is None else policy,
        )
        now_ms = chain.timestamp() * 1000
        return cls(chain, court, operator, engine, directory, now_ms, verifier_policy, latency_ms)

    def desk(self, index: int, subaccount: str = "default") -> Desk:
        """The desk of dev account ``index`` (2 and up: 0 deploys, 1 operates)."""
        signer = self.chain.dev_accounts[index]
        sender = make_sender(signer.address, subaccount)
        if sender not in self.desks:
            path = self.directory / f"evidence-{index}-{subaccount}.sqlite"
            store = EvidenceStore.open(path, self.court.domain, self.operator.address)
            verifier = Verifier(store, self.policy)
            self.desks[sender] = Desk(
                Trader(signer, self.court.domain, subaccount),
                store,
                verifier,
                Watchtower(verifier, self.court, signer),
            )
        return self.desks[sender]

    # --- trading --------------------------------------------------------------------------

    def place(self, desk: Desk, product_id: int, price_x18: int, amount: int) -> PlaceOrder:
        """Sign, keep and send an order; returns the request (its order is ``.order``)."""
        request = desk.trader.order(product_id, price_x18, amount, self.now_ms, ORDER_LIFETIME_S)
        desk.store.add_order(request.order, request.signature, self.now_ms)
        self.send(request, desk, [request.order.digest(self.court.domain)])
        return request

    def cancel(self, desk: Desk, placed: list[PlaceOrder]) -> CancelOrders:
        """Sign, keep (with its send time) and send a cancel of ``placed``."""
        request = desk.trader.cancel(placed, self.now_ms)
        desk.store.add_cancel(request.tx, request.signature, self.now_ms)
        self.send(request, desk, [request.tx.digest(self.court.domain)])
        return request

    def cancel_products(self, desk: Desk, product_ids: tuple[int, ...]) -> CancelProductOrders:
        request = desk.trader.cancel_products(product_ids, self.now_ms)
        desk.store.add_cancel(request.tx, request.signature, self.now_ms)
        self.send(request, desk, [request.tx.digest(self.court.domain)])
        return request

    def cancel_and_place(
        self, desk: Desk, placed: list[PlaceOrder], product_id: int, price_x18: int, amount: int
    ) -> CancelAndPlace:
        order = desk.trader.order(product_id, price_x18, amount, self.now_ms, ORDER_LIFETIME_S)
        request = desk.trader.cancel_and_place(placed, order, self.now_ms)
        desk.store.add_cancel(request.tx, request.signature, self.now_ms)
        desk.store.add_order(order.order, order.signature, self.now_ms)
        keys = [request.tx.digest(self.court.domain), order.order.digest(self.court.domain)]
        self.send(request, desk, keys)
        return request

    def send(self, request: Execute, desk: Desk, keys: list[bytes]) -> None:
        """Send ``request`` to the operator, ``latency_ms`` away.

        A failure answer marks ``keys`` (order ids, request hashes) rejected in ``desk``'s
        store when it arrives, as a session does; the answer is found by the request's
        signature, which it echoes.
        """
        desk.awaiting[signature_to_wire(request.signature)] = keys
        self._later(lambda: self.route(self.engine.handle(request, self.now_ms)))

    def advance(self, ms: int) -> None:
        """Let ``ms`` of off-chain time pass: messages in transit arrive, fills settle,
        held cancels are released, all in time order."""
        until = self.now_ms + ms
        while self._transit and self._transit[0][0] <= until:
            at, _, deliver = heapq.heappop(self._transit)
            self.now_ms = at
            self.route(self.engine.advance(at))
            deliver()
        self.now_ms = until
        self.route(self.engine.advance(until))

    def route(self, outputs: Iterable[Any]) -> None:
        """Journal the engine's entries, and send replies and pushes to the desks
        (``latency_ms`` away, in order)."""
        outputs = list(outputs)
        self._journal.extend(out for out in outputs if not isinstance(out, Reply | Push))
        self._later(lambda: self._deliver(outputs))

    def restart(self) -> None:
        """What a crash and a restart do to the operator: a fresh engine, the same
        configuration, the journal replayed (replies still in transit are delivered)."""
        fresh = attrs.evolve(self.engine)
        fresh.restore(self._journal)
        self.engine = fresh

    def _later(self, action: Callable[[], None]) -> None:
        if self.latency_ms == 0:
            action()
        else:
            heapq.heappush(
                self._transit, (self.now_ms + self.latency_ms, next(self._order), action)
            )

    def _deliver(self, outputs: list[Any]) -> None:
        """What a session does with what arrives: verify and keep, then look at it."""
        for out in outputs:
            if isinstance(out, Push) and out.sender in self.desks:
                self.desks[out.sender].verifier.receive_wire(out.wire, self.now_ms, stream=True)
            elif isinstance(out, Reply) and out.to in self.desks:
                desk = self.desks[out.to]
                desk.replies.append(out.wire)
                for signed in (out.wire.get("data") or {}).get("notes", ()):
                    desk.verifier.receive_wire(signed, self.now_ms)
                keys = desk.awaiting.pop(out.wire["signature"], [])
                if out.wire["status"] != "success":
                    for key in keys:
                        desk.store.mark_rejected(key)

    # --- the court ------------------------------------------------------------------------

    def force_cancel(self, desk: Desk, placed: PlaceOrder) -> None:
        """``desk`` forces the cancel of its order on-chain, in a block stamped now (a live
        chain's clock agrees with the operator's)."""
        self.chain.set_next_block_timestamp(max(self.chain.timestamp() + 1, self.now_ms // 1000))
        self.court.request_cancel(desk.trader.signer, placed.order)

    def operator_answers(self, desk: Desk, placed: PlaceOrder) -> None:
        """The operator's watcher answers a forced cancel of ``placed`` with its note."""
        digest = placed.order.digest(self.court.domain)
        requested_at_ms = self.court.cancel_status(digest).requested_at * 1000
        outputs = self.engine.force_cancel(digest, self.now_ms, placed.order, requested_at_ms)
        self.route(outputs)
        wire = next(o.wire for o in outputs if isinstance(o, Push) and "note" in o.wire)
        note = CancellationNote.from_wire(wire["note"])
        self.court.answer_cancel(
            self.operator, placed.order, note, signature_from_wire(wire["signature"])
        )

    def watch(self, desk: Desk) -> list[Outcome]:
        """One round of ``desk``'s watchtower at the market's time."""
        return desk.watchtower.step(self.now_ms)
