"""The poison-pill fuzz: the real ``cancelnote operator run`` against a served chain, fed
random and hostile forced cancels, answers every one within W and never stops serving.

The requests mix every way the court accepts one (protocol v2, guarantee 1): the owner's
``requestCancel`` of an order the operator holds or never saw, a relayer's
``requestCancelSigned``, either sent through a contract (a smart-contract wallet that
owns the order, a relayer contract), calldata whose ABI padding is dirty (attack 1: v1's
watcher crashed the whole process on it, at every restart), requests repeated (refused by
the court) and junk calls. Midway the watcher's cursor is rewound in the journal file, as
a reorg or a crash before the cursor moved would, so every request is seen again. All the
while a client trades with the operator over its WebSocket.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
from conftest import deploy_test_contract, dirty_relayed_request, forward
from test_crash import _start_operator, served_court
from test_server import PRICE, SIZE, connect

from cancelnote.crypto import Signer, to_checksum
from cancelnote.dispute.chain import Chain, TransactionReverted
from cancelnote.dispute.court import CancelState, Court
from cancelnote.dispute.inprocess import dev_account
from cancelnote.messages import Cancellation, Order, make_nonce, make_sender
from cancelnote.operator.clock import wall_clock_ms
from cancelnote.operator.testing import Trader

pytestmark = pytest.mark.slow

SEED = 20261124
REQUESTS = 24
KINDS = (
    "owner-held",
    "owner-unknown",
    "relayer",
    "relayer-dirty-padding",
    "contract-owner",
    "contract-relayer",
    "contract-relayer-dirty-padding",
    "repeat",
    "junk",
)


@attrs.define
class Fuzz:
    """The chain side of the fuzz: a court, its keys and the requests made so far."""

    chain: Chain
    court: Court
    owners: list[Signer]
    relayer: Signer
    wallet: bytes  # a Forwarder contract: it owns orders and relays
    rng: random.Random
    accepted: dict[bytes, str] = attrs.Factory(dict)  # digest -> kind
    sent: list[partial] = attrs.Factory(list)  # every accepted request, to send again
    nonce: int = 0

    def order(self, owner: bytes, *, held: Order | None = None) -> Order:
        if held is not None:
            return held
        self.nonce += 1
        return Order(
            sender=make_sender(owner, self.rng.choice(["default", "hedge"])),
            product_id=self.rng.choice([1, 2, 7]),
            price_x18=self.rng.randrange(1, 10**24),
            amount=self.rng.choice([-1, 1]) * self.rng.randrange(1, 10**20),
            expiration=self.chain.timestamp() + 86_400,
            nonce=self.nonce,
        )

    def cancellation(self, order: Order, signer: Signer) -> tuple[Cancellation, bytes]:
        digest = order.digest(self.court.domain)
        cancellation = Cancellation(
            order.sender,
            (order.product_id, 1),
            (digest, bytes(32)),
            make_nonce(1000 * (self.chain.timestamp() + 600)),
        )
        return cancellation, cancellation.sign(signer, self.court.domain)

    def request(self, kind: str, held: list[Order]) -> None:
        """Send one request of ``kind`` (blocking); remember it if the court accepted it."""
        owner = self.rng.choice(self.owners)
        bond = self.court.dispute_bond()
        court = self.court.address
        if kind == "owner-held" and held:
            order = held.pop()
            send = partial(self.court.request_cancel, self.owners[0], order)
        elif kind in ("owner-held", "owner-unknown"):
            order = self.order(owner.address)
            send = partial(self.court.request_cancel, owner, order)
        elif kind.startswith("relayer"):
            order = self.order(owner.address)
            cancellation, sig = self.cancellation(order, owner)
            data = (dirty_relayed_request if "dirty" in kind else self._clean)(
                self.court, order, cancellation, sig
            )
            send = partial(self.chain.transact, self.relayer, court, data, value=bond)
        elif kind == "contract-owner":
            order = self.order(self.wallet)
            data = self.court.encode_call("requestCancel", order)
            send = partial(forward, self.chain, self.relayer, self.wallet, court, data, bond)
        elif kind.startswith("contract-relayer"):
            order = self.order(owner.address)
            cancellation, sig = self.cancellation(order, owner)
            data = (dirty_relayed_request if "dirty" in kind else self._clean)(
                self.court, order, cancellation, sig
            )
            send = partial(forward, self.chain, self.relayer, self.wallet, court, data, bond)
        elif kind == "repeat" and self.sent:
            send = self.rng.choice(self.sent)  # one forced cancel per order: refused
            order = None
        else:  # junk: a known selector with garbage, or an unknown one
            junk = self.rng.randbytes(self.rng.randrange(0, 300))
            selector = self.court.encode_call("requestCancel", self.order(owner.address))[:4]
            data = self.rng.choice([selector, b"\xde\xad\xbe\xef"]) + junk
            send = partial(self.chain.transact, self.relayer, court, data, value=bond)
            order = None
        try:
            send()
        except TransactionReverted:
            return
        if order is not None:
            self.accepted[order.digest(self.court.domain)] = kind
            self.sent.append(send)

    @staticmethod
    def _clean(court: Court, order: Order, cancellation: Cancellation, sig: bytes) -> bytes:
        return court.encode_call("requestCancelSigned", order, cancellation, sig)


def _rewind_cursor(db: Path) -> None:
    """What a reorg (or a crash before the cursor moved) does: every request comes again."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE watcher_cursor SET next_block = 0")


async def _trade(port: int, trader: Trader, served: list[int], stop: trio.Event) -> None:
    """Place orders until told to stop; each must be answered."""
    async with connect(port) as client:
        while not stop.is_set():
            answer = await client.request(trader.order(1, PRICE, SIZE, wall_clock_ms()))
            assert answer["status"] == "success", answer
            served.append(1)
            await trio.sleep(0.05)


async def test_operator_answers_every_hostile_forced_cancel_and_keeps_serving(tmp_path):
    async with served_court(tmp_path, "fuzz") as (url, court):
        chain = court.chain
        relayer = dev_account(1)
        wallet = await trio.to_thread.run_sync(
            deploy_test_contract, chain, dev_account(0), "Forwarder"
        )
        owners = [dev_account(2), dev_account(3)]
        fuzz = Fuzz(chain, court, owners, relayer, wallet, random.Random(SEED))
        chain_args = ("--rpc", url, "--court", to_checksum(court.address))
        process, port, domain = await _start_operator(
            tmp_path, 0, (*chain_args, "--post-bond", str(3 * 10**18), "--poll-s", "0.05")
        )
        try:
            assert domain == court.domain
            trader = Trader(fuzz.owners[0], domain)
            held = []
            async with connect(port) as client:
                for _ in range(4):  # orders the operator holds, to be forced too
                    placed = trader.order(1, PRICE, SIZE, wall_clock_ms())
                    assert (await client.request(placed))["status"] == "success"
                    held.append(placed.order)
            served: list[int] = []
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_trade, port, Trader(dev_account(4), domain), served, stop)
                for i in range(REQUESTS):
                    kind = KINDS[i % len(KINDS)] if i < len(KINDS) else fuzz.rng.choice(KINDS)
                    await trio.to_thread.run_sync(fuzz.request, kind, held)
                    if i == REQUESTS // 2:
                        await trio.to_thread.run_sync(_rewind_cursor, tmp_path / "journal.sqlite")
                with trio.fail_after(60):
                    for digest, kind in fuzz.accepted.items():
                        while (
                            status := await trio.to_thread.run_sync(court.cancel_status, digest)
                        ).state is CancelState.REQUESTED:
                            await trio.sleep(0.05)
                        assert status.state is CancelState.ANSWERED, kind
                stop.set()
            assert process.returncode is None, "the operator is still running"
            assert len(served) > 5, "the off-chain server kept serving"
            assert set(fuzz.accepted.values()) >= set(KINDS) - {"repeat", "junk"}
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await process.wait() == 0
    events = [
        json.loads(line)["event"] for line in (tmp_path / "operator-0.log").read_text().splitlines()
    ]
    # every request answered once, however often it was read (rewound, re-scanned)
    assert events.count("forced_cancel_seen") == len(fuzz.accepted)
    assert events.count("forced_cancel_answered") == len(fuzz.accepted)
    assert not {"forced_cancel_failed", "forced_cancel_missed", "answer_refused"} & set(events)
