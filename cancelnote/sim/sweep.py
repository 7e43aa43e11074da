"""Sweeps: a grid of scenario changes × replicates, run on any backend, same result.

A sweep's points are the Cartesian product of its ``--grid`` axes (one key each) and,
optionally, one *zipped* axis (``--zip`` keys that change together, value by value, as
radCAD zips: a model change can carry its own keys). A sweep is a list of
:class:`Task` values, each ``(document, point, replicate)``:
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
  metric), ``points.csv`` (per point: mean and 95% CI of every metric),
  ``differences.csv`` (per point and metric: the paired difference from the reference
  point over the replicates both share, with its 95% CI: arms share seeds, so this is
  the CI of the effect, much narrower than two independent CIs), with
  ``summary.parquet`` when pyarrow is importable, and plots (:mod:`.plot`) when
  matplotlib is; with ``series``, each run's time series under ``series/``.
* **Sequential replicates** (``target``): after the first ``seeds`` replicates, more are
  added, ``seeds`` at a time, until the 95% CI half-width of the target metric is at
  most the target at every point (or ``max_seeds`` is reached).

Backends: ``serial`` (in this process), ``process`` (``ProcessPoolExecutor`` with the
spawn context; the default) and ``dask`` (``dask.distributed``: a scheduler's address,
or a ``LocalCluster`` of ``workers`` processes).
"""

from __future__ import annotations

import csv
import itertools
import json
import multiprocessing
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import attrs

from .config import ScenarioError
from .metrics import aggregate
from .output import manifest, run_replicate, write_json
from .scenario import apply_overrides, canonical, parse_scenario, parse_value
from .series import FILES as SERIES_FILES
from .series import to_parquet

BACKENDS = ("serial", "process", "dask")
Row = dict[str, Any]
Series = dict[str, str]  # file name -> text of one run's time series


@attrs.frozen
class Task:
    """One run of a sweep: the scenario document, a grid point and a replicate."""

    document: Mapping[str, Any] = attrs.field(eq=False)
    base_dir: str
    point: int
    values: tuple[tuple[str, Any], ...]
    replicate: int
    series: bool = False

    @property
    def name(self) -> str:
        return result_name(self.point, self.replicate)


def result_name(point: int, replicate: int) -> str:
    """The stem of a finished task's file in ``results/``."""
    return f"p{point:04d}-r{replicate:04d}"


def run_task(task: Task) -> tuple[Row, Series]:
    """The row of one task (the point's values, the replicate and every metric) and, if
    the task asks for it, the text of its time series files."""
    document = apply_overrides(task.document, dict(task.values))
    scenario = parse_scenario(document, Path(task.base_dir))
    series: Series = {}
    if task.series:
        with tempfile.TemporaryDirectory(prefix="cancelnote-series-") as scratch:
            metrics = run_replicate(scenario, task.replicate, series=Path(scratch))
            for name in SERIES_FILES:
                series[name] = (Path(scratch) / name).read_text(encoding="utf-8")
    else:
        metrics = run_replicate(scenario, task.replicate)
    row = {
        "point": task.point,
        **dict(task.values),
        "replicate": task.replicate,
        "seed": scenario.run.seed,
        **metrics,
    }
    return row, series


def parse_grid(specs: Sequence[str], option: str = "--grid") -> dict[str, list[Any]]:
    """``["operator.delay_ms=0,250,500", ...]`` as ``{key: [values]}``, in order.

    Raises:
        ScenarioError: a spec is not ``table.key=v1,v2,...``.
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or "." not in key or not values:
            raise ScenarioError(f"{option} {spec!r}: expected table.key=v1,v2,...")
        grid[key.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    return grid


def parse_zip(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``--zip`` specs: keys whose values change together, so all of one length.

    Raises:
        ScenarioError: a malformed spec, or lists of different lengths.
    """
    zipped = parse_grid(specs, "--zip")
    if len({len(values) for values in zipped.values()}) > 1:
        lengths = {key: len(values) for key, values in zipped.items()}
        raise ScenarioError(f"--zip keys need as many values each; got {lengths}")
    return zipped


def points(
    grid: Mapping[str, Sequence[Any]], zipped: Mapping[str, Sequence[Any]] | None = None
) -> list[tuple[tuple[str, Any], ...]]:
    """Every point of the design: the zipped axis (if any) times the grid's product,
    each a tuple of ``(key, value)`` (zipped keys first)."""
    zipped = zipped or {}
    zip_rows = [tuple(zip(zipped, row, strict=True)) for row in zip(*zipped.values(), strict=True)]
    zip_rows = zip_rows or [()]
    keys = list(grid)
    return [
        (*zip_row, *zip(keys, combo, strict=True))
        for zip_row in zip_rows
        for combo in itertools.product(*(grid[k] for k in keys))
    ]


def make_tasks(
    document: Mapping[str, Any],
    base_dir: Path,
    grid: Mapping[str, Sequence[Any]],
    seeds: int,
    zipped: Mapping[str, Sequence[Any]] | None = None,
    *,
    first: int = 0,
    series: bool = False,
) -> list[Task]:
    """Every point of the design, each with replicates ``first .. seeds-1``.

    Every point is parsed once here, so a bad value fails before anything runs.
    """
    tasks = []
    for index, values in enumerate(points(grid, zipped)):
        parse_scenario(apply_overrides(document, dict(values)), base_dir)
        tasks += [
            Task(document, str(base_dir), index, values, r, series) for r in range(first, seeds)
        ]
    return tasks


Result = tuple[Row, Series]


class Runner:
    """Where tasks run: ``serial`` (this process), ``process`` (a spawn-context process
    pool of ``workers``) or ``dask`` (the cluster at ``scheduler``, else a
    ``LocalCluster`` of ``workers`` processes on 127.0.0.1). A context manager: the pool
    or cluster lives until the block ends, so a search's many rounds start it once.
    """

    def __init__(self, backend: str = "process", workers: int = 2, scheduler: str | None = None):
        if backend not in BACKENDS:
            raise ScenarioError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        self.backend, self.workers, self.scheduler = backend, workers, scheduler
        self._pool: ProcessPoolExecutor | None = None
        self._client: Any = None
        self._cluster: Any = None

    def __enter__(self) -> Runner:
        if self.backend == "process":
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        elif self.backend == "dask":
            from dask.distributed import Client, LocalCluster

            if self.scheduler is None:
                self._cluster = LocalCluster(
                    n_workers=self.workers,
                    processes=True,
                    threads_per_worker=1,
                    dashboard_address=None,
                    host="127.0.0.1",
                )
            self._client = Client(self.scheduler if self._cluster is None else self._cluster)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def run(self, tasks: Sequence[Task]) -> Iterator[Result]:
        """Every task's row and series, in the order they finish."""
        if self._pool is not None:
            futures = [self._pool.submit(run_task, task) for task in tasks]
            for future in as_completed(futures):
                yield future.result()
        elif self._client is not None:
            from dask.distributed import as_completed as dask_completed

            for future in dask_completed(self._client.map(run_task, tasks, pure=False)):
                yield future.result()
        else:
            for task in tasks:
                yield run_task(task)


@attrs.frozen
class Target:
    """Sequential replicates: add seeds until ``metric``'s 95% CI half-width is at most
    ``half_width`` at every point, or ``max_seeds`` replicates ran."""

    metric: str
    half_width: float = attrs.field(validator=attrs.validators.gt(0.0))
    max_seeds: int = attrs.field(default=64, validator=attrs.validators.gt(1))


def parse_target(spec: str, max_seeds: int) -> Target:
    """``metric=half_width`` (``--target-ci``)."""
    metric, _, value = spec.partition("=")
    try:
        return Target(metric.strip(), float(value), max_seeds)
    except ValueError:
        raise ScenarioError(f"--target-ci {spec!r}: expected metric=half_width > 0") from None


def definition(
    document: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    seeds: int,
    zipped: Mapping[str, Sequence[Any]] | None = None,
    target: Target | None = None,
) -> dict[str, Any]:
    """What makes two sweeps the same sweep (``sweep.json``; checked on resume)."""
    spec: dict[str, Any] = {
        "scenario": canonical(document),
        "grid": [[key, list(values)] for key, values in grid.items()],  # a list keeps the order
        "seeds": seeds,
    }
    if zipped:
        spec["zip"] = [[key, list(values)] for key, values in zipped.items()]
    if target is not None:
        spec["target"] = attrs.asdict(target)
    return spec


def run_sweep(
    document: Mapping[str, Any],
    base_dir: Path,
    grid: Mapping[str, Sequence[Any]],
    seeds: int,
    out: Path,
    *,
    zipped: Mapping[str, Sequence[Any]] | None = None,
    backend: str = "process",
    workers: int = 2,
    scheduler: str | None = None,
    resume: bool = False,
    series: bool = False,
    target: Target | None = None,
    reference: int = 0,
    source: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> list[Row]:
    """Run every task not already finished in ``out``; write the summaries; return rows.

    Raises:
        FileExistsError: ``out`` holds files and ``resume`` is false.
        ScenarioError: the grid changes the scenario badly, or ``out`` holds another sweep.
    """
    Runner(backend, workers, scheduler)  # a bad backend fails before the folder is made
    results = out / "results"
    spec = definition(document, grid, seeds, zipped, target)
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise FileExistsError(f"{out} exists and is not empty: use --resume or another --out")
        if json.loads((out / "sweep.json").read_text(encoding="utf-8")) != spec:
            raise ScenarioError(f"{out} holds a different sweep; it cannot be resumed")
    results.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", spec)
    write_json(out / "manifest.json", manifest(parse_scenario(document, base_dir), source, {}))
    done = {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in results.glob("*.json")}  # fmt: skip
    keys = [key for key, _ in points(grid, zipped)[0]]
    total = seeds
    with Runner(backend, workers, scheduler) as runner:
        while True:
            tasks = make_tasks(document, base_dir, grid, total, zipped, series=series)
            todo = [task for task in tasks if task.name not in done]
            rows = [done[task.name] for task in tasks if task.name in done]
            if progress is not None:
                progress(len(rows), len(tasks))
            for row, texts in runner.run(todo):
                # Keys in the row's own order (not sorted): the columns of summary.csv.
                name = result_name(row["point"], row["replicate"])
                if texts:
                    _write_series(out / "series" / name, texts)
                (results / f"{name}.json").write_text(json.dumps(row) + "\n", encoding="utf-8")
                done[name] = row
                rows.append(row)
                if progress is not None:
                    progress(len(rows), len(tasks))
            rows.sort(key=lambda row: (row["point"], row["replicate"]))
            if target is None or total >= target.max_seeds or _precise(rows, keys, target):
                break
            total = min(total + seeds, target.max_seeds)
    write_summaries(rows, keys, out, reference)
    return rows


def _precise(rows: Sequence[Row], keys: Sequence[str], target: Target) -> bool:
    """Whether the target metric's CI half-width is small enough at every point."""
    for row in point_rows(rows, keys):
        ci = row.get(f"{target.metric}_ci95")
        if f"{target.metric}_mean" not in row:
            raise ScenarioError(f"--target-ci: no metric {target.metric!r}")
        if ci is None or ci > target.half_width:
            return False
    return True


def _write_series(folder: Path, texts: Series) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    to_parquet(folder)


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


def _metrics_of(run: Row, keys: Sequence[str]) -> dict[str, Any]:
    skip = {"point", "replicate", "seed", *keys}
    return {k: v for k, v in run.items() if k not in skip}


def point_rows(rows: Sequence[Row], keys: Sequence[str]) -> list[Row]:
    """One row per grid point: its values, then ``<metric>_mean``, ``_ci95`` and ``_n``."""
    result = []
    for point, group in itertools.groupby(rows, key=lambda row: row["point"]):
        runs = list(group)
        metrics = [_metrics_of(run, keys) for run in runs]
        summary: Row = {"point": point, **{k: runs[0][k] for k in keys}, "runs": len(runs)}
        for name, stats in aggregate(metrics).items():
            summary[f"{name}_mean"] = stats["mean"]
            summary[f"{name}_ci95"] = stats["ci95"]
            summary[f"{name}_n"] = stats["n"]
        result.append(summary)
    return result


def paired_differences(rows: Sequence[Row], keys: Sequence[str], reference: int = 0) -> list[Row]:
    """Per point (but the reference) and metric: the mean over replicates of
    ``metric(point, r) − metric(reference, r)``, its 95% CI (t with n − 1 degrees of
    freedom, n the replicates where both are defined) and n.

    Arms of a sweep share seeds (common random numbers), so the difference of a pair
    cancels the noise both runs share: its CI is the CI of the effect of the change,
    usually much narrower than the two arms' own CIs side by side.
    """
    by_point: dict[int, dict[int, Row]] = {}
    for row in rows:
        by_point.setdefault(row["point"], {})[row["replicate"]] = row
    base = by_point.get(reference)
    if base is None:
        return []
    result = []
    for point, runs in sorted(by_point.items()):
        if point == reference:
            continue
        sample = next(iter(runs.values()))
        for metric in _metrics_of(sample, keys):
            pairs = [
                run[metric] - base[r][metric]
                for r, run in sorted(runs.items())
                if r in base and run.get(metric) is not None and base[r].get(metric) is not None
            ]
            stats = aggregate([{"d": value} for value in pairs])["d"] if pairs else None
            result.append(
                {
                    "point": point,
                    "reference": reference,
                    **{key: sample[key] for key in keys},
                    "metric": metric,
                    "diff_mean": None if stats is None else stats["mean"],
                    "diff_ci95": None if stats is None else stats["ci95"],
                    "n": len(pairs),
                }
            )
    return result


def write_summaries(
    rows: Sequence[Row], keys: Sequence[str], out: Path, reference: int = 0
) -> None:
    """``summary.csv`` (+ ``.parquet``), ``points.csv``, ``differences.csv`` and, with
    matplotlib, the plots."""
    _write_csv(out / "summary.csv", rows)
    _write_csv(out / "points.csv", point_rows(rows, keys))
    _write_csv(out / "differences.csv", paired_differences(rows, keys, reference))
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
