# pragma version ~=0.4.3
"""
@title eip712
@custom:contract-name eip712
@license MIT
@notice The signed messages of cancelnote as the courts read them: their structs,
        EIP-712 type hashes and struct hashes, the domain, and signature recovery.
@dev A library module (no state) shared by CancelCourt and HeadsCourt, so that
     both hash every message one way. The type strings equal
     `cancelnote/messages.py` character for character (tests/test_court_build.py
     checks it). Both courts sign in one domain, whose verifying contract is the
     CancelCourt: the caller passes it to `domain_separator`.
"""


# @dev The EIP-712 domain type and the name and version of the protocol's domain.
_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_NAME_HASH: constant(bytes32) = keccak256("cancelnote")
_VERSION_HASH: constant(bytes32) = keccak256("2")


ORDER_TYPEHASH: constant(bytes32) = keccak256(
    "Order(bytes32 sender,uint32 productId,int128 priceX18,int128 amount,uint64 expiration,uint64 nonce)"
)
CANCELLATION_TYPEHASH: constant(bytes32) = keccak256(
    "Cancellation(bytes32 sender,uint32[] productIds,bytes32[] digests,uint64 nonce)"
)
CANCELLATION_PRODUCTS_TYPEHASH: constant(bytes32) = keccak256(
    "CancellationProducts(bytes32 sender,uint32[] productIds,uint64 nonce)"
)
FILL_TYPEHASH: constant(bytes32) = keccak256(
    "Fill(bytes32 digest,bytes32 sender,uint64 seq,uint128 amount,uint128 filledTotal,int128 priceX18,uint64 timestampMs)"
)
CANCELLATION_NOTE_TYPEHASH: constant(bytes32) = keccak256(
    "CancellationNote(bytes32 digest,bytes32 sender,bytes32 requestHash,uint128 filledAmount,uint64 lastFillSeq,bytes32 lastFillHash,uint128 pendingAmount,uint64 pendingUntilMs,uint64 receivedAtMs,uint64 seq)"
)
JOURNAL_HEAD_TYPEHASH: constant(bytes32) = keccak256(
    "JournalHead(uint64 size,bytes32 root,uint64 timestampMs)"
)
MATCH_TYPEHASH: constant(bytes32) = keccak256(
    "Match(bytes32 maker,bytes32 taker,uint128 amount,int128 priceX18,uint64 settleAtMs)"
)


# @dev The most digests (and product ids) a `Cancellation` (or product ids a
# `CancellationProducts`) the courts take may list. The EIP-712 array hash needs
# the whole array in memory, and Vyper sizes memory by the bound, so the bound is
# kept well below `messages.MAX_ARRAY_LENGTH` (1024).
MAX_CANCEL_DIGESTS: constant(uint256) = 64


# @dev secp256k1n / 2: a signature with a larger `s` is the malleated twin of a
# low-s one (EIP-2); `ecrecover` accepts both, so the courts reject the high one.
_SECP256K1N_HALF: constant(uint256) = (
    57896044618658097711785492504343953926418782139537452191302581570759080747168
)


struct Order:
    sender: bytes32
    productId: uint32
    priceX18: int128
    amount: int128
    expiration: uint64
    nonce: uint64


struct Cancellation:
    sender: bytes32
    productIds: DynArray[uint32, MAX_CANCEL_DIGESTS]
    digests: DynArray[bytes32, MAX_CANCEL_DIGESTS]
    nonce: uint64


struct CancellationProducts:
    sender: bytes32
    productIds: DynArray[uint32, MAX_CANCEL_DIGESTS]
    nonce: uint64


struct Fill:
    digest: bytes32
    sender: bytes32
    seq: uint64
    amount: uint128
    filledTotal: uint128
    priceX18: int128
    timestampMs: uint64


struct CancellationNote:
    digest: bytes32
    sender: bytes32
    requestHash: bytes32
    filledAmount: uint128
    lastFillSeq: uint64
    lastFillHash: bytes32
    pendingAmount: uint128
    pendingUntilMs: uint64
    receivedAtMs: uint64
    seq: uint64


struct JournalHead:
    size: uint64
    root: bytes32
    timestampMs: uint64


struct Match:
    maker: bytes32
    taker: bytes32
    amount: uint128
    priceX18: int128
    settleAtMs: uint64


@internal
@view
def domain_separator(verifying_contract: address) -> bytes32:
    """
    @dev The protocol's domain separator on this chain for `verifying_contract`.
    @param verifying_contract The CancelCourt every signature is bound to.
    @return bytes32 The domain separator.
    """
    return keccak256(
        abi_encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, chain.id, verifying_contract)
    )


@internal
@pure
def typed_digest(separator: bytes32, struct_hash: bytes32) -> bytes32:
    """
    @dev The EIP-712 digest of a struct hash in a domain.
    @param separator The domain separator.
    @param struct_hash The struct's hashStruct.
    @return bytes32 keccak256(0x1901 || separator || struct_hash).
    """
    return keccak256(concat(b"\x19\x01", separator, struct_hash))


@internal
@pure
def order_hash(order: Order) -> bytes32:
    """
    @dev The EIP-712 struct hash of an order.
    @param order The order.
    @return bytes32 hashStruct(order).
    """
    return keccak256(
        abi_encode(
            ORDER_TYPEHASH,
            order.sender,
            order.productId,
            order.priceX18,
            order.amount,
            order.expiration,
            order.nonce,
        )
    )


@internal
@pure
def fill_hash(fill: Fill) -> bytes32:
    """
    @dev The EIP-712 struct hash of a fill (what a note's lastFillHash commits to).
    @param fill The fill.
    @return bytes32 hashStruct(fill).
    """
    return keccak256(
        abi_encode(
            FILL_TYPEHASH,
            fill.digest,
            fill.sender,
            fill.seq,
            fill.amount,
            fill.filledTotal,
            fill.priceX18,
            fill.timestampMs,
        )
    )


@internal
@pure
def note_hash(note: CancellationNote) -> bytes32:
    """
    @dev The EIP-712 struct hash of a cancellation note.
    @param note The note.
    @return bytes32 hashStruct(note).
    """
    return keccak256(
        abi_encode(
            CANCELLATION_NOTE_TYPEHASH,
            note.digest,
            note.sender,
            note.requestHash,
            note.filledAmount,
            note.lastFillSeq,
            note.lastFillHash,
            note.pendingAmount,
            note.pendingUntilMs,
            note.receivedAtMs,
            note.seq,
        )
    )


@internal
@pure
def cancellation_hash(cancellation: Cancellation) -> bytes32:
    """
    @dev The EIP-712 struct hash of a cancel request. An array's encodeData is the
         keccak of its elements, each padded to 32 bytes: the ABI encoding of the
         array without its offset and length words.
    @param cancellation The request.
    @return bytes32 hashStruct(cancellation).
    """
    product_ids: Bytes[32 * MAX_CANCEL_DIGESTS + 64] = abi_encode(cancellation.productIds)
    digests: Bytes[32 * MAX_CANCEL_DIGESTS + 64] = abi_encode(cancellation.digests)
    return keccak256(
        abi_encode(
            CANCELLATION_TYPEHASH,
            cancellation.sender,
            keccak256(slice(product_ids, 64, len(product_ids) - 64)),
            keccak256(slice(digests, 64, len(digests) - 64)),
            cancellation.nonce,
        )
    )


@internal
@pure
def cancellation_products_hash(cancellation: CancellationProducts) -> bytes32:
    """
    @dev The EIP-712 struct hash of a cancel-by-product request (arrays as above).
    @param cancellation The request.
    @return bytes32 hashStruct(cancellation).
    """
    product_ids: Bytes[32 * MAX_CANCEL_DIGESTS + 64] = abi_encode(cancellation.productIds)
    return keccak256(
        abi_encode(
            CANCELLATION_PRODUCTS_TYPEHASH,
            cancellation.sender,
            keccak256(slice(product_ids, 64, len(product_ids) - 64)),
            cancellation.nonce,
        )
    )


@internal
@pure
def journal_head_hash(head: JournalHead) -> bytes32:
    """
    @dev The EIP-712 struct hash of a signed tree head.
    @param head The head.
    @return bytes32 hashStruct(head).
    """
    return keccak256(abi_encode(JOURNAL_HEAD_TYPEHASH, head.size, head.root, head.timestampMs))


@internal
@pure
def match_hash(match: Match) -> bytes32:
    """
    @dev The EIP-712 struct hash of a match (a match leaf's content).
    @param match The match.
    @return bytes32 hashStruct(match).
    """
    return keccak256(
        abi_encode(
            MATCH_TYPEHASH, match.maker, match.taker, match.amount, match.priceX18, match.settleAtMs
        )
    )


@internal
@pure
def recover(digest: bytes32, signature: Bytes[65]) -> address:
    """
    @dev The signer of `digest`; reverts on any non-canonical signature.
    @custom:security `ecrecover` accepts the high-s twin of every signature and
                     returns zero on failure; both are rejected here, and no
                     signature is ever used as an identifier.
    @param digest The EIP-712 digest.
    @param signature The 65-byte signature r || s || v.
    @return address The non-zero signer.
    """
    assert len(signature) == 65, "court: signature is not 65 bytes"
    r: uint256 = extract32(signature, 0, output_type=uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    assert s <= _SECP256K1N_HALF, "court: signature s is high"
    assert v == 27 or v == 28, "court: signature v is not 27 or 28"
    signer: address = ecrecover(digest, v, r, s)
    assert signer != empty(address), "court: invalid signature"
    return signer


@internal
@pure
def owner_of(sender: bytes32) -> address:
    """
    @dev The owner of a `sender`: its first 20 bytes (the rest is a subaccount).
    @param sender The 32-byte sender.
    @return address The owner.
    """
    return convert(convert(sender, uint256) >> 96, address)
