"""A plain-text progress bar on stderr, for runs and sweeps that take a while.

On a terminal the bar redraws itself in place (``\\r``); into a file or a pipe it writes
a line at every tenth of the work, so logs stay readable. No dependency: a progress
callback is just ``(done, total)``. With ``seconds_per_unit`` the bar counts simulated
seconds (a run reports nanoseconds, a sweep finished runs of a known horizon) and shows
how many it simulates per second of wall-clock time.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import attrs

WIDTH = 30


@attrs.define
class ProgressBar:
    """Call it with ``(done, total)``; :meth:`close` ends the line.

    Args:
        label: what is running.
        seconds_per_unit: simulated seconds per unit of ``done`` (``1e-9`` for a run's
            nanoseconds, the horizon for a sweep's runs); ``None`` counts plain units.
    """

    label: str
    seconds_per_unit: float | None = None
    stream: TextIO = attrs.field(factory=lambda: sys.stderr)  # the one in force when made
    _started: float = attrs.field(factory=time.perf_counter, init=False)
    _last_tenth: int = attrs.field(default=-1, init=False)
    _drawn: bool = attrs.field(default=False, init=False)

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        elapsed = time.perf_counter() - self._started
        filled = round(fraction * WIDTH)
        text = f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%} "
        if self.seconds_per_unit is None:
            text += f"{done}/{total}"
        else:
            simulated = done * self.seconds_per_unit
            rate = simulated / elapsed if elapsed > 0 else 0.0
            text += f"{simulated:.1f}/{total * self.seconds_per_unit:.1f} sim s, {rate:.2f} sim s/s"
        text += f" {elapsed:.1f} s"
        if self.stream.isatty():
            self.stream.write("\r" + text)
            self._drawn = True
        else:
            tenth = int(fraction * 10)
            if tenth == self._last_tenth:
                return
            self._last_tenth = tenth
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
