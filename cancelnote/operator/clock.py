"""The operator's one clock: wall time, advanced monotonically, never backwards, never jumping.

Everything the engine signs carries the engine's time (a fill's ``timestampMs``, a note's
``receivedAtMs`` and ``pendingUntilMs``), and the engine judges client nonces and order
expirations against it. Two ways a plain wall clock hurts:

* **backwards** (a step back of NTP, an operator's mistake): a clamp at the last value
  freezes time, so nothing settles, expires or is released until the wall catches up;
  a fill due in 0.5 s waits a minute behind a 60 s step;
* **forwards** (a bogus step ahead): every nonce is suddenly in the past and every order
  expired (an outage), while an order's lifetime is judged from a time that is not now
  (an order may outlive the bond it relies on).

So :class:`Clock` runs on the monotonic clock and only *steers* towards the wall: at every
reading it compares the two and absorbs the difference at most :attr:`Clock.slew` of the
time that passed (10 %: the clock runs between 0.9x and 1.1x real speed), never stepping.
A difference beyond :attr:`Clock.jump_ms` appearing at once is a jump: it is logged
(``clock_jump``) and absorbed the same gradual way, so a jump that reverts is never
followed and one that stays is reached in ten times its size (a two-hour step: 20 hours;
fix the machine's clock before starting an operator whose clock was wrong). The value
never goes below ``floor_ms`` (the journal's last entry), so it never runs backwards across
a restart either. It reads no clock of its own beyond the two sources it is given, so
tests inject both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LOGGER = logging.getLogger("cancelnote.operator.clock")

#: The largest share of elapsed time by which the clock may run fast or slow to catch up.
SLEW = 0.1
#: A wall-clock change this large between two readings is a jump (logged).
JUMP_MS = 1_000


def wall_clock_ms() -> int:
    """Unix ms from the wall clock (a client's clock; the operator runs on :class:`Clock`)."""
    return time.time_ns() // 1_000_000


class Clock:
    """Unix ms that never decrease and move at 0.9x-1.1x the monotonic clock (see above).

    Args:
        wall_ns: the wall clock (unix ns).
        monotonic_ns: a monotonic clock (ns).
        floor_ms: the clock never reads below this (the journal's last time).
        slew: how fast a difference from the wall is absorbed, as a share of elapsed time.
        jump_ms: a difference appearing at once beyond this is logged as a jump.
    """

    def __init__(
        self,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        floor_ms: int = 0,
        slew: float = SLEW,
        jump_ms: int = JUMP_MS,
    ) -> None:
        if not 0 < slew < 1:
            raise ValueError(f"slew must be in (0, 1), got {slew}")
        self.slew = slew
        self.jump_ms = jump_ms
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        wall_ms = wall_ns() / 1e6
        self._value = float(max(wall_ms, floor_ms))
        self._mono = monotonic_ns()
        self._error = wall_ms - self._value  # what is left to absorb (wall - clock)
        if -self._error > jump_ms:
            self._log_jump(self._error, "the journal's last entry is later than the wall clock")

    @property
    def offset_ms(self) -> float:
        """How far the wall clock is from this clock (positive: the wall is ahead)."""
        return self._error

    def now_ms(self) -> int:
        """The time now; never less than any value returned before."""
        mono = self._monotonic_ns()
        elapsed = max(mono - self._mono, 0) / 1e6
        self._mono = mono
        value = self._value + elapsed
        error = self._wall_ns() / 1e6 - value
        if abs(error - self._error) > self.jump_ms:
            self._log_jump(error, "the wall clock stepped")
        step = self.slew * elapsed
        correction = min(max(error, -step), step)
        self._value = value + correction
        self._error = error - correction
        return int(self._value)

    def _log_jump(self, error: float, why: str) -> None:
        LOGGER.warning(
            "clock_jump",
            extra={
                "fields": {
                    "offset_ms": round(error),
                    "why": why,
                    "absorbed_in_s": round(abs(error) / self.slew / 1000, 1),
                }
            },
        )
