"""py-evm and revm, proven equal: the same transactions give the same results on both.

:class:`TwinChain` sends every call to an :class:`InProcessChain` (py-evm, the reference) and
a :class:`RevmChain` and fails at the first difference in what they return or raise: return
data, revert reasons and revert data, receipts (gas, status, logs with their topics, new
contracts, transaction hashes), gas estimates, blocks. After every step it also compares
every account revm holds (balances, nonces, code) and every log sealed so far.

What runs on it, unchanged:

* the court's stateful machines in ``tests/test_court_stateful.py`` (whatever version of the
  court they test): the module's ``InProcessChain`` is replaced by :class:`TwinChain` for the
  run, so every history hypothesis draws there is replayed on both backends;
* every scenario of ``benchmarks/gas.py`` (the published gas table);
* random sequences of transactions, built blocks (with spill-over), sub-second slots and
  time travel on the probe contract (``tests/evm_probe.py``), which reaches what the court
  does not: refunds, transient storage, creations, value transfers, the calldata floor,
  halts, ``gasleft()``, legacy transactions that tip the fee recipient.
"""

from __future__ import annotations

import importlib
import importlib.util
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import rlp
from eth_account import Account
from evm_probe import probe_call, probe_decode, probe_initcode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from cancelnote.crypto import Signer, keccak
from cancelnote.dispute.chain import Chain, ChainError, Log, LogFilter, Receipt, TransactionReverted
from cancelnote.dispute.inprocess import InProcessChain
from cancelnote.dispute.local import COINBASE, BlockInfo, MinedTransaction, PendingBlock
from cancelnote.dispute.revm import RevmChain, gas_oblivious

REPO = Path(__file__).resolve().parent.parent


def comparable(value: Any) -> Any:
    """``value`` without what only identifies a block (revm blocks carry no Merkle roots)."""
    if isinstance(value, BlockInfo):
        return attrs.evolve(
            value,
            hash=b"",
            parent_hash=b"",
            state_root=b"",
            transactions_root=b"",
            receipts_root=b"",
        )
    if isinstance(value, MinedTransaction):
        return attrs.evolve(value, block_hash=b"")
    if isinstance(value, PendingBlock):
        return attrs.astuple(value, recurse=False)
    if isinstance(value, list | tuple):
        return type(value)(map(comparable, value))
    if isinstance(value, TransactionReverted):
        return (type(value), value.reason, value.output, value.receipt)
    if isinstance(value, ChainError):
        return (type(value), str(value))
    return value


class TwinChain(Chain):
    """The same chain twice, on py-evm and on revm; every answer must agree."""

    made: ClassVar[list[TwinChain]] = []

    def __init__(self, **options: Any) -> None:
        self.reference = InProcessChain(**options)
        self.candidate = RevmChain(**options)
        self.chain_id = self.reference.chain_id
        self.dev_accounts = self.reference.dev_accounts
        self.steps = 0
        TwinChain.made.append(self)

    def both(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Ask both chains; compare what they answer (or raise) and the state after."""
        answers = []
        for chain in (self.reference, self.candidate):
            try:
                attribute = getattr(chain, name)
                answers.append(
                    (None, attribute(*args, **kwargs) if callable(attribute) else attribute)
                )
            except (ChainError, TransactionReverted) as exc:
                answers.append((exc, None))
        (raised, returned), other = answers
        assert comparable(answers[0]) == comparable(other), f"{name}{args}: {answers}"
        self.steps += 1
        self.compare_state()
        if raised is not None:
            raise raised
        return returned

    def compare_state(self) -> None:
        """Every account revm holds, the head block, the block being built and every log."""
        py_evm, revm = self.reference, self.candidate
        for address in sorted(revm._accounts.keys() | {COINBASE}):  # every account revm wrote
            mine = (py_evm.balance(address), py_evm.nonce(address), py_evm.code(address))
            assert mine == (revm.balance(address), revm.nonce(address), revm.code(address)), (
                address.hex()
            )
        assert comparable(py_evm.block()) == comparable(revm.block())
        assert comparable(py_evm.building) == comparable(revm.building)
        assert (py_evm.base_fee(), py_evm.timestamp_ms()) == (revm.base_fee(), revm.timestamp_ms())
        assert py_evm.logs(LogFilter()) == revm.logs(LogFilter())

    # --- Chain --------------------------------------------------------------------------

    def _send(self, sender: Signer, to: bytes | None, data: bytes, value: int) -> Receipt:
        return self.both("_send", sender, to, data, value)

    def call(self, to: bytes | None, data: bytes, *, sender: bytes | None = None) -> bytes:
        return self.both("call", to, data, sender=sender)

    def estimate_gas(self, sender: bytes, to: bytes | None, data: bytes, *, value: int = 0) -> int:
        return self.both("estimate_gas", sender, to, data, value=value)

    def logs(self, wanted: LogFilter) -> list[Log]:
        return self.both("logs", wanted)

    def block_number(self) -> int:
        return self.both("block_number")

    def timestamp(self) -> int:
        return self.both("timestamp")

    def balance(self, address: bytes) -> int:
        return self.both("balance", address)

    def nonce(self, address: bytes) -> int:
        return self.both("nonce", address)

    def code(self, address: bytes) -> bytes:
        return self.both("code", address)

    def transaction_input(self, transaction_hash: bytes) -> bytes | None:
        return self.both("transaction_input", transaction_hash)

    def set_next_block_timestamp(self, timestamp: int) -> None:
        self.both("set_next_block_timestamp", timestamp)

    def mine(self) -> None:
        self.both("mine")

    def __getattr__(self, name: str) -> Any:
        """What dev chains add (``begin_block``, ``building``...), asked of both."""
        if name.startswith("_") or not hasattr(self.reference, name):
            raise AttributeError(name)
        if not callable(getattr(self.reference, name)):
            return self.both(name)
        return lambda *args, **kwargs: self.both(name, *args, **kwargs)


@pytest.fixture(autouse=True)
def fresh_twins() -> None:
    TwinChain.made.clear()


def state_machines(module: object) -> list[type[RuleBasedStateMachine]]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, RuleBasedStateMachine)
        and value.__module__ == module.__name__  # type: ignore[attr-defined]
    ]


# --- the court ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_court_machines_histories_are_equal_on_both_backends(monkeypatch):
    stateful = importlib.import_module("test_court_stateful")
    helpers = importlib.import_module("conftest")
    patched = [m for m in (stateful, helpers) if hasattr(m, "InProcessChain")]
    assert stateful in patched, "the court's machine builds its chain from InProcessChain"
    for module in patched:
        monkeypatch.setattr(module, "InProcessChain", TwinChain)
    machines = state_machines(stateful)
    assert machines, "tests/test_court_stateful.py defines a state machine"
    for machine in machines:
        own = getattr(machine.TestCase, "settings", None)
        run_state_machine_as_test(
            machine,
            settings=settings(
                own,
                max_examples=10,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    assert len(TwinChain.made) >= 10
    assert sum(twin.steps for twin in TwinChain.made) > 20 * len(TwinChain.made)


def load_gas_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("gas_benchmark", REPO / "benchmarks" / "gas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_gas_table_scenario_is_equal_on_both_backends(monkeypatch):
    gas = load_gas_benchmark()
    monkeypatch.setattr(gas, "InProcessChain", TwinChain)

    table = gas.measure()

    assert set(table) == {"deploy", *gas.OPERATIONS}
    assert len(TwinChain.made) == len(table)  # one fresh bench each
    assert all(twin.steps >= 2 for twin in TwinChain.made)  # the court deployed and bonded
    assert sum(twin.steps for twin in TwinChain.made) > 4 * len(table)


# --- random sequences -----------------------------------------------------------------------

TOPICS = [keccak(bytes([i])) for i in range(3)]
SLOTS = st.integers(0, 3)
AMOUNTS = st.sampled_from([0, 1, 7, 2**255])
SENDER = st.integers(0, 2)

OPERATIONS = st.one_of(
    st.tuples(st.just("poke"), SENDER, SLOTS, AMOUNTS),
    st.tuples(st.just("poke_many"), SENDER, SLOTS, st.integers(0, 8), AMOUNTS),
    st.tuples(
        st.just("log"),
        SENDER,
        st.lists(st.sampled_from(TOPICS), max_size=3),
        st.binary(max_size=40),
    ),
    st.tuples(st.just("fail"), SENDER, st.text(max_size=20)),
    st.tuples(st.just("fail_bare"), SENDER),
    st.tuples(st.just("invalid"), SENDER),
    st.tuples(st.just("burn"), SENDER, st.integers(0, 3_000)),
    st.tuples(st.just("transient"), SENDER, AMOUNTS),
    st.tuples(st.just("deposit"), SENDER, st.integers(0, 10**18)),
    st.tuples(st.just("pay"), SENDER, SENDER, st.integers(0, 10**18)),
    st.tuples(st.just("child"), SENDER),
    st.tuples(st.just("call_child"), SENDER, st.integers(0, 2), SLOTS, AMOUNTS),
    st.tuples(st.just("absorb"), SENDER, st.integers(0, 3_000), st.booleans()),
    st.tuples(st.just("context"), SENDER),
    st.tuples(st.just("gas_left"), SENDER),
    st.tuples(st.just("hash_loop"), SENDER, st.integers(0, 50)),
    st.tuples(st.just("transfer"), SENDER, SENDER, st.integers(0, 10**18)),
    st.tuples(st.just("legacy"), SENDER, SENDER, st.integers(0, 10**18), st.integers(0, 3)),
    st.tuples(st.just("deploy"), SENDER),
    st.tuples(st.just("begin"), st.sampled_from([250, 1_000, 2_000])),
    st.tuples(st.just("seal")),
    st.tuples(st.just("mine")),
    st.tuples(st.just("increase_time"), st.integers(1, 100)),
)


class Driver:
    """Runs one operation on the twin chain; reverts and refusals were compared already."""

    def __init__(self, twin: TwinChain) -> None:
        self.twin = twin
        self.probe = twin.deploy(twin.dev_accounts[0], probe_initcode()).contract_address
        self.children = 0

    def child(self, index: int) -> bytes:
        """The probe's ``index``-th child (a contract's nonces start at 1)."""
        return keccak(rlp.encode([self.probe, 1 + index % max(self.children, 1)]))[12:]

    def send(self, sender: int, name: str, *args: object, value: int = 0) -> None:
        data = probe_call(name, *args)
        with suppress(TransactionReverted, ChainError):  # a dry run's answer, then the real one
            self.twin.call(self.probe, data, sender=self.twin.dev_accounts[sender].address)
        self.twin.transact(self.twin.dev_accounts[sender], self.probe, data, value=value)

    def run(self, operation: tuple) -> None:
        twin, kind, args = self.twin, operation[0], operation[1:]
        accounts = twin.dev_accounts
        if kind == "log":
            sender, topics, data = args
            self.send(sender, f"log{len(topics)}", *topics, data)
        elif kind == "fail":
            self.send(args[0], "fail", args[1])
        elif kind == "invalid":
            self.send(args[0], "invalid", 0)
        elif kind == "hash_loop":
            self.send(args[0], "hash_loop", TOPICS[0], args[1])
        elif kind == "transient":
            sender, amount = args
            output = twin.call(self.probe, probe_call("transient_roundtrip", amount))
            (before,) = probe_decode("transient_roundtrip", output)
            assert before == 0  # transient storage does not outlive a transaction
            self.send(sender, "transient_roundtrip", amount)
        elif kind == "deposit":
            sender, value = args
            self.send(sender, "deposit", value=value)
        elif kind == "pay":
            sender, to, amount = args
            self.send(sender, "pay", accounts[to].address, amount)
        elif kind == "child":
            self.send(args[0], "child")
            self.children += 1
        elif kind == "call_child":
            sender, index, slot, amount = args
            self.send(sender, "call_child", self.child(index), slot, amount)
        elif kind == "absorb":
            sender, length, dense = args
            self.send(sender, "absorb", (b"\x5a" if dense else b"\x00\x01") * (length // 2))
        elif kind == "transfer":
            sender, to, value = args
            twin.transact(accounts[sender], accounts[to].address, b"", value=value)
        elif kind == "legacy":
            sender, to, value, tip = args
            legacy = {
                "chainId": twin.chain_id,
                "nonce": twin.nonce(accounts[sender].address),
                "gas": 21_000,
                "gasPrice": twin.base_fee() + tip,
                "to": accounts[to].address,
                "value": value,
            }
            signed = Account.sign_transaction(legacy, accounts[sender].secret)
            twin.send_raw_transaction(bytes(signed.raw_transaction))
        elif kind == "deploy":
            twin.deploy(accounts[args[0]], probe_initcode())
        elif kind == "begin":
            building = twin.building
            at = building.timestamp_ms if building is not None else twin.timestamp_ms()
            twin.begin_block(at + args[0])
        elif kind == "seal":
            twin.seal_block()
        elif kind == "mine":
            twin.mine()
        elif kind == "increase_time":
            twin.increase_time(args[0])
        else:  # a probe function taking the operation's arguments after the sender
            self.send(args[0], "poke" if kind == "poke" else kind, *args[1:])


@pytest.mark.slow
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=12))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_sequences_are_equal_on_both_backends(operations):
    twin = TwinChain(accounts=3, gas_limit=1_500_000, block_time_ms=500)
    driver = Driver(twin)
    for operation in operations:
        with suppress(TransactionReverted, ChainError):  # the same on both: compared
            driver.run(operation)
    twin.mine()
    assert twin.steps > len(operations)


# --- one run per court transaction on revm ------------------------------------------------


def _court_code() -> bytes:
    import json

    import cancelnote.contracts as contracts

    artifact = Path(contracts.__file__).parent / "CancelCourt.json"
    return bytes.fromhex(json.loads(artifact.read_text(encoding="utf-8"))["bytecode_runtime"][2:])


@pytest.mark.parametrize(
    ("code", "oblivious"),
    [
        (bytes.fromhex("5a50"), True),  # GAS POP: read and dropped
        (bytes.fromhex("5f5f5f5f60015afa"), True),  # STATICCALL(gas(), 1, ...): ecrecover's
        (bytes.fromhex("5a5f52"), False),  # MSTORE(0, gas()): kept in memory
        (bytes.fromhex("5a80015f5f5f5f60015afa"), False),  # gas() + gas(): a computation
        (bytes.fromhex("5f5f5f5f5a6001fa"), False),  # the gas counter as a call's address
        (bytes.fromhex("5a8060015f5f5f5f91fa"), False),  # a copy flows into an operand
        (bytes.fromhex("5a565b"), False),  # carried across a jump
        (bytes.fromhex("3350"), True),  # CALLER POP
        (bytes.fromhex("3331"), False),  # BALANCE(caller): reads a balance
    ],
)
def test_gas_oblivious_code_reads_gas_only_as_a_calls_gas(code, oblivious):
    assert gas_oblivious(code) is oblivious


def test_revm_runs_a_court_transaction_once_and_a_gas_reading_one_three_times(monkeypatch):
    from cancelnote.dispute.court import DEV_PARAMETERS, Court
    from cancelnote.messages import Order, make_sender

    chain = RevmChain(accounts=3)
    operator, alice, _ = chain.dev_accounts
    court = Court.deploy(chain, operator, operator=operator.address, **DEV_PARAMETERS)
    probe = chain.deploy(alice, probe_initcode()).contract_address
    runs = 0
    original = chain._run

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal runs
        runs += 1
        return original(*args, **kwargs)

    assert gas_oblivious(_court_code()) and gas_oblivious(chain.code(court.address))
    assert not gas_oblivious(chain.code(probe))  # it reads gasleft() and balances
    monkeypatch.setattr(chain, "_run", counting)
    order = Order(make_sender(alice.address), 1, 10**18, 10**18, 2**40, 1)
    court.request_cancel(alice, order, value=DEV_PARAMETERS["dispute_bond_wei"])
    assert runs == 1
    runs = 0
    chain.transact(alice, probe, probe_call("gas_left"))
    assert runs == 2  # the estimate's costless run, then the execution (its check)


@given(st.binary(max_size=2_000))
def test_the_calldata_floor_is_py_evms(data):
    from eth.vm.forks.prague.state import PragueTransactionExecutor

    from cancelnote.dispute.local import calldata_floor_gas

    transaction = type("Carrier", (), {"data": data})()
    assert calldata_floor_gas(data) == PragueTransactionExecutor.calc_data_floor_gas(
        transaction, 0, 0
    )
