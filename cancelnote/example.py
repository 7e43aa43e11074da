"""The worked example of docs/protocol.md, computed by the real message and crypto code.

Everything here is fixed (keys, times, entropy), so :func:`render_example` prints the same
bytes on every machine; ``tests/test_protocol_doc.py`` checks that the text pasted into
docs/protocol.md is exactly this output, and that eth-account, an independent EIP-712
implementation, recovers the same signers. Regenerate the doc's block with
``python -m cancelnote.cli example`` (to paste) or
``python -m cancelnote.example docs/protocol.md`` (rewrites the block in place).

The story: a client sells 0.5 of product 2 at a limit of 30,000; 0.2 fills; the client
cancels the rest and the operator answers with a note recording the 0.2 and naming the
fill that filled it (its struct hash).

The two private keys are the well-known keys 1 and 2: never send funds to their addresses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs

from .crypto import Signer, to_checksum
from .messages import (
    DOMAIN_TYPE_STRING,
    NONCE_RANDOM_BITS,
    Cancellation,
    CancellationNote,
    Domain,
    Fill,
    Order,
    SignedMessage,
    make_nonce,
    make_sender,
    nonce_recv_time_ms,
    signature_to_wire,
)

CLIENT_KEY = bytes.fromhex("00" * 31 + "01")
OPERATOR_KEY = bytes.fromhex("00" * 31 + "02")
CHAIN_ID = 1337
#: An arbitrary fixed court address (no contract is deployed for the example).
COURT_ADDRESS = "0x" + "c0" * 20
#: 2026-01-01T00:00:00Z in unix milliseconds: the client signs its order then.
T0_MS = 1_767_225_600_000
X18 = 10**18
#: The markers around the example in docs/protocol.md.
EXAMPLE_BEGIN, EXAMPLE_END = "<!-- example:begin -->\n", "<!-- example:end -->"
_ENCODE_DATA_NOTE = "one 32-byte word per field; an array is keccak256 of its words"


@attrs.frozen
class Example:
    """The example's domain, its two signers, and each message with its signature."""

    domain: Domain
    client: Signer
    operator: Signer
    order: Order
    order_signature: bytes
    cancellation: Cancellation
    cancellation_signature: bytes
    fill: Fill
    fill_signature: bytes
    note: CancellationNote
    note_signature: bytes


def build_example() -> Example:
    """Build and sign the example's four messages."""
    domain = Domain(chain_id=CHAIN_ID, verifying_contract=COURT_ADDRESS)
    client, operator = Signer(CLIENT_KEY), Signer(OPERATOR_KEY)
    sender = make_sender(client.address, "default")
    order = Order(
        sender=sender,
        product_id=2,
        price_x18=30_000 * X18,
        amount=-X18 // 2,  # a sell of 0.5: negative int128
        expiration=T0_MS // 1000 + 3600,  # unix seconds: one hour later
        nonce=make_nonce(T0_MS + 90_000, 0x0A11C),
    )
    order_digest = order.digest(domain)
    fill = Fill(
        order_digest=order_digest,
        sender=sender,
        seq=41,
        amount=X18 // 5,
        filled_total=X18 // 5,
        price_x18=30_010 * X18,
        timestamp_ms=T0_MS + 1_500,
    )
    cancellation = Cancellation(
        sender=sender,
        product_ids=(2,),
        digests=(order_digest,),
        nonce=make_nonce(T0_MS + 60_000 + 90_000, 0xC0FFE),
    )
    note = CancellationNote(
        order_digest=order_digest,
        sender=sender,
        request_hash=cancellation.digest(domain),
        filled_amount=fill.filled_total,
        last_fill_seq=fill.seq,
        last_fill_hash=fill.struct_hash(),
        pending_amount=0,
        pending_until_ms=0,
        received_at_ms=T0_MS + 60_012,
        seq=57,
    )
    return Example(
        domain=domain,
        client=client,
        operator=operator,
        order=order,
        order_signature=order.sign(client, domain),
        cancellation=cancellation,
        cancellation_signature=cancellation.sign(client, domain),
        fill=fill,
        fill_signature=fill.sign(operator, domain),
        note=note,
        note_signature=note.sign(operator, domain),
    )


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _fence(language: str, body: str) -> str:
    return f"```{language}\n{body}\n```\n"


def _message_section(
    title: str,
    message: SignedMessage,
    signature: bytes,
    domain: Domain,
    extra: list[tuple[str, str]],
) -> str:
    rows = [
        ("type string", message.TYPE_STRING),
        ("type hash", _hex(message.TYPE_HASH)),
        *extra,
        ("struct hash", _hex(message.struct_hash())),
        ("EIP-712 digest", _hex(message.digest(domain))),
        ("signature", signature_to_wire(signature)),
    ]
    wire: dict[str, Any] = message.to_wire()
    return (
        f"### {title}\n\n"
        + _fence("text", _table(rows))
        + "\n"
        + _fence("json", json.dumps(wire, indent=2))
    )


def _encoded_words(message: SignedMessage) -> list[tuple[str, str]]:
    """``encodeData`` of each field: the 32-byte word that goes into the struct hash."""
    words = [(f"  {wire}", _hex(word)) for wire, word in message.encoded_fields()]
    return [("encodeData", _ENCODE_DATA_NOTE), *words]


def _nonce_row(nonce: int) -> tuple[str, str]:
    entropy = nonce & (2**NONCE_RANDOM_BITS - 1)
    return ("nonce", f"{nonce} = {nonce_recv_time_ms(nonce)} << 20 | {entropy:#07x}")


def render_example() -> str:
    """The worked example as Markdown: fenced ``text`` tables and ``json`` wire forms."""
    ex = build_example()
    domain = ex.domain
    parties = _table(
        [
            ("client key", _hex(ex.client.secret)),
            ("client address", ex.client.checksum_address),
            ("sender", _hex(ex.order.sender) + "  (address ‖ 'default' NUL-padded)"),
            ("operator key", _hex(ex.operator.secret)),
            ("operator address", ex.operator.checksum_address),
            ("domain type", DOMAIN_TYPE_STRING),
            ("chainId", str(domain.chain_id)),
            ("verifyingContract", to_checksum(domain.verifying_contract)),
            ("domain separator", _hex(domain.separator)),
        ]
    )
    order_extra = [_nonce_row(ex.order.nonce), *_encoded_words(ex.order)]
    cancel_extra = [_nonce_row(ex.cancellation.nonce), *_encoded_words(ex.cancellation)]
    return "\n".join(
        [
            "### Parties and domain\n\n" + _fence("text", parties),
            _message_section(
                "Order (client-signed; its digest is the order id)",
                ex.order,
                ex.order_signature,
                domain,
                order_extra,
            ),
            _message_section("Fill (operator-signed)", ex.fill, ex.fill_signature, domain, []),
            _message_section(
                "Cancellation (client-signed)",
                ex.cancellation,
                ex.cancellation_signature,
                domain,
                cancel_extra,
            ),
            _message_section(
                "CancellationNote (operator-signed; requestHash = the Cancellation's digest,"
                " lastFillHash = the Fill's struct hash)",
                ex.note,
                ex.note_signature,
                domain,
                [],
            ),
        ]
    )


def update_doc(path: Path) -> bool:
    """Replace the text between the example markers in ``path``; True if it changed."""
    return replace_block(path, EXAMPLE_BEGIN, EXAMPLE_END, render_example())


def replace_block(path: Path, begin: str, end: str, block: str) -> bool:
    """Replace the text between the markers ``begin`` and ``end`` in ``path`` with
    ``block``; True if it changed."""
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition(begin)
    _, sep_end, tail = rest.partition(end)
    if not sep or not sep_end:
        raise SystemExit(f"{path}: no {begin.strip()} ... {end} markers")
    new = head + begin + block + end + tail
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


if __name__ == "__main__":  # python -m cancelnote.example docs/protocol.md
    for name in sys.argv[1:]:
        print(f"{name}: {'updated' if update_doc(Path(name)) else 'unchanged'}")
