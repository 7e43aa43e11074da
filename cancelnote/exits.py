"""The exit codes of every ``cancelnote`` command, and the one line an error becomes.

One table for every command (the README prints it), so that a script can tell "try again
later" from "fix the command" from "the other side said no":

====  ===========  ===========================================================================
code  name         meaning
====  ===========  ===========================================================================
0     OK           done
1     REFUSED      the operator, the court or the node refused (a rejected order, a revert, a
                   transaction the node will not take, such as one its sender cannot pay for),
                   or a check failed (``sim validate``)
2     USAGE        usage or configuration: a bad option, file, key, password or address; a
                   store, court or node that is not the one the command needs; a busy port
3     DISPUTE      a finding needs a dispute, a dispute is still open, or a cancel's note is
                   overdue (``client watch`` or ``client dispute`` forces it on-chain)
4     UNREACHABLE  the operator or the chain cannot be reached, or did not answer in time
130   INTERRUPTED  Ctrl-C before the command was done
====  ===========  ===========================================================================

The servers (``chain serve``, ``operator run``) stop cleanly on Ctrl-C or SIGTERM, with 0.
"""

from __future__ import annotations

from .errors import CancelnoteError

OK = 0
REFUSED = 1
USAGE = 2
DISPUTE = 3
UNREACHABLE = 4
INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class CommandError(CancelnoteError):
    """Raised by a command to stop with one line on stderr and ``exit_code``."""

    code = "COMMAND"

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def leaf(exc: BaseException) -> BaseException:
    """What an exception group (trio's nurseries make them) is really about: a Ctrl-C if
    any branch holds one, else its first leaf."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    interrupted, _ = exc.split(KeyboardInterrupt)
    return leaf((interrupted or exc).exceptions[0])


def exit_code(exc: BaseException) -> int | None:
    """The exit code of an error the user can act on, ``None`` for a bug (no such error)."""
    from .client.evidence import EvidenceError
    from .client.session import ConnectionLost, OperatorMismatch
    from .dispute.jsonrpc import ChainUnreachable
    from .dispute.nodes import NodeMismatch
    from .errors import MessageError
    from .keystore import KeystoreError
    from .operator.errors import JournalCorrupt, JournalMismatch
    from .operator.service import ServiceError
    from .sim.config import ScenarioError

    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, CommandError):
        return exc.exit_code
    if isinstance(exc, ChainUnreachable | ConnectionLost):
        return UNREACHABLE
    configuration = (
        EvidenceError,
        JournalCorrupt,
        JournalMismatch,
        KeystoreError,
        MessageError,  # an option that is not an address, a digest, a signature
        NodeMismatch,
        OperatorMismatch,
        ScenarioError,
        ServiceError,
        OSError,  # a file that cannot be read or written, a port that cannot be bound
    )
    if isinstance(exc, configuration):
        return USAGE
    if isinstance(exc, CancelnoteError):  # a revert, a node's or the operator's refusal
        return REFUSED
    return None
