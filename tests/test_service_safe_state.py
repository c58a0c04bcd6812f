"""`gateway safe-state`: every actuator to its safe level from the config alone (the unit's ExecStopPost=)."""

from __future__ import annotations

from pathlib import Path

from gpiozero.pins.mock import MockFactory

from gateway.config import load_config
from gateway.service import drive_safe_states
from gateway.simpins import ReleasedLevelPin
from tests.helpers import write_config
from tests.service_support import CONFIG, SAFE_LEVELS, run_cli, service_config


def _pins() -> MockFactory:
    return MockFactory(pin_class=ReleasedLevelPin)


def test_every_actuator_is_released_at_its_safe_level(tmp_path: Path) -> None:
    pins = _pins()
    assert drive_safe_states(load_config(service_config(tmp_path, "svc-safe")), pin_factory=pins) == []
    for name, level in SAFE_LEVELS.items():
        pin = pins.pin(name)
        assert (pin.released, pin.function) == (level, "input")


def test_an_output_left_active_by_a_killed_process_is_driven_back(tmp_path: Path) -> None:
    pins = _pins()
    heater = pins.pin("GPIO23")
    heater.function = "output"
    heater.state = True  # what the kernel kept after SIGKILL: the heater on
    heater.function = "input"
    drive_safe_states(load_config(service_config(tmp_path, "svc-safe")), pin_factory=pins)
    assert heater.released == 0.0


def test_sensors_are_not_touched(tmp_path: Path) -> None:
    pins = _pins()
    drive_safe_states(load_config(service_config(tmp_path, "svc-safe")), pin_factory=pins)
    assert "GPIO17" not in {pin.info.name for pin in pins.pins.values()}


def test_an_actuator_that_cannot_be_opened_does_not_stop_the_others(tmp_path: Path) -> None:
    body = CONFIG.format(gateway_id="svc-safe", port=1883) + (
        '\n[[devices]]\nid = "broken"\ndriver = "gpio.relay"\npin = "GPIO99"\n'
    )
    pins = _pins()
    problems = drive_safe_states(load_config(write_config(tmp_path, body)), pin_factory=pins)
    assert len(problems) == 1 and problems[0].startswith("broken: could not reach its safe state")
    assert pins.pin("GPIO23").released == 0.0


def test_the_command_exits_0_on_mock_pins(tmp_path: Path) -> None:
    result = run_cli("safe-state", "--config", str(service_config(tmp_path, "svc-safe")),
                     env={"GPIOZERO_PIN_FACTORY": "mock"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heater: safe state False" in result.stdout


def test_the_command_exits_1_when_the_config_is_unreadable(tmp_path: Path) -> None:
    result = run_cli("safe-state", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 1
    assert "no such file" in result.stderr


def test_dimmers_and_sirens_are_driven_to_their_safe_levels(tmp_path: Path) -> None:
    body = CONFIG.format(gateway_id="svc-safe", port=1883) + (
        '\n[[devices]]\nid = "stair_light"\ndriver = "gpio.pwm_light"\npin = 12\nsafe_brightness = 40\n'
        '\n[[devices]]\nid = "alarm"\ndriver = "gpio.siren"\npin = 16\nactive_high = false\n'
    )
    pins = _pins()
    assert drive_safe_states(load_config(write_config(tmp_path, body)), pin_factory=pins) == []
    dimmer = pins.pin("GPIO12")
    assert [s.state for s in dimmer.states][-2:] == [0.4, 0.0]  # safe 40 %, then PWM stops at release
    assert pins.pin("GPIO16").released == 1.0  # active-low siren: high = silent
