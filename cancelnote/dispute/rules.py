"""The court's decision rules, stated once in Python (docs/protocol.md §12, CancelCourt.vy).

Each function takes message objects and says which offence the court would find in them,
or ``None``: the verifier, the watchtower, the operator's tests and the simulator ask
these functions, never a rule of their own, and ``tests/test_rules.py`` checks that the
deployed court accepts a proof exactly when the predicate names an offence.

What the predicates do **not** check: signatures (the court requires the operator's, or
the owner's for an order, in its own domain; callers verify them before relying on a
finding) and whether an offence was already paid (court state). Argument order is the
court's: where a proof takes two messages, the first one names the payee.
"""

from __future__ import annotations

from cancelnote.messages import CancellationNote, Fill, Order

from .court import Offence

#: The clauses of rule 1 (fill after note), in the order the specification lists them.
RULE1_CLAUSES = "abcde"


def rule1(fill: Fill, note: CancellationNote) -> str:
    """Which clauses of rule 1 (§12.1) the pair satisfies, e.g. ``"ab"``; ``""`` is none.

    Clauses only: whether the court accepts the pair also needs one digest and one sender
    (:func:`fill_after_note`).

    Raises:
        ValueError: the fill and the note are of different orders.
    """
    if fill.order_digest != note.order_digest:
        raise ValueError("rule 1 compares a fill and a note of the same order")
    clauses = {
        "a": fill.filled_total > note.filled_amount + note.pending_amount,
        "b": fill.seq > note.seq and note.pending_amount == 0,
        "c": fill.seq > note.seq and fill.timestamp_ms > note.pending_until_ms,
        "d": note.last_fill_seq < fill.seq < note.seq,
        "e": fill.seq <= note.last_fill_seq and fill.filled_total > note.filled_amount,
    }
    return "".join(name for name, holds in clauses.items() if holds)


def rule2_notes(first: CancellationNote, second: CancellationNote) -> bool:
    """Rule 2 (1): two different notes for one digest are equivocation.

    "Different" is of the signed content (equal fields hash equally), never the signature.
    """
    return first.order_digest == second.order_digest and first != second


def fill_after_note(note: CancellationNote, fill: Fill) -> Offence | None:
    """``proveFillAfterNote``: a fill the note rules out (one digest, one sender)."""
    if note.order_digest != fill.order_digest or note.sender != fill.sender:
        return None
    return Offence.FILL_AFTER_NOTE if rule1(fill, note) else None


def note_equivocation(note1: CancellationNote, note2: CancellationNote) -> Offence | None:
    """``proveEquivocationNotes``: two different notes for one digest."""
    return Offence.NOTE_EQUIVOCATION if rule2_notes(note1, note2) else None


def fill_contradiction(fill1: Fill, fill2: Fill) -> Offence | None:
    """``proveEquivocationFills`` with ``fill1`` first: two fills that cannot both be true.

    Same seq and different content: ``FILL_EQUIVOCATION`` (any digests). Different seqs
    (``fill1`` the earlier, one digest): ``FILLS_OUT_OF_ORDER`` when the later total does
    not hold the earlier total plus its own amount (the court's form of §12.2 (3)).
    """
    if fill1.seq == fill2.seq:
        return Offence.FILL_EQUIVOCATION if fill1 != fill2 else None
    if fill1.order_digest != fill2.order_digest or fill1.seq > fill2.seq:
        return None
    total1, total2 = fill1.filled_total, fill2.filled_total
    if total2 <= total1 or total2 < total1 + fill2.amount:
        return Offence.FILLS_OUT_OF_ORDER
    return None


def in_court_order(fill1: Fill, fill2: Fill) -> tuple[Fill, Fill]:
    """The pair as ``proveEquivocationFills`` takes it: the earlier seq first."""
    return (fill1, fill2) if fill1.seq <= fill2.seq else (fill2, fill1)


def malformed_fill(fill: Fill) -> Offence | None:
    """``proveMalformedFill``: a zero amount, or a total below the fill's own amount."""
    return Offence.MALFORMED_FILL if fill.amount == 0 or fill.filled_total < fill.amount else None


def breaks_order(order: Order, fill: Fill) -> bool:
    """Whether ``fill`` is worse than ``order``'s limit or fills more than its size (§12.4).

    The caller checks that ``fill.order_digest`` is the order's digest (it needs the domain).
    """
    if order.amount > 0 and fill.price_x18 > order.price_x18:
        return True  # a buy above its limit
    if order.amount < 0 and fill.price_x18 < order.price_x18:
        return True  # a sell below its limit
    return fill.filled_total > abs(order.amount)


def bad_fill(order: Order, order_digest: bytes, fill: Fill) -> Offence | None:
    """``proveBadFill``: ``fill`` of the order whose digest is ``order_digest`` breaks it."""
    if fill.order_digest != order_digest:
        return None
    return Offence.BAD_FILL if breaks_order(order, fill) else None


def fill_above_cap(fill: Fill, cap: int | None) -> Offence | None:
    """``proveFillAboveCap``: a fill above the cap a forced cancel recorded (``None``: none).

    The court also requires the fill's sender to be the request's owner; the caller passes
    the cap of the fill's own digest.
    """
    if cap is None:
        return None
    return Offence.FILL_AFTER_NOTE if fill.filled_total > cap else None
