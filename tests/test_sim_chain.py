"""The world's chain: real-time blocks in real units, both backends byte for byte, claims
that vest and are paid in simulated time, and a ledger that ends as the court does."""

from __future__ import annotations

import contextlib
import filecmp
import json
import tomllib
from pathlib import Path

import pytest

from cancelnote.api import Notes
from cancelnote.client.watchtower import EVENTS_CURSOR, OWNER_EVENTS, Watchtower
from cancelnote.dispute.chain import Log, TransactionReverted
from cancelnote.dispute.court import CourtEvent, Offence
from cancelnote.messages import Order
from cancelnote.sim import clients
from cancelnote.sim.metrics import run_metrics
from cancelnote.sim.onchain import EPOCH_MS
from cancelnote.sim.output import run_replicate
from cancelnote.sim.scenario import apply_overrides, parse_scenario
from cancelnote.sim.validate_world import SCENARIO
from cancelnote.sim.world import World

SEED = 20261123
#: Cancels held past the watchtower's patience: forced on-chain and answered.
FORCED = {
    "run.seed": SEED,
    "run.horizon_s": 6,
    "operator.policy": "delay",
    "operator.delay_ms": 700,
    "client.force_after_ms": 250,
}
#: Notes backdated so that they hide fills: proofs, claims, windows, payments.
BACKDATING = {
    "run.seed": SEED,
    "run.horizon_s": 8,
    "operator.policy": "backdate",
    "operator.delay_ms": 400,
    "operator.backdate_ms": 400,
    "court.claim_delay_s": 1,
}
OUTPUTS = ("events.csv", "cancels.csv", "disputes.csv", "market.csv", "agents.csv")


def _scenario(overrides: dict):
    return parse_scenario(apply_overrides(tomllib.loads(SCENARIO), overrides))


def _world(overrides: dict) -> World:
    world = World.build(_scenario(overrides), 0)
    world.run()
    return world


def _assert_same_files(one: Path, other: Path) -> None:
    match, mismatch, errors = filecmp.cmpfiles(one, other, OUTPUTS, shallow=False)
    assert (mismatch, errors) == ([], []) and len(match) == len(OUTPUTS)


def test_a_run_writes_the_same_bytes_on_revm_and_on_py_evm(tmp_path):
    overrides = {**BACKDATING, "client.force_after_ms": 250}
    metrics = {}
    for backend in ("revm", "py-evm"):
        scenario = _scenario({**overrides, "chain.backend": backend})
        metrics[backend] = run_replicate(scenario, 0, tmp_path / backend)
        kept = json.loads((tmp_path / backend / "metrics.json").read_text(encoding="utf-8"))
        assert kept["metrics"] == metrics[backend]
    _assert_same_files(tmp_path / "revm", tmp_path / "py-evm")
    assert metrics["revm"] == metrics["py-evm"]
    m = metrics["revm"]
    assert m["disputes_filed"] > 0 and m["claims_filed"] > 0 and m["gas_total"] > 0


def _court_logs(world: World, name: str) -> list[tuple[int, dict]]:
    """``(block number, args)`` of the court's ``name`` events."""
    court, chain = world.onchain.court, world.onchain.chain
    assert court is not None and chain is not None
    logs = chain.get_logs(court.address, 0, None, (court.topic(name),))
    return [(log.block_number, court.decode_log(log).args) for log in logs]


def test_chain_seconds_are_simulated_seconds():
    world = _world(FORCED)
    chain = world.onchain.chain
    assert chain is not None
    block_ms = world.scenario.chain.block_time_ms
    forced = _court_logs(world, "CancelRequested")
    assert forced
    for number, args in forced:
        block = chain.block(number)
        assert (block.timestamp_ms - EPOCH_MS) % block_ms == 0  # a slot of simulated time
        assert args["requestedAt"] == block.timestamp_ms // 1_000
        assert args["deadline"] == args["requestedAt"] + 120  # W, unscaled
    requested = {args["digest"]: number for number, args in forced}
    answers = _court_logs(world, "CancelAnswered")
    assert answers and all(number > requested[args["digest"]] for number, args in answers)
    # The engine's answer takes effect at the request's block time, on the same clock.
    for digest, number in requested.items():
        (note,) = world.query(Notes(digest))["notes"]
        assert int(note["note"]["receivedAtMs"]) == chain.block(number).timestamp * 1_000


def test_sub_second_blocks_share_an_evm_second_and_keep_their_slot_times():
    world = _world({**FORCED, "chain.block_time_s": 0.25})
    chain = world.onchain.chain
    assert chain is not None and world.answers > 0
    blocks = [chain.block(n) for n in range(3, chain.block_number() + 1)]  # after the setup
    assert all((b.timestamp_ms - EPOCH_MS) % 250 == 0 for b in blocks)
    assert any(b.timestamp_ms % 1_000 for b in blocks)  # slots between whole seconds
    seconds = [b.timestamp for b in blocks]
    assert seconds == sorted(seconds)
    assert run_metrics(world)["false_positive_disputes"] == 0


def test_a_full_block_spills_its_rest_into_the_next_slot():
    world = _world({**FORCED, "makers.count": 30, "chain.gas_limit": 6_000_000})
    chain = world.onchain.chain
    assert chain is not None
    blocks = [chain.block(n) for n in range(3, chain.block_number() + 1)]
    assert all(b.gas_used <= 6_000_000 for b in blocks)
    slot = {tx.block: EPOCH_MS + tx.t // 10**6 for tx in world.txs}
    sealed = {n: at for n, at in slot.items() if n <= chain.block_number()}
    spilled = [n for n, at in sealed.items() if chain.block(n).timestamp_ms > at]
    assert spilled  # mined a block time after the slot that sent them
    block_ms = world.scenario.chain.block_time_ms
    assert all((chain.block(n).timestamp_ms - EPOCH_MS) % block_ms == 0 for n in spilled)
    assert world.answers > 0 and run_metrics(world)["false_positive_disputes"] == 0


def test_an_unknown_backend_is_refused_naming_the_key():
    with pytest.raises(Exception, match=r"\[chain\] 'backend' must be in"):
        _scenario({"chain.backend": "geth"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("chain.block_time_s", 0.0005, "whole number of milliseconds"),
        ("court.max_pending_ms", 200_000, "at most the answer window"),
        ("court.burn_share_bps", 10_001, "burn_share_bps"),
        ("chain.gas_limit", 250_000, "the court's deployment"),
    ],
)
def test_chain_and_court_values_out_of_range_are_refused(key, value, message):
    with pytest.raises(Exception, match=message):
        _scenario({key: value})


def test_claims_vest_and_are_paid_in_simulated_time():
    world = _world(BACKDATING)
    m = run_metrics(world)
    assert m["claims_filed"] > 0 and m["claims_paid_in_run"] > 0
    assert 2 <= m["claim_wait_s"] <= 4 + 2  # between one and two claim delays, plus slots
    paid = [c for c in world.ledger.claims if c.t_paid is not None]
    assert paid and all(c.paid_wei > 0 for c in paid)


def _play_out(world: World) -> dict[str, int]:
    """Settle every window and claim every claim on the run's court after the horizon;
    return what ``ClaimPaid`` credited to each owner over the whole run and after."""
    court, chain = world.onchain.court, world.onchain.chain
    assert court is not None and chain is not None
    anyone = chain.dev_accounts[2]
    chain.begin_block(chain.timestamp_ms() + 10 * world.scenario.court.claim_delay_s * 1_000)
    windows = sorted({c.window for c in world.ledger.claims})
    for window in windows:  # refused: paid in the run, or short of bond
        with contextlib.suppress(TransactionReverted):
            court.settle(anyone, window)
    orders = {p.order.digest(court.domain): p.order for p in world._orders.values()}
    for claim in world.ledger.claims:
        order: Order = orders[claim.digest]
        with contextlib.suppress(TransactionReverted):  # refused: nothing more to claim
            court.claim(anyone, order, Offence(claim.offence))
    chain.seal_block()
    paid: dict[str, int] = {}
    for event in court.get_events():
        if event.name == "ClaimPaid":
            name = world._agent_of(event.args["owner"])
            paid[name] = paid.get(name, 0) + event.args["paid"]
    return paid


def test_the_ledger_ends_as_the_court_does_pro_rata_when_the_bond_is_short():
    world = _world({**BACKDATING, "court.operator_bond": 120.0})  # 2.4 penalties of 50
    assert len(world.ledger.claims) >= 3
    court = world.onchain.court
    assert court is not None
    outcome = world.ledger.outcome(court.bond(), world.scenario.court.burn_share_bps)
    orders_kept = dict(world._orders)
    assert all(c.digest in orders_kept for c in world.ledger.claims)
    assert _play_out(world) == {k: v for k, v in outcome.entitled.items() if v}
    assert outcome.taken_wei == world.onchain.wei(120.0)  # the whole bond, no more
    m = run_metrics(world)
    assert m["claims_short"] == pytest.approx(m["claims_owed"] - 120.0)
    assert m["operator_penalties"] == pytest.approx(120.0)
    assert m["claims_burnt"] == pytest.approx(120.0 * 0.25)
    assert m["client_compensation"] == pytest.approx(120.0 * 0.75, rel=1e-9)


def test_burn_share_and_bond_come_from_the_scenario(tmp_path: Path):
    world = _world({**BACKDATING, "court.burn_share_bps": 1_000, "court.claim_delay_s": 3})
    court = world.onchain.court
    assert court is not None
    assert court.burn_share_bps() == 1_000 and court.claim_delay() == 3
    assert court.max_pending_ms() == 90_000 and court.answer_window() == 120


class _FullScan(Watchtower):
    """The watchtower as it was: every court log decoded, ours kept (the reference)."""

    decoded = 0

    def sync_events(self, now_ms: int) -> None:
        head = self.court.chain.block_number()
        ours = {o.digest for o in self.store.orders()}
        start = self.store.cursor(EVENTS_CURSOR)
        if start > head:
            return
        capped = set()
        with self.store.transaction():
            for log in self.court.chain.get_logs(self.court.address, start, head):
                event = self.court.decode_log(log)
                _FullScan.decoded += 1
                digest = event.args.get("digest")
                mine = self.signer.address in (event.args.get("owner"), event.args.get("account"))
                if digest in ours or mine:
                    self.store.add_chain_event(
                        log.block_number, log.log_index, log.transaction_hash, event.name,
                        event.args,
                    )  # fmt: skip
                    if event.name in ("CancelRequested", "CancelAnswered"):
                        capped.add(digest)
            for digest in capped:
                self.verifier.check_cap(digest, now_ms)
            self.store.set_cursor(EVENTS_CURSOR, head + 1)


class _Filtered(Watchtower):
    """The watchtower of the package, counting the logs it decodes."""

    decoded = 0

    def sync_events(self, now_ms: int) -> None:
        decode = self.court.decode_log

        def counting(log: Log) -> CourtEvent:
            _Filtered.decoded += 1
            return decode(log)

        self.court.decode_log = counting  # type: ignore[method-assign]
        try:
            super().sync_events(now_ms)
        finally:
            del self.court.decode_log


def test_filtered_logs_give_the_same_decisions_as_a_full_scan(monkeypatch, tmp_path):
    overrides = {**BACKDATING, "client.force_after_ms": 250, "makers.count": 4}
    outputs = {}
    for cls in (_FullScan, _Filtered):
        monkeypatch.setattr(clients, "Watchtower", cls)
        outputs[cls] = run_replicate(_scenario(overrides), 0, tmp_path / cls.__name__)
    assert outputs[_FullScan] == outputs[_Filtered]
    _assert_same_files(tmp_path / "_FullScan", tmp_path / "_Filtered")
    assert outputs[_Filtered]["claims_filed"] > 0
    # Each watchtower decodes its owner's logs only: about a quarter of the full scan's.
    assert 0 < _Filtered.decoded < _FullScan.decoded / 2


def test_a_watchtower_decodes_only_the_logs_about_its_owner():
    world = _world({**FORCED, "makers.count": 3})
    court, chain = world.onchain.court, world.onchain.chain
    assert court is not None and chain is not None
    owner = world.makers[0].trader.signer.address
    events = [court.decode_log(log) for log in chain.get_logs(court.address, 0, None)]
    about = [e for e in events if owner in (e.args.get("owner"), e.args.get("account"))]
    assert about and len(about) < len(events)
    watchtower = world.makers[0].client.watchtower  # type: ignore[union-attr]
    assert watchtower is not None
    topics = (watchtower._owner_events, [bytes(12) + owner])
    filtered = chain.get_logs(court.address, 0, None, topics)
    assert [court.decode_log(log) for log in filtered] == about
    names = {e.name for e in events if "digest" in e.args or "owner" in e.args}
    assert names <= set(OWNER_EVENTS)
