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
                measurable but not provable: timestamps are the operator's word; a
                hold longer than ``maxPendingMs`` with a match in flight is, §12.6)
Ignore          a signed cancel with no note: the client forces it on-chain (rule 3)
FillAfterNote   a fill above the note's cap, after it: rule 1 (a) and (b)
Backdate        a note that misses fills it precedes: rule 1 (d) (and (a)/(e))
Equivocate      two different notes for one digest, both within the bounds: rule 2
WithholdNotes   no note off-chain; the on-chain answer (rule 3) reveals the held one
TargetSenders   what its inner policy leaves, for the targeted senders only
============== ===================================================================

Policies hold no engine state; randomness is passed in (a seeded ``random.Random``),
so the engine stays deterministic. Their own state (an rng) is not journaled.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import attrs

from cancelnote.api import CancelRequest
from cancelnote.messages import Order


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


@attrs.frozen
class HoldAndBackdate(Policy):
    """Hold every cancel (``Delay``) and backdate its note (``Backdate``): the operator
    that snipes during the hold and then claims it received the cancel earlier."""

    hold: Delay
    backdate: Backdate

    def on_cancel(self, ctx: CancelContext) -> int | None:
        return self.hold.on_cancel(ctx)

    def on_note(self, ctx: NoteContext) -> NotePlan:
        return self.backdate.on_note(ctx)


@attrs.frozen
class TargetSenders(Policy):
    """Apply ``policy`` to the cancels of ``senders`` only; answer everyone else honestly
    (an operator that cheats only the clients it expects not to defend themselves)."""

    policy: Policy
    senders: frozenset[bytes]

    def on_cancel(self, ctx: CancelContext) -> int | None:
        if ctx.request.tx.sender in self.senders:
            return self.policy.on_cancel(ctx)
        return ctx.now_ms

    def on_note(self, ctx: NoteContext) -> NotePlan:
        if ctx.order.sender in self.senders:
            return self.policy.on_note(ctx)
        return HONEST_PLAN


#: Every policy's name, as scenario files and ``cancelnote operator run --policy`` write it.
POLICY_NAMES = (
    "honest",
    "delay",
    "conditional_delay",
    "ignore",
    "backdate",
    "fill_after_note",
    "equivocate",
    "withhold_notes",
)


def build_policy(
    name: str, *, delay_ms: int = 0, backdate_ms: int = 0, ignore_p: float = 0.0, seed: int = 0
) -> Policy:
    """The policy called ``name``, the one table the CLI and the simulator share.

    ``delay_ms`` is the hold of ``delay``, ``conditional_delay`` and ``backdate`` (which
    holds only when it is positive); ``seed`` seeds ``ignore``'s draws.

    Raises:
        ValueError: an unknown name or an out-of-range parameter.
    """
    if delay_ms < 0 or backdate_ms < 0 or not 0 <= ignore_p <= 1:
        raise ValueError("delays are ms >= 0 and ignore_p a probability")
    if name == "backdate":
        backdate = Backdate(backdate_ms)
        return HoldAndBackdate(Delay(delay_ms), backdate) if delay_ms else backdate
    builders = {
        "honest": Honest,
        "delay": lambda: Delay(delay_ms),
        "conditional_delay": lambda: ConditionalDelay(delay_ms),
        "ignore": lambda: Ignore(ignore_p, random.Random(seed)),
        "fill_after_note": FillAfterNote,
        "equivocate": Equivocate,
        "withhold_notes": WithholdNotes,
    }
    if name not in builders:
        raise ValueError(f"unknown policy {name!r}: one of {', '.join(POLICY_NAMES)}")
    return builders[name]()
