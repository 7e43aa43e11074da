"""The journal-heads worked example of docs/protocol.md §21.9 is the code's output, and an
independent EIP-712 implementation (eth-account) recovers the operator from its heads."""

from __future__ import annotations

from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_typed_data
from test_protocol_doc import _full_message

from cancelnote.example import build_example
from cancelnote.heads_example import BEGIN, END, build_log, render
from cancelnote.messages import JournalHead
from cancelnote.transparency import verify_inclusion

PROTOCOL_MD = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def test_heads_example_in_doc_is_the_output_of_render():
    doc = PROTOCOL_MD.read_text(encoding="utf-8")
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1
    pasted = doc.split(BEGIN, 1)[1].split(END, 1)[0]
    assert pasted == render(), "regenerate: python -m cancelnote.heads_example docs/protocol.md"


def test_eth_account_recovers_the_operator_from_an_example_head():
    example = build_example()
    _, nodes = build_log(example)
    head = JournalHead(58, nodes.root(58), 1_767_225_660_052)
    typed = _full_message(head, example)
    signature = head.sign(example.operator, example.domain)
    recovered = Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    assert recovered == example.operator.checksum_address


def test_the_example_fill_is_in_the_example_head():
    example = build_example()
    leaves, nodes = build_log(example)
    assert leaves[41].content == example.fill.struct_hash() and leaves[41].ref == 40
    verify_inclusion(41, 58, leaves[41].hash(), nodes.inclusion(41, 58), nodes.root(58))
    times = [leaf.timestamp_ms for leaf in leaves[1:]]
    assert times == sorted(times)
