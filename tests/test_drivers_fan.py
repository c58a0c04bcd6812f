"""PWM fans and servos on mock PWM pins: percentage, minimum duty, kick-start, safe states."""

from __future__ import annotations

from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from pydantic import ValidationError

from core.clock import VirtualClock
from core.entities import accepts
from drivers.fan import Fan, FanConfig, Servo, ServoConfig
from drivers.timing import VirtualScheduler
from tests.drivers_kit import Recorder, make_context


def started(driver: Fan | Servo) -> tuple[Any, VirtualScheduler]:
    factory = MockFactory(pin_class=MockPWMPin)
    scheduler = VirtualScheduler(VirtualClock())
    driver.start(make_context(Recorder(), factory=factory, scheduler=scheduler))
    return factory.pin(driver.config.pin), scheduler


def fan(**overrides: Any) -> Fan:
    return Fan(FanConfig.model_validate({"id": "attic_fan", "driver": "gpio.fan", "pin": 12, **overrides}))


def servo(**overrides: Any) -> Servo:
    return Servo(ServoConfig.model_validate({"id": "flap", "driver": "gpio.servo", "pin": 13, **overrides}))


def test_a_fan_starting_from_off_runs_at_full_power_for_the_kick_then_at_its_duty() -> None:
    device = fan(min_duty=20, kick_start_ms=500)
    pin, scheduler = started(device)
    assert device.apply("attic_fan", 50) == 50
    assert pin.state == 1.0
    scheduler.advance(0.5)
    assert pin.state == pytest.approx(0.6)  # 20 % + 80 % * 50 %


def test_a_running_fan_changes_speed_without_a_kick() -> None:
    device = fan(min_duty=0)
    pin, scheduler = started(device)
    device.apply("attic_fan", 50)
    scheduler.advance(1)
    device.apply("attic_fan", 30)
    assert pin.state == pytest.approx(0.3)


def test_a_fan_told_off_during_its_kick_stops_at_once() -> None:
    device = fan()
    pin, scheduler = started(device)
    device.apply("attic_fan", 80)
    device.apply("attic_fan", False)
    assert pin.state == 0
    scheduler.advance(1)
    assert pin.state == 0


def test_a_fan_goes_to_its_safe_state_off_at_start_and_at_stop() -> None:
    device = fan(kick_start_ms=0)
    pin, _ = started(device)
    assert pin.state == 0
    device.apply("attic_fan", True)
    assert pin.state == 1.0
    device.stop()
    assert pin.state == 0


def test_a_fan_takes_on_off_or_a_percentage() -> None:
    spec = fan().entities()[0]
    assert accepts(spec, True) is None and accepts(spec, 40) is None
    assert accepts(spec, 140) is not None and accepts(spec, "fast") is not None


def test_a_servo_moves_to_an_angle_within_its_limits() -> None:
    device = servo(limits=[0, 90], safe_angle=0)
    _, _ = started(device)
    assert device.apply("flap", 45) == 45
    assert device.apply("flap", 170) == 90  # the authority already refuses it; the driver clamps too
    assert accepts(device.entities()[0], 120) is not None


def test_a_servo_without_a_safe_angle_detaches_when_safe() -> None:
    device = servo()
    pin, _ = started(device)
    device.apply("flap", 30)
    device.to_safe_state()
    assert device.confirmed() is None
    assert pin.state == 0


def test_a_safe_angle_outside_the_limits_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"safe_angle must be within the limits 0\.\.90"):
        servo(limits=[0, 90], safe_angle=120)
