"""The ``cancelnote`` command. Each sub-command imports what it needs only when run."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence

from .dispute.cli import add_chain_commands, add_court_commands


def _example(args: argparse.Namespace) -> int:
    from .example import render_example

    print(render_example(), end="")
    return 0


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
    from .sim.validate_world import run_world_checks

    checks = run_validation(args.seed, args.paths)
    print(format_table(checks), end="")
    world = run_world_checks(args.seed)
    print(format_table(world), end="")
    return 0 if all(check.passed for check in [*checks, *world]) else 1


def _sim_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .sim.config import ScenarioError
    from .sim.output import run_scenario
    from .sim.progress import ProgressBar
    from .sim.scenario import load_scenario

    overrides = {} if args.seed is None else {"run.seed": args.seed}
    try:
        scenario = load_scenario(args.file, overrides)
        out = Path(args.out or f"runs/{Path(args.file).stem}-seed{scenario.run.seed}")
        bar = ProgressBar(f"sim run {Path(args.file).name}")
        summary = run_scenario(scenario, out, args.file, overrides, bar)
        bar.close()
    except (ScenarioError, OSError) as exc:
        print(f"cancelnote sim run: {exc}", file=sys.stderr)
        return 2
    for name in ("operator_gain_gross", "operator_gain_net", "stale_fill_rate", "disputes_filed"):
        stats = summary["aggregate"][name]
        mean = "-" if stats["mean"] is None else f"{stats['mean']:.4f}"
        ci = "" if stats["ci95"] is None else f" ± {stats['ci95']:.4f}"
        print(f"{name:<22} {mean}{ci}")
    print(f"output: {out}")
    return 0


def _sim_sweep(args: argparse.Namespace) -> int:
    import tomllib
    from pathlib import Path

    from .sim.config import ScenarioError
    from .sim.progress import ProgressBar
    from .sim.scenario import apply_overrides
    from .sim.sweep import parse_grid, run_sweep

    try:
        path = Path(args.file)
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        if args.seed is not None:
            document = apply_overrides(document, {"run.seed": args.seed})
        out = Path(args.out or f"sweeps/{path.stem}")
        bar = ProgressBar(f"sim sweep {path.name}")
        rows = run_sweep(
            document,
            path.parent,
            parse_grid(args.grid),
            args.seeds,
            out,
            backend=args.backend,
            workers=args.workers,
            scheduler=args.scheduler,
            resume=args.resume,
            progress=bar,
        )
        bar.close()
    except (ScenarioError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"cancelnote sim sweep: {exc}", file=sys.stderr)
        return 2
    print(f"{len(rows)} runs; output: {out}")
    return 0


def _missing_plot_extra(command: str) -> bool:
    """Say so, and return True, when matplotlib (the ``plot`` extra) is not installed."""
    if importlib.util.find_spec("matplotlib") is not None:
        return False
    print(
        f"cancelnote {command}: plotting needs matplotlib: pip install 'cancelnote[plot]'",
        file=sys.stderr,
    )
    return True


def _sim_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    if _missing_plot_extra("sim plot"):
        return 2
    from .sim.plot import plot_sweep

    try:
        paths = plot_sweep(Path(args.dir))
    except OSError as exc:
        print(f"cancelnote sim plot: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    if _missing_plot_extra("demo"):
        return 2
    from .sim.demo import run_demo
    from .sim.progress import ProgressBar

    bar = ProgressBar("demo")
    folder, table = run_demo(progress=bar)
    bar.close()
    print(table)
    print(f"output: {folder} (gain_vs_delay.png, gain_vs_delay.svg, summary.csv, points.csv)")
    return 0


def _operator_run(args: argparse.Namespace) -> int:
    from . import keystore
    from .crypto import parse_address
    from .errors import CancelnoteError
    from .operator import service
    from .operator.limits import SERVER_FLAGS, ServerConfig

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
            max_order_lifetime_s=args.max_order_lifetime_s,
            policy=service.parse_policy(args.policy, args.policy_seed),
            post_bond_wei=args.post_bond,
            durability=args.durability.upper(),
            watch=not args.no_watch,
            poll_s=args.poll_s,
            max_open_orders=args.max_open_orders,
            max_open_orders_per_product=args.max_open_orders_per_product,
            server=ServerConfig(**{field: getattr(args, field) for _, field, _, _ in SERVER_FLAGS}),
            heads_ms=args.heads_ms,
        )
        return service.run(config)
    except (CancelnoteError, ValueError) as exc:
        print(f"cancelnote operator run: {exc}", file=sys.stderr)
        return 2


def _journal_verify(args: argparse.Namespace) -> int:
    """Verify a journal's chain, meta and seal (and parse every row)."""
    from .errors import CancelnoteError
    from .operator.journal import Journal

    try:
        journal = Journal.open_readonly(args.db)
        try:
            count = sum(1 for _ in journal.entries())
        finally:
            journal.close()
    except CancelnoteError as exc:
        print(f"cancelnote operator journal verify: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {count} entries, last seq {journal.last_seq()}, head 0x{journal.head.hex()}")
    return 0


def _journal_export(args: argparse.Namespace) -> int:
    """Every row as a JSON line (seq, kind, body, chain), verified as it streams."""
    import json

    from .errors import CancelnoteError
    from .operator.journal import Journal

    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    try:
        journal = Journal.open_readonly(args.db)
        try:
            for seq, kind, body, chain in journal.rows():
                line = {
                    "seq": seq,
                    "kind": kind,
                    "body": json.loads(body),
                    "chain": "0x" + chain.hex(),
                }
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
        finally:
            journal.close()
    except CancelnoteError as exc:
        print(f"cancelnote operator journal export: {exc}", file=sys.stderr)
        return 2
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


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


def _add_limit_flags(run: argparse.ArgumentParser) -> None:
    """The operator's limits (docs/operations.md §9), each with its default."""
    from .operator.limits import (
        MAX_OPEN_ORDERS,
        MAX_OPEN_ORDERS_PER_PRODUCT,
        SERVER_FLAGS,
        ServerConfig,
    )

    limits = run.add_argument_group("limits (docs/operations.md §9)")
    defaults = ServerConfig()
    for flag, field, kind, text in SERVER_FLAGS:
        limits.add_argument(
            flag,
            dest=field,
            type=kind,
            default=getattr(defaults, field),
            help=f"{text} (%(default)s)",
        )
    limits.add_argument(
        "--max-open-orders",
        type=_int_at_least(1),
        default=MAX_OPEN_ORDERS,
        help="open orders resting in total (%(default)s)",
    )
    limits.add_argument(
        "--max-open-orders-per-product",
        type=_int_at_least(1),
        default=MAX_OPEN_ORDERS_PER_PRODUCT,
        help="per subaccount and product (%(default)s)",
    )


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
        "--max-order-lifetime-s",
        type=_int_at_least(1),
        default=7 * 86_400,  # the engine's MAX_ORDER_LIFETIME_S (imported lazily)
        help="refuse orders expiring later than this after now; must be below the court's"
        " exit delay minus its answer window (default %(default)s)",
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
    run.add_argument(
        "--heads-ms",
        type=_int_at_least(0),
        default=100,  # cancelnote.operator.heads.HEADS_MS (imported lazily)
        help="sign a journal head every this many ms, 0 for none (default %(default)s)",
    )
    run.add_argument("--no-watch", action="store_true", help="do not follow the court's events")
    run.add_argument(
        "--poll-s", type=float, default=1.0, help="seconds between chain polls (default 1)"
    )
    _add_limit_flags(run)
    run.set_defaults(run=_operator_run)

    journal = operator_commands.add_parser("journal", help="check or dump an operator journal")
    journal_commands = journal.add_subparsers(
        dest="journal_command", required=True, metavar="COMMAND"
    )
    verify = journal_commands.add_parser(
        "verify", help="check the hash chain, the meta and the seal; exit 2 on any damage"
    )
    verify.add_argument("--db", required=True, help="the journal file")
    verify.set_defaults(run=_journal_verify)
    export = journal_commands.add_parser(
        "export", help="every row as a JSON line (seq, kind, body, chain), verified"
    )
    export.add_argument("--db", required=True, help="the journal file")
    export.add_argument("--out", default="-", help="output file (default: stdout)")
    export.set_defaults(run=_journal_export)

    keys = commands.add_parser("keys", help="encrypted key files (operator and client)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    add_key_file_commands(keys_commands)


def add_key_file_commands(keys_commands: argparse._SubParsersAction) -> None:
    """``create`` and ``import``, under ``cancelnote keys`` and ``cancelnote client keys``."""
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

    add_chain_commands(commands)
    add_court_commands(commands)

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

    run = sim_commands.add_parser("run", help="run a scenario's replicates into a folder")
    run.add_argument("file", help="scenario file (TOML; see simulations/)")
    run.add_argument("--seed", type=_int_at_least(0), help="root seed (default: the file's)")
    run.add_argument("--out", help="output folder, new or empty (default runs/NAME-seedN)")
    run.set_defaults(run=_sim_run)

    sweep = sim_commands.add_parser("sweep", help="run a grid of scenario changes x seeds")
    sweep.add_argument("file", help="scenario file (TOML)")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a dotted scenario key and its values (repeat for a product grid)",
    )
    sweep.add_argument("--seeds", type=_int_at_least(1), default=4, help="replicates per point")
    sweep.add_argument("--seed", type=_int_at_least(0), help="root seed (default: the file's)")
    sweep.add_argument(
        "--backend", choices=["serial", "process", "dask"], default="process", help="where"
    )
    sweep.add_argument("--workers", type=_int_at_least(1), default=2, help="worker processes")
    sweep.add_argument("--scheduler", help="a Dask scheduler's address (with --backend dask)")
    sweep.add_argument("--resume", action="store_true", help="skip the finished runs in --out")
    sweep.add_argument("--out", help="output folder (default sweeps/NAME)")
    sweep.set_defaults(run=_sim_sweep)

    plot = sim_commands.add_parser("plot", help="plot a sweep folder (PNG and SVG)")
    plot.add_argument("dir", help="a folder written by sim sweep")
    plot.set_defaults(run=_sim_plot)

    demo = commands.add_parser(
        "demo", help="an operator delaying cancels: its gain with and without defences"
    )
    demo.set_defaults(run=_demo)
    _add_operator_commands(commands)
    from .client.cli import add_client_commands  # argparse only; handlers import lazily

    add_client_commands(commands, add_key_file_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
