"""The ground truth of one run: what really happened to every cancel, dispute and tx.

These are the simulator's records, not any party's claim (docs/simulation.md §7): times
are simulated nanoseconds as the kernel saw them, prices and sizes are floats in quote
currency and base units. The world fills them in as events happen; the metrics and the
CSV files read them after the run.

Memory stays flat in the horizon: a cancel's story (received, held, noted, forced, its
stale fills) unfolds over many events, so its :class:`CancelRecord` is mutable while it
is *open*; once nothing more can happen to it the world *closes* it and the
:class:`Recorder` appends it as one fixed-size row (:data:`CANCEL_DTYPE`) to a spool file
on disk. After the run :meth:`Recorder.table` reads every row back as one numpy
structured array, the columns the metrics compute on.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import attrs
import numpy as np

#: Why an order's cancel was not answered at once: the operator's intent, ground truth.
HONEST = "honest"
HELD = "held"
DROPPED = "dropped"
INTENTS = (HONEST, HELD, DROPPED)
#: A time that did not happen, in the table (every real time is >= 0).
NEVER = -1
#: Closed records kept in memory before they are spooled to disk.
BATCH = 4096

#: One closed cancel record: a row of ``cancels.csv`` and of :meth:`Recorder.table`.
CANCEL_DTYPE = np.dtype(
    [
        ("client", "i4"),  # index into Recorder.clients
        ("digest", "V32"),
        ("side", "i1"),
        ("quantity", "f8"),
        ("price", "f8"),
        ("t_send", "i8"),
        ("t_recv", "i8"),
        ("intent", "i1"),  # index into INTENTS
        ("misbehaved", "?"),
        ("t_note", "i8"),
        ("note_on_chain", "?"),
        ("t_note_seen", "i8"),
        ("t_eff", "i8"),
        ("forced", "?"),
        ("stale_fills", "i4"),
        ("loss", "f8"),
        ("taken", "f8"),  # the part of the loss the operator's own taker took
        ("t_look", "i8"),  # the last time the operator's taker looked at it while held
    ]
)


def _time(value: int | None) -> int:
    return NEVER if value is None else value


@attrs.define
class CancelRecord:
    """One order named by a client's cancel request: its story from send to effect.

    ``intent`` is ``held`` or ``dropped`` when the operator delayed it on purpose;
    ``misbehaved`` is true when the operator did anything else dishonest to this order
    (a backdated, withheld or doubled note, a fill let through after the note).
    ``stale_fills`` and ``loss`` count the fills that executed after the operator
    received the cancel and the client's loss on them (docs/simulation.md §7); ``taken``
    is the part of that loss on fills whose counterparty was the operator's own taker.
    """

    client: int
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
    stale_fills: int = 0
    loss: float = 0.0
    taken: float = 0.0
    t_look: int | None = None

    @property
    def dishonest(self) -> bool:
        """Whether the operator did anything on purpose to this order."""
        return self.intent != HONEST or self.misbehaved

    def row(self) -> tuple[object, ...]:
        """The record as a :data:`CANCEL_DTYPE` row."""
        return (
            self.client, self.digest, self.side, self.quantity, self.price, self.t_send,
            _time(self.t_recv), INTENTS.index(self.intent), self.misbehaved,
            _time(self.t_note), self.note_on_chain, _time(self.t_note_seen),
            _time(self.t_eff), self.forced, self.stale_fills, self.loss, self.taken,
            _time(self.t_look),
        )  # fmt: skip


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
class ClaimRecord:
    """One claim the court filed (a ``Slashed`` event) and what it was credited in the run.

    ``owner`` is the agent the claim is for: a client's name, the name the operator's
    strategy gives its own claimants (a sock puppet), or ``?``.
    """

    owner: str
    digest: bytes
    offence: int
    window: int
    penalty_wei: int
    t_filed: int
    paid_wei: int = 0  # credited by ClaimPaid within the run
    t_paid: int | None = None  # when it was first credited


@attrs.frozen
class ClaimOutcome:
    """What the run's claims come to once every window has vested (protocol §13)."""

    taken_wei: int  # what the windows take from the operator's bond
    burnt_wei: int  # of which the burn share
    entitled: dict[str, int]  # wei each owner is credited for its claims


@attrs.define
class ClaimLedger:
    """The court's claims in one run, from its events: ``Slashed`` (filed),
    ``WindowSettled`` (a window's take so far), ``ClaimPaid`` (credited to an owner).

    Claims filed late in a run vest after it; :meth:`outcome` applies the court's rule to
    them (windows paid in order, each taking what the bond has left up to what its claims
    are owed, the burn share off the top, the rest split equally among its claims), so a
    claim counts whether or not it vested before the horizon. A test plays a run's court
    out past every vesting and compares.
    """

    claims: list[ClaimRecord] = attrs.Factory(list)
    taken: dict[int, int] = attrs.Factory(dict)  # window -> wei taken so far
    _by_key: dict[tuple[bytes, int], ClaimRecord] = attrs.Factory(dict)

    def filed(
        self, owner: str, digest: bytes, offence: int, window: int, penalty_wei: int, t: int
    ) -> None:
        record = ClaimRecord(owner, digest, offence, window, penalty_wei, t)
        self.claims.append(record)
        self._by_key[digest, offence] = record

    def settled(self, window: int, taken_wei: int) -> None:
        self.taken[window] = taken_wei  # the event carries the window's total so far

    def paid(self, digest: bytes, offence: int, paid_wei: int, t: int) -> None:
        record = self._by_key.get((digest, offence))
        if record is not None:
            record.paid_wei += paid_wei
            if record.t_paid is None:
                record.t_paid = t

    def outcome(self, bond_wei: int, burn_share_bps: int) -> ClaimOutcome:
        """The claims' end, given the bond left (``bond_wei``, after the takes so far) and
        no further deposit: the court's ``settle`` and ``claim`` arithmetic."""
        counts: dict[int, int] = {}
        for claim in self.claims:
            counts[claim.window] = counts.get(claim.window, 0) + 1
        final: dict[int, int] = {}
        left, short = bond_wei, False
        for window in sorted(counts):
            owed = counts[window] * self.claims[0].penalty_wei
            taken = self.taken.get(window, 0)
            if not short:  # a window is paid only once every earlier one is paid in full
                more = min(left, owed - taken)
                left, taken = left - more, taken + more
                short = taken < owed
            final[window] = taken
        entitled: dict[str, int] = {}
        for claim in self.claims:
            taken = final[claim.window]
            share = (taken - taken * burn_share_bps // 10_000) // counts[claim.window]
            entitled[claim.owner] = entitled.get(claim.owner, 0) + share
        return ClaimOutcome(
            sum(final.values()),
            sum(t * burn_share_bps // 10_000 for t in final.values()),
            entitled,
        )


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


@attrs.define
class Recorder:
    """The open cancel records and the closed ones: the latest :data:`BATCH` in a fixed
    numpy buffer, the rest spooled to a temporary file (opened only once a run needs it).

    Args:
        clients: the client names; a record's ``client`` indexes this list.
    """

    clients: list[str]
    open: dict[bytes, CancelRecord] = attrs.Factory(dict)
    closed: int = 0
    _spool: BinaryIO | None = attrs.field(default=None, init=False)
    _spooled: int = attrs.field(default=0, init=False)
    _buffer: np.ndarray = attrs.field(factory=lambda: np.empty(BATCH, CANCEL_DTYPE), init=False)
    _buffered: int = attrs.field(default=0, init=False)

    def add(self, record: CancelRecord) -> None:
        self.open[record.digest] = record

    def get(self, digest: bytes) -> CancelRecord | None:
        return self.open.get(digest)

    def close(self, record: CancelRecord) -> None:
        """Keep ``record`` as a row and forget the object (nothing may change it now)."""
        del self.open[record.digest]
        self._buffer[self._buffered] = record.row()
        self._buffered += 1
        self.closed += 1
        if self._buffered == BATCH:
            if self._spool is None:
                self._spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed by discard)
            self._spool.seek(0, os.SEEK_END)
            self._buffer.tofile(self._spool)
            self._spooled += BATCH
            self._buffered = 0

    def finish(self) -> None:
        """Close every record still open (the run is over), in the order they opened."""
        for record in list(self.open.values()):
            self.close(record)

    def chunks(self) -> Iterator[np.ndarray]:
        """Every closed record, in closing order, as :data:`CANCEL_DTYPE` arrays of at
        most :data:`BATCH` rows (for writing them out in flat memory)."""
        if self._spool is not None:
            self._spool.flush()
            for start in range(0, self._spooled, BATCH):
                self._spool.seek(start * CANCEL_DTYPE.itemsize)
                yield np.fromfile(self._spool, dtype=CANCEL_DTYPE, count=BATCH)
        if self._buffered:
            yield self._buffer[: self._buffered].copy()

    def table(self) -> np.ndarray:
        """Every closed record as one :data:`CANCEL_DTYPE` array."""
        parts = list(self.chunks())
        return np.concatenate(parts) if parts else np.empty(0, dtype=CANCEL_DTYPE)

    def discard(self) -> None:
        """Delete the spool file (the table is gone with it)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
