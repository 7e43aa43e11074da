"""The strategies protocol v2 leaves measurable: filling during a forced cancel's answer
window (honestly stamped and backdated), and draining the bond through a sock puppet."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cancelnote.client.verifier import Kind, Received
from cancelnote.operator.journal import FillIssued
from cancelnote.sim.adversary import PUPPET, AnswerWindowFill, BondDrain
from cancelnote.sim.attack import DEFAULT_POLICIES
from cancelnote.sim.clients import SimClient
from cancelnote.sim.metrics import run_metrics
from cancelnote.sim.scenario import load_scenario
from cancelnote.sim.world import World

SIMULATIONS = Path(__file__).parent.parent / "simulations"
#: answer_window.toml, shorter: the market trades 25 s, the court's business runs 45 s more.
SHORT = {"run.horizon_s": 25, "takers.rate_per_s": 0.0, "market.sigma": 0.2}
#: Look at a forced order when it is requested and once more 21 s later (past the 20 s
#: maxPendingMs, and before the market closes for the requests of the first seconds): the
#: late fill is the one v2's rule convicts.
LATE = {"operator.params.until_ms": 21_000, "operator.params.look_every_ms": 21_000}


def _world(**overrides: object) -> World:
    scenario = load_scenario(SIMULATIONS / "answer_window.toml", {**SHORT, **overrides})
    world = World.build(scenario, 0)
    world.run()
    return world


class _Spy:
    """What the world saw while it ran: the taker's fills after forced cancels (signed at,
    stamped at, request time; engine ms) and every finding of the clients' verifiers."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fills: list[tuple[int, int, int]] = []
        self.findings: list[str] = []
        on_fill, receive = World._on_fill, SimClient.receive

        def spy_fill(world: World, entry: FillIssued) -> None:
            requested = world.requested_at_ms(entry.fill.order_digest)
            if requested is not None and world.now_ms() > requested:
                self.fills.append((world.now_ms(), entry.fill.timestamp_ms, requested))
            on_fill(world, entry)

        def spy_receive(client: SimClient, entry: object, now_ms: int) -> Received:
            received = receive(client, entry, now_ms)  # type: ignore[arg-type]
            self.findings += [f.kind for f in received.findings]
            return received

        monkeypatch.setattr(World, "_on_fill", spy_fill)
        monkeypatch.setattr(SimClient, "receive", spy_receive)


def _spied(**overrides: object) -> tuple[World, _Spy]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = _Spy(monkeypatch)
        return _world(**overrides), spy


@pytest.fixture(scope="module")
def honest_stamps() -> tuple[World, _Spy]:
    return _spied(**LATE, **{"operator.params.backdate": 0})


@pytest.fixture(scope="module")
def backdated() -> tuple[World, _Spy]:
    return _spied(**LATE, **{"operator.params.backdate": 1})


def test_window_fills_in_the_answer_window_and_answers_at_its_end(honest_stamps):
    world, spy = honest_stamps
    late = [(signed, at) for signed, stamp, at in spy.fills if signed - at > 20_000]
    assert late  # filled more than maxPendingMs after the request took effect
    assert all(stamp == signed for signed, stamp, _ in spy.fills)  # stamped honestly
    answers = [tx for tx in world.txs if tx.function == "answerCancel"]
    assert answers and all(tx.ok for tx in answers)  # after the look, before the deadline


def test_a_fill_stamped_after_max_pending_is_proven_and_claimed(honest_stamps):
    world, spy = honest_stamps
    assert Kind.FILL_AFTER_REQUEST in spy.findings
    proofs = [c for c in world.disputes if c.kind == "prove_fill_after_request"]
    assert proofs and all(c.outcome == "won" for c in proofs)
    m = run_metrics(world)
    assert m["claims_filed"] >= len(proofs) and m["operator_penalties"] >= 50.0
    assert m["backdated_fills"] == 0


def test_backdated_fills_claim_the_in_flight_bound_and_nothing_is_provable(
    backdated, honest_stamps
):
    world, spy = backdated
    late = [(signed, stamp, at) for signed, stamp, at in spy.fills if signed - at > 20_000]
    assert late and all(stamp <= at + 20_000 < signed for signed, stamp, at in late)
    m = run_metrics(world)
    assert m["backdated_fills"] >= len(late)
    assert m["claims_filed"] == 0 and m["operator_penalties"] == 0
    assert Kind.FILL_AFTER_REQUEST not in spy.findings
    # The same fills, the same gain: the backdated arm keeps what the honest one pays.
    honest = run_metrics(honest_stamps[0])
    assert m["operator_gain_gross"] == pytest.approx(honest["operator_gain_gross"])
    assert m["operator_gain_net"] - honest["operator_gain_net"] == pytest.approx(
        honest["operator_penalties"]
    )


def test_window_searches_the_answer_window_the_court_gives():
    scenario = load_scenario(SIMULATIONS / "answer_window.toml")
    space = AnswerWindowFill.search_space(scenario)
    assert space["until_ms"].high == 30_000 - 2 * 1_000 and space["backdate"].values() == [0, 1]
    drain = BondDrain.search_space(scenario)
    assert set(drain) == {"until_ms", "claims", "at_start"}
    assert {"window", "drain"} <= set(DEFAULT_POLICIES)  # sim attack searches them unasked


DRAIN = {
    "operator.policy": "drain",
    "operator.params": {},
    "court.operator_bond": 500.0,
    **{f"operator.params.{k}": v for k, v in {"until_ms": 21_000, "look_every_ms": 21_000}.items()},
}


def test_a_drain_with_the_first_claim_shares_its_window_pro_rata():
    world = _world(**DRAIN, **{"operator.params.claims": 1.0, "operator.params.at_start": 0})
    m = run_metrics(world)
    puppets = [c for c in world.ledger.claims if c.owner == PUPPET]
    victims = [c for c in world.ledger.claims if c.owner != PUPPET]
    assert len(puppets) == math.ceil(500 / 50) and victims
    assert {c.window for c in puppets} == {victims[0].window}  # the first victim's window
    assert m["claims_taken"] == pytest.approx(500.0)  # the whole bond, no more
    share = 500.0 * 0.75 / (len(puppets) + len([v for v in victims if v.window == 1]))
    assert m["client_compensation"] == pytest.approx(share * len(victims), rel=1e-6)
    assert m["operator_recovered"] == pytest.approx(share * len(puppets), rel=1e-6)
    assert m["operator_penalties"] == pytest.approx(500.0 - m["operator_recovered"])
    assert sum(tx.party == PUPPET for tx in world.txs) == len(puppets)


def test_a_drain_at_the_start_leaves_later_victims_unpaid_at_the_burn_share_cost():
    world = _world(**DRAIN, **{"operator.params.claims": 1.0, "operator.params.at_start": 1})
    m = run_metrics(world)
    assert any(c.owner != PUPPET for c in world.ledger.claims)
    assert m["client_compensation"] == 0.0
    assert m["operator_recovered"] == pytest.approx(500.0 * 0.75)
    assert m["operator_penalties"] == pytest.approx(500.0 * 0.25)  # the burn share
    no_burn = run_metrics(
        _world(
            **DRAIN,
            **{"operator.params.claims": 1.0, "operator.params.at_start": 1},
            **{"court.burn_share_bps": 0},
        )
    )
    assert no_burn["operator_penalties"] == pytest.approx(0.0)  # without it, a free escape
