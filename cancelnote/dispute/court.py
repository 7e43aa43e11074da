"""The binding of the court contract (``contracts/CancelCourt.vy``) over any :class:`Chain`.

One typed method per contract function: transactions take the message objects of
:mod:`cancelnote.messages` with their 65-byte signatures and a ``sender`` (who signs and
pays for the transaction) and return the mined :class:`~cancelnote.dispute.chain.Receipt`;
views return Python values. Everything is encoded and decoded with eth_abi from the
shipped ABI, so the binding cannot drift from the contract: a message is passed as the
tuple of its fields, whose order the contract's structs share (a test checks the names).

Rules:

* A revert surfaces as :class:`~cancelnote.dispute.chain.TransactionReverted` whose
  ``reason`` is the contract's ``"court: ..."`` string, from transactions and views alike.
* Addresses come back as 20-byte ``bytes`` (the :class:`Chain` convention).
* :meth:`Court.events` decodes every log of the court in a receipt into a
  :class:`CourtEvent`; a log the ABI does not describe is a :class:`ChainError`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from typing import Any, Self

import attrs
from eth._utils.address import generate_contract_address
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

from ..contracts import load_artifact
from ..crypto import Signer, keccak
from ..messages import (
    Cancellation,
    CancellationNote,
    CancellationProducts,
    Domain,
    Fill,
    JournalHead,
    Match,
    Order,
    SignedMessage,
)
from ..transparency import LeafProof
from .chain import Chain, ChainError, Log, Receipt
from .nodes import check_court, court_artifact

ARTIFACT_NAME = "CancelCourt"
HEADS_ARTIFACT_NAME = "HeadsCourt"

#: The conventional address nobody holds a key for: the dev court's burn address.
DEAD_ADDRESS = bytes.fromhex("000000000000000000000000000000000000dEaD")

#: Court parameters for dev chains, demos and tests. A production court picks its own:
#: the exit delay must exceed the longest order lifetime plus the answer window, and the
#: claim delay the time an owner needs to notice an offence and get its proof mined.
DEV_PARAMETERS: dict[str, Any] = {
    "answer_window_s": 3_600,
    "penalty_wei": 10**18,
    "min_bond_wei": 3 * 10**18,
    "dispute_bond_wei": 10**17,
    "exit_delay_s": 30 * 86_400,
    "halt_on_default": True,
    "max_pending_ms": 90_000,
    "claim_delay_s": 86_400,
    "burn_share_bps": 2_500,
    "burn_address": DEAD_ADDRESS,
}


class CancelState(enum.IntEnum):
    """Where a forced cancel stands (the contract's ``STATUS_*``)."""

    NONE = 0
    REQUESTED = 1
    ANSWERED = 2
    DEFAULTED = 3


class Offence(enum.IntEnum):
    """What a claim is for (the contract's ``OFFENCE_*``)."""

    FILL_AFTER_NOTE = 1
    NOTE_EQUIVOCATION = 2
    FILL_EQUIVOCATION = 3
    FILLS_OUT_OF_ORDER = 4
    MALFORMED_FILL = 5
    BAD_FILL = 6
    DEFAULT = 7
    NOTE_OUT_OF_BOUNDS = 8
    INCONSISTENT_HEADS = 9  # proven in the HeadsCourt, as the next two
    BACKDATED = 10
    FALSE_MATCH = 11


@attrs.frozen
class CancelStatus:
    """The forced-cancel state of one order digest, as ``cancelStatus`` reports it."""

    state: CancelState
    requested_at: int
    """Block timestamp of the request: when the cancel took effect (0 if never)."""
    deadline: int
    """Last block timestamp at which an answer is accepted (0 if never requested)."""
    cap: int
    """The most the order may ever fill, once answered (0 otherwise)."""


@attrs.frozen
class ClaimStatus:
    """One claim, as ``claimOf`` reports it (all zero if none was filed)."""

    window: int
    paid: int
    """Wei credited to the owner so far."""
    entitled: int
    """Wei the owner is owed by what the claim's window took from the bond so far."""
    vests_at: int
    """Block timestamp from which the claim can be paid."""

    @property
    def filed(self) -> bool:
        return self.window != 0


@attrs.frozen
class WindowStatus:
    """One claims window, as ``windowOf`` reports it (all zero if it never opened)."""

    count: int
    taken: int
    opened_at: int
    vests_at: int


@attrs.frozen
class CourtEvent:
    """One decoded log of the court: the event's name and its arguments by ABI name."""

    name: str
    args: dict[str, Any]


@attrs.frozen
class ForcedCancel:
    """A ``CancelRequested`` event: everything the operator needs to answer it.

    The whole order is in the event, so an operator answers a request of an order it
    never received without reading the request's transaction (whose calldata anyone
    may shape: a relayer's or a contract's call, dirty ABI padding).
    """

    request_id: int
    digest: bytes
    owner: bytes
    requester: bytes
    order: Order
    requested_at: int
    """Block timestamp of the request: the cancel took effect then."""
    deadline: int

    @classmethod
    def from_event(cls, event: CourtEvent) -> Self:
        """Raises :class:`~cancelnote.errors.MessageError` if the order is out of range."""
        args = event.args
        if event.name != "CancelRequested":
            raise ChainError(f"not a CancelRequested event: {event.name}")
        order = Order(
            sender=args["sender"],
            product_id=args["productId"],
            price_x18=args["priceX18"],
            amount=args["amount"],
            expiration=args["expiration"],
            nonce=args["nonce"],
        )
        return cls(
            args["requestId"],
            args["digest"],
            args["owner"],
            args["requester"],
            order,
            args["requestedAt"],
            args["deadline"],
        )


def _canonical_type(entry: dict[str, Any]) -> str:
    """The ABI type of an input, with tuples spelled out (``(bytes32,uint32,...)``)."""
    kind = entry["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(component) for component in entry["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def _to_abi(value: object) -> object:
    """A Python argument as eth_abi takes it: a message becomes the tuple of its fields, a
    leaf proof ``(index, kind, timestampMs, ref, content, path)``."""
    if isinstance(value, SignedMessage):
        return tuple(getattr(value, field.name) for field in attrs.fields(type(value)))
    if isinstance(value, LeafProof):
        leaf = value.leaf
        return (value.index, int(leaf.kind), leaf.timestamp_ms, leaf.ref, leaf.content, value.path)
    return value


def _from_abi(kind: str, value: object) -> object:
    """An eth_abi result in this package's conventions (addresses as 20 bytes)."""
    if kind == "address":
        return bytes.fromhex(value[2:])  # type: ignore[index]
    if kind.startswith("(") and isinstance(value, tuple):
        inner = _split_tuple(kind)
        return tuple(_from_abi(sub, item) for sub, item in zip(inner, value, strict=True))
    return value


def _split_tuple(kind: str) -> list[str]:
    """The member types of a tuple type string, respecting nested parentheses."""
    members, depth, start = [], 0, 1
    for index, char in enumerate(kind[1:-1], start=1):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            members.append(kind[start:index])
            start = index + 1
    members.append(kind[start:-1])
    return members


@attrs.frozen
class _Function:
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@attrs.frozen
class _Event:
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type), in topic order
    data: tuple[tuple[str, str], ...]  # (name, type), in data order
    order: tuple[str, ...]  # every argument name, in declaration order


def _parse_abi(
    abi: Sequence[dict[str, Any]],
) -> tuple[dict[str, _Function], dict[bytes, _Event]]:
    """Functions by name (with selectors) and events by topic 0, from the ABI alone."""
    functions: dict[str, _Function] = {}
    events: dict[bytes, _Event] = {}
    for entry in abi:
        if entry["type"] == "function":
            inputs = tuple(_canonical_type(item) for item in entry["inputs"])
            signature = f"{entry['name']}({','.join(inputs)})"
            functions[entry["name"]] = _Function(
                selector=keccak(signature.encode())[:4],
                inputs=inputs,
                outputs=tuple(_canonical_type(item) for item in entry["outputs"]),
            )
        elif entry["type"] == "event":
            args = [
                (item["name"], _canonical_type(item), item["indexed"]) for item in entry["inputs"]
            ]
            signature = f"{entry['name']}({','.join(kind for _, kind, _ in args)})"
            events[keccak(signature.encode())] = _Event(
                name=entry["name"],
                indexed=tuple((name, kind) for name, kind, indexed in args if indexed),
                data=tuple((name, kind) for name, kind, indexed in args if not indexed),
                order=tuple(name for name, _, _ in args),
            )
    return functions, events


class _Contract:
    """A deployed contract of this package's artifacts: calls and logs through its ABI."""

    ARTIFACT: str

    def __init__(self, chain: Chain, address: bytes) -> None:
        artifact = load_artifact(self.ARTIFACT)
        self.chain = chain
        self.address = address
        #: The receipt of the deployment, when this object deployed the contract (and, for a
        #: court, of its HeadsCourt's).
        self.deploy_receipt: Receipt | None = None
        self.heads_deploy_receipt: Receipt | None = None
        self._functions, self._events = _parse_abi(artifact.abi)

    def encode_call(self, name: str, *args: object) -> bytes:
        """The calldata of contract function ``name`` (for ``Chain.call`` dry runs, raw txs)."""
        function = self._functions[name]
        return function.selector + abi_encode(list(function.inputs), [_to_abi(a) for a in args])

    def _transact(self, sender: Signer, name: str, *args: object, value: int = 0) -> Receipt:
        return self.chain.transact(sender, self.address, self.encode_call(name, *args), value=value)

    def _view(self, name: str, *args: object) -> Any:
        function = self._functions[name]
        output = self.chain.call(self.address, self.encode_call(name, *args))
        values = abi_decode(list(function.outputs), output)
        decoded = [
            _from_abi(kind, value) for kind, value in zip(function.outputs, values, strict=True)
        ]
        return decoded[0] if len(decoded) == 1 else tuple(decoded)


class Court(_Contract):
    """A deployed ``CancelCourt`` on ``chain`` at ``address``, and its :class:`HeadsCourt`.

    Construct it with :meth:`deploy` or :meth:`at`; ``at`` checks that the address holds
    this version's court and that the node runs it.
    """

    ARTIFACT = ARTIFACT_NAME

    @classmethod
    def deploy(
        cls,
        chain: Chain,
        deployer: Signer,
        *,
        operator: bytes,
        answer_window_s: int,
        penalty_wei: int,
        min_bond_wei: int,
        dispute_bond_wei: int,
        exit_delay_s: int,
        halt_on_default: bool,
        max_pending_ms: int,
        claim_delay_s: int,
        burn_share_bps: int,
        burn_address: bytes,
    ) -> Self:
        """Deploy a new court with these parameters (see the contract's constructor), from
        the newest build the node runs (:func:`~.nodes.court_artifact`).

        Two transactions in a row from ``deployer``: the court, then its HeadsCourt at
        the address the deployer's next nonce gives (the court is told it first);
        ``deploy_receipt`` is the court's.

        Raises:
            NodeMismatch: the node runs no build of the court.
            ChainError: either deployment created no contract, or not where expected.
        """
        artifact = court_artifact(chain, ARTIFACT_NAME)
        nonce = chain.nonce(deployer.address)
        heads_address = generate_contract_address(deployer.address, nonce + 1)
        constructor = next(entry for entry in artifact.abi if entry["type"] == "constructor")
        arguments = abi_encode(
            [_canonical_type(item) for item in constructor["inputs"]],
            [
                operator,
                answer_window_s,
                penalty_wei,
                min_bond_wei,
                dispute_bond_wei,
                exit_delay_s,
                halt_on_default,
                max_pending_ms,
                claim_delay_s,
                burn_share_bps,
                burn_address,
                heads_address,
            ],
        )
        receipt = chain.deploy(deployer, artifact.bytecode + arguments)
        if receipt.contract_address is None:
            raise ChainError("the court's deployment created no contract")
        heads = court_artifact(chain, HEADS_ARTIFACT_NAME)
        heads_arguments = abi_encode(["address", "address"], [receipt.contract_address, operator])
        heads_receipt = chain.deploy(deployer, heads.bytecode + heads_arguments)
        if heads_receipt.contract_address != heads_address:
            raise ChainError(
                f"the HeadsCourt was deployed at {heads_receipt.contract_address!r}, not at"
                f" 0x{heads_address.hex()} where the court expects it"
            )
        court = cls(chain, receipt.contract_address)
        court.deploy_receipt = receipt
        court.heads_deploy_receipt = heads_receipt
        return court

    @classmethod
    def at(cls, chain: Chain, address: bytes) -> Self:
        """The court already deployed at ``address``.

        Raises:
            NodeMismatch: no court of this version there, or one the node cannot run
                (:func:`~.nodes.check_court`).
        """
        check_court(chain, address, ARTIFACT_NAME)
        return cls(chain, address)

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain every signature shown to this court must be made in."""
        return Domain(self.chain.chain_id, self.address)

    @functools.cached_property
    def heads(self) -> HeadsCourt:
        """The court's HeadsCourt (the journal-heads rules), which it created."""
        return HeadsCourt(self.chain, self.heads_court())

    # --- the operator's bond ------------------------------------------------------------

    def deposit_bond(self, sender: Signer, value: int) -> Receipt:
        """The operator adds ``value`` wei to its bond."""
        return self._transact(sender, "depositBond", value=value)

    def announce_exit(self, sender: Signer) -> Receipt:
        """The operator starts its exit delay."""
        return self._transact(sender, "announceExit")

    def withdraw_bond(self, sender: Signer) -> Receipt:
        """The operator moves what is left of its bond to its credit, after the delay."""
        return self._transact(sender, "withdrawBond")

    def withdraw(self, sender: Signer) -> Receipt:
        """``sender`` takes everything credited to it."""
        return self._transact(sender, "withdraw")

    # --- claims -------------------------------------------------------------------------

    def settle(self, sender: Signer, window: int) -> Receipt:
        """Pay a vested claims window from the bond, as far as it goes (anyone may)."""
        return self._transact(sender, "settle", window)

    def claim(self, sender: Signer, order: Order, offence: Offence) -> Receipt:
        """Credit ``order``'s owner its vested share of the claim for ``offence``."""
        return self._transact(sender, "claim", order, int(offence))

    def send_burn(self, sender: Signer) -> Receipt:
        """Send the burn share collected so far to the burn address (anyone may)."""
        return self._transact(sender, "sendBurn")

    # --- fraud proofs: each takes the order, whose owner the claim is for ---------------

    def prove_fill_after_note(
        self,
        sender: Signer,
        order: Order,
        note: CancellationNote,
        note_sig: bytes,
        fill: Fill,
        fill_sig: bytes,
    ) -> Receipt:
        """Rule 1: a fill of ``order`` the operator's own note rules out."""
        return self._transact(sender, "proveFillAfterNote", order, note, note_sig, fill, fill_sig)

    def prove_equivocation_notes(
        self,
        sender: Signer,
        order: Order,
        note1: CancellationNote,
        sig1: bytes,
        note2: CancellationNote,
        sig2: bytes,
    ) -> Receipt:
        """Rule 2 (1): two different notes of ``order``."""
        return self._transact(sender, "proveEquivocationNotes", order, note1, sig1, note2, sig2)

    def prove_equivocation_fills(
        self, sender: Signer, order: Order, fill1: Fill, sig1: bytes, fill2: Fill, sig2: bytes
    ) -> Receipt:
        """Rule 2 (2, 3): ``fill1`` of ``order`` and a fill with its seq, or a later fill of
        the order not adding its amount (``fill1`` the earlier)."""
        return self._transact(sender, "proveEquivocationFills", order, fill1, sig1, fill2, sig2)

    def prove_malformed_fill(
        self, sender: Signer, order: Order, fill: Fill, fill_sig: bytes
    ) -> Receipt:
        """A fill of ``order`` of amount 0, with a total below its amount, or another sender."""
        return self._transact(sender, "proveMalformedFill", order, fill, fill_sig)

    def prove_bad_fill(self, sender: Signer, order: Order, fill: Fill, fill_sig: bytes) -> Receipt:
        """Rule 4: a fill worse than ``order``'s limit price, or above its amount."""
        return self._transact(sender, "proveBadFill", order, fill, fill_sig)

    def prove_bad_note(
        self, sender: Signer, order: Order, note: CancellationNote, note_sig: bytes
    ) -> Receipt:
        """A note of ``order`` that breaks one of its bounds (§12.6)."""
        return self._transact(sender, "proveBadNote", order, note, note_sig)

    def prove_fill_above_cap(
        self, sender: Signer, order: Order, fill: Fill, fill_sig: bytes
    ) -> Receipt:
        """Rule 1 after an answered forced cancel: a fill above the cap it recorded."""
        return self._transact(sender, "proveFillAboveCap", order, fill, fill_sig)

    def prove_fill_after_request(
        self, sender: Signer, order: Order, fill: Fill, fill_sig: bytes
    ) -> Receipt:
        """A fill of a force-cancelled order stamped after the request took effect."""
        return self._transact(sender, "proveFillAfterRequest", order, fill, fill_sig)

    # --- forced cancel ------------------------------------------------------------------

    def request_cancel(self, sender: Signer, order: Order, *, value: int | None = None) -> Receipt:
        """The owner forces a cancel of ``order``, paying the dispute bond (or ``value``)."""
        return self._transact(sender, "requestCancel", order, value=self._bond_or(value))

    def request_cancel_signed(
        self,
        sender: Signer,
        order: Order,
        cancellation: Cancellation,
        cancellation_sig: bytes,
        *,
        value: int | None = None,
    ) -> Receipt:
        """A relayer forces a cancel with the owner's signed ``Cancellation``."""
        return self._transact(
            sender,
            "requestCancelSigned",
            order,
            cancellation,
            cancellation_sig,
            value=self._bond_or(value),
        )

    def answer_cancel(
        self, sender: Signer, order: Order, note: CancellationNote, note_sig: bytes
    ) -> Receipt:
        """Answer a forced cancel of ``order`` with the operator's note (anyone may)."""
        return self._transact(sender, "answerCancel", order, note, note_sig)

    def finalize(self, sender: Signer, order: Order) -> Receipt:
        """Settle a forced cancel of ``order`` left unanswered past its deadline: a default."""
        return self._transact(sender, "finalize", order)

    def _bond_or(self, value: int | None) -> int:
        return self.dispute_bond() if value is None else value

    # --- views --------------------------------------------------------------------------

    def operator(self) -> bytes:
        return self._view("operator")

    def heads_court(self) -> bytes:
        """The address of the HeadsCourt this court created."""
        return self._view("headsCourt")

    def answer_window(self) -> int:
        return self._view("answerWindow")

    def penalty(self) -> int:
        return self._view("penalty")

    def min_bond(self) -> int:
        return self._view("minBond")

    def dispute_bond(self) -> int:
        return self._view("disputeBond")

    def exit_delay(self) -> int:
        return self._view("exitDelay")

    def halt_on_default(self) -> bool:
        return self._view("haltOnDefault")

    def max_pending_ms(self) -> int:
        return self._view("maxPendingMs")

    def claim_delay(self) -> int:
        return self._view("claimDelay")

    def burn_share_bps(self) -> int:
        return self._view("burnShareBps")

    def burn_address(self) -> bytes:
        return self._view("burnAddress")

    def claims_outstanding(self) -> int:
        """Wei owed to claims and not yet taken from the bond."""
        return self._view("claimsOutstanding")

    def burn_unsent(self) -> int:
        """The burn share collected and not yet sent."""
        return self._view("burnUnsent")

    def bond(self) -> int:
        """What is left of the operator's bond, in wei."""
        return self._view("bond")

    def exit_announced_at(self) -> int:
        """When the operator announced its exit (0 if it has not)."""
        return self._view("exitAnnouncedAt")

    def defaults(self) -> int:
        """How many forced cancels the operator left unanswered."""
        return self._view("defaults")

    def halted(self) -> bool:
        """Whether a default halted the operator."""
        return self._view("halted")

    def credits(self, account: bytes) -> int:
        """Wei ``account`` may withdraw."""
        return self._view("credits", account)

    def cancel_status(self, digest: bytes) -> CancelStatus:
        """The forced-cancel state of ``digest``."""
        state, requested_at, deadline, cap = self._view("cancelStatus", digest)
        return CancelStatus(CancelState(state), requested_at, deadline, cap)

    def claim_of(self, digest: bytes, offence: Offence) -> ClaimStatus:
        """The claim for ``offence`` on ``digest``."""
        return ClaimStatus(*self._view("claimOf", digest, int(offence)))

    def window_of(self, window: int) -> WindowStatus:
        """Claims window ``window``."""
        return WindowStatus(*self._view("windowOf", window))

    def offence_paid(self, digest: bytes, offence: Offence) -> bool:
        """Whether a claim for ``offence`` on ``digest`` was filed (at most one is)."""
        return self._view("offencePaid", digest, int(offence))

    def fill_struct_hash(self, fill: Fill) -> bytes:
        """The contract's struct hash of ``fill`` (equals ``fill.struct_hash()``)."""
        return self._view("fillStructHash", fill)

    def domain_separator(self) -> bytes:
        """The contract's EIP-712 domain separator (equals ``self.domain.separator``)."""
        return self._view("DOMAIN_SEPARATOR")

    def order_digest(self, order: Order) -> bytes:
        """The contract's digest of ``order`` (equals ``order.digest(self.domain)``)."""
        return self._view("orderDigest", order)

    def type_hashes(self) -> dict[str, bytes]:
        """The contract's EIP-712 type hash of each message type, by type name."""
        return {
            "Order": self._view("ORDER_TYPEHASH"),
            "Cancellation": self._view("CANCELLATION_TYPEHASH"),
            "Fill": self._view("FILL_TYPEHASH"),
            "CancellationNote": self._view("CANCELLATION_NOTE_TYPEHASH"),
        }

    # --- events -------------------------------------------------------------------------

    def topic(self, name: str) -> bytes:
        """Topic 0 of the court's event ``name`` (to filter ``get_logs`` by event)."""
        return next(topic for topic, event in self._events.items() if event.name == name)

    def decode_log(self, log: Log) -> CourtEvent:
        """Decode one of the court's logs with the ABI.

        Raises:
            ChainError: the log is not the court's, or no event of the ABI matches it.
        """
        if log.address != self.address or not log.topics or log.topics[0] not in self._events:
            raise ChainError(f"not a log of the court at 0x{self.address.hex()}: {log}")
        event = self._events[log.topics[0]]
        args: dict[str, Any] = {}
        for (name, kind), topic in zip(event.indexed, log.topics[1:], strict=True):
            args[name] = _from_abi(kind, abi_decode([kind], topic)[0])
        values = abi_decode([kind for _, kind in event.data], log.data)
        for (name, kind), value in zip(event.data, values, strict=True):
            args[name] = _from_abi(kind, value)
        return CourtEvent(event.name, {name: args[name] for name in event.order})

    def events(self, receipt: Receipt) -> list[CourtEvent]:
        """Every event the court logged in ``receipt``, in order."""
        return [self.decode_log(log) for log in receipt.logs if log.address == self.address]

    def get_events(self, from_block: int = 0, to_block: int | None = None) -> list[CourtEvent]:
        """Every event the court logged in ``[from_block, to_block]``."""
        return [
            self.decode_log(log) for log in self.chain.get_logs(self.address, from_block, to_block)
        ]


class HeadsCourt(_Contract):
    """The ``HeadsCourt`` of a court (``Court.heads``): the journal-heads rules.

    Each proof files its claim in the court (the receipt holds the court's ``Slashed``;
    decode it with :meth:`Court.events`); revert reasons are ``"court: ..."`` as there.
    """

    ARTIFACT = HEADS_ARTIFACT_NAME

    def prove_inconsistent_heads(
        self,
        sender: Signer,
        payee: Order,
        first: JournalHead,
        first_sig: bytes,
        second: JournalHead,
        second_sig: bytes,
        proof: Sequence[bytes],
    ) -> Receipt:
        """Two heads that are not one log (``first`` the smaller); the claim is for
        ``payee``'s owner, once per court, and the operator is halted."""
        return self._transact(
            sender,
            "proveInconsistentHeads",
            payee,
            first,
            first_sig,
            second,
            second_sig,
            list(proof),
        )

    def prove_backdated(
        self,
        sender: Signer,
        order: Order,
        fill: Fill,
        fill_sig: bytes,
        head: JournalHead,
        head_sig: bytes,
    ) -> Receipt:
        """A fill of ``order`` numbered at or after ``head``'s size, stamped before its time."""
        return self._transact(sender, "proveBackdated", order, fill, fill_sig, head, head_sig)

    def prove_match_after_cancel(
        self,
        sender: Signer,
        order: Order,
        cancellation: Cancellation | CancellationProducts,
        match: Match,
        head: JournalHead,
        head_sig: bytes,
        order_leaf: LeafProof,
        cancel_leaf: LeafProof,
        match_leaf: LeafProof,
    ) -> Receipt:
        """A match of ``order`` logged after a cancel naming it (offence 1)."""
        function = (
            "proveMatchAfterCancel"
            if isinstance(cancellation, Cancellation)
            else "proveMatchAfterCancelProducts"
        )
        return self._transact(
            sender,
            function,
            order,
            cancellation,
            match,
            head,
            head_sig,
            order_leaf,
            cancel_leaf,
            match_leaf,
        )

    def prove_false_match(
        self,
        sender: Signer,
        order: Order,
        fill: Fill,
        head: JournalHead,
        head_sig: bytes,
        fill_leaf: LeafProof,
        named_leaf: LeafProof,
        match: Match,
    ) -> Receipt:
        """A fill of ``order`` whose leaf names a leaf that is not its match."""
        return self._transact(
            sender, "proveFalseMatch", order, fill, head, head_sig, fill_leaf, named_leaf, match
        )

    def prove_match_reused(
        self,
        sender: Signer,
        order: Order,
        fill1: Fill,
        fill2: Fill,
        head: JournalHead,
        head_sig: bytes,
        leaf1: LeafProof,
        leaf2: LeafProof,
    ) -> Receipt:
        """Two different fills of ``order`` whose leaves name one match."""
        return self._transact(
            sender, "proveMatchReused", order, fill1, fill2, head, head_sig, leaf1, leaf2
        )

    # --- views --------------------------------------------------------------------------

    def court(self) -> bytes:
        return self._view("court")

    def operator(self) -> bytes:
        return self._view("operator")

    def fork_proven(self) -> bool:
        return self._view("forkProven")

    def leaf_hash(self, proof: LeafProof) -> bytes:
        """The contract's leaf hash of ``proof.leaf`` (equals ``proof.leaf.hash()``)."""
        return self._view("leafHash", proof)

    def included(self, proof: LeafProof, head: JournalHead) -> bool:
        """The contract's verdict on an inclusion proof (no signature checked)."""
        return self._view("included", proof, head)

    def inconsistent(self, first: JournalHead, second: JournalHead, proof: Sequence[bytes]) -> bool:
        """The contract's verdict on a proof of inconsistency (no signature checked)."""
        return self._view("inconsistent", first, second, list(proof))

    def type_hashes(self) -> dict[str, bytes]:
        """The contract's EIP-712 type hash of each type only it reads, by type name."""
        return {
            "JournalHead": self._view("JOURNAL_HEAD_TYPEHASH"),
            "Match": self._view("MATCH_TYPEHASH"),
            "CancellationProducts": self._view("CANCELLATION_PRODUCTS_TYPEHASH"),
        }
