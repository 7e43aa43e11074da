"""The court on an in-process chain whose blocks follow simulated time, in real units.

Rules:

* **Lazy.** The chain is created and the court deployed (and bonded) only when a party
  first has something to send: a run without disputes never starts an EVM. The court's
  address is known from the start (the deployer's first contract), so every message is
  signed in the right EIP-712 domain all along. The setup (deployment, the operator's
  bond) is mined before simulated time 0 and is no attack or defence cost.
* **Chain time is simulated time.** Simulated time 0 is :data:`EPOCH_MS` on the chain's
  clock and on the engine's alike, so the court's answer window, claim delay and the
  orders' expirations are the scenario's seconds, and the court's rule that a forced
  cancel takes effect at its request's block (a fill stamped ``maxPendingMs`` later is an
  offence) holds between the engine's stamps and the chain's blocks.
* **Blocks in slots.** A slot comes every ``block_time_s`` (a whole number of
  milliseconds; sub-second slots are fine); a party with on-chain work waits for the next
  slot. At a slot the world opens the block stamped with the slot's time
  (:meth:`OnChain.open_slot`, the chain's ``begin_block``), the waiting parties transact
  in the scenario's ``ordering`` (each receipt at once), and the block is sealed
  (:meth:`OnChain.close_slot`) before anyone reads its logs. The EVM's timestamp is whole
  seconds: blocks of sub-second slots share one, as on L2s. A block holds at most
  ``gas_limit`` gas: what does not fit spills into the next block, one block time later,
  which is sealed at the slot that reaches it (:attr:`OnChain.spilled`).
* **Backends.** ``[chain] backend`` is ``revm`` (the default when installed) or
  ``py-evm`` (the reference); ``tests/test_sim_world.py`` checks that a run writes the
  same bytes on both.
* **Orderings** of the parties waiting for a slot: ``fifo`` (first ready first),
  ``cancel_first`` (clients, who force cancels, before the operator), ``adversarial``
  (the operator first, clients last and latest-first) and ``seeded_random`` (a
  permutation from the ``chain/ordering`` stream).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np
from eth._utils.address import generate_contract_address
from eth_typing import Address

from ..crypto import Signer
from ..dispute.chain import Receipt
from ..dispute.court import DEV_PARAMETERS, Court
from ..dispute.local import DEFAULT_GENESIS_TIMESTAMP, LocalChain, make_chain
from ..messages import Domain
from .scenario import ChainSpec, CourtSpec

CHAIN_ID = 1337
#: Simulated time 0 on the chain's (and the engine's) clock: unix ms, ten seconds after
#: the chain's genesis, so that the setup is mined before it.
EPOCH_MS = (DEFAULT_GENESIS_TIMESTAMP + 10) * 1_000
NS_PER_MS = 10**6
WEI_PER_ETH = 10**18
OPERATOR = "operator"


def court_address(deployer: Signer) -> bytes:
    """Where ``deployer``'s first transaction (nonce 0) deploys the court."""
    return generate_contract_address(Address(deployer.address), 0)


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
    chain: LocalChain | None = None
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

    @property
    def block_ns(self) -> int:
        return self.chain_spec.block_time_ms * NS_PER_MS

    def start(self) -> Court:
        """The court, created, deployed and bonded on first use (before simulated time 0)."""
        if self.court is None:
            spec, chain_spec = self.court_spec, self.chain_spec
            self.chain = make_chain(
                chain_spec.backend,
                chain_id=CHAIN_ID,
                accounts=self.accounts,
                genesis_timestamp=DEFAULT_GENESIS_TIMESTAMP,
                block_time_ms=chain_spec.block_time_ms,
                gas_limit=chain_spec.gas_limit,
            )
            self.court = Court.deploy(
                self.chain,
                self.operator,
                operator=self.operator.address,
                answer_window_s=spec.answer_window_s,
                penalty_wei=self.wei(spec.penalty),
                min_bond_wei=self.wei(spec.operator_bond),
                dispute_bond_wei=self.wei(spec.dispute_bond),
                exit_delay_s=2**32 - 1,  # the most the court allows (~136 years)
                halt_on_default=spec.halt_on_default,
                max_pending_ms=spec.max_pending_ms,
                claim_delay_s=spec.claim_delay_s,
                burn_share_bps=spec.burn_share_bps,
                burn_address=DEV_PARAMETERS["burn_address"],
            )
            assert self.court.address == court_address(self.operator)
            self.court.deposit_bond(self.operator, self.wei(spec.operator_bond))
        return self.court

    def next_slot(self, now_ns: int) -> int:
        """The first slot boundary strictly after ``now_ns``."""
        block_ns = self.block_ns
        return (now_ns // block_ns + 1) * block_ns

    def wait(self, party: str) -> bool:
        """Queue ``party`` for the next slot; false if it was already queued."""
        if party in self._waiting:
            return False
        self._waiting[party] = self._ready
        self._ready += 1
        return True

    def open_slot(self, now_ns: int) -> list[str]:
        """Open the slot's block and return the waiting parties in slot order."""
        self.start()
        assert self.chain is not None
        self.chain.begin_block(EPOCH_MS + now_ns // NS_PER_MS)
        parties = sorted(self._waiting, key=self._waiting.__getitem__)
        self._waiting.clear()
        return _ORDERINGS[self.chain_spec.ordering](parties, self.rng)

    def close_slot(self) -> None:
        """Seal the slot's block (a spill-over for a later slot stays open)."""
        assert self.chain is not None
        self.chain.seal_block()

    @property
    def spilled(self) -> bool:
        """Whether a block that took a full block's spill-over waits for a later slot."""
        return self.chain is not None and self.chain.building is not None

    def receipt(self, tx_hash: bytes) -> Receipt:
        """The receipt of a transaction sent this slot (sealed or in the block being built)."""
        assert self.chain is not None
        receipt = self.chain.receipt(tx_hash)
        assert receipt is not None
        return receipt


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
