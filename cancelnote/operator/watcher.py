"""The chain watcher: answers every forced cancel of the operator's court (protocol §9.3).

It polls the court's logs from the last block it finished (a cursor kept in the journal's
SQLite file, table ``watcher_cursor``) to the head. For each ``CancelRequested`` still
open it asks the engine for the note (through the server's inbox, so the engine keeps a
single caller), waits until that note is **durable** in the journal, and submits it with
``answerCancel``. The cursor moves past a block range only once every request in it was
answered (or found answered), so a crash or a failed transaction answers again on the
next run: the engine re-sends the same note (one note per order, forever) and the court
refuses a second answer harmlessly.

An order the engine never accepted is answered too (a note with nothing filled), because
an unanswered request is a default whoever's fault it is: its ``Order`` is read from the
request transaction's calldata (``Chain.transaction_input``: ``eth_getTransactionByHash``).

Each poll also reads the court's ``halted()`` and ``exit_announced_at()``: once either is
set, the engine is told to stop accepting orders (:class:`~.server.StopOrders`; cancels
and forced cancels go on), which it journals, so the refusal survives a restart; the
service checks the court once more at start (:func:`.service.prepare`).

Every py-evm or HTTP call runs in a worker thread (``trio.to_thread.run_sync``): they
block, and the engine must not wait for them. Chain errors are logged and retried at the
next poll; they never stop the operator.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from eth_abi import decode as abi_decode

from cancelnote.contracts import load_artifact
from cancelnote.crypto import Signer, keccak
from cancelnote.dispute.chain import ChainError, Log, TransactionReverted
from cancelnote.dispute.court import ARTIFACT_NAME, CancelState, Court
from cancelnote.errors import MessageError
from cancelnote.messages import Order

from .server import ForcedNote, StopOrders

LOGGER = logging.getLogger("cancelnote.operator.watcher")

#: Seconds between two polls of the chain.
POLL_S = 1.0
#: Most blocks one ``get_logs`` asks for (public nodes refuse very wide ranges).
MAX_BLOCK_RANGE = 5_000
#: The court functions that open a forced cancel; each takes the ``Order`` first.
REQUEST_FUNCTIONS = ("requestCancel", "requestCancelWithFill", "requestCancelSigned")


class CursorStore:
    """The next block to scan, kept in the journal file (its own table, own connection)."""

    def __init__(self, path: str | Path, court: bytes) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS watcher_cursor (court TEXT PRIMARY KEY, next_block INTEGER)"
        )
        self._key = "0x" + court.hex()

    def load(self) -> int:
        row = self._conn.execute(
            "SELECT next_block FROM watcher_cursor WHERE court = ?", (self._key,)
        ).fetchone()
        return 0 if row is None else row[0]

    def save(self, next_block: int) -> None:
        self._conn.execute(
            "INSERT INTO watcher_cursor VALUES (?, ?)"
            " ON CONFLICT(court) DO UPDATE SET next_block = excluded.next_block",
            (self._key, next_block),
        )

    def close(self) -> None:
        self._conn.close()


def _request_decoders() -> dict[bytes, list[str]]:
    """Selector -> ABI input types of each function that opens a forced cancel."""
    decoders = {}
    for entry in load_artifact(ARTIFACT_NAME).abi:
        if entry.get("type") == "function" and entry["name"] in REQUEST_FUNCTIONS:
            kinds = [_abi_type(item) for item in entry["inputs"]]
            selector = keccak(f"{entry['name']}({','.join(kinds)})".encode())[:4]
            decoders[selector] = kinds
    return decoders


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][len('tuple') :]}"
    return item["type"]


def order_from_calldata(data: bytes) -> Order | None:
    """The ``Order`` a forced-cancel request carried, or ``None`` if ``data`` is none."""
    kinds = _request_decoders().get(data[:4])
    if kinds is None:
        return None
    try:
        order = abi_decode(kinds, data[4:])[0]
        return Order(*order)
    except (ValueError, TypeError, MessageError):
        return None


def court_stop_reason(court: Court) -> str | None:
    """Why the operator must take no new orders (blocking chain calls), or ``None``."""
    if court.halted():
        return "the court halted the operator"
    announced = court.exit_announced_at()
    if announced:
        return f"the operator announced its exit at {announced}"
    return None


class ChainWatcher:
    """Follows one court and answers its forced cancels with the engine's notes.

    Args:
        court: the operator's court.
        signer: the operator key; it pays for ``answerCancel`` (and ``depositBond``).
        open_inbox: gives a clone of the server's inbox (:meth:`OperatorServer.inbox`);
            :meth:`run` opens one and closes it when it ends.
        cursor: where the next block to scan is kept.
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
    ) -> None:
        self.court = court
        self.signer = signer
        self._open_inbox = open_inbox
        self._inbox: trio.MemorySendChannel[Any] | None = None
        self._cursor = cursor
        self._poll_s = poll_s
        self.answered = 0  # answerCancel transactions this watcher got mined
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
        """Poll and answer until cancelled; chain errors are logged and retried."""
        async with self._open_inbox() as self._inbox:
            while True:
                try:
                    await self.poll()
                except ChainError as exc:
                    LOGGER.warning("chain_unreachable", extra={"fields": {"error": str(exc)}})
                await trio.sleep(self._poll_s)

    async def poll(self) -> int:
        """Scan from the cursor to the head once; returns how many requests were answered."""
        head = await trio.to_thread.run_sync(self.court.chain.block_number)
        start = await trio.to_thread.run_sync(self._cursor.load)
        answered = 0
        while start <= head:
            end = min(head, start + MAX_BLOCK_RANGE - 1)
            logs = await trio.to_thread.run_sync(
                self.court.chain.get_logs, self.court.address, start, end
            )
            for log in logs:
                answered += await self._on_log(log)
            await trio.to_thread.run_sync(self._cursor.save, end + 1)  # an fsync
            start = end + 1
        await self._check_court_state()
        return answered

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

    async def _on_log(self, log: Log) -> int:
        event = self.court.decode_log(log)
        if event.name != "CancelRequested":
            return 0
        digest: bytes = event.args["digest"]
        status = await trio.to_thread.run_sync(self.court.cancel_status, digest)
        if status.state is not CancelState.REQUESTED:
            return 0  # answered (perhaps by us before a restart) or already defaulted
        forced = await self._durable_note(digest, None)
        if forced.error is not None:
            order = await self._order_of(log)
            if order is not None:
                forced = await self._durable_note(digest, order)
        if forced.note is None:
            # Loud: this request will default, and the bond pays for it.
            LOGGER.error(
                "forced_cancel_unanswerable",
                extra={"fields": {"digest": "0x" + digest.hex(), "error": str(forced.error)}},
            )
            return 0
        try:
            receipt = await trio.to_thread.run_sync(
                self.court.answer_cancel, self.signer, forced.note, forced.signature
            )
        except TransactionReverted as exc:
            LOGGER.warning(
                "answer_refused",
                extra={"fields": {"digest": "0x" + digest.hex(), "reason": exc.reason}},
            )
            return 0
        self.answered += 1
        LOGGER.info(
            "forced_cancel_answered",
            extra={
                "fields": {
                    "digest": "0x" + digest.hex(),
                    "note_seq": forced.note.seq,
                    "deadline": status.deadline,
                    "block": receipt.block_number,
                }
            },
        )
        return 1

    async def _durable_note(self, digest: bytes, order: Order | None) -> ForcedNote:
        if self._inbox is None:
            raise RuntimeError("the watcher answers only while it runs")
        forced = ForcedNote(digest, order)
        await self._inbox.send(forced)
        await forced.done.wait()
        return forced

    async def _order_of(self, log: Log) -> Order | None:
        data = await trio.to_thread.run_sync(
            self.court.chain.transaction_input, log.transaction_hash
        )
        return None if data is None else order_from_calldata(data)
