"""The ground truth of one run: what really happened to every cancel, fill, dispute and tx.

These are the simulator's records, not any party's claim (docs/simulation.md §7): times
are simulated nanoseconds as the kernel saw them, prices and sizes are floats in quote
currency and base units. The world fills them in as events happen; the metrics and the
CSV files read them after the run. They are mutable (``attrs.define``) because a cancel's
story (received, held, noted, forced) unfolds over many events.
"""

from __future__ import annotations

import attrs

#: Why an order's cancel was not answered at once: the operator's intent, ground truth.
HONEST = "honest"
HELD = "held"
DROPPED = "dropped"


@attrs.define
class CancelRecord:
    """One order named by a client's cancel request: its story from send to effect.

    ``intent`` is ``held`` or ``dropped`` when the operator delayed it on purpose;
    ``misbehaved`` is true when the operator did anything else dishonest to this order
    (a backdated, withheld or doubled note, a fill let through after the note).
    """

    client: str
    digest: bytes
    side: int  # +1 buy, -1 sell
    quantity: float  # open size when the cancel was sent
    price: float  # the order's limit price
    t_send: int
    t_recv: int | None = None
    intent: str = HONEST
    misbehaved: bool = False
    t_note: int | None = None  # the operator signed the first note
    note_on_chain: bool = False  # that note answered a forced cancel
    t_note_seen: int | None = None  # the client received the first note
    t_eff: int | None = None  # the cancel took effect (note off-chain, block on-chain)
    forced: bool = False  # the client forced the cancel on-chain


@attrs.define
class FillRecord:
    """One operator-signed fill of a client's order."""

    digest: bytes
    seq: int
    quantity: float
    price: float
    t_match: int  # when the match executed
    t_fill: int  # when the fill was signed (settlement)
    claimed_ms: int  # the fill's timestampMs
    counterparty: str


@attrs.define
class DisputeRecord:
    """One court case: a forced cancel or a fraud proof, from filing to resolution.

    ``gas`` counts every transaction of the case, both sides (request, answer, finalize;
    or the proof). ``outcome``: ``won`` (the court slashed and paid), ``lost`` (it
    rejected the proof, or the operator answered the forced cancel and kept the dispute
    bond) or ``pending`` at the end of the run.
    """

    client: str
    digest: bytes
    kind: str
    t_filed: int
    block_filed: int
    t_resolved: int | None = None
    block_resolved: int | None = None
    outcome: str = "pending"
    gas: int = 0
    paid_wei: int = 0
    bond_wei: int = 0  # dispute bond locked by the client while the case is open


@attrs.define
class TxRecord:
    """One mined transaction."""

    t: int
    block: int
    party: str
    function: str
    gas: int
    ok: bool
    detail: str = ""
