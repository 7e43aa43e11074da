"""docs/protocol.md agrees with the code, and eth-account agrees with both.

The worked example in the specification is pasted output of ``cancelnote example``; these
tests keep it so (regenerate with ``python -m cancelnote.cli example``), check that every
type string is written in the spec verbatim, and let eth-account, an independent EIP-712
implementation, hash and recover every signature of the example.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from cancelnote.crypto import keccak
from cancelnote.example import (
    EXAMPLE_BEGIN,
    EXAMPLE_END,
    Example,
    build_example,
    render_example,
)
from cancelnote.messages import MESSAGE_TYPES, SignedMessage

PROTOCOL_MD = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
BEGIN, END = EXAMPLE_BEGIN, EXAMPLE_END


def _doc() -> str:
    return PROTOCOL_MD.read_text(encoding="utf-8")


def _signed(example: Example) -> list[tuple[SignedMessage, bytes, str]]:
    """(message, signature, expected signer) for each message of the example."""
    client, operator = example.client.checksum_address, example.operator.checksum_address
    return [
        (example.order, example.order_signature, client),
        (example.cancellation, example.cancellation_signature, client),
        (example.fill, example.fill_signature, operator),
        (example.note, example.note_signature, operator),
    ]


def _full_message(message: SignedMessage, example: Example) -> dict:
    """The message as eth-account's ``encode_typed_data(full_message=...)`` takes it."""
    values = {
        wire: list(value) if isinstance(value := getattr(message, name), tuple) else value
        for name, wire, _ in message._WIRE
    }
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            type(message).__name__: message.eip712_types(),
        },
        "primaryType": type(message).__name__,
        "domain": example.domain.to_wire(),
        "message": values,
    }


def test_example_in_doc_is_the_output_of_render_example():
    doc = _doc()
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1, "one pair of example markers"
    pasted = doc.split(BEGIN, 1)[1].split(END, 1)[0]
    assert pasted == render_example(), "regenerate with: python -m cancelnote.cli example"


def test_render_example_is_deterministic():
    assert render_example() == render_example()


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_doc_states_every_type_string_verbatim(message_type):
    assert f"`{message_type.TYPE_STRING}`" in _doc()


@pytest.mark.parametrize("index", range(4), ids=["Order", "Cancellation", "Fill", "Note"])
def test_eth_account_recovers_example_signer(index):
    example = build_example()
    message, signature, expected = _signed(example)[index]
    signable = encode_typed_data(full_message=_full_message(message, example))
    assert keccak(b"\x19" + signable.version + signable.header + signable.body) == (
        message.digest(example.domain)
    )
    assert Account.recover_message(signable, signature=signature) == expected


def test_example_note_answers_the_example_cancel():
    example = build_example()
    order_digest = example.order.digest(example.domain)
    assert example.note.request_hash == example.cancellation.digest(example.domain)
    assert example.note.order_digest == example.fill.order_digest == order_digest
    assert example.cancellation.digests == (order_digest,)
    assert example.note.filled_amount == example.fill.filled_total
    assert example.note.last_fill_seq == example.fill.seq < example.note.seq
