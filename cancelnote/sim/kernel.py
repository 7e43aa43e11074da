"""A deterministic discrete-event kernel: one heap, integer nanoseconds, no hidden randomness.

Rules (docs/simulation.md, "Kernel"):

* Every event has the key ``(time_ns, priority, sequence)`` and events run in increasing
  key order. ``priority`` breaks ties between events at the same instant (lower runs
  first); ``sequence`` is a counter taken at scheduling time, so equal time and priority
  run first-scheduled first-run (FIFO), as in SimPy and ABIDES. Nothing else (object
  identity, hashing, wall-clock time) can influence the order.
* Time is an ``int`` of nanoseconds and never goes backwards: scheduling in the past is
  an error, and ``now_ns`` is the time of the event being run.
* Cancellation is lazy: a cancelled event stays in the heap and is dropped when it
  reaches the top, so cancelling costs O(1) and running costs nothing extra while no
  cancellation is outstanding.

The run loop is the hot path of every simulation (target: a million events a second on
one core), so heap entries are plain tuples, handlers are called with the payload only
(they read ``kernel.now_ns`` when they need the time), and the loop binds what it uses
to locals.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import attrs

from ..errors import Fault
from .eventlog import EventLog

#: The priority of an event unless its scheduler says otherwise. Lower runs first.
DEFAULT_PRIORITY = 0

Handler = Callable[[Any], object]
EventId = int

# Later than any simulated time (about 146 years in nanoseconds).
_END_OF_TIME = 1 << 62


class SchedulingError(Fault, ValueError):
    """Raised when an event is scheduled in the past, at a non-integer time, or re-entrantly."""

    code = "INVALID_SCHEDULE"


@attrs.define
class Kernel:
    """The clock and the event heap of one simulation run.

    Args:
        event_log: where ``record`` writes rows; ``None`` makes ``record`` a no-op.
    """

    event_log: EventLog | None = None
    now_ns: int = attrs.field(default=0, init=False)
    _heap: list[tuple[int, int, int, Handler, Any]] = attrs.field(factory=list, init=False)
    _sequence: int = attrs.field(default=0, init=False)
    _cancelled: set[EventId] = attrs.field(factory=set, init=False)
    _running: bool = attrs.field(default=False, init=False)

    def schedule(
        self, at_ns: int, handler: Handler, payload: Any = None, priority: int = DEFAULT_PRIORITY
    ) -> EventId:
        """Run ``handler(payload)`` at ``at_ns``; returns the id that ``cancel`` takes.

        Raises:
            SchedulingError: ``at_ns`` is not an ``int`` or lies before ``now_ns``.
        """
        if type(at_ns) is not int or at_ns < self.now_ns:
            raise SchedulingError(f"cannot schedule at {at_ns!r}: now is {self.now_ns} ns")
        sequence = self._sequence
        self._sequence = sequence + 1
        heapq.heappush(self._heap, (at_ns, priority, sequence, handler, payload))
        return sequence

    def schedule_after(
        self, delay_ns: int, handler: Handler, payload: Any = None, priority: int = DEFAULT_PRIORITY
    ) -> EventId:
        """Run ``handler(payload)`` ``delay_ns`` after now (``delay_ns >= 0``)."""
        return self.schedule(self.now_ns + delay_ns, handler, payload, priority)

    def cancel(self, event_id: EventId) -> None:
        """Make sure a scheduled event never runs.

        Cancelling an event that has already run, or twice, is harmless: sequences are
        never reused, so the id matches nothing that is still to run.
        """
        self._cancelled.add(event_id)

    def record(self, kind: str, agent: str, order_id: str = "", payload: str = "") -> None:
        """Write a row to the event log, stamped with ``now_ns``, if there is a log."""
        if self.event_log is not None:
            self.event_log.write(self.now_ns, kind, agent, order_id, payload)

    def run(self, until_ns: int | None = None, max_events: int | None = None) -> int:
        """Run events in key order; returns how many ran (cancelled ones do not count).

        Stops when the heap is empty, when the next event lies after ``until_ns`` (the
        clock then moves to ``until_ns``: the simulation has lived until then), or when
        ``max_events`` have run (the clock stays at the last event). A handler may
        schedule and cancel events but must not call ``run``.
        """
        if self._running:
            raise SchedulingError("run() called from inside a handler")
        if until_ns is not None and until_ns < self.now_ns:
            raise SchedulingError(f"cannot run until {until_ns}: now is {self.now_ns} ns")
        heap = self._heap
        pop = heapq.heappop
        cancelled = self._cancelled
        horizon = _END_OF_TIME if until_ns is None else until_ns
        budget = -1 if max_events is None else max_events
        ran = 0
        self._running = True
        try:
            while heap and ran != budget:
                entry = pop(heap)
                at_ns = entry[0]
                if at_ns > horizon:
                    heapq.heappush(heap, entry)
                    break
                if cancelled and entry[2] in cancelled:
                    cancelled.discard(entry[2])
                    continue
                self.now_ns = at_ns
                entry[3](entry[4])
                ran += 1
        finally:
            self._running = False
        if until_ns is not None and ran != budget:
            self.now_ns = until_ns
        return ran
