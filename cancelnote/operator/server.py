"""The operator's WebSocket server: the JSON API of docs/protocol.md §15 over trio.

The opening handshake is wsproto's (h11); after it the server frames itself
(:mod:`.frames`) on trio's TCP streams, so that every byte that arrives or waits to
leave is counted against a budget and every wait has a timeout (DESIGN §8). A request
goes through five stages, and only one touches the engine:

* a **connection** task pair per client: the reader turns bytes into messages and each
  message into a request (:func:`cancelnote.api.decode_request`, one pass into the
  final types), applies the connection's and address's rates, and puts it in the
  **intake**; the writer frames what was queued for that client, everything waiting at
  once, into one socket write;
* the intake (:class:`_Intake`) serves the waiting requests fairly: each connection's in
  order, the connections of one source address in turn, the addresses in turn. So a
  burst from one address (or from many wallets behind it) waits behind itself, not in
  front of another address's cancel;
* the **verify lanes** (one per verifier worker, :mod:`.verifier`) take a batch from the
  intake, compute each execute's signed digests, have a worker process recover their
  signers on another core, and pass the batch on in the order it was taken, every
  request carrying what its worker found (:class:`~.engine.Verified`). A worker that
  fails is replaced and its batch retried; a batch no worker answers goes on without,
  and the engine recovers those signatures itself. With no workers the engine always
  does;
* the **engine task** is the engine's only caller (it is not thread-safe). It takes
  the verified batches waiting for it, at most :attr:`ServerConfig.max_batch` requests a
  step, cancels and queries first and new orders after (each client's own requests keep
  their order: :func:`_cancels_first`), and for each of the two parts (a batch) reads the
  clock once (``now_ms``: the engine never reads one), calls :meth:`Engine.advance` and
  then ``handle`` for each request, and hands the batch's journal entries and outgoing
  messages on. When no request comes for :attr:`ServerConfig.tick_s` it still calls
  ``advance``, so that in-flight matches settle, orders expire and held cancels are
  released on time;
* the **dispatcher** commits the entries of every batch waiting for it in one
  transaction (group commit: one fsync for all the requests of those steps), in the
  journal process (:mod:`.journal_process`, fed over a pipe; or a thread of this
  process with ``journal_process=0``), and only then releases their replies and pushes:
  **durable before visible**. While it waits for the disk, the engine task works on the
  next batch and the workers verify the one after. A reply is encoded once, with each
  note or fill in it spliced in as the bytes its journal row holds
  (:meth:`~cancelnote.api.Reply.json`); a push is those bytes.

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
(over either, an HTTP 503 written straight to the new socket, which closes), and a
handshake timeout. On a connection: the message size (over it, ``INVALID_MESSAGE``; far
over it, close 1009), how long a begun message may take (4001), an idle timeout with
pings (4000), the bytes queued for the client (over them, or a write stuck for the write
timeout: close 1008), the requests waiting in the pipeline (over
:attr:`ServerConfig.max_pending`, its reader waits), subscriptions and replays in
progress (``SUBSCRIPTION_LIMIT``, ``REPLAY_LIMIT``), and token-bucket rates per
connection and per address for queries (``QUERY_RATE_LIMITED``) and for executes the
engine rejected (beyond them an execute is refused unchecked, ``REJECT_RATE_LIMITED``: a
flood of bad signatures costs no signature recoveries). Replays stream at most at a rate
per address. In total: the requests in the pipeline (:attr:`ServerConfig.inbox_size`)
and the bytes buffered in and out over all connections; past either, readers stop
reading (TCP pushes back) and, for bytes, the client with the largest queue is closed
(1013). A frame that breaks RFC 6455 closes the connection with 1002 (1007 for text that
is not UTF-8).

Error handling: whatever a connection does is handled in its own task, and nothing it
raises leaves that task (a client that resets mid-handshake is one log line). A
rejected request changes nothing. An exception out of the engine, or a failed journal
commit, is a fault: it is logged with its cause and ends the server, and the journal is
the truth on restart (no reply of an uncommitted batch ever left).

Shutdown (:meth:`OperatorServer.shutdown`): stop accepting, stop reading, answer every
request already read, commit, flush every queue, close each socket with 1001, stop the
workers; whatever a client does, every socket is closed within
:attr:`ServerConfig.shutdown_timeout_s`.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import errno
import gc
import itertools
import logging
import math
import os
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import msgspec
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import RemoteProtocolError

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
    encode_json,
    failure_wire,
    signed_parts,
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

from . import frames
from .clock import Clock
from .engine import Engine, Verified
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
from .journal_process import JournalProcess
from .lifecycle import CancellationType
from .limits import ServerConfig
from .verifier import Verifier

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are on
    from .metrics import Metrics

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
#: The longest request head read before the upgrade (h11's own limit).
MAX_HANDSHAKE_BYTES = 16 * 1024
#: The interpreter's switch interval while serving (the default is 5 ms): the commit
#: thread re-takes the GIL after every SQLite step and the seal write, and each time the
#: event loop is busy it waits up to one interval for it, on every honest reply's path.
SWITCH_INTERVAL_S = 0.0005
#: Young collections between two full ones while serving (Python's default is 10): a
#: full collection traverses every live object (the books, the records, the stream
#: index) and took 30-56 ms every few seconds under load, the worst tail an honest cancel
#: met; young ones stay as they are (under 2 ms), and cycles still die young.
FULL_COLLECTION_EVERY = 1000
#: Where an HTTP request head ends, as h11 finds it.
_HEAD_END = re.compile(rb"\n\r?\n")

CANCEL_REQUESTS = (CancelOrders, CancelProductOrders, CancelAndPlace)
EXECUTES = (PlaceOrder, *CANCEL_REQUESTS)
HEADS_QUERIES = (HeadQuery, Inclusion, Consistency, Locate)
STREAM_REQUESTS = (Subscribe, Unsubscribe, SubscribeHeads, UnsubscribeHeads)
_HTTP_REASONS = {400: "Bad Request", 503: "Service Unavailable"}
_PONG, _PING = frames.PONG, frames.PING
_DATA_OPCODES = (frames.TEXT, frames.BINARY)


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

    def spend(self, amount: float = 1.0) -> None:
        """:meth:`take` right after :meth:`has` (the bucket was just filled)."""
        self.tokens -= amount

    def refund(self, amount: float = 1.0) -> None:
        """Give back what was taken ahead (a reservation that was not needed)."""
        self.tokens = min(self.burst, self.tokens + amount)

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
    #: Its connections with requests in the intake, in turn (see :class:`_Intake`).
    turns: collections.deque[_Connection] = attrs.Factory(collections.deque)


@attrs.define(eq=False)
class _Replay:
    """A subscription whose history is still streaming; live once ``after_seq`` is last."""

    sender: bytes
    after_seq: int


@attrs.define(eq=False)
class _Connection:
    """One client: its socket, its frames, its queue and its allowances."""

    number: int
    stream: trio.SocketStream
    address: str
    peer: str
    shared: _Address
    queries: _Bucket
    rejects: _Bucket
    budget: _Budget
    max_send_bytes: int
    parser: frames.FrameParser = attrs.Factory(lambda: frames.FrameParser(server=True))
    reader_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    outbox: collections.deque[bytes] = attrs.Factory(collections.deque)  # whole frames
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
    pending: collections.deque[Any] = attrs.Factory(collections.deque)  # in the intake
    waiting: int = 0  # its requests in the pipeline, intake to engine

    @property
    def is_open(self) -> bool:
        return self.close_code is None

    def send(self, payload: bytes, wake: bool = True) -> None:
        """Queue a text message (its UTF-8 bytes) without waiting."""
        self.send_frame(frames.text_header(len(payload)) + payload, wake)

    def send_frame(self, frame: bytes, wake: bool = True) -> None:
        """Queue a whole frame without waiting; ``wake``: have the writer send it (else
        the caller flushes it: :meth:`OperatorServer._flush`).

        A queue over :attr:`max_send_bytes` closes this client: it does not read.
        """
        if not self.is_open:
            return
        size = len(frame)
        if self.queued + size > self.max_send_bytes:
            self.close(
                CloseCode.SEND_BUDGET,
                f"SEND_BUDGET: send queue full: the client does not read fast enough"
                f" ({self.queued + size} bytes queued, at most {self.max_send_bytes})",
                abort_write=True,
            )
            return
        self.outbox.append(frame)
        self.queued += size
        self.budget.take(size)
        if wake:
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


@attrs.define(eq=False, slots=True)
class _Execute:
    """A decoded API request of ``conn`` and, once a worker looked, what it found."""

    conn: _Connection
    request: Any
    received: float | None = None  # when its last frame was read (trio's clock)
    verified: Verified | None = None


@attrs.frozen
class _Answer:
    """An answer to ``conn``: the engine's reply, or one the server makes itself (a parse
    failure, a limit) as a wire dict; it keeps its place among the connection's."""

    conn: _Connection
    message: Reply | dict[str, Any]
    received: float | None = None  # the request's (:attr:`_Execute.received`)

    @property
    def wire(self) -> dict[str, Any]:
        message = self.message
        return message.wire if isinstance(message, Reply) else message

    def payload(self) -> bytes:
        message = self.message
        return message.json() if isinstance(message, Reply) else encode_json(message)


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
    text: bytes


@attrs.define
class _Batch:
    """What one engine step made: entries (and what they add to the log) to commit, then
    deliveries in order, then the head signed over them, if any."""

    entries: list[JournalEntry] = attrs.Factory(list)
    deliveries: list[_Answer | _Stream | _Publish | ForcedNote] = attrs.Factory(list)
    log: LogWrite | None = None


class _Intake:
    """Requests read and not yet taken on: each connection's in order, the connections of
    one address in turn, the addresses in turn, one request each per turn.

    Whoever sends most waits longest: a burst of thousands of orders from one address,
    or from many wallets behind it, is taken one per turn beside every other address's
    requests, so an honest cancel waits for at most one request per busy address.
    ``count`` (bounded by ``limit``) and each connection's ``waiting`` (bounded by
    ``per_connection``) count requests from the moment they are put here until the
    engine has handled them; readers wait for room (:meth:`room`).
    """

    def __init__(self, limit: int, per_connection: int) -> None:
        self.limit = limit
        self.per_connection = per_connection
        self.count = 0
        self.closed = False
        self._ring: collections.deque[_Address] = collections.deque()
        self._ready = trio.Event()
        self._progress = trio.Event()

    def put(self, conn: _Connection, item: Any) -> None:
        conn.pending.append(item)
        conn.waiting += 1
        self.count += 1
        if len(conn.pending) == 1:  # its first: the connection takes its turns again
            turns = conn.shared.turns
            turns.append(conn)
            if len(turns) == 1:
                self._ring.append(conn.shared)
        self._ready.set()

    async def take(self, most: int) -> list[Any] | None:
        """Up to ``most`` requests, in turn (waits for one); ``None`` once closed and empty."""
        while not self._ring:
            if self.closed:
                return None
            if self._ready.is_set():  # (every waiting lane waits on the same event)
                self._ready = trio.Event()
            await self._ready.wait()
        items: list[Any] = []
        ring = self._ring
        while ring and len(items) < most:
            shared = ring.popleft()
            conn = shared.turns.popleft()
            items.append(conn.pending.popleft())
            if conn.pending:
                shared.turns.append(conn)
            if shared.turns:
                ring.append(shared)
        return items

    def done(self, conn: _Connection) -> None:
        """The engine handled one of ``conn``'s requests."""
        conn.waiting -= 1
        self.count -= 1

    def progressed(self) -> None:
        """Wake readers waiting for room (after an engine step)."""
        self._progress.set()
        self._progress = trio.Event()

    def full(self, conn: _Connection) -> bool:
        return conn.waiting >= self.per_connection or self.count >= self.limit

    async def room(self, conn: _Connection) -> None:
        """Wait until ``conn`` may put another request."""
        while self.full(conn):
            await self._progress.wait()

    def close(self) -> None:
        self.closed = True
        self._ready.set()


class _Turns:
    """Tickets that keep the verify lanes' batches in the order they were taken."""

    def __init__(self) -> None:
        self._issued = itertools.count()
        self._next = 0
        self._changed = trio.Event()

    def ticket(self) -> int:
        return next(self._issued)

    async def wait(self, ticket: int) -> None:
        while self._next != ticket:
            await self._changed.wait()

    def advance(self) -> None:
        self._next += 1
        self._changed.set()
        self._changed = trio.Event()


class _Streams:
    """Every published fill and note by sender, in seq order, and who subscribes to it.

    Only the dispatcher adds to it, after the entries are durable, so what it holds is
    what clients may see. Publications come in seq order (a replay's cursor is a seq),
    and a replay that reaches the end goes live in the same step (no wait between), so
    it misses nothing and gets nothing twice.
    """

    def __init__(self) -> None:
        self._seqs: dict[bytes, list[int]] = {}
        self._texts: dict[bytes, list[bytes]] = {}
        self._subscribers: dict[bytes, set[_Connection]] = {}

    def add(self, sender: bytes, seq: int, text: bytes) -> bool:
        """Record a publication; false if this seq was published before (a re-push)."""
        seqs = self._seqs.setdefault(sender, [])
        texts = self._texts.setdefault(sender, [])
        index = bisect.bisect_left(seqs, seq)
        if index < len(seqs) and seqs[index] == seq:
            return False
        seqs.insert(index, seq)
        texts.insert(index, text)
        return True

    def publish(self, item: _Publish, flush: set[_Connection]) -> None:
        """Record and queue a publication for its subscribers (each added to ``flush``)."""
        if self.add(item.sender, item.seq, item.text):
            subscribers = self._subscribers.get(item.sender)
            if subscribers:
                frame = frames.text_header(len(item.text)) + item.text
                for conn in subscribers:
                    conn.send_frame(frame, wake=False)
                    flush.add(conn)

    def count_after(self, sender: bytes, seq: int) -> int:
        seqs = self._seqs.get(sender, [])
        return len(seqs) - bisect.bisect_right(seqs, seq)

    def chunk_after(self, sender: bytes, seq: int, most: int) -> tuple[list[bytes], int]:
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


def _head_end(data: bytes) -> int | None:
    """Where the request head in ``data`` ends (h11 skips one leading newline)."""
    match = _HEAD_END.search(data, 1 if data[:1] == b"\n" else 0)
    return None if match is None else match.end()


# ---------------------------------------------------------------------------------------
# The server.


class OperatorServer:
    """Serves one engine and its journal over WebSocket (see the module docstring).

    Args:
        engine: the engine, already restored from ``journal``; only this server calls it.
        journal: the engine's journal; the server is its only writer.
        clock: the operator's clock (read by the engine task only).
        config: limits, and how many verifier workers to run.
        heads: the journal's log, opened and checked against it, to sign heads and
            answer proofs (``None``: no heads, and heads requests get ``HEADS_DISABLED``).
        metrics: what to count for Prometheus (``None``: nothing is).
    """

    def __init__(
        self,
        engine: Engine,
        journal: Journal,
        *,
        clock: Clock | None = None,
        config: ServerConfig | None = None,
        heads: HeadLog | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        config = config if config is not None else ServerConfig()
        self.metrics = metrics
        self.engine = engine
        self.journal = journal
        self.config = config
        self.clock = clock if clock is not None else Clock()
        self.heads = heads
        self._head_subscribers: set[_Connection] = set()
        self.verifier = Verifier(config.verify_workers, config.verify_timeout_s)
        self.journal_process = JournalProcess(journal) if config.journal_process else None
        self._streams = _Streams()
        self._numbers = itertools.count(1)
        self._connections: set[_Connection] = set()
        self._addresses: dict[str, _Address] = {}
        self._held: dict[str, _Connection] = {}  # held cancel's signature -> its client
        self._intake = _Intake(config.inbox_size, config.max_pending)
        # Verified batches for the engine: one waits while the engine works on another.
        self._engine_in, self._engine_out = trio.open_memory_channel[list[Any]](1)
        # What other producers (the chain watcher) send the engine, one item at a time.
        self._watch_in, self._watch_out = trio.open_memory_channel[Any](16)
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
        if self.metrics is not None:
            self._watch_queues(batches_in)
        switch_interval, collection = sys.getswitchinterval(), gc.get_threshold()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        gc.freeze()  # what start-up made (the replayed journal) is never traversed again
        gc.set_threshold(collection[0], collection[1], FULL_COLLECTION_EVERY)
        try:
            if self.journal_process is not None:
                await self.journal_process.start()
            await self.verifier.start()
            async with trio.open_nursery() as core:
                core.start_soon(self._run_engine, batches_in)
                core.start_soon(self._run_dispatcher, batches_out)
                async with self._engine_in:
                    core.start_soon(self._forward_watched, self._engine_in.clone())
                    turns = _Turns()
                    for lane in range(max(self.verifier.lanes, 1)):
                        core.start_soon(self._run_lane, lane, turns, self._engine_in.clone())
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
            await self.verifier.aclose()
            if self.journal_process is not None:
                await self.journal_process.aclose()
            sys.setswitchinterval(switch_interval)
            gc.set_threshold(*collection)
            gc.unfreeze()
            self._stopped.set()

    def _watch_queues(self, batches: trio.MemorySendChannel[_Batch]) -> None:
        """The gauges Prometheus reads at each scrape (nothing is counted between)."""
        assert self.metrics is not None
        self.metrics.watch(
            connections=("Open connections", lambda: len(self._connections)),
            pipeline_requests=(
                "Requests read and not yet handled by the engine (intake, lanes, engine)",
                lambda: self._intake.count,
            ),
            engine_queue_batches=(
                "Verified batches waiting for the engine task",
                lambda: self._engine_in.statistics().current_buffer_used,
            ),
            commit_queue_batches=(
                "Engine steps waiting for the dispatcher's journal commit",
                lambda: batches.statistics().current_buffer_used,
            ),
            buffered_bytes=(
                "Bytes buffered in and out over all connections",
                lambda: self._budget.used,
            ),
        )

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
            self._intake.close()
            await self._watch_in.aclose()
        with trio.move_on_at(self._deadline + CLOSE_TIMEOUT_S):
            await self._stopped.wait()
        self._handlers_scope.cancel()  # a client still holding on: dropped
        await self._stopped.wait()

    def inbox(self) -> trio.MemorySendChannel[Any]:
        """A channel to the engine for another producer (the chain watcher); close it when
        done."""
        return self._watch_in.clone()

    # --- accepting ------------------------------------------------------------------------

    async def _accept(self, listener: trio.SocketListener, handlers: trio.Nursery) -> None:
        with self._listen_scope:
            while True:
                try:
                    sock, peer = await listener.socket.accept()
                except OSError as exc:  # out of descriptors or memory: wait, never exit
                    LOGGER.warning("accept_failed", extra={"fields": {"error": repr(exc)}})
                    await trio.sleep(0.1 if exc.errno in (errno.EMFILE, errno.ENFILE) else 0.01)
                    continue
                self._admit(sock, peer, handlers)

    def _admit(self, sock: trio.socket.SocketType, peer: Any, handlers: trio.Nursery) -> None:
        """Start a connection, or refuse it at once if a connection cap is reached: one
        write of an HTTP 503 straight to the socket (it is new: there is room), then close.
        A flood of refused connections costs an accept, a write and a close each."""
        config = self.config
        host, port = peer[0], peer[1]
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
            with contextlib.suppress(OSError):
                os.write(sock.fileno(), _http_response(503, refusal + "\n"))
            sock.close()
            if self.metrics is not None:
                self.metrics.connection_refused(refusal.split(":", 1)[0])
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
            trio.SocketStream(sock),
            host,
            f"{host}:{port}",
            shared,
            _Bucket(config.query_rate, 2.0),
            _Bucket(config.reject_rate, 5.0),
            self._budget,
            config.max_send_bytes,
        )
        self._connections.add(conn)
        if self.metrics is not None:
            self.metrics.connection_opened()
        handlers.start_soon(self._connection, conn)

    # --- one connection -------------------------------------------------------------------

    async def _connection(self, conn: _Connection) -> None:
        """Everything of one client; nothing it causes leaves this task."""
        try:
            async with trio.open_nursery() as tasks:
                with conn.reader_scope:
                    first = await self._handshake(conn)
                    if first is not None and not self._stopping:
                        LOGGER.info(
                            "connection_open",
                            extra={"fields": {"conn": conn.number, "peer": conn.peer}},
                        )
                        tasks.start_soon(self._write, conn)
                        await self._read(conn, first)
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

    async def _handshake(self, conn: _Connection) -> bytes | None:
        """The opening handshake (wsproto's), within the handshake timeout; once open, the
        bytes that came after the request (its first frames), else ``None``."""
        if self._stopping:
            return None
        ws = WSConnection(ConnectionType.SERVER)
        received = b""
        with trio.move_on_after(self.config.handshake_timeout_s):
            while True:
                data = await conn.stream.receive_some(RECEIVE_BYTES)
                if not data:
                    return None
                received += data
                end = _head_end(received)
                if end is None and len(received) <= MAX_HANDSHAKE_BYTES:
                    continue
                try:
                    if end is None:
                        raise RemoteProtocolError("the request head is too long")
                    ws.receive_data(received[:end])
                    if not any(isinstance(event, Request) for event in ws.events()):
                        raise RemoteProtocolError("not a WebSocket upgrade request")
                except RemoteProtocolError as exc:
                    await conn.stream.send_all(_http_response(400, f"BAD_HANDSHAKE: {exc}\n"))
                    return None
                await conn.stream.send_all(ws.send(AcceptConnection()))
                conn.open_ws = True
                return received[end:]
        return None

    async def _read(self, conn: _Connection, data: bytes) -> None:
        """Read messages until the client leaves, enforcing sizes and timeouts; ``data``:
        what came with the handshake."""
        config, parser, stream, budget = self.config, conn.parser, conn.stream, self._budget
        intake = self._intake
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
                for opcode, payload, finished in parser.feed(data) if data else ():
                    if opcode in _DATA_OPCODES:
                        if begun == math.inf:
                            begun = last
                        size += len(payload)
                        if size > transport_limit:
                            conn.close(
                                CloseCode.MESSAGE_TOO_BIG,
                                f"MESSAGE_TOO_BIG: over {transport_limit} characters",
                            )
                            return
                        if size <= limit and opcode == frames.TEXT:
                            parts.append(payload)
                            held += len(payload)
                            budget.take(len(payload))
                        elif parts:  # over the limit: answered, not kept
                            parts.clear()
                        if finished:
                            message = self._message(opcode, parts, size)
                            budget.give(held)
                            parts, held, size, begun = [], 0, 0, math.inf
                            if not await self._submit(conn, message, last):
                                return
                    elif opcode == _PING:
                        conn.send_frame(frames.control_frame(_PONG, payload))
                    elif opcode == frames.CLOSE:
                        conn.client_code = payload[0]
                        return
                if parser.error is not None:
                    error = parser.error
                    conn.close(error.code, f"{CloseCode(error.code).name}: {error}")
                    return
                if intake.full(conn) or budget.spent:  # not reading: TCP pushes back
                    paused = trio.current_time()
                    await intake.room(conn)
                    await budget.wait_for_room()
                    begun += trio.current_time() - paused  # (the client was not slow)
                last = trio.current_time()  # idle from when what came was handled
                deadline = min(begun + config.message_timeout_s, last + config.idle_timeout_s)
                ping_at = math.inf if pinged else last + config.idle_timeout_s / 2
                data = b""
                with trio.move_on_at(min(deadline, ping_at)):
                    data = await stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        return
                    last, pinged = trio.current_time(), False
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
                    conn.send_frame(frames.control_frame(_PING))
                    pinged = True
        finally:
            budget.give(held)

    def _message(self, opcode: int, parts: list[str], size: int) -> str | MessageError:
        """A finished message as text, or the error it earns."""
        if opcode == frames.BINARY:
            return MessageError("binary frames are not accepted: send JSON text")
        if size > self.config.max_message_chars:
            return MessageError(
                f"message of {size} characters exceeds {self.config.max_message_chars}"
            )
        return parts[0] if len(parts) == 1 else "".join(parts)

    async def _submit(
        self, conn: _Connection, message: str | MessageError, received: float
    ) -> bool:
        """Decode one message and put it in the intake; false once the intake is closed.

        A connection over its own rates waits here before its next message is decoded
        (so its excess waits in TCP, costing nothing); an address over its rates gets
        ``QUERY_RATE_LIMITED`` or ``REJECT_RATE_LIMITED`` answers, unchecked.
        """
        if not conn.rejects.has():
            await trio.sleep(conn.rejects.wait_s())
        item = self._item(conn, message, received)
        if isinstance(item, _Answer):
            conn.rejects.take()  # a malformed message: as a rejection, never the address's
        elif not isinstance(item.request, EXECUTES):
            if not conn.queries.has():
                await trio.sleep(conn.queries.wait_s())
            conn.queries.take()
            if conn.shared.queries.has():
                conn.shared.queries.spend()
            else:
                error = QueryRateLimited(
                    f"queries from {conn.address} are limited to"
                    f" {self.config.query_rate_per_address:g}/s"
                )
                item = _Answer(
                    conn, failure_wire(error, item.request.REQUEST_TYPE, item.request.id)
                )
        if self._intake.closed:
            return False  # shutting down: what was read before is answered
        self._intake.put(conn, item)
        return True

    def _item(
        self, conn: _Connection, message: str | MessageError, received: float
    ) -> _Execute | _Answer | _Stream:
        """One message as an intake item; never raises on any input."""
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
            shared.executes.spend(weight)
            return _Execute(conn, request, received)
        if isinstance(request, STREAM_REQUESTS):
            return _Stream(conn, request)
        return _Execute(conn, request, received)

    async def _write(self, conn: _Connection) -> None:
        """Send what is queued for ``conn`` (several frames per write), then its replays."""
        stream, config = conn.stream, self.config
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
            outbox = conn.outbox
            frames_out: list[bytes] = []
            taken = 0
            while outbox and len(frames_out) < WRITE_COALESCE and taken < WRITE_BYTES:
                item = outbox.popleft()
                taken += len(item)
                frames_out.append(item)
            timeout = min(config.write_timeout_s, max(self._deadline - trio.current_time(), 0))
            conn.torn = True
            with trio.move_on_after(timeout) as conn.write_scope:
                await stream.send_all(
                    frames_out[0] if len(frames_out) == 1 else b"".join(frames_out)
                )
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
                    if conn.open_ws and not conn.torn:
                        assert conn.close_code is not None
                        await conn.stream.send_all(
                            frames.close_frame(conn.close_code, conn.close_reason[:120])
                        )
                        await conn.stream.send_eof()
                        while await conn.stream.receive_some(RECEIVE_BYTES):
                            pass  # until the client's close: unread data would reset it
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
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

    # --- the verify lanes -------------------------------------------------------------------

    async def _run_lane(
        self, lane: int, turns: _Turns, engine_in: trio.MemorySendChannel[list[Any]]
    ) -> None:
        """Take requests from the intake, have their signers recovered, pass them on in
        the order they were taken; until the intake is closed and empty."""
        async with engine_in:
            while True:
                items = await self._intake.take(self.config.verify_batch)
                if items is None:
                    return
                ticket = turns.ticket()
                self._reserve_rejects(items)
                if self.verifier.lanes:
                    await self._verify(lane, items)
                await turns.wait(ticket)
                try:
                    await engine_in.send(items)
                finally:
                    turns.advance()

    def _reserve_rejects(self, items: list[Any]) -> None:
        """Take one of its address's rejects from each execute about to be verified,
        refunded if the engine accepts it (:meth:`_route`): what is between here and the
        engine counts, so no more are verified than the allowance lets fail. An address
        whose allowance is spent gets ``REJECT_RATE_LIMITED``, unchecked."""
        for index, item in enumerate(items):
            if type(item) is not _Execute or not isinstance(item.request, EXECUTES):
                continue
            conn, shared = item.conn, item.conn.shared
            if shared.rejects.has():
                shared.rejects.spend()
                continue
            error = RejectRateLimited(
                f"too many rejected requests from {conn.address} lately: slow down"
            )
            request = item.request
            items[index] = _Answer(conn, failure_wire(error, request.REQUEST_TYPE, request.id))
            conn.rejects.take()

    async def _verify(self, lane: int, items: list[Any]) -> None:
        """Attach to each execute of ``items`` what a worker found for its signatures."""
        domain = self.engine.domain
        jobs: list[tuple[_Execute, tuple[bytes, ...]]] = []
        pairs: list[tuple[bytes, bytes]] = []
        for item in items:
            if type(item) is _Execute and isinstance(item.request, EXECUTES):
                parts = signed_parts(item.request)
                digests = tuple(message.digest(domain) for message, _ in parts)
                jobs.append((item, digests))
                pairs.extend(zip(digests, (signature for _, signature in parts), strict=True))
        if not pairs:
            return
        signers = await self.verifier.verify(lane, pairs)
        if signers is None:
            return  # the workers failed it: the engine recovers these itself
        at = 0
        for item, digests in jobs:
            count = len(digests)
            item.verified = Verified(digests, tuple(signers[at : at + count]))
            at += count

    async def _forward_watched(self, engine_in: trio.MemorySendChannel[list[Any]]) -> None:
        """Pass what the watcher sends on to the engine."""
        async with engine_in:
            async for item in self._watch_out:
                await engine_in.send([item])

    # --- the engine task --------------------------------------------------------------------

    async def _run_engine(self, batches: trio.MemorySendChannel[_Batch]) -> None:
        """Take the waiting batches, at most ``max_batch`` requests a step, run them through
        the engine, pass each step's batch on; until every lane and the watcher are done."""
        waiting: collections.deque[Any] = collections.deque()
        most = self.config.max_batch
        async with batches:
            closing = False
            while not closing or waiting:
                if not waiting and not closing:
                    wait_s = self.config.tick_s
                    if self.heads is not None:  # idle, the next head still comes on time
                        wait_s = min(wait_s, self.heads.until_due_s(self.clock.now_ms()))
                    with trio.move_on_after(wait_s):
                        try:
                            waiting.extend(await self._engine_out.receive())
                        except trio.EndOfChannel:
                            closing = True
                while len(waiting) < most and not closing:
                    try:
                        waiting.extend(self._engine_out.receive_nowait())
                    except trio.WouldBlock:
                        break
                    except trio.EndOfChannel:
                        closing = True
                step = [waiting.popleft() for _ in range(min(most, len(waiting)))]
                for part in _cancels_first(step):
                    batch = self._step(part)
                    if batch.entries or batch.deliveries or batch.log is not None:
                        await batches.send(batch)
                self._intake.progressed()

    def _step(self, items: list[Any]) -> _Batch:
        now_ms = self.clock.now_ms()
        batch = _Batch()
        intake = self._intake
        head_answers: list[_Answer] = []
        self._route(self.engine.advance(now_ms), None, batch)
        for item in items:
            if type(item) is _Execute and isinstance(item.request, HEADS_QUERIES):
                answer = self._heads_query(item)
                if answer is None:  # a head: answered once signed, below
                    answer = _Answer(item.conn, {"id": item.request.id})
                    head_answers.append(answer)
                batch.deliveries.append(answer)
                intake.done(item.conn)
            elif type(item) is _Execute:
                outputs = self.engine.handle(item.request, now_ms, item.verified)
                if not self._route(outputs, item.conn, batch, item.received) and isinstance(
                    item.request, CANCEL_REQUESTS
                ):
                    self._hold(item.conn, item.request)
                intake.done(item.conn)
            elif isinstance(item, ForcedNote):
                self._force(item, now_ms, batch)
            elif isinstance(item, StopOrders):
                self._route(self.engine.stop_accepting_orders(item.reason, now_ms), None, batch)
            else:
                batch.deliveries.append(item)
                intake.done(item.conn)
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
        if head_answers:  # the head's JSON as its pushes and the meta row carry it
            signed = msgspec.Raw(write.head_json)
            for answer in head_answers:
                wire = answer.message
                assert isinstance(wire, dict)
                request_id = wire.pop("id", None)
                wire.update(success_wire(HeadQuery.REQUEST_TYPE, signed, request_id))

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

    def _route(
        self,
        outputs: list[Any],
        conn: _Connection | None,
        batch: _Batch,
        received: float | None = None,
    ) -> bool:
        """Sort one engine call's outputs into ``batch``; true if it answered ``conn``.

        Replies of :meth:`Engine.advance` (``conn`` is ``None``) answer cancels a policy
        held: they go to the client that sent the cancel, found by its signature. An
        execute's failure is charged to its connection's reject allowance (its address's
        was reserved before it was verified, and is refunded on success).
        """
        answered = False
        for out in outputs:
            if isinstance(out, Reply):
                target = conn if conn is not None else self._held.pop(out.wire["signature"], None)
                if conn is None and target is not None:
                    target.held.discard(out.wire["signature"])
                if target is not None:
                    if out.to is not None:  # an execute's: its reject was reserved
                        if out.wire["status"] == "failure":
                            target.rejects.take()
                        else:
                            target.shared.rejects.refund()
                    batch.deliveries.append(_Answer(target, out, received))
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
                durable_at = trio.current_time() if self.metrics is not None else 0.0
                flush: set[_Connection] = set()
                for batch in waiting:
                    if batch.log is not None and self.heads is not None:
                        self.heads.committed(batch.log)
                    for item in batch.deliveries:
                        self._deliver(item, flush, durable_at)
                    if batch.log is not None and batch.log.head is not None:
                        self._push_head(batch.log.head_json, flush)
                self._shed()
                for conn in flush:
                    self._flush(conn)
        for conn in list(self._connections):
            conn.finish()

    async def _commit(self, entries: list[JournalEntry], logs: list[LogWrite]) -> None:
        """Make ``entries`` (and what they add to the log) durable; a failure is a fault,
        logged here with its cause."""
        started = trio.current_time() if self.metrics is not None else 0.0
        try:
            if self.journal_process is not None:
                await self.journal_process.append_many(entries, logs)
            else:
                await trio.to_thread.run_sync(self.journal.append_many, entries, logs)
            if self.metrics is not None:
                self.metrics.committed(trio.current_time() - started, len(entries))
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

    def _deliver(
        self,
        item: _Answer | _Stream | _Publish | ForcedNote,
        flush: set[_Connection],
        durable_at: float,
    ) -> None:
        """Queue ``item``'s messages; the connections with answers and pushes queued are
        added to ``flush``. ``durable_at``: when the commit before it returned."""
        if isinstance(item, _Publish):
            self._streams.publish(item, flush)
        elif isinstance(item, _Answer):
            if item.conn.is_open:
                item.conn.send(item.payload(), wake=False)
                flush.add(item.conn)
            if self.metrics is not None:
                self.metrics.answered(item.wire, item.received, durable_at)
        elif isinstance(item, _Stream):
            wire = self._serve_stream(item)
            item.conn.send(encode_json(wire), wake=False)
            flush.add(item.conn)
            if self.metrics is not None:
                self.metrics.answered(wire, None, durable_at)
        else:
            item.done.set()

    def _flush(self, conn: _Connection) -> None:
        """Write what is queued for ``conn`` at once, in one write that does not wait,
        unless its writer is busy; what the socket does not take is the writer's.

        Everything a commit released for a client thus leaves in one system call, from
        the dispatcher, without waking the client's writer task."""
        if not conn.is_open or not conn.outbox:
            return
        if conn.write_scope is not None or conn.replays or conn.finishing:
            conn.wake.set()
            return
        outbox = conn.outbox
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        try:
            sent = os.write(conn.stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError:  # the writer meets the error and ends the connection its way
            conn.wake.set()
            return
        outbox.clear()
        conn.queued -= sent
        self._budget.give(sent)
        if sent < len(data):  # the rest waits for the socket, with the write timeout
            outbox.append(data[sent:])
            if sent:
                conn.torn = True  # a frame is cut: no close frame until it is whole
            conn.wake.set()

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

    def _push_head(self, text: bytes, flush: set[_Connection]) -> None:
        """Queue a committed head for every heads subscriber: framed once, flushed with
        the batch's answers."""
        frame = frames.text_header(len(text)) + text
        for conn in self._head_subscribers:
            conn.send_frame(frame, wake=False)
            flush.add(conn)

    def _serve_heads_stream(
        self, conn: _Connection, request: SubscribeHeads | UnsubscribeHeads
    ) -> dict[str, Any]:
        if isinstance(request, UnsubscribeHeads):
            self._head_subscribers.discard(conn)
            wire = success_wire(request.REQUEST_TYPE, {}, request.id)
        elif self.heads is None:
            error = HeadsDisabled("this operator keeps no journal heads")
            wire = failure_wire(error, request.REQUEST_TYPE, request.id)
        else:
            last = self.heads.last_head
            data = {"head": None if last is None else last.to_wire()}
            wire = success_wire(request.REQUEST_TYPE, data, request.id)
            self._head_subscribers.add(conn)
        return wire

    def _serve_stream(self, item: _Stream) -> dict[str, Any]:
        """Subscribe or unsubscribe; the answer, for the caller to send."""
        conn, request = item.conn, item.request
        if isinstance(request, SubscribeHeads | UnsubscribeHeads):
            return self._serve_heads_stream(conn, request)
        sender_hex = "0x" + request.sender.hex()
        live = request.sender in conn.subscriptions
        if isinstance(request, Unsubscribe):
            self._streams.unsubscribe(conn, request.sender)
            conn.subscriptions.discard(request.sender)
            conn.replays = collections.deque(r for r in conn.replays if r.sender != request.sender)
            return success_wire("unsubscribe", {"sender": sender_hex}, request.id)
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
            return failure_wire(error, Subscribe.REQUEST_TYPE, request.id)
        data = {
            "sender": sender_hex,
            "after_seq": str(request.after_seq),
            "replayed": replayed,
            "domain": domain_to_json(self.engine.domain),  # the client checks it before signing
            "operator": self.engine.signer.checksum_address,
        }
        self._streams.unsubscribe(conn, request.sender)  # a re-subscribe replays again
        conn.subscriptions.add(request.sender)
        conn.replays = collections.deque(replaying)
        conn.replays.append(_Replay(request.sender, request.after_seq))
        return success_wire("subscribe", data, request.id)
