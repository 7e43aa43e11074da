"""One product's limit order book: price levels in price-time priority.

The book knows digests, sides, prices and unmatched sizes, nothing else: who owns an
order, what it has filled and whether it may be cancelled is the engine's business.
Sizes are absolute (a sell of ``-5`` rests as size 5 on the ask side). Within a level,
orders keep arrival order (a dict preserves insertion order and removes in O(1)); the
sorted price list makes the best level O(1) to reach and a new level O(log n) to find.

Invariant (kept by the engine, checked by its tests): between two engine calls the book
is never crossed (best bid < best ask), because an order is matched against the opposite
side in the same call that adds it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import attrs


@attrs.define
class Side:
    """The bids or the asks of one product."""

    is_bid: bool
    levels: dict[int, dict[bytes, int]] = attrs.Factory(dict)  # price -> digest -> size
    prices: list[int] = attrs.Factory(list)  # ascending

    def add(self, digest: bytes, price: int, size: int) -> None:
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = {}
            bisect.insort(self.prices, price)
        level[digest] = size

    def reduce(self, digest: bytes, price: int, by: int) -> None:
        """Take ``by`` off an order's size; the order leaves the book at zero."""
        level = self.levels[price]
        left = level[digest] - by
        if left:
            level[digest] = left
        else:
            self.remove(digest, price)

    def remove(self, digest: bytes, price: int) -> None:
        level = self.levels[price]
        del level[digest]
        if not level:
            del self.levels[price]
            del self.prices[bisect.bisect_left(self.prices, price)]

    def in_priority(self) -> Iterator[tuple[int, bytes, int]]:
        """``(price, digest, size)`` from the best price down, oldest first in a level."""
        prices = reversed(self.prices) if self.is_bid else iter(self.prices)
        for price in prices:
            for digest, size in self.levels[price].items():
                yield price, digest, size

    def depth(self) -> list[tuple[int, int]]:
        """``(price, total size)`` per level, best first."""
        prices = reversed(self.prices) if self.is_bid else self.prices
        return [(price, sum(self.levels[price].values())) for price in prices]


@attrs.define
class Book:
    """Both sides of one product."""

    product_id: int
    bids: Side = attrs.Factory(lambda: Side(is_bid=True))
    asks: Side = attrs.Factory(lambda: Side(is_bid=False))

    def side(self, is_bid: bool) -> Side:
        return self.bids if is_bid else self.asks

    def crossing(self, is_bid: bool, limit_price: int, size: int) -> list[tuple[bytes, int, int]]:
        """The makers a taker of ``size`` at ``limit_price`` would hit, in priority order.

        Returns ``(maker digest, maker price, matched size)``; reads, never changes, the
        book (the engine applies the matches as journal entries).
        """
        matches = []
        for price, digest, resting in self.side(not is_bid).in_priority():
            if size == 0 or (price > limit_price if is_bid else price < limit_price):
                break
            amount = min(size, resting)
            matches.append((digest, price, amount))
            size -= amount
        return matches
