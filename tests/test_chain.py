"""The chain backends: the same behaviours on py-evm, on revm and over JSON-RPC, plus the server.

Every test taking the ``chain`` fixture runs four times: on each in-process backend
(:class:`InProcessChain` on py-evm, :class:`RevmChain` on revm) and on a
:class:`JsonRpcChain` talking to an :class:`RpcServer` that serves that backend on
127.0.0.1. Tests taking ``local`` run on both in-process backends (block building, raw
transactions). The raw-HTTP tests pin the JSON-RPC error codes on both backends; one test
starts the real ``cancelnote chain serve`` in a subprocess for each backend.
"""

from __future__ import annotations

import json
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import rlp
import vyper
from conftest import served
from eth_abi import decode, encode
from eth_account import Account
from evm_probe import probe_call, probe_initcode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cancelnote.crypto import Signer, keccak
from cancelnote.dispute.chain import (
    ERROR_SELECTOR,
    Chain,
    ChainError,
    TransactionReverted,
)
from cancelnote.dispute.jsonrpc import JsonRpcChain
from cancelnote.dispute.local import (
    BACKENDS,
    DEFAULT_GENESIS_TIMESTAMP,
    DEV_BALANCE,
    LocalChain,
    decode_transaction,
    dev_account,
    make_chain,
    sign_transaction,
)
from cancelnote.dispute.rpcserver import RpcServer, serve

REPO = Path(__file__).resolve().parent.parent

COUNTER_SOURCE = """
# pragma version ~=0.4.3

event Stored:
    who: indexed(address)
    value: uint256

value: public(uint256)
last_seen: public(uint256)
deposits: public(HashMap[address, uint256])

@external
def store(v: uint256):
    assert v != 13, "unlucky number"
    self.value = v
    self.last_seen = block.timestamp
    log Stored(who=msg.sender, value=v)

@external
def fail_bare():
    raise

@external
@view
def now() -> uint256:
    return block.timestamp

@external
@payable
def deposit():
    self.deposits[msg.sender] += msg.value
"""
STORED_TOPIC = keccak(b"Stored(address,uint256)")
REVERT_DATA = ERROR_SELECTOR + encode(["string"], ["no"])
ALICE, BOB = dev_account(0), dev_account(1)
STRANGER = Signer(keccak(b"nobody funded me"))


def calldata(signature: str, types: tuple[str, ...] = (), args: tuple = ()) -> bytes:
    return keccak(signature.encode())[:4] + encode(list(types), list(args))


def store(value: int) -> bytes:
    return calldata("store(uint256)", ("uint256",), (value,))


def read_uint(chain: Chain, address: bytes, signature: str, *args: object) -> int:
    types = ("address",) * len(args)
    (value,) = decode(["uint256"], chain.call(address, calldata(signature, types, args)))
    return value


def as_topic(address: bytes) -> bytes:
    return bytes(12) + address


@pytest.fixture(scope="module")
def initcode() -> bytes:
    compiled = vyper.compile_code(COUNTER_SOURCE, output_formats=["bytecode", "abi"])
    return bytes.fromhex(compiled["bytecode"].removeprefix("0x"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def local(backend: str) -> LocalChain:
    return make_chain(backend)


@pytest.fixture
def server(local: LocalChain) -> Iterator[RpcServer]:
    with served(local) as rpc:
        yield rpc


@pytest.fixture(params=["local", "jsonrpc"])
def chain(request: pytest.FixtureRequest, local: LocalChain) -> Chain:
    if request.param == "local":
        return local
    return JsonRpcChain(request.getfixturevalue("server").url)


@pytest.fixture
def counter(chain: Chain, initcode: bytes) -> bytes:
    receipt = chain.deploy(ALICE, initcode)
    assert receipt.contract_address is not None
    return receipt.contract_address


# --- behaviours shared by both backends ---------------------------------------------------


def test_deploy_puts_code_at_the_address_derived_from_sender_and_nonce(chain, initcode):
    receipt = chain.deploy(ALICE, initcode)

    assert receipt.status == 1
    assert receipt.block_number == 1
    assert receipt.gas_used > 21_000
    assert receipt.contract_address == keccak(rlp.encode([ALICE.address, 0]))[12:]
    assert len(chain.code(receipt.contract_address)) > 0


def test_transaction_changes_state_and_its_event_decodes(chain, counter):
    receipt = chain.transact(BOB, counter, store(42))

    assert receipt.status == 1
    assert receipt.gas_used > 21_000
    (log,) = receipt.logs
    assert log.address == counter
    assert log.topics == (STORED_TOPIC, as_topic(BOB.address))
    assert decode(["uint256"], log.data) == (42,)
    assert (log.block_number, log.transaction_hash, log.log_index) == (
        receipt.block_number,
        receipt.transaction_hash,
        0,
    )
    assert read_uint(chain, counter, "value()") == 42


def test_transaction_input_is_the_mined_calldata_and_none_for_unknown_hashes(chain, counter):
    receipt = chain.transact(BOB, counter, store(7))

    assert chain.transaction_input(receipt.transaction_hash) == store(7)
    assert chain.transaction_input(b"\x99" * 32) is None


def test_reverted_transaction_is_mined_and_reports_the_exact_reason(chain, counter):
    chain.transact(ALICE, counter, store(7))
    head = chain.block_number()

    with pytest.raises(TransactionReverted) as raised:
        chain.transact(ALICE, counter, store(13))

    assert raised.value.reason == "unlucky number"
    assert raised.value.output.startswith(ERROR_SELECTOR)
    receipt = raised.value.receipt
    assert receipt is not None
    assert receipt.status == 0
    assert receipt.block_number == head + 1 == chain.block_number()
    assert receipt.gas_used > 21_000
    assert receipt.logs == ()
    assert read_uint(chain, counter, "value()") == 7


def test_reverted_call_reports_the_exact_reason_without_a_receipt(chain, counter):
    head = chain.block_number()

    with pytest.raises(TransactionReverted) as raised:
        chain.call(counter, store(13), sender=ALICE.address)

    assert raised.value.reason == "unlucky number"
    assert raised.value.receipt is None
    assert chain.block_number() == head


def test_revert_without_a_reason_says_so(chain, counter):
    with pytest.raises(TransactionReverted, match=r"^reverted without a reason$"):
        chain.call(counter, calldata("fail_bare()"))
    with pytest.raises(TransactionReverted, match=r"^reverted without a reason$") as raised:
        chain.transact(ALICE, counter, calldata("fail_bare()"))
    assert raised.value.receipt is not None and raised.value.receipt.status == 0


def test_gas_estimate_covers_what_the_transaction_uses(chain, initcode, counter):
    deploy_estimate = chain.estimate_gas(ALICE.address, None, initcode)
    call_estimate = chain.estimate_gas(ALICE.address, counter, store(5))

    assert chain.deploy(ALICE, initcode).gas_used <= deploy_estimate
    used = chain.transact(ALICE, counter, store(5)).gas_used
    # the first store also paid for a fresh slot: only bound it from below here
    assert 21_000 < used <= call_estimate
    again = chain.estimate_gas(ALICE.address, counter, store(6))
    assert again < chain.transact(ALICE, counter, store(6)).gas_used * 1.1 + 3_000


def test_gas_estimate_of_a_reverting_transaction_raises_the_reason(chain, counter):
    with pytest.raises(TransactionReverted, match=r"^unlucky number$"):
        chain.estimate_gas(ALICE.address, counter, store(13))


def test_contract_sees_the_block_timestamp_that_was_set(chain, counter):
    target = chain.timestamp() + 3_600

    chain.set_next_block_timestamp(target)
    chain.transact(ALICE, counter, store(1))

    assert chain.timestamp() == target
    assert read_uint(chain, counter, "last_seen()") == target
    assert read_uint(chain, counter, "now()") == target  # calls run on the latest block


def test_blocks_advance_one_second_unless_time_is_moved(chain):
    start = chain.timestamp()
    chain.mine()
    assert (chain.block_number(), chain.timestamp()) == (1, start + 1)

    chain.increase_time(600)
    chain.mine()
    assert (chain.block_number(), chain.timestamp()) == (2, start + 601)


def test_going_back_in_time_is_refused(chain):
    latest = chain.timestamp()
    with pytest.raises(ChainError, match="after the latest block"):
        chain.set_next_block_timestamp(latest)
    with pytest.raises(ChainError, match="after the latest block"):
        chain.set_next_block_timestamp(latest - 10)
    chain.mine()
    assert chain.timestamp() == latest + 1


def test_payable_value_moves_between_balances(chain, counter):
    stranger = Signer(keccak(b"nobody funded me"))
    assert chain.balance(stranger.address) == 0
    before = chain.balance(BOB.address)

    receipt = chain.transact(BOB, counter, calldata("deposit()"), value=10**18)

    assert chain.balance(counter) == 10**18
    assert read_uint(chain, counter, "deposits(address)", BOB.address) == 10**18
    assert before - 10**18 - chain.balance(BOB.address) <= receipt.gas_used * 10**9
    assert chain.balance(BOB.address) < before - 10**18


def test_get_logs_filters_by_block_range_and_topic_position(chain, counter, initcode):
    first = chain.transact(ALICE, counter, store(1)).block_number
    second = chain.transact(BOB, counter, store(2)).block_number
    third = chain.transact(ALICE, counter, store(3)).block_number
    other = chain.deploy(BOB, initcode).contract_address
    assert other is not None
    chain.transact(BOB, other, store(4))

    def values(logs: list) -> list[int]:
        return [decode(["uint256"], log.data)[0] for log in logs]

    assert values(chain.get_logs(counter)) == [1, 2, 3]
    assert values(chain.get_logs(counter, topics=(STORED_TOPIC,))) == [1, 2, 3]
    assert values(chain.get_logs(counter, topics=(None, as_topic(ALICE.address)))) == [1, 3]
    assert values(chain.get_logs(counter, topics=(STORED_TOPIC, as_topic(BOB.address)))) == [2]
    assert values(chain.get_logs(counter, from_block=second)) == [2, 3]
    assert values(chain.get_logs(counter, first, second)) == [1, 2]
    assert values(chain.get_logs(counter, third + 1)) == []
    assert chain.get_logs(counter, topics=(None, None, STORED_TOPIC)) == []
    assert values(chain.get_logs(other)) == [4]


def test_threads_sending_from_one_account_all_get_mined(chain, counter):
    receipts = []

    def send(start: int) -> None:
        for value in range(start, start + 4):
            receipts.append(chain.transact(ALICE, counter, store(value)))

    threads = [threading.Thread(target=send, args=(100 * i,)) for i in range(1, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(receipt.block_number for receipt in receipts) == list(range(2, 14))
    assert chain.nonce(ALICE.address) == 13


# --- in-process backends ------------------------------------------------------------------


def test_dev_chain_is_deterministic(backend):
    one, two = make_chain(backend, accounts=3), make_chain(backend, accounts=3)

    assert [s.address for s in one.dev_accounts] == [s.address for s in two.dev_accounts]
    assert one.dev_accounts[2].secret == keccak(b"cancelnote dev account" + (2).to_bytes(4, "big"))
    assert one.timestamp() == DEFAULT_GENESIS_TIMESTAMP
    assert one.balance(one.dev_accounts[0].address) == DEV_BALANCE
    one.mine()
    two.mine()
    assert one.block().hash == two.block().hash


def test_genesis_timestamp_and_chain_id_are_chosen_by_the_caller(backend, initcode):
    chain = make_chain(backend, chain_id=31337, accounts=1, genesis_timestamp=1_000)

    receipt = chain.deploy(chain.dev_accounts[0], initcode)  # signed for chain 31337

    assert chain.chain_id == 31337
    assert chain.timestamp() == 1_001
    mined = chain.transaction(receipt.transaction_hash)
    assert mined is not None and mined.transaction.sender == ALICE.address


@pytest.mark.parametrize(
    ("change", "message"),
    [({"chainId": 1}, "chain 1"), ({"nonce": 5}, "nonce"), ({"value": 10**30}, "balance")],
)
def test_raw_transaction_that_cannot_be_included_is_refused_and_changes_nothing(
    backend, change, message
):
    chain = make_chain(backend, accounts=2)
    transfer = {"chainId": 1337, "nonce": 0, "gas": 21_000, "gasPrice": 10**10, "value": 1}
    signed = Account.sign_transaction({**transfer, "to": BOB.address, **change}, ALICE.secret)

    with pytest.raises(ChainError, match=message):
        chain.send_raw_transaction(bytes(signed.raw_transaction))

    assert (chain.block_number(), chain.nonce(ALICE.address)) == (0, 0)
    good = Account.sign_transaction({**transfer, "to": BOB.address}, ALICE.secret)
    assert chain.send_raw_transaction(bytes(good.raw_transaction)) == bytes(good.hash)
    assert chain.balance(BOB.address) == DEV_BALANCE + 1


@given(
    nonce=st.integers(0, 2**64 - 1),
    fee=st.integers(0, 2**128),
    gas=st.integers(21_000, 2**63 - 1),
    create=st.booleans(),
    value=st.integers(0, 2**200),
    data=st.binary(max_size=300),
)
@settings(max_examples=60, deadline=None)
def test_transactions_are_signed_byte_for_byte_as_eth_account_signs_them(
    nonce, fee, gas, create, value, data
):
    fields = {"chainId": 1337, "nonce": nonce, "maxFeePerGas": fee, "gas": gas, "value": value}
    to = None if create else BOB.address
    expected = Account.sign_transaction(
        {
            **fields,
            "type": 2,
            "maxPriorityFeePerGas": 0,
            "data": data,
            "accessList": [],
            **({} if to is None else {"to": to}),
        },
        ALICE.secret,
    )

    signed = sign_transaction(
        ALICE,
        chain_id=1337,
        nonce=nonce,
        max_fee_per_gas=fee,
        gas=gas,
        to=to,
        value=value,
        data=data,
    )

    assert (signed.raw, signed.hash) == (bytes(expected.raw_transaction), bytes(expected.hash))
    decoded = decode_transaction(signed.raw)
    assert (decoded.sender, decoded.to, decoded.data, decoded.gas) == (ALICE.address, to, data, gas)


def test_an_unknown_backend_or_block_gas_limit_is_refused():
    with pytest.raises(ChainError, match="unknown chain backend 'geth'"):
        make_chain("geth")
    for backend in BACKENDS:
        with pytest.raises(ChainError, match="gas_limit must be in"):
            make_chain(backend, gas_limit=20_999)


def test_revm_reads_only_its_newest_state(initcode):
    revm = make_chain("revm")
    counter = counter_on(revm, initcode)
    revm.transact(BOB, counter, store(5))

    with pytest.raises(ChainError, match="keeps only the newest state, not block 1's"):
        revm.balance(BOB.address, block_number=1)
    with pytest.raises(ChainError, match="keeps only the newest state"):
        revm.call(counter, calldata("value()"), block_number=0)
    assert revm.balance(BOB.address, block_number=2) == revm.balance(BOB.address)
    revm.begin_block(revm.timestamp_ms() + 1_000)
    revm.transact(BOB, counter, store(6))
    with pytest.raises(ChainError, match="a block is being built"):
        revm.call(counter, calldata("value()"), block_number=2)
    assert read_uint(revm, counter, "value()") == 6  # the newest state: the block being built


def test_revm_refuses_transactions_with_an_access_list():
    revm = make_chain("revm")
    transfer = {"chainId": 1337, "nonce": 0, "gas": 30_000, "gasPrice": 10**10, "value": 1}
    slots = [{"address": "0x" + BOB.address.hex(), "storageKeys": ["0x" + "00" * 32]}]
    signed = Account.sign_transaction(
        {**transfer, "to": BOB.address, "accessList": slots, "type": 1}, ALICE.secret
    )

    with pytest.raises(ChainError, match="without access lists, got type 1"):
        revm.send_raw_transaction(bytes(signed.raw_transaction))
    assert (revm.block_number(), revm.nonce(ALICE.address)) == (0, 0)
    assert make_chain("py-evm").send_raw_transaction(bytes(signed.raw_transaction))


# --- blocks built at slot times (both in-process backends) ---------------------------------


def counter_on(chain: LocalChain, initcode: bytes) -> bytes:
    address = chain.deploy(ALICE, initcode).contract_address
    assert address is not None
    return address


def test_transactions_sent_during_a_slot_share_one_block_at_the_slot_time(local, initcode):
    counter = counter_on(local, initcode)
    head = local.block_number()
    slot_ms = local.timestamp_ms() + 2_000

    local.begin_block(slot_ms)
    receipts = [local.transact(sender, counter, store(v)) for sender, v in ((ALICE, 1), (BOB, 2))]
    receipts.append(local.transact(ALICE, counter, store(3)))

    assert [r.block_number for r in receipts] == [head + 1] * 3
    assert [r.transaction_index for r in receipts] == [0, 1, 2]
    assert [log.log_index for r in receipts for log in r.logs] == [0, 1, 2]
    assert local.block_number() == head  # not sealed: its logs are not out yet
    assert local.get_logs(counter, head + 1) == []
    assert local.transaction(receipts[0].transaction_hash) is None
    assert [local.receipt(r.transaction_hash) for r in receipts] == receipts
    assert local.receipt(b"\x99" * 32) is None
    assert read_uint(local, counter, "value()") == 3  # calls see the block being built
    assert read_uint(local, counter, "now()") == slot_ms // 1000

    sealed = local.seal_block()

    assert sealed is not None and sealed == local.block()
    assert (sealed.number, sealed.timestamp_ms, sealed.timestamp) == (
        head + 1,
        slot_ms,
        slot_ms // 1000,
    )
    assert sealed.transactions == tuple(r.transaction_hash for r in receipts)
    assert sealed.gas_used == sum(r.gas_used for r in receipts)
    assert local.get_logs(counter, head + 1) == [log for r in receipts for log in r.logs]
    assert read_uint(local, counter, "last_seen()") == slot_ms // 1000
    mined = local.transaction(receipts[2].transaction_hash)
    assert mined is not None and (mined.block_hash, mined.receipt) == (sealed.hash, receipts[2])
    assert local.receipt(receipts[2].transaction_hash) == receipts[2]
    auto = local.transact(BOB, counter, store(4))  # no block being built: auto-mined again
    assert (auto.block_number, local.timestamp()) == (head + 2, slot_ms // 1000 + 1)


def test_sub_second_slots_share_an_evm_second_and_keep_their_milliseconds(local, initcode):
    counter = counter_on(local, initcode)
    second = local.timestamp() + 10
    slots = [second * 1000, second * 1000 + 250, second * 1000 + 500, second * 1000 + 1_250]

    for value, slot_ms in enumerate(slots, start=1):
        local.begin_block(slot_ms)
        local.transact(ALICE, counter, store(value))
        assert read_uint(local, counter, "now()") == slot_ms // 1000
    local.seal_block()

    blocks = [local.block(number) for number in range(2, 6)]
    assert [b.timestamp_ms for b in blocks] == slots
    assert [b.timestamp for b in blocks] == [second, second, second, second + 1]
    assert local.timestamp_ms() == slots[-1]


def test_a_full_block_pushes_the_rest_into_the_next_slot(backend, initcode):
    limit = 200_000  # five stores
    local = make_chain(backend, gas_limit=limit, block_time_ms=2_000)
    counter = counter_on(local, initcode)
    slot_ms = local.timestamp_ms() + 2_000

    local.begin_block(slot_ms)
    receipts = [local.transact(ALICE, counter, store(v)) for v in range(1, 8)]

    full = local.block()
    spilled = [r for r in receipts if r.block_number > full.number]
    assert full.timestamp_ms == slot_ms and full.gas_used <= limit
    assert [r.block_number for r in receipts[: -len(spilled)]] == [full.number] * 5
    first_out = spilled[0]
    building = local.building
    assert building is not None
    assert (building.number, building.timestamp_ms) == (full.number + 1, slot_ms + 2_000)
    assert local.seal_block() is None  # the spill-over waits for its slot
    local.begin_block(slot_ms + 2_000)  # the caller's clock reaches it: it goes on
    later = local.transact(BOB, counter, store(99))
    sealed = local.seal_block()

    assert sealed is not None and sealed.number == full.number + 1 == later.block_number
    assert sealed.timestamp_ms == slot_ms + 2_000 and sealed.gas_used <= limit
    assert sealed.transactions == (*(r.transaction_hash for r in spilled), later.transaction_hash)
    mined = local.transaction(first_out.transaction_hash)
    assert mined is not None and full.gas_used + mined.transaction.gas > limit  # it did not fit


def test_a_transaction_the_block_can_never_hold_is_refused(backend):
    local = make_chain(backend, gas_limit=100_000)
    transfer = {"chainId": 1337, "nonce": 0, "gas": 100_001, "gasPrice": 10**10, "value": 1}
    signed = Account.sign_transaction({**transfer, "to": BOB.address}, ALICE.secret)

    with pytest.raises(ChainError, match="above the block gas limit"):
        local.send_raw_transaction(bytes(signed.raw_transaction))
    assert (local.block_number(), local.nonce(ALICE.address)) == (0, 0)


def test_slots_go_forward_and_time_stays_put_while_a_block_is_built(local):
    latest_ms = local.timestamp_ms()
    with pytest.raises(ChainError, match="after the latest block's"):
        local.begin_block(latest_ms)

    local.begin_block(latest_ms + 500)

    with pytest.raises(ChainError, match="slots go forward"):
        local.begin_block(latest_ms + 400)
    with pytest.raises(ChainError, match="is being built"):
        local.set_next_block_timestamp(local.timestamp() + 60)
    with pytest.raises(ChainError, match="is being built"):
        local.increase_time(60)
    local.begin_block(latest_ms + 500)  # the same slot again: nothing changes
    assert local.building is not None and local.block_number() == 0
    local.mine()  # seals the block being built, empty
    assert (local.block_number(), local.timestamp_ms(), local.building) == (
        1,
        latest_ms + 500,
        None,
    )
    assert local.seal_block() is None


@pytest.mark.parametrize("when", [2**64, -1, 1.5, "soon", True])
def test_a_block_time_outside_a_headers_64_bits_is_refused_and_changes_nothing(local, when):
    head = (local.block_number(), local.timestamp_ms(), local.building)
    with pytest.raises(ChainError, match="whole number of 64 bits"):
        local.set_next_block_timestamp(when)
    with pytest.raises(ChainError, match="whole number of 64 bits"):
        local.begin_block(when * 1000 if type(when) is int else when)
    local.mine()
    assert (local.block_number(), local.timestamp_ms()) == (head[0] + 1, head[1] + 1_000)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2**256, f"a value is a uint256, got {2**256}"),
        (DEV_BALANCE + 1, f"the sender's balance {DEV_BALANCE} cannot pay {DEV_BALANCE + 1}"),
    ],
)
@pytest.mark.parametrize("method", ["eth_call", "eth_estimateGas"])
def test_server_refuses_a_value_the_sender_cannot_hold_in_the_same_words(
    server, method, value, message
):
    call = {"from": "0x" + ALICE.address.hex(), "to": "0x" + BOB.address.hex(), "value": hex(value)}
    answer = rpc(server.url, method, call)
    assert error_code(answer) == -32000
    assert answer["error"]["message"] == f"the transaction is invalid: {message}"
    assert server.dispatcher.chain.block_number() == 0


def test_server_refuses_a_block_time_past_64_bits(server):
    answer = rpc(server.url, "evm_setNextBlockTimestamp", hex(2**64))
    assert error_code(answer) == -32000
    assert "64 bits" in answer["error"]["message"]
    assert error_code(rpc(server.url, "evm_increaseTime", hex(2**64))) == -32000
    assert rpc(server.url, "evm_mine")["result"] == "0x0"
    block = rpc(server.url, "eth_getBlockByNumber", "latest", False)["result"]
    assert block["timestamp"] == hex(DEFAULT_GENESIS_TIMESTAMP + 1)


def test_server_reports_each_transaction_of_a_built_block(server, initcode):
    chain = server.dispatcher.chain
    counter = counter_on(chain, initcode)
    chain.begin_block(chain.timestamp_ms() + 1_000)
    receipts = [chain.transact(sender, counter, store(v)) for sender, v in ((ALICE, 1), (BOB, 2))]
    chain.seal_block()

    block = rpc(server.url, "eth_getBlockByNumber", "latest", True)["result"]
    answers = [
        rpc(server.url, "eth_getTransactionReceipt", "0x" + r.transaction_hash.hex())["result"]
        for r in receipts
    ]
    logs = rpc(server.url, "eth_getLogs", {"fromBlock": block["number"]})["result"]

    assert [tx["transactionIndex"] for tx in block["transactions"]] == ["0x0", "0x1"]
    assert [a["transactionIndex"] for a in answers] == ["0x0", "0x1"]
    assert [a["cumulativeGasUsed"] for a in answers] == [
        hex(receipts[0].gas_used),
        hex(receipts[0].gas_used + receipts[1].gas_used),
    ]
    assert [(log["logIndex"], log["transactionIndex"]) for log in logs] == [
        ("0x0", "0x0"),
        ("0x1", "0x1"),
    ]
    assert block["gasUsed"] == answers[1]["cumulativeGasUsed"]
    assert JsonRpcChain(server.url).get_logs(counter, int(block["number"], 16)) == [
        log for r in receipts for log in r.logs
    ]


# --- logs by interest ---------------------------------------------------------------------

TOPICS = [keccak(b"topic %d" % i) for i in range(3)]


@pytest.fixture(scope="module", params=[(b, via) for b in BACKENDS for via in ("local", "jsonrpc")])
def logged(request: pytest.FixtureRequest) -> Iterator[tuple[Chain, list[bytes]]]:
    """A chain whose two probes logged 60 logs of 0-3 topics, some blocks holding several."""
    backend, via = request.param
    chain = make_chain(backend)
    probes = [counter_on(chain, probe_initcode()) for _ in range(2)]
    rng = random.Random(12)
    for index in range(60):
        if index % 10 == 0:
            chain.begin_block(chain.timestamp_ms() + 1_000)
        topics = [rng.choice(TOPICS) for _ in range(rng.randrange(4))]
        sender, probe = rng.choice((ALICE, BOB)), rng.choice(probes)
        chain.transact(sender, probe, probe_call(f"log{len(topics)}", *topics, b"%d" % index))
        if index % 10 == 4:
            chain.seal_block()
    if via == "local":
        yield chain, probes
        return
    with served(chain) as rpc_server:
        yield JsonRpcChain(rpc_server.url), probes


def kept(log, address, first, last, topics) -> bool:
    """The filter's rules, written out as eth_getLogs documents them (the test's own model)."""
    addresses = [address] if isinstance(address, bytes) else list(address or [])
    if addresses and log.address not in addresses:
        return False
    if log.block_number < first or (last is not None and log.block_number > last):
        return False
    for position, wanted in enumerate(topics):
        alternatives = [wanted] if isinstance(wanted, bytes) else list(wanted or [])
        if position >= len(log.topics):
            return False
        if alternatives and log.topics[position] not in alternatives:
            return False
    return True


@given(data=st.data())
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_filtered_query_returns_exactly_what_a_scan_would_keep(logged, data):
    chain, probes = logged
    everything = chain.get_logs(None)
    head = chain.block_number()
    one = st.sampled_from([*probes, STRANGER.address])
    address = data.draw(st.none() | one | st.lists(one, max_size=3))
    topic = st.sampled_from([*TOPICS, bytes(32)])
    topics = data.draw(st.lists(st.none() | topic | st.lists(topic, max_size=3), max_size=4))
    first = data.draw(st.integers(0, head + 1))
    last = data.draw(st.none() | st.integers(first, head + 1))

    expected = [log for log in everything if kept(log, address, first, last, topics)]

    assert chain.get_logs(address, first, last, topics) == expected


def test_the_unfiltered_scan_is_every_log_in_chain_order(logged):
    chain, _ = logged
    everything = chain.get_logs(None)

    assert len(everything) == 60
    assert [(log.block_number, log.log_index) for log in everything] == sorted(
        (log.block_number, log.log_index) for log in everything
    )
    assert {len(log.topics) for log in everything} == {0, 1, 2, 3}
    assert max(log.log_index for log in everything) >= 4  # some blocks hold several


@pytest.mark.parametrize(
    ("address", "topics", "first", "last", "message"),
    [
        (b"\x01" * 19, (), 0, None, "address is 20 bytes"),
        (None, (b"\x01" * 31,), 0, None, "topic is 32 bytes"),
        (None, ([TOPICS[0], "0x00"],), 0, None, "topic is 32 bytes"),
        (None, (), -1, None, "0 <= from <= to"),
        (None, (), 5, 4, "0 <= from <= to"),
    ],
)
def test_a_malformed_filter_is_refused(local, address, topics, first, last, message):
    with pytest.raises(ChainError, match=message):
        local.get_logs(address, first, last, topics)


# --- the JSON-RPC server over raw HTTP ----------------------------------------------------


def post(url: str, body: bytes) -> tuple[int, object]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, None


def rpc(url: str, method: str, *params: object) -> dict:
    status, answer = post(
        url, json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).encode()
    )
    assert status == 200 and isinstance(answer, dict)
    return answer


def error_code(answer: object) -> int:
    assert isinstance(answer, dict)
    return answer["error"]["code"]


def test_server_answers_malformed_requests_with_json_rpc_error_codes(server):
    url = server.url
    address = "0x" + "11" * 20

    assert error_code(post(url, b"{not json")[1]) == -32700
    assert error_code(post(url, b"\xff\xfe\x00garbage")[1]) == -32700
    assert error_code(post(url, b"[" * 100_000)[1]) == -32700
    assert error_code(post(url, b'["]",' * 50_000 + b"]" * 50_000)[1]) == -32700  # hidden depth
    assert error_code(post(url, b"42")[1]) == -32600
    assert error_code(post(url, b"[]")[1]) == -32600
    assert error_code(post(url, b'{"id": 1, "method": "eth_chainId"}')[1]) == -32600
    assert error_code(rpc(url, "eth_noSuchMethod")) == -32601
    assert error_code(rpc(url, "eth_getBalance", "0x12", "latest")) == -32602
    assert error_code(rpc(url, "eth_getBalance", address, "latest", "extra")) == -32602
    assert error_code(rpc(url, "eth_getBalance", address, "yesterday")) == -32602
    assert error_code(rpc(url, "eth_call", "not an object")) == -32602
    assert error_code(rpc(url, "eth_getLogs", {"topics": ["0x12"]})) == -32602
    assert error_code(rpc(url, "eth_sendRawTransaction", "0xdeadbeef")) == -32000
    assert error_code(rpc(url, "evm_setNextBlockTimestamp", "0x1")) == -32000
    assert error_code(post(url, b"")[1]) == -32700
    assert rpc(url, "eth_blockNumber") == {"jsonrpc": "2.0", "id": 7, "result": "0x0"}


def test_server_reports_a_revert_as_code_3_with_the_revert_data(server, initcode):
    chain = server.dispatcher.chain
    counter = chain.deploy(ALICE, initcode).contract_address
    assert counter is not None

    answer = rpc(
        server.url, "eth_call", {"to": "0x" + counter.hex(), "data": "0x" + store(13).hex()}
    )

    error = answer["error"]
    assert error["code"] == 3
    assert error["message"] == "execution reverted: unlucky number"
    assert bytes.fromhex(error["data"][2:]).startswith(ERROR_SELECTOR)


def test_server_receipts_blocks_and_logs_agree(server, initcode):
    chain = server.dispatcher.chain
    counter = chain.deploy(ALICE, initcode).contract_address
    assert counter is not None
    first = chain.transact(ALICE, counter, store(1))
    chain.transact(BOB, counter, store(2))
    tx_hash = "0x" + first.transaction_hash.hex()

    receipt = rpc(server.url, "eth_getTransactionReceipt", tx_hash)["result"]
    block = rpc(server.url, "eth_getBlockByNumber", receipt["blockNumber"], True)["result"]
    either = [["0x" + as_topic(ALICE.address).hex(), "0x" + as_topic(BOB.address).hex()]]
    logs = rpc(
        server.url,
        "eth_getLogs",
        {"address": ["0x" + counter.hex()] * 2, "fromBlock": "earliest", "topics": [None, *either]},
    )["result"]

    assert receipt["status"] == "0x1" and receipt["gasUsed"] == hex(first.gas_used)
    assert receipt["from"] == "0x" + ALICE.address.hex()
    assert block["hash"] == receipt["blockHash"] == receipt["logs"][0]["blockHash"]
    assert block["transactions"][0]["hash"] == tx_hash
    assert block["transactions"][0]["input"] == "0x" + store(1).hex()
    assert [log["blockNumber"] for log in logs] == ["0x2", "0x3"]
    assert logs[0] == receipt["logs"][0]
    assert rpc(server.url, "eth_getTransactionReceipt", "0x" + "00" * 32)["result"] is None


def test_server_answers_batches_in_order_and_skips_notifications(server):
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "method": "evm_mine", "params": []},  # a notification
        {"jsonrpc": "2.0", "id": 2, "method": "eth_nope"},
        "not a request",
        {"jsonrpc": "2.0", "id": 3, "method": "eth_getBlockByNumber", "params": ["latest", False]},
    ]

    status, answer = post(server.url, json.dumps(batch).encode())

    assert status == 200 and isinstance(answer, list)
    assert [item["id"] for item in answer] == ["a", 2, None, 3]
    assert answer[0]["result"] == "0x539"
    assert [error_code(item) for item in answer[1:3]] == [-32601, -32600]
    assert answer[3]["result"]["number"] == "0x1"  # the notification mined block 1
    only_notification = {"jsonrpc": "2.0", "method": "evm_mine", "params": []}
    assert post(server.url, json.dumps(only_notification).encode()) == (200, None)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"", b"411"),
        (b"Content-Length: -5\r\n", b"400"),
        (b"Content-Length: many\r\n", b"400"),
        (b"Content-Length: 999999999\r\n", b"413"),
    ],
)
def test_server_refuses_bodies_without_a_sane_length(server, headers, status):
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        answer = b"".join(iter(lambda: connection.recv(4096), b""))  # the server closes
    assert answer.split(b" ")[1] == status


def test_server_refuses_get(server):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.url, timeout=10)
    refused.value.close()
    assert refused.value.code == 405


def test_server_lists_dev_accounts_and_blocks_by_tag(server):
    accounts = rpc(server.url, "eth_accounts")["result"]
    assert accounts[0] == "0x" + ALICE.address.hex()
    assert rpc(server.url, "net_version")["result"] == "1337"
    assert rpc(server.url, "web3_clientVersion")["result"].startswith("cancelnote/")
    earliest = rpc(server.url, "eth_getBlockByNumber", "earliest", False)["result"]
    assert earliest["timestamp"] == hex(DEFAULT_GENESIS_TIMESTAMP)
    assert rpc(server.url, "eth_getBlockByNumber", "0x5", False)["result"] is None


# --- JsonRpcChain against broken nodes ----------------------------------------------------


def test_unreachable_node_is_a_chain_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ChainError, match="cannot reach"):
        JsonRpcChain(f"http://127.0.0.1:{port}", timeout=2)


@contextmanager
def canned_node(*answers: bytes) -> Iterator[str]:
    """A fake node at the yielded URL, answering each POST with the next canned body."""
    bodies = iter(answers)

    class Canned(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = next(bodies)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    node = HTTPServer(("127.0.0.1", 0), Canned)
    thread = threading.Thread(target=node.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{node.server_address[1]}"
    finally:
        node.shutdown()
        thread.join(timeout=5)
        node.server_close()


CHAIN_ID_ANSWER = b'{"jsonrpc": "2.0", "id": 1, "result": "0x539"}'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>busy</html>", "not JSON"),
        (b"[" * 1_000 + b"]" * 1_000, "not JSON"),
        (b'["a list"]', "not a JSON-RPC object"),
        (b'{"jsonrpc": "2.0", "id": 1}', "no 'result'"),
        (b'{"jsonrpc": "2.0", "id": 1, "result": "zz"}', "eth_chainId result"),
        (b'{"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "down"}}', "down"),
    ],
)
def test_malformed_node_answers_are_chain_errors(body, message):
    with canned_node(body) as url, pytest.raises(ChainError, match=message):
        JsonRpcChain(url, timeout=5)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ({"code": 3, "message": "execution reverted", "data": "0x" + REVERT_DATA.hex()}, "no"),
        ({"code": -32603, "message": "x", "data": {"data": "0x" + REVERT_DATA.hex()}}, "no"),
        ({"code": -32000, "message": "execution reverted: court: late"}, "court: late"),
        ({"code": 3, "message": "execution reverted"}, "reverted without a reason"),
        ({"code": 3, "message": "execution reverted: bad [range"}, "bad [range"),
    ],
)
def test_node_revert_errors_of_geth_anvil_and_hardhat_shapes_decode(error, reason):
    answer = json.dumps({"jsonrpc": "2.0", "id": 2, "error": error}).encode()
    with canned_node(CHAIN_ID_ANSWER, answer) as url:
        chain = JsonRpcChain(url, timeout=5)
        with pytest.raises(TransactionReverted) as raised:
            chain.call(bytes(20), b"")
    assert raised.value.reason == reason


# --- the real command ---------------------------------------------------------------------


@pytest.mark.slow
def test_chain_serve_command_serves_json_rpc_until_sigterm(backend, initcode):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cancelnote.cli",
            "chain",
            "serve",
            "--port",
            "0",
            "--accounts",
            "2",
            "--backend",
            backend,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()  # readline blocks: read in a thread, wait here
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout])
    reader.start()
    try:
        banner = []
        while not (banner and banner[-1].startswith("Listening on ")):
            banner.append(lines.get(timeout=30).strip())
        url = banner[-1].removeprefix("Listening on ")
        assert banner[0].startswith(f"cancelnote dev chain: {backend} ")
        assert f"(0) {ALICE.checksum_address} (1000000 ETH)" in banner
        assert f"(1) 0x{BOB.secret.hex()}" in banner

        chain = JsonRpcChain(url)
        counter = chain.deploy(ALICE, initcode).contract_address
        assert counter is not None
        chain.transact(BOB, counter, store(99))
        assert read_uint(chain, counter, "value()") == 99
        assert chain.chain_id == 1337
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        finally:
            process.kill()  # a no-op once it has exited
            reader.join(timeout=5)
            process.stdout.close()
    assert process.returncode == 0
    assert lines.get(timeout=5).strip() == "stopping"


def test_chain_serve_on_a_taken_port_fails_with_a_message(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        assert serve("127.0.0.1", port, chain_id=1337, accounts=0) == 2  # exits.USAGE

    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
