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

The transparency log (protocol §21): entry ``seq`` is also leaf ``seq`` of an RFC 9162
Merkle log (:mod:`cancelnote.transparency`; leaf 0 is the genesis leaf), whose complete
subtrees live in a ``tree`` table beside the rows, with the signed head of the log's
latest state in ``meta``: written by :meth:`Journal.append_many` in the transaction of the
entries they cover (:class:`LogWrite`), so a head is durable with what it commits to, and
a restart rebuilds nothing (:class:`~cancelnote.operator.heads.HeadLog` reads the tree's
border and checks every leaf against its row as the journal is replayed). A journal
written without a log gets one when a log is first kept (built once from the rows).

fsync policy: WAL mode with ``synchronous=FULL`` (the default) fsyncs the WAL at every
commit, so a committed batch survives power loss. ``synchronous=NORMAL`` is allowed
explicitly: commits then survive a crash of the process but the last ones may be lost on
power loss, and a lost note that a client already holds would look like equivocation
after a restart; use it only where the journal is disposable (simulations, benchmarks).
Group commit: :meth:`Journal.append_many` writes any number of entries in one
transaction and one fsync.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cache, cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs

from cancelnote.api import CancelRequest, request_from_wire, request_to_wire
from cancelnote.crypto import keccak, to_checksum
from cancelnote.errors import CancelnoteError
from cancelnote.messages import (
    CancellationNote,
    Domain,
    Fill,
    Match,
    Order,
    check_containers,
    signature_to_wire,
)
from cancelnote.transparency import Leaf, LeafKind, SignedHead

from .errors import JournalCorrupt, JournalMismatch
from .lifecycle import CancellationType

#: Bumped whenever a row's meaning changes; a journal of another format is refused.
FORMAT_VERSION = "2"


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

    @property
    def match(self) -> Match:
        """What the match's leaf commits to."""
        return Match(self.maker, self.taker, self.amount, self.price_x18, self.settle_at_ms)


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


#: Each entry kind's leaf of the log: its kind, time, ref and content (a struct hash).
_LEAVES: dict[type, Callable[[Any], Leaf]] = {
    OrderAccepted: lambda e: Leaf(LeafKind.ORDER, e.at_ms, 0, e.order.struct_hash()),
    OrderForced: lambda e: Leaf(LeafKind.FORCED, e.at_ms, 0, e.order.struct_hash()),
    CancelAccepted: lambda e: Leaf(LeafKind.CANCEL, e.at_ms, 0, e.request.tx.struct_hash()),
    CancelReleased: lambda e: Leaf(LeafKind.RELEASE, e.at_ms, e.request_seq, bytes(32)),
    Matched: lambda e: Leaf(LeafKind.MATCH, e.at_ms, 0, e.match.struct_hash()),
    # A fill's leaf is stamped with the fill's own time (the court reads it from the fill).
    FillIssued: lambda e: Leaf(
        LeafKind.FILL, e.fill.timestamp_ms, e.match_seq, e.fill.struct_hash()
    ),
    NoteIssued: lambda e: Leaf(LeafKind.NOTE, e.at_ms, 0, e.note.struct_hash()),
    Expired: lambda e: Leaf(LeafKind.EXPIRE, e.at_ms, 0, e.digest),
    OrdersStopped: lambda e: Leaf(LeafKind.STOP, e.at_ms, 0, keccak(e.reason.encode())),
}
#: Leaf kinds the ``locate`` query finds by content: what a client signed (its orders and
#: its cancels), whose seq no message it receives carries.
LOCATED_KINDS = frozenset({LeafKind.ORDER, LeafKind.FORCED, LeafKind.CANCEL})


def log_leaf(entry: JournalEntry) -> Leaf:
    """The leaf of the log at ``entry.seq``."""
    return _LEAVES[type(entry)](entry)


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
        check_containers(body)
        return cls.from_body(seq, json.loads(body))
    except (CancelnoteError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise JournalCorrupt(f"journal row {seq} ({kind}): {type(exc).__name__}: {exc}") from None


Synchronous = Literal["FULL", "NORMAL"]

# ---------------------------------------------------------------------------------------
# Integrity: a hash chain over the rows, and a seal kept outside the database.


def leaf_hash(seq: int, kind: str, body: str) -> bytes:
    """SHA-256 of one row as a log leaf (RFC 9162's ``0x00`` prefix): what a Merkle tree
    over the journal takes as leaf ``seq`` and what the chain links."""
    return hashlib.sha256(
        b"\x00" + seq.to_bytes(8, "big") + kind.encode() + b"\x00" + body.encode()
    ).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    """The chain head after a leaf: SHA-256 of the previous head and the leaf hash."""
    return hashlib.sha256(previous + leaf).digest()


def genesis_hash(meta: dict[str, str]) -> bytes:
    """The chain head of an empty journal: bound to its operator, domain and format."""
    return hashlib.sha256(b"cancelnote journal\x00" + _encode_json(meta).encode()).digest()


@attrs.frozen
class SealState:
    """What a seal records: how many entries, the last seq, the chain head after them."""

    count: int
    last_seq: int
    head: bytes
    genesis: bytes


def node_key(level: int, index: int) -> int:
    """The ``tree`` row of complete subtree ``(level, index)``: keyed by the leaf that
    completes it and then its level, so the rows' order is the order they were made."""
    return ((((index + 1) << level) - 1) << 6) | level


@attrs.frozen
class LogWrite:
    """What one commit adds to the log: the complete subtrees its leaves finished
    ``(level, index, hash)``, the leaves ``locate`` finds ``(content, seq)``, the log's size
    and root after them, and the head signed over that state (``None``: no head yet)."""

    nodes: list[tuple[int, int, bytes]]
    located: list[tuple[bytes, int]]
    size: int
    root: bytes
    head: SignedHead | None = None


@attrs.frozen
class LogState:
    """The log as the journal last committed it (size 0: no log kept yet)."""

    size: int
    root: bytes
    head: SignedHead | None


class Seal:
    """The journal's high-water mark, in a small file beside it (``<db>-seal``).

    Written after every commit, so it never says more than the database holds, and it
    outlives what the database can lose without noticing (a lost ``-wal``, a restored
    copy, rows deleted by hand). Two fixed-size slots are written in turn, each with its
    own checksum, so a write torn by a crash leaves the other slot whole; the valid slot
    with the higher count is the seal. The write is one ``pwrite`` per commit; with
    ``fsync`` it is made durable at most every :attr:`SYNC_S` seconds and at close (the
    database's own fsync already makes every commit durable: after a power cut the seal
    may say up to that much less, which is still a lower bound, never more).
    """

    SLOT = 128
    SYNC_S = 1.0
    MAGIC = b"CNSEAL01"
    _LAYOUT = struct.Struct(">8sQQ32s32s")  # magic, count, last seq, head, genesis

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self._fsync = fsync
        self._fd: int | None = None
        self._synced_at = 0.0
        self._dirty = False

    def read(self) -> SealState | None:
        """The sealed state, or ``None`` if there is no seal file.

        Raises:
            JournalCorrupt: the file exists but holds no valid slot.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        states = []
        for offset in (0, self.SLOT):
            slot = data[offset : offset + self._LAYOUT.size + 32]
            if len(slot) < self._LAYOUT.size + 32:
                continue
            fields, checksum = slot[: self._LAYOUT.size], slot[self._LAYOUT.size :]
            if hashlib.sha256(fields).digest() != checksum:
                continue
            magic, count, last_seq, head, genesis = self._LAYOUT.unpack(fields)
            if magic == self.MAGIC:
                states.append((count, last_seq, head, genesis))
        if not states:
            raise JournalCorrupt(f"seal {self.path} is damaged (no valid slot)")
        return SealState(*max(states))

    def write(self, state: SealState) -> None:
        """Record ``state`` in the slot of its count's parity (see the class docstring)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fields = self._LAYOUT.pack(
            self.MAGIC, state.count, state.last_seq, state.head, state.genesis
        )
        os.pwrite(self._fd, fields + hashlib.sha256(fields).digest(), self.SLOT * (state.count % 2))
        self._dirty = True
        if self._fsync and time.monotonic() - self._synced_at >= self.SYNC_S:
            self.sync()

    def sync(self) -> None:
        """Make the last write durable."""
        if self._fd is not None and self._dirty:
            os.fdatasync(self._fd)
            self._synced_at = time.monotonic()
            self._dirty = False

    def close(self) -> None:
        if self._fd is not None:
            if self._fsync:
                self.sync()
            os.close(self._fd)
            self._fd = None


def _refuse(path: Path, problem: str) -> JournalCorrupt:
    return JournalCorrupt(f"journal {path}: {problem}; not starting (docs/operations.md §7)")


class Journal:
    """An open journal file. One caller at a time (the operator's server), any thread.

    Use :meth:`open`; :meth:`entries` verifies the whole chain as it streams the rows.
    """

    __slots__ = ("_conn", "_count", "_genesis", "_head", "_last_seq", "_seal", "path", "timings")

    def __init__(self, conn: sqlite3.Connection, path: Path, seal: Seal, genesis: bytes) -> None:
        self._conn = conn
        self.path = path
        self._seal = seal
        self._genesis = genesis
        meta = dict(
            conn.execute("SELECT key, value FROM meta WHERE key IN ('count', 'head', 'last_seq')")
        )
        self._count = int(meta.get("count", 0))
        self._last_seq = int(meta.get("last_seq", 0))
        self._head = bytes.fromhex(meta["head"]) if "head" in meta else genesis
        #: Nanoseconds spent committing rows and writing the seal (the seal's cost).
        self.timings = {"commits": 0, "commit_ns": 0, "seal_ns": 0}

    @classmethod
    def open(
        cls,
        path: str | Path,
        domain: Domain,
        operator: bytes,
        synchronous: Synchronous = "FULL",
    ) -> Journal:
        """Open (or create) the journal of ``operator`` (20-byte address) in ``domain``.

        A journal is created only where no file is; a file that exists but is empty,
        or a missing journal whose seal says it had entries, is refused.

        Raises:
            JournalMismatch: the file belongs to another operator, domain or format.
            JournalCorrupt: the file is not a journal, or a seal says it lost entries.
            ValueError: ``synchronous`` is neither ``"FULL"`` nor ``"NORMAL"``.
        """
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        path = Path(path)
        expected = {
            "format": FORMAT_VERSION,
            "operator": to_checksum(operator),
            "domain": json.dumps(domain.to_wire(), sort_keys=True),
        }
        genesis = genesis_hash(expected)
        seal = Seal(path.with_name(path.name + "-seal"), synchronous == "FULL")
        sealed = seal.read()
        exists = path.exists()
        if exists and path.stat().st_size == 0:
            raise _refuse(path, "the file is empty (a new journal is made only where none is)")
        if not exists and sealed is not None and sealed.count:
            raise _refuse(
                path,
                f"the file is missing but its seal says {sealed.count} entries"
                f" (last seq {sealed.last_seq})",
            )
        try:
            # One writer at a time, but not necessarily the opening thread (a trio server
            # commits from trio.to_thread workers).
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _refuse(path, f"cannot be opened: {exc}") from None
        try:
            found = cls._prepare(conn, expected, exists)
        except sqlite3.Error as exc:
            conn.close()
            raise _refuse(path, f"is not a readable journal ({exc})") from None
        if found != expected:
            conn.close()
            raise JournalMismatch(f"journal {path} was written for {found}, not {expected}")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        journal = cls(conn, path, seal, genesis)
        if sealed is None:
            if journal._count:
                conn.close()
                raise _refuse(path, f"its seal {seal.path} is missing")
            seal.write(SealState(0, 0, genesis, genesis))
        elif sealed.genesis != genesis:
            conn.close()
            raise _refuse(path, f"its seal {seal.path} belongs to another journal")
        return journal

    @classmethod
    def open_readonly(cls, path: str | Path) -> Journal:
        """Open an existing journal to read and verify it, whoever's it is (the operator
        and domain it binds are read from its meta); nothing is written, not even a seal.

        Raises:
            JournalCorrupt, JournalMismatch: as :meth:`open`, for a file that is not a
                journal of this format, or whose seal says it lost entries.
        """
        path = Path(path)
        seal = Seal(path.with_name(path.name + "-seal"), fsync=False)
        sealed = seal.read()
        if not path.exists() or path.stat().st_size == 0:
            what = "missing" if not path.exists() else "empty"
            sealed_count = f"; its seal says {sealed.count} entries" if sealed else ""
            raise _refuse(path, f"the file is {what}{sealed_count}")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        except sqlite3.Error as exc:
            raise _refuse(path, f"is not a readable journal ({exc})") from None
        binding = {key: meta.get(key, "") for key in ("format", "operator", "domain")}
        if binding["format"] != FORMAT_VERSION:
            conn.close()
            raise JournalMismatch(f"journal {path} has format {binding['format']!r}")
        genesis = genesis_hash(binding)
        if sealed is not None and sealed.genesis != genesis:
            conn.close()
            raise _refuse(path, f"its seal {seal.path} belongs to another journal")
        return cls(conn, path, seal, genesis)

    @staticmethod
    def _prepare(
        conn: sqlite3.Connection, expected: dict[str, str], existed: bool
    ) -> dict[str, str]:
        """Set WAL mode, make the tables of a new journal, return its binding meta."""
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if existed and "meta" not in tables:
            raise sqlite3.DatabaseError("no meta table: not a cancelnote journal")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
            " body TEXT NOT NULL, chain BLOB NOT NULL)"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tree (node INTEGER PRIMARY KEY, hash BLOB NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS located (content BLOB PRIMARY KEY, seq INTEGER NOT NULL)"
            " WITHOUT ROWID"
        )
        found = dict(conn.execute("SELECT key, value FROM meta"))
        if not found:
            with conn:
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO meta VALUES (?, ?)", expected.items())
            return expected
        return {key: found.get(key, "") for key in expected}

    def append_many(self, entries: Iterable[JournalEntry], logs: Iterable[LogWrite] = ()) -> None:
        """Write ``entries`` and what they add to the log (``logs``, in order) in one
        transaction (one fsync), then seal it: group commit.

        Raises:
            JournalCorrupt: a seq is already taken, or does not follow the last one.
            sqlite3.Error, OSError: the disk failed (nothing of the batch is visible).
        """
        head, seq = self._head, self._last_seq
        rows = []
        for entry in entries:
            if entry.seq != seq + 1:
                raise JournalCorrupt(f"journal append of seq {entry.seq} after {seq}")
            seq, kind, body = entry_to_row(entry)
            head = chain_hash(head, leaf_hash(seq, kind, body))
            rows.append((seq, kind, body, head))
        logs = list(logs)
        if not rows and not logs:
            return
        count = self._count + len(rows)
        started = time.perf_counter_ns()
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                meta: list[tuple[str, str]] = []
                if rows:
                    self._conn.executemany("INSERT INTO journal VALUES (?, ?, ?, ?)", rows)
                    meta += [("count", str(count)), ("last_seq", str(seq)), ("head", head.hex())]
                for log in logs:
                    self._write_log(log)
                if logs:
                    meta += self._log_meta(
                        logs[-1], next((g.head for g in reversed(logs) if g.head), None)
                    )
                self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)
        except sqlite3.IntegrityError as exc:
            first = rows[0][0] if rows else "log"
            raise JournalCorrupt(f"journal append of seq {first}..: {exc}") from None
        committed = time.perf_counter_ns()
        if rows:
            self._head, self._last_seq, self._count = head, seq, count
            self._seal.write(SealState(count, seq, head, self._genesis))
        timings = self.timings
        timings["commits"] += 1
        timings["commit_ns"] += committed - started
        timings["seal_ns"] += time.perf_counter_ns() - committed

    def _write_log(self, log: LogWrite) -> None:
        self._conn.executemany(
            "INSERT INTO tree VALUES (?, ?)",
            [(node_key(level, index), value) for level, index, value in log.nodes],
        )
        self._conn.executemany("INSERT OR IGNORE INTO located VALUES (?, ?)", log.located)

    @staticmethod
    def _log_meta(last: LogWrite, head: SignedHead | None) -> list[tuple[str, str]]:
        meta = [("log_size", str(last.size)), ("log_root", last.root.hex())]
        if head is not None:
            meta.append(("log_head", _encode_json(head.to_wire())))
        return meta

    def log_state(self) -> LogState:
        """The log's size, root and latest head as committed.

        Raises:
            JournalCorrupt: the log's meta is unreadable.
        """
        meta = dict(
            self._conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('log_size', 'log_root', 'log_head')"
            )
        )
        try:
            head = meta.get("log_head")
            return LogState(
                int(meta.get("log_size", 0)),
                bytes.fromhex(meta.get("log_root", "")),
                None if head is None else SignedHead.from_wire(json.loads(head)),
            )
        except (CancelnoteError, ValueError) as exc:
            raise _refuse(self.path, f"its log's state is unreadable ({exc})") from None

    def tree_node(self, level: int, index: int) -> bytes:
        """A complete subtree's hash, as committed (the writer's connection: start-up only).

        Raises:
            JournalCorrupt: there is no such node (the tree lost rows).
        """
        row = self._conn.execute(
            "SELECT hash FROM tree WHERE node = ?", (node_key(level, index),)
        ).fetchone()
        if row is None:
            raise _refuse(self.path, f"its log lost the subtree ({level}, {index})")
        return row[0]

    def tree_rows(self) -> Iterator[tuple[int, bytes]]:
        """Every ``(node key, hash)`` of the tree, in the order they were made."""
        yield from self._conn.execute("SELECT node, hash FROM tree ORDER BY node")

    def reader(self) -> LogReader:
        """A read-only view of what is committed, on its own connection (for queries
        answered while the writer commits)."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        return LogReader(conn)

    def rows(self) -> Iterator[tuple[int, str, str, bytes]]:
        """Every row ``(seq, kind, body, chain)``, checked against the chain, the meta and
        the seal as it streams (the checks of the end come after the last row).

        Raises:
            JournalCorrupt: naming the first damage found (one line).
        """
        sealed = self._seal.read()
        if sealed is not None and sealed.genesis != self._genesis:
            raise _refuse(self.path, f"its seal {self._seal.path} belongs to another journal")
        head, count, previous = self._genesis, 0, 0
        try:
            cursor = self._conn.execute("SELECT seq, kind, body, chain FROM journal ORDER BY seq")
            for seq, kind, body, chain in cursor:
                if type(seq) is not int or type(kind) is not str or type(body) is not str:
                    raise _refuse(self.path, f"row {seq} has columns of the wrong type")
                if seq != previous + 1:
                    raise _refuse(self.path, f"seq {seq} follows {previous}: rows are missing")
                head = chain_hash(head, leaf_hash(seq, kind, body))
                if chain != head:
                    raise _refuse(
                        self.path,
                        f"row {seq} ({kind}) does not match its chain hash: it was changed",
                    )
                count, previous = count + 1, seq
                if sealed is not None and count == sealed.count and head != sealed.head:
                    raise _refuse(self.path, f"the first {count} rows are not the ones sealed")
                yield seq, kind, body, chain
        except sqlite3.Error as exc:
            raise _refuse(self.path, f"cannot be read ({exc})") from None
        if sealed is not None and count < sealed.count:
            raise _refuse(
                self.path,
                f"it has {count} entries but its seal says {sealed.count} (last seq"
                f" {sealed.last_seq}): entries were lost (a rollback, a restored copy or a"
                " lost -wal file)",
            )
        if (count, previous, head) != (self._count, self._last_seq, self._head):
            raise _refuse(
                self.path,
                f"it has {count} entries up to seq {previous}, its meta says {self._count}"
                f" up to {self._last_seq}: rows were deleted or added by hand",
            )

    def entries(self) -> Iterator[JournalEntry]:
        """Every entry in seq order, verified as :meth:`rows` does."""
        for seq, kind, body, _ in self.rows():
            yield entry_from_row(seq, kind, body)

    def last_seq(self) -> int:
        return self._last_seq

    @property
    def head(self) -> bytes:
        """The chain head after the last committed entry."""
        return self._head

    def close(self) -> None:
        self._conn.close()
        self._seal.close()


class LogReader:
    """Committed tree nodes, rows and located leaves, on a read-only connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def node(self, level: int, index: int) -> bytes:
        """A complete subtree's hash.

        Raises:
            KeyError: it is not committed.
        """
        row = self._conn.execute(
            "SELECT hash FROM tree WHERE node = ?", (node_key(level, index),)
        ).fetchone()
        if row is None:
            raise KeyError((level, index))
        return row[0]

    def entry(self, seq: int) -> JournalEntry:
        """The committed entry at ``seq``.

        Raises:
            KeyError: no such row. JournalCorrupt: it does not parse.
        """
        row = self._conn.execute("SELECT kind, body FROM journal WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise KeyError(seq)
        return entry_from_row(seq, *row)

    def locate(self, content: bytes) -> int | None:
        """The seq of the order or cancel leaf with this content, if committed."""
        row = self._conn.execute("SELECT seq FROM located WHERE content = ?", (content,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        self._conn.close()
