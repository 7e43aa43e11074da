"""The operator API both sides speak: requests, replies, pushes, close codes, and the
schema decoder of untrusted requests (DESIGN §2, §5; docs/protocol.md §15).

Shapes follow the Vertex gateway. A request is one JSON object with exactly one request
key, plus an optional ``"id"`` (any integer) that the reply echoes::

    {"place_order": {"product_id": 1, "order": {...}, "signature": "0x..."}, "id": 7}
    {"cancel_orders": {"tx": {"sender", "productIds", "digests", "nonce"}, "signature"}}
    {"cancel_product_orders": {"tx": {"sender", "productIds", "nonce"}, "signature"}}
    {"cancel_and_place": {"cancel_tx": {...}, "cancel_signature": "0x...",
                          "place_order": {"product_id", "order", "signature"}}}
    {"order_status": {"digest": "0x..."}}   {"fills": {"digest": "0x..."}}
    {"notes": {"digest": "0x..."}}          {"book": {"product_id": 1}}
    {"subscribe": {"sender": "0x...", "after_seq": "0"}}   {"unsubscribe": {"sender"}}
    {"subscribe_heads": {}}   {"unsubscribe_heads": {}}   {"head": {}}
    {"inclusion": {"size": "1000", "seqs": ["57", "58"]}}
    {"consistency": {"first": "900", "second": "1000"}}   {"locate": {"content": "0x..."}}

The signed payloads are the classes of :mod:`cancelnote.messages`, never redefined here;
their wire schemas are derived from them (:func:`cancelnote.messages.wire_schema`).

Decoding (:func:`decode_request`) goes straight from the text into the request types
through one msgspec schema, so it never nests deeper than the schema whatever the input
or the recursion limit; :func:`request_from_wire` checks an already parsed object (a
journal row) against the same schema. Strict: no unknown or missing field, no float or
bool for an integer, no NaN, no key given twice (two parsers could read a duplicated key
differently, and what is signed must be what is parsed).
"""

import contextlib
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Annotated, Any, ClassVar, Protocol, Self

import attrs
import msgspec
from msgspec import UNSET, UnsetType

from cancelnote.errors import MessageError, Rejected
from cancelnote.messages import (
    HEX32_WIRE,
    Cancellation,
    CancellationProducts,
    Order,
    check_containers,
    signature_from_wire,
    signature_to_wire,
    wire_schema,
)

_ORDER = wire_schema(Order)
_CANCELLATION = wire_schema(Cancellation)
_CANCELLATION_PRODUCTS = wire_schema(CancellationProducts)

Uint32Wire = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
#: A uint64 as the wire writes it (protocol §6.2): a decimal string or a JSON integer
#: (the range is checked once it is an int: msgspec bounds stop at int64).
Uint64Wire = Annotated[str, msgspec.Meta(pattern=r"^(0|[1-9][0-9]{0,19})\Z")] | int


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    """A request body: every field required, no other field."""


class _PlaceOrderBody(_Body):
    product_id: Uint32Wire
    order: _ORDER.struct  # type: ignore[valid-type]
    signature: str


class _CancelOrdersBody(_Body):
    tx: _CANCELLATION.struct  # type: ignore[valid-type]
    signature: str


class _CancelProductsBody(_Body):
    tx: _CANCELLATION_PRODUCTS.struct  # type: ignore[valid-type]
    signature: str


class _CancelAndPlaceBody(_Body):
    cancel_tx: _CANCELLATION.struct  # type: ignore[valid-type]
    cancel_signature: str
    place_order: _PlaceOrderBody


class _DigestBody(_Body):
    digest: HEX32_WIRE


class _ProductBody(_Body):
    product_id: Uint32Wire


class _SubscribeBody(_Body):
    sender: HEX32_WIRE
    after_seq: Uint64Wire


class _SenderBody(_Body):
    sender: HEX32_WIRE


class _EmptyBody(_Body):
    pass


class _InclusionBody(_Body):
    size: Uint64Wire
    seqs: Annotated[list[Uint64Wire], msgspec.Meta(max_length=32)]


class _ConsistencyBody(_Body):
    first: Uint64Wire
    second: Uint64Wire


class _ContentBody(_Body):
    content: HEX32_WIRE


def _uint64(name: str, raw: str | int) -> int:
    value = int(raw) if type(raw) is str else raw
    if not 0 <= value < 2**64:
        raise MessageError(f"{name}: {value} is out of range for uint64")
    return value


# ---------------------------------------------------------------------------------------
# Executes: signed requests that change state.


@attrs.frozen
class PlaceOrder:
    """Place ``order`` (signed by its sender) on ``product_id``'s book."""

    KEY: ClassVar[str] = "place_order"
    REQUEST_TYPE: ClassVar[str] = "execute_place_order"
    BODY: ClassVar[type[_Body]] = _PlaceOrderBody

    product_id: int
    order: Order
    signature: bytes
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "order": self.order.to_wire(),
            "signature": signature_to_wire(self.signature),
        }

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        return cls(
            body.product_id, _ORDER.build(body.order), signature_from_wire(body.signature), id
        )


@attrs.frozen
class _SignedTx:
    """A client-signed transaction (``tx`` + ``signature``); subclasses name the type."""

    KEY: ClassVar[str]
    REQUEST_TYPE: ClassVar[str]
    BODY: ClassVar[type[_Body]]
    SCHEMA: ClassVar[Any]  # the WireSchema of tx

    tx: Any  # an instance of SCHEMA.message
    signature: bytes
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"tx": self.tx.to_wire(), "signature": signature_to_wire(self.signature)}

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        return cls(cls.SCHEMA.build(body.tx), signature_from_wire(body.signature), id)


@attrs.frozen
class CancelOrders(_SignedTx):
    """Cancel the orders ``tx.digests`` (``tx.product_ids[i]`` is digest i's product)."""

    KEY: ClassVar[str] = "cancel_orders"
    REQUEST_TYPE: ClassVar[str] = "execute_cancel_orders"
    BODY: ClassVar[type[_Body]] = _CancelOrdersBody
    SCHEMA: ClassVar[Any] = _CANCELLATION


@attrs.frozen
class CancelProductOrders(_SignedTx):
    """Cancel all the sender's open orders in ``tx.product_ids`` (all products if empty)."""

    KEY: ClassVar[str] = "cancel_product_orders"
    REQUEST_TYPE: ClassVar[str] = "execute_cancel_product_orders"
    BODY: ClassVar[type[_Body]] = _CancelProductsBody
    SCHEMA: ClassVar[Any] = _CANCELLATION_PRODUCTS


@attrs.frozen
class CancelAndPlace:
    """Cancel orders and place one more, atomically (a Vertex replace)."""

    KEY: ClassVar[str] = "cancel_and_place"
    REQUEST_TYPE: ClassVar[str] = "execute_cancel_and_place"
    BODY: ClassVar[type[_Body]] = _CancelAndPlaceBody

    tx: Cancellation
    signature: bytes
    place_order: PlaceOrder
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {
            "cancel_tx": self.tx.to_wire(),
            "cancel_signature": signature_to_wire(self.signature),
            "place_order": self.place_order.body(),
        }

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        return cls(
            _CANCELLATION.build(body.cancel_tx),
            signature_from_wire(body.cancel_signature),
            PlaceOrder.from_decoded(body.place_order),
            id,
        )


# ---------------------------------------------------------------------------------------
# Queries: unsigned, read-only.


@attrs.frozen
class _DigestQuery:
    KEY: ClassVar[str]
    REQUEST_TYPE: ClassVar[str]
    BODY: ClassVar[type[_Body]] = _DigestBody

    digest: bytes
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"digest": "0x" + self.digest.hex()}

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        return cls(bytes.fromhex(body.digest[2:]), id)


@attrs.frozen
class OrderStatus(_DigestQuery):
    """Status of one order: ``ACTIVE``, ``FILLED``, ``CANCELLED`` or ``EXPIRED``."""

    KEY: ClassVar[str] = "order_status"
    REQUEST_TYPE: ClassVar[str] = "query_order_status"


@attrs.frozen
class Fills(_DigestQuery):
    """Every signed fill of one order, in seq order."""

    KEY: ClassVar[str] = "fills"
    REQUEST_TYPE: ClassVar[str] = "query_fills"


@attrs.frozen
class Notes(_DigestQuery):
    """Every published note for one order, in seq order."""

    KEY: ClassVar[str] = "notes"
    REQUEST_TYPE: ClassVar[str] = "query_notes"


@attrs.frozen
class BookDepth:
    """Aggregated price levels of one product, best first."""

    KEY: ClassVar[str] = "book"
    REQUEST_TYPE: ClassVar[str] = "query_book"
    BODY: ClassVar[type[_Body]] = _ProductBody

    product_id: int
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"product_id": self.product_id}

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        return cls(body.product_id, id)


# ---------------------------------------------------------------------------------------
# Subscriptions: served by the server itself, beside the engine's API.


@attrs.frozen
class Subscribe:
    """Stream ``sender``'s fills and notes with ``seq > after_seq``, then every new one."""

    KEY: ClassVar[str] = "subscribe"
    REQUEST_TYPE: ClassVar[str] = "subscribe"
    BODY: ClassVar[type[_Body]] = _SubscribeBody

    sender: bytes
    after_seq: int
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"sender": "0x" + self.sender.hex(), "after_seq": str(self.after_seq)}

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        after_seq = _uint64("subscribe.after_seq", body.after_seq)
        return cls(bytes.fromhex(body.sender[2:]), after_seq, id)


@attrs.frozen
class Unsubscribe:
    """Stop streaming ``sender`` on this connection."""

    KEY: ClassVar[str] = "unsubscribe"
    REQUEST_TYPE: ClassVar[str] = "unsubscribe"
    BODY: ClassVar[type[_Body]] = _SenderBody

    sender: bytes
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"sender": "0x" + self.sender.hex()}

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        return cls(bytes.fromhex(body.sender[2:]), id)


# ---------------------------------------------------------------------------------------
# Journal heads (protocol §21): served by the server beside the engine, from the log.


@attrs.frozen
class _Nothing:
    """A request whose body is ``{}``."""

    KEY: ClassVar[str]
    REQUEST_TYPE: ClassVar[str]
    BODY: ClassVar[type[_Body]] = _EmptyBody

    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        return cls(id)


@attrs.frozen
class HeadQuery(_Nothing):
    """Sign a head of the log now (the answer carries it, once durable)."""

    KEY: ClassVar[str] = "head"
    REQUEST_TYPE: ClassVar[str] = "query_head"


@attrs.frozen
class SubscribeHeads(_Nothing):
    """Stream every signed head from now on (the answer carries the latest)."""

    KEY: ClassVar[str] = "subscribe_heads"
    REQUEST_TYPE: ClassVar[str] = "subscribe_heads"


@attrs.frozen
class UnsubscribeHeads(_Nothing):
    """Stop streaming heads on this connection."""

    KEY: ClassVar[str] = "unsubscribe_heads"
    REQUEST_TYPE: ClassVar[str] = "unsubscribe_heads"


@attrs.frozen
class Inclusion:
    """The leaves ``seqs`` of the log with their inclusion paths in its first ``size``."""

    KEY: ClassVar[str] = "inclusion"
    REQUEST_TYPE: ClassVar[str] = "query_inclusion"
    BODY: ClassVar[type[_Body]] = _InclusionBody

    size: int
    seqs: tuple[int, ...]
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"size": str(self.size), "seqs": [str(seq) for seq in self.seqs]}

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        seqs = tuple(_uint64(f"inclusion.seqs[{i}]", raw) for i, raw in enumerate(body.seqs))
        return cls(_uint64("inclusion.size", body.size), seqs, id)


@attrs.frozen
class Consistency:
    """The consistency proof from the log's first ``first`` leaves to its first ``second``."""

    KEY: ClassVar[str] = "consistency"
    REQUEST_TYPE: ClassVar[str] = "query_consistency"
    BODY: ClassVar[type[_Body]] = _ConsistencyBody

    first: int
    second: int
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"first": str(self.first), "second": str(self.second)}

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        first = _uint64("consistency.first", body.first)
        return cls(first, _uint64("consistency.second", body.second), id)


@attrs.frozen
class Locate:
    """The seq of the order or cancel leaf whose content (struct hash) is ``content``."""

    KEY: ClassVar[str] = "locate"
    REQUEST_TYPE: ClassVar[str] = "query_locate"
    BODY: ClassVar[type[_Body]] = _ContentBody

    content: bytes
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"content": "0x" + self.content.hex()}

    @classmethod
    def from_decoded(cls, body: Any, id: int | None = None) -> Self:
        return cls(bytes.fromhex(body.content[2:]), id)


Execute = PlaceOrder | CancelOrders | CancelProductOrders | CancelAndPlace
Query = OrderStatus | Fills | Notes | BookDepth
Request = Execute | Query
CancelRequest = CancelOrders | CancelProductOrders | CancelAndPlace
HeadsRequest = HeadQuery | Inclusion | Consistency | Locate
HeadsStreamRequest = SubscribeHeads | UnsubscribeHeads
StreamRequest = Subscribe | Unsubscribe
WireRequest = Request | StreamRequest | HeadsRequest | HeadsStreamRequest

REQUEST_CLASSES: dict[str, type[WireRequest]] = {
    cls.KEY: cls
    for cls in (
        PlaceOrder,
        CancelOrders,
        CancelProductOrders,
        CancelAndPlace,
        OrderStatus,
        Fills,
        Notes,
        BookDepth,
        Subscribe,
        Unsubscribe,
        HeadQuery,
        Inclusion,
        Consistency,
        Locate,
        SubscribeHeads,
        UnsubscribeHeads,
    )
}

_Envelope = msgspec.defstruct(
    "Envelope",
    [(key, cls.BODY | UnsetType, UNSET) for key, cls in REQUEST_CLASSES.items()]
    + [("id", int | None | UnsetType, UNSET)],
    forbid_unknown_fields=True,
)
_Probe = msgspec.defstruct(
    "Probe", [(key, msgspec.Raw, msgspec.Raw()) for key in [*REQUEST_CLASSES, "id"]]
)
_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_probe = msgspec.json.Decoder(_Probe).decode


def _key_count(struct: Any) -> int:
    """How many keys a JSON object of ``struct`` (every field present) holds, nested ones
    included."""
    info = msgspec.inspect.type_info(struct)
    return sum(
        1 + (_key_count(f.type.cls) if isinstance(f.type, msgspec.inspect.StructType) else 0)
        for f in info.fields
    )


#: Keys of a request of each kind, the request key itself included (``id`` excluded).
_KEYS: dict[str, int] = {key: 1 + _key_count(cls.BODY) for key, cls in REQUEST_CLASSES.items()}


def _from_envelope(envelope: Any) -> tuple[WireRequest, str]:
    present = [key for key in REQUEST_CLASSES if getattr(envelope, key) is not UNSET]
    if len(present) != 1:
        raise MessageError(f"request: expected one of {sorted(REQUEST_CLASSES)}, got {present}")
    (key,) = present
    request_id = None if envelope.id is UNSET else envelope.id
    return REQUEST_CLASSES[key].from_decoded(getattr(envelope, key), request_id), key


def decode_request(text: str) -> WireRequest:
    """Decode one request message strictly (see the module docstring).

    Raises:
        MessageError: not JSON, not the schema, a value out of range, a key given twice;
            SignatureError for a malformed signature.
    """
    check_containers(text)
    try:
        envelope = _decode_envelope(text)
    except msgspec.ValidationError as exc:
        raise MessageError(f"malformed request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise MessageError(f"malformed JSON: {exc}") from None
    request, key = _from_envelope(envelope)
    # Every key is the schema's and no string of the schema holds ':', so a message with
    # a key given twice (which a schema decoder reads as its last copy) has one ':' more.
    if text.count(":") != _KEYS[key] + (envelope.id is not UNSET):
        raise MessageError("request: a key is given twice (or a value holds ':')")
    return request


def describe_failed(text: str) -> tuple[str | None, int | None]:
    """``(request_type, id)`` of a message that did not decode, as far as it can tell."""
    try:
        check_containers(text)
        probe = _decode_probe(text)
    except (MessageError, msgspec.DecodeError):
        return None, None
    request_type = next(
        (cls.REQUEST_TYPE for key, cls in REQUEST_CLASSES.items() if bytes(getattr(probe, key))),
        None,
    )
    request_id = None
    if bytes(probe.id):
        with contextlib.suppress(msgspec.DecodeError):
            request_id = msgspec.json.decode(probe.id, type=int)
    return request_type, request_id


#: Vertex weights: a place weighs 1, ``cancel_orders`` its number of digests,
#: ``cancel_product_orders`` 50 for all products, else 5 per product; a replace both.
PLACE_WEIGHT = 1
CANCEL_ALL_PRODUCTS_WEIGHT = 50
CANCEL_PER_PRODUCT_WEIGHT = 5


def weight_of(request: Execute) -> int:
    """What an execute counts against the rate limits (protocol §8.1)."""
    if isinstance(request, PlaceOrder):
        return PLACE_WEIGHT
    if isinstance(request, CancelProductOrders):
        return CANCEL_PER_PRODUCT_WEIGHT * len(request.tx.product_ids) or CANCEL_ALL_PRODUCTS_WEIGHT
    weight = len(request.tx.digests)
    return weight + PLACE_WEIGHT if isinstance(request, CancelAndPlace) else weight


def request_to_wire(request: WireRequest) -> dict[str, Any]:
    wire: dict[str, Any] = {request.KEY: request.body()}
    if request.id is not None:
        wire["id"] = request.id
    return wire


def request_from_wire(obj: object) -> WireRequest:
    """Check an already parsed request object against the same schema.

    Raises:
        MessageError: not exactly one known request key (besides ``id``), or any field
            malformed; SignatureError for a malformed signature.
    """
    try:
        envelope = msgspec.convert(obj, _Envelope)
    except msgspec.ValidationError as exc:
        raise MessageError(f"malformed request: {exc}") from None
    return _from_envelope(envelope)[0]


def request_type_of(obj: object) -> str | None:
    """The ``request_type`` a failure reply names for a (possibly malformed) request."""
    if isinstance(obj, Mapping):
        for key in obj:
            if key in REQUEST_CLASSES:
                return REQUEST_CLASSES[key].REQUEST_TYPE
    return None


# ---------------------------------------------------------------------------------------
# Replies and pushes.


def success_wire(request_type: str, data: Any, request_id: int | None) -> dict[str, Any]:
    """``{"status": "success", "signature": None, "data", "request_type"}`` (+ ``id``)."""
    wire = {"status": "success", "signature": None, "data": data, "request_type": request_type}
    return _with_id(wire, request_id)


def failure_wire(
    error: Rejected, request_type: str | None, request_id: int | None = None
) -> dict[str, Any]:
    """The failure envelope of a request that did not get as far as a request object."""
    wire = {
        "status": "failure",
        "signature": None,
        "error": str(error),
        "error_code": error.code,
        "request_type": request_type,
    }
    return _with_id(wire, request_id)


@attrs.frozen
class Reply:
    """The answer to one request; ``to`` is the request's sender (``None`` for queries).

    ``wire`` is the Vertex envelope: ``{"status": "success", "signature", "data",
    "request_type"}`` or ``{"status": "failure", "signature", "error", "error_code",
    "request_type"}``, plus ``"id"`` when the request had one.
    """

    to: bytes | None
    wire: dict[str, Any]

    @classmethod
    def success(cls, request: Request, data: Any) -> Self:
        wire = success_wire(request.REQUEST_TYPE, data, request.id)
        wire["signature"] = _request_signature(request)
        return cls(_request_sender(request), wire)

    @classmethod
    def failure(
        cls, request: Request | None, error: Rejected, request_type: str | None = None
    ) -> Self:
        if request is None:
            return cls(None, failure_wire(error, request_type))
        wire = failure_wire(error, request.REQUEST_TYPE, request.id)
        wire["signature"] = _request_signature(request)
        return cls(_request_sender(request), wire)


class SignedStatement(Protocol):
    """An operator-signed fill or note as the journal holds it (its entry)."""

    seq: int

    @property
    def signed_wire(self) -> dict[str, Any]: ...

    @property
    def signed_json(self) -> str: ...


@attrs.frozen
class Push:
    """A signed fill or note to stream to ``sender``'s subscribers.

    It carries the journal entry of the fill or note, so that the wire form and its JSON
    text are made once for the journal row, the reply and the stream alike.
    """

    sender: bytes
    entry: SignedStatement

    @property
    def wire(self) -> dict[str, Any]:
        """``{"fill": {...}, "signature": "0x..."}`` or ``{"note": {...}, "signature": ...}``."""
        return self.entry.signed_wire

    @property
    def text(self) -> str:
        """:attr:`wire` as compact JSON (the very text the journal row embeds)."""
        return self.entry.signed_json


def _with_id(wire: dict[str, Any], request_id: int | None) -> dict[str, Any]:
    if request_id is not None:
        wire["id"] = request_id
    return wire


def _request_signature(request: Request) -> str | None:
    signature = getattr(request, "signature", None)
    return None if signature is None else signature_to_wire(signature)


_SENDERS: dict[type, Callable[[Any], bytes]] = {
    PlaceOrder: lambda request: request.order.sender,
    CancelOrders: lambda request: request.tx.sender,
    CancelProductOrders: lambda request: request.tx.sender,
    CancelAndPlace: lambda request: request.tx.sender,
}


def _request_sender(request: Request) -> bytes | None:
    sender = _SENDERS.get(type(request))
    return None if sender is None else sender(request)


# ---------------------------------------------------------------------------------------
# Close codes (RFC 6455 §7.4; 4000-4999 are the application's own).


class CloseCode(IntEnum):
    """Why the operator closed a WebSocket; the close reason starts with the name."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the operator is shutting down
    PROTOCOL_ERROR = 1002  # not WebSocket as RFC 6455 frames it
    INVALID_TEXT = 1007  # a text message that is not UTF-8
    SEND_BUDGET = 1008  # the client does not read its answers (queue over budget, or stuck)
    MESSAGE_TOO_BIG = 1009  # a message beyond the transport limit
    INTERNAL_ERROR = 1011
    MEMORY_BUDGET = 1013  # the server's total buffer budget is spent: try again later
    IDLE_TIMEOUT = 4000  # nothing received (not even a pong) for the idle timeout
    MESSAGE_TIMEOUT = 4001  # a message begun and not finished within the message timeout
