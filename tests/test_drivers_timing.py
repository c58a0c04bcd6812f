"""Driver timers: virtual-time scheduling, fixed-rate polling without drift, staleness."""

from __future__ import annotations

import threading

from core.clock import SystemClock, VirtualClock
from core.events import Kind
from drivers.channel import Channel
from drivers.timing import ThreadScheduler, VirtualScheduler, every
from tests.drivers_kit import Recorder, make_context


def test_virtual_timers_fire_in_deadline_order_at_their_own_instant() -> None:
    sched = VirtualScheduler(VirtualClock(mono=0))
    fired: list[tuple[str, float]] = []
    sched.call_at(2, lambda: fired.append(("b", sched.clock.monotonic())))
    sched.call_at(1, lambda: fired.append(("a", sched.clock.monotonic())))
    sched.call_at(9, lambda: fired.append(("c", sched.clock.monotonic()))).cancel()
    sched.advance(10)
    assert fired == [("a", 1), ("b", 2)]
    assert sched.clock.monotonic() == 10


def test_fixed_rate_polls_do_not_drift_when_each_poll_takes_time() -> None:
    clock = VirtualClock(mono=0)
    sched = VirtualScheduler(clock)
    at: list[float] = []

    def slow_poll() -> None:
        at.append(clock.monotonic())
        clock.advance(0.3)  # the poll itself takes 300 ms

    every(sched, 2.0, slow_poll)
    sched.advance(10)
    assert at == [0, 2, 4, 6, 8, 10]


def test_polls_missed_by_a_stalled_board_are_skipped_and_counted() -> None:
    clock = VirtualClock(mono=0)
    sched = VirtualScheduler(clock)
    at: list[float] = []

    def poll() -> None:
        at.append(clock.monotonic())
        if len(at) == 2:
            clock.advance(5.5)  # stalled through two and a half periods

    periodic = every(sched, 2.0, poll)
    sched.advance(12)
    assert at == [0, 2, 8, 10, 12]
    assert periodic.skipped == 2


def test_a_failing_poll_does_not_stop_the_schedule() -> None:
    sched = VirtualScheduler(VirtualClock(mono=0))
    calls: list[int] = []

    def poll() -> None:
        calls.append(1)
        raise OSError("bus error")

    every(sched, 1.0, poll)
    sched.advance(3)
    assert len(calls) == 4


def test_the_thread_scheduler_runs_a_timer_and_joins_its_thread_on_close() -> None:
    sched = ThreadScheduler(SystemClock(), name="test-timers")
    done = threading.Event()
    sched.call_at(SystemClock().monotonic() + 0.01, done.set)
    assert done.wait(5)
    sched.close()
    assert not any(t.name == "test-timers" for t in threading.enumerate())


def test_a_context_starts_no_timer_thread_until_a_driver_needs_one() -> None:
    before = set(threading.enumerate())
    ctx = make_context(Recorder())
    assert set(threading.enumerate()) <= before
    ctx.timers().call_at(0, lambda: None)
    ctx.close()
    assert set(threading.enumerate()) <= before


def test_a_silent_sensor_becomes_unavailable_after_stale_after() -> None:
    rec = Recorder()
    sched = VirtualScheduler(VirtualClock())
    channel = Channel(make_context(rec, scheduler=sched), "temp", stale_after=60)
    channel.feed(20.0)
    sched.advance(59)
    assert rec.of(Kind.AVAILABILITY) == []
    sched.advance(2)
    [event] = rec.of(Kind.AVAILABILITY)
    assert (event.value, event.detail) == (False, "no reading for 60 s")


def test_a_stale_sensor_is_available_again_with_its_next_reading() -> None:
    rec = Recorder()
    sched = VirtualScheduler(VirtualClock())
    channel = Channel(make_context(rec, scheduler=sched), "temp", stale_after=60)
    sched.advance(200)
    channel.feed(21.0)
    assert [(e.kind, e.value) for e in rec.events] == [
        (Kind.AVAILABILITY, False), (Kind.AVAILABILITY, True), (Kind.READING, 21.0)
    ]


def test_a_sensor_that_keeps_reporting_never_goes_stale() -> None:
    rec = Recorder()
    sched = VirtualScheduler(VirtualClock())
    channel = Channel(make_context(rec, scheduler=sched), "temp", stale_after=60)
    for _ in range(10):
        channel.feed(20.0)
        sched.advance(50)
    assert rec.of(Kind.AVAILABILITY) == []
    channel.close()
    assert sched.pending() == 0
