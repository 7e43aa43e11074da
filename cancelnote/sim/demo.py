"""``cancelnote demo``: what an operator gains by delaying cancels, and what defences take back.

The README's main job, on embedded defaults (no file, no argument): four market makers
quote around a Brownian mid-price; the operator (the real engine, ``Delay`` policy)
holds every cancel ``d`` ms while its own taker fills the held orders that end in the
money. Two arms per delay, common random numbers across all of them:

* **no defence**: the makers verify every note (the real verifier) but never go to court;
* **defence**: each maker's real watchtower forces a cancel on-chain when its note is
  ``FORCE_AFTER_MS`` late; the court (real bytecode, in-process py-evm) takes the answer
  or, failing it, pays the penalty.

It runs a sweep (:mod:`.sweep`, process pool) and prints a table of means with 95% CIs
over seeds, and writes ``gain_vs_delay.png``/``.svg`` and the sweep's files.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .plot import draw_metric, plt, read_points, save
from .sweep import run_sweep

#: The delays swept, in ms, and the watchtower's deadline in the defence arm.
DELAYS_MS = (0, 250, 500, 1000, 2000)
FORCE_AFTER_MS = 250
SEEDS = 5

SCENARIO = f"""
[run]
horizon_s = 8
seed = 20261123
[market]
model = "abm"
sigma = 0.05
[feed]
tick_ms = 10
[latency.entry]
model = "cubic"
min_ns = 1_000_000
[latency.response]
model = "cubic"
min_ns = 1_000_000
[makers]
count = 4
half_spread = 0.02
spread_step = 0.01
size = 10.0
requote_threshold = 0.05
[takers]
rate_per_s = 1.0
size = 2.0
[operator]
policy = "delay"
[client]
force_after_ms = {FORCE_AFTER_MS}
[court]
answer_window_s = 120
penalty = 50.0
dispute_bond = 0.01
[chain]
block_time_s = 1
"""

GRID: dict[str, Sequence[Any]] = {
    "operator.delay_ms": list(DELAYS_MS),
    "client.dispute": [False, True],
}

#: The table's columns: (metric, heading).
COLUMNS = (
    ("operator_gain_gross", "gross gain"),
    ("operator_gain_net", "net gain"),
    ("stale_fill_rate", "stale rate"),
    ("time_to_cancel_p50_ms", "cancel p50 ms"),
    ("disputes_filed", "disputes"),
    ("gas_cost_total", "gas cost"),
)


def _out_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : never overwrite an earlier demo."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _cell(row: dict[str, str], metric: str) -> str:
    mean, ci = row[f"{metric}_mean"], row[f"{metric}_ci95"]
    if mean in ("", "None"):
        return "-"
    text = f"{float(mean):.2f}"
    return text + (f" ±{float(ci):.2f}" if ci not in ("", "None") else "")


def table(folder: Path) -> str:
    """The demo's summary: one line per (delay, arm), means ± 95% CI over seeds."""
    rows, _ = read_points(folder)
    header = f"{'delay ms':>8}  {'defence':<7}" + "".join(f"  {h:>16}" for _, h in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        arm = "on" if row["client.dispute"] == "True" else "off"
        cells = "".join(f"  {_cell(row, metric):>16}" for metric, _ in COLUMNS)
        lines.append(f"{row['operator.delay_ms']:>8}  {arm:<7}{cells}")
    return "\n".join(lines)


def plot(folder: Path) -> list[Path]:
    """Operator gain (net of penalties, gas and bonds won) against the delay, per arm."""
    rows, grid = read_points(folder)
    for row in rows:
        row["defence"] = "on" if row["client.dispute"] == "True" else "off"
    figure, axis = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    draw_metric(axis, rows, grid[0], ["defence"], "operator_gain_net")
    axis.set_xlabel("cancel delay (ms)")
    axis.set_ylabel("operator gain, net (quote currency per run)")
    axis.set_title("Delaying cancels: gain with and without on-chain defences")
    axis.legend()
    return save(figure, folder / "gain_vs_delay")


def run_demo(
    out: Path = Path("cancelnote-demo"), progress: Callable[[int, int], None] | None = None
) -> tuple[Path, str]:
    """Run the demo sweep into a new folder; returns the folder and the summary table."""
    folder = _out_dir(out)
    document = tomllib.loads(SCENARIO)
    workers = min(2, os.cpu_count() or 1)
    run_sweep(document, Path.cwd(), GRID, SEEDS, folder, workers=workers, progress=progress)
    plot(folder)
    return folder, table(folder)
