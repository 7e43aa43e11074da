"""The operator's transparency log: the journal's Merkle tree, its signed heads, its proofs.

:class:`HeadLog` is driven by the server's engine task, the only place where the order of
entries and the time are decided (protocol §21):

* every batch's entries become leaves at once (:meth:`HeadLog.extend`: one leaf hash and,
  amortised, one node hash each), and the complete subtrees they finish travel with the
  batch to the journal commit (:class:`~.journal.LogWrite`), so the tree on disk is never
  ahead of or behind the rows;
* every ``interval_ms`` (and whenever a client asks) the head of the log as the batch leaves
  it is signed with the batch's time (:meth:`HeadLog.sign`), so a head's time is at least
  that of every leaf it covers and at most that of every leaf after it; it is committed with
  the batch and only then pushed: durable before visible, like notes;
* queries (:meth:`HeadLog.inclusion`, :meth:`~HeadLog.consistency`, :meth:`~HeadLog.locate`)
  are answered from what is committed, on a read-only connection, for any size up to the
  durable one.

At start (:meth:`HeadLog.open` then :meth:`HeadLog.check` for every replayed entry and
:meth:`HeadLog.finish`) nothing is rebuilt: the border of the tree is read from disk, each
leaf on disk is checked against its row, the border's root against the one committed and
the last head's root; a journal that has no log yet (or a shorter one) gets the missing
leaves from its rows, committed before anything is served.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from cancelnote.crypto import Signer
from cancelnote.messages import Domain, JournalHead, Match
from cancelnote.transparency import (
    CompactTree,
    Leaf,
    LeafProof,
    SignedHead,
    consistency_path,
    genesis_leaf,
    inclusion_path,
    path_to_wire,
    range_hash,
)

from .errors import JournalCorrupt, LogRange, NotLogged
from .journal import (
    LOCATED_KINDS,
    Journal,
    JournalEntry,
    LogWrite,
    Matched,
    log_leaf,
)

#: Most seqs one ``inclusion`` query may ask for.
MAX_INCLUSION_SEQS = 32
#: The default head interval ``H`` (``operator run --heads-ms``).
HEADS_MS = 100


class HeadLog:
    """The log of one journal, its heads every ``interval_ms``, its proofs (module docstring).

    Use :meth:`open`. Only the engine task calls :meth:`extend`, :meth:`sign` and
    :meth:`take`; the dispatcher calls :meth:`committed` after each commit.
    """

    def __init__(
        self, journal: Journal, signer: Signer, domain: Domain, interval_ms: int = HEADS_MS
    ) -> None:
        if interval_ms <= 0:
            raise ValueError(f"the head interval must be positive, got {interval_ms} ms")
        self.journal = journal
        self.signer = signer
        self.domain = domain
        self.interval_ms = interval_ms
        self.genesis = genesis_leaf(domain, signer.address)
        state = journal.log_state()
        self.tree = CompactTree.at(state.size, journal.tree_node) if state.size else CompactTree()
        if state.size and self.tree.root() != state.root:
            raise JournalCorrupt(
                f"journal {journal.path}: its log's border does not hash to its root"
            )
        #: The size and last head committed (what clients may see and ask about).
        self.durable_size = state.size
        self.last_head: SignedHead | None = state.head
        self._signed_at = -(2**63) if state.head is None else state.head.head.timestamp_ms
        self._nodes: list[tuple[int, int, bytes]] = []
        self._located: list[tuple[bytes, int]] = []
        self._stored = self._stored_leaves()
        try:
            if state.size and next(self._stored, None) != self.genesis.hash():
                raise JournalCorrupt(f"journal {journal.path}: its log is another operator's")
            if state.head is not None:
                self._check_head(state.head)
        except BaseException:
            self._stored.close()
            raise
        if not state.size:
            self._append(self.genesis, 0)
        self._reader = journal.reader()

    @classmethod
    def open(
        cls, journal: Journal, signer: Signer, domain: Domain, interval_ms: int = HEADS_MS
    ) -> HeadLog:
        """The log of ``journal``, ready to :meth:`check` the journal's entries as they are
        replayed (then :meth:`finish`).

        Raises:
            JournalCorrupt: the committed border, root or last head do not agree.
        """
        return cls(journal, signer, domain, interval_ms)

    @property
    def floor_ms(self) -> int:
        """No entry after a restart may be stamped before this: the last head's time."""
        return 0 if self.last_head is None else self.last_head.head.timestamp_ms

    # --- start-up -------------------------------------------------------------------------

    def _stored_leaves(self) -> Iterator[bytes]:
        for key, value in self.journal.tree_rows():
            if key & 63 == 0:
                yield value

    def check(self, entry: JournalEntry) -> None:
        """A replayed entry: its leaf must be the one on disk, or (past the log's end) it
        becomes the next leaf.

        Raises:
            JournalCorrupt: the leaf on disk is another (the tree or the rows changed).
        """
        leaf = log_leaf(entry)
        if entry.seq < self.durable_size:
            if next(self._stored, None) != leaf.hash():
                raise JournalCorrupt(
                    f"journal {self.journal.path}: leaf {entry.seq} of its log is not row"
                    f" {entry.seq} ({entry.KIND}): the log or the rows were changed"
                )
        else:
            self._append(leaf, entry.seq)

    def finish(self) -> None:
        """After the last replayed entry: check that the log and the rows end together,
        and commit the leaves the log lacked.

        Raises:
            JournalCorrupt: the log has leaves the journal has not.
        """
        self._stored.close()
        if self.tree.size != self.journal.last_seq() + 1:
            raise JournalCorrupt(
                f"journal {self.journal.path}: its log has {self.tree.size} leaves for"
                f" {self.journal.last_seq()} entries"
            )
        if self._nodes:
            self.commit(())

    def commit(self, entries: Sequence[JournalEntry]) -> None:
        """Commit ``entries`` with their leaves now, outside the server (before it serves)."""
        self.extend(entries)
        write = self.take(None)
        self.journal.append_many(entries, [write])
        self.committed(write)

    def _check_head(self, head: SignedHead) -> None:
        size = head.head.size
        if (
            size > self.durable_size
            or range_hash(0, size, self.journal.tree_node) != head.head.root
        ):
            raise JournalCorrupt(
                f"journal {self.journal.path}: its last head (size {size}) is not of its log"
            )

    # --- the engine task ------------------------------------------------------------------

    def _append(self, leaf: Leaf, seq: int) -> None:
        self._nodes += self.tree.append(leaf.hash())
        if leaf.kind in LOCATED_KINDS:
            self._located.append((leaf.content, seq))

    def extend(self, entries: Sequence[JournalEntry]) -> None:
        """The leaves of a batch's entries (in seq order, right after the last ones)."""
        for entry in entries:
            if entry.seq != self.tree.size:
                raise JournalCorrupt(f"log leaf {entry.seq} after {self.tree.size - 1}")
            self._append(log_leaf(entry), entry.seq)

    def due(self, now_ms: int) -> bool:
        """Whether a head is due at ``now_ms`` (``interval_ms`` after the last one)."""
        return now_ms >= self._signed_at + self.interval_ms

    def until_due_s(self, now_ms: int) -> float:
        """Seconds from ``now_ms`` until the next head is due (0 if it is)."""
        return max(self._signed_at + self.interval_ms - now_ms, 0) / 1000

    def sign(self, now_ms: int) -> SignedHead:
        """The head of the log as it is now (every leaf so far), stamped ``now_ms``."""
        head = JournalHead(self.tree.size, self.tree.root(), now_ms)
        self._signed_at = now_ms
        return SignedHead(head, self.signer.sign_hash(head.digest(self.domain)))

    def take(self, head: SignedHead | None) -> LogWrite:
        """What the next commit must add: the nodes and located leaves since the last
        take, and ``head`` (signed over exactly them)."""
        write = LogWrite(self._nodes, self._located, self.tree.size, self.tree.root(), head)
        self._nodes, self._located = [], []
        return write

    def committed(self, write: LogWrite) -> None:
        """``write`` is durable: what it covers may be shown and asked about."""
        self.durable_size = write.size
        if write.head is not None:
            self.last_head = write.head

    # --- queries (what is committed) ------------------------------------------------------

    def _check_size(self, size: int) -> None:
        if not 0 < size <= self.durable_size:
            raise LogRange(f"size {size} is not in the log (1 to {self.durable_size} leaves)")

    def _leaf(self, seq: int) -> tuple[Leaf, Match | None]:
        if seq == 0:
            return self.genesis, None
        entry = self._reader.entry(seq)
        return log_leaf(entry), entry.match if isinstance(entry, Matched) else None

    def inclusion(self, size: int, seqs: Sequence[int]) -> dict[str, Any]:
        """``{"size", "proofs": [{"seq", "leaf", "path"[, "match"]}, ...]}``: each leaf
        with its path in the log of ``size`` leaves (a match leaf with its match).

        Raises:
            LogRange: the size is not a durable size of the log, a seq is not below it,
                or more than :data:`MAX_INCLUSION_SEQS` are asked.
        """
        self._check_size(size)
        if len(seqs) > MAX_INCLUSION_SEQS:
            raise LogRange(f"at most {MAX_INCLUSION_SEQS} seqs a query, got {len(seqs)}")
        proofs = []
        for seq in seqs:
            if seq >= size:
                raise LogRange(f"seq {seq} is not in the log of {size} leaves")
            leaf, match = self._leaf(seq)
            item = LeafProof(seq, leaf, inclusion_path(seq, size, self._reader.node)).to_wire()
            if match is not None:
                item["match"] = match.to_wire()
            proofs.append(item)
        return {"size": str(size), "proofs": proofs}

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        """``{"first", "second", "path"}``: the consistency proof between two durable sizes
        (empty for one size).

        Raises:
            LogRange: a size is not durable, or ``first > second``.
        """
        self._check_size(second)
        if not 0 < first <= second:
            raise LogRange(f"no consistency proof from {first} to {second} leaves")
        path = [] if first == second else consistency_path(first, second, self._reader.node)
        return {"first": str(first), "second": str(second), "path": path_to_wire(path)}

    def locate(self, content: bytes) -> dict[str, Any]:
        """``{"seq"}`` of the order or cancel leaf whose content (its message's struct hash)
        is ``content``, once durable.

        Raises:
            NotLogged: no such leaf is committed.
        """
        seq = self._reader.locate(content)
        if seq is None or seq >= self.durable_size:
            raise NotLogged(f"no order or cancel 0x{content.hex()} is in the log")
        return {"seq": str(seq)}

    def close(self) -> None:
        self._stored.close()
        self._reader.close()
