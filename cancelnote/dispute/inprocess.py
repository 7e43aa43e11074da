"""py-evm in this process: the chain of tests, simulations and the demo.

Rules this backend keeps, beyond those of :class:`~cancelnote.dispute.chain.Chain`:

* **One block per transaction.** Every transaction is mined at once in its own block: py-evm
  rebuilds the pending block's transaction and receipt tries on every added transaction,
  which is quadratic in the block's size (measured: 200 tx/s auto-mined, 40 tx/s at 100
  transactions a block).
* **Time is explicit.** Block ``n + 1`` is stamped ``timestamp(n) + 1`` unless
  :meth:`InProcessChain.set_next_block_timestamp` or :meth:`~InProcessChain.increase_time`
  says otherwise; the wall clock is never read, so a run is reproducible to the byte.
* **Calls see the latest block** (its state, number and timestamp, as ``eth_call`` at
  ``latest`` does); **transactions and gas estimates see the block they will be mined
  in**, so a deadline check estimates the way it will execute.
* **Gas is estimated, never guessed**: a limit checked to end the transaction exactly as
  an unlimited run does: geth's optimistic first guess (the gas used plus a 63/64 call
  margin), else a binary search like geth's ``eth_estimateGas``.
* **One lock** guards the py-evm objects, which are not thread-safe: the JSON-RPC server
  and ``trio.to_thread`` callers share one chain.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
from eth.abc import ComputationAPI, SignedTransactionAPI, StateAPI
from eth.chains.base import MiningChain
from eth.db.atomic import AtomicDB
from eth.exceptions import Revert
from eth.rlp.headers import BlockHeader
from eth.vm.forks import PragueVM
from eth.vm.spoof import SpoofTransaction
from eth_keys import keys
from eth_utils import ValidationError

from ..crypto import Signer, keccak
from .chain import Chain, ChainError, Log, Receipt, TransactionReverted, decode_revert_reason

GAS_LIMIT = 30_000_000  # per block (mainnet's from 2021 to 2025), the same in every block
DEFAULT_GENESIS_TIMESTAMP = 1_700_000_000  # 2023-11-14: fixed so that runs are reproducible
DEV_BALANCE = 10**24  # wei per dev account: a million ether, enough for any test
PRIORITY_FEE = 0  # the dev chain has no miner to tip; the fee is the base fee alone
CALL_STIPEND = 2_300  # gas a value-carrying CALL adds for the callee (geth's first guess)
ESTIMATE_ERROR_RATIO = 0.015  # geth stops its gas search when within 1.5 %
DEV_KEY_PREFIX = b"cancelnote dev account"


def dev_account(index: int) -> Signer:
    """Dev account ``index``: the same key on every run and every machine."""
    return Signer(keccak(DEV_KEY_PREFIX + index.to_bytes(4, "big")))


@functools.cache
def _chain_class(chain_id: int) -> type[MiningChain]:
    """One configured chain class per chain id (``configure`` builds a class: do it once)."""
    return MiningChain.configure(
        __name__=f"CancelnoteChain{chain_id}",
        vm_configuration=((0, PragueVM),),
        chain_id=chain_id,
    )


@attrs.frozen
class MinedTransaction:
    """A mined transaction as the JSON-RPC server reports it (its receipt and envelope)."""

    receipt: Receipt
    sender: bytes
    to: bytes | None
    nonce: int
    value: int
    data: bytes
    gas: int
    effective_gas_price: int
    transaction_type: int
    block_hash: bytes
    logs_bloom: int


@attrs.frozen
class BlockInfo:
    """The fields of a mined block header that JSON-RPC clients read."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int
    gas_limit: int
    gas_used: int
    base_fee_per_gas: int
    miner: bytes
    state_root: bytes
    transactions_root: bytes
    receipts_root: bytes
    logs_bloom: int
    transactions: tuple[bytes, ...]


def _outcome(computation: ComputationAPI) -> tuple[type | None, bytes]:
    """How a run ended: success, or the error and its revert data (so the same reason)."""
    if computation.is_error:
        return type(computation.error), computation.output
    return None, b""  # a success's output may depend on gasleft(); success is what counts


def _failure_reason(computation: ComputationAPI) -> str:
    """The revert string, or the VM error for failures that are not a REVERT."""
    if isinstance(computation.error, Revert):
        return decode_revert_reason(computation.output)
    return f"execution failed: {type(computation.error).__name__}: {computation.error}"


def _topics_match(log: Log, topics: tuple[bytes | None, ...]) -> bool:
    """Topics match by position; ``None`` matches anything; a log must have them all."""
    if len(topics) > len(log.topics):
        return False
    return all(
        want in (None, have) for want, have in zip(topics, log.topics[: len(topics)], strict=True)
    )


class InProcessChain(Chain):
    """A deterministic py-evm dev chain with funded accounts and explicit block time.

    Args:
        chain_id: the EIP-155 chain id (the court binds signatures to it).
        accounts: how many dev accounts to fund (see :func:`dev_account`).
        genesis_timestamp: the genesis block's timestamp; block ``n`` gets ``genesis + n``
            unless time is moved explicitly.
    """

    def __init__(
        self,
        chain_id: int = 1337,
        accounts: int = 10,
        genesis_timestamp: int = DEFAULT_GENESIS_TIMESTAMP,
    ) -> None:
        if accounts < 0:
            raise ChainError(f"accounts must be >= 0, got {accounts}")
        self.chain_id = chain_id
        self.dev_accounts: list[Signer] = [dev_account(i) for i in range(accounts)]
        genesis_state = {
            signer.address: {"balance": DEV_BALANCE, "nonce": 0, "code": b"", "storage": {}}
            for signer in self.dev_accounts
        }
        self._lock = threading.RLock()
        self._chain = _chain_class(chain_id).from_genesis(
            AtomicDB(),
            {"difficulty": 0, "gas_limit": GAS_LIMIT, "timestamp": genesis_timestamp},
            genesis_state,
        )
        self._transactions: dict[bytes, MinedTransaction] = {}
        self._logs: list[Log] = []  # every log, in chain order
        self._logs_by_address: dict[bytes, list[Log]] = {}
        self._open_next_block(self._chain.get_canonical_head().timestamp + 1)

    # --- Chain -------------------------------------------------------------------------

    def call(
        self,
        to: bytes | None,
        data: bytes,
        *,
        sender: bytes | None = None,
        value: int = 0,
        block_number: int | None = None,
    ) -> bytes:
        """Run a read-only call on the latest block, or on ``block_number``.

        ``to=None`` runs a creation (``eth_call`` without ``to``) and returns the runtime code.
        """
        with self._lock:
            header = self._header(block_number)
            with self._scratch_state(header) as state:
                computation = self._dry_run(
                    state, sender or bytes(20), to, data, value, header.gas_limit
                )
        if computation.is_error:
            raise TransactionReverted(_failure_reason(computation), output=computation.output)
        return computation.output

    def estimate_gas(self, sender: bytes, to: bytes | None, data: bytes, *, value: int = 0) -> int:
        with self._lock, self._scratch_state(self._chain.header) as state:
            gas, computation = self._estimate(state, sender, to, data, value)
        if computation.is_error:
            raise TransactionReverted(_failure_reason(computation), output=computation.output)
        return gas

    def get_logs(
        self,
        address: bytes | None,
        from_block: int = 0,
        to_block: int | None = None,
        topics: tuple[bytes | None, ...] = (),
    ) -> list[Log]:
        """Logs as the ABC says; ``address=None`` means every address (``eth_getLogs``)."""
        with self._lock:
            logs = self._logs if address is None else self._logs_by_address.get(address, [])
            start = bisect.bisect_left(logs, from_block, key=lambda log: log.block_number)
            end = (
                len(logs)
                if to_block is None
                else bisect.bisect_right(logs, to_block, key=lambda log: log.block_number)
            )
            return [log for log in logs[start:end] if _topics_match(log, topics)]

    def block_number(self) -> int:
        with self._lock:
            return self._chain.get_canonical_head().block_number

    def timestamp(self) -> int:
        with self._lock:
            return self._chain.get_canonical_head().timestamp

    def balance(self, address: bytes, *, block_number: int | None = None) -> int:
        """Wei held by ``address`` at the latest block, or at ``block_number``."""
        with self._lock:
            return self._state(block_number).get_balance(address)

    def set_next_block_timestamp(self, timestamp: int) -> None:
        with self._lock:
            latest = self._chain.get_canonical_head().timestamp
            if timestamp <= latest:
                raise ChainError(
                    f"the next block's timestamp must be after the latest block's "
                    f"({latest}), got {timestamp}"
                )
            self._chain.header = self._chain.header.copy(timestamp=timestamp)

    def increase_time(self, seconds: int) -> None:
        with self._lock:  # read the latest timestamp and move on from it atomically
            super().increase_time(seconds)

    def mine(self) -> None:
        with self._lock:
            self._mine()

    # --- beyond the ABC: what dev tools and the JSON-RPC server read --------------------

    def nonce(self, address: bytes, *, block_number: int | None = None) -> int:
        """The next nonce of ``address`` (its transaction count), latest or at a block."""
        with self._lock:
            return self._state(block_number).get_nonce(address)

    def code(self, address: bytes, *, block_number: int | None = None) -> bytes:
        """The runtime code at ``address`` (empty for an account without code)."""
        with self._lock:
            return self._state(block_number).get_code(address)

    def base_fee(self) -> int:
        """The base fee per gas the next block will charge."""
        with self._lock:
            return self._chain.header.base_fee_per_gas

    def send_raw_transaction(self, raw: bytes) -> bytes:
        """Mine a transaction signed elsewhere and return its hash, even if it reverted.

        Raises:
            ChainError: the bytes are no transaction, or it cannot be included (nonce,
                balance, chain id, gas limit).
        """
        with self._lock:
            try:
                transaction = self._chain.get_vm().get_transaction_builder().decode(raw)
            except Exception as exc:  # rlp and py-evm raise many kinds for malformed input
                raise ChainError(f"cannot decode the transaction: {exc}") from None
            tx_chain_id = getattr(transaction, "chain_id", None)
            if tx_chain_id not in (None, self.chain_id):
                raise ChainError(f"transaction for chain {tx_chain_id}, this is {self.chain_id}")
            mined, _ = self._apply(transaction)
            return mined.receipt.transaction_hash

    def transaction(self, transaction_hash: bytes) -> MinedTransaction | None:
        """The mined transaction with this hash, or ``None`` if there is none."""
        with self._lock:
            return self._transactions.get(transaction_hash)

    def transaction_input(self, transaction_hash: bytes) -> bytes | None:
        mined = self.transaction(transaction_hash)
        return None if mined is None else mined.data

    def block(self, number: int | None = None) -> BlockInfo:
        """Mined block ``number`` (the latest if ``None``); ChainError past the head."""
        with self._lock:
            header = self._header(number)
            block = self._chain.get_canonical_block_by_number(header.block_number)
        return BlockInfo(
            number=header.block_number,
            hash=header.hash,
            parent_hash=header.parent_hash,
            timestamp=header.timestamp,
            gas_limit=header.gas_limit,
            gas_used=header.gas_used,
            base_fee_per_gas=header.base_fee_per_gas,
            miner=header.coinbase,
            state_root=header.state_root,
            transactions_root=header.transaction_root,
            receipts_root=header.receipt_root,
            logs_bloom=header.bloom,
            transactions=tuple(tx.hash for tx in block.transactions),
        )

    # --- internals ------------------------------------------------------------------------

    def _header(self, number: int | None) -> BlockHeader:
        head = self._chain.get_canonical_head()
        if number is None:
            return head
        if not 0 <= number <= head.block_number:
            raise ChainError(f"no block {number}: the latest is {head.block_number}")
        return self._chain.get_canonical_block_header_by_number(number)

    def _state(self, block_number: int | None) -> StateAPI:
        return self._chain.get_vm(self._header(block_number)).state

    def _open_next_block(self, timestamp: int) -> None:
        """Start the pending block with an explicit timestamp (py-evm would read the clock)."""
        self._chain.header = self._chain.create_header_from_parent(
            self._chain.get_canonical_head(), timestamp=timestamp, gas_limit=GAS_LIMIT
        )

    def _mine(self) -> BlockHeader:
        header = self._chain.mine_block().header
        self._open_next_block(header.timestamp + 1)
        return header

    @contextmanager
    def _scratch_state(self, header: BlockHeader) -> Iterator[StateAPI]:
        """A throw-away state on ``header`` with a zero base fee, for gas-free dry runs.

        py-evm's own ``in_costless_state`` stamps its block with the wall clock; this keeps
        the header's timestamp.
        """
        state = self._chain.get_vm(header.copy(base_fee_per_gas=0)).state
        snapshot = state.snapshot()
        try:
            yield state
        finally:
            state.revert(snapshot)

    def _dry_run(
        self, state: StateAPI, sender: bytes, to: bytes | None, data: bytes, value: int, gas: int
    ) -> ComputationAPI:
        unsigned = self._chain.get_vm().create_unsigned_transaction(
            nonce=state.get_nonce(sender),
            gas_price=0,
            gas=gas,
            to=to or b"",
            value=value,
            data=data,
        )
        snapshot = state.snapshot()
        try:
            return state.apply_transaction(SpoofTransaction(unsigned, from_=sender))
        except ValidationError as exc:  # the sender cannot pay the value
            raise ChainError(f"the transaction is invalid: {exc}") from None
        finally:
            state.revert(snapshot)

    def _estimate(
        self, state: StateAPI, sender: bytes, to: bytes | None, data: bytes, value: int
    ) -> tuple[int, ComputationAPI]:
        """A gas limit (checked, a little above the least) that ends the run as an unlimited run.

        Matching the outcome, not just "no error", also sizes a reverting transaction: it
        gets enough gas to revert with its reason instead of running out of gas.
        """
        cap = self._chain.header.gas_limit
        unlimited = self._dry_run(state, sender, to, data, value, cap)
        wanted = _outcome(unlimited)

        def enough(gas: int) -> bool:
            return _outcome(self._dry_run(state, sender, to, data, value, gas)) == wanted

        used = cap - unlimited.get_gas_remaining()  # before refunds: what the run needs
        guess = min(cap, (used + CALL_STIPEND) * 64 // 63)  # one 63/64 retention covered
        if enough(guess):  # nearly always: a margin of 1.6 % + 2,300 gas, checked
            return guess, unlimited
        low, high = guess, cap
        while high - low > 1 and (high - low) / high >= ESTIMATE_ERROR_RATIO:
            middle = (low + high) // 2
            if enough(middle):
                high = middle
            else:
                low = middle
        return high, unlimited

    def _send(self, sender: Signer, to: bytes | None, data: bytes, value: int) -> Receipt:
        with self._lock:
            with self._scratch_state(self._chain.header) as state:
                gas, _ = self._estimate(state, sender.address, to, data, value)
            mined, computation = self._apply(self._sign(sender, to, data, value, gas))
        if computation.is_error:
            raise TransactionReverted(
                _failure_reason(computation), mined.receipt, computation.output
            )
        return mined.receipt

    def _sign(
        self, sender: Signer, to: bytes | None, data: bytes, value: int, gas: int
    ) -> SignedTransactionAPI:
        vm = self._chain.get_vm()
        unsigned = vm.get_transaction_builder().new_unsigned_dynamic_fee_transaction(
            chain_id=self.chain_id,
            nonce=vm.state.get_nonce(sender.address),
            max_priority_fee_per_gas=PRIORITY_FEE,
            max_fee_per_gas=2 * self._chain.header.base_fee_per_gas + PRIORITY_FEE,
            gas=gas,
            to=to or b"",
            value=value,
            data=data,
            access_list=(),
        )
        return unsigned.as_signed_transaction(keys.PrivateKey(sender.secret))

    def _apply(self, transaction: SignedTransactionAPI) -> tuple[MinedTransaction, ComputationAPI]:
        """Include ``transaction`` in the pending block, mine it and index what it logged."""
        base_fee = self._chain.header.base_fee_per_gas
        try:
            _, py_receipt, computation = self._chain.apply_transaction(transaction)
        except ValidationError as exc:  # nonce, balance, fee, gas limit, signature
            raise ChainError(f"the transaction cannot be included: {exc}") from None
        header = self._mine()
        tx_hash = transaction.hash
        logs = tuple(
            Log(
                address=entry.address,
                topics=tuple(topic.to_bytes(32, "big") for topic in entry.topics),
                data=entry.data,
                block_number=header.block_number,
                transaction_hash=tx_hash,
                log_index=index,
            )
            for index, entry in enumerate(py_receipt.logs)
        )
        created = not transaction.to and not computation.is_error
        receipt = Receipt(
            transaction_hash=tx_hash,
            block_number=header.block_number,
            gas_used=py_receipt.gas_used,
            status=0 if computation.is_error else 1,
            logs=logs,
            contract_address=computation.msg.storage_address if created else None,
        )
        mined = MinedTransaction(
            receipt=receipt,
            sender=transaction.sender,
            to=transaction.to or None,
            nonce=transaction.nonce,
            value=transaction.value,
            data=transaction.data,
            gas=transaction.gas,
            effective_gas_price=min(
                transaction.max_fee_per_gas, base_fee + transaction.max_priority_fee_per_gas
            ),
            transaction_type=getattr(transaction, "type_id", None) or 0,
            block_hash=header.hash,
            logs_bloom=py_receipt.bloom,
        )
        self._transactions[tx_hash] = mined
        for log in logs:
            self._logs.append(log)
            self._logs_by_address.setdefault(log.address, []).append(log)
        return mined, computation
