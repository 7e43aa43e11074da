"""``cancelnote chain`` and ``cancelnote court``: a dev chain, and deploying and reading a court.

Who pays for a transaction: a keystore (``--key``, see ``cancelnote keys``), one of the
node's own unlocked accounts (``--node-account N``: ``eth_accounts[N]``, which anvil,
hardhat, ganache and ``cancelnote chain serve`` hold; the node signs), or, on a cancelnote
dev chain only, ``--dev-account N``: the well-known funded keys that ``chain serve`` prints.
Errors are raised to ``cancelnote.cli.main``, which prints one line and exits with the
code of :mod:`cancelnote.exits`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cancelnote.cliargs import (
    add_profile_flag,
    address_type,
    digest_type,
    env_help,
    need,
    need_address,
)
from cancelnote.crypto import to_checksum
from cancelnote.dispute.court import DEV_PARAMETERS, Offence
from cancelnote.dispute.local import BACKENDS
from cancelnote.exits import USAGE, CommandError

#: The integer parameters of ``court deploy``, each a ``--flag`` defaulting to the dev court's.
_INT_PARAMETERS = tuple(name for name, value in DEV_PARAMETERS.items() if type(value) is int)


def _chain(args: argparse.Namespace) -> Any:
    from cancelnote.dispute.jsonrpc import JsonRpcChain

    return JsonRpcChain(need(args, "rpc"))


def _payer(args: argparse.Namespace, chain: Any, *, default_node_account: bool = False) -> Any:
    """Who signs and pays: ``--key``, ``--node-account N`` or ``--dev-account N``."""
    from cancelnote import keystore
    from cancelnote.dispute.inprocess import dev_account

    if args.node_account is not None:
        return chain.node_account(args.node_account)
    if args.dev_account is not None:
        return dev_account(args.dev_account)
    if args.key is not None:
        return keystore.load(args.key, keystore.read_password(args.password_file))
    if default_node_account:
        return chain.node_account(0)
    raise CommandError(USAGE, "give --key KEYSTORE, --node-account N or --dev-account N")


def _court_deploy(args: argparse.Namespace) -> int:
    from cancelnote.dispute.court import Court

    chain = _chain(args)
    parameters = {name: getattr(args, name) for name in _INT_PARAMETERS}
    court = Court.deploy(
        chain,
        _payer(args, chain),
        operator=args.operator,
        halt_on_default=not args.no_halt,
        burn_address=args.burn_address,
        **parameters,
    )
    receipt = court.deploy_receipt
    assert receipt is not None  # (a court just deployed has its receipt)
    if args.json:
        print(json.dumps({"court": to_checksum(court.address), "gas_used": receipt.gas_used}))
    else:
        print(f"court {to_checksum(court.address)} (deployed with {receipt.gas_used:,} gas)")
    return 0


def _court_status(args: argparse.Namespace) -> int:
    from cancelnote.dispute.court import Court

    court = Court.at(_chain(args), need_address(args, "court"))
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
        cancel = court.cancel_status(args.digest)
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
            if (c := court.claim_of(args.digest, offence)).filed
        }  # fmt: skip
    if args.json:
        print(json.dumps(status))
        return 0
    rows = {name: value for name, value in status.items() if name not in ("cancel", "claims")}
    rows.update({f"cancel_{name}": value for name, value in status.get("cancel", {}).items()})
    for offence, claim in status.get("claims", {}).items():
        rows.update({f"claim_{offence}_{name}": value for name, value in claim.items()})
    width = max(map(len, rows))
    for name, value in rows.items():
        print(f"{name:<{width}}  {value}")
    return 0


def _chain_serve(args: argparse.Namespace) -> int:
    from cancelnote.dispute.rpcserver import serve

    return serve(
        args.host,
        args.port,
        chain_id=args.chain_id,
        accounts=args.accounts,
        backend=args.backend,
        hardfork=args.hardfork,
    )


def _chain_fund(args: argparse.Namespace) -> int:
    chain = _chain(args)
    payer = _payer(args, chain, default_node_account=True)
    receipt = chain.transact(payer, args.to, b"", value=round(args.eth * 10**18))
    ether = chain.balance(args.to) / 10**18
    print(f"{to_checksum(args.to)} holds {ether:,.4f} ETH (block {receipt.block_number})")
    return 0


def _chain_advance(args: argparse.Namespace) -> int:
    chain = _chain(args)
    before = chain.timestamp()
    chain.increase_time(args.seconds)
    chain.mine()
    after = chain.timestamp()
    print(f"block {chain.block_number()} at {after} ({after - before:+,} s)")
    return 0


def _add_rpc_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpc", help=env_help("rpc", "the node's JSON-RPC URL"))
    add_profile_flag(parser)


def _add_payer_flags(parser: argparse.ArgumentParser, default: str) -> None:
    payers = parser.add_argument_group(f"who pays ({default})")
    payer = payers.add_mutually_exclusive_group()
    payer.add_argument("--key", help="a keystore (cancelnote keys create)")
    payer.add_argument(
        "--node-account", type=int, metavar="N", help="the node's unlocked eth_accounts[N]"
    )
    payer.add_argument(
        "--dev-account", type=int, metavar="N", help="dev key N of cancelnote chain serve"
    )
    payers.add_argument("--password-file", help="the keystore's password file (else env, prompt)")


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
    serve.add_argument(
        "--hardfork",
        choices=["shanghai", "cancun", "prague"],
        default="prague",
        help="py-evm's fork; shanghai is a node without Cancun's opcodes, as ganache is"
        " (default %(default)s)",
    )
    serve.set_defaults(run=_chain_serve)

    fund = chain_commands.add_parser("fund", help="send ether to an address (dev chains)")
    _add_rpc_flag(fund)
    fund.add_argument("--to", required=True, type=address_type, help="the address to fund")
    fund.add_argument("--eth", type=float, default=10.0, help="how much (default %(default)s)")
    _add_payer_flags(fund, "default: --node-account 0")
    fund.set_defaults(run=_chain_fund)

    advance = chain_commands.add_parser(
        "advance", help="move a dev node's clock on and mine a block (evm_increaseTime)"
    )
    _add_rpc_flag(advance)
    advance.add_argument(
        "--seconds", type=int, required=True, help="how far the next block's time jumps"
    )
    advance.set_defaults(run=_chain_advance)


def add_court_commands(commands: argparse._SubParsersAction) -> None:
    court = commands.add_parser("court", help="deploy the court contract, read its state")
    court_commands = court.add_subparsers(dest="court_command", required=True, metavar="COMMAND")

    deploy = court_commands.add_parser("deploy", help="deploy a new court for an operator")
    _add_rpc_flag(deploy)
    deploy.add_argument(
        "--operator", required=True, type=address_type, help="the operator's address (0x...)"
    )
    _add_payer_flags(deploy, "one of these")
    for name in _INT_PARAMETERS:
        value = DEV_PARAMETERS[name]
        flag = "--" + name.replace("_", "-")
        deploy.add_argument(flag, type=int, default=value, help=f"default {value:,}")
    deploy.add_argument(
        "--burn-address",
        type=address_type,
        default=DEV_PARAMETERS["burn_address"],
        help=f"where the burn share of every penalty goes (default"
        f" {to_checksum(DEV_PARAMETERS['burn_address'])})",
    )
    deploy.add_argument(
        "--no-halt", action="store_true", help="do not halt the operator on its first default"
    )
    deploy.add_argument("--json", action="store_true", help="print JSON")
    deploy.set_defaults(run=_court_deploy)

    status = court_commands.add_parser("status", help="bond, parameters, defaults, halted")
    _add_rpc_flag(status)
    status.add_argument("--court", help=env_help("court", "the court's address"))
    status.add_argument(
        "--digest", type=digest_type, help="also show the forced-cancel state of this order"
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_court_status)
