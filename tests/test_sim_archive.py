"""The engine's archive of finished orders: only what nothing more can happen to goes, and
whatever refers to it later gets the answer it would have had."""

from __future__ import annotations

import pytest

from cancelnote.api import Fills, Notes, OrderStatus
from cancelnote.crypto import Signer
from cancelnote.messages import Domain
from cancelnote.operator.engine import Engine
from cancelnote.operator.policies import FillAfterNote
from cancelnote.operator.testing import RECV_AHEAD_MS, Trader
from cancelnote.sim.archive import DiskArchive

DOMAIN = Domain(31337, "0x" + "c0" * 20)
OPERATOR = Signer(bytes.fromhex("aa" * 32))
T0 = 1_800_000_000_000
LATER = T0 + RECV_AHEAD_MS + 1  # every nonce below has passed its recv_time


def _engine(archive: bool, **config: object) -> Engine:
    return Engine(OPERATOR, DOMAIN, {1}, archive=DiskArchive() if archive else None, **config)


def _story(engine: Engine) -> tuple[list, list[bytes]]:
    """Orders placed, one filled, one cancelled, one left resting; every output."""
    alice, bob = Trader(Signer(b"\x01" * 32), DOMAIN), Trader(Signer(b"\x02" * 32), DOMAIN)
    outputs: list = []
    resting = [alice.order(1, 100 * 10**18 - i, 10**18, T0) for i in range(3)]
    for placed in resting:
        outputs += engine.handle(placed, T0)
    outputs += engine.handle(bob.order(1, 100 * 10**18, -(10**18), T0), T0)  # fills the first
    outputs += engine.handle(alice.cancel([resting[1]], T0), T0)
    digests = [p.order.digest(DOMAIN) for p in resting]
    return outputs, digests


def _refer(engine: Engine, digests: list[bytes], how: str) -> list:
    """One way of referring to the orders after they finished."""
    if how == "cancel":
        alice = Trader(Signer(b"\x01" * 32), DOMAIN)
        return engine.handle(alice.cancel([(d, 1) for d in digests], LATER), LATER)
    if how == "force_cancel":
        return [out for d in digests for out in engine.force_cancel(d, LATER)]
    query = {"status": OrderStatus, "fills": Fills, "notes": Notes}[how]
    return [out for d in digests for out in engine.handle(query(d), LATER)]


@pytest.mark.parametrize("how", ["cancel", "force_cancel", "status", "fills", "notes"])
def test_a_retired_order_comes_back_with_the_same_answers(how):
    kept, archived = _engine(False), _engine(True)
    first, digests = _story(kept)
    assert _story(archived)[0] == first
    assert archived.retire(digests[0], LATER) and archived.retire(digests[1], LATER)
    assert not archived.retire(digests[2], LATER)  # still resting
    assert digests[0] not in archived.snapshot()["orders"]
    assert archived.archive.retired == 2  # type: ignore[union-attr]
    assert _refer(archived, digests, how) == _refer(kept, digests, how)
    assert archived.snapshot() == kept.snapshot()  # every record came back


def test_a_replay_of_a_retired_order_is_refused_as_before():
    kept, archived = _engine(False), _engine(True)
    alice = Trader(Signer(b"\x01" * 32), DOMAIN)
    placed = alice.order(1, 10**18, 10**18, T0)
    for engine in (kept, archived):
        engine.handle(placed, T0)
        engine.handle(alice.cancel([placed], T0), T0)
    assert archived.retire(placed.order.digest(DOMAIN), LATER)
    assert archived.handle(placed, LATER) == kept.handle(placed, LATER)


@pytest.mark.parametrize("case", ["young", "in flight", "fills after", "no archive"])
def test_only_a_finished_order_past_its_recv_time_retires(case):
    config = {"settlement_delay_ms": 500} if case == "in flight" else {}
    if case == "fills after":
        config = {"policy": FillAfterNote()}
    engine = _engine(case != "no archive", **config)
    alice, bob = Trader(Signer(b"\x01" * 32), DOMAIN), Trader(Signer(b"\x02" * 32), DOMAIN)
    placed = alice.order(1, 10**18, 2 * 10**18, T0)
    engine.handle(placed, T0)
    if case == "in flight":
        engine.handle(bob.order(1, 10**18, -2 * 10**18, T0), T0)  # filled, settling 500 ms
        assert not engine.retire(placed.order.digest(DOMAIN), LATER)  # (not settled yet)
        return
    engine.handle(alice.cancel([placed], T0), T0)
    now = T0 + 1 if case == "young" else LATER
    assert not engine.retire(placed.order.digest(DOMAIN), now)
