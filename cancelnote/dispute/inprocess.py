"""py-evm in this process: the reference chain of tests, the court's own checks and the demo.

Blocks, transactions, logs and gas estimates follow :class:`~cancelnote.dispute.local.LocalChain`;
this module only executes (py-evm's Prague, all of it, or an older fork with ``hardfork=``:
a Shanghai chain is a node without Cancun's opcodes, as ganache is) and reads state.
Beyond that:

* **A block builds in linear time.** The transactions of a block are applied one by one to
  the pending state and its transaction and receipt tries are built once, when it is sealed
  (py-evm's own mining chain rebuilds them on every added transaction: measured 40 tx/s at
  100 transactions a block).
* **Blocks may share a second.** Sub-second slots stamp two blocks with one EVM second, as L2
  chains do; this chain's Prague VM accepts a block in its parent's second (mainnet's rule
  wants a later one) and checks everything else as py-evm does.
* **Every sealed block's state stays readable** (``eth_call`` and balances at a block).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any, cast

from eth import exceptions as evm_errors
from eth.abc import (
    BlockHeaderAPI,
    ComputationAPI,
    ReceiptAPI,
    SignedTransactionAPI,
    StateAPI,
    VirtualMachineAPI,
)
from eth.chains.base import MiningChain
from eth.db.atomic import AtomicDB
from eth.vm.forks import CancunVM, PragueVM, ShanghaiVM
from eth.vm.spoof import SpoofTransaction
from eth_typing import Address, BlockNumber
from eth_utils import ValidationError

from .chain import ChainError
from .local import (
    DEFAULT_GENESIS_TIMESTAMP,
    DEV_BALANCE,
    GAS_LIMIT,
    BlockInfo,
    DryRun,
    Execution,
    LocalChain,
    MinedTransaction,
    Outcome,
    PendingBlock,
    Run,
    Transaction,
    dev_account,
)

__all__ = [
    "DEFAULT_GENESIS_TIMESTAMP",
    "DEV_BALANCE",
    "GAS_LIMIT",
    "BlockInfo",
    "InProcessChain",
    "MinedTransaction",
    "dev_account",
]

#: py-evm's errors in the words of :data:`~cancelnote.dispute.local.HALTS`.
_HALTS: tuple[tuple[type[Exception], str], ...] = (
    (evm_errors.OutOfGas, "out of gas"),
    (evm_errors.InvalidInstruction, "invalid instruction"),
    (evm_errors.InvalidJumpDestination, "invalid jump destination"),
    (evm_errors.InsufficientStack, "stack underflow"),
    (evm_errors.FullStack, "stack overflow"),
    (evm_errors.StackDepthLimit, "call depth limit"),
    (evm_errors.WriteProtection, "state change in a static call"),
    (evm_errors.OutOfBoundsRead, "return data out of bounds"),
    (evm_errors.ContractCreationCollision, "contract address collision"),
    (evm_errors.ReservedBytesInCode, "code starts with 0xef"),
    (evm_errors.InsufficientFunds, "insufficient funds"),
)


#: The forks ``hardfork=`` selects: py-evm's VMs since Shanghai (every one has EIP-1559
#: fees and withdrawals, which the blocks here need).
HARDFORKS: dict[str, type[VirtualMachineAPI]] = {
    "shanghai": ShanghaiVM,
    "cancun": CancunVM,
    "prague": PragueVM,
}


@functools.cache
def _chain_class(chain_id: int, hardfork: str) -> type[MiningChain]:
    """One configured chain class per chain id and fork (``configure`` builds a class: do it
    once), whose VM accepts a block in its parent's second (sub-second slots; mainnet's rule
    wants a later one) and checks everything else as py-evm does."""
    fork = HARDFORKS[hardfork]

    class SameSecondVM(fork):  # type: ignore[valid-type,misc]
        @classmethod
        def validate_header(cls, header: BlockHeaderAPI, parent_header: BlockHeaderAPI) -> None:
            if parent_header is not None and header.timestamp == parent_header.timestamp:
                parent_header = parent_header.copy(timestamp=header.timestamp - 1)
            super().validate_header(header, parent_header)

    return MiningChain.configure(
        __name__=f"CancelnoteChain{chain_id}{hardfork.title()}",
        vm_configuration=((0, SameSecondVM),),
        chain_id=chain_id,
    )


def _run(computation: ComputationAPI, gas: int) -> Run:
    """How a py-evm computation of a transaction given ``gas`` ended."""
    spent = gas - computation.get_gas_remaining()
    if not computation.is_error:
        return Run(None, computation.output, spent, min(computation.get_gas_refund(), spent // 5))
    error = computation.error
    if isinstance(error, evm_errors.Revert):
        return Run("revert", computation.output, spent)
    word = next((word for kind, word in _HALTS if isinstance(error, kind)), type(error).__name__)
    return Run(word, computation.output, spent)


def _info(header: BlockHeaderAPI, timestamp_ms: int, transactions: tuple[bytes, ...]) -> BlockInfo:
    return BlockInfo(
        number=header.block_number,
        hash=header.hash,
        parent_hash=header.parent_hash,
        timestamp=header.timestamp,
        timestamp_ms=timestamp_ms,
        gas_limit=header.gas_limit,
        gas_used=header.gas_used,
        base_fee_per_gas=_base_fee(header),
        miner=header.coinbase,
        state_root=header.state_root,
        transactions_root=header.transaction_root,
        receipts_root=header.receipt_root,
        transactions=transactions,
    )


def _base_fee(header: BlockHeaderAPI) -> int:
    """The header's base fee (every fork a chain here runs has EIP-1559's)."""
    fee = header.base_fee_per_gas
    if fee is None:
        raise ChainError("a header without a base fee: a fork before London")
    return fee


class InProcessChain(LocalChain):
    """A deterministic py-evm dev chain (see :class:`~cancelnote.dispute.local.LocalChain`).

    Args:
        hardfork: one of :data:`HARDFORKS` (``prague``, the newest, unless a test wants a
            node without some opcodes); the other arguments are :class:`LocalChain`'s.
    """

    def __init__(self, *args: Any, hardfork: str = "prague", **options: Any) -> None:
        if hardfork not in HARDFORKS:
            raise ChainError(f"unknown hardfork {hardfork!r}: choose one of {', '.join(HARDFORKS)}")
        self.hardfork = hardfork
        self.engine = f"py-evm {version('py-evm')} ({hardfork.title()})"
        super().__init__(*args, **options)

    # --- state ----------------------------------------------------------------------------

    def balance(self, address: bytes, *, block_number: int | None = None) -> int:
        with self._lock:
            return self._state(block_number).get_balance(Address(address))

    def nonce(self, address: bytes, *, block_number: int | None = None) -> int:
        with self._lock:
            return self._state(block_number).get_nonce(Address(address))

    def code(self, address: bytes, *, block_number: int | None = None) -> bytes:
        with self._lock:
            return self._state(block_number).get_code(Address(address))

    # --- the backend ------------------------------------------------------------------------

    def _genesis(self, balances: dict[bytes, int], timestamp: int) -> BlockInfo:
        chain = _chain_class(self.chain_id, self.hardfork).from_genesis(
            AtomicDB(),
            {"difficulty": 0, "gas_limit": self.gas_limit, "timestamp": timestamp},
            {
                Address(address): {"balance": balance, "nonce": 0, "code": b"", "storage": {}}
                for address, balance in balances.items()
            },
        )
        assert isinstance(chain, MiningChain)  # (py-evm types it as its base class)
        self._chain: MiningChain = chain
        self._natives: list[SignedTransactionAPI] = []  # the pending block's, as py-evm has them
        self._receipts: list[ReceiptAPI] = []
        return _info(self._chain.get_canonical_head(), timestamp * 1_000, ())

    def _prepare(self, block: PendingBlock) -> None:
        """Open the pending header with an explicit timestamp (py-evm would read the clock)."""
        self._chain.header = self._chain.create_header_from_parent(
            self._chain.get_canonical_head(), timestamp=block.timestamp, gas_limit=block.gas_limit
        )
        assert self._chain.header.base_fee_per_gas == block.base_fee, "one EIP-1559 rule"
        self._natives, self._receipts = [], []

    def _execute(
        self, transaction: Transaction, block: PendingBlock, expect: Outcome | None = None
    ) -> Execution | None:
        if expect is not None:  # py-evm cannot undo a transaction: check with a dry run
            with self._dry_runs(None, transaction.price(block.base_fee)) as run:
                checked = run(
                    transaction.sender, transaction.to, transaction.data, transaction.value,
                    transaction.gas,
                )  # fmt: skip
            if checked.outcome != expect:
                return None
        native = self._chain.get_vm().get_transaction_builder().decode(transaction.raw)
        assert native.hash == transaction.hash, "py-evm reads the transaction as it was signed"
        vm = self._chain.get_vm()
        header = vm.get_header()
        try:
            receipt, computation = vm.apply_transaction(header, native)
        except ValidationError as exc:  # the shared checks passed: py-evm has one more
            raise ChainError(f"the transaction cannot be included: {exc}") from None
        with_receipt = vm.add_receipt_to_header(header, receipt)
        vm.state.persist()  # the block is built here: keep the state between transactions
        self._chain.header = with_receipt.copy(state_root=vm.state.state_root)
        self._natives.append(native)
        self._receipts.append(receipt)
        created = not native.to and not computation.is_error
        return Execution(
            run=_run(computation, native.gas),
            gas_used=receipt.gas_used - header.gas_used,  # receipts count the block's gas
            logs=tuple(
                (entry.address, tuple(t.to_bytes(32, "big") for t in entry.topics), entry.data)
                for entry in receipt.logs
            ),
            contract_address=computation.msg.storage_address if created else None,
        )

    def _seal_block(self, block: PendingBlock) -> BlockInfo:
        vm = self._chain.get_vm()
        filled = vm.set_block_transactions_and_withdrawals(
            vm.get_block(), self._chain.header, self._natives, self._receipts
        )
        self._chain.header = filled.header
        header = self._chain.mine_block().header
        return _info(header, block.timestamp_ms, tuple(tx.hash for tx in self._natives))

    @contextmanager
    def _dry_runs(self, block_number: int | None, price: int = 0) -> Iterator[DryRun]:
        """Dry runs on a throw-away state (with a zero base fee when the gas is free).

        py-evm's own ``in_costless_state`` stamps its block with the wall clock; this keeps
        the header's timestamp.
        """
        header = self._chain.header if block_number is None else self._header(block_number)
        state = self._chain.get_vm(header if price else header.copy(base_fee_per_gas=0)).state
        snapshot = state.snapshot()

        def run(sender: bytes, to: bytes | None, data: bytes, value: int, gas: int) -> Run:
            return _run(self._dry_run(state, sender, to, data, value, gas, price), gas)

        try:
            yield run
        finally:
            state.revert(snapshot)

    # --- internals ------------------------------------------------------------------------

    def _header(self, number: int) -> BlockHeaderAPI:
        return self._chain.get_canonical_block_header_by_number(BlockNumber(number))

    def _state(self, block_number: int | None) -> StateAPI:
        at = self._read_at(block_number)
        return self._chain.get_vm(self._chain.header if at is None else self._header(at)).state

    def _dry_run(
        self,
        state: StateAPI,
        sender: bytes,
        to: bytes | None,
        data: bytes,
        value: int,
        gas: int,
        price: int,
    ) -> ComputationAPI:
        unsigned = self._chain.get_vm().create_unsigned_transaction(
            nonce=state.get_nonce(Address(sender)),
            gas_price=price,
            gas=gas,
            to=Address(to or b""),
            value=value,
            data=data,
        )
        snapshot = state.snapshot()
        try:
            # a spoofed sender: py-evm's SpoofTransaction stands in for a signed one
            spoofed = cast(SignedTransactionAPI, SpoofTransaction(unsigned, from_=sender))
            return state.apply_transaction(spoofed)
        except ValidationError as exc:  # the sender cannot pay the value
            raise ChainError(f"the transaction is invalid: {exc}") from None
        finally:
            state.revert(snapshot)
