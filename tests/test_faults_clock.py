"""Fault: the wall clock stepped by +1 h and -1 h (an NTP correction on a board without an RTC).

Two levels, both in real time on the ``SystemClock`` with ``time-machine``
stepping the wall clock while they wait:

* the dispatcher's timers (what ``for`` durations, delays and pulses are built
  on) fire after their own delay on the monotonic clock, never early and never
  late by the hour, while event timestamps follow the stepped wall clock;
* a whole gateway with the real rules engine: a ``for = "1s"`` state trigger and
  a ``turn_on ... for = "1.5s"`` pulse switch mock-pin relays on time across
  steps forward and back.

* a ``schedule`` rule due a few seconds after a +1 h step fires once, at its
  wall time: the engine's clock poll sees the step and the scheduler recomputes
  (docs/rules.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import threading
import time
from pathlib import Path

import pytest
import time_machine
from gpiozero.pins.mock import MockFactory

from core.clock import SystemClock
from core.events import Event, EventFactory, Kind
from gateway.app import Gateway
from gateway.bus import Bus
from gateway.config import load_config
from gateway.dispatcher import Dispatcher
from tests import toml_kit as toml
from tests.faults_support import Tally
from tests.helpers import wait_until, write_config

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
                self.dispatcher.call_later(delay, functools.partial(self.fire, i))

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
    tally = Tally("wall clock stepped +1 h then -1 h under dispatcher timers")
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


HOUSE = toml.config(toml.gateway("clock-step"), toml.motion("motion", 17), toml.relay("light", 22),
                    toml.relay("fan", 23))

RULES = ("version = 1\n"
         + toml.state_rule("light_after_held_motion", "motion", True, "turn_on", "light", held_for="1s")
         + toml.state_rule("fan_pulse_on_motion", "motion", True, "turn_on", "fan", for_="1.5s"))


class NoForwarder:
    def start(self) -> None: ...

    def forward(self, event: Event) -> None: ...

    def stop(self, timeout: float = 1.5) -> None: ...


OUTPUTS = (("light", 22), ("fan", 23))


def outputs(pins: MockFactory) -> dict[str, bool]:
    return {name: bool(pins.pin(number).state) for name, number in OUTPUTS}


def watch_pins(
    pins: MockFactory, started: float, until: float, last: dict[str, bool]
) -> dict[str, list[tuple[float, bool]]]:
    """Changes of the outputs from ``last``, stamped on the monotonic clock from ``started``."""
    seen: dict[str, list[tuple[float, bool]]] = {name: [] for name, _ in OUTPUTS}
    while time.monotonic() < until:
        for name, number in OUTPUTS:
            state = bool(pins.pin(number).state)
            if state != last[name]:
                seen[name].append((time.monotonic() - started, bool(state)))
                last[name] = state
        time.sleep(0.005)
    return seen


@pytest.mark.slow
def test_a_for_duration_and_a_pulse_in_the_rules_ignore_wall_clock_steps(tmp_path: Path) -> None:
    pins = MockFactory()
    gateway = Gateway(load_config(write_config(tmp_path, HOUSE, RULES)), pin_factory=pins, forwarder=NoForwarder())
    gateway.start()
    runner = threading.Thread(target=gateway.run, daemon=True)
    runner.start()
    tally = Tally("wall clock stepped under a rule's for and pulse")
    try:
        before = outputs(pins)
        started = time.monotonic()
        pins.pin(17).drive_high()
        steps = threading.Thread(target=step_wall_clock, args=(started,))
        steps.start()
        seen = watch_pins(pins, started, started + 2.2, before)
        steps.join()
    finally:
        gateway.request_stop()
        runner.join(5)
        gateway.shutdown()
        pins.reset()
    expected = {"light on": 1.0, "fan on": 0.0, "fan off": 1.5}
    got = {f"{name} {'on' if state else 'off'}": at for name, changes in seen.items() for at, state in changes}
    for what in expected:
        tally.send(what)
    tally.receive(got)
    tally.extra.update({f"{what}_s": round(at, 3) for what, at in got.items()})
    tally.report()
    tally.assert_nothing_lost()
    for what, due in expected.items():
        assert due - 0.02 <= got[what] <= due + SLACK, f"{what} at {got[what]:.3f}s, due at {due}s"
    assert len(got) == len(expected) and tally.duplicated == 0


def step_wall_clock(started: float) -> None:
    """+1 h at 0.3 s, back to true time at 0.7 s, -1 h at 1.2 s, back at 1.7 s (monotonic, from ``started``)."""
    def at(offset: float) -> None:
        time.sleep(max(0.0, started + offset - time.monotonic()))

    at(0.3)
    with time_machine.travel(time.time() + STEP, tick=True):
        at(0.7)
    at(1.2)
    with time_machine.travel(time.time() - STEP, tick=True):
        at(1.7)


SCHEDULE_LEAD = 6.0
CLOCK_POLL = 0.5


class Recording(NoForwarder):
    def __init__(self) -> None:
        self.published: list[float] = []

    def forward(self, event: Event) -> None:
        if event.kind is Kind.SYSTEM and event.entity == "publish":
            self.published.append(time.monotonic())


@pytest.mark.slow
def test_a_schedule_due_after_a_forward_step_of_an_hour_fires_once_when_its_wall_time_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/rules.md: a step of the wall clock makes the scheduler recompute its next runs. The engine
    notices a step at its clock poll (``CLOCK_POLL``, 30 s shipped; 0.5 s here, so the test is short): a
    schedule due just after a forward step fires once, late by at most one poll."""
    monkeypatch.setattr("rules.engine.CLOCK_POLL", CLOCK_POLL)
    due = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=STEP + SCHEDULE_LEAD)).replace(microsecond=0)
    rules = f"""
version = 1
[[rules]]
id = "morning"
[[rules.triggers]]
type = "schedule"
at = "{due:%H:%M:%S}"
[[rules.actions]]
type = "publish"
topic = "schedule/morning"
payload = "{{time}}"
"""
    house = HOUSE.replace('state_dir = "state"', 'state_dir = "state"\ntimezone = "UTC"') + (
        '\n[rules]\nunsynced_clock = "run"\nwatch = false\n'
    )
    recording = Recording()
    pins = MockFactory()
    gateway = Gateway(load_config(write_config(tmp_path, house, rules)), pin_factory=pins, forwarder=recording)
    gateway.start()
    runner = threading.Thread(target=gateway.run, daemon=True)
    runner.start()
    tally = Tally("schedule due seconds after a +1 h wall clock step")
    tally.send("morning")
    try:
        time.sleep(2 * CLOCK_POLL)  # the engine has seen the clock before the step
        with time_machine.travel(time.time() + STEP, tick=True):
            stepped = time.monotonic()
            remaining = due.timestamp() - time.time()
            with contextlib.suppress(AssertionError):
                wait_until(lambda: bool(recording.published), timeout=SCHEDULE_LEAD + 5, what="the schedule")
            time.sleep(1.0)  # and it does not fire twice
    finally:
        gateway.request_stop()
        runner.join(5)
        gateway.shutdown()
        pins.reset()
    tally.receive("morning" for _ in recording.published)
    fired_after = [round(at - stepped, 3) for at in recording.published]
    tally.extra.update(due_after_step_s=round(remaining, 3), fired_after_step_s=fired_after, clock_poll_s=CLOCK_POLL)
    tally.report()
    tally.assert_nothing_lost()
    assert tally.duplicated == 0
    assert remaining - 0.02 <= fired_after[0] <= remaining + CLOCK_POLL + SLACK, "fired early or late"
