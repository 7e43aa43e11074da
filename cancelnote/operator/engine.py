"""The operator engine: a deterministic, sans-I/O state machine (DESIGN §3.1).

``Engine.handle(request, now_ms)`` and ``Engine.advance(now_ms)`` return outputs and do
nothing else: no clock, no socket, no disk, no randomness of its own (a policy brings
its own seeded rng). The outputs of one call are, in order of durability:

* journal entries (:mod:`.journal`): the state changes, to be committed before
* :class:`~.api.Reply` (the answer to the request) and :class:`~.api.Push` (signed fills
  and notes for the sender's subscribers) leave the process.

Rules of this module:

1. Every state change is a journal entry, and the engine changes its state only by
   applying entries (:meth:`Engine._apply`), the same entries the journal stores. So
   replaying the journal into a fresh engine rebuilds the same state and the same
   answers, and a note is re-sent byte for byte, never re-signed.
2. A request is checked completely before its first entry is made; a rejection
   (:class:`~cancelnote.errors.Rejected`) therefore changes nothing. Any other
   exception out of ``handle`` is a bug.
3. Order states change only through :func:`.lifecycle.step`.

In-flight fills (Immutable's race window, DESIGN §4). A match is announced at once (a
:class:`~.journal.Matched` entry takes the size off the book) but settles
``settlement_delay_ms`` later; only then is its operator-signed ``Fill`` made, numbered
with the next journal seq and stamped ``timestampMs`` = settlement time. A note signed
while a match is in flight therefore says ``filledAmount`` = settled fills,
``lastFillSeq`` = the last settled fill, ``pendingAmount`` = the size in flight and
``pendingUntilMs`` = the last settlement time; the fills that settle later get higher
seqs, stay within ``filledAmount + pendingAmount``, and are stamped no later than
``pendingUntilMs``, so an honest engine never satisfies court rule 1 (a)-(f). (Signing
the fill at match time instead, with a seq below the note's, would make rules (d) or
(e) convict the honest operator: a fill numbered before the note must be counted in its
``filledAmount``.) With ``settlement_delay_ms = 0`` a match settles in the same call.

Every note keeps the court's bounds (protocol §12.6): it names the fill it counts last by
its struct hash (``lastFillHash``); ``filledAmount + pendingAmount`` never exceeds the
order's size; and its pending window stays within the court's ``maxPendingMs``, which is
why ``settlement_delay_ms`` may not exceed ``max_pending_ms``. A forced cancel takes
effect at the request's block time (§12.3): its note is received then, and only matches
already made, settling within ``max_pending_ms`` of it, may still fill the order.

Acceptance (each failure a ``Rejected`` with a stable code, checked in this order,
protocol §8): request shape, a digest listed twice included (``INVALID_MESSAGE``), known
product (``UNKNOWN_PRODUCT``), order amount and price (``INVALID_ORDER``), order
expiration (``EXPIRED``), order lifetime at most ``max_order_lifetime_s``
(``INVALID_ORDER``), the nonce's ``recv_time`` window (``NONCE_WINDOW``), the sender's
signature (``INVALID_SIGNATURE``), replay (``REPLAYED``), whether orders are still taken
(``NOT_ACCEPTING_ORDERS``), the open orders of the subaccount in that product and in
total (``OPEN_ORDER_LIMIT``, ``BOOK_FULL``), the wallet's rate limit (``RATE_LIMITED``).
Orders carry a Vertex nonce too (``recv_time << 20 | random``), so a signed order cannot
be submitted late.

Not accepting orders (:meth:`Engine.stop_accepting_orders`) is journaled like every other
state change (:class:`~.journal.OrdersStopped`), so it survives a restart even though the
court forgets an announced exit once the bond is withdrawn. The court is its source: the
service checks it at start and the watcher at every poll (:mod:`.service`,
:mod:`.watcher`).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

import attrs

from cancelnote.api import (
    PLACE_WEIGHT,
    BookDepth,
    CancelAndPlace,
    CancelOrders,
    CancelProductOrders,
    CancelRequest,
    Fills,
    Notes,
    OrderStatus,
    PlaceOrder,
    Push,
    Reply,
    Request,
    request_from_wire,
    request_type_of,
    weight_of,
)
from cancelnote.crypto import Signer, recover_address
from cancelnote.errors import CancelnoteError, MessageError, Rejected, SignatureError
from cancelnote.messages import (
    RECV_WINDOW_MS,
    CancellationNote,
    Domain,
    Fill,
    Order,
    nonce_recv_time_ms,
    sender_address,
)

from .book import Book
from .errors import (
    BookFull,
    InvalidOrder,
    JournalCorrupt,
    NonceWindow,
    NotAcceptingOrders,
    OpenOrderLimit,
    OrderExpired,
    OrderNotFound,
    RateLimited,
    Replayed,
    UnknownProduct,
)
from .journal import (
    CancelAccepted,
    CancelReleased,
    Expired,
    FillIssued,
    Journal,
    JournalEntry,
    Matched,
    NoteIssued,
    OrderAccepted,
    OrderForced,
    OrdersStopped,
)
from .lifecycle import CANCEL_REFUSALS, CancellationType, Event, OrderState, ReasonCode, step
from .limits import MAX_OPEN_ORDERS, MAX_OPEN_ORDERS_PER_PRODUCT
from .policies import HONEST_PLAN, CancelContext, Honest, NoteContext, Policy

Output = JournalEntry | Reply | Push

#: Vertex's per-wallet execute limit: 600 weight per rolling minute.
RATE_LIMIT_WEIGHT = 600
RATE_WINDOW_MS = 60_000
#: Default cap on ``expiration - now`` of a new order (protocol §8.1 check 6). The
#: court's exit delay must exceed it plus the answer window (§13).
MAX_ORDER_LIFETIME_S = 7 * 86_400
#: ``requestHash`` of a note answering an on-chain ``requestCancel``.
ON_CHAIN_REQUEST_HASH = bytes(32)
#: The court's longest pending window of a note, in ms (``maxPendingMs``; Immutable's 90 s).
MAX_PENDING_MS = 90_000

_NEVER = 2**64


@attrs.frozen
class Verified:
    """What a verifier worker found for an execute's signatures, in the order of
    :func:`~cancelnote.api.signed_parts`: each signed EIP-712 digest (computed by the
    server from this very request) and the 20-byte address its signature recovers to, or
    the :class:`~cancelnote.errors.SignatureError` text saying why none does."""

    digests: tuple[bytes, ...]
    signers: tuple[bytes | str, ...]


def split_outputs(outputs: Iterable[Output]) -> tuple[list[JournalEntry], list[Reply | Push]]:
    """``(entries to commit first, messages to send after)``, each in output order."""
    entries: list[JournalEntry] = []
    messages: list[Reply | Push] = []
    for out in outputs:
        if isinstance(out, Reply | Push):
            messages.append(out)
        else:
            entries.append(out)
    return entries, messages


class OrderArchive(Protocol):
    """Where an engine lets finished orders go (:meth:`Engine.retire`): a record put there
    comes back, unchanged, the first time anything refers to its order again."""

    def put(self, digest: bytes, record: _OrderRecord) -> None: ...

    def pop(self, digest: bytes) -> _OrderRecord | None: ...


@attrs.define
class _OrderRecord:
    """Everything the engine knows about one accepted order."""

    product_id: int
    order: Order
    signature: bytes
    digest: bytes
    placed_at_ms: int
    remaining: int  # size not yet matched (absolute); what a cancel takes off the book
    state: OrderState = OrderState.ACTIVE
    on_book: bool = True
    filled: int = 0  # settled size: the filledTotal of the last fill
    last_fill_seq: int = 0
    in_flight: dict[int, tuple[int, int]] = attrs.Factory(dict)  # match seq -> (size, until)
    fills: list[FillIssued] = attrs.Factory(list)
    notes: list[NoteIssued] = attrs.Factory(list)  # notes[0] is *the* note
    fills_after: int = 0  # matches an adversarial policy still lets a cancelled order take

    @property
    def is_bid(self) -> bool:
        return self.order.amount > 0

    @property
    def pending_amount(self) -> int:
        return sum(size for size, _ in self.in_flight.values())

    @property
    def pending_until_ms(self) -> int:
        return max((until for _, until in self.in_flight.values()), default=0)

    def signed(self, size: int) -> str:
        """``size`` with the order's sign, as Vertex writes amounts."""
        return str(size if self.is_bid else -size)

    def order_data(self, digest_hex: str) -> dict[str, Any]:
        """Vertex's ``OrderData``: the order, its digest (``digest_hex``, the caller has it)
        and its unmatched remainder."""
        order = self.order
        return {
            "product_id": self.product_id,
            "sender": "0x" + order.sender.hex(),
            "price_x18": str(order.price_x18),
            "amount": str(order.amount),
            "expiration": str(order.expiration),
            "nonce": str(order.nonce),
            "unfilled_amount": self.signed(self.remaining),
            "digest": digest_hex,
            "placed_at": self.placed_at_ms,
        }


#: ``on_setattr=NO_OP``: the configuration is validated once, at construction, and never
#: reassigned; without it attrs routes every state assignment (``_last_seq``, once per
#: entry) through a Python-level ``__setattr__`` hook.
def _product_set(products: Iterable[int]) -> frozenset[int]:
    return frozenset(products)


@attrs.define(on_setattr=attrs.setters.NO_OP)
class Engine:
    """The order books, the cancel answers and the signing of one operator.

    Args:
        signer: the operator key; it signs every fill and note.
        domain: the EIP-712 domain of every message (chain and court contract).
        products: the product ids traded; anything else is ``UNKNOWN_PRODUCT``.
        settlement_delay_ms: how long a match is in flight before its fills are signed.
        policy: honest (default) or adversarial behaviour (:mod:`.policies`).
        rate_limit: weight per wallet per rolling minute.
        max_order_lifetime_s: the latest expiration accepted, in seconds after now.
        max_pending_ms: the court's ``maxPendingMs``: no note declares a longer pending
            window, so a match must settle within it (``settlement_delay_ms`` at most this).
        archive: where :meth:`retire` lets finished orders go (``None``: every order
            stays in memory).
    """

    signer: Signer
    domain: Domain
    products: frozenset[int] = attrs.field(converter=_product_set)
    settlement_delay_ms: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    policy: Policy = attrs.Factory(Honest)
    rate_limit: int = RATE_LIMIT_WEIGHT
    max_order_lifetime_s: int = attrs.field(
        default=MAX_ORDER_LIFETIME_S, validator=attrs.validators.gt(0)
    )
    max_open_orders: int = MAX_OPEN_ORDERS
    max_open_orders_per_product: int = MAX_OPEN_ORDERS_PER_PRODUCT
    max_pending_ms: int = attrs.field(default=MAX_PENDING_MS, validator=attrs.validators.gt(0))
    archive: OrderArchive | None = None

    @max_pending_ms.validator
    def _check_settlement_fits(self, attribute: attrs.Attribute, value: int) -> None:
        if self.settlement_delay_ms > value:
            raise ValueError(
                f"settlement_delay_ms ({self.settlement_delay_ms}) exceeds the court's"
                f" max_pending_ms ({value}): an in-flight match would outlast its note"
            )

    _stopped: str | None = attrs.field(default=None, init=False)  # why orders are refused
    _last_seq: int = attrs.field(default=0, init=False)
    _orders: dict[bytes, _OrderRecord] = attrs.field(factory=dict, init=False)
    _books: dict[int, Book] = attrs.field(init=False)
    _active_by_sender: dict[bytes, dict[bytes, None]] = attrs.field(factory=dict, init=False)
    _matches: dict[int, Matched] = attrs.field(factory=dict, init=False)  # in flight
    _settle_heap: list[tuple[int, int]] = attrs.field(factory=list, init=False)
    _expiry_heap: list[tuple[int, bytes]] = attrs.field(factory=list, init=False)
    _held: dict[int, tuple[CancelAccepted, bytes]] = attrs.field(factory=dict, init=False)
    _held_heap: list[tuple[int, int]] = attrs.field(factory=list, init=False)
    _held_orders: set[bytes] = attrs.field(factory=set, init=False)
    _requests: dict[bytes, int] = attrs.field(factory=dict, init=False)  # hash -> recv_time
    _request_heap: list[tuple[int, bytes]] = attrs.field(factory=list, init=False)
    _rate_log: deque[tuple[int, bytes, int]] = attrs.field(factory=deque, init=False)
    _rate_used: dict[bytes, int] = attrs.field(factory=dict, init=False)
    _marks: dict[int, int] = attrs.field(factory=dict, init=False)
    _open: dict[tuple[bytes, int], int] = attrs.field(factory=dict, init=False)
    _open_total: int = attrs.field(default=0, init=False)
    # Whether the policy makes each decision its own way (else the honest one, without
    # building what it would look at: most operators are honest). Asked of the policy
    # each time: the lab swaps the policy of a running engine (``sim.world``).

    @property
    def _asks_on_cancel(self) -> bool:
        return type(self.policy).on_cancel is not Policy.on_cancel

    @property
    def _asks_on_note(self) -> bool:
        return type(self.policy).on_note is not Policy.on_note

    @_books.default
    def _make_books(self) -> dict[int, Book]:
        return {product: Book(product) for product in sorted(self.products)}

    # -----------------------------------------------------------------------------------
    # Public entry points.

    def handle(
        self, request: Request, now_ms: int, verified: Verified | None = None
    ) -> list[Output]:
        """Answer one request at engine time ``now_ms`` (unix ms, never going backwards).

        ``verified``: what a verifier worker found for an execute's signatures (the
        server's workers recover them ahead of the engine); without it the engine
        recovers them itself. Either way every check runs, in the same order.

        Returns outputs in the order they were made: journal entries, pushes and at
        most one reply to this request (none while a policy holds the cancel, or if it
        drops it). Commit every entry before sending any reply or push of the same call
        (:func:`split_outputs`). Time-driven work due by ``now_ms`` (settlements,
        expirations, held cancels) comes first, as :meth:`advance` does it.
        """
        out: list[Output] = []
        self._tick(now_ms, out)
        try:
            self._HANDLERS[type(request)](self, request, now_ms, out, verified)
        except Rejected as exc:
            out.append(Reply.failure(request, exc))
        self._tick(now_ms, out)  # matches that settle at once
        return out

    def handle_wire(self, obj: object, now_ms: int) -> list[Output]:
        """Parse a JSON request and :meth:`handle` it; a malformed one gets a failure reply."""
        try:
            request = request_from_wire(obj)
        except MessageError as exc:
            return [Reply.failure(None, exc, request_type_of(obj))]
        if not isinstance(request, Request):  # streams and heads are the server's
            refused = MessageError(f"{request.KEY} is not answered by the engine")
            return [Reply.failure(None, refused, request_type_of(obj))]
        return self.handle(request, now_ms)

    def advance(self, now_ms: int) -> list[Output]:
        """Let time pass: settle in-flight matches, expire orders, release held cancels."""
        out: list[Output] = []
        self._tick(now_ms, out)
        return out

    def force_cancel(
        self,
        digest: bytes,
        now_ms: int,
        order: Order | None = None,
        requested_at_ms: int | None = None,
    ) -> list[Output]:
        """Answer an on-chain ``requestCancel`` of ``digest`` with a note.

        The note has ``requestHash`` = zero and cancellation type ``ON_CHAIN``. If the
        order already has a note, that same note is pushed again (a second one would be
        equivocation). Filled and expired orders get a note too, and so does an order
        the engine never saw, if the caller passes it (the court's ``CancelRequested``
        event carries it): unanswered, the operator would be in default.

        The cancel took effect at the request's block time ``requested_at_ms`` (unix ms;
        ``None``: now), so that is the note's ``receivedAtMs``, unless ``now_ms`` is
        earlier (a clock behind the chain's) or the note's pending window would then
        exceed ``max_pending_ms`` (an engine that saw the request late: the note is then
        received as late as that bound requires, never later than now).

        Raises:
            OrderNotFound: the digest is unknown and no matching ``order`` was given.
        """
        out: list[Output] = []
        self._tick(now_ms, out)
        record = self._find(digest)
        if record is None:
            if order is None or order.digest(self.domain) != digest:
                raise OrderNotFound(f"no order 0x{digest.hex()}")
            self._emit(OrderForced(self._last_seq + 1, now_ms, order), out)
            record = self._orders[digest]
        if record.notes:
            out.append(Push(record.order.sender, record.notes[0]))
            return out
        received_at = now_ms if requested_at_ms is None else min(now_ms, requested_at_ms)
        if record.in_flight:
            received_at = max(received_at, record.pending_until_ms - self.max_pending_ms)
        self._sign_note(
            record, ON_CHAIN_REQUEST_HASH, received_at, now_ms, CancellationType.ON_CHAIN, out
        )
        return out

    def match_directed(self, request: PlaceOrder, maker_digest: bytes, now_ms: int) -> list[Output]:
        """The operator's own taker fills exactly the resting order ``maker_digest``.

        An operator runs the matching engine, so a malicious one can fill the order it
        chooses, whatever better-priced orders rest beside it; the lab's adversary
        (:mod:`cancelnote.sim.adversary`) needs exactly that to take the held order it
        targets. It is an operator-side call, never a request: no wire message reaches it
        (``_HANDLERS`` does not list it). The taker's order passes every check of a
        place, must cross the target's price and be no larger than its unmatched size,
        and matches that order alone at the target's price (so it never rests); the
        journal entries are the ordinary ``OrderAccepted`` and ``Matched``.

        Raises nothing: a refusal is a failure reply and changes nothing.
        """
        out: list[Output] = []
        self._tick(now_ms, out)
        try:
            digest = self._check_order(request, now_ms, None)
            self._check_rate(request.order.sender, PLACE_WEIGHT)
            target = self._check_directed(request.order, maker_digest)
            self._place(request, digest, PLACE_WEIGHT, now_ms, out, target)
            out.append(Reply.success(request, {"digest": "0x" + digest.hex()}))
        except Rejected as exc:
            out.append(Reply.failure(request, exc))
        self._tick(now_ms, out)
        return out

    def stop_accepting_orders(self, reason: str, now_ms: int) -> list[Output]:
        """Refuse every new order from now on (``NOT_ACCEPTING_ORDERS``); cancels go on.

        Irreversible and idempotent: the first call makes an :class:`~.journal.OrdersStopped`
        entry (after the work due by ``now_ms``), later ones make nothing.
        """
        out: list[Output] = []
        self._tick(now_ms, out)
        if self._stopped is None:
            self._emit(OrdersStopped(self._last_seq + 1, now_ms, reason), out)
        return out

    @property
    def accepting_orders(self) -> bool:
        return self._stopped is None

    def set_mark_price(self, product_id: int, price_x18: int) -> None:
        """Tell policies the market price of a product (not journaled: policy input only)."""
        self._marks[product_id] = price_x18

    def retire(self, digest: bytes, now_ms: int) -> bool:
        """Let a finished order go from memory to :attr:`archive`; whether it went.

        Only an order nothing more can happen to goes: filled, cancelled or expired, off
        the book, nothing in flight, no match a policy still lets it take, and past its
        nonce's ``recv_time`` (so no replay of it can be accepted). Whatever refers to it
        later (a cancel, a forced cancel, a query) brings it back first, so every answer
        is the one it would have had.
        """
        record = self._orders.get(digest)
        if (
            self.archive is None
            or record is None
            or record.state is OrderState.ACTIVE
            or record.on_book
            or record.in_flight
            or record.fills_after
            or nonce_recv_time_ms(record.order.nonce) > now_ms
        ):
            return False
        del self._orders[digest]
        self.archive.put(digest, record)
        return True

    def _find(self, digest: bytes) -> _OrderRecord | None:
        """The record of ``digest``, brought back from the archive if it went there."""
        record = self._orders.get(digest)
        if record is None and self.archive is not None:
            record = self.archive.pop(digest)
            if record is not None:
                self._orders[digest] = record
        return record

    @classmethod
    def from_journal(cls, journal: Journal, **config: Any) -> Engine:
        """A new engine (``config`` as for the constructor) with ``journal`` replayed."""
        engine = cls(**config)
        engine.restore(journal.entries())
        return engine

    def restore(self, entries: Iterable[JournalEntry]) -> None:
        """Apply journaled entries, in seq order, to this engine.

        Raises:
            JournalCorrupt: an entry is out of order or contradicts the ones before it.
        """
        for entry in entries:
            if entry.seq <= self._last_seq:
                raise JournalCorrupt(f"journal seq {entry.seq} after {self._last_seq}")
            try:
                self._apply(entry)
            except (CancelnoteError, KeyError, ValueError) as exc:
                raise JournalCorrupt(
                    f"journal row {entry.seq} ({entry.KIND}) does not apply:"
                    f" {type(exc).__name__}: {exc}"
                ) from None

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def snapshot(self) -> dict[str, Any]:
        """A comparable picture of the whole state (tests and audits compare two)."""
        return {
            "last_seq": self._last_seq,
            "orders": {
                digest: (
                    r.state,
                    r.remaining,
                    r.on_book,
                    r.filled,
                    r.last_fill_seq,
                    tuple(sorted(r.in_flight.items())),
                    tuple(f.seq for f in r.fills),
                    tuple(n.seq for n in r.notes),
                    r.fills_after,
                )
                for digest, r in self._orders.items()
            },
            "books": {
                product: tuple(
                    tuple((price, tuple(side.levels[price].items())) for price in side.prices)
                    for side in (book.bids, book.asks)
                )
                for product, book in self._books.items()
            },
            "active_by_sender": {s: tuple(d) for s, d in self._active_by_sender.items() if d},
            "matches": tuple(sorted(self._matches)),
            "held": tuple(sorted(self._held)),
            "requests": dict(self._requests),
            "rate_used": {w: u for w, u in self._rate_used.items() if u},
            "stopped": self._stopped,
        }

    # -----------------------------------------------------------------------------------
    # Checks: read-only; each raises a Rejected subclass.

    def _check_window(self, nonce: int, now_ms: int) -> None:
        recv_time = nonce_recv_time_ms(nonce)
        if not now_ms < recv_time <= now_ms + RECV_WINDOW_MS:
            raise NonceWindow(
                f"nonce recv_time {recv_time} is outside ({now_ms}, {now_ms + RECV_WINDOW_MS}]"
            )

    def _signed(
        self, message: Order | Any, verified: Verified | None, index: int
    ) -> tuple[bytes, bytes | str | None]:
        """The EIP-712 digest of an execute's ``index``-th signed message and, if a worker
        verified it, the address its signature recovered to (or why none did)."""
        if verified is None:
            return message.digest(self.domain), None
        return verified.digests[index], verified.signers[index]

    @staticmethod
    def _check_signer(
        digest: bytes, signature: bytes, sender: bytes, what: str, signer: bytes | str | None
    ) -> None:
        if signer is None:
            signer = recover_address(digest, signature)
        elif type(signer) is str:  # the worker's SignatureError: nobody recovers
            raise SignatureError(signer)
        if signer != sender[:20]:
            raise SignatureError(f"{what} is not signed by {sender_address(sender)}")

    def _check_rate(self, sender: bytes, weight: int) -> None:
        used = self._rate_used.get(sender[:20], 0)
        if used + weight > self.rate_limit:
            raise RateLimited(
                f"wallet {sender_address(sender)} used {used} of {self.rate_limit} weight"
                f" in the last minute; this request weighs {weight}"
            )

    def _check_order(
        self,
        request: PlaceOrder,
        now_ms: int,
        verified: Verified | None,
        index: int = 0,
        freed: int = 0,
    ) -> bytes:
        """All checks of a place but the rate limit; returns the order digest. ``index``:
        the order's place in ``verified``; ``freed``: open orders of the same sender and
        product that a replace's cancel takes away."""
        order = request.order
        if request.product_id != order.product_id:
            raise MessageError(
                f"place_order.product_id {request.product_id} != order.productId {order.product_id}"
            )
        if order.product_id not in self.products:
            raise UnknownProduct(f"product {order.product_id} is not traded")
        if order.amount == 0 or order.price_x18 <= 0:
            raise InvalidOrder("an order needs a non-zero amount and a positive price")
        if order.expiration * 1000 <= now_ms:
            raise OrderExpired(f"order expired at {order.expiration} s")
        latest_ms = now_ms + self.max_order_lifetime_s * 1000
        if order.expiration * 1000 > latest_ms:
            raise InvalidOrder(
                f"order expires at {order.expiration} s, beyond the maximum lifetime of"
                f" {self.max_order_lifetime_s} s (latest {latest_ms // 1000} s)"
            )
        self._check_window(order.nonce, now_ms)
        digest, signer = self._signed(order, verified, index)
        self._check_signer(digest, request.signature, order.sender, "order", signer)
        # (a retired order is past its recv_time: the window check above refuses it)
        if digest in self._orders or digest in self._held_orders:
            raise Replayed(f"order 0x{digest.hex()} was already placed")
        if self._stopped is not None:
            raise NotAcceptingOrders(f"no new orders: {self._stopped}; cancels are taken")
        open_here = self._open.get((order.sender, order.product_id), 0) - freed
        if open_here >= self.max_open_orders_per_product:
            raise OpenOrderLimit(
                f"{sender_address(order.sender)} already has {open_here} open orders in product"
                f" {order.product_id} (at most {self.max_open_orders_per_product})"
            )
        if self._open_total - freed >= self.max_open_orders:
            raise BookFull(f"the operator rests its most open orders ({self.max_open_orders})")
        return digest

    def _check_directed(self, taker: Order, maker_digest: bytes) -> tuple[bytes, int, int]:
        """``(maker digest, price, size)`` of a directed match, or why it cannot be."""
        record = self._orders.get(maker_digest)
        if record is None or not record.on_book or record.product_id != taker.product_id:
            raise OrderNotFound(f"no resting order 0x{maker_digest.hex()} to match")
        price, size = record.order.price_x18, abs(taker.amount)
        if (taker.amount > 0) == record.is_bid:
            raise InvalidOrder("a directed match needs the opposite side of its target")
        if (price > taker.price_x18) if taker.amount > 0 else (price < taker.price_x18):
            raise InvalidOrder("a directed match must cross its target's price")
        if size > record.remaining:
            raise InvalidOrder(
                f"a directed match of {size} exceeds the target's {record.remaining}"
            )
        return maker_digest, price, size

    def _check_cancel(
        self, request: CancelRequest, now_ms: int, verified: Verified | None
    ) -> tuple[bytes, int]:
        """All checks of a cancel (and a replace's order); returns (request hash, weight)."""
        tx = request.tx
        if isinstance(request, CancelProductOrders):
            unknown = sorted(set(tx.product_ids) - self.products)
            if unknown:
                raise UnknownProduct(f"products {unknown} are not traded")
        else:
            if not tx.digests or len(tx.digests) != len(tx.product_ids):
                raise MessageError(
                    "cancel: needs one product id per digest and at least one digest"
                )
            if len(set(tx.digests)) != len(tx.digests):
                raise MessageError("cancel: a digest is listed twice")
        weight = weight_of(request)
        if isinstance(request, CancelAndPlace):
            if request.place_order.order.sender != tx.sender:
                raise MessageError("cancel_and_place: the order's sender is not the cancel's")
            self._check_order(request.place_order, now_ms, verified, 1, self._freed_by(request))
        self._check_window(tx.nonce, now_ms)
        request_hash, signer = self._signed(tx, verified, 0)
        self._check_signer(request_hash, request.signature, tx.sender, request.KEY, signer)
        if request_hash in self._requests:
            raise Replayed(f"{request.KEY} 0x{request_hash.hex()} was already accepted")
        self._check_rate(tx.sender, weight)
        return request_hash, weight

    def _freed_by(self, request: CancelAndPlace) -> int:
        """Open orders of the replacing order's sender and product that its cancel names."""
        sender, product = request.tx.sender, request.place_order.order.product_id
        return sum(
            1
            for digest in set(request.tx.digests)
            if (record := self._find(digest)) is not None
            and record.state is OrderState.ACTIVE
            and record.order.sender == sender
            and record.product_id == product
        )

    # -----------------------------------------------------------------------------------
    # Request handlers: check everything, then make entries.

    def _handle_place(
        self, request: PlaceOrder, now_ms: int, out: list[Output], verified: Verified | None
    ) -> None:
        digest = self._check_order(request, now_ms, verified)
        self._check_rate(request.order.sender, PLACE_WEIGHT)
        self._place(request, digest, PLACE_WEIGHT, now_ms, out)
        out.append(Reply.success(request, {"digest": "0x" + digest.hex()}))

    def _handle_cancel(
        self, request: CancelRequest, now_ms: int, out: list[Output], verified: Verified | None
    ) -> None:
        request_hash, weight = self._check_cancel(request, now_ms, verified)
        process_at = self._when_to_cancel(request, now_ms) if self._asks_on_cancel else now_ms
        if process_at is None:
            return  # dropped by the policy: no entry, no reply
        accepted = CancelAccepted(self._last_seq + 1, now_ms, request, process_at, weight)
        self._emit(accepted, out, request_hash)
        if process_at <= now_ms:
            self._process_cancel(accepted, request_hash, now_ms, out)

    def _when_to_cancel(self, request: CancelRequest, now_ms: int) -> int | None:
        """The policy's decision on a cancel, with what it sees of the orders it names."""
        targets = tuple(
            record.order
            for d in self._cancel_targets(request)
            if (record := self._orders.get(d)) is not None
            and record.order.sender == request.tx.sender
            and record.state is OrderState.ACTIVE
        )
        return self.policy.on_cancel(CancelContext(now_ms, request, targets, self._marks))

    def _handle_order_status(
        self, query: OrderStatus, now_ms: int, out: list[Output], _: None = None
    ) -> None:
        r = self._record(query.digest)
        data = {
            "digest": "0x" + r.digest.hex(),
            "product_id": r.product_id,
            "status": r.state.value,
            "cancellation_type": r.notes[0].cancellation_type.value if r.notes else None,
            "pending": bool(r.in_flight),
            "filled_amount": str(r.filled),
            "pending_amount": str(r.pending_amount),
            "pending_until_ms": r.pending_until_ms,
            "unfilled_amount": r.signed(r.remaining),
            "order": r.order.to_wire(),
            "placed_at": r.placed_at_ms,
        }
        out.append(Reply.success(query, data))

    def _handle_fills(self, query: Fills, now_ms: int, out: list[Output], _: None = None) -> None:
        fills = self._record(query.digest).fills
        out.append(Reply.success(query, {"fills": [f.signed_wire for f in fills]}, tuple(fills)))

    def _handle_notes(self, query: Notes, now_ms: int, out: list[Output], _: None = None) -> None:
        notes = [n for n in self._record(query.digest).notes if n.published]
        out.append(Reply.success(query, {"notes": [n.signed_wire for n in notes]}, tuple(notes)))

    def _handle_book(
        self, query: BookDepth, now_ms: int, out: list[Output], _: None = None
    ) -> None:
        book = self._books.get(query.product_id)
        if book is None:
            raise UnknownProduct(f"product {query.product_id} is not traded")
        data = {
            "product_id": query.product_id,
            "bids": [[str(p), str(s)] for p, s in book.bids.depth()],
            "asks": [[str(p), str(s)] for p, s in book.asks.depth()],
        }
        out.append(Reply.success(query, data))

    _HANDLERS: ClassVar[dict[type, Any]] = {
        PlaceOrder: _handle_place,
        CancelOrders: _handle_cancel,
        CancelProductOrders: _handle_cancel,
        CancelAndPlace: _handle_cancel,
        OrderStatus: _handle_order_status,
        Fills: _handle_fills,
        Notes: _handle_notes,
        BookDepth: _handle_book,
    }

    def _record(self, digest: bytes) -> _OrderRecord:
        record = self._find(digest)
        if record is None:
            raise OrderNotFound(f"no order 0x{digest.hex()}")
        return record

    # -----------------------------------------------------------------------------------
    # Making entries (after all checks passed).

    def _emit(self, entry: JournalEntry, out: list[Output], *derived: Any) -> None:
        """Apply ``entry`` and output it; ``derived`` are values the caller already computed
        from the entry (a request hash), passed on so that applying does not recompute them."""
        self._apply(entry, *derived)
        out.append(entry)

    def _place(
        self,
        request: PlaceOrder,
        digest: bytes,
        weight: int,
        now_ms: int,
        out: list[Output],
        directed: tuple[bytes, int, int] | None = None,
    ) -> None:
        """Accept a checked order and match it against the opposite side at once (or,
        ``directed``, against that one checked ``(maker, price, size)`` only)."""
        self._emit(
            OrderAccepted(
                self._last_seq + 1,
                now_ms,
                request.product_id,
                request.order,
                request.signature,
                weight,
            ),
            out,
            digest,
        )
        taker = self._orders[digest]
        book = self._books[taker.product_id]
        settle_at = now_ms + self.settlement_delay_ms
        crossing = (
            [directed]
            if directed is not None
            else book.crossing(taker.is_bid, taker.order.price_x18, taker.remaining)
        )
        for maker, price, size in crossing:
            self._emit(
                Matched(self._last_seq + 1, now_ms, maker, digest, size, price, settle_at), out
            )

    def _cancel_targets(self, request: CancelRequest) -> list[bytes]:
        """Digests a cancel names: listed ones, or the sender's active orders per product."""
        tx = request.tx
        if not isinstance(request, CancelProductOrders):
            return list(tx.digests)
        products = set(tx.product_ids) or self.products
        active = self._active_by_sender.get(tx.sender, {})
        return [d for d in active if self._orders[d].product_id in products]

    def _process_cancel(
        self, accepted: CancelAccepted, request_hash: bytes, now_ms: int, out: list[Output]
    ) -> None:
        """Answer every order a cancel names (Immutable-style outcomes), then reply."""
        request = accepted.request
        tx = request.tx
        data: dict[str, Any] = {
            "cancelled_orders": [],
            "notes": [],
            "successful_cancellations": [],
            "pending_cancellations": [],
            "failed_cancellations": [],
        }
        named: list[tuple[bytes, int | None]]
        if isinstance(request, CancelProductOrders):
            named = [(digest, None) for digest in self._cancel_targets(request)]
        else:
            named = list(zip(tx.digests, tx.product_ids, strict=True))
        cancelled, notes = data["cancelled_orders"], data["notes"]
        signed: list[NoteIssued] = []  # the entries of ``notes``, for the reply's JSON
        sender, received_at = tx.sender, accepted.at_ms
        for digest, product_id in named:
            record = self._find(digest)
            reason = self._cancel_refusal(record, product_id, sender)
            digest_hex = "0x" + digest.hex()
            if reason is not None:
                data["failed_cancellations"].append(
                    {"digest": digest_hex, "reason_code": reason.value}
                )
                if (
                    reason is ReasonCode.ALREADY_CANCELLED
                    and record is not None
                    and record.notes[0].published
                ):
                    notes.append(record.notes[0].signed_wire)
                    signed.append(record.notes[0])
                continue
            assert record is not None  # an unknown order is refused above
            cancelled.append(record.order_data(digest_hex))
            issued = self._sign_note(
                record, request_hash, received_at, now_ms, CancellationType.OFF_CHAIN, out
            )
            note = issued.note
            if issued.published:
                notes.append(issued.signed_wire)
                signed.append(issued)
            if note.pending_amount:
                data["pending_cancellations"].append(
                    {
                        "digest": digest_hex,
                        "pending_amount": str(note.pending_amount),
                        "pending_until_ms": note.pending_until_ms,
                    }
                )
            else:
                data["successful_cancellations"].append(digest_hex)
        if isinstance(request, CancelAndPlace):
            placed = request.place_order
            digest = placed.order.digest(self.domain)
            self._place(placed, digest, 0, now_ms, out)
            data["digest"] = "0x" + digest.hex()
        out.append(Reply.success(request, data, tuple(signed)))

    @staticmethod
    def _cancel_refusal(
        record: _OrderRecord | None, product_id: int | None, sender: bytes
    ) -> ReasonCode | None:
        """Why this order is not cancelled for ``sender``, or ``None`` if it is."""
        if record is None or (product_id is not None and record.product_id != product_id):
            return ReasonCode.NOT_FOUND
        if record.order.sender != sender:
            return ReasonCode.NOT_OWNER
        return CANCEL_REFUSALS.get(record.state)

    def _sign_note(
        self,
        record: _OrderRecord,
        request_hash: bytes,
        received_at_ms: int,
        now_ms: int,
        cancellation_type: CancellationType,
        out: list[Output],
    ) -> NoteIssued:
        """Sign, journal and (unless withheld) push the note for ``record``.

        The honest note counts every settled fill (naming the last one by its struct
        hash) and everything in flight; what a policy changes is in its
        :class:`~.policies.NotePlan`.
        """
        on_chain = cancellation_type is CancellationType.ON_CHAIN
        plan = (
            self.policy.on_note(NoteContext(now_ms, record.order, received_at_ms, on_chain))
            if self._asks_on_note
            else HONEST_PLAN
        )
        counted = record.fills
        if plan.received_at_ms is not None:  # backdated: the fills since are left out
            received_at_ms = plan.received_at_ms
            counted = [f for f in record.fills if f.fill.timestamp_ms <= received_at_ms]
        last = counted[-1].fill if counted else None
        in_flight = record.in_flight
        note = CancellationNote(
            order_digest=record.digest,
            sender=record.order.sender,
            request_hash=request_hash,
            filled_amount=last.filled_total if last else 0,
            last_fill_seq=last.seq if last else 0,
            last_fill_hash=last.struct_hash() if last else bytes(32),
            pending_amount=record.pending_amount if in_flight else 0,
            pending_until_ms=record.pending_until_ms if in_flight else 0,
            received_at_ms=received_at_ms,
            seq=self._last_seq + 1,
        )
        issued = self._issue_note(
            note, cancellation_type, plan.published, plan.fills_after, now_ms, out
        )
        if plan.equivocate:  # a second note that raises the cap to the whole order
            size = abs(record.order.amount)
            second = attrs.evolve(
                note,  # within the bounds, so that it is equivocation and nothing else
                pending_amount=size - note.filled_amount,
                pending_until_ms=note.received_at_ms + self.max_pending_ms,
                seq=self._last_seq + 1,
            )
            self._issue_note(second, cancellation_type, True, 0, now_ms, out)
        return issued

    def _issue_note(
        self,
        note: CancellationNote,
        cancellation_type: CancellationType,
        published: bool,
        fills_after: int,
        now_ms: int,
        out: list[Output],
    ) -> NoteIssued:
        signature = self.signer.sign_hash(note.digest(self.domain))
        issued = NoteIssued(
            note.seq,
            now_ms,
            note,
            signature,
            cancellation_type,
            published,
            fills_after,
        )
        self._emit(issued, out)
        if published or cancellation_type is CancellationType.ON_CHAIN:
            out.append(Push(note.sender, issued))
        return issued

    def _settle(self, match: Matched, now_ms: int, out: list[Output]) -> None:
        """Sign the fills of a match whose time came, maker first."""
        for digest in (match.maker, match.taker):
            record = self._orders[digest]
            if match.seq not in record.in_flight:
                continue
            fill = Fill(
                order_digest=digest,
                sender=record.order.sender,
                seq=self._last_seq + 1,
                amount=match.amount,
                filled_total=record.filled + match.amount,
                price_x18=match.price_x18,
                timestamp_ms=match.settle_at_ms,
            )
            signature = self.signer.sign_hash(fill.digest(self.domain))
            issued = FillIssued(fill.seq, now_ms, fill, signature, match.seq)
            self._emit(issued, out)
            out.append(Push(fill.sender, issued))

    def _tick(self, now_ms: int, out: list[Output]) -> None:
        """Do, in time order, everything due by ``now_ms``: settle, expire, release."""
        settle, expiry, held = self._settle_heap, self._expiry_heap, self._held_heap
        while True:
            t_settle = settle[0][0] if settle else _NEVER
            t_expiry = expiry[0][0] if expiry else _NEVER
            t_held = held[0][0] if held else _NEVER
            t = min(t_settle, t_expiry, t_held)
            if t > now_ms:
                break
            if t == t_settle:
                match = self._matches.get(heapq.heappop(settle)[1])
                if match is not None:
                    self._settle(match, t, out)
            elif t == t_expiry:
                record = self._orders.get(heapq.heappop(expiry)[1])
                if record is not None and record.on_book:  # (a retired one is off the book)
                    self._emit(Expired(self._last_seq + 1, t, record.digest), out)
            else:
                accepted, request_hash = self._held[heapq.heappop(held)[1]]
                self._emit(CancelReleased(self._last_seq + 1, t, accepted.seq), out)
                self._process_cancel(accepted, request_hash, t, out)
        self._forget(now_ms)

    def _forget(self, now_ms: int) -> None:
        """Drop what can no longer matter: rate weight older than a minute, and request
        hashes whose recv_time passed (the window check rejects those requests anyway)."""
        log, used = self._rate_log, self._rate_used
        while log and log[0][0] <= now_ms - RATE_WINDOW_MS:
            _, wallet, weight = log.popleft()
            used[wallet] -= weight
        requests = self._request_heap
        while requests and requests[0][0] <= now_ms:
            del self._requests[heapq.heappop(requests)[1]]

    # -----------------------------------------------------------------------------------
    # Applying entries: the only code that changes state (live and on replay alike).

    def _apply(self, entry: JournalEntry, *derived: Any) -> None:
        self._APPLY[type(entry)](self, entry, *derived)
        self._last_seq = entry.seq

    def _apply_order(self, entry: OrderAccepted, digest: bytes | None = None) -> None:
        """``digest`` is the order's when the caller has it (live); on replay it is computed."""
        record = self._new_record(
            entry.product_id, entry.order, entry.signature, entry.at_ms, digest
        )
        self._books[entry.product_id].side(record.is_bid).add(
            record.digest, record.order.price_x18, record.remaining
        )
        heapq.heappush(self._expiry_heap, (entry.order.expiration * 1000, record.digest))
        self._charge(entry.order.sender, entry.at_ms, entry.weight)

    def _apply_forced(self, entry: OrderForced) -> None:
        # Active for an instant, never on the book: the note that follows cancels it.
        record = self._new_record(entry.order.product_id, entry.order, b"", entry.at_ms)
        record.on_book = False

    def _new_record(
        self,
        product_id: int,
        order: Order,
        signature: bytes,
        at_ms: int,
        digest: bytes | None = None,
    ) -> _OrderRecord:
        if digest is None:
            digest = order.digest(self.domain)
        if digest in self._orders:
            raise JournalCorrupt(f"order 0x{digest.hex()} accepted twice")
        record = _OrderRecord(product_id, order, signature, digest, at_ms, abs(order.amount))
        self._orders[digest] = record
        self._active_by_sender.setdefault(order.sender, {})[digest] = None
        key = (order.sender, product_id)
        self._open[key] = self._open.get(key, 0) + 1
        self._open_total += 1
        return record

    def _apply_cancel(self, entry: CancelAccepted, request_hash: bytes | None = None) -> None:
        """``request_hash`` is the request's EIP-712 digest when the caller has it (live);
        on replay it is computed here."""
        tx = entry.request.tx
        if request_hash is None:
            request_hash = tx.digest(self.domain)
        recv_time = nonce_recv_time_ms(tx.nonce)
        self._requests[request_hash] = recv_time
        heapq.heappush(self._request_heap, (recv_time, request_hash))
        self._charge(tx.sender, entry.at_ms, entry.weight)
        if entry.process_at_ms > entry.at_ms:
            self._held[entry.seq] = (entry, request_hash)
            heapq.heappush(self._held_heap, (entry.process_at_ms, entry.seq))
            if isinstance(entry.request, CancelAndPlace):
                self._held_orders.add(entry.request.place_order.order.digest(self.domain))

    def _apply_release(self, entry: CancelReleased) -> None:
        accepted, _ = self._held.pop(entry.request_seq)
        if isinstance(accepted.request, CancelAndPlace):
            self._held_orders.discard(accepted.request.place_order.order.digest(self.domain))

    def _apply_match(self, entry: Matched) -> None:
        for digest in (entry.maker, entry.taker):
            record = self._orders[digest]
            if not record.on_book or record.remaining < entry.amount:
                raise JournalCorrupt(f"match {entry.seq} exceeds order 0x{digest.hex()}")
            record.remaining -= entry.amount
            record.in_flight[entry.seq] = (entry.amount, entry.settle_at_ms)
            self._books[record.product_id].side(record.is_bid).reduce(
                digest, record.order.price_x18, entry.amount
            )
            self._step(record, Event.MATCH if record.remaining else Event.MATCH_LAST)
            if record.state is OrderState.CANCELLED:  # a policy let a cancelled order fill
                record.fills_after -= 1
            if not record.remaining:
                record.on_book = False
            elif record.state is not OrderState.ACTIVE and not record.fills_after:
                self._take_off_book(record)
        self._matches[entry.seq] = entry
        heapq.heappush(self._settle_heap, (entry.settle_at_ms, entry.seq))

    def _apply_fill(self, entry: FillIssued) -> None:
        fill = entry.fill
        record = self._orders[fill.order_digest]
        if fill.seq != entry.seq or fill.filled_total != record.filled + fill.amount:
            raise JournalCorrupt(f"fill {entry.seq} does not follow its order's fills")
        size, _ = record.in_flight.pop(entry.match_seq)
        if size != fill.amount:
            raise JournalCorrupt(f"fill {entry.seq} does not match match {entry.match_seq}")
        record.filled = fill.filled_total
        record.last_fill_seq = entry.seq
        record.fills.append(entry)
        match = self._matches[entry.match_seq]
        if not any(
            entry.match_seq in self._orders[d].in_flight for d in (match.maker, match.taker)
        ):
            del self._matches[entry.match_seq]

    def _apply_note(self, entry: NoteIssued) -> None:
        note = entry.note
        record = self._orders[note.order_digest]
        if note.seq != entry.seq:
            raise JournalCorrupt(f"note {entry.seq} carries seq {note.seq}")
        record.notes.append(entry)
        if len(record.notes) > 1:
            return  # an equivocating second note changes nothing but the evidence
        on_chain = entry.cancellation_type is CancellationType.ON_CHAIN
        self._step(record, Event.FORCE_CANCEL if on_chain else Event.CANCEL)
        record.fills_after = entry.fills_after
        if record.on_book and not entry.fills_after:
            self._take_off_book(record)

    def _apply_stopped(self, entry: OrdersStopped) -> None:
        if self._stopped is not None:
            raise JournalCorrupt(f"orders stopped twice, again at {entry.seq}")
        self._stopped = entry.reason

    def _apply_expired(self, entry: Expired) -> None:
        record = self._orders[entry.digest]
        self._step(record, Event.EXPIRE)
        self._take_off_book(record)

    _APPLY: ClassVar[dict[type, Any]] = {
        OrderAccepted: _apply_order,
        OrderForced: _apply_forced,
        CancelAccepted: _apply_cancel,
        CancelReleased: _apply_release,
        Matched: _apply_match,
        FillIssued: _apply_fill,
        NoteIssued: _apply_note,
        Expired: _apply_expired,
        OrdersStopped: _apply_stopped,
    }

    def _step(self, record: _OrderRecord, event: Event) -> None:
        """Move ``record`` through the lifecycle table, keeping the active index true."""
        was_active = record.state is OrderState.ACTIVE
        record.state = step(record.state, event, record.digest, record.order.sender)
        if was_active and record.state is not OrderState.ACTIVE:
            del self._active_by_sender[record.order.sender][record.digest]
            self._open[record.order.sender, record.product_id] -= 1
            self._open_total -= 1

    def _take_off_book(self, record: _OrderRecord) -> None:
        if record.on_book:
            self._books[record.product_id].side(record.is_bid).remove(
                record.digest, record.order.price_x18
            )
            record.on_book = False

    def _charge(self, sender: bytes, at_ms: int, weight: int) -> None:
        if weight:
            wallet = sender[:20]
            self._rate_log.append((at_ms, wallet, weight))
            self._rate_used[wallet] = self._rate_used.get(wallet, 0) + weight
