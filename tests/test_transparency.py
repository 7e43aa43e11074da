"""The Merkle tree and its proofs against RFC 9162's own definitions and vectors.

The reference below is RFC 9162 §2.1 transcribed as it reads (MTH, PATH, SUBPROOF over a
list of entries), independent of :mod:`cancelnote.transparency`, whose proofs are built
from complete-subtree lookups. Vectors are the RFC 6962/9162 SHA-256 test data published
with the CT reference implementations (the tree hash is the same in both RFCs).
"""

from __future__ import annotations

import functools
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cancelnote.errors import MessageError
from cancelnote.messages import uint64_from_wire
from cancelnote.transparency import (
    KECCAK,
    SHA256,
    CompactTree,
    Leaf,
    LeafKind,
    MemoryNodes,
    ProofError,
    consistency_path,
    consistency_roots,
    inclusion_path,
    largest_power_of_two_below,
    proves_inconsistency,
    root_from_inclusion,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

# --- RFC 9162 §2.1, literally ---------------------------------------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc_mth(entries: tuple[bytes, ...]) -> bytes:
    """MTH(D[n]) of §2.1.1."""
    if not entries:
        return _sha(b"")
    if len(entries) == 1:
        return _sha(b"\x00" + entries[0])
    k = largest_power_of_two_below(len(entries))
    return _sha(b"\x01" + rfc_mth(entries[:k]) + rfc_mth(entries[k:]))


def rfc_path(m: int, entries: tuple[bytes, ...], mth=rfc_mth) -> list[bytes]:
    """PATH(m, D[n]) of §2.1.3.1."""
    n = len(entries)
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*rfc_path(m, entries[:k], mth), mth(entries[k:])]
    return [*rfc_path(m - k, entries[k:], mth), mth(entries[:k])]


def rfc_subproof(m: int, entries: tuple[bytes, ...], b: bool, mth=rfc_mth) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of §2.1.4.1."""
    n = len(entries)
    if m == n:
        return [] if b else [mth(entries)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*rfc_subproof(m, entries[:k], b, mth), mth(entries[k:])]
    return [*rfc_subproof(m - k, entries[k:], False, mth), mth(entries[:k])]


def rfc_proof(m: int, entries: tuple[bytes, ...], mth=rfc_mth) -> list[bytes]:
    """PROOF(m, D[n]) of §2.1.4.1 (the proof an RFC 9162 log serves)."""
    return rfc_subproof(m, entries, True, mth)


def rfc_verify_consistency(first, second, first_hash, second_hash, path) -> bool:
    """§2.1.4.2 with its step 2, for the RFC's own proofs: prepend the first root when the
    first size is a power of two, then the walk our verifier runs (it skips step 2)."""
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_hash, *path]
    try:
        return consistency_roots(first, second, path, SHA256) == (first_hash, second_hash)
    except ProofError:
        return False


# --- the published vectors -------------------------------------------------------------

VECTOR_ENTRIES = tuple(
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
)
VECTOR_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
EMPTY_ROOT = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def _hx(*values: str) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


#: (leaf index, tree size, RFC PATH)
VECTOR_INCLUSION = [
    (
        0,
        8,
        _hx(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _hx(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _hx("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _hx(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
#: (first, second, RFC PROOF)
VECTOR_CONSISTENCY = [
    (
        1,
        8,
        _hx(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _hx(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _hx(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _hx(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]


def _sha_tree(entries: tuple[bytes, ...]) -> MemoryNodes:
    nodes = MemoryNodes(SHA256)
    for entry in entries:
        nodes.append(SHA256.leaf(entry))
    return nodes


@pytest.fixture(scope="module")
def vector_tree() -> MemoryNodes:
    return _sha_tree(VECTOR_ENTRIES)


def test_roots_are_the_published_ones(vector_tree):
    assert [vector_tree.root(n) for n in range(1, 9)] == VECTOR_ROOTS
    assert [rfc_mth(VECTOR_ENTRIES[:n]) for n in range(1, 9)] == VECTOR_ROOTS
    assert tree_root([], SHA256) == EMPTY_ROOT == CompactTree(SHA256).root()


@pytest.mark.parametrize(("index", "size", "path"), VECTOR_INCLUSION)
def test_inclusion_proofs_are_the_published_ones(vector_tree, index, size, path):
    assert vector_tree.inclusion(index, size) == path
    leaf = SHA256.leaf(VECTOR_ENTRIES[index])
    verify_inclusion(index, size, leaf, path, VECTOR_ROOTS[size - 1], SHA256)


@pytest.mark.parametrize(("first", "second", "proof"), VECTOR_CONSISTENCY)
def test_consistency_proofs_are_the_published_ones_with_the_first_node_explicit(
    vector_tree, first, second, proof
):
    ours = vector_tree.consistency(first, second)
    implicit = first & (first - 1) == 0  # RFC 9162 leaves MTH(D[0:first]) out
    assert ours == ([VECTOR_ROOTS[first - 1], *proof] if implicit else proof)
    verify_consistency(
        first, second, VECTOR_ROOTS[first - 1], VECTOR_ROOTS[second - 1], ours, SHA256
    )
    assert rfc_verify_consistency(
        first, second, VECTOR_ROOTS[first - 1], VECTOR_ROOTS[second - 1], proof
    )


# --- every pair of sizes up to a few hundred ---------------------------------------------

PAIRS_UP_TO = 256
ENTRIES = tuple(i.to_bytes(4, "big") for i in range(PAIRS_UP_TO))


@functools.cache
def _cached_mth(start: int, end: int) -> bytes:
    return rfc_mth(ENTRIES[start:end]) if end - start <= 1 else _split_mth(start, end)


def _split_mth(start: int, end: int) -> bytes:
    k = largest_power_of_two_below(end - start)
    return _sha(b"\x01" + _cached_mth(start, start + k) + _cached_mth(start + k, end))


class _Slice(tuple):
    """A slice of ENTRIES that remembers where it starts, so the RFC recursion above can
    use the cached MTH (same definition, without recomputing every subtree)."""

    def __new__(cls, start: int, end: int) -> _Slice:
        self = super().__new__(cls, ENTRIES[start:end])
        self.start = start
        return self

    def __getitem__(self, item):
        if isinstance(item, slice):
            start, stop, _ = item.indices(len(self))
            return _Slice(self.start + start, self.start + stop)
        return super().__getitem__(item)


def _fast_mth(entries: _Slice) -> bytes:
    return _cached_mth(entries.start, entries.start + len(entries))


@pytest.fixture(scope="module")
def small_tree() -> MemoryNodes:
    return _sha_tree(ENTRIES)


def test_every_root_and_inclusion_proof_is_the_rfc_definition(small_tree):
    for size in range(1, PAIRS_UP_TO + 1):
        entries = _Slice(0, size)
        root = small_tree.root(size)
        assert root == _fast_mth(entries)
        for index in range(size):
            path = small_tree.inclusion(index, size)
            assert path == rfc_path(index, entries, _fast_mth)
            leaf = SHA256.leaf(ENTRIES[index])
            assert root_from_inclusion(index, size, leaf, path, SHA256) == root


def test_every_consistency_proof_is_the_rfc_definition(small_tree):
    roots = [small_tree.root(n) for n in range(PAIRS_UP_TO + 1)]
    for second in range(2, PAIRS_UP_TO + 1):
        entries = _Slice(0, second)
        for first in range(1, second):
            ours = small_tree.consistency(first, second)
            assert ours == rfc_subproof(first, entries, False, _fast_mth)
            rfc = rfc_proof(first, entries, _fast_mth)
            assert ours[len(ours) - len(rfc) :] == rfc and len(ours) - len(rfc) in (0, 1)
            assert consistency_roots(first, second, ours, SHA256) == (
                roots[first],
                roots[second],
            )
            assert rfc_verify_consistency(first, second, roots[first], roots[second], rfc)


def test_a_changed_bit_or_node_count_fails_every_small_proof(small_tree):
    roots = [small_tree.root(n) for n in range(PAIRS_UP_TO + 1)]
    for second in range(2, 64):
        for first in range(1, second):
            proof = small_tree.consistency(first, second)
            for broken in _corruptions(proof):
                with pytest.raises(ProofError):
                    verify_consistency(first, second, roots[first], roots[second], broken, SHA256)
            leaf = SHA256.leaf(ENTRIES[first])
            path = small_tree.inclusion(first, second)
            for broken in _corruptions(path):
                with pytest.raises(ProofError):
                    verify_inclusion(first, second, leaf, broken, roots[second], SHA256)


def _corruptions(path: list[bytes]) -> list[list[bytes]]:
    out = [[*path, bytes(32)], [bytes(32), *path]]
    if path:
        out.append(path[:-1])
    for i in range(len(path)):
        flipped = bytearray(path[i])
        flipped[0] ^= 0x10
        out.append([*path[:i], bytes(flipped), *path[i + 1 :]])
    return out


def test_wrong_index_size_or_root_fails():
    nodes = MemoryNodes()
    for i in range(13):
        nodes.append(KECCAK.leaf(bytes([i])))
    leaf = KECCAK.leaf(bytes([5]))
    path = nodes.inclusion(5, 13)
    verify_inclusion(5, 13, leaf, path, nodes.root(13))
    # (A size whose walk has the same shape, 12 here, gives the same root: a head of
    # size 12 has another root, so nothing false is accepted; RFC 9162 works this way.)
    for index, size in ((4, 13), (6, 13), (5, 26), (5, 6), (13, 13), (5, 0)):
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaf, path, nodes.root(13))
    with pytest.raises(ProofError):
        verify_inclusion(5, 13, leaf, path, nodes.root(12))
    with pytest.raises(ProofError, match="two different trees"):
        verify_consistency(7, 7, nodes.root(7), nodes.root(8), [])
    with pytest.raises(ProofError, match="empty"):
        consistency_roots(3, 7, [])
    with pytest.raises(ProofError, match="no consistency proof"):
        consistency_path(7, 7, nodes.node)
    with pytest.raises(ProofError, match="at most 64"):
        root_from_inclusion(0, 2, leaf, [leaf] * 65)
    with pytest.raises(ProofError, match="32 bytes"):
        root_from_inclusion(0, 2, leaf, [b"short"])


# --- inconsistency proofs ---------------------------------------------------------------


def _fork(size: int, fork_at: int, second: int) -> tuple[MemoryNodes, MemoryNodes]:
    """Two keccak trees equal before ``fork_at`` and different from it on."""
    honest, forked = MemoryNodes(), MemoryNodes()
    for i in range(max(size, second)):
        honest.append(KECCAK.leaf(i.to_bytes(4, "big")))
        forked.append(KECCAK.leaf((i if i < fork_at else i + 10**6).to_bytes(4, "big")))
    return honest, forked


def test_a_consistency_proof_of_the_larger_tree_proves_a_fork_for_every_pair():
    for second in range(2, 40):
        for first in range(1, second):
            for fork_at in range(first):  # the first tree's leaves differ from fork_at
                honest, forked = _fork(second, fork_at, second)
                proof = honest.consistency(first, second)
                first_root, second_root = forked.root(first), honest.root(second)
                assert proves_inconsistency(first, first_root, second, second_root, proof)
                assert not proves_inconsistency(
                    first, honest.root(first), second, second_root, proof
                )


def test_no_proof_of_inconsistency_between_consistent_trees():
    nodes = MemoryNodes()
    for i in range(70):
        nodes.append(KECCAK.leaf(bytes([i])))
    for second in range(1, 70):
        for first in range(1, second + 1):
            proof = nodes.consistency(first, second) if first < second else []
            root1, root2 = nodes.root(first), nodes.root(second)
            assert not proves_inconsistency(first, root1, second, root2, proof)
            for broken in _corruptions(proof):
                assert not proves_inconsistency(first, root1, second, root2, broken)


def test_same_size_different_roots_are_inconsistent_without_a_proof():
    honest, forked = _fork(9, 4, 9)
    assert proves_inconsistency(9, forked.root(9), 9, honest.root(9), [])
    assert not proves_inconsistency(9, honest.root(9), 9, honest.root(9), [])
    assert not proves_inconsistency(9, forked.root(9), 9, honest.root(9), [bytes(32)])


# --- hypothesis: larger trees -------------------------------------------------------------

LARGE = 1 << 13


@pytest.fixture(scope="module")
def large_tree() -> MemoryNodes:
    nodes = MemoryNodes()
    for i in range(LARGE):
        nodes.append(KECCAK.leaf(i.to_bytes(4, "big")))
    return nodes


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_proofs_in_a_large_tree_verify_and_equal_the_border_fold(large_tree, data):
    second = data.draw(st.integers(2, LARGE))
    first = data.draw(st.integers(1, second - 1))
    index = data.draw(st.integers(0, second - 1))
    root = large_tree.root(second)
    border = CompactTree.at(second, large_tree.node)
    assert border.root() == root
    leaf = KECCAK.leaf(index.to_bytes(4, "big"))
    verify_inclusion(index, second, leaf, large_tree.inclusion(index, second), root)
    proof = large_tree.consistency(first, second)
    verify_consistency(first, second, large_tree.root(first), root, proof)


class _UniformNodes:
    """Every leaf equal: a complete subtree's hash depends on its level only, so proofs for
    logs of any size (up to 2**62) can be built without building the log."""

    def __init__(self) -> None:
        self.levels = [KECCAK.leaf(b"x")]
        for _ in range(64):
            self.levels.append(KECCAK.node(self.levels[-1], self.levels[-1]))

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level]

    def root(self, size: int) -> bytes:
        return CompactTree.at(size, self.node).root()


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 2**62), st.data())
def test_proofs_of_logs_up_to_2_62_leaves_have_the_right_shape(second, data):
    uniform = _UniformNodes()
    first = data.draw(st.integers(1, second - 1))
    index = data.draw(st.integers(0, second - 1))
    path = inclusion_path(index, second, uniform.node)
    assert len(path) <= (second - 1).bit_length()
    verify_inclusion(index, second, uniform.levels[0], path, uniform.root(second))
    proof = consistency_path(first, second, uniform.node)
    assert len(proof) <= (second - 1).bit_length() + 1
    verify_consistency(first, second, uniform.root(first), uniform.root(second), proof)
    with pytest.raises(ProofError):
        verify_inclusion(index, second, uniform.levels[0], [*path, bytes(32)], uniform.root(second))


# --- leaves ------------------------------------------------------------------------------


def test_leaf_data_is_49_bytes_and_round_trips_the_wire():
    leaf = Leaf(LeafKind.FILL, 1_767_225_601_500, 40, bytes(range(32)))
    assert len(leaf.data()) == 49
    assert leaf.data()[0] == 6 and leaf.data()[1:9] == (1_767_225_601_500).to_bytes(8, "big")
    assert leaf.hash() == KECCAK.leaf(leaf.data())
    assert Leaf.from_wire(leaf.to_wire()) == leaf


@pytest.mark.parametrize(
    "wire",
    [
        {"kind": "fill", "timestampMs": "1", "ref": "0"},
        {"kind": "nothing", "timestampMs": "1", "ref": "0", "content": "0x" + "00" * 32},
        {"kind": "fill", "timestampMs": "01", "ref": "0", "content": "0x" + "00" * 32},
        {"kind": "fill", "timestampMs": "1", "ref": str(2**64), "content": "0x" + "00" * 32},
        {"kind": "fill", "timestampMs": 1.0, "ref": "0", "content": "0x" + "00" * 32},
        {"kind": "fill", "timestampMs": "1", "ref": "0", "content": "0x00"},
        {"kind": 6, "timestampMs": "1", "ref": "0", "content": "0x" + "00" * 32},
    ],
)
def test_malformed_leaves_are_refused(wire):
    with pytest.raises(MessageError):
        Leaf.from_wire(wire)


def test_uint64_wire_values():
    assert uint64_from_wire("x", "18446744073709551615") == 2**64 - 1
    assert uint64_from_wire("x", 7) == 7
    for bad in ("-1", "1e3", " 1", "１", True, None, "0x10"):
        with pytest.raises(MessageError):
            uint64_from_wire("x", bad)
