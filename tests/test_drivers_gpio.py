"""GPIO drivers on gpiozero's MockFactory pins: inputs, motion, relays."""

from __future__ import annotations

from typing import Any

import pytest
from drivers_kit import Recorder, make_context
from gpiozero.pins.mock import MockFactory

from drivers.base import DriverError
from drivers.gpio import DigitalInput, MotionSensor, Relay
from gateway.events import Kind


def contact(**overrides: Any) -> DigitalInput:
    cfg = {"id": "front_door", "driver": "gpio.input", "pin": 27, "pull_up": True, **overrides}
    return DigitalInput(DigitalInput.Config.model_validate(cfg))


def relay(**overrides: Any) -> Relay:
    cfg = {"id": "heater", "driver": "gpio.relay", "pin": 22, **overrides}
    return Relay(Relay.Config.model_validate(cfg))


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
    driver = MotionSensor(MotionSensor.Config.model_validate({"id": "hall", "driver": "gpio.motion", "pin": 17}))
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
