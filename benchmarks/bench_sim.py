"""Kernel events per second: the cost the kernel adds to every simulated event.

Three workloads, each the median of ``--repeats`` runs. Rates are events per second of
*CPU time* of this process (``time.process_time``): on a shared machine, wall-clock time
also counts the time other processes held the core. The wall-clock rates are reported
beside them (``..._wall``); on an idle machine the two agree.

* ``kernel_events_per_s`` (the headline; target 1,000,000): handlers that do nothing,
  ``--depth`` events pending at a time. The clock schedules a batch of ``depth`` events
  at random future times and runs them, so every event costs one push, one pop and one
  call; scheduling is timed with running.
* ``kernel_reschedule_events_per_s``: ``--depth`` agents whose handler only schedules
  the agent's next wakeup (the minimal real handler; anchors §1.7's workload).
* ``kernel_deep_queue_events_per_s``: empty handlers with ``--deep`` events pending at
  once, the worst case for the heap (and for the CPU caches): scenarios should schedule
  each agent's next event, not a whole day of events up front.

Scenario figures (the honest baseline with the real operator engine, with and without
disputes on the chain) come with the scenario runner.

    python benchmarks/bench_sim.py --out results/sim.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cancelnote.sim.kernel import Kernel

TARGET_EVENTS_PER_S = 1_000_000
# Wakeups spread over a simulated second.
SPREAD_NS = 1_000_000_000


def _nothing(payload: object) -> None:
    """The empty handler."""


@contextmanager
def stopwatch(times: list[float]) -> Iterator[None]:
    """Appends the CPU seconds, then the wall-clock seconds, that the block took."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    times.extend((time.process_time() - cpu, time.perf_counter() - wall))


def batched(events: int, depth: int, rng: random.Random) -> list[float]:
    """CPU and wall seconds to schedule and run ``events`` empty events, ``depth`` pending
    at a time."""
    kernel = Kernel()
    schedule = kernel.schedule
    offsets = [rng.randrange(1, SPREAD_NS) for _ in range(depth)]
    times: list[float] = []
    with stopwatch(times):
        for _ in range(events // depth):
            now = kernel.now_ns
            for offset in offsets:
                schedule(now + offset, _nothing)
            kernel.run()
    return times


def rescheduling(events: int, depth: int, rng: random.Random) -> list[float]:
    """CPU and wall seconds to run ``events`` wakeups of ``depth`` agents whose handler
    only schedules the agent's next wakeup."""
    kernel = Kernel()
    schedule_after = kernel.schedule_after
    delays = [rng.randrange(1, SPREAD_NS) for _ in range(depth)]

    def wake(agent: int) -> None:
        schedule_after(delays[agent], wake, agent)

    for agent in range(depth):
        kernel.schedule(delays[agent], wake, agent)
    times: list[float] = []
    with stopwatch(times):
        kernel.run(max_events=events)
    return times


def deep_queue(events: int, depth: int, rng: random.Random) -> list[float]:
    """CPU and wall seconds to schedule ``events`` empty events at once and run them all (``depth``
    is ``events`` here)."""
    kernel = Kernel()
    schedule = kernel.schedule
    times = [rng.randrange(SPREAD_NS * 1_000) for _ in range(events)]
    seconds: list[float] = []
    with stopwatch(seconds):
        for at_ns in times:
            schedule(at_ns, _nothing)
        kernel.run()
    return seconds


def rates(
    workload: Callable[[int, int, random.Random], list[float]],
    events: int,
    depth: int,
    repeats: int,
) -> tuple[float, float]:
    """Median events per CPU second and per wall second over ``repeats`` runs (fixed seeds)."""
    runs = [workload(events, depth, random.Random(repeat)) for repeat in range(repeats)]
    return (
        statistics.median(events / cpu for cpu, _ in runs),
        statistics.median(events / wall for _, wall in runs),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--events", type=int, default=1_000_000, help="events per run")
    parser.add_argument("--depth", type=int, default=100, help="events pending at a time")
    parser.add_argument("--deep", type=int, default=100_000, help="pending events, deep queue")
    parser.add_argument("--repeats", type=int, default=5, help="runs per workload (median)")
    args = parser.parse_args(argv)

    workloads = {
        "kernel_events_per_s": rates(batched, args.events, args.depth, args.repeats),
        "kernel_reschedule_events_per_s": rates(
            rescheduling, args.events, args.depth, args.repeats
        ),
        "kernel_deep_queue_events_per_s": rates(deep_queue, args.deep, args.deep, args.repeats),
    }
    figures = {name: cpu for name, (cpu, _) in workloads.items()}
    figures.update({f"{name}_wall": wall for name, (_, wall) in workloads.items()})
    report = {
        "benchmark": "sim",
        "figures": {name: round(value) for name, value in figures.items()},
        "targets": {"kernel_events_per_s": TARGET_EVENTS_PER_S},
        "met": figures["kernel_events_per_s"] >= TARGET_EVENTS_PER_S,
        "note": "scenario_events_per_s (honest baseline, with and without disputes) is "
        "added with the scenario runner",
        "parameters": {
            "events": args.events,
            "depth": args.depth,
            "deep": args.deep,
            "repeats": args.repeats,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["figures"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
