"""A simulated client's evidence store: the working set in memory, the rest in SQLite.

A simulated client checks every fill and note its operator signs, as a real one does,
against the evidence it holds (:class:`~cancelnote.client.verifier.Verifier`); the real
store answers each check with SQL statements on its own file, some ten per note, and with
a hundred clients in one process each statement misses the CPU caches. So the simulated
client's :class:`WorkingSetStore` is the real :class:`~cancelnote.client.evidence.EvidenceStore`
(its code, its schema, its file) with two changes, neither of which touches a check:

* **Reads from memory.** The orders the client is still following (placed, cancelled,
  waiting for a note or for their fills), with their cancels, fills and notes, the open
  findings and the court's caps and request times are kept in dictionaries and answer
  the verifier's and the watchtower's reads. Anything else (an order the world told the
  client to :meth:`forget`, a fill of an unknown order, a seq below one forgotten, every
  read the verifier does not make) is answered by the real store's SQL, after the writes
  waiting are flushed, so every answer is the one the real store would give.
* **Journal heads from memory.** Where the operator's log holds the client's orders and
  cancels, the leaves proven, and which seqs still want a proof are kept in dictionaries
  too (the real store scans its tables for them at every head); one answer differs:
  :meth:`unlocated` names only the working set's orders and cancels (a forgotten one is
  not asked about again: nothing more can happen to it).
* **Writes in batches.** Orders, cancels, fills and notes are written by the real store's
  own methods, :data:`FLUSH_EVERY` at a time in one transaction (and before any read
  that goes to SQL, and on close); findings, court calls and chain events are written at
  once (a finding's id is its row's). A simulated client is disposable (no fsync, as
  before), so a batch's atomicity is all it needs; one thing differs from the real
  store: re-adding an order the client forgot reports it as new (a simulated client
  never does).

:meth:`forget` is the world's: it calls it once nothing more can happen to an order (its
record was closed, docs/simulation.md §8), which keeps memory flat in the horizon.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs

from ..client.evidence import (
    EvidenceStore,
    Finding,
    SignedFill,
    SignedNote,
    StoredCancel,
    StoredLeaf,
    StoredOrder,
)
from ..messages import Cancellation, CancellationProducts, Order
from ..transparency import LeafKind

#: A signed fill or note, kept by :meth:`WorkingSetStore._add_signed`.
_Signed = TypeVar("_Signed", SignedFill, SignedNote)

#: Buffered writes flushed in one transaction.
FLUSH_EVERY = 512
#: Finding states the watchtower still works on: kept in memory while in them.
ACTIVE = ("open", "forced", "claimed")


def _fill_key(signed: SignedFill) -> tuple[int, bytes]:
    return signed.fill.seq, signed.fill.struct_hash()


def _note_key(signed: SignedNote) -> tuple[int, bytes]:
    return signed.note.seq, signed.note.struct_hash()


class WorkingSetStore(EvidenceStore):
    """An :class:`EvidenceStore` that keeps its working set in memory (see the module
    docstring). Open it with :meth:`EvidenceStore.open`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[Callable[[], object]] = []
        self._local_seq = super().cursor("local_seq")
        self._orders: dict[bytes, StoredOrder] = {}
        self._cancels: dict[bytes, StoredCancel] = {}
        self._unsettled: dict[bytes, StoredCancel] = {}  # in the order they were sent
        self._cancel_of: dict[bytes, list[bytes]] = {}  # order digest -> cancels naming it
        self._held_fills: dict[bytes, list[SignedFill]] = {}  # by digest, in (seq, hash) order
        self._held_notes: dict[bytes, list[SignedNote]] = {}
        self._fills_by_seq: dict[int, list[SignedFill]] = {}
        self._notes_by_seq: dict[int, list[SignedNote]] = {}
        self._forgotten_seq = 0  # the highest seq of a fill or note held only in the file
        self._judged_later: set[bytes] = set()  # cancels of a forgotten order it may owe
        self._early: set[bytes] = set()  # orders not held whose fills or notes came
        self._active: dict[int, Finding] = {}  # findings in the ACTIVE states, by id
        self._caps: dict[bytes, int] = {}  # CancelAnswered's cap, by digest
        self._requested: dict[bytes, int] = {}  # CancelRequested's time, by digest
        # Journal heads (every one since the store opened: a few ints and proofs each).
        self._located: dict[bytes, int] = {}  # order id or request hash -> its seq
        self._located_by_seq: dict[int, list[bytes]] = {}
        self._leaves: dict[int, StoredLeaf] = {}  # proven leaves by seq
        self._naming: dict[int, set[int]] = {}  # match seq -> proven fill leaves naming it
        self._message_seqs: set[int] = set()  # the seqs of every fill and note added

    # --- writes ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes are batched (:meth:`flush`): a transaction groups nothing more."""
        yield

    def flush(self) -> None:
        """Write the buffered writes in one transaction, with the real store's methods."""
        if self._pending:
            pending, self._pending = self._pending, []
            with super().transaction():
                for write in pending:
                    write()

    def _buffer(self, write: Callable[[], object]) -> None:
        self._pending.append(write)
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def add_order(self, order: Order, signature: bytes, placed_at_ms: int) -> bool:
        digest = order.digest(self.domain)
        self._local_seq += 1  # the real store takes a local seq even for a repeat
        self._buffer(lambda: EvidenceStore.add_order(self, order, signature, placed_at_ms))
        if digest in self._orders:
            return False
        self._orders[digest] = StoredOrder(order, signature, digest, placed_at_ms, self._local_seq)
        if digest in self._early:  # its fills or notes came first: the file has them
            self._early.discard(digest)
            self.flush()
            self._held_fills[digest] = super().fills(digest)
            self._held_notes[digest] = super().notes(digest)
            for fill in self._held_fills[digest]:
                self._fills_by_seq.setdefault(fill.fill.seq, []).append(fill)
            for note in self._held_notes[digest]:
                self._notes_by_seq.setdefault(note.note.seq, []).append(note)
        else:
            self._held_fills[digest], self._held_notes[digest] = [], []
        return True

    def add_cancel(
        self, request: Cancellation | CancellationProducts, signature: bytes, sent_at_ms: int
    ) -> bool:
        request_hash = request.digest(self.domain)
        self._local_seq += 1
        self._buffer(lambda: EvidenceStore.add_cancel(self, request, signature, sent_at_ms))
        if request_hash in self._cancels:
            return False
        cancel = StoredCancel(request, signature, request_hash, sent_at_ms, self._local_seq)
        self._cancels[request_hash] = self._unsettled[request_hash] = cancel
        if isinstance(request, Cancellation):
            for digest in request.digests:
                self._cancel_of.setdefault(digest, []).append(request_hash)
        return True

    def add_fill(self, signed: SignedFill) -> bool:
        fill = signed.fill
        return self._add_signed(
            signed, fill.seq, fill.order_digest, self._held_fills, self._fills_by_seq,
            _fill_key, EvidenceStore.add_fill,
        )  # fmt: skip

    def add_note(self, signed: SignedNote) -> bool:
        note = signed.note
        return self._add_signed(
            signed, note.seq, note.order_digest, self._held_notes, self._notes_by_seq,
            _note_key, EvidenceStore.add_note,
        )  # fmt: skip

    def _add_signed(
        self,
        signed: _Signed,
        seq: int,
        digest: bytes,
        held_by_order: dict[bytes, list[_Signed]],
        by_seq: dict[int, list[_Signed]],
        key_of: Callable[[_Signed], Any],
        add_to_file: Callable[[EvidenceStore, _Signed], bool],
    ) -> bool:
        """Keep a fill or note in its order's working set (in ``key_of`` order); one of an
        order not in the working set goes to the file, which says whether it is new."""
        self._message_seqs.add(seq)
        held = held_by_order.get(digest)
        if held is None:
            self.flush()
            self._forgotten_seq = max(self._forgotten_seq, seq)
            self._early.add(digest)
            return add_to_file(self, signed)
        key = key_of(signed)
        index = bisect.bisect_left(held, key, key=key_of)
        if index < len(held) and key_of(held[index]) == key:
            return False
        held.insert(index, signed)
        by_seq.setdefault(seq, []).append(signed)
        self._buffer(lambda: add_to_file(self, signed))
        return True

    def mark_rejected(self, digest: bytes) -> None:
        self.flush()
        super().mark_rejected(digest)
        tables: tuple[dict[bytes, Any], ...] = (self._orders, self._cancels, self._unsettled)
        for held in tables:
            if digest in held:
                held[digest] = attrs.evolve(held[digest], rejected=True)

    def mark_settled(self, request_hash: bytes) -> None:
        self._unsettled.pop(request_hash, None)
        self._buffer(lambda: EvidenceStore.mark_settled(self, request_hash))

    def add_finding(self, finding: Finding) -> Finding | None:
        self.flush()
        added = super().add_finding(finding)
        if added is not None and added.status in ACTIVE:
            assert added.id is not None
            self._active[added.id] = added
        return added

    def set_finding_status(self, finding_id: int, status: str) -> None:
        self.flush()
        super().set_finding_status(finding_id, status)
        finding = self._active.pop(finding_id, None)
        if status in ACTIVE:
            if finding is None:  # became active again: read it as stored
                finding = next(f for f in super().findings(status) if f.id == finding_id)
            self._active[finding_id] = attrs.evolve(finding, status=status)

    def add_chain_event(
        self, block: int, log_index: int, tx_hash: bytes, name: str, args: Any
    ) -> bool:
        added = super().add_chain_event(block, log_index, tx_hash, name, args)
        digest = args.get("digest")
        if added and name == "CancelAnswered":
            self._caps.setdefault(digest, int(args["cap"]))
        elif added and name == "CancelRequested":
            self._requested.setdefault(digest, int(args["requestedAt"]))
        return added

    def set_located(self, key: bytes, seq: int) -> None:
        super().set_located(key, seq)
        old = self._located.get(key)
        if old is not None:
            self._located_by_seq[old].remove(key)
            if not self._located_by_seq[old]:
                del self._located_by_seq[old]
        self._located[key] = seq
        self._located_by_seq.setdefault(seq, []).append(key)

    def add_leaf(self, leaf: StoredLeaf) -> None:
        super().add_leaf(leaf)
        seq = leaf.proof.index
        old = self._leaves.get(seq)
        if old is not None and old.proof.leaf.kind == LeafKind.FILL:
            ref = old.proof.leaf.ref
            self._naming[ref].discard(seq)
            if not self._naming[ref]:
                del self._naming[ref]
        self._leaves[seq] = leaf
        if leaf.proof.leaf.kind == LeafKind.FILL:
            self._naming.setdefault(leaf.proof.leaf.ref, set()).add(seq)

    def forget(self, digest: bytes) -> None:
        """Nothing more can happen to order ``digest``: let its evidence go from memory (it
        stays in the file).

        Once every order a cancel named is forgotten, the cancel goes too; if it was not
        judged yet and each of its orders had its note or all its fills, it owes nothing
        whenever its deadline is judged, so it is settled now, as the verifier would settle
        it then (notes and fills are never taken back); else it stays for that judgement.
        """
        stored = self._orders.pop(digest, None)
        if stored is None:
            return
        fills, notes = self._held_fills.pop(digest, []), self._held_notes.pop(digest, [])
        for fill in fills:
            self._forget_seq(self._fills_by_seq, fill.fill.seq, fill)
        for note in notes:
            self._forget_seq(self._notes_by_seq, note.note.seq, note)
        filled = max((f.fill.filled_total for f in fills), default=0)
        owes_nothing = bool(notes) or filled >= abs(stored.order.amount)
        for request_hash in self._cancel_of.pop(digest, ()):
            if not owes_nothing:
                self._judged_later.add(request_hash)
            cancel = self._cancels[request_hash]
            assert isinstance(cancel.request, Cancellation)
            if any(d in self._orders for d in cancel.request.digests):
                continue
            del self._cancels[request_hash]
            if request_hash in self._judged_later:
                self._judged_later.discard(request_hash)
                continue  # it stays unsettled, for the verifier to judge
            if self._unsettled.pop(request_hash, None) is not None:
                self._buffer(functools.partial(EvidenceStore.mark_settled, self, request_hash))

    def _forget_seq(self, index: dict[int, list[Any]], seq: int, message: object) -> None:
        self._forgotten_seq = max(self._forgotten_seq, seq)
        held = index.get(seq)
        if held is not None:
            held.remove(message)
            if not held:
                del index[seq]

    def close(self) -> None:
        self.flush()
        super().close()

    # --- reads ----------------------------------------------------------------------------

    def order(self, digest: bytes) -> StoredOrder | None:
        stored = self._orders.get(digest)
        if stored is not None:
            return stored
        self.flush()
        return super().order(digest)

    def cancel(self, request_hash: bytes) -> StoredCancel | None:
        stored = self._cancels.get(request_hash)
        if stored is not None:
            return stored
        self.flush()
        return super().cancel(request_hash)

    def cancels(self, *, unsettled: bool = False) -> list[StoredCancel]:
        if unsettled:
            return [c for c in self._unsettled.values() if not c.rejected]
        self.flush()
        return super().cancels()

    def fills(self, digest: bytes | None = None) -> list[SignedFill]:
        held = None if digest is None else self._held_fills.get(digest)
        if held is not None:
            return list(held)
        self.flush()
        return super().fills(digest)

    def notes(self, digest: bytes | None = None) -> list[SignedNote]:
        held = None if digest is None else self._held_notes.get(digest)
        if held is not None:
            return list(held)
        self.flush()
        return super().notes(digest)

    def fills_with_seq(self, seq: int) -> list[SignedFill]:
        if seq > self._forgotten_seq:
            return sorted(self._fills_by_seq.get(seq, ()), key=_fill_key)
        self.flush()
        return super().fills_with_seq(seq)

    def notes_with_seq(self, seq: int) -> list[SignedNote]:
        if seq > self._forgotten_seq:
            return sorted(self._notes_by_seq.get(seq, ()), key=_note_key)
        self.flush()
        return super().notes_with_seq(seq)

    def findings(self, status: str | None = None) -> list[Finding]:
        if status in ACTIVE:
            return [f for _, f in sorted(self._active.items()) if f.status == status]
        self.flush()
        return super().findings(status)

    def court_cap(self, digest: bytes) -> int | None:
        return self._caps.get(digest)

    def court_requested_at(self, digest: bytes) -> int | None:
        return self._requested.get(digest)

    def orders(self) -> list[StoredOrder]:
        self.flush()
        return super().orders()

    # Journal heads: the log's answers kept are read from memory (the real store's SQL
    # answers each of them with a scan of its tables, at every head).

    def located(self, key: bytes) -> int | None:
        return self._located.get(key)

    def located_at(self, seqs: Iterable[int]) -> list[bytes]:
        return [key for seq in seqs for key in self._located_by_seq.get(seq, ())]

    def leaf(self, seq: int) -> StoredLeaf | None:
        return self._leaves.get(seq)

    def fill_leaves_naming(self, seqs: Iterable[int]) -> list[int]:
        return sorted({leaf for seq in seqs for leaf in self._naming.get(seq, ())})

    def unproven(self, size: int) -> list[int]:
        wanted = self._message_seqs.union(self._located_by_seq, self._naming)
        return sorted(seq for seq in wanted if seq < size and seq not in self._leaves)

    def unlocated(self) -> tuple[list[StoredOrder], list[StoredCancel]]:
        """The working set's orders and cancels not located yet (a forgotten one is not
        asked about again: nothing more can happen to it)."""
        located = self._located
        orders = [o for o in self._orders.values() if not o.rejected and o.digest not in located]
        cancels = [
            c for c in self._cancels.values() if not c.rejected and c.request_hash not in located
        ]
        return orders, cancels

    def fills_from_seq(self, seq: int) -> list[SignedFill]:
        self.flush()
        return super().fills_from_seq(seq)

    def cursor(self, name: str) -> int:
        self.flush()
        return super().cursor(name)

    def integrity_check(self) -> str:
        self.flush()
        return super().integrity_check()

