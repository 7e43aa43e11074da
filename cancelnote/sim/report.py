"""``cancelnote sim report FOLDER``: one self-contained HTML page a researcher can send.

The page holds everything a colleague needs to read the result without the folder: the
plots (PNG, embedded as data URIs), the table of every point (means with 95% CIs), the
paired differences between arms, the best-response search when the folder (or
``--attack``) holds one, the scenario document and the versions of everything that ran
(``manifest.json``). No script, no external file, no network: it opens anywhere.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: The metrics the points table shows (all of them are in points.csv).
HEADLINE = (
    "operator_gain_gross",
    "operator_gain_net",
    "stale_fill_rate",
    "client_loss",
    "detection_tpr",
    "disputes_filed",
    "gas_cost_total",
    "deterrence_threshold",
)
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222 }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right }
th { background: #f2f2f2 } td.text, th.text { text-align: left }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em }
img { max-width: 100%; border: 1px solid #ddd }
"""


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _number(text: str | None, digits: int = 4) -> str:
    if text in (None, "", "None"):
        return "–"
    value = float(text)
    return f"{value:.{digits}g}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int = 0) -> str:
    def cell(tag: str, index: int, value: str) -> str:
        kind = ' class="text"' if index < text_columns else ""
        return f"<{tag}{kind}>{html.escape(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}"></p>'


def _points_section(folder: Path, keys: list[str]) -> str:
    rows = _read_csv(folder / "points.csv")
    if not rows:
        return ""
    metrics = [m for m in HEADLINE if f"{m}_mean" in rows[0]]
    header = [*keys, "runs", *metrics]
    body = [
        [
            *(row[k] for k in keys),
            row["runs"],
            *(f"{_number(row[f'{m}_mean'])} ± {_number(row[f'{m}_ci95'], 2)}" for m in metrics),
        ]
        for row in rows
    ]
    return "<h2>Points (means ± 95% CI over seeds)</h2>" + _table(header, body, len(keys))


def _differences_section(folder: Path, keys: list[str]) -> str:
    rows = [r for r in _read_csv(folder / "differences.csv") if r["metric"] in HEADLINE]
    if not rows:
        return ""
    header = ["point", *keys, "metric", "difference from the reference", "n"]
    body = [
        [
            r["point"],
            *(r[k] for k in keys),
            r["metric"],
            f"{_number(r['diff_mean'])} ± {_number(r['diff_ci95'], 2)}",
            r["n"],
        ]
        for r in rows
    ]
    reference = rows[0]["reference"]
    return (
        f"<h2>Paired differences from point {html.escape(reference)}</h2>"
        "<p>Arms share seeds (common random numbers): each difference is taken replicate by"
        " replicate, so its CI is the CI of the effect.</p>" + _table(header, body, len(keys) + 2)
    )


def _attack_section(attack: Mapping[str, Any] | None, plot: str) -> str:
    if attack is None:
        return ""
    best = attack["best_response"]
    rows = [
        [
            s["policy"],
            ", ".join(f"{k}={v}" for k, v in s["searched"]["params"].items()) or "–",
            f"{_number(str(s['searched']['mean']))} ± {_number(str(s['searched']['ci95']), 2)}",
            f"{_number(str(s['confirmed']['mean']))} ± {_number(str(s['confirmed']['ci95']), 2)}",
        ]
        for s in attack["strategies"]
    ]
    defence = ", ".join(f"{k}={v}" for k, v in attack["defence"].items()) or "the scenario's"
    if best["penalty_per_offence"] is None:
        deterrence = "none: the court can never be made to pay for it; no penalty or bond deters it"
    else:
        deterrence = (
            f"penalty Π* = {best['penalty_per_offence']:.4g} per offence; a bond of"
            f" {best['bond']:.4g} pays it for every offence of one run"
        )
    return (
        "<h2>Best response</h2>"
        f"<p>Against the defence <code>{html.escape(defence)}</code>, objective"
        f" <code>{html.escape(attack['objective'])}</code>: <b>{html.escape(best['policy'])}</b>"
        f" ({html.escape(', '.join(f'{k}={v}' for k, v in best['params'].items()) or 'as is')}),"
        f" {_number(str(best['mean']))} ± {_number(str(best['ci95']), 2)} on fresh seeds."
        f" Deterrence: {html.escape(deterrence)}.</p>"
        + _table(["policy", "best parameters", "searched", "confirmed (fresh seeds)"], rows, 2)
        + plot
    )


def _attack_plot(attack: Mapping[str, Any], folder: Path) -> str:
    try:
        from .plot import plt, save
    except ImportError:
        return ""
    names = [s["policy"] for s in attack["strategies"]]
    means = [s["confirmed"]["mean"] or 0.0 for s in attack["strategies"]]
    errors = [s["confirmed"]["ci95"] or 0.0 for s in attack["strategies"]]
    figure, axis = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    axis.bar(names, means, yerr=errors, capsize=4, color="#4c72b0")
    axis.axhline(0.0, color="#444", linewidth=0.8)
    axis.set_ylabel(attack["objective"])
    axis.set_title("each strategy at its best parameters (fresh seeds, 95% CI)")
    png, _ = save(figure, folder / "attack")
    return _image(png)


def _heads_section(heads: Mapping[str, Any] | None, plot: str) -> str:
    """The best response with journal heads every H against none (``sim attack
    --heads-ms``): a table and a plot."""
    if heads is None:
        return ""
    rows = [
        [
            "none" if row["interval_ms"] == 0 else f"{row['interval_ms']} ms",
            row["policy"],
            ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "–",
            f"{_number(str(row['mean']))} ± {_number(str(row['ci95']), 2)}",
            "–" if row["ratio"] is None else f"{row['ratio']:.1%}",
        ]
        for row in heads["rows"]
    ]
    header = ["heads H", "best response", "parameters", "confirmed gain", "vs no heads"]
    return (
        "<h2>Journal heads</h2>"
        "<p>The best response searched again with the operator signing a journal head every"
        " H ms (clients verifying every head), the defence otherwise the same.</p>"
        + _table(header, rows, 3)
        + plot
    )


def heads_plot(heads: Mapping[str, Any], stem: Path, objective: str) -> list[Path]:
    """Each strategy's confirmed gain against the head interval, the no-heads value as a
    line per strategy (``stem``.png and .svg)."""
    from .plot import plt, save

    rows = [row for row in heads["rows"] if row["interval_ms"]]
    intervals = [row["interval_ms"] for row in rows]
    figure, axis = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    without = heads["strategies"]["0"]
    for index, policy in enumerate(without):
        colour = f"C{index}"
        points = [heads["strategies"][str(h)].get(policy, {}) for h in intervals]
        means = [p.get("mean") or 0.0 for p in points]
        errors = [p.get("ci95") or 0.0 for p in points]
        axis.errorbar(intervals, means, yerr=errors, marker="o", capsize=3, color=colour,
                      label=policy)  # fmt: skip
        if without[policy]["mean"] is not None:
            axis.axhline(without[policy]["mean"], color=colour, linestyle=":", linewidth=1)
    axis.axhline(0.0, color="#444", linewidth=0.8)
    axis.set_xscale("log")
    axis.minorticks_off()
    axis.set_xticks(intervals, [str(h) for h in intervals])
    axis.set_xlabel("head interval H (ms); dotted: the same strategy without heads")
    axis.set_ylabel(objective)
    axis.legend(fontsize="small", ncols=2)
    axis.set_title("each strategy at its best parameters (fresh seeds, 95% CI)")
    return save(figure, stem)


def _heads_plot(attack: Mapping[str, Any], folder: Path) -> str:
    if "heads" not in attack:
        return ""
    try:
        png, _ = heads_plot(attack["heads"], folder / "heads", attack["objective"])
    except ImportError:
        return ""
    return _image(png)


def _versions_section(manifest: Mapping[str, Any] | None) -> str:
    if manifest is None:
        return ""
    rows = [["cancelnote", str(manifest.get("cancelnote"))], ["python", str(manifest["python"])]]
    rows += [[name, str(v)] for name, v in sorted(manifest.get("dependencies", {}).items())]
    document = json.dumps(manifest.get("document"), indent=2, sort_keys=True)
    return (
        "<h2>Scenario</h2>"
        f"<p>sha256 <code>{html.escape(str(manifest.get('scenario_sha256')))}</code>,"
        f" seed {html.escape(str(manifest.get('seed')))}; created"
        f" {html.escape(str(manifest.get('created_utc')))}.</p>"
        f"<pre>{html.escape(document)}</pre>"
        "<h2>Versions</h2>" + _table(["package", "version"], rows, 1)
    )


def write_report(folder: Path, attack_dir: Path | None = None) -> Path:
    """Write ``folder/report.html`` from a sweep or attack folder; returns its path.

    Raises:
        FileNotFoundError: the folder holds neither a sweep nor an attack.
    """
    sweep = _read_json(folder / "sweep.json")
    attack = _read_json((attack_dir or folder) / "attack.json")
    if sweep is None and attack is None:
        raise FileNotFoundError(f"{folder} holds no sweep.json or attack.json")
    keys = [key for key, _ in (sweep or {}).get("zip", [])]
    keys += [key for key, _ in (sweep or {}).get("grid", [])]
    parts = [f"<h1>cancelnote lab: {html.escape(folder.name)}</h1>"]
    if sweep is not None:
        png = folder / "sweep.png"
        if not png.exists() and (folder / "points.csv").exists():
            try:
                from .plot import plot_sweep

                plot_sweep(folder)
            except ImportError:
                pass
        if png.exists():
            parts.append(_image(png))
        parts.append(_points_section(folder, keys))
        parts.append(_differences_section(folder, keys))
    if attack is not None:
        parts.append(_attack_section(attack, _attack_plot(attack, folder)))
        parts.append(_heads_section(attack.get("heads"), _heads_plot(attack, folder)))
    manifest = _read_json(folder / "manifest.json")
    if manifest is None and attack_dir is not None:
        manifest = _read_json(attack_dir / "manifest.json")
    parts.append(_versions_section(manifest))
    page = io.StringIO()
    page.write('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">')
    page.write(f"<title>{html.escape(folder.name)}</title><style>{_STYLE}</style></head><body>")
    page.write("\n".join(part for part in parts if part))
    page.write("</body></html>\n")
    path = folder / "report.html"
    path.write_text(page.getvalue(), encoding="utf-8")
    return path
