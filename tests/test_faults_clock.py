"""Fault: the wall clock stepped by +1 h and then -1 h (an NTP correction on a board without an RTC).

A dispatcher runs in real time on the ``SystemClock``; its timers (what ``for``
durations, delays and pulses are built on) are armed, then the wall clock is
stepped forward and backward with ``time-machine`` while they wait. Each
timer must fire after its own delay on the monotonic clock, never early and
never late by the hour, while event timestamps follow the stepped wall clock.
"""

from __future__ import annotations

import threading
import time

import pytest
import time_machine

from gateway.bus import Bus
from gateway.clock import SystemClock
from gateway.dispatcher import Dispatcher
from gateway.events import Event, EventFactory, Kind
from tests.faults_support import Tally
from tests.helpers import wait_until

DELAYS = [0.1 * i for i in range(1, 13)]
STEP = 3600.0
SLACK = 0.25
"""How late a timer may fire on a loaded 2-core machine; an hour's error is 14,400 times this."""


class Arm:
    """A reactor that, on the ``arm`` event, arms one timer per delay (timers belong to the dispatcher thread)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.armed_at = 0.0
        self.fired: dict[int, float] = {}
        self.fired_wall: dict[int, float] = {}

    def handle(self, event: Event) -> None:
        if event.kind is Kind.SYSTEM and event.value == "arm":
            self.armed_at = time.monotonic()
            for i, delay in enumerate(DELAYS):
                self.dispatcher.call_later(delay, lambda i=i: self.fire(i))

    def fire(self, i: int) -> None:
        self.fired[i] = time.monotonic() - self.armed_at
        self.fired_wall[i] = time.time()


@pytest.mark.slow
def test_timers_wait_on_the_monotonic_clock_through_wall_clock_steps_of_an_hour_either_way() -> None:
    events = EventFactory(SystemClock())
    dispatcher = Dispatcher(Bus(), events)
    arm = Arm(dispatcher)
    dispatcher.reactor = arm
    runner = threading.Thread(target=dispatcher.run, kwargs={"tick": 0.05}, daemon=True)
    runner.start()
    tally = Tally("wall clock stepped +1 h then -1 h")
    try:
        real = time.time()
        dispatcher.bus.post(events.make(Kind.SYSTEM, "gateway", "arm"))
        wait_until(lambda: arm.armed_at > 0, what="timers armed")
        for i in range(len(DELAYS)):
            tally.send(i)
        time.sleep(0.35)
        with time_machine.travel(time.time() + STEP, tick=True):
            stamped = events.reading("probe", 1).ts - real
            forward_wall = time.time()
            time.sleep(0.3)
        with time_machine.travel(time.time() - STEP, tick=True):
            backward_wall = time.time()
            wait_until(lambda: len(arm.fired) == len(DELAYS), timeout=5, what="every timer")
    finally:
        dispatcher.stop()
        runner.join(5)
    tally.receive(arm.fired)
    lateness = [arm.fired[i] - DELAYS[i] for i in arm.fired]
    tally.extra.update(earliest_s=round(min(lateness), 4), latest_s=round(max(lateness), 4))
    tally.report()
    tally.assert_nothing_lost()
    assert forward_wall - real > STEP * 0.99 and backward_wall - real < 10, "the wall clock was not stepped"
    assert stamped > STEP * 0.99, "events carry the wall clock as it is now"
    assert min(lateness) >= 0, "a timer fired early"
    assert max(lateness) <= SLACK, "a timer fired late"
