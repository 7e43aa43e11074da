# pragma version ~=0.4.3
"""
@title HeadsCourt
@custom:contract-name HeadsCourt
@license MIT
@notice The journal-heads rules of cancelnote (protocol §21): the operator's
        journal is an RFC 9162 Merkle log whose heads it signs, and these rules
        convict, from those heads and the messages in the log alone, an operator
        that forks its log, backdates a fill, matches an order after logging its
        cancel, or settles a fill against a match that is not its own.
@dev Deployed right after its CancelCourt, by the same deployer (whose nonce
     fixes this contract's address, which the court was given); it shares the
     court's bond and claims through one function,
     `CancelCourt.fileHeadsClaim`, callable by this contract only: every proof
     here files one claim there (once per order and offence, or once per court
     for a fork), paid like any other. It holds no ether and one flag.

     Leaves (cancelnote/transparency.py): leaf i is journal entry seq i, leaf 0
     the genesis; a leaf's hash is keccak256(0x00 || kind (1 byte) ||
     timestampMs (8) || ref (8) || content (32)), nodes keccak256(0x01 || l || r).
     Every signature is the operator's, in the CancelCourt's EIP-712 domain.

     Offences (the numbering continues CancelCourt's):
       1  fill after note    (here: a match of an order logged after its cancel)
       9  inconsistent heads (two heads that are not one log; halts the operator)
       10 backdated fill     (a fill numbered after a head but stamped before it)
       11 false match        (a fill whose leaf names no match of its own, or
                              two fills of one order naming one match)
"""

import eip712


interface CancelCourt:
    def fileHeadsClaim(digest: bytes32, offence: uint8, sender: bytes32, halt: bool): nonpayable


JOURNAL_HEAD_TYPEHASH: public(constant(bytes32)) = eip712.JOURNAL_HEAD_TYPEHASH
MATCH_TYPEHASH: public(constant(bytes32)) = eip712.MATCH_TYPEHASH
CANCELLATION_PRODUCTS_TYPEHASH: public(constant(bytes32)) = eip712.CANCELLATION_PRODUCTS_TYPEHASH

# @dev Most nodes of a proof: any proof of a log below 2**63 leaves fits.
MAX_PROOF_NODES: public(constant(uint256)) = 64


OFFENCE_FILL_AFTER_NOTE: public(constant(uint8)) = 1
OFFENCE_INCONSISTENT_HEADS: public(constant(uint8)) = 9
OFFENCE_BACKDATED: public(constant(uint8)) = 10
OFFENCE_FALSE_MATCH: public(constant(uint8)) = 11


# @dev Leaf kinds (transparency.LeafKind) the rules read.
KIND_ORDER: public(constant(uint8)) = 1
KIND_CANCEL: public(constant(uint8)) = 3
KIND_MATCH: public(constant(uint8)) = 5
KIND_FILL: public(constant(uint8)) = 6


# @dev The CancelCourt this contract serves: the domain's verifying contract,
# and where claims are filed.
court: public(immutable(address))
# @dev The operator whose heads and fills are evidence.
operator: public(immutable(address))

_CACHED_DOMAIN_SEPARATOR: immutable(bytes32)
_CACHED_CHAIN_ID: immutable(uint256)

# @dev Whether a fork was proven: one claim per court (it also halts).
forkProven: public(bool)


# @dev One leaf of the log, whole, and its inclusion path in a head.
struct LeafProof:
    index: uint64
    kind: uint8
    timestampMs: uint64
    ref: uint64
    content: bytes32
    path: DynArray[bytes32, MAX_PROOF_NODES]


@deploy
def __init__(court_: address, operator_: address):
    """
    @dev Binds the contract to its court, which names it `headsCourt`.
    @param court_ The CancelCourt.
    @param operator_ The court's operator.
    """
    court = court_
    operator = operator_
    _CACHED_CHAIN_ID = chain.id
    _CACHED_DOMAIN_SEPARATOR = eip712.domain_separator(court_)


# ---------------------------------------------------------------------------------
# Proofs.


@external
def proveInconsistentHeads(
    payee: eip712.Order,
    first: eip712.JournalHead,
    firstSig: Bytes[65],
    second: eip712.JournalHead,
    secondSig: Bytes[65],
    proof: DynArray[bytes32, MAX_PROOF_NODES],
):
    """
    @notice Files a claim for two signed heads that are not one log (and halts
            the operator): of one size with different roots, or a consistency
            proof whose walk gives the second head's root but not the first's.
    @dev The proof is RFC 9162's SUBPROOF(first.size, D[second.size], false)
         from the second head's tree: its walk (§2.1.4.2 without step 2) yields
         the second root only if its nodes are the second tree's, and then the
         first root it yields is that tree's prefix of first.size leaves.
    @param payee The order whose owner the claim is for (a fork has no one
           victim; the claim is one per court).
    @param first A signed head.
    @param firstSig The operator's signature of `first`.
    @param second A signed head of at least `first`'s size.
    @param secondSig The operator's signature of `second`.
    @param proof The consistency proof (empty for two heads of one size).
    """
    assert not self.forkProven, "court: offence already proven"
    assert first.size <= second.size, "court: heads not in size order"
    assert self._inconsistent(first, second, proof), "court: no inconsistency proven"
    self._check_head(first, firstSig)
    self._check_head(second, secondSig)
    self.forkProven = True
    extcall CancelCourt(court).fileHeadsClaim(
        self._hash_order(payee), OFFENCE_INCONSISTENT_HEADS, payee.sender, True
    )


@external
def proveBackdated(
    order: eip712.Order,
    fill: eip712.Fill,
    fillSig: Bytes[65],
    head: eip712.JournalHead,
    headSig: Bytes[65],
):
    """
    @notice Files a claim for a fill of `order` numbered at or after a head's
            size but stamped before the head's time: it was made after the head
            was signed and dated earlier (time ran backwards).
    @param order The order the fill is of.
    @param fill An operator-signed fill of that order.
    @param fillSig The operator's signature of `fill`.
    @param head A signed head.
    @param headSig The operator's signature of `head`.
    """
    digest: bytes32 = self._hash_order(order)
    assert fill.digest == digest, "court: fill is for another order"
    assert (
        fill.seq >= head.size and fill.timestampMs < head.timestampMs
    ), "court: fill not backdated"
    self._check_operator_signature(self._typed_digest(eip712.fill_hash(fill)), fillSig)
    self._check_head(head, headSig)
    extcall CancelCourt(court).fileHeadsClaim(digest, OFFENCE_BACKDATED, order.sender, False)


@external
def proveMatchAfterCancel(
    order: eip712.Order,
    cancellation: eip712.Cancellation,
    matched: eip712.Match,
    head: eip712.JournalHead,
    headSig: Bytes[65],
    orderLeaf: LeafProof,
    cancelLeaf: LeafProof,
    matchLeaf: LeafProof,
):
    """
    @notice Files a claim (offence 1) for a match of `order` logged after a
            cancel of it: the order was accepted, then the cancel logged, then
            the order matched. A cancel takes effect when logged; a fill not in
            flight there is the fill of such a match.
    @param order The order.
    @param cancellation A cancel request naming the order (its digest, with its
           product id, and its sender).
    @param matched The match of the order.
    @param head A signed head holding the three leaves.
    @param headSig The operator's signature of `head`.
    @param orderLeaf The leaf accepting the order.
    @param cancelLeaf The leaf receiving the cancel.
    @param matchLeaf The leaf of the match.
    """
    digest: bytes32 = self._hash_order(order)
    assert cancellation.sender == order.sender, "court: cancellation is for another sender"
    assert self._names(cancellation, digest, order.productId), "court: cancel does not name the order"
    self._match_after_cancel(
        order,
        digest,
        eip712.cancellation_hash(cancellation),
        matched,
        head,
        headSig,
        orderLeaf,
        cancelLeaf,
        matchLeaf,
    )


@external
def proveMatchAfterCancelProducts(
    order: eip712.Order,
    cancellation: eip712.CancellationProducts,
    matched: eip712.Match,
    head: eip712.JournalHead,
    headSig: Bytes[65],
    orderLeaf: LeafProof,
    cancelLeaf: LeafProof,
    matchLeaf: LeafProof,
):
    """
    @notice `proveMatchAfterCancel` for a cancel of every order of the sender
            in some products (all products if it lists none).
    @param order The order.
    @param cancellation A cancel-by-product request of the order's sender.
    @param matched The match of the order.
    @param head A signed head holding the three leaves.
    @param headSig The operator's signature of `head`.
    @param orderLeaf The leaf accepting the order.
    @param cancelLeaf The leaf receiving the cancel.
    @param matchLeaf The leaf of the match.
    """
    digest: bytes32 = self._hash_order(order)
    assert cancellation.sender == order.sender, "court: cancellation is for another sender"
    assert (
        len(cancellation.productIds) == 0 or order.productId in cancellation.productIds
    ), "court: cancel does not name the order"
    self._match_after_cancel(
        order,
        digest,
        eip712.cancellation_products_hash(cancellation),
        matched,
        head,
        headSig,
        orderLeaf,
        cancelLeaf,
        matchLeaf,
    )


@external
def proveFalseMatch(
    order: eip712.Order,
    fill: eip712.Fill,
    head: eip712.JournalHead,
    headSig: Bytes[65],
    fillLeaf: LeafProof,
    namedLeaf: LeafProof,
    matched: eip712.Match,
):
    """
    @notice Files a claim for a fill of `order` whose leaf names (by its ref) a
            leaf that is not its match: one at or after the fill itself, one
            that is not a match, or a match of another order, amount or price.
    @dev A fill settles a match logged before it; its leaf's ref is that
         match's seq, which is what makes "in flight at the cancel" decidable.
         `namedLeaf` and `matched` are ignored when the ref is not below the
         fill's seq; `matched` is ignored when the named leaf is no match.
    @param order The order the fill is of.
    @param fill The fill (its leaf in the head is the operator's word).
    @param head A signed head holding the leaves.
    @param headSig The operator's signature of `head`.
    @param fillLeaf The fill's leaf.
    @param namedLeaf The leaf at the fill leaf's ref.
    @param matched The match the named leaf holds, if it is a match.
    """
    digest: bytes32 = self._hash_order(order)
    assert fill.digest == digest, "court: fill is for another order"
    self._check_fill_leaf(fillLeaf, fill, head)
    if fillLeaf.ref < fill.seq:
        assert namedLeaf.index == fillLeaf.ref, "court: not the leaf the fill names"
        assert self._included(namedLeaf, head), "court: leaf not in the head"
        if namedLeaf.kind == KIND_MATCH:
            assert namedLeaf.content == eip712.match_hash(matched), "court: leaf is not the message's"
            assert not (
                (matched.maker == digest or matched.taker == digest)
                and matched.amount == fill.amount
                and matched.priceX18 == fill.priceX18
            ), "court: the fill names its match"
    self._check_head(head, headSig)
    extcall CancelCourt(court).fileHeadsClaim(digest, OFFENCE_FALSE_MATCH, order.sender, False)


@external
def proveMatchReused(
    order: eip712.Order,
    fill1: eip712.Fill,
    fill2: eip712.Fill,
    head: eip712.JournalHead,
    headSig: Bytes[65],
    leaf1: LeafProof,
    leaf2: LeafProof,
):
    """
    @notice Files a claim (a false match) for two different fills of `order`
            whose leaves name one match: a match settles once for each side.
    @param order The order both fills are of.
    @param fill1 A fill of the order.
    @param fill2 Another fill of the order.
    @param head A signed head holding both leaves.
    @param headSig The operator's signature of `head`.
    @param leaf1 The leaf of `fill1`.
    @param leaf2 The leaf of `fill2`.
    """
    digest: bytes32 = self._hash_order(order)
    assert fill1.digest == digest and fill2.digest == digest, "court: fill is for another order"
    assert eip712.fill_hash(fill1) != eip712.fill_hash(fill2), "court: fills are identical"
    self._check_fill_leaf(leaf1, fill1, head)
    self._check_fill_leaf(leaf2, fill2, head)
    assert leaf1.ref == leaf2.ref, "court: the fills name different matches"
    self._check_head(head, headSig)
    extcall CancelCourt(court).fileHeadsClaim(digest, OFFENCE_FALSE_MATCH, order.sender, False)


# ---------------------------------------------------------------------------------
# Views: the predicates the proofs use, for clients to try before they prove.


@external
@view
def leafHash(leaf: LeafProof) -> bytes32:
    """
    @notice The RFC 9162 leaf hash of a leaf (its path is ignored).
    @param leaf The leaf.
    @return bytes32 keccak256(0x00 || kind || timestampMs || ref || content).
    """
    return self._leaf_hash(leaf)


@external
@view
def included(leaf: LeafProof, head: eip712.JournalHead) -> bool:
    """
    @notice Whether `leaf.path` proves the leaf to be leaf `leaf.index` of `head`.
    @param leaf The leaf and its inclusion path.
    @param head The head (its signature is not checked).
    @return bool The verdict of RFC 9162 §2.1.3.2.
    """
    return self._included(leaf, head)


@external
@view
def inconsistent(
    first: eip712.JournalHead,
    second: eip712.JournalHead,
    proof: DynArray[bytes32, MAX_PROOF_NODES],
) -> bool:
    """
    @notice Whether `proof` shows `first` (no larger than `second`) is not a
            prefix of `second` (signatures are not checked).
    @param first A head.
    @param second A head of at least its size.
    @param proof A consistency proof, or empty for two heads of one size.
    @return bool The verdict `proveInconsistentHeads` reaches.
    """
    return first.size <= second.size and self._inconsistent(first, second, proof)


# ---------------------------------------------------------------------------------
# The Merkle log (RFC 9162 §2.1 with HASH = keccak256).


@internal
@pure
def _leaf_hash(leaf: LeafProof) -> bytes32:
    """
    @dev The leaf hash of a leaf: HASH(0x00 || its 49 bytes).
    @param leaf The leaf.
    @return bytes32 The leaf hash.
    """
    return keccak256(
        concat(
            b"\x00",
            convert(leaf.kind, bytes1),
            convert(leaf.timestampMs, bytes8),
            convert(leaf.ref, bytes8),
            leaf.content,
        )
    )


@internal
@pure
def _included(leaf: LeafProof, head: eip712.JournalHead) -> bool:
    """
    @dev RFC 9162 §2.1.3.2: whether the path leads from the leaf to the root.
    @param leaf The leaf and its path.
    @param head The head.
    @return bool True if the walk ends at the root with the path used up.
    """
    if convert(leaf.index, uint256) >= convert(head.size, uint256):
        return False
    fn: uint256 = convert(leaf.index, uint256)
    sn: uint256 = convert(head.size, uint256) - 1
    r: bytes32 = self._leaf_hash(leaf)
    for p: bytes32 in leaf.path:
        if sn == 0:
            return False
        if fn & 1 == 1 or fn == sn:
            r = keccak256(concat(b"\x01", p, r))
            for _: uint256 in range(64):
                if fn & 1 == 1 or fn == 0:
                    break
                fn >>= 1
                sn >>= 1
        else:
            r = keccak256(concat(b"\x01", r, p))
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == head.root


@internal
@pure
def _inconsistent(
    first: eip712.JournalHead,
    second: eip712.JournalHead,
    proof: DynArray[bytes32, MAX_PROOF_NODES],
) -> bool:
    """
    @dev transparency.proves_inconsistency: heads of one size with different
         roots and no proof, or a proof (§2.1.4.2 without step 2) whose walk
         gives the second root and another first root.
    @param first A head.
    @param second A head of at least its size.
    @param proof The consistency proof.
    @return bool Whether the heads are shown to be no one log.
    """
    if first.size == second.size:
        return len(proof) == 0 and first.root != second.root
    if first.size == 0 or len(proof) == 0:
        return False
    fn: uint256 = convert(first.size, uint256) - 1
    sn: uint256 = convert(second.size, uint256) - 1
    for _: uint256 in range(64):
        if fn & 1 == 0:
            break
        fn >>= 1
        sn >>= 1
    fr: bytes32 = proof[0]
    sr: bytes32 = proof[0]
    for i: uint256 in range(1, MAX_PROOF_NODES):
        if i == len(proof):
            break
        c: bytes32 = proof[i]
        if sn == 0:
            return False
        if fn & 1 == 1 or fn == sn:
            fr = keccak256(concat(b"\x01", c, fr))
            sr = keccak256(concat(b"\x01", c, sr))
            for _: uint256 in range(64):
                if fn & 1 == 1 or fn == 0:
                    break
                fn >>= 1
                sn >>= 1
        else:
            sr = keccak256(concat(b"\x01", sr, c))
        fn >>= 1
        sn >>= 1
    return sn == 0 and sr == second.root and fr != first.root


# ---------------------------------------------------------------------------------
# Checks.


@internal
def _match_after_cancel(
    order: eip712.Order,
    digest: bytes32,
    cancel_hash: bytes32,
    matched: eip712.Match,
    head: eip712.JournalHead,
    head_sig: Bytes[65],
    order_leaf: LeafProof,
    cancel_leaf: LeafProof,
    match_leaf: LeafProof,
):
    """
    @dev The common part of the two `proveMatchAfterCancel…`, up to the claim.
    @param order The order.
    @param digest Its digest.
    @param cancel_hash The struct hash of the cancel request naming it.
    @param matched The match.
    @param head The head holding the leaves.
    @param head_sig Its signature.
    @param order_leaf The order's leaf.
    @param cancel_leaf The cancel's leaf.
    @param match_leaf The match's leaf.
    """
    assert (
        order_leaf.index < cancel_leaf.index and cancel_leaf.index < match_leaf.index
    ), "court: match not after the cancel"
    assert matched.maker == digest or matched.taker == digest, "court: match is of another order"
    self._check_leaf(order_leaf, head, KIND_ORDER, eip712.order_hash(order))
    self._check_leaf(cancel_leaf, head, KIND_CANCEL, cancel_hash)
    self._check_leaf(match_leaf, head, KIND_MATCH, eip712.match_hash(matched))
    self._check_head(head, head_sig)
    extcall CancelCourt(court).fileHeadsClaim(digest, OFFENCE_FILL_AFTER_NOTE, order.sender, False)


@internal
@pure
def _names(cancellation: eip712.Cancellation, digest: bytes32, product_id: uint32) -> bool:
    """
    @dev Whether the cancel names the order: its digest, with its product id at
         the same position (else the operator answers NOT_FOUND).
    @param cancellation The cancel request.
    @param digest The order's digest.
    @param product_id The order's product.
    @return bool True if some position holds both.
    """
    for i: uint256 in range(len(cancellation.digests), bound=eip712.MAX_CANCEL_DIGESTS):
        if (
            cancellation.digests[i] == digest
            and i < len(cancellation.productIds)
            and cancellation.productIds[i] == product_id
        ):
            return True
    return False


@internal
@pure
def _check_leaf(leaf: LeafProof, head: eip712.JournalHead, kind: uint8, content: bytes32):
    """
    @dev Reverts unless `leaf` is of `kind` and `content` and in `head`.
    @param leaf The leaf and its path.
    @param head The head.
    @param kind The kind required.
    @param content The content required (a struct hash).
    """
    assert leaf.kind == kind and leaf.content == content, "court: leaf is not the message's"
    assert self._included(leaf, head), "court: leaf not in the head"


@internal
@pure
def _check_fill_leaf(leaf: LeafProof, fill: eip712.Fill, head: eip712.JournalHead):
    """
    @dev Reverts unless `leaf` is the fill's own leaf (at its seq, with its
         time) in `head`.
    @param leaf The leaf and its path.
    @param fill The fill.
    @param head The head.
    """
    assert (
        leaf.index == fill.seq and leaf.timestampMs == fill.timestampMs
    ), "court: leaf is not the message's"
    self._check_leaf(leaf, head, KIND_FILL, eip712.fill_hash(fill))


@internal
@view
def _check_head(head: eip712.JournalHead, signature: Bytes[65]):
    """
    @dev Reverts unless the operator signed `head`.
    @param head The head.
    @param signature The 65-byte signature.
    """
    self._check_operator_signature(self._typed_digest(eip712.journal_head_hash(head)), signature)


@internal
@view
def _check_operator_signature(digest: bytes32, signature: Bytes[65]):
    """
    @dev Reverts unless the operator signed `digest`.
    @param digest The EIP-712 digest.
    @param signature The 65-byte signature r || s || v.
    """
    assert eip712.recover(digest, signature) == operator, "court: not signed by the operator"


@internal
@view
def _hash_order(order: eip712.Order) -> bytes32:
    """
    @dev The EIP-712 digest of an order (its identifier), in the court's domain.
    @param order The order.
    @return bytes32 The digest.
    """
    return self._typed_digest(eip712.order_hash(order))


@internal
@view
def _typed_digest(struct_hash: bytes32) -> bytes32:
    """
    @dev The EIP-712 digest of a struct hash in the CancelCourt's domain (the
         separator rebuilt if the chain id changed).
    @param struct_hash The struct's hashStruct.
    @return bytes32 The digest.
    """
    separator: bytes32 = _CACHED_DOMAIN_SEPARATOR
    if chain.id != _CACHED_CHAIN_ID:
        separator = eip712.domain_separator(court)
    return eip712.typed_digest(separator, struct_hash)
