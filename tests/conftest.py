"""Fixtures for the court tests: a fresh in-process chain, named keys, a bonded court.

:class:`World` signs messages in the court's domain with the operator's key (fills,
notes) or a client's (orders, cancels); tests build offences from it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from pathlib import Path

import attrs
import pytest
import vyper
from eth_abi import encode as abi_encode

from cancelnote.crypto import Signer, keccak
from cancelnote.dispute.chain import Chain, TransactionReverted
from cancelnote.dispute.court import DEV_PARAMETERS, Court
from cancelnote.dispute.inprocess import InProcessChain
from cancelnote.dispute.rpcserver import RpcServer
from cancelnote.messages import Cancellation, CancellationNote, Fill, Order, make_sender

TEST_CONTRACTS = Path(__file__).resolve().parent.parent / "contracts" / "test"

# The court of the tests is the dev court (cancelnote.dispute.court.DEV_PARAMETERS).
ANSWER_WINDOW_S = DEV_PARAMETERS["answer_window_s"]
PENALTY_WEI = DEV_PARAMETERS["penalty_wei"]
MIN_BOND_WEI = DEV_PARAMETERS["min_bond_wei"]
DISPUTE_BOND_WEI = DEV_PARAMETERS["dispute_bond_wei"]
EXIT_DELAY_S = DEV_PARAMETERS["exit_delay_s"]
MAX_PENDING_MS = DEV_PARAMETERS["max_pending_ms"]
CLAIM_DELAY_S = DEV_PARAMETERS["claim_delay_s"]
BURN_SHARE_BPS = DEV_PARAMETERS["burn_share_bps"]
#: What an owner is credited for one claim paid in full (the penalty less the burn share).
OWNER_SHARE_WEI = PENALTY_WEI - PENALTY_WEI * BURN_SHARE_BPS // 10_000
#: A ``lastFillHash`` that names no fill anyone signed.
UNSIGNED_FILL_HASH = keccak(b"a fill nobody signed")
PRICE = 2_000 * 10**18
ORDER_LIFETIME_S = 86_400


@contextmanager
def served(chain: Chain) -> Iterator[RpcServer]:
    """``chain`` behind a real JSON-RPC server on a free loopback port, in a thread."""
    server = RpcServer(chain, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def violates(note: CancellationNote, fill: Fill) -> bool:
    """Rule 1 as protocol §12.1's table writes it (the model the contract is tested against)."""
    return any(
        (
            fill.filled_total > note.filled_amount + note.pending_amount,
            fill.seq > note.seq and note.pending_amount == 0,
            fill.seq > note.seq and fill.timestamp_ms > note.pending_until_ms,
            note.last_fill_seq < fill.seq < note.seq,
            fill.seq <= note.last_fill_seq and fill.filled_total > note.filled_amount,
            fill.seq == note.last_fill_seq
            and (
                fill.struct_hash() != note.last_fill_hash or fill.filled_total != note.filled_amount
            ),
        )
    )


@attrs.define
class World:
    """One chain with a bonded court, its operator and two clients."""

    chain: InProcessChain
    court: Court
    operator: Signer
    deployer: Signer
    alice: Signer
    bob: Signer

    def order(self, owner: Signer, *, amount: int = 10**18, nonce: int = 1) -> tuple[Order, bytes]:
        """A live order by ``owner`` at PRICE (a buy if ``amount > 0``), signed."""
        order = Order(
            sender=make_sender(owner.address),
            product_id=1,
            price_x18=PRICE,
            amount=amount,
            expiration=self.chain.timestamp() + ORDER_LIFETIME_S,
            nonce=nonce,
        )
        return order, order.sign(owner, self.court.domain)

    def fill(
        self,
        order: Order,
        *,
        seq: int,
        amount: int,
        filled_total: int,
        price_x18: int = PRICE,
        timestamp_ms: int | None = None,
    ) -> tuple[Fill, bytes]:
        """An operator-signed fill of ``order``, stamped ``seq`` seconds in by default."""
        fill = Fill(
            order_digest=order.digest(self.court.domain),
            sender=order.sender,
            seq=seq,
            amount=amount,
            filled_total=filled_total,
            price_x18=price_x18,
            timestamp_ms=1_000 * seq if timestamp_ms is None else timestamp_ms,
        )
        return fill, fill.sign(self.operator, self.court.domain)

    def note(
        self,
        order: Order,
        *,
        seq: int,
        filled_amount: int = 0,
        last_fill_seq: int = 0,
        last_fill: Fill | None = None,
        last_fill_hash: bytes | None = None,
        pending_amount: int = 0,
        pending_until_ms: int = 0,
        received_at_ms: int | None = None,
    ) -> tuple[CancellationNote, bytes]:
        """An operator-signed note for ``order`` answering an on-chain request.

        ``last_fill`` counts that fill (its seq, total and hash); otherwise a note that
        counts something names :data:`UNSIGNED_FILL_HASH` unless ``last_fill_hash`` says.
        """
        if last_fill is not None:
            filled_amount, last_fill_seq = last_fill.filled_total, last_fill.seq
            last_fill_hash = last_fill.struct_hash()
        if last_fill_hash is None:
            last_fill_hash = UNSIGNED_FILL_HASH if last_fill_seq else bytes(32)
        note = CancellationNote(
            order_digest=order.digest(self.court.domain),
            sender=order.sender,
            request_hash=bytes(32),
            filled_amount=filled_amount,
            last_fill_seq=last_fill_seq,
            last_fill_hash=last_fill_hash,
            pending_amount=pending_amount,
            pending_until_ms=pending_until_ms,
            received_at_ms=1_000 * seq if received_at_ms is None else received_at_ms,
            seq=seq,
        )
        return note, note.sign(self.operator, self.court.domain)

    def vest(self) -> None:
        """Let every claim filed so far vest (its window closes, then vests)."""
        self.chain.increase_time(2 * CLAIM_DELAY_S)

    def owner_credit(self, owner: Signer) -> int:
        """What the court has credited ``owner`` so far."""
        return self.court.credits(owner.address)


@cache
def test_contract_initcode(name: str) -> bytes:
    """The bytecode of ``contracts/test/<name>.vy`` (compiled once per run)."""
    source = (TEST_CONTRACTS / f"{name}.vy").read_text(encoding="utf-8")
    return bytes.fromhex(vyper.compile_code(source, output_formats=["bytecode"])["bytecode"][2:])


def deploy_test_contract(
    chain: Chain, deployer: Signer, name: str, types: list[str] = (), args: list = ()
) -> bytes:
    """Deploy a test contract with constructor ``args``; returns its address."""
    initcode = test_contract_initcode(name) + abi_encode(list(types), list(args))
    address = chain.deploy(deployer, initcode).contract_address
    assert address is not None
    return address


def forward(chain: Chain, sender: Signer, forwarder: bytes, to: bytes, data: bytes, value: int):
    """``sender`` has the Forwarder contract call ``to`` with ``data`` (and ``value``)."""
    call = vyper.utils.method_id("forward(address,bytes)") + abi_encode(
        ["address", "bytes"], [to, data]
    )
    return chain.transact(sender, forwarder, call, value=value)


def dirty_relayed_request(
    court: Court, order: Order, cancellation: Cancellation, signature: bytes
) -> bytes:
    """``requestCancelSigned`` calldata whose last ABI padding byte (after the 65-byte
    signature) is 1: the court's decoder accepts it, a strict ABI decoder does not."""
    data = court.encode_call("requestCancelSigned", order, cancellation, signature)
    assert data.endswith(bytes(31)) and data[-32] != 0  # the signature's v, then padding
    return data[:-1] + b"\x01"


def make_world(
    *, bond: int = MIN_BOND_WEI, halt_on_default: bool = True, chain_id: int = 1337
) -> World:
    """A fresh chain and court with parameters above, bonded with ``bond`` wei."""
    chain = InProcessChain(chain_id=chain_id, accounts=6)
    operator, deployer, alice, bob = chain.dev_accounts[:4]
    court = Court.deploy(
        chain,
        deployer,
        operator=operator.address,
        **{**DEV_PARAMETERS, "halt_on_default": halt_on_default},
    )
    if bond:
        court.deposit_bond(operator, bond)
    return World(chain, court, operator, deployer, alice, bob)


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture(scope="session")
def new_world() -> Callable[..., World]:
    """:func:`make_world` for tests that need several worlds or other parameters."""
    return make_world


@pytest.fixture(scope="session")
def reverts() -> Callable[[str], AbstractContextManager[object]]:
    """``with reverts("court: ..."):`` expects a revert with exactly that reason."""

    @contextmanager
    def expect(reason: str) -> Iterator[None]:
        with pytest.raises(TransactionReverted) as info:
            yield
        assert info.value.reason == reason

    return expect
