"""A contract that reaches what the backends must agree on beyond the court (tests only).

Refunds (slots set back to zero), transient storage, nested creations and calls, value
transfers, logs with 0 to 3 topics, reverts with and without a reason, an INVALID opcode,
large calldata (EIP-7623's floor), ``gasleft()``, ``ecrecover``, and the block's context.
"""

from __future__ import annotations

import functools

import vyper
from eth_abi import decode, encode

from cancelnote.crypto import keccak

PROBE_SOURCE = """
# pragma version ~=0.4.3
# A contract that exercises what the backends must agree on (tests only).

interface Probe:
    def poke(slot: uint256, amount: uint256): nonpayable

slots: public(HashMap[uint256, uint256])
scratch: transient(uint256)
seen: public(uint256)

@deploy
@payable
def __init__():
    pass

@external
def poke(slot: uint256, amount: uint256):
    self.slots[slot] = amount

@external
def poke_many(first: uint256, count: uint256, amount: uint256):
    for i: uint256 in range(count, bound=64):
        self.slots[first + i] = amount

@external
def log0(data: Bytes[96]):
    raw_log([], data)

@external
def log1(a: bytes32, data: Bytes[96]):
    raw_log([a], data)

@external
def log2(a: bytes32, b: bytes32, data: Bytes[96]):
    raw_log([a, b], data)

@external
def log3(a: bytes32, b: bytes32, c: bytes32, data: Bytes[96]):
    raw_log([a, b, c], data)

@external
def fail(reason: String[64]):
    raise reason

@external
def fail_bare():
    raise

@external
def invalid(flag: uint256):
    assert flag == 7, UNREACHABLE

@external
def burn(rounds: uint256) -> uint256:
    acc: uint256 = 0
    for i: uint256 in range(rounds, bound=100000):
        acc = acc ^ i
    return acc

@external
def transient_roundtrip(amount: uint256) -> uint256:
    before: uint256 = self.scratch
    self.scratch = amount
    return before

@external
@payable
def deposit() -> uint256:
    return self.balance

@external
def pay(to: address, amount: uint256):
    send(to, amount)

@external
def child() -> address:
    return create_minimal_proxy_to(self)

@external
def call_child(target: address, slot: uint256, amount: uint256):
    extcall Probe(target).poke(slot, amount)

@external
def absorb(blob: Bytes[8192]) -> uint256:
    return len(blob)

@external
def context() -> (uint256, uint256, uint256, uint256, uint256, address, uint256):
    sender: uint256 = msg.sender.balance
    return (
        block.timestamp, block.number, block.gaslimit, sender, self.balance, block.coinbase,
        chain.id,
    )

@external
def gas_left() -> uint256:
    return msg.gas

@external
def recover(h: bytes32, v: uint8, r: bytes32, s: bytes32) -> address:
    return ecrecover(h, v, r, s)

@external
def hash_loop(seed: bytes32, rounds: uint256) -> bytes32:
    acc: bytes32 = seed
    for i: uint256 in range(rounds, bound=1000):
        acc = keccak256(acc)
    return acc

@external
def remember() :
    self.seen = block.timestamp
"""


@functools.cache
def _compiled() -> tuple[bytes, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]]:
    out = vyper.compile_code(PROBE_SOURCE, output_formats=["bytecode", "abi"])
    functions = {
        entry["name"]: (
            tuple(item["type"] for item in entry["inputs"]),
            tuple(item["type"] for item in entry["outputs"]),
        )
        for entry in out["abi"]
        if entry["type"] == "function"
    }
    return bytes.fromhex(out["bytecode"].removeprefix("0x")), functions


def probe_initcode() -> bytes:
    """The probe's creation code (compiled once per test session)."""
    return _compiled()[0]


def probe_call(name: str, *args: object) -> bytes:
    """Calldata of probe function ``name``."""
    inputs, _ = _compiled()[1][name]
    selector = keccak(f"{name}({','.join(inputs)})".encode())[:4]
    return selector + encode(list(inputs), list(args))


def probe_decode(name: str, output: bytes) -> tuple:
    """The decoded return values of probe function ``name``."""
    _, outputs = _compiled()[1][name]
    return decode(list(outputs), output)
