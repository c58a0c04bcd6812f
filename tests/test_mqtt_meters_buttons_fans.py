"""Discovery and hub commands of the pulse meter, the button, the fan and the servo (entity_config is pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.button import Button, ButtonConfig
from drivers.fan import Fan, FanConfig, Servo, ServoConfig
from drivers.pulse import PulseMeter, PulseMeterConfig
from gateway.mqtt.commands import CommandRejected, decode, validate, validator_for
from gateway.mqtt.discovery import Discovery
from gateway.mqtt.topics import Topics

METER = PulseMeter(PulseMeterConfig.model_validate(
    {"id": "house_energy", "driver": "gpio.pulse_meter", "pin": 19, "meter": "energy", "pulses_per_unit": 1000}))
BUTTON = Button(ButtonConfig.model_validate({"id": "hall_button", "driver": "gpio.button", "pin": 16}))
FAN = Fan(FanConfig.model_validate({"id": "attic_fan", "driver": "gpio.fan", "pin": 12}))
SERVO = Servo(ServoConfig.model_validate({"id": "flap", "driver": "gpio.servo", "pin": 13, "limits": [0, 90]}))


@pytest.fixture
def discovery(tmp_path: Path) -> Discovery:
    return Discovery(Topics("gateway/house"), "house", None, "1", tmp_path / "discovery.json")


def hub(entity_spec: object, payload: bytes) -> object:
    return validate(validator_for(entity_spec), decode(payload, 256))  # type: ignore[arg-type]


def test_a_meter_total_is_announced_for_the_energy_dashboard(discovery: Discovery) -> None:
    total, rate = (discovery.entity_config(spec) for spec in METER.entities())
    assert (total["device_class"], total["unit_of_measurement"], total["state_class"]) == (
        "energy", "kWh", "total_increasing")
    assert (rate["device_class"], rate["unit_of_measurement"], rate["state_class"]) == ("power", "W", "measurement")
    assert "command_topic" not in total


def test_a_button_is_announced_as_an_event_entity_with_its_event_types(discovery: Discovery) -> None:
    config = discovery.entity_config(BUTTON.entities()[0])
    assert config["event_types"] == ["press", "double_press", "long_press"]
    assert config["device_class"] == "button"
    assert config["state_topic"] == "gateway/house/state/hall_button"
    assert "command_topic" not in config


def test_a_fan_is_announced_with_a_percentage_on_its_set_topic(discovery: Discovery) -> None:
    config = discovery.entity_config(FAN.entities()[0])
    assert config["command_topic"] == config["percentage_command_topic"] == "gateway/house/set/attic_fan"
    assert (config["speed_range_min"], config["speed_range_max"]) == (1, 100)


def test_a_servo_is_announced_as_a_number_within_its_limits(discovery: Discovery) -> None:
    config = discovery.entity_config(SERVO.entities()[0])
    assert (config["min"], config["max"], config["unit_of_measurement"]) == (0, 90, "°")
    assert config["command_topic"] == "gateway/house/set/flap"


def test_a_servo_is_announced_with_a_step_of_one_degree(discovery: Discovery) -> None:
    spec = SERVO.entities()[0]
    assert (spec.step, discovery.entity_config(spec)["step"]) == (1, 1)


def test_the_hub_corrects_a_meter_total_with_a_number_not_negative() -> None:
    total = METER.entities()[0]
    assert hub(total, b"12400.5") == 12400.5
    assert hub(total, b'"12400"') == 12400.0
    for bad in (b"-1", b"ON", b"lots", b"NaN"):
        with pytest.raises(CommandRejected):
            hub(total, bad)


def test_the_rate_and_the_button_take_no_command() -> None:
    assert not METER.entities()[1].writable
    assert not BUTTON.entities()[0].writable


def test_a_fan_takes_on_off_and_a_percentage_from_the_hub() -> None:
    spec = FAN.entities()[0]
    assert hub(spec, b"ON") is True
    assert hub(spec, b"55") == 55
    with pytest.raises(CommandRejected):
        hub(spec, b"150")


def test_a_servo_takes_an_angle_within_its_limits_and_no_words() -> None:
    spec = SERVO.entities()[0]
    assert hub(spec, b"45") == 45.0
    for bad in (b"ON", b"91", b"-5"):
        with pytest.raises(CommandRejected):
            hub(spec, bad)
