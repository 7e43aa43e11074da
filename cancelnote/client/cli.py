"""cancelnote client: trade, cancel, keep evidence and take a cheating operator to court.

Every command works on one evidence store (--db). The first command that names the
court (--rpc URL --court ADDRESS) creates the store for that court and its operator (read
from the court); later commands may leave them out where no chain call is needed. With
--url, a command first catches up with everything the operator sent while it was away.
--url, --rpc, --court and --db default to $CANCELNOTE_URL, $CANCELNOTE_RPC,
$CANCELNOTE_COURT and $CANCELNOTE_CLIENT_DB, or to a --profile's values.

A wallet that signs elsewhere: place --typed-data prints an order as eth_signTypedData_v4
takes it (with --address instead of --key); submit places it once signed.

Journal heads: with --url, a command also follows the operator's signed heads (unless
--no-heads), proves every fill and note of the store in its log and alarms on a cancel
not logged within --cancel-heads heads. heads show|export|import keep, gossip and check
them: a peer's or a watchtower's heads that fork from ours are a finding dispute proves.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from cancelnote.cliargs import (
    add_profile_flag,
    address_type,
    digest_type,
    env_help,
    need,
    need_address,
)
from cancelnote.exits import DISPUTE, OK, REFUSED, UNREACHABLE, USAGE, CommandError

X18 = 10**18
#: The operator's default head interval and the client's default bound on a cancel's leaf
#: (``cancelnote.client.verifier``'s, not imported: the CLI loads it only when it runs).
HEADS_MS = 100
CANCEL_HEADS = 10
#: Seconds to wait for the operator's answers (the subscription, a place, a catch-up).
TIMEOUT_S = 10.0

EPILOG = (
    "exit codes: 0 ok, 1 operator or court refused, 2 usage or configuration,"
    " 3 needs a dispute (a finding, or an overdue note), 4 operator or chain unreachable,"
    " 130 interrupted"
)
OUTCOME_COLUMNS = [
    "action", "order", "outcome", "owed_wei", "paid_wei", "bond_wei", "withdrawn_wei", "detail"
]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _x18(text: str) -> int:
    try:
        return int(Decimal(text) * X18)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None


# ---------------------------------------------------------------------------------------
# Context: the store, the court, the key.


class _Context:
    """The store (for ``identity``'s court and operator when it is new and no --court is
    given), its verifier and heads checks, and the court when a command names it."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        chain: bool = False,
        identity: tuple[Any, bytes] | None = None,
    ) -> None:
        import attrs

        from cancelnote.client.evidence import EvidenceStore
        from cancelnote.client.heads import HeadsVerifier
        from cancelnote.client.verifier import Verifier, VerifierPolicy

        self.args = args
        self.court: Any = None
        domain, operator = (None, None) if identity is None else identity
        if getattr(args, "rpc", None) or chain:
            from cancelnote.dispute.court import Court
            from cancelnote.dispute.jsonrpc import JsonRpcChain

            chain_ = JsonRpcChain(need(args, "rpc", " (this command needs the court)"))
            self.court = Court.at(chain_, need_address(args, "court"))
            domain, operator = self.court.domain, self.court.operator()
        self.store = EvidenceStore.open(args.db, domain, operator)
        deadline_s = getattr(args, "deadline_s", None)
        policy = VerifierPolicy() if deadline_s is None else VerifierPolicy(int(deadline_s * 1000))
        if self.court is not None:  # notes are judged by this court's pending bound
            policy = attrs.evolve(policy, court_max_pending_ms=self.court.max_pending_ms())
        if getattr(args, "heads_ms", None) is not None:  # the operator's head interval
            policy = attrs.evolve(policy, heads_ms=args.heads_ms, cancel_heads=args.cancel_heads)
        self.verifier = Verifier(self.store, policy)
        self.heads = HeadsVerifier(self.verifier)

    def signer(self) -> Any:
        return _load_signer(self.args)

    def session(self) -> Any:
        from cancelnote.client.session import Session

        url = need(self.args, "url", " (this command needs the operator)")
        address = getattr(self.args, "address", None)
        heads = None if self.args.no_heads else self.heads
        subaccount = self.args.subaccount
        if self.args.key is None and address is not None:
            return Session(
                url, None, self.verifier, subaccount=subaccount, owner=address, heads=heads
            )
        return Session(url, self.signer(), self.verifier, subaccount=subaccount, heads=heads)

    def follower(self) -> Any:
        """A follower of the operator's heads alone (no key, no subscription of orders)."""
        from cancelnote.client.heads import HeadsFollower

        url = need(self.args, "url", " (this command needs the operator)")
        return HeadsFollower(url, self.heads, _now_ms)


def _load_signer(args: argparse.Namespace) -> Any:
    from cancelnote import keystore

    return keystore.load(need(args, "key"), keystore.read_password(args.password_file))


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows as JSON (``--json``) or as an aligned table."""
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        print("(none)")
        return
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    for line in [[c.upper() for c in columns], *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _findings_exit(ctx: _Context) -> int:
    from cancelnote.client.verifier import DISPUTABLE

    open_ = [
        f
        for f in ctx.store.findings()
        if f.kind in DISPUTABLE and f.status in ("open", "forced", "claimed")
    ]
    return DISPUTE if open_ else OK


def _finding_rows(ctx: _Context) -> list[dict[str, Any]]:
    return [
        {
            "id": f.id,
            "kind": f.kind,
            "order": "0x" + f.digest.hex(),
            "status": f.status,
            "offence": None if f.offence is None else f.offence.name,
            "detail": f.detail,
        }
        for f in ctx.store.findings()
    ]


async def _with_session(ctx: _Context, work: Any, linger_s: float) -> Any:
    """Connect, catch up, run ``work(session)``, keep receiving for ``linger_s``, let the
    operator's next heads prove what arrived (:func:`_proven`), disconnect.

    Every wait is bounded: connecting and catching up by ``--timeout-s``; ``work`` bounds
    its own requests. Failures are raised after the nursery has closed, so that they reach
    the exit code as themselves (not inside an exception group).
    """
    import trio

    from cancelnote.client.session import ConnectionLost, OperatorRejected

    session = ctx.session()
    timeout_s = ctx.args.timeout_s
    result: Any = None
    failure: CommandError | None = None
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(timeout_s) as connecting:
            await nursery.start(session.run)
            await session.wait_caught_up()
        if connecting.cancelled_caught:
            failure = CommandError(
                UNREACHABLE, f"the operator at {session.url} did not answer within {timeout_s:g} s"
            )
        else:
            try:
                result = await work(session)
                await trio.sleep(linger_s)
                await _proven(session, ctx.verifier.policy.heads_ms)
            except OperatorRejected as exc:
                failure = CommandError(REFUSED, f"the operator refused: {exc}")
            except ConnectionLost as exc:
                failure = CommandError(UNREACHABLE, str(exc))
            except CommandError as exc:
                failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


#: Heads a command waits for at its end, so that the log proves what it received: the
#: first may have been signed before the last message was; the second was not.
HEADS_TO_PROVE = 2


async def _proven(session: Any, heads_ms: int) -> None:
    """Wait for :data:`HEADS_TO_PROVE` more heads of the session's follower (each proves
    the store's new fills and notes, locates its cancels, checks the alarms), a few head
    intervals at most: a late head is the follower's own finding (``HEADS_STALLED``)."""
    import trio

    follower = session.follower
    if follower is None:
        return
    with trio.move_on_after(max(1.0, 10 * heads_ms / 1000)):
        await follower.wait_seen(follower.seen + HEADS_TO_PROVE)


def _catch_up(ctx: _Context) -> None:
    """With ``--url``, take in what the operator sent while we were away, first."""
    import trio

    if ctx.args.url:

        async def nothing(session: Any) -> None:
            return None

        trio.run(_with_session, ctx, nothing, 0.0)


# ---------------------------------------------------------------------------------------
# Commands.


def _place(args: argparse.Namespace) -> int:
    import trio

    ctx = _Context(args)
    amount = args.amount if args.side == "buy" else -args.amount
    if args.typed_data:
        return _print_typed_data(ctx, amount)

    async def work(session: Any) -> bytes:
        with trio.move_on_after(args.timeout_s):
            return await session.place(args.product, args.price, amount, lifetime_s=args.lifetime_s)
        raise _no_answer("order", args)

    digest = trio.run(_with_session, ctx, work, args.wait_s)
    return _placed(ctx, digest)


def _no_answer(what: str, args: argparse.Namespace) -> CommandError:
    return CommandError(
        UNREACHABLE,
        f"the operator did not answer the {what} within {args.timeout_s:g} s; it is kept in"
        f" {args.db} (client status --url shows what became of it)",
    )


def _placed(ctx: _Context, digest: bytes) -> int:
    stored = ctx.store.order(digest)
    assert stored is not None  # (kept before it was sent)
    order = stored.order
    side = "buy" if order.amount > 0 else "sell"
    _emit(
        ctx.args,
        [{"order": "0x" + digest.hex(), "product": order.product_id, "side": side}],
        ["order", "product", "side"],
    )
    return _findings_exit(ctx)


def _print_typed_data(ctx: _Context, amount: int) -> int:
    """The order as a wallet signs it (eth_signTypedData_v4); nothing is signed or sent."""
    from cancelnote.client.session import Session
    from cancelnote.messages import typed_data

    args = ctx.args
    owner = args.address if args.key is None else _load_signer(args).address
    if owner is None:
        raise CommandError(USAGE, "--typed-data needs --address (or --key) of the owner")
    session = Session("", None, ctx.verifier, subaccount=args.subaccount, owner=owner)
    order = session.make_order(args.product, args.price, amount, args.lifetime_s)
    print(json.dumps(typed_data(order, ctx.store.domain), indent=2))
    return OK


def _submit(args: argparse.Namespace) -> int:
    """Place an order signed by a wallet: the typed data as printed, and its signature."""
    import trio

    from cancelnote.dispute.jsonrpc import parse_json
    from cancelnote.messages import (
        Order,
        from_typed_data,
        sender_subaccount,
        signature_from_wire,
    )

    ctx = _Context(args)
    with open(args.file, "rb") as file:
        try:
            message, domain = from_typed_data(parse_json(file.read()))
        except ValueError as exc:  # MessageError is one too
            raise CommandError(USAGE, f"{args.file}: {exc}") from None
    if not isinstance(message, Order):
        raise CommandError(USAGE, f"{args.file}: submit takes an Order, not {type(message)}")
    if domain != ctx.store.domain:
        raise CommandError(USAGE, f"{args.file} is for another court or chain than {args.db}")
    signature = signature_from_wire(args.signature)
    message.verify(signature, domain, message.sender[:20])
    # the session streams for the order's own sender (owner and subaccount)
    args.address, args.subaccount = message.sender[:20], sender_subaccount(message.sender)
    args.key = None

    async def work(session: Any) -> bytes:
        with trio.move_on_after(args.timeout_s):
            return await session.place_signed(message, signature)
        raise _no_answer("order", args)

    digest = trio.run(_with_session, ctx, work, args.wait_s)
    return _placed(ctx, digest)


def _cancel(args: argparse.Namespace) -> int:
    import trio

    ctx = _Context(args)

    async def work(session: Any) -> dict[str, Any]:
        with trio.move_on_after(args.deadline_s):
            if not args.orders:
                return await session.cancel_products(tuple(args.products))
            pairs = []
            for digest in args.orders:
                stored = ctx.store.order(digest)
                if stored is None and args.product is None:
                    raise CommandError(
                        USAGE, f"0x{digest.hex()} is not in the store: give --product"
                    )
                pairs.append((digest, args.product if stored is None else stored.order.product_id))
            return await session.cancel(pairs)
        raise CommandError(
            DISPUTE,
            f"no note within {args.deadline_s:g} s: the note is overdue. The signed cancel is"
            f" kept in {args.db}; client watch or client dispute will force it on-chain",
        )

    data = trio.run(_with_session, ctx, work, args.wait_s)
    rows = [{"order": d, "outcome": "cancelled"} for d in data["successful_cancellations"]]
    rows += [
        {
            "order": p["digest"],
            "outcome": f"pending {p['pending_amount']} until {p['pending_until_ms']}",
        }
        for p in data["pending_cancellations"]
    ]
    rows += [
        {"order": f["digest"], "outcome": f["reason_code"]} for f in data["failed_cancellations"]
    ]
    from cancelnote.messages import bytes32_from_wire

    for row in rows:
        notes = ctx.store.notes(bytes32_from_wire("order", row["order"]))
        row["note_seq"] = notes[0].note.seq if notes else ""
        row["filled"] = str(Decimal(notes[0].note.filled_amount) / X18) if notes else ""
    _emit(args, rows, ["order", "outcome", "note_seq", "filled"])
    return _findings_exit(ctx)


def _order_state(rejected: bool, noted: bool, filled: int, amount: int) -> str:
    """What the client's own evidence says of an order (the operator's word is ``--url``)."""
    if rejected:
        return "rejected"
    if noted:
        return "cancelled"
    if filled >= amount:
        return "filled"
    return "partly filled" if filled else "open"


def _status(args: argparse.Namespace) -> int:
    ctx = _Context(args)
    _catch_up(ctx)
    rows = []
    for stored in ctx.store.orders():
        if args.order and stored.digest != args.order:
            continue
        fills = ctx.store.fills(stored.digest)
        notes = ctx.store.notes(stored.digest)
        order = stored.order
        filled = max((f.fill.filled_total for f in fills), default=0)
        rows.append(
            {
                "order": "0x" + stored.digest.hex(),
                "product": order.product_id,
                "side": "buy" if order.amount > 0 else "sell",
                "price": str(Decimal(order.price_x18) / X18),
                "amount": str(Decimal(abs(order.amount)) / X18),
                "filled": str(Decimal(filled) / X18),
                "fills": len(fills),
                "notes": len(notes),
                "state": _order_state(stored.rejected, bool(notes), filled, abs(order.amount)),
            }
        )
    _emit(
        args,
        rows,
        ["order", "product", "side", "price", "amount", "filled", "fills", "notes", "state"],
    )
    return _findings_exit(ctx)


def _evidence_findings(args: argparse.Namespace) -> int:
    ctx = _Context(args)
    _catch_up(ctx)
    _emit(args, _finding_rows(ctx), ["id", "kind", "order", "status", "offence", "detail"])
    return _findings_exit(ctx)


def _evidence_export(args: argparse.Namespace) -> int:
    ctx = _Context(args)
    _catch_up(ctx)
    _write_bundle(args, ctx.store.export_bundle(args.order, args.since_ms, args.until_ms))
    return OK


def _write_bundle(args: argparse.Namespace, bundle: dict[str, Any]) -> None:
    text = json.dumps(bundle, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            file.write(text + "\n")
    else:
        print(text)


def _read_bundle(args: argparse.Namespace) -> Any:
    """The bundle in ``args.file``, every signature checked (refused whole if one fails)."""
    from cancelnote.client.evidence import EvidenceError, parse_bundle
    from cancelnote.dispute.jsonrpc import parse_json

    with open(args.file, "rb") as file:
        try:
            return parse_bundle(parse_json(file.read()))
        except (EvidenceError, ValueError) as exc:
            raise CommandError(REFUSED, f"bundle refused: {exc}") from None


def _evidence_import(args: argparse.Namespace) -> int:
    bundle = _read_bundle(args)
    ctx = _Context(args, identity=(bundle.domain, bundle.operator))
    now_ms = _now_ms()
    found = ctx.verifier.import_bundle(bundle, now_ms)
    found += ctx.heads.import_heads(bundle.heads, now_ms)
    print(
        f"imported {len(bundle.orders)} orders, {len(bundle.fills)} fills,"
        f" {len(bundle.notes)} notes, {len(bundle.heads)} heads; {len(found)} new findings",
        file=sys.stderr,
    )
    _emit_new_findings(args, found)
    return DISPUTE if found else OK


def _emit_new_findings(args: argparse.Namespace, found: list[Any]) -> None:
    rows = [{"kind": f.kind, "order": "0x" + f.digest.hex(), "detail": f.detail} for f in found]
    _emit(args, rows, ["kind", "order", "detail"])


def _follow_heads(ctx: _Context, count: int) -> list[Any]:
    """With ``--url``, follow the operator's heads until ``count`` were handled (each kept,
    its consistency with the heads held asked, the store's messages proven in it); the
    findings they showed."""
    import trio

    if not ctx.args.url:
        return []
    follower = ctx.follower()
    timeout_s = ctx.args.timeout_s

    async def follow() -> bool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.run)
            with trio.move_on_after(timeout_s) as waiting:
                await follower.wait_seen(count)
            nursery.cancel_scope.cancel()
        return not waiting.cancelled_caught

    if not trio.run(follow):
        raise CommandError(
            UNREACHABLE, f"no head from the operator at {follower.url} within {timeout_s:g} s"
        )
    return follower.findings


def _heads_show(args: argparse.Namespace) -> int:
    ctx = _Context(args)
    _follow_heads(ctx, HEADS_TO_PROVE)
    store = ctx.store
    kept = store.heads()
    messages = [f.fill.seq for f in store.fills()] + [n.note.seq for n in store.notes()]
    proven = sum(store.leaf(seq) is not None for seq in messages)
    print(
        f"{len(kept)} heads kept; {proven} of {len(messages)} fills and notes proven in the log",
        file=sys.stderr,
    )
    rows = [
        {
            "size": h.head.size,
            "timestamp_ms": h.head.timestamp_ms,
            "root": "0x" + h.head.root.hex(),
            "source": h.source,
            "received_at_ms": h.received_at_ms,
        }
        for h in reversed(kept[-args.last :] if args.last > 0 else [])
    ]
    _emit(args, rows, ["size", "timestamp_ms", "root", "source", "received_at_ms"])
    return _findings_exit(ctx)


def _heads_export(args: argparse.Namespace) -> int:
    ctx = _Context(args)
    _follow_heads(ctx, HEADS_TO_PROVE)
    _write_bundle(args, ctx.store.export_heads(args.last))
    return OK


def _heads_import(args: argparse.Namespace) -> int:
    """A peer's heads: kept, checked against ours (one size, two roots: a fork), and with
    ``--url`` against the operator's own consistency proofs (which show any other fork)."""
    from cancelnote.client.verifier import DISPUTABLE

    bundle = _read_bundle(args)
    ctx = _Context(args, identity=(bundle.domain, bundle.operator))
    if (bundle.domain, bundle.operator) != (ctx.store.domain, ctx.store.operator):
        raise CommandError(USAGE, f"{args.file} is for another court or operator than {args.db}")
    found = ctx.heads.import_heads(bundle.heads, _now_ms())
    found += _follow_heads(ctx, HEADS_TO_PROVE)
    print(f"imported {len(bundle.heads)} heads; {len(found)} new findings", file=sys.stderr)
    _emit_new_findings(args, found)
    return DISPUTE if any(f.kind in DISPUTABLE for f in found) else OK


def _now_ms() -> int:
    from cancelnote.client.session import wall_clock_ms

    return wall_clock_ms()


def _outcome_rows(outcomes: list[Any], dispute_bond: int) -> list[dict[str, Any]]:
    """One row an outcome; ``bond_wei`` is the dispute bond paid to force a cancel (minus)
    or returned with a default's claim (plus, part of ``paid_wei``); ``withdrawn_wei`` what
    a withdrawal took out."""
    from cancelnote.client.watchtower import ForceCancel, Withdraw

    return [
        {
            "action": type(o.action).__name__,
            "order": "0x" + getattr(o.action, "digest", b"").hex(),
            "outcome": o.outcome,
            "owed_wei": o.owed,
            "paid_wei": o.paid,
            "bond_wei": (
                -dispute_bond
                if isinstance(o.action, ForceCancel) and o.outcome == "forced"
                else o.refund
            ),
            "withdrawn_wei": o.action.amount if isinstance(o.action, Withdraw) else 0,
            "detail": o.detail,
            "tx": "" if o.tx_hash is None else "0x" + o.tx_hash.hex(),
        }
        for o in outcomes
    ]


def _watchtower(ctx: _Context) -> Any:
    from cancelnote.client.watchtower import Watchtower

    return Watchtower(ctx.verifier, ctx.court, ctx.signer(), auto_withdraw=not ctx.args.no_withdraw)


def _dispute(args: argparse.Namespace) -> int:
    ctx = _Context(args, chain=True)
    _catch_up(ctx)
    outcomes = _watchtower(ctx).step(_now_ms())
    _emit(args, _outcome_rows(outcomes, ctx.court.dispute_bond()), OUTCOME_COLUMNS)
    if any(o.outcome == "rejected" for o in outcomes):
        return REFUSED
    return _findings_exit(ctx)


def _watch(args: argparse.Namespace) -> int:
    import trio

    ctx = _Context(args, chain=True)
    tower = _watchtower(ctx)
    dispute_bond = ctx.court.dispute_bond()
    outcomes: list[Any] = []

    async def rounds() -> None:
        with trio.move_on_after(args.duration_s):
            while True:
                done = await trio.to_thread.run_sync(tower.step, _now_ms())
                outcomes.extend(done)
                for row in _outcome_rows(done, dispute_bond):
                    print(json.dumps(row), file=sys.stderr, flush=True)
                await trio.sleep(args.poll_s)

    async def main() -> None:
        if args.url:

            async def work(session: Any) -> None:
                await rounds()

            await _with_session(ctx, work, 0)
        else:
            await rounds()

    trio.run(main)
    _emit(args, _outcome_rows(outcomes, dispute_bond), OUTCOME_COLUMNS)
    return _findings_exit(ctx)


def _withdraw(args: argparse.Namespace) -> int:
    ctx = _Context(args, chain=True)
    signer = ctx.signer()
    amount = ctx.court.credits(signer.address)
    receipt = ctx.court.withdraw(signer)
    ctx.store.add_payout(receipt.transaction_hash, signer.address, amount, _now_ms())
    _emit(
        args,
        [{"account": signer.checksum_address, "withdrawn_wei": amount}],
        ["account", "withdrawn_wei"],
    )
    return OK


def _keys_show(args: argparse.Namespace) -> int:
    from cancelnote.messages import make_sender

    signer = _load_signer(args)
    sender = make_sender(signer.address, args.subaccount)
    _emit(
        args,
        [
            {
                "address": signer.checksum_address,
                "subaccount": args.subaccount,
                "sender": "0x" + sender.hex(),
            }
        ],
        ["address", "subaccount", "sender"],
    )
    return OK


# ---------------------------------------------------------------------------------------
# The parser: each command takes the flag groups it uses, and no other.


def _flags(add: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    add(parent)
    return parent


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help=env_help("db", "your evidence store (SQLite)"))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_profile_flag(parser)


def _court_flags(parser: argparse.ArgumentParser) -> None:
    court = parser.add_argument_group("the court")
    court.add_argument("--rpc", help=env_help("rpc", "JSON-RPC URL of the court's chain"))
    court.add_argument("--court", help=env_help("court", "the court's address"))


def _operator_flags(parser: argparse.ArgumentParser) -> None:
    operator = parser.add_argument_group("the operator")
    operator.add_argument("--url", help=env_help("url", "the operator's WebSocket URL"))
    operator.add_argument(
        "--timeout-s",
        type=float,
        default=TIMEOUT_S,
        help="how long to wait for the operator's answers (default %(default)s)",
    )
    heads = parser.add_argument_group("the operator's journal heads")
    heads.add_argument(
        "--heads-ms",
        type=_positive_int,
        default=HEADS_MS,
        help="the operator's head interval H, its --heads-ms (default %(default)s)",
    )
    heads.add_argument(
        "--cancel-heads",
        type=_positive_int,
        default=CANCEL_HEADS,
        help="a cancel not in the log this many head intervals after it was sent is forced"
        " on-chain (default %(default)s)",
    )
    heads.add_argument("--no-heads", action="store_true", help="do not follow the operator's heads")


def _key_flags(parser: argparse.ArgumentParser, *, address: bool = False) -> None:
    key = parser.add_argument_group("your key")
    key.add_argument("--key", help="your keystore (cancelnote keys create)")
    key.add_argument("--password-file", help="its password file (else $CANCELNOTE_PASSWORD)")
    if address:
        key.add_argument(
            "--address",
            type=address_type,
            help="your address instead of --key, for a wallet that signs elsewhere",
        )
    key.add_argument(
        "--subaccount", default="default", help="subaccount name (default %(default)s)"
    )


def _deadline_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=30.0,
        help="a cancel unanswered this long is overdue and forced on-chain (default %(default)s)",
    )


STORE = _flags(_store_flags)
COURT = _flags(_court_flags)
OPERATOR = _flags(_operator_flags)
KEY = _flags(_key_flags)
KEY_OR_ADDRESS = _flags(lambda parser: _key_flags(parser, address=True))
DEADLINE = _flags(_deadline_flag)


def add_client_commands(
    commands: argparse._SubParsersAction,
    add_key_file_commands: Callable[[argparse._SubParsersAction], None],
) -> None:
    """Add ``client`` and its sub-commands; ``add_key_file_commands`` adds ``keys create|import``
    (the same as ``cancelnote keys``)."""
    client = commands.add_parser(
        "client",
        help="trade, cancel, keep evidence, dispute (the client)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = client.add_subparsers(dest="client_command", required=True, metavar="COMMAND")

    def command(
        into: argparse._SubParsersAction,
        name: str,
        helptext: str,
        handler: Callable[[argparse.Namespace], int],
        parents: list[argparse.ArgumentParser],
    ) -> argparse.ArgumentParser:
        parser = into.add_parser(
            name, parents=parents, help=helptext, description=helptext, epilog=EPILOG
        )
        parser.set_defaults(run=handler)
        return parser

    keys = sub.add_parser("keys", help="your keys: create, import, show")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    add_key_file_commands(keys_sub)
    show = command(keys_sub, "show", "your address and sender (subaccount)", _keys_show, [KEY])
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")

    trading = [STORE, COURT, OPERATOR]
    place = command(
        sub,
        "place",
        "sign, store and place a limit order (or print it for a wallet: --typed-data)",
        _place,
        [*trading, KEY_OR_ADDRESS],
    )
    place.add_argument("side", choices=["buy", "sell"])
    place.add_argument("--product", type=int, required=True, help="product id")
    place.add_argument("--price", type=_x18, required=True, help="limit price, decimal")
    place.add_argument("--amount", type=_x18, required=True, help="size, decimal, > 0")
    place.add_argument("--lifetime-s", type=int, default=3_600, help="seconds until it expires")
    place.add_argument("--wait-s", type=float, default=0.5, help="keep receiving fills this long")
    place.add_argument(
        "--typed-data",
        action="store_true",
        help="print the order as eth_signTypedData_v4 takes it; sign nothing, send nothing",
    )

    submit = command(
        sub,
        "submit",
        "place an order a wallet signed (the typed data of place --typed-data)",
        _submit,
        trading,
    )
    submit.add_argument("file", help="the typed-data JSON the wallet signed")
    submit.add_argument("--signature", required=True, help="the wallet's signature, 0x...")
    submit.add_argument("--wait-s", type=float, default=0.5, help="keep receiving fills this long")

    cancel = command(
        sub,
        "cancel",
        "cancel orders (by id, or all in --products) and keep the notes",
        _cancel,
        [*trading, KEY, DEADLINE],
    )
    cancel.add_argument("orders", nargs="*", type=digest_type, help="order ids (0x...)")
    cancel.add_argument("--product", type=int, help="product of ids not in the store")
    cancel.add_argument(
        "--products", type=int, nargs="*", default=[], help="cancel by product (none: all)"
    )
    cancel.add_argument("--wait-s", type=float, default=0.5, help="keep receiving this long")

    status = command(
        sub,
        "status",
        "your orders, fills and notes from the evidence store (with --url: caught up first)",
        _status,
        [*trading, KEY_OR_ADDRESS],
    )
    status.add_argument("order", nargs="?", type=digest_type, help="one order id")

    evidence = sub.add_parser(
        "evidence", help="findings; export or import evidence bundles", epilog=EPILOG
    )
    evidence_sub = evidence.add_subparsers(
        dest="evidence_command", required=True, metavar="COMMAND"
    )
    command(
        evidence_sub,
        "findings",
        "what the evidence proves against the operator (with --url: caught up first)",
        _evidence_findings,
        [*trading, KEY_OR_ADDRESS],
    )
    export = command(
        evidence_sub,
        "export",
        "write a self-contained bundle that any machine verifies offline",
        _evidence_export,
        [*trading, KEY_OR_ADDRESS],
    )
    export.add_argument("--order", type=digest_type, help="export one order's evidence")
    export.add_argument("--since-ms", type=int, help="export what arrived from then (unix ms)")
    export.add_argument("--until-ms", type=int, help="... until then")
    export.add_argument("--out", help="write the bundle here (default stdout)")
    bundle = command(
        evidence_sub,
        "import",
        "verify a bundle and keep its evidence (a third-party watchtower)",
        _evidence_import,
        [STORE],
    )
    bundle.add_argument("file", help="the bundle (evidence export)")

    heads = sub.add_parser(
        "heads",
        help="the operator's signed journal heads: show, export, import (gossip)",
        description="the operator's signed journal heads: show, export, import (gossip)",
        epilog=EPILOG,
    )
    heads_sub = heads.add_subparsers(dest="heads_command", required=True, metavar="COMMAND")
    show = command(
        heads_sub,
        "show",
        "the latest heads kept, and how many fills and notes the log proves (with --url:"
        " the operator's next head first)",
        _heads_show,
        [STORE, OPERATOR],
    )
    export_heads = command(
        heads_sub,
        "export",
        "write the heads kept to a file, for a peer or a watchtower to import",
        _heads_export,
        [STORE, OPERATOR],
    )
    show.add_argument("--last", type=int, default=10, help="the last N heads by size")
    export_heads.add_argument("--last", type=int, help="only the last N heads by size (all)")
    export_heads.add_argument("--out", help="write the heads here (default stdout)")
    import_heads = command(
        heads_sub,
        "import",
        "check a peer's or a watchtower's heads against ours (with --url: and against the"
        " operator's consistency proofs); a split view is a finding dispute proves",
        _heads_import,
        [STORE, OPERATOR],
    )
    import_heads.add_argument("file", help="the heads (heads export) or any evidence bundle")

    for name, helptext, handler in (
        ("dispute", "one watchtower round: prove findings, force unanswered cancels", _dispute),
        ("watch", "stay subscribed (with --url) and run the watchtower every --poll-s", _watch),
    ):
        parser = command(sub, name, helptext, handler, [*trading, KEY, DEADLINE])
        parser.add_argument("--no-withdraw", action="store_true", help="leave payouts credited")
        if name == "watch":
            parser.add_argument("--duration-s", type=float, default=float("inf"), help="stop after")
            parser.add_argument("--poll-s", type=float, default=1.0, help="seconds between rounds")
    command(sub, "withdraw", "take what the court credited you", _withdraw, [STORE, COURT, KEY])
