"""Plots of a sweep (matplotlib's Agg backend: files only, no display), PNG and SVG.

``plot_sweep(folder)`` reads ``points.csv`` and draws the headline metrics against the
first grid key, one line per combination of the other keys, with 95% confidence bars.
The figures are written beside the data as ``sweep.png`` and ``sweep.svg``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: The metrics drawn, with their axis labels.
HEADLINE = (
    ("operator_gain_gross", "operator gain, gross (currency)"),
    ("operator_gain_net", "operator gain, net (currency)"),
    ("stale_fill_rate", "stale-fill rate"),
    ("disputes_filed", "disputes filed"),
)
#: SVG files carry no date or random ids, so the same data draws the same bytes.
_SVG: dict[RcKeyType, Any] = {"svg.hashsalt": "cancelnote", "svg.fonttype": "none"}


def _number(text: str) -> float | None:
    return float(text) if text not in ("", "None") else None


def _series(rows: list[dict[str, str]], x_key: str, others: list[str]) -> dict[str, list[dict]]:
    series: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        label = ", ".join(f"{k.split('.')[-1]}={row[k]}" for k in others) or "all"
        series.setdefault(label, []).append(row)
    return series


def draw_metric(
    axis: plt.Axes, rows: list[dict[str, str]], x_key: str, others: list[str], metric: str
) -> None:
    """One line per combination of ``others``: ``metric``'s mean against ``x_key``, with
    its 95% CI as error bars."""
    for name, group in _series(rows, x_key, others).items():
        points = sorted(
            (float(r[x_key]), _number(r[f"{metric}_mean"]), _number(r[f"{metric}_ci95"]) or 0.0)
            for r in group
            if _number(r[f"{metric}_mean"]) is not None
        )
        if points:
            xs, ys, errors = zip(*points, strict=True)
            axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=name)
    axis.set_xlabel(x_key)
    axis.grid(alpha=0.3)


def read_points(folder: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows of ``points.csv`` and the grid keys of ``sweep.json``."""
    with open(folder / "points.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    grid = [
        key for key, _ in json.loads((folder / "sweep.json").read_text(encoding="utf-8"))["grid"]
    ]
    return rows, grid


def plot_sweep(folder: Path, metrics: tuple[tuple[str, str], ...] = HEADLINE) -> list[Path]:
    """Draw ``folder/points.csv`` against the first grid key; returns the files written."""
    rows, grid = read_points(folder)
    if not rows or not grid:
        return []
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for axis, (metric, label) in zip(axes.flat, metrics, strict=True):
        draw_metric(axis, rows, grid[0], grid[1:], metric)
        axis.set_ylabel(label)
    if grid[1:]:
        axes.flat[0].legend(fontsize="small")
    figure.suptitle(f"{folder.name}: means with 95% CI over seeds")
    return save(figure, folder / "sweep")


def save(figure: plt.Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` and close the figure."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    with matplotlib.rc_context(_SVG):
        figure.savefig(paths[0], dpi=120)
        figure.savefig(paths[1], metadata={"Date": None})
    plt.close(figure)
    return paths
