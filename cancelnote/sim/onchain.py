"""The court on an in-process chain, with block times that follow simulated time.

Rules:

* **Lazy.** The chain is created and the court deployed (and bonded) only when a party
  first has something to send: a run without disputes never touches py-evm. The court's
  address is known from the start (the deployer's first contract), so every message is
  signed in the right EIP-712 domain all along.
* **Blocks in slots.** A block slot opens every ``block_time_s`` of simulated time; a
  party with on-chain work waits for the next slot. A slot opens with an empty block
  stamped at the slot's time (the chain's clock; answer windows run from it), then the
  waiting parties act in the order of the scenario's ``ordering``.
* **A chain second is a simulated millisecond** (``CHAIN_TIME_SCALE``). py-evm mines one
  block per transaction and each block must be at least a second after its parent, so
  at one chain second per simulated second a busy slot would push the chain's clock
  ahead of the simulation's (and close answer windows early). At the scale of 1000 a
  slot's transactions take a simulated millisecond each; the court's time parameters
  (answer window, exit delay) and the orders' lifetimes are scaled alike.
* **Orderings** of the parties waiting for a slot: ``fifo`` (first ready first),
  ``cancel_first`` (clients, who force cancels, before the operator), ``adversarial``
  (the operator first, clients last and latest-first) and ``seeded_random`` (a
  permutation from the ``chain/ordering`` stream).
* Setup transactions (deployment, the operator's bond) are not an attack or defence
  cost and are not recorded.
* Court v2's parameters the scenario does not set are the dev court's (the pending
  bound, the burn share and address); claims vest one answer window after their window
  closes. Fill and note times are the engine's milliseconds, not the scaled chain clock,
  so the court's time rule for forced cancels is not exercised here.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np
from eth._utils.address import generate_contract_address

from ..crypto import Signer
from ..dispute.court import DEV_PARAMETERS, Court
from ..dispute.inprocess import DEFAULT_GENESIS_TIMESTAMP, InProcessChain
from ..messages import Domain
from .scenario import ChainSpec, CourtSpec

CHAIN_ID = 1337
#: Simulated time 0 is this many seconds after the chain's genesis.
EPOCH_S = DEFAULT_GENESIS_TIMESTAMP + 10
#: Chain seconds per simulated second (see the module docstring).
CHAIN_TIME_SCALE = 1000
NS_PER_S = 10**9
WEI_PER_ETH = 10**18
OPERATOR = "operator"


def court_address(deployer: Signer) -> bytes:
    """Where ``deployer``'s first transaction (nonce 0) deploys the court."""
    return generate_contract_address(deployer.address, 0)


def domain_of(deployer: Signer) -> Domain:
    """The EIP-712 domain of the court ``deployer`` will deploy."""
    return Domain(CHAIN_ID, court_address(deployer))


@attrs.define
class OnChain:
    """The chain side of a run: the lazy court, the slot clock and the waiting parties.

    Args:
        court_spec, chain_spec: the scenario's tables.
        operator: the operator's key (deploys, bonds, answers).
        accounts: dev accounts to fund (every agent's key is one).
        rng: the ``chain/ordering`` stream.
    """

    court_spec: CourtSpec
    chain_spec: ChainSpec
    operator: Signer
    accounts: int
    rng: np.random.Generator
    chain: InProcessChain | None = None
    court: Court | None = None
    _waiting: dict[str, int] = attrs.Factory(dict)  # party -> ready sequence
    _ready: int = 0

    def wei(self, amount: float) -> int:
        """Quote currency as wei at the scenario's ether price."""
        return round(amount / self.chain_spec.eth_price * WEI_PER_ETH)

    def currency(self, wei: int) -> float:
        """Wei as quote currency."""
        return wei / WEI_PER_ETH * self.chain_spec.eth_price

    def gas_cost(self, gas: int) -> float:
        """What ``gas`` costs in quote currency at the scenario's gas and ether prices."""
        return gas * self.chain_spec.gas_price_gwei * 1e-9 * self.chain_spec.eth_price

    def start(self) -> Court:
        """The court, created, deployed and bonded on first use."""
        if self.court is None:
            spec = self.court_spec
            self.chain = InProcessChain(CHAIN_ID, accounts=self.accounts)
            self.court = Court.deploy(
                self.chain,
                self.operator,
                operator=self.operator.address,
                answer_window_s=spec.answer_window_s * CHAIN_TIME_SCALE,
                penalty_wei=self.wei(spec.penalty),
                min_bond_wei=self.wei(spec.operator_bond),
                dispute_bond_wei=self.wei(spec.dispute_bond),
                exit_delay_s=2**32 - 1,  # the most the court allows (~136 years)
                halt_on_default=spec.halt_on_default,
                max_pending_ms=DEV_PARAMETERS["max_pending_ms"],
                claim_delay_s=spec.answer_window_s * CHAIN_TIME_SCALE,
                burn_share_bps=DEV_PARAMETERS["burn_share_bps"],
                burn_address=DEV_PARAMETERS["burn_address"],
            )
            assert self.court.address == court_address(self.operator)
            self.court.deposit_bond(self.operator, self.wei(spec.operator_bond))
        return self.court

    def next_slot(self, now_ns: int) -> int:
        """The first slot boundary strictly after ``now_ns``."""
        block_ns = self.chain_spec.block_time_s * NS_PER_S
        return (now_ns // block_ns + 1) * block_ns

    def wait(self, party: str) -> bool:
        """Queue ``party`` for the next slot; false if it was already queued."""
        if party in self._waiting:
            return False
        self._waiting[party] = self._ready
        self._ready += 1
        return True

    def open_slot(self, now_ns: int) -> list[str]:
        """Stamp the slot's empty block and return the waiting parties in slot order."""
        self.start()
        assert self.chain is not None
        target = EPOCH_S + now_ns * CHAIN_TIME_SCALE // NS_PER_S
        self.chain.set_next_block_timestamp(max(target, self.chain.timestamp() + 1))
        self.chain.mine()
        parties = sorted(self._waiting, key=self._waiting.__getitem__)
        self._waiting.clear()
        return _ORDERINGS[self.chain_spec.ordering](parties, self.rng)

    def gas_of(self, tx_hash: bytes) -> tuple[int, int]:
        """``(gas used, block number)`` of a mined transaction."""
        assert self.chain is not None
        mined = self.chain.transaction(tx_hash)
        assert mined is not None
        return mined.receipt.gas_used, mined.receipt.block_number


def _fifo(parties: list[str], rng: np.random.Generator) -> list[str]:
    return parties


def _cancel_first(parties: list[str], rng: np.random.Generator) -> list[str]:
    return [p for p in parties if p != OPERATOR] + [p for p in parties if p == OPERATOR]


def _adversarial(parties: list[str], rng: np.random.Generator) -> list[str]:
    clients = [p for p in parties if p != OPERATOR]
    return [p for p in parties if p == OPERATOR] + clients[::-1]


def _seeded_random(parties: list[str], rng: np.random.Generator) -> list[str]:
    return [parties[i] for i in rng.permutation(len(parties))]


_ORDERINGS: dict[str, Callable[[list[str], np.random.Generator], list[str]]] = {
    "fifo": _fifo,
    "cancel_first": _cancel_first,
    "adversarial": _adversarial,
    "seeded_random": _seeded_random,
}
