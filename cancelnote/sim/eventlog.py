"""The event log: one CSV row per thing that happened, in the order it happened.

The golden rule of the lab is that the same scenario and seed give a byte-identical
``events.csv``. The log helps by owning the format: fixed columns, ``\\n`` line ends
whatever the platform, integers for times, and payloads that callers pass as strings (so
no ``repr`` of a numpy scalar or of a set can leak into the file). Rows are written in
dispatch order, which the kernel makes deterministic.
"""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, TextIO

import attrs

if TYPE_CHECKING:
    from _csv import Writer

#: The columns of ``events.csv``: simulated time, what happened, who did it, which order
#: it concerns (empty if none) and a free-form detail such as ``price=99.5``.
COLUMNS = ("t_ns", "kind", "agent", "order_id", "payload")


@attrs.define
class EventLog:
    """A CSV sink for kernel events. Open the stream with ``newline=""``."""

    stream: TextIO
    _writer: Writer = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._writer = csv.writer(self.stream, lineterminator="\n")

    @classmethod
    def start(cls, stream: TextIO) -> EventLog:
        """A log on ``stream`` with the header row already written."""
        log = cls(stream)
        log._writer.writerow(COLUMNS)
        return log

    def write(self, t_ns: int, kind: str, agent: str, order_id: str, payload: str) -> None:
        """Append one row."""
        self._writer.writerow((t_ns, kind, agent, order_id, payload))
