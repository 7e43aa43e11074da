"""The order lifecycle: every state an order can be in and every step between them.

All state logic lives here, as one table (h11's ``_state.py`` is the model); the engine
asks :func:`step` for the next state and never assigns a state itself. A step missing
from the table is a bug in the engine and raises
:class:`~cancelnote.operator.errors.InvalidTransition` naming event, state, order and
sender. A cancel refused in a given state does not step at all: :data:`CANCEL_REFUSALS`
says which per-order ``reason_code`` the reply carries instead.
"""

from __future__ import annotations

import enum

from .errors import InvalidTransition


class OrderState(enum.Enum):
    """Where an order stands. ``FILLED``, ``CANCELLED`` and ``EXPIRED`` are terminal."""

    ACTIVE = "ACTIVE"  # resting (or about to rest) with an unmatched remainder
    FILLED = "FILLED"  # fully matched; some matches may still be in flight
    CANCELLED = "CANCELLED"  # a note was signed; the remainder left the book
    EXPIRED = "EXPIRED"  # its expiration passed while it rested


class Event(enum.Enum):
    """What happens to an order (settling a match changes amounts, never the state)."""

    MATCH = "MATCH"  # matched, some remainder left
    MATCH_LAST = "MATCH_LAST"  # matched, nothing left
    CANCEL = "CANCEL"  # an off-chain cancel request was answered with a note
    FORCE_CANCEL = "FORCE_CANCEL"  # an on-chain requestCancel was answered with a note
    EXPIRE = "EXPIRE"  # its expiration passed while it was on the book


class CancellationType(enum.Enum):
    OFF_CHAIN = "OFF_CHAIN"
    ON_CHAIN = "ON_CHAIN"


class ReasonCode(enum.Enum):
    """Why one order of a cancel request was not cancelled (Immutable-style)."""

    FILLED = "FILLED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_CANCELLED = "ALREADY_CANCELLED"
    NOT_OWNER = "NOT_OWNER"
    EXPIRED = "EXPIRED"


_A, _F, _C, _X = OrderState.ACTIVE, OrderState.FILLED, OrderState.CANCELLED, OrderState.EXPIRED

TRANSITIONS: dict[tuple[OrderState, Event], OrderState] = {
    (_A, Event.MATCH): _A,
    (_A, Event.MATCH_LAST): _F,
    (_A, Event.CANCEL): _C,
    (_A, Event.FORCE_CANCEL): _C,
    (_A, Event.EXPIRE): _X,
    # The court still needs a note for a filled or expired order it is asked about:
    # the note is signed, the state stays.
    (_F, Event.FORCE_CANCEL): _F,
    (_X, Event.FORCE_CANCEL): _X,
    # Only an adversarial policy (FillAfterNote) leaves a cancelled order on the book,
    # so only then can a cancelled order match or expire off the book.
    (_C, Event.MATCH): _C,
    (_C, Event.MATCH_LAST): _C,
    (_C, Event.EXPIRE): _C,
}

#: A cancel of an order in one of these states is refused with this per-order code.
CANCEL_REFUSALS: dict[OrderState, ReasonCode] = {
    _F: ReasonCode.FILLED,
    _C: ReasonCode.ALREADY_CANCELLED,
    _X: ReasonCode.EXPIRED,
}


def step(state: OrderState, event: Event, digest: bytes, sender: bytes) -> OrderState:
    """The state after ``event``.

    Raises:
        InvalidTransition: the table has no such step (an engine bug).
    """
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise InvalidTransition(
            f"{event.value} is not allowed for order 0x{digest.hex()} of sender"
            f" 0x{sender.hex()} in state {state.value}"
        ) from None
