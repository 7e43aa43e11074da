"""The client's evidence store: every signed message it may need in court, durably.

One SQLite file (WAL, ``synchronous=FULL``): a write returns only once it is on disk, so
a message the session reports received survives ``kill -9`` and a power cut. Rules:

* **Idempotent.** A message is keyed by its EIP-712 struct hash (orders by their order
  id, requests by their request hash): the same message twice is one row. A *different*
  message for the same order is a new row: two notes for one digest, or two fills with
  one seq, are themselves evidence (equivocation), so nothing is ever overwritten.
* **One domain, one operator.** The file remembers the domain (chain id, court) and the
  operator address it was created for and refuses to open for others: evidence signed
  in another domain is worthless to this court.
* **Findings are kept, never dropped**: what failed, about which order, with the signed
  messages that show it (their wire form, so a finding is self-contained).
* A **bundle** (:meth:`EvidenceStore.export_bundle`) is a self-contained JSON document
  (domain, operator, court, messages with signatures) that anyone can verify offline and
  import into another store (:func:`parse_bundle` checks every signature first).
* **Journal heads** (protocol §21) are kept too: every signed head received (one per size
  and root; of two with one size and root, the later), from the operator or from a peer
  (a bundle), and the leaves of the operator's log that concern this store's messages
  with their inclusion proofs, each against a head kept. Bundles carry heads, so heads are
  exchanged by exchanging bundles (gossip by file): a split view shows up as two heads
  that are not one log.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

import attrs

from cancelnote.crypto import parse_address, to_checksum
from cancelnote.dispute.court import Offence
from cancelnote.errors import MessageError, Rejected
from cancelnote.messages import (
    CANCEL_TYPES,
    Cancellation,
    CancellationNote,
    CancellationProducts,
    Domain,
    Fill,
    JournalHead,
    Match,
    Order,
    SignedMessage,
    signature_from_wire,
    signature_to_wire,
)
from cancelnote.transparency import LeafProof, SignedHead

M = TypeVar("M", bound=SignedMessage)

#: The ``format`` field of a bundle; a reader refuses any other (version 2: the messages
#: of protocol v2, whose notes carry ``lastFillHash``).
BUNDLE_FORMAT = "cancelnote-evidence/2"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    digest TEXT PRIMARY KEY, sender TEXT NOT NULL, body TEXT NOT NULL,
    signature TEXT NOT NULL, placed_at_ms INTEGER NOT NULL, local_seq INTEGER NOT NULL,
    rejected INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cancels (
    request_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, sender TEXT NOT NULL,
    body TEXT NOT NULL, signature TEXT NOT NULL, sent_at_ms INTEGER NOT NULL,
    local_seq INTEGER NOT NULL, rejected INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS fills (
    hash TEXT PRIMARY KEY, digest TEXT NOT NULL, sender TEXT NOT NULL, seq INTEGER NOT NULL,
    body TEXT NOT NULL, signature TEXT NOT NULL, received_at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS fills_digest ON fills (digest, seq);
CREATE INDEX IF NOT EXISTS fills_seq ON fills (seq);
CREATE TABLE IF NOT EXISTS notes (
    hash TEXT PRIMARY KEY, digest TEXT NOT NULL, sender TEXT NOT NULL, seq INTEGER NOT NULL,
    body TEXT NOT NULL, signature TEXT NOT NULL, received_at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS notes_digest ON notes (digest, seq);
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, digest TEXT NOT NULL,
    offence INTEGER, detail TEXT NOT NULL, evidence TEXT NOT NULL,
    found_at_ms INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'open', UNIQUE (kind, key));
CREATE TABLE IF NOT EXISTS disputes (
    id INTEGER PRIMARY KEY, finding_id INTEGER, action TEXT NOT NULL, digest TEXT NOT NULL,
    tx_hash TEXT, outcome TEXT NOT NULL, detail TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chain_events (
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx_hash TEXT NOT NULL,
    name TEXT NOT NULL, digest TEXT, args TEXT NOT NULL, PRIMARY KEY (tx_hash, log_index));
CREATE TABLE IF NOT EXISTS payouts (
    tx_hash TEXT PRIMARY KEY, account TEXT NOT NULL, amount TEXT NOT NULL,
    at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS heads (
    size INTEGER NOT NULL, root TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
    signature TEXT NOT NULL, received_at_ms INTEGER NOT NULL, source TEXT NOT NULL,
    PRIMARY KEY (size, root));
CREATE INDEX IF NOT EXISTS heads_received ON heads (received_at_ms);
CREATE TABLE IF NOT EXISTS leaves (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, ref INTEGER NOT NULL, leaf TEXT NOT NULL,
    path TEXT NOT NULL, size INTEGER NOT NULL, match TEXT);
CREATE TABLE IF NOT EXISTS located (key TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


class EvidenceError(Rejected):
    """Raised when a store belongs to another domain or operator, or a bundle is invalid."""

    code = "EVIDENCE"


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _unhex(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


# ---------------------------------------------------------------------------------------
# Stored values.


@attrs.frozen
class StoredOrder:
    """One of the orders this store watches, with its owner's signature.

    ``local_seq`` orders orders and cancels as this store received them (two requests
    in one millisecond stay ordered); ``rejected`` is set when the operator refused the
    order: nothing changed on its side, so the order can never fill or need a note.
    """

    order: Order
    signature: bytes
    digest: bytes
    placed_at_ms: int
    local_seq: int = 0
    rejected: bool = False


@attrs.frozen
class StoredCancel:
    """A signed cancel request and when it was sent (the deadline runs from then)."""

    request: Cancellation | CancellationProducts
    signature: bytes
    request_hash: bytes
    sent_at_ms: int
    local_seq: int = 0
    rejected: bool = False


@attrs.frozen
class SignedFill:
    """An operator-signed fill as received."""

    fill: Fill
    signature: bytes
    received_at_ms: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"fill": self.fill.to_wire(), "signature": signature_to_wire(self.signature)}


@attrs.frozen
class SignedNote:
    """An operator-signed cancellation note as received."""

    note: CancellationNote
    signature: bytes
    received_at_ms: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"note": self.note.to_wire(), "signature": signature_to_wire(self.signature)}


@attrs.frozen
class StoredHead:
    """A signed journal head kept, when it was received and from whom (``operator`` or
    ``bundle``)."""

    signed: SignedHead
    received_at_ms: int
    source: str

    @property
    def head(self) -> Any:
        return self.signed.head


@attrs.frozen
class StoredLeaf:
    """A leaf of the operator's log, proven in the kept head of ``size`` leaves (and, for
    a match leaf, its match)."""

    proof: LeafProof
    size: int
    match: Match | None = None


@attrs.frozen
class Finding:
    """A failed check, with what shows it.

    Attributes:
        kind: what failed (see :class:`cancelnote.client.verifier.Kind`).
        key: what makes two findings the same (the struct hashes involved): a finding
            is recorded once however often its evidence arrives.
        digest: the order concerned.
        offence: the court offence it proves, or ``None`` when the court has no rule
            for it (it is recorded all the same).
        detail: one line for a human.
        evidence: the signed messages, in wire form (``fills``, ``notes``, ``order``).
        found_at_ms: client clock.
        status: ``open`` until the watchtower acts: ``claimed`` (the court filed the
            claim), ``paid`` (credited in full), ``rejected`` (see
            :mod:`cancelnote.client.watchtower`).
        id: the row id, once stored.
    """

    kind: str
    key: str
    digest: bytes
    offence: Offence | None
    detail: str
    evidence: Mapping[str, Any]
    found_at_ms: int
    status: str = "open"
    id: int | None = None


@attrs.frozen
class Dispute:
    """One court call the watchtower made, and how it ended."""

    id: int
    finding_id: int | None
    action: str
    digest: bytes
    tx_hash: bytes | None
    outcome: str
    detail: str
    at_ms: int


# ---------------------------------------------------------------------------------------
# The store.


class EvidenceStore:
    """The evidence of one client (or a third-party watchtower) for one court.

    Open it with :meth:`open`. Not thread-safe: one owner (the session's task or the
    watchtower) at a time, or one store object per thread.
    """

    def __init__(self, conn: sqlite3.Connection, domain: Domain, operator: bytes) -> None:
        self._conn = conn
        #: One writer at a time: ``client watch`` runs its watchtower in a worker thread on
        #: this connection while the session writes from trio's; a transaction is the lock.
        self._writing = threading.RLock()
        self.domain = domain
        self.operator = operator

    @classmethod
    def open(
        cls,
        path: str | Path,
        domain: Domain | None = None,
        operator: bytes | None = None,
        *,
        durable: bool = True,
        cache_kib: int | None = None,
    ) -> Self:
        """Open (or create, given ``domain`` and ``operator``) the store at ``path``.

        ``durable = False`` skips every fsync (``synchronous=OFF``): for disposable
        stores only, such as a simulated client's (a crash may then lose the last
        writes). ``cache_kib`` bounds SQLite's page cache (default 2 MiB).

        Raises:
            EvidenceError: the file is for another domain or operator, or it is new and
                no domain or operator was given.
        """
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        if cache_kib is not None:
            conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            if domain is None or operator is None:
                conn.close()
                raise EvidenceError(f"{path} is a new store: give the court and operator")
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ("chain_id", str(domain.chain_id)),
                        ("court", _hex(domain.verifying_contract)),
                        ("operator", _hex(operator)),
                    ],
                )
            return cls(conn, domain, operator)
        stored_domain = Domain(int(meta["chain_id"]), _unhex(meta["court"]))
        stored_operator = _unhex(meta["operator"])
        if (domain is not None and domain != stored_domain) or (
            operator is not None and operator != stored_operator
        ):
            conn.close()
            raise EvidenceError(
                f"{path} holds evidence for chain {stored_domain.chain_id}, court"
                f" {to_checksum(stored_domain.verifying_contract)}, operator"
                f" {to_checksum(stored_operator)}"
            )
        return cls(conn, stored_domain, stored_operator)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one durable commit (a message and its findings together).

        Nested calls in one thread join the open transaction; another thread waits for
        it to commit rather than adding its writes to it.
        """
        with self._writing:
            if self._conn.in_transaction:
                yield
                return
            with _transaction(self._conn):
                yield

    def integrity_check(self) -> str:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0]

    # --- writes ---------------------------------------------------------------------------

    def _insert(self, sql: str, values: tuple[Any, ...]) -> bool:
        with self.transaction():
            return self._conn.execute(sql, values).rowcount == 1

    def _next_local_seq(self) -> int:
        (value,) = self._conn.execute(
            "INSERT INTO cursors VALUES ('local_seq', 1) ON CONFLICT(name)"
            " DO UPDATE SET value = value + 1 RETURNING value"
        ).fetchone()
        return value

    def add_order(self, order: Order, signature: bytes, placed_at_ms: int) -> bool:
        """Keep a signed order (before it is sent); false if it was already kept."""
        with self.transaction():
            return (
                self._conn.execute(
                    "INSERT OR IGNORE INTO orders (digest, sender, body, signature, placed_at_ms,"
                    " local_seq) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        _hex(order.digest(self.domain)),
                        _hex(order.sender),
                        _body(order),
                        _hex(signature),
                        placed_at_ms,
                        self._next_local_seq(),
                    ),
                ).rowcount
                == 1
            )

    def mark_rejected(self, digest: bytes) -> None:
        """The operator refused this order or cancel request (a failure answer).

        Nothing changed on its side: the order can never fill, the cancel owes no note.
        """
        with self.transaction():
            for table, key in (("orders", "digest"), ("cancels", "request_hash")):
                self._conn.execute(
                    f"UPDATE {table} SET rejected = 1 WHERE {key} = ?", (_hex(digest),)
                )

    def add_cancel(
        self, request: Cancellation | CancellationProducts, signature: bytes, sent_at_ms: int
    ) -> bool:
        """Keep a signed cancel request before it is sent; false if already kept."""
        with self.transaction():
            return (
                self._conn.execute(
                    "INSERT OR IGNORE INTO cancels (request_hash, kind, sender, body, signature,"
                    " sent_at_ms, local_seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        _hex(request.digest(self.domain)),
                        type(request).__name__,
                        _hex(request.sender),
                        _body(request),
                        _hex(signature),
                        sent_at_ms,
                        self._next_local_seq(),
                    ),
                ).rowcount
                == 1
            )

    def add_fill(self, signed: SignedFill) -> bool:
        """Keep an operator-signed fill; false if this exact fill was already kept."""
        fill = signed.fill
        return self._insert(
            "INSERT OR IGNORE INTO fills VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                _hex(fill.struct_hash()),
                _hex(fill.order_digest),
                _hex(fill.sender),
                fill.seq,
                _body(fill),
                _hex(signed.signature),
                signed.received_at_ms,
            ),
        )

    def add_note(self, signed: SignedNote) -> bool:
        """Keep an operator-signed note; false if this exact note was already kept."""
        note = signed.note
        return self._insert(
            "INSERT OR IGNORE INTO notes VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                _hex(note.struct_hash()),
                _hex(note.order_digest),
                _hex(note.sender),
                note.seq,
                _body(note),
                _hex(signed.signature),
                signed.received_at_ms,
            ),
        )

    def add_finding(self, finding: Finding) -> Finding | None:
        """Record a finding; ``None`` if the same one (kind and key) was recorded before."""
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO findings"
                " (kind, key, digest, offence, detail, evidence, found_at_ms, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    finding.kind,
                    finding.key,
                    _hex(finding.digest),
                    None if finding.offence is None else int(finding.offence),
                    finding.detail,
                    _dumps(dict(finding.evidence)),
                    finding.found_at_ms,
                    finding.status,
                ),
            )
        return attrs.evolve(finding, id=cursor.lastrowid) if cursor.rowcount == 1 else None

    def set_finding_status(self, finding_id: int, status: str) -> None:
        self._insert("UPDATE findings SET status = ? WHERE id = ?", (status, finding_id))

    def add_dispute(
        self,
        finding_id: int | None,
        action: str,
        digest: bytes,
        tx_hash: bytes | None,
        outcome: str,
        detail: str,
        at_ms: int,
    ) -> int:
        """Record a court call (made or refused) and return its id."""
        with self.transaction():
            cursor = self._conn.execute(
                "INSERT INTO disputes"
                " (finding_id, action, digest, tx_hash, outcome, detail, at_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    finding_id,
                    action,
                    _hex(digest),
                    None if tx_hash is None else _hex(tx_hash),
                    outcome,
                    detail,
                    at_ms,
                ),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def add_chain_event(
        self, block: int, log_index: int, tx_hash: bytes, name: str, args: Mapping[str, Any]
    ) -> bool:
        """Keep one court event (arguments as JSON, bytes as hex); false if kept before."""
        wire = _jsonable(dict(args))
        return self._insert(
            "INSERT OR IGNORE INTO chain_events VALUES (?, ?, ?, ?, ?, ?)",
            (block, log_index, _hex(tx_hash), name, wire.get("digest"), _dumps(wire)),
        )

    def add_payout(self, tx_hash: bytes, account: bytes, amount: int, at_ms: int) -> bool:
        """Record wei withdrawn from the court to ``account``."""
        return self._insert(
            "INSERT OR IGNORE INTO payouts VALUES (?, ?, ?, ?)",
            (_hex(tx_hash), _hex(account), str(amount), at_ms),
        )

    def mark_settled(self, request_hash: bytes) -> None:
        """The cancel's deadline was judged: every order it named was answered or found."""
        self._insert("UPDATE cancels SET settled = 1 WHERE request_hash = ?", (_hex(request_hash),))

    def set_cursor(self, name: str, value: int) -> None:
        """Remember a position (a stream's seq, a block), only ever moving it forward."""
        self._insert(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT(name)"
            " DO UPDATE SET value = max(value, excluded.value)",
            (name, value),
        )

    def add_head(self, signed: SignedHead, received_at_ms: int, source: str) -> bool:
        """Keep a signed head (its signature checked by the caller); false if this size and
        root were kept before with a time no earlier. The later one is kept, with when and
        from whom it came: an idle operator's heads (one size, later times) are heads
        received, not a stall."""
        head = signed.head
        return self._insert(
            "INSERT INTO heads VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (size, root) DO UPDATE"
            " SET timestamp_ms = excluded.timestamp_ms, signature = excluded.signature,"
            " received_at_ms = excluded.received_at_ms, source = excluded.source"
            " WHERE excluded.timestamp_ms > heads.timestamp_ms",
            (
                head.size,
                _hex(head.root),
                head.timestamp_ms,
                _hex(signed.signature),
                received_at_ms,
                source,
            ),
        )

    def add_leaf(self, leaf: StoredLeaf) -> None:
        """Keep a proven leaf of the log (a later proof of the same seq replaces it)."""
        wire = leaf.proof.leaf.to_wire()
        self._insert(
            "INSERT OR REPLACE INTO leaves VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                leaf.proof.index,
                wire["kind"],
                leaf.proof.leaf.ref,
                _dumps(wire),
                _dumps([_hex(node) for node in leaf.proof.path]),
                leaf.size,
                None if leaf.match is None else _dumps(leaf.match.to_wire()),
            ),
        )

    def set_located(self, key: bytes, seq: int) -> None:
        """The operator's log holds the order (its id) or the cancel (its request hash)
        ``key`` at ``seq``."""
        self._insert("INSERT OR REPLACE INTO located VALUES (?, ?)", (_hex(key), seq))

    # --- reads ----------------------------------------------------------------------------

    def _heads(self, where: str, values: tuple[Any, ...], order: str) -> list[StoredHead]:
        rows = self._conn.execute(
            "SELECT size, root, timestamp_ms, signature, received_at_ms, source FROM heads"
            f" {where} ORDER BY {order}",
            values,
        )
        return [_head_from_row(row) for row in rows]

    def heads(self, *, min_size: int = 0) -> list[StoredHead]:
        """Kept heads of at least ``min_size`` leaves, by size then time."""
        return self._heads("WHERE size >= ?", (min_size,), "size, timestamp_ms")

    def latest_head(self) -> StoredHead | None:
        """The kept head of the largest size (the latest of that size)."""
        return next(iter(self._heads("", (), "size DESC, timestamp_ms DESC LIMIT 1")), None)

    def head_of_size(self, size: int) -> StoredHead | None:
        """The latest kept head of ``size`` leaves."""
        return next(iter(self._heads("WHERE size = ?", (size,), "timestamp_ms DESC LIMIT 1")), None)

    def latest_head_not_after(self, seq: int) -> StoredHead | None:
        """Of the heads whose size is at most ``seq`` (signed before leaf ``seq`` was made),
        the one with the latest time: what a fill numbered ``seq`` may not predate."""
        found = self._heads("WHERE size <= ?", (seq,), "timestamp_ms DESC LIMIT 1")
        return next(iter(found), None)

    def heads_received_since(self, since_ms: int, source: str = "operator") -> int:
        (count,) = self._conn.execute(
            "SELECT count(*) FROM heads WHERE received_at_ms >= ? AND source = ?",
            (since_ms, source),
        ).fetchone()
        return count

    def leaf(self, seq: int) -> StoredLeaf | None:
        row = self._conn.execute(
            "SELECT seq, leaf, path, size, match FROM leaves WHERE seq = ?", (seq,)
        ).fetchone()
        return None if row is None else _leaf_from_row(row)

    def located(self, key: bytes) -> int | None:
        """Where the log holds the order or cancel ``key`` (``None``: not found yet)."""
        row = self._conn.execute("SELECT seq FROM located WHERE key = ?", (_hex(key),)).fetchone()
        return None if row is None else row[0]

    def unlocated(self) -> tuple[list[StoredOrder], list[StoredCancel]]:
        """The orders and cancels sent (not refused) whose place in the log is not known."""
        orders = self._conn.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE rejected = 0"
            " AND digest NOT IN (SELECT key FROM located) ORDER BY local_seq"
        )
        cancels = self._conn.execute(
            f"SELECT {_CANCEL_COLUMNS} FROM cancels WHERE rejected = 0"
            " AND request_hash NOT IN (SELECT key FROM located) ORDER BY local_seq"
        )
        return [_order_from_row(r) for r in orders], [_cancel_from_row(r) for r in cancels]

    def unproven(self, size: int) -> list[int]:
        """The seqs below ``size`` this store's evidence is about and holds no proof of:
        its fills, notes, located orders and cancels, and the matches its fills name."""
        rows = self._conn.execute(
            "SELECT seq FROM fills UNION SELECT seq FROM notes UNION SELECT seq FROM located"
            " UNION SELECT ref FROM leaves WHERE kind = 'fill'",
        )
        proven = {seq for (seq,) in self._conn.execute("SELECT seq FROM leaves")}
        return sorted({seq for (seq,) in rows if seq < size} - proven)

    def located_at(self, seqs: Iterable[int]) -> list[bytes]:
        """The orders and cancels (ids and request hashes) located at one of ``seqs``."""
        seqs = list(seqs)
        marks = ",".join("?" * len(seqs))
        rows = self._conn.execute(f"SELECT key FROM located WHERE seq IN ({marks})", seqs)
        return [_unhex(key) for (key,) in rows]

    def fill_leaves_naming(self, seqs: Iterable[int]) -> list[int]:
        """The seqs of proven fill leaves whose ref (their match) is one of ``seqs``."""
        seqs = list(seqs)
        marks = ",".join("?" * len(seqs))
        rows = self._conn.execute(
            f"SELECT seq FROM leaves WHERE kind = 'fill' AND ref IN ({marks})", seqs
        )
        return [seq for (seq,) in rows]

    def heads_of_size(self, size: int) -> list[StoredHead]:
        return self._heads("WHERE size = ?", (size,), "timestamp_ms")

    def peer_heads(self) -> list[StoredHead]:
        """Heads that came from elsewhere than the operator's stream (bundles)."""
        return self._heads("WHERE source != 'operator'", (), "size, timestamp_ms")

    def neighbour_heads(self, size: int) -> list[StoredHead]:
        """The largest head below ``size`` and the smallest above it (those that exist)."""
        below = self._heads("WHERE size < ?", (size,), "size DESC, timestamp_ms DESC LIMIT 1")
        above = self._heads("WHERE size > ?", (size,), "size, timestamp_ms LIMIT 1")
        return below + above

    def fills_from_seq(self, seq: int) -> list[SignedFill]:
        """Fills numbered ``seq`` or later, in seq order."""
        return self._fills("WHERE seq >= ?", (seq,))

    def cursor(self, name: str) -> int:
        row = self._conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else row[0]

    def order(self, digest: bytes) -> StoredOrder | None:
        row = self._conn.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE digest = ?",
            (_hex(digest),),
        ).fetchone()
        return None if row is None else _order_from_row(row)

    def orders(self) -> list[StoredOrder]:
        rows = self._conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders ORDER BY local_seq")
        return [_order_from_row(row) for row in rows]

    def cancels(self, *, unsettled: bool = False) -> list[StoredCancel]:
        """Cancel requests in the order they were sent (only those not yet judged)."""
        where = "WHERE settled = 0 AND rejected = 0" if unsettled else ""
        rows = self._conn.execute(
            f"SELECT {_CANCEL_COLUMNS} FROM cancels {where} ORDER BY local_seq"
        )
        return [_cancel_from_row(row) for row in rows]

    def cancel(self, request_hash: bytes) -> StoredCancel | None:
        row = self._conn.execute(
            f"SELECT {_CANCEL_COLUMNS} FROM cancels WHERE request_hash = ?",
            (_hex(request_hash),),
        ).fetchone()
        return None if row is None else _cancel_from_row(row)

    def fills(self, digest: bytes | None = None) -> list[SignedFill]:
        """Fills of ``digest`` (every fill if ``None``), in seq order."""
        return self._fills("WHERE digest = ?" if digest else "", (_hex(digest),) if digest else ())

    def fills_with_seq(self, seq: int) -> list[SignedFill]:
        return self._fills("WHERE seq = ?", (seq,))

    def _fills(self, where: str, values: tuple[Any, ...]) -> list[SignedFill]:
        rows = self._conn.execute(
            f"SELECT body, signature, received_at_ms FROM fills {where} ORDER BY seq, hash", values
        )
        return [SignedFill(_parsed(Fill, body), _unhex(sig), at) for body, sig, at in rows]

    def notes(self, digest: bytes | None = None) -> list[SignedNote]:
        """Notes of ``digest`` (every note if ``None``), in seq order."""
        return self._notes("WHERE digest = ?" if digest else "", (_hex(digest),) if digest else ())

    def notes_with_seq(self, seq: int) -> list[SignedNote]:
        return self._notes("WHERE seq = ?", (seq,))

    def _notes(self, where: str, values: tuple[Any, ...]) -> list[SignedNote]:
        rows = self._conn.execute(
            f"SELECT body, signature, received_at_ms FROM notes {where} ORDER BY seq, hash", values
        )
        return [
            SignedNote(_parsed(CancellationNote, body), _unhex(sig), at) for body, sig, at in rows
        ]

    def findings(self, status: str | None = None) -> list[Finding]:
        where, values = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._conn.execute(
            "SELECT kind, key, digest, offence, detail, evidence, found_at_ms, status, id"
            f" FROM findings {where} ORDER BY id",
            values,
        )
        return [
            Finding(
                kind,
                key,
                _unhex(digest),
                None if offence is None else Offence(offence),
                detail,
                json.loads(evidence),
                found_at_ms,
                status_,
                id_,
            )
            for kind, key, digest, offence, detail, evidence, found_at_ms, status_, id_ in rows
        ]

    def disputes(self) -> list[Dispute]:
        rows = self._conn.execute(
            "SELECT id, finding_id, action, digest, tx_hash, outcome, detail, at_ms"
            " FROM disputes ORDER BY id"
        )
        return [
            Dispute(i, f, a, _unhex(d), None if t is None else _unhex(t), o, detail, at)
            for i, f, a, d, t, o, detail, at in rows
        ]

    def chain_events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Court events kept, in chain order: ``{"name", "block", "tx_hash", **args}``."""
        where, values = ("WHERE name = ?", (name,)) if name else ("", ())
        rows = self._conn.execute(
            f"SELECT name, block, tx_hash, args FROM chain_events {where}"
            " ORDER BY block, log_index",
            values,
        )
        return [{"name": n, "block": b, "tx_hash": t, **json.loads(args)} for n, b, t, args in rows]

    def court_cap(self, digest: bytes) -> int | None:
        """The cap an answered forced cancel of ``digest`` recorded in court, from the kept
        events: the note's ``filledAmount + pendingAmount``; ``None`` while unanswered (a
        default records no cap: protocol §12.3)."""
        answered = self._court_event("CancelAnswered", digest)
        return None if answered is None else int(answered["cap"])

    def court_requested_at(self, digest: bytes) -> int | None:
        """The block time of the forced cancel of ``digest`` (when it took effect), from
        the kept events; ``None`` if none was requested."""
        requested = self._court_event("CancelRequested", digest)
        return None if requested is None else int(requested["requestedAt"])

    def _court_event(self, name: str, digest: bytes) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT args FROM chain_events WHERE name = ? AND digest = ?"
            " ORDER BY block, log_index LIMIT 1",
            (name, _hex(digest)),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def payouts(self) -> list[tuple[bytes, bytes, int, int]]:
        """``(tx hash, account, wei, at_ms)`` of every withdrawal."""
        rows = self._conn.execute("SELECT tx_hash, account, amount, at_ms FROM payouts")
        return [(_unhex(t), _unhex(a), int(amount), at) for t, a, amount, at in rows]

    # --- bundles --------------------------------------------------------------------------

    def export_bundle(
        self,
        digest: bytes | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> dict[str, Any]:
        """Everything about one order, or every message received in a time range.

        The bundle is self-contained: a reader needs no store and no chain to check every
        signature (:func:`parse_bundle`), only this court's domain, which it carries.
        """
        low = -1 if since_ms is None else since_ms
        high = 2**63 - 1 if until_ms is None else until_ms

        def wanted(key: bytes, at_ms: int) -> bool:
            return (digest is None or key == digest) and low <= at_ms <= high

        fills = [f for f in self.fills() if wanted(f.fill.order_digest, f.received_at_ms)]
        notes = [n for n in self.notes() if wanted(n.note.order_digest, n.received_at_ms)]
        digests = {f.fill.order_digest for f in fills} | {n.note.order_digest for n in notes}
        orders = [
            o for o in self.orders() if wanted(o.digest, o.placed_at_ms) or o.digest in digests
        ]
        senders = {o.order.sender for o in orders}

        def cancel_wanted(cancel: StoredCancel) -> bool:
            if digest is None:
                return low <= cancel.sent_at_ms <= high
            if isinstance(cancel.request, Cancellation):
                return digest in cancel.request.digests
            return cancel.request.sender in senders  # a cancel by product may name it

        cancels = [c for c in self.cancels() if cancel_wanted(c)]
        return {
            **self.export_heads(),
            "orders": [
                {
                    "order": o.order.to_wire(),
                    "signature": signature_to_wire(o.signature),
                    "placed_at_ms": o.placed_at_ms,
                }
                for o in orders
            ],
            "cancels": [
                {
                    "kind": type(c.request).__name__,
                    "tx": c.request.to_wire(),
                    "signature": signature_to_wire(c.signature),
                    "sent_at_ms": c.sent_at_ms,
                }
                for c in cancels
            ],
            "fills": [{**f.to_wire(), "received_at_ms": f.received_at_ms} for f in fills],
            "notes": [{**n.to_wire(), "received_at_ms": n.received_at_ms} for n in notes],
        }

    def export_heads(self, last: int | None = None) -> dict[str, Any]:
        """A bundle of the heads kept (the ``last`` ones by size, or all) and nothing else:
        what a client gossips to peers and watchtowers, who find a split view in it."""
        heads = self.heads()
        if last is not None:
            heads = heads[-last:] if last > 0 else []
        return {
            "format": BUNDLE_FORMAT,
            "domain": self.domain.to_wire(),
            "operator": to_checksum(self.operator),
            "court": to_checksum(self.domain.verifying_contract),
            "orders": [],
            "cancels": [],
            "fills": [],
            "notes": [],
            "heads": [h.signed.to_wire() for h in heads],
        }


@attrs.frozen
class Bundle:
    """A parsed bundle whose every signature was checked (:func:`parse_bundle`)."""

    domain: Domain
    operator: bytes
    orders: tuple[StoredOrder, ...]
    cancels: tuple[StoredCancel, ...]
    fills: tuple[SignedFill, ...]
    notes: tuple[SignedNote, ...]
    heads: tuple[SignedHead, ...] = ()


def parse_bundle(obj: object) -> Bundle:
    """Parse a bundle strictly and verify every signature in its own domain.

    Orders and cancels must be signed by their sender's owner, fills, notes and heads by
    the bundle's operator. One bad item rejects the whole bundle: a file is not a peer whose
    mistakes are evidence, and half an import would be worse than none.

    Raises:
        EvidenceError: wrong format, a malformed item or an invalid signature.
    """
    try:
        return _parse_bundle(obj)
    except (MessageError, KeyError, TypeError, ValueError) as exc:
        raise EvidenceError(f"invalid evidence bundle: {type(exc).__name__}: {exc}") from None


def _parse_bundle(obj: Any) -> Bundle:
    if not isinstance(obj, Mapping) or obj.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"not a {BUNDLE_FORMAT} document")
    wire_domain = obj["domain"]
    domain = Domain(wire_domain["chainId"], wire_domain["verifyingContract"])
    if domain.to_wire() != wire_domain:
        raise ValueError("the domain is not cancelnote v1's")
    if parse_address(obj["court"]) != domain.verifying_contract:
        raise ValueError("the court is not the domain's verifying contract")
    operator = parse_address(obj["operator"])
    orders, cancels, fills, notes = [], [], [], []
    for item in obj["orders"]:
        order = Order.from_wire(item["order"])
        signature = signature_from_wire(item["signature"])
        order.verify(signature, domain, order.sender[:20])
        orders.append(
            StoredOrder(order, signature, order.digest(domain), _ms(item, "placed_at_ms"))
        )
    for item in obj["cancels"]:
        request = CANCEL_TYPES[item["kind"]].from_wire(item["tx"])
        signature = signature_from_wire(item["signature"])
        request.verify(signature, domain, request.sender[:20])
        cancels.append(
            StoredCancel(request, signature, request.digest(domain), _ms(item, "sent_at_ms"))
        )
    for item in obj["fills"]:
        fill = Fill.from_wire(item["fill"])
        signature = signature_from_wire(item["signature"])
        fill.verify(signature, domain, operator)
        fills.append(SignedFill(fill, signature, _ms(item, "received_at_ms")))
    for item in obj["notes"]:
        note = CancellationNote.from_wire(item["note"])
        signature = signature_from_wire(item["signature"])
        note.verify(signature, domain, operator)
        notes.append(SignedNote(note, signature, _ms(item, "received_at_ms")))
    heads = []
    for item in obj.get("heads", ()):  # (bundles before journal heads have none)
        signed = SignedHead.from_wire(item)
        signed.verify(domain, operator)
        heads.append(signed)
    return Bundle(
        domain, operator, tuple(orders), tuple(cancels), tuple(fills), tuple(notes), tuple(heads)
    )


def _ms(item: Mapping[str, Any], key: str) -> int:
    value = item[key]
    if type(value) is not int or value < 0:
        raise ValueError(f"{key}: expected a non-negative integer")
    return value


def _jsonable(obj: Any) -> Any:
    """Court event arguments as JSON: big integers stay exact as decimal strings."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return _hex(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in an event")


_ORDER_COLUMNS = "body, signature, digest, placed_at_ms, local_seq, rejected"
_CANCEL_COLUMNS = "kind, body, signature, request_hash, sent_at_ms, local_seq, rejected"


#: Stored bodies whose parsed message is remembered (a bounded cache, shared by stores;
#: a lock, because a watchtower's step may run in a worker thread beside the session).
BODY_CACHE_SIZE = 8192
_bodies: OrderedDict[tuple[type, str], SignedMessage] = OrderedDict()
_bodies_lock = threading.Lock()


def _body(message: SignedMessage) -> str:
    """The JSON a message is stored as; the message is remembered as its parse."""
    body = _dumps(message.to_wire())
    _remember((type(message), body), message)
    return body


def _remember(key: tuple[type, str], message: SignedMessage) -> None:
    with _bodies_lock:
        _bodies[key] = message
        _bodies.move_to_end(key)
        if len(_bodies) > BODY_CACHE_SIZE:
            _bodies.popitem(last=False)


def _parsed(cls: type[M], body: str) -> M:
    """A stored body parsed back into its (immutable) message, parsed once while in use
    however often the verifier reads it (the body a message was stored as parses back
    to an equal message: ``from_wire`` inverts ``to_wire``)."""
    key = (cls, body)
    with _bodies_lock:
        message = _bodies.get(key)
        if message is not None:
            _bodies.move_to_end(key)
    if message is None:
        message = cls.from_wire(json.loads(body))
        _remember(key, message)
    return message  # type: ignore[return-value]


def _order_from_row(row: tuple[str, str, str, int, int, int]) -> StoredOrder:
    body, signature, digest, placed_at_ms, local_seq, rejected = row
    order = _parsed(Order, body)
    return StoredOrder(
        order, _unhex(signature), _unhex(digest), placed_at_ms, local_seq, bool(rejected)
    )


def _cancel_from_row(row: tuple[str, str, str, str, int, int, int]) -> StoredCancel:
    kind, body, signature, request_hash, sent_at_ms, local_seq, rejected = row
    request = _parsed(CANCEL_TYPES[kind], body)
    return StoredCancel(
        request, _unhex(signature), _unhex(request_hash), sent_at_ms, local_seq, bool(rejected)
    )


def _head_from_row(row: tuple[int, str, int, str, int, str]) -> StoredHead:
    size, root, timestamp_ms, signature, received_at_ms, source = row
    signed = SignedHead(JournalHead(size, _unhex(root), timestamp_ms), _unhex(signature))
    return StoredHead(signed, received_at_ms, source)


def _leaf_from_row(row: tuple[int, str, str, int, str | None]) -> StoredLeaf:
    seq, leaf, path, size, match = row
    proof = LeafProof.from_wire(
        {"seq": str(seq), "leaf": json.loads(leaf), "path": json.loads(path)}
    )
    return StoredLeaf(proof, size, None if match is None else Match.from_wire(json.loads(match)))


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (durable on return), or roll back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
