"""The error tree. Every error has a stable ``code`` that goes on the wire unchanged.

``Rejected`` is the peer's fault (bad input, a rule it broke): raising it changes no
state. ``Fault`` is ours (a broken invariant, a failed disk): it is logged and the
process decides whether to go on. Any other exception escaping the library is a bug.
"""


class CancelnoteError(Exception):
    """Base of every error cancelnote raises on purpose."""

    code = "ERROR"


class Rejected(CancelnoteError):
    """Raised when a peer's input breaks a rule; nothing changed state."""

    code = "REJECTED"


class Fault(CancelnoteError):
    """Raised when cancelnote itself cannot go on (disk, invariant, chain)."""

    code = "FAULT"


class MessageError(Rejected, ValueError):
    """Raised when a message or one of its fields is malformed or out of range."""

    code = "INVALID_MESSAGE"


class SignatureError(MessageError):
    """Raised when a signature is malformed, high-s, unrecoverable or by the wrong signer."""

    code = "INVALID_SIGNATURE"
