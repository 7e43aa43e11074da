"""The court's decision rules, stated once in Python (docs/protocol.md §12, CancelCourt.vy).

Each function takes message objects and says which offence the court would find in them,
or ``None``: the verifier, the watchtower, the operator's tests and the simulator ask
these functions, never a rule of their own, and ``tests/test_rules.py`` checks that the
deployed court accepts a proof exactly when the predicate names an offence.

Every proof is about one order, given by its digest (the court recomputes it from the
``Order`` the proof carries, and the claim is for that order's owner): the operator's
messages must be about that digest, and their own ``sender`` fields never choose whom
the court pays (a wrong one is itself an offence: :func:`malformed_fill`,
:func:`note_fault`).

What the predicates do **not** check: signatures (the court requires the operator's, in
its own domain; callers verify them before relying on a finding) and whether a claim was
already filed (court state).

The journal-heads rules (the HeadsCourt, protocol §21) come last: they read the
operator's signed tree heads and the leaves of its log, with their Merkle proofs
(:mod:`cancelnote.transparency`); ``tests/test_heads_court.py`` checks them against the
bytecode for random trees.
"""

from __future__ import annotations

from collections.abc import Sequence

from cancelnote.messages import (
    Cancellation,
    CancellationNote,
    CancellationProducts,
    Fill,
    JournalHead,
    Match,
    Order,
)
from cancelnote.transparency import LeafKind, LeafProof, ProofError, proves_inconsistency

from .court import Offence

#: The clauses of rule 1 (fill after note), in the order the specification lists them.
RULE1_CLAUSES = "abcdef"


def rule1(fill: Fill, note: CancellationNote) -> str:
    """Which clauses of rule 1 (§12.1) the pair satisfies, e.g. ``"ab"``; ``""`` is none.

    Raises:
        ValueError: the fill and the note are of different orders.
    """
    if fill.order_digest != note.order_digest:
        raise ValueError("rule 1 compares a fill and a note of the same order")
    counted_last = fill.struct_hash() == note.last_fill_hash
    clauses = {
        "a": fill.filled_total > note.filled_amount + note.pending_amount,
        "b": fill.seq > note.seq and note.pending_amount == 0,
        "c": fill.seq > note.seq and fill.timestamp_ms > note.pending_until_ms,
        "d": note.last_fill_seq < fill.seq < note.seq,
        "e": fill.seq <= note.last_fill_seq and fill.filled_total > note.filled_amount,
        "f": fill.seq == note.last_fill_seq
        and (not counted_last or fill.filled_total != note.filled_amount),
    }
    return "".join(name for name, holds in clauses.items() if holds)


def rule2_notes(first: CancellationNote, second: CancellationNote) -> bool:
    """Rule 2 (1): two different notes for one digest are equivocation.

    "Different" is of the signed content (equal fields hash equally), never the signature.
    """
    return first.order_digest == second.order_digest and first != second


def fill_after_note(digest: bytes, note: CancellationNote, fill: Fill) -> Offence | None:
    """``proveFillAfterNote``: a fill of the order ``digest`` its note rules out."""
    if note.order_digest != digest or fill.order_digest != digest:
        return None
    return Offence.FILL_AFTER_NOTE if rule1(fill, note) else None


def note_equivocation(
    digest: bytes, note1: CancellationNote, note2: CancellationNote
) -> Offence | None:
    """``proveEquivocationNotes``: two different notes of the order ``digest``."""
    if note1.order_digest != digest:
        return None
    return Offence.NOTE_EQUIVOCATION if rule2_notes(note1, note2) else None


def fill_contradiction(digest: bytes, fill1: Fill, fill2: Fill) -> Offence | None:
    """``proveEquivocationFills`` with ``fill1`` of the order ``digest``.

    Same seq and different content: ``FILL_EQUIVOCATION`` (``fill2`` of any order).
    Different seqs (``fill1`` the earlier, both of the order): ``FILLS_OUT_OF_ORDER``
    when the later total does not hold the earlier total plus its own amount.
    """
    if fill1.order_digest != digest:
        return None
    if fill1.seq == fill2.seq:
        return Offence.FILL_EQUIVOCATION if fill1 != fill2 else None
    if fill2.order_digest != digest or fill1.seq > fill2.seq:
        return None
    total1, total2 = fill1.filled_total, fill2.filled_total
    if total2 <= total1 or total2 < total1 + fill2.amount:
        return Offence.FILLS_OUT_OF_ORDER
    return None


def in_court_order(fill1: Fill, fill2: Fill) -> tuple[Fill, Fill]:
    """The pair as ``proveEquivocationFills`` takes it: the earlier seq first."""
    return (fill1, fill2) if fill1.seq <= fill2.seq else (fill2, fill1)


def malformed_fill(order: Order, digest: bytes, fill: Fill) -> Offence | None:
    """``proveMalformedFill``: a fill of the order (digest ``digest``) with a zero amount,
    a total below its own amount, or a sender that is not the order's."""
    if fill.order_digest != digest:
        return None
    broken = fill.amount == 0 or fill.filled_total < fill.amount or fill.sender != order.sender
    return Offence.MALFORMED_FILL if broken else None


def breaks_order(order: Order, fill: Fill) -> bool:
    """Whether ``fill`` is worse than ``order``'s limit or fills more than its size (§12.4).

    The caller checks that ``fill.order_digest`` is the order's digest (it needs the domain).
    """
    if order.amount > 0 and fill.price_x18 > order.price_x18:
        return True  # a buy above its limit
    if order.amount < 0 and fill.price_x18 < order.price_x18:
        return True  # a sell below its limit
    return fill.filled_total > abs(order.amount)


def bad_fill(order: Order, digest: bytes, fill: Fill) -> Offence | None:
    """``proveBadFill``: ``fill`` of the order whose digest is ``digest`` breaks it."""
    if fill.order_digest != digest:
        return None
    return Offence.BAD_FILL if breaks_order(order, fill) else None


def note_fault(order: Order, note: CancellationNote, max_pending_ms: int) -> str | None:
    """The first bound ``note`` breaks for ``order`` (§12.6), as the court's revert reason
    (``answerCancel`` refuses such a note with it), or ``None``.

    ``max_pending_ms`` is the court's ``maxPendingMs``.
    """
    if note.sender != order.sender:
        return "court: note is for another sender"
    if note.filled_amount + note.pending_amount > abs(order.amount):
        return "court: note promises more than the order"
    if note.pending_until_ms > note.received_at_ms + max_pending_ms:
        return "court: note pending for too long"
    counted = note.filled_amount != 0
    if counted != (note.last_fill_seq != 0) or counted != (note.last_fill_hash != bytes(32)):
        return "court: note misstates its last fill"
    if note.last_fill_seq >= note.seq:
        return "court: note's last fill is not before it"
    return None


def bad_note(
    order: Order, digest: bytes, note: CancellationNote, max_pending_ms: int
) -> Offence | None:
    """``proveBadNote``: a note of the order (digest ``digest``) breaking a bound."""
    if note.order_digest != digest:
        return None
    return None if note_fault(order, note, max_pending_ms) is None else Offence.NOTE_OUT_OF_BOUNDS


def fill_above_cap(fill: Fill, cap: int | None) -> Offence | None:
    """``proveFillAboveCap``: a fill above the cap an answered forced cancel recorded
    (``cap`` is ``None`` when the order's forced cancel was not answered).

    The caller passes the cap of the fill's own digest.
    """
    if cap is None:
        return None
    return Offence.FILL_AFTER_NOTE if fill.filled_total > cap else None


def fill_after_request(
    fill: Fill, requested_at_s: int | None, max_pending_ms: int
) -> Offence | None:
    """``proveFillAfterRequest``: a fill stamped after a forced cancel took effect, i.e.
    later than the request's block time (``requested_at_s``, ``None`` if no request) plus
    what may still have been in flight (``max_pending_ms``).

    The caller passes the request time of the fill's own digest.
    """
    if requested_at_s is None:
        return None
    late = fill.timestamp_ms > requested_at_s * 1000 + max_pending_ms
    return Offence.FILL_AFTER_NOTE if late else None


# ---------------------------------------------------------------------------------------
# Journal heads (HeadsCourt).


def inconsistent_heads(
    first: JournalHead, second: JournalHead, proof: Sequence[bytes]
) -> Offence | None:
    """``proveInconsistentHeads``: ``first`` (no larger than ``second``) is not a prefix of
    ``second``: one size and two roots, or a consistency proof of the second tree that
    yields another first root (:func:`~cancelnote.transparency.proves_inconsistency`)."""
    if first.size > second.size:
        return None
    found = proves_inconsistency(first.size, first.root, second.size, second.root, proof)
    return Offence.INCONSISTENT_HEADS if found else None


def backdated(digest: bytes, fill: Fill, head: JournalHead) -> Offence | None:
    """``proveBackdated``: a fill of the order ``digest`` numbered at or after the head's
    size (it was logged after the head was signed) but stamped before the head's time."""
    if fill.order_digest != digest:
        return None
    late = fill.seq >= head.size and fill.timestamp_ms < head.timestamp_ms
    return Offence.BACKDATED if late else None


def included(proof: LeafProof, head: JournalHead) -> bool:
    """Whether ``proof`` shows its leaf at its index in ``head`` (the signature unchecked)."""
    try:
        proof.verify(head.size, head.root)
    except ProofError:
        return False
    return True


def cancel_names(
    cancellation: Cancellation | CancellationProducts, order: Order, digest: bytes
) -> bool:
    """Whether the cancel request is one of ``order`` (digest ``digest``): of its sender, and
    naming its digest with its product id, or (by product) its product or all products."""
    if cancellation.sender != order.sender:
        return False
    if isinstance(cancellation, CancellationProducts):
        return not cancellation.product_ids or order.product_id in cancellation.product_ids
    return any(
        d == digest
        and i < len(cancellation.product_ids)
        and cancellation.product_ids[i] == order.product_id
        for i, d in enumerate(cancellation.digests)
    )


def _is_leaf(proof: LeafProof, head: JournalHead, kind: LeafKind, content: bytes) -> bool:
    leaf = proof.leaf
    return leaf.kind == kind and leaf.content == content and included(proof, head)


def match_after_cancel(
    order: Order,
    digest: bytes,
    cancellation: Cancellation | CancellationProducts,
    match: Match,
    head: JournalHead,
    order_leaf: LeafProof,
    cancel_leaf: LeafProof,
    match_leaf: LeafProof,
) -> Offence | None:
    """``proveMatchAfterCancel``: the order accepted (``order_leaf``), then a cancel of it
    received (``cancel_leaf``), then a match of it (``match_leaf``), all in ``head``. The
    cancel took effect when logged, so this match is one no honest engine makes (a match
    in flight at the cancel was logged before it)."""
    if not cancel_names(cancellation, order, digest):
        return None
    if not order_leaf.index < cancel_leaf.index < match_leaf.index:
        return None
    if digest not in (match.maker, match.taker):
        return None
    leaves = (
        (order_leaf, LeafKind.ORDER, order.struct_hash()),
        (cancel_leaf, LeafKind.CANCEL, cancellation.struct_hash()),
        (match_leaf, LeafKind.MATCH, match.struct_hash()),
    )
    if not all(_is_leaf(proof, head, kind, content) for proof, kind, content in leaves):
        return None
    return Offence.FILL_AFTER_NOTE


def is_fill_leaf(proof: LeafProof, fill: Fill, head: JournalHead) -> bool:
    """Whether ``proof`` is ``fill``'s own leaf in ``head``: at its seq, with its time."""
    if proof.index != fill.seq or proof.leaf.timestamp_ms != fill.timestamp_ms:
        return False
    return _is_leaf(proof, head, LeafKind.FILL, fill.struct_hash())


def settles(match: Match, fill: Fill) -> bool:
    """Whether ``fill`` may be the settlement of ``match``: one side's, same size and price."""
    return (
        fill.order_digest in (match.maker, match.taker)
        and match.amount == fill.amount
        and match.price_x18 == fill.price_x18
    )


def false_match(
    digest: bytes,
    fill: Fill,
    head: JournalHead,
    fill_leaf: LeafProof,
    named_leaf: LeafProof | None,
    match: Match | None,
) -> Offence | None:
    """``proveFalseMatch``: ``fill`` (of the order ``digest``) names by its leaf's ref a
    leaf that is not its match: at or after the fill, not a match, or a match it cannot
    settle. ``named_leaf`` (the leaf at the ref) and ``match`` (its content, when a match)
    may be ``None`` where the court ignores them."""
    if fill.order_digest != digest or not is_fill_leaf(fill_leaf, fill, head):
        return None
    ref = fill_leaf.leaf.ref
    if ref >= fill.seq:
        return Offence.FALSE_MATCH
    if named_leaf is None or named_leaf.index != ref or not included(named_leaf, head):
        return None
    if named_leaf.leaf.kind != LeafKind.MATCH:
        return Offence.FALSE_MATCH
    if match is None or named_leaf.leaf.content != match.struct_hash():
        return None
    return None if settles(match, fill) else Offence.FALSE_MATCH


def match_reused(
    digest: bytes,
    fill1: Fill,
    fill2: Fill,
    head: JournalHead,
    leaf1: LeafProof,
    leaf2: LeafProof,
) -> Offence | None:
    """``proveMatchReused``: two different fills of the order ``digest`` whose leaves name
    one match (each side of a match settles once)."""
    if fill1.order_digest != digest or fill2.order_digest != digest or fill1 == fill2:
        return None
    if not (is_fill_leaf(leaf1, fill1, head) and is_fill_leaf(leaf2, fill2, head)):
        return None
    return Offence.FALSE_MATCH if leaf1.leaf.ref == leaf2.leaf.ref else None
