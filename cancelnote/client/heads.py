"""Following the operator's journal heads: verify, keep, ask for proofs, find offences.

Two halves, as for the watchtower:

* :class:`HeadsVerifier` is the **core** (no I/O, no clock): it takes signed heads (from
  the operator's stream or a peer's bundle) and the operator's answers to proof queries,
  keeps what they prove in the evidence store, and records every failure as a finding
  (:class:`~.verifier.Kind`), with the evidence the court's HeadsCourt takes for the
  offences (protocol §21). :meth:`HeadsVerifier.queries` says what to ask next.
* :class:`HeadsFollower` is the **runner**: its own WebSocket connection to the operator,
  subscribed to heads; at each head it sends the core's queries and hands the answers
  back. A third-party watchtower runs one on a store filled from its clients' bundles.

What the core checks, and what each failure is:

=============================== ==========================================================
check                           failure
=============================== ==========================================================
head signed by the operator     ``BAD_SIGNATURE`` (nobody's word; recorded)
one root per size               ``INCONSISTENT_HEADS`` (two signed heads: provable)
the log grows consistently      ``INCONSISTENT_HEADS`` when the operator's own consistency
                                proof shows it (provable), else ``UNPROVEN_LEAF`` (recorded)
head time near the client's     ``HEAD_CLOCK`` (recorded: heads are the operator's clock)
head times grow with size       ``HEAD_TIME_BACKWARDS`` (recorded)
fills after a head not earlier  ``BACKDATED`` (provable; also checked as each fill arrives)
each own leaf in the log        ``UNPROVEN_LEAF`` when a proof is missing, wrong or refused
a fill names its own match      ``FALSE_MATCH`` / ``MATCH_REUSED`` (provable)
no match after a cancel's leaf  ``FILL_AFTER_CANCEL`` (provable: offence 1)
a cancel logged within k heads  ``UNLOGGED_CANCEL`` (the cancel is forced on-chain)
=============================== ==========================================================
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, wrap_client_stream

from cancelnote.api import Consistency, Inclusion, Locate, SubscribeHeads, request_to_wire
from cancelnote.crypto import keccak
from cancelnote.dispute import rules
from cancelnote.dispute.court import Offence
from cancelnote.errors import MessageError
from cancelnote.messages import JournalHead, Match
from cancelnote.transparency import (
    LeafKind,
    LeafProof,
    ProofError,
    SignedHead,
    path_from_wire,
    proves_inconsistency,
    verify_consistency,
)

from .evidence import (
    EvidenceStore,
    Finding,
    SignedFill,
    StoredCancel,
    StoredHead,
    StoredLeaf,
    StoredOrder,
)
from .verifier import Kind, Verifier, _cancel_wire, _order_wire

LOGGER = logging.getLogger("cancelnote.client.heads")

#: Most seqs asked for in one ``inclusion`` query (the operator's bound).
INCLUSION_CHUNK = 32
#: Seconds the follower waits before reconnecting.
RECONNECT_S = 0.5
#: Seconds an answer may take.
ANSWER_TIMEOUT_S = 10.0

Query = Consistency | Inclusion | Locate


def _head_key(head: SignedHead) -> str:
    return "0x" + head.head.struct_hash().hex()


class HeadsVerifier:
    """The journal-heads checks of one evidence store (module docstring)."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.store: EvidenceStore = verifier.store
        self.policy = verifier.policy
        self._checked: set[tuple[int, bytes]] = set()  # peers' heads whose consistency was asked
        self._reprove: set[int] = set()  # seqs an offence needs proven against one head
        self._locating: dict[bytes, bytes] = {}  # content asked for -> order id / request hash

    # --- heads ----------------------------------------------------------------------------

    def receive_head(
        self, signed: SignedHead, now_ms: int, source: str = "operator"
    ) -> list[Finding]:
        """Check a signed head, keep it, and judge it against the heads and fills held."""
        found: list[Finding | None] = []
        try:
            signed.verify(self.store.domain, self.store.operator)
        except MessageError as exc:
            found.append(
                self.verifier.record(
                    Kind.BAD_SIGNATURE,
                    _head_key(signed) + "/" + signed.signature.hex(),
                    bytes(32),
                    None,
                    str(exc),
                    {"heads": [signed.to_wire()]},
                    now_ms,
                )
            )
            return [f for f in found if f is not None]
        head = signed.head
        with self.store.transaction():
            for other in self.store.heads_of_size(head.size):
                if other.head.root != head.root:
                    found.append(self._fork(other.signed, signed, [], now_ms))
            if not self.store.add_head(signed, now_ms, source):
                return [f for f in found if f is not None]
            if (
                source == "operator"
                and abs(head.timestamp_ms - now_ms) > self.policy.head_clock_tolerance_ms
            ):
                found.append(
                    self.verifier.record(
                        Kind.HEAD_CLOCK,
                        _head_key(signed),
                        bytes(32),
                        None,
                        f"a head stamped {head.timestamp_ms} arrived at {now_ms}",
                        {"heads": [signed.to_wire()]},
                        now_ms,
                    )
                )
            for other in self.store.neighbour_heads(head.size):
                earlier, later = sorted((other.head, head), key=lambda h: h.size)
                if earlier.size < later.size and earlier.timestamp_ms > later.timestamp_ms:
                    found.append(
                        self.verifier.record(
                            Kind.HEAD_TIME_BACKWARDS,
                            _head_key(other.signed) + "," + _head_key(signed),
                            bytes(32),
                            None,
                            f"a head of {later.size} leaves is older than one of {earlier.size}",
                            {"heads": [other.signed.to_wire(), signed.to_wire()]},
                            now_ms,
                        )
                    )
            found += self._backdated_fills(signed, now_ms)
        return [f for f in found if f is not None]

    def _backdated_fills(self, signed: SignedHead, now_ms: int) -> list[Finding | None]:
        found: list[Finding | None] = []
        record = self.verifier.recorder(now_ms, found)
        for fill in self.store.fills_from_seq(signed.head.size):
            stored = self.store.order(fill.fill.order_digest)
            if stored is not None:
                self.verifier.judge_backdated(fill, stored, signed, record)
        return found

    def _fork(
        self, first: SignedHead, second: SignedHead, proof: list[bytes], now_ms: int
    ) -> Finding | None:
        """Two heads that are not one log; the claim is for the owner of an order held (with
        none, the finding is recorded: there is nobody to file the claim for)."""
        orders = self.store.orders()
        evidence: dict[str, Any] = {
            "heads": [first.to_wire(), second.to_wire()],
            "proof": ["0x" + node.hex() for node in proof],
        }
        if orders:
            evidence["order"] = _order_wire(orders[0])
        return self.verifier.record(
            Kind.INCONSISTENT_HEADS,
            _head_key(first) + "," + _head_key(second),
            bytes(32) if not orders else orders[0].digest,
            Offence.INCONSISTENT_HEADS if orders else None,
            f"heads of {first.head.size} and {second.head.size} leaves are not one log",
            evidence,
            now_ms,
        )

    # --- what to ask ----------------------------------------------------------------------

    def queries(self, signed: SignedHead, previous: SignedHead | None = None) -> list[Query]:
        """What to ask the operator about ``signed`` (a head of its stream): its consistency
        with ``previous`` (the head before it) and with every peer's head not yet checked,
        where the store's orders and cancels are, and the leaves of its messages (and of
        their fills' matches) it covers not yet proven against it."""
        head = signed.head
        asked: list[Query] = []
        others = [] if previous is None else [previous]
        others += [h.signed for h in self.store.peer_heads()]
        for other in others:
            pair = (other.head.size, other.head.root)
            if pair in self._checked or other.head.size == head.size:
                continue
            if other is not previous:
                self._checked.add(pair)
            first, second = sorted((other.head.size, head.size))
            asked.append(Consistency(first, second))
        orders, cancels = self.store.unlocated()
        keyed = [(o.digest, o.order.struct_hash()) for o in orders]
        keyed += [(c.request_hash, c.request.struct_hash()) for c in cancels]
        for key, content in keyed:
            self._locating[content] = key
            asked.append(Locate(content))
        seqs = set(self.store.unproven(head.size))
        seqs |= {s for s in self._reprove if s < head.size and self._proven_elsewhere(s, head.size)}
        ordered = sorted(seqs)
        for start in range(0, len(ordered), INCLUSION_CHUNK):
            asked.append(Inclusion(head.size, tuple(ordered[start : start + INCLUSION_CHUNK])))
        return asked

    def _proven_elsewhere(self, seq: int, size: int) -> bool:
        leaf = self.store.leaf(seq)
        return leaf is not None and leaf.size != size

    # --- answers ----------------------------------------------------------------------------

    def take(
        self, signed: SignedHead, query: Query, answer: dict[str, Any], now_ms: int
    ) -> list[Finding]:
        """The operator's answer to one of :meth:`queries` (its whole reply envelope)."""
        found: list[Finding | None] = []
        with self.store.transaction():
            if answer.get("status") != "success":
                found.append(self._unproven_finding(query, answer, now_ms))
            elif isinstance(query, Locate):
                self._take_locate(query, answer["data"], now_ms, found)
            elif isinstance(query, Consistency):
                found.append(self._take_consistency(query, answer["data"], now_ms))
            else:
                self._take_inclusion(signed, query, answer["data"], now_ms, found)
        return [f for f in found if f is not None]

    def _unproven_finding(self, query: Query, answer: Any, now_ms: int) -> Finding | None:
        """The operator refused a proof, or gave one that does not verify (recorded: a
        refusal is not provable)."""
        asked = request_to_wire(query)
        kept = answer if isinstance(answer, dict) else repr(answer)
        said = json.dumps(kept, sort_keys=True, default=str)
        detail = f"the operator answered {query.KEY} {asked[query.KEY]} with"
        detail += f" {answer.get('error_code', 'a proof that does not verify')}"
        key = json.dumps(asked, sort_keys=True) + "/" + keccak(said.encode()).hex()[:16]
        return self.verifier.record(
            Kind.UNPROVEN_LEAF, key, bytes(32), None, detail, {"answer": kept}, now_ms
        )

    def _take_locate(self, query: Locate, data: Any, now_ms: int, found: list) -> None:
        try:
            seq = int(data["seq"])
        except (KeyError, TypeError, ValueError):
            found.append(self._unproven_finding(query, {"data": data}, now_ms))
            return
        key = self._locating.pop(query.content, None)
        if key is not None:
            self.store.set_located(key, seq)

    def _take_consistency(self, query: Consistency, data: Any, now_ms: int) -> Finding | None:
        try:
            path = path_from_wire("path", data["path"])
        except (KeyError, TypeError, MessageError):
            return self._unproven_finding(query, {"data": data}, now_ms)
        firsts = self.store.heads_of_size(query.first)
        seconds = self.store.heads_of_size(query.second)
        for first in firsts:
            for second in seconds:
                a, b = first.head, second.head
                if proves_inconsistency(a.size, a.root, b.size, b.root, path):
                    return self._fork(first.signed, second.signed, path, now_ms)
                try:
                    verify_consistency(a.size, b.size, a.root, b.root, path)
                except ProofError:
                    return self._unproven_finding(query, {"data": data}, now_ms)
        return None

    def _take_inclusion(
        self, signed: SignedHead, query: Inclusion, data: Any, now_ms: int, found: list
    ) -> None:
        head = self.store.head_of_size(query.size)
        try:
            items = list(data["proofs"])
            proofs = [
                LeafProof.from_wire({k: v for k, v in i.items() if k != "match"}) for i in items
            ]
            matches = [Match.from_wire(i["match"]) if "match" in i else None for i in items]
        except (KeyError, TypeError, AttributeError, MessageError):
            found.append(self._unproven_finding(query, {"data": data}, now_ms))
            return
        if head is None or sorted(p.index for p in proofs) != sorted(query.seqs):
            found.append(self._unproven_finding(query, {"data": data}, now_ms))
            return
        for proof, match in zip(proofs, matches, strict=True):
            try:
                proof.verify(head.head.size, head.head.root)
                if match is not None and (
                    proof.leaf.kind != LeafKind.MATCH or match.struct_hash() != proof.leaf.content
                ):
                    raise ProofError("the match is not the leaf's")
            except ProofError:
                found.append(self._unproven_finding(query, {"data": data}, now_ms))
                continue
            self.store.add_leaf(StoredLeaf(proof, head.head.size, match))
        self._judge_leaves(head, set(query.seqs), now_ms, found)

    # --- offences from leaves -------------------------------------------------------------

    def _touched(self, seqs: set[int]) -> list[SignedFill]:
        """The fills whose judgement leaves numbered ``seqs`` may change: of orders whose
        leaf, cancel's leaf, fills' leaves or matches' leaves are among them."""
        fill_seqs = seqs | set(self.store.fill_leaves_naming(seqs))
        digests = {f.fill.order_digest for s in fill_seqs for f in self.store.fills_with_seq(s)}
        for key in self.store.located_at(seqs):
            cancel = self.store.cancel(key)
            if cancel is None:
                digests.add(key)
            else:
                digests |= {o.digest for o in self.verifier._targets(cancel)}
        return [f for d in sorted(digests) for f in self.store.fills(d)]

    def _judge_leaves(self, head: StoredHead, seqs: set[int], now_ms: int, found: list) -> None:
        """The fills the new leaves concern: each against the match its leaf names, and
        each order against its cancels."""
        record = self.verifier.recorder(now_ms, found)
        fills_by_order: dict[bytes, list[tuple[SignedFill, StoredLeaf]]] = {}
        for signed in self._touched(seqs):
            fill_leaf = self.store.leaf(signed.fill.seq)
            stored = self.store.order(signed.fill.order_digest)
            if fill_leaf is None or stored is None:
                continue
            if not rules.is_fill_leaf(fill_leaf.proof, signed.fill, self._head_of(fill_leaf)):
                found.append(
                    self.verifier.record(
                        Kind.UNPROVEN_LEAF,
                        f"fill-leaf/{signed.fill.seq}",
                        stored.digest,
                        None,
                        f"leaf {signed.fill.seq} of the log is not the fill numbered so",
                        {"fills": [signed.to_wire()], "leaf": fill_leaf.proof.to_wire()},
                        now_ms,
                    )
                )
                continue
            fills_by_order.setdefault(stored.digest, []).append((signed, fill_leaf))
            named = self.store.leaf(fill_leaf.proof.leaf.ref)
            if fill_leaf.proof.leaf.ref >= signed.fill.seq or named is not None:
                self._judge_named(signed, stored, fill_leaf, named, record)
        for digest, fills in fills_by_order.items():
            stored = self.store.order(digest)
            assert stored is not None
            self._judge_reuse(stored, fills, record)
            self._judge_cancels(stored, fills, head, now_ms, found)

    def _head_of(self, leaf: StoredLeaf) -> Any:
        stored = self.store.head_of_size(leaf.size)
        assert stored is not None  # (a leaf is kept only with its head)
        return stored.head

    def _judge_named(
        self,
        signed: SignedFill,
        stored: StoredOrder,
        fill_leaf: StoredLeaf,
        named: StoredLeaf | None,
        record: Any,
    ) -> None:
        head = self._head_of(fill_leaf)
        named_proof = None
        if named is not None and named.size == head.size:
            named_proof = named.proof
        elif named is not None:  # proven against another head: both again, against one
            self._reprove |= {fill_leaf.proof.index, named.proof.index}
        offence = rules.false_match(
            stored.digest,
            signed.fill,
            head,
            fill_leaf.proof,
            named_proof,
            None if named is None else named.match,
        )
        if offence is not None:
            record(
                Kind.FALSE_MATCH,
                offence,
                f"fill seq {signed.fill.seq} names leaf {fill_leaf.proof.leaf.ref}, not its match",
                [signed],
                order=stored,
                extra=self._proofs(
                    head, fill=fill_leaf, named=named_proof, match=named and named.match
                ),
            )

    def _judge_reuse(
        self, stored: StoredOrder, fills: list[tuple[SignedFill, StoredLeaf]], record: Any
    ) -> None:
        for i, (first, first_leaf) in enumerate(fills):
            for second, second_leaf in fills[i + 1 :]:
                if first_leaf.proof.leaf.ref != second_leaf.proof.leaf.ref:
                    continue
                if first_leaf.size != second_leaf.size:
                    self._reprove |= {first.fill.seq, second.fill.seq}
                    continue
                head = self._head_of(first_leaf)
                if rules.match_reused(
                    stored.digest,
                    first.fill,
                    second.fill,
                    head,
                    first_leaf.proof,
                    second_leaf.proof,
                ):
                    record(
                        Kind.MATCH_REUSED,
                        Offence.FALSE_MATCH,
                        f"fills seq {first.fill.seq} and {second.fill.seq} name one match",
                        [first, second],
                        order=stored,
                        extra=self._proofs(head, leaf1=first_leaf.proof, leaf2=second_leaf.proof),
                    )

    def _judge_cancels(
        self,
        stored: StoredOrder,
        fills: list[tuple[SignedFill, StoredLeaf]],
        head: StoredHead,
        now_ms: int,
        found: list,
    ) -> None:
        """A fill whose match came after a cancel of the order that came after the order."""
        order_seq = self.store.located(stored.digest)
        if order_seq is None:
            return
        for cancel in self.store.cancels():
            cancel_seq = self.store.located(cancel.request_hash)
            if cancel_seq is None or not rules.cancel_names(
                cancel.request, stored.order, stored.digest
            ):
                continue
            for signed, fill_leaf in fills:
                match_seq = fill_leaf.proof.leaf.ref
                match_leaf = self.store.leaf(match_seq)
                if (
                    not order_seq < cancel_seq < match_seq
                    or match_leaf is None
                    or match_leaf.match is None
                ):
                    continue
                leaves = [self.store.leaf(order_seq), self.store.leaf(cancel_seq), match_leaf]
                if any(leaf is None or leaf.size != match_leaf.size for leaf in leaves):
                    self._reprove |= {order_seq, cancel_seq, match_seq}  # against one head
                    continue
                leaf_head = self._head_of(match_leaf)
                proofs = [leaf.proof for leaf in leaves if leaf is not None]
                offence = rules.match_after_cancel(
                    stored.order,
                    stored.digest,
                    cancel.request,
                    match_leaf.match,
                    leaf_head,
                    *proofs,
                )
                if offence is None:
                    continue
                found.append(
                    self._fill_after_cancel(
                        stored, cancel, signed, match_leaf.match, leaf_head, proofs, now_ms
                    )
                )

    def _fill_after_cancel(
        self,
        stored: StoredOrder,
        cancel: StoredCancel,
        signed: SignedFill,
        match: Match,
        head: JournalHead,
        proofs: list[LeafProof],
        now_ms: int,
    ) -> Finding | None:
        evidence = {
            "order": _order_wire(stored),
            "cancel": _cancel_wire(cancel),
            "fills": [signed.to_wire()],
            "notes": [],
            **self._proofs(
                head, order_leaf=proofs[0], cancel_leaf=proofs[1], match_leaf=proofs[2], match=match
            ),
        }
        return self.verifier.record(
            Kind.FILL_AFTER_CANCEL,
            f"{proofs[0].index},{proofs[1].index},{proofs[2].index}",
            stored.digest,
            Offence.FILL_AFTER_NOTE,
            f"the order (leaf {proofs[0].index}) matched at leaf {proofs[2].index}, after its"
            f" cancel at leaf {proofs[1].index}",
            evidence,
            now_ms,
        )

    def _proofs(
        self, head: Any, match: Match | None = None, **leaves: LeafProof | StoredLeaf | None
    ) -> dict[str, Any]:
        """The head (with its signature) and the leaves, as a finding's evidence keeps them."""
        signed = self.store.head_of_size(head.size)
        assert signed is not None
        out: dict[str, Any] = {"head": signed.signed.to_wire()}
        for name, leaf in leaves.items():
            proof = leaf.proof if isinstance(leaf, StoredLeaf) else leaf
            if proof is not None:
                out[name] = proof.to_wire()
        if match is not None:
            out["match"] = match.to_wire()
        return out

    # --- time -------------------------------------------------------------------------------

    def check_alarms(self, now_ms: int) -> list[Finding]:
        """``UNLOGGED_CANCEL`` for each cancel not in the log ``cancel_heads`` head
        intervals after it was sent, while an order it names is live and not fully filled
        (the first alarm: the note deadline comes later); ``HEADS_STALLED`` when no head
        came for as long."""
        found: list[Finding | None] = []
        wait_ms = self.policy.cancel_heads * self.policy.heads_ms
        for cancel in self.store.cancels(unsettled=True):
            if cancel.sent_at_ms > now_ms - wait_ms:
                continue
            if self.store.located(cancel.request_hash) is not None:
                continue
            for stored in self.verifier._targets(cancel):
                if stored.order.expiration * 1000 <= now_ms or self.store.notes(stored.digest):
                    continue
                filled = max(
                    (f.fill.filled_total for f in self.store.fills(stored.digest)), default=0
                )
                if filled >= abs(stored.order.amount):
                    continue
                found.append(
                    self.verifier.record(
                        Kind.UNLOGGED_CANCEL,
                        "0x" + stored.digest.hex(),
                        stored.digest,
                        None,
                        f"the cancel sent at {cancel.sent_at_ms} is not in the log"
                        f" {now_ms - cancel.sent_at_ms} ms later",
                        {"order": _order_wire(stored), "cancel": _cancel_wire(cancel), "fills": []},
                        now_ms,
                    )
                )
        latest = self.store.latest_head()
        if latest is not None and self.store.heads_received_since(now_ms - wait_ms) == 0:
            found.append(
                self.verifier.record(
                    Kind.HEADS_STALLED,
                    f"stalled/{latest.head.size}/{latest.head.timestamp_ms}",
                    bytes(32),
                    None,
                    f"no head for {wait_ms} ms",
                    {"heads": [latest.signed.to_wire()]},
                    now_ms,
                )
            )
        return [f for f in found if f is not None]

    def import_heads(self, heads: Iterable[SignedHead], now_ms: int) -> list[Finding]:
        """Heads from a peer (a bundle): kept and checked as the operator's are; their
        consistency with ours is asked at the next head."""
        found: list[Finding] = []
        for signed in heads:
            found += self.receive_head(signed, now_ms, source="bundle")
        return found


class HeadsFollower:
    """Follows the operator's heads over its own WebSocket connection (module docstring).

    Args:
        url: the operator's WebSocket URL.
        heads: the core, on the store of this client (or watchtower).
        clock: unix ms.
    """

    def __init__(self, url: str, heads: HeadsVerifier, clock: Callable[[], int]) -> None:
        self.url = url
        self.heads = heads
        self.clock = clock
        self.seen = 0  # heads handled
        self.findings: list[Finding] = []
        self._previous: SignedHead | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected and subscribed until cancelled; reconnect after any drop."""
        started = False
        while True:
            try:
                await self._follow(None if started else task_status)
            except (ConnectionClosed, HandshakeError, OSError, trio.TooSlowError) as exc:
                LOGGER.info("heads_disconnected", extra={"fields": {"error": repr(exc)}})
            started = True
            await trio.sleep(RECONNECT_S)

    async def _follow(self, task_status: trio.TaskStatus[None] | None) -> None:
        url = urllib.parse.urlsplit(self.url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        stream = await trio.open_tcp_stream(host, port)
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, host, url.path or "/")
            ids = iter(range(1, 2**62))

            async def ask(request: Any) -> dict[str, Any]:
                request_id = next(ids)
                await ws.send_message(json.dumps({**request_to_wire(request), "id": request_id}))
                with trio.fail_after(ANSWER_TIMEOUT_S):
                    while True:
                        message = json.loads(await ws.get_message())
                        if "status" not in message:
                            pending.append(message)
                        elif message.get("id") == request_id:
                            return message

            pending: list[dict[str, Any]] = []
            answer = await ask(SubscribeHeads())
            if task_status is not None:
                task_status.started()
            if answer.get("status") == "success" and answer["data"].get("head"):
                pending.append(answer["data"]["head"])
            try:
                while True:
                    while pending:
                        await self._head(pending.pop(0), ask)
                    pending.append(json.loads(await ws.get_message()))
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await ws.aclose()
                nursery.cancel_scope.cancel()

    async def _head(self, message: dict[str, Any], ask: Callable[[Any], Any]) -> None:
        now_ms = self.clock()
        try:
            signed = SignedHead.from_wire(message)
        except MessageError:
            return  # not a head (a stray answer): nothing to judge
        self.findings += self.heads.receive_head(signed, now_ms)
        previous, self._previous = self._previous, signed
        for _ in range(4):  # locate; the leaves; the matches their fills name; re-proofs
            queries = self.heads.queries(signed, previous)
            previous = None  # (its consistency is asked once)
            if not queries:
                break
            for query in queries:
                self.findings += self.heads.take(signed, query, await ask(query), self.clock())
        self.findings += self.heads.check_alarms(self.clock())
        self.seen += 1
