"""The operator process: journal + engine + server + chain watcher + clock, wired together.

:func:`run_operator` is what ``cancelnote operator run`` runs. Start-up order matters:

1. open the journal (it refuses a file of another operator key or court) and replay it
   into a fresh engine, checking every leaf of its log (journal heads) against its row,
   and index its published fills and notes for subscriptions;
2. connect to the chain and the court, check that the court names this operator and
   that its exit delay exceeds the maximum order lifetime plus the answer window (§13),
   and stop new orders at once (a journaled entry) if the court is halted or the exit
   announced, before anyone can place one (the watcher keeps checking while it runs);
3. post the bond if asked, start the watcher, then listen;
4. on SIGINT or SIGTERM: stop the watcher, then shut the server down (answer what was
   read, commit, flush, close), then close the journal.

With ``--chain in-process`` the process runs its own py-evm chain and deploys a court on
it (at the same address every time: the deployer is dev account 0 and its first
transaction), so a restarted operator finds the same domain and its journal opens. That
chain lives and dies with the process: it is for tests and demos, not for clients who
need to reach the court.
"""

from __future__ import annotations

import json
import logging
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from cancelnote.crypto import Signer, to_checksum
from cancelnote.dispute.chain import Chain
from cancelnote.dispute.court import DEV_PARAMETERS, Court
from cancelnote.dispute.inprocess import InProcessChain
from cancelnote.errors import Fault

from .clock import Clock
from .engine import MAX_ORDER_LIFETIME_S, Engine, split_outputs
from .heads import HEADS_MS, HeadLog
from .journal import Journal, JournalEntry, Synchronous
from .limits import MAX_OPEN_ORDERS, MAX_OPEN_ORDERS_PER_PRODUCT, ServerConfig
from .policies import Honest, Policy, build_policy
from .server import OperatorServer, publication, root_cause
from .watcher import ChainWatcher, CursorStore, court_stop_reason

LOGGER = logging.getLogger("cancelnote.operator")

#: The chain id of ``--chain in-process`` (the dev chains' usual one).
IN_PROCESS_CHAIN_ID = 1337
#: What an in-process chain's dev account gives the operator key, to pay gas and bond.
IN_PROCESS_FUNDING_WEI = 1_000 * 10**18
#: File descriptors the process needs beside one per connection (journal, chain, logs).
SPARE_DESCRIPTORS = 64


class ServiceError(Fault):
    """Raised when the operator cannot start: wrong court, bad option, unreachable chain."""

    code = "SERVICE"


@attrs.frozen
class OperatorConfig:
    """Everything ``cancelnote operator run`` takes (see its ``--help``)."""

    db: Path
    signer: Signer
    rpc: str | None = None  # None: an in-process chain
    court: bytes | None = None  # required with rpc; checked if given in-process
    host: str = "127.0.0.1"
    port: int = 8765
    products: frozenset[int] = frozenset({1, 2})
    settlement_delay_ms: int = 0
    max_order_lifetime_s: int = MAX_ORDER_LIFETIME_S
    policy: Policy = attrs.Factory(Honest)
    post_bond_wei: int = 0
    durability: Synchronous = "FULL"
    watch: bool = True
    poll_s: float = 1.0
    max_open_orders: int = MAX_OPEN_ORDERS
    max_open_orders_per_product: int = MAX_OPEN_ORDERS_PER_PRODUCT
    server: ServerConfig = attrs.Factory(ServerConfig)
    #: ``H``: a journal head every this many ms (0: no heads, nor proofs).
    heads_ms: int = HEADS_MS
    #: The clock's sources (tests inject them; see :class:`~.clock.Clock`).
    wall_ns: Callable[[], int] = time.time_ns
    monotonic_ns: Callable[[], int] = time.monotonic_ns


#: The argument of each ``--policy NAME:ARG`` that takes one.
_POLICY_ARGUMENTS = {
    "delay": "delay_ms",
    "conditional_delay": "delay_ms",
    "backdate": "backdate_ms",
    "ignore": "ignore_p",
}


def parse_policy(text: str, seed: int = 0) -> Policy:
    """``honest``, ``delay:MS``, ``conditional-delay:MS``, ``ignore:P``, ``fill-after-note``,
    ``backdate:MS``, ``equivocate`` or ``withhold-notes`` (adversarial ones: tests and labs).

    Raises:
        ValueError: an unknown name or a bad argument.
    """
    name, _, arg = text.partition(":")
    name = name.replace("-", "_")
    keyword = _POLICY_ARGUMENTS.get(name)
    if (keyword is None) != (arg == ""):
        raise ValueError(f"unknown policy {text!r}")
    arguments: dict[str, float] = {}
    if keyword is not None:
        try:
            arguments[keyword] = float(arg) if keyword == "ignore_p" else int(arg)
        except ValueError:
            raise ValueError(f"unknown policy {text!r}") from None
    return build_policy(name, seed=seed, **arguments)  # type: ignore[arg-type]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: int = logging.INFO, stream: TextIO = sys.stderr) -> None:
    """Structured logs of the ``cancelnote`` loggers on ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("cancelnote")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def connect_court(config: OperatorConfig) -> Court:
    """The court of ``config`` (deployed on a fresh in-process chain if there is no rpc).

    Raises:
        ServiceError: no ``--court`` with ``--rpc``, the court is not this operator's, or
            its exit delay is too short for the maximum order lifetime.
    """
    chain: Chain
    if config.rpc is None:
        chain = InProcessChain(chain_id=IN_PROCESS_CHAIN_ID, accounts=1)
        deployer = chain.dev_accounts[0]
        court = Court.deploy(chain, deployer, operator=config.signer.address, **DEV_PARAMETERS)
        chain.transact(deployer, config.signer.address, b"", value=IN_PROCESS_FUNDING_WEI)
    else:
        from cancelnote.dispute.jsonrpc import JsonRpcChain

        if config.court is None:
            raise ServiceError("--court ADDRESS is required with --rpc")
        chain = JsonRpcChain(config.rpc)
        court = Court.at(chain, config.court)
    if config.court is not None and court.address != config.court:
        raise ServiceError(
            f"the in-process court is at {to_checksum(court.address)}, not"
            f" {to_checksum(config.court)}"
        )
    operator = court.operator()
    if operator != config.signer.address:
        raise ServiceError(
            f"court {to_checksum(court.address)} belongs to operator {to_checksum(operator)},"
            f" this key is {config.signer.checksum_address}"
        )
    check_lifetime(config.max_order_lifetime_s, court.exit_delay(), court.answer_window())
    return court


def check_lifetime(max_order_lifetime_s: int, exit_delay_s: int, answer_window_s: int) -> None:
    """The bond must outlive every order plus its forced cancel (protocol §13).

    Raises:
        ServiceError: ``max_order_lifetime_s >= exit_delay_s - answer_window_s``.
    """
    if max_order_lifetime_s >= exit_delay_s - answer_window_s:
        raise ServiceError(
            f"the court's exit delay ({exit_delay_s} s) minus its answer window"
            f" ({answer_window_s} s) must exceed the maximum order lifetime"
            f" ({max_order_lifetime_s} s): lower --max-order-lifetime-s"
        )


@attrs.frozen
class Prepared:
    """An operator ready to serve: its court, and its journal replayed into a server."""

    court: Court
    journal: Journal
    server: OperatorServer

    def close(self) -> None:
        if self.server.heads is not None:
            self.server.heads.close()
        self.journal.close()


def prepare(config: OperatorConfig) -> Prepared:
    """Connect to the court, open the journal and replay it (blocking; before serving).

    The journal is verified as it streams into the engine (hash chain, meta, seal); the
    clock starts no earlier than its last entry.

    Raises:
        ServiceError, ChainError: the court is unreachable or not this operator's, or the
            process may not open enough files for ``max_connections``.
        JournalMismatch, JournalCorrupt: the journal is another operator's, or damaged.
    """
    ensure_descriptors(config.server.max_connections + SPARE_DESCRIPTORS)
    court = connect_court(config)
    domain = court.domain
    journal = Journal.open(config.db, domain, config.signer.address, config.durability)
    heads: HeadLog | None = None
    try:
        try:
            engine = Engine(
                config.signer,
                domain,
                config.products,
                settlement_delay_ms=config.settlement_delay_ms,
                policy=config.policy,
                max_order_lifetime_s=config.max_order_lifetime_s,
                max_pending_ms=court.max_pending_ms(),
                max_open_orders=config.max_open_orders,
                max_open_orders_per_product=config.max_open_orders_per_product,
            )
        except ValueError as exc:  # a settlement delay the court's pending bound cannot hold
            raise ServiceError(f"{exc}: lower --settlement-delay-ms") from None
        published: list[JournalEntry] = []  # for the streams
        last_at_ms = count = 0
        if config.heads_ms:
            heads = HeadLog.open(journal, config.signer, domain, config.heads_ms)

        def verified() -> Iterator[JournalEntry]:
            nonlocal last_at_ms, count
            for entry in journal.entries():
                last_at_ms, count = entry.at_ms, count + 1
                if heads is not None:
                    heads.check(entry)
                if publication(entry) is not None:
                    published.append(entry)
                yield entry

        engine.restore(verified())
        if heads is not None:
            heads.finish()
            last_at_ms = max(last_at_ms, heads.floor_ms)  # no leaf before a head's time
        clock = Clock(wall_ns=config.wall_ns, monotonic_ns=config.monotonic_ns, floor_ms=last_at_ms)
        reason = court_stop_reason(court) if engine.accepting_orders else None
        if reason is not None:
            made, _ = split_outputs(engine.stop_accepting_orders(reason, clock.now_ms()))
            if heads is None:
                journal.append_many(made)
            else:
                heads.commit(made)
            count += len(made)
            LOGGER.warning("orders_stopped", extra={"fields": {"reason": reason}})
    except BaseException:
        if heads is not None:
            heads.close()
        journal.close()
        raise
    server = OperatorServer(engine, journal, clock=clock, config=config.server, heads=heads)
    server.restore_streams(published)
    LOGGER.info(
        "journal_replayed",
        extra={
            "fields": {
                "entries": count,
                "last_seq": engine.last_seq,
                "head": "0x" + journal.head.hex(),
            }
        },
    )
    return Prepared(court, journal, server)


def ensure_descriptors(needed: int) -> None:
    """Raise the soft limit of open files to ``needed`` if it is lower (up to the hard one).

    Raises:
        ServiceError: the hard limit is lower: every connection past it would fail at
            accept, locking honest clients out (lower ``--max-connections``).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ServiceError(
                f"the process may open {hard} files, but --max-connections needs {needed}:"
                f" lower --max-connections below {hard - SPARE_DESCRIPTORS} or raise ulimit -n"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def run_operator(
    config: OperatorConfig,
    prepared: Prepared | None = None,
    *,
    task_status: trio.TaskStatus[OperatorServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the operator until SIGINT/SIGTERM (or cancellation), then shut down cleanly."""
    if prepared is None:
        prepared = await trio.to_thread.run_sync(prepare, config)
    try:
        await _serve(config, prepared.court, prepared.server, task_status)
    finally:
        prepared.close()


async def _serve(
    config: OperatorConfig,
    court: Court,
    server: OperatorServer,
    task_status: trio.TaskStatus[OperatorServer],
) -> None:
    cursor = CursorStore(config.db, court.address)
    try:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await nursery.start(server.serve, config.host, config.port)
                watcher = ChainWatcher(
                    court,
                    config.signer,
                    server.inbox,
                    cursor,
                    poll_s=config.poll_s,
                )
                if config.post_bond_wei:
                    await watcher.post_bond(config.post_bond_wei)
                watching = trio.CancelScope()
                if config.watch:
                    nursery.start_soon(_in_scope, watching, watcher.run)
                LOGGER.info(
                    "operator_ready",
                    extra={
                        "fields": {
                            "url": f"ws://{config.host}:{server.port}",
                            "chain_id": court.chain.chain_id,
                            "court": to_checksum(court.address),
                            "operator": config.signer.checksum_address,
                            "durability": config.durability,
                            "policy": type(config.policy).__name__,
                            "heads_ms": config.heads_ms,
                        }
                    },
                )
                task_status.started(server)
                async for signum in signals:
                    LOGGER.info("signal", extra={"fields": {"signal": signal.Signals(signum).name}})
                    break
                started = time.monotonic()
                watching.cancel()
                await server.shutdown()
                LOGGER.info(
                    "stopped", extra={"fields": {"drain_s": round(time.monotonic() - started, 3)}}
                )
    finally:
        cursor.close()


async def _in_scope(scope: trio.CancelScope, run: Callable[[], Awaitable[None]]) -> None:
    """Run ``run`` inside ``scope``, so that the caller can stop just that task."""
    with scope:
        await run()


def run(config: OperatorConfig, out: TextIO = sys.stdout) -> int:
    """Run the operator in this thread; print the listening URL once it is listening.

    Returns the exit status: 0 after a clean shutdown, 1 after a fault (logged).

    Raises:
        CancelnoteError: the operator cannot start (see :func:`prepare`).
    """
    prepared = prepare(config)  # start-up errors are raised to the caller, not logged

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(run_operator, config, prepared)
            court = server.engine.domain
            print(
                f"cancelnote operator listening on ws://{config.host}:{server.port}"
                f" chain_id={court.chain_id} court={to_checksum(court.verifying_contract)}"
                f" operator={config.signer.checksum_address}",
                file=out,
                flush=True,
            )

    try:
        trio.run(main)
    except Exception as exc:  # a fault (journal, engine bug): the journal is the truth on restart
        cause = root_cause(exc)
        LOGGER.critical(
            "fault", exc_info=True, extra={"fields": {"cause": f"{type(cause).__name__}: {cause}"}}
        )
        return 1
    return 0
