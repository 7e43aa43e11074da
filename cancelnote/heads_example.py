"""The journal-heads worked example of docs/protocol.md §21.9, computed by the real code.

It continues the worked example of §17 (:mod:`cancelnote.example`): the client's order is
accepted at seq 1, other entries fill the log, the match that fills 0.2 of the order is
leaf 40 and its fill leaf 41, the cancel is received at seq 56 and its note is leaf 57.
The operator signs a head after the fill (size 42) and one after the note (size 58); the
fill's inclusion proof in the second and the consistency proof from the first to the
second are printed with every byte a verifier needs. ``tests/test_heads_doc.py`` checks
that the block in the document is this output; regenerate it with
``python -m cancelnote.heads_example docs/protocol.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .crypto import keccak
from .example import T0_MS, Example, build_example, replace_block
from .messages import JournalHead, Match
from .transparency import Leaf, LeafKind, MemoryNodes, genesis_leaf, verify_consistency

#: The markers around the block in docs/protocol.md.
BEGIN, END = "<!-- heads-example:begin -->\n", "<!-- heads-example:end -->"
#: The counterparty's order id in the example (an order the example does not show).
TAKER = keccak(b"the example's counterparty")


def build_log(example: Example) -> tuple[list[Leaf], MemoryNodes]:
    """The 58 leaves of the example's log, and its tree: the order at 1, other clients'
    orders, the match at 40 and its fill at 41 (when §17's fill settled), more orders, the
    cancel at 56 and its note at 57 (when §17's note says the cancel was received)."""
    domain = example.domain
    fill, note = example.fill, example.note
    match = Match(
        example.order.digest(domain), TAKER, fill.amount, fill.price_x18, fill.timestamp_ms
    )
    special = {
        1: Leaf(LeafKind.ORDER, T0_MS, 0, example.order.struct_hash()),
        40: Leaf(LeafKind.MATCH, fill.timestamp_ms, 0, match.struct_hash()),
        41: Leaf(LeafKind.FILL, fill.timestamp_ms, 40, fill.struct_hash()),
        56: Leaf(LeafKind.CANCEL, note.received_at_ms, 0, example.cancellation.struct_hash()),
        57: Leaf(LeafKind.NOTE, note.received_at_ms, 0, note.struct_hash()),
    }
    leaves = [genesis_leaf(domain, example.operator.address)]
    for seq in range(1, 58):
        at_ms = T0_MS + 10 * seq if seq < 40 else fill.timestamp_ms + 1_000 * (seq - 41)
        other = Leaf(LeafKind.ORDER, at_ms, 0, keccak(b"another order" + seq.to_bytes(2, "big")))
        leaves.append(special.get(seq, other))
    nodes = MemoryNodes()
    for leaf in leaves:
        nodes.append(leaf.hash())
    return leaves, nodes


def render() -> str:
    """The example as it is pasted into docs/protocol.md."""
    example = build_example()
    domain = example.domain
    leaves, nodes = build_log(example)
    times = [leaf.timestamp_ms for leaf in leaves[1:]]
    assert times == sorted(times)
    first = JournalHead(42, nodes.root(42), example.fill.timestamp_ms + 5)
    second = JournalHead(58, nodes.root(58), example.note.received_at_ms + 40)
    inclusion = nodes.inclusion(41, 58)
    consistency = nodes.consistency(42, 58)
    verify_consistency(42, 58, first.root, second.root, consistency)
    fill_leaf = leaves[41]
    lines = [
        "```text",
        "genesis leaf     content = keccak256(domainSeparator ‖ operator)",
        f"                        = 0x{leaves[0].content.hex()}",
        f"fill leaf (41)   data    = 0x{fill_leaf.data().hex()}",
        "                 (kind 6 ‖ timestampMs ‖ ref 40: its match ‖ the Fill's struct hash)",
        f"                 hash    = keccak256(0x00 ‖ data) = 0x{fill_leaf.hash().hex()}",
        f"match leaf (40)  hash    = 0x{leaves[40].hash().hex()}",
        "",
    ]
    for head in (first, second):
        signature = head.sign(example.operator, domain)
        lines += [
            f"JournalHead      size {head.size}, timestampMs {head.timestamp_ms}",
            f"  root           0x{head.root.hex()}",
            f"  struct hash    0x{head.struct_hash().hex()}",
            f"  EIP-712 digest 0x{head.digest(domain).hex()}",
            f"  signature      0x{signature.hex()}",
        ]
    lines += ["", "inclusion of leaf 41 in the head of 58 leaves (PATH(41, D[58])):"]
    lines += [f"  0x{node.hex()}" for node in inclusion]
    lines += ["consistency from 42 to 58 leaves (SUBPROOF(42, D[58], false)):"]
    lines += [f"  0x{node.hex()}" for node in consistency]
    lines += ["```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m cancelnote.heads_example docs/protocol.md
    for name in sys.argv[1:]:
        changed = replace_block(Path(name), BEGIN, END, render())
        print(f"{name}: {'updated' if changed else 'unchanged'}")
