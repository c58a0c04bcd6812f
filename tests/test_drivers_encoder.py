"""Rotary encoders on MockFactory pins: A/B driven in quadrature, a position within limits, each detent an event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError

from core.entities import Component, accepts
from core.events import Kind
from drivers.encoder import RotaryEncoder, RotaryEncoderConfig
from drivers.sim.gpio import quadrature
from gateway.mqtt.discovery import Discovery
from gateway.mqtt.topics import Topics
from tests.drivers_kit import Recorder, make_context

A, B = 5, 6


class Knob:
    def __init__(self, **overrides: Any) -> None:
        self.factory = MockFactory()
        for pin in (A, B):
            self.factory.pin(pin).drive_high()  # at rest: both contacts open, pulled up
        self.rec = Recorder()
        cfg = {"id": "knob", "driver": "gpio.rotary_encoder", "a_pin": A, "b_pin": B, **overrides}
        self.encoder = RotaryEncoder(RotaryEncoderConfig.model_validate(cfg))
        self.encoder.start(make_context(self.rec, factory=self.factory))

    def turn(self, detents: int) -> None:
        for _ in range(abs(detents)):
            quadrature(self.factory, A, B, clockwise=detents > 0)

    def positions(self) -> list[object]:
        return self.rec.values(Kind.READING, "knob")

    def turns(self) -> list[object]:
        return [v for v in self.rec.values(Kind.STATE, "knob_turn") if v is not None]


def test_a_knob_reports_its_initial_position_at_start() -> None:
    assert Knob(initial=40).positions() == [40]


def test_each_clockwise_detent_moves_the_position_up_by_its_step_and_is_an_event() -> None:
    knob = Knob(step=5)
    knob.turn(3)
    assert knob.positions() == [0, 5, 10, 15]
    assert knob.turns() == ["clockwise"] * 3


def test_counterclockwise_detents_move_it_down() -> None:
    knob = Knob(initial=50, step=10)
    knob.turn(-2)
    assert knob.positions() == [50, 40, 30]
    assert knob.turns() == ["counterclockwise"] * 2


def test_a_half_turn_between_detents_counts_nothing() -> None:
    knob = Knob()
    knob.factory.pin(A).drive_low()
    knob.factory.pin(B).drive_low()
    knob.factory.pin(B).drive_high()  # back the way it came: contact bounce or a wobble
    knob.factory.pin(A).drive_high()
    assert (knob.positions(), knob.turns()) == ([0], [])


def test_the_position_stops_at_its_limits_but_each_detent_is_still_an_event() -> None:
    knob = Knob(maximum=10, step=5, initial=5)
    knob.turn(3)
    assert knob.positions() == [5, 10]
    assert knob.turns() == ["clockwise"] * 3


def test_a_wrapping_knob_goes_round_past_its_limits() -> None:
    knob = Knob(minimum=0, maximum=3, wrap=True, initial=2)
    knob.turn(2)
    knob.turn(-1)
    assert knob.positions() == [2, 3, 0, 3]


def test_each_turn_event_is_followed_by_rest_so_a_rule_fires_on_every_detent() -> None:
    knob = Knob()
    knob.turn(2)
    assert knob.rec.values(Kind.STATE, "knob_turn") == ["clockwise", None, "clockwise", None]


def test_a_stopped_knob_posts_nothing_more() -> None:
    knob = Knob()
    knob.encoder.stop()
    assert (knob.positions(), knob.turns()) == ([0], [])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"minimum": 10, "maximum": 10}, "minimum 10 must be below maximum 10"),
    ({"initial": 150}, r"initial 150 is outside minimum\.\.maximum \(0\.\.100\)"),
    ({"step": 0}, "greater than 0"),
])
def test_limits_that_cannot_work_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RotaryEncoderConfig.model_validate({"id": "k", "driver": "gpio.rotary_encoder", "a_pin": A, "b_pin": B,
                                            **overrides})


def test_the_hub_sees_a_position_sensor_and_an_event_entity_and_commands_neither(tmp_path: Path) -> None:
    encoder = RotaryEncoder(RotaryEncoderConfig.model_validate(
        {"id": "knob", "driver": "gpio.rotary_encoder", "a_pin": A, "b_pin": B, "unit": "%"}))
    position, turn = encoder.entities()
    assert (position.component, turn.component, turn.options) == (
        Component.SENSOR, Component.EVENT, ("clockwise", "counterclockwise"))
    assert accepts(position, 50) is not None and accepts(turn, "clockwise") is not None
    config = Discovery(Topics("gateway/x"), "x", None, "1", tmp_path / "d.json").entity_config(turn)
    assert config["event_types"] == ["clockwise", "counterclockwise"]


def test_a_rule_may_switch_a_light_on_a_clockwise_turn(tmp_path: Path) -> None:
    from gateway.cli import main
    from tests import toml_kit as toml
    from tests.helpers import write_config

    body = (toml.config(toml.gateway("knob"), toml.relay("lamp", 22, component="light"))
            + '\n[[devices]]\nid = "knob"\ndriver = "gpio.rotary_encoder"\na_pin = 23\nb_pin = 25\n')
    good = "version = 1\n" + toml.state_rule("brighter", "knob_turn", "clockwise", "turn_on", "lamp")
    assert main(["check", "--config", str(write_config(tmp_path, body, good))]) == 0
