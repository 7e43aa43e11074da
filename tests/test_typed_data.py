"""Wallet typed data: every signed type as ``eth_signTypedData_v4`` takes it, signed by a
wallet (eth-account, from the JSON alone) and read back strictly."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st
from test_messages import CLIENT, any_message

from cancelnote.errors import MessageError
from cancelnote.messages import (
    DOMAIN_TYPE_STRING,
    MAX_SAFE_INTEGER,
    Domain,
    Order,
    SignedMessage,
    domain_types,
    from_typed_data,
    make_sender,
    typed_data,
)

COURT = "0x" + "c0" * 20
chain_ids = st.sampled_from([1, 1337, MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, 2**256 - 1])


@settings(max_examples=60, deadline=None)
@given(message=any_message, chain_id=chain_ids)
def test_a_wallet_signing_the_json_signs_our_digest(message: SignedMessage, chain_id: int):
    domain = Domain(chain_id, COURT)
    document = json.loads(json.dumps(typed_data(message, domain)))  # what a browser gets
    signed = Account.sign_typed_data(CLIENT.secret, full_message=document)
    assert signed.message_hash == message.digest(domain)
    assert message.recover(signed.signature, domain) == CLIENT.checksum_address
    assert from_typed_data(document) == (message, domain)


@given(chain_id=chain_ids)
def test_chain_id_is_a_number_only_where_javascript_holds_it_exactly(chain_id: int):
    written = typed_data(Order(bytes(32), 1, 1, 1, 1, 1), Domain(chain_id, COURT))["domain"]
    expected = chain_id if chain_id <= MAX_SAFE_INTEGER else str(chain_id)
    assert written["chainId"] == expected


def test_the_domain_type_is_the_type_string_field_for_field():
    members = ",".join(f"{f['type']} {f['name']}" for f in domain_types())
    assert f"EIP712Domain({members})" == DOMAIN_TYPE_STRING
    assert set(typed_data(Order(bytes(32), 1, 1, 1, 1, 1), Domain(1, COURT))["domain"]) == {
        f["name"] for f in domain_types()
    }


def test_typed_data_is_the_shape_wallets_take():
    order = Order(make_sender(CLIENT.address), 1, -(10**20), 2 * 10**18, 1_900_000_000, 7)
    document = typed_data(order, Domain(1337, COURT))
    assert document["primaryType"] == "Order"
    assert list(document["types"]) == ["EIP712Domain", "Order"]
    assert document["message"]["priceX18"] == str(-(10**20))  # big integers as strings
    encode_typed_data(full_message=document)  # eth-account accepts it as it is


def _edited(**changes: object) -> dict:
    document = typed_data(Order(bytes(32), 1, 1, 1, 1, 1), Domain(1, COURT))
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"types": {}}, "expected types, primaryType, domain and message"),
        (_edited(primaryType="Mail"), "primaryType 'Mail' is not ours"),
        (
            _edited(types={"EIP712Domain": domain_types(), "Order": [{"name": "x", "type": "u"}]}),
            "the types are not those of Order",
        ),
        (_edited(domain={"name": "cancelnote"}), "the domain must have exactly"),
        (
            _edited(domain={**_edited()["domain"], "chainId": "0x1"}),
            "domain.chainId: expected a decimal integer string",
        ),
        (_edited(message={"sender": "0x00"}), "Order: missing field(s) productId"),
    ],
    ids=["shape", "primary type", "types", "domain keys", "chain id", "message"],
)
def test_typed_data_that_is_not_exactly_ours_is_refused(document: dict, complaint: str):
    with pytest.raises(MessageError) as refused:
        from_typed_data(document)
    assert complaint in str(refused.value)
