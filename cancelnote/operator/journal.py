"""The operator's journal: an append-only SQLite log of every state change, keyed by seq.

Durable before visible (DESIGN §3.3): the server appends a batch's entries and commits
them before any reply or push of that batch leaves. The engine applies the *same* entry
objects to itself that it hands out for the journal, so replaying the journal into a
fresh engine (:meth:`~cancelnote.operator.engine.Engine.from_journal`) rebuilds exactly
the state it had, and a note is re-sent byte for byte, never re-signed differently.

Rows: ``journal(seq INTEGER PRIMARY KEY, kind TEXT, body TEXT)``; ``body`` is compact
JSON of the entry's fields (messages in their wire form, signatures and digests 0x-hex).
Fills and notes carry their row's ``seq`` inside the signed message. A ``meta`` table
binds the file to one operator address and one EIP-712 domain.

fsync policy: WAL mode with ``synchronous=FULL`` (the default) fsyncs the WAL at every
commit, so a committed batch survives power loss. ``synchronous=NORMAL`` is allowed
explicitly: commits then survive a crash of the process but the last ones may be lost on
power loss, and a lost note that a client already holds would look like equivocation
after a restart; use it only where the journal is disposable (simulations, benchmarks).
Group commit: :meth:`Journal.append_many` writes any number of entries in one
transaction and one fsync.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from functools import cache, cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs

from cancelnote.crypto import to_checksum
from cancelnote.errors import CancelnoteError
from cancelnote.messages import (
    CancellationNote,
    Domain,
    Fill,
    Order,
    signature_to_wire,
)

from .api import CancelRequest, request_from_wire, request_to_wire
from .errors import JournalCorrupt, JournalMismatch
from .lifecycle import CancellationType

#: Bumped whenever a row's meaning changes; a journal of another format is refused.
FORMAT_VERSION = "1"


def _typed(raw: object, kind: type) -> Any:
    if type(raw) is not kind:
        raise TypeError(f"expected {kind.__name__}, got {type(raw).__name__}")
    return raw


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _unhex(raw: object) -> bytes:
    if not isinstance(raw, str) or not raw.startswith("0x"):
        raise ValueError(f"expected 0x-hex, got {raw!r}")
    return bytes.fromhex(raw[2:])


# Field codecs, (to JSON, from JSON), by the field's annotation.
_CODECS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "int": (lambda v: v, lambda raw: _typed(raw, int)),
    "bool": (lambda v: v, lambda raw: _typed(raw, bool)),
    "str": (lambda v: v, lambda raw: _typed(raw, str)),
    "bytes": (_hex, _unhex),
    "Order": (Order.to_wire, Order.from_wire),
    "Fill": (Fill.to_wire, Fill.from_wire),
    "CancellationNote": (CancellationNote.to_wire, CancellationNote.from_wire),
    "CancelRequest": (request_to_wire, request_from_wire),
    "CancellationType": (lambda v: v.value, CancellationType),
}


_encode_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


@cache
def _encoders(cls: type) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """``(field, to-JSON codec)`` of an entry class, all fields but ``seq``."""
    return tuple((f.name, _CODECS[f.type][0]) for f in attrs.fields(cls) if f.name != "seq")


@cache
def _unsigned_encoders(cls: type) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """:func:`_encoders` of a signed entry class but its message and signature."""
    return tuple((n, e) for n, e in _encoders(cls) if n not in ("signature", cls.MESSAGE))


class _Entry:
    """What every entry shares: a seq, the engine time it was made at, a JSON body."""

    __slots__ = ()
    KIND: ClassVar[str]
    seq: int
    at_ms: int

    def body(self) -> dict[str, Any]:
        return {name: encode(getattr(self, name)) for name, encode in _encoders(type(self))}

    def body_json(self) -> str:
        return _encode_json(self.body())

    @classmethod
    def from_body(cls, seq: int, body: dict[str, Any]) -> Any:
        values = {
            f.name: _CODECS[f.type][1](body[f.name]) for f in attrs.fields(cls) if f.name != "seq"
        }
        return cls(seq=seq, **values)


@attrs.frozen
class OrderAccepted(_Entry):
    """An order passed every check; it matches and rests from here."""

    KIND: ClassVar[str] = "order"
    seq: int
    at_ms: int
    product_id: int
    order: Order
    signature: bytes
    weight: int  # rate-limit weight charged (0 inside a cancel_and_place)


@attrs.frozen
class OrderForced(_Entry):
    """An on-chain ``requestCancel`` named an order the engine never accepted.

    The order is recorded (off the book, never matchable) only so that it can be
    answered with a note and never placed afterwards.
    """

    KIND: ClassVar[str] = "forced"
    seq: int
    at_ms: int
    order: Order


@attrs.frozen
class CancelAccepted(_Entry):
    """A cancel request passed every check; it is processed at ``process_at_ms``.

    ``process_at_ms > at_ms`` only when a policy holds the cancel (``Delay``); such a
    request is released by a later :class:`CancelReleased`.
    """

    KIND: ClassVar[str] = "cancel"
    seq: int
    at_ms: int
    request: CancelRequest
    process_at_ms: int
    weight: int


@attrs.frozen
class CancelReleased(_Entry):
    """A held cancel request (accepted at ``request_seq``) is processed now."""

    KIND: ClassVar[str] = "release"
    seq: int
    at_ms: int
    request_seq: int


@attrs.frozen
class Matched(_Entry):
    """A taker crossed a resting maker; the match is in flight until ``settle_at_ms``."""

    KIND: ClassVar[str] = "match"
    seq: int
    at_ms: int
    maker: bytes
    taker: bytes
    amount: int
    price_x18: int
    settle_at_ms: int


@attrs.frozen
class _SignedEntry(_Entry):
    """An entry carrying an operator-signed message, numbered with the entry's seq."""

    MESSAGE: ClassVar[str]

    def body_json(self) -> str:
        """The body's JSON, splicing in :attr:`signed_json` rather than encoding it again.

        The signed message is the bulk of the row and its JSON is made once per note or
        fill (a server can send the same text); the other fields are joined to it.
        """
        encoders = _unsigned_encoders(type(self))
        rest = {name: encode(getattr(self, name)) for name, encode in encoders}
        return _encode_json(rest)[:-1] + "," + self.signed_json[1:]

    @property
    def signed_wire(self) -> dict[str, Any]:
        """``{"fill"|"note": wire, "signature": "0x..."}``, as replies and pushes carry it.

        Built on each use (about 2 µs), not cached: the entry lives as long as its order
        (a note is re-sent forever), and a kept dict would be most of its memory."""
        message = getattr(self, self.MESSAGE)
        return {self.MESSAGE: message.to_wire(), "signature": signature_to_wire(self.signature)}

    @cached_property
    def signed_json(self) -> str:
        """:attr:`signed_wire` as compact JSON."""
        return _encode_json(self.signed_wire)


@attrs.frozen
class FillIssued(_SignedEntry):
    """One side of a match settled: the operator signed its ``Fill``."""

    KIND: ClassVar[str] = "fill"
    MESSAGE: ClassVar[str] = "fill"
    seq: int
    at_ms: int
    fill: Fill
    signature: bytes
    match_seq: int


@attrs.frozen
class NoteIssued(_SignedEntry):
    """The operator signed a cancellation note.

    The first note of a digest is *the* note (re-sent forever); any later one is an
    adversarial policy's equivocation. ``published`` is false when a policy withholds
    the note; ``fills_after`` is how many more matches a policy let the cancelled order
    take (0 when honest).
    """

    KIND: ClassVar[str] = "note"
    MESSAGE: ClassVar[str] = "note"
    seq: int
    at_ms: int
    note: CancellationNote
    signature: bytes
    cancellation_type: CancellationType
    published: bool
    fills_after: int


@attrs.frozen
class Expired(_Entry):
    """A resting order's expiration passed; it left the book."""

    KIND: ClassVar[str] = "expire"
    seq: int
    at_ms: int
    digest: bytes


@attrs.frozen
class OrdersStopped(_Entry):
    """The operator takes no new orders from here on, forever (protocol §8.1 check 10):
    the court halted it or its exit was announced. Journaled because the court forgets an
    announced exit once the bond is withdrawn, and the operator must not forget it."""

    KIND: ClassVar[str] = "stop"
    seq: int
    at_ms: int
    reason: str


JournalEntry = (
    OrderAccepted
    | OrderForced
    | CancelAccepted
    | CancelReleased
    | Matched
    | FillIssued
    | NoteIssued
    | Expired
    | OrdersStopped
)
ENTRY_CLASSES: dict[str, type[JournalEntry]] = {
    cls.KIND: cls
    for cls in (
        OrderAccepted,
        OrderForced,
        CancelAccepted,
        CancelReleased,
        Matched,
        FillIssued,
        NoteIssued,
        Expired,
        OrdersStopped,
    )
}


def entry_to_row(entry: JournalEntry) -> tuple[int, str, str]:
    return entry.seq, entry.KIND, entry.body_json()


def entry_from_row(seq: int, kind: str, body: str) -> JournalEntry:
    """Parse one row.

    Raises:
        JournalCorrupt: unknown kind, bad JSON, or a field missing or malformed.
    """
    cls = ENTRY_CLASSES.get(kind)
    if cls is None:
        raise JournalCorrupt(f"journal row {seq}: unknown kind {kind!r}")
    try:
        return cls.from_body(seq, json.loads(body))
    except (CancelnoteError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise JournalCorrupt(f"journal row {seq} ({kind}): {type(exc).__name__}: {exc}") from None


Synchronous = Literal["FULL", "NORMAL"]


class Journal:
    """An open journal file. One caller at a time (the operator's server), any thread.

    Use :meth:`open`; the constructor only wraps an already configured connection.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(
        cls,
        path: str | Path,
        domain: Domain,
        operator: bytes,
        synchronous: Synchronous = "FULL",
    ) -> Journal:
        """Open (or create) the journal of ``operator`` (20-byte address) in ``domain``.

        Raises:
            JournalMismatch: the file belongs to another operator, domain or format.
            ValueError: ``synchronous`` is neither ``"FULL"`` nor ``"NORMAL"``.
        """
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        # One writer at a time, but not necessarily the opening thread (a trio server
        # commits from trio.to_thread workers).
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS journal"
            " (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, body TEXT NOT NULL)"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        expected = {
            "format": FORMAT_VERSION,
            "operator": to_checksum(operator),
            "domain": json.dumps(domain.to_wire(), sort_keys=True),
        }
        found = dict(conn.execute("SELECT key, value FROM meta"))
        if not found:
            with conn:
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO meta VALUES (?, ?)", expected.items())
        elif found != expected:
            conn.close()
            raise JournalMismatch(f"journal {path} was written for {found}, not {expected}")
        return cls(conn)

    def append_many(self, entries: Iterable[JournalEntry]) -> None:
        """Write ``entries`` in one transaction (one fsync): group commit.

        Raises:
            JournalCorrupt: a seq is already taken (the engine and journal disagree).
        """
        rows = [entry_to_row(entry) for entry in entries]
        if not rows:
            return
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany("INSERT INTO journal VALUES (?, ?, ?)", rows)
        except sqlite3.IntegrityError as exc:
            raise JournalCorrupt(f"journal append of seq {rows[0][0]}..: {exc}") from None

    def entries(self) -> Iterator[JournalEntry]:
        """Every entry in seq order."""
        rows = self._conn.execute("SELECT seq, kind, body FROM journal ORDER BY seq")
        for seq, kind, body in rows:
            yield entry_from_row(seq, kind, body)

    def last_seq(self) -> int:
        (seq,) = self._conn.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()
        return seq

    def close(self) -> None:
        self._conn.close()
