"""The signed messages of protocol v2, each defined exactly once.

Each class below is the one definition of its message: its attrs fields carry the
Solidity type and the wire (and EIP-712) name, and the EIP-712 type string, the struct
hash, the JSON wire form and the validators are all derived from those fields. The
contract's type-hash constants are checked against ``TYPE_STRING`` by a test, character
for character.

Conventions (docs/protocol.md is the specification):

* Python attributes are snake_case; wire and EIP-712 names are camelCase (``priceX18``).
* On the wire, bytes are ``0x``-hex and integers are decimal strings, except ``uint32``
  (product ids), which are JSON numbers. Integers are also accepted as JSON numbers.
* Every malformed value raises :class:`~cancelnote.errors.MessageError` (a bad signature
  raises its subclass :class:`~cancelnote.errors.SignatureError`) naming the field.
"""

from __future__ import annotations

import functools
import operator
import re
import secrets
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Annotated, Any, ClassVar, Self

import attrs
import msgspec

from .crypto import (
    ZERO_ADDRESS,
    Signer,
    check_signature,
    keccak,
    parse_address,
    recover_address,
    to_checksum,
)
from .errors import MessageError, SignatureError

DOMAIN_NAME = "cancelnote"
DOMAIN_VERSION = "2"
DOMAIN_TYPE_STRING = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
DOMAIN_TYPE_HASH = keccak(DOMAIN_TYPE_STRING.encode())

#: Longest array a message may carry (digests or product ids of one cancel).
MAX_ARRAY_LENGTH = 1024
#: The operator accepts a request only if ``now < recv_time <= now + RECV_WINDOW_MS``.
RECV_WINDOW_MS = 100_000
#: Bits of entropy below ``recv_time_ms`` in a nonce.
NONCE_RANDOM_BITS = 20
SUBACCOUNT_BYTES = 12

_INT_RANGES: dict[str, tuple[int, int]] = {
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "uint128": (0, 2**128 - 1),
    "uint256": (0, 2**256 - 1),
    "int128": (-(2**127), 2**127 - 1),
}
#: At most 78 digits: every protocol integer fits (2**256 has 78), and Python refuses to
#: parse strings past 4,300 digits with a ValueError of its own.
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]{0,77})\Z")
_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}\Z")
_HEX_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}\Z")


# ---------------------------------------------------------------------------------------
# Field types: validation, EIP-712 encoding, wire encoding, by Solidity type name.


def _check_int(sol: str, name: str, value: object) -> None:
    low, high = _INT_RANGES[sol]
    if type(value) is not int:
        raise MessageError(f"{name}: expected an integer ({sol}), got {type(value).__name__}")
    if not low <= value <= high:
        raise MessageError(f"{name}: {value} is out of range for {sol} [{low}, {high}]")


def _check_bytes32(name: str, value: object) -> None:
    if type(value) is not bytes or len(value) != 32:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise MessageError(f"{name}: expected 32 bytes, got {got}")


def _check_field(sol: str, name: str, value: object) -> None:
    if sol.endswith("[]"):
        if type(value) is not tuple:
            raise MessageError(f"{name}: expected a sequence, got {type(value).__name__}")
        if len(value) > MAX_ARRAY_LENGTH:
            raise MessageError(f"{name}: {len(value)} entries, at most {MAX_ARRAY_LENGTH}")
        for index, item in enumerate(value):
            _check_field(sol[:-2], f"{name}[{index}]", item)
    elif sol == "bytes32":
        _check_bytes32(name, value)
    else:
        _check_int(sol, name, value)


def _encode_word(sol: str) -> Callable[[Any], bytes]:
    """The 32-byte EIP-712 ``encodeData`` of one value of a static type."""
    if sol == "bytes32":
        return lambda value: value
    if sol.startswith("int"):
        return lambda value: value.to_bytes(32, "big", signed=True)
    return lambda value: value.to_bytes(32, "big")


def _encoder(sol: str) -> Callable[[Any], bytes]:
    word = _encode_word(sol.removesuffix("[]"))
    if sol.endswith("[]"):
        return lambda values: keccak(b"".join(map(word, values)))
    return word


def _value_from_wire(sol: str, name: str, raw: object) -> Any:
    if sol.endswith("[]"):
        if not isinstance(raw, list):
            raise MessageError(f"{name}: expected a JSON array, got {type(raw).__name__}")
        if len(raw) > MAX_ARRAY_LENGTH:
            raise MessageError(f"{name}: {len(raw)} entries, at most {MAX_ARRAY_LENGTH}")
        return tuple(_value_from_wire(sol[:-2], f"{name}[{i}]", item) for i, item in enumerate(raw))
    if sol == "bytes32":
        if not isinstance(raw, str) or not _HEX32.match(raw):
            raise MessageError(f"{name}: expected 0x and 64 hex digits, got {_show(raw)}")
        return bytes.fromhex(raw[2:])
    if isinstance(raw, str):
        if not _DECIMAL.match(raw):
            raise MessageError(f"{name}: expected a decimal integer string, got {_show(raw)}")
        value = int(raw)
    elif type(raw) is int:
        value = raw
    else:
        raise MessageError(f"{name}: expected an integer ({sol}), got {_show(raw)}")
    _check_int(sol, name, value)
    return value


def _wire_encoder(sol: str) -> Callable[[Any], Any]:
    """The JSON form of one value: 0x-hex bytes, uint32 numbers, other integers as strings."""
    if sol.endswith("[]"):
        item = _wire_encoder(sol[:-2])
        return lambda values: [item(value) for value in values]
    if sol == "bytes32":
        return lambda value: "0x" + value.hex()
    if sol == "uint32":
        return int
    return str


def _show(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


def _field(sol: str, wire: str) -> Any:
    """An attrs field of Solidity type ``sol`` named ``wire`` on the wire and in EIP-712."""
    converter = _to_tuple if sol.endswith("[]") else None
    return attrs.field(
        converter=converter, validator=_validator(sol, wire), metadata={"sol": sol, "wire": wire}
    )


def _validator(sol: str, wire: str) -> Callable[[Any, Any, Any], None]:
    """A validator whose passing path is one type test and one comparison.

    Messages are built on the operator's hot path (a note per cancel), so the error text
    naming the field is composed only once a check has failed.
    """

    def fail(inst: object, value: object) -> None:
        _check_field(sol, f"{type(inst).__name__}.{wire}", value)

    if sol.endswith("[]"):
        return lambda inst, attribute, value: fail(inst, value)
    if sol == "bytes32":

        def check_bytes32(inst: object, attribute: object, value: object) -> None:
            if type(value) is not bytes or len(value) != 32:
                fail(inst, value)

        return check_bytes32
    low, high = _INT_RANGES[sol]

    def check_int(inst: object, attribute: object, value: object) -> None:
        if type(value) is not int or not low <= value <= high:
            fail(inst, value)

    return check_int


def _to_tuple(value: object) -> object:
    """Arrays are stored as tuples so that messages stay immutable and hashable."""
    return tuple(value) if isinstance(value, list) else value


# ---------------------------------------------------------------------------------------
# The EIP-712 domain.


def _address_bytes(value: object) -> bytes:
    try:
        return parse_address(value)  # type: ignore[arg-type]
    except SignatureError as exc:
        raise MessageError(f"Domain.verifyingContract: {exc}") from None


@attrs.frozen
class Domain:
    """Binds a signature to one chain and one court contract.

    ``{name: "cancelnote", version: "2", chainId, verifyingContract}``; a signature made
    for one domain recovers to a different (useless) address in any other (a v1
    signature included: v2 notes say more, so they must not be mistaken for v1 ones).
    """

    chain_id: int = attrs.field()
    verifying_contract: bytes = attrs.field(converter=_address_bytes)
    #: Protocol v2 fixes these; other values exist for EIP-712 test vectors only.
    name: str = attrs.field(default=DOMAIN_NAME, kw_only=True)
    version: str = attrs.field(default=DOMAIN_VERSION, kw_only=True)

    @chain_id.validator
    def _check_chain_id(self, attribute: attrs.Attribute, value: int) -> None:
        _check_int("uint256", "Domain.chainId", value)
        if value == 0:
            raise MessageError("Domain.chainId: must be non-zero")

    @cached_property
    def separator(self) -> bytes:
        """The EIP-712 domain separator (the contract's ``DOMAIN_SEPARATOR``)."""
        return keccak(
            DOMAIN_TYPE_HASH
            + keccak(self.name.encode())
            + keccak(self.version.encode())
            + self.chain_id.to_bytes(32, "big")
            + bytes(12)
            + self.verifying_contract
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum(self.verifying_contract),
        }


# ---------------------------------------------------------------------------------------
# The signed message types.


class SignedMessage:
    """What every signed type shares: hashing, signing, recovery and the wire form.

    Subclasses are frozen attrs classes declared with :func:`_field`; ``@_eip712``
    derives ``TYPE_STRING`` and ``TYPE_HASH`` from their fields.
    """

    __slots__ = ()
    TYPE_STRING: ClassVar[str]
    TYPE_HASH: ClassVar[bytes]
    _WIRE: ClassVar[tuple[tuple[str, str, str], ...]]  # (attribute, wire name, sol type)
    _ENCODERS: ClassVar[tuple[Callable[[Any], bytes], ...]]
    _WIRE_ENCODERS: ClassVar[tuple[tuple[str, Callable[[Any], Any]], ...]]
    _VALUES: ClassVar[Callable[[Any], tuple[Any, ...]]]  # all field values, in order

    def encoded_fields(self) -> list[tuple[str, bytes]]:
        """Each field's wire name and 32-byte EIP-712 ``encodeData`` word, in order."""
        values = self._VALUES(self)
        return [
            (wire, encode(value))
            for (_, wire, _), encode, value in zip(self._WIRE, self._ENCODERS, values, strict=True)
        ]

    def struct_hash(self) -> bytes:
        """EIP-712 ``hashStruct``: keccak of the type hash and every encoded field.

        Remembered for the last few thousand messages (:func:`_struct_hash`): one order's
        digest is needed by its signer, the engine, the client's store and the verifier.
        """
        return _struct_hash(self)

    def digest(self, domain: Domain) -> bytes:
        """The 32-byte EIP-712 digest that is signed (``keccak(0x1901 ‖ domain ‖ struct)``).

        For an ``Order`` this digest is also the order's identifier everywhere.
        """
        return _digest(self, domain)

    def sign(self, signer: Signer | bytes, domain: Domain) -> bytes:
        """A 65-byte low-s signature of :meth:`digest` by ``signer``."""
        if isinstance(signer, bytes):
            signer = Signer(signer)
        return signer.sign_hash(self.digest(domain))

    def recover(self, signature: bytes, domain: Domain) -> str:
        """The checksummed address that signed this message in ``domain``.

        Raises:
            SignatureError: the signature is malformed, high-s or recovers to nobody.
        """
        return to_checksum(recover_address(self.digest(domain), signature))

    def verify(self, signature: bytes, domain: Domain, expected_signer: str | bytes) -> None:
        """Check that ``expected_signer`` signed this message in ``domain``.

        Raises:
            SignatureError: the signature is invalid, the expected signer is the zero
                address, or someone else signed.
        """
        expected = parse_address(expected_signer)
        if expected == ZERO_ADDRESS:
            raise SignatureError("the zero address signs nothing")
        signer = recover_address(self.digest(domain), signature)
        if signer != expected:
            raise SignatureError(
                f"{type(self).__name__} signed by {to_checksum(signer)},"
                f" expected {to_checksum(expected)}"
            )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict: camelCase names, 0x-hex bytes, decimal-string integers."""
        values = self._VALUES(self)
        return {
            wire: to_wire(value)
            for (wire, to_wire), value in zip(self._WIRE_ENCODERS, values, strict=True)
        }

    @classmethod
    def from_wire(cls, obj: object) -> Self:
        """Parse the wire form strictly: no missing, unknown or malformed field.

        Raises:
            MessageError: naming the first field that is wrong.
        """
        if not isinstance(obj, Mapping):
            raise MessageError(f"{cls.__name__}: expected a JSON object, got {_show(obj)}")
        known = {wire for _, wire, _ in cls._WIRE}
        unknown = sorted(str(key) for key in obj if key not in known)
        if unknown:
            raise MessageError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        missing = [wire for wire in (w for _, w, _ in cls._WIRE) if wire not in obj]
        if missing:
            raise MessageError(f"{cls.__name__}: missing field(s) {', '.join(missing)}")
        values = {
            name: _value_from_wire(sol, f"{cls.__name__}.{wire}", obj[wire])
            for name, wire, sol in cls._WIRE
        }
        return cls(**values)

    @classmethod
    def eip712_types(cls) -> list[dict[str, str]]:
        """The type as eth-account's ``encode_typed_data`` expects it."""
        return [{"name": wire, "type": sol} for _, wire, sol in cls._WIRE]


#: How many messages' hashes are remembered (a bounded cache: memory stays flat).
HASH_CACHE_SIZE = 16_384


@functools.lru_cache(maxsize=HASH_CACHE_SIZE)
def _struct_hash(message: SignedMessage) -> bytes:
    """``hashStruct(message)``, cached by value: a message is frozen, so equal messages
    (the cache's key) have one hash."""
    values = message._VALUES(message)
    words = [encode(value) for encode, value in zip(message._ENCODERS, values, strict=True)]
    return keccak(message.TYPE_HASH + b"".join(words))


@functools.lru_cache(maxsize=HASH_CACHE_SIZE)
def _digest(message: SignedMessage, domain: Domain) -> bytes:
    return keccak(b"\x19\x01" + domain.separator + _struct_hash(message))


def _eip712(cls: type) -> type:
    """Derive the type string, type hash and codecs of a message class from its fields."""
    fields = attrs.fields(cls)
    cls._WIRE = tuple((f.name, f.metadata["wire"], f.metadata["sol"]) for f in fields)
    cls._ENCODERS = tuple(_encoder(f.metadata["sol"]) for f in fields)
    cls._WIRE_ENCODERS = tuple(
        (f.metadata["wire"], _wire_encoder(f.metadata["sol"])) for f in fields
    )
    cls._VALUES = operator.attrgetter(*(f.name for f in fields))
    members = ",".join(f"{sol} {wire}" for _, wire, sol in cls._WIRE)
    cls.TYPE_STRING = f"{cls.__name__}({members})"
    cls.TYPE_HASH = keccak(cls.TYPE_STRING.encode())
    return cls


@_eip712
@attrs.frozen
class Order(SignedMessage):
    """A client's signed limit order. Its EIP-712 digest is its identifier.

    ``amount`` is positive for a buy and negative for a sell, in base units scaled by
    1e18 as Vertex writes it; ``priceX18`` is the limit price times 1e18;
    ``expiration`` is in unix seconds (as the chain's block timestamps are).
    """

    sender: bytes = _field("bytes32", "sender")
    product_id: int = _field("uint32", "productId")
    price_x18: int = _field("int128", "priceX18")
    amount: int = _field("int128", "amount")
    expiration: int = _field("uint64", "expiration")
    nonce: int = _field("uint64", "nonce")


@_eip712
@attrs.frozen
class Cancellation(SignedMessage):
    """A client's signed request to cancel the orders ``digests`` (one product id each)."""

    sender: bytes = _field("bytes32", "sender")
    product_ids: tuple[int, ...] = _field("uint32[]", "productIds")
    digests: tuple[bytes, ...] = _field("bytes32[]", "digests")
    nonce: int = _field("uint64", "nonce")


@_eip712
@attrs.frozen
class CancellationProducts(SignedMessage):
    """A client's signed request to cancel all its orders in ``product_ids``."""

    sender: bytes = _field("bytes32", "sender")
    product_ids: tuple[int, ...] = _field("uint32[]", "productIds")
    nonce: int = _field("uint64", "nonce")


@_eip712
@attrs.frozen
class Fill(SignedMessage):
    """The operator's signed receipt of one match of the order ``order_digest``.

    (The attribute is ``order_digest`` because ``digest()`` is every message's own
    EIP-712 digest; on the wire and in EIP-712 the field is named ``digest``.)

    ``seq`` is the operator journal's global sequence number; ``amount`` is this fill's
    size and ``filled_total`` the order's cumulative filled size including it.
    """

    order_digest: bytes = _field("bytes32", "digest")
    sender: bytes = _field("bytes32", "sender")
    seq: int = _field("uint64", "seq")
    amount: int = _field("uint128", "amount")
    filled_total: int = _field("uint128", "filledTotal")
    price_x18: int = _field("int128", "priceX18")
    timestamp_ms: int = _field("uint64", "timestampMs")


@_eip712
@attrs.frozen
class CancellationNote(SignedMessage):
    """The operator's signed answer to a cancel: how much of ``order_digest`` had filled.

    The operator promises that the order's cumulative fill never exceeds
    ``filled_amount + pending_amount``, that only fills already in flight (up to
    ``pending_amount``, until ``pending_until_ms``) may still settle, and that every fill
    with ``seq <= last_fill_seq`` is counted in ``filled_amount``; ``last_fill_hash`` is
    the struct hash of the fill at ``last_fill_seq`` (zero when it counts none), so the
    fill it counts is fixed when it is signed. ``request_hash`` is the EIP-712 digest of
    the client request answered (zero when none: an on-chain request).
    """

    order_digest: bytes = _field("bytes32", "digest")
    sender: bytes = _field("bytes32", "sender")
    request_hash: bytes = _field("bytes32", "requestHash")
    filled_amount: int = _field("uint128", "filledAmount")
    last_fill_seq: int = _field("uint64", "lastFillSeq")
    last_fill_hash: bytes = _field("bytes32", "lastFillHash")
    pending_amount: int = _field("uint128", "pendingAmount")
    pending_until_ms: int = _field("uint64", "pendingUntilMs")
    received_at_ms: int = _field("uint64", "receivedAtMs")
    seq: int = _field("uint64", "seq")


@_eip712
@attrs.frozen
class JournalHead(SignedMessage):
    """The operator's signed tree head: its journal's log had ``size`` leaves (seqs ``0 ..
    size - 1``) with Merkle root ``root`` at ``timestamp_ms`` (:mod:`cancelnote.transparency`).

    Signed every ``H`` ms and on request, pushed to every head subscriber, kept by clients
    and watchtowers as evidence: two heads that are not consistent, or a fill numbered at
    or after a head's size but stamped before its time, are offences (protocol §21).
    """

    size: int = _field("uint64", "size")
    root: bytes = _field("bytes32", "root")
    timestamp_ms: int = _field("uint64", "timestampMs")


@_eip712
@attrs.frozen
class Match(SignedMessage):
    """Two orders crossed: what a match leaf of the log commits to (its struct hash).

    Never signed on its own: the operator's heads commit to it. ``maker`` and ``taker``
    are order digests; the match settles (its two fills are signed) at ``settle_at_ms``.
    """

    maker: bytes = _field("bytes32", "maker")
    taker: bytes = _field("bytes32", "taker")
    amount: int = _field("uint128", "amount")
    price_x18: int = _field("int128", "priceX18")
    settle_at_ms: int = _field("uint64", "settleAtMs")


MESSAGE_TYPES: tuple[type[SignedMessage], ...] = (
    Order,
    Cancellation,
    CancellationProducts,
    Fill,
    CancellationNote,
    JournalHead,
    Match,
)


# ---------------------------------------------------------------------------------------
# Signatures, nonces and senders on the wire.


def bytes32_from_wire(name: str, raw: object) -> bytes:
    """Exactly ``0x`` and 64 hex digits (no spaces, no other length), as 32 bytes.

    Raises:
        MessageError: naming ``name``.
    """
    return _value_from_wire("bytes32", name, raw)


def uint64_from_wire(name: str, raw: object) -> int:
    """A uint64 as §6.2 writes one: a decimal string (or a JSON integer).

    Raises:
        MessageError: naming ``name``.
    """
    return _value_from_wire("uint64", name, raw)


def signature_from_wire(raw: object) -> bytes:
    """A 65-byte signature from ``0x`` and 130 hex digits, checked to be canonical."""
    if not isinstance(raw, str) or not _HEX_SIGNATURE.match(raw):
        raise SignatureError(f"signature: expected 0x and 130 hex digits, got {_show(raw)}")
    signature = bytes.fromhex(raw[2:])
    check_signature(signature)
    return signature


def signature_to_wire(signature: bytes) -> str:
    return "0x" + signature.hex()


def make_nonce(recv_time_ms: int, entropy: int | None = None) -> int:
    """``recv_time_ms << 20 | entropy``: the request is void unless received by then.

    ``entropy`` (20 bits) defaults to fresh random bits, so two requests signed in the
    same millisecond still differ.
    """
    if entropy is None:
        entropy = secrets.randbits(NONCE_RANDOM_BITS)
    if not 0 <= entropy < 2**NONCE_RANDOM_BITS:
        raise MessageError(f"nonce entropy must fit in {NONCE_RANDOM_BITS} bits")
    if not 0 <= recv_time_ms < 2 ** (64 - NONCE_RANDOM_BITS):
        raise MessageError(f"recv_time_ms {recv_time_ms} does not fit in a nonce")
    return recv_time_ms << NONCE_RANDOM_BITS | entropy


def nonce_recv_time_ms(nonce: int) -> int:
    """The receive-by time (unix ms) encoded in a nonce."""
    return nonce >> NONCE_RANDOM_BITS


def make_sender(address: str | bytes, subaccount: str = "default") -> bytes:
    """The 32-byte ``sender``: 20-byte address then a 12-byte subaccount name, NUL-padded."""
    try:
        address_bytes = parse_address(address)
    except SignatureError as exc:
        raise MessageError(f"sender: {exc}") from None
    name = subaccount.encode("ascii", errors="strict") if subaccount.isascii() else None
    if name is None or len(name) > SUBACCOUNT_BYTES or b"\x00" in name:
        raise MessageError(
            f"subaccount: at most {SUBACCOUNT_BYTES} ASCII characters, no NUL; got {subaccount!r}"
        )
    return address_bytes + name.ljust(SUBACCOUNT_BYTES, b"\x00")


def sender_address(sender: bytes) -> str:
    """The checksummed owner address of a ``sender``."""
    _check_bytes32("sender", sender)
    return to_checksum(sender[:20])


def sender_subaccount(sender: bytes) -> str:
    """The subaccount name of a ``sender`` (trailing NULs removed)."""
    _check_bytes32("sender", sender)
    name = sender[20:].rstrip(b"\x00")
    try:
        return name.decode("ascii")
    except UnicodeDecodeError:
        raise MessageError(f"sender: subaccount {name!r} is not ASCII") from None


# ---------------------------------------------------------------------------------------
# The wire schema: untrusted JSON decoded straight into typed structs.
#
# A schema decoder follows the schema, not the input: an array where a string is due, or a
# field nobody declared, is refused at its first byte, so the nesting it ever descends is
# the schema's own (a handful of levels), whatever the process's recursion limit. (The
# standard library's C decoder recurses on the input and overflows the C stack, killing
# the process, on ``[[[[...`` once py-evm has raised the recursion limit to 100,000.)

#: ``re.search`` patterns (msgspec's) of the wire's strings.
HEX32_WIRE = Annotated[str, msgspec.Meta(pattern="^" + _HEX32.pattern)]
DECIMAL_WIRE = Annotated[str, msgspec.Meta(pattern="^" + _DECIMAL.pattern)]


def _schema_type(sol: str) -> Any:
    """The msgspec type of one wire value of Solidity type ``sol`` (ranges are checked by
    the message's own validators once it is built)."""
    if sol.endswith("[]"):
        return Annotated[list[_schema_type(sol[:-2])], msgspec.Meta(max_length=MAX_ARRAY_LENGTH)]
    if sol == "bytes32":
        return HEX32_WIRE
    return DECIMAL_WIRE | int


def _from_schema_value(sol: str) -> Callable[[Any], Any]:
    if sol.endswith("[]"):
        item = _from_schema_value(sol[:-2])
        return lambda values: tuple(map(item, values))
    if sol == "bytes32":
        return lambda value: bytes.fromhex(value[2:])
    return lambda value: int(value) if type(value) is str else value


@attrs.frozen
class WireSchema:
    """A signed type's wire form as a msgspec struct, and the way back to the type."""

    message: type[SignedMessage]
    struct: type[msgspec.Struct]
    converters: tuple[Callable[[Any], Any], ...]
    fields: tuple[str, ...]  # wire names, in field order

    def build(self, decoded: msgspec.Struct) -> Any:
        """The message from its decoded struct (the message's validators check ranges).

        Raises:
            MessageError: a value is out of its type's range.
        """
        values = [
            convert(getattr(decoded, name))
            for name, convert in zip(self.fields, self.converters, strict=True)
        ]
        return self.message(*values)


_WIRE_SCHEMAS: dict[type, WireSchema] = {}


def wire_schema(cls: type[SignedMessage]) -> WireSchema:
    """The :class:`WireSchema` of ``cls``, derived from its fields (made once per type)."""
    schema = _WIRE_SCHEMAS.get(cls)
    if schema is None:
        struct = msgspec.defstruct(
            f"{cls.__name__}Wire",
            [(wire, _schema_type(sol)) for _, wire, sol in cls._WIRE],
            forbid_unknown_fields=True,
        )
        converters = tuple(_from_schema_value(sol) for _, _, sol in cls._WIRE)
        fields = tuple(wire for _, wire, _ in cls._WIRE)
        schema = _WIRE_SCHEMAS[cls] = WireSchema(cls, struct, converters, fields)
    return schema


#: Most JSON containers (objects and arrays) a wire message or a journal row may hold.
#: The deepest request (``cancel_and_place``) has seven; counting is one C pass over the
#: text, and bounds the nesting of any decoder that follows, schema or not.
MAX_CONTAINERS = 32


def check_containers(text: str, limit: int = MAX_CONTAINERS) -> None:
    """Refuse JSON text with more than ``limit`` objects and arrays (so nested no deeper).

    Brackets inside strings count too: no string of the protocol holds one.

    Raises:
        MessageError: too many containers.
    """
    if text.count("[") + text.count("{") > limit:
        raise MessageError(f"more than {limit} JSON objects and arrays (or nested deeper)")


# ---------------------------------------------------------------------------------------
# Wallet typed data: what ``eth_signTypedData_v4`` (MetaMask, ethers.js' signTypedData)
# takes, derived from the definitions above so that a wallet signs exactly our digest.

#: The largest integer a JavaScript number holds exactly: a ``chainId`` above it is written
#: as a decimal string, which wallets and ethers.js read as a big integer.
MAX_SAFE_INTEGER = 2**53 - 1
DOMAIN_PRIMARY_TYPE = DOMAIN_TYPE_STRING[: DOMAIN_TYPE_STRING.index("(")]


def domain_types() -> list[dict[str, str]]:
    """The ``EIP712Domain`` type's fields, from :data:`DOMAIN_TYPE_STRING` itself."""
    members = DOMAIN_TYPE_STRING[len(DOMAIN_PRIMARY_TYPE) + 1 : -1].split(",")
    return [{"name": name, "type": sol} for sol, name in (m.split(" ") for m in members)]


def domain_to_json(domain: Domain) -> dict[str, Any]:
    """The domain as typed data writes it (``chainId`` a string above 2**53 - 1)."""
    wire = domain.to_wire()
    if wire["chainId"] > MAX_SAFE_INTEGER:
        wire["chainId"] = str(wire["chainId"])
    return wire


def typed_data(message: SignedMessage, domain: Domain) -> dict[str, Any]:
    """The full ``eth_signTypedData_v4`` object of ``message`` in ``domain``: ``types``
    (with ``EIP712Domain``), ``primaryType``, ``domain`` and ``message`` (its wire form)."""
    name = type(message).__name__
    return {
        "types": {DOMAIN_PRIMARY_TYPE: domain_types(), name: type(message).eip712_types()},
        "primaryType": name,
        "domain": domain_to_json(domain),
        "message": message.to_wire(),
    }


def from_typed_data(obj: object) -> tuple[SignedMessage, Domain]:
    """The message and domain of a typed-data object, checked to be one of ours exactly.

    A wallet signs the types it is shown, so the ``types`` must be this module's, field for
    field; any other list would be another digest.

    Raises:
        MessageError: not a typed-data object of one of :data:`MESSAGE_TYPES`.
    """
    if not isinstance(obj, Mapping) or set(obj) != {"types", "primaryType", "domain", "message"}:
        raise MessageError("typed data: expected types, primaryType, domain and message")
    cls = next((c for c in MESSAGE_TYPES if c.__name__ == obj["primaryType"]), None)
    if cls is None:
        raise MessageError(f"typed data: primaryType {_show(obj['primaryType'])} is not ours")
    expected = {DOMAIN_PRIMARY_TYPE: domain_types(), cls.__name__: cls.eip712_types()}
    if obj["types"] != expected:
        raise MessageError(f"typed data: the types are not those of {cls.__name__} and its domain")
    raw = obj["domain"]
    if not isinstance(raw, Mapping) or set(raw) != {f["name"] for f in domain_types()}:
        raise MessageError(f"typed data: the domain must have exactly {DOMAIN_TYPE_STRING}")
    if not all(isinstance(raw[key], str) for key in ("name", "version", "verifyingContract")):
        raise MessageError("typed data: domain name, version and verifyingContract are strings")
    domain = Domain(
        _value_from_wire("uint256", "domain.chainId", raw["chainId"]),
        raw["verifyingContract"],
        name=raw["name"],
        version=raw["version"],
    )
    return cls.from_wire(obj["message"]), domain
