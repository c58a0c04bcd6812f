"""Failure isolation: restart with backoff, safe outputs, health events, in virtual time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpiozero.pins.mock import MockFactory

from core.clock import VirtualClock
from core.entities import EntitySpec
from core.events import EventFactory, Kind
from drivers.actuators import GpioRelayConfig, Relay
from drivers.base import DeviceConfig, Driver, DriverContext
from drivers.supervision import Supervisor
from drivers.timing import VirtualScheduler
from tests.drivers_kit import Recorder


class Flaky(Driver):
    """A driver whose start fails the first ``failures`` times."""

    Config = DeviceConfig

    def __init__(self, failures: int, id: str = "flaky") -> None:
        super().__init__(DeviceConfig(driver="test.flaky", id=id))
        self.failures = failures
        self.starts: list[float] = []
        self.ctx: DriverContext | None = None
        self.running = False

    def entities(self) -> Sequence[EntitySpec]:
        from core.entities import Component

        return [EntitySpec(self.id, Component.SENSOR)]

    def start(self, ctx: DriverContext) -> None:
        self.starts.append(ctx.clock.monotonic())
        self.ctx = ctx
        if len(self.starts) <= self.failures:
            raise OSError("i2c bus error")
        self.running = True

    def stop(self) -> None:
        self.running = False


class House:
    def __init__(self, *drivers: Driver, **kwargs: Any) -> None:
        self.clock = VirtualClock(mono=0)
        self.sched = VirtualScheduler(self.clock)
        self.events = EventFactory(self.clock, boot="t")
        self.rec = Recorder()
        self.pins = MockFactory()
        self.supervisor = Supervisor(
            drivers, self.context, self.clock, post=self.rec, events=self.events, scheduler=self.sched, **kwargs
        )

    def context(self, driver: Driver) -> DriverContext:
        return DriverContext(post=self.rec, events=self.events, pin_factory=self.pins, scheduler=self.sched)

    def health_events(self, entity: str) -> list[tuple[object, str | None]]:
        return [(e.value, e.detail) for e in self.rec.of(Kind.SYSTEM, entity)]


def test_a_driver_that_fails_to_start_is_retried_with_growing_backoff() -> None:
    flaky = Flaky(failures=3)
    house = House(flaky, backoff_min_s=1, backoff_max_s=60)
    house.supervisor.start_all()
    house.sched.advance(100)
    assert flaky.starts == [0, 1, 3, 7]
    assert flaky.running
    [health] = house.supervisor.health()
    assert (health.status, health.failures, health.restarts) == ("running", 3, 3)


def test_one_failing_driver_does_not_stop_the_others() -> None:
    bad, good = Flaky(failures=99, id="bad"), Flaky(failures=0, id="good")
    house = House(bad, good)
    house.supervisor.start_all()
    assert good.running and not bad.running


def test_the_backoff_is_capped() -> None:
    flaky = Flaky(failures=99)
    house = House(flaky, backoff_min_s=1, backoff_max_s=4)
    house.supervisor.start_all()
    house.sched.advance(30)
    gaps = [b - a for a, b in zip(flaky.starts, flaky.starts[1:], strict=False)]
    assert gaps[:5] == [1, 2, 4, 4, 4]


def test_a_failure_is_reported_in_a_health_event_and_makes_entities_unavailable() -> None:
    flaky = Flaky(failures=1)
    house = House(flaky, backoff_min_s=5)
    house.supervisor.start_all()
    assert house.health_events("flaky") == [("failed", "start failed: i2c bus error; restarting in 5 s")]
    assert house.rec.values(Kind.AVAILABILITY, "flaky") == [False]
    house.sched.advance(5)
    assert house.health_events("flaky")[-1] == ("running", "restart 1")
    assert house.rec.values(Kind.AVAILABILITY, "flaky") == [False, True]


def test_a_running_driver_that_reports_a_failure_is_restarted() -> None:
    flaky = Flaky(failures=0)
    house = House(flaky, backoff_min_s=2)
    house.supervisor.start_all()
    assert flaky.ctx is not None
    flaky.ctx.fail("sensor stopped answering")
    house.sched.advance(0)
    assert not flaky.running
    house.sched.advance(2)
    assert flaky.running and flaky.starts == [0, 2]


def test_a_failed_actuator_goes_to_its_safe_state_at_once() -> None:
    relay = Relay(GpioRelayConfig.model_validate({"id": "heater", "driver": "gpio.relay", "pin": 22}))
    house = House(relay)
    house.supervisor.start_all()
    relay.apply("heater", True)
    house.supervisor.report_failure("heater", "apply raised")
    assert house.pins.pin(22).state is False  # before the supervisor's thread even runs


def test_a_driver_stable_for_long_enough_starts_over_at_the_shortest_backoff() -> None:
    flaky = Flaky(failures=0)
    house = House(flaky, backoff_min_s=1, stable_s=600)
    house.supervisor.start_all()
    assert flaky.ctx is not None
    for _ in range(3):
        flaky.ctx.fail("glitch")
        house.sched.advance(10)
    assert house.supervisor.health()[0].failures == 3
    house.sched.advance(600)
    flaky.ctx.fail("glitch")
    house.sched.advance(0)
    assert house.supervisor.health()[0].failures == 1


def test_stop_all_stops_drivers_and_cancels_pending_restarts() -> None:
    bad, good = Flaky(failures=99, id="bad"), Flaky(failures=0, id="good")
    house = House(bad, good)
    house.supervisor.start_all()
    house.supervisor.stop_all()
    house.sched.advance(1000)
    assert len(bad.starts) == 1 and not good.running
    assert {h.status for h in house.supervisor.health()} == {"stopped"}


def test_health_carries_each_drivers_counters() -> None:
    class Counting(Flaky):
        def stats(self) -> dict[str, int]:
            return {"crc_errors": 2}

    house = House(Counting(failures=0))
    house.supervisor.start_all()
    assert house.supervisor.health()[0].stats == {"crc_errors": 2}
