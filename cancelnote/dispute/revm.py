"""revm in this process (the ``pyrevm`` package): the lab's fast chain, proven equal to py-evm.

Blocks, transactions, logs and gas estimates follow :class:`~cancelnote.dispute.local.LocalChain`
as on :class:`~cancelnote.dispute.inprocess.InProcessChain`; only execution differs.

pyrevm 0.3.7 (revm 8) runs a call as the EVM does but has no transaction boundary: it never
finalizes revm's journal, so every account and slot a call touched would stay warm for the
next call (100 gas instead of 2,100 for a read) and a slot's original value (EIP-2200)
would be its value when first read. So each transaction runs inside a journal checkpoint:
its changes (accounts, and the storage slots whose value moved) are read from the journal,
the checkpoint is reverted (the journal is empty and cold again) and the changes are written
to revm's database directly. The sender's gas, nonce and the fee recipient's tip are applied
here, in py-evm's order (gas bought before the call, the unused part refunded after), with
EIP-7623's calldata floor, which revm 8 predates.

Rules beyond ``LocalChain``:

* **Equal to py-evm** in return data, revert reasons, gas, logs, nonces and balances, for
  legacy and EIP-1559 transactions without access lists (others are refused):
  ``tests/test_differential.py`` replays the court's histories and random sequences on
  both. Known differences, none of which the court uses: ``BASEFEE`` and ``GASPRICE`` read
  0 (pyrevm sets them so), ``BLOCKHASH`` is not the chain's, the BLS precompiles (EIP-2537)
  are absent, and a self-destructed contract's storage is not cleared.
* **Only the newest state is kept**: reads at an older block, or at the latest while a
  block with transactions is being built, are a :class:`ChainError`.
* **Blocks have no Merkle roots** (zero), and their hash only identifies them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version

import attrs
import pyrevm
from eth.vm.forks.london.constants import INITIAL_BASE_FEE

from ..crypto import keccak
from .chain import ChainError
from .local import (
    COINBASE,
    BlockInfo,
    DryRun,
    Execution,
    LocalChain,
    Outcome,
    PendingBlock,
    Run,
    Transaction,
)

EMPTY_CODE_HASH = keccak(b"")
SPEC = "PRAGUE"
#: Transaction types this backend takes (the access lists of types 1 and 2 must be empty).
TRANSACTION_TYPES = (0, 1, 2)

#: revm's halt reasons in the words of :data:`~cancelnote.dispute.local.HALTS`.
_HALTS = {
    "OutOfGas": "out of gas",
    "CreateContractSizeLimit": "out of gas",  # py-evm runs out of gas on EIP-170's limit
    "OpcodeNotFound": "invalid instruction",
    "InvalidFEOpcode": "invalid instruction",
    "NotActivated": "invalid instruction",
    "InvalidJump": "invalid jump destination",
    "StackUnderflow": "stack underflow",
    "StackOverflow": "stack overflow",
    "CallTooDeep": "call depth limit",
    "StateChangeDuringStaticCall": "state change in a static call",
    "CallNotAllowedInsideStatic": "state change in a static call",
    "OutOfOffset": "return data out of bounds",
    "CreateCollision": "contract address collision",
    "CreateContractStartingWithEF": "code starts with 0xef",
    "OutOfFunds": "insufficient funds",
}
_REVERT = re.compile(r"Revert \{ gas_used: \d+, output: 0x([0-9a-f]*) \}")
_HALT = re.compile(r"Halt \{ reason: (\w+)")
_JOURNAL = "journal: ["
_WRITE = re.compile(r"StorageChange \{ address: (0x[0-9a-f]{40}), key: (\d+), had_value: Some")
_DESTROYED = re.compile(r"AccountDestroyed \{ address: (0x[0-9a-f]{40})")


@attrs.frozen
class _Account:
    balance: int = 0
    nonce: int = 0
    code_hash: bytes = EMPTY_CODE_HASH


_EMPTY = _Account()


@attrs.frozen
class _Changes:
    """What one transaction changed, read from revm's journal before it is reverted."""

    accounts: dict[bytes, tuple[_Account, bytes | None]]  # the new code of a new contract
    storage: list[tuple[bytes, int, int]]  # (address, slot, new value)


def _hex(address: bytes) -> str:
    return "0x" + address.hex()


def _failure(error: RuntimeError) -> tuple[str, bytes]:
    """A revert or a halt from pyrevm's error text; anything else was refused before running."""
    text = str(error)
    reverted = _REVERT.match(text)
    if reverted:
        return "revert", bytes.fromhex(reverted.group(1))
    halted = _HALT.match(text)
    if halted:
        return _HALTS.get(halted.group(1), halted.group(1)), b""
    raise ChainError(f"the transaction is invalid: {text}")


def _code_hash(info: pyrevm.AccountInfo) -> bytes:
    """An account's code hash (revm gives every account one; the stub says it may not)."""
    if info.code_hash is None:
        raise ChainError("revm returned an account without a code hash")
    return info.code_hash


def _original_code(padded: bytes, code_hash: bytes) -> bytes:
    """Code as deployed: revm hands out its analysed copy, with up to 33 zero bytes added."""
    for cut in range(len(padded), max(len(padded) - 34, -1), -1):
        if keccak(padded[:cut]) == code_hash:
            return padded[:cut]
    raise ChainError(f"revm holds code that does not hash to {code_hash.hex()}")


def _log(entry: pyrevm.Log) -> tuple[bytes, tuple[bytes, ...], bytes]:
    topics, data = entry.data
    return bytes.fromhex(entry.address[2:]), tuple(topics), data


def _written(journal: str) -> tuple[set[tuple[bytes, int]], set[bytes]]:
    """Slots a transaction wrote, and accounts it destroyed, from revm's journal (Debug text).

    The journal's entries come last (after the state, which prints every loaded contract's
    code): a write is a ``StorageChange`` with ``had_value: Some``, a mere read ``None``.
    """
    entries = journal[journal.rindex(_JOURNAL) :]
    written = {(bytes.fromhex(address[2:]), int(key)) for address, key in _WRITE.findall(entries)}
    destroyed = {bytes.fromhex(address[2:]) for address in _DESTROYED.findall(entries)}
    return written, destroyed


class RevmChain(LocalChain):
    """A deterministic revm dev chain (see :class:`~cancelnote.dispute.local.LocalChain`)."""

    engine = f"revm (pyrevm {version('pyrevm')}, {SPEC.title()})"

    _evm: pyrevm.EVM
    _accounts: dict[bytes, _Account]  # what revm's database holds, mirrored
    _codes: dict[bytes, bytes]
    _block_env: tuple[int, int] | None

    # --- state ----------------------------------------------------------------------------

    def balance(self, address: bytes, *, block_number: int | None = None) -> int:
        with self._lock:
            self._newest(block_number)
            return self._accounts.get(address, _EMPTY).balance

    def nonce(self, address: bytes, *, block_number: int | None = None) -> int:
        with self._lock:
            self._newest(block_number)
            return self._accounts.get(address, _EMPTY).nonce

    def code(self, address: bytes, *, block_number: int | None = None) -> bytes:
        with self._lock:
            self._newest(block_number)
            return self._codes[self._accounts.get(address, _EMPTY).code_hash]

    # --- the backend ------------------------------------------------------------------------

    def _genesis(self, balances: dict[bytes, int], timestamp: int) -> BlockInfo:
        environment = pyrevm.Env(cfg=pyrevm.CfgEnv(chain_id=self.chain_id))
        self._evm = pyrevm.EVM(env=environment, gas_limit=self.gas_limit, spec_id=SPEC)
        self._accounts, self._codes = {}, {EMPTY_CODE_HASH: b""}
        self._block_env = None
        for address, balance in balances.items():
            self._write(address, _Account(balance=balance))
        return self._block_info(0, bytes(32), timestamp * 1_000, 0, INITIAL_BASE_FEE, ())

    def _prepare(self, block: PendingBlock) -> None:
        """Nothing to open: revm is told the block when it runs something in it."""

    def _execute(
        self, transaction: Transaction, block: PendingBlock, expect: Outcome | None = None
    ) -> Execution | None:
        if transaction.type_id not in TRANSACTION_TYPES or transaction.access_list:
            raise ChainError(
                f"the revm backend takes transactions of types {TRANSACTION_TYPES} without "
                f"access lists, got type {transaction.type_id}"
            )
        self._use_block(block.number, block.timestamp)
        price = transaction.price(block.base_fee)
        run, changes, logs, created = self._run(
            transaction.sender, transaction.to, transaction.data, transaction.value,
            transaction.gas, keep=True, bought=transaction.gas * price,
        )  # fmt: skip
        if expect is not None and run.outcome != expect:  # nothing was written
            return None
        assert changes is not None
        charged = run.charged_gas(transaction.data)
        accounts = changes.accounts
        before = self._accounts.get(transaction.sender, _EMPTY)
        after = accounts.get(transaction.sender, (before, None))[0]
        accounts[transaction.sender] = (
            attrs.evolve(
                after,
                balance=after.balance + (transaction.gas - charged) * price,  # unused gas back
                nonce=before.nonce + 1,  # revm bumps it for a creation only
            ),
            None,
        )
        tip = (price - block.base_fee) * charged
        if tip:
            miner = accounts.get(COINBASE, (self._accounts.get(COINBASE, _EMPTY), None))[0]
            accounts[COINBASE] = (attrs.evolve(miner, balance=miner.balance + tip), None)
        for address, (account, code) in accounts.items():
            self._write(address, account, code)
        for address, slot, value in changes.storage:
            checkpoint = self._evm.snapshot()  # the write loads the account: forget that
            self._evm.insert_account_storage(_hex(address), slot, value)
            self._evm.revert(checkpoint)
        return Execution(
            run=run,
            gas_used=charged,
            logs=logs,
            contract_address=created if run.failure is None else None,
        )

    def _seal_block(self, block: PendingBlock) -> BlockInfo:
        hashes = tuple(transaction.hash for transaction, _, _ in block.transactions)
        parent = self._blocks[-1].hash
        info = (block.number, parent, block.timestamp_ms, block.gas_used, block.base_fee, hashes)
        return self._block_info(*info)

    def _block_info(
        self,
        number: int,
        parent_hash: bytes,
        timestamp_ms: int,
        gas_used: int,
        base_fee: int,
        hashes: tuple[bytes, ...],
    ) -> BlockInfo:
        """A revm block: no header to hash, no Merkle roots; the hash only identifies it."""
        place = number.to_bytes(8, "big") + timestamp_ms.to_bytes(8, "big")
        return BlockInfo(
            number=number,
            hash=keccak(parent_hash + place + b"".join(hashes)),
            parent_hash=parent_hash,
            timestamp=timestamp_ms // 1_000,
            timestamp_ms=timestamp_ms,
            gas_limit=self.gas_limit,
            gas_used=gas_used,
            base_fee_per_gas=base_fee,
            miner=COINBASE,
            state_root=bytes(32),
            transactions_root=bytes(32),
            receipts_root=bytes(32),
            transactions=hashes,
        )

    @contextmanager
    def _dry_runs(self, block_number: int | None, price: int = 0) -> Iterator[DryRun]:
        if block_number is None:
            self._use_block(self._pending.number, self._pending.timestamp)
        else:
            self._newest(block_number)
            self._use_block(block_number, self._blocks[block_number].timestamp)

        def run(sender: bytes, to: bytes | None, data: bytes, value: int, gas: int) -> Run:
            return self._run(sender, to, data, value, gas, keep=False, bought=gas * price)[0]

        yield run

    # --- internals ------------------------------------------------------------------------

    def _newest(self, block_number: int | None) -> None:
        """Refuse a read at a block whose state revm no longer has."""
        at = self._read_at(block_number)
        if at is not None and (at != self._blocks[-1].number or self._pending.transactions):
            raise ChainError(
                f"the revm backend keeps only the newest state, not block {at}'s "
                f"(the latest is {self._blocks[-1].number}"
                f"{', and a block is being built' if self._building else ''})"
            )

    def _use_block(self, number: int, timestamp: int) -> None:
        if self._block_env != (number, timestamp):
            self._evm.set_block_env(
                pyrevm.BlockEnv(
                    number=number,
                    coinbase=_hex(COINBASE),
                    timestamp=timestamp,
                    difficulty=0,
                    prevrandao=bytes(32),
                    gas_limit=self.gas_limit,
                )
            )
            self._block_env = (number, timestamp)

    def _write(self, address: bytes, account: _Account, code: bytes | None = None) -> None:
        """Set an account in revm's database (its journal is empty: the account is cold)."""
        if code is not None:
            self._codes[account.code_hash] = code
        self._accounts[address] = account
        self._evm.insert_account_info(
            _hex(address),
            pyrevm.AccountInfo(  # type: ignore[call-arg]  # (0.3.7's stub omits balance)
                balance=account.balance,
                nonce=account.nonce,
                code_hash=account.code_hash,
                code=code,
            ),
        )

    def _run(
        self,
        sender: bytes,
        to: bytes | None,
        data: bytes,
        value: int,
        gas: int,
        *,
        keep: bool,
        bought: int = 0,
    ) -> tuple[
        Run, _Changes | None, tuple[tuple[bytes, tuple[bytes, ...], bytes], ...], bytes | None
    ]:
        """Run a call or creation in a journal checkpoint and revert it.

        Returns the run (a creation's output is its runtime code), and, if ``keep``, what it
        changed, its logs and the created contract, for the caller to write. ``bought`` is
        wei the sender pays for its gas first (in the checkpoint, so it is undone too).
        """
        evm = self._evm
        checkpoint = evm.snapshot()
        if bought:
            balance = self._accounts.get(sender, _EMPTY).balance
            if balance < bought + value:
                evm.revert(checkpoint)
                raise ChainError(f"the transaction is invalid: {balance} wei cannot buy its gas")
            evm.set_balance(_hex(sender), balance - bought)
        created = changes = None
        logs: tuple[tuple[bytes, tuple[bytes, ...], bytes], ...] = ()
        try:
            try:
                if to is None:
                    created = bytes.fromhex(evm.deploy(_hex(sender), data, value, gas)[2:])
                    info = evm.basic(_hex(created))
                    output = _original_code(info.code or b"", _code_hash(info))
                else:
                    output = evm.message_call(_hex(sender), _hex(to), data, value, gas)
                failure = None
            except RuntimeError as exc:
                failure, output = _failure(exc)
            result = evm.result
            assert result is not None  # (the run just made)
            refund = result.gas_refunded if failure is None else 0
            run = Run(failure, output, result.gas_used + refund, refund)
            if keep:
                changes = self._changes()
                if failure is None:
                    logs = tuple(_log(entry) for entry in result.logs)
        finally:
            evm.revert(checkpoint)
        return run, changes, logs, created

    def _changes(self) -> _Changes:
        evm = self._evm
        written, destroyed = _written(evm.journal_str)
        storage = [
            (address, slot, evm.storage(_hex(address), slot))
            for address, slot in sorted(written)
            if address not in destroyed
        ]
        accounts: dict[bytes, tuple[_Account, bytes | None]] = {}
        for key, info in self._evm.journal_state.items():
            address = bytes.fromhex(key[2:])
            now = (
                _EMPTY
                if address in destroyed
                else _Account(info.balance, info.nonce, _code_hash(info))
            )
            if now != self._accounts.get(address, _EMPTY):
                new_code = now.code_hash not in self._codes
                code = _original_code(info.code or b"", now.code_hash) if new_code else None
                accounts[address] = (now, code)
        return _Changes(accounts, storage)
