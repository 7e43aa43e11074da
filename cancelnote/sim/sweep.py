"""Sweeps: a grid of scenario changes × replicates, run on any backend, same result.

A sweep is a list of :class:`Task` values, each ``(document, grid point, replicate)``:
a task carries the whole scenario document (so a Dask worker on another machine needs no
file) and :func:`run_task` turns it into one row, a deterministic function of the task
alone. Hence the rules:

* **Backend- and worker-independent.** Seeds come from the scenario's root seed and the
  task's replicate index (``Seeds(root, replicate)``), never from the worker; rows are
  sorted by (point, replicate) before they are written, so ``summary.csv`` is the same
  byte for byte on ``serial``, on ``process`` with any number of workers, and on
  ``dask``.
* **Resumable.** Each finished task is written at once to
  ``results/p<point>-r<replicate>.json``; ``--resume`` reads those and runs only the
  rest (the sweep's definition, ``sweep.json``, must be the same).
* **Outputs**: ``summary.csv`` (one row per run: the point's values, the replicate, every
  metric), ``points.csv`` (per point: mean and 95% CI of every metric), with
  ``summary.parquet`` when pyarrow is importable, and plots (:mod:`.plot`) when
  matplotlib is.

Backends: ``serial`` (in this process), ``process`` (``ProcessPoolExecutor`` with the
spawn context; the default) and ``dask`` (``dask.distributed``: a scheduler's address,
or a ``LocalCluster`` of ``workers`` processes).
"""

from __future__ import annotations

import csv
import itertools
import json
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import attrs

from .config import ScenarioError
from .metrics import aggregate
from .output import run_replicate, write_json
from .scenario import apply_overrides, canonical, parse_scenario, parse_value

BACKENDS = ("serial", "process", "dask")
Row = dict[str, Any]


@attrs.frozen
class Task:
    """One run of a sweep: the scenario document, a grid point and a replicate."""

    document: Mapping[str, Any] = attrs.field(eq=False)
    base_dir: str
    point: int
    values: tuple[tuple[str, Any], ...]
    replicate: int

    @property
    def name(self) -> str:
        return result_name(self.point, self.replicate)


def result_name(point: int, replicate: int) -> str:
    """The stem of a finished task's file in ``results/``."""
    return f"p{point:04d}-r{replicate:04d}"


def run_task(task: Task) -> Row:
    """The row of one task: the point's values, the replicate and every metric."""
    document = apply_overrides(task.document, dict(task.values))
    scenario = parse_scenario(document, Path(task.base_dir))
    metrics = run_replicate(scenario, task.replicate)
    return {
        "point": task.point,
        **dict(task.values),
        "replicate": task.replicate,
        "seed": scenario.run.seed,
        **metrics,
    }


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["operator.delay_ms=0,250,500", ...]`` as ``{key: [values]}``, in order.

    Raises:
        ScenarioError: a spec is not ``table.key=v1,v2,...``.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or "." not in key or not values:
            raise ScenarioError(f"--grid {spec!r}: expected table.key=v1,v2,...")
        grid[key.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    return grid


def make_tasks(
    document: Mapping[str, Any], base_dir: Path, grid: Mapping[str, Sequence[Any]], seeds: int
) -> list[Task]:
    """The Cartesian product of the grid, each point with replicates ``0 .. seeds-1``.

    Every point is parsed once here, so a bad value fails before anything runs.
    """
    keys = list(grid)
    tasks = []
    for index, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        values = tuple(zip(keys, combo, strict=True))
        parse_scenario(apply_overrides(document, dict(values)), base_dir)
        tasks += [Task(document, str(base_dir), index, values, r) for r in range(seeds)]
    return tasks


def _serial(tasks: Sequence[Task], workers: int, scheduler: str | None) -> Iterator[Row]:
    for task in tasks:
        yield run_task(task)


def _process(tasks: Sequence[Task], workers: int, scheduler: str | None) -> Iterator[Row]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(run_task, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()


def _dask(tasks: Sequence[Task], workers: int, scheduler: str | None) -> Iterator[Row]:
    from dask.distributed import Client, LocalCluster
    from dask.distributed import as_completed as dask_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            host="127.0.0.1",
        )
    client = Client(scheduler if cluster is None else cluster)
    try:
        futures = client.map(run_task, tasks, pure=False)
        for future in dask_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


_BACKENDS: dict[str, Callable[[Sequence[Task], int, str | None], Iterator[Row]]] = {
    "serial": _serial,
    "process": _process,
    "dask": _dask,
}


def definition(
    document: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], seeds: int
) -> dict[str, Any]:
    """What makes two sweeps the same sweep (``sweep.json``; checked on resume)."""
    return {
        "scenario": canonical(document),
        "grid": [[key, list(values)] for key, values in grid.items()],  # a list keeps the order
        "seeds": seeds,
    }


def run_sweep(
    document: Mapping[str, Any],
    base_dir: Path,
    grid: Mapping[str, Sequence[Any]],
    seeds: int,
    out: Path,
    *,
    backend: str = "process",
    workers: int = 2,
    scheduler: str | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Row]:
    """Run every task not already finished in ``out``; write the summaries; return rows.

    Raises:
        FileExistsError: ``out`` holds files and ``resume`` is false.
        ScenarioError: the grid changes the scenario badly, or ``out`` holds another sweep.
    """
    if backend not in _BACKENDS:
        raise ScenarioError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    tasks = make_tasks(document, base_dir, grid, seeds)
    results = out / "results"
    spec = definition(document, grid, seeds)
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise FileExistsError(f"{out} exists and is not empty: use --resume or another --out")
        if json.loads((out / "sweep.json").read_text(encoding="utf-8")) != spec:
            raise ScenarioError(f"{out} holds a different sweep; it cannot be resumed")
    results.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", spec)
    done = {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in results.glob("*.json")}  # fmt: skip
    todo = [task for task in tasks if task.name not in done]
    rows = [done[task.name] for task in tasks if task.name in done]
    finished = len(rows)
    if progress is not None:
        progress(finished, len(tasks))
    for row in _BACKENDS[backend](todo, workers, scheduler):
        # Keys in the row's own order (not sorted): the columns of summary.csv.
        path = results / f"{result_name(row['point'], row['replicate'])}.json"
        path.write_text(json.dumps(row) + "\n", encoding="utf-8")
        rows.append(row)
        finished += 1
        if progress is not None:
            progress(finished, len(tasks))
    rows.sort(key=lambda row: (row["point"], row["replicate"]))
    write_summaries(rows, list(grid), out)
    return rows


def _cell(value: object) -> object:
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value


def _write_csv(path: Path, rows: Iterable[Row]) -> list[str]:
    rows = list(rows)
    columns = list(rows[0]) if rows else []
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(row[c]) for c in columns] for row in rows])
    return columns


def point_rows(rows: Sequence[Row], keys: Sequence[str]) -> list[Row]:
    """One row per grid point: its values, then ``<metric>_mean``, ``_ci95`` and ``_n``."""
    result = []
    for point, group in itertools.groupby(rows, key=lambda row: row["point"]):
        runs = list(group)
        skip = {"point", "replicate", "seed", *keys}
        metrics = [{k: v for k, v in run.items() if k not in skip} for run in runs]
        summary: Row = {"point": point, **{k: runs[0][k] for k in keys}, "runs": len(runs)}
        for name, stats in aggregate(metrics).items():
            summary[f"{name}_mean"] = stats["mean"]
            summary[f"{name}_ci95"] = stats["ci95"]
            summary[f"{name}_n"] = stats["n"]
        result.append(summary)
    return result


def write_summaries(rows: Sequence[Row], keys: Sequence[str], out: Path) -> None:
    """``summary.csv`` (+ ``.parquet``), ``points.csv`` and, with matplotlib, the plots."""
    _write_csv(out / "summary.csv", rows)
    _write_csv(out / "points.csv", point_rows(rows, keys))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pass  # the parquet extra is optional; the CSV has everything
    else:
        columns = list(rows[0]) if rows else []
        table = pa.table({c: [row[c] for row in rows] for c in columns})
        pq.write_table(table, out / "summary.parquet")
    try:
        from .plot import plot_sweep
    except ImportError:
        return  # the plot extra is optional
    plot_sweep(out)
