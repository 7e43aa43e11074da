"""The chain as an interface: what the court binding, the watchers and the simulator need.

Three backends implement it: :class:`~cancelnote.dispute.inprocess.InProcessChain` (py-evm in
this process, the reference: tests, the demo), :class:`~cancelnote.dispute.revm.RevmChain`
(revm in this process, proven equal to py-evm by differential tests: the lab) and
:class:`~cancelnote.dispute.jsonrpc.JsonRpcChain` (any Ethereum node over standard
JSON-RPC, including ``cancelnote chain serve``). Code written against :class:`Chain` runs
unchanged on all three.

Rules every backend keeps:

* ``transact`` and ``deploy`` sign locally with the sender's key, wait for the receipt and
  raise :class:`TransactionReverted` (with the decoded revert reason) when the
  transaction reverts; a reverted transaction still costs gas and is still mined.
* ``call`` never changes state and raises :class:`TransactionReverted` on revert.
* Addresses are 20-byte ``bytes``; hashes are 32-byte ``bytes``.
* Logs are asked for by interest (:class:`LogFilter`: addresses, topics by position with
  alternatives, a block range), as ``eth_getLogs`` asks, so a watcher reads only its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

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
    """One event log as mined; ``log_index`` counts the logs of its block, as JSON-RPC does."""

    address: bytes
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    transaction_hash: bytes
    log_index: int
    transaction_index: int = 0


@attrs.frozen
class Receipt:
    """A mined transaction: its gas, its logs and, for a deployment, the new address."""

    transaction_hash: bytes
    block_number: int
    gas_used: int
    status: int
    logs: tuple[Log, ...]
    contract_address: bytes | None = None
    transaction_index: int = 0


#: One position of a topic filter: ``None`` (any topic), a topic, or alternatives (any of them).
Topic = bytes | Sequence[bytes] | None


def _alternatives(
    value: bytes | Sequence[bytes] | None, length: int, what: str
) -> frozenset[bytes] | None:
    """One value, or any of several, as a set; ``None`` or no value at all means any."""
    values = (value,) if isinstance(value, bytes) else value or ()
    for one in values:
        if not isinstance(one, bytes) or len(one) != length:
            raise ChainError(f"a log filter's {what} is {length} bytes, got {one!r:.80}")
    return frozenset(values) or None


@attrs.frozen
class LogFilter:
    """Which logs a query wants, with ``eth_getLogs``' rules (one definition for every backend).

    * ``addresses``: ``None`` for any address, else the set a log's address must be in.
    * ``topics``: by position, ``None`` for any topic or the set of topics allowed there (an
      OR); a log must have at least as many topics as the filter has positions.
    * ``[from_block, to_block]``, ``to_block=None`` meaning the latest block.

    As in geth, an empty list of addresses or of alternatives means "any".
    """

    addresses: frozenset[bytes] | None = None
    topics: tuple[frozenset[bytes] | None, ...] = ()
    from_block: int = 0
    to_block: int | None = None

    @classmethod
    def of(
        cls,
        address: bytes | Sequence[bytes] | None = None,
        from_block: int = 0,
        to_block: int | None = None,
        topics: Sequence[Topic] = (),
    ) -> LogFilter:
        """The filter of a :meth:`Chain.get_logs` call (a single value stands for a set of one).

        Raises:
            ChainError: an address that is not 20 bytes, a topic that is not 32 bytes, a
                negative block, or a range that ends before it starts.
        """
        addresses = _alternatives(address, 20, "address")
        positions = tuple(_alternatives(topic, 32, "topic") for topic in topics)
        if from_block < 0 or (to_block is not None and to_block < from_block):
            raise ChainError(
                f"a log filter's blocks are 0 <= from <= to, got {from_block}..{to_block}"
            )
        return cls(addresses, positions, from_block, to_block)

    def matches(self, log: Log) -> bool:
        """Whether ``log`` is one the filter wants."""
        if self.addresses is not None and log.address not in self.addresses:
            return False
        if log.block_number < self.from_block or (
            self.to_block is not None and log.block_number > self.to_block
        ):
            return False
        if len(log.topics) < len(self.topics):
            return False
        return all(
            allowed is None or topic in allowed
            for allowed, topic in zip(self.topics, log.topics, strict=False)
        )


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
        """Run a read-only call against the newest state and return its output.

        The newest state is the latest block's, or, while a dev chain builds a block, the
        block being built (as ``eth_call`` at ``pending``).
        """

    @abstractmethod
    def estimate_gas(self, sender: bytes, to: bytes | None, data: bytes, *, value: int = 0) -> int:
        """Gas the transaction would use (raises :class:`TransactionReverted` if it reverts)."""

    def get_logs(
        self,
        address: bytes | Sequence[bytes] | None,
        from_block: int = 0,
        to_block: int | None = None,
        topics: Sequence[Topic] = (),
    ) -> list[Log]:
        """Logs of ``address`` (one, any of several, or ``None`` for every address) in
        ``[from_block, to_block]`` whose topics match ``topics`` (see :class:`LogFilter`),
        in chain order."""
        return self.logs(LogFilter.of(address, from_block, to_block, topics))

    @abstractmethod
    def logs(self, wanted: LogFilter) -> list[Log]:
        """The logs ``wanted`` selects, in chain order (block, then index in the block)."""

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
    def nonce(self, address: bytes) -> int:
        """The account's transaction count at the latest block."""

    @abstractmethod
    def code(self, address: bytes) -> bytes:
        """The runtime code at ``address`` (empty for an account without code)."""

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
