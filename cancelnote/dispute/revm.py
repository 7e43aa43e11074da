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
from typing import NamedTuple

import attrs
import pyrevm
from eth.vm.forks.london.constants import INITIAL_BASE_FEE

from ..crypto import keccak
from .chain import ChainError
from .local import (
    COINBASE,
    PRIORITY_FEE,
    BlockInfo,
    DryRun,
    Execution,
    LocalChain,
    Once,
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


GAS, POP, BALANCE = 0x5A, 0x50, 0x31
#: Opcodes that end a basic block (or begin one: JUMPDEST).
_BLOCK_ENDS = frozenset({0x00, 0x56, 0x57, 0x5B, 0xF3, 0xFD, 0xFE, 0xFF})
#: CALL, CALLCODE, DELEGATECALL, STATICCALL: their first operand (the top) is the gas.
_CALLS = frozenset({0xF1, 0xF2, 0xF4, 0xFA})


def _effects() -> dict[int, tuple[int, int]]:
    """(items popped, items pushed) of every Prague opcode but DUP, SWAP and the block
    ends (an opcode missing here is not known to the analysis: it makes code ineligible)."""
    effects: dict[int, tuple[int, int]] = {}
    groups = (
        ((*range(0x01, 0x08), 0x0A, 0x0B, *range(0x10, 0x15), *range(0x16, 0x19)), 2, 1),
        ((0x1A, 0x1B, 0x1C, 0x1D, 0x20), 2, 1),
        ((0x08, 0x09), 3, 1),
        ((0x15, 0x19, 0x31, 0x35, 0x3B, 0x3F, 0x40, 0x49, 0x51, 0x54, 0x5C), 1, 1),
        ((0x30, 0x32, 0x33, 0x34, 0x36, 0x38, 0x3A, 0x3D, *range(0x41, 0x4B)), 0, 1),
        ((0x58, 0x59, 0x5A, *range(0x5F, 0x80)), 0, 1),
        ((0x37, 0x39, 0x3E, 0x5E), 3, 0),
        ((0x3C,), 4, 0),
        ((0x50,), 1, 0),
        ((0x52, 0x53, 0x55, 0x5D), 2, 0),
        ((0xF0,), 3, 1),
        ((0xF5,), 4, 1),
        ((0xF1, 0xF2), 7, 1),
        ((0xF4, 0xFA), 6, 1),
    )
    for opcodes, pops, pushes in groups:
        for opcode in opcodes:
            effects[opcode] = (pops, pushes)
    for topics in range(5):
        effects[0xA0 + topics] = (2 + topics, 0)
    return effects


_EFFECTS = _effects()


def _opcodes(code: bytes) -> list[int]:
    """The instructions of ``code`` in a linear sweep (PUSH data skipped; a data section
    is swept too, which can only make the analysis refuse)."""
    opcodes, i = [], 0
    while i < len(code):
        opcode = code[i]
        opcodes.append(opcode)
        i += 1 + (opcode - 0x5F if 0x60 <= opcode <= 0x7F else 0)
    return opcodes


def _only_call_gas(opcodes: list[int], start: int) -> bool:
    """Whether the value a ``GAS`` pushed just before ``start`` is only ever the gas
    operand of a call, or dropped, within its basic block (copies made by DUP followed)."""
    copies = {0}  # stack positions (0 = top) holding the gas counter's value
    for opcode in opcodes[start:]:
        if not copies:
            break
        if 0x80 <= opcode <= 0x8F:  # DUPn copies position n - 1 to the top
            copies = {d + 1 for d in copies} | ({0} if opcode - 0x80 in copies else set())
            continue
        if 0x90 <= opcode <= 0x9F:  # SWAPn swaps the top with position n
            n = opcode - 0x8F
            copies = {n if d == 0 else 0 if d == n else d for d in copies}
            continue
        if opcode in _BLOCK_ENDS or opcode not in _EFFECTS:
            return False
        pops, pushes = _EFFECTS[opcode]
        if opcode == POP:
            copies = {d - 1 for d in copies if d}
            continue
        consumed = {d for d in copies if d < pops}
        if consumed and (opcode not in _CALLS or consumed != {0}):
            return False  # the value entered a computation (or a call's other operand)
        copies = {d + pushes - pops for d in copies if d >= pops}
    return not copies


def gas_oblivious(code: bytes) -> bool:
    """Whether ``code`` reads the gas counter only to pass it on as a call's gas, and no
    account's balance (``BALANCE``).

    For a transaction whose only code is such (every call goes to a precompile or to an
    account without code), a run at the block's gas limit with the gas bought ends exactly
    as the estimate's costless run (the sender's balance, the one thing buying changes, is
    never read) and as the execution at the estimate G = (used + 2,300) · 64/63 (at least
    the calldata floor), because the gas limit then changes nothing observable: no opcode
    result depends on it but how much gas a call forwards, which changes nothing a
    precompile (at a fixed price) or a codeless account does, and G leaves room for every
    cost, for the SSTORE sentry (more than 2,300 left) and for a call's 63/64 reserve one
    call deep. So revm runs such a transaction once (:meth:`RevmChain._execute_once`);
    ``tests/test_differential.py`` compares it with py-evm's estimate-then-execute.
    """
    opcodes = _opcodes(code)
    if BALANCE in opcodes:
        return False
    return all(_only_call_gas(opcodes, i + 1) for i, op in enumerate(opcodes) if op == GAS)


class _Account(NamedTuple):
    """An account as revm's database holds it (a tuple: made and compared per transaction)."""

    balance: int = 0
    nonce: int = 0
    code_hash: bytes = EMPTY_CODE_HASH


_EMPTY = _Account()


@attrs.frozen
class _Changes:
    """What one transaction changed, read from revm's journal before it is reverted."""

    accounts: dict[bytes, tuple[_Account, bytes | None]]  # the new code of a new contract
    storage: list[tuple[bytes, int, int]]  # (address, slot, new value)
    code_accounts: frozenset[bytes]  # every account with code the run loaded


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
    written = set()
    if "had_value: Some" in entries:
        written = {(bytes.fromhex(a[2:]), int(key)) for a, key in _WRITE.findall(entries)}
    destroyed = set()
    if "AccountDestroyed" in entries:
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
        self._oblivious_codes: dict[bytes, bool] = {}
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
        ran = self._run(
            transaction.sender, transaction.to, transaction.data, transaction.value,
            transaction.gas, keep=True, bought=transaction.gas * price,
        )  # fmt: skip
        if expect is not None and ran[0].outcome != expect:  # nothing was written
            return None
        return self._keep(transaction, block, transaction.gas, *ran)

    def _execute_once(
        self, sender: bytes, to: bytes | None, data: bytes, value: int, block: PendingBlock
    ) -> Once | None:
        """One run at the block's gas limit, gas bought, when it is provably the estimate's
        first run and the execution at the estimate too (see :func:`gas_oblivious`): a
        call whose code reads the gas counter only to pass it on as a call's gas and reads
        no balance, and during which no other code ran (no account with code but ``to``
        was loaded; a precompile has none)."""
        if to is None or not self._oblivious(to):
            return None
        price = block.base_fee + PRIORITY_FEE  # what our transactions pay (``_sign``)
        bought = block.gas_limit * price
        if self._accounts.get(sender, _EMPTY).balance < bought + value:
            return None  # the run could not buy the block's gas: estimate first
        self._use_block(block.number, block.timestamp)
        ran = self._run(sender, to, data, value, block.gas_limit, keep=True, bought=bought)
        changes = ran[1]
        assert changes is not None
        if changes.code_accounts - {to}:
            return None  # other code ran (nothing was written): estimate first

        def keep(transaction: Transaction) -> Execution:
            return self._keep(transaction, block, block.gas_limit, *ran)

        return Once(ran[0], keep)

    def _oblivious(self, address: bytes) -> bool:
        code_hash = self._accounts.get(address, _EMPTY).code_hash
        known = self._oblivious_codes.get(code_hash)
        if known is None:
            known = self._oblivious_codes[code_hash] = gas_oblivious(self._codes[code_hash])
        return known

    def _keep(
        self,
        transaction: Transaction,
        block: PendingBlock,
        gas_bought: int,
        run: Run,
        changes: _Changes | None,
        logs: tuple[tuple[bytes, tuple[bytes, ...], bytes], ...],
        created: bytes | None,
    ) -> Execution:
        """Write what a run of ``transaction`` changed, with ``gas_bought`` gas bought
        for it: the unused gas back, its nonce, the fee recipient's tip."""
        assert changes is not None
        price = transaction.price(block.base_fee)
        charged = run.charged_gas(transaction.data)
        accounts = changes.accounts
        before = self._accounts.get(transaction.sender, _EMPTY)
        after = accounts.get(transaction.sender, (before, None))[0]
        accounts[transaction.sender] = (
            after._replace(
                balance=after.balance + (gas_bought - charged) * price,  # unused gas back
                nonce=before.nonce + 1,  # revm bumps it for a creation only
            ),
            None,
        )
        tip = (price - block.base_fee) * charged
        if tip:
            miner = accounts.get(COINBASE, (self._accounts.get(COINBASE, _EMPTY), None))[0]
            accounts[COINBASE] = (miner._replace(balance=miner.balance + tip), None)
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
        code_accounts = set()
        for key, info in self._evm.journal_state.items():
            address = bytes.fromhex(key[2:])
            if info.code_hash != EMPTY_CODE_HASH:
                code_accounts.add(address)
            now = (
                _EMPTY
                if address in destroyed
                else _Account(info.balance, info.nonce, _code_hash(info))
            )
            if now != self._accounts.get(address, _EMPTY):
                new_code = now.code_hash not in self._codes
                code = _original_code(info.code or b"", now.code_hash) if new_code else None
                accounts[address] = (now, code)
        return _Changes(accounts, storage, frozenset(code_accounts))
