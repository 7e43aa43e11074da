"""``cancelnote chain`` and ``cancelnote court``: a dev chain, and deploying and reading a court.

Keys come from keystores (``cancelnote keys``) or, on a cancelnote dev chain only, from
``--dev-account N``: the well-known funded keys that ``cancelnote chain serve`` prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cancelnote.crypto import Signer, parse_address, to_checksum
from cancelnote.dispute.court import DEV_PARAMETERS, Offence
from cancelnote.dispute.local import BACKENDS
from cancelnote.errors import CancelnoteError

#: The integer parameters of ``court deploy``, each a ``--flag`` defaulting to the dev court's.
_INT_PARAMETERS = tuple(name for name, value in DEV_PARAMETERS.items() if type(value) is int)


def _signer(args: argparse.Namespace) -> Signer:
    from cancelnote import keystore
    from cancelnote.dispute.inprocess import dev_account

    if args.dev_account is not None:
        return dev_account(args.dev_account)
    if args.key is None:
        raise CancelnoteError("give --key KEYSTORE or, on a dev chain, --dev-account N")
    return keystore.load(args.key, keystore.read_password(args.password_file))


def _court_deploy(args: argparse.Namespace) -> int:
    from cancelnote.dispute.court import Court
    from cancelnote.dispute.jsonrpc import JsonRpcChain

    parameters = {name: getattr(args, name) for name in _INT_PARAMETERS}
    court = Court.deploy(
        JsonRpcChain(args.rpc),
        _signer(args),
        operator=parse_address(args.operator),
        halt_on_default=not args.no_halt,
        burn_address=parse_address(args.burn_address),
        **parameters,
    )
    receipt = court.deploy_receipt
    if args.json:
        print(json.dumps({"court": to_checksum(court.address), "gas_used": receipt.gas_used}))
    else:
        print(f"court {to_checksum(court.address)} (deployed with {receipt.gas_used:,} gas)")
    return 0


def _court_status(args: argparse.Namespace) -> int:
    from cancelnote.dispute.court import Court
    from cancelnote.dispute.jsonrpc import JsonRpcChain

    court = Court.at(JsonRpcChain(args.rpc), parse_address(args.court))
    status: dict[str, Any] = {
        "court": to_checksum(court.address),
        "operator": to_checksum(court.operator()),
        "bond_wei": court.bond(),
        "min_bond_wei": court.min_bond(),
        "penalty_wei": court.penalty(),
        "dispute_bond_wei": court.dispute_bond(),
        "answer_window_s": court.answer_window(),
        "exit_delay_s": court.exit_delay(),
        "max_pending_ms": court.max_pending_ms(),
        "claim_delay_s": court.claim_delay(),
        "burn_share_bps": court.burn_share_bps(),
        "burn_address": to_checksum(court.burn_address()),
        "exit_announced_at": court.exit_announced_at(),
        "defaults": court.defaults(),
        "halted": court.halted(),
        "claims_outstanding_wei": court.claims_outstanding(),
        "burn_unsent_wei": court.burn_unsent(),
    }
    if args.digest is not None:
        digest = bytes.fromhex(args.digest.removeprefix("0x"))
        cancel = court.cancel_status(digest)
        status["cancel"] = {
            "state": cancel.state.name,
            "requested_at": cancel.requested_at,
            "deadline": cancel.deadline,
            "cap": cancel.cap,
        }
        status["claims"] = {
            offence.name: {"window": c.window, "paid": c.paid, "entitled": c.entitled,
                           "vests_at": c.vests_at}
            for offence in Offence
            if (c := court.claim_of(digest, offence)).filed
        }  # fmt: skip
    if args.json:
        print(json.dumps(status))
    else:
        width = max(map(len, status))
        for name, value in status.items():
            print(f"{name:<{width}}  {value}")
    return 0


def _chain_serve(args: argparse.Namespace) -> int:
    from cancelnote.dispute.rpcserver import serve

    return serve(
        args.host, args.port, chain_id=args.chain_id, accounts=args.accounts, backend=args.backend
    )


def _chain_fund(args: argparse.Namespace) -> int:
    from cancelnote.dispute.inprocess import dev_account
    from cancelnote.dispute.jsonrpc import JsonRpcChain

    chain = JsonRpcChain(args.rpc)
    payer = dev_account(0) if args.key is None and args.dev_account is None else _signer(args)
    recipient = parse_address(args.to)
    receipt = chain.transact(payer, recipient, b"", value=round(args.eth * 10**18))
    ether = chain.balance(recipient) / 10**18
    print(f"{to_checksum(recipient)} holds {ether:,.4f} ETH (block {receipt.block_number})")
    return 0


def _reporting_errors(handler: Any) -> Any:
    """Run ``handler``; a cancelnote error is one line on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CancelnoteError, ValueError) as exc:
            print(f"cancelnote {args.command}: {exc}", file=sys.stderr)
            return 1

    return run


def add_chain_commands(commands: argparse._SubParsersAction) -> None:
    chain = commands.add_parser("chain", help="a local dev chain for separate processes")
    chain_commands = chain.add_subparsers(dest="chain_command", required=True, metavar="COMMAND")
    serve = chain_commands.add_parser(
        "serve", help="serve an in-process dev chain over Ethereum JSON-RPC until Ctrl-C"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument(
        "--port", type=int, default=8545, help="port to bind, 0 for any free one (default 8545)"
    )
    serve.add_argument("--chain-id", type=int, default=1337, help="chain id (default %(default)s)")
    serve.add_argument(
        "--accounts", type=int, default=10, help="funded dev accounts (default %(default)s)"
    )
    serve.add_argument(
        "--backend",
        choices=BACKENDS,
        default="py-evm",
        help="the EVM: py-evm (the reference) or revm (fast; needs cancelnote[fast])"
        " (default %(default)s)",
    )
    serve.set_defaults(run=_chain_serve)

    fund = chain_commands.add_parser("fund", help="send ether from a dev account (dev chains)")
    fund.add_argument("--rpc", required=True, help="Ethereum JSON-RPC URL")
    fund.add_argument("--to", required=True, help="the address to fund")
    fund.add_argument("--eth", type=float, default=10.0, help="how much (default %(default)s)")
    fund.add_argument("--key", help="the payer's keystore (default: --dev-account 0)")
    fund.add_argument("--password-file", help="keystore password file (else env or prompt)")
    fund.add_argument("--dev-account", type=int, help="pay from dev account N")
    fund.set_defaults(run=_reporting_errors(_chain_fund))


def add_court_commands(commands: argparse._SubParsersAction) -> None:
    court = commands.add_parser("court", help="deploy the court contract, read its state")
    court_commands = court.add_subparsers(dest="court_command", required=True, metavar="COMMAND")

    deploy = court_commands.add_parser("deploy", help="deploy a new court for an operator")
    deploy.add_argument("--rpc", required=True, help="Ethereum JSON-RPC URL")
    deploy.add_argument("--operator", required=True, help="the operator's address (0x...)")
    deploy.add_argument("--key", help="the deployer's keystore")
    deploy.add_argument("--password-file", help="keystore password file (else env or prompt)")
    deploy.add_argument(
        "--dev-account", type=int, help="deploy with dev account N of `cancelnote chain serve`"
    )
    for name in _INT_PARAMETERS:
        value = DEV_PARAMETERS[name]
        flag = "--" + name.replace("_", "-")
        deploy.add_argument(flag, type=int, default=value, help=f"default {value:,}")
    deploy.add_argument(
        "--burn-address",
        default=to_checksum(DEV_PARAMETERS["burn_address"]),
        help="where the burn share of every penalty goes (default %(default)s)",
    )
    deploy.add_argument(
        "--no-halt", action="store_true", help="do not halt the operator on its first default"
    )
    deploy.add_argument("--json", action="store_true", help="print JSON")
    deploy.set_defaults(run=_reporting_errors(_court_deploy))

    status = court_commands.add_parser("status", help="bond, parameters, defaults, halted")
    status.add_argument("--rpc", required=True, help="Ethereum JSON-RPC URL")
    status.add_argument("--court", required=True, help="the court's address")
    status.add_argument("--digest", help="also show the forced-cancel state of this order")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_reporting_errors(_court_status))
