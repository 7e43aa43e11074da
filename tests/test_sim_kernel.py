"""The kernel: events run in (time, priority, sequence) order, cancelled ones never run."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cancelnote.sim.eventlog import EventLog
from cancelnote.sim.kernel import Kernel, SchedulingError

times = st.integers(min_value=0, max_value=50)
priorities = st.integers(min_value=-3, max_value=3)


@given(st.lists(st.tuples(times, priorities), max_size=60))
def test_events_run_in_time_priority_sequence_order(specs):
    kernel = Kernel()
    ran = []
    keys = []
    for at_ns, priority in specs:
        event_id = kernel.schedule(at_ns, ran.append, (at_ns, priority, len(keys)), priority)
        keys.append((at_ns, priority, len(keys)))
        assert event_id == keys[-1][2]  # ids are the scheduling sequence
    assert kernel.run() == len(specs)
    assert ran == sorted(keys)


@given(
    st.lists(st.tuples(times, priorities), min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(0, 20), priorities), max_size=40),
)
def test_each_event_run_is_the_smallest_pending_key_even_when_handlers_schedule(roots, children):
    """Handlers schedule children (possibly at the current instant, ahead of queued events);
    every dispatch must still be the least (time, priority, sequence) then pending."""
    kernel = Kernel()
    pending: dict[int, tuple[int, int, int]] = {}
    spawn = iter(children)

    def schedule(at_ns: int, priority: int) -> None:
        event_id = kernel.schedule(at_ns, handler, None, priority)
        pending[event_id] = (at_ns, priority, event_id)

    def handler(_: object) -> None:
        key = min(pending.values())
        assert kernel.now_ns == key[0]
        del pending[key[2]]
        child = next(spawn, None)
        if child is not None:
            schedule(kernel.now_ns + child[0], child[1])

    for at_ns, priority in roots:
        schedule(at_ns, priority)
    kernel.run()
    assert not pending


@given(st.lists(times, min_size=1, max_size=40), st.data())
def test_cancelled_events_never_run(at_times, data):
    kernel = Kernel()
    ran = []
    ids = [kernel.schedule(t, ran.append, index) for index, t in enumerate(at_times)]
    cancelled = data.draw(st.sets(st.sampled_from(range(len(ids)))))
    for index in cancelled:
        kernel.cancel(ids[index])
    assert kernel.run() == len(at_times) - len(cancelled)
    assert sorted(ran) == sorted(set(range(len(at_times))) - cancelled)


def test_a_handler_can_cancel_a_later_event():
    kernel = Kernel()
    ran = []
    doomed = kernel.schedule(20, ran.append, "doomed")
    kernel.schedule(10, lambda _: kernel.cancel(doomed))
    kernel.schedule(30, ran.append, "survivor")
    assert kernel.run() == 2
    assert ran == ["survivor"]


def test_cancelling_an_event_that_already_ran_changes_nothing():
    kernel = Kernel()
    ran = []
    first = kernel.schedule(1, ran.append, "first")
    kernel.run()
    kernel.cancel(first)
    kernel.schedule(2, ran.append, "second")
    kernel.run()
    assert ran == ["first", "second"]


def test_same_time_and_priority_run_first_scheduled_first():
    kernel = Kernel()
    ran = []
    for name in "abcde":
        kernel.schedule(5, ran.append, name)
    kernel.run()
    assert ran == list("abcde")


def test_lower_priority_value_runs_first_at_the_same_instant():
    kernel = Kernel()
    ran = []
    kernel.schedule(5, ran.append, "fill", priority=1)
    kernel.schedule(5, ran.append, "cancel", priority=-1)
    kernel.run()
    assert ran == ["cancel", "fill"]


def test_run_until_stops_before_later_events_and_moves_the_clock():
    kernel = Kernel()
    ran = []
    for t in (10, 20, 30):
        kernel.schedule(t, ran.append, t)
    assert kernel.run(until_ns=25) == 2
    assert kernel.now_ns == 25
    assert ran == [10, 20]
    assert kernel.run() == 1
    assert ran == [10, 20, 30]


def test_run_until_includes_events_at_the_horizon():
    kernel = Kernel()
    ran = []
    kernel.schedule(25, ran.append, 25)
    assert kernel.run(until_ns=25) == 1


def test_max_events_stops_with_the_clock_at_the_last_event():
    kernel = Kernel()
    for t in (10, 20, 30):
        kernel.schedule(t, lambda _: None)
    assert kernel.run(until_ns=100, max_events=2) == 2
    assert kernel.now_ns == 20
    assert kernel.run(max_events=5) == 1


def test_schedule_after_is_relative_to_the_running_event():
    kernel = Kernel()
    seen = []
    kernel.schedule(100, lambda _: kernel.schedule_after(5, lambda _: seen.append(kernel.now_ns)))
    kernel.run()
    assert seen == [105]


@pytest.mark.parametrize("at_ns", [-1, 1.5, "10"])
def test_scheduling_in_the_past_or_off_the_integer_clock_is_refused(at_ns):
    kernel = Kernel()
    with pytest.raises(SchedulingError):
        kernel.schedule(at_ns, print)


def test_scheduling_before_now_is_refused_inside_a_handler():
    kernel = Kernel()
    errors = []

    def handler(_: object) -> None:
        try:
            kernel.schedule(kernel.now_ns - 1, print)
        except SchedulingError as error:
            errors.append(error)

    kernel.schedule(10, handler)
    kernel.run()
    assert len(errors) == 1


def test_run_refuses_to_reenter_and_to_go_back_in_time():
    kernel = Kernel()
    kernel.schedule(10, lambda _: kernel.run())
    with pytest.raises(SchedulingError, match="inside a handler"):
        kernel.run()
    with pytest.raises(SchedulingError):
        kernel.run(until_ns=5)


def test_record_stamps_rows_with_the_time_of_the_running_event():
    stream = io.StringIO(newline="")
    kernel = Kernel(EventLog.start(stream))
    kernel.schedule(7, lambda _: kernel.record("fill", "operator", "12", "price=99.5"))
    kernel.run()
    assert stream.getvalue() == "t_ns,kind,agent,order_id,payload\n7,fill,operator,12,price=99.5\n"


def test_record_without_a_log_does_nothing():
    kernel = Kernel()
    kernel.record("fill", "operator")  # no log, no error


@settings(max_examples=25)
@given(st.lists(st.tuples(times, priorities), max_size=30))
def test_the_same_schedule_writes_the_same_log_bytes(specs):
    def play() -> str:
        stream = io.StringIO(newline="")
        kernel = Kernel(EventLog.start(stream))
        for index, (at_ns, priority) in enumerate(specs):
            kernel.schedule(at_ns, lambda i: kernel.record("e", "agent", str(i)), index, priority)
        kernel.run()
        return stream.getvalue()

    assert play() == play()
