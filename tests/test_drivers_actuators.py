"""Outputs on mock pins: relays, PWM lights, sirens; safe states and confirmed values."""

from __future__ import annotations

from typing import Any

import pytest

from core.clock import VirtualClock
from core.events import Kind, Value
from core.values import is_on
from drivers.actuators import PwmLight, Relay, Siren
from drivers.base import DriverError
from drivers.mockpins import sim_pin_factory
from drivers.timing import VirtualScheduler
from tests.drivers_kit import Recorder, make_context


def build(cls: type[Any], driver: str, **cfg: Any) -> Any:
    return cls(cls.Config.model_validate({"id": "out", "driver": driver, "pin": 18, **cfg}))


@pytest.fixture
def factory() -> Any:
    return sim_pin_factory()


def test_an_active_low_relay_drives_its_pin_low_to_switch_on(factory: Any) -> None:
    relay = build(Relay, "gpio.relay", active_high=False)
    relay.start(make_context(Recorder(), factory=factory))
    assert factory.pin(18).state == 1
    assert relay.apply("out", True) is True
    assert factory.pin(18).state == 0
    relay.to_safe_state()
    assert factory.pin(18).state == 1


def test_a_relay_with_a_safe_state_of_on_starts_on(factory: Any) -> None:
    rec = Recorder()
    relay = build(Relay, "gpio.relay", safe_state=True)
    relay.start(make_context(rec, factory=factory))
    assert rec.values(Kind.STATE) == [True]
    relay.stop()


def test_a_relay_that_is_not_started_refuses_commands() -> None:
    with pytest.raises(DriverError, match="not started"):
        build(Relay, "gpio.relay").apply("out", True)


def test_a_light_dims_and_confirms_its_brightness(factory: Any) -> None:
    light = build(PwmLight, "gpio.pwm_light")
    rec = Recorder()
    light.start(make_context(rec, factory=factory))
    assert rec.values(Kind.STATE) == [0.0]
    assert light.apply("out", 40) == 40.0
    assert factory.pin(18).state == pytest.approx(0.4)
    assert factory.pin(18).frequency == 200


def test_a_light_switched_on_returns_to_its_last_brightness(factory: Any) -> None:
    light = build(PwmLight, "gpio.pwm_light")
    light.start(make_context(Recorder(), factory=factory))
    light.apply("out", 30)
    assert light.apply("out", False) == 0.0
    assert light.apply("out", True) == 30.0
    assert light.apply("out", 250) == 100.0
    light.stop()


def test_a_light_goes_to_its_safe_brightness_when_told(factory: Any) -> None:
    light = build(PwmLight, "gpio.pwm_light", safe_brightness=100)
    light.start(make_context(Recorder(), factory=factory))
    light.apply("out", 10)
    light.to_safe_state()
    assert factory.pin(18).state == 1.0


def test_a_siren_sounds_its_pattern_until_switched_off(factory: Any) -> None:
    sched = VirtualScheduler(VirtualClock(mono=0))
    siren = build(Siren, "gpio.siren", on_s=0.5, off_s=1.5)
    siren.start(make_context(Recorder(), factory=factory, scheduler=sched))
    pin = factory.pin(18)
    assert siren.apply("out", True) is True
    levels = []
    for _ in range(8):
        levels.append(pin.state)
        sched.advance(0.5)
    assert levels == [1, 0, 0, 0, 1, 0, 0, 0]
    assert siren.apply("out", False) is False
    sched.advance(10)
    assert pin.state == 0


def test_a_continuous_siren_stays_on(factory: Any) -> None:
    sched = VirtualScheduler(VirtualClock(mono=0))
    siren = build(Siren, "gpio.siren", off_s=0)
    siren.start(make_context(Recorder(), factory=factory, scheduler=sched))
    siren.apply("out", True)
    sched.advance(60)
    assert factory.pin(18).state == 1
    siren.to_safe_state()
    assert factory.pin(18).state == 0
    assert sched.pending() == 0


# Values reach a driver typed (booleans; a brightness for a dimmable light), but whatever slips
# through is read exactly as core.values.is_on reads it, so a driver and the envelope's safety
# checks can never disagree about whether an output is on ("OFF" is off, -1 is off, "yes" is on).
TOLD = ["OFF", "off", " Off ", "no", "false", "0", "ON", "yes", "true", "1", "banana", "", -1, 0, 0.5, 1, True, False,
        None]


@pytest.mark.parametrize("value", TOLD)
def test_a_relay_is_on_exactly_when_the_gateway_reads_the_value_as_on(factory: Any, value: Value) -> None:
    relay = build(Relay, "gpio.relay", safe_state=not is_on(value))
    relay.start(make_context(Recorder(), factory=factory))
    assert relay.apply("out", value) is is_on(value)
    assert factory.pin(18).state == int(is_on(value))


def test_a_relay_told_off_in_words_ends_off(factory: Any) -> None:
    relay = build(Relay, "gpio.relay", safe_state=True)
    relay.start(make_context(Recorder(), factory=factory))
    assert relay.apply("out", "OFF") is False
    assert factory.pin(18).state == 0


@pytest.mark.parametrize("value", [v for v in TOLD if isinstance(v, str) or v is None])
def test_a_siren_sounds_exactly_when_the_gateway_reads_the_word_as_on(factory: Any, value: Value) -> None:
    siren = build(Siren, "gpio.siren", off_s=0)
    siren.start(make_context(Recorder(), factory=factory, scheduler=VirtualScheduler(VirtualClock(mono=0))))
    assert siren.apply("out", value) is is_on(value)
    siren.stop()


@pytest.mark.parametrize("value", [v for v in TOLD if isinstance(v, str | bool) or v is None])
def test_a_light_told_a_word_lights_exactly_when_the_gateway_reads_it_as_on(factory: Any, value: Value) -> None:
    light = build(PwmLight, "gpio.pwm_light")
    light.start(make_context(Recorder(), factory=factory))
    assert (light.apply("out", value) > 0) is is_on(value)
    light.stop()
