"""Running replicates and writing what they leave: the files of a run folder.

A run folder (``cancelnote sim run``)::

    manifest.json          seed, replicates, scenario hash and document, versions
    metrics.json           every §7 metric: mean, 95% CI, n over replicates; per replicate
    replicate-0000/        one per replicate:
        events.csv         the kernel's event log (byte-identical for the same seed)
        cancels.csv        one row per (cancel request, order): its story and its loss
        disputes.csv       one row per court case
        market.csv         the time series: mid, best bid and ask, depth (and .parquet)
        agents.csv         every agent's inventory, cash and PnL over time (and .parquet)
        metrics.json       the replicate's metrics and its performance

Every file is written as the run goes (the cancels once their story is over), so memory
does not grow with the horizon.

Everything but ``manifest.json``'s ``created_utc`` and the ``performance`` entries is a
deterministic function of the scenario and the seed.
"""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import json
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .eventlog import EventLog
from .metrics import Metrics, aggregate, run_metrics
from .records import INTENTS, NEVER
from .scenario import Scenario
from .series import SeriesWriter, to_parquet
from .world import World

#: Distributions whose versions a manifest records.
DEPENDENCIES = (
    "numpy",
    "py-evm",
    "pyrevm",
    "coincurve",
    "attrs",
    "eth-abi",
    "matplotlib",
    "pyarrow",
    "dask",
    "distributed",
)

CANCEL_COLUMNS = (
    "client", "digest", "side", "quantity", "price", "t_send_ns", "t_recv_ns", "intent",
    "misbehaved", "t_note_ns", "note_on_chain", "t_note_seen_ns", "t_eff_ns", "forced",
    "stale_fills", "loss", "operator_take",
)  # fmt: skip
DISPUTE_COLUMNS = (
    "client", "digest", "kind", "t_filed_ns", "block_filed", "t_resolved_ns",
    "block_resolved", "outcome", "gas", "paid_wei", "bond_wei",
)  # fmt: skip


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def manifest(scenario: Scenario, source: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """What a reader needs to reproduce the run: the scenario, its hash, the versions."""
    return {
        "scenario": source,
        "scenario_sha256": scenario.sha256(),
        "seed": scenario.run.seed,
        "replicates": scenario.run.replicates,
        "overrides": dict(overrides),
        "document": json.loads(json.dumps(scenario.document, default=str)),
        "cancelnote": _version("cancelnote"),
        "python": platform.python_version(),
        "dependencies": {name: _version(name) for name in DEPENDENCIES},
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_json(path: Path, obj: Any) -> None:
    """Pretty, sorted, ``\\n``-terminated JSON (stable bytes for stable content)."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _cell(value: object) -> object:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value


def _write_csv(path: Path, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(tuple(_cell(v) for v in row) for row in rows)


def _cancel_rows(world: World) -> Iterator[tuple[Any, ...]]:
    """``cancels.csv`` rows from the spooled records, a chunk at a time."""
    clients = world.recorder.clients
    for chunk in world.recorder.chunks():
        for r in chunk.tolist():
            (client, digest, side, quantity, price, t_send, t_recv, intent, misbehaved,
             t_note, on_chain, t_seen, t_eff, forced, stale, loss, taken, _) = r  # fmt: skip
            yield (
                clients[client], bytes(digest), side, quantity, price, t_send, _t(t_recv),
                INTENTS[intent], misbehaved, _t(t_note), on_chain, _t(t_seen), _t(t_eff),
                forced, stale, loss, taken,
            )  # fmt: skip


def _t(value: int) -> int | None:
    return None if value == NEVER else value


def write_records(world: World, folder: Path) -> None:
    """``cancels.csv`` and ``disputes.csv`` of a finished world."""
    _write_csv(folder / "cancels.csv", CANCEL_COLUMNS, _cancel_rows(world))
    cases = [
        (
            d.client, d.digest, d.kind, d.t_filed, d.block_filed, d.t_resolved,
            d.block_resolved, d.outcome, d.gas, d.paid_wei, d.bond_wei,
        )
        for d in world.disputes
    ]  # fmt: skip
    _write_csv(folder / "disputes.csv", DISPUTE_COLUMNS, cases)


def run_replicate(
    scenario: Scenario,
    replicate: int,
    folder: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    series: Path | None = None,
) -> Metrics:
    """Play one replicate; with ``folder``, write its files there (the time series too,
    or into ``series`` when given without a folder).

    Returns the replicate's metrics (performance not included: it is not deterministic).
    """
    stream = None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        stream = open(folder / "events.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
        series = folder if series is None else series
    writer = None if series is None else SeriesWriter(series)
    try:
        log = None if stream is None else EventLog.start(stream)
        world = World.build(scenario, replicate, log, writer)
        started = time.perf_counter()
        events = world.run(progress)
        wall = time.perf_counter() - started
    finally:
        if stream is not None:
            stream.close()
    try:
        metrics = run_metrics(world)
        if folder is not None:
            write_records(world, folder)
            performance = {"events": events, "wall_s": wall, "events_per_s": events / wall}
            write_json(folder / "metrics.json", {"metrics": metrics, "performance": performance})
    finally:
        world.recorder.discard()
    if series is not None and folder is not None:
        to_parquet(series)
    return metrics


def run_scenario(
    scenario: Scenario,
    out: Path,
    source: str,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Every replicate of ``scenario`` into the run folder ``out`` (which must not exist
    or be empty); returns the aggregate written to ``metrics.json``."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "manifest.json", manifest(scenario, source, overrides or {}))
    replicates = scenario.run.replicates
    runs = []
    for r in range(replicates):

        def report(done: int, total: int, r: int = r) -> None:
            if progress is not None:
                progress(r * total + done, replicates * total)

        runs.append(run_replicate(scenario, r, out / f"replicate-{r:04d}", report))
    summary = {"aggregate": aggregate(runs), "replicates": runs}
    write_json(out / "metrics.json", summary)
    return summary
