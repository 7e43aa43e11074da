"""The operator API's requests and outputs, and their JSON wire shapes (DESIGN §5).

Shapes follow the Vertex gateway. A request is one JSON object with exactly one request
key, plus an optional ``"id"`` (any integer) that the reply echoes::

    {"place_order": {"product_id": 1, "order": {...}, "signature": "0x..."}, "id": 7}
    {"cancel_orders": {"tx": {"sender", "productIds", "digests", "nonce"}, "signature"}}
    {"cancel_product_orders": {"tx": {"sender", "productIds", "nonce"}, "signature"}}
    {"cancel_and_place": {"cancel_tx": {...}, "cancel_signature": "0x...",
                          "place_order": {"product_id", "order", "signature"}}}
    {"order_status": {"digest": "0x..."}}   {"fills": {"digest": "0x..."}}
    {"notes": {"digest": "0x..."}}          {"book": {"product_id": 1}}

The signed payloads are the classes of :mod:`cancelnote.messages`, never redefined here.
The engine answers with :class:`Reply`, :class:`Push` and journal entries
(:mod:`cancelnote.operator.journal`), in that durability order: entries first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

import attrs

from cancelnote.errors import MessageError, Rejected
from cancelnote.messages import (
    Cancellation,
    CancellationProducts,
    Order,
    SignedMessage,
    bytes32_from_wire,
    signature_from_wire,
    signature_to_wire,
)

if TYPE_CHECKING:  # the journal imports this module
    from .journal import FillIssued, NoteIssued


def _fields(name: str, obj: object, required: tuple[str, ...]) -> Mapping[str, Any]:
    """``obj`` as a mapping with exactly the keys ``required``."""
    if not isinstance(obj, Mapping):
        raise MessageError(f"{name}: expected a JSON object")
    unknown = sorted(str(key) for key in obj if key not in required)
    missing = [key for key in required if key not in obj]
    if unknown or missing:
        raise MessageError(f"{name}: unknown field(s) {unknown}, missing field(s) {missing}")
    return obj


def _product_from_wire(name: str, raw: object) -> int:
    if type(raw) is not int or not 0 <= raw < 2**32:
        raise MessageError(f"{name}.product_id: expected a uint32 JSON number")
    return raw


# ---------------------------------------------------------------------------------------
# Executes: signed requests that change state.


@attrs.frozen
class PlaceOrder:
    """Place ``order`` (signed by its sender) on ``product_id``'s book."""

    KEY: ClassVar[str] = "place_order"
    REQUEST_TYPE: ClassVar[str] = "execute_place_order"

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
    def from_body(cls, body: object, id: int | None = None) -> Self:
        body = _fields(cls.KEY, body, ("product_id", "order", "signature"))
        return cls(
            _product_from_wire(cls.KEY, body["product_id"]),
            Order.from_wire(body["order"]),
            signature_from_wire(body["signature"]),
            id,
        )


@attrs.frozen
class _SignedTx:
    """A client-signed transaction (``tx`` + ``signature``); subclasses name the type."""

    KEY: ClassVar[str]
    REQUEST_TYPE: ClassVar[str]
    TX: ClassVar[type[SignedMessage]]

    tx: Any  # an instance of TX
    signature: bytes
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"tx": self.tx.to_wire(), "signature": signature_to_wire(self.signature)}

    @classmethod
    def from_body(cls, body: object, id: int | None = None) -> Self:
        body = _fields(cls.KEY, body, ("tx", "signature"))
        return cls(cls.TX.from_wire(body["tx"]), signature_from_wire(body["signature"]), id)


@attrs.frozen
class CancelOrders(_SignedTx):
    """Cancel the orders ``tx.digests`` (``tx.product_ids[i]`` is digest i's product)."""

    KEY: ClassVar[str] = "cancel_orders"
    REQUEST_TYPE: ClassVar[str] = "execute_cancel_orders"
    TX: ClassVar[type[SignedMessage]] = Cancellation


@attrs.frozen
class CancelProductOrders(_SignedTx):
    """Cancel all the sender's open orders in ``tx.product_ids`` (all products if empty)."""

    KEY: ClassVar[str] = "cancel_product_orders"
    REQUEST_TYPE: ClassVar[str] = "execute_cancel_product_orders"
    TX: ClassVar[type[SignedMessage]] = CancellationProducts


@attrs.frozen
class CancelAndPlace:
    """Cancel orders and place one more, atomically (a Vertex replace)."""

    KEY: ClassVar[str] = "cancel_and_place"
    REQUEST_TYPE: ClassVar[str] = "execute_cancel_and_place"

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
    def from_body(cls, body: object, id: int | None = None) -> Self:
        body = _fields(cls.KEY, body, ("cancel_tx", "cancel_signature", "place_order"))
        return cls(
            Cancellation.from_wire(body["cancel_tx"]),
            signature_from_wire(body["cancel_signature"]),
            PlaceOrder.from_body(body["place_order"]),
            id,
        )


# ---------------------------------------------------------------------------------------
# Queries: unsigned, read-only.


@attrs.frozen
class _DigestQuery:
    KEY: ClassVar[str]
    REQUEST_TYPE: ClassVar[str]

    digest: bytes
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"digest": "0x" + self.digest.hex()}

    @classmethod
    def from_body(cls, body: object, id: int | None = None) -> Self:
        body = _fields(cls.KEY, body, ("digest",))
        return cls(bytes32_from_wire(f"{cls.KEY}.digest", body["digest"]), id)


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

    product_id: int
    id: int | None = None

    def body(self) -> dict[str, Any]:
        return {"product_id": self.product_id}

    @classmethod
    def from_body(cls, body: object, id: int | None = None) -> Self:
        body = _fields(cls.KEY, body, ("product_id",))
        return cls(_product_from_wire(cls.KEY, body["product_id"]), id)


Execute = PlaceOrder | CancelOrders | CancelProductOrders | CancelAndPlace
Query = OrderStatus | Fills | Notes | BookDepth
Request = Execute | Query
CancelRequest = CancelOrders | CancelProductOrders | CancelAndPlace

REQUEST_CLASSES: dict[str, type[Request]] = {
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
    )
}


def request_to_wire(request: Request) -> dict[str, Any]:
    wire: dict[str, Any] = {request.KEY: request.body()}
    if request.id is not None:
        wire["id"] = request.id
    return wire


def request_from_wire(obj: object) -> Request:
    """Parse one request object strictly.

    Raises:
        MessageError: not exactly one known request key (besides ``id``), or any field
            malformed; SignatureError for a malformed signature.
    """
    if not isinstance(obj, Mapping):
        raise MessageError("request: expected a JSON object")
    keys = [key for key in obj if key != "id"]
    if len(keys) != 1 or keys[0] not in REQUEST_CLASSES:
        raise MessageError(f"request: expected one of {sorted(REQUEST_CLASSES)}, got {keys}")
    request_id = obj.get("id")
    if request_id is not None and type(request_id) is not int:
        raise MessageError("request: id must be an integer")
    return REQUEST_CLASSES[keys[0]].from_body(obj[keys[0]], request_id)


def request_type_of(obj: object) -> str | None:
    """The ``request_type`` a failure reply names for a (possibly malformed) request."""
    if isinstance(obj, Mapping):
        for key in obj:
            if key in REQUEST_CLASSES:
                return REQUEST_CLASSES[key].REQUEST_TYPE
    return None


# ---------------------------------------------------------------------------------------
# Outputs.


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
    def success(cls, request: Request, data: Any) -> Reply:
        wire = {
            "status": "success",
            "signature": _request_signature(request),
            "data": data,
            "request_type": request.REQUEST_TYPE,
        }
        return cls(_request_sender(request), _with_id(wire, request.id))

    @classmethod
    def failure(
        cls, request: Request | None, error: Rejected, request_type: str | None = None
    ) -> Reply:
        wire = {
            "status": "failure",
            "signature": None if request is None else _request_signature(request),
            "error": str(error),
            "error_code": error.code,
            "request_type": request.REQUEST_TYPE if request is not None else request_type,
        }
        if request is None:
            return cls(None, wire)
        return cls(_request_sender(request), _with_id(wire, request.id))


@attrs.frozen
class Push:
    """A signed fill or note to stream to ``sender``'s subscribers.

    It carries the journal entry of the fill or note, so that its JSON text is made once
    for the journal row and the stream alike.
    """

    sender: bytes
    entry: FillIssued | NoteIssued

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


def _request_sender(request: Request) -> bytes | None:
    if isinstance(request, PlaceOrder):
        return request.order.sender
    if isinstance(request, CancelOrders | CancelProductOrders | CancelAndPlace):
        return request.tx.sender
    return None
