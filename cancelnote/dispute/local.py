"""Chains in this process: what the py-evm and the revm backends share.

:class:`LocalChain` keeps the dev accounts, the blocks, the transactions and the logs; a
backend (:class:`~cancelnote.dispute.inprocess.InProcessChain` on py-evm, the reference, or
:class:`~cancelnote.dispute.revm.RevmChain` on revm) only executes transactions and reads
state. Both therefore mine the same blocks, sign the same transactions, estimate gas with the
same search and refuse the same transactions with the same words.

Rules:

* **Auto-mining by default.** A transaction sent while no block is being built is mined at
  once in its own block, stamped a second after the latest one unless
  :meth:`~LocalChain.set_next_block_timestamp` says otherwise. The wall clock is never read.
* **Building blocks** (as geth or anvil with a block time, but on the caller's clock):
  :meth:`~LocalChain.begin_block` opens a block stamped at a slot time in milliseconds (the
  EVM sees whole seconds: blocks of sub-second slots may share a second, as on L2s); the
  transactions sent then go into it, in the order sent, each with its own receipt and logs,
  until :meth:`~LocalChain.seal_block`. A transaction executes at once, in the block being
  built, so its receipt is known when ``transact`` returns; the block's logs are visible to
  queries once it is sealed.
* **The block gas limit holds.** A transaction whose gas does not fit the block being built
  seals it; the next block opens one ``block_time_ms`` later and takes the transaction and
  those sent after it. Such a spilled block stays open until the caller's slot reaches it.
* **Reads.** Calls, balances and nonces see the newest state: the block being built if there
  is one (as ``eth_call`` at ``pending``), else the latest block. Gas estimates see the block
  the transaction will be mined in. ``block_number`` and ``timestamp`` are the latest sealed
  block's.
* **Gas is estimated, never guessed**: a limit checked to end the transaction exactly as an
  unlimited, costless run does (geth's optimistic first guess, the gas used plus a 63/64 call
  margin and at least EIP-7623's calldata floor, else a binary search like geth's
  ``eth_estimateGas``). ``transact`` checks the guess by running the transaction as it will
  execute (its gas bought first); a backend that can undo a run (revm) checks with the
  execution itself, one that cannot (py-evm) with a dry run: the same gas either way.
* **One lock** guards the chain: the JSON-RPC server and ``trio.to_thread`` callers share one.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import attrs
from eth.constants import GAS_TX
from eth.vm.forks.london.headers import calculate_expected_base_fee_per_gas
from eth.vm.forks.prague import PragueVM
from eth.vm.forks.prague.constants import STANDARD_TOKEN_COST, TOTAL_COST_FLOOR_PER_TOKEN
from eth_bloom import BloomFilter

from ..crypto import Signer, keccak
from .chain import (
    Chain,
    ChainError,
    Log,
    LogFilter,
    Receipt,
    TransactionReverted,
    decode_revert_reason,
)

GAS_LIMIT = 30_000_000  # per block (mainnet's from 2021 to 2025), the same in every block
MIN_GAS_LIMIT = 21_000  # a block must hold a transfer
MAX_TIMESTAMP = 2**64 - 1  # a header's timestamp is a uint64 (seconds)
MAX_BLOCK_TIME_MS = 10**9  # eleven days: anything longer is a mistake
MAX_GAS_LIMIT = 2**63 - 1  # py-evm's and revm's (u64) bound
DEFAULT_GENESIS_TIMESTAMP = 1_700_000_000  # 2023-11-14: fixed so that runs are reproducible
DEFAULT_BLOCK_TIME_MS = 1_000  # how far a spilled-over block comes after a full one
DEV_BALANCE = 10**24  # wei per dev account: a million ether, enough for any test
PRIORITY_FEE = 0  # the dev chain has no miner to tip; the fee is the base fee alone
CALL_STIPEND = 2_300  # gas a value-carrying CALL adds for the callee (geth's first guess)
ESTIMATE_ERROR_RATIO = 0.015  # geth stops its gas search when within 1.5 %
DEV_KEY_PREFIX = b"cancelnote dev account"
DYNAMIC_FEE_TYPE = 2  # EIP-1559
COINBASE = bytes(20)  # the dev chain's fee recipient (py-evm's default)
#: The backends :func:`make_chain` builds: py-evm (the reference) and revm (the fast one).
BACKENDS = ("py-evm", "revm")


def dev_account(index: int) -> Signer:
    """Dev account ``index``: the same key on every run and every machine."""
    return Signer(keccak(DEV_KEY_PREFIX + index.to_bytes(4, "big")))


def fastest_backend() -> str:
    """``revm`` when its package is installed (``cancelnote[fast]``), else ``py-evm``: the
    lab's default (a run's outputs are the same on both)."""
    try:
        import pyrevm  # noqa: F401
    except ImportError:
        return "py-evm"
    return "revm"


def make_chain(backend: str = "py-evm", **options: Any) -> LocalChain:
    """A fresh dev chain on ``backend`` (one of :data:`BACKENDS`), for the lab and the CLI.

    ``options`` are the chain's constructor arguments (``chain_id``, ``accounts``, ...).

    Raises:
        ChainError: an unknown backend, or revm without its package (``cancelnote[fast]``).
    """
    if backend == "py-evm":
        from .inprocess import InProcessChain

        return InProcessChain(**options)
    if backend == "revm":
        try:
            from .revm import RevmChain
        except ImportError as exc:
            raise ChainError(
                f"the revm backend needs pyrevm: pip install 'cancelnote[fast]' ({exc})"
            ) from None
        return RevmChain(**options)
    raise ChainError(f"unknown chain backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def calldata_floor_gas(data: bytes) -> int:
    """EIP-7623's least gas of a transaction carrying ``data`` (py-evm's constants; a test
    compares it with py-evm's own ``calc_data_floor_gas``)."""
    zeros = data.count(0)
    tokens = zeros + (len(data) - zeros) * STANDARD_TOKEN_COST
    return GAS_TX + TOTAL_COST_FLOOR_PER_TOKEN * tokens


def logs_bloom(logs: Iterable[Log]) -> int:
    """The 2048-bit bloom of ``logs`` (addresses and topics), as receipts and headers carry it."""
    bloom = BloomFilter()
    for log in logs:
        bloom.add(log.address)
        for topic in log.topics:
            bloom.add(topic)
    return int(bloom)


@attrs.frozen
class Transaction:
    """A signed transaction as both backends see it: one of ours, or a raw one decoded."""

    hash: bytes
    raw: bytes
    sender: bytes
    to: bytes | None
    nonce: int
    value: int
    data: bytes
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    type_id: int
    chain_id: int | None
    intrinsic_gas: int | None = None  # known for decoded raw transactions (py-evm's count)
    access_list: tuple[object, ...] = ()

    def price(self, base_fee: int) -> int:
        """What a unit of gas costs in a block with ``base_fee`` (EIP-1559)."""
        return min(self.max_fee_per_gas, base_fee + self.max_priority_fee_per_gas)


def _rlp_length(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(size),)) + size


def _rlp_int(value: int) -> bytes:
    """One RLP string of an int: big-endian without leading zeros (0 is the empty string).

    pyrlp infers a serializer for every item (measured: 80 µs a transaction, more than revm
    takes to run one); this and :func:`_rlp_bytes` write the same bytes (a test compares a
    signed transaction with eth-account's)."""
    if value < 0x80:
        return bytes((0x80,)) if value == 0 else bytes((value,))
    length = (value.bit_length() + 7) // 8
    return bytes((0x80 + length,)) + value.to_bytes(length, "big")  # ints here are < 56 bytes


def _rlp_bytes(value: bytes) -> bytes:
    """One RLP string of bytes."""
    if len(value) == 1 and value[0] < 0x80:
        return value
    return _rlp_length(len(value), 0x80) + value


def _rlp_wrap(payload: bytes) -> bytes:
    return _rlp_length(len(payload), 0xC0) + payload


_TYPE_PREFIX = bytes((DYNAMIC_FEE_TYPE,))
_EMPTY_ACCESS_LIST = b"\xc0"


def sign_transaction(
    signer: Signer,
    *,
    chain_id: int,
    nonce: int,
    max_fee_per_gas: int,
    gas: int,
    to: bytes | None,
    value: int,
    data: bytes,
) -> Transaction:
    """An EIP-1559 transaction without access list, signed (RFC 6979, so deterministic)."""
    encoded = b"".join(  # once: signed, then sent with the signature
        (
            _rlp_int(chain_id),
            _rlp_int(nonce),
            _rlp_int(PRIORITY_FEE),
            _rlp_int(max_fee_per_gas),
            _rlp_int(gas),
            _rlp_bytes(to or b""),
            _rlp_int(value),
            _rlp_bytes(data),
            _EMPTY_ACCESS_LIST,
        )
    )
    signature = signer.sign_hash(keccak(_TYPE_PREFIX + _rlp_wrap(encoded)))  # r || s || v
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    signed = encoded + _rlp_int(signature[64] - 27) + _rlp_int(r) + _rlp_int(s)
    raw = _TYPE_PREFIX + _rlp_wrap(signed)
    return Transaction(
        hash=keccak(raw),
        raw=raw,
        sender=signer.address,
        to=to,
        nonce=nonce,
        value=value,
        data=data,
        gas=gas,
        max_fee_per_gas=max_fee_per_gas,
        max_priority_fee_per_gas=PRIORITY_FEE,
        type_id=DYNAMIC_FEE_TYPE,
        chain_id=chain_id,
    )


def decode_transaction(raw: bytes) -> Transaction:
    """A raw signed transaction (legacy or typed) decoded and its sender recovered by py-evm.

    Raises:
        ChainError: the bytes are no transaction or carry no valid signature.
    """
    try:
        decoded = PragueVM.get_transaction_builder().decode(raw)
        sender = decoded.sender
    except Exception as exc:  # rlp and py-evm raise many kinds for malformed input
        raise ChainError(f"cannot decode the transaction: {exc}") from None
    gas_price = getattr(decoded, "gas_price", None)
    return Transaction(
        hash=decoded.hash,
        raw=raw,
        sender=sender,
        to=decoded.to or None,
        nonce=decoded.nonce,
        value=decoded.value,
        data=decoded.data,
        gas=decoded.gas,
        max_fee_per_gas=decoded.max_fee_per_gas if gas_price is None else gas_price,
        max_priority_fee_per_gas=(
            decoded.max_priority_fee_per_gas if gas_price is None else gas_price
        ),
        type_id=getattr(decoded, "type_id", None) or 0,
        chain_id=getattr(decoded, "chain_id", None),
        intrinsic_gas=decoded.intrinsic_gas,
        access_list=tuple(getattr(decoded, "access_list", ())),
    )


@attrs.frozen
class Run:
    """How one execution ended, in words both EVMs share.

    ``failure`` is ``None`` for a success, ``"revert"`` for a REVERT, else one of
    :data:`HALTS`; ``spent`` is the gas used before refunds (the intrinsic gas included) and
    ``refund`` the refund the EVM granted (capped at a fifth of ``spent``).
    """

    failure: str | None
    output: bytes
    spent: int
    refund: int = 0

    @property
    def outcome(self) -> tuple[str | None, bytes]:
        """What a gas estimate must keep: the same ending (a success's output may depend on
        ``gasleft()``; success is what counts)."""
        return (self.failure, self.output) if self.failure else (None, b"")

    @property
    def reason(self) -> str:
        """The revert string, or what stopped the EVM."""
        if self.failure == "revert":
            return decode_revert_reason(self.output)
        return f"execution failed: {self.failure}"

    def charged_gas(self, data: bytes) -> int:
        """Gas the sender pays: used less refunds, at least the calldata floor (EIP-7623)."""
        used = self.spent - self.refund
        return max(used, calldata_floor_gas(data))


#: What stops an EVM other than a REVERT, in the words both backends map their errors to.
HALTS = frozenset(
    {
        "out of gas",
        "invalid instruction",
        "invalid jump destination",
        "stack underflow",
        "stack overflow",
        "call depth limit",
        "state change in a static call",
        "return data out of bounds",
        "contract address collision",
        "code starts with 0xef",
        "insufficient funds",
        "precompile failed",
    }
)


@attrs.frozen
class Execution:
    """What executing one transaction in a block gave: the run, its gas, logs, new contract."""

    run: Run
    gas_used: int  # as the receipt says
    logs: tuple[tuple[bytes, tuple[bytes, ...], bytes], ...]  # (address, topics, data)
    contract_address: bytes | None


@attrs.frozen
class MinedTransaction:
    """A sealed transaction as the JSON-RPC server reports it: receipt, envelope, price."""

    receipt: Receipt
    transaction: Transaction
    effective_gas_price: int
    block_hash: bytes


@attrs.frozen
class BlockInfo:
    """A sealed block's header fields (``timestamp_ms`` is the exact slot time beside the EVM's
    seconds; revm blocks carry no Merkle roots and their hash is only an identifier)."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int
    timestamp_ms: int
    gas_limit: int
    gas_used: int
    base_fee_per_gas: int
    miner: bytes
    state_root: bytes
    transactions_root: bytes
    receipts_root: bytes
    transactions: tuple[bytes, ...]


@attrs.define
class PendingBlock:
    """The block the next transaction goes into (being built, or the next auto-mined one)."""

    number: int
    timestamp_ms: int
    base_fee: int
    gas_limit: int
    gas_used: int = 0
    log_count: int = 0
    transactions: list[tuple[Transaction, Execution, Receipt]] = attrs.Factory(list)

    @property
    def timestamp(self) -> int:
        """The EVM's timestamp: whole seconds."""
        return self.timestamp_ms // 1000


class LogIndex:
    """Every sealed log, by address and by (position, topic), for queries by interest.

    A query walks the shortest list its filter pins down (an address, or a topic at a
    position, with its alternatives merged), bisected to the block range, and checks the
    rest of the filter on each log there: a watchtower asking for its owner's logs touches
    those, not every log of the court.
    """

    def __init__(self) -> None:
        self._all: list[Log] = []
        self._by_address: dict[bytes, list[Log]] = {}
        self._by_topic: dict[tuple[int, bytes], list[Log]] = {}

    def add(self, log: Log) -> None:
        """Index ``log`` (logs come in chain order)."""
        self._all.append(log)
        self._by_address.setdefault(log.address, []).append(log)
        for position, topic in enumerate(log.topics):
            self._by_topic.setdefault((position, topic), []).append(log)

    def query(self, wanted: LogFilter, head: int) -> list[Log]:
        """The logs ``wanted`` selects up to block ``head``, in chain order."""
        last = head if wanted.to_block is None else min(wanted.to_block, head)
        choices: list[list[list[Log]]] = [[self._all]]
        if wanted.addresses is not None:
            choices.append([self._by_address.get(a, []) for a in sorted(wanted.addresses)])
        for position, allowed in enumerate(wanted.topics):
            if allowed is not None:
                choices.append([self._by_topic.get((position, t), []) for t in sorted(allowed)])
        lists = min(choices, key=lambda candidate: sum(map(len, candidate)))
        slices = [self._in_range(logs, wanted.from_block, last) for logs in lists]
        merged = (
            slices[0]
            if len(slices) == 1
            else heapq.merge(*slices, key=lambda log: (log.block_number, log.log_index))
        )
        return [log for log in merged if wanted.matches(log)]

    @staticmethod
    def _in_range(logs: list[Log], first: int, last: int) -> list[Log]:
        start = bisect.bisect_left(logs, first, key=lambda log: log.block_number)
        end = bisect.bisect_right(logs, last, key=lambda log: log.block_number)
        return logs[start:end]


@attrs.frozen
class Once:
    """A transaction executed before its gas was known (:meth:`LocalChain._execute_once`):
    how it ended, and how to keep its effects once it is signed with its estimate."""

    run: Run
    keep: Callable[[Transaction], Execution]


#: A dry run: ``(sender, to, data, value, gas) -> Run``, on a fixed block and state.
DryRun = Callable[[bytes, bytes | None, bytes, int, int], Run]
#: How a run ended, as an estimate compares runs (see :attr:`Run.outcome`).
Outcome = tuple[str | None, bytes]


class LocalChain(Chain):
    """A deterministic dev chain in this process: funded accounts, explicit block time.

    Args:
        chain_id: the EIP-155 chain id (the court binds signatures to it).
        accounts: how many dev accounts to fund (see :func:`dev_account`).
        genesis_timestamp: the genesis block's timestamp; auto-mined block ``n`` gets
            ``genesis + n`` unless time is moved explicitly.
        block_time_ms: how long after a full block the block taking its spill-over comes.
        gas_limit: every block's gas limit (30 million, mainnet's, unless a scenario says).
    """

    #: What executes the transactions (banners, ``web3_clientVersion``).
    engine: str

    def __init__(
        self,
        chain_id: int = 1337,
        accounts: int = 10,
        genesis_timestamp: int = DEFAULT_GENESIS_TIMESTAMP,
        block_time_ms: int = DEFAULT_BLOCK_TIME_MS,
        gas_limit: int = GAS_LIMIT,
    ) -> None:
        if accounts < 0:
            raise ChainError(f"accounts must be >= 0, got {accounts}")
        if not 0 < block_time_ms <= MAX_BLOCK_TIME_MS:
            raise ChainError(
                f"block_time_ms must be in (0, {MAX_BLOCK_TIME_MS:,}], got {block_time_ms}"
            )
        if not MIN_GAS_LIMIT <= gas_limit <= MAX_GAS_LIMIT:
            raise ChainError(
                f"gas_limit must be in [{MIN_GAS_LIMIT:,}, {MAX_GAS_LIMIT:,}], got {gas_limit}"
            )
        self.chain_id = chain_id
        self.block_time_ms = block_time_ms
        self.gas_limit = gas_limit
        self.dev_accounts: list[Signer] = [dev_account(i) for i in range(accounts)]
        self._lock = threading.RLock()
        self._transactions: dict[bytes, MinedTransaction] = {}
        self._log_index = LogIndex()
        genesis = self._genesis(
            {signer.address: DEV_BALANCE for signer in self.dev_accounts}, genesis_timestamp
        )
        self._blocks: list[BlockInfo] = [genesis]
        self._building = False  # a block opened by begin_block is pending
        self._slot_ms = genesis.timestamp_ms  # the caller's slot: the last begin_block
        self._pending = self._next_block(genesis.timestamp_ms + 1_000)

    # --- blocks -----------------------------------------------------------------------

    @property
    def building(self) -> PendingBlock | None:
        """The block being built (its number, slot time, gas so far), or ``None``."""
        return self._pending if self._building else None

    def begin_block(self, timestamp_ms: int) -> None:
        """The caller's clock is at slot ``timestamp_ms``: build the block stamped then.

        Transactions sent from now on go into it. A block still being built for an earlier
        slot is sealed first; one already at or after this slot (a spill-over) goes on.

        Raises:
            ChainError: the slot is not after the latest block, or before the last slot.
        """
        _check_time(timestamp_ms, per_second=1_000)
        with self._lock:
            if timestamp_ms < self._slot_ms:
                raise ChainError(
                    f"slots go forward: the last began at {self._slot_ms} ms, got {timestamp_ms}"
                )
            if self._building:
                if self._pending.timestamp_ms >= timestamp_ms:
                    self._slot_ms = timestamp_ms
                    return
                self._seal()
            latest = self._blocks[-1].timestamp_ms
            if timestamp_ms <= latest:
                raise ChainError(
                    f"a block's slot must be after the latest block's ({latest} ms), "
                    f"got {timestamp_ms}"
                )
            self._pending = self._next_block(timestamp_ms)
            self._building, self._slot_ms = True, timestamp_ms

    def seal_block(self) -> BlockInfo | None:
        """Seal the block being built for the caller's slot (or an earlier one) and return it.

        Afterwards transactions are auto-mined again until the next :meth:`begin_block`.
        Returns ``None`` when no block is being built, or when it is a spill-over for a
        later slot (it is sealed when the caller's slot reaches it).
        """
        with self._lock:
            if not self._building or self._pending.timestamp_ms > self._slot_ms:
                return None
            return self._seal()

    def mine(self) -> None:
        """Seal the pending block: the one being built, whatever its slot, else an empty one."""
        with self._lock:
            self._seal()

    def set_next_block_timestamp(self, timestamp: int) -> None:
        _check_time(timestamp)
        with self._lock:
            self._not_building("set the next block's timestamp")
            latest = self._blocks[-1].timestamp
            if timestamp <= latest:
                raise ChainError(
                    f"the next block's timestamp must be after the latest block's "
                    f"({latest}), got {timestamp}"
                )
            self._pending = self._next_block(timestamp * 1_000)

    def increase_time(self, seconds: int) -> None:
        with self._lock:  # read the latest timestamp and move on from it atomically
            super().increase_time(seconds)

    def block_number(self) -> int:
        with self._lock:
            return self._blocks[-1].number

    def timestamp(self) -> int:
        with self._lock:
            return self._blocks[-1].timestamp

    def timestamp_ms(self) -> int:
        """The latest block's exact slot time in milliseconds."""
        with self._lock:
            return self._blocks[-1].timestamp_ms

    def block(self, number: int | None = None) -> BlockInfo:
        """Sealed block ``number`` (the latest if ``None``); ChainError past the head."""
        with self._lock:
            return self._blocks[self._sealed(number)]

    def base_fee(self) -> int:
        """The base fee per gas the next transaction's block charges."""
        with self._lock:
            return self._pending.base_fee

    # --- transactions -------------------------------------------------------------------

    def estimate_gas(self, sender: bytes, to: bytes | None, data: bytes, *, value: int = 0) -> int:
        """The gas limit :meth:`transact` would send with (costless runs: no gas is bought)."""
        with self._lock, self._dry_runs(None) as run:
            self._can_pay(sender, value, None)
            cap = self._pending.gas_limit
            unlimited = run(sender, to, data, value, cap)
            gas = _first_guess(unlimited, data, cap)
            if run(sender, to, data, value, gas).outcome != unlimited.outcome:
                gas = _search(run, (sender, to, data, value), gas, cap, unlimited.outcome)
        if unlimited.failure:
            raise TransactionReverted(unlimited.reason, output=unlimited.output)
        return gas

    def call(
        self,
        to: bytes | None,
        data: bytes,
        *,
        sender: bytes | None = None,
        value: int = 0,
        block_number: int | None = None,
    ) -> bytes:
        """Run a read-only call on the newest state, or on the state after ``block_number``.

        ``to=None`` runs a creation (``eth_call`` without ``to``) and returns the runtime code.
        """
        sender = sender or bytes(20)
        with self._lock, self._dry_runs(self._read_at(block_number)) as run:
            self._can_pay(sender, value, block_number)
            result = run(sender, to, data, value, self.gas_limit)
        if result.failure:
            raise TransactionReverted(result.reason, output=result.output)
        return result.output

    def _send(self, sender: Signer, to: bytes | None, data: bytes, value: int) -> Receipt:
        """Estimate, sign and include, on the block the transaction is mined in.

        The estimate checks its first guess by running the transaction as it will execute
        (gas bought); a backend that can undo a run checks with the execution itself. Should
        the guess end otherwise, a search finds the gas and the transaction is signed anew.
        """
        with self._lock:
            included = None
            while included is None:  # a full block is sealed: once more, in the next one
                included = self._estimate_and_include(sender, to, data, value)
        receipt, run = included
        if run.failure:
            raise TransactionReverted(run.reason, receipt, run.output)
        return receipt

    def send_raw_transaction(self, raw: bytes) -> bytes:
        """Include a transaction signed elsewhere and return its hash, even if it reverted.

        Raises:
            ChainError: the bytes are no transaction, or it cannot be included (chain id,
                nonce, balance, fees, gas).
        """
        transaction = decode_transaction(raw)
        with self._lock:
            self._validate(transaction, self._pending)
            if self._make_room(transaction.gas):
                self._validate(transaction, self._pending)  # the base fee moved
            self._record(transaction, self._execute_kept(transaction, self._pending), self._pending)
        return transaction.hash

    def transaction(self, transaction_hash: bytes) -> MinedTransaction | None:
        """The sealed transaction with this hash, or ``None`` if there is none (yet)."""
        with self._lock:
            return self._transactions.get(transaction_hash)

    def receipt(self, transaction_hash: bytes) -> Receipt | None:
        """The receipt of a transaction sealed or in the block being built (``None`` if
        neither): what a party sending during a slot learns before the slot's block is out."""
        with self._lock:
            mined = self._transactions.get(transaction_hash)
            if mined is not None:
                return mined.receipt
            return next(
                (r for t, _, r in self._pending.transactions if t.hash == transaction_hash), None
            )

    def transaction_input(self, transaction_hash: bytes) -> bytes | None:
        mined = self.transaction(transaction_hash)
        return None if mined is None else mined.transaction.data

    def logs(self, wanted: LogFilter) -> list[Log]:
        with self._lock:
            return self._log_index.query(wanted, self._blocks[-1].number)

    # --- state (the backend reads it) ----------------------------------------------------

    @abstractmethod
    def balance(self, address: bytes, *, block_number: int | None = None) -> int:
        """Wei held by ``address`` in the newest state, or after ``block_number``."""

    @abstractmethod
    def nonce(self, address: bytes, *, block_number: int | None = None) -> int:
        """The next nonce of ``address`` (its transaction count), newest or after a block."""

    @abstractmethod
    def code(self, address: bytes, *, block_number: int | None = None) -> bytes:
        """The runtime code at ``address`` (empty for an account without code)."""

    # --- what a backend implements ----------------------------------------------------------

    @abstractmethod
    def _genesis(self, balances: dict[bytes, int], timestamp: int) -> BlockInfo:
        """Create the genesis state with these balances; return the genesis block."""

    @abstractmethod
    def _prepare(self, block: PendingBlock) -> None:
        """Make ``block`` (empty) the block the next transaction executes in."""

    @abstractmethod
    def _execute(
        self, transaction: Transaction, block: PendingBlock, expect: Outcome | None = None
    ) -> Execution | None:
        """Execute a validated transaction at the end of ``block`` and keep its effects.

        With ``expect``, keep them only if the run ends so; else change nothing and return
        ``None`` (the caller's gas guess was wrong).
        """

    def _execute_kept(self, transaction: Transaction, block: PendingBlock) -> Execution:
        """:meth:`_execute` with no outcome expected: its effects are always kept."""
        execution = self._execute(transaction, block)
        assert execution is not None
        return execution

    def _execute_once(
        self, sender: bytes, to: bytes | None, data: bytes, value: int, block: PendingBlock
    ) -> Once | None:
        """Execute a transaction at the block's gas limit if that run is provably its own
        gas estimate and the execution at that estimate (see ``revm.py``); ``None`` (the
        default) to estimate first."""
        return None

    @abstractmethod
    def _seal_block(self, block: PendingBlock) -> BlockInfo:
        """Close ``block`` with its transactions; return its header fields."""

    @abstractmethod
    def _dry_runs(self, block_number: int | None, price: int = 0) -> AbstractContextManager[DryRun]:
        """Dry runs (nothing kept) on the pending block (``None``) or on the state and header
        of sealed block ``block_number``; with a ``price``, the sender buys the gas first, as
        a transaction does (else it is free: ``eth_call``)."""

    # --- internals ------------------------------------------------------------------------

    def _sealed(self, number: int | None) -> int:
        head = self._blocks[-1].number
        if number is None:
            return head
        if not 0 <= number <= head:
            raise ChainError(f"no block {number}: the latest is {head}")
        return number

    def _read_at(self, block_number: int | None) -> int | None:
        """Where a read runs: the pending block while building, else a sealed block."""
        if block_number is None:
            return None if self._building else self._blocks[-1].number
        return self._sealed(block_number)

    def _can_pay(self, sender: bytes, value: int, block_number: int | None) -> None:
        """A run's value must be a uint256 the sender holds (the same words on every backend)."""
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
            raise ChainError(f"the transaction is invalid: a value is a uint256, got {value!r:.80}")
        balance = self.balance(sender, block_number=block_number)
        if balance < value:
            raise ChainError(
                f"the transaction is invalid: the sender's balance {balance} cannot pay {value}"
            )

    def _not_building(self, what: str) -> None:
        if self._building:
            raise ChainError(
                f"cannot {what}: block {self._pending.number} is being built "
                f"(slot {self._pending.timestamp_ms} ms); seal it first"
            )

    def _next_block(self, timestamp_ms: int) -> PendingBlock:
        """The (empty) block after the latest, stamped ``timestamp_ms``, made pending."""
        parent = self._blocks[-1]
        block = PendingBlock(
            number=parent.number + 1,
            timestamp_ms=timestamp_ms,
            base_fee=calculate_expected_base_fee_per_gas(parent),  # type: ignore[arg-type]
            gas_limit=self.gas_limit,
        )
        self._prepare(block)
        return block

    def _seal(self, next_timestamp_ms: int | None = None) -> BlockInfo:
        """Seal the pending block, record it, and make the next block pending: auto-mined a
        second later, or (a spill-over being built) at ``next_timestamp_ms``."""
        block = self._pending
        info = self._seal_block(block)
        self._blocks.append(info)
        for transaction, _, receipt in block.transactions:
            self._transactions[transaction.hash] = MinedTransaction(
                receipt, transaction, transaction.price(block.base_fee), info.hash
            )
            for log in receipt.logs:
                self._log_index.add(log)
        self._building = next_timestamp_ms is not None
        self._pending = self._next_block(
            (info.timestamp + 1) * 1_000 if next_timestamp_ms is None else next_timestamp_ms
        )
        return info

    def _validate(self, transaction: Transaction, block: PendingBlock) -> None:
        """The checks a node makes before including a transaction (the same on every backend)."""
        if transaction.chain_id not in (None, self.chain_id):
            raise ChainError(
                f"transaction for chain {transaction.chain_id}, this is {self.chain_id}"
            )
        expected = self.nonce(transaction.sender)
        if transaction.nonce != expected:
            why = f"nonce {transaction.nonce}, the sender's next is {expected}"
            raise _refused(transaction, why)
        if transaction.gas > block.gas_limit:
            raise _refused(transaction, f"gas {transaction.gas} above the block gas limit")
        if transaction.intrinsic_gas is not None and transaction.gas < transaction.intrinsic_gas:
            why = f"gas {transaction.gas} below its intrinsic {transaction.intrinsic_gas}"
            raise _refused(transaction, why)
        if transaction.max_priority_fee_per_gas > transaction.max_fee_per_gas:
            raise _refused(transaction, "its priority fee is above its fee cap")
        if transaction.max_fee_per_gas < block.base_fee:
            raise _refused(
                transaction,
                f"fee cap {transaction.max_fee_per_gas} below the base fee {block.base_fee}",
            )
        cost = transaction.gas * transaction.max_fee_per_gas + transaction.value
        balance = self.balance(transaction.sender)
        if balance < cost:
            raise _refused(transaction, f"the sender's balance {balance} cannot pay {cost}")

    def _estimate_and_include(
        self, sender: Signer, to: bytes | None, data: bytes, value: int
    ) -> tuple[Receipt, Run] | None:
        """Include a transaction with the gas it needs; ``None`` if the block filled first."""
        block = self._pending
        call = (sender.address, to, data, value)
        self._can_pay(sender.address, value, None)
        once = self._execute_once(*call, block)
        if once is not None:  # one run: the estimate's first run is the execution
            gas = _first_guess(once.run, data, block.gas_limit)
            if self._make_room(gas):
                return None  # the run was in this block: run again in the next
            transaction = self._sign(sender, to, data, value, gas)
            return self._record(transaction, once.keep(transaction), block), once.run
        with self._dry_runs(None) as run:  # eth_estimateGas' first, costless run
            unlimited = run(*call, block.gas_limit)
        gas = _first_guess(unlimited, data, block.gas_limit)
        if self._make_room(gas):
            return None
        transaction = self._sign(sender, to, data, value, gas)
        execution = self._execute(transaction, block, expect=unlimited.outcome)
        if execution is None:  # the guess ends otherwise: search, as geth does
            with self._dry_runs(None, price=transaction.price(block.base_fee)) as run:
                gas = _search(run, call, gas, block.gas_limit, unlimited.outcome)
            if self._make_room(gas):
                return None
            transaction = self._sign(sender, to, data, value, gas)
            execution = self._execute_kept(transaction, block)
        return self._record(transaction, execution, block), execution.run

    def _sign(
        self, sender: Signer, to: bytes | None, data: bytes, value: int, gas: int
    ) -> Transaction:
        transaction = sign_transaction(
            sender,
            chain_id=self.chain_id,
            nonce=self.nonce(sender.address),
            max_fee_per_gas=2 * self._pending.base_fee + PRIORITY_FEE,
            gas=gas,
            to=to,
            value=value,
            data=data,
        )
        self._validate(transaction, self._pending)
        return transaction

    def _make_room(self, gas: int) -> bool:
        """Seal the block being built if ``gas`` does not fit what is left of it (the next
        block opens a block time later); whether it did."""
        block = self._pending
        if gas <= block.gas_limit - block.gas_used:  # an auto-mined block is empty: it fits
            return False
        self._seal(next_timestamp_ms=block.timestamp_ms + self.block_time_ms)
        return True

    def _record(
        self, transaction: Transaction, execution: Execution, block: PendingBlock
    ) -> Receipt:
        """Add an executed transaction to ``block`` (sealed at once unless being built)."""
        index = len(block.transactions)
        logs = tuple(
            Log(
                address=address,
                topics=topics,
                data=data,
                block_number=block.number,
                transaction_hash=transaction.hash,
                log_index=block.log_count + position,
                transaction_index=index,
            )
            for position, (address, topics, data) in enumerate(execution.logs)
        )
        receipt = Receipt(
            transaction_hash=transaction.hash,
            block_number=block.number,
            gas_used=execution.gas_used,
            status=0 if execution.run.failure else 1,
            logs=logs,
            contract_address=execution.contract_address,
            transaction_index=index,
        )
        block.transactions.append((transaction, execution, receipt))
        block.gas_used += execution.gas_used
        block.log_count += len(logs)
        if not self._building:
            self._seal()
        return receipt


def _refused(transaction: Transaction, why: str) -> ChainError:
    return ChainError(f"the transaction cannot be included: {transaction.hash.hex()}: {why}")


def _check_time(when: object, per_second: int = 1) -> None:
    """A block's time is an int whose seconds fit a header's 64 bits."""
    if (
        isinstance(when, bool)
        or not isinstance(when, int)
        or not 0 <= when // per_second <= MAX_TIMESTAMP
    ):
        raise ChainError(f"a block's time is a whole number of 64 bits, got {when!r:.40}")


def _first_guess(unlimited: Run, data: bytes, cap: int) -> int:
    """geth's optimistic estimate: the gas used plus a 63/64 call margin (and at least the
    calldata floor), at most the block's limit."""
    margin = (unlimited.spent + CALL_STIPEND) * 64 // 63
    return min(cap, max(margin, calldata_floor_gas(data)))


def _search(
    run: DryRun,
    call: tuple[bytes, bytes | None, bytes, int],
    low: int,
    high: int,
    wanted: Outcome,
) -> int:
    """The least gas, to within 1.5 %, above ``low`` (too little) that ends as ``wanted``.

    Matching the outcome, not just "no error", also sizes a reverting transaction: it gets
    enough gas to revert with its reason instead of running out of gas.
    """
    while high - low > 1 and (high - low) / high >= ESTIMATE_ERROR_RATIO:
        middle = (low + high) // 2
        if run(*call, middle).outcome == wanted:
            high = middle
        else:
            low = middle
    return high
