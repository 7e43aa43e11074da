"""A trio session with the operator: requests, the subscription, reconnect and resume.

Rules of the session (docs/protocol.md §11, §15):

* **Durable before sent.** An order or cancel is written to the evidence store (signed,
  with its send time) before it goes on the wire, so the cancel's deadline runs from a
  time the client can prove it had signed it; a failure answer marks it rejected.
* **Verified and durable before received.** Every fill and note, from the subscription
  or inside an answer, goes through the :class:`~.verifier.Verifier` (which stores it)
  before the session hands it on: :attr:`Session.received` carries only what is kept.
* **Resume without loss or duplicates.** After a reconnect the session subscribes with
  ``after_seq`` = the highest seq of its own stream it stored; the operator replays
  everything later, and the store's idempotent inserts absorb anything seen twice.

* **The operator's log.** Given a :class:`~.heads.HeadsVerifier`, the session follows the
  operator's journal heads too (a :class:`~.heads.HeadsFollower` on its own connection):
  every fill and note it keeps is proven in the log, every cancel it sends must appear
  there within ``cancel_heads`` head intervals (else ``UNLOGGED_CANCEL``, the first alarm),
  and the heads are kept as evidence (protocol §21.5).

* **The operator's domain first.** The subscription's answer names the operator's EIP-712
  domain (chain id, court) and key; the session checks them against its store's before it
  lets anything be signed, and stops with :class:`OperatorMismatch` if they differ (a
  signature made for another court is worthless as evidence, and refused anyway).

Error handling: a dropped connection fails the requests in flight with
:class:`ConnectionLost` (a retried request is answered ``REPLAYED``; the notes and status
queries then tell its outcome) and the session reconnects after :data:`RECONNECT_S`.
Evidence writes are SQLite commits on the event loop: a few ms each, by design, since
nothing may be reported before it is on disk.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, wrap_client_stream

from cancelnote.api import (
    BookDepth,
    CancelAndPlace,
    CancelOrders,
    CancelProductOrders,
    Fills,
    Notes,
    OrderStatus,
    PlaceOrder,
    Request,
    request_to_wire,
)
from cancelnote.crypto import Signer
from cancelnote.dispute.jsonrpc import parse_json
from cancelnote.errors import Rejected
from cancelnote.messages import (
    Cancellation,
    CancellationProducts,
    Order,
    domain_to_json,
    make_nonce,
    make_sender,
)

from .heads import HeadsFollower, HeadsVerifier
from .verifier import Received, Verifier

LOGGER = logging.getLogger("cancelnote.client.session")

#: ``recv_time`` of a request is the client's clock plus this (Vertex's SDK default, §7.2).
RECV_AHEAD_MS = 90_000
#: Seconds between reconnection attempts.
RECONNECT_S = 0.5
#: Fills and notes buffered for :attr:`Session.received` (they are in the store anyway).
RECEIVED_BUFFER = 10_000


class ConnectionLost(Rejected):
    """Raised when the connection dropped before the operator answered a request."""

    code = "CONNECTION_LOST"


class OperatorMismatch(Rejected):
    """Raised when the operator serves another domain (chain, court) or key than the store's."""

    code = "OPERATOR_MISMATCH"


class OperatorRejected(Rejected):
    """Raised when the operator answers a request with a failure; ``code`` is its code."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(f"{answer.get('error_code')}: {answer.get('error')}")
        self.code = str(answer.get("error_code"))
        self.answer = answer


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Session:
    """One sender's connection to the operator.

    Start :meth:`run` in a nursery (``await nursery.start(session.run)`` returns once the
    first subscription is answered); then call the request methods from any task.

    Args:
        url: the operator's WebSocket URL.
        signer: the owner key that signs orders and cancels; ``None`` for an owner whose
            wallet signs elsewhere (then only :meth:`place_signed` and queries work).
        verifier: checks and keeps everything received (its store is this client's).
        subaccount: the sender's subaccount name.
        clock: unix ms (nonces, expirations, receive times).
        owner: the owner's address when there is no ``signer``.
        heads: the journal-heads checks of the verifier's store, to follow the operator's
            heads as well (:attr:`follower`); ``None`` to follow none.
    """

    def __init__(
        self,
        url: str,
        signer: Signer | None,
        verifier: Verifier,
        *,
        subaccount: str = "default",
        clock: Callable[[], int] = wall_clock_ms,
        owner: bytes | None = None,
        heads: HeadsVerifier | None = None,
    ) -> None:
        self.url = url
        self.signer = signer
        self.verifier = verifier
        self.store = verifier.store
        self.domain = verifier.store.domain
        address = owner if signer is None else signer.address
        if address is None:
            raise ValueError("a session needs a signer or an owner address")
        self.sender = make_sender(address, subaccount)
        self.clock = clock
        send, self.received = trio.open_memory_channel[Received](RECEIVED_BUFFER)
        self._received_in = send
        self._ids = itertools.count(1)
        self._pending: dict[int, trio.MemorySendChannel[dict[str, Any] | None]] = {}
        self._ws: WebSocketConnection | None = None
        self._connected = trio.Event()
        self._caught_up = trio.Event()
        self._replay_expected: int | None = None  # stream items the subscription replays
        self._stream_seen = 0  # stream items handled since the subscription was sent
        self.reconnects = 0
        self.follower = None if heads is None else HeadsFollower(url, heads, clock)

    # --- running --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected and subscribed until cancelled, reconnecting after any drop; with
        a :attr:`follower`, follow the operator's heads too (it connects on its own)."""
        if self.follower is None:
            await self._run(task_status)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.follower.run)
            await self._run(task_status)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        started = False
        while True:
            try:
                await self._connect_once(None if started else task_status)
                started = True
            except (ConnectionClosed, HandshakeError, OSError, ConnectionLost) as exc:
                LOGGER.info("disconnected", extra={"fields": {"error": repr(exc)}})
            finally:
                self._ws = None
                self._connected = trio.Event()
                self._caught_up = trio.Event()
                self._fail_pending()
            self.reconnects += 1
            await trio.sleep(RECONNECT_S)

    async def _connect_once(self, task_status: trio.TaskStatus[None] | None) -> None:
        """One connection, until it drops. The session owns the TCP stream, so the socket
        is closed however the WebSocket ends (trio-websocket 0.12 would leak it)."""
        url = urllib.parse.urlsplit(self.url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        stream = await trio.open_tcp_stream(host, port)
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, host, url.path or "/")
            try:
                nursery.start_soon(self._read, ws, nursery.cancel_scope)
                self._ws = ws
                await self._subscribe()
                self._connected.set()
                if task_status is not None:
                    task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await ws.aclose()
                nursery.cancel_scope.cancel()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_caught_up(self) -> None:
        """Wait until everything the operator sent while we were away is verified and stored.

        The subscription's answer says how many stored items it replays; they may arrive
        before that answer is read, so items are counted from the moment it is sent.
        """
        await self._caught_up.wait()

    async def _subscribe(self) -> None:
        after = self.verifier.resume_after(self.sender)
        body = {"subscribe": {"sender": "0x" + self.sender.hex(), "after_seq": str(after)}}
        self._replay_expected, self._stream_seen = None, 0
        answer = await self._send(body)
        if answer.get("status") != "success":
            raise OperatorRejected(answer)
        data = answer.get("data")
        self._check_operator(data)
        replayed = data.get("replayed") if isinstance(data, dict) else None
        self._replay_expected = replayed if type(replayed) is int else 0
        self._note_stream_progress()

    def _check_operator(self, data: object) -> None:
        """The subscription's answer must name this store's domain and operator key."""
        served = data.get("domain") if isinstance(data, dict) else None
        operator = data.get("operator") if isinstance(data, dict) else None
        if served != domain_to_json(self.domain):
            raise OperatorMismatch(
                f"the operator at {self.url} serves the domain {json.dumps(served)[:300]};"
                f" this store is for {json.dumps(domain_to_json(self.domain))}"
                " (another court or chain: check --url, or use another --db)"
            )
        expected = self.store.operator
        if not isinstance(operator, str) or operator.lower() != "0x" + expected.hex():
            raise OperatorMismatch(
                f"the operator at {self.url} signs with {operator!r:.60}; this store's court"
                f" names 0x{expected.hex()}"
            )

    def _note_stream_progress(self) -> None:
        if self._replay_expected is not None and self._stream_seen >= self._replay_expected:
            self._caught_up.set()

    async def _read(self, ws: WebSocketConnection, connection: trio.CancelScope) -> None:
        try:
            while True:
                self._handle(await ws.get_message())
        except ConnectionClosed:
            self._fail_pending()
            connection.cancel()  # back to run(), which reconnects

    def _handle(self, message: str | bytes) -> None:
        """Verify and keep what a message carries, then hand it on."""
        now_ms = self.clock()
        try:
            obj = parse_json(message.encode() if isinstance(message, str) else message)
        except ValueError as exc:
            LOGGER.warning("malformed_message", extra={"fields": {"error": str(exc)}})
            return
        if not isinstance(obj, dict):
            return
        if "status" not in obj:  # a stream item: a signed fill or note
            self._deliver(self.verifier.receive_wire(obj, now_ms, stream=True))
            self._stream_seen += 1
            self._note_stream_progress()
            return
        data = obj.get("data")
        for signed in data.get("notes", ()) if isinstance(data, dict) else ():
            if isinstance(signed, dict):
                self._deliver(self.verifier.receive_wire(signed, now_ms))
        waiter = self._pending.pop(obj.get("id"), None)  # type: ignore[arg-type]
        if waiter is not None:
            waiter.send_nowait(obj)

    def _deliver(self, received: Received) -> None:
        if received.new:
            # nobody reads the notifications: the store holds the message anyway
            with contextlib.suppress(trio.WouldBlock):
                self._received_in.send_nowait(received)

    def _fail_pending(self) -> None:
        for waiter in self._pending.values():
            waiter.send_nowait(None)
        self._pending.clear()

    async def _send(self, body: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected to the operator")
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any] | None](1)
        self._pending[request_id] = send
        try:
            await ws.send_message(json.dumps({**body, "id": request_id}))
            answer = await receive.receive()
        except ConnectionClosed:
            raise ConnectionLost("the connection dropped while sending") from None
        finally:  # answered, failed, or given up on (a caller's timeout): forget it
            self._pending.pop(request_id, None)
        if answer is None:
            raise ConnectionLost("the connection dropped before the operator answered")
        return answer

    async def request(self, request: Request) -> dict[str, Any]:
        """Send an API request; its success ``data``.

        Raises:
            OperatorRejected: a failure answer. ConnectionLost: no answer.
        """
        await self._connected.wait()
        answer = await self._send(request_to_wire(request))
        if answer.get("status") != "success":
            raise OperatorRejected(answer)
        return answer["data"]

    # --- executes -------------------------------------------------------------------------

    def _nonce(self) -> int:
        return make_nonce(self.clock() + RECV_AHEAD_MS)

    def make_order(self, product_id: int, price_x18: int, amount: int, lifetime_s: int) -> Order:
        """An order of this sender, expiring ``lifetime_s`` from now, with a fresh nonce."""
        now_ms = self.clock()
        return Order(
            self.sender,
            product_id,
            price_x18,
            amount,
            math.ceil(now_ms / 1000) + lifetime_s,
            self._nonce(),
        )

    def sign_order(
        self, product_id: int, price_x18: int, amount: int, lifetime_s: int
    ) -> PlaceOrder:
        order = self.make_order(product_id, price_x18, amount, lifetime_s)
        return PlaceOrder(product_id, order, order.sign(self._signer(), self.domain))

    def _signer(self) -> Signer:
        if self.signer is None:
            raise OperatorMismatch("this session has no key: only signed orders can be placed")
        return self.signer

    async def place(
        self, product_id: int, price_x18: int, amount: int, *, lifetime_s: int = 3_600
    ) -> bytes:
        """Sign, keep and place an order; returns its order id."""
        request = self.sign_order(product_id, price_x18, amount, lifetime_s)
        return await self._place(request)

    async def place_signed(self, order: Order, signature: bytes) -> bytes:
        """Keep and place an order a wallet signed (checked here first); returns its id.

        Raises:
            SignatureError: the signature is not the order's owner's in this domain.
        """
        order.verify(signature, self.domain, order.sender[:20])
        return await self._place(PlaceOrder(order.product_id, order, signature))

    async def _place(self, request: PlaceOrder) -> bytes:
        digest = request.order.digest(self.domain)
        self.store.add_order(request.order, request.signature, self.clock())
        await self._execute(request, digest)
        return digest

    async def cancel(self, orders: list[tuple[bytes, int]]) -> dict[str, Any]:
        """Cancel ``(order id, product id)`` pairs; the answer's ``data`` (notes kept)."""
        tx = Cancellation(
            self.sender, tuple(p for _, p in orders), tuple(d for d, _ in orders), self._nonce()
        )
        return await self._cancel(CancelOrders(tx, tx.sign(self._signer(), self.domain)))

    async def cancel_products(self, product_ids: tuple[int, ...] = ()) -> dict[str, Any]:
        """Cancel every order of this sender in ``product_ids`` (all if empty)."""
        tx = CancellationProducts(self.sender, product_ids, self._nonce())
        return await self._cancel(CancelProductOrders(tx, tx.sign(self._signer(), self.domain)))

    async def cancel_and_place(
        self,
        orders: list[tuple[bytes, int]],
        product_id: int,
        price_x18: int,
        amount: int,
        *,
        lifetime_s: int = 3_600,
    ) -> dict[str, Any]:
        """Cancel ``orders`` and place a new one atomically; ``data["digest"]`` is its id."""
        place = self.sign_order(product_id, price_x18, amount, lifetime_s)
        tx = Cancellation(
            self.sender, tuple(p for _, p in orders), tuple(d for d, _ in orders), self._nonce()
        )
        request = CancelAndPlace(tx, tx.sign(self._signer(), self.domain), place)
        self.store.add_order(place.order, place.signature, self.clock())
        try:
            return await self._cancel(request)
        except OperatorRejected:
            self.store.mark_rejected(place.order.digest(self.domain))
            raise

    async def _cancel(self, request: CancelOrders | CancelProductOrders | CancelAndPlace) -> Any:
        self.store.add_cancel(request.tx, request.signature, self.clock())
        return await self._execute(request, request.tx.digest(self.domain))

    async def _execute(self, request: Request, key: bytes) -> Any:
        try:
            return await self.request(request)
        except OperatorRejected as exc:
            if exc.code != "REPLAYED":  # a replay was accepted the first time
                self.store.mark_rejected(key)
            raise

    # --- queries --------------------------------------------------------------------------

    async def status(self, digest: bytes) -> dict[str, Any]:
        """The operator's (unsigned) view of one order."""
        return await self.request(OrderStatus(digest))

    async def fetch_evidence(self, digest: bytes) -> list[Received]:
        """Ask for every fill and note of ``digest`` and pass each through the verifier."""
        found = []
        for query, key in ((Fills(digest), "fills"), (Notes(digest), "notes")):
            data = await self.request(query)
            for signed in data[key]:
                found.append(self.verifier.receive_wire(signed, self.clock()))
        return found

    async def book(self, product_id: int) -> dict[str, Any]:
        return await self.request(BookDepth(product_id))
