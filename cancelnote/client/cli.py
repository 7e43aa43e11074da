"""``cancelnote client``: trade, cancel, keep evidence and take a cheating operator to court.

Every command works on one evidence store (``--db``). The first command that names the
court (``--rpc URL --court ADDRESS``) creates the store for that court and its operator
(read from the court); later commands may omit them where no chain call is needed.

Exit codes: 0 done; 1 the operator or the court refused; 2 usage or configuration error
(bad option, key, password, store of another court); 3 a finding needs a dispute (or a
dispute is still open: forced and unsettled, or claimed and not yet paid in full); 4 the
operator or the chain cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_FINDINGS, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
#: Environment variable naming the default evidence store.
DB_ENV = "CANCELNOTE_CLIENT_DB"
X18 = 10**18
#: Seconds to wait for the operator's first answer (the subscription) before giving up.
CONNECT_TIMEOUT_S = 10.0

EPILOG = (
    "exit codes: 0 ok, 1 operator or court rejected, 2 usage/config error,"
    " 3 finding needs a dispute, 4 operator or chain unreachable"
)


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _x18(text: str) -> int:
    try:
        return int(Decimal(text) * X18)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None


def _digest(text: str) -> bytes:
    from cancelnote.errors import MessageError
    from cancelnote.messages import bytes32_from_wire

    try:
        return bytes32_from_wire("order id", text)
    except MessageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------------------------------
# Context: the store, the court, the key.


class _Context:
    def __init__(self, args: argparse.Namespace, *, chain: bool = False) -> None:
        import attrs

        from cancelnote.client.evidence import EvidenceError, EvidenceStore
        from cancelnote.client.verifier import Verifier, VerifierPolicy

        self.args = args
        self.court: Any = None
        domain = operator = None
        policy = VerifierPolicy(cancel_deadline_ms=int(args.deadline_s * 1000))
        if args.rpc:
            from cancelnote.crypto import parse_address
            from cancelnote.dispute.chain import ChainError
            from cancelnote.dispute.court import Court
            from cancelnote.dispute.jsonrpc import JsonRpcChain

            if not args.court:
                raise _Exit(EXIT_USAGE, "--court ADDRESS is needed with --rpc")
            try:
                self.court = Court.at(JsonRpcChain(args.rpc), parse_address(args.court))
                domain, operator = self.court.domain, self.court.operator()
                policy = attrs.evolve(policy, court_max_pending_ms=self.court.max_pending_ms())
            except ChainError as exc:
                raise _Exit(EXIT_UNREACHABLE, f"cannot reach the chain: {exc}") from None
        elif chain:
            raise _Exit(EXIT_USAGE, "this command needs the court: --rpc URL --court ADDRESS")
        try:
            self.store = EvidenceStore.open(args.db, domain, operator)
        except EvidenceError as exc:
            raise _Exit(EXIT_USAGE, str(exc)) from None
        self.verifier = Verifier(self.store, policy)

    def signer(self) -> Any:
        return _load_signer(self.args)

    def session(self) -> Any:
        from cancelnote.client.session import Session

        if not self.args.url:
            raise _Exit(EXIT_USAGE, "this command needs the operator: --url ws://HOST:PORT")
        return Session(self.args.url, self.signer(), self.verifier, subaccount=self.args.subaccount)


def _load_signer(args: argparse.Namespace) -> Any:
    from cancelnote import keystore
    from cancelnote.errors import CancelnoteError

    if not args.key:
        raise _Exit(EXIT_USAGE, "this command needs --key KEYSTORE")
    try:
        return keystore.load(args.key, keystore.read_password(args.password_file))
    except CancelnoteError as exc:
        raise _Exit(EXIT_USAGE, str(exc)) from None


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
    return EXIT_FINDINGS if open_ else EXIT_OK


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
    """Connect, run ``work(session)``, keep receiving for ``linger_s``, disconnect.

    Failures are raised after the nursery has closed, so that they reach the exit code
    as themselves (not inside an exception group).
    """
    import trio

    from cancelnote.client.session import ConnectionLost, OperatorRejected

    session = ctx.session()
    result: Any = None
    failure: _Exit | None = None
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(CONNECT_TIMEOUT_S) as connecting:
            await nursery.start(session.run)
        if connecting.cancelled_caught:
            failure = _Exit(EXIT_UNREACHABLE, f"cannot reach the operator at {session.url}")
        else:
            try:
                result = await work(session)
                await trio.sleep(linger_s)
            except OperatorRejected as exc:
                failure = _Exit(EXIT_REJECTED, f"the operator refused: {exc}")
            except ConnectionLost as exc:
                failure = _Exit(EXIT_UNREACHABLE, str(exc))
            except _Exit as exc:
                failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


# ---------------------------------------------------------------------------------------
# Commands.


def _place(args: argparse.Namespace) -> int:
    import trio

    ctx = _Context(args)
    amount = args.amount if args.side == "buy" else -args.amount

    async def work(session: Any) -> bytes:
        return await session.place(args.product, args.price, amount, lifetime_s=args.lifetime_s)

    digest = trio.run(_with_session, ctx, work, args.wait_s)
    _emit(
        args,
        [{"order": "0x" + digest.hex(), "product": args.product, "side": args.side}],
        ["order", "product", "side"],
    )
    return _findings_exit(ctx)


def _cancel(args: argparse.Namespace) -> int:
    import trio

    ctx = _Context(args)

    async def work(session: Any) -> dict[str, Any]:
        if args.orders:
            pairs = []
            for digest in args.orders:
                stored = ctx.store.order(digest)
                if stored is None and args.product is None:
                    raise _Exit(EXIT_USAGE, f"0x{digest.hex()} is not in the store: give --product")
                pairs.append((digest, args.product if stored is None else stored.order.product_id))
            return await session.cancel(pairs)
        return await session.cancel_products(tuple(args.products))

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
    for row in rows:
        notes = ctx.store.notes(_digest(row["order"]))
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
    if args.url:  # first catch up on what the operator sent while we were away
        import trio

        async def catch_up(session: Any) -> None:
            await session.wait_caught_up()

        trio.run(_with_session, ctx, catch_up, 0.0)
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


def _evidence(args: argparse.Namespace) -> int:
    from cancelnote.client.evidence import EvidenceError, EvidenceStore, parse_bundle

    if args.evidence_command == "import":
        from cancelnote.client.verifier import Verifier
        from cancelnote.dispute.jsonrpc import parse_json

        with open(args.file, "rb") as file:
            try:
                bundle = parse_bundle(parse_json(file.read()))
            except (EvidenceError, ValueError) as exc:
                raise _Exit(EXIT_REJECTED, f"bundle refused: {exc}") from None
        try:
            store = EvidenceStore.open(args.db, bundle.domain, bundle.operator)
        except EvidenceError as exc:
            raise _Exit(EXIT_USAGE, str(exc)) from None
        found = Verifier(store).import_bundle(bundle, _now_ms())
        print(
            f"imported {len(bundle.orders)} orders, {len(bundle.fills)} fills,"
            f" {len(bundle.notes)} notes; {len(found)} new findings",
            file=sys.stderr,
        )
        rows = [{"kind": f.kind, "order": "0x" + f.digest.hex(), "detail": f.detail} for f in found]
        _emit(args, rows, ["kind", "order", "detail"])
        return EXIT_FINDINGS if found else EXIT_OK
    ctx = _Context(args)
    if args.evidence_command == "export":
        bundle = ctx.store.export_bundle(args.order, args.since_ms, args.until_ms)
        text = json.dumps(bundle, indent=2)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as file:
                file.write(text + "\n")
        else:
            print(text)
        return EXIT_OK
    _emit(args, _finding_rows(ctx), ["id", "kind", "order", "status", "offence", "detail"])
    return _findings_exit(ctx)


def _now_ms() -> int:
    from cancelnote.client.session import wall_clock_ms

    return wall_clock_ms()


#: The columns of a watchtower round's outcomes (``dispute``, ``watch``).
_OUTCOME_COLUMNS = ["action", "order", "outcome", "owed_wei", "paid_wei", "detail"]


def _outcome_rows(outcomes: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "action": type(o.action).__name__,
            "order": "0x" + getattr(o.action, "digest", b"").hex(),
            "outcome": o.outcome,
            "owed_wei": o.owed,
            "paid_wei": o.paid,
            "detail": o.detail,
            "tx": "" if o.tx_hash is None else "0x" + o.tx_hash.hex(),
        }
        for o in outcomes
    ]


def _watchtower(ctx: _Context) -> Any:
    from cancelnote.client.watchtower import Watchtower

    return Watchtower(ctx.verifier, ctx.court, ctx.signer(), auto_withdraw=not ctx.args.no_withdraw)


def _dispute(args: argparse.Namespace) -> int:
    from cancelnote.dispute.chain import ChainError

    ctx = _Context(args, chain=True)
    try:
        outcomes = _watchtower(ctx).step(_now_ms())
    except ChainError as exc:
        raise _Exit(EXIT_UNREACHABLE, str(exc)) from None
    _emit(args, _outcome_rows(outcomes), _OUTCOME_COLUMNS)
    if any(o.outcome == "rejected" for o in outcomes):
        return EXIT_REJECTED
    return _findings_exit(ctx)


def _watch(args: argparse.Namespace) -> int:
    import trio

    ctx = _Context(args, chain=True)
    tower = _watchtower(ctx)
    outcomes: list[Any] = []

    async def rounds() -> None:
        with trio.move_on_after(args.duration_s):
            while True:
                done = await trio.to_thread.run_sync(tower.step, _now_ms())
                outcomes.extend(done)
                for row in _outcome_rows(done):
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
    _emit(args, _outcome_rows(outcomes), _OUTCOME_COLUMNS)
    return _findings_exit(ctx)


def _withdraw(args: argparse.Namespace) -> int:
    from cancelnote.dispute.chain import TransactionReverted

    ctx = _Context(args, chain=True)
    signer = ctx.signer()
    amount = ctx.court.credits(signer.address)
    try:
        receipt = ctx.court.withdraw(signer)
    except TransactionReverted as exc:
        raise _Exit(EXIT_REJECTED, f"the court refused: {exc.reason}") from None
    ctx.store.add_payout(receipt.transaction_hash, signer.address, amount, _now_ms())
    _emit(
        args,
        [{"account": signer.checksum_address, "withdrawn_wei": amount}],
        ["account", "withdrawn_wei"],
    )
    return EXIT_OK


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
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# The parser.


def _run(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from cancelnote.errors import CancelnoteError

        try:
            return handler(args)
        except _Exit as exc:
            print(f"cancelnote client: {exc}", file=sys.stderr)
            return exc.code
        except CancelnoteError as exc:
            print(f"cancelnote client: {exc.code}: {exc}", file=sys.stderr)
            return EXIT_REJECTED

    return run


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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=os.environ.get(DB_ENV, "cancelnote-client.sqlite"),
        help=f"evidence store (default ${DB_ENV} or %(default)s)",
    )
    common.add_argument("--key", help="your keystore (cancelnote keys create)")
    common.add_argument(
        "--password-file", help="keystore password file (else $CANCELNOTE_PASSWORD)"
    )
    common.add_argument(
        "--subaccount", default="default", help="subaccount name (default %(default)s)"
    )
    common.add_argument("--url", help="the operator's WebSocket URL, ws://HOST:PORT")
    common.add_argument("--rpc", help="JSON-RPC URL of the court's chain")
    common.add_argument("--court", help="the court's address")
    common.add_argument(
        "--deadline-s",
        type=float,
        default=30.0,
        help="a cancel unanswered this long is forced on-chain (default %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = client.add_subparsers(dest="client_command", required=True, metavar="COMMAND")

    def command(name: str, helptext: str, handler: Any) -> argparse.ArgumentParser:
        parser = sub.add_parser(
            name, parents=[common], help=helptext, description=helptext, epilog=EPILOG
        )
        parser.set_defaults(run=_run(handler))
        return parser

    keys = sub.add_parser("keys", help="your keys: create, import, show")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    add_key_file_commands(keys_sub)
    show = keys_sub.add_parser(
        "show", parents=[common], help="your address and sender (subaccount)"
    )
    show.set_defaults(run=_run(_keys_show))

    place = command("place", "sign, store and place a limit order", _place)
    place.add_argument("side", choices=["buy", "sell"])
    place.add_argument("--product", type=int, required=True, help="product id")
    place.add_argument("--price", type=_x18, required=True, help="limit price, decimal")
    place.add_argument("--amount", type=_x18, required=True, help="size, decimal, > 0")
    place.add_argument("--lifetime-s", type=int, default=3_600, help="seconds until it expires")
    place.add_argument("--wait-s", type=float, default=0.5, help="keep receiving fills this long")

    cancel = command(
        "cancel", "cancel orders (by id, or all in --products) and keep the notes", _cancel
    )
    cancel.add_argument("orders", nargs="*", type=_digest, help="order ids (0x...)")
    cancel.add_argument("--product", type=int, help="product of ids not in the store")
    cancel.add_argument(
        "--products", type=int, nargs="*", default=[], help="cancel by product (none: all)"
    )
    cancel.add_argument("--wait-s", type=float, default=0.5, help="keep receiving this long")

    status = command(
        "status",
        "your orders, fills and notes from the evidence store (with --url: caught up first)",
        _status,
    )
    status.add_argument("order", nargs="?", type=_digest, help="one order id")

    evidence = command("evidence", "findings; export or import evidence bundles", _evidence)
    evidence.add_argument("evidence_command", choices=["findings", "export", "import"])
    evidence.add_argument("file", nargs="?", help="bundle to import")
    evidence.add_argument("--order", type=_digest, help="export one order's evidence")
    evidence.add_argument("--since-ms", type=int, help="export what arrived from then (unix ms)")
    evidence.add_argument("--until-ms", type=int, help="... until then")
    evidence.add_argument("--out", help="write the bundle here (default stdout)")

    for name, helptext, handler in (
        ("dispute", "one watchtower round: prove findings, force unanswered cancels", _dispute),
        ("watch", "stay subscribed (with --url) and run the watchtower every --poll-s", _watch),
    ):
        parser = command(name, helptext, handler)
        parser.add_argument("--no-withdraw", action="store_true", help="leave payouts credited")
        if name == "watch":
            parser.add_argument("--duration-s", type=float, default=float("inf"), help="stop after")
            parser.add_argument("--poll-s", type=float, default=1.0, help="seconds between rounds")
    command("withdraw", "take what the court credited you", _withdraw)
