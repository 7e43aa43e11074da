"""The ``cancelnote`` command. Each sub-command imports what it needs only when run.

Every error a user can act on ends in :func:`main`, which prints it as one line on stderr
(``cancelnote COMMAND: what is wrong``; the traceback too with ``--debug``) and exits with
the code of :mod:`cancelnote.exits`; Ctrl-C exits 130 with one line. Only a bug prints a
traceback on its own.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .cliargs import add_profile_flag, env_help, fill_defaults, need, need_address
from .dispute.cli import add_chain_commands, add_court_commands
from .exits import INTERRUPTED, USAGE, CommandError, exit_code, leaf

#: Set (to anything) to print tracebacks, as ``--debug`` does.
DEBUG_ENV = "CANCELNOTE_DEBUG"


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


def _int_list(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 50,100, got {text!r}") from None
    if any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"each must be positive, got {text!r}")
    return values


def _sim_validate(args: argparse.Namespace) -> int:
    from .sim.validate import format_table, run_validation
    from .sim.validate_world import run_world_checks

    checks = run_validation(args.seed, args.paths)
    print(format_table(checks), end="")
    world = run_world_checks(args.seed)
    print(format_table(world), end="")
    return 0 if all(check.passed for check in [*checks, *world]) else 1


def _key_values(specs: list[str], option: str) -> dict[str, object]:
    """``table.key=value`` specs (values read as TOML) as scenario overrides."""
    from .sim.config import ScenarioError
    from .sim.scenario import parse_value

    overrides: dict[str, object] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or "." not in key:
            raise ScenarioError(f"{option} {spec!r}: expected table.key=value")
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """``--seed`` and every ``--set key=value`` as scenario overrides."""
    overrides = _key_values(args.set, "--set")
    if args.seed is not None:
        overrides["run.seed"] = args.seed
    return overrides


def _sim_run(args: argparse.Namespace) -> int:

    from .sim.config import ScenarioError
    from .sim.output import run_scenario
    from .sim.progress import ProgressBar
    from .sim.scenario import load_scenario

    try:
        overrides = _overrides(args)
        scenario = load_scenario(args.file, overrides)
        out = Path(args.out or f"runs/{Path(args.file).stem}-seed{scenario.run.seed}")
        bar = ProgressBar(f"sim run {Path(args.file).name}", seconds_per_unit=1e-9)
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


def _load_document(args: argparse.Namespace) -> tuple[Path, dict[str, object]]:
    """The scenario file's document with ``--seed``/``--set`` applied, and its path."""
    import tomllib

    from .sim.config import ScenarioError
    from .sim.scenario import apply_overrides

    path = Path(args.file)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    return path, apply_overrides(document, _overrides(args))


def _sim_sweep(args: argparse.Namespace) -> int:

    from .sim.config import ScenarioError
    from .sim.progress import ProgressBar
    from .sim.scenario import parse_scenario
    from .sim.sweep import parse_grid, parse_target, parse_zip, run_sweep

    try:
        path, document = _load_document(args)
        horizon = parse_scenario(document, path.parent).run.horizon_s
        out = Path(args.out or f"sweeps/{path.stem}")
        bar = ProgressBar(f"sim sweep {path.name}", seconds_per_unit=horizon)
        target = None if args.target_ci is None else parse_target(args.target_ci, args.max_seeds)
        rows = run_sweep(
            document,
            path.parent,
            parse_grid(args.grid),
            args.seeds,
            out,
            zipped=parse_zip(args.zip),
            backend=args.backend,
            workers=args.workers,
            scheduler=args.scheduler,
            resume=args.resume,
            series=args.series,
            target=target,
            reference=args.reference,
            source=str(path),
            progress=bar,
        )
        bar.close()
    except (ScenarioError, OSError) as exc:
        print(f"cancelnote sim sweep: {exc}", file=sys.stderr)
        return 2
    print(f"{len(rows)} runs; output: {out}")
    return 0


def _sim_attack(args: argparse.Namespace) -> int:

    from .sim.attack import (
        DEFAULT_POLICIES,
        attack_json,
        format_attack,
        format_heads,
        heads_json,
        run_heads_comparison,
    )
    from .sim.config import ScenarioError
    from .sim.output import manifest, write_json
    from .sim.scenario import apply_overrides, parse_scenario

    try:
        path, document = _load_document(args)
        defence = _key_values(args.defence, "--defence")
        out = Path(args.out or f"attacks/{path.stem}")
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not empty: choose another --out")
        comparison = run_heads_comparison(
            document,
            path.parent,
            defence,
            args.heads_ms,
            args.policy or DEFAULT_POLICIES,
            seeds=args.seeds,
            confirm=args.confirm,
            rounds=args.rounds,
            objective=args.objective,
            backend=args.backend,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=lambda policy: print(f"searching {policy} ...", file=sys.stderr),
        )
        result = comparison.baseline
        out.mkdir(parents=True, exist_ok=True)
        written = attack_json(result, document, defence)
        if args.heads_ms:
            written["heads"] = heads_json(comparison)
        write_json(out / "attack.json", written)
        defended = parse_scenario(apply_overrides(document, defence), path.parent)
        write_json(out / "manifest.json", manifest(defended, str(path), defence))
    except (ScenarioError, OSError) as exc:
        print(f"cancelnote sim attack: {exc}", file=sys.stderr)
        return 2
    print(format_attack(result), end="")
    if args.heads_ms:
        print(format_heads(comparison), end="")
    print(f"output: {out}")
    return 0


def _sim_report(args: argparse.Namespace) -> int:

    from .sim.report import write_report

    try:
        path = write_report(Path(args.dir), None if args.attack is None else Path(args.attack))
    except OSError as exc:
        print(f"cancelnote sim report: {exc}", file=sys.stderr)
        return 2
    print(path)
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


def _sim_scenarios(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .sim.bundled import copy_to, listing

    if args.copy is None:
        for name, summary in listing():
            print(f"{name:<20} {summary}")
        return 0
    try:
        written = copy_to(Path(args.copy))
    except OSError as exc:
        print(f"cancelnote sim scenarios: {exc}", file=sys.stderr)
        return 2
    print(f"{len(written)} files written to {args.copy}")
    return 0


def _sim_plot(args: argparse.Namespace) -> int:

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
    import logging

    from . import keystore
    from .operator import service
    from .operator.limits import SERVER_FLAGS, ServerConfig

    rpc = None if args.chain else need(args, "rpc", ", or --chain in-process")
    court = None if args.chain else need_address(args, "court")
    try:
        policy = service.parse_policy(args.policy, args.policy_seed)
    except ValueError as exc:
        raise CommandError(USAGE, f"--policy: {exc}") from None
    check_port_free(args.host, args.port)
    service.configure_logging(getattr(logging, args.log_level.upper()))
    if args.metrics_port is not None:
        check_port_free(args.metrics_host, args.metrics_port, "--metrics-port")
    signer = keystore.load(args.key, keystore.read_password(args.password_file))
    config = service.OperatorConfig(
        db=args.db,
        signer=signer,
        rpc=rpc,
        court=court,
        host=args.host,
        port=args.port,
        products=frozenset(int(p) for p in args.products.split(",")),
        settlement_delay_ms=args.settlement_delay_ms,
        max_order_lifetime_s=args.max_order_lifetime_s,
        policy=policy,
        post_bond_wei=args.post_bond,
        durability=args.durability.upper(),
        watch=not args.no_watch,
        poll_s=args.poll_s,
        max_open_orders=args.max_open_orders,
        max_open_orders_per_product=args.max_open_orders_per_product,
        server=ServerConfig(**{field: getattr(args, field) for _, field, _, _ in SERVER_FLAGS}),
        heads_ms=args.heads_ms,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    return service.run(config)


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """Refuse a port another process listens on, in one line, before anything starts.

    The server binds it again (with the same ``SO_REUSEADDR``) a moment later; a port
    taken in between still fails there, logged.

    Raises:
        CommandError: the address cannot be bound (a usage error).
    """
    import socket

    if port == 0:
        return
    try:
        with socket.create_server((host, port), reuse_port=False) as probe:
            probe.close()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CommandError(
            USAGE, f"cannot listen on {host}:{port}: {reason} (choose another {flag})"
        ) from None


def _journal_verify(args: argparse.Namespace) -> int:
    """Verify a journal's chain, meta and seal (and parse every row)."""
    from .operator.journal import Journal

    journal = Journal.open_readonly(args.db)
    try:
        count = sum(1 for _ in journal.entries())
    finally:
        journal.close()
    print(f"ok: {count} entries, last seq {journal.last_seq()}, head 0x{journal.head.hex()}")
    return 0


def _journal_export(args: argparse.Namespace) -> int:
    """Every row as a JSON line (seq, kind, body, chain), verified as it streams."""
    import json

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
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _keys_create(args: argparse.Namespace) -> int:

    from . import keystore

    password = keystore.read_password(args.password_file, confirm=True)
    if args.private_key_file is None:
        signer = keystore.create(args.out, password)
    else:
        text = Path(args.private_key_file).read_text(encoding="utf-8").strip()
        try:
            key = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            raise CommandError(USAGE, f"{args.private_key_file} does not hold a hex key") from None
        signer = keystore.import_key(args.out, key, password)
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
    chain = run.add_mutually_exclusive_group()
    chain.add_argument("--rpc", help=env_help("rpc", "JSON-RPC URL of the court's chain"))
    chain.add_argument(
        "--chain",
        choices=["in-process"],
        help="run a private py-evm chain and deploy a court on it (tests, demos)",
    )
    run.add_argument("--court", help=env_help("court", "the court's address (with --rpc)"))
    add_profile_flag(run)
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
    run.add_argument(
        "--metrics-port",
        type=_int_at_least(0),
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: no metrics)",
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics endpoint binds (default %(default)s)",
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error", "critical"],
        default="info",
        help="least severe log lines written (default %(default)s)",
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


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any scenario key (dotted, value read as TOML; repeat)",
    )


def _add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=["serial", "process", "dask"], default="process", help="where"
    )
    parser.add_argument("--workers", type=_int_at_least(1), default=2, help="worker processes")
    parser.add_argument("--scheduler", help="a Dask scheduler's address (with --backend dask)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cancelnote",
        description="Accountable order cancellation: operator, client, court and lab.",
        epilog="exit codes: 0 done, 1 refused, 2 usage or configuration, 3 needs a dispute,"
        " 4 unreachable, 130 interrupted (the README's table)",
    )
    parser.add_argument("--version", action="version", version=f"cancelnote {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help=f"print tracebacks of errors (also ${DEBUG_ENV})"
    )
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
    run.add_argument("file", help="scenario file (TOML; see sim scenarios)")
    run.add_argument("--seed", type=_int_at_least(0), help="root seed (default: the file's)")
    _add_set(run)
    run.add_argument("--out", help="output folder, new or empty (default runs/NAME-seedN)")
    run.set_defaults(run=_sim_run)

    sweep = sim_commands.add_parser("sweep", help="run a grid of scenario changes x seeds")
    sweep.add_argument("file", help="scenario file (TOML)")
    for option, meaning in (
        ("--grid", "a dotted scenario key and its values (repeat for a product grid)"),
        ("--zip", "keys whose values change together, one axis (as many values each)"),
    ):
        sweep.add_argument(option, action="append", default=[], metavar="KEY=V1,V2", help=meaning)
    sweep.add_argument("--seeds", type=_int_at_least(1), default=4, help="replicates per point")
    sweep.add_argument("--seed", type=_int_at_least(0), help="root seed (default: the file's)")
    _add_set(sweep)
    _add_backend(sweep)
    sweep.add_argument("--resume", action="store_true", help="skip the finished runs in --out")
    sweep.add_argument(
        "--series", action="store_true", help="keep every run's time series (series/)"
    )
    sweep.add_argument(
        "--target-ci",
        metavar="METRIC=HALF_WIDTH",
        help="add --seeds replicates at a time until METRIC's 95%% CI half-width is at most"
        " HALF_WIDTH at every point",
    )
    sweep.add_argument(
        "--max-seeds", type=_int_at_least(2), default=64, help="stop --target-ci here"
    )
    sweep.add_argument(
        "--reference",
        type=_int_at_least(0),
        default=0,
        help="the point differences.csv compares every other point with (default 0)",
    )
    sweep.add_argument("--out", help="output folder (default sweeps/NAME)")
    sweep.set_defaults(run=_sim_sweep)

    attack = sim_commands.add_parser(
        "attack", help="search the operator's best response against a defence"
    )
    attack.add_argument("file", help="scenario file (TOML)")
    attack.add_argument(
        "--defence",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a scenario change describing the defence (repeat)",
    )
    attack.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help="a strategy to search (repeat; default: honest and every built-in strategy;"
        " module:Class for a plug-in)",
    )
    attack.add_argument("--seeds", type=_int_at_least(2), default=4, help="replicates per point")
    attack.add_argument(
        "--confirm", type=_int_at_least(2), help="fresh replicates for each best point"
    )
    attack.add_argument(
        "--rounds", type=_int_at_least(0), default=2, help="refinements after the grid"
    )
    attack.add_argument("--objective", default="operator_gain_net", help="the metric to maximise")
    attack.add_argument(
        "--heads-ms",
        type=_int_list,
        default=[],
        metavar="H1,H2",
        help="also search with journal heads every H ms (each H), beside none",
    )
    attack.add_argument("--seed", type=_int_at_least(0), help="root seed (default: the file's)")
    _add_set(attack)
    _add_backend(attack)
    attack.add_argument("--out", help="output folder, new or empty (default attacks/NAME)")
    attack.set_defaults(run=_sim_attack)

    scenarios = sim_commands.add_parser(
        "scenarios", help="list the example scenarios shipped in the package"
    )
    scenarios.add_argument(
        "--copy", metavar="DIR", help="write them (and their plug-in module) into DIR"
    )
    scenarios.set_defaults(run=_sim_scenarios)

    plot = sim_commands.add_parser("plot", help="plot a sweep folder (PNG and SVG)")
    plot.add_argument("dir", help="a folder written by sim sweep")
    plot.set_defaults(run=_sim_plot)

    report = sim_commands.add_parser(
        "report", help="one self-contained HTML page of a sweep or attack folder"
    )
    report.add_argument("dir", help="a folder written by sim sweep or sim attack")
    report.add_argument("--attack", help="an attack folder to include (default: DIR's own)")
    report.set_defaults(run=_sim_report)

    demo = commands.add_parser(
        "demo", help="an operator delaying cancels: its gain with and without defences"
    )
    demo.set_defaults(run=_demo)
    _add_operator_commands(commands)
    from .client.cli import add_client_commands  # argparse only; handlers import lazily

    add_client_commands(commands, add_key_file_commands)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """``cancelnote client place``: the command and sub-commands ``args`` ran."""
    words, name = ["cancelnote"], args.command
    while name:
        words.append(name)
        name = getattr(args, f"{name}_command", None)
    return " ".join(words)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error is one line on stderr and an exit code (module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        fill_defaults(args)
        return args.run(args)
    except BaseException as exc:  # every error ends here, as one line or as a bug
        cause = leaf(exc)
        code = exit_code(cause)
        if code is None:
            raise  # a bug (or SystemExit): Python prints it
        if args.debug or os.environ.get(DEBUG_ENV):
            traceback.print_exception(exc)
        message = "interrupted" if code == INTERRUPTED else str(cause) or type(cause).__name__
        print(f"{command_name(args)}: {' '.join(message.split())}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
