"""Helpers for driving an engine in tests and simulations, without a server.

:class:`Trader` signs orders and cancels with deterministic nonces. :func:`rule1` and
:func:`rule2_notes` (re-exported from :mod:`cancelnote.dispute.rules`, the one statement
of the court's rules) say what the court would find in a pair of operator-signed
messages, so tests can prove that an honest engine leaves nothing to find and that each
adversarial policy leaves exactly what a cheater would.
"""

from __future__ import annotations

from functools import cached_property

import attrs

from cancelnote.api import CancelAndPlace, CancelOrders, CancelProductOrders, PlaceOrder
from cancelnote.crypto import Signer
from cancelnote.dispute.rules import rule1, rule2_notes
from cancelnote.messages import (
    Cancellation,
    CancellationProducts,
    Domain,
    Order,
    make_nonce,
    make_sender,
)

__all__ = ["RECV_AHEAD_MS", "Trader", "rule1", "rule2_notes"]

#: How far ahead of ``now`` a trader's nonces set ``recv_time`` (Vertex's SDK uses 90 s).
RECV_AHEAD_MS = 50_000


@attrs.define
class Trader:
    """A client key and subaccount that signs requests for one domain."""

    signer: Signer
    domain: Domain
    subaccount: str = "default"
    _counter: int = 0

    @cached_property
    def sender(self) -> bytes:
        """Made once: every order shares the one bytes object (the engine keeps them all)."""
        return make_sender(self.signer.address, self.subaccount)

    def nonce(self, now_ms: int) -> int:
        self._counter += 1
        return make_nonce(now_ms + RECV_AHEAD_MS, self._counter % 2**20)

    def order(
        self, product_id: int, price_x18: int, amount: int, now_ms: int, lifetime_s: int = 3600
    ) -> PlaceOrder:
        order = Order(
            self.sender,
            product_id,
            price_x18,
            amount,
            now_ms // 1000 + lifetime_s,
            self.nonce(now_ms),
        )
        return PlaceOrder(product_id, order, order.sign(self.signer, self.domain))

    def cancel(
        self, orders: list[PlaceOrder] | list[tuple[bytes, int]], now_ms: int
    ) -> CancelOrders:
        """Cancel placed orders, or ``(digest, product id)`` pairs."""
        pairs = [self._pair(o) for o in orders]
        tx = Cancellation(
            self.sender,
            tuple(p for _, p in pairs),
            tuple(d for d, _ in pairs),
            self.nonce(now_ms),
        )
        return CancelOrders(tx, tx.sign(self.signer, self.domain))

    def cancel_products(self, product_ids: tuple[int, ...], now_ms: int) -> CancelProductOrders:
        tx = CancellationProducts(self.sender, product_ids, self.nonce(now_ms))
        return CancelProductOrders(tx, tx.sign(self.signer, self.domain))

    def cancel_and_place(
        self, orders: list[PlaceOrder] | list[tuple[bytes, int]], place: PlaceOrder, now_ms: int
    ) -> CancelAndPlace:
        cancel = self.cancel(orders, now_ms)
        return CancelAndPlace(cancel.tx, cancel.signature, place)

    def _pair(self, placed: PlaceOrder | tuple[bytes, int]) -> tuple[bytes, int]:
        if isinstance(placed, PlaceOrder):
            return placed.order.digest(self.domain), placed.product_id
        return placed
