"""Buttons on MockFactory pins in virtual time: press, double press, long press."""

from __future__ import annotations

from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from core.clock import VirtualClock
from core.events import Kind
from drivers.button import Button, ButtonConfig
from drivers.timing import VirtualScheduler
from tests.drivers_kit import Recorder, make_context


class Bench:
    def __init__(self, **overrides: Any) -> None:
        self.factory = MockFactory()
        self.scheduler = VirtualScheduler(VirtualClock())
        self.rec = Recorder()
        self.pin = self.factory.pin(16)
        self.pin.drive_high()
        cfg = {"id": "hall_button", "driver": "gpio.button", "pin": 16, **overrides}
        self.button = Button(ButtonConfig.model_validate(cfg))
        self.button.start(make_context(self.rec, factory=self.factory, scheduler=self.scheduler))

    def press(self, hold_s: float = 0.1, then_s: float = 0.0) -> None:
        self.pin.drive_low()
        self.scheduler.advance(hold_s)
        self.pin.drive_high()
        self.scheduler.advance(then_s)

    def gestures(self) -> list[object]:
        return [v for v in self.rec.values(Kind.STATE, "hall_button") if v is not None]


def test_a_short_press_is_a_press_once_the_double_press_window_passed() -> None:
    bench = Bench()
    bench.press(then_s=0.3)
    assert bench.gestures() == []
    bench.scheduler.advance(0.2)
    assert bench.gestures() == ["press"]


def test_two_presses_within_the_window_are_one_double_press() -> None:
    bench = Bench()
    bench.press(then_s=0.2)
    bench.press(then_s=1.0)
    assert bench.gestures() == ["double_press"]


def test_holding_is_a_long_press_sent_while_still_held() -> None:
    bench = Bench()
    bench.pin.drive_low()
    bench.scheduler.advance(1.0)
    assert bench.gestures() == ["long_press"]
    bench.pin.drive_high()
    bench.scheduler.advance(1.0)
    assert bench.gestures() == ["long_press"]


def test_each_gesture_returns_to_null_so_the_same_gesture_twice_fires_twice() -> None:
    bench = Bench()
    bench.press(then_s=1.0)
    bench.press(then_s=1.0)
    assert bench.rec.values(Kind.STATE, "hall_button") == ["press", None, "press", None]


def test_contact_bounce_is_not_a_double_press() -> None:
    bench = Bench()
    bench.pin.drive_low()
    bench.scheduler.advance(0.002)
    bench.pin.drive_high()
    bench.scheduler.advance(0.002)
    bench.pin.drive_low()
    bench.scheduler.advance(0.1)
    bench.pin.drive_high()
    bench.scheduler.advance(1.0)
    assert bench.gestures() == ["press"]


def test_without_double_press_a_press_is_sent_at_release() -> None:
    bench = Bench(double_press_ms=0)
    bench.press()
    assert bench.gestures() == ["press"]


def test_the_button_is_an_event_entity_with_the_three_event_types() -> None:
    spec = Bench().button.entities()[0]
    assert (spec.component, spec.options) == ("event", ("press", "double_press", "long_press"))


def test_a_rule_fires_on_every_double_press_of_the_button(tmp_path: Any) -> None:
    from tests import toml_kit as toml
    from tests.rules_kit import DEMO_ENTITIES, House, local, ruleset

    bench = Bench()
    entities = {**DEMO_ENTITIES, "hall_button": bench.button.entities()[0]}
    rules = ruleset(tmp_path, toml.state_rule("toggle", "hall_button", "double_press", "turn_on", "hall_light"),
                    entities)
    world = House(entities, rules, timezone="UTC", start=local("2026-01-01T12:00"))
    world.start()
    for _ in range(2):
        bench.press(then_s=0.1)
        bench.press(then_s=1.0)
        for event in bench.rec.of(Kind.STATE, "hall_button"):
            world.post(event.entity, event.value, event.kind)
        bench.rec.clear()
        world.post("hall_light", False, Kind.STATE)
    assert world.commands("hall_light") == [("hall_light", True), ("hall_light", True)]


def test_a_rule_on_a_gesture_the_button_never_makes_is_a_located_load_error(tmp_path: Any) -> None:
    from rules.loader import RulesError
    from tests import toml_kit as toml
    from tests.rules_kit import DEMO_ENTITIES, ruleset

    entities = {**DEMO_ENTITIES, "hall_button": Bench().button.entities()[0]}
    with pytest.raises(RulesError) as refused:
        ruleset(tmp_path, toml.state_rule("toggle", "hall_button", "doubleclick", "turn_on", "hall_light"), entities)
    assert ("rule toggle: triggers[0].to: 'doubleclick' is not a value of 'hall_button' "
            "(one of 'press', 'double_press', 'long_press')") in str(refused.value)
