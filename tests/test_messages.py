"""messages.py against eth-account (an independent EIP-712 implementation) and the spec."""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from cancelnote.crypto import SECP256K1_N, Signer, keccak, recover_address, to_checksum
from cancelnote.errors import MessageError, SignatureError
from cancelnote.messages import (
    MAX_ARRAY_LENGTH,
    MESSAGE_TYPES,
    Cancellation,
    CancellationNote,
    CancellationProducts,
    Domain,
    Fill,
    Order,
    SignedMessage,
    bytes32_from_wire,
    make_nonce,
    make_sender,
    nonce_recv_time_ms,
    sender_address,
    sender_subaccount,
    signature_from_wire,
    signature_to_wire,
)

DOMAIN = Domain(1337, "0x" + "c0" * 20)
CLIENT = Signer(keccak(b"test client"))
OTHER = Signer(keccak(b"test other"))

_RANGES = {
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "uint128": (0, 2**128 - 1),
    "int128": (-(2**127), 2**127 - 1),
}


def value_strategy(sol: str, max_array: int = 12) -> st.SearchStrategy[Any]:
    """Values over the type's full range, boundaries included explicitly."""
    if sol.endswith("[]"):
        return st.lists(value_strategy(sol[:-2]), max_size=max_array).map(tuple)
    if sol == "bytes32":
        return st.binary(min_size=32, max_size=32)
    low, high = _RANGES[sol]
    return st.sampled_from([low, high, 0, 1, high - 1]) | st.integers(low, high)


def message_strategy(cls: type[SignedMessage]) -> st.SearchStrategy[SignedMessage]:
    fields = attrs.fields(cls)
    return st.builds(cls, **{f.name: value_strategy(f.metadata["sol"]) for f in fields})


any_message = st.one_of([message_strategy(cls) for cls in MESSAGE_TYPES])


def eth_account_signable(message: SignedMessage, domain: Domain):
    """The same message as eth-account builds it from scratch."""
    data = {
        f.metadata["wire"]: list(getattr(message, f.name))
        if f.metadata["sol"].endswith("[]")
        else getattr(message, f.name)
        for f in attrs.fields(type(message))
    }
    return encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                type(message).__name__: type(message).eip712_types(),
            },
            "primaryType": type(message).__name__,
            "domain": domain.to_wire(),
            "message": data,
        }
    )


@settings(max_examples=60, deadline=None)
@given(message=any_message)
def test_digest_and_signature_agree_with_eth_account(message: SignedMessage) -> None:
    signable = eth_account_signable(message, DOMAIN)
    reference = Account.sign_message(signable, CLIENT.secret)
    assert message.digest(DOMAIN) == reference.message_hash
    assert message.sign(CLIENT, DOMAIN) == reference.signature
    assert message.recover(reference.signature, DOMAIN) == CLIENT.checksum_address


@pytest.mark.parametrize("length", [0, 1, MAX_ARRAY_LENGTH])
def test_empty_and_longest_arrays_agree_with_eth_account(length: int) -> None:
    digests = [bytes([i % 256]) * 32 for i in range(length)]
    for message in (
        Cancellation(b"\x01" * 32, [7] * length, digests, 5),
        CancellationProducts(b"\x01" * 32, list(range(length)), 5),
    ):
        reference = Account.sign_message(eth_account_signable(message, DOMAIN), CLIENT.secret)
        assert message.digest(DOMAIN) == reference.message_hash


def test_eip712_spec_mail_vector() -> None:
    """The Mail example of EIP-712 itself: domain separator, digest, signature, signer."""
    domain = Domain(1, "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC", name="Ether Mail", version="1")
    assert domain.separator.hex() == (
        "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
    )
    person_type = keccak(b"Person(string name,address wallet)")
    mail_type = keccak(
        b"Mail(Person from,Person to,string contents)Person(string name,address wallet)"
    )

    def person(name: bytes, wallet: str) -> bytes:
        return keccak(person_type + keccak(name) + bytes(12) + bytes.fromhex(wallet))

    mail = keccak(
        mail_type
        + person(b"Cow", "CD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826")
        + person(b"Bob", "bBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB")
        + keccak(b"Hello, Bob!")
    )
    digest = keccak(b"\x19\x01" + domain.separator + mail)
    assert digest.hex() == "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    signature = Signer(keccak(b"cow")).sign_hash(digest)
    assert signature.hex() == (
        "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
        "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
        "1c"
    )
    assert to_checksum(recover_address(digest, signature)) == (
        "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
    )


@settings(max_examples=60, deadline=None)
@given(message=any_message)
def test_wire_form_round_trips_through_json(message: SignedMessage) -> None:
    wire = json.loads(json.dumps(message.to_wire()))
    assert type(message).from_wire(wire) == message


def make_note(**changes: Any) -> CancellationNote:
    note = CancellationNote(
        order_digest=b"\xaa" * 32,
        sender=make_sender(CLIENT.address),
        request_hash=b"\xbb" * 32,
        filled_amount=3 * 10**18,
        last_fill_seq=41,
        last_fill_hash=b"\xcc" * 32,
        pending_amount=0,
        pending_until_ms=0,
        received_at_ms=1_700_000_000_000,
        seq=42,
    )
    return attrs.evolve(note, **changes)


def test_signature_by_another_key_is_rejected() -> None:
    note = make_note()
    signature = note.sign(OTHER, DOMAIN)
    with pytest.raises(SignatureError, match="expected"):
        note.verify(signature, DOMAIN, CLIENT.address)


@pytest.mark.parametrize(
    "other_domain",
    [Domain(1338, DOMAIN.verifying_contract), Domain(1337, b"\xc1" * 20)],
    ids=["wrong-chain-id", "wrong-verifying-contract"],
)
def test_signature_does_not_verify_in_another_domain(other_domain: Domain) -> None:
    note = make_note()
    signature = note.sign(CLIENT, DOMAIN)
    note.verify(signature, DOMAIN, CLIENT.address)
    with pytest.raises(SignatureError):
        note.verify(signature, other_domain, CLIENT.address)


def test_high_s_twin_is_rejected() -> None:
    note = make_note()
    signature = note.sign(CLIENT, DOMAIN)
    s = int.from_bytes(signature[32:64], "big")
    twin = signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - signature[64],))
    # The twin is a valid ECDSA signature by the same key: only the low-s rule rejects it.
    with pytest.raises(SignatureError, match="high"):
        note.verify(twin, DOMAIN, CLIENT.address)


@pytest.mark.parametrize(
    ("mangle", "complaint"),
    [
        (lambda sig: sig[:64], "65 bytes"),
        (lambda sig: sig[:64] + b"\x01", "v must be 27 or 28"),
        (lambda sig: bytes(32) + sig[32:], "r is out of range"),
        (lambda sig: sig[:32] + bytes(32) + sig[64:], "s is zero"),
        (lambda sig: SECP256K1_N.to_bytes(32, "big") + sig[32:], "r is out of range"),
    ],
)
def test_malformed_signatures_are_rejected(mangle, complaint: str) -> None:
    signature = make_note().sign(CLIENT, DOMAIN)
    with pytest.raises(SignatureError, match=complaint):
        make_note().recover(mangle(signature), DOMAIN)


def test_zero_address_is_never_an_accepted_signer() -> None:
    note = make_note()
    with pytest.raises(SignatureError, match="zero address"):
        note.verify(note.sign(CLIENT, DOMAIN), DOMAIN, bytes(20))


def test_signature_wire_form_is_checked() -> None:
    signature = make_note().sign(CLIENT, DOMAIN)
    assert signature_from_wire(signature_to_wire(signature)) == signature
    with pytest.raises(SignatureError):
        signature_from_wire("0x" + "ab" * 64)
    with pytest.raises(SignatureError):
        signature_from_wire(signature.hex())


ORDER_WIRE = Order(
    make_sender(CLIENT.address), 1, 10**18, -(10**18), 1_700_000_000, make_nonce(5, 1)
).to_wire()


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"priceX18": None}, "Order.priceX18: expected an integer"),
        ({"priceX18": 1.5}, "Order.priceX18: expected an integer"),
        ({"priceX18": True}, "Order.priceX18: expected an integer"),
        ({"priceX18": "01"}, "Order.priceX18: expected a decimal"),
        ({"priceX18": "0x10"}, "Order.priceX18: expected a decimal"),
        ({"priceX18": str(2**127)}, "out of range for int128"),
        ({"priceX18": "9" * 79}, "Order.priceX18: expected a decimal"),
        ({"priceX18": "9" * 5000}, "Order.priceX18: expected a decimal"),
        ({"amount": str(-(2**127) - 1)}, "out of range for int128"),
        ({"expiration": "-1"}, "Order.expiration: -1 is out of range for uint64"),
        ({"nonce": str(2**64)}, "out of range for uint64"),
        ({"productId": 2**32}, "out of range for uint32"),
        ({"productId": "1"}, None),  # a decimal string is accepted for any integer
        ({"sender": "0x1234"}, "Order.sender: expected 0x and 64 hex digits"),
        ({"sender": "0x" + "zz" * 32}, "Order.sender: expected 0x and 64 hex digits"),
        ({"sender": "ab" * 33}, "Order.sender: expected 0x and 64 hex digits"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_malformed_wire_fields_are_rejected_with_the_field_named(
    change: dict[str, object], complaint: str | None
) -> None:
    wire = {**ORDER_WIRE, **change}
    if complaint is None:
        Order.from_wire(wire)
        return
    with pytest.raises(MessageError, match=re.escape(complaint)):
        Order.from_wire(wire)


def test_missing_field_is_rejected() -> None:
    wire = dict(ORDER_WIRE)
    del wire["nonce"]
    with pytest.raises(MessageError, match="missing field"):
        Order.from_wire(wire)


@pytest.mark.parametrize("wire", [[], "order", None, 7])
def test_non_object_is_rejected(wire: object) -> None:
    with pytest.raises(MessageError, match="expected a JSON object"):
        Order.from_wire(wire)


def test_arrays_are_bounded_and_typed() -> None:
    base = Cancellation(b"\x01" * 32, [], [], 1).to_wire()
    with pytest.raises(MessageError, match="at most"):
        Cancellation.from_wire({**base, "productIds": [1] * (MAX_ARRAY_LENGTH + 1)})
    with pytest.raises(MessageError, match=r"Cancellation\.digests\[1\]"):
        Cancellation.from_wire({**base, "digests": ["0x" + "00" * 32, "0x00"]})
    with pytest.raises(MessageError, match="expected a JSON array"):
        Cancellation.from_wire({**base, "digests": "0x" + "00" * 32})


def test_constructor_validates_like_the_wire() -> None:
    with pytest.raises(MessageError, match=r"Fill\.sender: expected 32 bytes, got 31 bytes"):
        Fill(b"\x00" * 32, b"\x00" * 31, 1, 1, 1, 1, 1)
    with pytest.raises(MessageError, match=re.escape("Fill.amount: -1 is out of range")):
        Fill(b"\x00" * 32, b"\x00" * 32, 1, -1, 1, 1, 1)


def test_messages_are_immutable_and_hashable() -> None:
    note = make_note()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        note.seq = 1  # type: ignore[misc]
    assert hash(note) == hash(make_note())
    cancel = Cancellation(b"\x01" * 32, [1, 2], [b"\x02" * 32, b"\x03" * 32], 9)
    assert cancel.product_ids == (1, 2)


def test_type_strings_are_the_protocol_ones() -> None:
    assert Fill.TYPE_STRING == (
        "Fill(bytes32 digest,bytes32 sender,uint64 seq,uint128 amount,uint128 filledTotal,"
        "int128 priceX18,uint64 timestampMs)"
    )
    assert Cancellation.TYPE_STRING == (
        "Cancellation(bytes32 sender,uint32[] productIds,bytes32[] digests,uint64 nonce)"
    )


@given(recv_time_ms=st.integers(0, 2**44 - 1), entropy=st.integers(0, 2**20 - 1))
def test_nonce_encodes_the_receive_by_time(recv_time_ms: int, entropy: int) -> None:
    nonce = make_nonce(recv_time_ms, entropy)
    assert nonce < 2**64
    assert nonce_recv_time_ms(nonce) == recv_time_ms
    assert nonce & (2**20 - 1) == entropy


def test_nonce_rejects_what_does_not_fit() -> None:
    with pytest.raises(MessageError):
        make_nonce(2**44)
    with pytest.raises(MessageError):
        make_nonce(1, 2**20)


@given(name=st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=12))
def test_sender_round_trips_address_and_subaccount(name: str) -> None:
    sender = make_sender(CLIENT.checksum_address, name)
    assert len(sender) == 32
    assert sender_address(sender) == CLIENT.checksum_address
    assert sender_subaccount(sender) == name


@pytest.mark.parametrize("name", ["x" * 13, "nul\x00", "é"])
def test_sender_rejects_bad_subaccounts(name: str) -> None:
    with pytest.raises(MessageError, match="subaccount"):
        make_sender(CLIENT.address, name)


@pytest.mark.parametrize("contract", ["0x1234", "c0" * 20, b"\x00" * 19, "0x" + "g0" * 20], ids=str)
def test_domain_rejects_a_malformed_verifying_contract(contract: object) -> None:
    with pytest.raises(MessageError, match="verifyingContract"):
        Domain(1, contract)  # type: ignore[arg-type]


@pytest.mark.parametrize("chain_id", [0, -1, 2**256])
def test_domain_rejects_a_bad_chain_id(chain_id: int) -> None:
    with pytest.raises(MessageError, match="chainId"):
        Domain(chain_id, b"\x00" * 20)


@pytest.mark.parametrize(
    "raw",
    [
        "0x" + "ab" * 22 + " " * 20,
        "0x" + "ab" * 31 + " a",
        "0X" + "ab" * 32,
        "0x" + "ab" * 32 + "\n",
    ],
)
def test_bytes32_is_exactly_0x_and_64_hex_digits(raw: str) -> None:
    # bytes.fromhex alone would skip the spaces and return fewer than 32 bytes
    with pytest.raises(MessageError, match=r"order\.digest: expected 0x and 64 hex digits"):
        bytes32_from_wire("order.digest", raw)
    assert bytes32_from_wire("order.digest", "0x" + "ab" * 32) == b"\xab" * 32
