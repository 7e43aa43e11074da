"""The verifier: every fill and note is checked on arrival and kept before it is believed.

``receive_*`` does, in one durable transaction: check the operator's signature in the
store's domain, keep the message (idempotently), run every check of protocol §11 against
the evidence already held, and record each failure as a :class:`Finding` with the signed
messages that show it. Only then does the caller (the session) report the message as
received. Nothing is dropped: a message with a bad signature is not evidence against the
operator (anyone could have made it) but is still recorded, as a finding.

Which checks are offences is not decided here: :mod:`cancelnote.dispute.rules` is the
one statement of the court's rules, and a finding carries the :class:`Offence` it proves,
or ``None`` for a check the court has no rule for (a gap in the fills, a note for a
request we never sent, a pending window longer than the client's policy): those are
recorded, never disputed. Every proof carries the order, so only messages about an order
this store holds can be proven; others are recorded as ``UNKNOWN_ORDER``.

The verifier never reads a clock: callers pass ``now_ms`` (client clock, unix ms).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from cancelnote.dispute import rules
from cancelnote.dispute.court import DEV_PARAMETERS, Offence
from cancelnote.errors import MessageError
from cancelnote.messages import (
    Cancellation,
    CancellationNote,
    Fill,
    nonce_recv_time_ms,
    signature_from_wire,
    signature_to_wire,
)
from cancelnote.transparency import SignedHead

from .evidence import (
    Bundle,
    EvidenceError,
    EvidenceStore,
    Finding,
    SignedFill,
    SignedNote,
    StoredCancel,
    StoredOrder,
)

#: Default time a cancel may go without a note before it is forced on-chain. Well above
#: any honest round trip and settlement delay, well below an order's lifetime.
CANCEL_DEADLINE_MS = 30_000
#: Longest pending window a note may declare before it is flagged (Immutable's 90 s).
MAX_PENDING_WINDOW_MS = 90_000
#: The court's ``maxPendingMs`` when the caller does not say (the dev court's).
COURT_MAX_PENDING_MS = DEV_PARAMETERS["max_pending_ms"]
#: The stream cursor of a sender is kept under this name prefix in the store.
STREAM_CURSOR = "stream:"


class Kind(enum.StrEnum):
    """What a finding says. The first group are court offences; the rest are recorded only."""

    FILL_AFTER_NOTE = "FILL_AFTER_NOTE"
    NOTE_EQUIVOCATION = "NOTE_EQUIVOCATION"
    FILL_EQUIVOCATION = "FILL_EQUIVOCATION"
    FILLS_OUT_OF_ORDER = "FILLS_OUT_OF_ORDER"
    MALFORMED_FILL = "MALFORMED_FILL"
    BAD_FILL = "BAD_FILL"
    FILL_ABOVE_CAP = "FILL_ABOVE_CAP"
    FILL_AFTER_REQUEST = "FILL_AFTER_REQUEST"
    NOTE_OUT_OF_BOUNDS = "NOTE_OUT_OF_BOUNDS"
    UNANSWERED_CANCEL = "UNANSWERED_CANCEL"
    INCONSISTENT_HEADS = "INCONSISTENT_HEADS"
    BACKDATED = "BACKDATED"
    FILL_AFTER_CANCEL = "FILL_AFTER_CANCEL"
    FALSE_MATCH = "FALSE_MATCH"
    MATCH_REUSED = "MATCH_REUSED"
    UNLOGGED_CANCEL = "UNLOGGED_CANCEL"

    BAD_SIGNATURE = "BAD_SIGNATURE"
    MALFORMED_MESSAGE = "MALFORMED_MESSAGE"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    FILL_GAP = "FILL_GAP"
    SEQ_REUSED = "SEQ_REUSED"
    NOTE_UNKNOWN_REQUEST = "NOTE_UNKNOWN_REQUEST"
    NOTE_AFTER_RECV_TIME = "NOTE_AFTER_RECV_TIME"
    PENDING_WINDOW = "PENDING_WINDOW"
    HEAD_CLOCK = "HEAD_CLOCK"
    HEAD_TIME_BACKWARDS = "HEAD_TIME_BACKWARDS"
    UNPROVEN_LEAF = "UNPROVEN_LEAF"
    HEADS_STALLED = "HEADS_STALLED"


#: The kinds the watchtower takes to court (each a court offence, or a forced cancel).
DISPUTABLE = frozenset(
    {
        Kind.FILL_AFTER_NOTE,
        Kind.NOTE_EQUIVOCATION,
        Kind.FILL_EQUIVOCATION,
        Kind.FILLS_OUT_OF_ORDER,
        Kind.MALFORMED_FILL,
        Kind.BAD_FILL,
        Kind.FILL_ABOVE_CAP,
        Kind.FILL_AFTER_REQUEST,
        Kind.NOTE_OUT_OF_BOUNDS,
        Kind.UNANSWERED_CANCEL,
        Kind.INCONSISTENT_HEADS,
        Kind.BACKDATED,
        Kind.FILL_AFTER_CANCEL,
        Kind.FALSE_MATCH,
        Kind.MATCH_REUSED,
        Kind.UNLOGGED_CANCEL,
    }
)
#: The kinds the watchtower answers by forcing the cancel on-chain (not by a proof).
FORCING = frozenset({Kind.UNANSWERED_CANCEL, Kind.UNLOGGED_CANCEL})


#: The operator's head interval ``H`` when the caller does not say (``--heads-ms``).
HEADS_MS = 100
#: How many head intervals a cancel may go unlogged before it is forced on-chain.
CANCEL_HEADS = 10
#: How far a head's time may be from the client's clock on arrival.
HEAD_CLOCK_TOLERANCE_MS = 2_000


@attrs.frozen
class VerifierPolicy:
    """The client's own limits (the protocol leaves them to the client), and the court's
    one parameter a check needs: its ``maxPendingMs`` (read it from the court).

    With journal heads (protocol §21) the first alarm on a cancel is its leaf: a cancel not
    in the operator's log ``cancel_heads × heads_ms`` after it was sent is forced
    (``UNLOGGED_CANCEL``); the note deadline stays as the second alarm.
    """

    cancel_deadline_ms: int = CANCEL_DEADLINE_MS
    max_pending_window_ms: int = MAX_PENDING_WINDOW_MS
    court_max_pending_ms: int = COURT_MAX_PENDING_MS
    heads_ms: int = HEADS_MS
    cancel_heads: int = CANCEL_HEADS
    head_clock_tolerance_ms: int = HEAD_CLOCK_TOLERANCE_MS


DEFAULT_POLICY = VerifierPolicy()


@attrs.frozen
class Received:
    """The outcome of one arrival: the message (``None`` if unusable), and what it showed.

    ``new`` is false for a message already held (a replay after a reconnect): it was
    checked when it first came, so it shows nothing new.
    """

    message: Fill | CancellationNote | None
    new: bool
    findings: tuple[Finding, ...]


def _key(*messages: Fill | CancellationNote) -> str:
    return ",".join(sorted("0x" + m.struct_hash().hex() for m in messages))


def _order_wire(stored: StoredOrder) -> dict[str, Any]:
    return {"order": stored.order.to_wire(), "signature": signature_to_wire(stored.signature)}


def _cancel_wire(stored: StoredCancel) -> dict[str, Any]:
    return {
        "kind": type(stored.request).__name__,
        "tx": stored.request.to_wire(),
        "signature": signature_to_wire(stored.signature),
        "sent_at_ms": stored.sent_at_ms,
    }


class Verifier:
    """Checks what the operator sends against the evidence in ``store`` and keeps both."""

    def __init__(self, store: EvidenceStore, policy: VerifierPolicy = DEFAULT_POLICY) -> None:
        self.store = store
        self.policy = policy

    # --- arrivals -----------------------------------------------------------------------

    def receive_wire(
        self, obj: Mapping[str, Any], now_ms: int, *, stream: bool = False
    ) -> Received:
        """A ``{"fill"|"note": {...}, "signature": "0x…"}`` object as the operator sends it.

        ``stream`` marks an item of the subscription: its seq then advances the sender's
        resume cursor (:meth:`resume_after`), after the item is durable.
        """
        kind = "fill" if "fill" in obj else "note"
        try:
            if set(obj) != {kind, "signature"}:
                raise MessageError(f"expected exactly {kind!r} and 'signature', got {sorted(obj)}")
            signature = signature_from_wire(obj["signature"])
            if kind == "fill":
                received = self.receive_fill(
                    SignedFill(Fill.from_wire(obj["fill"]), signature, now_ms), now_ms
                )
            else:
                received = self.receive_note(
                    SignedNote(CancellationNote.from_wire(obj["note"]), signature, now_ms), now_ms
                )
        except MessageError as exc:
            finding = self.record(
                Kind.BAD_SIGNATURE if exc.code == "INVALID_SIGNATURE" else Kind.MALFORMED_MESSAGE,
                json.dumps(obj, sort_keys=True, default=str)[:512],
                bytes(32),
                None,
                str(exc),
                {"raw": dict(obj)},
                now_ms,
            )
            return Received(None, True, tuple(f for f in (finding,) if f is not None))
        if stream and received.message is not None:
            message = received.message
            self.store.set_cursor(STREAM_CURSOR + "0x" + message.sender.hex(), message.seq)
        return received

    def resume_after(self, sender: bytes) -> int:
        """The highest seq of ``sender``'s stream held: resume the subscription after it."""
        return self.store.cursor(STREAM_CURSOR + "0x" + sender.hex())

    def receive_fill(self, signed: SignedFill, now_ms: int) -> Received:
        """Check, keep and judge one fill (see the module docstring)."""
        fill = signed.fill
        with self.store.transaction():
            forged = self._forgery(fill, signed.signature, signed.to_wire(), now_ms)
            if forged is not None:
                return Received(None, True, forged)
            if not self.store.add_fill(signed):
                return Received(fill, False, ())
            found = self._judge_fill(signed, now_ms)
        return Received(fill, True, tuple(found))

    def receive_note(self, signed: SignedNote, now_ms: int) -> Received:
        """Check, keep and judge one note (see the module docstring)."""
        note = signed.note
        with self.store.transaction():
            forged = self._forgery(note, signed.signature, signed.to_wire(), now_ms)
            if forged is not None:
                return Received(None, True, forged)
            if not self.store.add_note(signed):
                return Received(note, False, ())
            found = self._judge_note(signed, now_ms)
        return Received(note, True, tuple(found))

    def import_bundle(self, bundle: Bundle, now_ms: int) -> list[Finding]:
        """Take in a verified bundle (:func:`~.evidence.parse_bundle`) as if it had arrived.

        Orders and cancels first, then fills and notes in seq order, so every check sees
        the evidence it needs; returns what the new messages showed.

        Raises:
            EvidenceError: the bundle is for another court or operator than this store.
        """
        if bundle.domain != self.store.domain or bundle.operator != self.store.operator:
            raise EvidenceError("the bundle is for another court or operator than this store")
        found: list[Finding] = []
        with self.store.transaction():
            for order in bundle.orders:
                self.store.add_order(order.order, order.signature, order.placed_at_ms)
            for cancel in bundle.cancels:
                self.store.add_cancel(cancel.request, cancel.signature, cancel.sent_at_ms)
            arrivals: list[SignedFill | SignedNote] = [*bundle.fills, *bundle.notes]
            arrivals.sort(key=lambda s: s.fill.seq if isinstance(s, SignedFill) else s.note.seq)
            for item in arrivals:
                if isinstance(item, SignedFill):
                    found += self.receive_fill(item, now_ms).findings
                else:
                    found += self.receive_note(item, now_ms).findings
        return found

    # --- time and the court ---------------------------------------------------------------

    def check_deadlines(self, now_ms: int) -> list[Finding]:
        """A finding ``UNANSWERED_CANCEL`` for each order a cancel named that has no note
        ``cancel_deadline_ms`` after the cancel was sent, while it is live and not fully
        filled by the fills held (a fully filled order gets ``FILLED`` and no note)."""
        found = []
        due = now_ms - self.policy.cancel_deadline_ms
        for cancel in self.store.cancels(unsettled=True):
            if cancel.sent_at_ms <= due:
                with self.store.transaction():  # judged once, at its deadline
                    self.store.mark_settled(cancel.request_hash)
                    found += self._judge_deadline(cancel, now_ms)
        return found

    def _judge_deadline(self, cancel: StoredCancel, now_ms: int) -> list[Finding]:
        """The orders ``cancel`` named that are still live, unfilled and without a note."""
        found = []
        for stored in self._targets(cancel):
            if stored.order.expiration * 1000 <= now_ms or self.store.notes(stored.digest):
                continue
            fills = self.store.fills(stored.digest)
            filled = max((f.fill.filled_total for f in fills), default=0)
            if filled >= abs(stored.order.amount):
                continue
            evidence: dict[str, Any] = {
                "order": _order_wire(stored),
                "cancel": _cancel_wire(cancel),
                "fills": [f.to_wire() for f in fills[-1:]],  # the latest receipt
            }
            finding = self.record(
                Kind.UNANSWERED_CANCEL,
                "0x" + stored.digest.hex(),
                stored.digest,
                None,
                f"no note {now_ms - cancel.sent_at_ms} ms after the cancel was sent",
                evidence,
                now_ms,
            )
            if finding is not None:
                found.append(finding)
        return found

    def check_cap(self, digest: bytes, now_ms: int) -> list[Finding]:
        """Judge the fills held against what a forced cancel of ``digest`` recorded in
        court: its answered cap, and its request time (after which fills are late)."""
        stored = self.store.order(digest)
        if stored is None:
            return []
        candidates: list[Finding | None] = []
        record = self._recorder(now_ms, candidates)
        for signed in self.store.fills(digest):
            self._judge_forced(signed, stored, record)
        return [f for f in candidates if f is not None]

    # --- the checks ---------------------------------------------------------------------

    def _targets(self, cancel: StoredCancel) -> list[StoredOrder]:
        """The orders held that ``cancel`` names (by digest, or by sender and product)."""
        request = cancel.request
        if isinstance(request, Cancellation):
            named = [o for d in request.digests if (o := self.store.order(d)) is not None]
        else:
            named = [
                o
                for o in self.store.orders()
                if o.order.sender == request.sender
                and (not request.product_ids or o.order.product_id in request.product_ids)
                and o.local_seq < cancel.local_seq  # placed before the cancel was sent
            ]
        return [o for o in named if not o.rejected]

    def _forgery(
        self, message: Fill | CancellationNote, signature: bytes, wire: dict[str, Any], now_ms: int
    ) -> tuple[Finding, ...] | None:
        """``None`` if the operator signed ``message``; else the new findings saying so.

        A message the operator did not sign is nobody's word: it is recorded as a
        finding, never stored as evidence.
        """
        try:
            message.verify(signature, self.store.domain, self.store.operator)
        except MessageError as exc:
            finding = self.record(
                Kind.BAD_SIGNATURE,
                _key(message) + "/" + signature.hex(),
                message.order_digest,
                None,
                str(exc),
                {"raw": wire},
                now_ms,
            )
            return () if finding is None else (finding,)
        return None

    def _judge_fill(self, signed: SignedFill, now_ms: int) -> list[Finding]:
        fill = signed.fill
        digest = fill.order_digest
        candidates: list[Finding | None] = []
        record = self._recorder(now_ms, candidates)
        stored = self.store.order(digest)
        if stored is None:
            record(
                Kind.UNKNOWN_ORDER, None, "a fill of an order this store does not hold", [signed]
            )
            return [f for f in candidates if f is not None]
        order = stored.order
        if rules.malformed_fill(order, digest, fill):
            record(
                Kind.MALFORMED_FILL,
                Offence.MALFORMED_FILL,
                f"amount {fill.amount}, filledTotal {fill.filled_total}, sender"
                f" 0x{fill.sender.hex()} of an order of 0x{order.sender.hex()}",
                [signed],
                order=stored,
            )
        if rules.bad_fill(order, digest, fill):
            record(
                Kind.BAD_FILL,
                Offence.BAD_FILL,
                f"price {fill.price_x18} or total {fill.filled_total} breaks the order",
                [signed],
                order=stored,
            )
        for other in self.store.fills_with_seq(fill.seq):
            if not rules.fill_contradiction(digest, fill, other.fill):
                continue
            # One claim per order: each held order of the pair is its owner's to prove.
            pairs = [(signed, other)]
            if other.fill.order_digest != digest:
                pairs.append((other, signed))
            for first, second in pairs:
                owner = self.store.order(first.fill.order_digest)
                if owner is not None:
                    record(
                        Kind.FILL_EQUIVOCATION,
                        Offence.FILL_EQUIVOCATION,
                        f"two different fills with seq {fill.seq}",
                        [first, second],
                        order=owner,
                    )
        if self.store.notes_with_seq(fill.seq):
            record(Kind.SEQ_REUSED, None, f"a note and a fill share seq {fill.seq}", [signed])
        held = [f for f in self.store.fills(digest) if f.fill.seq != fill.seq]
        for other in held:
            first, second = (other, signed) if other.fill.seq < fill.seq else (signed, other)
            found = rules.fill_contradiction(digest, first.fill, second.fill)
            if found is Offence.FILLS_OUT_OF_ORDER:
                record(
                    Kind.FILLS_OUT_OF_ORDER,
                    Offence.FILLS_OUT_OF_ORDER,
                    f"filledTotal does not grow by amount from seq {first.fill.seq}"
                    f" to {second.fill.seq}",
                    [first, second],
                    order=stored,
                )
        before = [f for f in held if f.fill.seq < fill.seq]
        previous_total = before[-1].fill.filled_total if before else 0
        if fill.filled_total > previous_total + fill.amount and fill.amount:
            record(  # (less than that is FILLS_OUT_OF_ORDER, above; a zero amount malformed)
                Kind.FILL_GAP,
                None,
                f"filledTotal {fill.filled_total} > {previous_total} held + amount {fill.amount}:"
                " fills are missing (fetch them)",
                [*before[-1:], signed],
            )
        for note in self.store.notes(digest):
            self._judge_pair(note, signed, stored, record)
        self._judge_forced(signed, stored, record)
        head = self.store.latest_head_not_after(fill.seq)
        if head is not None:
            self.judge_backdated(signed, stored, head.signed, record)
        return [f for f in candidates if f is not None]

    @staticmethod
    def judge_backdated(
        signed: SignedFill, stored: StoredOrder, head: SignedHead, record: Any
    ) -> None:
        """A fill numbered at or after a head's size but stamped before its time."""
        fill = signed.fill
        if rules.backdated(stored.digest, fill, head.head):
            record(
                Kind.BACKDATED,
                Offence.BACKDATED,
                f"fill seq {fill.seq} stamped {fill.timestamp_ms}, before the head of"
                f" {head.head.size} leaves signed at {head.head.timestamp_ms}",
                [signed],
                order=stored,
                extra={"heads": [head.to_wire()]},
            )

    def recorder(self, now_ms: int, into: list[Finding | None]) -> Any:
        """:meth:`_recorder` for the journal-heads checks (:mod:`.heads`)."""
        return self._recorder(now_ms, into)

    def _judge_note(self, signed: SignedNote, now_ms: int) -> list[Finding]:
        note = signed.note
        digest = note.order_digest
        candidates: list[Finding | None] = []
        record = self._recorder(now_ms, candidates)
        stored = self.store.order(digest)
        if stored is None:
            record(
                Kind.UNKNOWN_ORDER, None, "a note for an order this store does not hold", [signed]
            )
            return [f for f in candidates if f is not None]
        fault = rules.note_fault(stored.order, note, self.policy.court_max_pending_ms)
        if fault is not None:
            record(
                Kind.NOTE_OUT_OF_BOUNDS,
                Offence.NOTE_OUT_OF_BOUNDS,
                fault.removeprefix("court: "),
                [signed],
                order=stored,
            )
        if note.request_hash != bytes(32):
            self._judge_request(signed, stored, record)
        if note.pending_amount == 0 and note.pending_until_ms != 0:
            record(Kind.PENDING_WINDOW, None, "pendingUntilMs set with nothing pending", [signed])
        window = note.pending_until_ms - note.received_at_ms
        if note.pending_amount and window > self.policy.max_pending_window_ms:
            record(
                Kind.PENDING_WINDOW,
                None,
                f"a pending window of {window} ms exceeds {self.policy.max_pending_window_ms}",
                [signed],
            )
        if self.store.fills_with_seq(note.seq):
            record(Kind.SEQ_REUSED, None, f"a note and a fill share seq {note.seq}", [signed])
        for other in self.store.notes(digest):
            if rules.note_equivocation(digest, other.note, note):
                record(
                    Kind.NOTE_EQUIVOCATION,
                    Offence.NOTE_EQUIVOCATION,
                    f"two different notes for one order (seq {other.note.seq} and {note.seq})",
                    [other, signed],
                    order=stored,
                )
        for fill in self.store.fills(digest):
            self._judge_pair(signed, fill, stored, record)
        return [f for f in candidates if f is not None]

    def _judge_request(self, signed: SignedNote, stored: StoredOrder | None, record: Any) -> None:
        """The note answers a request we sent, naming this order, before its recv_time."""
        note = signed.note
        cancel = self.store.cancel(note.request_hash)
        if cancel is None or (stored is not None and stored not in self._targets(cancel)):
            record(
                Kind.NOTE_UNKNOWN_REQUEST,
                None,
                f"requestHash 0x{note.request_hash.hex()} is no request of ours naming the order",
                [signed],
            )
            return
        recv_time = nonce_recv_time_ms(cancel.request.nonce)
        if note.received_at_ms >= recv_time:
            record(
                Kind.NOTE_AFTER_RECV_TIME,
                None,
                f"receivedAtMs {note.received_at_ms} is not before the request's recv_time"
                f" {recv_time}",
                [signed],
                cancel=cancel,
            )

    @staticmethod
    def _judge_pair(note: SignedNote, fill: SignedFill, stored: StoredOrder, record: Any) -> None:
        if rules.fill_after_note(stored.digest, note.note, fill.fill):
            clauses = rules.rule1(fill.fill, note.note)
            record(
                Kind.FILL_AFTER_NOTE,
                Offence.FILL_AFTER_NOTE,
                f"fill seq {fill.fill.seq} breaks note seq {note.note.seq} (rule 1 {clauses})",
                [note, fill],
                order=stored,
            )

    def _judge_forced(self, signed: SignedFill, stored: StoredOrder, record: Any) -> None:
        """A fill against what a forced cancel of its order recorded in court."""
        fill, digest = signed.fill, stored.digest
        cap = self.store.court_cap(digest)
        if rules.fill_above_cap(fill, cap):
            record(
                Kind.FILL_ABOVE_CAP,
                Offence.FILL_AFTER_NOTE,
                f"filledTotal {fill.filled_total} above the court's cap {cap}",
                [signed],
                order=stored,
            )
        requested_at = self.store.court_requested_at(digest)
        if rules.fill_after_request(fill, requested_at, self.policy.court_max_pending_ms):
            record(
                Kind.FILL_AFTER_REQUEST,
                Offence.FILL_AFTER_NOTE,
                f"stamped {fill.timestamp_ms}, after the forced cancel of {requested_at} s took"
                f" effect (and {self.policy.court_max_pending_ms} ms in flight)",
                [signed],
                order=stored,
            )

    # --- recording ----------------------------------------------------------------------

    def _recorder(self, now_ms: int, into: list[Finding | None]) -> Any:
        """A ``record(kind, offence, detail, messages, order=, cancel=)`` appending to ``into``."""

        def record(
            kind: Kind,
            offence: Offence | None,
            detail: str,
            messages: Iterable[SignedFill | SignedNote],
            *,
            order: StoredOrder | None = None,
            cancel: StoredCancel | None = None,
            extra: Mapping[str, Any] | None = None,
        ) -> None:
            messages = list(messages)
            evidence: dict[str, Any] = {
                "fills": [m.to_wire() for m in messages if isinstance(m, SignedFill)],
                "notes": [m.to_wire() for m in messages if isinstance(m, SignedNote)],
                **(extra or {}),
            }
            if order is not None:
                evidence["order"] = _order_wire(order)
            if cancel is not None:
                evidence["cancel"] = _cancel_wire(cancel)
            plain = [m.fill if isinstance(m, SignedFill) else m.note for m in messages]
            key = ",".join("0x" + m.struct_hash().hex() for m in plain)  # order matters
            digest = plain[0].order_digest if plain else order.digest if order else bytes(32)
            if extra:  # (the same messages may show another offence against another head)
                key += "/" + json.dumps(extra, sort_keys=True)[:200]
            into.append(self.record(kind, key, digest, offence, detail, evidence, now_ms))

        return record

    def record(
        self,
        kind: Kind,
        key: str,
        digest: bytes,
        offence: Offence | None,
        detail: str,
        evidence: Mapping[str, Any],
        now_ms: int,
    ) -> Finding | None:
        """Keep one finding (``None`` if it was kept before); for the checks no pair of
        fills and notes shows too (:mod:`.heads`: a head, a leaf)."""
        return self.store.add_finding(
            Finding(str(kind), key, digest, offence, detail, evidence, now_ms)
        )
