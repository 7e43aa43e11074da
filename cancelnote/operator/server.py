"""The operator's WebSocket server: the JSON API of docs/protocol.md §15 over trio.

WebSocket is spoken with wsproto directly on trio's TCP streams, so that every byte that
arrives or waits to leave is counted against a budget and every wait has a timeout
(DESIGN §8). Three kinds of task share one process, and only one touches the engine:

* a **connection** task pair per client: the reader turns bytes into messages and each
  message into a request (:func:`cancelnote.api.decode_request`) and queues it on the
  shared inbox; the writer frames what was queued for that client, everything waiting
  at once, into one socket write;
* the **engine task** is the engine's only caller (it is not thread-safe). It takes
  every request waiting in the inbox, cancels and queries first and new orders after
  (each client's own requests keep their order: :func:`_cancels_first`), and for each of
  the two parts (a batch) reads the clock once (``now_ms``: the engine never reads one),
  calls :meth:`Engine.advance` and then ``handle`` for each request, and hands the
  batch's journal entries and outgoing messages on. When no
  request comes for :attr:`ServerConfig.tick_s` it still calls ``advance``, so that
  in-flight matches settle, orders expire and held cancels are released on time;
* the **dispatcher** commits the entries of every batch waiting for it in one
  transaction (group commit: one fsync for all the requests of those loop turns) and
  only then releases their replies and pushes: **durable before visible**. While it
  waits for the disk, the engine task works on the next batch.

Journal heads (protocol §21), when the server has a :class:`~.heads.HeadLog`: the engine
task makes each batch's entries leaves of the log and, every ``H`` ms or when a client
asks (``{"head": {}}``), signs a head over them stamped with the batch's time; the head is
committed with the batch and then pushed to every ``subscribe_heads`` connection (idle,
the engine task wakes for the next head). Proof queries (``inclusion``, ``consistency``,
``locate``) are rate-limited like every query and answered from what is committed.

Subscriptions (``{"subscribe": {"sender", "after_seq"}}``, §15.3) are served by the
dispatcher, which publishes fills and notes in journal order. A subscription first
replays the sender's published fills and notes with ``seq > after_seq`` from the index,
streamed by the connection's writer as the client reads (a replay is never queued
whole), then streams new ones: no gap and no duplicate. A stream is not private: fills
and notes are the operator's signed statements, also returned by the ``fills``/``notes``
queries to anyone who names a digest.

Limits (:class:`ServerConfig`; protocol §15.5 lists the codes, docs/operations.md the
defaults and flags). Before the handshake: connections in total and per source address
(over either, an HTTP 503 and the socket closes), and a handshake timeout. On a
connection: the message size (over it, ``INVALID_MESSAGE``; far over it, close 1009),
how long a begun message may take (4001), an idle timeout with pings (4000), the bytes
queued for the client (over them, or a write stuck for the write timeout: close 1008),
subscriptions and replays in progress (``SUBSCRIPTION_LIMIT``, ``REPLAY_LIMIT``), and
token-bucket rates per connection and per address for queries (``QUERY_RATE_LIMITED``)
and for executes the engine rejected (beyond them an execute is refused unchecked,
``REJECT_RATE_LIMITED``: a flood of bad signatures costs no signature recoveries).
Replays stream at most at a rate per address. In total: the bytes buffered in and out
over all connections; past that budget readers stop reading (TCP pushes back) and the
client with the largest queue is closed (1013).

Error handling: whatever a connection does is handled in its own task, and nothing it
raises leaves that task (a client that resets mid-handshake is one log line). A
rejected request changes nothing. An exception out of the engine, or a failed journal
commit, is a fault: it is logged with its cause and ends the server, and the journal is
the truth on restart (no reply of an uncommitted batch ever left).

Shutdown (:meth:`OperatorServer.shutdown`): stop accepting, stop reading, answer every
request already read, commit, flush every queue, close each socket with 1001; whatever a
client does, every socket is closed within :attr:`ServerConfig.shutdown_timeout_s`.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import errno
import itertools
import json
import logging
import math
from collections.abc import Iterable
from typing import Any

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from cancelnote.api import (
    CancelAndPlace,
    CancelOrders,
    CancelProductOrders,
    CancelRequest,
    CloseCode,
    Consistency,
    HeadQuery,
    Inclusion,
    Locate,
    PlaceOrder,
    Push,
    Reply,
    Subscribe,
    SubscribeHeads,
    Unsubscribe,
    UnsubscribeHeads,
    WireRequest,
    decode_request,
    describe_failed,
    failure_wire,
    success_wire,
    weight_of,
)
from cancelnote.errors import MessageError, Rejected
from cancelnote.messages import (
    CancellationNote,
    domain_to_json,
    signature_from_wire,
    signature_to_wire,
)

from .clock import Clock
from .engine import Engine
from .errors import (
    AddressRateLimited,
    HeadsDisabled,
    QueryRateLimited,
    RejectRateLimited,
    ReplayLimit,
    SubscriptionLimit,
)
from .heads import HeadLog
from .journal import FillIssued, Journal, JournalEntry, LogWrite, NoteIssued
from .lifecycle import CancellationType
from .limits import ServerConfig

LOGGER = logging.getLogger("cancelnote.operator.server")

#: Above ``max_message_chars`` times this the connection is closed (1009) without reading on.
TRANSPORT_LIMIT_FACTOR = 4
#: Most bytes asked of the socket in one read.
RECEIVE_BYTES = 64 * 1024
#: Most messages a connection's writer frames into one socket write, and most bytes.
WRITE_COALESCE = 64
WRITE_BYTES = 256 * 1024
#: Replay items a writer takes from the index at a time.
REPLAY_CHUNK = 64
#: How long a closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT_S = 0.5

CANCEL_REQUESTS = (CancelOrders, CancelProductOrders, CancelAndPlace)
EXECUTES = (PlaceOrder, *CANCEL_REQUESTS)
HEADS_QUERIES = (HeadQuery, Inclusion, Consistency, Locate)
STREAM_REQUESTS = (Subscribe, Unsubscribe, SubscribeHeads, UnsubscribeHeads)
_HTTP_REASONS = {400: "Bad Request", 503: "Service Unavailable"}


_encode_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst_s: float) -> None:
        self.rate = rate
        self.burst = max(rate * burst_s, 1.0)
        self.tokens = self.burst
        self.at = trio.current_time()

    def _fill(self) -> float:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens

    def has(self, amount: float = 1.0) -> bool:
        return self._fill() >= amount

    def take(self, amount: float = 1.0) -> None:
        self._fill()
        self.tokens -= amount

    def wait_s(self, amount: float = 1.0) -> float:
        """Seconds until ``amount`` tokens are there."""
        return max(amount - self._fill(), 0.0) / self.rate


class _Budget:
    """Bytes buffered over all connections; readers wait while it is spent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = trio.Event()
        self._room.set()

    @property
    def spent(self) -> bool:
        return self.used > self.limit

    def take(self, amount: int) -> None:
        self.used += amount
        if self.used > self.limit and self._room.is_set():
            self._room = trio.Event()

    def give(self, amount: int) -> None:
        self.used -= amount
        if self.used <= self.limit:
            self._room.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()


@attrs.define(eq=False)
class _Address:
    """What the connections of one source address share."""

    connections: int
    queries: _Bucket
    rejects: _Bucket
    replays: _Bucket
    executes: _Bucket


@attrs.define(eq=False)
class _Replay:
    """A subscription whose history is still streaming; live once ``after_seq`` is last."""

    sender: bytes
    after_seq: int


@attrs.define(eq=False)
class _Connection:
    """One client: its socket, its WebSocket state, its queue and its allowances."""

    number: int
    stream: trio.SocketStream
    address: str
    peer: str
    shared: _Address
    queries: _Bucket
    rejects: _Bucket
    budget: _Budget
    max_send_bytes: int
    ws: WSConnection = attrs.Factory(lambda: WSConnection(ConnectionType.SERVER))
    reader_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    outbox: collections.deque[str | bytes] = attrs.Factory(collections.deque)
    queued: int = 0
    wake: trio.Event = attrs.Factory(trio.Event)
    finishing: bool = False  # nothing more will be queued: the writer ends when empty
    torn: bool = False  # a write was cut off mid-frame: no close frame can follow
    write_scope: trio.CancelScope | None = None  # the socket write in progress
    open_ws: bool = False
    close_code: int | None = None
    close_reason: str = ""
    client_code: int | None = None
    subscriptions: set[bytes] = attrs.Factory(set)
    replays: collections.deque[_Replay] = attrs.Factory(collections.deque)
    held: set[str] = attrs.Factory(set)  # signatures of its cancels a policy holds

    @property
    def is_open(self) -> bool:
        return self.close_code is None

    def send(self, item: str | bytes) -> None:
        """Queue a text message (or a framed control frame) without waiting.

        A queue over :attr:`max_send_bytes` closes this client: it does not read.
        """
        if not self.is_open:
            return
        size = len(item)
        if self.queued + size > self.max_send_bytes:
            self.close(
                CloseCode.SEND_BUDGET,
                f"SEND_BUDGET: send queue full: the client does not read fast enough"
                f" ({self.queued + size} bytes queued, at most {self.max_send_bytes})",
                abort_write=True,
            )
            return
        self.outbox.append(item)
        self.queued += size
        self.budget.take(size)
        self.wake.set()

    def drop_queue(self) -> None:
        self.budget.give(self.queued)
        self.queued = 0
        self.outbox.clear()

    def close(self, code: int, reason: str, abort_write: bool = False) -> None:
        """Disconnect: stop reading, drop the queue; the writer ends after the write it is
        in (so frames stay whole) and the handler sends the close frame. ``abort_write``
        (a client that does not read): cut the write off; no close frame can follow."""
        if self.is_open:
            self.close_code, self.close_reason = code, reason
            self.drop_queue()
            self.reader_scope.cancel()
            self.wake.set()
            if abort_write and self.write_scope is not None:
                self.write_scope.cancel()

    def finish(self) -> None:
        """No more will be queued (shutdown): the writer flushes and ends."""
        self.finishing = True
        self.wake.set()


@attrs.frozen
class _Execute:
    """A decoded API request of ``conn``."""

    conn: _Connection
    request: Any


@attrs.frozen
class _Answer:
    """An answer the server makes itself (a parse failure): it still keeps its place."""

    conn: _Connection
    wire: dict[str, Any]


@attrs.frozen
class _Stream:
    """A subscribe or unsubscribe (of a sender's stream or of heads) of ``conn``."""

    conn: _Connection
    request: Subscribe | Unsubscribe | SubscribeHeads | UnsubscribeHeads


@attrs.define(eq=False)
class ForcedNote:
    """The durable note answering an on-chain cancel, filled in by the dispatcher."""

    digest: bytes
    order: Any = None  # the Order, for a digest the engine never accepted
    requested_at_ms: int | None = None  # the request's block time: when the cancel took effect
    done: trio.Event = attrs.Factory(trio.Event)
    note: CancellationNote | None = None
    signature: bytes = b""
    error: Rejected | None = None


@attrs.frozen
class StopOrders:
    """Tells the engine to refuse new orders (the court halted us or the exit is announced)."""

    reason: str


@attrs.frozen
class _Publish:
    """A signed fill or note (``text``, numbered ``seq``) for ``sender``'s stream."""

    sender: bytes
    seq: int
    text: str


@attrs.define
class _Batch:
    """What one engine step made: entries (and what they add to the log) to commit, then
    deliveries in order, then the head signed over them, if any."""

    entries: list[JournalEntry] = attrs.Factory(list)
    deliveries: list[_Answer | _Stream | _Publish | ForcedNote] = attrs.Factory(list)
    log: LogWrite | None = None


class _Streams:
    """Every published fill and note by sender, in seq order, and who subscribes to it.

    Only the dispatcher adds to it, after the entries are durable, so what it holds is
    what clients may see. Publications come in seq order (a replay's cursor is a seq),
    and a replay that reaches the end goes live in the same step (no wait between), so
    it misses nothing and gets nothing twice.
    """

    def __init__(self) -> None:
        self._seqs: dict[bytes, list[int]] = {}
        self._texts: dict[bytes, list[str]] = {}
        self._subscribers: dict[bytes, set[_Connection]] = {}

    def add(self, sender: bytes, seq: int, text: str) -> bool:
        """Record a publication; false if this seq was published before (a re-push)."""
        seqs = self._seqs.setdefault(sender, [])
        texts = self._texts.setdefault(sender, [])
        index = bisect.bisect_left(seqs, seq)
        if index < len(seqs) and seqs[index] == seq:
            return False
        seqs.insert(index, seq)
        texts.insert(index, text)
        return True

    def publish(self, item: _Publish) -> None:
        if self.add(item.sender, item.seq, item.text):
            for conn in self._subscribers.get(item.sender, ()):
                conn.send(item.text)

    def count_after(self, sender: bytes, seq: int) -> int:
        seqs = self._seqs.get(sender, [])
        return len(seqs) - bisect.bisect_right(seqs, seq)

    def chunk_after(self, sender: bytes, seq: int, most: int) -> tuple[list[str], int]:
        """Up to ``most`` texts with a seq after ``seq``, and the seq of the last one."""
        seqs = self._seqs.get(sender, [])
        start = bisect.bisect_right(seqs, seq)
        texts = self._texts.get(sender, [])[start : start + most]
        return texts, seqs[start + len(texts) - 1] if texts else seq

    def seq_of(self, sender: bytes, seq: int, count: int) -> int:
        """The seq of the ``count``-th publication after ``seq`` (1-based)."""
        seqs = self._seqs[sender]
        return seqs[bisect.bisect_right(seqs, seq) + count - 1]

    def subscribe(self, conn: _Connection, sender: bytes) -> None:
        self._subscribers.setdefault(sender, set()).add(conn)

    def unsubscribe(self, conn: _Connection, sender: bytes) -> None:
        subscribers = self._subscribers.get(sender)
        if subscribers is not None:
            subscribers.discard(conn)
            if not subscribers:
                del self._subscribers[sender]

    def drop(self, conn: _Connection) -> None:
        for sender in conn.subscriptions:
            self.unsubscribe(conn, sender)


def publication(entry: JournalEntry) -> _Publish | None:
    """The stream item a journaled fill or note became, or ``None`` (not published)."""
    if isinstance(entry, FillIssued):
        return _Publish(entry.fill.sender, entry.seq, entry.signed_json)
    if isinstance(entry, NoteIssued) and (
        entry.published or entry.cancellation_type is CancellationType.ON_CHAIN
    ):
        return _Publish(entry.note.sender, entry.seq, entry.signed_json)
    return None


def _cancels_first(items: list[Any]) -> tuple[list[Any], list[Any]]:
    """Split a batch: everything but new orders first, then the orders (and whatever
    follows an order from the same connection, so that each client's requests keep their
    order). As Hyperliquid orders a block, cancels go before orders: a flood of orders
    can delay nobody's cancel, and the first part is committed and answered while the
    engine works on the second."""
    first: list[Any] = []
    later: list[Any] = []
    waiting: set[_Connection] = set()  # connections with an order in ``later``
    for item in items:
        conn = getattr(item, "conn", None)
        request = getattr(item, "request", None)
        if conn in waiting or isinstance(request, PlaceOrder):
            later.append(item)
            if conn is not None:
                waiting.add(conn)
        else:
            first.append(item)
    return first, later


def _push_item(push: Push) -> _Publish:
    return _Publish(push.sender, push.entry.seq, push.text)


#: What tasks raise when another task's failure ends them: never the cause of a fault.
_CONSEQUENCES = (trio.Cancelled, trio.BrokenResourceError, trio.ClosedResourceError)


def root_cause(exc: BaseException) -> BaseException:
    """The exception that started a fault, out of the group trio gathers (the others are
    its consequences: tasks whose channels broke when it ended its own)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [root_cause(inner) for inner in exc.exceptions]
        return next((e for e in leaves if not isinstance(e, _CONSEQUENCES)), leaves[0])
    return exc


def _http_response(status: int, body: str) -> bytes:
    """A complete HTTP/1.1 response that ends the connection (a refusal before upgrade)."""
    payload = body.encode()
    return (
        f"HTTP/1.1 {status} {_HTTP_REASONS[status]}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    ).encode() + payload


# ---------------------------------------------------------------------------------------
# The server.


class OperatorServer:
    """Serves one engine and its journal over WebSocket (see the module docstring).

    Args:
        engine: the engine, already restored from ``journal``; only this server calls it.
        journal: the engine's journal; the server is its only writer.
        clock: the operator's clock (read by the engine task only).
        config: limits.
        heads: the journal's log, opened and checked against it, to sign heads and
            answer proofs (``None``: no heads, and heads requests get ``HEADS_DISABLED``).
    """

    def __init__(
        self,
        engine: Engine,
        journal: Journal,
        *,
        clock: Clock | None = None,
        config: ServerConfig | None = None,
        heads: HeadLog | None = None,
    ) -> None:
        config = config if config is not None else ServerConfig()
        self.engine = engine
        self.journal = journal
        self.config = config
        self.clock = clock if clock is not None else Clock()
        self.heads = heads
        self._head_subscribers: set[_Connection] = set()
        self._streams = _Streams()
        self._numbers = itertools.count(1)
        self._connections: set[_Connection] = set()
        self._addresses: dict[str, _Address] = {}
        self._held: dict[str, _Connection] = {}  # held cancel's signature -> its client
        self._inbox, self._inbox_out = trio.open_memory_channel[Any](config.inbox_size)
        self._budget = _Budget(config.max_buffered_bytes)
        self._listen_scope = trio.CancelScope()
        self._handlers_scope = trio.CancelScope()
        self._stopping = False
        self._deadline = math.inf
        self._stopped = trio.Event()
        self.port: int | None = None

    def restore_stream(self, entry: JournalEntry) -> None:
        """Index a replayed journal entry if it is a published fill or note (before serving)."""
        item = publication(entry)
        if item is not None:
            self._streams.add(item.sender, item.seq, item.text)

    def restore_streams(self, entries: Iterable[JournalEntry]) -> None:
        for entry in entries:
            self.restore_stream(entry)

    @property
    def buffered_bytes(self) -> int:
        """Bytes buffered over all connections now (the total budget's use)."""
        return self._budget.used

    # --- running --------------------------------------------------------------------------

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until :meth:`shutdown` has drained everything; ``task_status`` gets the port."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        batches_in, batches_out = trio.open_memory_channel[_Batch](16)
        try:
            async with trio.open_nursery() as core:
                core.start_soon(self._run_engine, batches_in)
                core.start_soon(self._run_dispatcher, batches_out)
                with self._handlers_scope:
                    async with trio.open_nursery() as handlers:
                        for listener in listeners:
                            handlers.start_soon(self._accept, listener, handlers)
                        LOGGER.info(
                            "listening", extra={"fields": {"host": host, "port": self.port}}
                        )
                        task_status.started(self.port)
        finally:
            for listener in listeners:  # closed without waiting: a fault in flight stays
                listener.socket.close()
            self._stopped.set()

    async def shutdown(self) -> None:
        """Stop accepting and reading, answer and commit what was read, close every socket.

        Every socket is closed within :attr:`ServerConfig.shutdown_timeout_s` whatever the
        clients do; the journal commit of what was read is always waited for.
        """
        if not self._stopping:
            self._stopping = True
            self._deadline = trio.current_time() + self.config.shutdown_timeout_s
            LOGGER.info("shutdown", extra={"fields": {"connections": len(self._connections)}})
            self._listen_scope.cancel()
            for conn in self._connections:
                conn.reader_scope.cancel()
            await self._inbox.aclose()
        with trio.move_on_at(self._deadline + CLOSE_TIMEOUT_S):
            await self._stopped.wait()
        self._handlers_scope.cancel()  # a client still holding on: dropped
        await self._stopped.wait()

    def inbox(self) -> trio.MemorySendChannel[Any]:
        """A clone of the inbox for another producer (the chain watcher); close it when done."""
        return self._inbox.clone()

    # --- accepting ------------------------------------------------------------------------

    async def _accept(self, listener: trio.SocketListener, handlers: trio.Nursery) -> None:
        with self._listen_scope:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # out of descriptors or memory: wait, never exit
                    LOGGER.warning("accept_failed", extra={"fields": {"error": repr(exc)}})
                    await trio.sleep(0.1 if exc.errno in (errno.EMFILE, errno.ENFILE) else 0.01)
                    continue
                await self._admit(stream, handlers)

    async def _admit(self, stream: trio.SocketStream, handlers: trio.Nursery) -> None:
        """Start a connection, or refuse it at once (503) if a connection cap is reached."""
        config = self.config
        try:
            host, port, *_ = stream.socket.getpeername()
        except OSError:  # reset before we looked
            await trio.aclose_forcefully(stream)
            return
        shared = self._addresses.get(host)
        refusal = None
        if len(self._connections) >= config.max_connections:
            refusal = f"CONNECTION_LIMIT: {config.max_connections} connections are open"
        elif shared is not None and shared.connections >= config.max_connections_per_address:
            refusal = (
                f"ADDRESS_CONNECTION_LIMIT: {config.max_connections_per_address} connections"
                f" from {host} are open"
            )
        if refusal is not None:
            with trio.move_on_after(0.05):
                with contextlib.suppress(OSError, trio.BrokenResourceError):
                    await stream.send_all(_http_response(503, refusal + "\n"))
            await trio.aclose_forcefully(stream)
            return
        if shared is None:
            shared = self._addresses[host] = _Address(
                0,
                _Bucket(config.query_rate_per_address, 2.0),
                _Bucket(config.reject_rate_per_address, 5.0),
                _Bucket(config.replay_rate, 1.0),
                _Bucket(config.execute_rate_per_address, 10.0),
            )
        shared.connections += 1
        conn = _Connection(
            next(self._numbers),
            stream,
            host,
            f"{host}:{port}",
            shared,
            _Bucket(config.query_rate, 2.0),
            _Bucket(config.reject_rate, 5.0),
            self._budget,
            config.max_send_bytes,
        )
        self._connections.add(conn)
        handlers.start_soon(self._connection, conn)

    # --- one connection -------------------------------------------------------------------

    async def _connection(self, conn: _Connection) -> None:
        """Everything of one client; nothing it causes leaves this task."""
        try:
            async with trio.open_nursery() as tasks:
                with conn.reader_scope:
                    if await self._handshake(conn) and not self._stopping:
                        LOGGER.info(
                            "connection_open",
                            extra={"fields": {"conn": conn.number, "peer": conn.peer}},
                        )
                        tasks.start_soon(self._write, conn)
                        await self._read(conn)
                if conn.is_open and not self._stopping:  # the client left
                    tasks.cancel_scope.cancel()
        except Exception as exc:  # a client's doing (a reset, a protocol error): its own end
            if conn.is_open:
                conn.close(CloseCode.PROTOCOL_ERROR, f"PROTOCOL_ERROR: {type(exc).__name__}")
            LOGGER.info(
                "connection_error",
                extra={
                    "fields": {
                        "conn": conn.number,
                        "peer": conn.peer,
                        "error": repr(root_cause(exc)),
                    }
                },
            )
        finally:
            await self._close(conn)

    async def _handshake(self, conn: _Connection) -> bool:
        """The opening handshake, within the handshake timeout; true once open."""
        if self._stopping:
            return False
        with trio.move_on_after(self.config.handshake_timeout_s):
            while True:
                data = await conn.stream.receive_some(RECEIVE_BYTES)
                if not data:
                    return False
                try:
                    conn.ws.receive_data(data)
                    for event in conn.ws.events():
                        if isinstance(event, Request):
                            await conn.stream.send_all(conn.ws.send(AcceptConnection()))
                            conn.open_ws = True
                            return True
                except RemoteProtocolError as exc:  # not a WebSocket upgrade
                    reason = f"BAD_HANDSHAKE: {exc}\n"
                    await conn.stream.send_all(_http_response(400, reason))
                    return False
        return False

    async def _read(self, conn: _Connection) -> None:
        """Read messages until the client leaves, enforcing sizes and timeouts."""
        config, ws, stream, budget = self.config, conn.ws, conn.stream, self._budget
        limit = config.max_message_chars
        transport_limit = TRANSPORT_LIMIT_FACTOR * limit
        parts: list[str] = []
        held = 0  # characters of the unfinished message kept (and taken from the budget)
        size = 0  # characters of the unfinished message so far
        begun = math.inf  # when the unfinished message began
        last = trio.current_time()
        pinged = False
        try:
            while True:
                deadline = min(begun + config.message_timeout_s, last + config.idle_timeout_s)
                ping_at = math.inf if pinged else last + config.idle_timeout_s / 2
                with trio.move_on_at(min(deadline, ping_at)):
                    if budget.spent:
                        await budget.wait_for_room()
                    data = await stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        return
                    last, pinged = trio.current_time(), False
                    ws.receive_data(data)
                    for event in ws.events():
                        if isinstance(event, Message):
                            if begun == math.inf:
                                begun = last
                            size += len(event.data)
                            if size > transport_limit:
                                conn.close(
                                    CloseCode.MESSAGE_TOO_BIG,
                                    f"MESSAGE_TOO_BIG: over {transport_limit} characters",
                                )
                                return
                            if size <= limit:
                                parts.append(event.data)
                                held += len(event.data)
                                budget.take(len(event.data))
                            elif parts:  # over the limit: answered, not kept
                                parts.clear()
                            if event.message_finished:
                                message = self._message(event, parts, size)
                                budget.give(held)
                                parts, held, size, begun = [], 0, 0, math.inf
                                if not await self._submit(conn, message):
                                    return
                        elif isinstance(event, Ping):
                            conn.send(ws.send(event.response()))
                        elif isinstance(event, CloseConnection):
                            conn.client_code = event.code
                            return
                    continue
                # The deadline or the ping time came.
                now = trio.current_time()
                if now >= begun + config.message_timeout_s:
                    conn.close(
                        CloseCode.MESSAGE_TIMEOUT,
                        f"MESSAGE_TIMEOUT: a message not finished in {config.message_timeout_s} s",
                    )
                    return
                if now >= last + config.idle_timeout_s:
                    conn.close(
                        CloseCode.IDLE_TIMEOUT,
                        f"IDLE_TIMEOUT: nothing received for {config.idle_timeout_s} s",
                    )
                    return
                if not pinged:
                    conn.send(ws.send(Ping()))
                    pinged = True
        finally:
            budget.give(held)

    def _message(self, event: Message, parts: list[str], size: int) -> Any:
        """A finished message as text, or the error it earns."""
        if isinstance(event, BytesMessage):
            return MessageError("binary frames are not accepted: send JSON text")
        if size > self.config.max_message_chars:
            return MessageError(
                f"message of {size} characters exceeds {self.config.max_message_chars}"
            )
        assert isinstance(event, TextMessage)
        return "".join(parts)

    async def _submit(self, conn: _Connection, message: str | MessageError) -> bool:
        """Decode one message and queue it for the engine; false once the inbox is closed.

        A connection over its own rates waits here before its next message is decoded
        (so its excess waits in TCP, costing nothing); an address over its rates gets
        ``QUERY_RATE_LIMITED`` or ``REJECT_RATE_LIMITED`` answers, unchecked.
        """
        if not conn.rejects.has():
            await trio.sleep(conn.rejects.wait_s())
        item = self._item(conn, message)
        if isinstance(item, _Answer):
            conn.rejects.take()  # a malformed message: as a rejection, never the address's
        elif not isinstance(item.request, EXECUTES):
            if not conn.queries.has():
                await trio.sleep(conn.queries.wait_s())
            conn.queries.take()
            if conn.shared.queries.has():
                conn.shared.queries.take()
            else:
                error = QueryRateLimited(
                    f"queries from {conn.address} are limited to"
                    f" {self.config.query_rate_per_address:g}/s"
                )
                item = _Answer(
                    conn, failure_wire(error, item.request.REQUEST_TYPE, item.request.id)
                )
        try:
            await self._inbox.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False  # shutting down: what was read before is answered
        return True

    def _item(self, conn: _Connection, message: str | MessageError) -> _Execute | _Answer | _Stream:
        """One message as an inbox item; never raises on any input."""
        if isinstance(message, MessageError):
            return _Answer(conn, failure_wire(message, None))
        try:
            request: WireRequest = decode_request(message)
        except Rejected as exc:
            return _Answer(conn, failure_wire(exc, *describe_failed(message)))
        if isinstance(request, EXECUTES):
            shared, weight = conn.shared, weight_of(request)
            error: Rejected | None = None
            if not shared.rejects.has():
                error = RejectRateLimited(
                    f"too many rejected requests from {conn.address} lately: slow down"
                )
            elif not shared.executes.has(weight):
                error = AddressRateLimited(
                    f"executes from {conn.address} are limited to"
                    f" {self.config.execute_rate_per_address * 60:g} weight a minute"
                )
            if error is not None:
                return _Answer(conn, failure_wire(error, request.REQUEST_TYPE, request.id))
            shared.executes.take(weight)
            return _Execute(conn, request)
        if isinstance(request, STREAM_REQUESTS):
            return _Stream(conn, request)
        return _Execute(conn, request)

    async def _write(self, conn: _Connection) -> None:
        """Send what is queued for ``conn`` (several messages per write), then its replays."""
        ws, stream, config = conn.ws, conn.stream, self.config
        while conn.is_open:
            if not conn.outbox:
                if conn.replays and not conn.finishing:
                    await self._replay(conn)
                    continue
                if conn.finishing:
                    return
                conn.wake = trio.Event()
                await conn.wake.wait()
                continue
            frames: list[bytes] = []
            taken = 0
            while conn.outbox and len(frames) < WRITE_COALESCE and taken < WRITE_BYTES:
                item = conn.outbox.popleft()
                taken += len(item)
                frames.append(item if isinstance(item, bytes) else ws.send(TextMessage(data=item)))
            timeout = min(config.write_timeout_s, max(self._deadline - trio.current_time(), 0))
            conn.torn = True
            with trio.move_on_after(timeout) as conn.write_scope:
                await stream.send_all(b"".join(frames))
                conn.torn = False
            conn.write_scope = None
            if conn.is_open:  # (a close dropped the queue and its bytes already)
                conn.queued -= taken
                self._budget.give(taken)
            if not conn.torn:
                continue
            conn.close(
                CloseCode.SEND_BUDGET, "SEND_BUDGET: a write was blocked: the client does not read"
            )
            return

    async def _replay(self, conn: _Connection) -> None:
        """Queue the next chunk of the first replay, at the address's replay rate; a replay
        that reaches the end goes live in the same step."""
        replay = conn.replays[0]
        bucket = conn.shared.replays
        if not bucket.has():
            await trio.sleep(bucket.wait_s())
            return
        most = min(REPLAY_CHUNK, max(int(bucket.tokens), 1))
        texts, last_seq = self._streams.chunk_after(replay.sender, replay.after_seq, most)
        ended = len(texts) < most
        room, size = conn.max_send_bytes // 2, 0
        for count, text in enumerate(texts):  # never more than half the send budget
            size += len(text)
            if count and size > room:
                texts, ended = texts[:count], False
                last_seq = self._streams.seq_of(replay.sender, replay.after_seq, count)
                break
        bucket.take(len(texts))
        replay.after_seq = last_seq
        for text in texts:
            conn.send(text)
        if ended:  # the end: live from here, nothing in between
            conn.replays.popleft()
            self._streams.subscribe(conn, replay.sender)

    async def _close(self, conn: _Connection) -> None:
        """Forget ``conn``, send its close frame (briefly), close its socket, log it."""
        self._connections.discard(conn)
        self._streams.drop(conn)
        self._head_subscribers.discard(conn)
        for signature in conn.held:
            self._held.pop(signature, None)
        conn.shared.connections -= 1
        if not conn.shared.connections:
            del self._addresses[conn.address]
        if conn.is_open:
            conn.close_code = CloseCode.GOING_AWAY if self._stopping else CloseCode.NORMAL
        conn.drop_queue()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(
                min(CLOSE_TIMEOUT_S, max(self._deadline - trio.current_time(), 0.05))
            ):
                try:
                    if (
                        conn.open_ws
                        and not conn.torn
                        and conn.ws.state
                        in (
                            ConnectionState.OPEN,
                            ConnectionState.REMOTE_CLOSING,
                        )
                    ):
                        reason = conn.close_reason[:120] or None
                        await conn.stream.send_all(
                            conn.ws.send(CloseConnection(conn.close_code, reason))
                        )
                        await conn.stream.send_eof()
                        while await conn.stream.receive_some(RECEIVE_BYTES):
                            pass  # until the client's close: unread data would reset it
                except (
                    OSError,
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    LocalProtocolError,
                ):
                    pass
            await trio.aclose_forcefully(conn.stream)
        if conn.open_ws:
            LOGGER.info(
                "connection_closed",
                extra={
                    "fields": {
                        "conn": conn.number,
                        "code": conn.close_code,
                        "reason": conn.close_reason,
                        "client_code": conn.client_code,
                    }
                },
            )

    # --- the engine task --------------------------------------------------------------------

    async def _run_engine(self, batches: trio.MemorySendChannel[_Batch]) -> None:
        """Take every waiting request, run it through the engine, pass the batch on."""
        async with batches:
            closing = False
            while not closing:
                items: list[Any] = []
                wait_s = self.config.tick_s
                if self.heads is not None:  # idle, the next head still comes on time
                    wait_s = min(wait_s, self.heads.until_due_s(self.clock.now_ms()))
                with trio.move_on_after(wait_s):
                    try:
                        items.append(await self._inbox_out.receive())
                    except trio.EndOfChannel:
                        closing = True
                while len(items) < self.config.max_batch:
                    try:
                        items.append(self._inbox_out.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                for part in _cancels_first(items):
                    batch = self._step(part)
                    if batch.entries or batch.deliveries or batch.log is not None:
                        await batches.send(batch)

    def _step(self, items: list[Any]) -> _Batch:
        now_ms = self.clock.now_ms()
        batch = _Batch()
        head_answers: list[_Answer] = []
        self._route(self.engine.advance(now_ms), None, batch)
        for item in items:
            if isinstance(item, _Execute) and isinstance(item.request, HEADS_QUERIES):
                answer = self._heads_query(item)
                if answer is None:  # a head: answered once signed, below
                    answer = _Answer(item.conn, {"id": item.request.id})
                    head_answers.append(answer)
                batch.deliveries.append(answer)
            elif isinstance(item, _Execute):
                outputs = self.engine.handle(item.request, now_ms)
                if not self._route(outputs, item.conn, batch) and isinstance(
                    item.request, CANCEL_REQUESTS
                ):
                    self._hold(item.conn, item.request)
            elif isinstance(item, ForcedNote):
                self._force(item, now_ms, batch)
            elif isinstance(item, StopOrders):
                self._route(self.engine.stop_accepting_orders(item.reason, now_ms), None, batch)
            else:
                batch.deliveries.append(item)
        if self.heads is not None:
            self._log(batch, now_ms, head_answers)
        return batch

    def _log(self, batch: _Batch, now_ms: int, head_answers: list[_Answer]) -> None:
        """Make the batch's entries leaves and, when due or asked for, sign the head."""
        heads = self.heads
        assert heads is not None
        heads.extend(batch.entries)
        head = heads.sign(now_ms) if head_answers or heads.due(now_ms) else None
        write = heads.take(head)
        if write.nodes or head is not None:
            batch.log = write
        for answer in head_answers:
            request_id = answer.wire.pop("id", None)
            assert head is not None
            answer.wire.update(success_wire(HeadQuery.REQUEST_TYPE, head.to_wire(), request_id))

    def _heads_query(self, item: _Execute) -> _Answer | None:
        """The answer to a proof query, or ``None`` for a head (signed with the batch)."""
        request = item.request
        try:
            if self.heads is None:
                raise HeadsDisabled("this operator keeps no journal heads")
            if isinstance(request, HeadQuery):
                return None
            if isinstance(request, Inclusion):
                data = self.heads.inclusion(request.size, request.seqs)
            elif isinstance(request, Consistency):
                data = self.heads.consistency(request.first, request.second)
            else:
                data = self.heads.locate(request.content)
        except Rejected as exc:
            return _Answer(item.conn, failure_wire(exc, request.REQUEST_TYPE, request.id))
        return _Answer(item.conn, success_wire(request.REQUEST_TYPE, data, request.id))

    def _route(self, outputs: list[Any], conn: _Connection | None, batch: _Batch) -> bool:
        """Sort one engine call's outputs into ``batch``; true if it answered ``conn``.

        Replies of :meth:`Engine.advance` (``conn`` is ``None``) answer cancels a policy
        held: they go to the client that sent the cancel, found by its signature. An
        execute's failure is charged to its connection's and address's reject allowance.
        """
        answered = False
        for out in outputs:
            if isinstance(out, Reply):
                target = conn if conn is not None else self._held.pop(out.wire["signature"], None)
                if conn is None and target is not None:
                    target.held.discard(out.wire["signature"])
                if target is not None:
                    if out.wire["status"] == "failure" and out.to is not None:
                        target.rejects.take()
                        target.shared.rejects.take()
                    batch.deliveries.append(_Answer(target, out.wire))
                    answered = True
            elif isinstance(out, Push):
                batch.deliveries.append(_push_item(out))
            else:
                batch.entries.append(out)
        return answered

    def _hold(self, conn: _Connection, request: CancelRequest) -> None:
        """Remember who sent a cancel a policy held, for the reply :meth:`Engine.advance` makes."""
        signature = signature_to_wire(request.signature)
        self._held[signature] = conn
        conn.held.add(signature)

    def _force(self, item: ForcedNote, now_ms: int, batch: _Batch) -> None:
        try:
            outputs = self.engine.force_cancel(
                item.digest, now_ms, item.order, item.requested_at_ms
            )
        except Rejected as exc:
            item.error = exc
            batch.deliveries.append(item)
            return
        self._route(outputs, None, batch)
        wire = next(out.wire for out in outputs if isinstance(out, Push) and "note" in out.wire)
        item.note = CancellationNote.from_wire(wire["note"])
        item.signature = signature_from_wire(wire["signature"])
        batch.deliveries.append(item)

    # --- the dispatcher -------------------------------------------------------------------

    async def _run_dispatcher(self, batches: trio.MemoryReceiveChannel[_Batch]) -> None:
        """Commit every waiting batch at once, then deliver their messages in order."""
        async with batches:
            async for first in batches:
                waiting = [first]
                while True:
                    try:
                        waiting.append(batches.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                entries = [entry for batch in waiting for entry in batch.entries]
                logs = [batch.log for batch in waiting if batch.log is not None]
                if entries or logs:
                    await self._commit(entries, logs)
                for batch in waiting:
                    if batch.log is not None and self.heads is not None:
                        self.heads.committed(batch.log)
                    for item in batch.deliveries:
                        self._deliver(item)
                    if batch.log is not None and batch.log.head is not None:
                        self._push_head(_encode_json(batch.log.head.to_wire()))
                self._shed()
        for conn in list(self._connections):
            conn.finish()

    async def _commit(self, entries: list[JournalEntry], logs: list[LogWrite]) -> None:
        """Make ``entries`` (and what they add to the log) durable; a failure is a fault,
        logged here with its cause."""
        try:
            await trio.to_thread.run_sync(self.journal.append_many, entries, logs)
        except Exception as exc:
            LOGGER.critical(
                "journal_fault",
                extra={
                    "fields": {
                        "error": f"{type(exc).__name__}: {exc}",
                        "first_seq": entries[0].seq if entries else None,
                        "entries": len(entries),
                    }
                },
            )
            raise

    def _deliver(self, item: _Answer | _Stream | _Publish | ForcedNote) -> None:
        if isinstance(item, _Publish):
            self._streams.publish(item)
        elif isinstance(item, _Answer):
            item.conn.send(_encode_json(item.wire))
        elif isinstance(item, _Stream):
            self._serve_stream(item)
        else:
            item.done.set()

    def _shed(self) -> None:
        """Over the total budget: close the client with the largest queue (it does not read)."""
        while self._budget.spent:
            largest = max(self._connections, key=lambda conn: conn.queued, default=None)
            if largest is None or not largest.queued:
                return  # the budget is held by unfinished messages: readers wait instead
            largest.close(
                CloseCode.MEMORY_BUDGET,
                f"MEMORY_BUDGET: the server buffers {self._budget.used} bytes, at most"
                f" {self._budget.limit}; this client's queue is the largest",
                abort_write=True,
            )

    def _push_head(self, text: str) -> None:
        for conn in self._head_subscribers:
            conn.send(text)

    def _serve_heads_stream(
        self, conn: _Connection, request: SubscribeHeads | UnsubscribeHeads
    ) -> None:
        if isinstance(request, UnsubscribeHeads):
            self._head_subscribers.discard(conn)
            conn.send(_encode_json(success_wire(request.REQUEST_TYPE, {}, request.id)))
            return
        if self.heads is None:
            error = HeadsDisabled("this operator keeps no journal heads")
            conn.send(_encode_json(failure_wire(error, request.REQUEST_TYPE, request.id)))
            return
        last = self.heads.last_head
        data = {"head": None if last is None else last.to_wire()}
        conn.send(_encode_json(success_wire(request.REQUEST_TYPE, data, request.id)))
        self._head_subscribers.add(conn)

    def _serve_stream(self, item: _Stream) -> None:
        conn, request = item.conn, item.request
        if isinstance(request, SubscribeHeads | UnsubscribeHeads):
            self._serve_heads_stream(conn, request)
            return
        sender_hex = "0x" + request.sender.hex()
        live = request.sender in conn.subscriptions
        if isinstance(request, Unsubscribe):
            self._streams.unsubscribe(conn, request.sender)
            conn.subscriptions.discard(request.sender)
            conn.replays = collections.deque(r for r in conn.replays if r.sender != request.sender)
            conn.send(_encode_json(success_wire("unsubscribe", {"sender": sender_hex}, request.id)))
            return
        error: Rejected | None = None
        if not live and len(conn.subscriptions) >= self.config.max_subscriptions:
            error = SubscriptionLimit(
                f"at most {self.config.max_subscriptions} subscriptions a connection"
            )
        replayed = self._streams.count_after(request.sender, request.after_seq)
        replaying = [r for r in conn.replays if r.sender != request.sender]
        if error is None and replayed and len(replaying) >= self.config.max_replays:
            error = ReplayLimit(
                f"at most {self.config.max_replays} replays streaming a connection: wait for"
                " one to finish"
            )
        if error is not None:
            conn.send(_encode_json(failure_wire(error, Subscribe.REQUEST_TYPE, request.id)))
            return
        data = {
            "sender": sender_hex,
            "after_seq": str(request.after_seq),
            "replayed": replayed,
            "domain": domain_to_json(self.engine.domain),  # the client checks it before signing
            "operator": self.engine.signer.checksum_address,
        }
        conn.send(_encode_json(success_wire("subscribe", data, request.id)))
        self._streams.unsubscribe(conn, request.sender)  # a re-subscribe replays again
        conn.subscriptions.add(request.sender)
        conn.replays = collections.deque(replaying)
        conn.replays.append(_Replay(request.sender, request.after_seq))
        conn.wake.set()
