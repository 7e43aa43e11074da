"""The chain watcher: answers every forced cancel of the operator's court (protocol §9.3).

An honest operator must be able to answer every forced cancel, whatever anyone puts on
the chain (protocol v2, guarantee 1), so the watcher trusts nothing but the court's own
``CancelRequested`` event: the event carries the whole order, its digest, the owner and
the request's block time, and the watcher never reads the request's transaction (a
contract's or a relayer's call, or calldata with dirty ABI padding, would otherwise
decide whether the operator can answer).

Two steps per poll, each durable in the journal's SQLite file (its own tables, its own
connection):

1. **Read.** The court's ``CancelRequested`` logs from the cursor (``watcher_cursor``) to
   the head, and again the last :data:`REORG_DEPTH` blocks before it (a request a reorg
   moved into a block already scanned), are decoded and kept as requests
   (``watcher_requests``, keyed by digest: a request seen twice, after a reorg or a
   restart, is one request); then the cursor moves past the range.
2. **Answer.** For each open request the watcher asks the engine for the note (through the
   server's inbox, so the engine keeps a single caller; the cancel takes effect at the
   request's block time), waits until that note is **durable** in the journal, and
   submits it with ``answerCancel``. A request leaves the table once the court says it is
   settled (answered, perhaps by us before a restart, or defaulted), or once its deadline
   passed unanswered (logged loudly: a default).

Every failure is contained to its request and retried at the next poll until the deadline:
an exception is logged with the request and the watcher carries on, so neither a hostile
request nor a chain outage stops the operator's off-chain service. Each poll also reads
the court's ``halted()`` and ``exit_announced_at()``: once either is set, the engine is
told to stop accepting orders (:class:`~.server.StopOrders`; cancels and forced cancels go
on), which it journals, so the refusal survives a restart; the service checks the court
once more at start (:func:`.service.prepare`).

Every py-evm or HTTP call runs in a worker thread (``trio.to_thread.run_sync``): they
block, and the engine must not wait for them; each wait for the engine has a timeout.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from cancelnote.crypto import Signer
from cancelnote.dispute.chain import Log, TransactionReverted
from cancelnote.dispute.court import CancelState, Court, ForcedCancel
from cancelnote.messages import Order

from .server import ForcedNote, StopOrders

LOGGER = logging.getLogger("cancelnote.operator.watcher")

#: Seconds between two polls of the chain.
POLL_S = 1.0
#: Most blocks one ``get_logs`` asks for (public nodes refuse very wide ranges).
MAX_BLOCK_RANGE = 5_000
#: Longest wait for the engine's durable note (then the request is retried next poll).
NOTE_TIMEOUT_S = 10.0
#: Most open requests answered per poll, oldest deadline first (the rest wait a poll).
MAX_ANSWERS_PER_POLL = 256
#: Blocks before the cursor read again at every poll: a request a reorg re-mined there.
REORG_DEPTH = 12


@attrs.frozen
class OpenRequest:
    """A forced cancel read from the court and not yet settled."""

    digest: bytes
    request_id: int
    order: Order
    requested_at: int
    deadline: int


class CursorStore:
    """The next block to scan and the open requests, kept in the journal file.

    Its own tables and its own connection (``synchronous=FULL``: a request is kept, and
    the cursor moved past it, only once both are on disk).
    """

    def __init__(self, path: str | Path, court: bytes) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS watcher_cursor (court TEXT PRIMARY KEY, next_block INTEGER)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS watcher_requests (court TEXT NOT NULL,"
            " digest TEXT NOT NULL, request_id INTEGER NOT NULL, order_json TEXT NOT NULL,"
            " requested_at INTEGER NOT NULL, deadline INTEGER NOT NULL,"
            " closed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (court, digest))"
        )
        self._key = "0x" + court.hex()

    def load(self) -> int:
        row = self._conn.execute(
            "SELECT next_block FROM watcher_cursor WHERE court = ?", (self._key,)
        ).fetchone()
        return 0 if row is None else row[0]

    def save(self, next_block: int, found: Sequence[OpenRequest] = ()) -> list[OpenRequest]:
        """Keep ``found`` (idempotently: a request kept before, open or closed, is not kept
        again) and move the cursor, in one transaction; returns the requests that were new."""
        new = []
        with self._conn:
            self._conn.execute("BEGIN")
            for r in found:
                cursor = self._conn.execute(
                    "INSERT OR IGNORE INTO watcher_requests"
                    " (court, digest, request_id, order_json, requested_at, deadline)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        self._key,
                        "0x" + r.digest.hex(),
                        r.request_id,
                        json.dumps(r.order.to_wire()),
                        r.requested_at,
                        r.deadline,
                    ),
                )
                if cursor.rowcount:
                    new.append(r)
            self._conn.execute(
                "INSERT INTO watcher_cursor VALUES (?, ?)"
                " ON CONFLICT(court) DO UPDATE SET next_block = excluded.next_block",
                (self._key, next_block),
            )
        return new

    def open_requests(self, limit: int = MAX_ANSWERS_PER_POLL) -> list[OpenRequest]:
        """The open requests, the most urgent first."""
        rows = self._conn.execute(
            "SELECT digest, request_id, order_json, requested_at, deadline"
            " FROM watcher_requests WHERE court = ? AND closed = 0"
            " ORDER BY deadline, request_id LIMIT ?",
            (self._key, limit),
        ).fetchall()
        return [
            OpenRequest(
                bytes.fromhex(digest[2:]), request_id, Order.from_wire(json.loads(order)), at, end
            )
            for digest, request_id, order, at, end in rows
        ]

    def close_request(self, digest: bytes) -> None:
        """The request is settled (or past its deadline): never answered again."""
        with self._conn:
            self._conn.execute(
                "UPDATE watcher_requests SET closed = 1 WHERE court = ? AND digest = ?",
                (self._key, "0x" + digest.hex()),
            )

    def close(self) -> None:
        self._conn.close()


def court_stop_reason(court: Court) -> str | None:
    """Why the operator must take no new orders (blocking chain calls), or ``None``."""
    if court.halted():
        return "the court halted the operator"
    announced = court.exit_announced_at()
    if announced:
        return f"the operator announced its exit at {announced}"
    return None


def _log_fields(log: Log) -> dict[str, Any]:
    return {
        "block": log.block_number,
        "log_index": log.log_index,
        "tx": "0x" + log.transaction_hash.hex(),
    }


def _request_fields(request: OpenRequest) -> dict[str, Any]:
    return {
        "digest": "0x" + request.digest.hex(),
        "request_id": request.request_id,
        "deadline": request.deadline,
    }


class ChainWatcher:
    """Follows one court and answers its forced cancels with the engine's notes.

    Args:
        court: the operator's court.
        signer: the operator key; it pays for ``answerCancel`` (and ``depositBond``).
        open_inbox: gives a clone of the server's inbox (:meth:`OperatorServer.inbox`);
            :meth:`run` opens one and closes it when it ends.
        cursor: where the next block to scan and the open requests are kept.
        poll_s: seconds between polls.
    """

    def __init__(
        self,
        court: Court,
        signer: Signer,
        open_inbox: Callable[[], trio.MemorySendChannel[Any]],
        cursor: CursorStore,
        *,
        poll_s: float = POLL_S,
        note_timeout_s: float = NOTE_TIMEOUT_S,
    ) -> None:
        self.court = court
        self.signer = signer
        self._open_inbox = open_inbox
        self._inbox: trio.MemorySendChannel[Any] | None = None
        self._cursor = cursor
        self._poll_s = poll_s
        self._note_timeout_s = note_timeout_s
        self._requested_topic = court.topic("CancelRequested")
        self.answered = 0  # answerCancel transactions this watcher got mined
        self.failures = 0  # requests (or polls) that raised, each logged
        self.stopped_orders = False  # whether this watcher told the engine to refuse orders

    async def post_bond(self, wei: int) -> None:
        """Deposit ``wei`` into the operator's bond (at start, if asked)."""
        receipt = await trio.to_thread.run_sync(self.court.deposit_bond, self.signer, wei)
        bond = await trio.to_thread.run_sync(self.court.bond)
        LOGGER.info(
            "bond_posted",
            extra={"fields": {"wei": wei, "bond": bond, "block": receipt.block_number}},
        )

    async def run(self) -> None:
        """Poll and answer until cancelled; every failure is logged and retried."""
        async with self._open_inbox() as self._inbox:
            while True:
                try:
                    await self.poll()
                except Exception as exc:  # the chain, the disk: retried at the next poll
                    self.failures += 1
                    LOGGER.warning(
                        "watcher_poll_failed",
                        extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}},
                    )
                await trio.sleep(self._poll_s)

    async def poll(self) -> int:
        """Read new requests, then answer the open ones; returns how many were answered.

        A failure to read (a node refusing ``eth_getLogs``, say) does not hold up the
        answers to requests already kept: it is logged and the reading retried next poll.
        """
        try:
            await self._read_requests()
        except Exception as exc:
            self.failures += 1
            LOGGER.warning(
                "watcher_read_failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}}
            )
        answered = 0
        now_s = await trio.to_thread.run_sync(self.court.chain.timestamp)
        for request in await trio.to_thread.run_sync(self._cursor.open_requests):
            try:
                answered += await self._answer(request, now_s)
            except Exception as exc:  # contained: logged with its request, retried next poll
                self.failures += 1
                LOGGER.error(
                    "forced_cancel_failed",
                    exc_info=True,
                    extra={
                        "fields": {**_request_fields(request), "error": f"{type(exc).__name__}"}
                    },
                )
        await self._check_court_state()
        return answered

    async def _read_requests(self) -> None:
        """Keep every new ``CancelRequested`` as an open request and move the cursor."""
        head = await trio.to_thread.run_sync(self.court.chain.block_number)
        start = max(0, await trio.to_thread.run_sync(self._cursor.load) - REORG_DEPTH)
        while start <= head:
            end = min(head, start + MAX_BLOCK_RANGE - 1)
            logs = await trio.to_thread.run_sync(
                self.court.chain.get_logs,
                self.court.address,
                start,
                end,
                (self._requested_topic,),
            )
            read = {r.digest: (r, log) for log in logs if (r := self._read(log)) is not None}
            found = [r for r, _ in read.values()]
            new = await trio.to_thread.run_sync(self._cursor.save, end + 1, found)  # an fsync
            for request in new:
                fields = {**_log_fields(read[request.digest][1]), **_request_fields(request)}
                LOGGER.info("forced_cancel_seen", extra={"fields": fields})
            start = end + 1

    def _read(self, log: Log) -> OpenRequest | None:
        """The request a log announces, or ``None`` (logged) if it cannot be read."""
        try:
            event = ForcedCancel.from_event(self.court.decode_log(log))
            if event.order.digest(self.court.domain) != event.digest:
                raise ValueError("the logged order does not hash to the logged digest")
        except Exception as exc:  # not this court's ABI: nothing to answer from
            self.failures += 1
            LOGGER.error(
                "forced_cancel_unreadable",
                extra={"fields": {**_log_fields(log), "error": f"{type(exc).__name__}: {exc}"}},
            )
            return None
        return OpenRequest(
            event.digest, event.request_id, event.order, event.requested_at, event.deadline
        )

    async def _answer(self, request: OpenRequest, now_s: int) -> int:
        """Answer one open request; 1 if this call got the answer mined."""
        status = await trio.to_thread.run_sync(self.court.cancel_status, request.digest)
        if status.state is not CancelState.REQUESTED:  # answered (by us, before?) or defaulted
            await trio.to_thread.run_sync(self._cursor.close_request, request.digest)
            if status.state is CancelState.DEFAULTED:
                LOGGER.error("forced_cancel_defaulted", extra={"fields": _request_fields(request)})
            return 0
        if now_s > request.deadline:
            LOGGER.error("forced_cancel_missed", extra={"fields": _request_fields(request)})
            await trio.to_thread.run_sync(self._cursor.close_request, request.digest)
            return 0
        forced = await self._durable_note(request)
        if forced is None or forced.note is None:
            reason = "timed out" if forced is None else str(forced.error)
            LOGGER.error(
                "forced_cancel_unanswered",
                extra={"fields": {**_request_fields(request), "error": reason}},
            )
            return 0
        try:
            receipt = await trio.to_thread.run_sync(
                self.court.answer_cancel,
                self.signer,
                request.order,
                forced.note,
                forced.signature,
            )
        except TransactionReverted as exc:
            LOGGER.warning(
                "answer_refused",
                extra={"fields": {**_request_fields(request), "reason": exc.reason}},
            )
            return 0
        await trio.to_thread.run_sync(self._cursor.close_request, request.digest)
        self.answered += 1
        LOGGER.info(
            "forced_cancel_answered",
            extra={
                "fields": {
                    **_request_fields(request),
                    "note_seq": forced.note.seq,
                    "block": receipt.block_number,
                }
            },
        )
        return 1

    async def _durable_note(self, request: OpenRequest) -> ForcedNote | None:
        """The engine's note for ``request``, once durable; ``None`` if that took too long."""
        if self._inbox is None:
            raise RuntimeError("the watcher answers only while it runs")
        forced = ForcedNote(request.digest, request.order, request.requested_at * 1000)
        with trio.move_on_after(self._note_timeout_s):
            await self._inbox.send(forced)
            await forced.done.wait()
            return forced
        return None

    async def _check_court_state(self) -> None:
        """Stop new orders once the court is halted or the exit announced (protocol §13)."""
        if self.stopped_orders:
            return
        reason = await trio.to_thread.run_sync(court_stop_reason, self.court)
        if reason is None:
            return
        if self._inbox is None:
            raise RuntimeError("the watcher polls only while it runs")
        await self._inbox.send(StopOrders(reason))
        self.stopped_orders = True
        LOGGER.warning("orders_stopped", extra={"fields": {"reason": reason}})
