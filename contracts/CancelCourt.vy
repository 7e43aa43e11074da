# pragma version ~=0.4.3
"""
@title CancelCourt
@custom:contract-name CancelCourt
@license MIT
@notice The dispute court of cancelnote (protocol v1, docs/protocol.md).
        The operator of an off-chain exchange deposits a bond, signs every fill
        and answers every cancel with a signed cancellation note. This contract
        decides disputes from that evidence alone: it slashes the operator's
        bond for each proven offence and credits the victim, and it lets an
        order's owner force a cancel on-chain when the operator ignores one.
@dev Every message is EIP-712 typed data in the domain
     {name: "cancelnote", version: "1", chainId, verifyingContract: self}; the
     type strings below equal `cancelnote/messages.py` character for character
     (tests/test_court_build.py checks it).

     Offences (each paid at most once, keyed as noted; never by signature):
       1  fill after note   (rule 1 a-e, and a fill above a recorded cap)  per digest
       2  note equivocation (two different notes for one digest)           per digest
       3  fill equivocation (two different fills with one seq)             per seq
       4  fills out of order (filledTotal does not grow with seq)          per digest
       5  malformed fill    (amount == 0 or filledTotal < amount)          per digest
       6  bad fill          (worse than the order's limit, or overfilled)  per digest
       7  default           (forced cancel left unanswered for W seconds)  per request

     Storage is packed by hand where a claim must touch it (one slot each):
       _operator_word:  bond (128) | exitAnnouncedAt (64) | defaults (32) | halted (1)
                        | answers (31): answers not yet withdrawn, each worth disputeBond
       _requests[d]:    owner (160) | deadline (64) | status (8) | relayed (1)
       _claims[d]:      cap (160) | paid-offence bits (96)
"""


# @dev The EIP-712 domain type and the name and version of this court's domain.
_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_NAME_HASH: constant(bytes32) = keccak256("cancelnote")
_VERSION_HASH: constant(bytes32) = keccak256("1")


# @dev The type hashes of the signed messages: must equal `messages.py`'s TYPE_STRING.
ORDER_TYPEHASH: public(constant(bytes32)) = keccak256(
    "Order(bytes32 sender,uint32 productId,int128 priceX18,int128 amount,uint64 expiration,uint64 nonce)"
)
CANCELLATION_TYPEHASH: public(constant(bytes32)) = keccak256(
    "Cancellation(bytes32 sender,uint32[] productIds,bytes32[] digests,uint64 nonce)"
)
FILL_TYPEHASH: public(constant(bytes32)) = keccak256(
    "Fill(bytes32 digest,bytes32 sender,uint64 seq,uint128 amount,uint128 filledTotal,int128 priceX18,uint64 timestampMs)"
)
CANCELLATION_NOTE_TYPEHASH: public(constant(bytes32)) = keccak256(
    "CancellationNote(bytes32 digest,bytes32 sender,bytes32 requestHash,uint128 filledAmount,uint64 lastFillSeq,uint128 pendingAmount,uint64 pendingUntilMs,uint64 receivedAtMs,uint64 seq)"
)


# @dev The most digests (and product ids) a relayed `Cancellation` may list. The
# EIP-712 array hash needs the whole array in memory, and Vyper sizes memory by the
# bound, so the bound is kept well below `messages.MAX_ARRAY_LENGTH` (1024); an owner
# whose cancel lists more calls `requestCancel` directly.
MAX_CANCEL_DIGESTS: public(constant(uint256)) = 64


# @dev secp256k1n / 2: a signature with a larger `s` is the malleated twin of a
# low-s one (EIP-2); `ecrecover` accepts both, so the court rejects the high one.
_SECP256K1N_HALF: constant(uint256) = (
    57896044618658097711785492504343953926418782139537452191302581570759080747168
)


# @dev Offence kinds, as logged in `Slashed` and queried by `offencePaid`.
OFFENCE_FILL_AFTER_NOTE: public(constant(uint8)) = 1
OFFENCE_NOTE_EQUIVOCATION: public(constant(uint8)) = 2
OFFENCE_FILL_EQUIVOCATION: public(constant(uint8)) = 3
OFFENCE_FILLS_OUT_OF_ORDER: public(constant(uint8)) = 4
OFFENCE_MALFORMED_FILL: public(constant(uint8)) = 5
OFFENCE_BAD_FILL: public(constant(uint8)) = 6
OFFENCE_DEFAULT: public(constant(uint8)) = 7


# @dev Forced-cancel states, as returned by `cancelStatus`.
STATUS_NONE: public(constant(uint8)) = 0
STATUS_REQUESTED: public(constant(uint8)) = 1
STATUS_ANSWERED: public(constant(uint8)) = 2
STATUS_DEFAULTED: public(constant(uint8)) = 3


# @dev Bit layout of the packed words (see the module docstring).
_MASK_32: constant(uint256) = 2**32 - 1
_MASK_64: constant(uint256) = 2**64 - 1
_MASK_128: constant(uint256) = 2**128 - 1
_MASK_160: constant(uint256) = 2**160 - 1
_EXIT_SHIFT: constant(uint256) = 128
_DEFAULTS_SHIFT: constant(uint256) = 192
_HALTED_SHIFT: constant(uint256) = 224
_ANSWERS_SHIFT: constant(uint256) = 225
_MAX_ANSWERS: constant(uint256) = 2**31 - 1
_DEADLINE_SHIFT: constant(uint256) = 160
_STATUS_SHIFT: constant(uint256) = 224
_RELAYED_SHIFT: constant(uint256) = 232
_MARKS_SHIFT: constant(uint256) = 160
# @dev A cap is at most filledAmount + pendingAmount < 2**129; 160 bits hold it.
_CAP_MASK: constant(uint256) = _MASK_160


# @dev Longest answer window or exit delay (about 136 years): keeps every
# deadline inside its 64-bit field.
_MAX_DELAY: constant(uint256) = 2**32 - 1


# @dev A nonce is `recv_time_ms << 20 | random20` (messages.make_nonce).
_NONCE_RANDOM_BITS: constant(uint256) = 20


# @dev The operator whose signatures on fills and notes are evidence.
operator: public(immutable(address))
# @dev W: seconds the operator has to answer a forced cancel.
answerWindow: public(immutable(uint256))
# @dev Wei slashed from the bond per proven offence (less if the bond runs short).
penalty: public(immutable(uint256))
# @dev Smallest bond a deposit may leave.
minBond: public(immutable(uint256))
# @dev Wei a forced cancel costs its requester.
disputeBond: public(immutable(uint256))
# @dev Seconds between `announceExit` and `withdrawBond`; longer than any order's
# lifetime plus W, so that every claim can still be proven while the bond is here.
exitDelay: public(immutable(uint256))
# @dev Whether a default halts the operator (a flag that clients and watchers read).
haltOnDefault: public(immutable(bool))

# @dev The domain separator is cached for the deployment chain and address and
# rebuilt if either differs (a chain fork with a new id, or a delegatecall).
_CACHED_DOMAIN_SEPARATOR: immutable(bytes32)
_CACHED_CHAIN_ID: immutable(uint256)
_CACHED_SELF: immutable(address)


# @dev The operator's state, as unpacked from `_operator_word`.
struct OperatorState:
    bond: uint256
    exitAnnouncedAt: uint256
    defaults: uint256
    halted: bool
    answers: uint256


# @dev One forced cancel, as unpacked from `_requests[digest]`.
struct Request:
    owner: address
    deadline: uint256
    status: uint8
    relayed: bool


# @dev The answer of `cancelStatus`.
struct CancelStatus:
    status: uint8
    owner: address
    deadline: uint256
    cap: uint256


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
    pendingAmount: uint128
    pendingUntilMs: uint64
    receivedAtMs: uint64
    seq: uint64


# @dev Wei each account may withdraw (pull payments), except the operator's
# earned dispute bonds, which `answers` in `_operator_word` counts (see `credits`).
_credits: HashMap[address, uint256]

_operator_word: uint256
_requests: HashMap[bytes32, uint256]
_claims: HashMap[bytes32, uint256]
_fill_seq_paid: HashMap[uint64, bool]
# @dev Who paid the dispute bond of a relayed forced cancel (refunded on default).
_relayers: HashMap[bytes32, address]


event BondDeposited:
    amount: uint256
    bond: uint256


event ExitAnnounced:
    announcedAt: uint256
    withdrawableAt: uint256


event BondWithdrawn:
    amount: uint256


event Slashed:
    digest: indexed(bytes32)
    offence: indexed(uint8)
    victim: indexed(address)
    paid: uint256


# @dev Loud fallback: the bond held less than the penalty, so `paid` < `owed`.
event SlashShortfall:
    digest: indexed(bytes32)
    offence: indexed(uint8)
    owed: uint256
    paid: uint256


event CancelRequested:
    digest: indexed(bytes32)
    owner: indexed(address)
    requester: indexed(address)
    deadline: uint256
    cap: uint256


event CancelAnswered:
    digest: indexed(bytes32)
    cap: uint256
    noteSeq: uint64


# @dev The cap stays the one `CancelRequested` logged; `halted` is the court's
# halt flag after this default.
event CancelDefaulted:
    digest: indexed(bytes32)
    owner: indexed(address)
    defaults: uint256
    halted: bool


event Withdrawal:
    account: indexed(address)
    amount: uint256


@deploy
def __init__(
    operator_: address,
    answer_window_: uint256,
    penalty_: uint256,
    min_bond_: uint256,
    dispute_bond_: uint256,
    exit_delay_: uint256,
    halt_on_default_: bool,
):
    """
    @dev Fixes every parameter for the court's lifetime.
    @param operator_ The operator whose fills and notes are evidence.
    @param answer_window_ W: seconds the operator has to answer a forced cancel.
    @param penalty_ Wei slashed per proven offence.
    @param min_bond_ Smallest bond a deposit may leave; at least `penalty_`.
    @param dispute_bond_ Wei a forced cancel costs its requester.
    @param exit_delay_ Seconds from `announceExit` to `withdrawBond`; more than W.
    @param halt_on_default_ Whether a default halts the operator.
    """
    assert operator_ != empty(address), "court: operator is the zero address"
    assert answer_window_ != 0, "court: answer window is zero"
    assert exit_delay_ > answer_window_, "court: exit delay must exceed the answer window"
    assert exit_delay_ <= _MAX_DELAY, "court: exit delay too long"
    assert min_bond_ >= penalty_, "court: minimum bond below the penalty"
    assert min_bond_ <= _MASK_128, "court: minimum bond too large"
    operator = operator_
    answerWindow = answer_window_
    penalty = penalty_
    minBond = min_bond_
    disputeBond = dispute_bond_
    exitDelay = exit_delay_
    haltOnDefault = halt_on_default_
    _CACHED_CHAIN_ID = chain.id
    _CACHED_SELF = self
    _CACHED_DOMAIN_SEPARATOR = self._build_domain_separator()


# ---------------------------------------------------------------------------------
# The operator's bond.


@external
@payable
def depositBond():
    """
    @notice Adds `msg.value` to the operator's bond; anyone may top it up.
    @dev The bond must reach `minBond`; no deposit once an exit is announced, so
         that an exit's delay always covers the whole bond.
    """
    state: OperatorState = self._load_operator()
    assert state.exitAnnouncedAt == 0, "court: exit announced"
    assert msg.value != 0, "court: empty deposit"
    state.bond += msg.value
    assert state.bond <= _MASK_128, "court: bond too large"
    assert state.bond >= minBond, "court: bond below the minimum"
    self._store_operator(state)
    log BondDeposited(amount=msg.value, bond=state.bond)


@external
def announceExit():
    """
    @notice Starts the exit delay after which the operator may withdraw its bond.
    @dev Slashing goes on during the delay; it is irrevocable.
    """
    self._check_operator()
    state: OperatorState = self._load_operator()
    assert state.exitAnnouncedAt == 0, "court: exit already announced"
    state.exitAnnouncedAt = block.timestamp
    self._store_operator(state)
    log ExitAnnounced(announcedAt=block.timestamp, withdrawableAt=block.timestamp + exitDelay)


@external
def withdrawBond():
    """
    @notice Credits what is left of the bond to the operator, once the exit delay
            has passed; `withdraw` then pays it out.
    @dev Resets the exit, so the operator may bond again later.
    """
    self._check_operator()
    state: OperatorState = self._load_operator()
    assert state.exitAnnouncedAt != 0, "court: exit not announced"
    assert block.timestamp >= state.exitAnnouncedAt + exitDelay, "court: exit delay not over"
    amount: uint256 = state.bond
    state.bond = 0
    state.exitAnnouncedAt = 0
    self._store_operator(state)
    self._credits[operator] += amount
    log BondWithdrawn(amount=amount)


@external
@nonreentrant
def withdraw():
    """
    @notice Pays the caller everything credited to it (for the operator, with
            the dispute bonds its answers earned).
    @custom:security Checks-effects-interactions and `@nonreentrant`: the credit
                     is zeroed before the call, and a re-entrant call reverts.
    """
    amount: uint256 = self._credits[msg.sender]
    if msg.sender == operator:
        state: OperatorState = self._load_operator()
        amount += state.answers * disputeBond
        state.answers = 0
        self._store_operator(state)
    assert amount != 0, "court: nothing to withdraw"
    self._credits[msg.sender] = 0
    log Withdrawal(account=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)


# ---------------------------------------------------------------------------------
# Fraud proofs: anyone may submit them.


@external
def proveFillAfterNote(
    note: CancellationNote, noteSig: Bytes[65], fill: Fill, fillSig: Bytes[65]
):
    """
    @notice Slashes the operator for a fill its own note rules out (rule 1) and
            credits the order's owner.
    @dev Any of: (a) f.filledTotal > n.filledAmount + n.pendingAmount;
         (b) f.seq > n.seq and n.pendingAmount == 0;
         (c) f.seq > n.seq and f.timestampMs > n.pendingUntilMs;
         (d) n.lastFillSeq < f.seq < n.seq;
         (e) f.seq <= n.lastFillSeq and f.filledTotal > n.filledAmount.
    @param note An operator-signed cancellation note.
    @param noteSig The operator's signature of `note`.
    @param fill An operator-signed fill of the same digest and sender.
    @param fillSig The operator's signature of `fill`.
    """
    assert note.digest == fill.digest, "court: digests differ"
    assert note.sender == fill.sender, "court: senders differ"
    assert self._violates_note(note, fill), "court: no fill after note"
    self._check_operator_signature(self._hash_note(note), noteSig)
    self._check_operator_signature(self._hash_fill(fill), fillSig)
    self._punish(note.digest, OFFENCE_FILL_AFTER_NOTE, self._owner_of(note.sender))


@external
def proveEquivocationNotes(
    note1: CancellationNote, sig1: Bytes[65], note2: CancellationNote, sig2: Bytes[65]
):
    """
    @notice Slashes the operator for two different notes on one digest and
            credits the owner named by `note1`.
    @dev A crashed operator must re-send the same note, never a different one.
         "Different" is of the struct hash, never of the signature bytes.
    @param note1 An operator-signed note; its sender is paid.
    @param sig1 The operator's signature of `note1`.
    @param note2 A different operator-signed note for the same digest.
    @param sig2 The operator's signature of `note2`.
    """
    assert note1.digest == note2.digest, "court: digests differ"
    hash1: bytes32 = self._hash_note(note1)
    hash2: bytes32 = self._hash_note(note2)
    assert hash1 != hash2, "court: notes are identical"
    self._check_operator_signature(hash1, sig1)
    self._check_operator_signature(hash2, sig2)
    self._punish(note1.digest, OFFENCE_NOTE_EQUIVOCATION, self._owner_of(note1.sender))


@external
def proveEquivocationFills(fill1: Fill, sig1: Bytes[65], fill2: Fill, sig2: Bytes[65]):
    """
    @notice Slashes the operator for two fills that cannot both be true, and
            credits the owner named by `fill1`: either two different fills with
            one journal seq, or two fills of one digest whose cumulative total
            does not grow with seq.
    @dev Same seq: keyed by seq, not digest, so two fills of different orders
         sharing a seq are one offence, paid once (to the first proof's payee).
         Different seqs (fill1.seq < fill2.seq, keyed by digest): slashed if
         fill2.filledTotal <= fill1.filledTotal (protocol §12.2 (3)), or if
         fill2.filledTotal < fill1.filledTotal + fill2.amount: a later total
         holds the earlier total plus every amount since, its own included.
    @param fill1 An operator-signed fill (the earlier, if seqs differ); its
           sender is paid.
    @param sig1 The operator's signature of `fill1`.
    @param fill2 A second operator-signed fill.
    @param sig2 The operator's signature of `fill2`.
    """
    hash1: bytes32 = self._hash_fill(fill1)
    hash2: bytes32 = self._hash_fill(fill2)
    if fill1.seq == fill2.seq:
        assert hash1 != hash2, "court: fills are identical"
    else:
        assert fill1.digest == fill2.digest, "court: digests differ"
        assert fill1.seq < fill2.seq, "court: fills not in seq order"
        total1: uint256 = convert(fill1.filledTotal, uint256)
        total2: uint256 = convert(fill2.filledTotal, uint256)
        assert (
            total2 <= total1 or total2 < total1 + convert(fill2.amount, uint256)
        ), "court: fill totals are consistent"
    self._check_operator_signature(hash1, sig1)
    self._check_operator_signature(hash2, sig2)
    victim: address = self._owner_of(fill1.sender)
    if fill1.seq == fill2.seq:
        assert not self._fill_seq_paid[fill1.seq], "court: offence already paid"
        self._fill_seq_paid[fill1.seq] = True
        self._slash(fill1.digest, OFFENCE_FILL_EQUIVOCATION, victim, 0)
    else:
        self._punish(fill1.digest, OFFENCE_FILLS_OUT_OF_ORDER, victim)


@external
def proveMalformedFill(fill: Fill, fillSig: Bytes[65]):
    """
    @notice Slashes the operator for a fill that contradicts itself: a zero
            amount, or a cumulative total below its own amount.
    @param fill An operator-signed fill; its sender is paid.
    @param fillSig The operator's signature of `fill`.
    """
    assert fill.amount == 0 or fill.filledTotal < fill.amount, "court: fill is well formed"
    self._check_operator_signature(self._hash_fill(fill), fillSig)
    self._punish(fill.digest, OFFENCE_MALFORMED_FILL, self._owner_of(fill.sender))


@external
def proveBadFill(order: Order, orderSig: Bytes[65], fill: Fill, fillSig: Bytes[65]):
    """
    @notice Slashes the operator for filling an order beyond its terms (rule 4)
            and credits the order's owner.
    @dev A buy (amount > 0) filled above its limit price, a sell (amount < 0)
         filled below it, or a cumulative fill above |amount|.
    @param order The owner-signed order.
    @param orderSig The owner's signature of `order`.
    @param fill An operator-signed fill of that order's digest.
    @param fillSig The operator's signature of `fill`.
    """
    digest: bytes32 = self._hash_order(order)
    assert fill.digest == digest, "court: fill is for another order"
    assert self._breaks_order(order, fill), "court: fill within the order's terms"
    owner: address = self._owner_of(order.sender)
    assert self._recover(digest, orderSig) == owner, "court: order not signed by its owner"
    self._check_operator_signature(self._hash_fill(fill), fillSig)
    self._punish(digest, OFFENCE_BAD_FILL, owner)


# ---------------------------------------------------------------------------------
# Forced cancel: the on-chain fallback.


@external
@payable
def requestCancel(order: Order):
    """
    @notice Forces a cancel of the caller's own order: the operator must answer
            with a note within W seconds or default.
    @dev The digest is recomputed from the order, so nobody can force-cancel an
         order that is not theirs. The cap starts at 0 (nothing proven filled).
    @param order The order to cancel; `order.sender` must name the caller.
    """
    self._check_dispute_bond(msg.value)
    self._check_live(order)
    self._open_request(self._hash_order(order), self._check_caller_owns(order), 0)


@external
@payable
def requestCancelWithFill(order: Order, fill: Fill, fillSig: Bytes[65]):
    """
    @notice `requestCancel` with the owner's latest operator-signed fill receipt:
            its `filledTotal` becomes the cap should the operator default.
    @dev Costs one more storage write than `requestCancel`, so it is a separate
         function and the common path stays cheap.
    @param order The order to cancel; `order.sender` must name the caller.
    @param fill The operator-signed fill of that order proving what has filled.
    @param fillSig The operator's signature of `fill`.
    """
    self._check_dispute_bond(msg.value)
    self._check_live(order)
    owner: address = self._check_caller_owns(order)
    digest: bytes32 = self._hash_order(order)
    assert fill.digest == digest, "court: fill is for another order"
    self._check_operator_signature(self._hash_fill(fill), fillSig)
    self._open_request(digest, owner, convert(fill.filledTotal, uint256))


@external
@payable
def requestCancelSigned(
    order: Order, cancellation: Cancellation, cancellationSig: Bytes[65]
):
    """
    @notice Forces a cancel for the order's owner on the strength of its signed
            `Cancellation` listing the order's digest; anyone may relay it.
    @dev The relayer pays the dispute bond and a default refunds it to the
         relayer (remembered in a second slot, only when relayer != owner). The
         cancellation is void once its nonce's receive-by time has passed, as
         it is off-chain, so an old request cannot be replayed; the owner signs
         a fresh one to have it relayed.
    @param order The order to cancel.
    @param cancellation The owner's signed cancel request listing the digest.
    @param cancellationSig The owner's signature of `cancellation`.
    """
    self._check_dispute_bond(msg.value)
    self._check_live(order)
    assert (
        block.timestamp * 1_000 < convert(cancellation.nonce, uint256) >> _NONCE_RANDOM_BITS
    ), "court: cancellation expired"
    digest: bytes32 = self._hash_order(order)
    assert cancellation.sender == order.sender, "court: cancellation is for another sender"
    assert digest in cancellation.digests, "court: cancellation does not list the order"
    owner: address = self._owner_of(order.sender)
    assert (
        self._recover(self._hash_cancellation(cancellation), cancellationSig) == owner
    ), "court: cancellation not signed by the owner"
    self._open_request(digest, owner, 0)
    if msg.sender != owner:
        self._relayers[digest] = msg.sender


@external
def answerCancel(note: CancellationNote, noteSig: Bytes[65]):
    """
    @notice Answers a forced cancel with an operator-signed note for its digest;
            anyone may submit it, within W seconds of the request.
    @dev The note's filledAmount + pendingAmount becomes the order's cap, and the
         requester's dispute bond is credited to the operator, as one more
         answer counted in the operator's packed word: a non-zero slot (5,000
         gas) where a first credit would be a new one (22,100).
    @param note The operator's cancellation note for the requested digest.
    @param noteSig The operator's signature of `note`.
    """
    request: Request = self._load_request(note.digest)
    self._check_status(request, STATUS_REQUESTED)
    assert block.timestamp <= request.deadline, "court: answer window closed"
    assert self._owner_of(note.sender) == request.owner, "court: note is for another sender"
    self._check_operator_signature(self._hash_note(note), noteSig)
    cap: uint256 = convert(note.filledAmount, uint256) + convert(note.pendingAmount, uint256)
    request.status = STATUS_ANSWERED
    self._store_request(note.digest, request)
    self._set_cap(note.digest, cap)
    state: OperatorState = self._load_operator()
    assert state.answers < _MAX_ANSWERS, "court: operator must withdraw first"
    state.answers += 1
    self._store_operator(state)
    log CancelAnswered(digest=note.digest, cap=cap, noteSeq=note.seq)


@external
def finalize(digest: bytes32):
    """
    @notice Settles a forced cancel left unanswered for W seconds: the operator
            is in default, whoever paid the dispute bond gets it back and the
            owner gets the penalty. Anyone may call it.
    @dev The cap stays what the owner proved at the request (0 if nothing).
         The default is counted and, if so configured, halts the operator.
    @param digest The order digest of the forced cancel.
    """
    request: Request = self._load_request(digest)
    self._check_status(request, STATUS_REQUESTED)
    assert block.timestamp > request.deadline, "court: answer window still open"
    request.status = STATUS_DEFAULTED
    self._store_request(digest, request)
    state: OperatorState = self._load_operator()
    state.defaults += 1
    state.halted = state.halted or haltOnDefault
    log CancelDefaulted(
        digest=digest, owner=request.owner, defaults=state.defaults, halted=state.halted
    )
    refund: uint256 = disputeBond
    if request.relayed:
        self._credits[self._relayers[digest]] += disputeBond
        refund = 0
    self._store_operator(self._pay_penalty(state, digest, OFFENCE_DEFAULT, request.owner, refund))


@external
def proveFillAboveCap(fill: Fill, fillSig: Bytes[65]):
    """
    @notice Slashes the operator for a fill above the cap a forced cancel of
            its digest recorded (rule 1 again: one payout per digest, shared
            with `proveFillAfterNote`, so one over-fill is paid once).
    @dev After an answer this is rule 1 (a) without the note; after a default
         it is the only way, since there is no note.
    @param fill An operator-signed fill of an answered or defaulted digest.
    @param fillSig The operator's signature of `fill`.
    """
    digest: bytes32 = fill.digest
    request: Request = self._load_request(digest)
    assert (
        request.status == STATUS_ANSWERED or request.status == STATUS_DEFAULTED
    ), "court: no cap recorded"
    assert self._owner_of(fill.sender) == request.owner, "court: fill is for another sender"
    assert (
        convert(fill.filledTotal, uint256) > self._claims[digest] & _CAP_MASK
    ), "court: fill within the cap"
    self._check_operator_signature(self._hash_fill(fill), fillSig)
    self._punish(digest, OFFENCE_FILL_AFTER_NOTE, request.owner)


# ---------------------------------------------------------------------------------
# Views.


@external
@view
def bond() -> uint256:
    """
    @notice The operator's bond, in wei.
    @return uint256 What is left of the bond after every slash so far.
    """
    return self._load_operator().bond


@external
@view
def exitAnnouncedAt() -> uint256:
    """
    @notice When the operator announced its exit (0 if it has not).
    @return uint256 The block timestamp of `announceExit`, or 0.
    """
    return self._load_operator().exitAnnouncedAt


@external
@view
def defaults() -> uint256:
    """
    @notice How many forced cancels the operator left unanswered.
    @return uint256 The number of defaults.
    """
    return self._load_operator().defaults


@external
@view
def halted() -> bool:
    """
    @notice Whether a default has halted the operator (only if `haltOnDefault`).
    @return bool True once halted; it never clears.
    """
    return self._load_operator().halted


@external
@view
def credits(account: address) -> uint256:
    """
    @notice Wei `account` may withdraw.
    @param account The account.
    @return uint256 Its credit; for the operator, plus its unwithdrawn answers'
            dispute bonds.
    """
    amount: uint256 = self._credits[account]
    if account == operator:
        amount += self._load_operator().answers * disputeBond
    return amount


@external
@view
def cancelStatus(digest: bytes32) -> CancelStatus:
    """
    @notice The forced-cancel state of an order.
    @param digest The order digest.
    @return CancelStatus Status (none, requested, answered, defaulted), owner,
            answer deadline and cap.
    """
    request: Request = self._load_request(digest)
    return CancelStatus(
        status=request.status,
        owner=request.owner,
        deadline=request.deadline,
        cap=self._claims[digest] & _CAP_MASK,
    )


@external
@view
def offencePaid(digest: bytes32, offence: uint8) -> bool:
    """
    @notice Whether an offence keyed by digest has been paid for this digest.
    @dev Fill equivocation is keyed by seq: see `fillSeqPaid`; a default is
         recorded by the request's status.
    @param digest The order digest.
    @param offence One of the OFFENCE_* kinds.
    @return bool True once paid.
    """
    return self._claims[digest] & self._mark(offence) != 0


@external
@view
def fillSeqPaid(seq: uint64) -> bool:
    """
    @notice Whether the fill equivocation at journal `seq` has been paid.
    @param seq The operator journal's sequence number.
    @return bool True once paid.
    """
    return self._fill_seq_paid[seq]


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @notice The EIP-712 domain separator every signature is bound to.
    @return bytes32 The separator for this chain and this contract.
    """
    return self._domain_separator()


@external
@view
def orderDigest(order: Order) -> bytes32:
    """
    @notice The EIP-712 digest of an order: its identifier everywhere.
    @param order The order.
    @return bytes32 The digest the owner signs.
    """
    return self._hash_order(order)


# ---------------------------------------------------------------------------------
# Guards.


@internal
@view
def _check_operator():
    """
    @dev Reverts unless the operator is calling.
    """
    assert msg.sender == operator, "court: caller is not the operator"


@internal
@view
def _check_caller_owns(order: Order) -> address:
    """
    @dev Reverts unless the caller owns `order` (the first 20 bytes of its sender).
    @param order The order to be force-cancelled.
    @return address The owner.
    """
    owner: address = self._owner_of(order.sender)
    assert msg.sender == owner, "court: caller is not the order owner"
    return owner


@internal
@view
def _check_live(order: Order):
    """
    @dev Reverts once the order has expired: there is nothing left to cancel.
    @param order The order to be force-cancelled.
    """
    assert block.timestamp < convert(order.expiration, uint256), "court: order expired"


@internal
@view
def _check_dispute_bond(paid: uint256):
    """
    @dev Reverts unless a forced cancel pays exactly the dispute bond.
    @param paid The wei sent (`msg.value`, which internal functions cannot read).
    """
    assert paid == disputeBond, "court: wrong dispute bond"


@internal
@pure
def _check_status(request: Request, expected: uint8):
    """
    @dev Reverts unless the forced cancel is in state `expected`, naming why.
    @param request The unpacked forced cancel.
    @param expected The state required.
    """
    if request.status != expected:
        assert request.status != STATUS_NONE, "court: cancel not requested"
        assert request.status != STATUS_REQUESTED, "court: cancel already requested"
        raise "court: cancel already settled"


@internal
@view
def _check_operator_signature(digest: bytes32, signature: Bytes[65]):
    """
    @dev Reverts unless the operator signed `digest`.
    @param digest The EIP-712 digest.
    @param signature The 65-byte signature r || s || v.
    """
    assert self._recover(digest, signature) == operator, "court: not signed by the operator"


@internal
@pure
def _recover(digest: bytes32, signature: Bytes[65]) -> address:
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


# ---------------------------------------------------------------------------------
# Rules.


@internal
@pure
def _violates_note(note: CancellationNote, fill: Fill) -> bool:
    """
    @dev Whether `fill` breaks the promise `note` makes (rule 1, a-e).
    @param note The cancellation note.
    @param fill A fill of the same digest.
    @return bool True if any of (a)-(e) holds.
    """
    filled: uint256 = convert(note.filledAmount, uint256)
    total: uint256 = convert(fill.filledTotal, uint256)
    if total > filled + convert(note.pendingAmount, uint256):
        return True  # (a) more than filled + pending
    if fill.seq > note.seq and (note.pendingAmount == 0 or fill.timestampMs > note.pendingUntilMs):
        return True  # (b) nothing was pending, or (c) settled after the pending deadline
    if note.lastFillSeq < fill.seq and fill.seq < note.seq:
        return True  # (d) a fill the note should have counted
    # (e) a counted fill above the counted amount; checked literally even when
    # lastFillSeq >= seq (a note no honest operator signs)
    return fill.seq <= note.lastFillSeq and total > filled


@internal
@pure
def _breaks_order(order: Order, fill: Fill) -> bool:
    """
    @dev Whether `fill` is worse than the order's limit or overfills it (rule 4).
    @param order The owner-signed order.
    @param fill A fill of that order.
    @return bool True if the price is worse or the total above |amount|.
    """
    if order.amount > 0 and fill.priceX18 > order.priceX18:
        return True  # a buy filled above its limit
    if order.amount < 0 and fill.priceX18 < order.priceX18:
        return True  # a sell filled below its limit
    # int256 holds -amount even for min_value(int128)
    size: uint256 = convert(abs(convert(order.amount, int256)), uint256)
    return convert(fill.filledTotal, uint256) > size


# ---------------------------------------------------------------------------------
# Effects.


@internal
def _open_request(digest: bytes32, owner: address, cap: uint256):
    """
    @dev Records a forced cancel of `digest` with its deadline, taking the bond.
    @param digest The order digest.
    @param owner The order's owner, who is paid on default.
    @param cap What the owner proved filled (0 if nothing).
    """
    request: Request = self._load_request(digest)
    self._check_status(request, STATUS_NONE)
    request = Request(
        owner=owner,
        deadline=block.timestamp + answerWindow,
        status=STATUS_REQUESTED,
        relayed=msg.sender != owner,
    )
    self._store_request(digest, request)
    if cap != 0:
        self._set_cap(digest, cap)
    log CancelRequested(
        digest=digest, owner=owner, requester=msg.sender, deadline=request.deadline, cap=cap
    )


@internal
def _punish(digest: bytes32, offence: uint8, victim: address):
    """
    @dev Marks `offence` on `digest` paid (reverting if it was) and slashes.
    @param digest The order digest the offence concerns.
    @param offence One of the per-digest OFFENCE_* kinds.
    @param victim The account credited.
    """
    claims: uint256 = self._claims[digest]
    mark: uint256 = self._mark(offence)
    assert claims & mark == 0, "court: offence already paid"
    self._claims[digest] = claims | mark
    self._slash(digest, offence, victim, 0)


@internal
def _slash(digest: bytes32, offence: uint8, victim: address, refund: uint256):
    """
    @dev Moves the penalty from the bond to `victim`'s credit, plus `refund`.
    @param digest The order digest the offence concerns.
    @param offence The OFFENCE_* kind.
    @param victim The account credited.
    @param refund Wei owed to `victim` on top.
    """
    self._store_operator(
        self._pay_penalty(self._load_operator(), digest, offence, victim, refund)
    )


@internal
def _pay_penalty(
    state: OperatorState, digest: bytes32, offence: uint8, victim: address, refund: uint256
) -> OperatorState:
    """
    @dev Takes the penalty out of `state`'s bond and credits it, plus `refund`,
         to `victim`; the caller stores the state (so that `finalize` writes the
         operator's word once).
    @custom:security ! DANGER ! Liveness fallback: when the bond holds less than
                     the penalty, what is left is paid and `SlashShortfall` says
                     so; the proof still succeeds and is still marked paid.
    @param state The operator's state, updated and returned.
    @param digest The order digest the offence concerns.
    @param offence The OFFENCE_* kind.
    @param victim The account credited.
    @param refund Wei owed to `victim` on top (a defaulted request's bond).
    @return OperatorState `state` with the penalty taken.
    """
    paid: uint256 = min(penalty, state.bond)
    state.bond -= paid
    self._credits[victim] += paid + refund
    log Slashed(digest=digest, offence=offence, victim=victim, paid=paid)
    if paid < penalty:
        log SlashShortfall(digest=digest, offence=offence, owed=penalty, paid=paid)
    return state


@internal
def _set_cap(digest: bytes32, cap: uint256):
    """
    @dev Records the cap of `digest`, keeping its paid-offence bits.
    @param digest The order digest.
    @param cap The cap, below 2**160 (at most two uint128 summed).
    """
    self._claims[digest] = (self._claims[digest] & ~_CAP_MASK) | cap


# ---------------------------------------------------------------------------------
# Packing.


@internal
@view
def _load_operator() -> OperatorState:
    """
    @dev Unpacks the operator's word.
    @return OperatorState Bond, exit announcement, defaults, halt flag and
            unwithdrawn answers.
    """
    word: uint256 = self._operator_word
    return OperatorState(
        bond=word & _MASK_128,
        exitAnnouncedAt=(word >> _EXIT_SHIFT) & _MASK_64,
        defaults=(word >> _DEFAULTS_SHIFT) & _MASK_32,
        halted=(word >> _HALTED_SHIFT) & 1 == 1,
        answers=word >> _ANSWERS_SHIFT,
    )


@internal
def _store_operator(state: OperatorState):
    """
    @dev Packs the operator's word. The bond is checked below 2**128 on deposit,
         timestamps fit 64 bits, 2**32 defaults would need 2**32 requests, and
         `answerCancel` keeps answers below 2**31.
    @param state The operator's state.
    """
    self._operator_word = (
        state.bond
        | (state.exitAnnouncedAt << _EXIT_SHIFT)
        | (state.defaults << _DEFAULTS_SHIFT)
        | (convert(state.halted, uint256) << _HALTED_SHIFT)
        | (state.answers << _ANSWERS_SHIFT)
    )


@internal
@view
def _load_request(digest: bytes32) -> Request:
    """
    @dev Unpacks the forced cancel of `digest`.
    @param digest The order digest.
    @return Request Owner, deadline, status and whether a relayer paid.
    """
    word: uint256 = self._requests[digest]
    return Request(
        owner=convert(word & _MASK_160, address),
        deadline=(word >> _DEADLINE_SHIFT) & _MASK_64,
        status=convert((word >> _STATUS_SHIFT) & 255, uint8),
        relayed=(word >> _RELAYED_SHIFT) & 1 == 1,
    )


@internal
def _store_request(digest: bytes32, request: Request):
    """
    @dev Packs the forced cancel of `digest` into one slot. Deadlines fit 64
         bits: block timestamps plus W, which is at most 2**32.
    @param digest The order digest.
    @param request Owner, deadline, status and whether a relayer paid.
    """
    self._requests[digest] = (
        convert(request.owner, uint256)
        | (request.deadline << _DEADLINE_SHIFT)
        | (convert(request.status, uint256) << _STATUS_SHIFT)
        | (convert(request.relayed, uint256) << _RELAYED_SHIFT)
    )


@internal
@pure
def _mark(offence: uint8) -> uint256:
    """
    @dev The bit of `offence` in a digest's claims word.
    @param offence One of the OFFENCE_* kinds.
    @return uint256 The bit.
    """
    return 1 << (_MARKS_SHIFT + convert(offence, uint256))


@internal
@pure
def _owner_of(sender: bytes32) -> address:
    """
    @dev The owner of a `sender`: its first 20 bytes (the rest is a subaccount).
    @param sender The 32-byte sender.
    @return address The owner.
    """
    return convert(convert(sender, uint256) >> 96, address)


# ---------------------------------------------------------------------------------
# EIP-712 hashing.


@internal
@view
def _domain_separator() -> bytes32:
    """
    @dev The cached separator, rebuilt if the chain id or address changed.
    @return bytes32 The domain separator.
    """
    if chain.id == _CACHED_CHAIN_ID and self == _CACHED_SELF:
        return _CACHED_DOMAIN_SEPARATOR
    return self._build_domain_separator()


@internal
@view
def _build_domain_separator() -> bytes32:
    """
    @dev Computes the separator for the current chain and address.
    @return bytes32 The domain separator.
    """
    return keccak256(abi_encode(_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, chain.id, self))


@internal
@view
def _typed_digest(struct_hash: bytes32) -> bytes32:
    """
    @dev The EIP-712 digest of a struct hash in this court's domain.
    @param struct_hash The struct's hashStruct.
    @return bytes32 keccak256(0x1901 || separator || struct_hash).
    """
    return keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))


@internal
@view
def _hash_order(order: Order) -> bytes32:
    """
    @dev The EIP-712 digest of an order (the order's identifier).
    @param order The order.
    @return bytes32 The digest.
    """
    return self._typed_digest(
        keccak256(
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
    )


@internal
@view
def _hash_fill(fill: Fill) -> bytes32:
    """
    @dev The EIP-712 digest of a fill.
    @param fill The fill.
    @return bytes32 The digest.
    """
    return self._typed_digest(
        keccak256(
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
    )


@internal
@view
def _hash_note(note: CancellationNote) -> bytes32:
    """
    @dev The EIP-712 digest of a cancellation note.
    @param note The note.
    @return bytes32 The digest.
    """
    return self._typed_digest(
        keccak256(
            abi_encode(
                CANCELLATION_NOTE_TYPEHASH,
                note.digest,
                note.sender,
                note.requestHash,
                note.filledAmount,
                note.lastFillSeq,
                note.pendingAmount,
                note.pendingUntilMs,
                note.receivedAtMs,
                note.seq,
            )
        )
    )


@internal
@view
def _hash_cancellation(cancellation: Cancellation) -> bytes32:
    """
    @dev The EIP-712 digest of a cancel request. An array's encodeData is the
         keccak of its elements, each padded to 32 bytes: the ABI encoding of the
         array without its offset and length words.
    @param cancellation The request; it lists at least one digest.
    @return bytes32 The digest.
    """
    product_ids: Bytes[32 * MAX_CANCEL_DIGESTS + 64] = abi_encode(cancellation.productIds)
    digests: Bytes[32 * MAX_CANCEL_DIGESTS + 64] = abi_encode(cancellation.digests)
    return self._typed_digest(
        keccak256(
            abi_encode(
                CANCELLATION_TYPEHASH,
                cancellation.sender,
                keccak256(slice(product_ids, 64, len(product_ids) - 64)),
                keccak256(slice(digests, 64, len(digests) - 64)),
                cancellation.nonce,
            )
        )
    )
