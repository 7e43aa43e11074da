"""The chain as an interface: what the court binding, the watchers and the simulator need.

Two backends implement it: :class:`~cancelnote.dispute.inprocess.InProcessChain` (py-evm in
this process: tests, simulations, the demo) and
:class:`~cancelnote.dispute.jsonrpc.JsonRpcChain` (any Ethereum node over standard
JSON-RPC, including ``cancelnote chain serve``). Code written against :class:`Chain` runs
unchanged on both.

Rules every backend keeps:

* ``transact`` and ``deploy`` sign locally with the sender's key, wait for the receipt and
  raise :class:`TransactionReverted` (with the decoded revert reason) when the
  transaction reverts; a reverted transaction still costs gas and is still mined.
* ``call`` never changes state and raises :class:`TransactionReverted` on revert.
* Addresses are 20-byte ``bytes``; hashes are 32-byte ``bytes``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import attrs
from eth_abi import decode as abi_decode

from ..crypto import Signer
from ..errors import Fault, Rejected

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)


class ChainError(Fault):
    """Raised when the chain cannot be reached or answers something malformed."""

    code = "CHAIN_ERROR"


class TransactionReverted(Rejected):
    """Raised when a transaction or call reverts; ``reason`` is the contract's revert string.

    ``receipt`` is the mined receipt when a transaction reverted (``None`` for a call);
    ``output`` is the raw revert data, kept for custom errors that have no string.
    """

    code = "REVERTED"

    def __init__(self, reason: str, receipt: Receipt | None = None, output: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.receipt = receipt
        self.output = output


def decode_revert_reason(output: bytes) -> str:
    """The ``Error(string)`` reason of a revert, or a hex dump when there is none."""
    if output.startswith(ERROR_SELECTOR):
        try:
            (reason,) = abi_decode(["string"], output[4:])
            return reason
        except Exception:  # malformed revert data: report it raw below
            pass
    return "reverted without a reason" if not output else f"reverted: 0x{output.hex()}"


@attrs.frozen
class Log:
    """One event log as mined."""

    address: bytes
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    transaction_hash: bytes
    log_index: int


@attrs.frozen
class Receipt:
    """A mined transaction: its gas, its logs and, for a deployment, the new address."""

    transaction_hash: bytes
    block_number: int
    gas_used: int
    status: int
    logs: tuple[Log, ...]
    contract_address: bytes | None = None


class Chain(ABC):
    """An Ethereum chain that can be read, transacted with and (on dev chains) timed."""

    chain_id: int

    def deploy(self, sender: Signer, initcode: bytes, *, value: int = 0) -> Receipt:
        """Create a contract from ``initcode`` (bytecode plus constructor arguments)."""
        return self._send(sender, None, initcode, value)

    def transact(self, sender: Signer, to: bytes, data: bytes, *, value: int = 0) -> Receipt:
        """Send a signed transaction and return its mined receipt."""
        return self._send(sender, to, data, value)

    @abstractmethod
    def _send(self, sender: Signer, to: bytes | None, data: bytes, value: int) -> Receipt:
        """Sign locally, send, wait until mined; raise :class:`TransactionReverted` on failure."""

    @abstractmethod
    def call(self, to: bytes, data: bytes, *, sender: bytes | None = None) -> bytes:
        """Run a read-only call against the latest block and return its output."""

    @abstractmethod
    def estimate_gas(self, sender: bytes, to: bytes | None, data: bytes, *, value: int = 0) -> int:
        """Gas the transaction would use (raises :class:`TransactionReverted` if it reverts)."""

    @abstractmethod
    def get_logs(
        self,
        address: bytes,
        from_block: int = 0,
        to_block: int | None = None,
        topics: tuple[bytes | None, ...] = (),
    ) -> list[Log]:
        """Logs of ``address`` in ``[from_block, to_block]`` matching ``topics`` by position."""

    @abstractmethod
    def block_number(self) -> int:
        """The number of the latest mined block."""

    @abstractmethod
    def timestamp(self) -> int:
        """The latest mined block's timestamp (unix seconds)."""

    @abstractmethod
    def balance(self, address: bytes) -> int:
        """Wei held by ``address`` at the latest block."""

    @abstractmethod
    def transaction_input(self, transaction_hash: bytes) -> bytes | None:
        """The calldata of a mined transaction (``None`` if the chain has no such one).

        Logs carry only what an event names; an operator answering a forced cancel of an
        order it never received reads the order from the request's calldata.
        """

    @abstractmethod
    def set_next_block_timestamp(self, timestamp: int) -> None:
        """Dev chains only: the next mined block gets this timestamp (must not go back)."""

    @abstractmethod
    def mine(self) -> None:
        """Dev chains only: mine an empty block."""

    def increase_time(self, seconds: int) -> None:
        """Dev chains only: the next mined block comes ``seconds`` after the latest one.

        Added for dispute windows: tests and simulations jump over a window W without
        reading the latest timestamp themselves.
        """
        self.set_next_block_timestamp(self.timestamp() + seconds)
