"""A run's time series: the market and every agent's position, streamed to CSV (and Parquet).

Sampled with the book (every 100 simulated ms), two files:

* ``market.csv``: ``t_ns, mid, best_bid, best_ask, depth_at_best`` (an empty best price
  when that side of the book is empty);
* ``agents.csv``: ``t_ns, agent, inventory, cash, pnl``, one row per agent that has
  traded: every maker (``mm/<i>``), the noise taker (``taker``), the operator's taker
  (``sniper``) and every plug-in agent. Inventory in base units, cash and PnL (cash +
  inventory × mid, marked to market) in quote currency.

Rows are written as they happen, so memory does not grow with the horizon; floats are
``repr`` (the same bytes on every platform), so the files of one seed are byte-identical
whatever the worker. :func:`to_parquet` converts them in bounded memory when pyarrow is
installed (the ``parquet`` extra).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from _csv import Writer

MARKET_COLUMNS = ("t_ns", "mid", "best_bid", "best_ask", "depth_at_best")
AGENT_COLUMNS = ("t_ns", "agent", "inventory", "cash", "pnl")
FILES = {"market.csv": MARKET_COLUMNS, "agents.csv": AGENT_COLUMNS}


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class SeriesWriter:
    """Writes ``market.csv`` and ``agents.csv`` into ``folder`` as the run samples."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._streams: list[TextIO] = []
        self._market = self._open("market.csv")
        self._agents = self._open("agents.csv")

    def _open(self, name: str) -> Writer:
        stream = open(self.folder / name, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._streams.append(stream)
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(FILES[name])
        return writer

    def market(
        self, t_ns: int, mid: float, best_bid: float | None, best_ask: float | None, depth: float
    ) -> None:
        self._market.writerow((t_ns, _number(mid), _number(best_bid), _number(best_ask),
                               _number(depth)))  # fmt: skip

    def agent(self, t_ns: int, agent: str, inventory: float, cash: float, pnl: float) -> None:
        self._agents.writerow((t_ns, agent, _number(inventory), _number(cash), _number(pnl)))

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams.clear()


def to_parquet(folder: Path) -> list[Path]:
    """``market.parquet`` and ``agents.parquet`` beside the CSV files (streamed in blocks);
    nothing without pyarrow. Returns the files written."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        return []
    written = []
    for name, columns in FILES.items():
        source = folder / name
        if not source.exists():
            continue
        target = source.with_suffix(".parquet")
        types = {c: pa.int64() if c == "t_ns" else pa.string() if c == "agent" else pa.float64()
                 for c in columns}  # fmt: skip
        reader = pacsv.open_csv(source, convert_options=pacsv.ConvertOptions(column_types=types))
        with pq.ParquetWriter(target, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
        written.append(target)
    return written
