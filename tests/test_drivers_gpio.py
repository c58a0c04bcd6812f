"""GPIO drivers on gpiozero's MockFactory pins: inputs, motion, relays."""

from __future__ import annotations

from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError

from core.clock import VirtualClock
from core.events import Kind
from drivers.actuators import GpioRelayConfig, Relay
from drivers.base import DriverError
from drivers.gpio import DigitalInput, GpioInputConfig, GpioMotionConfig, MotionSensor
from drivers.timing import VirtualScheduler
from tests.drivers_kit import Recorder, make_context


def contact(**overrides: Any) -> DigitalInput:
    cfg = {"id": "front_door", "driver": "gpio.input", "pin": 27, "pull_up": True, **overrides}
    return DigitalInput(GpioInputConfig.model_validate(cfg))


def relay(**overrides: Any) -> Relay:
    cfg = {"id": "heater", "driver": "gpio.relay", "pin": 22, **overrides}
    return Relay(GpioRelayConfig.model_validate(cfg))


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def test_an_input_reports_its_level_once_at_start(factory: MockFactory, rec: Recorder) -> None:
    driver = contact()
    driver.start(make_context(rec, factory=factory))
    assert rec.values(entity="front_door") == [False]  # pulled up, open contact: inactive
    driver.stop()


def test_a_contact_edge_posts_one_reading(factory: MockFactory, rec: Recorder) -> None:
    driver = contact()
    driver.start(make_context(rec, factory=factory))
    rec.clear()
    factory.pin(27).drive_low()
    assert rec.values(entity="front_door") == [True]
    driver.stop()


def test_an_inverted_input_reports_the_opposite_level(factory: MockFactory, rec: Recorder) -> None:
    driver = contact(inverted=True)
    driver.start(make_context(rec, factory=factory))
    factory.pin(27).drive_low()
    assert rec.values(entity="front_door") == [True, False]
    driver.stop()


def test_a_stopped_input_posts_nothing(factory: MockFactory, rec: Recorder) -> None:
    driver = contact()
    driver.start(make_context(rec, factory=factory))
    driver.stop()
    driver.stop()  # idempotent
    rec.clear()
    factory.pin(27).drive_low()
    assert rec.events == []


def test_motion_is_active_high_by_default(factory: MockFactory, rec: Recorder) -> None:
    driver = MotionSensor(GpioMotionConfig.model_validate({"id": "hall", "driver": "gpio.motion", "pin": 17}))
    driver.start(make_context(rec, factory=factory))
    factory.pin(17).drive_high()
    assert rec.values(entity="hall") == [False, True]
    assert driver.entities()[0].device_class == "motion"
    driver.stop()


def test_a_relay_starts_in_its_safe_state(factory: MockFactory, rec: Recorder) -> None:
    driver = relay(active_high=False, safe_state=False)
    driver.start(make_context(rec, factory=factory))
    assert factory.pin(22).state is True  # active-low board: high = off
    assert rec.values(Kind.STATE, "heater") == [False]
    driver.stop()


def test_a_relay_confirms_what_the_pin_is(factory: MockFactory, rec: Recorder) -> None:
    driver = relay()
    driver.start(make_context(rec, factory=factory))
    assert driver.apply("heater", True) is True
    assert factory.pin(22).state is True
    driver.stop()


def test_a_relay_returns_to_its_safe_state_at_stop(factory: MockFactory, rec: Recorder) -> None:
    driver = relay()
    driver.start(make_context(rec, factory=factory))
    driver.apply("heater", True)
    driver.stop()
    factory.pin(22).assert_states([False, True, False])


def test_a_relay_whose_pin_is_taken_fails_with_a_driver_error(factory: MockFactory, rec: Recorder) -> None:
    first, second = relay(), relay(id="other")
    first.start(make_context(rec, factory=factory))
    with pytest.raises(DriverError, match="cannot open GPIO pin 22"):
        second.start(make_context(rec, factory=factory))
    first.stop()


@pytest.fixture
def sched() -> VirtualScheduler:
    return VirtualScheduler(VirtualClock())


def test_a_chattering_contact_gives_one_event(factory: MockFactory, rec: Recorder, sched: VirtualScheduler) -> None:
    driver = contact(conditioning=[{"step": "debounce", "ms": 50}])
    driver.start(make_context(rec, factory=factory, scheduler=sched))
    pin = factory.pin(27)
    for _ in range(25):
        pin.drive_low()
        sched.advance(0.002)
        pin.drive_high()
        sched.advance(0.002)
    pin.drive_low()
    sched.advance(0.049)
    assert rec.values(entity="front_door") == [False]
    sched.advance(0.002)
    assert rec.values(entity="front_door") == [False, True]
    driver.stop()


def test_a_short_blip_is_dropped_whole(factory: MockFactory, rec: Recorder, sched: VirtualScheduler) -> None:
    driver = contact(conditioning=[{"step": "glitch", "ms": 20}])
    driver.start(make_context(rec, factory=factory, scheduler=sched))
    pin = factory.pin(27)
    pin.drive_low()
    sched.advance(0.005)
    pin.drive_high()
    sched.advance(1)
    assert rec.values(entity="front_door") == [False]
    assert driver.channel is not None and driver.channel.pipeline.dropped == 1
    driver.stop()


def test_motion_clears_only_after_the_clear_time(factory: MockFactory, rec: Recorder, sched: VirtualScheduler) -> None:
    cfg = {"id": "hall", "driver": "gpio.motion", "pin": 17, "clear_after_s": 30}
    driver = MotionSensor(GpioMotionConfig.model_validate(cfg))
    driver.start(make_context(rec, factory=factory, scheduler=sched))
    pin = factory.pin(17)
    pin.drive_high()
    sched.advance(2)
    pin.drive_low()
    sched.advance(29)
    assert rec.values(entity="hall") == [False, True]
    sched.advance(1)
    assert rec.values(entity="hall") == [False, True, False]
    driver.stop()


def test_stop_cancels_pending_timers(factory: MockFactory, rec: Recorder, sched: VirtualScheduler) -> None:
    driver = contact(conditioning=[{"step": "debounce", "ms": 50}])
    driver.start(make_context(rec, factory=factory, scheduler=sched))
    factory.pin(27).drive_low()
    driver.stop()
    sched.advance(1)
    assert rec.values(entity="front_door") == [False]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pull_up": "floating"}, "needs active_high"),
        ({"active_high": True}, "only applies to a floating input"),
        ({"conditioning": [{"step": "median", "window": 3}]}, "does not match any of the expected tags"),
    ],
)
def test_input_config_mistakes_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        contact(**overrides)


def test_a_floating_input_uses_the_declared_active_level(factory: MockFactory, rec: Recorder) -> None:
    driver = contact(pull_up="floating", active_high=False)
    driver.start(make_context(rec, factory=factory))
    factory.pin(27).drive_low()
    assert rec.values(entity="front_door")[-1] is True
    driver.stop()
