# pragma version ~=0.4.3
"""
@title CancelCourt
@custom:contract-name CancelCourt
@license MIT
@notice The dispute court of cancelnote (protocol v2, docs/protocol.md).
        The operator of an off-chain exchange deposits a bond, signs every fill
        and answers every cancel with a signed cancellation note. This contract
        decides disputes from that evidence alone: each proven offence files a
        claim of one penalty for the order's owner, paid from the bond once it
        vests (a share burnt), and it lets an order's owner force a cancel
        on-chain when the operator ignores one.
@dev Every message is EIP-712 typed data in the domain
     {name: "cancelnote", version: "2", chainId, verifyingContract: self}; the
     type strings below equal `cancelnote/messages.py` character for character
     (tests/test_court_build.py checks it).

     Every proof takes the owner's `Order`: the court recomputes its digest,
     requires the operator's messages to be about that digest, and files the
     claim for the order's owner. So the payee is proven by the order, never
     named by the operator, and "paid once" is per (digest, offence).

     Offences (each claimed at most once per order digest):
       1  fill after note   (rule 1 a-f; above a forced cancel's cap; after it)
       2  note equivocation (two different notes for one digest)
       3  fill equivocation (two different fills with one seq)
       4  fills out of order (filledTotal does not grow with seq)
       5  malformed fill    (amount 0, filledTotal < amount, not the order's sender)
       6  bad fill          (worse than the order's limit, or overfilled)
       7  default           (forced cancel left unanswered for W seconds)
       8  note out of bounds (a note breaking a bound of the order it answers)
       9-11 the journal-heads offences, proven in the HeadsCourt (HeadsCourt.vy)
            and filed here by `fileHeadsClaim`; it proves offence 1 too

     The journal-heads rules do not fit beside these in one contract's 24,576
     bytes (EIP-170), so they live in a HeadsCourt, deployed by this court's
     deployer in its next transaction (its address is fixed by the deployer's
     nonce, and given here); the two share the bond and the claims through one
     function, `fileHeadsClaim`, which only that HeadsCourt may call.

     Claims are paid in windows. A window opens with its first claim, takes
     claims for `claimDelay` seconds and vests `claimDelay` after it closes;
     a vested window is paid from the bond in window order, pro rata when the
     bond is short, `burnShareBps` of every payment to `burnAddress`. What is
     paid short stays owed: a later deposit pays it.

     Storage is packed by hand (one slot each):
       _operator_word:  bond (128) | exitAnnouncedAt (64) | defaults (32) | halted (1)
                        | answers (31): answers not yet withdrawn, each worth disputeBond
       _ledger:         open window (32) | its opening (40) | its claims (32)
                        | claims ever (48) | next request id (48)
       _settled:        taken from the bond by windows (128) | burnt, not sent (128)
       _windows[w]:     claims (32) | taken (128) | opening (40)
       _claims[d][o]:   window (32) | paid to the owner (128)
       _requests[d]:    cap, or the default's paid amount (128) | requestedAt (40)
                        | default's window (32) | status (8) | relayed (1) | refunded (1)
"""


import eip712


# @dev The type hashes of the signed messages (eip712.vy: they equal `messages.py`'s).
ORDER_TYPEHASH: public(constant(bytes32)) = eip712.ORDER_TYPEHASH
CANCELLATION_TYPEHASH: public(constant(bytes32)) = eip712.CANCELLATION_TYPEHASH
FILL_TYPEHASH: public(constant(bytes32)) = eip712.FILL_TYPEHASH
CANCELLATION_NOTE_TYPEHASH: public(constant(bytes32)) = eip712.CANCELLATION_NOTE_TYPEHASH


# @dev The most digests (and product ids) a relayed `Cancellation` may list
# (eip712.vy); an owner whose cancel lists more calls `requestCancel` directly.
MAX_CANCEL_DIGESTS: public(constant(uint256)) = eip712.MAX_CANCEL_DIGESTS


# @dev Offence kinds, as logged in `Slashed` and queried by `claimOf`.
OFFENCE_FILL_AFTER_NOTE: public(constant(uint8)) = 1
OFFENCE_NOTE_EQUIVOCATION: public(constant(uint8)) = 2
OFFENCE_FILL_EQUIVOCATION: public(constant(uint8)) = 3
OFFENCE_FILLS_OUT_OF_ORDER: public(constant(uint8)) = 4
OFFENCE_MALFORMED_FILL: public(constant(uint8)) = 5
OFFENCE_BAD_FILL: public(constant(uint8)) = 6
OFFENCE_DEFAULT: public(constant(uint8)) = 7
OFFENCE_NOTE_OUT_OF_BOUNDS: public(constant(uint8)) = 8


# @dev Forced-cancel states, as returned by `cancelStatus`.
STATUS_NONE: public(constant(uint8)) = 0
STATUS_REQUESTED: public(constant(uint8)) = 1
STATUS_ANSWERED: public(constant(uint8)) = 2
STATUS_DEFAULTED: public(constant(uint8)) = 3


# @dev Bit layout of the packed words (see the module docstring).
_MASK_32: constant(uint256) = 2**32 - 1
_MASK_40: constant(uint256) = 2**40 - 1
_MASK_48: constant(uint256) = 2**48 - 1
_MASK_64: constant(uint256) = 2**64 - 1
_MASK_128: constant(uint256) = 2**128 - 1
_EXIT_SHIFT: constant(uint256) = 128
_DEFAULTS_SHIFT: constant(uint256) = 192
_HALTED_SHIFT: constant(uint256) = 224
_ANSWERS_SHIFT: constant(uint256) = 225
_MAX_ANSWERS: constant(uint256) = 2**31 - 1
_OPENED_SHIFT: constant(uint256) = 32
_COUNT_SHIFT: constant(uint256) = 72
_TOTAL_SHIFT: constant(uint256) = 104
_NEXT_ID_SHIFT: constant(uint256) = 152
_BURNT_SHIFT: constant(uint256) = 128
_TAKEN_SHIFT: constant(uint256) = 32
_WINDOW_OPENED_SHIFT: constant(uint256) = 160
_PAID_SHIFT: constant(uint256) = 32
_REQUESTED_AT_SHIFT: constant(uint256) = 128
_DEFAULT_WINDOW_SHIFT: constant(uint256) = 168
_STATUS_SHIFT: constant(uint256) = 200
_RELAYED_SHIFT: constant(uint256) = 208
_REFUNDED_SHIFT: constant(uint256) = 209


# @dev Longest answer window, exit delay or claim delay (about 136 years): keeps
# every deadline inside its field.
_MAX_DELAY: constant(uint256) = 2**32 - 1
# @dev Largest penalty: 2**32 claims of it still fit the 128-bit amounts.
_MAX_PENALTY: constant(uint256) = 2**88 - 1
# @dev Basis points in a whole (the burn share is out of this).
_BPS: constant(uint256) = 10_000


# @dev A nonce is `recv_time_ms << 20 | random20` (messages.make_nonce).
_NONCE_RANDOM_BITS: constant(uint256) = 20


# @dev The operator whose signatures on fills and notes are evidence.
operator: public(immutable(address))
# @dev W: seconds the operator has to answer a forced cancel.
answerWindow: public(immutable(uint256))
# @dev Wei each proven offence owes its victim (the burn share included).
penalty: public(immutable(uint256))
# @dev Smallest bond a deposit may leave.
minBond: public(immutable(uint256))
# @dev Wei a forced cancel costs its requester.
disputeBond: public(immutable(uint256))
# @dev Seconds between `announceExit` and the end of the bond's liability; longer
# than any order's lifetime plus W. The bond leaves `claimDelay` after that.
exitDelay: public(immutable(uint256))
# @dev Whether a default halts the operator (a flag that clients and watchers read).
haltOnDefault: public(immutable(bool))
# @dev Longest pending window a note may declare, in ms after its receivedAtMs;
# also how long after a forced cancel a fill may still settle.
maxPendingMs: public(immutable(uint256))
# @dev Seconds a claims window stays open, and then seconds until it vests.
claimDelay: public(immutable(uint256))
# @dev Share of every payment from the bond, in basis points, sent to `burnAddress`
# instead of the owner: a proof the operator makes against itself costs it this.
burnShareBps: public(immutable(uint256))
# @dev Where the burn share goes (an escrow, or an address nobody controls).
burnAddress: public(immutable(address))
# @dev The HeadsCourt bound to this court: the only caller of `fileHeadsClaim`.
headsCourt: public(immutable(address))

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


# @dev The claims ledger, as unpacked from `_ledger`.
struct Ledger:
    window: uint256
    openedAt: uint256
    count: uint256
    claimsEver: uint256
    nextRequestId: uint256


# @dev One closed claims window, as unpacked from `_windows[w]`.
struct Window:
    count: uint256
    taken: uint256
    openedAt: uint256


# @dev One forced cancel, as unpacked from `_requests[digest]`.
struct Request:
    amount: uint256
    requestedAt: uint256
    window: uint256
    status: uint8
    relayed: bool
    refunded: bool


# @dev The answer of `cancelStatus`.
struct CancelStatus:
    status: uint8
    requestedAt: uint256
    deadline: uint256
    cap: uint256


# @dev The answer of `claimOf`.
struct ClaimStatus:
    window: uint256
    paid: uint256
    entitled: uint256
    vestsAt: uint256


# @dev The answer of `windowOf`.
struct WindowStatus:
    count: uint256
    taken: uint256
    openedAt: uint256
    vestsAt: uint256


# @dev Wei each account may withdraw (pull payments), except the operator's
# earned dispute bonds, which `answers` in `_operator_word` counts (see `credits`).
_credits: HashMap[address, uint256]

_operator_word: uint256
_ledger: uint256
_settled: uint256
_windows: HashMap[uint256, uint256]
_claims: HashMap[bytes32, HashMap[uint8, uint256]]
_requests: HashMap[bytes32, uint256]
# @dev Who paid the dispute bond of a relayed forced cancel (refunded on default).
_relayers: HashMap[bytes32, address]


event BondDeposited:
    amount: uint256
    bond: uint256


event ExitAnnounced:
    announcedAt: uint256
    withdrawableAt: uint256


# @dev `kept` stays in the bond for claims still owed.
event BondWithdrawn:
    amount: uint256
    kept: uint256


# @dev An offence is proven: a claim of `penalty` for `owner`, in claims window
# `window` (see `windowOf` for when it vests).
event Slashed:
    owner: indexed(address)
    digest: indexed(bytes32)
    offence: indexed(uint8)
    window: uint256
    penalty: uint256


# @dev `paid` wei of the claim (plus a refunded dispute bond) credited to its owner.
event ClaimPaid:
    owner: indexed(address)
    digest: indexed(bytes32)
    offence: indexed(uint8)
    paid: uint256
    refund: uint256


# @dev A vested window took `taken` of the `owed` its claims are worth from the
# bond (so far); `taken < owed` is the loud shortfall: the rest stays owed.
event WindowSettled:
    window: indexed(uint256)
    owed: uint256
    taken: uint256


event BurnSent:
    amount: uint256


# @dev Everything an answer needs: the order (so an operator that never saw it
# answers from this event alone), its digest and owner, and the request's id.
event CancelRequested:
    owner: indexed(address)
    digest: indexed(bytes32)
    requester: indexed(address)
    requestId: uint256
    sender: bytes32
    productId: uint32
    priceX18: int128
    amount: int128
    expiration: uint64
    nonce: uint64
    requestedAt: uint256
    deadline: uint256


event CancelAnswered:
    owner: indexed(address)
    digest: indexed(bytes32)
    cap: uint256
    noteSeq: uint64


# @dev `halted` is the court's halt flag after this default.
event CancelDefaulted:
    owner: indexed(address)
    digest: indexed(bytes32)
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
    max_pending_ms_: uint256,
    claim_delay_: uint256,
    burn_share_bps_: uint256,
    burn_address_: address,
    heads_court_: address,
):
    """
    @dev Fixes every parameter for the court's lifetime.
    @param operator_ The operator whose fills and notes are evidence.
    @param answer_window_ W: seconds the operator has to answer a forced cancel.
    @param penalty_ Wei each proven offence owes its victim.
    @param min_bond_ Smallest bond a deposit may leave; at least `penalty_`.
    @param dispute_bond_ Wei a forced cancel costs its requester.
    @param exit_delay_ Seconds from `announceExit` to the end of liability; more than W.
    @param halt_on_default_ Whether a default halts the operator.
    @param max_pending_ms_ Longest pending window of a note, in ms; at most W.
    @param claim_delay_ Seconds a claims window stays open, then until it vests.
    @param burn_share_bps_ Basis points of every payment sent to `burn_address_`.
    @param burn_address_ Where the burn share goes.
    @param heads_court_ Where the deployer's next transaction deploys this
           court's HeadsCourt (the address its nonce gives).
    """
    assert operator_ != empty(address), "court: operator is the zero address"
    assert answer_window_ != 0, "court: answer window is zero"
    assert exit_delay_ > answer_window_, "court: exit delay must exceed the answer window"
    assert exit_delay_ <= _MAX_DELAY, "court: exit delay too long"
    assert min_bond_ >= penalty_, "court: minimum bond below the penalty"
    assert min_bond_ <= _MASK_128, "court: minimum bond too large"
    assert penalty_ <= _MAX_PENALTY, "court: penalty too large"
    assert max_pending_ms_ != 0, "court: pending bound is zero"
    assert max_pending_ms_ <= answer_window_ * 1_000, "court: pending bound beyond the answer window"
    assert claim_delay_ != 0, "court: claim delay is zero"
    assert claim_delay_ <= _MAX_DELAY, "court: claim delay too long"
    assert burn_share_bps_ <= _BPS, "court: burn share above 100%"
    assert burn_address_ != empty(address), "court: burn address is the zero address"
    operator = operator_
    answerWindow = answer_window_
    penalty = penalty_
    minBond = min_bond_
    disputeBond = dispute_bond_
    exitDelay = exit_delay_
    haltOnDefault = halt_on_default_
    maxPendingMs = max_pending_ms_
    claimDelay = claim_delay_
    burnShareBps = burn_share_bps_
    burnAddress = burn_address_
    _CACHED_CHAIN_ID = chain.id
    _CACHED_SELF = self
    assert heads_court_ != empty(address), "court: heads court is the zero address"
    headsCourt = heads_court_
    _CACHED_DOMAIN_SEPARATOR = eip712.domain_separator(self)
    # Window 1 is the first to open and request ids start at 1; the ledger is thus
    # never zero, and a first claim or request rewrites a slot rather than creating it.
    self._store_ledger(Ledger(window=1, openedAt=0, count=0, claimsEver=0, nextRequestId=1))


# ---------------------------------------------------------------------------------
# The operator's bond.


@external
@payable
def depositBond():
    """
    @notice Adds `msg.value` to the operator's bond; anyone may top it up.
    @dev The bond must reach `minBond`; no deposit once an exit is announced, so
         that an exit's delay always covers the whole bond. A deposit pays
         claims paid short before: their windows take it when next settled.
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
    @dev Proofs go on during the delay; it is irrevocable.
    """
    self._check_operator()
    state: OperatorState = self._load_operator()
    assert state.exitAnnouncedAt == 0, "court: exit already announced"
    state.exitAnnouncedAt = block.timestamp
    self._store_operator(state)
    log ExitAnnounced(
        announcedAt=block.timestamp, withdrawableAt=block.timestamp + exitDelay + claimDelay
    )


@external
def withdrawBond():
    """
    @notice Credits the operator what is left of the bond beyond the claims still
            owed, once the exit delay and then the claim delay have passed.
    @dev An offence signed up to the end of the exit delay can still be proven
         for `claimDelay`; what its claim and every other unpaid claim are owed
         stays in the bond. Resets the exit, so the operator may bond again.
    """
    self._check_operator()
    state: OperatorState = self._load_operator()
    assert state.exitAnnouncedAt != 0, "court: exit not announced"
    assert (
        block.timestamp >= state.exitAnnouncedAt + exitDelay + claimDelay
    ), "court: exit delay not over"
    kept: uint256 = min(state.bond, self._outstanding())
    amount: uint256 = state.bond - kept
    state.bond = kept
    state.exitAnnouncedAt = 0
    self._store_operator(state)
    self._credits[operator] += amount
    log BondWithdrawn(amount=amount, kept=kept)


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


@external
@nonreentrant
def sendBurn():
    """
    @notice Sends the burn share collected so far to `burnAddress`; anyone may.
    @dev Kept apart from the payments so that a burn address that refuses ether
         can block nothing but its own transfer.
    """
    settled: uint256 = self._settled
    amount: uint256 = settled >> _BURNT_SHIFT
    assert amount != 0, "court: nothing to burn"
    self._settled = settled & _MASK_128
    log BurnSent(amount=amount)
    raw_call(burnAddress, b"", value=amount)


# ---------------------------------------------------------------------------------
# Claims: filed by proofs, paid from the bond once vested.


@external
def fileHeadsClaim(digest: bytes32, offence: uint8, sender: bytes32, halt: bool):
    """
    @notice Files the claim for an offence the HeadsCourt proved, for the owner
            of `sender`, once per (digest, offence); `halt` halts the operator.
    @dev The one entry of the interface between the two courts: the HeadsCourt
         checks the proof, this court owns the bond, the claims and the halt.
    @param digest The order digest the claim is keyed by.
    @param offence One of the OFFENCE_* kinds (the HeadsCourt's included).
    @param sender The order's sender, whose owner the claim is for.
    @param halt Whether the offence halts the operator (a fork of its log).
    """
    assert msg.sender == headsCourt, "court: caller is not the heads court"
    self._file(digest, offence, sender)
    if halt:
        state: OperatorState = self._load_operator()
        state.halted = True
        self._store_operator(state)


@external
def settle(window: uint256):
    """
    @notice Pays a vested claims window from the bond, as far as the bond goes;
            anyone may. Windows are paid in order: an earlier window short of
            its due must be settled (after a deposit) first.
    @param window The claims window (`Slashed.window`).
    """
    assert self._top_up(window), "court: nothing to settle"


@external
def claim(order: eip712.Order, offence: uint8):
    """
    @notice Credits the owner of `order` its share of the claim for `offence`
            (and, for a default it requested itself, its dispute bond); anyone
            may call it once the claim's window has vested.
    @dev Settles the window first if it can. A claim paid short may be claimed
         again after the window takes a later deposit.
    @param order The order the offence concerned.
    @param offence One of the OFFENCE_* kinds.
    """
    digest: bytes32 = self._hash_order(order)
    owner: address = eip712.owner_of(order.sender)
    refund: uint256 = 0
    window: uint256 = 0
    paid: uint256 = 0
    request: Request = empty(Request)
    if offence == OFFENCE_DEFAULT:
        request = self._load_request(digest)
        assert request.status == STATUS_DEFAULTED, "court: no such claim"
        window = request.window
        paid = request.amount
        if not request.relayed and not request.refunded:
            refund = disputeBond
            request.refunded = True
    else:
        record: uint256 = self._claims[digest][offence]
        assert record != 0, "court: no such claim"
        window = record & _MASK_32
        paid = record >> _PAID_SHIFT
    assert block.timestamp >= self._vests_at(window), "court: claim not vested"
    self._top_up(window)
    entitled: uint256 = self._entitlement(window)
    assert entitled > paid or refund != 0, "court: nothing to claim"
    if offence == OFFENCE_DEFAULT:
        request.amount = entitled
        self._store_request(digest, request)
    else:
        self._claims[digest][offence] = window | (entitled << _PAID_SHIFT)
    self._credits[owner] += entitled - paid + refund
    log ClaimPaid(owner=owner, digest=digest, offence=offence, paid=entitled - paid, refund=refund)


# ---------------------------------------------------------------------------------
# Fraud proofs: anyone may submit them; each takes the order and pays its owner.


@external
def proveFillAfterNote(
    order: eip712.Order, note: eip712.CancellationNote, noteSig: Bytes[65], fill: eip712.Fill, fillSig: Bytes[65]
):
    """
    @notice Files a claim for a fill the operator's own note rules out (rule 1).
    @dev Any of: (a) f.filledTotal > n.filledAmount + n.pendingAmount;
         (b) f.seq > n.seq and n.pendingAmount == 0;
         (c) f.seq > n.seq and f.timestampMs > n.pendingUntilMs;
         (d) n.lastFillSeq < f.seq < n.seq;
         (e) f.seq <= n.lastFillSeq and f.filledTotal > n.filledAmount;
         (f) f.seq == n.lastFillSeq and f is not the fill the note counts last
             (its struct hash is not n.lastFillHash, or its total not n.filledAmount).
         The messages' `sender` fields are not compared: the order names the owner
         (a wrong sender is an offence of its own).
    @param order The order both messages are about.
    @param note An operator-signed cancellation note of that order.
    @param noteSig The operator's signature of `note`.
    @param fill An operator-signed fill of that order.
    @param fillSig The operator's signature of `fill`.
    """
    digest: bytes32 = self._hash_order(order)
    assert note.digest == digest, "court: note is for another order"
    assert fill.digest == digest, "court: fill is for another order"
    fill_struct: bytes32 = eip712.fill_hash(fill)
    assert self._violates_note(note, fill, fill_struct), "court: no fill after note"
    self._check_operator_signature(self._hash_note(note), noteSig)
    self._check_operator_signature(self._typed_digest(fill_struct), fillSig)
    self._file(digest, OFFENCE_FILL_AFTER_NOTE, order.sender)


@external
def proveEquivocationNotes(
    order: eip712.Order,
    note1: eip712.CancellationNote,
    sig1: Bytes[65],
    note2: eip712.CancellationNote,
    sig2: Bytes[65],
):
    """
    @notice Files a claim for two different notes on one order.
    @dev A crashed operator must re-send the same note, never a different one.
         "Different" is of the struct hash, never of the signature bytes.
    @param order The order both notes are about.
    @param note1 An operator-signed note of that order.
    @param sig1 The operator's signature of `note1`.
    @param note2 A different operator-signed note of that order.
    @param sig2 The operator's signature of `note2`.
    """
    digest: bytes32 = self._hash_order(order)
    assert note1.digest == digest and note2.digest == digest, "court: note is for another order"
    hash1: bytes32 = self._hash_note(note1)
    hash2: bytes32 = self._hash_note(note2)
    assert hash1 != hash2, "court: notes are identical"
    self._check_operator_signature(hash1, sig1)
    self._check_operator_signature(hash2, sig2)
    self._file(digest, OFFENCE_NOTE_EQUIVOCATION, order.sender)


@external
def proveEquivocationFills(
    order: eip712.Order, fill1: eip712.Fill, sig1: Bytes[65], fill2: eip712.Fill, sig2: Bytes[65]
):
    """
    @notice Files a claim for two fills that cannot both be true, `fill1` being
            of `order`: two different fills with one journal seq (`fill2` of any
            order), or two fills of the order whose cumulative total does not
            grow with seq.
    @dev Claims are per (digest, offence), so when one seq is shared by fills of
         two orders, each order's owner proves with its own order and is paid.
         Different seqs (fill1.seq < fill2.seq, one order): a claim if
         fill2.filledTotal <= fill1.filledTotal (protocol §12.2 (3)), or if
         fill2.filledTotal < fill1.filledTotal + fill2.amount: a later total
         holds the earlier total plus every amount since, its own included.
    @param order The order of `fill1`.
    @param fill1 An operator-signed fill of the order (the earlier, if seqs differ).
    @param sig1 The operator's signature of `fill1`.
    @param fill2 A second operator-signed fill.
    @param sig2 The operator's signature of `fill2`.
    """
    digest: bytes32 = self._hash_order(order)
    assert fill1.digest == digest, "court: fill is for another order"
    hash1: bytes32 = self._hash_fill(fill1)
    hash2: bytes32 = self._hash_fill(fill2)
    offence: uint8 = OFFENCE_FILL_EQUIVOCATION
    if fill1.seq == fill2.seq:
        assert hash1 != hash2, "court: fills are identical"
    else:
        assert fill2.digest == digest, "court: fill is for another order"
        assert fill1.seq < fill2.seq, "court: fills not in seq order"
        total1: uint256 = convert(fill1.filledTotal, uint256)
        total2: uint256 = convert(fill2.filledTotal, uint256)
        assert (
            total2 <= total1 or total2 < total1 + convert(fill2.amount, uint256)
        ), "court: fill totals are consistent"
        offence = OFFENCE_FILLS_OUT_OF_ORDER
    self._check_operator_signature(hash1, sig1)
    self._check_operator_signature(hash2, sig2)
    self._file(digest, offence, order.sender)


@external
def proveMalformedFill(order: eip712.Order, fill: eip712.Fill, fillSig: Bytes[65]):
    """
    @notice Files a claim for a fill that contradicts itself or its order: a
            zero amount, a cumulative total below its own amount, or a sender
            that is not the order's.
    @param order The order the fill is of.
    @param fill An operator-signed fill of that order.
    @param fillSig The operator's signature of `fill`.
    """
    digest: bytes32 = self._hash_order(order)
    assert fill.digest == digest, "court: fill is for another order"
    assert (
        fill.amount == 0 or fill.filledTotal < fill.amount or fill.sender != order.sender
    ), "court: fill is well formed"
    self._check_operator_signature(self._hash_fill(fill), fillSig)
    self._file(digest, OFFENCE_MALFORMED_FILL, order.sender)


@external
def proveBadFill(order: eip712.Order, fill: eip712.Fill, fillSig: Bytes[65]):
    """
    @notice Files a claim for filling an order beyond its terms (rule 4).
    @dev A buy (amount > 0) filled above its limit price, a sell (amount < 0)
         filled below it, or a cumulative fill above |amount|. The order needs
         no signature: its digest, which the operator signed the fill for, has
         exactly one preimage.
    @param order The order.
    @param fill An operator-signed fill of that order.
    @param fillSig The operator's signature of `fill`.
    """
    digest: bytes32 = self._hash_order(order)
    assert fill.digest == digest, "court: fill is for another order"
    assert self._breaks_order(order, fill), "court: fill within the order's terms"
    self._check_operator_signature(self._hash_fill(fill), fillSig)
    self._file(digest, OFFENCE_BAD_FILL, order.sender)


@external
def proveBadNote(order: eip712.Order, note: eip712.CancellationNote, noteSig: Bytes[65]):
    """
    @notice Files a claim for a note that breaks a bound of its order: another
            sender, more than the order's size, a pending window longer than
            `maxPendingMs`, a last fill that is missing, invented or not before
            the note (see `_note_fault`).
    @param order The order the note is about.
    @param note An operator-signed note of that order.
    @param noteSig The operator's signature of `note`.
    """
    digest: bytes32 = self._hash_order(order)
    assert note.digest == digest, "court: note is for another order"
    assert self._note_fault(order, note) != empty(String[64]), "court: note is within its bounds"
    self._check_operator_signature(self._hash_note(note), noteSig)
    self._file(digest, OFFENCE_NOTE_OUT_OF_BOUNDS, order.sender)


# ---------------------------------------------------------------------------------
# Forced cancel: the on-chain fallback.


@external
@payable
def requestCancel(order: eip712.Order):
    """
    @notice Forces a cancel of the caller's own order: the operator must answer
            with a note within W seconds or default. The cancel takes effect now.
    @dev The digest is recomputed from the order, so nobody can force-cancel an
         order that is not theirs; the caller may be a contract that owns it.
    @param order The order to cancel; `order.sender` must name the caller.
    """
    self._check_dispute_bond(msg.value)
    self._check_live(order)
    self._open_request(order, self._hash_order(order), self._check_caller_owns(order))


@external
@payable
def requestCancelSigned(
    order: eip712.Order, cancellation: eip712.Cancellation, cancellationSig: Bytes[65]
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
    owner: address = eip712.owner_of(order.sender)
    assert (
        eip712.recover(self._typed_digest(eip712.cancellation_hash(cancellation)), cancellationSig) == owner
    ), "court: cancellation not signed by the owner"
    self._open_request(order, digest, owner)
    if msg.sender != owner:
        self._relayers[digest] = msg.sender


@external
def answerCancel(order: eip712.Order, note: eip712.CancellationNote, noteSig: Bytes[65]):
    """
    @notice Answers a forced cancel with an operator-signed note of the order;
            anyone may submit it, within W seconds of the request.
    @dev The note must keep every bound (`_note_fault`): an out-of-bound answer
         is refused, so the cap filledAmount + pendingAmount it records never
         exceeds the order's size. The requester's dispute bond is the
         operator's pay for answering, counted in its packed word.
    @param order The force-cancelled order.
    @param note The operator's cancellation note of that order.
    @param noteSig The operator's signature of `note`.
    """
    digest: bytes32 = self._hash_order(order)
    assert note.digest == digest, "court: note is for another order"
    request: Request = self._load_request(digest)
    self._check_status(request, STATUS_REQUESTED)
    assert block.timestamp <= request.requestedAt + answerWindow, "court: answer window closed"
    fault: String[64] = self._note_fault(order, note)
    assert fault == empty(String[64]), fault
    self._check_operator_signature(self._hash_note(note), noteSig)
    cap: uint256 = convert(note.filledAmount, uint256) + convert(note.pendingAmount, uint256)
    request.status = STATUS_ANSWERED
    request.amount = cap
    self._store_request(digest, request)
    state: OperatorState = self._load_operator()
    assert state.answers < _MAX_ANSWERS, "court: operator must withdraw first"
    state.answers += 1
    self._store_operator(state)
    log CancelAnswered(owner=eip712.owner_of(order.sender), digest=digest, cap=cap, noteSeq=note.seq)


@external
def finalize(order: eip712.Order):
    """
    @notice Settles a forced cancel left unanswered for W seconds: the operator
            is in default and owes the owner one penalty (a claim, like any
            other), and whoever paid the dispute bond gets it back. Anyone may
            call it.
    @dev The default is counted and, if so configured, halts the operator. A
         relayer's bond is credited now; an owner's comes with its claim. The
         claim lives in the request's own slot.
    @param order The force-cancelled order.
    """
    digest: bytes32 = self._hash_order(order)
    request: Request = self._load_request(digest)
    self._check_status(request, STATUS_REQUESTED)
    assert block.timestamp > request.requestedAt + answerWindow, "court: answer window still open"
    owner: address = eip712.owner_of(order.sender)
    request.status = STATUS_DEFAULTED
    request.amount = 0
    request.window = self._open_claim(owner, digest, OFFENCE_DEFAULT)
    self._store_request(digest, request)
    state: OperatorState = self._load_operator()
    state.defaults += 1
    state.halted = state.halted or haltOnDefault
    self._store_operator(state)
    log CancelDefaulted(owner=owner, digest=digest, defaults=state.defaults, halted=state.halted)
    if request.relayed:
        self._credits[self._relayers[digest]] += disputeBond


@external
def proveFillAboveCap(order: eip712.Order, fill: eip712.Fill, fillSig: Bytes[65]):
    """
    @notice Files a claim for a fill above the cap an answered forced cancel
            recorded (rule 1 (a) without the note; one claim per order, shared
            with `proveFillAfterNote`, so one over-fill is claimed once).
    @param order The force-cancelled order.
    @param fill An operator-signed fill of that order.
    @param fillSig The operator's signature of `fill`.
    """
    digest: bytes32 = self._hash_order(order)
    assert fill.digest == digest, "court: fill is for another order"
    request: Request = self._load_request(digest)
    assert request.status == STATUS_ANSWERED, "court: no cap recorded"
    assert convert(fill.filledTotal, uint256) > request.amount, "court: fill within the cap"
    self._check_operator_signature(self._hash_fill(fill), fillSig)
    self._file(digest, OFFENCE_FILL_AFTER_NOTE, order.sender)


@external
def proveFillAfterRequest(order: eip712.Order, fill: eip712.Fill, fillSig: Bytes[65]):
    """
    @notice Files a claim for a fill of a force-cancelled order stamped after
            the cancel took effect: later than the request's block time plus
            `maxPendingMs` (what may still have been in flight).
    @dev Whatever the answer says, or if there is none: a fill counted by a late
         answer is still after the request, which closes the free option of W.
         One claim per order, shared with `proveFillAfterNote`.
    @param order The force-cancelled order.
    @param fill An operator-signed fill of that order.
    @param fillSig The operator's signature of `fill`.
    """
    digest: bytes32 = self._hash_order(order)
    assert fill.digest == digest, "court: fill is for another order"
    request: Request = self._load_request(digest)
    assert request.status != STATUS_NONE, "court: cancel not requested"
    assert (
        convert(fill.timestampMs, uint256) > request.requestedAt * 1_000 + maxPendingMs
    ), "court: fill within the pending bound"
    self._check_operator_signature(self._hash_fill(fill), fillSig)
    self._file(digest, OFFENCE_FILL_AFTER_NOTE, order.sender)


# ---------------------------------------------------------------------------------
# Views.


@external
@view
def bond() -> uint256:
    """
    @notice The operator's bond, in wei.
    @return uint256 What is left after every window paid so far (claims filed
            but not yet settled are still in it: see `claimsOutstanding`).
    """
    return self._load_operator().bond


@external
@view
def claimsOutstanding() -> uint256:
    """
    @notice Wei owed to claims and not yet taken from the bond.
    @return uint256 Every claim's penalty less what windows took for them.
    """
    return self._outstanding()


@external
@view
def burnUnsent() -> uint256:
    """
    @notice The burn share collected and not yet sent (`sendBurn`).
    @return uint256 Wei.
    """
    return self._settled >> _BURNT_SHIFT


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
    @return CancelStatus Status (none, requested, answered, defaulted), when it
            was requested, the answer deadline and the answered cap.
    """
    request: Request = self._load_request(digest)
    cap: uint256 = 0
    deadline: uint256 = 0
    if request.status == STATUS_ANSWERED:
        cap = request.amount
    if request.status != STATUS_NONE:
        deadline = request.requestedAt + answerWindow
    return CancelStatus(
        status=request.status, requestedAt=request.requestedAt, deadline=deadline, cap=cap
    )


@external
@view
def claimOf(digest: bytes32, offence: uint8) -> ClaimStatus:
    """
    @notice The claim for `offence` on `digest` (all zero if none was filed).
    @param digest The order digest.
    @param offence One of the OFFENCE_* kinds.
    @return ClaimStatus Its window, what its owner was credited, what it is
            entitled to by what its window took so far, and when it vests.
    """
    window: uint256 = 0
    paid: uint256 = 0
    if offence == OFFENCE_DEFAULT:
        request: Request = self._load_request(digest)
        if request.status == STATUS_DEFAULTED:
            window = request.window
            paid = request.amount
    else:
        record: uint256 = self._claims[digest][offence]
        window = record & _MASK_32
        paid = record >> _PAID_SHIFT
    if window == 0:
        return empty(ClaimStatus)
    return ClaimStatus(
        window=window,
        paid=paid,
        entitled=self._entitlement(window),
        vestsAt=self._vests_at(window),
    )


@external
@view
def windowOf(window: uint256) -> WindowStatus:
    """
    @notice A claims window: its claims, what it took from the bond, when it
            opened and when it vests (all zero if it never opened).
    @param window The window number.
    @return WindowStatus The window.
    """
    ledger: Ledger = self._load_ledger()
    found: Window = empty(Window)
    if window == ledger.window and ledger.count != 0:
        found = Window(count=ledger.count, taken=0, openedAt=ledger.openedAt)
    elif window < ledger.window:
        found = self._load_window(window)
    if found.count == 0:
        return empty(WindowStatus)
    return WindowStatus(
        count=found.count,
        taken=found.taken,
        openedAt=found.openedAt,
        vestsAt=found.openedAt + 2 * claimDelay,
    )


@external
@view
def offencePaid(digest: bytes32, offence: uint8) -> bool:
    """
    @notice Whether a claim for `offence` on `digest` was filed (it is filed
            once, whoever proves it; see `claimOf` for what it was paid).
    @param digest The order digest.
    @param offence One of the OFFENCE_* kinds.
    @return bool True once filed.
    """
    if offence == OFFENCE_DEFAULT:
        return self._load_request(digest).status == STATUS_DEFAULTED
    return self._claims[digest][offence] != 0


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
def orderDigest(order: eip712.Order) -> bytes32:
    """
    @notice The EIP-712 digest of an order: its identifier everywhere.
    @param order The order.
    @return bytes32 The digest the owner signs.
    """
    return self._hash_order(order)


@external
@view
def fillStructHash(fill: eip712.Fill) -> bytes32:
    """
    @notice A fill's EIP-712 struct hash: what a note's `lastFillHash` names.
    @param fill The fill.
    @return bytes32 hashStruct(fill).
    """
    return eip712.fill_hash(fill)


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
def _check_caller_owns(order: eip712.Order) -> address:
    """
    @dev Reverts unless the caller owns `order` (the first 20 bytes of its sender).
    @param order The order to be force-cancelled.
    @return address The owner.
    """
    owner: address = eip712.owner_of(order.sender)
    assert msg.sender == owner, "court: caller is not the order owner"
    return owner


@internal
@view
def _check_live(order: eip712.Order):
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
    assert eip712.recover(digest, signature) == operator, "court: not signed by the operator"



# ---------------------------------------------------------------------------------
# Rules.


@internal
@pure
def _violates_note(note: eip712.CancellationNote, fill: eip712.Fill, fill_struct: bytes32) -> bool:
    """
    @dev Whether `fill` breaks the promise `note` makes (rule 1, a-f).
    @param note The cancellation note.
    @param fill A fill of the same order.
    @param fill_struct The fill's struct hash.
    @return bool True if any of (a)-(f) holds.
    """
    filled: uint256 = convert(note.filledAmount, uint256)
    total: uint256 = convert(fill.filledTotal, uint256)
    if total > filled + convert(note.pendingAmount, uint256):
        return True  # (a) more than filled + pending
    if fill.seq > note.seq and (note.pendingAmount == 0 or fill.timestampMs > note.pendingUntilMs):
        return True  # (b) nothing was pending, or (c) settled after the pending deadline
    if note.lastFillSeq < fill.seq and fill.seq < note.seq:
        return True  # (d) a fill the note should have counted
    if fill.seq == note.lastFillSeq and (fill_struct != note.lastFillHash or total != filled):
        return True  # (f) not the fill the note counts last
    # (e) a counted fill above the counted amount
    return fill.seq <= note.lastFillSeq and total > filled


@internal
@view
def _note_fault(order: eip712.Order, note: eip712.CancellationNote) -> String[64]:
    """
    @dev The first bound `note` breaks for `order`, as a revert reason, or "".
         An honest note is of its order's sender; promises at most the order's
         size; declares a pending window of at most `maxPendingMs`; names a last
         fill exactly when it counts one (a fill has a positive amount), and
         that fill comes before the note.
    @param order The order the note is about (same digest).
    @param note The note.
    @return String[64] "" if the note keeps every bound.
    """
    if note.sender != order.sender:
        return "court: note is for another sender"
    size: uint256 = convert(abs(convert(order.amount, int256)), uint256)
    if convert(note.filledAmount, uint256) + convert(note.pendingAmount, uint256) > size:
        return "court: note promises more than the order"
    if convert(note.pendingUntilMs, uint256) > convert(note.receivedAtMs, uint256) + maxPendingMs:
        return "court: note pending for too long"
    counted: bool = note.filledAmount != 0
    if counted != (note.lastFillSeq != 0) or counted != (note.lastFillHash != empty(bytes32)):
        return "court: note misstates its last fill"
    if note.lastFillSeq >= note.seq:
        return "court: note's last fill is not before it"
    return ""


@internal
@pure
def _breaks_order(order: eip712.Order, fill: eip712.Fill) -> bool:
    """
    @dev Whether `fill` is worse than the order's limit or overfills it (rule 4).
    @param order The order.
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
def _open_request(order: eip712.Order, digest: bytes32, owner: address):
    """
    @dev Records a forced cancel of `digest`, effective now, taking the bond.
    @param order The order (logged whole: the operator answers from the event).
    @param digest The order digest.
    @param owner The order's owner.
    """
    request: Request = self._load_request(digest)
    self._check_status(request, STATUS_NONE)
    request.requestedAt = block.timestamp
    request.status = STATUS_REQUESTED
    request.relayed = msg.sender != owner
    self._store_request(digest, request)
    ledger: Ledger = self._load_ledger()
    request_id: uint256 = ledger.nextRequestId
    ledger.nextRequestId += 1
    self._store_ledger(ledger)
    log CancelRequested(
        owner=owner,
        digest=digest,
        requester=msg.sender,
        requestId=request_id,
        sender=order.sender,
        productId=order.productId,
        priceX18=order.priceX18,
        amount=order.amount,
        expiration=order.expiration,
        nonce=order.nonce,
        requestedAt=block.timestamp,
        deadline=block.timestamp + answerWindow,
    )


@internal
def _file(digest: bytes32, offence: uint8, sender: bytes32):
    """
    @dev Files the claim for `offence` on `digest` (reverting if there is one).
    @param digest The order digest the offence concerns.
    @param offence One of the OFFENCE_* kinds but DEFAULT.
    @param sender The order's sender, whose owner the claim is for.
    """
    assert self._claims[digest][offence] == 0, "court: offence already proven"
    self._claims[digest][offence] = self._open_claim(eip712.owner_of(sender), digest, offence)


@internal
def _open_claim(owner: address, digest: bytes32, offence: uint8) -> uint256:
    """
    @dev Counts one claim into the open window (closing the open window first if
         its `claimDelay` is over) and logs it.
    @param owner Whom the claim is for.
    @param digest The order digest.
    @param offence The OFFENCE_* kind.
    @return uint256 The claim's window (never 0).
    """
    ledger: Ledger = self._load_ledger()
    if ledger.count != 0 and block.timestamp >= ledger.openedAt + claimDelay:
        ledger = self._close_window(ledger)
    if ledger.count == 0:
        ledger.openedAt = block.timestamp
    ledger.count += 1
    ledger.claimsEver += 1
    self._store_ledger(ledger)
    log Slashed(owner=owner, digest=digest, offence=offence, window=ledger.window, penalty=penalty)
    return ledger.window


@internal
def _close_window(ledger: Ledger) -> Ledger:
    """
    @dev Moves the open window into its own slot; the next claim opens the next.
    @param ledger The ledger, whose open window has claims.
    @return Ledger The ledger with an empty next window open (the caller stores it).
    """
    self._windows[ledger.window] = (
        ledger.count | (ledger.openedAt << _WINDOW_OPENED_SHIFT)
    )
    return Ledger(
        window=ledger.window + 1,
        openedAt=0,
        count=0,
        claimsEver=ledger.claimsEver,
        nextRequestId=ledger.nextRequestId,
    )


@internal
def _top_up(window: uint256) -> bool:
    """
    @dev Pays a vested window from the bond as far as the bond goes, once every
         earlier window is paid in full; burns the burn share of what it takes.
    @param window The window.
    @return bool Whether anything was taken.
    """
    ledger: Ledger = self._load_ledger()
    if window == ledger.window and ledger.count != 0:
        if block.timestamp < ledger.openedAt + 2 * claimDelay:
            return False
        self._store_ledger(self._close_window(ledger))
    elif window == 0 or window >= ledger.window:
        return False
    found: Window = self._load_window(window)
    if block.timestamp < found.openedAt + 2 * claimDelay:
        return False
    if window > 1:
        earlier: Window = self._load_window(window - 1)
        if earlier.taken < earlier.count * penalty:
            return False
    owed: uint256 = found.count * penalty
    state: OperatorState = self._load_operator()
    taken: uint256 = min(state.bond, owed - found.taken)
    if taken == 0:
        return False
    state.bond -= taken
    self._store_operator(state)
    burnt: uint256 = self._burn_of(found.taken + taken) - self._burn_of(found.taken)
    found.taken += taken
    self._windows[window] = (
        found.count | (found.taken << _TAKEN_SHIFT) | (found.openedAt << _WINDOW_OPENED_SHIFT)
    )
    settled: uint256 = self._settled
    self._settled = ((settled & _MASK_128) + taken) | (((settled >> _BURNT_SHIFT) + burnt) << _BURNT_SHIFT)
    log WindowSettled(window=window, owed=owed, taken=found.taken)
    return True


# ---------------------------------------------------------------------------------
# Claims arithmetic.


@internal
@view
def _burn_of(taken: uint256) -> uint256:
    """
    @dev The burn share of `taken` wei taken by one window (rounded down, so the
         owners' share of every window is exact however often it is topped up).
    @param taken Wei a window took in total.
    @return uint256 The part burnt.
    """
    return taken * burnShareBps // _BPS


@internal
@view
def _entitlement(window: uint256) -> uint256:
    """
    @dev What each claim of `window` is owed by what the window took so far.
    @param window A window.
    @return uint256 The owners' share of the window's take, per claim (rounded down).
    """
    ledger: Ledger = self._load_ledger()
    if window >= ledger.window:
        return 0
    found: Window = self._load_window(window)
    return (found.taken - self._burn_of(found.taken)) // found.count


@internal
@view
def _vests_at(window: uint256) -> uint256:
    """
    @dev When `window` vests: `claimDelay` after it closes, which is `claimDelay`
         after it opened.
    @param window A window with claims.
    @return uint256 A block timestamp.
    """
    ledger: Ledger = self._load_ledger()
    if window == ledger.window:
        return ledger.openedAt + 2 * claimDelay
    return self._load_window(window).openedAt + 2 * claimDelay


@internal
@view
def _outstanding() -> uint256:
    """
    @dev Wei owed to claims and not yet taken from the bond.
    @return uint256 Penalties of every claim ever, less what windows took.
    """
    return self._load_ledger().claimsEver * penalty - (self._settled & _MASK_128)


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
def _load_ledger() -> Ledger:
    """
    @dev Unpacks the claims ledger.
    @return Ledger The open window, its opening and claims, claims ever filed
            and the next request id.
    """
    word: uint256 = self._ledger
    return Ledger(
        window=word & _MASK_32,
        openedAt=(word >> _OPENED_SHIFT) & _MASK_40,
        count=(word >> _COUNT_SHIFT) & _MASK_32,
        claimsEver=(word >> _TOTAL_SHIFT) & _MASK_48,
        nextRequestId=word >> _NEXT_ID_SHIFT,
    )


@internal
def _store_ledger(ledger: Ledger):
    """
    @dev Packs the claims ledger. A window's claims, all claims and request ids
         count one per transaction, far below their 32 and 48 bits; times fit 40.
    @param ledger The ledger.
    """
    self._ledger = (
        ledger.window
        | (ledger.openedAt << _OPENED_SHIFT)
        | (ledger.count << _COUNT_SHIFT)
        | (ledger.claimsEver << _TOTAL_SHIFT)
        | (ledger.nextRequestId << _NEXT_ID_SHIFT)
    )


@internal
@view
def _load_window(window: uint256) -> Window:
    """
    @dev Unpacks a closed window.
    @param window The window.
    @return Window Its claims, what it took and when it opened.
    """
    word: uint256 = self._windows[window]
    return Window(
        count=word & _MASK_32,
        taken=(word >> _TAKEN_SHIFT) & _MASK_128,
        openedAt=word >> _WINDOW_OPENED_SHIFT,
    )


@internal
@view
def _load_request(digest: bytes32) -> Request:
    """
    @dev Unpacks the forced cancel of `digest`.
    @param digest The order digest.
    @return Request Its amount (cap or default paid), time, default window,
            status and flags.
    """
    word: uint256 = self._requests[digest]
    return Request(
        amount=word & _MASK_128,
        requestedAt=(word >> _REQUESTED_AT_SHIFT) & _MASK_40,
        window=(word >> _DEFAULT_WINDOW_SHIFT) & _MASK_32,
        status=convert((word >> _STATUS_SHIFT) & 255, uint8),
        relayed=(word >> _RELAYED_SHIFT) & 1 == 1,
        refunded=(word >> _REFUNDED_SHIFT) & 1 == 1,
    )


@internal
def _store_request(digest: bytes32, request: Request):
    """
    @dev Packs the forced cancel of `digest` into one slot. A cap is at most the
         order's size (below 2**128), a default's paid amount at most a penalty.
    @param digest The order digest.
    @param request The forced cancel.
    """
    self._requests[digest] = (
        request.amount
        | (request.requestedAt << _REQUESTED_AT_SHIFT)
        | (request.window << _DEFAULT_WINDOW_SHIFT)
        | (convert(request.status, uint256) << _STATUS_SHIFT)
        | (convert(request.relayed, uint256) << _RELAYED_SHIFT)
        | (convert(request.refunded, uint256) << _REFUNDED_SHIFT)
    )



# ---------------------------------------------------------------------------------
# EIP-712 hashing (eip712.vy), in this court's domain.


@internal
@view
def _domain_separator() -> bytes32:
    """
    @dev The cached separator, rebuilt if the chain id or address changed.
    @return bytes32 The domain separator.
    """
    if chain.id == _CACHED_CHAIN_ID and self == _CACHED_SELF:
        return _CACHED_DOMAIN_SEPARATOR
    return eip712.domain_separator(self)


@internal
@view
def _typed_digest(struct_hash: bytes32) -> bytes32:
    """
    @dev The EIP-712 digest of a struct hash in this court's domain.
    @param struct_hash The struct's hashStruct.
    @return bytes32 keccak256(0x1901 || separator || struct_hash).
    """
    return eip712.typed_digest(self._domain_separator(), struct_hash)


@internal
@view
def _hash_order(order: eip712.Order) -> bytes32:
    """
    @dev The EIP-712 digest of an order (the order's identifier).
    @param order The order.
    @return bytes32 The digest.
    """
    return self._typed_digest(eip712.order_hash(order))


@internal
@view
def _hash_fill(fill: eip712.Fill) -> bytes32:
    """
    @dev The EIP-712 digest of a fill.
    @param fill The fill.
    @return bytes32 The digest.
    """
    return self._typed_digest(eip712.fill_hash(fill))


@internal
@view
def _hash_note(note: eip712.CancellationNote) -> bytes32:
    """
    @dev The EIP-712 digest of a cancellation note.
    @param note The note.
    @return bytes32 The digest.
    """
    return self._typed_digest(eip712.note_hash(note))
