"""The ``cancelnote`` command. Each sub-command imports what it needs only when run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _example(args: argparse.Namespace) -> int:
    from .example import render_example

    print(render_example(), end="")
    return 0


def _chain_serve(args: argparse.Namespace) -> int:
    from .dispute.rpcserver import serve

    return serve(args.host, args.port, chain_id=args.chain_id, accounts=args.accounts)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _sim_validate(args: argparse.Namespace) -> int:
    from .sim.validate import format_table, run_validation

    checks = run_validation(args.seed, args.paths)
    print(format_table(checks), end="")
    return 0 if all(check.passed for check in checks) else 1


def _operator_run(args: argparse.Namespace) -> int:
    from . import keystore
    from .crypto import parse_address
    from .errors import CancelnoteError
    from .operator import service

    service.configure_logging()
    try:
        signer = keystore.load(args.key, keystore.read_password(args.password_file))
        config = service.OperatorConfig(
            db=args.db,
            signer=signer,
            rpc=args.rpc,
            court=None if args.court is None else parse_address(args.court),
            host=args.host,
            port=args.port,
            products=frozenset(int(p) for p in args.products.split(",")),
            settlement_delay_ms=args.settlement_delay_ms,
            policy=service.parse_policy(args.policy, args.policy_seed),
            post_bond_wei=args.post_bond,
            durability=args.durability.upper(),
            watch=not args.no_watch,
            poll_s=args.poll_s,
        )
        return service.run(config)
    except (CancelnoteError, ValueError) as exc:
        print(f"cancelnote operator run: {exc}", file=sys.stderr)
        return 2


def _keys_create(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import keystore
    from .errors import CancelnoteError

    try:
        password = keystore.read_password(args.password_file, confirm=True)
        if args.private_key_file is None:
            signer = keystore.create(args.out, password)
        else:
            text = Path(args.private_key_file).read_text(encoding="utf-8").strip()
            signer = keystore.import_key(args.out, bytes.fromhex(text.removeprefix("0x")), password)
    except (CancelnoteError, OSError, ValueError) as exc:
        print(f"cancelnote keys: {exc}", file=sys.stderr)
        return 2
    print(f"{signer.checksum_address} {args.out}")
    return 0


def _add_operator_commands(commands: argparse._SubParsersAction) -> None:
    operator = commands.add_parser("operator", help="the exchange operator")
    operator_commands = operator.add_subparsers(
        dest="operator_command", required=True, metavar="COMMAND"
    )
    run = operator_commands.add_parser(
        "run", help="serve the operator API over WebSocket until SIGINT/SIGTERM"
    )
    run.add_argument("--db", required=True, help="journal file (SQLite), created if missing")
    run.add_argument("--key", required=True, help="the operator's keystore (cancelnote keys)")
    run.add_argument(
        "--password-file", help="file holding the keystore password (else $CANCELNOTE_PASSWORD)"
    )
    chain = run.add_mutually_exclusive_group(required=True)
    chain.add_argument("--rpc", help="Ethereum JSON-RPC URL of the court's chain")
    chain.add_argument(
        "--chain",
        choices=["in-process"],
        help="run a private py-evm chain and deploy a court on it (tests, demos)",
    )
    run.add_argument("--court", help="the court's address (required with --rpc)")
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    run.add_argument(
        "--port", type=_int_at_least(0), default=8765, help="port, 0 for any (default %(default)s)"
    )
    run.add_argument("--products", default="1,2", help="traded product ids (default %(default)s)")
    run.add_argument(
        "--settlement-delay-ms",
        type=_int_at_least(0),
        default=0,
        help="how long a match is in flight before its fills are signed (default %(default)s)",
    )
    run.add_argument(
        "--policy",
        default="honest",
        help="honest | delay:MS | conditional-delay:MS | ignore:P | fill-after-note |"
        " backdate:MS | equivocate | withhold-notes (default %(default)s)",
    )
    run.add_argument("--policy-seed", type=int, default=0, help="seed of a random policy")
    run.add_argument(
        "--post-bond", type=_int_at_least(0), default=0, help="wei to add to the bond at start"
    )
    run.add_argument(
        "--durability",
        choices=["full", "normal"],
        default="full",
        help="full: fsync every commit (default); normal: survive a process crash only",
    )
    run.add_argument("--no-watch", action="store_true", help="do not follow the court's events")
    run.add_argument(
        "--poll-s", type=float, default=1.0, help="seconds between chain polls (default 1)"
    )
    run.set_defaults(run=_operator_run)

    keys = commands.add_parser("keys", help="encrypted key files (operator and client)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    for name, helptext in (
        ("create", "make a new random key and save it encrypted"),
        ("import", "save an existing private key (hex, read from a file) encrypted"),
    ):
        command = keys_commands.add_parser(name, help=helptext)
        command.add_argument("--out", required=True, help="keystore file to write (never replaced)")
        command.add_argument(
            "--password-file", help="file holding the password (else $CANCELNOTE_PASSWORD, prompt)"
        )
        if name == "import":
            command.add_argument(
                "--private-key-file", required=True, help="file holding the key as hex"
            )
        else:
            command.set_defaults(private_key_file=None)
        command.set_defaults(run=_keys_create)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cancelnote", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    example = commands.add_parser(
        "example", help="print the protocol's worked example (messages, digests, signatures)"
    )
    example.set_defaults(run=_example)

    chain = commands.add_parser("chain", help="a local dev chain for separate processes")
    chain_commands = chain.add_subparsers(dest="chain_command", required=True, metavar="COMMAND")
    serve = chain_commands.add_parser(
        "serve", help="serve an in-process py-evm chain over Ethereum JSON-RPC until Ctrl-C"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument(
        "--port",
        type=int,
        default=8545,
        help="port to bind, 0 for any free one (default %(default)s)",
    )
    serve.add_argument("--chain-id", type=int, default=1337, help="chain id (default %(default)s)")
    serve.add_argument(
        "--accounts", type=int, default=10, help="funded dev accounts (default %(default)s)"
    )
    serve.set_defaults(run=_chain_serve)

    sim = commands.add_parser("sim", help="the simulation lab")
    sim_commands = sim.add_subparsers(dest="sim_command", required=True, metavar="COMMAND")
    validate = sim_commands.add_parser(
        "validate", help="check the simulator against closed forms; exit 1 if a check fails"
    )
    validate.add_argument(
        "--seed", type=_int_at_least(0), default=20261123, help="root seed (default %(default)s)"
    )
    validate.add_argument(
        "--paths",
        type=_int_at_least(2),
        default=100_000,
        help="Monte Carlo paths per check (default %(default)s)",
    )
    validate.set_defaults(run=_sim_validate)
    _add_operator_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
