"""The journal as a transparency log: RFC 9162's Merkle tree, its proofs, and its leaves.

Shared by both sides of the wire and by the court: the operator builds the tree and
serves proofs from it, clients and watchtowers verify them, and the court's bytecode
(``contracts/HeadsCourt.vy``) runs the same verification, which ``tests/test_heads_court.py``
checks against these functions for random trees.

**The tree** is RFC 9162 §2.1 exactly, with HASH = keccak-256 (the EVM's own hash: a node
costs the court 36 gas of hashing, the SHA-256 precompile about four times that)::

    leaf hash   HASH(0x00 || leaf data)
    node hash   HASH(0x01 || left || right)
    MTH(D[n])   HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of 2 below n

Every algorithm takes a :class:`Hasher`, so the tests run them with SHA-256 against the
published RFC 6962/9162 vectors as well.

**Proofs.** An inclusion proof is RFC 9162's ``PATH(m, D[n])`` and is verified by its
§2.1.3.2. A consistency proof is ``SUBPROOF(m, D[n], false)``: RFC 9162's ``PROOF(m,
D[n])`` except that, when ``m`` is a power of two, the node ``MTH(D[0:m])``, which RFC
9162 leaves out because an honest verifier already holds it, is written out first. It is
verified by §2.1.4.2 without its step 2 (nothing is prepended). The explicit node is what
makes a proof evidence: a proof whose walk yields the second head's root but not the
first head's (:func:`proves_inconsistency`) shows that the first head is not a prefix of
the second, for every pair of sizes, and the court slashes on it.

**The incremental tree.** :class:`CompactTree` holds only the right border (at most one
complete subtree per bit of the size) and appends in O(log n) (amortised O(1) hashes);
each complete subtree it finishes is handed to a :class:`NodeStore`, from which proofs
for any leaf against any earlier size are built with O(log n) lookups.

**Leaves.** Leaf ``i`` of the log is journal entry ``seq = i``; leaf 0 is the genesis leaf
binding the log to its operator and domain, so a head of size ``n`` covers seqs
``0 .. n-1``. A leaf's data is 49 bytes, ``kind (1) || timestampMs (8) || ref (8) ||
content (32)``: ``content`` is the EIP-712 struct hash of the entry's message (an order,
a cancel request, a match, a fill, a note), ``ref`` a seq the entry refers to (a fill's
match, a released cancel) or 0, and timestamps never decrease with the index.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from .crypto import keccak
from .errors import MessageError
from .messages import (
    Domain,
    JournalHead,
    bytes32_from_wire,
    signature_from_wire,
    signature_to_wire,
    uint64_from_wire,
)

#: Most nodes in a proof the court takes (any proof of a log below 2**63 leaves fits).
MAX_PROOF_NODES = 64
#: Largest log size whose proofs fit :data:`MAX_PROOF_NODES`.
MAX_LOG_SIZE = 2**63 - 1


class ProofError(MessageError):
    """Raised when a Merkle proof is malformed or does not verify."""

    code = "INVALID_PROOF"


@attrs.frozen
class Hasher:
    """RFC 9162's HASH with its domain separation: leaves ``0x00``, nodes ``0x01``."""

    digest: Callable[[bytes], bytes]

    def leaf(self, data: bytes) -> bytes:
        return self.digest(b"\x00" + data)

    def node(self, left: bytes, right: bytes) -> bytes:
        return self.digest(b"\x01" + left + right)

    def empty(self) -> bytes:
        """MTH of the empty list."""
        return self.digest(b"")


KECCAK = Hasher(keccak)
SHA256 = Hasher(lambda data: hashlib.sha256(data).digest())

NodeLookup = Callable[[int, int], bytes]


class NodeStore(Protocol):
    """Where the hashes of complete subtrees are kept: ``(level, index)`` is the subtree of
    leaves ``[index * 2**level, (index + 1) * 2**level)``."""

    def node(self, level: int, index: int) -> bytes: ...


def largest_power_of_two_below(n: int) -> int:
    """The ``k`` of RFC 9162's split: the largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _blocks(start: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees ``(level, index)`` that make up leaves ``[start, end)``, left
    to right, for a ``start`` aligned to a power of two at least ``end - start``."""
    blocks = []
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            blocks.append((level, start >> level))
            start += 1 << level
    return blocks


def range_hash(start: int, end: int, node: NodeLookup, hasher: Hasher = KECCAK) -> bytes:
    """MTH of leaves ``[start, end)`` (``start`` aligned as for :func:`_blocks`), folded
    from its complete subtrees right to left, as RFC 9162's recursion splits it."""
    blocks = _blocks(start, end)
    result = node(*blocks[-1])
    for level, index in reversed(blocks[:-1]):
        result = hasher.node(node(level, index), result)
    return result


def _check_sizes(index: int, size: int) -> None:
    if not 0 <= index < size <= MAX_LOG_SIZE:
        raise ProofError(f"leaf {index} is not in a log of {size} leaves")


def inclusion_path(index: int, size: int, node: NodeLookup, hasher: Hasher = KECCAK) -> list[bytes]:
    """RFC 9162's ``PATH(index, D[size])``, from the complete subtrees ``node`` looks up.

    Below the level where the leaf's path parts from the last leaf's, every sibling is a
    complete subtree; at that level the sibling holds the last leaf (it may be partial);
    above it, the path is the last leaf's, whose left siblings are complete.
    """
    _check_sizes(index, size)
    last = size - 1
    inner = (index ^ last).bit_length()
    path = [node(level, (index >> level) ^ 1) for level in range(max(inner - 1, 0))]
    if inner:
        start = (last >> (inner - 1)) << (inner - 1)
        path.append(range_hash(start, size, node, hasher))
    path += [node(level, (last >> level) - 1) for level in range(inner, 64) if last >> level & 1]
    return path


def consistency_path(
    first: int, second: int, node: NodeLookup, hasher: Hasher = KECCAK
) -> list[bytes]:
    """``SUBPROOF(first, D[second], false)``: RFC 9162's consistency proof with the node
    ``MTH(D[0:first])`` written out when ``first`` is a power of two (module docstring).

    It is the lowest complete subtree holding leaf ``first - 1`` whole within ``first``,
    then the rest of that leaf's inclusion path in ``second``.
    """
    if not 0 < first < second <= MAX_LOG_SIZE:
        raise ProofError(f"no consistency proof from size {first} to {second}")
    shift = (first & -first).bit_length() - 1  # trailing zeros of first
    start = node(shift, (first - 1) >> shift)
    return [start, *inclusion_path(first - 1, second, node, hasher)[shift:]]


def _hashes(path: Sequence[bytes]) -> list[bytes]:
    if len(path) > MAX_PROOF_NODES:
        raise ProofError(f"a proof of {len(path)} nodes (at most {MAX_PROOF_NODES})")
    for item in path:
        if type(item) is not bytes or len(item) != 32:
            raise ProofError("a proof node is 32 bytes")
    return list(path)


def root_from_inclusion(
    index: int, size: int, leaf_hash: bytes, path: Sequence[bytes], hasher: Hasher = KECCAK
) -> bytes:
    """The root that ``path`` proves ``leaf_hash`` to be leaf ``index`` of (RFC 9162
    §2.1.3.2, steps 1-4, and the check that the walk ends at the root).

    Raises:
        ProofError: the index is outside the size, or the path is too short or too long.
    """
    _check_sizes(index, size)
    fn, sn, r = index, size - 1, leaf_hash
    for p in _hashes(path):
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = hasher.node(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hasher.node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    return r


def verify_inclusion(
    index: int,
    size: int,
    leaf_hash: bytes,
    path: Sequence[bytes],
    root: bytes,
    hasher: Hasher = KECCAK,
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves and root
    ``root``.

    Raises:
        ProofError: it is not (or the proof is malformed).
    """
    if root_from_inclusion(index, size, leaf_hash, path, hasher) != root:
        raise ProofError(f"leaf {index} is not in the tree of {size} leaves with that root")


def consistency_roots(
    first: int, second: int, path: Sequence[bytes], hasher: Hasher = KECCAK
) -> tuple[bytes, bytes]:
    """The two roots ``(fr, sr)`` a consistency proof from ``first`` to ``second`` leaves
    yields: RFC 9162 §2.1.4.2 without step 2 (the first node is explicit).

    Raises:
        ProofError: the sizes are not ``0 < first < second``, or the proof is empty, too
            short or too long for them.
    """
    if not 0 < first < second <= MAX_LOG_SIZE:
        raise ProofError(f"no consistency proof from size {first} to {second}")
    path = _hashes(path)
    if not path:
        raise ProofError("the consistency proof is empty")
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = hasher.node(c, fr), hasher.node(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = hasher.node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    return fr, sr


def verify_consistency(
    first: int,
    second: int,
    first_root: bytes,
    second_root: bytes,
    path: Sequence[bytes],
    hasher: Hasher = KECCAK,
) -> None:
    """Check that the tree of ``first`` leaves and root ``first_root`` is a prefix of the
    tree of ``second`` leaves and root ``second_root`` (equal sizes: equal roots, no proof).

    Raises:
        ProofError: it is not, or the proof is malformed.
    """
    if first == second:
        if path or first_root != second_root:
            raise ProofError(f"two different trees of {first} leaves")
        return
    if consistency_roots(first, second, path, hasher) != (first_root, second_root):
        raise ProofError(f"the tree of {first} leaves is not a prefix of that of {second}")


def proves_inconsistency(
    first: int,
    first_root: bytes,
    second: int,
    second_root: bytes,
    path: Sequence[bytes],
    hasher: Hasher = KECCAK,
) -> bool:
    """Whether ``path`` proves that the first tree is *not* a prefix of the second.

    Two trees of one size are inconsistent when their roots differ (no path). Otherwise a
    proof whose walk gives ``second_root`` consists of the second tree's own nodes, so the
    first root it gives is the root of the second tree's first ``first`` leaves; if that is
    not ``first_root``, the trees differ there. A malformed path proves nothing.
    """
    if first == second:
        return not path and first_root != second_root
    try:
        fr, sr = consistency_roots(first, second, path, hasher)
    except ProofError:
        return False
    return sr == second_root and fr != first_root


class CompactTree:
    """The right border of a Merkle tree: appends in O(log n), its root at any time.

    ``border`` holds the hashes of the complete subtrees that make up the leaves so far,
    largest first (one per set bit of the size). :meth:`append` returns every complete
    subtree it finished, ``(level, index, hash)``, the leaf itself first: what a
    :class:`NodeStore` must keep for proofs.
    """

    __slots__ = ("border", "hasher", "size")

    def __init__(self, hasher: Hasher = KECCAK) -> None:
        self.hasher = hasher
        self.size = 0
        self.border: list[bytes] = []

    @classmethod
    def at(cls, size: int, node: NodeLookup, hasher: Hasher = KECCAK) -> CompactTree:
        """The border of a tree of ``size`` leaves whose complete subtrees ``node`` holds."""
        tree = cls(hasher)
        if size:
            tree.border = [node(level, index) for level, index in _blocks(0, size)]
        tree.size = size
        return tree

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        index = self.size
        made = [(0, index, leaf_hash)]
        border, node = self.border, self.hasher.node
        border.append(leaf_hash)
        level = 0
        while index >> level & 1:
            right = border.pop()
            merged = node(border.pop(), right)
            border.append(merged)
            level += 1
            made.append((level, index >> level, merged))
        self.size += 1
        return made

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        made: list[tuple[int, int, bytes]] = []
        for leaf_hash in leaf_hashes:
            made += self.append(leaf_hash)
        return made

    def root(self) -> bytes:
        """MTH of the leaves so far (of none: HASH of the empty string)."""
        if not self.border:
            return self.hasher.empty()
        result = self.border[-1]
        for subtree in reversed(self.border[:-1]):
            result = self.hasher.node(subtree, result)
        return result


def tree_root(leaf_hashes: Iterable[bytes], hasher: Hasher = KECCAK) -> bytes:
    """MTH of a list of leaf hashes."""
    tree = CompactTree(hasher)
    tree.extend(leaf_hashes)
    return tree.root()


class MemoryNodes:
    """A :class:`NodeStore` in a dict, with the tree that fills it (tests, the lab)."""

    def __init__(self, hasher: Hasher = KECCAK) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.tree = CompactTree(hasher)
        self.hasher = hasher

    def append(self, leaf_hash: bytes) -> None:
        for level, index, value in self.tree.append(leaf_hash):
            self.nodes[level, index] = value

    def node(self, level: int, index: int) -> bytes:
        return self.nodes[level, index]

    def root(self, size: int) -> bytes:
        return range_hash(0, size, self.node, self.hasher) if size else self.hasher.empty()

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return inclusion_path(index, size, self.node, self.hasher)

    def consistency(self, first: int, second: int) -> list[bytes]:
        return consistency_path(first, second, self.node, self.hasher)


# ---------------------------------------------------------------------------------------
# The leaves of the journal's log.


class LeafKind(enum.IntEnum):
    """What a leaf records: one kind per journal entry kind, and the genesis leaf."""

    GENESIS = 0
    ORDER = 1  # an accepted order: content = the Order's struct hash
    FORCED = 2  # an order known only from a forced cancel: the Order's struct hash
    CANCEL = 3  # a received cancel request: the Cancellation(Products)'s struct hash
    RELEASE = 4  # a held cancel processed now: ref = the cancel's seq
    MATCH = 5  # two orders crossed: the Match's struct hash
    FILL = 6  # a signed fill: the Fill's struct hash, ref = its match's seq
    NOTE = 7  # a signed note: the CancellationNote's struct hash
    EXPIRE = 8  # an order left the book at its expiration: content = its digest
    STOP = 9  # no new orders from here: content = keccak of the reason


#: Wire names of the kinds (lower case, as journal rows name entries).
KIND_NAMES = {kind: kind.name.lower() for kind in LeafKind}
_KINDS_BY_NAME = {name: kind for kind, name in KIND_NAMES.items()}


@attrs.frozen
class Leaf:
    """One leaf of the log (module docstring); :meth:`hash` is its RFC 9162 leaf hash."""

    kind: LeafKind
    timestamp_ms: int
    ref: int
    content: bytes

    def data(self) -> bytes:
        """The 49 bytes the leaf hash is taken of."""
        return (
            bytes((self.kind,))
            + self.timestamp_ms.to_bytes(8, "big")
            + self.ref.to_bytes(8, "big")
            + self.content
        )

    def hash(self) -> bytes:
        return KECCAK.leaf(self.data())

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": KIND_NAMES[self.kind],
            "timestampMs": str(self.timestamp_ms),
            "ref": str(self.ref),
            "content": "0x" + self.content.hex(),
        }

    @classmethod
    def from_wire(cls, obj: object) -> Leaf:
        """Parse a leaf strictly.

        Raises:
            MessageError: a field missing, unknown or malformed.
        """
        if not isinstance(obj, dict) or set(obj) != {"kind", "timestampMs", "ref", "content"}:
            raise MessageError("leaf: expected exactly kind, timestampMs, ref and content")
        kind = _KINDS_BY_NAME.get(obj["kind"]) if isinstance(obj["kind"], str) else None
        if kind is None:
            raise MessageError(f"leaf.kind: unknown kind {obj['kind']!r}")
        return cls(
            kind,
            uint64_from_wire("leaf.timestampMs", obj["timestampMs"]),
            uint64_from_wire("leaf.ref", obj["ref"]),
            bytes32_from_wire("leaf.content", obj["content"]),
        )


@attrs.frozen
class LeafProof:
    """Leaf ``index`` of the log, whole, and its inclusion path in a tree of some size:
    what the court takes as a leaf (``HeadsCourt.LeafProof``) and a proof query returns."""

    index: int
    leaf: Leaf
    path: tuple[bytes, ...] = attrs.field(converter=tuple)

    def verify(self, size: int, root: bytes) -> None:
        """Check the proof against a head of ``size`` leaves and root ``root``.

        Raises:
            ProofError: it does not verify.
        """
        verify_inclusion(self.index, size, self.leaf.hash(), self.path, root)

    def to_wire(self) -> dict[str, Any]:
        return {
            "seq": str(self.index),
            "leaf": self.leaf.to_wire(),
            "path": path_to_wire(self.path),
        }

    @classmethod
    def from_wire(cls, obj: object) -> LeafProof:
        """Parse ``{"seq", "leaf", "path"}`` strictly.

        Raises:
            MessageError: a field missing, unknown or malformed.
        """
        if not isinstance(obj, dict) or set(obj) != {"seq", "leaf", "path"}:
            raise MessageError("proof: expected exactly seq, leaf and path")
        return cls(
            uint64_from_wire("proof.seq", obj["seq"]),
            Leaf.from_wire(obj["leaf"]),
            path_from_wire("proof.path", obj["path"]),
        )


def path_from_wire(name: str, raw: object) -> list[bytes]:
    """A proof as the wire writes it: a JSON array of at most 64 0x-hex bytes32."""
    if not isinstance(raw, list) or len(raw) > MAX_PROOF_NODES:
        raise MessageError(f"{name}: expected an array of at most {MAX_PROOF_NODES} hashes")
    return [bytes32_from_wire(f"{name}[{i}]", item) for i, item in enumerate(raw)]


def path_to_wire(path: Sequence[bytes]) -> list[str]:
    return ["0x" + item.hex() for item in path]


@attrs.frozen
class SignedHead:
    """A tree head and the operator's signature of it, as pushed and kept:
    ``{"head": {"size", "root", "timestampMs"}, "signature": "0x..."}``."""

    head: JournalHead
    signature: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"head": self.head.to_wire(), "signature": signature_to_wire(self.signature)}

    @classmethod
    def from_wire(cls, obj: object) -> SignedHead:
        """Parse strictly (the signature is checked to be canonical, not whose it is).

        Raises:
            MessageError: a field missing, unknown or malformed.
        """
        if not isinstance(obj, dict) or set(obj) != {"head", "signature"}:
            raise MessageError("expected exactly 'head' and 'signature'")
        return cls(JournalHead.from_wire(obj["head"]), signature_from_wire(obj["signature"]))

    def verify(self, domain: Domain, operator: bytes) -> None:
        """Check that ``operator`` signed the head in ``domain``.

        Raises:
            SignatureError: it did not.
        """
        self.head.verify(self.signature, domain, operator)


def genesis_leaf(domain: Domain, operator: bytes) -> Leaf:
    """Leaf 0: binds the log to one operator (20-byte address) in one EIP-712 domain, so
    no two operators' or courts' logs share a prefix."""
    return Leaf(LeafKind.GENESIS, 0, 0, keccak(domain.separator + operator))
