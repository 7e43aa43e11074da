"""The operator's errors: each leaf has a stable ``code`` that goes on the wire unchanged.

Rejections (the peer's fault) change no engine state; faults are ours. Malformed
messages and bad signatures reuse :class:`~cancelnote.errors.MessageError`
(``INVALID_MESSAGE``) and :class:`~cancelnote.errors.SignatureError`
(``INVALID_SIGNATURE``).
"""

from cancelnote.errors import Fault, Rejected


class InvalidOrder(Rejected):
    """Raised when an order's amount is zero, its price is not positive, or it expires
    beyond the operator's maximum order lifetime (the bond must outlive every order)."""

    code = "INVALID_ORDER"


class OrderExpired(Rejected):
    """Raised when an order is placed at or after its expiration."""

    code = "EXPIRED"


class NonceWindow(Rejected):
    """Raised when a request's nonce says ``recv_time`` outside ``(now, now + 100 s]``."""

    code = "NONCE_WINDOW"


class Replayed(Rejected):
    """Raised when a request (or an order digest) was already accepted once."""

    code = "REPLAYED"


class RateLimited(Rejected):
    """Raised when a wallet's executes would exceed their weight per rolling minute."""

    code = "RATE_LIMITED"


class NotAcceptingOrders(Rejected):
    """Raised when an order arrives after the court halted the operator or its exit was
    announced; cancels are still taken, so a client can always get out."""

    code = "NOT_ACCEPTING_ORDERS"


class UnknownProduct(Rejected):
    """Raised when a request names a product the engine does not trade."""

    code = "UNKNOWN_PRODUCT"


class LogRange(Rejected):
    """Raised when a proof query names a size beyond the log's durable size, a seq not
    below the size asked about, two sizes out of order, or too many seqs."""

    code = "OUT_OF_RANGE"


class NotLogged(Rejected):
    """Raised when ``locate`` names an order or cancel that is not (yet) in the log."""

    code = "NOT_FOUND"


class HeadsDisabled(Rejected):
    """Raised when a journal-heads request reaches an operator that keeps no heads."""

    code = "HEADS_DISABLED"


class OrderNotFound(Rejected):
    """Raised when a query or a forced cancel names an order the engine never accepted."""

    code = "NOT_FOUND"


class InvalidTransition(Fault):
    """Raised when an order would take a step its lifecycle forbids: a bug, never input."""

    code = "INVALID_TRANSITION"


class JournalCorrupt(Fault):
    """Raised when a journal row cannot be parsed or contradicts the rows before it."""

    code = "JOURNAL_CORRUPT"


class JournalMismatch(Fault):
    """Raised when a journal belongs to another operator key or another domain."""

    code = "JOURNAL_MISMATCH"


class OpenOrderLimit(Rejected):
    """Raised when a subaccount already rests the most open orders a product allows
    (Vertex's 500 per subaccount and market)."""

    code = "OPEN_ORDER_LIMIT"


class BookFull(Rejected):
    """Raised when the operator already rests its global cap of open orders."""

    code = "BOOK_FULL"


class AddressRateLimited(Rejected):
    """Raised, without checking the request, when the executes of one source address
    would exceed their weight per minute (Vertex's 2,400 per IP)."""

    code = "ADDRESS_RATE_LIMITED"


class QueryRateLimited(Rejected):
    """Raised when a connection or its address sends queries faster than allowed."""

    code = "QUERY_RATE_LIMITED"


class RejectRateLimited(Rejected):
    """Raised, without checking the request, when a connection or its address had too
    many executes rejected lately (a flood of bad signatures costs no recoveries)."""

    code = "REJECT_RATE_LIMITED"


class SubscriptionLimit(Rejected):
    """Raised when a connection subscribes to more senders than allowed."""

    code = "SUBSCRIPTION_LIMIT"


class ReplayLimit(Rejected):
    """Raised when a connection asks for a replay while too many still stream."""

    code = "REPLAY_LIMIT"
