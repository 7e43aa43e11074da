"""How the operator behaves at its two decision points: honest, or like a cheater.

The engine consults its :class:`Policy` when an off-chain cancel arrives
(:meth:`Policy.on_cancel`: process now, hold until later, or drop) and when it is about
to sign a note (:meth:`Policy.on_note`: what time to sign, whether to hide fills,
publish, equivocate or leave the order matchable). Matches need no hook of their own:
what a cheater does at match time (let a cancelled order fill) is decided when it signs
the note. An on-chain ``requestCancel`` (``Engine.force_cancel``) is never held or
dropped: an operator that ignores the court simply is not asked (a simulation that
wants a default does not call ``force_cancel``).

An adversarial policy never fakes evidence: every note and fill it causes is signed by
the operator key, numbered by the journal and journaled, exactly what a real cheating
operator running this engine would leave behind. Which court rule catches it:

============== ===================================================================
policy          evidence left
============== ===================================================================
Delay           notes whose ``receivedAtMs`` precedes fills they count (latency,
                measurable but not slashable: timestamps are the operator's word)
Ignore          a signed cancel with no note: the client forces it on-chain (rule 3)
FillAfterNote   a fill above the note's cap, after it: rule 1 (a) and (b)
Backdate        a note that misses fills it precedes: rule 1 (d) (and (a)/(e))
Equivocate      two different notes for one digest: rule 2
WithholdNotes   no note off-chain; the on-chain answer (rule 3) reveals the held one
============== ===================================================================

Policies hold no engine state; randomness is passed in (a seeded ``random.Random``),
so the engine stays deterministic. Their own state (an rng) is not journaled.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import attrs

from cancelnote.messages import Order

from .api import CancelRequest

#: How far an equivocating note pushes its pending window beyond the time of signing.
EQUIVOCATION_WINDOW_MS = 3_600_000


@attrs.frozen
class CancelContext:
    """What a policy sees when a cancel request arrives."""

    now_ms: int
    request: CancelRequest
    targets: tuple[Order, ...]  # the sender's live orders the request would cancel
    mark_prices: Mapping[int, int]  # product id -> mark price x18, as the caller set them


@attrs.frozen
class NoteContext:
    """What a policy sees when the engine is about to sign a note."""

    now_ms: int
    order: Order
    received_at_ms: int  # when the cancel truly arrived
    on_chain: bool


@attrs.frozen
class NotePlan:
    """How to sign one note. The defaults are the honest plan.

    Attributes:
        received_at_ms: the ``receivedAtMs`` to sign; ``None`` is the truth. An earlier
            time also hides the fills settled after it (that is what backdating buys).
        published: false to keep the note out of the reply and the stream.
        equivocate: also sign a second, different note for the same digest.
        fills_after: matches the cancelled order may still take (it stays on the book).
    """

    received_at_ms: int | None = None
    published: bool = True
    equivocate: bool = False
    fills_after: int = 0


HONEST_PLAN = NotePlan()


class Policy:
    """The honest behaviour; subclasses override one decision each."""

    def on_cancel(self, ctx: CancelContext) -> int | None:
        """When to process the cancel: ``ctx.now_ms`` (now), later, or ``None`` (drop).

        A dropped request gets no reply, no note, and changes no state.
        """
        return ctx.now_ms

    def on_note(self, ctx: NoteContext) -> NotePlan:
        return HONEST_PLAN


class Honest(Policy):
    """Answer every cancel at once with a true, published, final note."""


@attrs.frozen
class Delay(Policy):
    """Hold every off-chain cancel ``delay_ms`` before processing it.

    Matches can still hit the order meanwhile; the note then counts them and signs the
    true arrival time, so the evidence is latency, not a fraud proof.
    """

    delay_ms: int

    def on_cancel(self, ctx: CancelContext) -> int | None:
        return ctx.now_ms + self.delay_ms


@attrs.frozen
class ConditionalDelay(Policy):
    """Hold a cancel ``delay_ms`` only when the mark price moved against a target order.

    Against a buy means the mark fell below its limit (a seller gains by hitting it);
    against a sell, the mark rose above it. Products without a mark are never held.
    """

    delay_ms: int

    def on_cancel(self, ctx: CancelContext) -> int | None:
        if any(_stale(o, ctx.mark_prices) for o in ctx.targets):
            return ctx.now_ms + self.delay_ms
        return ctx.now_ms


def _stale(order: Order, marks: Mapping[int, int]) -> bool:
    mark = marks.get(order.product_id)
    if mark is None:
        return False
    return mark < order.price_x18 if order.amount > 0 else mark > order.price_x18


@attrs.define
class Ignore(Policy):
    """Drop each off-chain cancel with probability ``p``: no reply, no note at all."""

    p: float
    rng: random.Random

    def on_cancel(self, ctx: CancelContext) -> int | None:
        if self.rng.random() < self.p:
            return None
        return ctx.now_ms


class FillAfterNote(Policy):
    """Sign the note, then let the order take one more match anyway."""

    def on_note(self, ctx: NoteContext) -> NotePlan:
        return NotePlan(fills_after=1)


@attrs.frozen
class Backdate(Policy):
    """Sign ``receivedAtMs`` ``backdate_ms`` earlier than the truth, hiding later fills."""

    backdate_ms: int

    def on_note(self, ctx: NoteContext) -> NotePlan:
        return NotePlan(received_at_ms=max(0, ctx.received_at_ms - self.backdate_ms))


class Equivocate(Policy):
    """Sign a second note for the digest that raises its cap to the whole order."""

    def on_note(self, ctx: NoteContext) -> NotePlan:
        return NotePlan(equivocate=True)


class WithholdNotes(Policy):
    """Cancel off-chain but never send the note (an on-chain request still gets it)."""

    def on_note(self, ctx: NoteContext) -> NotePlan:
        return HONEST_PLAN if ctx.on_chain else NotePlan(published=False)
